"""Findings -> case severity, and severity -> what policy does. Both are tables a person can read."""

from __future__ import annotations

from collections.abc import Iterable

from bot.model import Decision, Finding, Severity


# Severity rules, first match wins. A corroborated finding (two different detectors) is worth
# one level more than the worst single one, but corroboration alone never makes a case critical.
def case_severity(findings: Iterable[Finding]) -> Severity:
    fs = list(findings)
    if not fs:
        return Severity.LOW
    worst = max(f.severity for f in fs)
    if worst is Severity.CRITICAL:
        return worst
    if len({f.detector for f in fs}) >= 2:
        return Severity(min(worst + 1, Severity.HIGH))
    return worst


# DESIGN.md defaults: critical skips the user question and goes to the SOC (and on-call).
DEFAULT_POLICY: dict[Severity, Decision] = {
    Severity.LOW: Decision.RECORD,
    Severity.MEDIUM: Decision.ASK_USER,
    Severity.HIGH: Decision.ASK_USER,
    Severity.CRITICAL: Decision.SOC,
}


def decide(severity: Severity, policy: dict[Severity, Decision] | None = None) -> Decision:
    return (policy or DEFAULT_POLICY)[severity]


def yes_closes(severity: Severity) -> bool:
    """A "Yes, it was me" closes low and medium cases; on high or critical the SOC still decides,
    because the attacker may hold the victim's Slack session too."""
    return severity <= Severity.MEDIUM
