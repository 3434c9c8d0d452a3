"""The sign-in poller: paging, the delayed watermark, dedupe, bad records, failures mid-poll."""

from __future__ import annotations

from datetime import timedelta

import httpx
import orjson
import pytest
from kiota_abstractions.api_error import APIError
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from bot.store import repo
from bot.store.tables import raw_events
from bot.web import build_web
from sandbox.world import PEOPLE, TENANT, TRAVELLERS, Sandbox, sign_in

ALICE = PEOPLE["U0ALICE"]
HISTORY = 15 * len(TRAVELLERS)  # Sandbox.seed: a sign-in every other day for 30 days


async def counts(sb: Sandbox) -> dict[str, int]:
    async with sb.bot.engine.connect() as conn:
        rows = await conn.execute(select(raw_events.c.status, func.count()).group_by(raw_events.c.status))
        return {r[0]: r[1] for r in rows}


async def cursor(sb: Sandbox):  # type: ignore[no-untyped-def]
    async with sb.bot.engine.connect() as conn:
        return await repo.get_cursor(conn, "entra_signin", TENANT)


async def test_first_poll_pages_through_nextlink_and_sets_the_cursor(sandbox: Sandbox) -> None:
    upn, name, gid = ALICE
    start = sandbox.clock.now() - timedelta(days=3)
    for i in range(2300):
        sandbox.graph.add_sign_in(sign_in(upn, gid, name, start + timedelta(seconds=60 * i), seq=10_000 + i))
    result = await sandbox.bot.poller.poll_once()
    assert result.pages == 3 and result.stored == 2300 + HISTORY and result.rejected == 0
    assert await cursor(sandbox) == sandbox.clock.now() - timedelta(seconds=120)
    gets = [r for r in sandbox.graph.requests if r.path.endswith("/auditLogs/signIns")]
    assert "createdDateTime ge" in gets[0].params["$filter"] and gets[0].params["$top"] == "1000"
    assert "$skiptoken" in gets[1].params


async def test_delayed_watermark_and_overlap_dedupe(sandbox: Sandbox) -> None:
    upn, name, gid = ALICE
    await sandbox.bot.poller.poll_once()
    now = sandbox.clock.now()
    # arrives late: happened 30 s before the last window's end, visible to Graph only now
    late = sign_in(upn, gid, name, now - timedelta(seconds=150), seq=1)
    sandbox.graph.add_sign_in(late, available_at=now + timedelta(seconds=30))
    sandbox.graph.add_sign_in(sign_in(upn, gid, name, now - timedelta(seconds=100), seq=2))
    sandbox.clock.advance(timedelta(seconds=60))
    r1 = await sandbox.bot.poller.poll_once()
    assert r1.stored == 2  # the overlap caught the late one
    sandbox.clock.advance(timedelta(seconds=60))
    r2 = await sandbox.bot.poller.poll_once()
    assert r2.stored == 0 and r2.duplicates == 1  # re-read in the overlap, stored once


async def test_record_inside_the_delay_is_not_read_yet(sandbox: Sandbox) -> None:
    upn, name, gid = ALICE
    await sandbox.bot.poller.poll_once()
    sandbox.graph.add_sign_in(sign_in(upn, gid, name, sandbox.clock.now(), seq=2))
    sandbox.clock.advance(timedelta(seconds=60))
    assert (await sandbox.bot.poller.poll_once()).stored == 0  # newer than now - delay: next time
    sandbox.clock.advance(timedelta(seconds=90))
    assert (await sandbox.bot.poller.poll_once()).stored == 1


async def test_malformed_records_are_rejected_counted_kept_and_the_poll_goes_on(sandbox: Sandbox) -> None:
    upn, name, gid = ALICE
    await sandbox.bot.poller.poll_once()
    t = sandbox.clock.now() - timedelta(seconds=110)
    broken = sign_in(upn, gid, name, t, seq=3)
    del broken["userPrincipalName"]
    wrong_type = sign_in(upn, gid, name, t, seq=4)
    wrong_type["status"] = {"errorCode": [1, 2]}
    good = sign_in(upn, gid, name, t, seq=5)
    for r in (broken, wrong_type, good):
        sandbox.graph.add_sign_in(r)
    sandbox.clock.advance(timedelta(seconds=60))
    result = await sandbox.bot.poller.poll_once()
    assert result.rejected == 2 and result.stored == 1
    assert {r.event_id for r in result.rejections} == {broken["id"], wrong_type["id"]}
    assert (await counts(sandbox))["rejected"] == 2
    sandbox.clock.advance(timedelta(seconds=30))
    again = await sandbox.bot.poller.poll_once()  # re-read in the overlap: counted once, not on every re-read
    assert again.fetched == 3 and again.rejected == 0 and again.duplicates == 1


