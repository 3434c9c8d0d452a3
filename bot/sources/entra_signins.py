"""Entra ID sign-ins: GET /auditLogs/signIns through msgraph-sdk (v1.0 interactive; beta for
non-interactive and service-principal sign-ins, which v1.0 cannot filter for).

Raw bytes are fetched through the SDK's request adapter (same auth and kiota retry middleware) so
the stored record is exactly what Graph sent, and the normalizer sees the real shape.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import msgspec
import orjson
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.audit_logs.sign_ins.sign_ins_request_builder import SignInsRequestBuilder
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_service_client import GraphServiceClient

PAGE_SIZE = 1000  # the documented maximum and default

# What the normalizer (bot/sources/normalize_entra.py) and so the detectors read; nothing else is sent.
# Only properties of the beta signIn resource: Graph answers 400 to an unknown one in $select.
SIGNIN_SELECT = (
    "id",
    "createdDateTime",
    "userPrincipalName",
    "userId",
    "userDisplayName",
    "userType",
    "appId",
    "appDisplayName",
    "ipAddress",
    "autonomousSystemNumber",
    "clientAppUsed",
    "userAgent",
    "correlationId",
    "conditionalAccessStatus",
    "isInteractive",
    "signInEventTypes",
    "status",
    "deviceDetail",
    "location",
    "networkLocationDetails",
    "riskEventTypes",
    "riskEventTypes_v2",
    "riskLevelDuringSignIn",
    "riskLevelAggregated",
    "riskState",
    "authenticationProtocol",
    "authenticationRequirement",
    "authenticationProcessingDetails",
    "resourceDisplayName",
    "resourceId",
    "tokenIssuerType",
    "uniqueTokenIdentifier",
    "servicePrincipalId",
    "servicePrincipalName",
)
# clientAppUsed values of legacy (basic-auth) protocols, as Entra reports them.
LEGACY_CLIENTS = (
    "Authenticated SMTP",
    "AutoDiscover",
    "Exchange ActiveSync",
    "Exchange Online PowerShell",
    "Exchange Web Services",
    "IMAP4",
    "MAPI Over HTTP",
    "Offline Address Book",
    "Other clients",
    "Outlook Anywhere (RPC over HTTP)",
    "POP3",
    "Reporting Web Services",
    "Universal Outlook",
)
# The clause for each filtered mode; a record is read when it matches any of the configured ones.
NONINTERACTIVE_FILTERS = {
    "failures": "status/errorCode ne 0",
    "legacy": " or ".join(f"clientAppUsed eq '{c}'" for c in LEGACY_CLIENTS),
    "risky": " or ".join(f"riskLevelDuringSignIn eq '{lvl}'" for lvl in ("low", "medium", "high")),
}


class WindowPacer:
    """Client-side pacing: at most `limit` request starts in any `window_s` of real time (the providers'
    limits are real time). A small margin absorbs the gap between our send and the server's count, so
    throttling (429) stays the exception: kiota's retry handles what other apps of the tenant cause.

    Graph reports (sign-ins): 5 per 10 s per app and tenant. Identity Protection: 1 per s per tenant,
    without Retry-After on its 429s (api-contracts.md §1.6)."""

    def __init__(self, limit: int, window_s: float, *, margin: float = 0.05, min_margin_s: float = 0.05) -> None:
        self.limit = limit
        # 5 % (0.5 s of a 10 s window), and never under 50 ms: send-to-count jitter does not shrink when a
        # benchmark compresses the window.
        self.window_s = window_s + max(window_s * margin, min_margin_s)
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()
        self.waited_s = 0.0

    async def wait(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._starts and now - self._starts[0] >= self.window_s:
                    self._starts.popleft()
                if len(self._starts) < self.limit:
                    self._starts.append(now)
                    return
                delay = self._starts[0] + self.window_s - now
                self.waited_s += delay
                await asyncio.sleep(delay)


def reports_pacer(scale: float = 1.0) -> WindowPacer:
    """The identity-and-access reports budget: 5 requests / 10 s (`scale` compresses time in benchmarks)."""
    return WindowPacer(5, 10.0 / scale)


def graph_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EntraSignIns:
    """The v1.0 interactive sign-in log of one tenant."""

    source = "entra_signin"
    kind = "entra-signin"

    def __init__(self, graph: GraphServiceClient, pacer: WindowPacer | None = None) -> None:
        self.graph = graph
        self.pacer = pacer  # the tenant's reports budget, shared with the beta sign-in fetcher

    async def fetch(self, start: datetime, end: datetime) -> tuple[list[Any], int]:
        """Every record in [start, end], following @odata.nextLink verbatim."""
        builder = self.graph.audit_logs.sign_ins
        config = RequestConfiguration(
            query_parameters=SignInsRequestBuilder.SignInsRequestBuilderGetQueryParameters(
                filter=f"createdDateTime ge {graph_time(start)} and createdDateTime le {graph_time(end)}",
                top=PAGE_SIZE,
            )
        )
        return await fetch_pages(
            self.graph,
            builder.to_get_request_information(config),
            builder.with_url,
            before_request=self.pacer.wait if self.pacer else None,
        )


def beta_url(graph: GraphServiceClient) -> str:
    """The beta root next to the client's v1.0 base URL (same host: the emulator, a national cloud)."""
    base = str(graph.request_adapter.base_url).rstrip("/")
    return base[: -len("/v1.0")] + "/beta" if base.endswith("/v1.0") else base + "/beta"


