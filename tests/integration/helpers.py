"""Driving the bot step by step (no background scheduler) for the tests that need exact control."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.model import Case
from sandbox import demo
from sandbox.world import PEOPLE, Sandbox, eventually, sign_in

DAVE = PEOPLE["U0DAVE"]


async def tick(sb: Sandbox) -> None:
    await sb.bot.poller.poll_once()
    await sb.bot.dispatcher.drain()


async def dave_attack_visible(sb: Sandbox) -> None:
    """Failed sign-ins then a success from Moscow for dave, visible at the source; nothing polled yet."""
    upn, name, gid = DAVE
    await sb.bot.poller.poll_once()  # history first, so the profile knows what is usual
    t0 = sb.clock.now()
    bad = {"ip": "185.220.101.4", "country": "RU", "city": "Moscow"}
    for i in range(6):
        sb.graph.add_sign_in(sign_in(upn, gid, name, t0 + timedelta(seconds=30 * i), ok=False, seq=2000 + i, **bad))
    sb.graph.add_sign_in(sign_in(upn, gid, name, t0 + timedelta(minutes=4), seq=2010, **bad))
    sb.clock.advance(timedelta(minutes=7))


async def dave_attacked(sb: Sandbox) -> Case:
    """Failed sign-ins then a success from Moscow for dave; the bot has asked him (high severity)."""
    await dave_attack_visible(sb)
    await tick(sb)
    case = await demo.latest_case(sb, DAVE[0])
    assert case is not None and case.state.value == "awaiting_user" and case.user_card is not None
    return case


async def state_of(sb: Sandbox, upn: str) -> str | None:
    case = await demo.latest_case(sb, upn)
    return case.state.value if case else None


async def wait_state(sb: Sandbox, upn: str, state: str) -> None:
    async def reached() -> bool:
        await sb.bot.dispatcher.drain()
        return await state_of(sb, upn) == state

    await eventually(reached, what=f"{upn} -> {state}")


async def dave_before_soc(sb: Sandbox) -> dict[str, Any]:
    """Dave answered No; the SOC card is up. Returns the SOC card message."""
    case = await dave_attacked(sb)
    assert case.user_card is not None
    r = await sb.click("U0DAVE", sb.slack.message(case.user_card.channel, case.user_card.ts), "mw.user.no")
    assert r.status_code == 200
    await wait_state(sb, DAVE[0], "awaiting_soc")
    await sb.bot.dispatcher.drain()
    case2 = await demo.latest_case(sb, DAVE[0])
    assert case2 is not None and case2.soc_card is not None
    return sb.slack.message(case2.soc_card.channel, case2.soc_card.ts)


async def audit_actions(sb: Sandbox) -> list[tuple[str, str]]:
    from bot.audit import log as audit

    async with sb.bot.engine.connect() as conn:
        return [(e.actor, e.action) async for e in audit.entries(conn)]
