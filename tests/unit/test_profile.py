"""The user baseline: what it learns, that it stays bounded, that old habits age out, and storage."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
import orjson
import pytest
from msgspec.structs import replace

from bot.detect import Params
from bot.detect.profile import HOURS_PER_WEEK, add_hour, forget, observe, place_key, remember, with_tz
from bot.model import Case, CaseState, Decision, Event, Finding, Profile, Severity
from bot.sources.normalize_gws_activity import normalize_activity
from bot.store.codec import _PROFILE_DECODER, profile_from_dict, profile_from_json, profile_json, profile_to_dict

T = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday


def sign_in(i: int, **kw: object) -> Event:
    base = Event(
        source="entra_signin",
        event_id=str(i),
        tenant="t",
        occurred_at=T + timedelta(hours=i),
        user_principal="jo@contoso.example",
        success=True,
        country=f"C{i}",
        asn=64500 + i,
        device=f"device {i}",
        user_agent=f"agent {i}",
        client_app=f"client {i}",
        ip=f"198.51.100.{i % 250}",
        latitude=1.0,
        longitude=float(i % 180),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_learns_from_successful_sign_ins_only() -> None:
    params = Params()
    p = observe(None, sign_in(0), params)
    p = observe(p, sign_in(1, success=False, error_code=50126), params)
    assert [c for c, _ in p.countries] == ["C0"] and [a for a, _ in p.asns] == [64500]
    assert p.sign_ins == 1 and len(p.recent_failures) == 1
    assert [d for d, _ in p.devices] == ["device 0"] and [k for k, _ in p.known_ips] == ["198.51.100.0"]
    assert sum(p.hours) == 1 and p.hours[0 * 24 + 9] == 1  # Monday 09:00 UTC
    assert len(p.recent_locations) == 1


def test_non_interactive_sign_ins_do_not_teach_working_hours() -> None:
    p = observe(None, sign_in(0, interactive=False), Params())
    assert p.hours == () and p.sign_ins == 1


def test_consent_remembers_the_client() -> None:
    e = sign_in(0, kind="consent", app_id="client-1")
    p = observe(None, e, Params())
    assert [a for a, _ in p.granted_apps] == ["client-1"] and p.sign_ins == 0


def test_every_list_is_bounded() -> None:
    params = Params(
        max_countries=5,
        max_failures_kept=10,
        max_asns=4,
        max_devices=3,
        max_user_agents=3,
        max_client_apps=2,
        max_known_ips=6,
        max_locations=4,
        max_places=7,
        travel_window=timedelta(days=30),
    )
    p: Profile | None = None
    for i in range(300):
        p = observe(p, sign_in(i, success=i % 3 != 0), params)
    assert p is not None
    assert len(p.countries) == 5 and len(p.asns) == 4 and len(p.devices) == 3 and len(p.user_agents) == 3
    assert len(p.client_apps) == 2 and len(p.known_ips) == 6 and len(p.recent_locations) == 4
    assert len(p.places) == 7 and p.places[-1][0] == "1.0,119.0"  # sign-in 299 was at longitude 299 % 180
    assert len(p.recent_failures) <= 10
    # the newest are the ones kept
    assert p.asns[-1][0] == 64500 + 299 and p.countries[-1][0] == "C299"


def test_old_entries_age_out() -> None:
    params = Params(baseline_memory=timedelta(days=30), country_memory=timedelta(days=30))
    p = observe(None, sign_in(0), params)
    later = sign_in(1, occurred_at=T + timedelta(days=45))
    p = observe(p, later, params)
    assert [c for c, _ in p.countries] == ["C1"] and [a for a, _ in p.asns] == [64501]
    assert [d for d, _ in p.devices] == ["device 1"]
    assert [loc.country for loc in p.recent_locations] == ["C1"]  # only the travel window is kept
    assert [k for k, _ in p.places] == ["1.0,1.0"]


def test_hour_histogram_halves_past_its_cap() -> None:
    hours: tuple[int, ...] = ()
    for _ in range(10):
        hours = add_hour(hours, T, cap=8)
    assert len(hours) == HOURS_PER_WEEK and 0 < sum(hours) <= 8


def test_remember_keeps_the_latest_sighting() -> None:
    entries = remember((), "x", T, timedelta(days=1), 5)
    entries = remember(entries, "x", T - timedelta(hours=1), timedelta(days=1), 5)  # late, older record
    assert entries == (("x", T),)


def test_codec_round_trip_and_old_shape() -> None:
    params = Params()
    p: Profile | None = None
    for i in range(5):
        p = observe(p, sign_in(i), params)
    assert p is not None
    p = with_tz(p, "Europe/Lisbon")
    assert profile_from_dict(json.loads(json.dumps(profile_to_dict(p)))) == p
    # a profile stored by the first release has only these keys
    old = {
        "user_principal": "jo@contoso.example",
        "first_seen": T.isoformat(),
        "sign_ins": 3,
        "countries": [["US", T.isoformat()]],
        "recent_failures": [[T.isoformat(), "203.0.113.9"]],
    }
    back = profile_from_dict(old)
    assert back.sign_ins == 3 and back.countries == (("US", T),) and back.asns == () and back.hours == ()
    assert back.tz is None and back.recent_locations == ()


def test_profile_json_writes_what_profile_to_dict_describes() -> None:
    params = Params()
    p: Profile | None = None
    for i in range(40):
        p = observe(
            p, sign_in(i, success=i % 7 != 0, occurred_at=T + timedelta(minutes=37 * i, microseconds=i)), params
        )
    assert p is not None and p.recent_failures and p.recent_locations and p.hours
    p = with_tz(p, "Europe/Lisbon")
    assert orjson.loads(profile_json(p)) == profile_to_dict(p)
    assert profile_from_dict(orjson.loads(profile_json(p))) == p
    assert profile_from_json(profile_json(p)) == p
    assert profile_from_json(profile_json(p).decode()) == p  # the column is text
    assert _PROFILE_DECODER.decode(profile_json(p)) == p  # read by the typed decoder, not the fallback


def test_profiles_stored_by_earlier_releases_still_read() -> None:
    """What profile_json writes is read by the struct's decoder; anything it refuses takes the dict path."""
    params = Params()
    p: Profile | None = None
    for i in range(12):
        p = observe(p, sign_in(i, success=i % 5 != 0), params)
    assert p is not None and p.recent_failures and p.recent_locations
    # session 2's writer: "+00:00" offsets (orjson, isoformat), same keys
    written_before = orjson.dumps(
        {**profile_to_dict(p), "first_seen": p.first_seen.isoformat()}
        | {"countries": [[c, t.isoformat()] for c, t in p.countries]}
    )
    assert profile_from_json(written_before) == p
    # the first release: fewer keys, a network number as text (the typed decoder refuses it)
    first_release = orjson.dumps(
        {
            "user_principal": "jo@contoso.example",
            "first_seen": T.isoformat(),
            "sign_ins": 3,
            "countries": [["US", T.isoformat()]],
            "asns": [["64500", T.isoformat()]],
            "recent_failures": [[T.isoformat(), "203.0.113.9"]],
        }
    )
    with pytest.raises(msgspec.ValidationError):
        _PROFILE_DECODER.decode(first_release)
    back = profile_from_json(first_release)
    assert back == profile_from_dict(orjson.loads(first_release))
    assert back.asns == ((64500, T),) and back.countries == (("US", T),) and back.hours == ()


