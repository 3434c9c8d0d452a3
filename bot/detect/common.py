"""Small helpers the detectors share: building a Finding, reading a profile's memory. Pure."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from bot.model import Event, Finding, Profile, Severity

if TYPE_CHECKING:
    from bot.detect import IPNetwork, Params

K = TypeVar("K")

# Detectors that say something about the sign-in itself (where, how, when, pattern). Scoring uses
# this to recognise "a provider risk signal or mailbox collection *and* an odd sign-in".
SIGN_IN_ANOMALIES = frozenset(
    {
        "new_country",
        "new_asn",
        "impossible_travel",
        "risky_ip",
        "failed_then_success",
        "password_spray",
        "scripted_client",
        "legacy_protocol",
        "new_device",
        "off_hours",
    }
)
# Detectors that see mail actually leaving or being read in bulk.
COLLECTION = frozenset({"mail_bulk_access", "audit_throttled", "mailbox_export", "mail_forwarding"})

# Entra sign-in errors that are not a wrong password: the password was right (or none was tried) and
# something else stopped the sign-in: MFA or a conditional-access policy required, an expired password,
# a "stay signed in?" or consent interrupt, a token to refresh. Sentinel's SigninPasswordSpray counts an
# account with one of these as *successful* (detections.md A7), SigninBruteForce-AzurePortal reads
# 50125/50140/70043/70044 as success (A10), and 50058 is a silent single sign-on attempt with nobody
# signed in (AADSTS error reference). A refresh token or session that expired or was revoked (50089,
# 50132, 50133, 50173, 70000, 70008, 700082 in the same reference) tried no password at all: every
# app of a user whose sessions were just revoked, or who just changed their password, fails so until
# they sign in again. A run of them is an ordinary morning (an MFA sign-in is a 50074, then a 0; a
# laptop waking up refreshes every app's token), not someone guessing a password.
PASSWORD_WAS_RIGHT = frozenset(
    {
        50005, 50055, 50057, 50058, 50072, 50074, 50076, 50079, 50089, 50105, 50125, 50129, 50132, 50133,
        50140, 50155, 50158, 50173, 53000, 53001, 53003, 70000, 70008, 70043, 70044, 700082,
    }
)  # fmt: skip


def is_failed_password(event: Event) -> bool:
    """A failed sign-in that may be a wrong password (what failed_then_success counts)."""
    return event.kind == "sign_in" and not event.success and event.error_code not in PASSWORD_WAS_RIGHT


def clip(value: str | None, limit: int = 80) -> str:
    """Attacker-controlled text shortened for a reason sentence (cards escape it later)."""
    if not value:
        return ""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def finding(
    detector: str,
    event: Event,
    severity: Severity,
    reason: str,
    evidence: Iterable[tuple[str, str | int | None]] = (),
) -> Finding:
    return Finding(
        detector=detector,
        severity=severity,
        reason=reason,
        event_id=event.event_id,
        occurred_at=event.occurred_at,
        evidence=tuple((k, clip(str(v), 300)) for k, v in evidence if v is not None and str(v) != ""),
    )


def warmed_up(profile: Profile | None, event: Event, warmup: timedelta) -> bool:
    """The user has enough history for a "new X" finding to mean something."""
    return profile is not None and profile.sign_ins > 0 and event.occurred_at - profile.first_seen >= warmup


def last_seen(entries: Iterable[tuple[K, datetime]], key: K) -> datetime | None:
    for k, t in entries:
        if k == key:
            return t
    return None


def usual(entries: Iterable[tuple[K, datetime]], n: int = 3) -> str:
    """The n most recently seen values, for "usually from X, Y" sentences."""
    recent = sorted(entries, key=lambda kt: kt[1], reverse=True)[:n]
    return ", ".join(clip(str(k), 40) for k, _ in recent)


def is_successful_sign_in(event: Event) -> bool:
    return event.kind == "sign_in" and event.success


def from_own_network(event: Event, params: Params) -> bool:
    """The event came through the organisation's own egress (Params.own_networks)."""
    return bool(params.own_networks) and event.ip is not None and within(event.ip, params.own_networks)


def within(ip: str, networks: tuple[IPNetwork, ...]) -> bool:
    """`ip` lies in one of `networks`. Answers are cached per address (a tenant's sign-ins come from a few
    thousand addresses, again and again) in a cache of that list's own, found by the list's identity:
    keying one cache on (ip, networks) would hash every network of an operator's threat list on every
    call (about 1 ms for 5,000 networks)."""
    entry = _MATCHERS.get(id(networks))
    if entry is None or entry[0] is not networks:
        if len(_MATCHERS) >= 16:
            _MATCHERS.clear()  # a few lists live for the process's life; anything more is churn
        entry = (networks, functools.lru_cache(maxsize=4096)(functools.partial(_scan, networks)))
        _MATCHERS[id(networks)] = entry  # holding the list keeps its id from being reused
    return entry[1](ip)


_MATCHERS: dict[int, tuple[tuple[IPNetwork, ...], Callable[[str], bool]]] = {}


def _scan(networks: tuple[IPNetwork, ...], ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr.version == net.version and addr in net for net in networks)
