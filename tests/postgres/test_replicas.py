"""The several-replica path on a real PostgreSQL server: migrations, the append-only audit log under
concurrent writers, exactly-once containment when two replicas race for the same action, and each
outbox row delivered to Slack once when two replicas' dispatchers drain together."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from actions.base import ActionContext, ActionOutcome
from actions.ledger import ActionInProgress, Executor
from bot.audit import log as audit
from bot.cases.machine import Timeouts
from bot.cases.service import CaseService
from bot.clock import SimClock
from bot.detect import Params
from bot.dispatch import Dispatcher
from bot.store import db, repo
from bot.store.retention import prune_raw_events
from sandbox.server import LoopbackServer
from sandbox.slack import SlackEmulator

T = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def engines(pg_url: str):  # type: ignore[no-untyped-def]
    name = "mw_" + uuid.uuid4().hex[:10]
    admin = db.make_engine(pg_url)
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f"CREATE DATABASE {name}"))
    await admin.dispose()
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    one, two = db.make_engine(url), db.make_engine(url)  # two replicas, two pools
    await db.migrate(one)
    await db.migrate(two)  # a second replica starting finds the schema in place
    yield one, two
    await one.dispose()
    await two.dispose()


async def test_concurrent_audit_appends_keep_one_unbroken_chain(engines) -> None:  # type: ignore[no-untyped-def]
    one, two = engines

    async def write(engine, who: str) -> None:  # type: ignore[no-untyped-def]
        for i in range(20):
            async with engine.begin() as conn:
                await audit.append(conn, at=T + timedelta(seconds=i), actor=who, action="test.append", detail={"i": i})

    await asyncio.gather(write(one, "replica-1"), write(two, "replica-2"))
    async with one.connect() as conn:
        verdict = await audit.check(conn)
    assert verdict.ok and verdict.checked == 40


async def test_checks_while_another_replica_appends_never_report_a_false_break(engines) -> None:  # type: ignore[no-untyped-def]
    """READ COMMITTED: entries committed after the check read the head must not look like a log that goes
    on past its head (which is what a head set back by hand looks like)."""
    one, two = engines
    done = asyncio.Event()

    async def write() -> None:
        for i in range(150):
            async with one.begin() as conn:
                await audit.append_many(
                    conn, [audit.Pending(T + timedelta(seconds=i), "replica-1", "test.append", None, {"i": i})] * 3
                )
        done.set()

    async def check() -> list[audit.Verdict]:
        seen, position = [], None
        while not done.is_set():
            async with two.connect() as conn:
                whole = await audit.check(conn, batch=7)
                since = await audit.check(conn, position, batch=7)
            seen += [whole, since]
            position = since.last if since.ok else position
            await asyncio.sleep(0)
        return seen

    _, verdicts = await asyncio.gather(write(), check())
    assert len(verdicts) > 10 and all(v.ok for v in verdicts), [v.problem for v in verdicts if not v.ok][:3]
    async with two.connect() as conn:
        final = await audit.check(conn)
    assert final.ok and final.checked == 450


class AppendAfterTheFirstRead:
    """The checking replica's connection, with the other replica's first append committed between the
    check's first read (the head) and the next: the interleaving READ COMMITTED allows, made certain."""

    def __init__(self, conn: Any, writer: Any) -> None:
        self.conn, self.writer, self.reads = conn, writer, 0

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        result = await self.conn.execute(*args, **kwargs)
        self.reads += 1
        if self.reads == 1:
            async with self.writer.begin() as w:
                await audit.append(w, at=T, actor="replica-1", action="test.append", detail={})
        return result


async def test_a_check_that_read_no_head_before_the_first_append_is_not_a_break(engines) -> None:  # type: ignore[no-untyped-def]
    """No head when the check began, an entry by the time it walked: a log being started, not a head
    deleted (the test above hit this once in its first poll)."""
    one, two = engines
    async with two.connect() as conn:
        verdict = await audit.check(AppendAfterTheFirstRead(conn, one))
    assert verdict.ok and verdict.problem is None
    async with two.connect() as conn:
        after = await audit.check(conn)
    assert after.ok and after.checked == 1


async def test_audit_rows_cannot_be_edited_or_deleted(engines) -> None:  # type: ignore[no-untyped-def]
    one, _ = engines
    async with one.begin() as conn:
        await audit.append(conn, at=T, actor="system", action="test.append", detail={})
    for stmt in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with one.begin() as conn:
                await conn.execute(text(stmt))


class CountingRevoke:
    """A provider action that counts its calls; slow, so both replicas are inside execute at once."""

    name = "revoke_sessions"
    provider = "test"
    permission = "-"
    destructive = False

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, target: str, context: ActionContext | None = None) -> ActionOutcome:
        self.calls += 1
        await asyncio.sleep(0.2)
        return ActionOutcome(True, "revoked")

    async def already_done(self, target: str, since: datetime, context: ActionContext | None = None) -> bool | None:
        return self.calls > 0


async def test_two_replicas_racing_for_one_action_call_the_provider_once(engines) -> None:  # type: ignore[no-untyped-def]
    one, two = engines
    action = CountingRevoke()
    clock = SimClock(T)
    first = Executor(one, clock, {"revoke_sessions": action})
    second = Executor(two, clock, {"revoke_sessions": action})
    results = await asyncio.gather(
        first.execute("MW-1", "revoke_sessions", "u1"),
        second.execute("MW-1", "revoke_sessions", "u1"),
        return_exceptions=True,
    )
    done = [r for r in results if not isinstance(r, BaseException)]
    busy = [r for r in results if isinstance(r, ActionInProgress)]
    assert len(done) == 1 and done[0].outcome.ok and done[0].provider_called
    assert len(busy) == 1  # the loser backs off (the outbox retries it later) instead of calling too
    assert action.calls == 1
    again = await second.execute("MW-1", "revoke_sessions", "u1")  # the retry finds it done
    assert again.outcome.ok and not again.provider_called and action.calls == 1


