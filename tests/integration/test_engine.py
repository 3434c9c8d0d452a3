"""The detection engine through the real CaseService and SQLite: campaigns, correlation windows,
the watchlist, the containment loop, and the cross-user state surviving a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.audit import log as audit
from bot.cases.machine import Timeouts
from bot.cases.service import CaseService
from bot.clock import SimClock
from bot.detect import Params
from bot.model import Case, CaseEvent, CaseState, Decision, Event
from bot.sources.normalize import normalize
from bot.sources.normalize_entra import normalize_signin
from bot.store import db, repo
from sandbox.wire import sts_logon
from sandbox.world import sign_in

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SPRAYER = "185.220.101.4"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = db.make_engine(str(tmp_path / "engine.db"))
    await db.migrate(eng)
    try:
        yield eng
    finally:
        await eng.dispose()


def service(engine: AsyncEngine, clock: SimClock) -> CaseService:
    return CaseService(
        engine, clock, Params(enabled=None),
        Timeouts(user_answer=timedelta(minutes=15), soc_decision=timedelta(minutes=30)), timedelta(hours=24),
    )  # fmt: skip


def ev(user: str, at: datetime, seq: int, **kw: Any) -> Event:
    e = normalize_signin(sign_in(f"{user}@contoso.example", f"id-{user}", user.title(), at, seq=seq, **kw), "t")
    assert isinstance(e, Event)
    return e


def token_failure(user: str, at: datetime, code: int) -> Event:
    """A refresh token refused at the token endpoint, as the unified audit log records it."""
    record = sts_logon(
        record_id=f"sts-{user}-{at.timestamp()}", at=at, upn=f"{user}@contoso.example", user_id=f"id-{user}",
        ip="198.51.100.20", user_agent="Outlook-iOS/2.0", code=code, request_type="OAuth2:Token",
    )  # fmt: skip
    (e,) = normalize("o365-audit", record, "t")
    assert isinstance(e, Event) and not e.success and not e.interactive
    return e


def history(users: list[str], days: int = 20) -> list[Event]:
    """Weekday sign-ins from New York (the default of sign_in) for three weeks."""
    return [
        ev(u, T0 + timedelta(days=d, minutes=7 * i), 1000 * d + i) for d in range(days) for i, u in enumerate(users)
    ]


async def ingest(svc: CaseService, clock: SimClock, events: list[Event]) -> None:
    clock.set(max(clock.now(), max(e.occurred_at for e in events)))
    async with svc.engine.begin() as conn:
        await svc.ingest(conn, events)


async def cases(engine: AsyncEngine) -> list[Case]:
    async with engine.connect() as conn:
        return await repo.list_cases(conn)


async def test_a_spray_is_one_campaign_case_and_the_victim_gets_their_own(engine: AsyncEngine) -> None:
    users = [f"u{i}" for i in range(12)]
    clock = SimClock(T0)
    svc = service(engine, clock)
    await ingest(svc, clock, history(users))
    t = T0 + timedelta(days=21)
    spray = [ev(u, t + timedelta(seconds=20 * i), 90_000 + i, ok=False, ip=SPRAYER, country="RU") for i, u in
             enumerate(users)]  # fmt: skip
    hit = ev("u3", t + timedelta(minutes=6), 91_000, ip=SPRAYER, country="RU", city="Moscow")
    await ingest(svc, clock, spray[:6])  # the crossing, then more accounts in a later poll
    await ingest(svc, clock, [*spray[6:], hit])
    found = await cases(engine)
    campaigns = [c for c in found if c.is_campaign]
    assert len(campaigns) == 1
    (camp,) = campaigns
    assert camp.user_principal == f"campaign:{SPRAYER}" and camp.decision is Decision.SOC
    assert set(camp.users) == {f"{u}@contoso.example" for u in users}
    assert camp.plan == ()  # nothing to contain on a synthetic principal
    own = [c for c in found if c.user_principal == "u3@contoso.example"]
    assert len(own) == 1 and own[0].severity.label == "high" and "password_spray" in own[0].detectors


async def test_late_and_earlier_events_join_the_open_case(engine: AsyncEngine) -> None:
    clock = SimClock(T0)
    svc = service(engine, clock)
    await ingest(svc, clock, history(["jo"]))
    t = T0 + timedelta(days=21)
    await ingest(svc, clock, [ev("jo", t, 1, ip="203.0.113.9", country="PT", city="Lisbon")])
    # an earlier event from the same incident arrives late (the O365 feed lags by hours)
    await ingest(svc, clock, [ev("jo", t - timedelta(hours=3), 2, ip="203.0.113.10", country="ES", city="Madrid")])
    (case,) = [c for c in await cases(engine) if c.user_principal == "jo@contoso.example"]
    assert len(case.events) == 2 and case.events[0].country == "ES"  # kept in event-time order
    # far outside the window (before the case's first event): a case of its own
    await ingest(svc, clock, [ev("jo", t - timedelta(days=3), 3, ip="203.0.113.11", country="FR", city="Paris")])
    assert len([c for c in await cases(engine) if c.user_principal == "jo@contoso.example"]) == 2


async def contain(svc: CaseService, case: Case) -> Case:
    await svc.transition(case.id, CaseEvent.USER_DENIED, actor="U0JO")
    await svc.transition(case.id, CaseEvent.SOC_CONTAIN, actor="U0BOB", actions=("revoke_sessions",))
    return await svc.transition(case.id, CaseEvent.CONTAINMENT_DONE)


async def test_containment_watchlist_and_no_revoke_loop(engine: AsyncEngine) -> None:
    clock = SimClock(T0)
    svc = service(engine, clock)
    await ingest(svc, clock, history(["jo"]))
    t = T0 + timedelta(days=21)
    attack = [ev("jo", t + timedelta(seconds=30 * i), 50 + i, ok=False, ip=SPRAYER, country="RU") for i in range(6)]
    attack.append(ev("jo", t + timedelta(minutes=4), 60, ip=SPRAYER, country="RU", city="Moscow"))
    await ingest(svc, clock, attack)
    (case,) = await cases(engine)
    assert "failed_then_success" in case.detectors
    clock.advance(timedelta(minutes=30))
    done = await contain(svc, case)
    assert done.state.value == "contained"
    async with engine.connect() as conn:
        watch = (await repo.active_watches(conn, "t", ["jo@contoso.example"], clock.now()))["jo@contoso.example"]
        profile = await repo.load_profile(conn, "t", "jo@contoso.example")
    assert watch[0].expires_at - watch[0].contained_at == timedelta(days=30) and SPRAYER in watch[0].ips
    assert profile is not None and "RU" not in {c for c, _ in profile.countries}  # the attacker's trace is gone
    # sessions revoked: Outlook on jo's phone and laptop fails on its revoked refresh tokens (only the
    # audit log's token-endpoint records show it), then jo signs in again from home, fumbling the
    # password three times: nine failures in ten minutes, three of them a password
    back = clock.now() + timedelta(minutes=20)
    revoked = [token_failure("jo", back - timedelta(minutes=8 - i), code) for i, code in
               enumerate((50173, 70008, 70008, 50133, 70000, 50173))]  # fmt: skip
    again = [ev("jo", back + timedelta(seconds=20 * i), 70 + i, ok=False) for i in range(3)]
    again.append(ev("jo", back + timedelta(minutes=2), 80))
    await ingest(svc, clock, [*revoked, *again])
    assert len(await cases(engine)) == 1  # no revoke -> sign in -> alert loop
    # the attacker comes back: new evidence, a new case, judged with the watchlist's stricter eye
    later = back + timedelta(hours=3)
    await ingest(svc, clock, [ev("jo", later, 90, ip=SPRAYER, country="RU", city="Moscow")])
    found = await cases(engine)
    assert len(found) == 2 and "new_country" in found[-1].detectors


async def test_watchlist_thresholds_are_stricter(engine: AsyncEngine) -> None:
    clock = SimClock(T0)
    svc = service(engine, clock)
    await ingest(svc, clock, history(["jo"]))
    t = T0 + timedelta(days=21)
    await ingest(svc, clock, [ev("jo", t, 1, ip="203.0.113.9", country="PT", city="Lisbon")])
    (case,) = await cases(engine)
    await contain(svc, case)
    clock.advance(timedelta(days=3))  # past the quiet period, still on the watchlist
    t2 = clock.now()
    three = [ev("jo", t2 + timedelta(seconds=30 * i), 20 + i, ok=False, ip="198.51.100.99") for i in range(3)]
    await ingest(svc, clock, [*three, ev("jo", t2 + timedelta(minutes=3), 30, ip="198.51.100.99")])
    found = await cases(engine)
    assert len(found) == 2 and "failed_then_success" in found[-1].detectors  # 3 failures suffice (not 5)


async def test_the_spray_window_survives_a_restart(engine: AsyncEngine) -> None:
    users = [f"u{i}" for i in range(8)]
    clock = SimClock(T0 + timedelta(days=21))
    t = clock.now()
    first = [ev(u, t + timedelta(seconds=20 * i), 500 + i, ok=False, ip=SPRAYER) for i, u in enumerate(users[:3])]
    await ingest(service(engine, clock), clock, first)
    rest = [ev(u, t + timedelta(minutes=2, seconds=20 * i), 600 + i, ok=False, ip=SPRAYER) for i, u in
            enumerate(users[3:])]  # fmt: skip
    await ingest(service(engine, clock), clock, rest)  # a new service: the process restarted
    (camp,) = [c for c in await cases(engine) if c.is_campaign]
    assert len(camp.users) == 8


async def test_set_profile_tz_is_stored(engine: AsyncEngine) -> None:
    clock = SimClock(T0)
    svc = service(engine, clock)
    await ingest(svc, clock, history(["jo"], days=2))
    assert await svc.set_profile_tz("t", "jo@contoso.example", "Europe/Lisbon")
    async with engine.connect() as conn:
        p = await repo.load_profile(conn, "t", "jo@contoso.example")
        assert p is not None and p.tz == "Europe/Lisbon"
        assert not await repo.set_profile_tz(conn, "t", "nobody@contoso.example", "UTC")


async def test_the_cases_slack_time_zone_reaches_the_profile(engine: AsyncEngine) -> None:
    from dataclasses import replace

    clock = SimClock(T0)
    svc = service(engine, clock)
    await ingest(svc, clock, history(["jo"]))
    t = T0 + timedelta(days=21)
    await ingest(svc, clock, [ev("jo", t, 1, ip="203.0.113.9", country="PT", city="Lisbon")])
    (case,) = await cases(engine)
    await svc.update(replace(case, slack_tz="America/New_York"), action="slack.user_resolved", detail={})
    await ingest(svc, clock, [ev("jo", t + timedelta(hours=1), 2, ip="203.0.113.10", country="ES", city="Madrid")])
    async with engine.connect() as conn:
        p = await repo.load_profile(conn, "t", "jo@contoso.example")
    assert p is not None and p.tz == "America/New_York"


async def test_audit_entries_chained_in_batches_verify_like_single_ones(engine: AsyncEngine) -> None:
    t = datetime(2026, 1, 5, tzinfo=UTC)
    async with engine.begin() as conn:
        one = await audit.append(conn, at=t, actor="system", action="a", detail={"n": 0})
        batch = await audit.append_many(
            conn, [audit.Pending(t, "system", "b", "case-1", {"n": i}) for i in range(1, 4)]
        )
        assert await audit.append_many(conn, []) == []
        last = await audit.append(conn, at=t, actor="U1", action="c")
    assert [e.seq for e in (one, *batch, last)] == [1, 2, 3, 4, 5]
    assert [e.prev_hash for e in (*batch, last)] == [e.hash for e in (one, *batch)]
    async with engine.connect() as conn:
        assert (await audit.check(conn)).ok


def app_sign_in(at: datetime, seq: int, **kw: Any) -> Event:
    """A service principal's own sign-in (beta): no user, signInEventTypes servicePrincipal."""
    record = sign_in("", "", "", at, seq=seq, **kw)
    for key in ("userPrincipalName", "userDisplayName", "userId"):
        del record[key]
    record.update(
        servicePrincipalId="5P-0000-MAILSYNC",
        servicePrincipalName="Mail Sync Daemon",
        signInEventTypes=["servicePrincipal"],
        isInteractive=False,
    )
    e = normalize_signin(record, "t")
    assert isinstance(e, Event)
    return e


