"""Entra ID sign-ins: GET /auditLogs/signIns through msgraph-sdk (v1.0 interactive; beta for
non-interactive and service-principal sign-ins, which v1.0 cannot filter for).

Raw bytes are fetched through the SDK's request adapter (same auth and kiota retry middleware) so
the stored record is exactly what Graph sent, and the normalizer sees the real shape.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.audit_logs.sign_ins.sign_ins_request_builder import SignInsRequestBuilder
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_service_client import GraphServiceClient

PAGE_SIZE = 1000  # the documented maximum and default


def graph_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EntraSignIns:
    """The v1.0 interactive sign-in log of one tenant."""

    source = "entra_signin"
    kind = "entra-signin"

    def __init__(self, graph: GraphServiceClient) -> None:
        self.graph = graph

    async def fetch(self, start: datetime, end: datetime) -> tuple[list[Any], int]:
        """Every record in [start, end], following @odata.nextLink verbatim."""
        builder = self.graph.audit_logs.sign_ins
        config = RequestConfiguration(
            query_parameters=SignInsRequestBuilder.SignInsRequestBuilderGetQueryParameters(
                filter=f"createdDateTime ge {graph_time(start)} and createdDateTime le {graph_time(end)}",
                top=PAGE_SIZE,
            )
        )
        return await fetch_pages(self.graph, builder.to_get_request_information(config), builder.with_url)


async def fetch_pages(graph: GraphServiceClient, info: Any, with_url: Any) -> tuple[list[Any], int]:
    """GET a Graph collection and every @odata.nextLink page after it, as raw JSON records."""
    records: list[Any] = []
    pages = 0
    adapter: Any = graph.request_adapter  # send_primitive_async is typed as returning None
    while True:
        raw = await adapter.send_primitive_async(info, "bytes", {"XXX": ODataError})
        pages += 1
        body: Any = orjson.loads(raw) if raw else {}
        value = body.get("value") if isinstance(body, dict) else None
        if isinstance(value, list):
            records.extend(value)
        next_link = body.get("@odata.nextLink") if isinstance(body, dict) else None
        if not isinstance(next_link, str) or not next_link:
            return records, pages
        info = with_url(next_link).to_get_request_information()
