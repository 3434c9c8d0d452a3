"""Plain data shared by the functional core: events, findings, profiles and cases.

Frozen, slotted, no I/O. Everything after the normalizers speaks these types, never raw dicts.

The types made once per log record or per record and user (Event, Profile and its parts) are
frozen `msgspec.Struct`s rather than frozen dataclasses: a frozen dataclass sets each field through
`object.__setattr__`, and at 45 fields that was 5 us of every event's 25 us budget (G1, performance.md);
a Struct is built in C in about 1 us. They hold only immutable values, so they cannot be part of a
reference cycle and skip the garbage collector's tracking (`gc=False`). Change them with
`msgspec.structs.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum

import msgspec


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


# What an Event is about. A small closed set, so a detector can say which kinds it reads and a
# normalizer can map every vendor operation onto one of them (anything else is "other", kept for
# the timeline but read by no detector):
#   sign_in            an authentication attempt (Entra signIn, O365 UserLoggedIn/UserLoginFailed,
#                      Google login_success/login_failure/login_challenge/login_verification)
#   risk               the provider's own verdict about the user or a sign-in (Entra riskDetection,
#                      Google account_warning / gov_attack_warning, Alert Center identity alerts)
#   mail_access        mailbox items read (O365 MailItemsAccessed and other ExchangeItemAggregated records)
#   mailbox_permission someone gained rights on a mailbox (Add-MailboxPermission, Add-RecipientPermission,
#                      Set-Mailbox -GrantSendOnBehalfTo)
#   role_assignment    an Exchange management role was assigned (New-ManagementRoleAssignment)
#   consent            an OAuth app was granted scopes (Consent to application., permission grants,
#                      Google token authorize, Google domain-wide delegation)
#   forwarding         mail leaves through an inbox rule or mailbox forwarding (New-InboxRule,
#                      Set-Mailbox -ForwardingSmtpAddress, Google email_forwarding_out_of_domain)
#   export             a mailbox or tenant export (New-MailboxExportRequest, eDiscovery export, Takeout)
#   alert              a provider alert that is not about one identity (Alert Center, other types)
#   other              anything else the sources return
EVENT_KINDS = (
    "sign_in",
    "risk",
    "mail_access",
    "mailbox_permission",
    "role_assignment",
    "consent",
    "forwarding",
    "export",
    "alert",
    "other",
)


class Event(msgspec.Struct, frozen=True, gc=False):
    """One normalized log record: who, when, from where, with what, and did it work.

    The first block is what every source fills; the rest is optional and defaults to "unknown".
    For non-sign-in kinds `success` means the operation succeeded, `user_principal` is the actor and
    `target` is what was acted on (a mailbox, a delegate, an app, a forwarding address).
    """

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
    # --- where --------------------------------------------------------------------------------
    asn: int | None = None
    latitude: float | None = None
    longitude: float | None = None
    # provider flags about the network or the session: "anonymizer", "malicious_ip", "suspicious"
    flags: tuple[str, ...] = ()
    # --- who and how ----------------------------------------------------------------------------
    user_type: str | None = None  # "member", "guest", or the O365 UserType name ("regular", "application"…)
    auth_protocol: str | None = None  # Entra authenticationProtocol ("ropc", "deviceCode"…), Google login_type
    auth_requirement: str | None = None  # "singleFactorAuthentication" / "multiFactorAuthentication"
    device_id: str | None = None
    session_id: str | None = None
    # --- provider risk --------------------------------------------------------------------------
    risk_types: tuple[str, ...] = ()  # riskEventType(s), Google warning names, Alert Center types
    risk_level: str | None = None  # "low" / "medium" / "high" / "hidden" / "none"
    risk_state: str | None = None  # "atRisk", "remediated", "dismissed", "confirmedSafe"…
    # --- what was done ----------------------------------------------------------------------------
    operation: str | None = None  # O365 Operation, Google event name, Graph riskEventType
    workload: str | None = None  # O365 Workload, Google applicationName
    record_type: str | None = None  # O365 RecordType, Google event type
    app_id: str | None = None  # the client acting: Entra appId, O365 ClientAppId, Google client_id
    scopes: tuple[str, ...] = ()  # OAuth scopes granted or used
    target: str | None = None  # the mailbox, delegate, app or address acted on
    target_external: bool = False  # the target lies outside the actor's own domain (normalizer's view)
    count: int = 1  # MailItemsAccessed OperationCount: items in this aggregated record
    access_type: str | None = None  # MailItemsAccessed MailAccessType: "Bind" or "Sync"
    is_throttled: bool = False  # MailItemsAccessed IsThrottled: auditing of reads stops for 24 h
    parameters: tuple[tuple[str, str], ...] = ()  # everything else worth showing, name -> text


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


class FailedAttempt(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """A failed sign-in, kept briefly for failed_then_success (stored as `[at, ip]`)."""

    at: datetime
    ip: str | None


class Located(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """Where a successful sign-in came from, kept briefly for impossible travel (stored as an array)."""

    at: datetime
    country: str | None
    latitude: float | None = None
    longitude: float | None = None
    ip: str | None = None


class Profile(msgspec.Struct, frozen=True, gc=False):
    """What is normal for one user, learned from their own history; bounded in size.

    Every `(value, last seen)` list ages out entries older than its memory and keeps at most a
    configured number of the most recent ones (bot/detect/profile.py). `hours` is a 168-bucket
    hour-of-week histogram in UTC (Monday 00:00 = bucket 0), halved when it grows past its cap so
    old habits fade. `tz` is the user's IANA time zone when known (e.g. from Slack's profile).
    """

    user_principal: str
    first_seen: datetime
    countries: tuple[tuple[str, datetime], ...] = ()  # (country, last seen)
    recent_failures: tuple[FailedAttempt, ...] = ()
    sign_ins: int = 0
    asns: tuple[tuple[int, datetime], ...] = ()
    devices: tuple[tuple[str, datetime], ...] = ()
    user_agents: tuple[tuple[str, datetime], ...] = ()
    client_apps: tuple[tuple[str, datetime], ...] = ()
    known_ips: tuple[tuple[str, datetime], ...] = ()
    granted_apps: tuple[tuple[str, datetime], ...] = ()  # OAuth clients this user consented to
    hours: tuple[int, ...] = ()  # empty, or 168 counts
    recent_locations: tuple[Located, ...] = ()
    tz: str | None = None
    # (place, last seen): where this user signs in from, to about 10 km ("40.7,-74.0")
    places: tuple[tuple[str, datetime], ...] = ()

    def knows_country(self, country: str) -> bool:
        for c, _ in self.countries:  # noqa: SIM110 - every sign-in asks; any() over a generator costs 3x
            if c == country:
                return True
        return False


class CaseState(StrEnum):
    NEW = "new"
    AWAITING_USER = "awaiting_user"
    AWAITING_SOC = "awaiting_soc"
    AWAITING_SECOND_APPROVAL = "awaiting_second_approval"
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
    USER_WRONG_PERSON = "user_wrong_person"
    SOC_FIRST_APPROVAL = "soc_first_approval"
    SOC_ESCALATE = "soc_escalate"
    SOC_TAKE = "soc_take"
    USER_REMINDED = "user_reminded"
    SOC_REMINDED = "soc_reminded"
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
class Approval:
    actor: str
    at: datetime
    actions: tuple[str, ...]
    reason: str


CAMPAIGN_PREFIX = "campaign:"
# A workload identity's sign-ins (an app signing in with its own secret or certificate: app-only mail
# access) are kept under "app:<service principal id>". Nobody can be asked "was this you?" about them.
APP_PREFIX = "app:"


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
    state_since: datetime | None = None  # when the current state began: the escalation ladder counts from it
    assignee: str | None = None  # Slack id of the SOC member who took the case
    approvals: tuple[Approval, ...] = ()  # containment approvals collected so far (two-person rule)
    paged: bool = False  # on-call has an open PagerDuty alert for this case
    slack_tz: str | None = None  # the employee's time zone from their Slack profile
    plan: tuple[str, ...] = ()  # containment actions proposed for this case, in order
    plan_notes: tuple[tuple[str, str], ...] = ()  # (action, pre-flight note) shown before anyone clicks
    needs_two_approvers: bool = False
    reminders: tuple[str, ...] = ()  # ladder steps already taken ("user_reminder", "soc_reminder")
    # A campaign case (one source attacking many accounts, e.g. a password spray) has the synthetic
    # principal "campaign:<ip>" and lists the accounts it touches here; a user's own case leaves it empty.
    users: tuple[str, ...] = ()

    @property
    def is_campaign(self) -> bool:
        return self.user_principal.startswith(CAMPAIGN_PREFIX)

    @property
    def is_app(self) -> bool:
        """About a service principal (an application's own sign-ins), not a person."""
        return self.user_principal.startswith(APP_PREFIX)

    @property
    def detectors(self) -> tuple[str, ...]:
        return tuple(sorted({f.detector for f in self.findings}))
