"""The life of a case, as one transition table plus the side effects each step asks for.

Rule: every change of a case's state goes through `apply`; nothing else assigns `state`.
`apply` is pure: it returns the new case and the effects (cards to post or refresh, reminders,
pages, actions to run) that the service turns into outbox rows in the same transaction.

The escalation ladder is data too: `next_deadline` says which rung is due next for the state the
case is in (user reminder -> user timeout; SOC reminder -> SOC timeout -> page), counted from the
moment the case entered that state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.errors import IllegalTransition
from bot.model import TERMINAL, Approval, Case, CaseEvent, CaseState, Decision, HistoryEntry, Severity

S, E = CaseState, CaseEvent

_SOC_DECIDES = {
    E.SOC_CONTAIN: S.CONTAINING,
    E.SOC_FIRST_APPROVAL: S.AWAITING_SECOND_APPROVAL,
    E.SOC_DISMISS: S.CLOSED_BENIGN,
    E.SOC_ESCALATE: S.ESCALATED,
}

NEXT: dict[CaseState, dict[CaseEvent, CaseState]] = {
    S.NEW: {E.ASK_USER: S.AWAITING_USER, E.SEND_TO_SOC: S.AWAITING_SOC, E.RECORD_ONLY: S.RECORDED},
    S.AWAITING_USER: {
        E.USER_CONFIRMED: S.CLOSED_BENIGN,
        E.USER_CONFIRMED_NEEDS_REVIEW: S.AWAITING_SOC,
        E.USER_DENIED: S.AWAITING_SOC,
        E.USER_WRONG_PERSON: S.AWAITING_SOC,
        E.USER_TIMED_OUT: S.AWAITING_SOC,
        E.USER_UNREACHABLE: S.AWAITING_SOC,
        E.USER_REMINDED: S.AWAITING_USER,
    },
    S.AWAITING_SOC: {
        **_SOC_DECIDES,
        E.SOC_TIMED_OUT: S.ESCALATED,
        E.SOC_TAKE: S.AWAITING_SOC,
        E.SOC_REMINDED: S.AWAITING_SOC,
    },
    S.AWAITING_SECOND_APPROVAL: {
        E.SOC_CONTAIN: S.CONTAINING,
        E.SOC_DISMISS: S.CLOSED_BENIGN,
        E.SOC_ESCALATE: S.ESCALATED,
        E.SOC_TIMED_OUT: S.ESCALATED,
        E.SOC_TAKE: S.AWAITING_SECOND_APPROVAL,
        E.SOC_REMINDED: S.AWAITING_SECOND_APPROVAL,
    },
    S.ESCALATED: {**_SOC_DECIDES, E.SOC_TAKE: S.ESCALATED},
    S.CONTAINING: {E.CONTAINMENT_DONE: S.CONTAINED, E.CONTAINMENT_FAILED: S.ESCALATED},
}
del NEXT[S.ESCALATED][E.SOC_ESCALATE]

SOC_OPEN = frozenset({S.AWAITING_SOC, S.AWAITING_SECOND_APPROVAL, S.ESCALATED})


def step(state: CaseState, event: CaseEvent) -> CaseState:
    try:
        return NEXT[state][event]
    except KeyError:
        raise IllegalTransition(state, event) from None


def can(state: CaseState, event: CaseEvent) -> bool:
    return event in NEXT.get(state, {})


# Effects: what the shell must do after the transition commits.
@dataclass(frozen=True, slots=True)
class PostUserCard:
    pass


@dataclass(frozen=True, slots=True)
class RefreshUserCard:
    pass


@dataclass(frozen=True, slots=True)
class RemindUser:
    pass


@dataclass(frozen=True, slots=True)
class TellUserOutcome:
    """After containment: what was done and what to do now, in plain words."""


@dataclass(frozen=True, slots=True)
class PostSocCard:
    pass


@dataclass(frozen=True, slots=True)
class RefreshSocCard:
    pass


@dataclass(frozen=True, slots=True)
class SocThreadNote:
    text: str
    mention_soc: bool = False
    mention_oncall: bool = False


@dataclass(frozen=True, slots=True)
class RunAction:
    action: str
    target: str
    plan: tuple[str, ...] = ()  # every action approved together; the case is contained when all succeed


@dataclass(frozen=True, slots=True)
class Page:
    """Trigger (or re-trigger) the on-call alert; PagerDuty de-duplicates on the case id."""

    reason: str


@dataclass(frozen=True, slots=True)
class AcknowledgePage:
    pass


@dataclass(frozen=True, slots=True)
class ResolvePage:
    pass


Effect = (
    PostUserCard
    | RefreshUserCard
    | RemindUser
    | TellUserOutcome
    | PostSocCard
    | RefreshSocCard
    | SocThreadNote
    | RunAction
    | Page
    | AcknowledgePage
    | ResolvePage
)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """One rung set of the escalation ladder. Reminders are optional."""

    user_answer: timedelta
    soc_decision: timedelta
    user_reminder: timedelta | None = None
    soc_reminder: timedelta | None = None


def next_deadline(case: Case, t: Timeouts) -> tuple[datetime | None, str | None]:
    """The next rung of the ladder for the case's current state, or (None, None)."""
    since = case.state_since or case.updated_at
    if case.state is S.AWAITING_USER:
        if t.user_reminder is not None and t.user_reminder < t.user_answer and "user_reminder" not in case.reminders:
            return since + t.user_reminder, "user_reminder"
        return since + t.user_answer, "user_answer"
    if case.state in (S.AWAITING_SOC, S.AWAITING_SECOND_APPROVAL):
        if case.assignee is not None:
            return None, None  # a named analyst owns it now; the ladder stops nagging
        if t.soc_reminder is not None and t.soc_reminder < t.soc_decision and "soc_reminder" not in case.reminders:
            return since + t.soc_reminder, "soc_reminder"
        return since + t.soc_decision, "soc_decision"
    return None, None


