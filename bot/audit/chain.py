"""Hash chain arithmetic for the audit log. Pure.

Each entry's hash commits to its own content, its position (seq) and the previous entry's hash,
so altering, deleting or reordering any entry breaks every hash after it. The head row records
the last (seq, hash) so dropping the newest entries is caught as well.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: datetime
    actor: str
    action: str
    case_id: str | None
    detail: str  # canonical JSON, exactly as stored
    prev_hash: str
    hash: str


def canonical(detail: dict[str, Any]) -> str:
    return orjson.dumps(detail, option=orjson.OPT_SORT_KEYS, default=str).decode()


def entry_hash(
    prev_hash: str, seq: int, at: datetime, actor: str, action: str, case_id: str | None, detail: str
) -> str:
    material = orjson.dumps([prev_hash, seq, at.isoformat(), actor, action, case_id, detail])
    return hashlib.sha256(material).hexdigest()


def seal(
    prev: tuple[int, str] | None, at: datetime, actor: str, action: str, case_id: str | None, detail: str
) -> AuditEntry:
    seq, prev_hash = (prev[0] + 1, prev[1]) if prev else (1, GENESIS)
    return AuditEntry(
        seq,
        at,
        actor,
        action,
        case_id,
        detail,
        prev_hash,
        entry_hash(prev_hash, seq, at, actor, action, case_id, detail),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None
    last: tuple[int, str] | None = None  # (seq, hash) the walk ended at: where a later check can go on from


def walk(entries: Iterable[AuditEntry], start: tuple[int, str] | None = None) -> Verdict:
    """Walk entries in seq order from `start` (the last entry already verified; None: from the first) and
    name the first one that does not follow from the one before. The head is not looked at."""
    expected_seq, prev_hash = (start[0] + 1, start[1]) if start else (1, GENESIS)
    n = 0
    for e in entries:
        if e.seq != expected_seq:
            return Verdict(False, n, expected_seq, f"entry {expected_seq} is missing (found {e.seq} next)")
        if e.prev_hash != prev_hash:
            return Verdict(False, n, e.seq, f"entry {e.seq} does not follow entry {e.seq - 1} (chain broken)")
        if entry_hash(e.prev_hash, e.seq, e.at, e.actor, e.action, e.case_id, e.detail) != e.hash:
            return Verdict(False, n, e.seq, f"entry {e.seq} was altered (its hash does not match its content)")
        prev_hash, expected_seq, n = e.hash, expected_seq + 1, n + 1
    return Verdict(True, n, last=(expected_seq - 1, prev_hash) if n or start else None)


def against_head(walked: Verdict, head: tuple[int, str] | None) -> Verdict:
    """A clean walk must end where the head row says the log ends: dropping the newest entries is caught."""
    if not walked.ok:
        return walked
    last, n = walked.last, walked.checked
    if head is not None and last != head:
        return Verdict(
            False,
            n,
            head[0] if last is None or last[0] < head[0] else last[0],
            f"log ends at entry {last[0] if last else 0} but the head records entry {head[0]} "
            "(entries were removed from the end, or the head was altered)",
        )
    if head is None and last is not None:
        return Verdict(False, n, 1, "the audit head is missing")
    return walked


def verify(
    entries: Iterable[AuditEntry], head: tuple[int, str] | None, start: tuple[int, str] | None = None
) -> Verdict:
    """Walk the chain in seq order; name the first entry that does not follow from the one before."""
    return against_head(walk(entries, start), head)
