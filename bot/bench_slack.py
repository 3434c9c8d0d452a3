"""`mailwarden bench slack`: a 200-case storm against the Slack emulator enforcing Slack's limits.

Phase 1 (drain): 200 users fall to one password-spray wave; the bot DMs each of them, nobody answers,
and every case goes to the SOC when the answer timeout fires (DM cards, card updates, SOC cards and
thread notes). drain_s is the time from the first delivery to an empty outbox; floor_s is what Slack's
published limits allow at best (performance.md G5):
    max(posts in the busiest channel × 1 s, all posts ÷ 300/min, chat.update calls ÷ 50/min).
Phase 2 (acks, G6): while a 100,000-event replay runs through the detection pipeline in the same
process, a SOC member clicks "Take it" on every card; ack_p99_ms is the HTTP round trip of those clicks
and loop_lag_p99_ms the event loop's lateness measured by a 10 ms ticker.

Slack's limits and the bot's pacing are compressed in time by the same factor (--scale) so the run
takes seconds; ratios do not depend on it (performance.md §4).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import tempfile
import time
from collections import defaultdict
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import select

from bot.cases.service import CaseService
from bot.clock import SimClock
from bot.model import Event
from bot.runtime import tune_gc, untune_gc
from bot.sources.normalize import normalize
from bot.store import db, repo
from bot.store.tables import outbox

POSTS_PER_SECOND_PER_CHANNEL = 1.0
WORKSPACE_POSTS_PER_MINUTE = 300.0  # "several hundred per minute", read conservatively (performance.md)
UPDATES_PER_MINUTE = 50.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", type=int, default=200, help="cases in the storm (default 200)")
    p.add_argument("--scale", type=float, default=10.0, help="time compression of limits and pacing (default 10)")
    p.add_argument("--replay-events", type=int, default=100_000, help="events replayed during phase 2")


def run(args: argparse.Namespace) -> int:
    from bot.replay import quiet_logs

    with quiet_logs():  # stdout carries the report alone, so `--json` output can be piped
        report = asyncio.run(bench(args.cases, args.scale, args.replay_events))
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>18}: {value}")
    return 0


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


async def bench(cases: int, scale: float, replay_events: int) -> dict[str, Any]:
    from sandbox.world import Sandbox, sign_in

    workdir = tempfile.mkdtemp(prefix="mailwarden-bench-slack-")
    sb = Sandbox(
        os.path.join(workdir, "bench.db"),
        slack_time_scale=scale,
        overrides={"slack_pace_scale": scale, "user_reminder_s": None, "soc_reminder_s": None},
    )
    sb.seed()
    t0 = sb.clock.now()
    people = []
    for i in range(cases):
        uid, upn, gid = f"U0STORM{i:04d}", f"storm{i:04d}@contoso.example", f"22222222-0000-0000-0000-{i:012d}"
        sb.slack.add_user(uid, upn, f"Storm User {i}")
        sb.graph.add_user(gid, upn, f"Storm User {i}")
        people.append(uid)
        for k in range(6):  # the spray wave: failures, then the guessed password works
            ok = k == 5
            sb.graph.add_sign_in(
                sign_in(
                    upn,
                    gid,
                    f"Storm User {i}",
                    t0 - timedelta(minutes=9) + timedelta(seconds=20 * k),
                    ok=ok,
                    ip=f"198.18.{i // 250}.{i % 250 + 1}",
                    country="US",
                    seq=90_000 + 10 * i + k,
                )
            )
    await sb.start()
    thresholds = tune_gc()  # as `mailwarden run` does once it has started
    try:
        bot = sb.bot
        await bot.poller.poll_once()
        # phase 1: deliver the DMs; then every answer times out and the SOC side is delivered. The two
        # halves are separated by the answer timeout in real life, so each gets its own floor.
        drain_s = floor_s = 0.0
        totals: dict[str, int] = defaultdict(int)
        for step in ("dms", "soc"):
            if step == "soc":
                sb.clock.advance(timedelta(seconds=bot.settings.user_answer_timeout_s + 1))
                await bot.cases.fire_due_deadlines()
            seen = len(sb.slack.requests)
            start = time.monotonic()
            while True:
                await bot.dispatcher.drain(max_rounds=10_000)
                async with bot.engine.connect() as conn:
                    if await repo.pending_outbox(conn) == 0:
                        break
            drain_s += time.monotonic() - start
            counts = _counts(sb.slack.requests[seen:])
            floor_s += _floor(counts) / scale
            for key, v in counts.items():
                if not key.startswith("post:"):
                    totals[key] += v
            totals["posts"] += sum(v for k, v in counts.items() if k.startswith("post:"))
            totals["busiest"] = max(
                totals["busiest"], max((v for k, v in counts.items() if k.startswith("post:")), default=0)
            )
        total_posts, updates, throttled = totals["posts"], totals["updates"], totals["throttled"]
        posts = {"busiest": totals["busiest"]}
        fifo_ok = await _fifo(sb)
        # phase 2: acks while a replay keeps the same process busy
        cards = [m for m in sb.soc_cards() if "mw.soc.take" in str(m["blocks"])]
        ack_ms, lag_ms = await _acks_under_load(sb, cards, replay_events, workdir)
        return {
            "cases": cases,
            "scale": scale,
            "posts": total_posts,
            "busiest_channel_posts": max(posts.values(), default=0),
            "updates": updates,
            "drain_s": round(drain_s, 3),
            "floor_s": round(floor_s, 3),
            "drain_ratio": round(drain_s / floor_s, 3) if floor_s else None,
            "slack_429": throttled,
            "fifo_ok": fifo_ok,
            "ack_p99_ms": round(p99(ack_ms), 1),
            "loop_lag_p99_ms": round(p99(lag_ms), 1),
            "ack_median_ms": round(statistics.median(ack_ms), 1) if ack_ms else None,
            "clicks": len(ack_ms),
            "replay_events": replay_events,
        }
    finally:
        untune_gc(thresholds)
        await sb.stop()


def _counts(requests: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in requests:
        method = r.path.removeprefix("/api/")
        if r.status == 429:
            counts["throttled"] += 1
        elif method == "chat.postMessage" and r.handled:
            counts["post:" + str((r.json or {}).get("channel") or r.params.get("channel"))] += 1
        elif method == "chat.update" and r.handled:
            counts["updates"] += 1
    return counts


def _floor(counts: dict[str, int]) -> float:
    posts = [v for k, v in counts.items() if k.startswith("post:")]
    return max(
        max(posts, default=0) / POSTS_PER_SECOND_PER_CHANNEL,
        sum(posts) / (WORKSPACE_POSTS_PER_MINUTE / 60),
        counts.get("updates", 0) / (UPDATES_PER_MINUTE / 60),
    )


async def _fifo(sb: Any) -> bool:
    """Per channel, Slack received the posts in the order the outbox queued them."""
    async with sb.bot.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(outbox.c.case_id, outbox.c.kind).where(outbox.c.kind == "soc_card.post").order_by(outbox.c.id)
            )
        ).all()
    queued = [r.case_id for r in rows]
    posted: list[str] = []
    for m in sb.soc_cards():
        text = str(m["text"])
        posted.extend(w.rstrip(":") for w in text.split() if w.startswith("MW-"))
    return bool(queued) and posted[: len(queued)] == queued


async def _acks_under_load(
    sb: Any, cards: list[dict[str, Any]], events: int, workdir: str
) -> tuple[list[float], list[float]]:
    engine = db.make_engine(os.path.join(workdir, "replay.db"))
    await db.migrate(engine)
    clock = SimClock(sb.clock.now())
    service = CaseService(engine, clock, sb.bot.cases.params, sb.bot.cases.timeouts, timedelta(hours=24))
    stop = asyncio.Event()
    lag: list[float] = []

    async def ticker() -> None:
        while not stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lag.append(max(0.0, (time.monotonic() - before - 0.01) * 1000))

    async def replay() -> None:
        from sandbox.world import sign_in

        batch: list[Event] = []
        for i in range(events):
            if i % 64 == 0:
                await asyncio.sleep(0)  # as the Poller does while normalizing a page
            at = clock.now() - timedelta(seconds=events - i)
            raw = orjson.dumps(
                sign_in(
                    f"r{i % 5000}@contoso.example",
                    f"r-{i % 5000}",
                    "Replay",
                    at,
                    seq=i,
                    ok=i % 7 != 0,
                    country=("US", "CA", "GB")[i % 3],
                    ip=f"198.51.{i % 5000 // 250}.{i % 250 + 1}",  # each employee's own address
                )
            )
            batch.extend(e for e in normalize("entra-signin", orjson.loads(raw), "replay") if isinstance(e, Event))
            if len(batch) >= 1000:  # one poll page: the pipeline yields to the loop between pages
                async with engine.begin() as conn:
                    await service.ingest(conn, batch)
                batch = []
                await asyncio.sleep(0)

    async def clicks() -> list[float]:
        out = []
        await asyncio.sleep(0.2)  # let the replay get going first
        for card in cards:
            started = time.monotonic()
            r = await sb.click("U0BOB", card, "mw.soc.take")
            out.append((time.monotonic() - started) * 1000)
            assert r.status_code == 200, r.status_code
            await asyncio.sleep(0.005)
        return out

    tick = asyncio.create_task(ticker())
    replaying = asyncio.create_task(replay())
    ack = await clicks()
    await replaying
    stop.set()
    await tick
    await engine.dispose()
    return ack, lag
