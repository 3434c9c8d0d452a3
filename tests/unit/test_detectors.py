"""Every detector against the sample records that sit beside it (positive and negative)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.detect import Params, registry
from bot.detect.profile import observe
from bot.model import Event, Profile
from bot.sources.normalize_entra import normalize_signin

DETECT = Path(__file__).resolve().parents[2] / "bot" / "detect"


def cases() -> list[Any]:
    out = []
    for path in sorted(DETECT.glob("*.samples.json")):
        detector = path.name.removesuffix(".samples.json")
        for sample in json.loads(path.read_text()):
            out.append(pytest.param(detector, sample, id=f"{detector}: {sample['name']}"))
    return out


def event(record: dict[str, Any]) -> Event:
    e = normalize_signin(record, "t1")
    assert isinstance(e, Event), e
    return e


@pytest.mark.parametrize(("detector", "sample"), cases())
def test_sample(detector: str, sample: dict[str, Any]) -> None:
    params = Params()
    profile: Profile | None = None
    for record in sorted(sample["history"], key=lambda r: r["createdDateTime"]):
        profile = observe(profile, event(record), params)
    finding = registry()[detector](event(sample["record"]), profile, params)
    assert (finding is not None) == sample["expect"], finding
    if finding is not None:
        assert finding.detector == detector and finding.reason and len(finding.reason) < 300


def test_every_detector_has_positive_and_negative_samples() -> None:
    for detector in registry():
        samples = json.loads((DETECT / f"{detector}.samples.json").read_text())
        assert {s["expect"] for s in samples} == {True, False}, detector


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


def test_profile_is_bounded() -> None:
    from datetime import UTC, datetime, timedelta

    params = Params(max_countries=5, max_failures_kept=10)
    p: Profile | None = None
    t = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(40):
        e = Event(
            source="s",
            event_id=str(i),
            tenant="t",
            occurred_at=t + timedelta(minutes=i),
            user_principal="u",
            success=i % 2 == 0,
            country=f"C{i}",
        )
        p = observe(p, e, params)
    assert p is not None and len(p.countries) == 5 and len(p.recent_failures) <= 10
