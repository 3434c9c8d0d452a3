"""Scoped, expiring allow entries: what a "Yes, it was me", a SOC benign verdict or an approved trip
permits. Pure.

An entry names one user and one concrete thing (a country, a network, an app or client) and ends on
a date. There is deliberately no "mute this detector" entry: peers that mute by alert title after one
"yes" teach attackers that one click buys permanent silence (reference/peers.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from bot.model import Event, Finding, Profile

SCOPES = ("country", "asn", "app")


@dataclass(frozen=True, slots=True)
class AllowEntry:
    user_principal: str
    scope: str  # one of SCOPES
    value: str
    expires_at: datetime
    reason: str
    created_by: str  # Slack id, or "user" for the subject's own "Yes"
    source: str  # user_confirmed | soc_benign | travel
    id: int | None = None


def scope_value(scope: str, event: Event) -> str | None:
    """The value an entry of this scope would pin, taken from the event the case was about."""
    if scope == "country":
        return event.country
    if scope == "asn":
        asn = getattr(event, "asn", None)
        return str(asn) if asn is not None else None
    if scope == "app":
        return event.client_app or event.app
    return None


# A "Yes, it was me" pins everything the user actually confirmed, all at once: the country, and the
# network (ASN) and client when the record names them ("country=PT;asn=3243;client=Browser").
# It never reaches the SOC's scope menu (SCOPES): it is written by the user's own answer only.
CONTEXT = "context"
CONTEXT_PARTS = ("country", "asn", "client")


def context_parts(event: Event) -> tuple[tuple[str, str], ...]:
    """(part, value) pairs of the confirmed context that this event carries."""
    values = (event.country, str(event.asn) if event.asn is not None else None, event.client_app)
    return tuple((name, v) for name, v in zip(CONTEXT_PARTS, values, strict=True) if v)


def context_value(event: Event) -> str | None:
    parts = context_parts(event)
    return ";".join(f"{k}={v}" for k, v in parts) if parts and parts[0][0] == "country" else None


def _context_covers(value: str, event: Event) -> bool:
    wanted = dict(p.split("=", 1) for p in value.split(";") if "=" in p)
    have = dict(context_parts(event))
    return bool(wanted) and all(have.get(k, "").lower() == v.lower() for k, v in wanted.items())


def covers(entry: AllowEntry, event: Event, now: datetime) -> bool:
    if entry.user_principal != event.user_principal or now >= entry.expires_at:
        return False
    if entry.scope == CONTEXT:
        return _context_covers(entry.value, event)
    value = scope_value(entry.scope, event)
    return value is not None and value.lower() == entry.value.lower()


def allowed(entries: Iterable[AllowEntry], event: Event, now: datetime) -> AllowEntry | None:
    return next((e for e in entries if covers(e, event, now)), None)


# What each scope may quiet. Never credential theft, exports, grants or provider alerts: an allowed
# country says nothing about a password being guessed from it.
SCOPE_SUPPRESSES: dict[str, frozenset[str]] = {
    "country": frozenset({"new_country", "impossible_travel", "off_hours"}),
    "asn": frozenset({"new_asn", "new_country", "impossible_travel"}),
    "app": frozenset({"new_device", "legacy_protocol"}),
    # the exact place, network and client the user confirmed: the "new" and "odd hour" findings about it
    CONTEXT: frozenset({"new_country", "new_asn", "impossible_travel", "off_hours", "new_device"}),
}


def unsuppressed(findings: Iterable[Finding], entries: Iterable[AllowEntry], event: Event) -> list[Finding]:
    """The findings left after the user's allow entries have spoken for this event."""
    quiet: set[str] = set()
    for entry in entries:
        if covers(entry, event, event.occurred_at):
            quiet |= SCOPE_SUPPRESSES.get(entry.scope, frozenset())
            if entry.scope == CONTEXT and "client=" in entry.value:
                quiet.add("legacy_protocol")  # the user confirmed this very client from this very network
    return [f for f in findings if f.detector not in quiet]


@dataclass(frozen=True, slots=True)
class Watch:
    """A user on the watchlist after a contained incident: stricter thresholds until `expires_at`,
    and until `quiet_until` no new case from their usual places for what was already contained."""

    user_principal: str
    case_id: str
    contained_at: datetime
    expires_at: datetime
    quiet_until: datetime
    detectors: frozenset[str] = frozenset()
    ips: frozenset[str] = frozenset()
    countries: frozenset[str] = frozenset()
    asns: frozenset[int] = frozenset()


def _usual(event: Event, profile: Profile | None, w: Watch) -> bool:
    """The user's own place and device (known before this event, and not the attacker's)."""
    if profile is None:
        return False
    if event.ip in w.ips or event.country in w.countries or (event.asn is not None and event.asn in w.asns):
        return False
    known_ip = event.ip is not None and any(ip == event.ip for ip, _ in profile.known_ips)
    known_net = (
        event.country is not None
        and profile.knows_country(event.country)
        and (event.asn is None or any(a == event.asn for a, _ in profile.asns))
    )
    if not (known_ip or known_net):
        return False
    dev = event.device_id or event.device
    return dev is None or not profile.devices or any(d == dev for d, _ in profile.devices)


def after_containment(
    findings: Iterable[Finding], watches: Iterable[Watch], event: Event, profile: Profile | None
) -> list[Finding]:
    """No revoke -> sign in again -> new alert loop: within a containment's quiet period, findings of
    the detectors that case already had are dropped when the user signs in from their usual place and
    device. A new address, country or network, or a different detector, is new evidence and stays."""
    out = list(findings)
    for w in watches:
        if w.user_principal != event.user_principal or not w.contained_at <= event.occurred_at < w.quiet_until:
            continue
        if _usual(event, profile, w):
            out = [f for f in out if f.detector not in w.detectors]
    return out
