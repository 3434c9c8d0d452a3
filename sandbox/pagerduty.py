"""PagerDuty Events API v2 emulator: /v2/enqueue with the documented answers and limits.

202 {"status": "success", "message": "Event processed", "dedup_key"} on accept; 400 "invalid event"
with the reasons; 429 past 120 events per minute per routing key (api-contracts.md §4.1). Alerts are
tracked per (routing_key, dedup_key) the way PagerDuty de-duplicates them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.recorder import Faults, RecordedRequest, SlidingWindow, capture

SEVERITIES = {"critical", "error", "warning", "info"}


class PagerDutyEmulator:
    def __init__(self, *, per_minute: int = 120) -> None:
        self.per_minute = per_minute
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self.events: list[dict[str, Any]] = []  # accepted events, in order
        self.alerts: dict[str, str] = {}  # dedup_key -> triggered | acknowledged | resolved
        self._windows: dict[str, SlidingWindow] = {}
        self.app = Starlette(routes=[Route("/v2/enqueue", self._enqueue, methods=["POST"])])

    def actions(self, dedup_key: str) -> list[str]:
        return [e["event_action"] for e in self.events if e.get("dedup_key") == dedup_key]

    async def _enqueue(self, request: Request) -> Response:
        rec = await capture(request)
        self.requests.append(rec)
        response = self._handle(rec)
        rec.status = response.status_code
        return response

    def _handle(self, rec: RecordedRequest) -> Response:
        fault = self.faults.take("enqueue")
        if fault:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else None
            return JSONResponse(
                {"status": "throttle event", "message": "Requests for this service are arriving too quickly."}
                if fault.status == 429
                else {"status": "error"},
                fault.status,
                headers,
            )
        try:
            body = json.loads(rec.body)
        except ValueError:
            return _invalid(["Could not parse JSON"])
        if not isinstance(body, dict):
            return _invalid(["Event object must be a JSON object"])
        errors = _validate(body)
        if errors:
            return _invalid(errors)
        window = self._windows.setdefault(body["routing_key"], SlidingWindow(self.per_minute, 60.0))
        if window.admit():
            return JSONResponse(
                {"status": "throttle event", "message": "Requests for this service are arriving too quickly."}, 429
            )
        rec.handled = True
        action = body["event_action"]
        key = body.get("dedup_key") or uuid.uuid4().hex
        state = self.alerts.get(key)
        if action == "trigger":
            if state in (None, "resolved"):
                self.alerts[key] = "triggered"
        elif state in ("triggered", "acknowledged"):
            self.alerts[key] = "acknowledged" if action == "acknowledge" else "resolved"
        # acknowledge/resolve of an unknown or resolved alert are accepted and dropped, as PagerDuty does
        self.events.append({**body, "dedup_key": key})
        return JSONResponse({"status": "success", "message": "Event processed", "dedup_key": key}, 202)


def _validate(body: dict[str, Any]) -> list[str]:
    errors = []
    if not isinstance(body.get("routing_key"), str) or not body["routing_key"]:
        errors.append("'routing_key' is missing or blank")
    if body.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' must be one of trigger, acknowledge, resolve")
    key = body.get("dedup_key")
    if key is not None and (not isinstance(key, str) or len(key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if body.get("event_action") in ("acknowledge", "resolve") and not key:
        errors.append("'dedup_key' is required to acknowledge or resolve")
    if body.get("event_action") == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing")
        else:
            if not str(payload.get("summary") or "").strip() or len(str(payload.get("summary"))) > 1024:
                errors.append("'payload.summary' is missing or longer than 1024 characters")
            if not payload.get("source"):
                errors.append("'payload.source' is missing")
            if payload.get("severity") not in SEVERITIES:
                errors.append("'payload.severity' must be one of critical, error, warning, info")
    if len(json.dumps(body)) > 512 * 1024:
        errors.append("event is larger than 512 KB")
    return errors


def _invalid(errors: list[str]) -> Response:
    return JSONResponse({"status": "invalid event", "message": "Event object is invalid", "errors": errors}, 400)
