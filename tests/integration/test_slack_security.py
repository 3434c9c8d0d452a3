"""Forged, stale and replayed Slack requests, clicks by the wrong person, duplicate clicks."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.slack.ids import USER_BUTTONS
from sandbox.world import Sandbox, eventually
from tests.integration.helpers import DAVE, audit_actions, dave_attacked, dave_before_soc, state_of, wait_state

REVOKE = r"/v1.0/users/.*/revokeSignInSessions"


async def test_forged_signature_gets_401_and_changes_nothing(sandbox: Sandbox) -> None:
    case = await dave_attacked(sandbox)
    assert case.user_card is not None
    before = await audit_actions(sandbox)
    card = sandbox.slack.message(case.user_card.channel, case.user_card.ts)
    r = await sandbox.click("U0DAVE", card, "mw.user.no", signature="v0=" + "0" * 64)
    assert r.status_code == 401
    await asyncio.sleep(0.2)
    assert await state_of(sandbox, DAVE[0]) == "awaiting_user"
    assert await audit_actions(sandbox) == before


async def test_stale_timestamp_gets_401(sandbox: Sandbox) -> None:
    case = await dave_attacked(sandbox)
    assert case.user_card is not None
    card = sandbox.slack.message(case.user_card.channel, case.user_card.ts)
    r = await sandbox.click("U0DAVE", card, "mw.user.no", timestamp=int(time.time()) - 400)
    assert r.status_code == 401
    await asyncio.sleep(0.2)
    assert await state_of(sandbox, DAVE[0]) == "awaiting_user"


async def test_replayed_request_does_nothing_twice(sandbox: Sandbox) -> None:
    soc = await dave_before_soc(sandbox)
    r = await sandbox.click("U0BOB", soc, "mw.soc.revoke_sessions")
    assert r.status_code == 200
    await wait_state(sandbox, DAVE[0], "contained")
    again = await sandbox.slack.redeliver(sandbox.request_url)  # byte-identical, still inside Slack's 5 minutes
    assert again.status_code == 200
    await asyncio.sleep(0.3)
    await sandbox.bot.dispatcher.drain()
    assert sandbox.graph.calls("POST", REVOKE) == 1
    assert any("already moved on" in e["text"] for e in sandbox.slack.ephemerals)


@pytest.mark.parametrize("action_id", [a.value for a in USER_BUTTONS])
async def test_only_the_subject_answers_their_card(sandbox: Sandbox, action_id: str) -> None:
    case = await dave_attacked(sandbox)
    assert case.user_card is not None
    card = sandbox.slack.message(case.user_card.channel, case.user_card.ts)
    r = await sandbox.click("U0MALLORY", card, action_id)
    assert r.status_code == 200  # acked; refused on the server
    await eventually(lambda: any(e["user"] == "U0MALLORY" for e in sandbox.slack.ephemerals), what="refusal")
    assert await state_of(sandbox, DAVE[0]) == "awaiting_user"
    assert ("U0MALLORY", "authz.refused") in await audit_actions(sandbox)
    refusal = next(e for e in sandbox.slack.ephemerals if e["user"] == "U0MALLORY")
    assert "Only the person" in refusal["text"]


async def test_only_soc_members_act_on_soc_cards(sandbox: Sandbox) -> None:
    soc = await dave_before_soc(sandbox)
    for intruder in ("U0MALLORY", "U0DAVE"):  # a bystander, and the victim (whose Slack may be hijacked)
        r = await sandbox.click(intruder, soc, "mw.soc.revoke_sessions")
        assert r.status_code == 200
    await eventually(
        lambda: len([e for e in sandbox.slack.ephemerals if "SOC user group" in e["text"]]) == 2, what="two refusals"
    )
    await sandbox.bot.dispatcher.drain()
    assert await state_of(sandbox, DAVE[0]) == "awaiting_soc"
    assert sandbox.graph.calls("POST", REVOKE) == 0
    refused = [a for a in await audit_actions(sandbox) if a[1] == "authz.refused"]
    assert {a[0] for a in refused} == {"U0MALLORY", "U0DAVE"}


async def test_duplicate_click_on_revoke_calls_graph_once(sandbox: Sandbox) -> None:
    soc = await dave_before_soc(sandbox)
    first, second = await asyncio.gather(
        sandbox.click("U0BOB", soc, "mw.soc.revoke_sessions"), sandbox.click("U0CAROL", soc, "mw.soc.revoke_sessions")
    )
    assert first.status_code == second.status_code == 200
    await wait_state(sandbox, DAVE[0], "contained")
    await asyncio.sleep(0.2)
    await sandbox.bot.dispatcher.drain()
    assert sandbox.graph.calls("POST", REVOKE) == 1
    approvals = [a for a in await audit_actions(sandbox) if a[1] == "case.transition" and a[0] in ("U0BOB", "U0CAROL")]
    assert len(approvals) == 1
