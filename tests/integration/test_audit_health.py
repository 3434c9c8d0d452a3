"""/healthz verifies what was appended to the audit log since its last check; the whole chain is
verified on a schedule, and a break, once found, stays reported until a whole check passes again."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.audit import log as audit
from bot.scheduler import build_scheduler
from bot.store.tables import audit_log
from sandbox.world import Sandbox

TRIGGERS = ("DROP TRIGGER IF EXISTS audit_log_no_update", "DROP TRIGGER IF EXISTS audit_log_no_delete")


async def append(sb: Sandbox, n: int) -> None:
    async with sb.bot.engine.begin() as conn:
        await audit.append_many(
            conn,
            [
                audit.Pending(sb.clock.now() + timedelta(seconds=i), "system", "test.entry", None, {"i": i})
                for i in range(n)
            ],
        )


def tamper(sb: Sandbox, *sql: str) -> None:
    """What someone with the database file can do: drop our triggers, then edit."""
    con = sqlite3.connect(sb.db_path)
    for stmt in (*TRIGGERS, *sql):
        con.execute(stmt)
    con.commit()
    con.close()


def last_seq(sb: Sandbox) -> int:
    con = sqlite3.connect(sb.db_path)
    try:
        return int(con.execute("SELECT max(seq) FROM audit_log").fetchone()[0])
    finally:
        con.close()


async def test_health_reads_only_the_entries_appended_since_its_last_check(sandbox: Sandbox) -> None:
    await append(sandbox, 4)
    first = await sandbox.bot.verify_audit()
    assert first.ok and first.checked == last_seq(sandbox)  # the first check walks the whole chain
    await append(sandbox, 3)
    assert (await sandbox.bot.health())["audit_ok"] is True
    again = await sandbox.bot.verify_audit()
    assert again.ok and again.checked == 0 and again.last is not None and again.last[0] == last_seq(sandbox)
    await append(sandbox, 2)
    assert (await sandbox.bot.verify_audit()).checked == 2


async def test_a_new_entry_altered_fails_the_next_health_check(sandbox: Sandbox) -> None:
    await append(sandbox, 2)
    assert (await sandbox.bot.health())["audit_ok"] is True
    await append(sandbox, 2)
    tamper(sandbox, f"UPDATE audit_log SET detail = '{{\"i\":99}}' WHERE seq = {last_seq(sandbox)}")
    health = await sandbox.bot.health()
    assert health["ok"] is True and health["audit_ok"] is False


async def test_an_old_entry_altered_is_found_by_the_whole_check_and_stays_reported(sandbox: Sandbox) -> None:
    await append(sandbox, 3)
    assert (await sandbox.bot.health())["audit_ok"] is True
    tamper(sandbox, "UPDATE audit_log SET actor = 'U0MALLORY' WHERE seq = 1")
    # behind the point already verified: the cheap check cannot see it (documented), the whole one does
    assert (await sandbox.bot.health())["audit_ok"] is True
    whole = await sandbox.bot.verify_audit(full=True)
    assert not whole.ok and whole.first_bad_seq == 1 and "altered" in (whole.problem or "")
    await append(sandbox, 1)
    assert (await sandbox.bot.health())["audit_ok"] is False  # new entries verify, the break stays reported


async def test_the_remembered_entry_altered_is_caught_at_once(sandbox: Sandbox) -> None:
    await append(sandbox, 2)
    verified = await sandbox.bot.verify_audit()
    assert verified.last is not None
    tamper(sandbox, f"UPDATE audit_log SET hash = '{'f' * 64}' WHERE seq = {verified.last[0]}")
    again = await sandbox.bot.verify_audit()
    assert not again.ok and again.first_bad_seq == verified.last[0]


async def test_a_head_set_back_behind_the_log_is_caught(sandbox: Sandbox) -> None:
    await append(sandbox, 3)
    con = sqlite3.connect(sandbox.db_path)
    seq, digest = con.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1 OFFSET 1").fetchone()
    con.close()
    tamper(sandbox, f"UPDATE audit_head SET seq = {seq}, hash = '{digest}'")
    verdict = await sandbox.bot.verify_audit(full=True)
    assert not verdict.ok and "head was altered" in (verdict.problem or "")


async def test_a_long_log_is_checked_in_slices_with_the_same_verdict(sandbox: Sandbox) -> None:
    await append(sandbox, 25)
    async with sandbox.bot.engine.connect() as conn:
        whole = await audit.check(conn)
        sliced = await audit.check(conn, batch=4)
        from_middle = await audit.check(conn, (5, await _hash_of(conn, 5)), batch=3)
    assert whole.ok and sliced.ok and whole.checked == sliced.checked == last_seq(sandbox)
    assert from_middle.ok and from_middle.checked == last_seq(sandbox) - 5 and from_middle.last == whole.last
    tamper(sandbox, "UPDATE audit_log SET action = 'x' WHERE seq = 13")
    async with sandbox.bot.engine.connect() as conn:
        broken = await audit.check(conn, batch=4)
    assert not broken.ok and broken.first_bad_seq == 13 and broken.checked == 12


async def _hash_of(conn: AsyncConnection, seq: int) -> str:
    return str((await conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == seq))).scalar_one())


def test_the_service_schedules_the_whole_check(sandbox: Sandbox) -> None:
    scheduler = build_scheduler(sandbox.bot, poll_s=3600, dispatch_s=3600, sweep_s=3600)
    job = scheduler.get_job("audit_verify")
    assert job is not None and job.trigger.interval.total_seconds() == sandbox.bot.settings.audit_verify_interval_s
