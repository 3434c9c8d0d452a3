"""The per-tenant cross-user index (TenantFleet) finds what the reference windows (observe_fleet) find.

The service runs TenantFleet: its per-address and per-app windows cost O(log n) per event. The
reference windows are plain values that keep every attempt and read; they are the spec. On the same
events in event-time order both must give the same findings, and the index must serialize to the
state the reference holds.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from bot.detect import Params
from bot.detect.fleet import Fleet, Sightings, TenantFleet, fleet_to_dict, observe_fleet
from bot.detect.mail_bulk_access import GRAPH_APP
from bot.model import Event, Finding
from tests.unit.test_detectors import DETECT, events

T = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
PARAMS = Params(enabled=None)


def seen(findings: list[Finding]) -> list[tuple[str, str, int, str]]:
    return [(f.detector, f.event_id, int(f.severity), f.reason) for f in findings]


def both(stream: list[Event], params: Params = PARAMS, restart_at: int | None = None) -> None:
    """Feed `stream` to both forms, comparing every event's findings; optionally restart the index
    (serialize, parse, read back) before event `restart_at`, as a new poll in a new process would."""
    fleet, index = Fleet(), TenantFleet()
    for n, e in enumerate(stream):
        if n == restart_at:
            index = TenantFleet.from_dict(orjson.loads(orjson.dumps(index.to_dict())))
        fleet, expected = observe_fleet(fleet, e, params)
        assert seen(index.observe(e, params)) == seen(expected), (n, e)
        if e.ip is not None:
            assert index.sprayer(e.ip) == fleet.spray.sprayer(e.ip)
    # the reference prunes its one window on every event, the index each key's on that key's events:
    # aged out at the same moment, they hold the same
    reference = TenantFleet.from_fleet(fleet)
    if stream:
        index.prune(stream[-1].occurred_at, params)
        reference.prune(stream[-1].occurred_at, params)
    assert index.to_dict() == reference.to_dict()


def test_every_cross_user_sample_gives_the_same_findings_through_the_index() -> None:
    checked = 0
    for detector in ("password_spray", "mail_bulk_access"):
        for sample in json.loads((DETECT / f"{detector}.samples.json").read_text()):
            kind = sample.get("kind", "entra-signin")
            stream = [e for r in [*sample.get("history", []), sample["record"]] for e in events(kind, r)]
            both(sorted(stream, key=lambda e: e.occurred_at))
            checked += 1
    assert checked >= 4


def attempt(i: int, user: int, ip: int, ok: bool, code: int, seconds: int) -> Event:
    return Event(
        source="s",
        event_id=f"e{i}",
        tenant="t",
        occurred_at=T + timedelta(seconds=seconds),
        user_principal=f"u{user}@contoso.example",
        ip=f"203.0.113.{ip}",
        success=ok,
        error_code=0 if ok else code,
    )


def read(i: int, mailbox: int, app: int, seconds: int, via_graph: bool) -> Event:
    return Event(
        source="o365",
        event_id=f"m{i}",
        tenant="t",
        occurred_at=T + timedelta(seconds=seconds),
        user_principal=f"svc{app}@contoso.example",
        kind="mail_access",
        success=True,
        app_id=GRAPH_APP if via_graph else f"app-{app}",
        client_app=None if via_graph else "Client=WebServices;EWS",
        target=f"box{mailbox}@contoso.example",
    )


_attempts = st.lists(
    st.tuples(
        st.integers(0, 9),  # user
        st.integers(1, 3),  # address
        st.booleans(),
        st.sampled_from([50126, 50053, 50074]),  # wrong password, locked, MFA required (not counted)
        st.integers(1, 400),  # seconds since the previous record: windows of 20 minutes fill and drain
    ),
    max_size=80,
)
_reads = st.lists(st.tuples(st.integers(0, 8), st.integers(0, 2), st.integers(1, 200), st.booleans()), max_size=40)


@settings(max_examples=150, deadline=None)
@given(_attempts, _reads, st.integers(0, 200), st.integers(3, 8))
def test_random_streams_give_the_same_findings(
    attempts: list[tuple[int, int, bool, int, int]], reads: list[tuple[int, int, int, bool]], restart: int, k: int
) -> None:
    clock, stream = 0, []
    for i, (user, ip, ok, code, gap) in enumerate(attempts):
        clock += gap
        stream.append(attempt(i, user, ip, ok, code, clock))
    clock = 0
    for i, (mailbox, app, gap, graph) in enumerate(reads):
        clock += gap
        stream.append(read(i, mailbox, app, clock, graph))
    stream.sort(key=lambda e: (e.occurred_at, e.event_id))  # the service's own total order
    params = dataclasses.replace(PARAMS, spray_min_users=k, mail_bulk_min_mailboxes=k)
    both(stream, params, restart_at=restart)


def test_a_busy_office_address_stays_quiet_and_a_spray_from_it_is_still_seen() -> None:
    """Hundreds of accounts succeeding behind one NAT address: no spray (failures do not outnumber
    successes); a burst of failures for more accounts than succeed from it is."""
    stream = [attempt(i, i % 400, 1, i % 50 != 0, 50126, 2 * i) for i in range(3000)]
    both(stream)
    base = stream[-1].occurred_at
    burst = [replace(attempt(10_000 + i, 1000 + i, 1, False, 50126, 0), occurred_at=base + timedelta(seconds=i))
             for i in range(450)]  # fmt: skip
    index = TenantFleet()
    for e in stream:
        assert index.observe(e, PARAMS) == []
    found = [f for e in burst for f in index.observe(e, PARAMS)]
    assert [f.detector for f in found] == ["password_spray"] and index.sprayer("203.0.113.1") is not None


def test_the_index_is_bounded_and_ages_out() -> None:
    params = dataclasses.replace(PARAMS, spray_max_attempts=50, mail_bulk_max_seen=30)
    index = TenantFleet()
    for i in range(500):
        index.observe(attempt(i, i, i % 3, False, 50126, i), params)
        index.observe(read(i, i, 0, i, True), params)
    assert sum(len(w.failed) + len(w.succeeded) for w in index.spray.values()) <= 150  # 50 per address
    assert all(len(w.reads) <= 30 for w in index.mail.values())
    index.prune(T + timedelta(days=3), params)
    assert index.spray == {} and index.mail == {}


def test_sightings_expire_exactly_what_is_older_than_the_horizon_in_any_order() -> None:
    s: Sightings[str] = Sightings()
    for at, who in [(5, "b"), (1, "a"), (9, "a"), (3, "c"), (3, "c")]:
        s.add(T + timedelta(seconds=at), who)
    s.expire(T + timedelta(seconds=3))  # the horizon itself stays
    assert sorted(s.members()) == ["a", "b", "c"] and len(s) == 4
    s.expire(T + timedelta(seconds=4))
    assert sorted(s.members()) == ["a", "b"]
    s.expire(T + timedelta(seconds=6))
    assert list(s.members()) == ["a"] and [t for t, _ in s.sightings()] == [T + timedelta(seconds=9)]


@pytest.mark.parametrize("form", ["v2", "single-window"])
def test_reads_both_stored_forms(form: str) -> None:
    fleet = Fleet()
    for i in range(6):
        fleet, _ = observe_fleet(fleet, attempt(i, i, 7, False, 50126, 10 * i), PARAMS)
    stored: dict[str, Any] = TenantFleet.from_fleet(fleet).to_dict() if form == "v2" else fleet_to_dict(fleet)
    index = TenantFleet.from_dict(orjson.loads(orjson.dumps(stored)))
    assert index.sprayer("203.0.113.7") == fleet.spray.sprayer("203.0.113.7") is not None
    assert index.failing_accounts("203.0.113.7") == tuple(f"u{i}@contoso.example" for i in range(6))
