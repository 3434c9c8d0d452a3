"""`mailwarden bench graph` at a tiny size: the figures exist and make sense (not a timed test)."""

from __future__ import annotations

from bot.bench_graph import bench


async def test_bench_graph_tiny() -> None:
    report = await bench(per_day=200_000, hours=0.1, scale=200.0, users=50)
    for key in ("calls", "min_calls", "calls_ratio", "peak_window_ratio", "reread_ratio", "throttled"):
        assert key in report
    assert report["calls"] >= report["min_calls"] >= 1
    assert report["records"] > 0 and report["records_missed"] == 0
    assert report["reread_ratio"] >= 1.0 and report["polls"] == 2
