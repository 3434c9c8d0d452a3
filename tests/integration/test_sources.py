"""The Microsoft 365 sources against the emulators: beta non-interactive sign-ins, Identity Protection,
the Office 365 Management Activity API, and what a missing permission does to a source."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from bot.cases.machine import Timeouts
from bot.cases.service import CaseService
from bot.clock import SimClock
from bot.detect import Params
from bot.sources.base import Poller, SourceDisabled
from bot.sources.entra_risk import EntraRisk
from bot.sources.entra_signins import EntraSignIns, EntraSignInsBeta, WindowPacer
from bot.sources.o365_activity import O365Activity
from bot.sources.registry import SOURCE_NEEDS, Guarded
from bot.store import db, repo
from bot.wiring import graph_client
from sandbox.graph import GraphEmulator
from sandbox.o365 import O365Emulator
from sandbox.server import LoopbackServer
from sandbox.wire import sts_logon_of
from sandbox.world import GRAPH_TOKEN, MANAGE_TOKEN, PUBLISHER_ID, TENANT, SandboxCredential, sign_in


def decoded(records: list[Any]) -> list[Any]:
    """Graph fetchers hand over each record's raw JSON (typed decoding happens in the normalizer)."""
    return [orjson.loads(bytes(r)) for r in records]


T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ADA = ("ada@contoso.example", "11111111-0000-0000-0000-00000000ada0", "Ada Lovelace")


@dataclass
class World:
    clock: SimClock
    graph: GraphEmulator
    o365: O365Emulator
    graph_url: str
    manage_url: str

    def client(self) -> Any:
        return graph_client(self.graph_url, SandboxCredential())

    def activity(self, **kw: Any) -> O365Activity:
        return O365Activity(
            SandboxCredential(),
            tenant_id=TENANT,
            clock=self.clock,
            manage_url=self.manage_url,
            publisher_id=PUBLISHER_ID,
            **kw,
        )


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = SimClock(T0)
    graph = GraphEmulator(clock.now, token=GRAPH_TOKEN, tenant_id=TENANT)
    o365 = O365Emulator(clock.now, token=MANAGE_TOKEN, tenant_id=TENANT, page_size=2)
    async with LoopbackServer(graph.app, "graph") as g, LoopbackServer(o365.app, "o365") as m:
        yield World(clock, graph, o365, g, m)


def noninteractive(n: int, at: datetime, *, ok: bool = True, client: str = "Browser", kind: str = "nonInteractiveUser"):  # type: ignore[no-untyped-def]
    upn, gid, name = ADA
    record = sign_in(upn, gid, name, at, ok=ok, client=client, seq=n)
    record["isInteractive"] = False
    record["signInEventTypes"] = [kind]
    return record


# --- beta non-interactive sign-ins --------------------------------------------------------------------


async def test_beta_noninteractive_pages_selects_and_hides_interactive(world: World) -> None:
    upn, gid, name = ADA
    for i in range(2100):
        world.graph.add_sign_in(noninteractive(i, T0 - timedelta(hours=2) + timedelta(seconds=3 * i)))
    world.graph.add_sign_in(sign_in(upn, gid, name, T0 - timedelta(minutes=30), seq=99_999))  # interactive
    fetcher = EntraSignInsBeta(world.client())
    raw, pages = await fetcher.fetch(T0 - timedelta(hours=3), T0)
    records = decoded(raw)
    assert pages == 3 and len(records) == 2100
    assert {tuple(r["signInEventTypes"]) for r in records} == {("nonInteractiveUser",)}
    assert set(records[0]) <= {"id", *fetcher.select} and "appliedConditionalAccessPolicies" not in records[0]
    first, second = [r for r in world.graph.requests if r.path.endswith("/auditLogs/signIns")][:2]
    assert first.path == "/beta/auditLogs/signIns" and first.params["$top"] == "1000"
    assert "signInEventTypes/any(t: t eq 'nonInteractiveUser')" in first.params["$filter"]
    assert "$skiptoken" in second.params and second.path == "/beta/auditLogs/signIns"
    assert fetcher.source == "entra_signin_noninteractive" and fetcher.kind == "entra-signin"
    # the same tenant's v1.0 interactive fetcher sees neither the beta records nor signInEventTypes
    v1 = decoded((await EntraSignIns(world.client()).fetch(T0 - timedelta(hours=3), T0))[0])
    assert [r["id"] for r in v1] == [f"{gid[-4:]}-{int((T0 - timedelta(minutes=30)).timestamp())}-99999"]
    assert "signInEventTypes" not in v1[0]


