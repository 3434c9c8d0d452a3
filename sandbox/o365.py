"""Loopback emulator of the Office 365 Management Activity API (api-contracts.md §1.9).

What it does, as documented in office-365-management-activity-api-reference.md and the
troubleshooting page:

- `POST /api/v1.0/{tenant}/activity/feed/subscriptions/start?contentType=...` -> 200 with the
  subscription; again on an enabled subscription -> 400 AF20024 ("already enabled", seen in the wild;
  not in the documented table: U); unknown content type -> 400 AF20020. `.../stop` -> 200.
  `GET .../subscriptions/list` -> the subscriptions.
- `GET .../subscriptions/content?contentType=..&startTime=..&endTime=..`: both or neither, at most 24 h
  apart, start no more than 7 days back (else 400 AF20030); the range is on `contentCreated`
  (start inclusive, end exclusive); only blobs created while the subscription was enabled are listed
  ("access to new content from that point forward"); pages of `page_size` with the next page's URL in
  the `NextPageUri` **response header**; no subscription -> 400 AF20022; bad nextPage -> AF20031.
- `GET .../audit/{contentId}` -> the blob, a JSON array of audit records; unknown -> 404 AF20050;
  older than 7 days -> 400 AF20051.
- Bearer token check (401), `ActivityFeed.Read` denial on demand (401 AF10001), the per-tenant
  throttle (2,000 requests / minute by default) -> 429 AF429, without Retry-After unless configured
  (whether the service sends one: U). Every request is recorded with its PublisherIdentifier.
- Records become available in a blob some time after they happen (`lag`, 30 min to 24 h in reality).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.recorder import Faults, RecordedRequest, SlidingWindow, capture

CONTENT_TYPES = ("Audit.AzureActiveDirectory", "Audit.Exchange", "Audit.SharePoint", "Audit.General", "DLP.All")
MAX_SPAN = timedelta(hours=24)
MAX_AGE = timedelta(days=7)
SPAN_RULE = (
    "Start time and end time must both be specified (or both omitted) and must be less than or equal to 24 hours "
    "apart, with the start time no more than 7 days in the past."
)


class ActivityError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass
class _Blob:
    content_type: str
    content_id: str
    created: datetime
    records: list[dict[str, Any]]


@dataclass
class _Subscription:
    content_type: str
    enabled_at: datetime
    status: str = "enabled"
    history: list[tuple[datetime, datetime | None]] = field(default_factory=list)  # enabled periods

    def covers(self, at: datetime) -> bool:
        return any(start <= at and (end is None or at < end) for start, end in self.history)


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _iso(dt: datetime) -> str:
    return f"{_utc(dt):%Y-%m-%dT%H:%M:%S}.{_utc(dt).microsecond // 1000:03d}Z"


def parse_api_time(raw: str) -> datetime:
    """YYYY-MM-DD, YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH:MM:SS, UTC (a trailing Z or fraction is tolerated)."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?Z?", raw):
        raise ValueError(raw)
    return _utc(datetime.fromisoformat(raw.removesuffix("Z")))


