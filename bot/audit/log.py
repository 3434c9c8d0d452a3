"""Appending to and reading the audit log. Runs inside the caller's transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.audit.chain import GENESIS, AuditEntry, Verdict, against_head, canonical, seal, walk
from bot.store.tables import audit_head, audit_log


@dataclass(frozen=True, slots=True)
class Pending:
    """An audit entry to be appended (its place in the chain is given when it is written)."""

    at: datetime
    actor: str
    action: str
    case_id: str | None = None
    detail: dict[str, Any] | None = None


async def append(
    conn: AsyncConnection,
    *,
    at: datetime,
    actor: str,
    action: str,
    case_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    return (await append_many(conn, [Pending(at, actor, action, case_id, detail)]))[0]


async def append_many(conn: AsyncConnection, pending: Sequence[Pending]) -> list[AuditEntry]:
    """Chain several entries in order with one head read, one insert and one head update: a poll that
    opens fifty cases takes three round trips for their audit entries, not 150."""
    if not pending:
        return []
    # FOR UPDATE on the head row serialises appenders across replicas (PostgreSQL); SQLite serialises
    # writers by itself. The head row must exist for the lock to hold, so the first writer creates it
    # (ON CONFLICT DO NOTHING makes a racing second writer wait for the first, then lock the same row).
    lock = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
    head = (await conn.execute(lock)).first()
    if head is None:
        insert = (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(audit_head)
        await conn.execute(insert.values(id=1, seq=0, hash=GENESIS).on_conflict_do_nothing(index_elements=["id"]))
        head = (await conn.execute(lock)).first()
    assert head is not None
    prev = (int(head.seq), str(head.hash)) if head.seq else None
    out: list[AuditEntry] = []
    for p in pending:
        entry = seal(prev, p.at, p.actor[:128], p.action[:64], p.case_id, canonical(p.detail or {}))
        out.append(entry)
        prev = (entry.seq, entry.hash)
    await conn.execute(
        audit_log.insert(),
        [
            {
                "seq": e.seq,
                "at": e.at,
                "actor": e.actor,
                "action": e.action,
                "case_id": e.case_id,
                "detail": e.detail,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
            }
            for e in out
        ],
    )
    last = out[-1]
    await conn.execute(audit_head.update().where(audit_head.c.id == 1).values(seq=last.seq, hash=last.hash))
    return out


def _entry(r: Any) -> AuditEntry:
    return AuditEntry(r.seq, r.at, r.actor, r.action, r.case_id, r.detail, r.prev_hash, r.hash)


async def entries(conn: AsyncConnection) -> AsyncIterator[AuditEntry]:
    result = await conn.stream(select(audit_log).order_by(audit_log.c.seq))
    async for r in result:
        yield _entry(r)


async def check(conn: AsyncConnection, start: tuple[int, str] | None = None, *, batch: int = 2_000) -> Verdict:
    """Verify the chain up to the head row, from `start` (an entry verified earlier, as (seq, hash):
    only what was appended since is read) or, with None, from the first entry.

    Reads in batches of `batch` entries by seq, so neither memory nor one stretch of hashing grows with
    the log. Only entries up to the head read first are walked: a replica appending meanwhile commits
    its entries with the head's move, so a check never mistakes them for a broken tail. With `start`,
    the entry there must still hold the hash it was verified with; an older entry altered since is
    caught by the next check from the beginning (the service runs one on a schedule)."""
    head_row = (await conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1))).first()
    head = (int(head_row.seq), str(head_row.hash)) if head_row and head_row.seq else None
    # No head yet: nothing is walked, and entries found afterwards must be a first append that
    # committed (with its head) since the head was read, or the head row was deleted.
    end = head[0] if head else 0
    if start is not None:
        kept = (await conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == start[0]))).scalar()
        if kept != start[1]:
            return Verdict(False, 0, start[0], f"entry {start[0]} changed or went missing since it was verified")
    position, checked = start, 0
    while True:
        query = select(audit_log).order_by(audit_log.c.seq).limit(batch)
        if position is not None:
            query = query.where(audit_log.c.seq > position[0])
        query = query.where(audit_log.c.seq <= end)
        rows = [_entry(r) for r in await conn.execute(query)]
        walked = walk(rows, position)
        checked += walked.checked
        if not walked.ok:
            return replace(walked, checked=checked)
        position = walked.last
        if len(rows) < batch:
            break
        await asyncio.sleep(0)  # a long log is hashed in slices: Slack acks go through in between
    verdict = against_head(Verdict(True, checked, last=position), head)
    if verdict.ok:
        beyond = (await conn.execute(select(func.max(audit_log.c.seq)))).scalar()
        if beyond is not None and beyond > end:
            # entries after the head: an append that committed since the head was read has moved it;
            # a head that stayed behind them was set back by hand, one that is gone was deleted
            moved = (await conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1))).scalar()
            if not moved:
                return Verdict(False, checked, 1, "the audit head is missing")
            if moved < beyond:
                return Verdict(
                    False,
                    checked,
                    end + 1,
                    f"the head records entry {end} but the log goes on to entry {beyond} (the head was altered)",
                )
    return verdict
