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

from bot.model import Event, Finding

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


def covers(entry: AllowEntry, event: Event, now: datetime) -> bool:
    if entry.user_principal != event.user_principal or now >= entry.expires_at:
        return False
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
}


def unsuppressed(findings: Iterable[Finding], entries: Iterable[AllowEntry], event: Event) -> list[Finding]:
    """The findings left after the user's allow entries have spoken for this event."""
    quiet: set[str] = set()
    for entry in entries:
        if covers(entry, event, event.occurred_at):
            quiet |= SCOPE_SUPPRESSES.get(entry.scope, frozenset())
    return [f for f in findings if f.detector not in quiet]
