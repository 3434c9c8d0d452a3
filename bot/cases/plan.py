"""Which containment actions to propose for a case. Pure.

The SOC modal pre-checks these; anything registered can still be ticked by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.model import Case, Finding, Severity

# Detector -> the foothold it implies -> the action that removes it.
FOOTHOLD_ACTIONS: dict[str, tuple[str, ...]] = {
    "oauth_mail_consent": ("revoke_app_consent",),
    "mail_forwarding": ("remove_forwarding",),
    "mailbox_delegation": ("remove_delegation",),
    "provider_risk": ("confirm_compromised",),
}

BASELINE = ("revoke_sessions",)
# A stolen password (failures then success, a leak alert) is only contained by changing it.
CREDENTIAL_THEFT = frozenset({"failed_then_success", "password_spray", "provider_risk", "legacy_protocol"})


def propose(findings: Iterable[Finding], severity: Severity, available: Iterable[str]) -> tuple[str, ...]:
    fs = list(findings)
    detectors = {f.detector for f in fs}
    wanted: list[str] = list(BASELINE)
    if detectors & CREDENTIAL_THEFT or severity >= Severity.HIGH:
        wanted += ["reset_password", "require_mfa"]
    for d in sorted(detectors):
        wanted += FOOTHOLD_ACTIONS.get(d, ())
    if severity is Severity.CRITICAL:
        wanted.append("block_sign_in")
    have = set(available)
    return tuple(dict.fromkeys(a for a in wanted if a in have))  # ordered, without repeats


def action_context(case: Case) -> dict[str, Any]:
    """What containment needs beyond the user (actions.base.ActionContext as JSON), from the evidence.

    The incident window starts an hour before the first event of the case: MFA methods or inbox rules
    created since then are the attacker's suspects."""
    first = min((e.occurred_at for e in case.events), default=case.opened_at)
    clients = [
        v for f in case.findings if f.detector == "oauth_mail_consent" for k, v in f.evidence if k == "client_id"
    ]
    return {
        "case_id": case.id,
        "window_start": (first - INCIDENT_LEAD).isoformat(),
        "service_principal_ids": list(dict.fromkeys(clients)),
        "rule_ids": [],
        "rule_names": [],
    }


INCIDENT_LEAD = timedelta(hours=1)


def off_hours(at: datetime, tz: str | None, start_hour: int, end_hour: int) -> bool:
    """Is `at` outside [start_hour, end_hour) in the employee's own time zone (UTC when unknown)?"""
    try:
        local = at.astimezone(ZoneInfo(tz)) if tz else at
    except (ZoneInfoNotFoundError, ValueError):
        local = at
    return not start_hour <= local.hour < end_hour
