"""Entra ID sign-ins poller: GET /auditLogs/signIns through msgraph-sdk.

Delayed watermark (reference/performance.md "Lag vs budget"): each poll reads
[cursor - overlap, now - delay] and de-duplicates on the record id, so late records within the
overlap are caught while re-reads stay near 1x and the 5-requests-per-10-s reports budget holds.
Raw bytes are fetched through the SDK's request adapter (same auth and retry middleware) so the
stored record is exactly what Graph sent, and the normalizer sees the real shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.audit_logs.sign_ins.sign_ins_request_builder import SignInsRequestBuilder
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_service_client import GraphServiceClient
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.cases.service import CaseService
from bot.clock import Clock
from bot.model import Event, Rejection
from bot.sources.normalize_entra import SOURCE, canonical_bytes, normalize_signin, record_id
from bot.store import repo

log = structlog.get_logger("mailwarden.sources.entra_signins")

PAGE_SIZE = 1000  # the documented maximum and default


def graph_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class PollResult:
    window_start: datetime | None = None
    window_end: datetime | None = None
    pages: int = 0
    fetched: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    cases_opened: int = 0
    rejections: list[Rejection] = field(default_factory=list)


class EntraSignInPoller:
    source = SOURCE

    def __init__(
        self,
        graph: GraphServiceClient,
        engine: AsyncEngine,
        clock: Clock,
        cases: CaseService,
        *,
        tenant: str,
        delay: timedelta,
        overlap: timedelta,
        initial_lookback: timedelta,
    ) -> None:
        self.graph = graph
        self.engine = engine
        self.clock = clock
        self.cases = cases
        self.tenant = tenant
        self.delay = delay
        self.overlap = overlap
        self.initial_lookback = initial_lookback

    async def fetch(self, start: datetime, end: datetime) -> tuple[list[Any], int]:
        """Every record in [start, end], following @odata.nextLink verbatim."""
        builder = self.graph.audit_logs.sign_ins
        config = RequestConfiguration(
            query_parameters=SignInsRequestBuilder.SignInsRequestBuilderGetQueryParameters(
                filter=f"createdDateTime ge {graph_time(start)} and createdDateTime le {graph_time(end)}", top=PAGE_SIZE
            )
        )
        info = builder.to_get_request_information(config)
        records: list[Any] = []
        pages = 0
        adapter: Any = self.graph.request_adapter  # send_primitive_async is typed as returning None
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
            info = builder.with_url(next_link).to_get_request_information()

    async def poll_once(self) -> PollResult:
        now = self.clock.now()
        async with self.engine.connect() as conn:
            position = await repo.get_cursor(conn, SOURCE, self.tenant)
        end = now - self.delay
        start = (position - self.overlap) if position else end - self.initial_lookback
        result = PollResult(window_start=start, window_end=end)
        if position is not None and end <= position:
            return result
        records, result.pages = await self.fetch(start, end)
        result.fetched = len(records)
        async with self.engine.begin() as conn:
            fresh: list[Event] = []
            for record in records:
                payload = canonical_bytes(record)
                outcome = normalize_signin(record, self.tenant)
                if isinstance(outcome, Rejection):
                    # Keep the record (so the cursor may pass it) and say why it was not understood.
                    new = await repo.store_raw(
                        conn,
                        source=SOURCE,
                        tenant=self.tenant,
                        event_id=outcome.event_id,
                        payload=payload,
                        status="rejected",
                        reason=outcome.reason,
                        now=now,
                    )
                    if new:
                        result.rejected += 1
                        result.rejections.append(outcome)
                        log.warning("signin.rejected", record_id=outcome.event_id, reason=outcome.reason)
                    continue
                new = await repo.store_raw(
                    conn,
                    source=SOURCE,
                    tenant=self.tenant,
                    event_id=outcome.event_id,
                    payload=payload,
                    status="accepted",
                    now=now,
                    occurred_at=outcome.occurred_at,
                    user=outcome.user_principal,
                )
                if new:
                    fresh.append(outcome)
                else:
                    result.duplicates += 1
            result.stored = len(fresh)
            ingest = await self.cases.ingest(conn, fresh)
            result.cases_opened = ingest.cases_opened
            # same transaction as the events: a crash before commit re-reads the window, never skips it
            await repo.set_cursor(conn, SOURCE, self.tenant, end if position is None else max(end, position), now)
        log.info(
            "signin.poll",
            tenant=self.tenant,
            start=start.isoformat(),
            end=end.isoformat(),
            pages=result.pages,
            fetched=result.fetched,
            stored=result.stored,
            duplicates=result.duplicates,
            rejected=result.rejected,
            cases_opened=result.cases_opened,
        )
        return result


__all__ = ["EntraSignInPoller", "PollResult", "record_id"]
