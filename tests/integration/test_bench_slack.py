"""The Slack storm benchmark runs end to end at a tiny size and reports every figure it promises."""

from __future__ import annotations

from bot.bench_slack import bench


async def test_tiny_storm_reports_its_figures() -> None:
    report = await bench(cases=6, scale=20.0, replay_events=2000)
    assert set(report) >= {"drain_s", "floor_s", "drain_ratio", "slack_429", "fifo_ok", "ack_p99_ms", "loop_lag_p99_ms"}
    assert report["posts"] == 12 and report["updates"] == 6  # a DM and a SOC card per case; each DM updated
    assert report["slack_429"] == 0 and report["fifo_ok"] is True
    assert report["clicks"] == 6
    assert report["floor_s"] > 0  # figures only: speed is measured by running the benchmark, not asserted
