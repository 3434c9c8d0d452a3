"""What to do with a case: a table by severity, with per-detector overrides. Pure.

Defaults follow DESIGN.md: low is recorded, medium and high ask the user first, critical skips the
question and goes to the SOC (the service also pages on-call for PAGE). A detector override can
only make the decision more urgent: a case holding a `mailbox_export` finding goes to the SOC even
when its severity alone would ask the user, because an export is an administrator's act the user
cannot vouch for. "Yes, it was me" never closes a high or critical case by itself (`yes_closes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bot.model import Decision, Severity

# Most to least urgent is the reverse of this order; overrides pick the most urgent.
URGENCY = (Decision.RECORD, Decision.ASK_USER, Decision.SOC, Decision.PAGE, Decision.AUTO_CONTAIN)

DEFAULT_BY_SEVERITY: Mapping[Severity, Decision] = MappingProxyType(
    {
        Severity.LOW: Decision.RECORD,
        Severity.MEDIUM: Decision.ASK_USER,
        Severity.HIGH: Decision.ASK_USER,
        Severity.CRITICAL: Decision.SOC,
    }
)
DEFAULT_BY_DETECTOR: Mapping[str, Decision] = MappingProxyType(
    {
        "mailbox_export": Decision.SOC,  # an admin's act: the SOC, not the user, can judge it
        "impersonation_role": Decision.SOC,  # tenant-wide reach; same reasoning
        # FullAccess / SendAs on someone else's mailbox is an Exchange administrator's act too
        # (Add-MailboxPermission, Add-RecipientPermission): the SOC judges it, not the admin's "yes"
        "mailbox_delegation": Decision.SOC,
    }
)


@dataclass(frozen=True, slots=True)
class Policy:
    by_severity: Mapping[Severity, Decision] = field(default_factory=lambda: DEFAULT_BY_SEVERITY)
    by_detector: Mapping[str, Decision] = field(default_factory=lambda: DEFAULT_BY_DETECTOR)


DEFAULT = Policy()


def most_urgent(decisions: Iterable[Decision]) -> Decision:
    return max(decisions, key=URGENCY.index, default=Decision.RECORD)


def decide(
    severity: Severity,
    policy: Policy | Mapping[Severity, Decision] | None = None,
    detectors: Iterable[str] = (),
) -> Decision:
    """The decision for a case of this severity holding findings from these detectors.

    `policy` may also be a plain severity -> decision mapping (the older form), which keeps the
    default detector overrides.
    """
    if policy is None:
        policy = DEFAULT
    elif not isinstance(policy, Policy):
        policy = Policy(by_severity={**DEFAULT_BY_SEVERITY, **policy})
    base = policy.by_severity.get(severity, DEFAULT_BY_SEVERITY[severity])
    return most_urgent([base, *(policy.by_detector[d] for d in detectors if d in policy.by_detector)])


def yes_closes(severity: Severity) -> bool:
    """A "Yes, it was me" closes low and medium cases; on high or critical the SOC still decides,
    because the attacker may hold the victim's Slack session too."""
    return severity <= Severity.MEDIUM
