"""The Slack experience on the sandbox: the escalation ladder, paging, modals, the two-person rule,
App Home, the slash command, and server-side authorisation of every button and subcommand."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.slack.ids import SOC_BUTTONS, Ids
from bot.store import repo
from sandbox import demo
from sandbox.world import PEOPLE, Sandbox, eventually
from tests.integration.helpers import DAVE, audit_actions, dave_attacked, dave_before_soc, state_of, wait_state


async def sweep(sb: Sandbox) -> None:
    await sb.bot.cases.fire_due_deadlines()
    await sb.bot.dispatcher.drain()


async def test_every_rung_of_the_ladder_on_simulated_time(sandbox: Sandbox) -> None:
    case = await dave_attacked(sandbox)
    dm = sandbox.slack.dm_channel("U0DAVE")
    sandbox.clock.advance(timedelta(seconds=599))
    await sweep(sandbox)
    assert len(sandbox.slack.messages(dm)) == 1  # not yet
    sandbox.clock.advance(timedelta(seconds=2))  # user reminder at 600 s
    await sweep(sandbox)
    reminder = sandbox.slack.messages(dm)[-1]
    assert reminder["thread_ts"] == case.user_card.ts and "Reminder" in reminder["text"]  # type: ignore[union-attr]
    assert await state_of(sandbox, DAVE[0]) == "awaiting_user"
    sandbox.clock.advance(timedelta(seconds=300))  # user timeout at 900 s: the SOC card
    await sweep(sandbox)
    assert await state_of(sandbox, DAVE[0]) == "awaiting_soc" and len(sandbox.soc_cards()) == 1
    sandbox.clock.advance(timedelta(seconds=901))  # SOC reminder at 900 s, mentioning the SOC group
    await sweep(sandbox)
    notes = [m["text"] for m in sandbox.slack.messages("C0SOC") if m.get("thread_ts")]
    assert any("<!subteam^S0SOC>" in n and "Reminder" in n for n in notes)
    assert sandbox.pagerduty.events == []
    sandbox.clock.advance(timedelta(seconds=900))  # SOC timeout at 1800 s: escalated and paged
    await sweep(sandbox)
    assert await state_of(sandbox, DAVE[0]) == "escalated"
    assert sandbox.pagerduty.actions(case.id) == ["trigger"]
    trigger = sandbox.pagerduty.events[0]
    assert trigger["dedup_key"] == case.id and trigger["payload"]["severity"] == "error"
    notes = [m["text"] for m in sandbox.slack.messages("C0SOC") if m.get("thread_ts")]
    assert any("<!subteam^S0ONCALL>" in n and "Paging on-call" in n for n in notes)


async def test_escalate_take_and_close_drive_the_page(sandbox: Sandbox) -> None:
    soc = await dave_before_soc(sandbox)
    await sandbox.click("U0BOB", soc, Ids.SOC_ESCALATE)
    await wait_state(sandbox, DAVE[0], "escalated")
    case = await demo.latest_case(sandbox, DAVE[0])
    assert case is not None
    await eventually(lambda: sandbox.pagerduty.actions(case.id) == ["trigger"], what="trigger")
    soc = await demo.wait_button(sandbox, DAVE[0], Ids.SOC_TAKE)
    await sandbox.click("U0CAROL", soc, Ids.SOC_TAKE)
    await eventually(lambda: sandbox.pagerduty.actions(case.id) == ["trigger", "acknowledge"], what="acknowledge")
    await eventually(lambda: "taken by <@U0CAROL>" in str(sandbox.soc_cards()[-1]["blocks"]), what="the owner")
    soc = sandbox.soc_cards()[-1]
    assert Ids.SOC_TAKE not in str(soc["blocks"])  # nobody takes a taken case
    await sandbox.click("U0CAROL", soc, Ids.SOC_BENIGN)
    await eventually(lambda: demo.modal_open(sandbox, "U0CAROL"), what="modal")
    await sandbox.submit_modal("U0CAROL", demo.benign("Pen test by the red team, ticket SEC-42"))
    await wait_state(sandbox, DAVE[0], "closed_benign")
    await eventually(lambda: sandbox.pagerduty.alerts.get(case.id) == "resolved", what="resolve")


async def test_a_reason_is_required_and_a_benign_allow_entry_is_scoped(sandbox: Sandbox) -> None:
    soc = await dave_before_soc(sandbox)
    await sandbox.click("U0BOB", soc, Ids.SOC_BENIGN)
    await eventually(lambda: demo.modal_open(sandbox, "U0BOB"), what="modal")
    refused = await sandbox.submit_modal("U0BOB", demo.benign(""))
    assert refused.status_code == 200 and refused.json()["response_action"] == "errors"
    assert await state_of(sandbox, DAVE[0]) == "awaiting_soc"
    ok = await sandbox.submit_modal("U0BOB", demo.benign("Dave is at a conference in Moscow", "country", 7))
    assert ok.status_code == 200
    await wait_state(sandbox, DAVE[0], "closed_benign")
    async with sandbox.bot.engine.connect() as conn:
        allows = await repo.active_allows(conn, sandbox.bot.cases.tenant_default, DAVE[0], sandbox.clock.now())
    assert [(a.scope, a.value, a.source) for a in allows] == [("country", "RU", "soc_benign")]
    assert allows[0].expires_at == sandbox.clock.now() + timedelta(days=7)


async def test_contain_modal_lists_actions_with_the_plan_prechecked(sandbox: Sandbox) -> None:
    soc = await dave_before_soc(sandbox)
    await sandbox.click("U0BOB", soc, Ids.SOC_CONTAIN)
    await eventually(lambda: demo.modal_open(sandbox, "U0BOB"), what="modal")
    view = sandbox.slack.open_view("U0BOB")
    boxes = next(b for b in view["blocks"] if b.get("block_id") == Ids.IN_ACTIONS)["element"]
    offered = [o["value"] for o in boxes["options"]]
    assert "revoke_sessions" in offered and "reset_password" in offered
    prechecked = [o["value"] for o in boxes["initial_options"]]
    case = await demo.latest_case(sandbox, DAVE[0])
    assert case is not None and prechecked == [a for a in case.plan if a in offered]
    # reset_password is destructive: one approval is not enough
    await sandbox.submit_modal("U0BOB", demo.contain(["revoke_sessions", "reset_password"], "Dave says no"))
    await wait_state(sandbox, DAVE[0], "awaiting_second_approval")
    assert sandbox.graph.writes() == []


@pytest.mark.parametrize("action_id", [a for a in SOC_BUTTONS if a != Ids.SOC_SECOND_APPROVAL])
async def test_every_soc_button_refuses_non_members(sandbox: Sandbox, action_id: Ids) -> None:
    soc = await dave_before_soc(sandbox)
    before = await state_of(sandbox, DAVE[0])
    await sandbox.click("U0MALLORY", soc, action_id)
    await eventually(lambda: any(e["user"] == "U0MALLORY" for e in sandbox.slack.ephemerals), what="refusal")
    assert await state_of(sandbox, DAVE[0]) == before
    assert not [v for v in sandbox.slack.views.values() if v["user"] == "U0MALLORY"]
    assert ("U0MALLORY", "authz.refused") in await audit_actions(sandbox)


@pytest.mark.parametrize("text", ["status", "case MW-1", "allow a@b.c country RU 7 because", "contain dave@x"])
async def test_soc_subcommands_refuse_non_members(sandbox: Sandbox, text: str) -> None:
    reply = await sandbox.command("U0MALLORY", text)
    assert reply.status_code == 200
    await eventually(lambda: any(e["user"] == "U0MALLORY" for e in sandbox.slack.ephemerals), what="reply")
    answer = next(e for e in sandbox.slack.ephemerals if e["user"] == "U0MALLORY")["text"]
    assert "SOC user group" in answer
    assert ("U0MALLORY", "authz.refused") in await audit_actions(sandbox)


async def test_status_and_case_for_soc_members(sandbox: Sandbox) -> None:
    case = await dave_attacked(sandbox)
    await sandbox.command("U0BOB", "status")
    await sandbox.command("U0BOB", f"case {case.id}")
    await eventually(lambda: len([e for e in sandbox.slack.ephemerals if e["user"] == "U0BOB"]) == 2, what="replies")
    status, detail = (e["text"] for e in sandbox.slack.ephemerals if e["user"] == "U0BOB")
    assert "Open cases: 1" in status and "awaiting_user: 1" in status
    assert case.id in detail and "failed sign-ins" in detail


async def test_travel_needs_a_soc_member_to_approve(sandbox: Sandbox) -> None:
    await sandbox.bot.poller.poll_once()
    await sandbox.command("U0GRACE", "travel JP until 2026-12-20")
    await sandbox.bot.dispatcher.drain()
    card = next(m for m in sandbox.soc_cards() if "Travel" in m["text"])
    await sandbox.click("U0GRACE", card, Ids.TRAVEL_APPROVE)  # approving your own trip: refused
    await eventually(lambda: any("approve trips" in e["text"] for e in sandbox.slack.ephemerals), what="refusal")
    async with sandbox.bot.engine.connect() as conn:
        assert (
            await repo.active_allows(conn, sandbox.bot.cases.tenant_default, PEOPLE["U0GRACE"][0], sandbox.clock.now())
            == []
        )
    bad = await sandbox.command("U0GRACE", "travel JP until 2030-01-01")
    assert bad.status_code == 200
    await eventually(lambda: any("90 days" in e["text"] for e in sandbox.slack.ephemerals), what="validation")


async def test_app_home_for_soc_and_for_employees(sandbox: Sandbox) -> None:
    await dave_before_soc(sandbox)
    for user in ("U0BOB", "U0DAVE"):
        r = await sandbox.slack.app_home_opened(request_url=sandbox.request_url, user_id=user)
        assert r.status_code == 200
    await eventually(lambda: {"U0BOB", "U0DAVE"} <= set(sandbox.slack.homes), what="both homes")
    soc_home, own_home = str(sandbox.slack.homes["U0BOB"]), str(sandbox.slack.homes["U0DAVE"])
    assert "Open cases: 1" in soc_home and "awaiting_soc" in soc_home
    case = await demo.latest_case(sandbox, DAVE[0])
    assert case is not None and case.soc_card is not None  # a quick link straight to the SOC card
    assert f"<https://sandbox.slack.com/archives/C0SOC/p{case.soc_card.ts.replace('.', '')}|{case.id}>" in soc_home
    assert "Open cases" not in own_home and "Your recent verifications" in own_home
    assert "You answered *No" in own_home


async def test_user_outcome_dm_after_containment(sandbox: Sandbox) -> None:
    soc = await dave_before_soc(sandbox)
    await sandbox.click("U0BOB", soc, Ids.SOC_REVOKE)
    await wait_state(sandbox, DAVE[0], "contained")
    await sandbox.bot.dispatcher.drain()
    last = sandbox.slack.messages(sandbox.slack.dm_channel("U0DAVE"))[-1]
    text = str(last["blocks"])
    assert "secured" in last["text"] and "passwordreset.microsoftonline.com" in text and "#it-help" in text
    assert "revoke_sessions" in text  # what was done, in the employee's own DM
    thread = [m["text"] for m in sandbox.slack.messages("C0SOC") if m.get("thread_ts") == soc["ts"]]
    assert any(t.startswith("✅ revoke_sessions") for t in thread)  # each action's result in the case thread


async def test_off_hours_routing_skips_the_dm_for_high_severity(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # 09:00 UTC is 04:00 for dave (America/New_York in his Slack profile): nobody is woken up
    sb = Sandbox(str(tmp_path / "night.db"), overrides={"offhours_direct_to_soc": True})
    sb.seed()
    await sb.start()
    try:
        case = await dave_attacked_no_dm(sb)
        assert case.state.value == "awaiting_soc" and case.user_card is None
        assert sb.slack.messages(sb.slack.dm_channel("U0DAVE")) == []
        assert any("off-hours" in h.text for h in case.history)
        assert len(sb.soc_cards()) == 1
    finally:
        await sb.stop()


async def dave_attacked_no_dm(sb: Sandbox):  # type: ignore[no-untyped-def]
    from sandbox.world import sign_in

    upn, name, gid = DAVE
    await sb.bot.poller.poll_once()
    t0 = sb.clock.now()
    for i in range(6):
        sb.graph.add_sign_in(
            sign_in(
                upn, gid, name, t0 + timedelta(seconds=30 * i), ok=False, seq=2000 + i, ip="185.220.101.4", country="RU"
            )
        )
    sb.graph.add_sign_in(sign_in(upn, gid, name, t0 + timedelta(minutes=4), seq=2010, ip="185.220.101.4", country="RU"))
    sb.clock.advance(timedelta(minutes=7))
    await sb.bot.poller.poll_once()
    await sb.bot.dispatcher.drain()
    case = await demo.latest_case(sb, upn)
    assert case is not None
    return case


async def test_a_failed_containment_pages_with_the_error(sandbox: Sandbox) -> None:
    soc = await dave_before_soc(sandbox)
    sandbox.graph.faults.inject(r"POST .*/revokeSignInSessions", 403, times=1, error="Authorization_RequestDenied")
    await sandbox.click("U0BOB", soc, Ids.SOC_REVOKE)
    await wait_state(sandbox, DAVE[0], "escalated")
    case = await demo.latest_case(sandbox, DAVE[0])
    assert case is not None
    await eventually(lambda: sandbox.pagerduty.actions(case.id) == ["trigger"], what="the page")
    summary = sandbox.pagerduty.events[0]["payload"]["summary"]
    assert "Containment failed" in summary and "Authorization_RequestDenied" in summary
