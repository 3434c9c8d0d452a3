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


def test_a_walk_goes_on_from_an_entry_verified_earlier() -> None:
    c = chain(6)
    first = verify(c[:3], head(c[:3]))
    assert first.ok and first.last == head(c[:3])
    rest = verify(c[3:], head(c), start=first.last)
    assert rest.ok and rest.checked == 3 and rest.last == head(c)
    assert verify([], head(c), start=head(c)).ok  # nothing new since


def test_a_walk_from_the_wrong_place_is_caught() -> None:
    c = chain(6)
    v = verify(c[3:], head(c), start=(c[1].seq, c[1].hash))  # entry 3 is skipped
    assert not v.ok and v.first_bad_seq == 3 and "missing" in (v.problem or "")
    w = verify(c[3:], head(c), start=(c[2].seq, "f" * 64))  # not the hash entry 4 follows from
    assert not w.ok and w.first_bad_seq == 4 and "does not follow" in (w.problem or "")
