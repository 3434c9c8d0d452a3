"""`mailwarden bench pipeline`: the public JSON keys, streaming, and leaving the process as it found it."""

from __future__ import annotations

import gc

import orjson
import pytest

from bot.bench_pipeline import Generator
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
