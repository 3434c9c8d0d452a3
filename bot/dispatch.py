"""The dispatcher: delivers outbox rows (Slack cards, containment actions) with retries.

Rows are delivered in id order within each lane; a row that fails blocks the rest of its lane
until its retry, so a card update never overtakes the card it updates. Transient failures
(429, 5xx, network) back off and retry; permanent ones are marked dead, logged and audited.

Each Slack post happens once. A replica claims a row before delivering it (an expiring claim, so a
crashed replica's rows come back), and every post carries its row's key in the message's metadata.
Slack has no idempotency key for chat.postMessage, so when an earlier attempt began and its outcome
is unknown (a crash after Slack answered, a 5xx or a lost connection), the retry first looks for its
key in the conversation (conversations.history / .replies with include_all_metadata) and records
the message it finds instead of posting a second card. Slack's docs: docs.slack.dev/messaging/
message-metadata; the history methods return metadata only when include_all_metadata is set.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import ColumnElement, or_, select, update

from actions.base import ActionContext
from actions.ledger import ActionInProgress, Executor, crash_if_armed
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

# A claim outlives the longest wait a claimed row can have before its call: the per-channel pacer with
# at most `lane_concurrency` (64) rows queued on one channel is about a minute, chat.update's 50/min
# about 80 s. A crashed replica's rows wait this long before another replica takes them.
CLAIM_FOR = timedelta(minutes=3)
DELIVERY_EVENT = "mailwarden_delivery"  # the metadata event_type that marks our posts
RECONCILE_PAGES = 5  # 1,000 newest messages: how far back a retry looks for its own earlier post


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt at an outbox row: its key (in the metadata of whatever it posts) and whether an
    earlier attempt began without a known outcome, so that Slack may already show its post."""

    row_id: int
    key: str
    may_have_landed: bool


Handler = Callable[[dict[str, Any], Delivery], Awaitable[None]]


def delivery_key(row_id: int, created_at: datetime) -> str:
    # the row id alone could repeat after a database is rebuilt; with its creation time it cannot
    return f"{row_id}.{int(created_at.timestamp() * 1_000_000)}"