async def test_filtered_noninteractive_modes_and_service_principals(world: World) -> None:
    at = T0 - timedelta(minutes=20)
    world.graph.add_sign_in(noninteractive(1, at))  # a token refresh: not wanted in filtered mode
    world.graph.add_sign_in(noninteractive(2, at, ok=False))  # failure
    world.graph.add_sign_in(noninteractive(3, at, client="IMAP4"))  # legacy protocol
    world.graph.add_sign_in(noninteractive(4, at, kind="servicePrincipal"))
    failures = EntraSignInsBeta(world.client(), filters=["failures"])
    got = decoded((await failures.fetch(T0 - timedelta(hours=1), T0))[0])
    assert [r["id"][-1] for r in got] == ["2"]
    both = EntraSignInsBeta(world.client(), filters=["failures", "legacy"], service_principals=True)
    got = decoded((await both.fetch(T0 - timedelta(hours=1), T0))[0])
    assert sorted(r["id"][-1] for r in got) == ["2", "3"]
    assert "status/errorCode ne 0 or clientAppUsed eq 'Authenticated SMTP'" in both.filter_text(T0, T0)
    everything = EntraSignInsBeta(world.client(), service_principals=True)
    got = decoded((await everything.fetch(T0 - timedelta(hours=1), T0))[0])
    assert sorted(r["id"][-1] for r in got) == ["1", "2", "3", "4"]
    with pytest.raises(ValueError, match="unknown"):
        EntraSignInsBeta(world.client(), filters=["everything"])


async def test_v1_refuses_signineventtypes_and_unknown_select(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.graph_url, headers={"Authorization": f"Bearer {GRAPH_TOKEN}"}) as h:
        v1 = await h.get("/v1.0/auditLogs/signIns", params={"$filter": "signInEventTypes/any(t: t eq 'x')"})
        bad = await h.get("/beta/auditLogs/signIns", params={"$select": "id,noSuchThing"})
        parens = await h.get("/beta/auditLogs/signIns", params={"$filter": "(status/errorCode ne 0"})
    assert v1.status_code == 400 and "signInEventTypes" in v1.json()["error"]["message"]
    assert bad.status_code == 400 and "noSuchThing" in bad.json()["error"]["message"]
    assert parens.status_code == 400


# --- Identity Protection ------------------------------------------------------------------------------


def detection(n: int, at: datetime) -> dict[str, Any]:
    upn, gid, name = ADA
    return {
        "id": f"rd-{n:05d}",
        "requestId": f"req-{n}",
        "correlationId": f"corr-{n}",
        "riskEventType": "unfamiliarFeatures",
        "riskState": "atRisk",
        "riskLevel": "medium",
        "riskDetail": "none",
        "source": "IdentityProtection",
        "detectionTimingType": "realtime",
        "activity": "signin",
        "tokenIssuerType": "AzureAD",
        "ipAddress": "203.0.113.9",
        "location": {"city": "Lisbon", "countryOrRegion": "PT", "geoCoordinates": {}},
        "activityDateTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "detectedDateTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastUpdatedDateTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "userId": gid,
        "userDisplayName": name,
        "userPrincipalName": upn,
        "additionalInfo": "[]",
    }


async def test_risk_detections_page_by_500_paced_without_429(world: World) -> None:
    world.graph.set_budget("identity_protection", (1, 0.1))  # 1/s compressed tenfold, no Retry-After
    for n in range(1100):
        world.graph.add_risk_detection(detection(n, T0 - timedelta(minutes=50) + timedelta(seconds=2 * n)))
    world.graph.add_risk_detection(detection(9999, T0 - timedelta(days=2)))  # outside the window
    fetcher = EntraRisk(world.client(), pacer=WindowPacer(1, 0.1))
    raw, pages = await fetcher.fetch(T0 - timedelta(hours=1), T0)
    records = decoded(raw)
    assert pages == 3 and len(records) == 1100 and "rd-09999" not in {r["id"] for r in records}
    gets = [r for r in world.graph.requests if "riskDetections" in r.path]
    assert [r.status for r in gets] == [200, 200, 200]
    assert gets[0].params["$top"] == "500" and "detectedDateTime ge" in gets[0].params["$filter"]
    assert all(b.at - a.at >= 0.09 for a, b in itertools.pairwise(gets))


