"""`mailwarden bench pipeline`: the public JSON keys, streaming, and leaving the process as it found it."""

from __future__ import annotations

import gc

import orjson
import pytest

from bot.bench_pipeline import STAGE_KEYS, Generator, normalize_page, stage_figures
from bot.cli import main
from bot.sources.entra_signins import split_page


@pytest.mark.parametrize("mode", ["service", "default"])
def test_prints_its_figures_and_restores_the_collector(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = gc.get_threshold()
    assert main(["bench", "pipeline", "--events", "3000", "--gc", mode, "--json"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert {"parse_eps", "pipeline_eps", "ratio", "peak_rss_mb"} <= set(out) and out["gc"] == mode
    assert out["events"] == 3000 and out["parse_eps"] > 0 and out["pipeline_eps"] > 0 and out["peak_rss_mb"] > 0
    assert out["ratio"] == pytest.approx(out["pipeline_eps"] / out["parse_eps"], abs=0.002)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_generated_pages_are_graph_shaped_and_deterministic() -> None:
    gen = Generator(2500)
    assert gen.pages() == 3 and gen.page(1) == Generator(2500).page(1)
    records, next_link = split_page(gen.page(2))
    assert len(records) == 500 and next_link is None
    first = orjson.loads(bytes(records[0]))
    assert len(first["appliedConditionalAccessPolicies"]) == 8 and 2000 < len(bytes(records[0])) < 3000


def test_stages_add_their_keys_and_the_plain_run_keeps_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "pipeline", "--events", "2000", "--stages", "--json"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert set(STAGE_KEYS) <= set(out) and out["normalize_eps"] > 0
    # the first stage is part of the pipeline: what is left after it is positive
    assert 0 < out["normalize_us"] < out["normalize_us"] + out["after_normalize_us"]
    assert out["after_normalize_us"] == pytest.approx(1e6 / out["pipeline_eps"] - out["normalize_us"], rel=0.02)
    assert main(["bench", "pipeline", "--events", "2000", "--json"]) == 0
    assert not set(STAGE_KEYS) & set(orjson.loads(capsys.readouterr().out))
    assert main(["bench", "pipeline", "--events", "2000", "--stages"]) == 0
    text = capsys.readouterr().out
    assert "split + normalize" in text and "a ratio of 0.5      leaves" in text


def test_stage_figures_are_per_event_microseconds_and_the_half_ratio_budget() -> None:
    # parse 10 us, normalize 8 us, whole pipeline 50 us: at 0.5 the pipeline may take 20 us, 12 after normalizing
    fig = stage_figures(10e-6, 8e-6, 50e-6)
    assert fig == {
        "normalize_eps": 125_000,
        "parse_us": 10.0,
        "normalize_us": 8.0,
        "after_normalize_us": 42.0,
        "budget_at_half_us": 12.0,
    }


def test_the_first_stage_normalizes_every_record_of_a_page() -> None:
    assert normalize_page(Generator(1500).page(1)) == 500
