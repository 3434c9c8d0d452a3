"""The case service: turns findings into cases and clicks/timeouts into transitions.

Every public method runs one transaction in which the case row, its outbox rows and its audit
entries change together, so a crash leaves either all of them or none.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.allowlist import SCOPES, AllowEntry, scope_value, unsuppressed
from bot.audit import log as audit
from bot.cases import machine
from bot.cases.machine import Effect, Timeouts
from bot.cases.plan import action_context, propose
from bot.clock import Clock
from bot.detect import Params, run_all
from bot.detect.profile import observe
from bot.detect.scoring import case_severity, decide, yes_closes
from bot.errors import ConcurrentUpdate
from bot.model import Case, CaseEvent, CaseState, Decision, Event, Finding, Profile, Severity
from bot.slack.cards import headline_event
from bot.store import repo

log = structlog.get_logger("mailwarden.cases")

MAX_EVENTS_PER_CASE = 50
USER_CONFIRMED_ALLOW = timedelta(days=30)

_OPENING: dict[Decision, CaseEvent] = {
    Decision.RECORD: CaseEvent.RECORD_ONLY,
    Decision.ASK_USER: CaseEvent.ASK_USER,
    Decision.SOC: CaseEvent.SEND_TO_SOC,
    Decision.PAGE: CaseEvent.SEND_TO_SOC,
    Decision.AUTO_CONTAIN: CaseEvent.SEND_TO_SOC,
}


def outbox_row(case: Case, effect: Effect) -> tuple[str, str, dict[str, Any]]:
    """(kind, lane, payload) for one effect. Lanes keep each Slack conversation in order."""
    user_lane, soc_lane = f"user:{case.user_principal}", "soc"
    match effect:
        case machine.PostUserCard():
            return "user_card.post", user_lane, {}
        case machine.RefreshUserCard():
            return "user_card.update", user_lane, {}
        case machine.PostSocCard():
            return "soc_card.post", soc_lane, {}
        case machine.RefreshSocCard():
            return "soc_card.update", soc_lane, {}
        case machine.SocThreadNote(text=text, mention_soc=soc, mention_oncall=oncall):
            return "soc_thread.post", soc_lane, {"text": text, "mention_soc": soc, "mention_oncall": oncall}
        case machine.RunAction(action=action, target=target, plan=plan):
            return (
                "action.run",
                f"action:{case.id}",
                {
                    "action": action,
                    "target": target,
                    "plan": list(plan),
                    "tenant": case.tenant,
                    "context": action_context(case),
                },
            )
        case machine.RemindUser():
            return "user_reminder.post", user_lane, {}
        case machine.TellUserOutcome():
            return "user_outcome.post", user_lane, {}
        case machine.Page(reason=reason):
            return "page.trigger", f"page:{case.id}", {"reason": reason}
        case machine.AcknowledgePage():
            return "page.acknowledge", f"page:{case.id}", {}
        case machine.ResolvePage():
            return "page.resolve", f"page:{case.id}", {}
    raise TypeError(f"unknown effect {effect!r}")


@dataclass(frozen=True, slots=True)
class IngestResult:
    events: int = 0
    findings: int = 0
    cases_opened: int = 0
    cases_joined: int = 0


class CaseService:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        params: Params,
        timeouts: Timeouts,
        incident_window: timedelta,
        *,
        ladder: dict[Severity, Timeouts] | None = None,
        available_actions: tuple[str, ...] = ("revoke_sessions",),
        destructive_actions: frozenset[str] = frozenset(),
        protected_users: frozenset[str] = frozenset(),
        tenant_default: str = "default",
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.params = params
        self.timeouts = timeouts
        self.ladder = ladder or {}
        self.available_actions = available_actions
        self.destructive_actions = destructive_actions
        self.protected_users = protected_users
        self.tenant_default = tenant_default
        self.incident_window = incident_window

    # --- writing a case and its consequences -------------------------------------------------
    async def _commit(
        self,
        conn: AsyncConnection,
        case: Case,
        effects: Sequence[Effect],
        *,
        new: bool = False,
        actor: str = "system",
        action: str = "case.transition",
        detail: dict[str, Any] | None = None,
    ) -> Case:
        now = self.clock.now()
        if new:
            await repo.insert_case(conn, case)
        else:
            case = await repo.save_case(conn, case)
        for effect in effects:
            kind, lane, payload = outbox_row(case, effect)
            await repo.enqueue(
                conn, kind=kind, lane=lane, payload={"case_id": case.id, **payload}, now=now, case_id=case.id
            )
        await audit.append(
            conn,
            at=now,
            actor=actor,
            action=action,
            case_id=case.id,
            detail={"state": case.state.value, **(detail or {})},
        )
        return case

    async def transition(
        self,
        case_id: str,
        event: CaseEvent,
        *,
        actor: str = "system",
        note: str | None = None,
        actions: tuple[str, ...] = (),
        also: Callable[[AsyncConnection, Case], Awaitable[None]] | None = None,
    ) -> Case:
        """Apply one event to a case; IllegalTransition if its current state forbids it.

        `also` runs inside the same transaction with the new case (e.g. to add an allow entry), so the
        decision and its consequences commit together or not at all."""
        for attempt in range(3):
            try:
                async with self.engine.begin() as conn:
                    case = await self.load_required(conn, case_id)
                    new, effects = machine.apply(
                        case,
                        event,
                        now=self.clock.now(),
                        timeouts=self.timeouts_for(case),
                        actor=actor,
                        note=note,
                        actions=actions,
                    )
                    saved = await self._commit(
                        conn,
                        new,
                        effects,
                        actor=actor,
                        detail={
                            "event": event.value,
                            "from": case.state.value,
                            "actions": list(actions),
                            **({"note": note} if note else {}),
                        },
                    )
                    if also is not None:
                        await also(conn, saved)
                log.info(
                    "case.transition", case_id=case_id, case_event=event.value, state=saved.state.value, actor=actor
                )
                return saved
            except ConcurrentUpdate:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def update(self, case: Case, *, action: str, detail: dict[str, Any]) -> Case:
        """Record facts learned while delivering (card refs, Slack ids) without a state change."""
        async with self.engine.begin() as conn:
            return await self._commit(conn, case, (), action=action, detail=detail)

    async def load_required(self, conn: AsyncConnection, case_id: str) -> Case:
        case = await repo.load_case(conn, case_id)
        if case is None:
            raise LookupError(f"no case {case_id}")
        return case

    async def get(self, case_id: str) -> Case | None:
        async with self.engine.connect() as conn:
            return await repo.load_case(conn, case_id)

    def timeouts_for(self, case: Case) -> Timeouts:
        """The escalation ladder for this case's severity (configurable per severity)."""
        return self.ladder.get(case.severity, self.timeouts)

    def approval_event(self, case: Case, actor: str, actions: tuple[str, ...]) -> CaseEvent:
        return machine.approval_event(case, actor, actions, self.destructive_actions)

    def answer_event(self, case: Case, said_yes: bool) -> CaseEvent:
        if not said_yes:
            return CaseEvent.USER_DENIED
        return CaseEvent.USER_CONFIRMED if yes_closes(case.severity) else CaseEvent.USER_CONFIRMED_NEEDS_REVIEW

    async def fire_due_deadlines(self) -> list[str]:
        """Time out every case whose deadline has passed; return the ids that moved."""
        async with self.engine.connect() as conn:
            due = await repo.due_case_ids(conn, self.clock.now())
        moved = []
        for case_id in due:
            case = await self.get(case_id)
            if case is None or case.deadline_at is None or case.deadline_at > self.clock.now():
                continue
            event = machine.DEADLINE_EVENT.get(case.deadline_kind or "")
            if event is None or not machine.can(case.state, event):
                continue
            try:
                await self.transition(case_id, event)
                moved.append(case_id)
            except ConcurrentUpdate:
                continue  # someone answered at the same moment; their answer stands
        return moved

    # --- decisions from Slack -----------------------------------------------------------------------
    async def user_answer(self, case_id: str, actor: str, answer: str) -> Case:
        """The subject's answer. A "Yes" that closes the case allows the confirmed country for 30 days."""
        case = await self.get(case_id)
        if case is None:
            raise LookupError(case_id)
        if answer == "not_me":
            return await self.transition(case_id, CaseEvent.USER_WRONG_PERSON, actor=actor)
        event = self.answer_event(case, said_yes=answer == "yes")

        async def remember(conn: AsyncConnection, saved: Case) -> None:
            if event is not CaseEvent.USER_CONFIRMED:
                return
            head = headline_event(saved)
            if head is None or not head.country:
                return
            entry = AllowEntry(
                user_principal=saved.user_principal,
                scope="country",
                value=head.country,
                expires_at=self.clock.now() + USER_CONFIRMED_ALLOW,
                reason=f"user confirmed {saved.id}",
                created_by=actor,
                source="user_confirmed",
            )
            await repo.add_allow(conn, saved.tenant, entry, self.clock.now())

        return await self.transition(case_id, event, actor=actor, also=remember)

    async def dismiss(
        self, case_id: str, actor: str, reason: str, scope: str | None = None, days: int | None = None
    ) -> Case:
        """SOC benign verdict, with an optional scoped allow entry that expires."""

        async def allow(conn: AsyncConnection, saved: Case) -> None:
            head = headline_event(saved)
            if not scope or scope not in SCOPES or head is None:
                return
            value = scope_value(scope, head)
            if value is None:
                return
            entry = AllowEntry(
                user_principal=saved.user_principal,
                scope=scope,
                value=value,
                expires_at=self.clock.now() + timedelta(days=days or 7),
                reason=reason,
                created_by=actor,
                source="soc_benign",
            )
            await repo.add_allow(conn, saved.tenant, entry, self.clock.now())
            await audit.append(
                conn,
                at=self.clock.now(),
                actor=actor,
                action="allow.added",
                case_id=saved.id,
                detail={"scope": scope, "value": value, "days": days or 7, "reason": reason},
            )

        return await self.transition(case_id, CaseEvent.SOC_DISMISS, actor=actor, note=reason, also=allow)

    async def approve(self, case_id: str, actor: str, actions: tuple[str, ...], reason: str) -> Case:
        """A SOC approval of containment; the two-person rule decides whether it runs now."""
        case = await self.get(case_id)
        if case is None:
            raise LookupError(case_id)
        if case.state is CaseState.AWAITING_SECOND_APPROVAL and case.approvals:
            actions = case.approvals[0].actions  # the second approver approves the first one's plan
        event = self.approval_event(case, actor, actions)
        return await self.transition(case_id, event, actor=actor, note=reason, actions=actions)

    # --- turning events into cases ----------------------------------------------------------------
    async def ingest(self, conn: AsyncConnection, events: Sequence[Event]) -> IngestResult:
        """Detect and correlate newly stored events, in event-time order, inside the caller's transaction."""
        now = self.clock.now()
        profiles: dict[tuple[str, str], Profile | None] = {}
        allows: dict[tuple[str, str], list[AllowEntry]] = {}
        found = opened = joined = 0
        for event in sorted(events, key=lambda e: e.occurred_at):
            key = (event.tenant, event.user_principal)
            if key not in profiles:
                profiles[key] = await repo.load_profile(conn, *key)
            findings = run_all(event, profiles[key], self.params)
            if findings:
                if key not in allows:
                    allows[key] = await repo.active_allows(conn, event.tenant, event.user_principal, now)
                kept = unsuppressed(findings, allows[key], event)
                if len(kept) < len(findings):
                    log.info(
                        "findings.suppressed",
                        user=event.user_principal,
                        event_id=event.event_id,
                        detectors=sorted({f.detector for f in findings} - {f.detector for f in kept}),
                    )
                findings = kept
            profiles[key] = observe(profiles[key], event, self.params)
            if not findings:
                continue
            found += len(findings)
            existing = await repo.open_case_for(
                conn, event.tenant, event.user_principal, event.occurred_at - self.incident_window
            )
            if existing is None:
                await self._open(conn, event, findings)
                opened += 1
            else:
                await self._join(conn, existing, event, findings)
                joined += 1
        for (tenant, _), profile in profiles.items():
            if profile is not None:
                await repo.save_profile(conn, tenant, profile, now)
        return IngestResult(len(events), found, opened, joined)

    async def _open(self, conn: AsyncConnection, event: Event, findings: list[Finding]) -> Case:
        now = self.clock.now()
        severity = case_severity(findings)
        decision = decide(severity)
        case = Case(
            id="MW-" + secrets.token_hex(4).upper(),
            tenant=event.tenant,
            user_principal=event.user_principal,
            user_id=event.user_id,
            user_display=event.user_display,
            state=CaseState.NEW,
            severity=severity,
            decision=decision,
            opened_at=now,
            updated_at=now,
            last_event_at=event.occurred_at,
            findings=tuple(findings),
            events=(event,),
            state_since=now,
            plan=propose(findings, severity, self.available_actions),
            needs_two_approvers=event.user_principal in self.protected_users,
        )
        await self._commit(
            conn,
            case,
            (),
            new=True,
            action="case.opened",
            detail={
                "severity": severity.label,
                "decision": decision.value,
                "detectors": list(case.detectors),
                "reasons": [f.reason for f in findings],
            },
        )
        opened, effects = machine.apply(case, _OPENING[decision], now=now, timeouts=self.timeouts_for(case))
        saved = await self._commit(conn, opened, effects, detail={"event": _OPENING[decision].value, "from": "new"})
        log.info(
            "case.opened",
            case_id=case.id,
            severity=severity.label,
            decision=decision.value,
            detectors=list(case.detectors),
        )
        return saved

    async def _join(self, conn: AsyncConnection, case: Case, event: Event, findings: list[Finding]) -> Case:
        """A late or follow-up event joins the open case instead of opening another."""
        merged = (*case.findings, *findings)
        merged_severity = max(case.severity, case_severity(merged))
        grown = replace(
            case,
            findings=merged,
            events=(*case.events, event)[-MAX_EVENTS_PER_CASE:],
            severity=merged_severity,
            plan=propose(merged, merged_severity, self.available_actions),
            updated_at=self.clock.now(),
            last_event_at=max(case.last_event_at, event.occurred_at),
        )
        effects: list[Effect] = []
        if grown.user_card is not None and grown.state is CaseState.AWAITING_USER:
            effects.append(machine.RefreshUserCard())
        if grown.soc_card is not None:
            effects.append(machine.RefreshSocCard())
        return await self._commit(
            conn,
            grown,
            effects,
            action="case.findings_added",
            detail={
                "detectors": sorted({f.detector for f in findings}),
                "reasons": [f.reason for f in findings],
                "severity": grown.severity.label,
            },
        )