async def test_a_service_principal_signing_in_from_a_new_country_goes_to_the_soc(engine: AsyncEngine) -> None:
    clock = SimClock(T0)
    svc = service(engine, clock)
    await ingest(svc, clock, [app_sign_in(T0 + timedelta(days=d), d) for d in range(20)])
    assert await cases(engine) == []  # its own baseline: the usual place raises nothing
    abroad = app_sign_in(T0 + timedelta(days=20, hours=1), 99, country="RU", city="Moscow", ip="203.0.113.66")
    assert abroad.user_principal == "app:5p-0000-mailsync" and abroad.user_type == "service_principal"
    await ingest(svc, clock, [abroad])
    (case,) = await cases(engine)
    assert case.is_app and case.user_display == "Mail Sync Daemon" and case.user_id is None
    assert "new_country" in case.detectors
    # nobody to ask "was this you?": the SOC decides, and the user-account actions are not proposed
    assert case.decision is Decision.SOC and case.state is CaseState.AWAITING_SOC and case.plan == ()
    assert case.plan_notes[0][0] == "*" and "service principal" in case.plan_notes[0][1]


async def test_events_joining_a_case_in_one_batch_write_it_once_and_refresh_its_card_once(engine: AsyncEngine) -> None:
    """A VPN that flips between two far-apart exits: every sign-in is impossible travel and joins the
    case. The batch writes the case once, owes one card refresh, and audits every join in order."""
    from dataclasses import replace

    from sqlalchemy import func, select

    from bot.model import MessageRef
    from bot.store.tables import outbox

    clock = SimClock(T0)
    svc = service(engine, clock)
    await ingest(svc, clock, history(["jo"]))
    t = T0 + timedelta(days=21)
    await ingest(svc, clock, [ev("jo", t, 1, ip="203.0.113.9", country="PT", city="Lisbon")])
    (case,) = await cases(engine)
    posted = await svc.update(replace(case, user_card=MessageRef("D1", "1.0")), action="slack.user_posted", detail={})
    flips = [
        ev("jo", t + timedelta(minutes=10 * i), 10 + i, **({} if i % 2 else {"ip": "203.0.113.9", "country": "PT"}))
        for i in range(1, 9)
    ]
    async with engine.connect() as conn:
        before = (await conn.execute(select(func.count()).select_from(outbox))).scalar_one()
    await ingest(svc, clock, flips)
    (grown,) = await cases(engine)
    assert grown.id == case.id and grown.version == posted.version + 1  # one write for the batch
    assert len([f for f in grown.findings if f.detector == "impossible_travel"]) >= 8
    async with engine.connect() as conn:
        kinds = (await conn.execute(select(outbox.c.kind).where(outbox.c.id > before))).scalars().all()
        joins = [e async for e in audit.entries(conn) if e.action == "case.findings_added"]
        verdict = await audit.check(conn)
    assert len(kinds) == 1  # one refresh of the employee's card, not one per join
    assert len(joins) == 8 and all(j.case_id == case.id for j in joins)
    assert verdict.ok
