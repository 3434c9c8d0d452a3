"""APScheduler jobs: poll sources, deliver the outbox, fire due deadlines, prune old raw rows, verify
the whole audit chain.

Deadlines live in the cases table, not in the scheduler's memory: the sweeper asks the database
what is due, so a restart loses none and a replica that was down catches up on start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.store.retention import prune_raw_events
from bot.wiring import Services

log = structlog.get_logger("mailwarden.scheduler")


def _guarded(name: str, job: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        try:
            await job()
        except Exception:  # a failing tick is logged; the next tick tries again
            log.exception("job.failed", job=name)

    return run


def build_scheduler(
    services: Services,
    *,
    poll_s: float,
    dispatch_s: float,
    sweep_s: float,
    poll: bool = True,
    prune_s: float | None = None,
) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")
    common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    if poll:
        for poller in services.pollers:  # one job per source and tenant
            scheduler.add_job(
                _guarded(f"poll.{poller.name}", poller.poll_once),
                "interval",
                seconds=poll_s,
                id=f"poll.{poller.name}",
                **common,
            )
    scheduler.add_job(
        _guarded("dispatch", services.dispatcher.drain), "interval", seconds=dispatch_s, id="dispatch", **common
    )
    scheduler.add_job(
        _guarded("sweep", services.cases.fire_due_deadlines), "interval", seconds=sweep_s, id="sweep", **common
    )
    keep = timedelta(days=services.settings.raw_retention_days)

    async def prune() -> None:
        await prune_raw_events(services.engine, services.clock, keep)

    async def verify_audit() -> None:
        await services.verify_audit(full=True)

    scheduler.add_job(
        _guarded("audit_verify", verify_audit),
        "interval",
        seconds=services.settings.audit_verify_interval_s,
        id="audit_verify",
        **common,
    )
    scheduler.add_job(
        _guarded("prune", prune),
        "interval",
        seconds=prune_s if prune_s is not None else services.settings.prune_interval_s,
        id="prune",
        **common,
    )
    return scheduler