async def test_identity_protection_throttle_has_no_retry_after(world: World) -> None:
    world.graph.set_budget("identity_protection", (1, 5.0))
    async with httpx.AsyncClient(base_url=world.graph_url, headers={"Authorization": f"Bearer {GRAPH_TOKEN}"}) as h:
        ok = await h.get("/v1.0/identityProtection/riskDetections")
        throttled = await h.get("/v1.0/identityProtection/riskyUsers")
        too_big = await h.get("/v1.0/users", params={"$top": "1000"})
    assert ok.status_code == 200 and ok.json()["value"] == []
    assert throttled.status_code == 429 and "retry-after" not in throttled.headers
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    assert too_big.status_code == 400


async def test_risky_users_are_fetched_and_each_risk_change_read_once(world: World, tmp_path: Path) -> None:
    upn, gid, name = ADA
    world.graph.add_user(gid, upn, name)
    world.graph.set_user_risk(gid)
    world.clock.advance(timedelta(minutes=10))  # past the delayed watermark
    world.graph.set_budget("identity_protection", (1, 0.05))
    fetcher = EntraRisk(world.client(), pacer=WindowPacer(1, 0.05), risky_users=True)
    poller = await make_poller(world, fetcher, tmp_path)
    result = await poller.poll_once()
    assert result.fetched == 1 and result.rejected == 0 and result.stored == 1
    world.clock.advance(timedelta(minutes=1))
    again = await poller.poll_once()  # the same risk state re-read in the overlap: not a new event
    assert again.stored == 0 and again.duplicates == again.fetched


# --- Office 365 Management Activity API ------------------------------------------------------------------


def audit_record(n: int, at: datetime, operation: str = "MailItemsAccessed") -> dict[str, Any]:
    return {
        "CreationTime": f"{at:%Y-%m-%dT%H:%M:%S}",
        "Id": f"o365-{n:05d}",
        "Operation": operation,
        "OrganizationId": TENANT,
        "RecordType": 50,
        "ResultStatus": "Succeeded",
        "UserId": ADA[0],
        "Workload": "Exchange",
        "ClientIP": "203.0.113.9",
        "MailboxOwnerUPN": ADA[0],
    }


async def test_o365_subscribes_lists_by_nextpageuri_and_reads_blobs(world: World) -> None:
    world.o365.enable("Audit.Exchange", since=T0 - timedelta(days=1))  # already on: no start call for it
    for n in range(5):
        world.o365.add_blob("Audit.Exchange", [audit_record(n, T0)], available_at=T0 - timedelta(minutes=50 - n))
    world.o365.add_blob("Audit.Exchange", [audit_record(99, T0)], available_at=T0 - timedelta(hours=3))  # earlier
    fetcher = world.activity()
    records, requests = await fetcher.fetch(T0 - timedelta(hours=1), T0)
    assert sorted(r["Id"] for r in records) == [f"o365-{n:05d}" for n in range(5)]
    paths = [(r.method, r.path.rsplit("/feed/", 1)[-1]) for r in world.o365.requests]
    assert paths[0] == ("GET", "subscriptions/list")
    assert ("POST", "subscriptions/start") in paths  # Audit.AzureActiveDirectory was off
    listings = [r for r in world.o365.requests if r.path.endswith("subscriptions/content")]
    exchange = [r for r in listings if r.params["contentType"] == "Audit.Exchange"]
    assert len(exchange) == 3 and "nextPage" in exchange[1].params  # 5 blobs, pages of 2, NextPageUri header
    assert exchange[0].params["startTime"] == "2026-12-01T08:00:00"
    assert all(r.params.get("PublisherIdentifier") == PUBLISHER_ID for r in world.o365.requests)
    assert requests == len(world.o365.requests)
    # a second process: the start answers AF20024 "already enabled", which counts as success
    again = world.activity()
    world.o365.requests.clear()
    await again.fetch(T0 - timedelta(hours=1), T0)
    assert not any(r.status >= 400 and r.error != "AF20024" for r in world.o365.requests)


