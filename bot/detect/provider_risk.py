"""provider_risk: Microsoft or Google itself says this account or sign-in is at risk.

Entra: Sigma's Identity Protection rules, one per riskEventType, and Elastic's "sign-in risk
detected" (skip riskState remediated, dismissed, confirmedSafe; detections.md A3); a sign-in whose
riskLevelDuringSignIn is medium or high (Elastic/Panther high-risk sign-in, A4; Panther's
passthrough uses the level as severity). Google: Sigma/Panther suspicious login, government attack
warning (Panther: critical), leaked password (F1–F3), `is_suspicious` (Panther
GSuite.IsSuspiciousTag, F5), and Alert Center identity alerts with their own severity (F13).
"""

from __future__ import annotations

from bot.detect import Params
from bot.detect.common import clip, finding
from bot.model import Event, Finding, Profile, Severity

ID = "provider_risk"
KINDS = frozenset({"risk", "sign_in", "other"})  # the event kinds it reads (bot.detect.run_all skips the rest)

CLOSED = frozenset({"remediated", "dismissed", "confirmedsafe"})
LEVELS = {"low": Severity.LOW, "medium": Severity.MEDIUM, "high": Severity.HIGH}
# Entra risk types that mean the credentials or the token are in someone else's hands.
COMPROMISE = frozenset(
    {"leakedCredentials", "anomalousToken", "tokenIssuerAnomaly", "attemptedPrtAccess", "adminConfirmedUserCompromised"}
)
GOV_ATTACK = (Severity.CRITICAL, "Google warns that government-backed attackers target this account")
GOOGLE = {
    "gov_attack_warning": GOV_ATTACK,
    "Government attack warning": GOV_ATTACK,
    "Government-backed attacks": GOV_ATTACK,
    "account_disabled_password_leak": (Severity.HIGH, "Google disabled the account because its password leaked"),
    "Leaked password": (Severity.HIGH, "Google found this account's password in a leak"),
    "account_disabled_hijacked": (Severity.HIGH, "Google disabled the account as hijacked"),
    "suspicious_login": (Severity.MEDIUM, "Google blocked a suspicious sign-in"),
    "suspicious_login_less_secure_app": (Severity.MEDIUM, "Google blocked a suspicious sign-in from a less secure app"),
    "suspicious_programmatic_login": (Severity.MEDIUM, "Google blocked a suspicious programmatic sign-in"),
    "user_signed_out_due_to_suspicious_session_cookie": (
        Severity.HIGH,
        "Google signed the user out because a session cookie was used suspiciously",
    ),
    "Suspicious login": (Severity.MEDIUM, "Google reports a suspicious sign-in"),
    "Suspicious programmatic login": (Severity.MEDIUM, "Google reports a suspicious programmatic sign-in"),
    "User suspended (suspicious activity)": (Severity.HIGH, "Google suspended the user for suspicious activity"),
}


def _entra_risk(event: Event) -> Finding | None:
    if (event.risk_state or "").lower() in CLOSED:
        return None
    kinds = ", ".join(event.risk_types) or "a risk"
    level = (event.risk_level or "").lower()
    severity = LEVELS.get(level, Severity.MEDIUM)  # "hidden" without a P2 licence: the type still matters
    if COMPROMISE.intersection(event.risk_types):
        severity = max(severity, Severity.HIGH)
    level_text = f" ({level} risk)" if level in LEVELS else ""
    if event.risk_types == ("riskyUser",):
        if level not in LEVELS:
            return None  # "none", or "hidden" without P2: nothing to act on
        return finding(
            ID,
            event,
            severity,
            f"Microsoft Entra ID Protection rates this account {level} risk ({clip(event.risk_state, 40)})",
            (("risk_level", event.risk_level), ("risk_state", event.risk_state)),
        )
    return finding(
        ID,
        event,
        severity,
        f"Microsoft Entra ID Protection detected {kinds}{level_text} for this account",
        (("risk_types", kinds), ("risk_level", event.risk_level), ("risk_state", event.risk_state), ("ip", event.ip)),
    )


def _google(event: Event) -> Finding | None:
    for name in event.risk_types:
        if name in GOOGLE:
            severity, sentence = GOOGLE[name]
            provider_level = LEVELS.get((event.risk_level or "").lower())
            if event.source == "gws_alert" and provider_level is not None and severity is not Severity.CRITICAL:
                severity = provider_level  # Alert Center's own severity, as Elastic's promotion rule keeps it
            ip = f" (from {event.ip})" if event.ip else ""
            return finding(ID, event, severity, sentence + ip, (("signal", clip(name, 60)), ("ip", event.ip)))
    return None


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if event.kind == "risk":
        if event.source == "entra_risk":
            return _entra_risk(event)
        return _google(event)
    if event.kind in ("sign_in", "other") and event.success and "suspicious" in event.flags:
        return finding(
            ID,
            event,
            Severity.MEDIUM,
            f"Google marked this {clip(event.operation, 40) or 'sign-in'} as suspicious"
            + (f" (from {event.ip})" if event.ip else ""),
            (("signal", "is_suspicious"), ("ip", event.ip)),
        )
    if event.kind == "sign_in" and event.success and (event.risk_level or "") in ("medium", "high"):
        if (event.risk_state or "").lower() in CLOSED:
            return None
        return finding(
            ID,
            event,
            LEVELS[event.risk_level or "medium"],
            f"Microsoft rated this sign-in {event.risk_level} risk"
            + (f" ({', '.join(event.risk_types)})" if event.risk_types else ""),
            (("risk_level", event.risk_level), ("risk_types", ", ".join(event.risk_types)), ("ip", event.ip)),
        )
    return None
