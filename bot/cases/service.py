"""The case service: turns findings into cases and clicks/timeouts into transitions.

Every public method runs one transaction in which the case row, its outbox rows and its audit
entries change together, so a crash leaves either all of them or none.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.allowlist import (
    CONTEXT,
    SCOPES,
    AllowEntry,
    Watch,
    after_containment,
    context_value,
    scope_value,
    unsuppressed,
)
from bot.audit import log as audit
from bot.cases import machine
from bot.cases.machine import Effect, Timeouts
from bot.cases.plan import action_context, propose
from bot.clock import Clock
from bot.detect import Params, run_all
from bot.detect.common import SIGN_IN_ANOMALIES
from bot.detect.fleet import TenantFleet
from bot.detect.policy import DEFAULT as DEFAULT_POLICY
from bot.detect.policy import Policy, most_urgent
from bot.detect.profile import device_key, forget, observe, place_key, with_tz
from bot.detect.scoring import case_severity, decide, yes_closes
from bot.errors import ConcurrentUpdate
from bot.model import (
    APP_PREFIX,
    CAMPAIGN_PREFIX,
    Case,
    CaseEvent,
    CaseState,
    Decision,
    Event,
    Finding,
    Profile,
    Severity,
)
from bot.slack.cards import headline_event
from bot.store import repo

# The containment actions act on user accounts; an application's own credentials are contained in Entra.
APP_NOTE = (
    "A service principal (an application signing in with its own secret or certificate), not a person: "
    "rotate its credentials, review its application permissions (Mail.Read, full_access_as_app) and "
    "disable it in Entra ID if it is not yours"
)
log = structlog.get_logger("mailwarden.cases")

MAX_EVENTS_PER_CASE = 50
YIELD_EVERY = 64  # events detected between two turns of the event loop (G6: acks within 150 ms)
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
    # (source, event id) of every event that became part of a case: its raw record is evidence
    evidence: frozenset[tuple[str, str]] = frozenset()


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
        policy: Policy | None = None,
        watchlist_for: timedelta = timedelta(days=30),
        containment_quiet: timedelta = timedelta(hours=24),
        new_id: Callable[[], str] | None = None,
        profile_cache_size: int = 0,
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
        self.policy = policy or DEFAULT_POLICY
        self.strict_params = params.strict()
        self.watchlist_for = watchlist_for
        self.containment_quiet = containment_quiet
        self.new_id: Callable[[], str] = new_id or (lambda: "MW-" + secrets.token_hex(4).upper())
        # Profiles kept between batches: only for a single process that is the only writer (SQLite).
        self.profile_cache_size = profile_cache_size
        self._profile_cache: dict[tuple[str, str], Profile] | None = {} if profile_cache_size > 0 else None
        self._known_absent: set[tuple[str, str]] = set()

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
        sink: list[audit.Pending] | None = None,
        also_audit: Sequence[audit.Pending] = (),
    ) -> Case:
        """Write the case, its outbox rows and its audit entries (`also_audit` first). With a `sink`,
        the audit entries are collected there for the caller to chain in one go (ingest does, per batch)."""
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
        entries = [
            *also_audit,
            audit.Pending(now, actor, action, case.id, {"state": case.state.value, **(detail or {})}),
        ]
        if sink is not None:
            sink.extend(entries)
        else:
            await audit.append_many(conn, entries)
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
                    if saved.state is CaseState.CONTAINED and case.state is not CaseState.CONTAINED:
                        await self._on_contained(conn, saved)
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

    async def fire_due_deadlines(self, batch: int = 100) -> list[str]:
        """Move every case whose deadline has passed one rung up the ladder; return the ids that moved.

        Works in batches until nothing is due, so a storm of timeouts is cleared in one sweep."""
        moved: list[str] = []
        skipped: set[str] = set()
        while True:
            async with self.engine.connect() as conn:
                due = [
                    c
                    for c in await repo.due_case_ids(conn, self.clock.now(), limit=batch + len(skipped))
                    if c not in skipped
                ]
            if not due:
                return moved
            for case_id in due:
                case = await self.get(case_id)
                event = machine.DEADLINE_EVENT.get(case.deadline_kind or "") if case else None
                if (
                    case is None
                    or case.deadline_at is None
                    or case.deadline_at > self.clock.now()
                    or event is None
                    or not machine.can(case.state, event)
                ):
                    skipped.add(case_id)
                    continue
                try:
                    await self.transition(case_id, event)
                    moved.append(case_id)
                except ConcurrentUpdate:
                    skipped.add(case_id)  # someone answered at the same moment; their answer stands

    # --- decisions from Slack -----------------------------------------------------------------------
    async def user_answer(self, case_id: str, actor: str, answer: str) -> Case:
        """The subject's answer. A "Yes" that closes the case allows what was confirmed (country, and the
        network and client when the record names them) for 30 days; never a detector as a whole."""
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
            value = context_value(head) if head is not None else None
            if value is None:
                return
            # Exactly what the user confirmed: the country, and the network and client when known.
            entry = AllowEntry(
                user_principal=saved.user_principal,
                scope=CONTEXT,
                value=value,
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
        """Detect and correlate newly stored events, in event-time order, inside the caller's transaction.

        One batch costs a handful of queries, not one per event: profiles, allow entries and watch
        entries of every user in the batch are read at once, the tenant's cross-user state once, and
        profiles are written back with one executemany. Only events with findings touch cases."""
        total = IngestResult()
        by_tenant: dict[str, list[Event]] = {}
        for e in events:
            by_tenant.setdefault(e.tenant, []).append(e)
        for tenant in sorted(by_tenant):
            r = await self._ingest_tenant(conn, tenant, by_tenant[tenant])
            total = IngestResult(
                total.events + r.events,
                total.findings + r.findings,
                total.cases_opened + r.cases_opened,
                total.cases_joined + r.cases_joined,
                total.evidence | r.evidence,
            )
        return total

    async def _ingest_tenant(self, conn: AsyncConnection, tenant: str, events: list[Event]) -> IngestResult:
        now = self.clock.now()
        users = {e.user_principal for e in events}
        profiles = await self._load_profiles(conn, tenant, users)
        allows = await repo.active_allows_for(conn, tenant, users, now)
        watches = await repo.active_watches(conn, tenant, users, now)
        fleet = await repo.load_fleet(conn, tenant)
        batch = _Batch(conn, tenant)
        found = 0
        dirty: set[str] = set()
        evidence: set[tuple[str, str]] = set()
        # A total order: equal timestamps must not let arrival order change what is detected.
        for n, event in enumerate(sorted(events, key=lambda e: (e.occurred_at, e.source, e.event_id))):
            if n and n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let Slack acks through: a page of detection is ~50 ms of CPU
            user = event.user_principal
            profile = profiles.get(user)
            watched = watches.get(user, [])
            params = self.strict_params if watched else self.params
            findings = run_all(event, profile, params) if user else []
            spray_alarm: list[Finding] = []
            for f in fleet.observe(event, params):
                # The threshold crossing (a failure that makes an address a sprayer) belongs to the
                # campaign; a success from that address is the member's own case.
                (spray_alarm if f.detector == "password_spray" and not event.success else findings).append(f)
            if findings:
                findings = self._filter(findings, event, profile, allows.get(user, []), watched)
            if user and (event.kind in _PROFILE_KINDS):
                profiles[user] = observe(profile, event, params)
                dirty.add(user)
            if findings and user:
                found += len(findings)
                evidence.add((event.source, event.event_id))
                await self._correlate_user(batch, event, findings)
                tz = next((c.slack_tz for c in batch.open_cases.get(user, []) if c.slack_tz), None)
                if tz and user in profiles and profiles[user].tz is None:
                    # Slack told us the employee's time zone on their case: off_hours reads it from now on
                    profiles[user] = with_tz(profiles[user], tz)
                    dirty.add(user)
            if spray_alarm and event.ip:
                found += len(spray_alarm)
                evidence.add((event.source, event.event_id))
                await self._campaign_alarm(batch, fleet, event, spray_alarm)
            elif (
                event.kind == "sign_in"
                and not event.success
                and event.ip
                and fleet.sprayer(event.ip)
                and await self._campaign_member(batch, event)
            ):
                evidence.add((event.source, event.event_id))
        await self._flush_joins(batch)  # before the campaigns: they grow the saved version
        await self._flush_campaigns(batch)
        await audit.append_many(conn, batch.audit)
        fleet.prune(max((e.occurred_at for e in events), default=now), self.params)
        await repo.save_fleet(conn, tenant, fleet, now)
        await repo.save_profiles(conn, tenant, [profiles[u] for u in sorted(dirty)], now)
        self._cache_profiles(tenant, {u: profiles[u] for u in dirty})
        return IngestResult(len(events), found, batch.opened, batch.joined, frozenset(evidence))

    def _filter(
        self,
        findings: list[Finding],
        event: Event,
        profile: Profile | None,
        entries: list[AllowEntry],
        watched: list[Watch],
    ) -> list[Finding]:
        """Scoped allow entries, the post-containment quiet period, and the watchlist's +1 severity."""
        kept = unsuppressed(findings, entries, event)
        if watched:
            kept = after_containment(kept, watched, event, profile)
            kept = [
                replace(f, severity=Severity(min(f.severity + 1, Severity.CRITICAL)))
                if f.detector in SIGN_IN_ANOMALIES
                else f
                for f in kept
            ]
        if len(kept) < len(findings):
            log.info(
                "findings.suppressed",
                user=event.user_principal,
                event_id=event.event_id,
                detectors=sorted({f.detector for f in findings} - {f.detector for f in kept}),
            )
        return kept

    # --- profiles: read per batch, optionally cached between batches (one process, one writer) ------
    async def _load_profiles(self, conn: AsyncConnection, tenant: str, users: set[str]) -> dict[str, Profile]:
        cache = self._profile_cache
        if cache is None:
            return await repo.load_profiles(conn, tenant, users)
        out = {u: p for u in users if (p := cache.get((tenant, u))) is not None}
        missing = [u for u in users if u not in out and (tenant, u) not in self._known_absent]
        if missing:
            loaded = await repo.load_profiles(conn, tenant, missing)
            out.update(loaded)
            self._known_absent.update((tenant, u) for u in missing if u not in loaded)
        return out

    def _cache_profiles(self, tenant: str, ps: dict[str, Profile]) -> None:
        cache = self._profile_cache
        if cache is None:
            return
        absent = self._known_absent
        for u, p in ps.items():
            key = (tenant, u)
            cache.pop(key, None)  # re-inserted last: the dict's order is the recency order
            cache[key] = p
            if absent:
                absent.discard(key)
        while len(cache) > self.profile_cache_size:
            cache.pop(next(iter(cache)))  # the least recently written

    def forget_cached_profiles(self, tenant: str) -> None:
        """Drop the tenant's cached profiles (after a rolled-back batch: they may hold its learning)."""
        if self._profile_cache is not None:
            for key in [k for k in self._profile_cache if k[0] == tenant]:
                del self._profile_cache[key]
        self._known_absent = {k for k in self._known_absent if k[0] != tenant}

    async def set_profile_tz(self, tenant: str, user: str, tz: str | None) -> bool:
        """Remember the employee's time zone (from Slack) on their profile, for off_hours."""
        async with self.engine.begin() as conn:
            changed = await repo.set_profile_tz(conn, tenant, user, tz, self.clock.now())
        if self._profile_cache is not None:
            self._profile_cache.pop((tenant, user), None)
        return changed

    # --- correlation ---------------------------------------------------------------------------------
    def _window_holds(self, case: Case, at: datetime) -> bool:
        """One incident window: the event lies within `incident_window` of the case's own events,
        before its first as well as after its last, so late and out-of-order events join."""
        first = min((f.occurred_at for f in case.findings), default=case.last_event_at)
        return first - self.incident_window <= at <= case.last_event_at + self.incident_window

    async def _open_case_for(self, batch: _Batch, principal: str, at: datetime) -> Case | None:
        if principal not in batch.open_cases:
            batch.open_cases[principal] = await repo.open_cases_of(batch.conn, batch.tenant, principal)
        fits = [c for c in batch.open_cases[principal] if self._window_holds(c, at)]
        return fits[-1] if fits else None

    def _remember_case(self, batch: _Batch, case: Case) -> None:
        cases = [c for c in batch.open_cases.get(case.user_principal, []) if c.id != case.id]
        if case.state.is_open:
            cases.append(case)
        batch.open_cases[case.user_principal] = sorted(cases, key=lambda c: c.opened_at)

    async def _correlate_user(self, batch: _Batch, event: Event, findings: list[Finding]) -> None:
        existing = await self._open_case_for(batch, event.user_principal, event.occurred_at)
        if existing is None:
            case = await self._open(batch, event, findings)
            batch.opened += 1
        else:
            case = await self._join(batch, existing, event, findings)
            batch.joined += 1
        self._remember_case(batch, case)

    async def _campaign_alarm(self, batch: _Batch, fleet: TenantFleet, event: Event, findings: list[Finding]) -> None:
        """One campaign case per spraying address: the SOC gets one card, not one per account."""
        assert event.ip is not None
        principal = CAMPAIGN_PREFIX + event.ip
        members = fleet.failing_accounts(event.ip)
        existing = await self._open_case_for(batch, principal, event.occurred_at)
        if existing is None:
            case = await self._open(batch, event, findings, principal=principal, users=members)
            batch.opened += 1
        else:
            users = tuple(sorted({*existing.users, *members}))
            case = await self._join(batch, replace(existing, users=users), event, findings)
            batch.joined += 1
        self._remember_case(batch, case)

    async def _campaign_member(self, batch: _Batch, event: Event) -> bool:
        """A further failure from a known sprayer: its account joins the campaign (written once per batch).
        False when no campaign case is open for the address."""
        assert event.ip is not None
        case = await self._open_case_for(batch, CAMPAIGN_PREFIX + event.ip, event.occurred_at)
        if case is None:
            return False
        pending = batch.members.setdefault(case.id, (case, set(), []))
        if event.user_principal not in case.users:
            pending[1].add(event.user_principal)
        pending[2].append(event)
        return True

    async def _flush_campaigns(self, batch: _Batch) -> None:
        for case_id, (_, users, events) in batch.members.items():
            current = next(
                (c for cs in batch.open_cases.values() for c in cs if c.id == case_id),
                None,
            )
            if current is None or not (users or events):
                continue
            grown = replace(
                current,
                users=tuple(sorted({*current.users, *users})),
                events=(*current.events, *events)[-MAX_EVENTS_PER_CASE:],
                updated_at=self.clock.now(),
                last_event_at=max(current.last_event_at, *(e.occurred_at for e in events)),
            )
            effects: list[Effect] = [machine.RefreshSocCard()] if grown.soc_card is not None else []
            saved = await self._commit(
                batch.conn,
                grown,
                effects,
                action="campaign.members_added",
                detail={"accounts": sorted(users), "attempts": len(events), "users": len(grown.users)},
                sink=batch.audit,
            )
            self._remember_case(batch, saved)
        batch.members.clear()

    def _decide(self, case_severity_: Severity, detectors: Sequence[str], campaign: bool) -> Decision:
        decision = decide(case_severity_, self.policy, detectors)
        return most_urgent([decision, Decision.SOC]) if campaign else decision

    async def _open(
        self,
        batch: _Batch,
        event: Event,
        findings: list[Finding],
        *,
        principal: str | None = None,
        users: tuple[str, ...] = (),
    ) -> Case:
        now = self.clock.now()
        campaign = principal is not None
        severity = case_severity(findings)
        if campaign:
            severity = max(severity, Severity.MEDIUM)  # an attack on the tenant, whoever it reached
        detectors = sorted({f.detector for f in findings})
        app = not campaign and event.user_principal.startswith(APP_PREFIX)
        decision = self._decide(severity, detectors, campaign or app)  # no one to ask: the SOC decides
        case = Case(
            id=self.new_id(),
            tenant=event.tenant,
            user_principal=principal or event.user_principal,
            user_id=None if campaign or app else event.user_id,
            user_display=f"Password spray from {event.ip}" if campaign else event.user_display,
            state=CaseState.NEW,
            severity=severity,
            decision=decision,
            opened_at=now,
            updated_at=now,
            last_event_at=event.occurred_at,
            findings=tuple(findings),
            events=(event,),
            state_since=now,
            plan=() if campaign or app else propose(findings, severity, self.available_actions),
            plan_notes=(("*", APP_NOTE),) if app else (),
            needs_two_approvers=not (campaign or app) and event.user_principal in self.protected_users,
            users=users,
        )
        opened_entry = audit.Pending(
            now,
            "system",
            "case.opened",
            case.id,
            {
                "state": case.state.value,
                "severity": severity.label,
                "decision": decision.value,
                "detectors": list(case.detectors),
                "reasons": [f.reason for f in findings],
                **({"users": list(users)} if campaign else {}),
            },
        )
        # Opened and moved on by policy in one write; the audit log still tells the two steps apart.
        opened, effects = machine.apply(case, _OPENING[decision], now=now, timeouts=self.timeouts_for(case))
        saved = await self._commit(
            batch.conn,
            opened,
            effects,
            new=True,
            detail={"event": _OPENING[decision].value, "from": "new"},
            sink=batch.audit,
            also_audit=[opened_entry],
        )
        log.info(
            "case.opened",
            case_id=case.id,
            severity=severity.label,
            decision=decision.value,
            detectors=list(case.detectors),
        )
        return saved

    async def _join(self, batch: _Batch, case: Case, event: Event, findings: list[Finding]) -> Case:
        """A late or follow-up event joins the open case instead of opening another."""
        merged = (*case.findings, *findings)
        merged_severity = max(case.severity, case_severity(merged))
        events = case.events if any(e.event_id == event.event_id for e in case.events) else (*case.events, event)
        grown = replace(
            case,
            findings=merged,
            events=tuple(sorted(events, key=lambda e: e.occurred_at))[-MAX_EVENTS_PER_CASE:],
            severity=merged_severity,
            plan=() if case.is_campaign or case.is_app else propose(merged, merged_severity, self.available_actions),
            updated_at=self.clock.now(),
            last_event_at=max(case.last_event_at, event.occurred_at),
        )
        effects: list[Effect] = []
        if grown.user_card is not None and grown.state is CaseState.AWAITING_USER:
            effects.append(machine.RefreshUserCard())
        if grown.soc_card is not None:
            effects.append(machine.RefreshSocCard())
        # Written once at the end of the batch however many of its events join it (`_flush_joins`): a
        # user whose VPN flips between exits joins their case on every sign-in, and each write re-encoded
        # the whole case. The audit log still gets one entry per join, in order.
        earlier = batch.unsaved.get(grown.id)
        if earlier is not None:
            effects = [*earlier[1], *(e for e in effects if e not in earlier[1])]
        batch.unsaved[grown.id] = (grown, effects)
        batch.audit.append(
            audit.Pending(
                self.clock.now(),
                "system",
                "case.findings_added",
                grown.id,
                {
                    "state": grown.state.value,
                    "detectors": sorted({f.detector for f in findings}),
                    "reasons": [f.reason for f in findings],
                    "severity": grown.severity.label,
                },
            )
        )
        return grown

    async def _flush_joins(self, batch: _Batch) -> None:
        """Write each case that events joined during the batch, once, with its card refreshes once."""
        now = self.clock.now()
        for case, effects in batch.unsaved.values():
            saved = await repo.save_case(batch.conn, case)
            for effect in effects:
                kind, lane, payload = outbox_row(saved, effect)
                body = {"case_id": saved.id, **payload}
                await repo.enqueue(batch.conn, kind=kind, lane=lane, payload=body, now=now, case_id=saved.id)
            self._remember_case(batch, saved)
        batch.unsaved.clear()

    # --- after a containment: watchlist, and the attacker's traces out of the baseline --------------
    async def _on_contained(self, conn: AsyncConnection, case: Case) -> None:
        if case.is_campaign or case.is_app:
            return
        now = self.clock.now()
        evidence = attacker_evidence(case)
        watch = Watch(
            user_principal=case.user_principal,
            case_id=case.id,
            contained_at=now,
            expires_at=now + self.watchlist_for,
            quiet_until=now + self.containment_quiet,
            detectors=frozenset(case.detectors),
            ips=evidence["ips"],
            countries=evidence["countries"],
            asns=frozenset(int(a) for a in evidence["asns"]),
        )
        await repo.add_watch(conn, case.tenant, watch, reason=f"contained {case.id}")
        profile = await repo.load_profile(conn, case.tenant, case.user_principal)
        if profile is not None:
            cleaned = forget(
                profile,
                ips=evidence["ips"],
                countries=evidence["countries"],
                asns=frozenset(int(a) for a in evidence["asns"]),
                devices=evidence["devices"],
                places=evidence["places"],
            )
            await repo.save_profile(conn, case.tenant, cleaned, now)
            if self._profile_cache is not None:
                self._profile_cache.pop((case.tenant, case.user_principal), None)
        await audit.append(
            conn,
            at=now,
            actor="system",
            action="watchlist.added",
            case_id=case.id,
            detail={
                "user": case.user_principal,
                "until": watch.expires_at.isoformat(),
                "quiet_until": watch.quiet_until.isoformat(),
                "forgotten": {k: sorted(map(str, v)) for k, v in evidence.items()},
            },
        )


