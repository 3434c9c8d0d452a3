"""off_hours: a person signed in at an hour they are normally not at work.

Two readings, both needed when both are possible, so neither alone raises noise:
- the user's own time zone (`Profile.tz`, e.g. from Slack) puts the sign-in outside
  `work_start_hour`..`work_end_hour` local time or on a weekend (DESIGN.md: "outside the user's
  usual hours in the user's own time zone");
- the user's hour-of-week history (1-hour bins, as Sentinel's MailItemsAccessedTimeSeries bins
  mailbox access) shows almost none of their sign-ins in that hour of the day, ±1 hour.
Without a time zone the history decides alone. Low severity: context for the SOC, never a case
on its own beyond a record. No finding until the warm-up has passed and enough sign-ins are known,
and none from a country the user has never signed in from: the hours were learned in another time
zone (new_country speaks for that sign-in).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.detect import Params
from bot.detect.common import finding, is_successful_sign_in, warmed_up
from bot.detect.profile import HOURS_PER_WEEK
from bot.model import Event, Finding, Profile, Severity

ID = "off_hours"
KINDS = frozenset({"sign_in"})  # the event kinds it reads (bot.detect.run_all skips the rest)


def local_time(at: datetime, tz: str | None) -> datetime | None:
    if not tz:
        return None
    try:
        return at.astimezone(ZoneInfo(tz))
    except (ZoneInfoNotFoundError, ValueError):
        return None  # an unknown zone name must not stop detection


def share_at(hours: tuple[int, ...], at: datetime, total: int | None = None) -> float | None:
    """The share of past sign-ins within ±1 hour of `at`'s hour (UTC), any day of the week."""
    if len(hours) != HOURS_PER_WEEK:
        return None
    total = sum(hours) if total is None else total
    if total == 0:
        return None
    h = at.hour
    before, after = (h - 1) % 24, (h + 1) % 24
    near = 0
    for day in range(0, HOURS_PER_WEEK, 24):
        near += hours[day + before] + hours[day + h] + hours[day + after]
    return near / total


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if not is_successful_sign_in(event) or not event.interactive or profile is None:
        return None
    if profile.sign_ins < params.off_hours_min_sign_ins:  # cheap bound first: hours count a subset of these
        return None
    if not warmed_up(profile, event, params.baseline_warmup):
        return None
    total = sum(profile.hours)
    if total < params.off_hours_min_sign_ins:
        return None
    if event.country and profile.countries and not profile.knows_country(event.country):
        return None  # abroad: hours learned at home (in UTC) say nothing about another time zone
    share = share_at(profile.hours, event.occurred_at, total)
    if share is None or share >= params.off_hours_max_share:
        return None
    local = local_time(event.occurred_at, profile.tz)
    if local is not None:
        weekend = local.weekday() >= 5
        if not weekend and params.work_start_hour <= local.hour < params.work_end_hour:
            return None
        when = f"{local:%A %H:%M} in the user's time zone ({profile.tz})"
    else:
        when = f"{event.occurred_at:%A %H:%M} UTC"
    return finding(
        ID,
        event,
        Severity.LOW,
        f"Signed in on {when}, an hour when this user almost never signs in ({share:.0%} of their sign-ins)",
        (("local_time", when), ("share_of_sign_ins", f"{share:.1%}")),
    )
