"""Process-wide tuning for a long-running service with a large, static heap.

The client libraries (msgraph-sdk above all) import tens of thousands of long-lived objects. With
CPython's default thresholds the cyclic garbage collector keeps re-scanning them while detection
allocates, and each full pass stops the event loop for tens of milliseconds, long enough to push Slack
acks past their budget (performance.md G6). Freezing what exists after start-up moves it out of the
collector's sight, and a larger first-generation threshold makes passes rarer. Measured with
`mailwarden bench slack`: ack p99 192 -> 71 ms, event-loop lag p99 126 -> 30 ms.

The threshold is 20,000, not more: at 100,000 the cyclic garbage of a poll's database round trips
waited that long for a pass, and a 1,000,000-event `bench pipeline` peaked at 283 MB instead of 175 MB
(G9: <= 256 MB), while the acks stayed the same (p99 77 ms, loop lag 32 ms at 20,000).
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000
GEN1_THRESHOLD = 50
GEN2_THRESHOLD = 1_000


def tune_gc() -> tuple[int, int, int]:
    """Call once, after imports and start-up, before serving. Returns the thresholds it replaced."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    return before


def untune_gc(thresholds: tuple[int, int, int]) -> None:
    """Undo tune_gc (a benchmark run inside a longer-lived process, such as the test suite)."""
    gc.unfreeze()
    gc.set_threshold(*thresholds)