async def test_a_failed_poll_does_not_move_the_cursor_and_loses_nothing(sandbox: Sandbox) -> None:
    upn, name, gid = ALICE
    await sandbox.bot.poller.poll_once()
    before = await cursor(sandbox)
    sandbox.graph.add_sign_in(sign_in(upn, gid, name, sandbox.clock.now() - timedelta(minutes=1), seq=6))
    sandbox.clock.advance(timedelta(minutes=5))
    sandbox.graph.faults.inject(r"GET .*/auditLogs/signIns", 500, times=1)  # kiota does not retry a 500
    with pytest.raises(APIError):
        await sandbox.bot.poller.poll_once()
    assert await cursor(sandbox) == before
    result = await sandbox.bot.poller.poll_once()
    assert result.stored == 1 and await cursor(sandbox) > before  # type: ignore[operator]


async def test_throttled_poll_is_retried_after_retry_after(sandbox: Sandbox) -> None:
    sandbox.graph.faults.inject(r"GET .*/auditLogs/signIns", 429, retry_after=1, times=1)
    result = await sandbox.bot.poller.poll_once()
    assert result.stored == HISTORY
    statuses = [r.status for r in sandbox.graph.requests if r.path.endswith("/auditLogs/signIns")]
    assert statuses == [429, 200]


async def payloads(sb: Sandbox) -> dict[str, str]:
    async with sb.bot.engine.connect() as conn:
        rows = await conn.execute(select(raw_events.c.event_id, raw_events.c.payload))
        return {r.event_id: r.payload for r in rows}


async def test_raw_json_is_kept_for_evidence_and_rejections_not_for_ordinary_records(sandbox: Sandbox) -> None:
    upn, name, gid = ALICE
    await sandbox.bot.poller.poll_once()
    t = sandbox.clock.now() - timedelta(seconds=110)
    ordinary = sign_in(upn, gid, name, t, seq=7)
    abroad = sign_in(upn, gid, name, t + timedelta(seconds=5), seq=8, country="KP", city="Pyongyang", ip="175.45.176.9")
    broken = sign_in(upn, gid, name, t, seq=9)
    broken["status"] = {"errorCode": [1, 2]}
    for r in (ordinary, abroad, broken):
        sandbox.graph.add_sign_in(r)
    sandbox.clock.advance(timedelta(seconds=60))
    result = await sandbox.bot.poller.poll_once()
    assert result.stored == 2 and result.rejected == 1 and result.cases_opened == 1
    kept = await payloads(sandbox)
    assert kept[ordinary["id"]] == ""  # its row still de-duplicates the overlap
    assert orjson.loads(kept[abroad["id"]]) == abroad  # evidence of the case: exactly what Graph sent
    assert orjson.loads(kept[broken["id"]]) == broken  # rejected: kept with its reason
    async with sandbox.bot.engine.connect() as conn:
        case = await repo.open_case_for(conn, TENANT, upn.lower(), t - timedelta(days=1))
    assert case is not None and [e.event_id for e in case.events] == [abroad["id"]]


async def test_keep_raw_all_keeps_every_record(sandbox: Sandbox) -> None:
    sandbox.bot.poller.keep_raw = "all"
    await sandbox.bot.poller.poll_once()
    kept = await payloads(sandbox)
    assert len(kept) == HISTORY and all(orjson.loads(p)["id"] == eid for eid, p in kept.items())


