"""Retention: raw_events rows that only de-duplicate re-reads are deleted once no re-read can reach them.

Every fetched record keeps a row (source, id, time, user, status) so the poll overlap is not detected
twice. A re-read never reaches further back than a source's cursor minus its overlap, and the oldest a
source ever lists is the Management Activity API's 7 days, so after `raw_retention_days` (at least 8)
such a row has done its job; kept forever, it grows the database by ~150 bytes per sign-in (a
10,000-user tenant: about 1.5 M rows a day) and slows every insert into its unique index. Rows that
hold a record's JSON (case evidence, rejections, keep_raw="all") are never deleted here.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.clock import Clock
from bot.store import repo

log = structlog.get_logger("mailwarden.retention")


async def prune_raw_events(engine: AsyncEngine, clock: Clock, keep: timedelta, batch: int = 10_000) -> int:
    """Delete the duplicate markers older than `keep`, one short transaction per batch so a poll
    waiting to write is held up for one batch at most. Returns how many rows went."""
    before = clock.now() - keep
    deleted, after = 0, 0
    while True:
        async with engine.begin() as conn:
            n, upto = await repo.prune_raw_batch(conn, before, after, batch)
        deleted += n
        if upto is None:
            break
        after = upto
        await asyncio.sleep(0)  # let Slack acks and polls in between batches
    if deleted:
        log.info("raw.pruned", rows=deleted, stored_before=before.isoformat())
    return deleted
