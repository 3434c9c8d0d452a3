"""Client-side pacing so Mailwarden stays inside Slack's limits instead of bouncing off them.

`chat.postMessage` allows about one message per second per channel with short bursts; `chat.update`
is Tier 3 (50+/min per workspace). A token bucket per key waits just long enough; 429s stay the
exception, handled by slack_sdk's RateLimitErrorRetryHandler (reference/performance.md §1.3).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    capacity: float
    per_s: float
    tokens: float
    at: float


class Pacer:
    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale  # > 1 only in benchmarks, compressing time together with the emulator's limits
        self._buckets: dict[str, _Bucket] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def wait(self, key: str, *, per_s: float, burst: float = 1.0) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            now = time.monotonic()
            b = self._buckets.get(key)
            if b is None:
                b = self._buckets[key] = _Bucket(burst, per_s * self.scale, burst, now)
            b.tokens = min(b.capacity, b.tokens + (now - b.at) * b.per_s)
            b.at = now
            if b.tokens < 1.0:
                delay = (1.0 - b.tokens) / b.per_s
                await asyncio.sleep(delay)
                b.tokens = 1.0
                b.at = time.monotonic()
            b.tokens -= 1.0


# Sustained rates a little under Slack's published ones, with a small burst.
POST_PER_CHANNEL = {"per_s": 1.0, "burst": 2.0}
UPDATE_PER_WORKSPACE = {"per_s": 48 / 60, "burst": 2.0}
EPHEMERAL_PER_WORKSPACE = {"per_s": 90 / 60, "burst": 5.0}
