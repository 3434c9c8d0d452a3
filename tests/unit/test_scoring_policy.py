"""The severity rule table (first match wins) and the decision policy with per-detector overrides."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.detect import detector_ids
from bot.detect.policy import DEFAULT_BY_DETECTOR, Policy, decide, most_urgent
from bot.detect.scoring import RULES, case_severity, explain, yes_closes
from bot.model import Decision, Finding, Severity

T = datetime(2026, 1, 1, tzinfo=UTC)
L, M, H, C = Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL


def f(detector: str, severity: Severity) -> Finding:
    return Finding(detector=detector, severity=severity, reason="r", event_id="e", occurred_at=T)


@pytest.mark.parametrize(
    ("findings", "expected", "rule"),
    [
        ([], L, "no findings"),
        ([f("provider_risk", C)], C, "any critical"),
        ([f("provider_risk", H), f("off_hours", L)], C, "provider risk"),
        ([f("provider_risk", M), f("new_country", M)], H, "two or more"),
        ([f("mail_bulk_access", H), f("new_country", M)], C, "mailbox collection"),
        ([f("mail_bulk_access", H), f("off_hours", L)], H, "worst single"),
        ([f("new_country", M), f("failed_then_success", H)], H, "two or more"),
        ([f("new_country", M), f("scripted_client", M)], H, "two or more"),
        ([f("new_country", M), f("off_hours", L), f("new_device", L)], M, "worst single"),
        ([f("new_country", M)], M, "worst single"),
        ([f("new_country", M), f("new_country", M)], M, "worst single"),  # one detector twice
    ],
)
def test_rule_table(findings: list[Finding], expected: Severity, rule: str) -> None:
    severity, description = explain(findings)
    assert severity is expected and case_severity(findings) is expected
    assert rule in description


def test_rules_are_described_and_the_last_always_applies() -> None:
    assert all(r.description for r in RULES)
    assert RULES[-1].applies([f("x", L)]) is L


def test_corroboration_alone_never_reaches_critical() -> None:
    many = [f(d, H) for d in ("new_country", "scripted_client", "failed_then_success", "legacy_protocol")]
    assert case_severity(many) is H


def test_default_policy_follows_design() -> None:
    assert decide(L) is Decision.RECORD and decide(M) is Decision.ASK_USER
    assert decide(H) is Decision.ASK_USER and decide(C) is Decision.SOC
    assert yes_closes(M) and not yes_closes(H) and not yes_closes(C)


def test_detector_overrides_only_raise_urgency() -> None:
    assert decide(M, detectors=["mailbox_export"]) is Decision.SOC
    assert decide(H, detectors=["impersonation_role", "new_country"]) is Decision.SOC
    assert decide(C, detectors=["mailbox_export"], policy=Policy(by_severity={C: Decision.PAGE})) is Decision.PAGE
    relaxed = Policy(by_detector={"off_hours": Decision.RECORD})
    assert decide(H, relaxed, ["off_hours"]) is Decision.ASK_USER  # cannot lower a high case
    assert set(DEFAULT_BY_DETECTOR) <= set(detector_ids())


def test_policy_per_severity_and_per_detector() -> None:
    policy = Policy(
        by_severity={L: Decision.RECORD, M: Decision.ASK_USER, H: Decision.SOC, C: Decision.AUTO_CONTAIN},
        by_detector={"password_spray": Decision.PAGE},
    )
    assert decide(H, policy) is Decision.SOC and decide(C, policy) is Decision.AUTO_CONTAIN
    assert decide(L, policy, ["password_spray"]) is Decision.PAGE
    assert decide(M, policy, ["mailbox_export"]) is Decision.ASK_USER  # this policy has no export override


def test_old_dict_policy_still_works() -> None:
    assert decide(H, {H: Decision.PAGE}) is Decision.PAGE
    assert decide(M, {H: Decision.PAGE}) is Decision.ASK_USER  # the rest falls back to the defaults
    assert most_urgent([]) is Decision.RECORD
