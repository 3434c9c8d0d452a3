"""Plain data shared by the functional core: events, findings, profiles and cases.

Frozen, slotted, no I/O. Everything after the normalizers speaks these types, never raw dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum


class Severity(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls[text.upper()]


@dataclass(frozen=True, slots=True)
class Event:
    """One normalized log record: who, when, from where, with what, and did it work."""

    source: str
    event_id: str
    tenant: str
    occurred_at: datetime
    user_principal: str
    user_id: str | None = None
    user_display: str = ""
    kind: str = "sign_in"
    success: bool = False
    error_code: int = 0
    failure_reason: str | None = None
    ip: str | None = None
    country: str | None = None
    city: str | None = None
    app: str | None = None
    client_app: str | None = None
    user_agent: str | None = None
    device: str | None = None
    interactive: bool = True


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record we could not understand: kept, counted, and never silently dropped."""

    source: str
    event_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Finding:
    detector: str
    severity: Severity
    reason: str
    event_id: str
    occurred_at: datetime
    evidence: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    at: datetime
    ip: str | None


@dataclass(frozen=True, slots=True)
class Profile:
    """What is normal for one user, learned from their own history; bounded in size."""

    user_principal: str
    first_seen: datetime
    countries: tuple[tuple[str, datetime], ...] = ()  # (country, last seen)
    recent_failures: tuple[FailedAttempt, ...] = ()
    sign_ins: int = 0

    def knows_country(self, country: str) -> bool:
        return any(c == country for c, _ in self.countries)


class CaseState(StrEnum):
    NEW = "new"
    AWAITING_USER = "awaiting_user"
    AWAITING_SOC = "awaiting_soc"
    ESCALATED = "escalated"
    CONTAINING = "containing"
    CONTAINED = "contained"
    CLOSED_BENIGN = "closed_benign"
    RECORDED = "recorded"

    @property
    def is_open(self) -> bool:
        return self not in TERMINAL


TERMINAL = frozenset({CaseState.CONTAINED, CaseState.CLOSED_BENIGN, CaseState.RECORDED})


class CaseEvent(StrEnum):
    ASK_USER = "ask_user"
    SEND_TO_SOC = "send_to_soc"
    RECORD_ONLY = "record_only"
    USER_CONFIRMED = "user_confirmed"
    USER_CONFIRMED_NEEDS_REVIEW = "user_confirmed_needs_review"
    USER_DENIED = "user_denied"
    USER_TIMED_OUT = "user_timed_out"
    USER_UNREACHABLE = "user_unreachable"
    SOC_CONTAIN = "soc_contain"
    SOC_DISMISS = "soc_dismiss"
    SOC_TIMED_OUT = "soc_timed_out"
    CONTAINMENT_DONE = "containment_done"
    CONTAINMENT_FAILED = "containment_failed"


class Decision(StrEnum):
    """What policy does with a new case of a given severity."""

    RECORD = "record"
    ASK_USER = "ask_user"
    SOC = "soc"
    PAGE = "page"
    AUTO_CONTAIN = "auto_contain"


@dataclass(frozen=True, slots=True)
class MessageRef:
    channel: str
    ts: str


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    at: datetime
    actor: str  # "system", or a Slack user id
    text: str


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    tenant: str
    user_principal: str
    state: CaseState
    severity: Severity
    decision: Decision
    opened_at: datetime
    updated_at: datetime
    last_event_at: datetime
    user_id: str | None = None
    user_display: str = ""
    findings: tuple[Finding, ...] = ()
    events: tuple[Event, ...] = ()
    deadline_at: datetime | None = None
    deadline_kind: str | None = None
    slack_user_id: str | None = None
    user_card: MessageRef | None = None
    soc_card: MessageRef | None = None
    user_answer: str | None = None
    history: tuple[HistoryEntry, ...] = field(default=())
    version: int = 0

    @property
    def detectors(self) -> tuple[str, ...]:
        return tuple(sorted({f.detector for f in self.findings}))
