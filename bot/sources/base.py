"""One poll loop for every source: fetch a window, keep every record, detect, advance the cursor.

A source only knows how to fetch records for a time window (`Fetcher`); the Poller owns the rest,
so cursors, de-duplication and the "cursor moves in the same transaction as the records" rule are
written once. Delayed watermark (reference/performance.md "Lag vs budget"): each poll reads
[cursor - overlap, now - delay] and de-duplicates on the record id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import msgspec
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot import metrics
from bot.cases.service import CaseService
from bot.clock import Clock
from bot.model import Event, Rejection
from bot.sources.normalize import is_sign_in_copy, normalize, normalize_json
from bot.sources.normalize_common import canonical_bytes
from bot.store import repo

log = structlog.get_logger("mailwarden.sources")

KeepRaw = Literal["evidence", "all"]


class SourceDisabled(Exception):
    """The provider refused this source for good (permission or licence); it was logged once."""


class Fetcher(Protocol):
    source: str  # the cursor's name, e.g. "entra_signin"
    kind: str  # the normalizer's kind, e.g. "entra-signin"

    async def fetch(self, start: datetime, end: datetime) -> tuple[list[Any], int]:
        """Every record in [start, end] (decoded, or each record's raw JSON as `msgspec.Raw`) and the
        number of requests it took."""
        ...


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
    sign_in_copies: int = 0  # STS logons kept but not detected on: Graph's sign-in log holds them
    disabled: bool = False  # the source is switched off (see the source.disabled log line); cursor unmoved
    rejections: list[Rejection] = field(default_factory=list)


class Poller:
    def __init__(
        self,
        fetcher: Fetcher,
        engine: AsyncEngine,
        clock: Clock,
        cases: CaseService,
        *,
        tenant: str,
        delay: timedelta,
        overlap: timedelta,
        initial_lookback: timedelta,
        max_window: timedelta | None = None,
        keep_raw: KeepRaw = "evidence",
        graph_sign_ins: Callable[[], bool] | None = None,
        graph_noninteractive_sign_ins: Callable[[], bool] | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.engine = engine
        self.clock = clock
        self.cases = cases
        self.tenant = tenant
        self.delay = delay
        self.overlap = overlap
        self.initial_lookback = initial_lookback
        self.max_window = max_window  # e.g. the Management Activity API's 24-hour listing limit
        self.keep_raw = keep_raw  # which records keep their JSON (Settings.keep_raw)
        # Whether the tenant's Graph sign-in log is being read right now: while it is, this source's
        # copies of the same sign-ins are kept but not detected on (bot/sources/normalize.py).
        self.graph_sign_ins = graph_sign_ins
        # ... and whether its non-interactive one is too, which holds the token redemptions' copies.
        self.graph_noninteractive_sign_ins = graph_noninteractive_sign_ins

    @property
    def name(self) -> str:
        return f"{self.fetcher.source}:{self.tenant}"

    async def poll_once(self) -> PollResult:
        now = self.clock.now()
        source = self.fetcher.source
        async with self.engine.connect() as conn:
            position = await repo.get_cursor(conn, source, self.tenant)
        end = now - self.delay
        start = (position - self.overlap) if position else end - self.initial_lookback
        if self.max_window is not None and end - start > self.max_window:
            end = start + self.max_window  # catch up one allowed window at a time
        result = PollResult(window_start=start, window_end=end)
        if position is not None and end <= position:
            return result
        try:
            records, result.pages = await self.fetcher.fetch(start, end)
        except SourceDisabled:
            result.disabled = True
            metrics.poll_failed(source, self.tenant, disabled=True)
            return result
        except Exception:  # a shutdown (CancelledError) is not a failed poll
            metrics.poll_failed(source, self.tenant)
            raise
        result.fetched = len(records)
        cursor = end if position is None else max(end, position)
        try:
            async with self.engine.begin() as conn:
                taken = await take_records(
                    conn,
                    self.cases,
                    source=source,
                    kind=self.fetcher.kind,
                    tenant=self.tenant,
                    records=records,
                    now=now,
                    keep_raw=self.keep_raw,
                    graph_sign_ins=self.graph_sign_ins() if self.graph_sign_ins else False,
                    graph_noninteractive_sign_ins=(
                        self.graph_noninteractive_sign_ins() if self.graph_noninteractive_sign_ins else False
                    ),
                )
                # same transaction as the records: a crash before commit re-reads the window, never skips it
                await repo.set_cursor(conn, source, self.tenant, cursor, now)
        except BaseException as exc:
            # The in-memory baselines learned from records that were rolled back: the next poll reads the
            # window again and must learn them once, from what the database holds.
            self.cases.forget_cached_profiles(self.tenant)
            if isinstance(exc, Exception):  # a shutdown (CancelledError) is not a failed poll
                metrics.poll_failed(source, self.tenant)
            raise
        result.stored, result.duplicates, result.sign_in_copies = taken.stored, taken.duplicates, taken.sign_in_copies
        result.rejected, result.rejections, result.cases_opened = (
            len(taken.rejections),
            taken.rejections,
            taken.cases_opened,
        )
        metrics.poll_done(
            source,
            self.tenant,
            counts={
                "detected": taken.stored - taken.sign_in_copies,
                "duplicate": taken.duplicates,
                "rejected": len(taken.rejections),
                "sign_in_copy": taken.sign_in_copies,
            },
            cases_opened=taken.cases_opened,
            cursor=cursor,
            at=now,
        )
        log.info(
            "source.poll",
            source=source,
            tenant=self.tenant,
            start=start.isoformat(),
            end=end.isoformat(),
            pages=result.pages,
            fetched=result.fetched,
            stored=result.stored,
            duplicates=result.duplicates,
            rejected=result.rejected,
            cases_opened=result.cases_opened,
            sign_in_copies=result.sign_in_copies,
        )
        return result


@dataclass(slots=True)
class Taken:
    """What one batch of fetched records came to."""

    stored: int = 0
    duplicates: int = 0
    cases_opened: int = 0
    sign_in_copies: int = 0
    rejections: list[Rejection] = field(default_factory=list)


def _json(record: Any) -> bytes:
    """The record's JSON: exactly what the provider sent when the fetcher kept the bytes (typed
    decoding, no re-encoding), else the sorted-key encoding of the decoded value."""
    return bytes(record) if isinstance(record, (bytes, msgspec.Raw)) else canonical_bytes(record)


async def take_records(
    conn: AsyncConnection,
    cases: CaseService,
    *,
    source: str,
    kind: str,
    tenant: str,
    records: Sequence[Any],
    now: datetime,
    keep_raw: KeepRaw = "evidence",
    graph_sign_ins: bool = False,
    graph_noninteractive_sign_ins: bool = False,
) -> Taken:
    """Keep every record, detect on the new ones, inside the caller's transaction.

    Records are decoded JSON values or one record's raw JSON (`msgspec.Raw` / bytes), which sign-ins
    decode straight into a typed struct. Every record gets a raw_events row, a rejected one with its
    reason, so the cursor may pass it; one that was stored before (the poll window's overlap) is a
    duplicate and is not detected on again. The row keeps the record's JSON when it was rejected or
    became evidence of a case (or always, with keep_raw="all"). With `graph_sign_ins` (the tenant's
    Graph sign-in log is being read), STS logons are kept like any record but not detected on: they
    copy sign-ins that Graph delivers (bot/sources/normalize.py, is_sign_in_copy), except token
    redemptions unless `graph_noninteractive_sign_ins` (its non-interactive log is read too)."""
    taken = Taken()
    # each item with its record, whose JSON is written out only if the row keeps it
    items: list[tuple[Event | Rejection, Any]] = []
    for n, record in enumerate(records):
        if n and n % 64 == 0:
            await asyncio.sleep(0)  # normalizing a 1,000-record page must not hold up Slack acks
        if isinstance(record, (bytes, msgspec.Raw)):
            normalized = normalize_json(kind, bytes(record), tenant)
        else:
            normalized = normalize(kind, record, tenant)
        items.extend((item, record) for item in normalized)
    new = await repo.unseen_raw(conn, source, tenant, (item.event_id for item, _ in items))
    fresh: list[Event] = []
    kept: list[tuple[Event | Rejection, Any]] = []
    for item, record in items:
        if item.event_id not in new:
            taken.duplicates += isinstance(item, Event)
            continue
        new.discard(item.event_id)  # the first of two copies in one batch is the one kept
        kept.append((item, record))
        if isinstance(item, Rejection):
            taken.rejections.append(item)
            log.warning("record.rejected", source=source, record_id=item.event_id, reason=item.reason)
        elif graph_sign_ins and is_sign_in_copy(item, noninteractive_log=graph_noninteractive_sign_ins):
            taken.sign_in_copies += 1
        else:
            fresh.append(item)
    taken.stored = len(fresh) + taken.sign_in_copies
    ingest = await cases.ingest(conn, fresh)
    taken.cases_opened = ingest.cases_opened
    evidence = ingest.evidence
    rows: list[repo.RawRow] = []
    for item, record in kept:
        if isinstance(item, Rejection):
            payload = _json(record).decode(errors="replace")
            rows.append((source, tenant, item.event_id, None, None, "rejected", item.reason, payload, now))
            continue
        keep = keep_raw == "all" or (source, item.event_id) in evidence
        payload = _json(record).decode(errors="replace") if keep else ""
        rows.append(
            (source, tenant, item.event_id, item.occurred_at, item.user_principal, "accepted", None, payload, now)
        )
    await repo.insert_raw(conn, rows)
    return taken
