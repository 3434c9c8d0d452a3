"""Shared fixtures: a started sandbox (emulated tenant and Slack, the real bot on SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandbox.world import Sandbox


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    sb = Sandbox(str(tmp_path / "mw.db"))
    sb.seed()
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()
