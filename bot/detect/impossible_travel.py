"""impossible_travel: two successful sign-ins too far apart for the time between them.

Thresholds: Elastic "Microsoft Entra ID Impossible Travel Sign-in" — successful interactive
sign-ins within a 90-minute look-back, >= 500 km apart at an implied >= 800 km/h (detections.md A1).
Where a source gives no coordinates, Elastic's "M365 Identity Login from Impossible Travel
Location" rule stands in: two different countries within 15 minutes (A2).
"""

from __future__ import annotations

import math

from bot.detect import Params
from bot.detect.common import finding, from_own_network, is_successful_sign_in
from bot.model import Event, Finding, Located, Profile, Severity

ID = "impossible_travel"
KINDS = frozenset({"sign_in"})  # the event kinds it reads (bot.detect.run_all skips the rest)
EARTH_KM = 6371.0088


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


def _coords(loc: Located | Event) -> tuple[float, float] | None:
    if loc.latitude is None or loc.longitude is None:
        return None
    return loc.latitude, loc.longitude


def _where(loc: Located | Event) -> str:
    return loc.country or "an unknown country"


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if not is_successful_sign_in(event) or not event.interactive or profile is None or not profile.recent_locations:
        return None
    if from_own_network(event, params):
        return None  # a VPN's egress is where the tunnel ends, not where its user is
    for prev in reversed(profile.recent_locations):  # kept oldest first (bot.detect.profile): newest first here
        gap = event.occurred_at - prev.at
        if gap > params.travel_window:
            break  # every earlier one is further back still
        if gap.total_seconds() < 0:
            continue
        minutes = max(1, round(gap.total_seconds() / 60))
        here, there = _coords(event), _coords(prev)
        if here is not None and there is not None:
            km = distance_km(*there, *here)
            hours = max(gap.total_seconds(), 60) / 3600
            if km >= params.travel_min_km and km / hours >= params.travel_min_kmh:
                return finding(
                    ID,
                    event,
                    Severity.HIGH,
                    f"Signed in from {_where(event)} {minutes} minutes after signing in from {_where(prev)}, "
                    f"{round(km):,} km away (about {round(km / hours):,} km/h)",
                    (("distance_km", round(km)), ("minutes", minutes), ("from_ip", prev.ip), ("to_ip", event.ip)),
                )
            continue
        if gap <= params.travel_country_window and event.country and prev.country and event.country != prev.country:
            return finding(
                ID,
                event,
                Severity.HIGH,
                f"Signed in from {event.country} {minutes} minutes after signing in from {prev.country}",
                (("minutes", minutes), ("from_ip", prev.ip), ("to_ip", event.ip)),
            )
    return None
