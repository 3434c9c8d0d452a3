"""Bolt listeners for the card buttons: ack at once, then authorise on the server and act.

Authorisation is never taken from the card: only the case's subject may answer the DM card, and
only members of the SOC user group may act on SOC cards. A refused click changes nothing, is
audited, and gets an ephemeral explanation.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.audit import log as audit
from bot.cases.service import CaseService
from bot.clock import Clock
from bot.errors import IllegalTransition
from bot.model import CaseEvent
from bot.slack.ids import Ids
from bot.store import repo

log = structlog.get_logger("mailwarden.slack")


class SocDirectory:
    """Who is in the SOC user group, asked of Slack and cached briefly (usergroups.users.list is Tier 2)."""

    def __init__(self, client: AsyncWebClient, usergroup: str, ttl_s: float = 60.0) -> None:
        self.client = client
        self.usergroup = usergroup
        self.ttl_s = ttl_s
        self._members: frozenset[str] = frozenset()
        self._fetched = float("-inf")

    async def is_member(self, user_id: str) -> bool:
        if time.monotonic() - self._fetched > self.ttl_s:
            resp = await self.client.usergroups_users_list(usergroup=self.usergroup)
            users: list[str] = resp.get("users", [])
            self._members = frozenset(str(u) for u in users)
            self._fetched = time.monotonic()
        return user_id in self._members


class Interactions:
    def __init__(
        self, cases: CaseService, soc: SocDirectory, clock: Clock, kick: Callable[[], Awaitable[None]]
    ) -> None:
        self.cases = cases
        self.soc = soc
        self.clock = clock
        self.kick = kick

    async def refuse(
        self, *, clicker: str, channel: str | None, case_id: str | None, action_id: str, reason: str
    ) -> None:
        now = self.clock.now()
        async with self.cases.engine.begin() as conn:
            await audit.append(
                conn,
                at=now,
                actor=clicker,
                action="authz.refused",
                case_id=case_id,
                detail={"action_id": action_id, "reason": reason},
            )
            if channel:
                await repo.enqueue(
                    conn,
                    kind="ephemeral",
                    lane=f"ephemeral:{channel}",
                    now=now,
                    case_id=case_id,
                    payload={"channel": channel, "user": clicker, "text": f":no_entry: {reason}"},
                )
        log.warning("slack.click_refused", clicker=clicker, case_id=case_id, action_id=action_id, reason=reason)
        await self.kick()

    async def tell(self, *, clicker: str, channel: str | None, case_id: str | None, text: str) -> None:
        if not channel:
            return
        async with self.cases.engine.begin() as conn:
            await repo.enqueue(
                conn,
                kind="ephemeral",
                lane=f"ephemeral:{channel}",
                now=self.clock.now(),
                case_id=case_id,
                payload={"channel": channel, "user": clicker, "text": text},
            )
        await self.kick()

    async def on_click(self, body: dict[str, Any]) -> None:
        action = body["actions"][0]
        action_id, case_id = str(action.get("action_id")), str(action.get("value") or "")
        clicker = str(body["user"]["id"])
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        case = await self.cases.get(case_id)
        if case is None:
            await self.refuse(
                clicker=clicker,
                channel=channel,
                case_id=None,
                action_id=action_id,
                reason="This card refers to a case Mailwarden does not know.",
            )
            return
        try:
            if action_id in (Ids.USER_YES, Ids.USER_NO):
                if case.slack_user_id is None or clicker != case.slack_user_id:
                    await self.refuse(
                        clicker=clicker,
                        channel=channel,
                        case_id=case.id,
                        action_id=action_id,
                        reason="Only the person this sign-in belongs to can answer this card.",
                    )
                    return
                event = self.cases.answer_event(case, said_yes=action_id == Ids.USER_YES)
                await self.cases.transition(case.id, event, actor=clicker)
            elif action_id in (Ids.SOC_REVOKE, Ids.SOC_DISMISS):
                if not await self.soc.is_member(clicker):
                    await self.refuse(
                        clicker=clicker,
                        channel=channel,
                        case_id=case.id,
                        action_id=action_id,
                        reason="Only members of the SOC user group can act on this case.",
                    )
                    return
                if action_id == Ids.SOC_REVOKE:
                    await self.cases.transition(
                        case.id, CaseEvent.SOC_CONTAIN, actor=clicker, actions=("revoke_sessions",)
                    )
                else:
                    await self.cases.transition(case.id, CaseEvent.SOC_DISMISS, actor=clicker)
        except IllegalTransition:
            fresh = await self.cases.get(case.id)
            state = fresh.state.value if fresh else "unknown"
            await self.tell(
                clicker=clicker,
                channel=channel,
                case_id=case.id,
                text=f"Case {case.id} has already moved on (now `{state}`); nothing was changed.",
            )
            return
        await self.kick()


def register(app: AsyncApp, interactions: Interactions) -> None:
    async def handle(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()  # within Slack's 3 s, before any I/O of ours
        await interactions.on_click(body)

    for action_id in Ids:
        app.action(action_id.value)(handle)
