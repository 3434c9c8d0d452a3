from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bot.audit.chain import AuditEntry, canonical, seal, verify

T = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def chain(n: int) -> list[AuditEntry]:
    out: list[AuditEntry] = []
    for i in range(n):
        prev = (out[-1].seq, out[-1].hash) if out else None
        out.append(seal(prev, T + timedelta(seconds=i), "system", "case.transition", "MW-1", canonical({"i": i})))
    return out


def head(entries: list[AuditEntry]) -> tuple[int, str]:
    return entries[-1].seq, entries[-1].hash


def test_intact_chain_verifies() -> None:
    c = chain(5)
    assert verify(c, head(c)).ok and verify(c, head(c)).checked == 5
    assert verify([], None).ok


def test_altered_entry_is_named() -> None:
    c = chain(5)
    c[2] = replace(c[2], detail=canonical({"i": 99}))
    v = verify(c, head(c))
    assert not v.ok and v.first_bad_seq == 3 and "altered" in (v.problem or "")


def test_deleted_entry_is_named() -> None:
    c = chain(5)
    del c[1]
    v = verify(c, head(c))
    assert not v.ok and v.first_bad_seq == 2


def test_reordered_entries_are_caught() -> None:
    c = chain(5)
    a, b = c[1], c[2]
    c[1], c[2] = replace(b, seq=2), replace(a, seq=3)
    v = verify(c, head(c))
    assert not v.ok and v.first_bad_seq == 2


def test_dropped_tail_is_caught_by_the_head() -> None:
    c = chain(5)
    v = verify(c[:3], head(c))
    assert not v.ok and "head" in (v.problem or "")


def test_rehashing_one_entry_still_breaks_the_next() -> None:
    c = chain(4)
    forged = seal((c[0].seq, c[0].hash), c[1].at, "system", "case.transition", "MW-1", canonical({"i": "forged"}))
    c[1] = forged
    v = verify(c, head(c))
    assert not v.ok and v.first_bad_seq == 3