def test_a_stored_profile_never_counts_fewer_sign_ins_than_its_hours() -> None:
    """add_hour skips summing the histogram while sign_ins bounds it; an old row must not break that."""
    old = {"user_principal": "jo@contoso.example", "first_seen": T.isoformat(), "sign_ins": 0, "hours": [3] * 168}
    assert profile_from_dict(old).sign_ins == 3 * 168
    assert profile_from_json(orjson.dumps(old)).sign_ins == 3 * 168  # the typed path too


def test_a_place_signed_in_from_again_is_kept_once_and_travel_still_reads_the_newest() -> None:
    from bot.detect.impossible_travel import detect

    params = Params(enabled=None, baseline_warmup=timedelta(0))  # an hour of history: no warm-up here
    office = {"country": "DE", "ip": "192.0.2.10", "latitude": 52.52, "longitude": 13.40}
    p = None
    for i in range(12):  # every five minutes from the office, with one stop in between elsewhere in town
        where = office if i != 6 else {**office, "ip": "192.0.2.77"}
        p = observe(p, sign_in(0, event_id=f"o{i}", occurred_at=T + timedelta(minutes=5 * i), **where), params)
    assert p is not None
    assert [(loc.ip, loc.at) for loc in p.recent_locations] == [
        ("192.0.2.77", T + timedelta(minutes=30)),
        ("192.0.2.10", T + timedelta(minutes=55)),
    ]
    away = sign_in(
        99, occurred_at=T + timedelta(minutes=75), country="US", ip="203.0.113.5", latitude=40.7, longitude=-74.0
    )
    f = detect(away, p, params)
    assert f is not None and f.reason.startswith("Signed in from US 20 minutes after signing in from DE")


