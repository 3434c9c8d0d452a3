"""Prometheus metrics: what the operator alerts on, beside /healthz.

Per source and tenant (both come from configuration, so the label sets stay small): how each poll
went, what became of the records it read, how many cases they opened, and where the source's cursor
stands (`time() - mailwarden_source_cursor_timestamp_seconds` is how far behind detection runs: it
grows when a source keeps failing or is switched off). The outbox and audit-chain gauges are read
from the database when /metrics is scraped, the same figures /healthz reports.

The names are a public interface (README "Deploying"): add, never rename. Each replica exports its
own counters; sum them across replicas.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge

POLLS = Counter(
    "mailwarden_polls",
    "Polls of a log source, by result: ok, failed (the window is read again next time) or disabled "
    "(the provider refused the source for good: permission or licence)",
    ["source", "tenant", "result"],
)
RECORDS = Counter(
    "mailwarden_records",
    "Log records that polls read, by outcome: detected (stored and detected on), duplicate (the "
    "overlap re-read), rejected (malformed: kept with its reason) or sign_in_copy (an audit-log copy of a "
    "Graph sign-in: stored, not detected on again)",
    ["source", "tenant", "outcome"],
)
CASES_OPENED = Counter("mailwarden_cases_opened", "Cases that a source's records opened", ["source", "tenant"])
CURSOR = Gauge(
    "mailwarden_source_cursor_timestamp_seconds",
    "End of the last window a source has read and committed (Unix time)",
    ["source", "tenant"],
)
LAST_POLL = Gauge(
    "mailwarden_source_last_success_timestamp_seconds",
    "When a source last completed a poll (Unix time)",
    ["source", "tenant"],
)
OUTBOX_PENDING = Gauge("mailwarden_outbox_pending", "Slack posts, pages and actions waiting to be delivered")
OUTBOX_OLDEST = Gauge(
    "mailwarden_outbox_oldest_pending_seconds", "Age of the oldest undelivered outbox row (0 when none waits)"
)
OUTBOX_DEAD = Gauge(
    "mailwarden_outbox_dead", "Outbox rows given up on: cards or actions that never happened and need a person"
)
AUDIT_OK = Gauge("mailwarden_audit_chain_ok", "1 while the audit log's hash chain verifies, else 0")
DB_OK = Gauge("mailwarden_db_ok", "1 while the database answers, else 0")

OUTCOMES = ("detected", "duplicate", "rejected", "sign_in_copy")


def poll_done(
    source: str,
    tenant: str,
    *,
    counts: Mapping[str, int],
    cases_opened: int,
    cursor: datetime,
    at: datetime,
) -> None:
    """A poll committed: its records by outcome (see OUTCOMES), the cases they opened, the new cursor."""
    POLLS.labels(source, tenant, "ok").inc()
    for outcome in OUTCOMES:
        RECORDS.labels(source, tenant, outcome).inc(counts.get(outcome, 0))
    CASES_OPENED.labels(source, tenant).inc(cases_opened)
    CURSOR.labels(source, tenant).set(cursor.timestamp())
    LAST_POLL.labels(source, tenant).set(at.timestamp())


def poll_failed(source: str, tenant: str, *, disabled: bool = False) -> None:
    POLLS.labels(source, tenant, "disabled" if disabled else "failed").inc()


def from_health(report: Mapping[str, Any]) -> None:
    """Set the database-backed gauges from a /healthz report (bot.wiring.Services.health)."""
    ok = bool(report.get("ok"))
    DB_OK.set(1 if ok else 0)
    if not ok:
        return
    OUTBOX_PENDING.set(report.get("pending_outbox") or 0)
    OUTBOX_OLDEST.set(report.get("oldest_pending_s") or 0)
    OUTBOX_DEAD.set(report.get("dead_outbox") or 0)
    AUDIT_OK.set(1 if report.get("audit_ok") else 0)