def _slack_refused(exc: BaseException) -> bool:
    """Slack answered and did nothing: ok=false with a 2xx/4xx status (a 5xx or no answer is unknown)."""
    return isinstance(exc, SlackApiError) and exc.response.status_code < 500


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
        # who holds a claim: a new process is a new claimant, so a restart never takes over its
        # predecessor's rows before their claims lapse (the call may still be in flight)
        self.instance = f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.crash_points = executor.crash_points  # one set of armed crash points for the process
        self.handlers: dict[str, Handler] = {
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
    async def post(self, channel: str, delivery: Delivery | None = None, **kw: Any) -> Any:
        """Post once per outbox row: a retry whose earlier attempt may have landed looks for it first."""
        if delivery is not None:
            if delivery.may_have_landed:
                found = await self._find_delivered(channel, delivery, kw.get("thread_ts"))
                if found is not None:
                    log.info("slack.post_reconciled", row=delivery.row_id, channel=found["channel"], ts=found["ts"])
                    return found
            kw["metadata"] = {"event_type": DELIVERY_EVENT, "event_payload": {"delivery": delivery.key}}
        await self.pacer.wait(f"post:{channel}", **POST_PER_CHANNEL)
        posted = await self.slack.chat_postMessage(channel=channel, **kw)
        crash_if_armed(self.crash_points, "after_slack_post")
        return posted

    async def _find_delivered(self, channel: str, delivery: Delivery, thread_ts: str | None) -> dict[str, str] | None:
        """The message an earlier attempt of this row posted, if Slack shows one."""
        try:
            if channel[:1] in ("U", "W"):  # a user ID posts into the app's DM: history needs the DM's ID
                channel = str((await self.slack.conversations_open(users=channel))["channel"]["id"])
            cursor: str | None = None
            for _ in range(RECONCILE_PAGES):
                args: dict[str, Any] = {"channel": channel, "include_all_metadata": True, "limit": 200}
                if cursor:
                    args["cursor"] = cursor
                page = await (
                    self.slack.conversations_replies(ts=thread_ts, **args)
                    if thread_ts
                    else self.slack.conversations_history(**args)
                )
                for message in page.get("messages") or []:
                    meta = message.get("metadata") or {}
                    if (
                        meta.get("event_type") == DELIVERY_EVENT
                        and (meta.get("event_payload") or {}).get("delivery") == delivery.key
                    ):
                        return {"channel": channel, "ts": str(message["ts"])}
                cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
                if cursor is None:
                    return None
        except SlackApiError as exc:
            if _is_transient(exc):
                raise  # look again on the next attempt rather than guess
            # no history scope or not in the channel: a second card is better than none
            log.warning("slack.reconcile_unavailable", row=delivery.row_id, error=str(exc.response.get("error")))
            return None
        log.warning("slack.reconcile_gave_up", row=delivery.row_id, pages=RECONCILE_PAGES)
        return None

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
                        delivery = await self._claim(row)
                        if delivery is None:
                            return done  # another replica is delivering it: the rest of the lane waits
                        try:
                            await self.handlers[row.kind](orjson.loads(row.payload), delivery)
                        except asyncio.CancelledError:
                            # shutting down mid-delivery: give the row back now rather than when the
                            # claim lapses; started_at stays, so whoever takes it looks before posting
                            await asyncio.shield(self._release(row.id))
                            raise
                        except Exception as exc:
                            await self._failed(row, exc, delivery)
                            return done
                        await self._mark(row.id, status="done")
                        done += 1
                    return done

            return sum(await asyncio.gather(*(run_lane(r) for r in lanes.values())))

    async def _claim(self, row: Any) -> Delivery | None:
        """Take the row for this replica, unless it changed since it was read or another replica holds
        it. The claim also stamps the attempt's start, which tells a later retry to look before posting."""
        now = self.clock.now()
        unchanged: list[ColumnElement[bool]] = [
            outbox.c.id == row.id,
            outbox.c.status == "pending",
            outbox.c.attempts == row.attempts,
            or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= now),
            outbox.c.started_at.is_(None) if row.started_at is None else outbox.c.started_at == row.started_at,
        ]
        async with self.engine.begin() as conn:
            taken = await conn.execute(
                update(outbox)
                .where(*unchanged)
                .values(claimed_by=self.instance, claimed_until=now + CLAIM_FOR, started_at=now)
            )
        if taken.rowcount != 1:
            log.info("outbox.claimed_elsewhere", row=row.id, kind=row.kind)
            return None
        return Delivery(row.id, delivery_key(row.id, row.created_at), may_have_landed=row.started_at is not None)

    async def _release(self, row_id: int) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id == row_id, outbox.c.claimed_by == self.instance)
                    .values(claimed_by=None, claimed_until=None)
                )
        except Exception as exc:  # the database may be going away too: the claim then lapses by itself
            log.warning("outbox.release_failed", row=row_id, error=type(exc).__name__)

    async def _mark(self, row_id: int, **values: Any) -> None:
        async with self.engine.begin() as conn:
            if values.get("status") == "done":
                values["done_at"] = self.clock.now()
            await conn.execute(
                update(outbox).where(outbox.c.id == row_id).values(claimed_by=None, claimed_until=None, **values)
            )

    async def _failed(self, row: Any, exc: BaseException, delivery: Delivery) -> None:
        attempts = row.attempts + 1
        error = f"{type(exc).__name__}: {exc}"[:1000]
        transient = _is_transient(exc) and not isinstance(exc, Permanent)
        now = self.clock.now()
        if transient and attempts < self.max_attempts:
            log.warning("outbox.retry", row=row.id, kind=row.kind, attempts=attempts, error=error)
            # a first attempt that Slack refused (a 429, say) posted nothing: its retry need not look
            known = {"started_at": None} if not delivery.may_have_landed and _slack_refused(exc) else {}
            await self._mark(
                row.id, attempts=attempts, last_error=error, next_attempt_at=now + backoff(attempts), **known
            )
            return
        log.error("outbox.dead", row=row.id, kind=row.kind, attempts=attempts, error=error)
        async with self.engine.begin() as conn:
            await conn.execute(
                update(outbox)
                .where(outbox.c.id == row.id)
                .values(
                    status="dead", attempts=attempts, last_error=error, done_at=now, claimed_by=None, claimed_until=None
                )
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
    async def _post_user_card(self, payload: dict[str, Any], delivery: Delivery) -> None:
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
        posted = await self.post(channel, delivery, text=card.text, blocks=card.blocks)
        await self._record(
            case.id,
            "slack.user_card_posted",
            slack_user_id=user_id,
            slack_tz=tz,
            user_card=MessageRef(channel=str(posted["channel"]), ts=str(posted["ts"])),
        )

    async def _update_user_card(self, payload: dict[str, Any], delivery: Delivery) -> None:
        case = await self._case(payload)
        if case.user_card is None:
            return  # never posted (user unreachable): nothing to update
        card = cards.user_card(case)
        await self.update(case.user_card.channel, case.user_card.ts, text=card.text, blocks=card.blocks)

    async def _post_user_reminder(self, payload: dict[str, Any], delivery: Delivery) -> None:
        case = await self._case(payload)
        if case.user_card is None or case.state is not CaseState.AWAITING_USER:
            return
        text = cards.user_reminder_text(case)
        await self.post(case.user_card.channel, delivery, text=text, thread_ts=case.user_card.ts, reply_broadcast=True)

    async def _post_user_outcome(self, payload: dict[str, Any], delivery: Delivery) -> None:
        case = await self._case(payload)
        if case.user_card is None:
            return
        card = cards.user_outcome(
            case,
            self.executor_summaries(await self.executor.outcomes(case.id)),
            recovery_url=self.recovery_url,
            helpdesk=self.helpdesk,
        )
        await self.post(case.user_card.channel, delivery, text=card.text, blocks=card.blocks)

    @staticmethod
    def executor_summaries(outcomes: dict[str, str]) -> list[str]:
        return [f"{name}: {summary}" for name, summary in outcomes.items()]

    async def _post_soc_card(self, payload: dict[str, Any], delivery: Delivery) -> None:
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
            self.soc_channels.get(case.tenant, self.soc_channel), delivery, text=card.text, blocks=card.blocks
        )
        await self._record(
            case.id, "slack.soc_card_posted", soc_card=MessageRef(channel=str(posted["channel"]), ts=str(posted["ts"]))
        )

    async def _update_soc_card(self, payload: dict[str, Any], delivery: Delivery) -> None:
        case = await self._case(payload)
        if case.soc_card is None:
            return
        card = cards.soc_card(case)
        await self.update(case.soc_card.channel, case.soc_card.ts, text=card.text, blocks=card.blocks)

    async def _post_soc_thread(self, payload: dict[str, Any], delivery: Delivery) -> None:
        case = await self._case(payload)
        if case.soc_card is None:
            return
        prefix = ""
        if payload.get("mention_oncall") and self.oncall_usergroup:
            prefix += f"<!subteam^{self.oncall_usergroup}> "
        if payload.get("mention_soc") and self.soc_usergroup:
            prefix += f"<!subteam^{self.soc_usergroup}> "
        await self.post(
            case.soc_card.channel, delivery, thread_ts=case.soc_card.ts, text=(prefix + str(payload["text"]))[:3000]
        )

    async def _post_ephemeral(self, payload: dict[str, Any], delivery: Delivery) -> None:
        await self.pacer.wait("ephemeral", **EPHEMERAL_PER_WORKSPACE)
        await self.slack.chat_postEphemeral(
            channel=payload["channel"], user=payload["user"], text=str(payload["text"])[:3000]
        )

    async def _post_message(self, payload: dict[str, Any], delivery: Delivery) -> None:
        """A card built at enqueue time (travel requests, campaign notes): posted as given."""
        await self.post(
            payload["channel"],
            delivery,
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

    async def _page_trigger(self, payload: dict[str, Any], delivery: Delivery) -> None:
        await self._page("trigger", payload)

    async def _page_acknowledge(self, payload: dict[str, Any], delivery: Delivery) -> None:
        await self._page("acknowledge", payload)

    async def _page_resolve(self, payload: dict[str, Any], delivery: Delivery) -> None:
        await self._page("resolve", payload)

    # --- containment ------------------------------------------------------------------------------------
    async def _run_action(self, payload: dict[str, Any], delivery: Delivery) -> None:
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
