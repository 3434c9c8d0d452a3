"""The three walking-skeleton stories through the real bolt app, msgraph-sdk and scheduler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from bot.audit import log as audit
from sandbox import demo
from sandbox.world import PEOPLE, Sandbox, eventually


async def play(sb: Sandbox, story: Callable[[Sandbox], Awaitable[None]]) -> None:
    sb.run_scheduler()
    await eventually(lambda: sb.graph.calls("GET", r"/v1.0/auditLogs/signIns") > 0, what="first poll")
    await story(sb)


async def test_user_confirms(sandbox: Sandbox) -> None:
    await play(sandbox, demo.user_confirms)
    case = await demo.latest_case(sandbox, PEOPLE["U0ALICE"][0])
    assert case is not None and case.state.value == "closed_benign" and case.user_answer == "yes"
    assert case.detectors == ("new_country",)
    assert sandbox.graph.writes() == []
    # the card is updated after the click, through the outbox: after the state change, not with it
    await eventually(
        lambda: not [b for b in sandbox.dm_card("U0ALICE")["blocks"] if b["type"] == "actions"],
        what="the user's card to lose its buttons",
    )
    assert sandbox.soc_cards() == []  # a medium case the user confirmed never bothers the SOC


async def test_user_denies_soc_contains(sandbox: Sandbox) -> None:
    await play(sandbox, demo.user_denies_soc_contains)
    upn, _, gid = PEOPLE["U0DAVE"]
    case = await demo.latest_case(sandbox, upn)
    assert case is not None and case.state.value == "contained"
    # every detector runs: the attacker's python-requests over "Other clients" is seen as well
    assert set(case.detectors) == {"failed_then_success", "new_country", "legacy_protocol", "scripted_client"}
    assert case.severity.label == "high"
    assert sandbox.graph.calls("POST", rf"/v1.0/users/{gid}/revokeSignInSessions") == 1
    await eventually(lambda: "`contained`" in str(sandbox.soc_cards()[-1]["blocks"]), what="the final card update")
    soc = sandbox.soc_cards()[-1]
    assert "<@U0BOB>" in str(soc["blocks"])  # who did what, on the card
    await eventually(  # thread replies are paced per channel: they follow the card update
        lambda: any(
            "Containment finished" in m["text"]
            for m in sandbox.slack.messages("C0SOC")
            if m.get("thread_ts") == soc["ts"]
        ),
        what="the thread note",
    )


async def test_user_silent_soc_dismisses(sandbox: Sandbox) -> None:
    await play(sandbox, demo.user_silent_soc_dismisses)
    case = await demo.latest_case(sandbox, PEOPLE["U0ERIN"][0])
    assert case is not None and case.state.value == "closed_benign" and case.user_answer is None
    assert any("did not answer" in h.text for h in case.history)
    assert sandbox.graph.writes() == []


@pytest.mark.parametrize("story", ["user-confirms"])
async def test_demo_report_shape(tmp_path: object, story: str) -> None:
    report = await demo.run_demo(db_path=f"{tmp_path}/demo.db", stories=[story])
    assert report["ok"] and report["audit_ok"] and report["db"].endswith("demo.db")
    (s,) = report["stories"]
    assert set(s) >= {"name", "final_state", "slack_messages", "provider_writes", "audit_ok"}


async def test_every_step_is_audited(sandbox: Sandbox) -> None:
    await play(sandbox, demo.user_denies_soc_contains)
    async with sandbox.bot.engine.connect() as conn:
        actions = [e.action async for e in audit.entries(conn)]
        assert (await audit.check(conn)).ok
    for expected in (
        "case.opened",
        "case.transition",
        "slack.user_card_posted",
        "slack.soc_card_posted",
        "action.started",
        "action.succeeded",
    ):
        assert expected in actions, expected
