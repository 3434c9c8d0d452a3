"""A throw-away PostgreSQL 15 server for the tests that prove the several-replica path.

initdb refuses to run as root, so as root the server runs as the `postgres` user in a directory it
owns (reference/toolchain.md). The server is started once per test session and stopped after it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/local/bin", "/usr/bin")


def _bin(name: str) -> str:
    for d in PG_BIN_CANDIDATES:
        path = Path(d) / name
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: the replica tests need PostgreSQL 15 binaries")
    return found


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]
    return cmd


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    base = Path(tempfile.mkdtemp(prefix="mailwarden-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data = base / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        _as_postgres([_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
    )
    opts = f"'-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off'"
    subprocess.run(
        _as_postgres([_bin("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(base / "pg.log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), check=False, capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)
