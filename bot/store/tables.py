"""The schema, as SQLAlchemy Core tables. Alembic migrations create it; code queries through it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (SQLite has no zones); always handed back aware, in UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime reached the database")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


metadata = MetaData()

raw_events = Table(
    "raw_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("tenant", String(128), nullable=False),
    Column("event_id", String(256), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=True),
    Column("user_principal", String(320), nullable=True),
    Column("status", String(16), nullable=False),  # accepted | rejected
    Column("reason", Text, nullable=True),
    Column("payload", Text, nullable=False),
    Column("stored_at", UTCDateTime(), nullable=False),
    UniqueConstraint("source", "tenant", "event_id", name="uq_raw_events_source_id"),
)

cursors = Table(
    "cursors",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("tenant", String(128), primary_key=True),
    Column("position", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

profiles = Table(
    "profiles",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("user_principal", String(320), primary_key=True),
    Column("data", Text, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

cases = Table(
    "cases",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("user_principal", String(320), nullable=False),
    Column("state", String(32), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("opened_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("last_event_at", UTCDateTime(), nullable=False),
    Column("deadline_at", UTCDateTime(), nullable=True),
    Column("data", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Index("ix_cases_user_state", "tenant", "user_principal", "state"),
    Index("ix_cases_deadline", "deadline_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", String(32), nullable=True),
    Column("kind", String(64), nullable=False),
    Column("lane", String(128), nullable=False),  # delivery order is kept per lane
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),  # pending | done | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("done_at", UTCDateTime(), nullable=True),
    # who is delivering the row, until when (a crashed replica's claim lapses), and when the latest
    # attempt began: a row retried after an attempt began may already be in Slack (dispatch.py)
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_until", UTCDateTime(), nullable=True),
    Column("started_at", UTCDateTime(), nullable=True),
    Index("ix_outbox_due", "status", "next_attempt_at"),
)

action_ledger = Table(
    "action_ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", String(32), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(320), nullable=False),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("status", String(16), nullable=False),  # started | succeeded | failed
    Column("attempts", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("result", Text, nullable=True),
    UniqueConstraint("case_id", "action", "target", name="uq_ledger_case_action_target"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("case_id", String(32), nullable=True),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

allow_entries = Table(
    "allow_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(128), nullable=False),
    Column("user_principal", String(320), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("value", String(256), nullable=False),
    Column("status", String(16), nullable=False),  # pending | active | refused
    Column("reason", Text, nullable=False),
    Column("source", String(32), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("decided_by", String(64), nullable=True),
    Index("ix_allow_user", "tenant", "user_principal", "status"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Cross-user detection state (password spray, one app reading many mailboxes): one JSON row per
# tenant, so a restart keeps the windows (bot/detect/fleet.py).
fleets = Table(
    "fleets",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("data", Text, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# Users under stricter thresholds after a confirmed incident, and the quiet period after a
# containment (sign-ins from the user's usual places must not reopen the case they just closed).
watchlist = Table(
    "watchlist",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(128), nullable=False),
    Column("user_principal", String(320), nullable=False),
    Column("case_id", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("quiet_until", UTCDateTime(), nullable=False),
    Column("data", Text, nullable=False),  # the contained case's detectors and attacker evidence
    Index("ix_watchlist_user", "tenant", "user_principal", "expires_at"),
)