# Findings that say "this event is the attacker's": their address (and, for new_country / new_asn /
# new_device, their country, network or device) must not stay in the user's baseline after containment.
_ATTACKER_IP = frozenset(
    {
        "new_country",
        "new_asn",
        "risky_ip",
        "failed_then_success",
        "password_spray",
        "scripted_client",
        "legacy_protocol",
        "new_device",
    }
)
_PROFILE_KINDS = frozenset({"sign_in", "consent"})


def attacker_evidence(case: Case) -> dict[str, frozenset[str]]:
    by_id = {e.event_id: e for e in case.events}
    ips: set[str] = set()
    countries: set[str] = set()
    asns: set[str] = set()
    devices: set[str] = set()
    places: set[str] = set()
    for f in case.findings:
        e = by_id.get(f.event_id)
        if e is None or f.detector not in _ATTACKER_IP:
            continue
        if e.ip:
            ips.add(e.ip)
        if e.latitude is not None and e.longitude is not None:
            places.add(place_key(e.latitude, e.longitude))  # or impossible travel would not see them again
        if f.detector == "new_country" and e.country:
            countries.add(e.country)
        if f.detector == "new_asn" and e.asn is not None:
            asns.add(str(e.asn))
        if f.detector == "new_device" and (key := device_key(e)):
            devices.add(key)
    return {
        "ips": frozenset(ips),
        "countries": frozenset(countries),
        "asns": frozenset(asns),
        "devices": frozenset(devices),
        "places": frozenset(places),
    }


class _Batch:
    """What one ingest call knows about cases while it runs (so no case is read twice)."""

    def __init__(self, conn: AsyncConnection, tenant: str) -> None:
        self.conn = conn
        self.tenant = tenant
        self.open_cases: dict[str, list[Case]] = {}
        self.members: dict[str, tuple[Case, set[str], list[Event]]] = {}
        self.opened = 0
        self.joined = 0
        self.audit: list[audit.Pending] = []  # chained in one go at the end of the batch
        # cases grown by joins, by id: the latest value and the card refreshes it owes, written at the end
        self.unsaved: dict[str, tuple[Case, list[Effect]]] = {}
