"""Findings -> case severity, as a table of rules a person can read. First match wins.

Decisions (severity -> ask / SOC / page…) live in bot/detect/policy.py; `decide` and
`yes_closes` are re-exported here so existing imports keep working.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from bot.detect.common import COLLECTION, SIGN_IN_ANOMALIES
from bot.detect.policy import DEFAULT_BY_SEVERITY, decide, yes_closes
from bot.model import Decision, Finding, Severity

__all__ = ["DEFAULT_POLICY", "RULES", "SeverityRule", "case_severity", "decide", "explain", "yes_closes"]

# Kept for callers that read the old name; the full table with overrides is policy.DEFAULT.
DEFAULT_POLICY: Mapping[Severity, Decision] = DEFAULT_BY_SEVERITY


@dataclass(frozen=True, slots=True)
class SeverityRule:
    description: str
    applies: Callable[[Sequence[Finding]], Severity | None]


def _worst(fs: Sequence[Finding]) -> Severity:
    return max(f.severity for f in fs)


def _with(fs: Sequence[Finding], detectors: frozenset[str], at_least: Severity) -> bool:
    return any(f.detector in detectors and f.severity >= at_least for f in fs)


def _no_findings(fs: Sequence[Finding]) -> Severity | None:
    return Severity.LOW if not fs else None


def _any_critical(fs: Sequence[Finding]) -> Severity | None:
    return Severity.CRITICAL if _worst(fs) is Severity.CRITICAL else None


def _provider_and_sign_in(fs: Sequence[Finding]) -> Severity | None:
    provider = _with(fs, frozenset({"provider_risk"}), Severity.HIGH)
    return Severity.CRITICAL if provider and _with(fs, SIGN_IN_ANOMALIES, Severity.LOW) else None


def _collection_and_sign_in(fs: Sequence[Finding]) -> Severity | None:
    collected = _with(fs, COLLECTION, Severity.HIGH)
    return Severity.CRITICAL if collected and _with(fs, SIGN_IN_ANOMALIES, Severity.MEDIUM) else None


def _corroborated(fs: Sequence[Finding]) -> Severity | None:
    if len({f.detector for f in fs if f.severity >= Severity.MEDIUM}) < 2:
        return None
    return Severity(min(_worst(fs) + 1, Severity.HIGH))


# Entra ID Protection's "unfamiliar sign-in properties" (riskEventType unfamiliarFeatures,
# detections.md A3) weighs a sign-in's location, network, device and time together: each alone is
# everyday life (a trip, a new phone, a late night), several at once on one sign-in is how someone
# else's session looks. A new country always comes with a new network, so the two count as one.
UNFAMILIAR: Mapping[str, str] = {
    "new_country": "where",
    "new_asn": "where",
    "new_device": "device",
    "off_hours": "when",
}


def _unfamiliar(fs: Sequence[Finding]) -> Severity | None:
    if _worst(fs) >= Severity.MEDIUM:
        return None  # already worth asking: the worst finding decides
    seen: dict[str, set[str]] = {}
    for f in fs:
        if f.detector in UNFAMILIAR:
            seen.setdefault(f.event_id, set()).add(UNFAMILIAR[f.detector])
    if any(len(dims) >= 2 for dims in seen.values()):
        return Severity.MEDIUM
    return None


def _worst_single(fs: Sequence[Finding]) -> Severity | None:
    return _worst(fs)


RULES: tuple[SeverityRule, ...] = (
    SeverityRule("no findings → low", _no_findings),
    SeverityRule("any critical finding → critical", _any_critical),
    SeverityRule(
        "a high provider risk signal (Entra ID Protection, Google) plus any sign-in anomaly → critical",
        _provider_and_sign_in,
    ),
    SeverityRule(
        "high mailbox collection (bulk reads, throttled audit, export, forwarding) plus a medium or worse "
        "sign-in anomaly → critical: the whole T1114.002 chain is in view",
        _collection_and_sign_in,
    ),
    SeverityRule(
        "two or more distinct detectors at medium or worse → one level above the worst, at most high "
        "(corroboration alone never makes a case critical; low context findings do not corroborate)",
        _corroborated,
    ),
    SeverityRule(
        "low findings only, but one sign-in unfamiliar in two or more ways (where: new country or network; "
        "device; time) → medium, as Entra's unfamiliar sign-in properties",
        _unfamiliar,
    ),
    SeverityRule("otherwise → the worst single finding", _worst_single),
)


def explain(findings: Iterable[Finding]) -> tuple[Severity, str]:
    """The case severity and the description of the rule that decided it."""
    fs = list(findings)
    for rule in RULES:
        verdict = rule.applies(fs)
        if verdict is not None:
            return verdict, rule.description
    raise AssertionError("the last rule always applies")


def case_severity(findings: Iterable[Finding]) -> Severity:
    return explain(findings)[0]
