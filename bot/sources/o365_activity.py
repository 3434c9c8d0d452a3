"""Office 365 Management Activity API: Audit.Exchange and Audit.AzureActiveDirectory content blobs.

Through httpx with an azure-identity token for `https://manage.office.com/.default` (the tenant's own
credential), per api-contracts.md §1.9:

- `GET /subscriptions/list` once per process, then `POST /subscriptions/start?contentType=...` for each
  content type that is not enabled ("already enabled", AF20024, counts as success);
- `GET /subscriptions/content?contentType=..&startTime=..&endTime=..` for the poll window, following
  the `NextPageUri` **response header** until it is absent;
- `GET {contentUri}` for each blob: a JSON array of audit records.

The window is on `contentCreated` (when a blob became available), not on the events' time: records
arrive 30 min-24 h after the event, but a blob is listed as soon as it exists. So the delayed watermark
only covers listing propagation; the Poller's `max_window` keeps each listing within 24 h, and a start
more than 7 days back (a long outage) is moved forward with one warning (the API refuses it: AF20030).

Blobs seen in the overlap of the previous, committed window are not downloaded again. "Committed" is
known without touching the database: the Poller only moves the window's start after it stored the
records, so a call with a different start means the previous call's records are stored. De-duplication
on the record `Id` (the Poller) stays the safety net for restarts and replicas.

Retries: httpx has none, so tenacity retries 429 (AF429), 5xx and network errors, honouring Retry-After
when the API sends it, else exponential backoff with jitter. `PublisherIdentifier` is on every call.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import orjson
import structlog
from azure.core.credentials_async import AsyncTokenCredential
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from bot.clock import Clock

log = structlog.get_logger("mailwarden.sources")

MANAGE_SCOPE = "https://manage.office.com/.default"
MAX_LISTING_WINDOW = timedelta(hours=24)
MAX_AGE = timedelta(days=7)
AGE_MARGIN = timedelta(minutes=10)  # stay clear of the 7-day edge: our clock and theirs differ a little
ALREADY_ENABLED = "AF20024"
NO_SUBSCRIPTION = "AF20022"
GONE = frozenset({"AF20050", "AF20051"})  # the blob does not exist / expired (> 7 days): retrying cannot help


class ManagementApiError(Exception):
    """A Management Activity API error: {"error": {"code": "AF...", "message": ...}}."""

    def __init__(self, status: int, code: str | None, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code or '-'}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.code == "AF429" or self.status >= 500


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ManagementApiError):
        return exc.retryable
    return isinstance(exc, httpx.TransportError)


def api_time(at: datetime) -> str:
    """The listing's time form (YYYY-MM-DDTHH:MM:SS, UTC)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def with_param(url: str, name: str, value: str | None) -> str:
    """`url` with `name=value` appended unless already there; the rest of the URL is left byte for byte
    (a NextPageUri is followed verbatim)."""
    if not value:
        return url
    parts = urlsplit(url)
    if any(k.lower() == name.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)):
        return url
    return f"{url}{'&' if parts.query else '?'}{name}={quote(value, safe='')}"


@dataclass(frozen=True, slots=True)
class Blob:
    content_type: str
    content_id: str
    uri: str
    created: str