async def test_o365_listing_rules_24h_and_7_days(world: World) -> None:
    world.o365.enable("Audit.Exchange", since=T0 - timedelta(days=8))
    base = f"{world.manage_url}/api/v1.0/{TENANT}/activity/feed/subscriptions/content"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {MANAGE_TOKEN}"}) as h:
        wide = await h.get(base, params={"contentType": "Audit.Exchange", "startTime": "2026-11-29T00:00:00",
                                         "endTime": "2026-11-30T00:00:01"})  # fmt: skip
        old = await h.get(base, params={"contentType": "Audit.Exchange", "startTime": "2026-11-23T00:00",
                                        "endTime": "2026-11-23T12:00"})  # fmt: skip
        half = await h.get(base, params={"contentType": "Audit.Exchange", "startTime": "2026-11-30"})
        wrong = await h.get(base, params={"contentType": "Audit.Exchange"}, headers={"Authorization": "Bearer x"})
    for r in (wide, old, half):
        assert r.status_code == 400 and r.json()["error"]["code"] == "AF20030"
    assert wrong.status_code == 401
    # the fetcher never asks for more than 24 h, nor further back than 7 days
    fetcher = world.activity(content_types=["Audit.Exchange"])
    await fetcher.fetch(T0 - timedelta(days=9), T0 - timedelta(days=6))
    listing = [r for r in world.o365.requests if r.path.endswith("subscriptions/content")][-1]
    start = datetime.fromisoformat(listing.params["startTime"]).replace(tzinfo=UTC)
    end = datetime.fromisoformat(listing.params["endTime"]).replace(tzinfo=UTC)
    assert listing.status == 200 and end - start <= timedelta(hours=24) and start >= T0 - timedelta(days=7)


async def test_o365_retries_af429_and_5xx_honouring_retry_after(world: World) -> None:
    world.o365.enable("Audit.Exchange", since=T0 - timedelta(days=1))
    world.o365.add_blob("Audit.Exchange", [audit_record(1, T0)], available_at=T0 - timedelta(minutes=30))
    world.o365.faults.inject(r"GET .*subscriptions/content", 429, retry_after=1)
    world.o365.faults.inject(r"GET .*/audit/", 503)
    fetcher = world.activity(content_types=["Audit.Exchange"])
    began = time.monotonic()
    records, _ = await fetcher.fetch(T0 - timedelta(hours=1), T0)
    assert [r["Id"] for r in records] == ["o365-00001"]
    assert time.monotonic() - began >= 0.9  # waited for Retry-After: 1
    statuses = [(r.path.rsplit("/", 1)[-1][:7], r.status) for r in world.o365.requests if r.method == "GET"]
    assert ("content", 429) in statuses and statuses.count(("content", 200)) == 1


async def test_o365_emulator_throttles_with_af429(world: World) -> None:
    slow = O365Emulator(world.clock.now, token=MANAGE_TOKEN, tenant_id=TENANT, budget=(2, 60.0))
    async with (
        LoopbackServer(slow.app, "o365-slow") as url,
        httpx.AsyncClient(headers={"Authorization": f"Bearer {MANAGE_TOKEN}"}) as h,
    ):
        codes = [
            (await h.get(f"{url}/api/v1.0/{TENANT}/activity/feed/subscriptions/list")).status_code for _ in range(3)
        ]
        last = await h.get(f"{url}/api/v1.0/{TENANT}/activity/feed/subscriptions/list")
    assert codes == [200, 200, 429] and last.json()["error"]["code"] == "AF429"


async def make_poller(world: World, fetcher: Any, tmp_path: Path, **kw: Any) -> Poller:
    engine = db.make_engine(f"sqlite+aiosqlite:///{tmp_path}/mw.db")
    await db.migrate(engine)
    cases = CaseService(
        engine, world.clock, Params(), Timeouts(timedelta(minutes=15), timedelta(minutes=30)), timedelta(hours=24)
    )
    options: dict[str, Any] = {
        "delay": timedelta(minutes=5),
        "overlap": timedelta(minutes=15),
        "initial_lookback": timedelta(hours=2),
    }
    options.update(kw)
    return Poller(fetcher, engine, world.clock, cases, tenant=TENANT, **options)


