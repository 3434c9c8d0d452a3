"""What both emulators share: the request log, fault injection and the real-time rate windows."""

from __future__ import annotations

import json
import math
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request


@dataclass
class RecordedRequest:
    method: str
    path: str  # normalised: "//" collapsed, no query string
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic(): the limits the emulators enforce run on real time
    status: int = 0  # HTTP status sent back, filled in after the response
    handled: bool = False  # got past auth, injected faults and throttling to the operation itself
    error: str | None = None  # Graph error.code / Slack "error" sent back, None on success

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    @property
    def params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        for key, value in parse_qsl(self.query, keep_blank_values=True):
            params.setdefault(key, value)
        return params


async def capture(request: Request) -> RecordedRequest:
    return RecordedRequest(
        method=request.method,
        # The decoded path, so "%40" in a UPN segment reads as "@" like Graph treats it.
        path=re.sub("/{2,}", "/", request.scope["path"]),
        query=request.url.query,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=await request.body(),
        at=time.monotonic(),
    )


@dataclass(frozen=True)
class Fault:
    status: int
    retry_after: int | None = None
    error: str | None = None
    # the request takes effect and then the answer is lost (a gateway 5xx after the work was done):
    # the case a client cannot tell from "nothing happened" without reading back
    after_effect: bool = False


@dataclass
class _Rule:
    pattern: re.Pattern[str]
    fault: Fault
    remaining: int


class Faults:
    """Scripted failures, consumed in the order they were injected."""

    def __init__(self) -> None:
        self._rules: list[_Rule] = []

    def inject(
        self,
        match: str,
        status: int,
        *,
        retry_after: int | None = None,
        times: int = 1,
        error: str | None = None,
        after_effect: bool = False,
    ) -> None:
        self._rules.append(_Rule(re.compile(match), Fault(status, retry_after, error, after_effect), times))

    def take(self, key: str) -> Fault | None:
        for rule in self._rules:
            if rule.remaining > 0 and rule.pattern.search(key):
                rule.remaining -= 1
                return rule.fault
        return None

    def clear(self) -> None:
        self._rules.clear()


@dataclass
class SlidingWindow:
    """At most `limit` admissions in any `window_s` seconds of real time."""

    limit: int
    window_s: float
    _admitted: deque[float] = field(default_factory=deque)

    def admit(self) -> int:
        """0 when admitted, else the whole seconds (>= 1) until a slot frees up."""
        now = time.monotonic()
        while self._admitted and now - self._admitted[0] >= self.window_s:
            self._admitted.popleft()
        if len(self._admitted) < self.limit:
            self._admitted.append(now)
            return 0
        return max(1, math.ceil(self._admitted[0] + self.window_s - now))
