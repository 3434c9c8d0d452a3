"""Run each containment action exactly once per (case, action, target).

The ledger row is committed *before* the provider call, with the time the attempt began. If the
process dies after the call but before recording the outcome, the row stays `started`: the next
attempt asks the provider whether the effect is already there (reconcile) instead of calling
again blindly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from actions.base import Action, ActionContext, ActionOutcome, idempotency_key
from bot.audit import log as audit
from bot.clock import Clock
from bot.store.tables import action_ledger

log = structlog.get_logger("mailwarden.actions")


class ActionInProgress(Exception):
    """Another attempt at this action began moments ago and has not recorded its outcome yet."""

    def __init__(self, action: str, target: str) -> None:
        super().__init__(f"{action} on {target} is already in progress")


BatchRunner = Callable[[str, list[Action], ActionContext | None], Awaitable[dict[str, ActionOutcome]]]


class SimulatedCrash(BaseException):
    """Raised at an armed crash point: unwinds everything without any commit, like SIGKILL."""


def crash_if_armed(points: set[str], point: str) -> None:
    """Die here once if a test armed this point (the ledger's and the dispatcher's crash points)."""
    if point in points:
        points.discard(point)
        raise SimulatedCrash(point)


@dataclass(frozen=True, slots=True)
class LedgerResult:
    outcome: ActionOutcome
    provider_called: bool
    reconciled: bool = False
    dry_run: bool = False


class Executor:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        actions: dict[str, Action],
        *,
        dry_run: bool = False,
        reconcile_skew: timedelta = timedelta(seconds=30),
        crash_points: set[str] | None = None,
        by_tenant: dict[str, dict[str, Action]] | None = None,
        batch_runners: dict[str, BatchRunner] | None = None,
        in_flight_grace: timedelta = timedelta(seconds=60),
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.actions = actions
        self.dry_run = dry_run
        self.reconcile_skew = reconcile_skew
        self.crash_points = crash_points if crash_points is not None else set()
        self.by_tenant: dict[str, dict[str, Action]] = by_tenant or {}
        self.batch_runners: dict[str, BatchRunner] = batch_runners or {}  # per tenant
        self.in_flight_grace = in_flight_grace

    def actions_for(self, tenant: str | None) -> dict[str, Action]:
        """Each tenant has its own Graph client, so its own bound actions; one tenant needs no key."""
        if tenant is not None and tenant in self.by_tenant:
            return self.by_tenant[tenant]
        return self.actions

    def _maybe_crash(self, point: str) -> None:
        crash_if_armed(self.crash_points, point)

    async def _claim(self, case_id: str, name: str, target: str, key: str) -> tuple[str, Any]:
        """Take the ledger row for one (case, action, target).

        Returns ("done", prior result) when it already succeeded, ("unknown", started_at) when an earlier
        attempt died between the provider call and recording its outcome, or ("claimed", now)."""
        now = self.clock.now()
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(action_ledger).where(action_ledger.c.idempotency_key == key))).first()
            if row is None:
                try:
                    async with conn.begin_nested():
                        await conn.execute(
                            action_ledger.insert().values(
                                case_id=case_id,
                                action=name,
                                target=target,
                                idempotency_key=key,
                                status="started",
                                attempts=1,
                                started_at=now,
                            )
                        )
                except IntegrityError:  # a concurrent replica inserted it first
                    row = (
                        await conn.execute(select(action_ledger).where(action_ledger.c.idempotency_key == key))
                    ).first()
                else:
                    await audit.append(
                        conn,
                        at=now,
                        actor="system",
                        action="action.started",
                        case_id=case_id,
                        detail={"action": name, "target": target, "key": key, "dry_run": self.dry_run},
                    )
                    return "claimed", now
            assert row is not None
            if row.status == "succeeded":
                return "done", orjson.loads(row.result or "{}")
            if row.status == "started" and now - row.started_at < self.in_flight_grace:
                # Someone (another replica, or this one a moment ago) may be calling the provider right
                # now: calling too would be the double write this ledger exists to prevent.
                raise ActionInProgress(name, target)
            fresh = row.status == "failed"  # a definite failure earlier; the SOC asked again
            await conn.execute(
                update(action_ledger)
                .where(action_ledger.c.idempotency_key == key)
                .values(
                    attempts=action_ledger.c.attempts + 1,
                    status="started",
                    started_at=now if fresh else row.started_at,
                )
            )
            return ("claimed", now) if fresh else ("unknown", row.started_at)

    async def execute(
        self, case_id: str, name: str, target: str, context: ActionContext | None = None, tenant: str | None = None
    ) -> LedgerResult:
        results = await self.execute_plan(case_id, (name,), target, context, tenant)
        return results[name]

    async def execute_plan(
        self,
        case_id: str,
        names: Sequence[str],
        target: str,
        context: ActionContext | None = None,
        tenant: str | None = None,
    ) -> dict[str, LedgerResult]:
        """Run every action of an approved plan on one target, each exactly once; when the provider can,
        the writes that go to one user share one request ($batch)."""
        actions = self.actions_for(tenant)
        results: dict[str, LedgerResult] = {}
        todo: list[str] = []
        for name in dict.fromkeys(names):
            action = actions.get(name)
            if action is None:
                results[name] = LedgerResult(ActionOutcome(False, f"no action called {name!r} is configured"), False)
                continue
            key = idempotency_key(case_id, name, target)
            state, info = await self._claim(case_id, name, target, key)
            if state == "done":
                results[name] = LedgerResult(ActionOutcome(True, info.get("summary", "already done"), info), False)
                continue
            unknown = state == "unknown" and not self.dry_run
            if unknown and await action.already_done(target, info - self.reconcile_skew, context):
                outcome = ActionOutcome(
                    True, "Already in effect at the provider (reconciled after a restart)", {"reconciled": True}
                )
                await self._finish(case_id, name, target, key, outcome, reconciled=True)
                results[name] = LedgerResult(outcome, provider_called=False, reconciled=True)
                continue
            todo.append(name)
        if not todo:
            return results
        if self.dry_run:
            for name in todo:
                outcome = ActionOutcome(True, f"Dry run: would have run {name} on {target}", {"dry_run": True})
                await self._finish(case_id, name, target, idempotency_key(case_id, name, target), outcome)
                results[name] = LedgerResult(outcome, provider_called=False, dry_run=True)
            return results
        self._maybe_crash("before_provider_call")
        runner = self.batch_runners.get(tenant or "") if len(todo) > 1 else None
        if runner is not None:
            outcomes = await runner(target, [actions[n] for n in todo], context)
        else:
            outcomes = {n: await actions[n].run(target, context) for n in todo}
        self._maybe_crash("after_provider_call")
        for name in todo:
            outcome = outcomes.get(name) or ActionOutcome(False, "the provider gave no answer for this step")
            await self._finish(case_id, name, target, idempotency_key(case_id, name, target), outcome)
            results[name] = LedgerResult(outcome, provider_called=True)
        return results

    async def _finish(
        self, case_id: str, name: str, target: str, key: str, outcome: ActionOutcome, reconciled: bool = False
    ) -> None:
        now = self.clock.now()
        status = "succeeded" if outcome.ok else "failed"
        async with self.engine.begin() as conn:
            await conn.execute(
                update(action_ledger)
                .where(action_ledger.c.idempotency_key == key)
                .values(
                    status=status,
                    finished_at=now,
                    result=orjson.dumps({"summary": outcome.summary, **outcome.detail}).decode(),
                )
            )
            await audit.append(
                conn,
                at=now,
                actor="system",
                action=f"action.{status}",
                case_id=case_id,
                detail={
                    "action": name,
                    "target": target,
                    "key": key,
                    "summary": outcome.summary,
                    "reconciled": reconciled,
                },
            )
        log.info("action.finished", case_id=case_id, action=name, status=status, reconciled=reconciled)

    async def statuses(self, case_id: str) -> dict[str, str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(action_ledger.c.action, action_ledger.c.status).where(action_ledger.c.case_id == case_id)
            )
            return {r.action: r.status for r in rows}

    async def outcomes(self, case_id: str) -> dict[str, str]:
        """What each action did for a case, as the one-line summaries an analyst reads."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(action_ledger.c.action, action_ledger.c.status, action_ledger.c.result)
                .where(action_ledger.c.case_id == case_id)
                .order_by(action_ledger.c.id)
            )
            return {r.action: str(orjson.loads(r.result or "{}").get("summary", r.status)) for r in rows}
