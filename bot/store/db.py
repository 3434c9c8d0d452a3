"""Engine set-up and start-up migrations. SQLite for one replica, PostgreSQL for several."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.store import sqlite_driver

MIGRATIONS = Path(__file__).parent / "migrations"


def async_url(url: str) -> str:
    """Accept the plain URLs operators type and pick the async driver for them."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if "://" not in url:  # a bare path
        return "sqlite+aiosqlite:///" + url
    return url


def is_sqlite(url: str) -> bool:
    return async_url(url).startswith("sqlite")


def make_engine(url: str) -> AsyncEngine:
    url = async_url(url)
    if url.startswith("sqlite"):
        # One connection: SQLite has one writer anyway, and a single connection turns
        # "database is locked" races between our own tasks into a plain queue.
        # module=: statements run in one round trip to aiosqlite's thread (bot/store/sqlite_driver.py)
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=120, module=sqlite_driver.dbapi())

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA synchronous=NORMAL")
            # A poll's transaction dirties a few MB (a 1,000-record page, its profiles): with the default
            # 2 MB page cache SQLite spills pages to disk mid-transaction and re-reads them.
            cur.execute("PRAGMA cache_size=-16384")  # KiB: 16 MiB
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.close()

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=5, pool_pre_ping=True)


def _upgrade(conn: Connection, revision: str = "head") -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to the latest revision (or an earlier one, for upgrade tests); safe to run on
    every start."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, revision)
