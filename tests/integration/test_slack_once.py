"""Each Slack post happens once: after a crash between Slack's answer and the commit, after an answer
lost to a 5xx, and when Slack refused the first attempt (no read-back needed then)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from actions.ledger import SimulatedCrash
from bot.dispatch import CLAIM_FOR, DELIVERY_EVENT
from bot.store import repo
from bot.store.tables import outbox
from sandbox import demo
from sandbox.world import Sandbox, eventually
from tests.integration.helpers import DAVE, dave_attack_visible, dave_attacked, tick, wait_state


def delivery_keys(sb: Sandbox) -> Counter[str]:
    """How often each outbox row's key appears among everything the bot posted."""
    keys: Counter[str] = Counter()
    for message in sb.slack.all_messages():
        meta = message.get("metadata") or {}
        if meta.get("event_type") == DELIVERY_EVENT:
            keys[meta["event_payload"]["delivery"]] += 1
    return keys


def cards_in(sb: Sandbox, channel: str) -> list[dict[str, object]]:
    return [m for m in sb.slack.messages(channel) if not m["thread_ts"]]


async def test_crash_after_the_dm_landed_records_it_instead_of_posting_again(sandbox: Sandbox) -> None:
    await dave_attack_visible(sandbox)
    sandbox.crash_points.add("after_slack_post")
    await sandbox.bot.poller.poll_once()
    with pytest.raises(SimulatedCrash):
        await sandbox.bot.dispatcher.drain()  # Slack has the card; the process dies before recording it
    dm = sandbox.slack.dm_channel("U0DAVE")
    (card,) = cards_in(sandbox, dm)
    case = await demo.latest_case(sandbox, DAVE[0])
    assert case is not None and case.user_card is None

    await sandbox.restart_bot()  # a new process on the same database
    await sandbox.bot.dispatcher.drain()
    # the old process's claim has not lapsed (its call could still be in flight): nothing is sent
    assert len(cards_in(sandbox, dm)) == 1 and sandbox.slack.calls("conversations.history") == 0

    sandbox.clock.advance(CLAIM_FOR)
    await sandbox.bot.dispatcher.drain()
    assert len(cards_in(sandbox, dm)) == 1  # found by its key, not posted again
    assert sandbox.slack.calls("conversations.history") == 1
    case = await demo.latest_case(sandbox, DAVE[0])
    assert case is not None and case.user_card is not None and case.user_card.ts == card["ts"]
    assert max(delivery_keys(sandbox).values()) == 1

    # the recorded card is the live one: Dave's answer on it moves the case on
    r = await sandbox.click("U0DAVE", sandbox.slack.message(dm, str(card["ts"])), "mw.user.no")
    assert r.status_code == 200
    await wait_state(sandbox, DAVE[0], "awaiting_soc")
    assert len(sandbox.soc_cards()) == 1


async def test_a_lost_answer_is_read_back_not_posted_twice(sandbox: Sandbox) -> None:
    case = await dave_attacked(sandbox)
    assert case.user_card is not None
    # every post after Dave's "No" lands in Slack but its answer is a 503, once each
    sandbox.slack.faults.inject(r"^chat\.postMessage$", 503, after_effect=True, times=3)
    await sandbox.click("U0DAVE", sandbox.slack.message(case.user_card.channel, case.user_card.ts), "mw.user.no")
    for _ in range(6):  # the retries' back-off runs on the simulated clock
        sandbox.clock.advance(timedelta(seconds=5))
        await tick(sandbox)
    await wait_state(sandbox, DAVE[0], "awaiting_soc")
    keys = delivery_keys(sandbox)
    assert keys and max(keys.values()) == 1, keys
    assert len(sandbox.soc_cards()) == 1
    looked = sandbox.slack.calls("conversations.history") + sandbox.slack.calls("conversations.replies")
    assert looked >= 1
    soc = await demo.latest_case(sandbox, DAVE[0])
    assert soc is not None and soc.soc_card is not None and soc.soc_card.ts == sandbox.soc_cards()[0]["ts"]


async def test_a_post_slack_refused_is_retried_without_reading_back(sandbox: Sandbox) -> None:
    await dave_attack_visible(sandbox)
    # 429 on the first try and on each of slack_sdk's own three retries: the dispatcher sees a refusal
    sandbox.slack.faults.inject(r"^chat\.postMessage$", 429, retry_after=1, times=4)
    await tick(sandbox)
    dm = sandbox.slack.dm_channel("U0DAVE")
    assert cards_in(sandbox, dm) == []
    sandbox.clock.advance(timedelta(seconds=5))
    await sandbox.bot.dispatcher.drain()
    assert len(cards_in(sandbox, dm)) == 1
    assert sandbox.slack.calls("conversations.history") == 0  # Slack said no: nothing to look for


async def test_a_delivery_cut_short_by_shutdown_gives_its_row_back(sandbox: Sandbox) -> None:
    async with sandbox.bot.engine.begin() as conn:
        for n in range(3):  # one lane: the pacer lets two through at once, the third waits ~1 s
            await repo.enqueue(
                conn,
                kind="message.post",
                lane="user:U0DAVE",
                now=sandbox.clock.now(),
                payload={"channel": "U0DAVE", "text": f"note {n}"},
            )
    dm = sandbox.slack.dm_channel("U0DAVE")
    draining = asyncio.create_task(sandbox.bot.dispatcher.drain())
    await eventually(lambda: len(sandbox.slack.messages(dm)) == 2, what="the first two notes")
    draining.cancel()  # the third is claimed and waiting on the pacer when the process stops
    with pytest.raises(asyncio.CancelledError):
        await draining
    async with sandbox.bot.engine.connect() as conn:
        third = (await conn.execute(select(outbox).where(outbox.c.status == "pending"))).one()
    assert third.claimed_by is None and third.started_at is not None  # given back, marked as begun

    await sandbox.bot.dispatcher.drain()  # taken again at once, not after the claim would have lapsed
    assert [m["text"] for m in sandbox.slack.messages(dm)] == ["note 0", "note 1", "note 2"]
    assert sandbox.slack.calls("conversations.history") == 1  # it had begun: it looked before posting


async def test_health_shows_a_stuck_or_dead_outbox(sandbox: Sandbox) -> None:
    before = await sandbox.bot.health()
    assert before["dead_outbox"] == 0 and before["oldest_pending_s"] is None
    async with sandbox.bot.engine.begin() as conn:
        await repo.enqueue(
            conn,
            kind="message.post",
            lane="soc",
            now=sandbox.clock.now(),
            payload={"channel": "C0NOSUCH", "text": "to a channel Slack does not know"},
        )
    sandbox.clock.advance(timedelta(seconds=90))
    waiting = await sandbox.bot.health()
    assert waiting["pending_outbox"] == 1 and waiting["oldest_pending_s"] == 90.0
    await sandbox.bot.dispatcher.drain()  # channel_not_found: retrying cannot help
    after = await sandbox.bot.health()
    assert after["ok"] and after["dead_outbox"] == 1
    assert after["pending_outbox"] == 0 and after["oldest_pending_s"] is None