DEADLINE_EVENT: dict[str, CaseEvent] = {
    "user_reminder": E.USER_REMINDED,
    "user_answer": E.USER_TIMED_OUT,
    "soc_reminder": E.SOC_REMINDED,
    "soc_decision": E.SOC_TIMED_OUT,
}

_NOTES: dict[CaseEvent, str] = {
    E.ASK_USER: "Asked the user whether this was them",
    E.SEND_TO_SOC: "Sent straight to the SOC",
    E.RECORD_ONLY: "Recorded only (below the policy's threshold)",
    E.USER_CONFIRMED: "User answered *Yes, it was me*",
    E.USER_CONFIRMED_NEEDS_REVIEW: "User answered *Yes, it was me*; severity needs a SOC review anyway",
    E.USER_DENIED: "User answered *No, I don't recognise this*",
    E.USER_WRONG_PERSON: "User answered *This isn't about me*",
    E.USER_TIMED_OUT: "User did not answer in time",
    E.USER_UNREACHABLE: "User could not be reached in Slack",
    E.USER_REMINDED: "Reminded the user",
    E.SOC_CONTAIN: "SOC approved containment",
    E.SOC_FIRST_APPROVAL: "First approval of containment; a second SOC member must approve",
    E.SOC_DISMISS: "SOC closed the case as benign",
    E.SOC_ESCALATE: "Escalated to on-call",
    E.SOC_TAKE: "Took the case",
    E.SOC_REMINDED: "Reminded the SOC",
    E.SOC_TIMED_OUT: "Nobody in the SOC acted in time: escalated to on-call",
    E.CONTAINMENT_DONE: "Containment finished",
    E.CONTAINMENT_FAILED: "Containment failed",
}

_REMINDER_STEP = {E.USER_REMINDED: "user_reminder", E.SOC_REMINDED: "soc_reminder"}


