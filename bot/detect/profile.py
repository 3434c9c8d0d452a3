"""A user's baseline, updated one event at a time. Pure and bounded: old entries age out.

Only the user's own *successful* sign-ins teach the baseline (an attacker's failures must not
become "usual"); failed passwords (not MFA or token interrupts) are kept briefly for
failed_then_success; consents remember which OAuth clients the user already granted. Every list
keeps `(value, last seen)` pairs, drops those older than its memory and keeps at most its limit,
newest last. The hour-of-week histogram is halved whenever it passes `hours_cap`, so last year's
habits fade.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime, timedelta
from typing import TypeVar

from msgspec.structs import replace

from bot.detect import Params
from bot.detect.common import from_own_network, is_failed_password
from bot.model import Event, FailedAttempt, Located, Profile

K = TypeVar("K", bound=Hashable)

HOURS_PER_WEEK = 168
# Google logs a sign-in's challenges (2-step verification, a "verify it's you" check) as events of their
# own, moments before its login_success (api-contracts.md, login application): learning from a passed
# one as well would count that sign-in twice, its hour of the week too. A failed one still counts as a
# failure, as Entra's failed MFA (500121) does.
SIGN_IN_STEPS = frozenset({"login_challenge", "login_verification"})


def remember(
    entries: tuple[tuple[K, datetime], ...], key: K, at: datetime, memory: timedelta, limit: int
) -> tuple[tuple[K, datetime], ...]:
    """Record `key` as seen at `at`, age out what is older than `memory`, keep the newest `limit`."""
    horizon = at - memory
    if not entries or (entries[-1][1] <= at and entries[0][1] >= horizon):
        # The usual case, in event-time order with nothing to age out: move `key` to the end.
        # Same result as below, without building a dict and sorting (the pipeline's hot path).
        if entries and entries[-1][0] == key:
            out = (*entries[:-1], (key, at))  # the commonest of all: the same network, device, app again
        else:
            out = (*(kt for kt in entries if kt[0] != key), (key, at))
        return out if len(out) <= limit else out[-limit:] if limit > 0 else ()
    seen = dict(entries)
    prev = seen.get(key)
    if prev is None or prev < at:
        seen[key] = at
    fresh = sorted(((k, t) for k, t in seen.items() if t >= horizon), key=lambda kt: kt[1])
    return tuple(fresh[-limit:]) if limit > 0 else ()


def device_key(event: Event) -> str | None:
    """The device as Entra knows it (deviceId), else its OS / browser pair."""
    return event.device_id or event.device or None


def hour_of_week(at: datetime) -> int:
    return at.weekday() * 24 + at.hour


def add_hour(hours: tuple[int, ...], at: datetime, cap: int, at_most: int | None = None) -> tuple[int, ...]:
    """One more sign-in in `at`'s hour of the week; halved past `cap`. `at_most` is a known upper bound
    of the total (the user's sign-in count): below the cap it spares summing 168 buckets."""
    counts = list(hours) if len(hours) == HOURS_PER_WEEK else [0] * HOURS_PER_WEEK
    counts[hour_of_week(at)] += 1
    if (at_most is None or at_most > cap) and sum(counts) > cap:
        counts = [c // 2 for c in counts]
    return tuple(counts)


def with_tz(profile: Profile, tz: str | None) -> Profile:
    """The user's IANA time zone (e.g. Slack's `tz`), learned outside the log records."""
    return profile if profile.tz == tz else replace(profile, tz=tz)


def _locations(p: Profile, event: Event, params: Params) -> tuple[Located, ...]:
    if not event.country and event.latitude is None:
        return p.recent_locations
    horizon = event.occurred_at - max(params.travel_window, params.travel_country_window)
    here = Located(
        at=event.occurred_at, country=event.country, latitude=event.latitude, longitude=event.longitude, ip=event.ip
    )
    old = p.recent_locations
    if not old or old[-1].at < horizon:
        return (here,)  # nothing recent: the usual case for a person's next sign-in hours later
    # An earlier sign-in from the very same place (address, country, coordinates) says nothing the newer
    # one does not: impossible_travel finds the newer first and, being closer in time, it implies the
    # higher speed. Keeping only the newest keeps the list short for people who stay put.
    kept = [loc for loc in old if loc.at >= horizon and not (loc.at <= here.at and _same_place(loc, here))]
    if not kept or kept[-1].at <= here.at:
        kept.append(here)  # in event-time order: already sorted
    else:
        kept = sorted([*kept, here], key=lambda loc: loc.at)
    return tuple(kept[-params.max_locations :])


def place_key(latitude: float, longitude: float) -> str:
    """A place to about 10 km: geolocation gives a city's coordinates, the same every time."""
    return f"{latitude:.1f},{longitude:.1f}"


def _same_place(a: Located, b: Located) -> bool:
    return a.ip == b.ip and a.country == b.country and a.latitude == b.latitude and a.longitude == b.longitude


def _learn_sign_in(p: Profile, event: Event, params: Params) -> Profile:
    at, memory = event.occurred_at, params.baseline_memory
    if from_own_network(event, params):
        # The organisation's VPN or gateway: its country, network and place are the egress's, not the
        # person's, and learning them would hide an outsider who signs in from that country later.
        event = replace(event, country=None, asn=None, latitude=None, longitude=None)
    countries = p.countries
    if event.country:
        countries = remember(countries, event.country, at, params.country_memory, params.max_countries)
    else:  # still age out what is old, as before
        horizon = at - params.country_memory
        countries = tuple(ct for ct in countries if ct[1] >= horizon)[-params.max_countries :]
    dev = device_key(event)
    return replace(
        p,
        countries=countries,
        sign_ins=p.sign_ins + 1,
        asns=remember(p.asns, event.asn, at, memory, params.max_asns) if event.asn is not None else p.asns,
        devices=remember(p.devices, dev, at, memory, params.max_devices) if dev else p.devices,
        user_agents=remember(p.user_agents, event.user_agent, at, memory, params.max_user_agents)
        if event.user_agent
        else p.user_agents,
        client_apps=remember(p.client_apps, event.client_app, at, memory, params.max_client_apps)
        if event.client_app
        else p.client_apps,
        known_ips=remember(p.known_ips, event.ip, at, memory, params.max_known_ips) if event.ip else p.known_ips,
        # Non-interactive sign-ins are token refreshes at any hour; only a person's sign-ins say when they work.
        # the hours count a subset of the sign-ins (halving only lowers them): a bound for the total
        hours=add_hour(p.hours, at, params.hours_cap, at_most=p.sign_ins + 1) if event.interactive else p.hours,
        recent_locations=_locations(p, event, params),
        places=remember(p.places, place_key(event.latitude, event.longitude), at, memory, params.max_places)
        if event.latitude is not None and event.longitude is not None
        else p.places,
    )


def observe(profile: Profile | None, event: Event, params: Params) -> Profile:
    p = profile or Profile(user_principal=event.user_principal, first_seen=event.occurred_at)
    if event.occurred_at < p.first_seen:
        p = replace(p, first_seen=event.occurred_at)
    if event.kind == "consent" and event.success and (event.app_id or event.target):
        key = event.app_id or event.target or ""
        return replace(
            p,
            granted_apps=remember(
                p.granted_apps, key, event.occurred_at, params.consent_memory, params.max_granted_apps
            ),
        )
    if event.kind != "sign_in":
        return p
    if not event.success:
        if not is_failed_password(event):
            return p  # an interrupt (MFA, consent, a token to refresh): neither a guess nor a habit
        horizon = event.occurred_at - params.failed_then_success_window
        kept = tuple(f for f in p.recent_failures if f.at >= horizon)
        kept = (*kept, FailedAttempt(at=event.occurred_at, ip=event.ip))
        return replace(p, recent_failures=tuple(sorted(kept, key=lambda f: f.at))[-params.max_failures_kept :])
    if event.operation in SIGN_IN_STEPS:
        return p  # the login_success that follows is the sign-in
    return _learn_sign_in(p, event, params)


def forget(
    profile: Profile,
    *,
    ips: frozenset[str] = frozenset(),
    countries: frozenset[str] = frozenset(),
    asns: frozenset[int] = frozenset(),
    devices: frozenset[str] = frozenset(),
    places: frozenset[str] = frozenset(),
) -> Profile:
    """The profile without what an attacker taught it: after a containment, the attacker's address,
    country, network, device and place must look new again if they come back."""
    return replace(
        profile,
        known_ips=tuple(kt for kt in profile.known_ips if kt[0] not in ips),
        countries=tuple(kt for kt in profile.countries if kt[0] not in countries),
        asns=tuple(kt for kt in profile.asns if kt[0] not in asns),
        devices=tuple(kt for kt in profile.devices if kt[0] not in devices),
        recent_locations=tuple(loc for loc in profile.recent_locations if loc.ip not in ips),
        places=tuple(kt for kt in profile.places if kt[0] not in places),
    )
