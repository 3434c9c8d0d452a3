"""The life of a case, as one transition table plus the side effects each step asks for.

Rule: every change of a case's state goes through `apply`; nothing else assigns `state`.
`apply` is pure: it returns the new case and the effects (cards to post or refresh, actions
to run) that the service turns into outbox rows in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.errors import IllegalTransition
from bot.model import Case, CaseEvent, CaseState, HistoryEntry

S, E = CaseState, CaseEvent

NEXT: dict[CaseState, dict[CaseEvent, CaseState]] = {
    S.NEW: {E.ASK_USER: S.AWAITING_USER, E.SEND_TO_SOC: S.AWAITING_SOC, E.RECORD_ONLY: S.RECORDED},
    S.AWAITING_USER: {
        E.USER_CONFIRMED: S.CLOSED_BENIGN,
        E.USER_CONFIRMED_NEEDS_REVIEW: S.AWAITING_SOC,
        E.USER_DENIED: S.AWAITING_SOC,
        E.USER_TIMED_OUT: S.AWAITING_SOC,
        E.USER_UNREACHABLE: S.AWAITING_SOC,
    },
    S.AWAITING_SOC: {E.SOC_CONTAIN: S.CONTAINING, E.SOC_DISMISS: S.CLOSED_BENIGN, E.SOC_TIMED_OUT: S.ESCALATED},
    S.ESCALATED: {E.SOC_CONTAIN: S.CONTAINING, E.SOC_DISMISS: S.CLOSED_BENIGN},
    S.CONTAINING: {E.CONTAINMENT_DONE: S.CONTAINED, E.CONTAINMENT_FAILED: S.ESCALATED},
}


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
class PostSocCard:
    pass


@dataclass(frozen=True, slots=True)
class RefreshSocCard:
    pass


@dataclass(frozen=True, slots=True)
class SocThreadNote:
    text: str


@dataclass(frozen=True, slots=True)
class RunAction:
    action: str
    target: str
    plan: tuple[str, ...] = ()  # every action approved together; the case is contained when all succeed


Effect = PostUserCard | RefreshUserCard | PostSocCard | RefreshSocCard | SocThreadNote | RunAction


@dataclass(frozen=True, slots=True)
class Timeouts:
    user_answer: timedelta
    soc_decision: timedelta


DEADLINE_FOR: dict[CaseState, str] = {S.AWAITING_USER: "user_answer", S.AWAITING_SOC: "soc_decision"}

_NOTES: dict[CaseEvent, str] = {
    E.ASK_USER: "Asked the user whether this was them",
    E.SEND_TO_SOC: "Sent straight to the SOC",
    E.RECORD_ONLY: "Recorded only (below the policy's threshold)",
    E.USER_CONFIRMED: "User answered *Yes, it was me*",
    E.USER_CONFIRMED_NEEDS_REVIEW: "User answered *Yes, it was me*; severity needs a SOC review anyway",
    E.USER_DENIED: "User answered *No, I don't recognise this*",
    E.USER_TIMED_OUT: "User did not answer in time",
    E.USER_UNREACHABLE: "User could not be reached in Slack",
    E.SOC_CONTAIN: "SOC approved containment",
    E.SOC_DISMISS: "SOC dismissed the case as benign",
    E.SOC_TIMED_OUT: "Nobody in the SOC acted in time: escalated",
    E.CONTAINMENT_DONE: "Containment finished",
    E.CONTAINMENT_FAILED: "Containment failed",
}


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
    kind = DEADLINE_FOR.get(to)
    deadline = None
    if kind == "user_answer":
        deadline = now + timeouts.user_answer
    elif kind == "soc_decision":
        deadline = now + timeouts.soc_decision
    text = _NOTES[event] + (f": {note}" if note else "")
    new = replace(
        case,
        state=to,
        updated_at=now,
        deadline_at=deadline,
        deadline_kind=kind,
        history=(*case.history, HistoryEntry(at=now, actor=actor, text=text)),
    )
    if event in (E.USER_CONFIRMED, E.USER_CONFIRMED_NEEDS_REVIEW):
        new = replace(new, user_answer="yes")
    elif event is E.USER_DENIED:
        new = replace(new, user_answer="no")
    return new, _effects(case, new, event, actions)


def _effects(before: Case, after: Case, event: CaseEvent, actions: tuple[str, ...]) -> list[Effect]:
    out: list[Effect] = []
    if after.state is S.AWAITING_USER:
        out.append(PostUserCard())
    if before.user_card is not None or before.state is S.AWAITING_USER:
        out.append(RefreshUserCard())
    if after.state is S.AWAITING_SOC and before.soc_card is None:
        out.append(PostSocCard())
    elif before.soc_card is not None or before.state in (S.AWAITING_SOC, S.ESCALATED, S.CONTAINING):
        out.append(RefreshSocCard())
    if event is E.SOC_CONTAIN:
        target = after.user_id or after.user_principal
        out.extend(RunAction(action=a, target=target, plan=actions) for a in actions)
    if event in (E.SOC_CONTAIN, E.SOC_DISMISS, E.SOC_TIMED_OUT, E.CONTAINMENT_DONE, E.CONTAINMENT_FAILED):
        out.append(SocThreadNote(after.history[-1].text))
    return out
