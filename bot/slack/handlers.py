"""Bolt listeners: buttons, modals, the /mailwarden command and App Home. Ack at once, then work.

Authorisation is never taken from the card: only the case's subject may answer the DM card, and
only members of the SOC user group may act on SOC cards or use the SOC subcommands. A refused
attempt changes nothing, is audited, and gets an ephemeral explanation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any

import structlog
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.allowlist import AllowEntry
from bot.audit import log as audit
from bot.cases.machine import SameApprover
from bot.cases.service import CaseService
from bot.clock import Clock
from bot.errors import IllegalTransition
from bot.model import TERMINAL, Case, CaseEvent
from bot.slack import cards
from bot.slack.ids import COMMAND, SOC_BUTTONS, TRAVEL_BUTTONS, USER_BUTTONS, Ids
from bot.slack.text import safe
from bot.store import repo

log = structlog.get_logger("mailwarden.slack")

MAX_HOME_LINKS = 30  # chat.getPermalink calls per Home view (Tier 4)
ANSWER_OF = {Ids.USER_YES: "yes", Ids.USER_NO: "no", Ids.USER_NOT_ME: "not_me"}
USAGE = (
    "Usage: `/mailwarden travel <country code> until <YYYY-MM-DD>` · SOC only: `/mailwarden status` · "
    "`/mailwarden case <id>` · `/mailwarden allow <user@domain> <country|asn|app> <value> <days> <reason…>` · "
    "`/mailwarden contain <user@domain>`"
)


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
        self,
        cases: CaseService,
        soc: SocDirectory,
        clock: Clock,
        kick: Callable[[], Awaitable[None]],
        *,
        client: AsyncWebClient,
        soc_channel: str,
        available_actions: tuple[str, ...],
    ) -> None:
        self.cases = cases
        self.soc = soc
        self.clock = clock
        self.kick = kick
        self.client = client
        self.soc_channel = soc_channel
        self.available_actions = available_actions

    # --- small helpers ----------------------------------------------------------------------------------
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
        log.warning("slack.refused", clicker=clicker, case_id=case_id, action_id=action_id, reason=reason)
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

    async def _moved_on(self, clicker: str, channel: str | None, case_id: str) -> None:
        fresh = await self.cases.get(case_id)
        state = fresh.state.value if fresh else "unknown"
        await self.tell(
            clicker=clicker,
            channel=channel,
            case_id=case_id,
            text=f"Case {case_id} has already moved on (now `{state}`); nothing was changed.",
        )

    # --- buttons ----------------------------------------------------------------------------------------------
    async def on_click(self, body: dict[str, Any]) -> None:
        action = body["actions"][0]
        action_id, value = str(action.get("action_id")), str(action.get("value") or "")
        clicker = str(body["user"]["id"])
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        if action_id in TRAVEL_BUTTONS:
            await self.on_travel_decision(clicker, channel, action_id, value)
            return
        case = await self.cases.get(value)
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
            if action_id in USER_BUTTONS:
                if case.slack_user_id is None or clicker != case.slack_user_id:
                    await self.refuse(
                        clicker=clicker,
                        channel=channel,
                        case_id=case.id,
                        action_id=action_id,
                        reason="Only the person this sign-in belongs to can answer this card.",
                    )
                    return
                await self.cases.user_answer(case.id, clicker, ANSWER_OF[Ids(action_id)])
            elif action_id in SOC_BUTTONS:
                if not await self.soc.is_member(clicker):
                    await self.refuse(
                        clicker=clicker,
                        channel=channel,
                        case_id=case.id,
                        action_id=action_id,
                        reason="Only members of the SOC user group can act on this case.",
                    )
                    return
                await self.on_soc_button(case, clicker, channel, action_id, body.get("trigger_id"))
        except IllegalTransition:
            await self._moved_on(clicker, channel, case.id)
            return
        except SameApprover:
            await self.tell(
                clicker=clicker,
                channel=channel,
                case_id=case.id,
                text="You already approved this containment: a *different* SOC member must approve it.",
            )
            return
        await self.kick()

    async def on_soc_button(
        self, case: Case, clicker: str, channel: str | None, action_id: str, trigger_id: str | None
    ) -> None:
        if action_id == Ids.SOC_REVOKE:
            await self.cases.approve(case.id, clicker, ("revoke_sessions",), "one-click revoke from the SOC card")
        elif action_id == Ids.SOC_SECOND_APPROVAL:
            await self.cases.approve(case.id, clicker, (), "second approval")
        elif action_id == Ids.SOC_ESCALATE:
            await self.cases.transition(case.id, CaseEvent.SOC_ESCALATE, actor=clicker)
        elif action_id == Ids.SOC_TAKE:
            await self.cases.transition(case.id, CaseEvent.SOC_TAKE, actor=clicker)
        elif action_id in (Ids.SOC_CONTAIN, Ids.SOC_BENIGN):
            if case.state in TERMINAL:
                raise IllegalTransition(case.state, CaseEvent.SOC_CONTAIN)
            view = (
                cards.contain_modal(case, self.available_actions, self.cases.destructive_actions)
                if action_id == Ids.SOC_CONTAIN
                else cards.benign_modal(case)
            )
            # trigger_id lives ~3 s: open the modal right here, not through the outbox
            await self.client.views_open(trigger_id=trigger_id, view=view)

    # --- modals ---------------------------------------------------------------------------------------------------
    async def on_submit(self, body: dict[str, Any]) -> None:
        view = body["view"]
        clicker = str(body["user"]["id"])
        case_id = str(view.get("private_metadata") or "")
        values = view.get("state", {}).get("values", {})

        def field(block: Ids) -> dict[str, Any]:
            return dict(values.get(block.value, {}).get(block.value, {}))

        reason = str(field(Ids.IN_REASON).get("value") or "").strip()
        if not await self.soc.is_member(clicker):
            await self.refuse(
                clicker=clicker,
                channel=None,
                case_id=case_id,
                action_id=view.get("callback_id", ""),
                reason="Only members of the SOC user group can act on this case.",
            )
            return
        try:
            if view.get("callback_id") == Ids.MODAL_CONTAIN:
                chosen = tuple(str(o["value"]) for o in field(Ids.IN_ACTIONS).get("selected_options") or [])
                chosen = tuple(a for a in chosen if a in self.available_actions)
                await self.cases.approve(case_id, clicker, chosen, reason)
            else:
                scope = (field(Ids.IN_ALLOW_SCOPE).get("selected_option") or {}).get("value")
                days = (field(Ids.IN_ALLOW_DAYS).get("selected_option") or {}).get("value")
                await self.cases.dismiss(
                    case_id,
                    clicker,
                    reason,
                    None if scope in (None, "none") else str(scope),
                    int(days) if days else None,
                )
        except IllegalTransition:
            await self._dm(clicker, f"Case {case_id} had already moved on; nothing was changed.")
        except SameApprover:
            await self._dm(clicker, "You already approved this containment: a *different* SOC member must approve.")
        await self.kick()

    async def _dm(self, user: str, text: str) -> None:
        async with self.cases.engine.begin() as conn:
            await repo.enqueue(
                conn,
                kind="message.post",
                lane=f"user:{user}",
                now=self.clock.now(),
                payload={"channel": user, "text": text},
            )

    # --- travel ------------------------------------------------------------------------------------------------------
    async def request_travel(self, user_id: str, country: str, until: date) -> int:
        info = await self.client.users_info(user=user_id)
        email = str(info["user"].get("profile", {}).get("email", "")).lower()
        if not email:
            raise ValueError("your Slack profile has no e-mail address, so the trip cannot be tied to your account")
        now = self.clock.now()
        expires = datetime.combine(until + timedelta(days=1), dtime(0), tzinfo=UTC)
        entry = AllowEntry(
            user_principal=email,
            scope="country",
            value=country,
            expires_at=expires,
            reason=f"trip declared by the employee until {until.isoformat()}",
            created_by=user_id,
            source="travel",
        )
        async with self.cases.engine.begin() as conn:
            entry_id = await repo.add_allow(conn, self.cases.tenant_default, entry, now, status="pending")
            card = cards.travel_card(str(entry_id), user_id, country, until.isoformat())
            await repo.enqueue(
                conn,
                kind="message.post",
                lane="soc",
                now=now,
                payload={"channel": self.soc_channel, "text": card.text, "blocks": card.blocks},
            )
            await audit.append(
                conn,
                at=now,
                actor=user_id,
                action="travel.requested",
                detail={"id": entry_id, "country": country, "until": until.isoformat()},
            )
        await self.kick()
        return entry_id

    async def on_travel_decision(self, clicker: str, channel: str | None, action_id: str, value: str) -> None:
        if not await self.soc.is_member(clicker):
            await self.refuse(
                clicker=clicker,
                channel=channel,
                case_id=None,
                action_id=action_id,
                reason="Only members of the SOC user group can approve trips.",
            )
            return
        status = "active" if action_id == Ids.TRAVEL_APPROVE else "refused"
        now = self.clock.now()
        async with self.cases.engine.begin() as conn:
            found = await repo.get_allow(conn, int(value))
            changed = await repo.decide_allow(conn, int(value), status, clicker) if found else False
            if changed and found:
                _, _, entry = found
                await audit.append(
                    conn,
                    at=now,
                    actor=clicker,
                    action=f"travel.{status}",
                    detail={"id": int(value), "user": entry.user_principal, "country": entry.value},
                )
                verdict = "approved ✈️" if status == "active" else "not approved"
                await repo.enqueue(
                    conn,
                    kind="message.post",
                    lane=f"user:{entry.created_by}",
                    now=now,
                    payload={
                        "channel": entry.created_by,
                        "text": f"Your trip to {safe(entry.value, 60)} was {verdict} by <@{clicker}>.",
                    },
                )
        if not changed:
            await self.tell(clicker=clicker, channel=channel, case_id=None, text="That trip was already decided.")
        await self.kick()

    # --- /mailwarden --------------------------------------------------------------------------------------------------
    async def on_command(self, body: dict[str, Any]) -> str:
        user = str(body.get("user_id"))
        words = str(body.get("text") or "").split()
        if not words or words[0] == "help":
            return USAGE
        verb = words[0].lower()
        if verb == "travel":
            m = re.fullmatch(r"travel\s+([A-Za-z]{2})\s+until\s+(\d{4}-\d{2}-\d{2})", " ".join(words), re.I)
            if not m:
                return "Usage: `/mailwarden travel <two-letter country code> until <YYYY-MM-DD>`"
            until = date.fromisoformat(m.group(2))
            today = self.clock.now().date()
            if until < today or until > today + timedelta(days=90):
                return "The end date must be between today and 90 days from now."
            try:
                entry_id = await self.request_travel(user, m.group(1).upper(), until)
            except ValueError as exc:
                return f"Sorry: {exc}."
            return f"Thanks! Trip request #{entry_id} to {m.group(1).upper()} until {until} is with the security team."
        if verb not in ("status", "case", "allow", "contain"):
            return USAGE
        if not await self.soc.is_member(user):
            await self.refuse(
                clicker=user, channel=None, case_id=None, action_id=f"command.{verb}", reason="SOC-only subcommand"
            )
            return f":no_entry: `/mailwarden {verb}` is for members of the SOC user group."
        return await self.soc_command(user, verb, words[1:])

    async def soc_command(self, user: str, verb: str, args: list[str]) -> str:
        async with self.cases.engine.connect() as conn:
            all_cases = await repo.list_cases(conn)
        if verb == "status":
            open_cases = [c for c in all_cases if c.state not in TERMINAL]
            by_state: dict[str, int] = {}
            for c in open_cases:
                by_state[c.state.value] = by_state.get(c.state.value, 0) + 1
            parts = ", ".join(f"{k}: {v}" for k, v in sorted(by_state.items())) or "none"
            return f"Open cases: {len(open_cases)} ({parts})."
        if verb == "case":
            found = next((c for c in all_cases if args and c.id.upper() == args[0].upper()), None)
            if found is None:
                return "No such case."
            return (
                f"*{found.id}* · {safe(found.user_principal, 200)} · {found.severity.label} · "
                f"`{found.state.value}` · {', '.join(found.detectors)}\n"
                + "\n".join(f"• {safe(f.reason, 300)}" for f in found.findings[:5])
            )
        if verb == "contain":
            target = (args[0] if args else "").lower()
            found = next(
                (c for c in reversed(all_cases) if c.user_principal == target and c.state not in TERMINAL), None
            )
            if found is None:
                return "No open case for that user; containment starts from a case."
            try:
                await self.cases.approve(
                    found.id, user, found.plan or ("revoke_sessions",), "requested with /mailwarden contain"
                )
            except IllegalTransition:
                return f"Case {found.id} cannot be contained from `{found.state.value}`."
            except SameApprover:
                return "You already approved this containment: a different SOC member must approve it."
            await self.kick()
            return f"Containment of {found.id} approved."
        # allow <user> <scope> <value> <days> <reason...>
        if len(args) < 5 or args[1] not in ("country", "asn", "app") or not args[3].isdigit():
            return "Usage: `/mailwarden allow <user@domain> <country|asn|app> <value> <days 1-90> <reason…>`"
        days = min(90, max(1, int(args[3])))
        entry = AllowEntry(
            user_principal=args[0].lower(),
            scope=args[1],
            value=args[2],
            expires_at=self.clock.now() + timedelta(days=days),
            reason=" ".join(args[4:]),
            created_by=user,
            source="soc_allow",
        )
        async with self.cases.engine.begin() as conn:
            entry_id = await repo.add_allow(conn, self.cases.tenant_default, entry, self.clock.now())
            await audit.append(
                conn,
                at=self.clock.now(),
                actor=user,
                action="allow.added",
                detail={
                    "id": entry_id,
                    "user": entry.user_principal,
                    "scope": entry.scope,
                    "value": entry.value,
                    "days": days,
                    "reason": entry.reason,
                },
            )
        return (
            f"Allow entry #{entry_id}: {safe(entry.user_principal, 200)} · {entry.scope} {safe(entry.value, 60)} "
            f"for {days} days."
        )

    # --- App Home ---------------------------------------------------------------------------------------------------
    async def on_home_opened(self, user_id: str) -> None:
        is_soc = await self.soc.is_member(user_id)
        async with self.cases.engine.connect() as conn:
            all_cases = await repo.list_cases(conn)
        open_cases = [c for c in all_cases if c.state not in TERMINAL] if is_soc else []
        mine = [c for c in reversed(all_cases) if c.slack_user_id == user_id]
        links: dict[str, str] = {}
        for c in open_cases[:MAX_HOME_LINKS]:  # quick links to each case's SOC card
            if c.soc_card is not None:
                found = await self.client.chat_getPermalink(channel=c.soc_card.channel, message_ts=c.soc_card.ts)
                links[c.id] = str(found.get("permalink", ""))
        view = cards.home_view(is_soc=is_soc, open_cases=open_cases, mine=mine, links=links)
        await self.client.views_publish(user_id=user_id, view=view)


def register(app: AsyncApp, interactions: Interactions) -> None:
    async def click(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()  # within Slack's 3 s, before any I/O of ours
        await interactions.on_click(body)

    for action_id in (*USER_BUTTONS, *SOC_BUTTONS, *TRAVEL_BUTTONS):
        app.action(action_id.value)(click)

    async def submit(ack: AsyncAck, body: dict[str, Any]) -> None:
        values = body["view"].get("state", {}).get("values", {})
        reason = str(values.get(Ids.IN_REASON.value, {}).get(Ids.IN_REASON.value, {}).get("value") or "").strip()
        if len(reason) < 3:
            await ack(response_action="errors", errors={Ids.IN_REASON.value: "Please give a reason."})
            return
        if body["view"].get("callback_id") == Ids.MODAL_CONTAIN:
            chosen = values.get(Ids.IN_ACTIONS.value, {}).get(Ids.IN_ACTIONS.value, {}).get("selected_options")
            if not chosen:
                await ack(response_action="errors", errors={Ids.IN_ACTIONS.value: "Pick at least one action."})
                return
        await ack()
        await interactions.on_submit(body)

    for callback in (Ids.MODAL_CONTAIN, Ids.MODAL_BENIGN):
        app.view(callback.value)(submit)

    async def command(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await respond(text=await interactions.on_command(body), response_type="ephemeral")

    app.command(COMMAND)(command)

    async def home(event: dict[str, Any]) -> None:
        if event.get("tab", "home") == "home":
            await interactions.on_home_opened(str(event["user"]))

    app.event("app_home_opened")(home)
