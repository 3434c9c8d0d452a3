"""new_country: a successful sign-in from a country this user has not signed in from before.

Warm-up: no finding until the user has `new_country_warmup` of history, so a fresh install does not
question everyone (Elastic's new-terms rules use a 7-day history; reference/detections.md A1/F10).
Medium, except from a registered device (Entra deviceId) the user already signs in with: low.
"""

from __future__ import annotations

from bot.detect import Params
from bot.detect.common import from_own_network, last_seen
from bot.model import Event, Finding, Profile, Severity

ID = "new_country"
KINDS = frozenset({"sign_in"})  # the event kinds it reads (bot.detect.run_all skips the rest)


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if event.kind != "sign_in" or not event.success or not event.country or profile is None:
        return None
    if from_own_network(event, params):
        return None  # the organisation's VPN or gateway egress: not where the person is
    if event.occurred_at - profile.first_seen < params.new_country_warmup or not profile.countries:
        return None
    if profile.knows_country(event.country):
        return None
    usual = ", ".join(c for c, _ in sorted(profile.countries, key=lambda ct: ct[1], reverse=True)[:3])
    where = f"{event.city}, {event.country}" if event.city else event.country
    own_device = bool(event.device_id) and last_seen(profile.devices, event.device_id) is not None
    tail = " on their own registered device" if own_device else ""
    return Finding(
        detector=ID,
        # A trip with the company laptop: the device id is Entra's registered-device identity, which a
        # password thief does not have (Entra's "unfamiliar sign-in properties" weighs the device the
        # same way). Low, so it is recorded and corroborates, without asking the traveller.
        severity=Severity.LOW if own_device else Severity.MEDIUM,
        reason=f"First sign-in from {where}{tail}; this user usually signs in from {usual}",
        event_id=event.event_id,
        occurred_at=event.occurred_at,
        evidence=(("country", event.country), ("usual_countries", usual)),
    )
