"""password_spray: one address failing sign-ins for many accounts, and any success from it.

Thresholds: Sentinel "Password spray attack against Microsoft Entra ID application"
(SigninPasswordSpray): >= 5 distinct accounts failing with 50053/50126/50055 from one IP per
20 minutes, kept only when failing accounts outnumber succeeding ones (NAT'd offices succeed a
lot); detections.md A7. Microsoft's password-spray playbook ranks a *successful* sign-in from the
spraying address first, so that is the high finding; the threshold crossing itself is recorded
(low), because it does not say which, if any, account fell. A spraying address stays suspect for
Panther's 30-hour brute-force-success look-back (A10).

Cross-user, so not a per-user `detect`: `observe_spray(window, event, params)` returns the next
window and at most one finding. The window is a plain value the caller keeps per tenant.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from msgspec.structs import replace

from bot.detect import Params
from bot.detect.common import finding
from bot.model import Event, Finding, Severity

ID = "password_spray"
# Sentinel's codes for a wrong or locked password; 0 and -1 are sources that carry no code
# (Google login_failure, older O365 logon records), where every failure is a password failure.
SPRAY_CODES = frozenset({50126, 50053, 50055, 0, -1})


class Attempt(msgspec.Struct, frozen=True, gc=False):  # one per sign-in: a Struct is built in C
    at: datetime
    ip: str
    user: str
    ok: bool


class SprayWindow(msgspec.Struct, frozen=True, gc=False):
    """Recent sign-in attempts per address, and addresses caught spraying (ip -> when, how many accounts)."""

    attempts: tuple[Attempt, ...] = ()
    sprayers: tuple[tuple[str, datetime, int], ...] = ()

    def sprayer(self, ip: str) -> tuple[datetime, int] | None:
        for s_ip, at, users in self.sprayers:
            if s_ip == ip:
                return at, users
        return None


def _counts(attempts: tuple[Attempt, ...], ip: str) -> tuple[set[str], set[str]]:
    failed = {a.user for a in attempts if a.ip == ip and not a.ok}
    succeeded = {a.user for a in attempts if a.ip == ip and a.ok}
    return failed, succeeded


def observe_spray(window: SprayWindow, event: Event, params: Params) -> tuple[SprayWindow, Finding | None]:
    if event.kind != "sign_in" or event.ip is None:
        return window, None
    if not event.success and event.error_code not in SPRAY_CODES:
        return window, None  # MFA interrupts, blocked by policy…: the password was not the question
    horizon = event.occurred_at - params.spray_window
    attempts = tuple(a for a in window.attempts if a.at >= horizon)
    attempts = (*attempts, Attempt(event.occurred_at, event.ip, event.user_principal, event.success))
    attempts = attempts[-params.spray_max_attempts :]
    memory = event.occurred_at - params.spray_memory
    sprayers = tuple(s for s in window.sprayers if s[1] >= memory)
    nxt = replace(window, attempts=attempts, sprayers=sprayers)
    known = nxt.sprayer(event.ip)
    if event.success:
        if known is None:
            return nxt, None
        at, users = known
        return nxt, finding(
            ID,
            event,
            Severity.HIGH,
            f"Signed in from {event.ip}, the address that failed sign-ins for {users} accounts "
            f"in a password spray (last seen {at:%Y-%m-%d %H:%M} UTC)",
            (("ip", event.ip), ("sprayed_accounts", users)),
        )
    failed, succeeded = _counts(attempts, event.ip)
    if len(failed) < params.spray_min_users or len(failed) <= len(succeeded):
        return nxt, None
    others = tuple(s for s in sprayers if s[0] != event.ip)
    nxt = replace(nxt, sprayers=(*others, (event.ip, event.occurred_at, len(failed))))
    if known is not None:
        return nxt, None  # already reported this address; keep its count fresh, stay quiet
    minutes = max(1, round(params.spray_window.total_seconds() / 60))
    return nxt, finding(
        ID,
        event,
        Severity.LOW,
        f"{event.ip} failed sign-ins for {len(failed)} different accounts within {minutes} minutes (password spray)",
        (("ip", event.ip), ("accounts", len(failed)), ("sample", ", ".join(sorted(failed)[:5]))),
    )
