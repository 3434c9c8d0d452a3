"""failed_then_success: a run of failed sign-ins, then a success (password guessed or sprayed).

Thresholds: Panther's brute-force-success pattern fires on >= 5 failures then a success; Sentinel's
SigninBruteForce-AzurePortal uses a 20-minute session window (reference/detections.md A10). Only
failures that may be a wrong password count (common.PASSWORD_WAS_RIGHT: MFA, consent and token
interrupts, which Sentinel reads as the password being right, do not).
"""

from __future__ import annotations

from bot.detect import Params
from bot.model import Event, Finding, Profile, Severity

ID = "failed_then_success"
KINDS = frozenset({"sign_in"})  # the event kinds it reads (bot.detect.run_all skips the rest)


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if profile is None or event.kind != "sign_in" or not event.success:
        return None
    if len(profile.recent_failures) < params.failed_then_success_min_failures:
        return None  # the usual case, decided without reading the clock
    start = event.occurred_at - params.failed_then_success_window
    failures = [f for f in profile.recent_failures if start <= f.at <= event.occurred_at]
    if len(failures) < params.failed_then_success_min_failures:
        return None
    minutes = max(1, round((event.occurred_at - failures[0].at).total_seconds() / 60))
    ips = sorted({f.ip for f in failures if f.ip})
    same_ip = event.ip is not None and event.ip in ips
    origin = f" from {event.ip}" if event.ip else ""
    reason = f"{len(failures)} failed sign-ins in {minutes} minutes, then a success{origin}"
    if same_ip:
        reason += " (the same address that failed)"
    return Finding(
        detector=ID,
        severity=Severity.HIGH,
        reason=reason,
        event_id=event.event_id,
        occurred_at=event.occurred_at,
        evidence=(("failures", str(len(failures))), ("failing_ips", ", ".join(ips[:5]) or "unknown")),
    )
