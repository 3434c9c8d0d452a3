"""`mailwarden demo --auto`: the bot on SQLite against the sandbox, on simulated time.

Each story is a short script of what happens in the world (sign-ins appear in the tenant, people
click in Slack, time passes); the bot itself runs unmodified, with its real scheduler, dispatcher,
bolt app and Graph client. Later issues add stories here: it is the one place every flow runs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.audit import log as audit
from bot.model import Case
from bot.slack.ids import Ids
from bot.store import repo
from sandbox.world import PEOPLE, Sandbox, eventually, sign_in


async def latest_case(sb: Sandbox, upn: str) -> Case | None:
    async with sb.bot.engine.connect() as conn:
        found = [c for c in await repo.list_cases(conn) if c.user_principal == upn]
    return found[-1] if found else None


async def wait_state(sb: Sandbox, upn: str, state: str, what: str) -> Case:
    async def reached() -> bool:
        c = await latest_case(sb, upn)
        return c is not None and c.state.value == state

    await eventually(reached, what=what)
    case = await latest_case(sb, upn)
    assert case is not None
    return case


async def wait_card(sb: Sandbox, upn: str, which: str) -> dict[str, Any]:
    async def posted() -> bool:
        c = await latest_case(sb, upn)
        return c is not None and getattr(c, which) is not None

    await eventually(posted, what=f"{which} for {upn}")
    case = await latest_case(sb, upn)
    assert case is not None
    ref = getattr(case, which)
    return sb.slack.message(ref.channel, ref.ts)


@dataclass(frozen=True)
class Story:
    name: str
    expected_state: str
    user: str  # Slack id of the subject
    summary: str
    play: Callable[[Sandbox], Awaitable[None]]


async def user_confirms(sb: Sandbox) -> None:
    upn, name, gid = PEOPLE["U0ALICE"]
    sb.graph.add_sign_in(
        sign_in(upn, gid, name, sb.clock.now(), ip="203.0.113.9", country="PT", city="Lisbon", seq=1001)
    )
    sb.clock.advance(timedelta(minutes=3))  # past the poller's delayed watermark
    card = await wait_card(sb, upn, "user_card")
    await sb.click("U0ALICE", card, Ids.USER_YES)
    await wait_state(sb, upn, "closed_benign", "alice's case to close")


async def user_denies_soc_contains(sb: Sandbox) -> None:
    upn, name, gid = PEOPLE["U0DAVE"]
    t0 = sb.clock.now()
    attacker: dict[str, Any] = {
        "ip": "185.220.101.4",
        "country": "RU",
        "city": "Moscow",
        "client": "Other clients",
        "ua": "python-requests/2.32.3",
    }
    for i in range(6):
        sb.graph.add_sign_in(
            sign_in(upn, gid, name, t0 + timedelta(seconds=30 * i), ok=False, seq=2000 + i, **attacker)
        )
    sb.graph.add_sign_in(sign_in(upn, gid, name, t0 + timedelta(minutes=4), seq=2010, **attacker))
    sb.clock.advance(timedelta(minutes=7))
    card = await wait_card(sb, upn, "user_card")
    await sb.click("U0DAVE", card, Ids.USER_NO)
    soc = await wait_card(sb, upn, "soc_card")
    await sb.click("U0BOB", soc, Ids.SOC_REVOKE)
    await wait_state(sb, upn, "contained", "dave's case to be contained")


async def user_silent_soc_dismisses(sb: Sandbox) -> None:
    upn, name, gid = PEOPLE["U0ERIN"]
    sb.graph.add_sign_in(
        sign_in(upn, gid, name, sb.clock.now(), ip="203.0.113.77", country="BR", city="São Paulo", seq=3001)
    )
    sb.clock.advance(timedelta(minutes=3))
    await wait_card(sb, upn, "user_card")
    sb.clock.advance(timedelta(seconds=sb.bot.settings.user_answer_timeout_s + 1))  # erin never answers
    soc = await wait_card(sb, upn, "soc_card")
    await sb.click("U0CAROL", soc, Ids.SOC_DISMISS)
    await wait_state(sb, upn, "closed_benign", "erin's case to be dismissed")


STORIES = [
    Story(
        "user-confirms",
        "closed_benign",
        "U0ALICE",
        "a sign-in from a new country; the user answers Yes, it was me",
        user_confirms,
    ),
    Story(
        "user-denies-soc-contains",
        "contained",
        "U0DAVE",
        "failed sign-ins then a success from a new country; the user answers No; the SOC revokes sessions",
        user_denies_soc_contains,
    ),
    Story(
        "user-silent-soc-dismisses",
        "closed_benign",
        "U0ERIN",
        "a sign-in from a new country; no answer; the timeout puts it before the SOC, who dismisses it",
        user_silent_soc_dismisses,
    ),
]


async def run_demo(db_path: str | None = None, stories: list[str] | None = None) -> dict[str, Any]:
    if db_path is None:
        db_path = os.path.join(tempfile.mkdtemp(prefix="mailwarden-demo-"), "mailwarden.db")
    chosen = [s for s in STORIES if not stories or s.name in stories]
    unknown = set(stories or ()) - {s.name for s in STORIES}
    if unknown:
        raise SystemExit(f"unknown story: {', '.join(sorted(unknown))}; known: {', '.join(s.name for s in STORIES)}")
    sb = Sandbox(db_path)
    sb.seed()
    await sb.start()
    results: list[dict[str, Any]] = []
    try:
        sb.run_scheduler()
        # the first poll reads the tenant's history, so the profiles know what is usual
        await eventually(lambda: sb.graph.calls("GET", r"/v1.0/auditLogs/signIns") > 0, what="first poll")
        for story in chosen:
            writes_before = len(sb.graph.writes())
            posts_before = sb.slack.calls("chat.postMessage")
            upn = PEOPLE[story.user][0]
            error = None
            try:
                await story.play(sb)
            except (TimeoutError, AssertionError, LookupError) as exc:
                error = str(exc)
            case = await latest_case(sb, upn)
            async with sb.bot.engine.connect() as conn:
                verdict = await audit.check(conn)
            final = case.state.value if case else "no case"
            results.append(
                {
                    "name": story.name,
                    "summary": story.summary,
                    "case": case.id if case else None,
                    "final_state": final,
                    "expected_state": story.expected_state,
                    "passed": final == story.expected_state and verdict.ok and error is None,
                    "slack_messages": sb.slack.calls("chat.postMessage") - posts_before,
                    "provider_writes": sb.graph.writes()[writes_before:],
                    "audit_ok": verdict.ok,
                    **({"error": error} if error else {}),
                }
            )
        async with sb.bot.engine.connect() as conn:
            overall = await audit.check(conn)
    finally:
        await sb.stop()
    return {
        "stories": results,
        "audit_ok": overall.ok,
        "db": db_path,
        "ok": overall.ok and all(r["passed"] for r in results),
    }
