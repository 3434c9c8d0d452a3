"""Detection: one pure function per detector, its sample records beside it (`<id>.samples.json`).

Rule: a detector sees one Event and that user's Profile *before* the event, returns a Finding
with a sentence a person understands, or None. No clock, no I/O, no module state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from bot.model import Event, Finding, Profile


@dataclass(frozen=True, slots=True)
class Params:
    failed_then_success_min_failures: int = 5
    failed_then_success_window: timedelta = timedelta(minutes=20)
    new_country_warmup: timedelta = timedelta(days=7)
    country_memory: timedelta = timedelta(days=90)
    max_countries: int = 50
    max_failures_kept: int = 100


Detector = Callable[[Event, Profile | None, Params], Finding | None]


def registry() -> dict[str, Detector]:
    from bot.detect import failed_then_success, new_country

    mods = (failed_then_success, new_country)
    return {m.ID: m.detect for m in sorted(mods, key=lambda m: m.ID)}


def run_all(event: Event, profile: Profile | None, params: Params) -> list[Finding]:
    return [f for d in registry().values() if (f := d(event, profile, params)) is not None]
