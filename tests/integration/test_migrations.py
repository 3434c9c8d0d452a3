"""Upgrading a database written by the previous release keeps its rows and their meaning."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, text

from bot.store import db
from bot.store.tables import outbox

T = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


async def test_outbox_rows_queued_before_the_claims_migration_are_delivered_as_new(tmp_path: Path) -> None:
    engine = db.make_engine(str(tmp_path / "old.db"))
    try:
        await db.migrate(engine, "0003")  # the schema the previous release left
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO outbox (case_id, kind, lane, payload, status, attempts, next_attempt_at,"
                    " created_at) VALUES ('MW-1', 'soc_card.post', 'soc', '{}', 'pending', 0, :t, :t)"
                ),
                {"t": T.replace(tzinfo=None).isoformat(sep=" ")},
            )
        await db.migrate(engine)
        async with engine.connect() as conn:
            (row,) = (await conn.execute(select(outbox))).all()
        assert (row.kind, row.status, row.created_at) == ("soc_card.post", "pending", T)
        # never claimed and never begun: its first delivery posts without reading Slack back
        assert row.claimed_by is None and row.claimed_until is None and row.started_at is None
    finally:
        await engine.dispose()
