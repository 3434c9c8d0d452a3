"""Run each containment action exactly once per (case, action, target).

The ledger row is committed *before* the provider call, with the time the attempt began. If the
process dies after the call but before recording the outcome, the row stays `started`: the next
attempt asks the provider whether the effect is already there (reconcile) instead of calling
again blindly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

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


class SimulatedCrash(BaseException):
    """Raised at an armed crash point: unwinds everything without any commit, like SIGKILL."""


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
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.actions = actions
        self.dry_run = dry_run
        self.reconcile_skew = reconcile_skew
        self.crash_points = crash_points if crash_points is not None else set()
        self.by_tenant: dict[str, dict[str, Action]] = by_tenant or {}

    def actions_for(self, tenant: str | None) -> dict[str, Action]:
        """Each tenant has its own Graph client, so its own bound actions; one tenant needs no key."""
        if tenant is not None and tenant in self.by_tenant:
            return self.by_tenant[tenant]
        return self.actions

    def _maybe_crash(self, point: str) -> None:
        if point in self.crash_points:
            self.crash_points.discard(point)
            raise SimulatedCrash(point)

    async def execute(
        self, case_id: str, name: str, target: str, context: ActionContext | None = None, tenant: str | None = None
    ) -> LedgerResult:
        action = self.actions_for(tenant).get(name)
        if action is None:
            return LedgerResult(ActionOutcome(False, f"no action called {name!r} is configured"), False)
        key = idempotency_key(case_id, name, target)
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
            elif row.status == "failed":  # a definite failure earlier; the SOC asked again
                await conn.execute(
                    update(action_ledger)
                    .where(action_ledger.c.idempotency_key == key)
                    .values(attempts=action_ledger.c.attempts + 1, status="started", started_at=now)
                )
                row = None
            else:
                await conn.execute(
                    update(action_ledger)
                    .where(action_ledger.c.idempotency_key == key)
                    .values(attempts=action_ledger.c.attempts + 1)
                )
        if row is not None and row.status == "succeeded":
            prior = orjson.loads(row.result or "{}")
            return LedgerResult(ActionOutcome(True, prior.get("summary", "already done"), prior), False)
        started_at = row.started_at if row is not None else now
        if row is not None and row.status == "started" and not self.dry_run:
            done = await action.already_done(target, started_at - self.reconcile_skew, context)
            if done:
                outcome = ActionOutcome(
                    True, "Already in effect at the provider (reconciled after a restart)", {"reconciled": True}
                )
                await self._finish(case_id, name, target, key, outcome, reconciled=True)
                return LedgerResult(outcome, provider_called=False, reconciled=True)
        if self.dry_run:
            outcome = ActionOutcome(True, f"Dry run: would have run {name} on {target}", {"dry_run": True})
            await self._finish(case_id, name, target, key, outcome)
            return LedgerResult(outcome, provider_called=False, dry_run=True)
        self._maybe_crash("before_provider_call")
        outcome = await action.run(target, context)
        self._maybe_crash("after_provider_call")
        await self._finish(case_id, name, target, key, outcome)
        return LedgerResult(outcome, provider_called=True)

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