async def test_o365_poller_window_overlap_dedupe_and_bad_records(world: World, tmp_path: Path) -> None:
    world.o365.enable("Audit.Exchange", since=T0 - timedelta(days=1))
    good = [audit_record(n, T0 - timedelta(minutes=90)) for n in range(3)]
    broken = {"Id": "o365-broken", "Operation": "MailItemsAccessed", "UserId": ADA[0]}  # no CreationTime
    world.o365.add_blob("Audit.Exchange", [*good, broken], available_at=T0 - timedelta(minutes=20))
    fetcher = world.activity(content_types=["Audit.Exchange"])
    poller = await make_poller(world, fetcher, tmp_path, max_window=timedelta(hours=24))
    first = await poller.poll_once()
    assert (first.stored, first.rejected, first.fetched) == (3, 1, 4)
    blob_gets = world.o365.calls("GET", r"/audit/")
    world.clock.advance(timedelta(minutes=5))  # the blob is still inside the overlap
    world.o365.add_blob("Audit.Exchange", [audit_record(7, T0)], available_at=T0 - timedelta(minutes=2))
    second = await poller.poll_once()
    assert second.stored == 1 and second.duplicates == 0
    assert world.o365.calls("GET", r"/audit/") == blob_gets + 1  # the committed blob is not downloaded again


async def test_o365_poller_catches_up_one_24h_window_at_a_time(world: World, tmp_path: Path) -> None:
    world.o365.enable("Audit.Exchange", since=T0 - timedelta(days=8))
    world.o365.add_blob("Audit.Exchange", [audit_record(1, T0)], available_at=T0 - timedelta(days=5))
    fetcher = world.activity(content_types=["Audit.Exchange"])
    poller = await make_poller(
        world, fetcher, tmp_path, initial_lookback=timedelta(days=6), max_window=timedelta(hours=24)
    )
    windows = []
    for _ in range(3):
        r = await poller.poll_once()
        assert r.window_start and r.window_end
        windows.append(r.window_end - r.window_start)
    assert windows == [timedelta(hours=24)] * 3
    assert all(r.status == 200 for r in world.o365.requests)


# --- a missing permission switches the source off, once ------------------------------------------


async def test_403_disables_the_source_once_without_a_crash_loop(world: World, tmp_path: Path) -> None:
    world.graph.deny(r"/beta/auditLogs/signIns")
    guarded = Guarded(
        EntraSignInsBeta(world.client()),
        tenant=TENANT,
        name="signins_noninteractive",
        need=SOURCE_NEEDS["signins_noninteractive"],
    )
    poller = await make_poller(world, guarded, tmp_path)
    with capture_logs() as logs:
        for _ in range(3):
            result = await poller.poll_once()
            assert result.fetched == 0 and result.disabled
            world.clock.advance(timedelta(minutes=1))
    async with poller.engine.connect() as conn:  # nothing was read: the period stays to be read later
        assert await repo.get_cursor(conn, poller.fetcher.source, TENANT) is None
    disabled = [e for e in logs if e["event"] == "source.disabled"]
    assert len(disabled) == 1 and disabled[0]["needs"] == "AuditLog.Read.All"
    assert disabled[0]["code"] == "Authorization_RequestDenied" and disabled[0]["missing"] == "permission"
    assert world.graph.calls("GET", r"/beta/auditLogs/signIns") == 1  # never asked again


async def test_licence_and_activity_feed_denials_name_what_is_missing(world: World, tmp_path: Path) -> None:
    world.graph.deny_licence(r"/v1\.0/identityProtection/.*")
    world.o365.permission_denied = True
    risk = Guarded(
        EntraRisk(world.client(), pacer=WindowPacer(1, 0.01)), tenant=TENANT, name="risk", need=SOURCE_NEEDS["risk"]
    )
    audit = Guarded(world.activity(), tenant=TENANT, name="o365_audit", need=SOURCE_NEEDS["o365_audit"])
    with capture_logs() as logs:
        for fetcher in (risk, audit, audit):
            with pytest.raises(SourceDisabled):
                await fetcher.fetch(T0 - timedelta(hours=1), T0)
    disabled = {e["source"]: e for e in logs if e["event"] == "source.disabled"}
    assert disabled["risk"]["missing"] == "licence" and "P1" in disabled["risk"]["needs"]
    assert disabled["o365_audit"]["code"] == "AF10001" and "ActivityFeed.Read" in disabled["o365_audit"]["needs"]
    assert len([e for e in logs if e["event"] == "source.disabled"]) == 2


