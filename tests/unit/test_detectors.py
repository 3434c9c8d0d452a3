"""Every detector against the sample records that sit beside it (positive and negative).

A sample is `{"name", "expect", "history": [wire records], "record": wire record}` with optional
`"kind"` (the source kind of its records, default "entra-signin"), `"params"` (Params overrides:
seconds for durations, lists for sets and networks), `"context"` (`{"tz": …}` for the subject's
profile) and `"severity"` (the finding's expected severity). History builds every user's profile
and the tenant's cross-user state, in event-time order; then the record is judged.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from bot.detect import CROSS_USER, RELEASED, Params, _modules, detector_ids, registry, run_all
from bot.detect.fleet import Fleet, fleet_from_dict, fleet_to_dict, observe_fleet
from bot.detect.profile import observe, with_tz
from bot.model import EVENT_KINDS, Event, Finding, Profile, Severity
from bot.sources.normalize import normalize
from bot.sources.normalize_entra import normalize_signin

DETECT = Path(__file__).resolve().parents[2] / "bot" / "detect"


def cases() -> list[Any]:
    out = []
    for path in sorted(DETECT.glob("*.samples.json")):
        detector = path.name.removesuffix(".samples.json")
        for sample in json.loads(path.read_text()):
            out.append(pytest.param(detector, sample, id=f"{detector}: {sample['name']}"))
    return out


def params_for(detector: str, overrides: dict[str, Any]) -> Params:
    defaults = {f.name: getattr(Params(), f.name) for f in fields(Params)}
    converted: dict[str, Any] = {}
    for name, value in overrides.items():
        current = defaults[name]
        if isinstance(current, timedelta):
            converted[name] = timedelta(seconds=value)
        elif isinstance(current, frozenset):
            converted[name] = frozenset(value)
        elif name in ("threat_networks", "own_networks"):
            converted[name] = tuple(ipaddress.ip_network(v) for v in value)
        else:
            converted[name] = value
    return Params(**{**converted, "enabled": frozenset({detector})})


def events(kind: str, record: Any) -> list[Event]:
    out = normalize(kind, record, "t1")
    assert out and all(isinstance(e, Event) for e in out), out
    return [e for e in out if isinstance(e, Event)]


def judge(detector: str, sample: dict[str, Any]) -> list[Finding]:
    kind = sample.get("kind", "entra-signin")
    params = params_for(detector, sample.get("params", {}))
    profiles: dict[str, Profile] = {}
    fleet = Fleet()
    for e in sorted((e for r in sample["history"] for e in events(kind, r)), key=lambda e: e.occurred_at):
        fleet, _ = observe_fleet(fleet, e, params)
        profiles[e.user_principal] = observe(profiles.get(e.user_principal), e, params)
    found: list[Finding] = []
    for e in events(kind, sample["record"]):
        profile = profiles.get(e.user_principal)
        if profile is not None and "tz" in sample.get("context", {}):
            profile = with_tz(profile, sample["context"]["tz"])
        found += run_all(e, profile, params)
        fleet, more = observe_fleet(fleet, e, params)
        found += more
    return [f for f in found if f.detector == detector]


@pytest.mark.parametrize(("detector", "sample"), cases())
def test_sample(detector: str, sample: dict[str, Any]) -> None:
    found = judge(detector, sample)
    assert bool(found) == sample["expect"], found
    for finding in found:
        assert finding.reason and len(finding.reason) < 300 and "\n" not in finding.reason
    if "severity" in sample:
        assert found[0].severity is Severity.parse(sample["severity"]), found[0]


def test_every_detector_has_positive_and_negative_samples() -> None:
    assert len(detector_ids()) == 18
    for detector in detector_ids():
        samples = json.loads((DETECT / f"{detector}.samples.json").read_text())
        assert {s["expect"] for s in samples} == {True, False}, detector


def test_only_released_detectors_run_by_default() -> None:
    assert Params().enabled == RELEASED
    assert set(registry()) | set(CROSS_USER) == set(detector_ids())
    sample = json.loads((DETECT / "scripted_client.samples.json").read_text())[0]
    assert judge("scripted_client", sample)  # enabled on its own it fires…
    e = normalize_signin(sample["record"], "t1")
    assert isinstance(e, Event)
    assert run_all(e, None, Params()) == []  # …but the default set leaves it off
    assert run_all(e, None, Params(enabled=None))


def test_a_script_redeeming_a_token_is_told_apart_from_a_script_signing_in() -> None:
    """The SOC revokes sessions for the one and resets a password for the other."""
    samples = json.loads((DETECT / "scripted_client.samples.json").read_text())
    redeemed = next(s for s in samples if s.get("kind") == "o365-audit" and s["expect"])
    (finding,) = judge("scripted_client", redeemed)
    assert finding.reason.startswith("Redeemed a sign-in token with a script (python)")
    (finding,) = judge("scripted_client", samples[0])
    assert finding.reason.startswith("Signed in with a script (python)")


def event(record: dict[str, Any]) -> Event:
    e = normalize_signin(record, "t1")
    assert isinstance(e, Event), e
    return e


def test_reason_reads_like_a_sentence() -> None:
    samples = json.loads((DETECT / "failed_then_success.samples.json").read_text())
    params, profile = Params(), None
    for record in samples[0]["history"]:
        profile = observe(profile, event(record), params)
    f = registry()["failed_then_success"](event(samples[0]["record"]), profile, params)
    assert f is not None
    assert f.reason == (
        "6 failed sign-ins in 10 minutes, then a success from 185.220.101.4 (the same address that failed)"
    )


def test_spray_reason_and_fleet_round_trip() -> None:
    sample = json.loads((DETECT / "password_spray.samples.json").read_text())[1]
    (f,) = judge("password_spray", sample)
    assert f.reason.startswith("Signed in from 185.220.101.4, the address that failed sign-ins for 5 accounts")
    fleet = Fleet()
    params = Params(enabled=None)
    for r in sample["history"]:
        fleet, _ = observe_fleet(fleet, event(r), params)
    assert fleet.spray.sprayer("185.220.101.4") is not None
    assert fleet_from_dict(json.loads(json.dumps(fleet_to_dict(fleet)))) == fleet
    assert fleet_from_dict({}) == Fleet()


def test_cross_user_state_is_bounded() -> None:
    params = Params(enabled=None, spray_max_attempts=50, mail_bulk_max_seen=30)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    fleet = Fleet()
    for i in range(500):
        e = Event(
            source="s",
            event_id=str(i),
            tenant="t",
            occurred_at=t + timedelta(seconds=i),
            user_principal=f"u{i}@x.example",
            ip=f"203.0.113.{i % 200}",
            error_code=50126,
        )
        fleet, _ = observe_fleet(fleet, e, params)
        m = replace(e, kind="mail_access", success=True, app_id="00000003-0000-0000-c000-000000000000")
        fleet, _ = observe_fleet(fleet, m, params)
    assert len(fleet.spray.attempts) <= 50 and len(fleet.mail.reads) <= 30
    # an hour later, everything old has aged out
    later = replace(e, occurred_at=t + timedelta(days=3), ip="198.51.100.1")
    fleet, _ = observe_fleet(fleet, later, params)
    assert len(fleet.spray.attempts) == 1 and fleet.spray.sprayers == ()


def test_every_detector_declares_the_kinds_it_reads_and_finds_nothing_in_others() -> None:
    """run_all calls a detector only for its module's KINDS: on every sample record, recast as each kind
    outside them, the detector must say nothing, so skipping it changes no result."""
    modules = {m.ID: m for m in _modules()}
    assert set(modules) == set(registry())
    for detector, module in modules.items():
        kinds = getattr(module, "KINDS", None)
        assert isinstance(kinds, frozenset) and kinds and kinds <= set(EVENT_KINDS), detector
    checked = 0
    for path in sorted(DETECT.glob("*.samples.json")):
        for sample in json.loads(path.read_text()):
            kind = sample.get("kind", "entra-signin")
            params = Params(enabled=None)
            profiles: dict[str, Profile] = {}
            for e in sorted((e for r in sample["history"] for e in events(kind, r)), key=lambda e: e.occurred_at):
                profiles[e.user_principal] = observe(profiles.get(e.user_principal), e, params)
            for e in events(kind, sample["record"]):
                for as_kind in EVENT_KINDS:
                    recast = replace(e, kind=as_kind)
                    for detector, module in modules.items():
                        if as_kind not in module.KINDS:
                            checked += 1
                            assert module.detect(recast, profiles.get(e.user_principal), params) is None, (
                                detector,
                                as_kind,
                                sample["name"],
                            )
    assert checked > 1000
