"""revoke_sessions runs exactly once: across a crash, and under throttling."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from actions.ledger import SimulatedCrash
from bot.store.tables import action_ledger
from sandbox.world import Sandbox, eventually
from tests.integration.helpers import DAVE, dave_before_soc, state_of, wait_state

REVOKE = rf"/v1.0/users/{DAVE[2]}/revokeSignInSessions"


async def ledger(sb: Sandbox) -> list[dict[str, object]]:
    async with sb.bot.engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(select(action_ledger))]


async def test_crash_between_graph_call_and_commit_reconciles_on_restart(sandbox: Sandbox) -> None:
    soc = await dave_before_soc(sandbox)
    sandbox.crash_points.add("after_provider_call")
    await sandbox.click("U0BOB", soc, "mw.soc.revoke_sessions")

    # the click's own delivery runs the action and dies right after Graph answered
    await eventually(
        lambda: sandbox.graph.calls("POST", REVOKE) == 1 and "after_provider_call" not in sandbox.crash_points,
        what="the crash after the Graph call",
    )
    assert isinstance(sandbox.bot.last_crash, SimulatedCrash)
    rows = await ledger(sandbox)
    assert [r["status"] for r in rows] == ["started"]  # the outcome never reached the database
    assert await state_of(sandbox, DAVE[0]) == "containing"

    reads = sandbox.graph.calls("GET", rf"/v1.0/users/{DAVE[2]}")  # pre-flight read the user for the SOC card
    await sandbox.restart_bot()  # a new process on the same database
    await sandbox.bot.dispatcher.drain()
    # right after the crash the attempt could still be in flight on another replica: nothing happens yet
    assert sandbox.graph.calls("POST", REVOKE) == 1 and await state_of(sandbox, DAVE[0]) == "containing"
    sandbox.clock.advance(timedelta(minutes=5))  # past the in-flight grace and the outbox's retry backoff
    await sandbox.bot.dispatcher.drain()
    assert await state_of(sandbox, DAVE[0]) == "contained"
    assert sandbox.graph.calls("POST", REVOKE) == 1  # reconciled by reading the user, not called again
    assert sandbox.graph.calls("GET", rf"/v1.0/users/{DAVE[2]}") == reads + 1
    (row,) = await ledger(sandbox)
    assert row["status"] == "succeeded" and "reconciled" in str(row["result"])


async def test_unknown_outcome_but_not_in_effect_calls_again(sandbox: Sandbox) -> None:
    """A crash before the call: the provider shows no revoke since the attempt began, so it really runs."""
    soc = await dave_before_soc(sandbox)
    sandbox.crash_points.add("before_provider_call")
    await sandbox.click("U0BOB", soc, "mw.soc.revoke_sessions")
    await eventually(lambda: "before_provider_call" not in sandbox.crash_points, what="the crash before the call")
    assert sandbox.graph.calls("POST", REVOKE) == 0
    reads = sandbox.graph.calls("GET", rf"/v1.0/users/{DAVE[2]}")
    await sandbox.restart_bot()
    sandbox.clock.advance(timedelta(minutes=5))  # past the in-flight grace
    await sandbox.bot.dispatcher.drain()
    assert await state_of(sandbox, DAVE[0]) == "contained"
    assert sandbox.graph.calls("GET", rf"/v1.0/users/{DAVE[2]}") == reads + 1  # asked first
    assert sandbox.graph.calls("POST", REVOKE) == 1  # then did it, once


async def test_graph_failure_escalates_and_is_recorded(sandbox: Sandbox) -> None:
    soc = await dave_before_soc(sandbox)
    sandbox.graph.faults.inject(r"POST .*/revokeSignInSessions", 500, times=1)
    await sandbox.click("U0BOB", soc, "mw.soc.revoke_sessions")
    await wait_state(sandbox, DAVE[0], "escalated")  # a definite failure escalates, it is never swallowed
    assert [r["status"] for r in await ledger(sandbox)] == ["failed"]


async def test_graph_429_is_waited_out_not_hammered(sandbox: Sandbox) -> None:
    soc = await dave_before_soc(sandbox)
    sandbox.graph.faults.inject(r"POST .*/revokeSignInSessions", 429, retry_after=1, times=1)
    await sandbox.click("U0BOB", soc, "mw.soc.revoke_sessions")
    await wait_state(sandbox, DAVE[0], "contained")
    attempts = [r for r in sandbox.graph.requests if r.method == "POST" and r.path.endswith("revokeSignInSessions")]
    assert [r.status for r in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 0.9  # kiota honoured Retry-After: 1
    assert len([w for w in sandbox.graph.writes() if w["path"].endswith("revokeSignInSessions")]) == 1