class O365Activity:
    source = "o365_audit"
    kind = "o365-audit"

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        tenant_id: str,
        clock: Clock,
        manage_url: str = "https://manage.office.com",
        publisher_id: str | None = None,
        content_types: Sequence[str] = ("Audit.Exchange", "Audit.AzureActiveDirectory"),
        http: httpx.AsyncClient | None = None,
        max_attempts: int = 5,
        max_wait_s: float = 60.0,
        timeout_s: float = 60.0,
    ) -> None:
        self.credential = credential
        self.tenant_id = tenant_id
        self.clock = clock
        self.root = f"{manage_url.rstrip('/')}/api/v1.0/{tenant_id}/activity/feed"
        self.publisher_id = publisher_id or tenant_id  # documented: the vendor's tenant GUID
        self.content_types = tuple(content_types)
        self.http = http
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self.timeout_s = timeout_s
        self._subscribed: set[str] = set()
        self._requests = 0
        # contentId -> contentCreated, for blobs returned to the Poller
        self._committed: dict[str, str] = {}
        self._pending: dict[str, str] = {}
        self._last_start: datetime | None = None

    # --- HTTP -------------------------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ManagementApiError) and exc.retry_after is not None:
            return min(self.max_wait_s, exc.retry_after)
        backoff: float = 0.5 * 2 ** (state.attempt_number - 1)
        return float(min(self.max_wait_s, backoff + random.uniform(0, 0.5)))  # noqa: S311 - jitter, not a secret

    async def _send(self, http: httpx.AsyncClient, method: str, url: str) -> httpx.Response:
        url = with_param(url, "PublisherIdentifier", self.publisher_id)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            reraise=True,
        ):
            with attempt:
                token = await self.credential.get_token(MANAGE_SCOPE)
                self._requests += 1
                response = await http.request(method, url, headers={"Authorization": f"Bearer {token.token}"})
                if response.status_code >= 400:
                    raise _error(response)
                return response
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _same_origin(self, url: str) -> bool:
        a, b = urlsplit(url), urlsplit(self.root)
        return (a.scheme, a.netloc.lower()) == (b.scheme, b.netloc.lower())

    # --- subscriptions ----------------------------------------------------------------------------

    async def _ensure_subscriptions(self, http: httpx.AsyncClient) -> None:
        missing = [c for c in self.content_types if c not in self._subscribed]
        if not missing:
            return
        listed = _json(await self._send(http, "GET", f"{self.root}/subscriptions/list"))
        for sub in listed if isinstance(listed, list) else []:
            if isinstance(sub, dict) and sub.get("status") == "enabled":
                self._subscribed.add(str(sub.get("contentType")))
        for content_type in missing:
            if content_type not in self._subscribed:
                await self._start(http, content_type)

    async def _start(self, http: httpx.AsyncClient, content_type: str) -> None:
        try:
            await self._send(http, "POST", f"{self.root}/subscriptions/start?contentType={content_type}")
            log.info("o365.subscription_started", tenant=self.tenant_id, content_type=content_type)
        except ManagementApiError as exc:
            if exc.code != ALREADY_ENABLED:
                raise
        self._subscribed.add(content_type)

    async def subscriptions(self) -> list[dict[str, Any]]:
        """GET /subscriptions/list: the cheapest call that proves the token and ActivityFeed.Read."""
        http = self.http or httpx.AsyncClient(timeout=self.timeout_s)
        try:
            listed = _json(await self._send(http, "GET", f"{self.root}/subscriptions/list"))
        finally:
            if self.http is None:
                await http.aclose()
        return [s for s in listed if isinstance(s, dict)] if isinstance(listed, list) else []

    # --- listing and blobs ------------------------------------------------------------------------

    async def _list(self, http: httpx.AsyncClient, content_type: str, start: datetime, end: datetime) -> list[Blob]:
        url: str | None = (
            f"{self.root}/subscriptions/content?contentType={content_type}"
            f"&startTime={api_time(start)}&endTime={api_time(end)}"
        )
        blobs: list[Blob] = []
        restarted = False
        while url:
            try:
                response = await self._send(http, "GET", url)
            except ManagementApiError as exc:
                if exc.code == NO_SUBSCRIPTION and not restarted:  # stopped behind our back: start it again
                    restarted = True
                    self._subscribed.discard(content_type)
                    await self._start(http, content_type)
                    continue
                raise
            for item in _json(response) or []:
                if isinstance(item, dict) and isinstance(item.get("contentUri"), str):
                    cid = str(item.get("contentId") or item["contentUri"])
                    blobs.append(Blob(content_type, cid, item["contentUri"], str(item.get("contentCreated") or "")))
            url = response.headers.get("NextPageUri") or None
            if url and not self._same_origin(url):
                raise ManagementApiError(0, None, f"NextPageUri points outside {self.root}: refused")
        return blobs

    async def _records(self, http: httpx.AsyncClient, blob: Blob) -> list[Any]:
        if not self._same_origin(blob.uri):  # the bearer token only goes to the API's own host
            raise ManagementApiError(0, None, f"contentUri points outside {self.root}: refused")
        try:
            response = await self._send(http, "GET", blob.uri)
        except ManagementApiError as exc:
            if exc.code in GONE:
                log.warning("o365.blob_gone", tenant=self.tenant_id, content_id=blob.content_id, code=exc.code)
                return []
            raise
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            # Kept as one record the normalizer rejects (counted, stored, logged): never silently dropped.
            return [{"contentId": blob.content_id, "contentType": blob.content_type, "error": "blob is not JSON"}]
        return body if isinstance(body, list) else [body]

    def _settle(self, start: datetime) -> None:
        """A new window start means the previous call's records were stored: they need no re-download."""
        if self._last_start is not None and start != self._last_start:
            self._committed.update(self._pending)
        self._pending = {}
        self._last_start = start
        floor = api_time(start - timedelta(hours=1))
        self._committed = {k: v for k, v in self._committed.items() if not v or v[:19] >= floor}

    async def fetch(self, start: datetime, end: datetime) -> tuple[list[Any], int]:
        self._requests = 0
        self._settle(start)
        oldest = self.clock.now() - MAX_AGE + AGE_MARGIN
        if start < oldest:
            log.warning(
                "o365.gap",
                tenant=self.tenant_id,
                wanted_from=start.isoformat(),
                readable_from=oldest.isoformat(),
                why="the Management Activity API lists at most 7 days back",
            )
            start = oldest
        if end <= start:
            return [], 0
        if end - start > MAX_LISTING_WINDOW:
            end = start + MAX_LISTING_WINDOW  # the Poller's max_window should already guarantee it
        records: list[Any] = []
        http = self.http or httpx.AsyncClient(timeout=self.timeout_s)
        try:
            await self._ensure_subscriptions(http)
            for content_type in self.content_types:
                for blob in await self._list(http, content_type, start, end):
                    if blob.content_id in self._committed or blob.content_id in self._pending:
                        continue
                    records.extend(await self._records(http, blob))
                    self._pending[blob.content_id] = blob.created
        finally:
            if self.http is None:
                await http.aclose()
        return records, self._requests


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise ManagementApiError(response.status_code, None, "response is not JSON") from None


def _error(response: httpx.Response) -> ManagementApiError:
    code, message = None, response.reason_phrase or "error"
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = str(err.get("code")) if err.get("code") else None
        message = str(err.get("message") or message)
    retry_after: float | None = None
    raw = response.headers.get("Retry-After")
    if raw:
        try:
            retry_after = max(0.0, float(raw))
        except ValueError:
            retry_after = None
    return ManagementApiError(response.status_code, code, message, retry_after)
