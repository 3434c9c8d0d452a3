"""impossible_travel: two successful sign-ins too far apart for the time between them.

Thresholds: Elastic "Microsoft Entra ID Impossible Travel Sign-in" — successful interactive
sign-ins within a 90-minute look-back, >= 500 km apart at an implied >= 800 km/h (detections.md A1).
Where a source gives no coordinates, Elastic's "M365 Identity Login from Impossible Travel
Location" rule stands in: two different countries within 15 minutes (A2). A sign-in from a place the
user has signed in from before (within 50 km, in the baseline's memory) is not travel, and none
is reported before the user's baseline warm-up has passed: Entra's atypical travel skips locations the
user regularly uses and learns them first, for 14 days or 10 sign-ins
(learn.microsoft.com/entra/id-protection/concept-identity-protection-risks#atypical-travel), and
Elastic's rule names mobile carrier hubs and VPN egress among its false positives (A1, A3).
"""

from __future__ import annotations

import math

from bot.detect import Params
from bot.detect.common import finding, from_own_network, is_successful_sign_in, warmed_up
from bot.model import Event, Finding, Located, Profile, Severity

ID = "impossible_travel"
KINDS = frozenset({"sign_in"})  # the event kinds it reads (bot.detect.run_all skips the rest)
EARTH_KM = 6371.0088
FAMILIAR_KM = 50.0  # a metropolitan area: city-level geolocation of one place varies within it


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


def _familiar(here: tuple[float, float], profile: Profile) -> bool:
    """Within FAMILIAR_KM of a place the user has signed in from (geolocation of one city varies by a
    few kilometres from address to address). Asked only of a sign-in that would otherwise be travel."""
    for key, _ in profile.places:
        lat, _, lon = key.partition(",")
        if distance_km(float(lat), float(lon), *here) <= FAMILIAR_KM:
            return True
    return False


def _where(loc: Located | Event) -> str:
    return loc.country or "an unknown country"


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if not is_successful_sign_in(event) or not event.interactive or profile is None or not profile.recent_locations:
        return None
    if from_own_network(event, params):
        return None  # a VPN's egress is where the tunnel ends, not where its user is
    if not warmed_up(profile, event, params.baseline_warmup):
        return None  # the places a person signs in from are still being learned
    here = _coords(event)
    for prev in reversed(profile.recent_locations):  # kept oldest first (bot.detect.profile): newest first here
        gap = event.occurred_at - prev.at
        if gap > params.travel_window:
            break  # every earlier one is further back still
        if gap.total_seconds() < 0:
            continue
        minutes = max(1, round(gap.total_seconds() / 60))
        there = _coords(prev)
        if here is not None and there is not None:
            km = distance_km(*there, *here)
            hours = max(gap.total_seconds(), 60) / 3600
            if km >= params.travel_min_km and km / hours >= params.travel_min_kmh:
                if _familiar(here, profile):
                    # A place this user signs in from already: a phone whose carrier's addresses geolocate
                    # to the gateway city, a second office. A place they have never been is what stands out.
                    return None
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