def apply(
    case: Case,
    event: CaseEvent,
    *,
    now: datetime,
    timeouts: Timeouts,
    actor: str = "system",
    note: str | None = None,
    actions: tuple[str, ...] = (),
) -> tuple[Case, list[Effect]]:
    """Move `case` through `event`; raise IllegalTransition when the table forbids it."""
    to = step(case.state, event)
    moved = to is not case.state
    text = _NOTES[event] + (f": {note}" if note else "")
    new = replace(
        case,
        state=to,
        updated_at=now,
        state_since=now if moved or case.state_since is None else case.state_since,
        reminders=() if moved else case.reminders,
        history=(*case.history, HistoryEntry(at=now, actor=actor, text=text)),
    )
    if event in _REMINDER_STEP:
        new = replace(new, reminders=(*new.reminders, _REMINDER_STEP[event]))
    if event in (E.USER_CONFIRMED, E.USER_CONFIRMED_NEEDS_REVIEW):
        new = replace(new, user_answer="yes")
    elif event is E.USER_DENIED:
        new = replace(new, user_answer="no")
    elif event is E.USER_WRONG_PERSON:
        new = replace(new, user_answer="not_me")
    elif event is E.SOC_TAKE:
        new = replace(new, assignee=actor)
    elif event is E.SOC_FIRST_APPROVAL:
        new = replace(new, approvals=(Approval(actor=actor, at=now, actions=actions, reason=note or ""),))
    elif event is E.SOC_CONTAIN:
        prior = new.approvals
        new = replace(new, approvals=(*prior, Approval(actor=actor, at=now, actions=actions, reason=note or "")))
    if new.state in TERMINAL:
        new = replace(new, paged=False)
    deadline, kind = next_deadline(new, timeouts)
    new = replace(new, deadline_at=deadline, deadline_kind=kind)
    effects = _effects(case, new, event, actions)
    if any(isinstance(e, Page) for e in effects):
        new = replace(new, paged=True)
    return new, effects


def _effects(before: Case, after: Case, event: CaseEvent, actions: tuple[str, ...]) -> list[Effect]:
    out: list[Effect] = []
    entered = after.state is not before.state
    if entered and after.state is S.AWAITING_USER:
        out.append(PostUserCard())
    if event is E.USER_REMINDED:
        out.append(RemindUser())
    elif before.user_card is not None or before.state is S.AWAITING_USER:
        out.append(RefreshUserCard())
    soc_visible = after.state in SOC_OPEN or before.state in SOC_OPEN or before.soc_card is not None
    if after.state in SOC_OPEN and before.soc_card is None and before.state not in SOC_OPEN:
        out.append(PostSocCard())
    elif soc_visible and event is not E.SOC_REMINDED:
        out.append(RefreshSocCard())
    if event is E.SOC_CONTAIN:
        target = after.user_id or after.user_principal
        out.extend(RunAction(action=a, target=target, plan=actions) for a in actions)
    if event is E.SOC_REMINDED:
        out.append(SocThreadNote("Reminder: this case is waiting for a SOC decision.", mention_soc=True))
    elif event in (
        E.SOC_CONTAIN,
        E.SOC_FIRST_APPROVAL,
        E.SOC_DISMISS,
        E.SOC_TIMED_OUT,
        E.SOC_ESCALATE,
        E.SOC_TAKE,
        E.CONTAINMENT_DONE,
        E.CONTAINMENT_FAILED,
        E.USER_WRONG_PERSON,
    ):
        out.append(SocThreadNote(after.history[-1].text))
    # paging: critical cases at once, SOC silence, an explicit escalation, a failed containment
    page_reason = None
    if event is E.SEND_TO_SOC and (after.decision is Decision.PAGE or after.severity is Severity.CRITICAL):
        page_reason = f"{after.severity.label} case opened"
    elif event in (E.SOC_TIMED_OUT, E.SOC_ESCALATE, E.CONTAINMENT_FAILED):
        page_reason = after.history[-1].text
    if page_reason is not None:
        out.append(Page(reason=page_reason))
        out.append(SocThreadNote(f"Paging on-call: {page_reason}", mention_oncall=True))
    if event is E.SOC_TAKE and before.paged:
        out.append(AcknowledgePage())
    if after.state in TERMINAL and before.paged:
        out.append(ResolvePage())
    if event is E.CONTAINMENT_DONE:
        out.append(TellUserOutcome())
    return out


def approval_event(case: Case, actor: str, actions: Iterable[str], destructive: frozenset[str]) -> CaseEvent:
    """Two-person rule: destructive actions, or any action on a protected account, need two different
    SOC members. Returns the event this approval is; raises SameApprover when one person tries twice."""
    chosen = tuple(actions)
    needs_two = case.needs_two_approvers or any(a in destructive for a in chosen)
    if case.state is S.AWAITING_SECOND_APPROVAL:
        if any(a.actor == actor for a in case.approvals):
            raise SameApprover(actor)
        return E.SOC_CONTAIN
    return E.SOC_FIRST_APPROVAL if needs_two else E.SOC_CONTAIN


class SameApprover(Exception):
    def __init__(self, actor: str) -> None:
        self.actor = actor
        super().__init__("the second approval must come from a different SOC member")