def google_login(name: str, at: datetime, status: str | None = None) -> dict[str, object]:
    """A Reports API login activity as activities.list returns it."""
    params: list[dict[str, object]] = [{"name": "login_type", "value": "google_password"}]
    if status is not None:
        params += [
            {"name": "is_second_factor", "boolValue": True},
            {"name": "login_challenge_method", "multiValue": ["google_prompt"]},
            {"name": "login_challenge_status", "value": status},
        ]
    return {
        "kind": "admin#reports#activity",
        "id": {
            "time": at.isoformat().replace("+00:00", "Z"),
            "uniqueQualifier": str(int(at.timestamp())),
            "applicationName": "login",
        },
        "actor": {"email": "jo@fabrikam.example"},
        "ipAddress": "198.51.100.9",
        "networkInfo": {"ipAsn": [64500], "regionCode": "GB"},
        "events": [{"type": "login", "name": name, "parameters": params}],
    }


def test_a_google_sign_in_is_learned_once_however_many_challenges_it_passed() -> None:
    """Google logs 2-step verification as an event of its own just before the login_success: the
    sign-in, and its hour of the week, count once. A failed challenge is still a failure."""
    records = [
        google_login("login_verification", T - timedelta(seconds=70), "Challenge Failed."),
        google_login("login_verification", T - timedelta(seconds=20), "Challenge Passed."),
        google_login("login_success", T),
    ]
    p = None
    for record in records:
        for e in normalize_activity(record, "t"):
            assert isinstance(e, Event) and e.kind == "sign_in"
            p = observe(p, e, Params())
    assert p is not None
    assert p.sign_ins == 1 and sum(p.hours) == 1 and len(p.recent_failures) == 1
    assert [c for c, _ in p.countries] == ["GB"] and [a for a, _ in p.asns] == [64500]


def test_a_contained_attackers_place_is_forgotten_with_the_rest_of_their_traces() -> None:
    """After a containment the attacker's place must look new again, or impossible travel would take
    their return for a place the user signs in from."""
    from bot.cases.service import attacker_evidence

    params = Params()
    home = sign_in(0, latitude=40.71, longitude=-74.0)
    attacker = sign_in(1, latitude=50.45, longitude=30.52, country="UA", ip="203.0.113.50")
    p = observe(observe(None, home, params), attacker, params)
    assert [k for k, _ in p.places] == [place_key(40.71, -74.0), place_key(50.45, 30.52)]
    case = Case(
        "MW-1", "t", "jo@contoso.example", CaseState.CONTAINED, Severity.HIGH, Decision.SOC, T, T, T,
        findings=(Finding("new_country", Severity.MEDIUM, "first sign-in from UA", "1", attacker.occurred_at),),
        events=(home, attacker),
    )  # fmt: skip
    evidence = attacker_evidence(case)
    assert evidence["places"] == {place_key(50.45, 30.52)}
    cleaned = forget(p, places=evidence["places"], ips=evidence["ips"])
    assert [k for k, _ in cleaned.places] == [place_key(40.71, -74.0)]