async def test_repository_upserts_on_postgres(engines) -> None:  # type: ignore[no-untyped-def]
    one, _ = engines
    async with one.begin() as conn:
        await repo.set_cursor(conn, "entra_signin", "t1", T, T)
        await repo.set_cursor(conn, "entra_signin", "t1", T + timedelta(minutes=5), T)
        assert await repo.store_raw(
            conn, source="s", tenant="t1", event_id="e1", payload=b"{}", status="accepted", now=T
        )
        assert not await repo.store_raw(
            conn, source="s", tenant="t1", event_id="e1", payload=b"{}", status="accepted", now=T
        )
    async with one.connect() as conn:
        assert await repo.get_cursor(conn, "entra_signin", "t1") == T + timedelta(minutes=5)


async def test_batch_store_keeps_each_record_once_on_postgres(engines) -> None:  # type: ignore[no-untyped-def]
    one, two = engines
    rows = [
        {
            "source": "s",
            "tenant": "t1",
            "event_id": f"e{i}",
            "occurred_at": T,
            "user_principal": "u",
            "status": "accepted",
            "reason": None,
            "payload": "{}",
            "stored_at": T,
        }
        for i in range(700)
    ]
    async with one.begin() as conn:
        assert len(await repo.store_raw_batch(conn, rows)) == 700
    async with two.begin() as conn:  # the other replica re-reads the same window
        assert await repo.store_raw_batch(conn, [*rows, {**rows[0], "event_id": "new"}]) == {("s", "new")}


async def test_two_replicas_draining_together_post_each_row_once(engines) -> None:  # type: ignore[no-untyped-def]
    one, two = engines
    clock = SimClock(T)
    emu = SlackEmulator(enforce_limits=False)
    users = [f"U0P{i:03d}" for i in range(8)]
    for u in users:
        emu.add_user(u, f"{u.lower()}@contoso.example", u)
    async with one.begin() as conn:
        for i in range(40):  # five messages per employee, each employee's in order
            u = users[i % len(users)]
            await repo.enqueue(
                conn, kind="message.post", lane=f"user:{u}", now=T, payload={"channel": u, "text": f"{u} #{i}"}
            )

    def replica(engine) -> Dispatcher:  # type: ignore[no-untyped-def]
        cases = CaseService(
            engine, clock, Params(), Timeouts(timedelta(minutes=15), timedelta(minutes=30)), timedelta(hours=24)
        )
        slack = AsyncWebClient(token=emu.bot_token, base_url=url + "/api/")
        return Dispatcher(engine, clock, cases, slack, Executor(engine, clock, {}), "C0SOC", pace_scale=1000.0)

    async with one.connect() as conn:
        assert await repo.outbox_health(conn) == repo.OutboxHealth(pending=40, dead=0, oldest_pending_at=T)
    # some posts land but their answer is lost: their retries read the DM back on PostgreSQL too
    emu.faults.inject(r"^chat\.postMessage$", 503, after_effect=True, times=6)
    async with LoopbackServer(emu.app, "slack") as url:
        emu.base_url = url
        first, second = replica(one), replica(two)
        for _ in range(20):
            delivered = await asyncio.gather(first.run_once(), second.run_once())
            async with one.connect() as conn:
                if await repo.pending_outbox(conn) == 0:
                    break
            if sum(delivered) == 0:
                clock.advance(timedelta(seconds=30))  # past the retries' back-off
    assert emu.calls("conversations.history") >= 1
    posted = [m["text"] for m in emu.all_messages()]
    assert sorted(posted) == sorted(f"{users[i % len(users)]} #{i}" for i in range(40))  # each once
    for u in users:  # and each lane in its own order
        texts = [m["text"] for m in emu.messages(emu.dm_channel(u))]
        assert texts == sorted(texts, key=lambda t: int(t.split("#")[1]))
    async with one.connect() as conn:
        assert await repo.outbox_health(conn) == repo.OutboxHealth(pending=0, dead=0, oldest_pending_at=None)
        claims = (await conn.execute(text("select count(*) from outbox where claimed_by is not null"))).scalar_one()
    assert claims == 0  # delivered rows give their claim back


async def test_retention_prunes_duplicate_markers_on_postgres(engines) -> None:  # type: ignore[no-untyped-def]
    one, two = engines
    old, now = T - timedelta(days=20), T
    rows = [("s", "t1", f"old{i}", old, "u", "accepted", None, "", old + timedelta(seconds=i)) for i in range(5)] + [
        ("s", "t1", "evidence", old, "u", "accepted", None, '{"id": "evidence"}', old),
        ("s", "t1", "recent", now, "u", "accepted", None, "", now),
    ]
    async with one.begin() as conn:
        await repo.insert_raw(conn, rows)
    # both replicas prune at once: the second finds less or nothing, and neither fails
    counts = await asyncio.gather(
        prune_raw_events(one, SimClock(now), timedelta(days=14), batch=2),
        prune_raw_events(two, SimClock(now), timedelta(days=14), batch=2),
    )
    async with one.connect() as conn:
        left = sorted(r[0] for r in await conn.execute(text("select event_id from raw_events")))
    assert left == ["evidence", "recent"] and sum(counts) == 5  # each row counted by the one that deleted it