def query_string(params: Sequence[tuple[str, str]]) -> str:
    """`$name=value&...` with the values percent-encoded the way msgraph-sdk encodes them."""
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in params)


class EntraSignInsBeta:
    """Non-interactive (and optionally service-principal) sign-ins: beta only, because v1.0 has no
    `signInEventTypes` (api-contracts.md §1.2). The same GraphServiceClient and request adapter (auth,
    kiota retry) with a beta URL built by hand: no second SDK.

    Volume: non-interactive logs are 10-50x the interactive ones, beyond the 5 requests / 10 s reports
    budget for large tenants (performance.md §2), so `filters` narrows them server-side to failures,
    legacy-protocol clients and/or risky sign-ins (`status/errorCode ne 0` and the `or` groups are
    beta $filter syntax not listed among the documented operators: U).
    """

    source = "entra_signin_noninteractive"
    kind = "entra-signin"

    def __init__(
        self,
        graph: GraphServiceClient,
        *,
        filters: Sequence[str] = (),
        service_principals: bool = False,
        select: Sequence[str] = SIGNIN_SELECT,
        pacer: WindowPacer | None = None,
    ) -> None:
        unknown = set(filters) - set(NONINTERACTIVE_FILTERS)
        if unknown:
            raise ValueError(f"unknown non-interactive filter(s): {', '.join(sorted(unknown))}")
        self.graph = graph
        self.filters = tuple(filters)
        self.service_principals = service_principals
        self.select = tuple(select)
        self.pacer = pacer

    def filter_text(self, start: datetime, end: datetime) -> str:
        types = ["nonInteractiveUser"] + (["servicePrincipal"] if self.service_principals else [])
        kinds = " or ".join(f"signInEventTypes/any(t: t eq '{t}')" for t in types)
        clauses = [
            f"createdDateTime ge {graph_time(start)}",
            f"createdDateTime le {graph_time(end)}",
            f"({kinds})" if len(types) > 1 else kinds,
        ]
        if self.filters:
            clauses.append("(" + " or ".join(NONINTERACTIVE_FILTERS[f] for f in self.filters) + ")")
        return " and ".join(clauses)

    def url(self, start: datetime, end: datetime, top: int = PAGE_SIZE) -> str:
        params = [("$filter", self.filter_text(start, end)), ("$top", str(top))]
        if self.select:
            params.append(("$select", ",".join(self.select)))
        return f"{beta_url(self.graph)}/auditLogs/signIns?{query_string(params)}"

    async def fetch(self, start: datetime, end: datetime) -> tuple[list[Any], int]:
        with_url = self.graph.audit_logs.sign_ins.with_url
        return await fetch_pages(
            self.graph,
            with_url(self.url(start, end)).to_get_request_information(),
            with_url,
            before_request=self.pacer.wait if self.pacer else None,
        )


class GraphPage(msgspec.Struct):
    """One Graph collection page; each record stays raw JSON until its normalizer decodes it (typed)."""

    value: list[msgspec.Raw] = []
    next_link: str | None = msgspec.field(default=None, name="@odata.nextLink")


_PAGE = msgspec.json.Decoder(GraphPage)


def split_page(body: bytes) -> tuple[list[Any], str | None]:
    """A page's records (raw JSON each, as sent) and its next link. A body in another shape is parsed
    as any JSON, so whatever records it holds still reach the normalizer (which rejects, with a reason,
    what it cannot read). A body that is not JSON at all raises ValueError: the poll fails and its window
    is read again, rather than the cursor moving past a page nobody saw."""
    if not body:
        return [], None
    try:
        page = _PAGE.decode(body)
    except msgspec.ValidationError:
        loose: Any = orjson.loads(body)
        value = loose.get("value") if isinstance(loose, dict) else None
        link = loose.get("@odata.nextLink") if isinstance(loose, dict) else None
        return (value if isinstance(value, list) else []), (link if isinstance(link, str) and link else None)
    return page.value, page.next_link or None


async def fetch_pages(
    graph: GraphServiceClient,
    info: Any,
    with_url: Any,
    *,
    before_request: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[Any], int]:
    """GET a Graph collection and every @odata.nextLink page after it, as raw JSON records.

    `before_request` runs before each page (client-side pacing, e.g. Identity Protection's 1/s)."""
    records: list[Any] = []
    pages = 0
    adapter: Any = graph.request_adapter  # send_primitive_async is typed as returning None
    while True:
        if before_request is not None:
            await before_request()
        raw = await adapter.send_primitive_async(info, "bytes", {"XXX": ODataError})
        pages += 1
        value, next_link = split_page(raw or b"")
        records.extend(value)
        if next_link is None:
            return records, pages
        info = with_url(next_link).to_get_request_information()
