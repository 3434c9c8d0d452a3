"""raw_events retention: duplicate markers go after raw_retention_days; rows with JSON and recent rows stay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.clock import SimClock
from bot.config import load_settings
from bot.errors import ConfigError
from bot.scheduler import build_scheduler
from bot.store import db, repo
from bot.store.retention import prune_raw_events
from bot.store.tables import raw_events
from sandbox.world import Sandbox, eventually

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
KEEP = timedelta(days=14)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = db.make_engine(str(tmp_path / "retention.db"))
    await db.migrate(eng)
    yield eng
    await eng.dispose()


def row(event_id: str, stored_at: datetime, *, status: str = "accepted", payload: str = "") -> repo.RawRow:
    reason = "not an object" if status == "rejected" else None
    return ("entra_signin", "t1", event_id, stored_at, "ada@contoso.example", status, reason, payload, stored_at)


async def remaining(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return [r[0] for r in await conn.execute(select(raw_events.c.event_id).order_by(raw_events.c.id))]


async def test_only_old_rows_without_json_are_pruned(engine: AsyncEngine) -> None:
    old, recent = NOW - KEEP - timedelta(hours=1), NOW - KEEP + timedelta(hours=1)
    rows = [row(f"old-{i}", old + timedelta(seconds=i)) for i in range(7)]
    rows += [
        row("old-evidence", old, payload='{"id": "old-evidence"}'),  # a case holds it as evidence
        row("old-rejected", old, status="rejected", payload="[1, 2]"),  # kept with its reason
        row("recent", recent),  # a re-read can still reach it
    ]
    async with engine.begin() as conn:
        await repo.insert_raw(conn, rows)

    # batches of three: the loop has to walk on across batches, past the rows it keeps
    deleted = await prune_raw_events(engine, SimClock(NOW), KEEP, batch=3)
    assert deleted == 7
    assert await remaining(engine) == ["old-evidence", "old-rejected", "recent"]
    async with engine.connect() as conn:  # the recent row still de-duplicates its re-read
        assert await repo.unseen_raw(conn, "entra_signin", "t1", ["recent", "new"]) == {"new"}
    assert await prune_raw_events(engine, SimClock(NOW), KEEP, batch=3) == 0  # nothing more to do


async def test_pruning_stops_at_the_first_row_young_enough(engine: AsyncEngine) -> None:
    old = NOW - KEEP - timedelta(days=1)
    rows = [row("old", old)] + [row(f"young-{i}", NOW - timedelta(minutes=i)) for i in range(5)]
    async with engine.begin() as conn:
        await repo.insert_raw(conn, rows)
        deleted, after = await repo.prune_raw_batch(conn, NOW - KEEP, 0, limit=3)
    assert (deleted, after) == (1, None)  # the batch reached rows stored after the cut-off: done
    assert await remaining(engine) == [f"young-{i}" for i in range(5)]


def test_retention_cannot_be_shorter_than_any_re_read() -> None:
    assert load_settings({}).raw_retention_days == 14
    assert load_settings({"MAILWARDEN_RAW_RETENTION_DAYS": "30"}).raw_retention_days == 30
    with pytest.raises(ConfigError, match="MAILWARDEN_RAW_RETENTION_DAYS"):  # the Management API lists 7 days back
        load_settings({"MAILWARDEN_RAW_RETENTION_DAYS": "7"})


async def test_the_service_prunes_on_its_schedule(sandbox: Sandbox) -> None:
    """The running service's prune job: rows older than the retention go while the poller keeps working."""
    keep = timedelta(days=sandbox.bot.settings.raw_retention_days)
    stale = sandbox.clock.now() - keep - timedelta(days=1)
    async with sandbox.bot.engine.begin() as conn:
        await repo.insert_raw(conn, [row("stale", stale)])
    scheduler = build_scheduler(sandbox.bot, poll_s=3600, dispatch_s=3600, sweep_s=3600, prune_s=0.05)
    scheduler.start()
    try:
        await eventually(lambda: _gone(sandbox.bot.engine, "stale"), what="the prune job")
    finally:
        scheduler.shutdown(wait=False)
    assert "prune" in {job.id for job in scheduler.get_jobs()}


async def _gone(engine: AsyncEngine, event_id: str) -> bool:
    return event_id not in await remaining(engine)
