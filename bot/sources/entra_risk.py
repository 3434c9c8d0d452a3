"""Entra ID Protection: GET /identityProtection/riskDetections (and, when enabled, riskyUsers).

Identity Protection allows **1 request per second per tenant, for all apps together, and its 429s
carry no Retry-After** (api-contracts.md §1.3, §1.6). Kiota's RetryHandler would then back off on
its own guess (about 3.5-4.5 s), so this fetcher paces its own requests at least 1 s apart (one
pacer per tenant, TenantClients.identity_protection, shared with `doctor`): kiota's retry stays the
exception. Another app of the same tenant calling Identity Protection still shares the budget; its
429s are what kiota's retry is for.

Windows: riskDetections on `detectedDateTime` (when Identity Protection raised it: offline detections
come hours after the activity, so the activity time would make them arrive "in the past");
riskyUsers on `riskLastUpdatedDateTime`. Paging: `$top` (max 500 for riskDetections) and
`@odata.nextLink`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from msgraph.graph_service_client import GraphServiceClient

from bot.sources.entra_signins import WindowPacer, fetch_pages, graph_time, query_string

RISK_PAGE_SIZE = 500  # riskDetections: default 20, maximum 500
RISKY_USERS_PAGE_SIZE = 500  # U: the riskyUsers page does not state a maximum; 500 is accepted by the emulator


def identity_protection_pacer(scale: float = 1.0) -> WindowPacer:
    """Identity Protection's budget: 1 request / s per tenant (`scale` compresses time in benchmarks)."""
    return WindowPacer(1, 1.0 / scale)


class EntraRisk:
    source = "entra_risk"
    kind = "entra-risk"

    def __init__(
        self,
        graph: GraphServiceClient,
        *,
        pacer: WindowPacer,
        risky_users: bool = False,
        page_size: int = RISK_PAGE_SIZE,
    ) -> None:
        self.graph = graph
        self.pacer = pacer
        self.risky_users = risky_users
        self.page_size = page_size

    def _url(self, path: str, field: str, start: datetime, end: datetime, top: int) -> str:
        base = str(self.graph.request_adapter.base_url).rstrip("/")
        flt = f"{field} ge {graph_time(start)} and {field} le {graph_time(end)}"
        return f"{base}/identityProtection/{path}?{query_string([('$filter', flt), ('$top', str(top))])}"

    async def fetch(self, start: datetime, end: datetime) -> tuple[list[Any], int]:
        detections = self.graph.identity_protection.risk_detections
        url = self._url("riskDetections", "detectedDateTime", start, end, self.page_size)
        records, pages = await fetch_pages(
            self.graph,
            detections.with_url(url).to_get_request_information(),
            detections.with_url,
            before_request=self.pacer.wait,
        )
        if self.risky_users:
            users = self.graph.identity_protection.risky_users
            url = self._url("riskyUsers", "riskLastUpdatedDateTime", start, end, RISKY_USERS_PAGE_SIZE)
            more, more_pages = await fetch_pages(
                self.graph,
                users.with_url(url).to_get_request_information(),
                users.with_url,
                before_request=self.pacer.wait,
            )
            records += more
            pages += more_pages
        return records, pages