class O365Emulator:
    def __init__(
        self,
        clock: Callable[[], datetime],
        *,
        token: str = "sandbox-manage-token",
        tenant_id: str = "00000000-0000-0000-0000-00000000a11c",
        page_size: int = 200,
        budget: tuple[int, float] | None = (2000, 60.0),
        throttle_retry_after: int | None = None,
    ) -> None:
        self.clock = clock
        self.token = token
        self.tenant_id = tenant_id
        self.page_size = page_size
        self.throttle_retry_after = throttle_retry_after
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self.permission_denied = False  # the token lacks ActivityFeed.Read
        self._budget = SlidingWindow(*budget) if budget else None
        self._subscriptions: dict[str, _Subscription] = {}
        self._blobs: dict[str, _Blob] = {}
        self._seq = 0
        methods = ["GET", "POST"]
        self.app = Starlette(routes=[Route("/{path:path}", self._endpoint, methods=methods)])

    # --- setup and assertions ---------------------------------------------------------------------

    def enable(self, content_type: str, since: datetime | None = None) -> None:
        """A subscription that is already on (started by an earlier run, or by another tool)."""
        at = _utc(since or self.clock())
        sub = _Subscription(content_type, at)
        sub.history.append((at, None))
        self._subscriptions[content_type] = sub

    def add_blob(
        self, content_type: str, records: list[dict[str, Any]], *, available_at: datetime | None = None
    ) -> str:
        """One content blob, listed from `available_at` (default: now). Returns its contentId."""
        if content_type not in CONTENT_TYPES:
            raise ValueError(content_type)
        self._seq += 1
        created = _utc(available_at or self.clock())
        content_id = f"{created:%Y%m%d%H%M%S}${self._seq:08d}${uuid.uuid4().hex}"
        self._blobs[content_id] = _Blob(content_type, content_id, created, copy.deepcopy(records))
        return content_id

    def add_records(
        self, content_type: str, records: list[dict[str, Any]], *, lag: timedelta = timedelta(minutes=60)
    ) -> str:
        """Records that happened now and reach a blob `lag` later (30 min to 24 h in reality)."""
        return self.add_blob(content_type, records, available_at=self.clock() + lag)

    def subscription_status(self, content_type: str) -> str | None:
        sub = self._subscriptions.get(content_type)
        return sub.status if sub else None

    def calls(self, method: str, path_regex: str) -> int:
        return sum(1 for r in self.requests if r.method == method and re.search(path_regex, r.path))

    # --- HTTP ---------------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        rec = await capture(request)
        self.requests.append(rec)
        try:
            response = self._handle(rec, str(request.base_url).rstrip("/"))
        except ActivityError as err:
            rec.error = err.code
            body = {"error": {"code": err.code, "message": err.message}}
            response = Response(json.dumps(body), err.status, err.headers, media_type="application/json")
        rec.status = response.status_code
        return response

    def _handle(self, rec: RecordedRequest, base_url: str) -> Response:
        if fault := self.faults.take(f"{rec.method} {rec.path}"):
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            code = fault.error or ("AF429" if fault.status == 429 else "AF50000")
            raise ActivityError(fault.status, code, f"Injected fault {fault.status}.", headers)
        auth = rec.headers.get("authorization", "")
        if auth != f"Bearer {self.token}":
            # U: the exact body the service sends for a missing or wrong token
            raise ActivityError(401, "Unauthorized", "Authorization has been denied for this request.")
        m = re.fullmatch(r"/api/v1\.0/([^/]+)/activity/feed/(.+)", rec.path)
        if not m:
            raise ActivityError(404, "NotFound", f"No HTTP resource was found that matches {rec.path}.")
        tenant, operation = m.group(1), m.group(2)
        if not re.fullmatch(r"[0-9a-fA-F-]{36}", tenant):
            raise ActivityError(400, "AF20013", f"The tenant ID passed in the URL ({tenant}) is not a valid GUID.")
        if tenant.lower() != self.tenant_id.lower():
            raise ActivityError(
                401,
                "AF20010",
                f"The tenant ID passed in the URL ({tenant}) does not match the tenant ID passed in the access "
                f"token ({self.tenant_id}).",
            )
        if self.permission_denied:
            raise ActivityError(
                401,
                "AF10001",
                "The permission set () sent in the request did not include the expected permission ActivityFeed.Read.",
            )
        if self._budget is not None and self._budget.admit():
            publisher = rec.params.get("PublisherIdentifier", "")
            headers = {"Retry-After": str(self.throttle_retry_after)} if self.throttle_retry_after else {}
            raise ActivityError(
                429, "AF429", f"Too many requests. Method={rec.method}, PublisherId={publisher}", headers
            )
        rec.handled = True
        params = rec.params
        route = (rec.method, operation)
        if route == ("POST", "subscriptions/start"):
            return self._start(self._content_type(params))
        if route == ("POST", "subscriptions/stop"):
            return self._stop(self._content_type(params))
        if route == ("GET", "subscriptions/list"):
            return _json([self._sub_json(s) for s in self._subscriptions.values()])
        if route == ("GET", "subscriptions/content"):
            return self._content(params, base_url, rec.path)
        if rec.method == "GET" and operation.startswith("audit/"):
            return self._blob(operation.removeprefix("audit/"))
        rec.handled = False
        raise ActivityError(404, "NotFound", f"No HTTP resource was found that matches {rec.path}.")

    # --- operations -------------------------------------------------------------------------------

    @staticmethod
    def _content_type(params: dict[str, str]) -> str:
        content_type = params.get("contentType")
        if not content_type:
            raise ActivityError(400, "AF20001", "Missing parameter: contentType.")
        if content_type not in CONTENT_TYPES:
            raise ActivityError(400, "AF20020", "The specified content type is not valid.")
        return content_type

    @staticmethod
    def _sub_json(sub: _Subscription) -> dict[str, Any]:
        return {"contentType": sub.content_type, "status": sub.status, "webhook": None}

    def _start(self, content_type: str) -> Response:
        now = _utc(self.clock())
        sub = self._subscriptions.get(content_type)
        if sub is not None and sub.status == "enabled":
            raise ActivityError(400, "AF20024", "The subscription is already enabled. No property change.")
        if sub is None:
            sub = self._subscriptions[content_type] = _Subscription(content_type, now)
        sub.status, sub.enabled_at = "enabled", now
        sub.history.append((now, None))
        return _json(self._sub_json(sub))

    def _stop(self, content_type: str) -> Response:
        sub = self._subscriptions.get(content_type)
        if sub is None:
            raise ActivityError(400, "AF20022", "No subscription found for the specified content type.")
        if sub.status == "enabled":
            start, _ = sub.history[-1]
            sub.history[-1] = (start, _utc(self.clock()))
        sub.status = "disabled"
        return Response(b"", 200)

    def _content(self, params: dict[str, str], base_url: str, path: str) -> Response:
        content_type = self._content_type(params)
        sub = self._subscriptions.get(content_type)
        if sub is None:
            raise ActivityError(400, "AF20022", "No subscription found for the specified content type.")
        if sub.status != "enabled":
            raise ActivityError(400, "AF20023", "The subscription was disabled by a tenant admin.")
        now = _utc(self.clock())
        raw_start, raw_end = params.get("startTime"), params.get("endTime")
        if (raw_start is None) != (raw_end is None):
            raise ActivityError(400, "AF20030", SPAN_RULE)
        if raw_start is None or raw_end is None:
            start, end = now - MAX_SPAN, now
        else:
            try:
                start, end = parse_api_time(raw_start), parse_api_time(raw_end)
            except ValueError as exc:
                raise ActivityError(400, "AF20002", f"Invalid parameter type: {exc}. Expected type: datetime") from None
            if end <= start or end - start > MAX_SPAN or start < now - MAX_AGE:
                raise ActivityError(400, "AF20030", SPAN_RULE)
        blobs = sorted(
            (
                b
                for b in self._blobs.values()
                if b.content_type == content_type
                and start <= b.created < end
                and b.created <= now
                and sub.covers(b.created)
            ),
            key=lambda b: (b.created, b.content_id),
        )
        offset = 0
        if token := params.get("nextPage"):
            try:
                offset = int(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
            except ValueError:
                raise ActivityError(400, "AF20031", f"Invalid nextPage Input: {token}.") from None
        page = blobs[offset : offset + self.page_size]
        feed = f"{base_url}/api/v1.0/{self.tenant_id}/activity/feed"
        body = [
            {
                "contentType": b.content_type,
                "contentId": b.content_id,
                "contentUri": f"{feed}/audit/{quote(b.content_id, safe='')}",
                "contentCreated": _iso(b.created),
                "contentExpiration": _iso(b.created + MAX_AGE),
            }
            for b in page
        ]
        headers: dict[str, str] = {}
        if offset + self.page_size < len(blobs):
            token = base64.urlsafe_b64encode(str(offset + self.page_size).encode()).decode().rstrip("=")
            query = [("contentType", content_type)]
            if raw_start is not None and raw_end is not None:
                query += [("startTime", raw_start), ("endTime", raw_end)]
            if publisher := params.get("PublisherIdentifier"):
                query.append(("PublisherIdentifier", publisher))
            query.append(("nextPage", token))
            headers["NextPageUri"] = f"{base_url}{path}?" + "&".join(f"{k}={quote(v, safe=':')}" for k, v in query)
        return _json(body, headers)

    def _blob(self, content_id: str) -> Response:
        blob = self._blobs.get(content_id)
        if blob is None:
            raise ActivityError(404, "AF20050", f"The specified content ({content_id}) does not exist.")
        if _utc(self.clock()) - blob.created > MAX_AGE:
            raise ActivityError(
                400,
                "AF20051",
                f"Content requested with the key {content_id} has already expired. Content older than 7 days "
                "cannot be retrieved.",
            )
        return _json(blob.records)


def _json(body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), 200, headers or {}, media_type="application/json; charset=utf-8")