async def test_service_principal_sign_ins_are_read_and_kept_under_their_app(world: World, tmp_path: Path) -> None:
    app = noninteractive(5, T0 - timedelta(minutes=20), kind="servicePrincipal")
    for key in ("userPrincipalName", "userDisplayName", "userId"):
        del app[key]
    app.update(servicePrincipalId="5P-0000-MAILSYNC", servicePrincipalName="Mail Sync Daemon")
    world.graph.add_sign_in(app)
    poller = await make_poller(world, EntraSignInsBeta(world.client(), service_principals=True), tmp_path)
    result = await poller.poll_once()
    assert (result.stored, result.rejected) == (1, 0)
    async with poller.engine.connect() as conn:
        profile = await repo.load_profile(conn, TENANT, "app:5p-0000-mailsync")
    assert profile is not None and profile.sign_ins == 1  # its own baseline, learned like a user's


# --- one sign-in, one event: the audit log's STS logons and Graph's sign-in log ---------------------


def typos(upn: str, uid: str, name: str, at: datetime, n: int, seq: int) -> list[dict[str, Any]]:
    """`n` wrong passwords 20 s apart, then the right one, as Graph's sign-in log has them."""
    out = [sign_in(upn, uid, name, at + timedelta(seconds=20 * i), ok=False, seq=seq + i) for i in range(n)]
    return [*out, sign_in(upn, uid, name, at + timedelta(seconds=20 * n), seq=seq + n)]