async def test_a_rolled_back_poll_leaves_no_learning_in_the_profile_cache(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    upn, name, gid = ALICE
    await sandbox.bot.poller.poll_once()
    async with sandbox.bot.engine.connect() as conn:
        before = await repo.load_profile(conn, TENANT, upn.lower())
    assert before is not None
    sandbox.graph.add_sign_in(sign_in(upn, gid, name, sandbox.clock.now() - timedelta(seconds=110), seq=11))
    sandbox.clock.advance(timedelta(seconds=60))

    async def disk_full(*_: object, **__: object) -> None:
        raise OSError("disk full")  # the storage fails after detection, before the commit

    monkeypatch.setattr(repo, "set_cursor", disk_full)
    with pytest.raises(OSError):
        await sandbox.bot.poller.poll_once()
    monkeypatch.undo()
    assert (await sandbox.bot.poller.poll_once()).stored == 1
    async with sandbox.bot.engine.connect() as conn:
        after = await repo.load_profile(conn, TENANT, upn.lower())
    assert after is not None and after.sign_ins == before.sign_ins + 1  # learned once, not twice


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_each_poll_shows_in_the_metrics_by_outcome_and_a_failure_counts_without_moving_the_cursor(
    sandbox: Sandbox,
) -> None:
    """Counters are process-wide (other tests poll this tenant too): the test reads what changed."""
    key = {"source": "entra_signin", "tenant": TENANT}

    def snapshot() -> dict[str, float]:
        out = {f"polls_{r}": sample("mailwarden_polls_total", **key, result=r) for r in ("ok", "failed")}
        for o in ("detected", "duplicate", "rejected", "sign_in_copy"):
            out[o] = sample("mailwarden_records_total", **key, outcome=o)
        out["cursor"] = sample("mailwarden_source_cursor_timestamp_seconds", **key)
        out["last"] = sample("mailwarden_source_last_success_timestamp_seconds", **key)
        return out

    upn, name, gid = ALICE
    before = snapshot()
    first = await sandbox.bot.poller.poll_once()
    t = sandbox.clock.now() - timedelta(seconds=110)
    broken = sign_in(upn, gid, name, t, seq=3)
    del broken["userPrincipalName"]
    for r in (broken, sign_in(upn, gid, name, t, seq=5)):
        sandbox.graph.add_sign_in(r)
    sandbox.clock.advance(timedelta(seconds=60))
    second = await sandbox.bot.poller.poll_once()  # one good, one malformed
    sandbox.clock.advance(timedelta(seconds=30))
    third = await sandbox.bot.poller.poll_once()  # both re-read in the overlap: the good one is a duplicate
    after = snapshot()
    assert after["polls_ok"] - before["polls_ok"] == 3
    assert after["detected"] - before["detected"] == first.stored + second.stored == HISTORY + 1
    assert after["rejected"] - before["rejected"] == 1 and after["duplicate"] - before["duplicate"] == third.duplicates
    assert after["sign_in_copy"] == before["sign_in_copy"]
    cursor_at = await cursor(sandbox)
    assert cursor_at is not None and after["cursor"] == cursor_at.timestamp()
    assert after["last"] == sandbox.clock.now().timestamp()

    sandbox.clock.advance(timedelta(minutes=5))
    sandbox.graph.faults.inject(r"GET .*/auditLogs/signIns", 500, times=1)
    with pytest.raises(APIError):
        await sandbox.bot.poller.poll_once()
    failed = snapshot()
    assert failed["polls_failed"] - after["polls_failed"] == 1 and failed["polls_ok"] == after["polls_ok"]
    assert failed["cursor"] == after["cursor"] and failed["last"] == after["last"]  # the window is read again


async def test_metrics_endpoint_reports_the_outbox_and_the_audit_chain(sandbox: Sandbox) -> None:
    await sandbox.bot.poller.poll_once()
    report = await sandbox.bot.health()
    app = build_web(sandbox.bot.bolt, sandbox.bot.health)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mw") as client:
        text = (await client.get("/metrics")).text
    lines = set(text.splitlines())
    assert f"mailwarden_outbox_pending {float(report['pending_outbox'])}" in lines
    assert {"mailwarden_outbox_dead 0.0", "mailwarden_audit_chain_ok 1.0", "mailwarden_db_ok 1.0"} <= lines
    polls = f'mailwarden_polls_total{{result="ok",source="entra_signin",tenant="{TENANT}"}}'
    assert any(line.startswith(polls) for line in lines), [x for x in lines if x.startswith("mailwarden_polls")]
