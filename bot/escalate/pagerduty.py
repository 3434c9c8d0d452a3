"""PagerDuty Events API v2: trigger, acknowledge and resolve one alert per case.

The case id is the dedup_key, so a repeated trigger updates the open alert instead of paging twice,
and acknowledge/resolve find it (reference/api-contracts.md §4.1). httpx has no retry of its own, so
tenacity retries here: 429 and 5xx and network errors, never a 400 (a bad event stays bad).
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

Action = Literal["trigger", "acknowledge", "resolve"]
PD_SEVERITY = {"low": "info", "medium": "warning", "high": "error", "critical": "critical"}


class PagerDutyRejected(Exception):
    """PagerDuty answered 400: the event is invalid and retrying will not help."""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code == 429 or exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


def event_body(
    routing_key: str,
    action: Action,
    case_id: str,
    *,
    summary: str = "",
    severity: str = "high",
    source: str = "mailwarden",
    details: dict[str, Any] | None = None,
    link: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"routing_key": routing_key, "event_action": action, "dedup_key": case_id[:255]}
    if action == "trigger":
        body["payload"] = {
            "summary": summary[:1024],
            "source": source,
            "severity": PD_SEVERITY.get(severity, "error"),
            "component": "mailbox",
            "class": "T1114.002",
            "custom_details": details or {},
        }
        if link:
            body["links"] = [{"href": link, "text": "Case in Slack"}]
    return body


class PagerDuty:
    def __init__(
        self, client: httpx.AsyncClient, routing_key: str, *, base_url: str, attempts: int = 4, max_wait_s: float = 30.0
    ) -> None:
        self.client = client
        self.routing_key = routing_key
        self.url = base_url.rstrip("/") + "/v2/enqueue"
        self.attempts = attempts
        self.max_wait_s = max_wait_s

    async def send(self, action: Action, case_id: str, **kw: Any) -> str:
        """Send one event; returns the dedup_key PagerDuty acknowledged."""
        body = event_body(self.routing_key, action, case_id, **kw)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=1, max=self.max_wait_s),
            reraise=True,
        ):
            with attempt:
                resp = await self.client.post(self.url, json=body)
                if resp.status_code == 400:
                    raise PagerDutyRejected(resp.text[:500])
                resp.raise_for_status()
                return str(resp.json().get("dedup_key", case_id))
        raise AssertionError("unreachable")
