"""Appending to and reading the audit log. Runs inside the caller's transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.audit.chain import GENESIS, AuditEntry, Verdict, canonical, seal, verify
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


async def entries(conn: AsyncConnection) -> AsyncIterator[AuditEntry]:
    result = await conn.stream(select(audit_log).order_by(audit_log.c.seq))
    async for r in result:
        yield AuditEntry(r.seq, r.at, r.actor, r.action, r.case_id, r.detail, r.prev_hash, r.hash)


async def check(conn: AsyncConnection) -> Verdict:
    head = (await conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1))).first()
    rows = [e async for e in entries(conn)]
    return verify(rows, (int(head.seq), str(head.hash)) if head and head.seq else None)
