"""A user's baseline, updated one event at a time. Pure and bounded: old entries age out."""

from __future__ import annotations

from dataclasses import replace

from bot.detect import Params
from bot.model import Event, FailedAttempt, Profile


def observe(profile: Profile | None, event: Event, params: Params) -> Profile:
    p = profile or Profile(user_principal=event.user_principal, first_seen=event.occurred_at)
    if event.occurred_at < p.first_seen:
        p = replace(p, first_seen=event.occurred_at)
    if event.kind != "sign_in":
        return p
    if not event.success:
        horizon = event.occurred_at - params.failed_then_success_window
        kept = tuple(f for f in p.recent_failures if f.at >= horizon)
        kept = (*kept, FailedAttempt(at=event.occurred_at, ip=event.ip))
        return replace(p, recent_failures=tuple(sorted(kept, key=lambda f: f.at))[-params.max_failures_kept :])
    countries = dict(p.countries)
    if event.country:
        seen = countries.get(event.country)
        if seen is None or seen < event.occurred_at:
            countries[event.country] = event.occurred_at
    horizon = event.occurred_at - params.country_memory
    fresh = sorted(((c, t) for c, t in countries.items() if t >= horizon), key=lambda ct: ct[1])
    return replace(p, countries=tuple(fresh[-params.max_countries :]), sign_ins=p.sign_ins + 1)
