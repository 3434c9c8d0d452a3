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

from collections.abc import Collection
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


def counts_toward_spray(event: Event) -> bool:
    """A sign-in attempt the spray window keeps: one with an address, and a password answer."""
    if event.kind != "sign_in" or event.ip is None:
        return False
    # MFA interrupts, blocked by policy…: the password was not the question
    return event.success or event.error_code in SPRAY_CODES


def judge_spray(
    event: Event,
    known: tuple[datetime, int] | None,
    failed: Collection[str],
    succeeded: int,
    params: Params,
) -> tuple[tuple[datetime, int] | None, Finding | None]:
    """What the window says about this attempt, once it is in the window: (the address's new sprayer
    record, or None to leave it as it is; the finding, if any). `known` is the address's sprayer record
    before this attempt, `failed` the accounts that failed from it within the window, `succeeded` how
    many accounts succeeded from it. Pure; the per-tenant index (bot.detect.fleet) calls it too, so a
    cheaper window changes no decision."""
    assert event.ip is not None
    if event.success:
        if known is None:
            return None, None
        at, users = known
        return None, finding(
            ID,
            event,
            Severity.HIGH,
            f"Signed in from {event.ip}, the address that failed sign-ins for {users} accounts "
            f"in a password spray (last seen {at:%Y-%m-%d %H:%M} UTC)",
            (("ip", event.ip), ("sprayed_accounts", users)),
        )
    if len(failed) < params.spray_min_users or len(failed) <= succeeded:
        return None, None
    record = (event.occurred_at, len(failed))
    if known is not None:
        return record, None  # already reported this address; keep its count fresh, stay quiet
    minutes = max(1, round(params.spray_window.total_seconds() / 60))
    return record, finding(
        ID,
        event,
        Severity.LOW,
        f"{event.ip} failed sign-ins for {len(failed)} different accounts within {minutes} minutes (password spray)",
        (("ip", event.ip), ("accounts", len(failed)), ("sample", ", ".join(sorted(failed)[:5]))),
    )


def observe_spray(window: SprayWindow, event: Event, params: Params) -> tuple[SprayWindow, Finding | None]:
    """The reference form: the window as a plain value, every attempt kept. Each call costs what the
    window holds; the service uses bot.detect.fleet.TenantFleet, whose per-address index gives the same
    findings at a cost that does not grow with the address's traffic (tested equal)."""
    if not counts_toward_spray(event):
        return window, None
    assert event.ip is not None
    horizon = event.occurred_at - params.spray_window
    attempts = tuple(a for a in window.attempts if a.at >= horizon)
    attempts = (*attempts, Attempt(event.occurred_at, event.ip, event.user_principal, event.success))
    attempts = attempts[-params.spray_max_attempts :]
    memory = event.occurred_at - params.spray_memory
    sprayers = tuple(s for s in window.sprayers if s[1] >= memory)
    nxt = replace(window, attempts=attempts, sprayers=sprayers)
    known = nxt.sprayer(event.ip)
    failed, succeeded = _counts(attempts, event.ip) if not event.success else (set(), set())
    record, found = judge_spray(event, known, failed, len(succeeded), params)
    if record is not None:
        others = tuple(s for s in sprayers if s[0] != event.ip)
        nxt = replace(nxt, sprayers=(*others, (event.ip, *record)))
    return nxt, found
