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

from actions.ledger import Executor
from bot.audit import log as audit
from bot.cases.service import CaseService
from bot.clock import Clock
from bot.errors import ConcurrentUpdate, IllegalTransition
from bot.model import Case, CaseEvent, CaseState, MessageRef
from bot.slack import cards
from bot.store.tables import outbox

log = structlog.get_logger("mailwarden.dispatch")


class Permanent(Exception):
    """Retrying will not help (bad request, unknown channel): the row is dead."""


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, SlackApiError):
        return bool(exc.response.status_code == 429 or exc.response.status_code >= 500)
    return isinstance(exc, (httpx.HTTPError, OSError, asyncio.TimeoutError, ConcurrentUpdate))


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
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.cases = cases
        self.slack = slack
        self.executor = executor
        self.soc_channel = soc_channel
        self.max_attempts = max_attempts
        self._lock = asyncio.Lock()
        self.handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "user_card.post": self._post_user_card,
            "user_card.update": self._update_user_card,
            "soc_card.post": self._post_soc_card,
            "soc_card.update": self._update_soc_card,
            "soc_thread.post": self._post_soc_thread,
            "ephemeral": self._post_ephemeral,
            "action.run": self._run_action,
        }

    async def drain(self, max_rounds: int = 50) -> int:
        """Deliver until nothing is due (rows waiting on a future retry stay queued)."""
        total = 0
        for _ in range(max_rounds):
            n = await self.run_once()
            total += n
            if n == 0:
                break
        return total

    async def run_once(self, limit: int = 200) -> int:
        async with self._lock:
            now = self.clock.now()
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(outbox).where(outbox.c.status == "pending").order_by(outbox.c.id).limit(limit)
                    )
                ).all()
            blocked: set[str] = set()
            delivered = 0
            for row in rows:
                if row.lane in blocked:
                    continue
                if row.next_attempt_at > now:
                    blocked.add(row.lane)  # keep the lane's order: nothing overtakes a row waiting to retry
                    continue
                try:
                    await self.handlers[row.kind](orjson.loads(row.payload))
                except Exception as exc:
                    blocked.add(row.lane)
                    await self._failed(row, exc)
                    continue
                await self._mark(row.id, status="done")
                delivered += 1
            return delivered

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
        user_id = case.slack_user_id
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
            user_id = str(found["user"]["id"])
        dm = await self.slack.conversations_open(users=user_id)
        channel = str(dm["channel"]["id"])
        card = cards.user_card(case)
        posted = await self.slack.chat_postMessage(channel=channel, text=card.text, blocks=card.blocks)
        await self._record(
            case.id,
            "slack.user_card_posted",
            slack_user_id=user_id,
            user_card=MessageRef(channel=str(posted["channel"]), ts=str(posted["ts"])),
        )

    async def _update_user_card(self, payload: dict[str, Any]) -> None:
        case = await self._case(payload)
        if case.user_card is None:
            return  # never posted (user unreachable): nothing to update
        card = cards.user_card(case)
        await self.slack.chat_update(
            channel=case.user_card.channel, ts=case.user_card.ts, text=card.text, blocks=card.blocks
        )

    async def _post_soc_card(self, payload: dict[str, Any]) -> None:
        case = await self._case(payload)
        if case.soc_card is not None:
            return
        card = cards.soc_card(case)
        posted = await self.slack.chat_postMessage(channel=self.soc_channel, text=card.text, blocks=card.blocks)
        await self._record(
            case.id, "slack.soc_card_posted", soc_card=MessageRef(channel=str(posted["channel"]), ts=str(posted["ts"]))
        )

    async def _update_soc_card(self, payload: dict[str, Any]) -> None:
        case = await self._case(payload)
        if case.soc_card is None:
            return
        card = cards.soc_card(case)
        await self.slack.chat_update(
            channel=case.soc_card.channel, ts=case.soc_card.ts, text=card.text, blocks=card.blocks
        )

    async def _post_soc_thread(self, payload: dict[str, Any]) -> None:
        case = await self._case(payload)
        if case.soc_card is None:
            return
        await self.slack.chat_postMessage(
            channel=case.soc_card.channel, thread_ts=case.soc_card.ts, text=str(payload["text"])[:3000]
        )

    async def _post_ephemeral(self, payload: dict[str, Any]) -> None:
        await self.slack.chat_postEphemeral(
            channel=payload["channel"], user=payload["user"], text=str(payload["text"])[:3000]
        )

    # --- containment ------------------------------------------------------------------------------------
    async def _run_action(self, payload: dict[str, Any]) -> None:
        case = await self._case(payload)
        result = await self.executor.execute(case.id, payload["action"], payload["target"])
        if not result.outcome.ok:
            await self._safe_transition(
                case.id, CaseEvent.CONTAINMENT_FAILED, note=f"{payload['action']}: {result.outcome.summary}"
            )
            return
        plan = payload.get("plan") or [payload["action"]]
        statuses = await self.executor.statuses(case.id)
        if case.state is CaseState.CONTAINING and all(statuses.get(a) == "succeeded" for a in plan):
            await self._safe_transition(
                case.id, CaseEvent.CONTAINMENT_DONE, note=f"{payload['action']}: {result.outcome.summary}"
            )
