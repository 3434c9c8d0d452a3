"""The SQLite engine's statements: one round trip to aiosqlite's thread each, and otherwise what
SQLAlchemy's own aiosqlite adapter gives (rows, rowcount, lastrowid, errors, rollback)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.store import db
from bot.store.sqlite_driver import OneHopConnection


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = db.make_engine(str(tmp_path / "driver.db"))
    async with eng.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)")
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def hand_offs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every function queued on an aiosqlite worker thread, by name."""
    queued: list[str] = []
    original = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        queued.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    yield queued


async def test_the_engine_uses_the_one_hop_adapter(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.dbapi_connection, OneHopConnection)


async def test_each_statement_is_one_round_trip(engine: AsyncEngine, hand_offs: list[str]) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
        hand_offs.clear()
        rows = (await conn.execute(text("SELECT id, name FROM t"))).all()
        assert hand_offs == ["_run_statement"]
        assert [tuple(r) for r in rows] == [(1, "a")]
        hand_offs.clear()
        await conn.exec_driver_sql("INSERT INTO t (name) VALUES (?)", [("b",), ("c",), ("d",)])
        assert hand_offs == ["_run_statement"]


async def test_rows_rowcount_lastrowid_and_description(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        inserted = await conn.execute(text("INSERT INTO t (name) VALUES (:n)"), {"n": "x"})
        assert inserted.lastrowid == 1
        await conn.execute(text("INSERT INTO t (name) VALUES (:n)"), [{"n": "y"}, {"n": "z"}])
        updated = await conn.execute(text("UPDATE t SET name = name || '!' WHERE id > 1"))
        assert updated.rowcount == 2
        result = await conn.execute(text("SELECT id, name FROM t ORDER BY id"))
        assert list(result.keys()) == ["id", "name"]
        assert result.fetchone() == (1, "x")
        assert result.fetchall() == [(2, "y!"), (3, "z!")]
        assert (await conn.execute(text("SELECT name FROM t WHERE id = 99"))).first() is None


async def test_errors_map_to_sqlalchemys_and_roll_back(engine: AsyncEngine) -> None:
    with pytest.raises(exc.IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (name) VALUES ('dup')"))
            await conn.execute(text("INSERT INTO t (name) VALUES ('dup')"))
    with pytest.raises(exc.OperationalError):
        async with engine.begin() as conn:
            await conn.execute(text("SELECT nope FROM t"))
    async with engine.connect() as conn:
        # the failed transaction left nothing behind, and the connection still works
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0


async def test_streaming_results_still_work(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql("INSERT INTO t (name) VALUES (?)", [(f"n{i}",) for i in range(250)])
    async with engine.connect() as conn:
        stream = await conn.stream(text("SELECT name FROM t ORDER BY id"))
        names = [row.name async for row in stream]
    assert names == [f"n{i}" for i in range(250)]