def sts_copies(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [sts_logon_of(r) for r in records]


async def test_sts_logons_copy_graph_sign_ins_until_graph_is_refused(world: World, tmp_path: Path) -> None:
    """While the tenant's Graph sign-in log is read, the audit log's STS logons are kept (and
    de-duplicated on re-reads) but not counted again; once Graph refuses the sign-in log (no
    Entra ID P1), the STS logons are the sign-ins and are detected on."""
    engine = db.make_engine(f"sqlite+aiosqlite:///{tmp_path}/mw.db")
    await db.migrate(engine)
    cases = CaseService(
        engine, world.clock, Params(), Timeouts(timedelta(minutes=15), timedelta(minutes=30)), timedelta(hours=24)
    )
    window = {"delay": timedelta(minutes=5), "overlap": timedelta(minutes=15), "initial_lookback": timedelta(hours=3)}
    sign_ins = Guarded(EntraSignIns(world.client()), tenant=TENANT, name="signins", need=SOURCE_NEEDS["signins"])
    audit = Guarded(
        world.activity(content_types=["Audit.AzureActiveDirectory"]),
        tenant=TENANT,
        name="o365_audit",
        need=SOURCE_NEEDS["o365_audit"],
    )
    graph_poller = Poller(sign_ins, engine, world.clock, cases, tenant=TENANT, **window)
    audit_poller = Poller(
        audit, engine, world.clock, cases, tenant=TENANT, graph_sign_ins=lambda: sign_ins.serving, **window
    )
    world.o365.enable("Audit.AzureActiveDirectory", since=T0 - timedelta(days=1))
    ada = typos(*ADA, T0 - timedelta(minutes=100), 3, seq=10)  # three typos: 3 failures, not 6
    for r in ada:
        world.graph.add_sign_in(r)
    world.o365.add_blob("Audit.AzureActiveDirectory", sts_copies(ada), available_at=T0 - timedelta(minutes=30))
    assert not sign_ins.serving  # not relied on before Graph has served a read
    first = await graph_poller.poll_once()
    assert (first.stored, first.cases_opened) == (4, 0) and sign_ins.serving
    copied = await audit_poller.poll_once()
    assert (copied.stored, copied.sign_in_copies, copied.cases_opened) == (4, 4, 0)
    async with engine.connect() as conn:  # kept, so a re-read of the window is a duplicate
        assert await repo.unseen_raw(conn, "o365_audit", TENANT, [f"sts-{r['id']}" for r in ada]) == set()

    # The tenant loses Entra ID P1: the sign-in log is refused, the audit log carries the sign-ins.
    world.graph.deny_licence(r"/v1\.0/auditLogs/signIns")
    world.clock.advance(timedelta(minutes=10))
    assert (await graph_poller.poll_once()).disabled and not sign_ins.serving
    bob = ("bob@contoso.example", "22222222-0000-0000-0000-000000000b0b", "Bob")
    guessed = typos(*bob, T0 - timedelta(minutes=20), 6, seq=40)
    world.o365.add_blob("Audit.AzureActiveDirectory", sts_copies(guessed), available_at=T0 + timedelta(minutes=2))
    world.clock.advance(timedelta(minutes=10))
    fallback = await audit_poller.poll_once()
    assert (fallback.stored, fallback.sign_in_copies, fallback.cases_opened) == (7, 0, 1)
    async with engine.connect() as conn:
        (case,) = await repo.list_cases(conn)
    assert case.user_principal == "bob@contoso.example" and case.detectors == ("failed_then_success",)
    assert case.findings[0].reason.startswith("6 failed sign-ins")
    await engine.dispose()


def token_redemption(upn: str, uid: str, name: str, at: datetime, *, seq: int) -> dict[str, Any]:
    """A refresh token redeemed by a script from an unfamiliar address, as the audit log has it (an STS
    logon, RequestType OAuth2:Token): Entra logs it as a non-interactive sign-in."""
    graph = sign_in(upn, uid, name, at, ip="203.0.113.9", ua="python-requests/2.31.0", seq=seq)
    return sts_logon_of({**graph, "isInteractive": False})


async def test_token_redemptions_are_left_to_graph_only_while_its_noninteractive_log_is_read(
    world: World, tmp_path: Path
) -> None:
    """With only Graph's interactive (v1.0) sign-in log read, a replayed refresh token shows nowhere but
    in the audit log: that STS logon is detected on while the interactive ones beside it are copies.
    Once the non-interactive log is read too, token redemptions are its copies as well."""
    engine = db.make_engine(f"sqlite+aiosqlite:///{tmp_path}/mw.db")
    await db.migrate(engine)
    cases = CaseService(
        engine,
        world.clock,
        Params(enabled=None),
        Timeouts(timedelta(minutes=15), timedelta(minutes=30)),
        timedelta(hours=24),
    )
    window = {"delay": timedelta(minutes=5), "overlap": timedelta(minutes=15), "initial_lookback": timedelta(hours=3)}
    noninteractive_read = False
    audit_poller = Poller(
        world.activity(content_types=["Audit.AzureActiveDirectory"]),
        engine,
        world.clock,
        cases,
        tenant=TENANT,
        graph_sign_ins=lambda: True,
        graph_noninteractive_sign_ins=lambda: noninteractive_read,
        **window,
    )
    world.o365.enable("Audit.AzureActiveDirectory", since=T0 - timedelta(days=1))
    ada = typos(*ADA, T0 - timedelta(minutes=100), 3, seq=10)
    replayed = token_redemption(*ADA, T0 - timedelta(minutes=90), seq=20)
    assert {"Name": "RequestType", "Value": "OAuth2:Token"} in replayed["ExtendedProperties"]
    world.o365.add_blob(
        "Audit.AzureActiveDirectory", [*sts_copies(ada), replayed], available_at=T0 - timedelta(minutes=30)
    )
    first = await audit_poller.poll_once()
    assert (first.stored, first.sign_in_copies, first.cases_opened) == (5, 4, 1)
    async with engine.connect() as conn:
        (case,) = await repo.list_cases(conn)
    assert case.user_principal == ADA[0] and "scripted_client" in case.detectors
    assert {f.event_id for f in case.findings} == {replayed["Id"]}

    noninteractive_read = True
    bob = ("bob@contoso.example", "22222222-0000-0000-0000-000000000b0b", "Bob")
    again = token_redemption(*bob, T0 - timedelta(minutes=5), seq=40)
    world.o365.add_blob("Audit.AzureActiveDirectory", [again], available_at=T0 + timedelta(minutes=2))
    world.clock.advance(timedelta(minutes=10))
    second = await audit_poller.poll_once()
    assert (second.stored, second.sign_in_copies, second.cases_opened) == (1, 1, 0)
    await engine.dispose()
