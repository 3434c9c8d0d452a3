"""The dispatcher: delivers outbox rows (Slack cards, containment actions) with retries.

Rows are delivered in id order within each lane; a row that fails blocks the rest of its lane
until its retry, so a card update never overtakes the card it updates. Transient failures
(429, 5xx, network) back off and retry; permanent ones are marked dead, logged and audited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import orjson
import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select, update

from actions.base import ActionContext
from actions.ledger import ActionInProgress, Executor
from bot.audit import log as audit
from bot.cases.plan import off_hours
from bot.cases.service import CaseService
from bot.clock import Clock
from bot.errors import ConcurrentUpdate, IllegalTransition
from bot.escalate.pagerduty import PagerDuty
from bot.model import Case, CaseEvent, CaseState, MessageRef, Severity
from bot.pacing import EPHEMERAL_PER_WORKSPACE, POST_PER_CHANNEL, UPDATE_PER_WORKSPACE, Pacer
from bot.slack import cards
from bot.store import repo
from bot.store.tables import outbox

log = structlog.get_logger("mailwarden.dispatch")


class Permanent(Exception):
    """Retrying will not help (bad request, unknown channel): the row is dead."""


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, SlackApiError):
        return bool(exc.response.status_code == 429 or exc.response.status_code >= 500)
    return isinstance(exc, (httpx.HTTPError, OSError, asyncio.TimeoutError, ConcurrentUpdate, ActionInProgress))


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(300, 2 ** max(0, attempts - 1)))


class Dispatcher:
    def __init__(
        self,
        engine: Any,
        clock: Clock,
        cases: CaseService,
        slack: AsyncWebClient,
        executor: Executor,
        soc_channel: str,
        max_attempts: int = 8,
        *,
        soc_channels: dict[str, str] | None = None,
        pager: PagerDuty | None = None,
        soc_usergroup: str | None = None,
        oncall_usergroup: str | None = None,
        recovery_url: str | None = None,
        helpdesk: str = "the IT helpdesk",
        lane_concurrency: int = 64,
        preflight: Callable[[Case], Awaitable[tuple[tuple[tuple[str, str], ...], bool]]] | None = None,
        offhours: tuple[int, int] | None = None,
        pace_scale: float = 1.0,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.cases = cases
        self.slack = slack
        self.executor = executor
        self.soc_channel = soc_channel
        self.soc_channels = soc_channels or {}  # per tenant; each tenant may have its own SOC
        self.max_attempts = max_attempts
        self.pager = pager
        self.soc_usergroup = soc_usergroup
        self.oncall_usergroup = oncall_usergroup
        self.recovery_url = recovery_url
        self.helpdesk = helpdesk
        self.lane_concurrency = lane_concurrency
        self.preflight = preflight
        self.offhours = offhours
        self.pacer = Pacer(pace_scale)
        self._lock = asyncio.Lock()
        self.handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "user_card.post": self._post_user_card,
            "user_card.update": self._update_user_card,
            "user_reminder.post": self._post_user_reminder,
            "user_outcome.post": self._post_user_outcome,
            "soc_card.post": self._post_soc_card,
            "soc_card.update": self._update_soc_card,
            "soc_thread.post": self._post_soc_thread,
            "ephemeral": self._post_ephemeral,
            "message.post": self._post_message,
            "action.run": self._run_action,
            "page.trigger": self._page_trigger,
            "page.acknowledge": self._page_acknowledge,
            "page.resolve": self._page_resolve,
        }

    # --- paced Slack calls: every post and update goes through these ---------------------------------
    async def post(self, channel: str, **kw: Any) -> Any:
        await self.pacer.wait(f"post:{channel}", **POST_PER_CHANNEL)
        return await self.slack.chat_postMessage(channel=channel, **kw)

    async def update(self, channel: str, ts: str, **kw: Any) -> Any:
        await self.pacer.wait("update", **UPDATE_PER_WORKSPACE)
        return await self.slack.chat_update(channel=channel, ts=ts, **kw)

    async def drain(self, max_rounds: int = 50) -> int:
        """Deliver until nothing is due (rows waiting on a future retry stay queued)."""
        total = 0
        for _ in range(max_rounds):
            n = await self.run_once()
            total += n
            if n == 0:
                break
        return total

    async def run_once(self, limit: int = 500) -> int:
        """Deliver every due row once; lanes run side by side, each in its own order."""
        async with self._lock:
            now = self.clock.now()
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(outbox).where(outbox.c.status == "pending").order_by(outbox.c.id).limit(limit)
                    )
                ).all()
            lanes: dict[str, list[Any]] = {}
            waiting: set[str] = set()
            for row in rows:
                if row.lane in waiting:
                    continue
                if row.next_attempt_at > now:
                    waiting.add(row.lane)  # nothing overtakes a row waiting to retry
                    continue
                lanes.setdefault(row.lane, []).append(row)
            gate = asyncio.Semaphore(self.lane_concurrency)

            async def run_lane(lane_rows: list[Any]) -> int:
                async with gate:
                    done = 0
                    for row in lane_rows:
                        try:
                            await self.handlers[row.kind](orjson.loads(row.payload))
                        except Exception as exc:
                            await self._failed(row, exc)
                            return done
                        await self._mark(row.id, status="done")
                        done += 1
                    return done

            return sum(await asyncio.gather(*(run_lane(r) for r in lanes.values())))

    async def _mark(self, row_id: int, **values: Any) -> None:
        async with self.engine.begin() as conn:
            if values.get("status") == "done":
                values["done_at"] = self.clock.now()
            await conn.execute(update(outbox).where(outbox.c.id == row_id).values(**values))

    async def _failed(self, row: Any, exc: BaseException) -> None:
        attempts = row.attempts + 1
        error = f"{type(exc).__name__}: {exc}"[:1000]
        transient = _is_transient(exc) and not isinstance(exc, Permanent)
        now = self.clock.now()
        if transient and attempts < self.max_attempts:
            log.warning("outbox.retry", row=row.id, kind=row.kind, attempts=attempts, error=error)
            await self._mark(row.id, attempts=attempts, last_error=error, next_attempt_at=now + backoff(attempts))
            return
        log.error("outbox.dead", row=row.id, kind=row.kind, attempts=attempts, error=error)
        async with self.engine.begin() as conn:
            await conn.execute(
                update(outbox)
                .where(outbox.c.id == row.id)
                .values(status="dead", attempts=attempts, last_error=error, done_at=now)
            )
            await audit.append(
                conn,
                at=now,
                actor="system",
                action="outbox.dead",
                case_id=row.case_id,
                detail={"kind": row.kind, "error": error, "attempts": attempts},
            )
        if row.kind == "action.run" and row.case_id:
            await self._safe_transition(row.case_id, CaseEvent.CONTAINMENT_FAILED, note=error[:300])

    async def _case(self, payload: dict[str, Any]) -> Case:
        case = await self.cases.get(payload["case_id"])
        if case is None:
            raise Permanent(f"case {payload['case_id']} does not exist")
        return case

    async def _record(self, case_id: str, action: str, **changes: Any) -> None:
        """Save what delivery learned (message refs, Slack ids) on the freshest copy of the case."""
        for _ in range(3):
            case = await self.cases.get(case_id)
            assert case is not None
            try:
                await self.cases.update(
                    replace(case, **changes), action=action, detail={k: str(v) for k, v in changes.items()}
                )
                return
            except ConcurrentUpdate:
                continue
        raise ConcurrentUpdate(case_id)

    async def _enqueue(self, case_id: str, kind: str, lane: str, payload: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await repo.enqueue(
                conn,
                kind=kind,
                lane=lane,
                now=self.clock.now(),
                case_id=case_id,
                payload={"case_id": case_id, **payload},
            )

    async def _safe_transition(self, case_id: str, event: CaseEvent, note: str | None = None) -> None:
        try:
            await self.cases.transition(case_id, event, note=note)
        except IllegalTransition as exc:
            log.info("case.transition_skipped", case_id=case_id, reason=str(exc))

    # --- Slack --------------------------------------------------------------------------------------
    async def _post_user_card(self, payload: dict[str, Any]) -> None:
        case = await self._case(payload)
        if case.user_card is not None:
            return
        user_id, tz = case.slack_user_id, case.slack_tz
        if user_id is None:
            try:
                found = await self.slack.users_lookupByEmail(email=case.user_principal)
            except SlackApiError as exc:
                if exc.response.get("error") in ("users_not_found", "user_not_found"):
                    log.warning("slack.user_not_found", case_id=case.id)
                    await self._safe_transition(
                        case.id, CaseEvent.USER_UNREACHABLE, note="no Slack account with this e-mail address"
                    )
                    return
                raise
            user = found["user"]
            if user.get("deleted"):
                await self._safe_transition(case.id, CaseEvent.USER_UNREACHABLE, note="Slack account deactivated")
                return
            user_id, tz = str(user["id"]), user.get("tz")
            if tz:  # off_hours judges the employee's hours in their own time zone
                await self.cases.set_profile_tz(case.tenant, case.user_principal, str(tz))
        if (
            self.offhours is not None
            and case.severity >= Severity.HIGH
            and off_hours(self.clock.now(), tz, *self.offhours)
        ):
            await self._record(case.id, "slack.user_resolved", slack_user_id=user_id, slack_tz=tz)
            await self._safe_transition(
                case.id,
                CaseEvent.USER_UNREACHABLE,
                note=f"off-hours for the employee ({tz or 'UTC'}): sent straight to the SOC",
            )
            return
        dm = await self.slack.conversations_open(users=user_id)
        channel = str(dm["channel"]["id"])
        card = cards.user_card(replace(case, slack_tz=tz))
        posted = await self.post(channel, text=card.text, blocks=card.blocks)
        await self._record(
            case.id,
            "slack.user_card_posted",
            slack_user_id=user_id,
            slack_tz=tz,
            user_card=MessageRef(channel=str(posted["channel"]), ts=str(posted["ts"])),
        )

    async def _update_user_card(self, payload: dict[str, Any]) -> None:
        case = await self._case(payload)
        if case.user_card is None:
            return  # never posted (user unreachable): nothing to update
        card = cards.user_card(case)
        await self.update(case.user_card.channel, case.user_card.ts, text=card.text, blocks=card.blocks)

    async def _post_user_reminder(self, payload: dict[str, Any]) -> None:
        case = await self._case(payload)
        if case.user_card is None or case.state is not CaseState.AWAITING_USER:
            return
        text = cards.user_reminder_text(case)
        await self.post(case.user_card.channel, text=text, thread_ts=case.user_card.ts, reply_broadcast=True)

    async def _post_user_outcome(self, payload: dict[str, Any]) -> None:
        case = await self._case(payload)
        if case.user_card is None:
            return
        card = cards.user_outcome(
            case,
            self.executor_summaries(await self.executor.outcomes(case.id)),
            recovery_url=self.recovery_url,
            helpdesk=self.helpdesk,
        )
        await self.post(case.user_card.channel, text=card.text, blocks=card.blocks)

    @staticmethod
    def executor_summaries(outcomes: dict[str, str]) -> list[str]:
        return [f"{name}: {summary}" for name, summary in outcomes.items()]

    async def _post_soc_card(self, payload: dict[str, Any]) -> None:
        case = await self._case(payload)
        if case.soc_card is not None:
            return
        if self.preflight is not None and not case.plan_notes and not case.is_campaign and not case.is_app:
            # what containment will and will not do, before anyone clicks (guest, synced, protected)
            notes, two = await self.preflight(case)
            await self._record(
                case.id, "case.preflight", plan_notes=notes, needs_two_approvers=case.needs_two_approvers or two
            )
            case = await self._case(payload)
        card = cards.soc_card(case)
        posted = await self.post(
            self.soc_channels.get(case.tenant, self.soc_channel), text=card.text, blocks=card.blocks
        )
        await self._record(
            case.id, "slack.soc_card_posted", soc_card=MessageRef(channel=str(posted["channel"]), ts=str(posted["ts"]))
        )

    async def _update_soc_card(self, payload: dict[str, Any]) -> None:
        case = await self._case(payload)
        if case.soc_card is None:
            return
        card = cards.soc_card(case)
        await self.update(case.soc_card.channel, case.soc_card.ts, text=card.text, blocks=card.blocks)

    async def _post_soc_thread(self, payload: dict[str, Any]) -> None:
        case = await self._case(payload)
        if case.soc_card is None:
            return
        prefix = ""
        if payload.get("mention_oncall") and self.oncall_usergroup:
            prefix += f"<!subteam^{self.oncall_usergroup}> "
        if payload.get("mention_soc") and self.soc_usergroup:
            prefix += f"<!subteam^{self.soc_usergroup}> "
        await self.post(case.soc_card.channel, thread_ts=case.soc_card.ts, text=(prefix + str(payload["text"]))[:3000])

    async def _post_ephemeral(self, payload: dict[str, Any]) -> None:
        await self.pacer.wait("ephemeral", **EPHEMERAL_PER_WORKSPACE)
        await self.slack.chat_postEphemeral(
            channel=payload["channel"], user=payload["user"], text=str(payload["text"])[:3000]
        )

    async def _post_message(self, payload: dict[str, Any]) -> None:
        """A card built at enqueue time (travel requests, campaign notes): posted as given."""
        await self.post(
            payload["channel"],
            text=str(payload["text"])[:3000],
            blocks=payload.get("blocks"),
            thread_ts=payload.get("thread_ts"),
        )

    # --- paging -------------------------------------------------------------------------------------------
    async def _page(self, action: str, payload: dict[str, Any]) -> None:
        case = await self._case(payload)
        if self.pager is None:
            log.warning("page.not_configured", case_id=case.id, action=action)
            return
        await self.pager.send(
            action,  # type: ignore[arg-type]
            case.id,
            summary=f"Mailwarden {case.severity.label} case {case.id}: suspicious mailbox access for "
            f"{case.user_principal}. {payload.get('reason', '')}",
            severity=case.severity.label,
            details={
                "user": case.user_principal,
                "detectors": list(case.detectors),
                "state": case.state.value,
                "reasons": [f.reason for f in case.findings[:10]],
            },
        )
        async with self.engine.begin() as conn:
            await audit.append(
                conn,
                at=self.clock.now(),
                actor="system",
                action=f"page.{action}",
                case_id=case.id,
                detail={"reason": payload.get("reason")},
            )

    async def _page_trigger(self, payload: dict[str, Any]) -> None:
        await self._page("trigger", payload)

    async def _page_acknowledge(self, payload: dict[str, Any]) -> None:
        await self._page("acknowledge", payload)

    async def _page_resolve(self, payload: dict[str, Any]) -> None:
        await self._page("resolve", payload)

    # --- containment ------------------------------------------------------------------------------------
    async def _run_action(self, payload: dict[str, Any]) -> None:
        """Run the approved plan. The first of its rows runs every action (writes to one user share a
        $batch where the provider allows); the ledger makes the plan's later rows no-ops."""
        case = await self._case(payload)
        if case.state is not CaseState.CONTAINING:
            log.info("action.skipped", case_id=case.id, action=payload["action"], state=case.state.value)
            return
        plan = tuple(payload.get("plan") or [payload["action"]])
        results = await self.executor.execute_plan(
            case.id,
            plan,
            payload["target"],
            ActionContext.from_dict(payload.get("context")),
            tenant=payload.get("tenant", case.tenant),
        )
        for name, result in results.items():
            if not (result.provider_called or result.reconciled or result.dry_run):
                continue  # done earlier: already reported in the thread
            mark = "✅" if result.outcome.ok else "❌"
            extra = " (reconciled with the provider after a restart)" if result.reconciled else ""
            extra += " (dry run)" if result.dry_run else ""
            await self._enqueue(
                case.id, "soc_thread.post", "soc", {"text": f"{mark} {name}: {result.outcome.summary}{extra}"}
            )
        failed = [f"{n}: {r.outcome.summary}" for n, r in results.items() if not r.outcome.ok]
        if failed:
            await self._safe_transition(case.id, CaseEvent.CONTAINMENT_FAILED, note="; ".join(failed)[:500])
        elif all(r.outcome.ok for r in results.values()):
            await self._safe_transition(case.id, CaseEvent.CONTAINMENT_DONE, note=", ".join(plan))
