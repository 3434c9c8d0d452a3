"""Queries the service layer needs, each on the caller's connection (so the caller owns the
transaction): cases with optimistic versioning, outbox rows, cursors, profiles, raw events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
from sqlalchemy import and_, bindparam, delete, func, insert, select, type_coerce, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.allowlist import AllowEntry, Watch
from bot.detect.fleet import TenantFleet
from bot.errors import ConcurrentUpdate
from bot.model import TERMINAL, Case, Profile
from bot.store import codec
from bot.store.tables import UTCDateTime, allow_entries, cases, cursors, fleets, outbox, profiles, raw_events, watchlist


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _case_from_row(row: Any) -> Case:
    m = row._mapping
    return codec.case_from_columns(dict(m), orjson.loads(m["data"]))


def _case_columns(c: Case) -> dict[str, Any]:
    return {
        "tenant": c.tenant,
        "user_principal": c.user_principal,
        "state": c.state.value,
        "severity": c.severity.label,
        "opened_at": c.opened_at,
        "updated_at": c.updated_at,
        "last_event_at": c.last_event_at,
        "deadline_at": c.deadline_at,
        "data": dumps(codec.case_data(c)),
    }


async def load_case(conn: AsyncConnection, case_id: str) -> Case | None:
    row = (await conn.execute(select(cases).where(cases.c.id == case_id))).first()
    return _case_from_row(row) if row else None


async def insert_case(conn: AsyncConnection, c: Case) -> None:
    await conn.execute(cases.insert().values(id=c.id, version=c.version, **_case_columns(c)))


async def save_case(conn: AsyncConnection, c: Case) -> Case:
    """Write `c` if nobody else changed the case since it was read; return it with the new version."""
    res = await conn.execute(
        update(cases)
        .where(and_(cases.c.id == c.id, cases.c.version == c.version))
        .values(version=c.version + 1, **_case_columns(c))
    )
    if res.rowcount != 1:
        raise ConcurrentUpdate(c.id)
    return replace(c, version=c.version + 1)


async def open_case_for(conn: AsyncConnection, tenant: str, user: str, since: datetime) -> Case | None:
    row = (
        await conn.execute(
            select(cases)
            .where(
                cases.c.tenant == tenant,
                cases.c.user_principal == user,
                cases.c.state.not_in([s.value for s in TERMINAL]),
                cases.c.last_event_at >= since,
            )
            .order_by(cases.c.opened_at.desc())
            .limit(1)
        )
    ).first()
    return _case_from_row(row) if row else None


async def due_case_ids(conn: AsyncConnection, now: datetime, limit: int = 100) -> list[str]:
    rows = await conn.execute(
        select(cases.c.id)
        .where(cases.c.deadline_at.is_not(None), cases.c.deadline_at <= now)
        .order_by(cases.c.deadline_at)
        .limit(limit)
    )
    return [r.id for r in rows]


async def list_cases(conn: AsyncConnection) -> list[Case]:
    return [_case_from_row(r) for r in await conn.execute(select(cases).order_by(cases.c.opened_at))]


async def enqueue(
    conn: AsyncConnection, *, kind: str, lane: str, payload: dict[str, Any], now: datetime, case_id: str | None = None
) -> None:
    await conn.execute(
        outbox.insert().values(
            case_id=case_id,
            kind=kind,
            lane=lane,
            payload=dumps(payload),
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


async def pending_outbox(conn: AsyncConnection) -> int:
    return int(
        (await conn.execute(select(func.count()).select_from(outbox).where(outbox.c.status == "pending"))).scalar_one()
    )


@dataclass(frozen=True, slots=True)
class OutboxHealth:
    pending: int
    dead: int  # gave up on: a card or an action that never happened (logged and audited as outbox.dead)
    oldest_pending_at: datetime | None


async def outbox_health(conn: AsyncConnection) -> OutboxHealth:
    """One statement (the health endpoint is polled): counts by status and the oldest pending row."""
    pending = outbox.c.status == "pending"
    row = (
        await conn.execute(
            select(
                func.count().filter(pending),
                func.count().filter(outbox.c.status == "dead"),
                # FILTER drops the column's type: read the result back as the column stores it
                type_coerce(func.min(outbox.c.created_at).filter(pending), UTCDateTime()),
            )
        )
    ).one()
    return OutboxHealth(int(row[0]), int(row[1]), row[2])


async def get_cursor(conn: AsyncConnection, source: str, tenant: str) -> datetime | None:
    row = (
        await conn.execute(select(cursors.c.position).where(cursors.c.source == source, cursors.c.tenant == tenant))
    ).first()
    return row.position if row else None


def _insert(conn: AsyncConnection, table: Any) -> Any:
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


async def set_cursor(conn: AsyncConnection, source: str, tenant: str, position: datetime, now: datetime) -> None:
    stmt = _insert(conn, cursors).values(source=source, tenant=tenant, position=position, updated_at=now)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=["source", "tenant"], set_={"position": position, "updated_at": now})
    )


async def load_profile(conn: AsyncConnection, tenant: str, user: str) -> Profile | None:
    row = (
        await conn.execute(
            select(profiles.c.data).where(profiles.c.tenant == tenant, profiles.c.user_principal == user)
        )
    ).first()
    return codec.profile_from_json(row.data) if row else None


async def save_profile(conn: AsyncConnection, tenant: str, p: Profile, now: datetime) -> None:
    data = codec.profile_json(p).decode()
    stmt = _insert(conn, profiles).values(tenant=tenant, user_principal=p.user_principal, data=data, updated_at=now)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=["tenant", "user_principal"], set_={"data": data, "updated_at": now})
    )


async def store_raw(
    conn: AsyncConnection,
    *,
    source: str,
    tenant: str,
    event_id: str,
    payload: bytes,
    status: str,
    now: datetime,
    occurred_at: datetime | None = None,
    user: str | None = None,
    reason: str | None = None,
) -> bool:
    """Keep the record as received; False when (source, tenant, id) was already stored."""
    stmt = (
        _insert(conn, raw_events)
        .values(
            source=source,
            tenant=tenant,
            event_id=event_id,
            occurred_at=occurred_at,
            user_principal=user,
            status=status,
            reason=reason,
            payload=payload.decode("utf-8", "replace"),
            stored_at=now,
        )
        .on_conflict_do_nothing(index_elements=["source", "tenant", "event_id"])
    )
    res = await conn.execute(stmt)
    return bool(res.rowcount == 1)


async def add_allow(conn: AsyncConnection, tenant: str, e: AllowEntry, now: datetime, status: str = "active") -> int:
    res = await conn.execute(
        allow_entries.insert().values(
            tenant=tenant,
            user_principal=e.user_principal,
            scope=e.scope,
            value=e.value[:256],
            status=status,
            reason=e.reason[:1000],
            source=e.source,
            created_by=e.created_by,
            created_at=now,
            expires_at=e.expires_at,
        )
    )
    key = res.inserted_primary_key
    assert key is not None
    return int(key[0])


def _allow(r: Any) -> AllowEntry:
    return AllowEntry(
        user_principal=r.user_principal,
        scope=r.scope,
        value=r.value,
        expires_at=r.expires_at,
        reason=r.reason,
        created_by=r.created_by,
        source=r.source,
        id=r.id,
    )


async def active_allows(conn: AsyncConnection, tenant: str, user: str, now: datetime) -> list[AllowEntry]:
    rows = await conn.execute(
        select(allow_entries).where(
            allow_entries.c.tenant == tenant,
            allow_entries.c.user_principal == user,
            allow_entries.c.status == "active",
            allow_entries.c.expires_at > now,
        )
    )
    return [_allow(r) for r in rows]


async def get_allow(conn: AsyncConnection, entry_id: int) -> tuple[str, str, AllowEntry] | None:
    """(tenant, status, entry) for one allow entry."""
    r = (await conn.execute(select(allow_entries).where(allow_entries.c.id == entry_id))).first()
    return (r.tenant, r.status, _allow(r)) if r else None


async def decide_allow(conn: AsyncConnection, entry_id: int, status: str, by: str) -> bool:
    res = await conn.execute(
        update(allow_entries)
        .where(allow_entries.c.id == entry_id, allow_entries.c.status == "pending")
        .values(status=status, decided_by=by)
    )
    return bool(res.rowcount == 1)


# --- batched reads and writes for the ingest hot path ------------------------------------------------
# Bound parameters per IN (...) list: well under SQLite's limit since 3.32 (32,766) and PostgreSQL's
# (32,767). Every statement costs about 0.5 ms of thread hand-offs through aiosqlite whatever its size,
# so a page of 1,000 records asks for its ids, allow and watch entries in one statement each.
CHUNK = 5000


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), CHUNK):
        yield values[i : i + CHUNK]


# Statements with IN lists are built once: an IN list given as values costs SQLAlchemy a coercion per
# value on every call, an expanding bind parameter is filled in when the statement runs.
_PROFILES_OF = select(profiles.c.user_principal, profiles.c.data).where(
    profiles.c.tenant == bindparam("tenant"), profiles.c.user_principal.in_(bindparam("users", expanding=True))
)


async def load_profiles(conn: AsyncConnection, tenant: str, users: Iterable[str]) -> dict[str, Profile]:
    """Every stored profile among `users`, in one query per CHUNK users."""
    out: dict[str, Profile] = {}
    for chunk in _chunks(sorted(set(users))):
        rows = await conn.execute(_PROFILES_OF, {"tenant": tenant, "users": chunk})
        for n, r in enumerate(rows):
            out[r.user_principal] = codec.profile_from_json(r.data)
            if n % 100 == 99:
                await asyncio.sleep(0)  # decoding hundreds of profiles must not hold up Slack acks
    return out


async def save_profiles(conn: AsyncConnection, tenant: str, ps: Iterable[Profile], now: datetime) -> None:
    """Upsert many profiles with one executemany."""
    rows = []
    for n, p in enumerate(ps):
        rows.append({"tenant": tenant, "user_principal": p.user_principal, "data": codec.profile_json(p).decode()})
        if n % 500 == 499:
            await asyncio.sleep(0)  # encoding thousands of profiles must not hold up Slack acks
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        # The driver's own executemany, as for raw_events: SQLAlchemy's per-row processing cost more
        # than SQLite's upsert.
        stamp = _sqlite_value(now)
        await conn.exec_driver_sql(_PROFILE_UPSERT, [(tenant, r["user_principal"], r["data"], stamp) for r in rows])
        return
    stmt = _insert(conn, profiles)
    stmt = stmt.on_conflict_do_update(
        index_elements=["tenant", "user_principal"],
        set_={"data": stmt.excluded.data, "updated_at": stmt.excluded.updated_at},
    )
    await conn.execute(stmt, [{**r, "updated_at": now} for r in rows])


_PROFILE_UPSERT = (
    "INSERT INTO profiles (tenant, user_principal, data, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (tenant, user_principal) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at"
)


async def set_profile_tz(
    conn: AsyncConnection, tenant: str, user: str, tz: str | None, now: datetime | None = None
) -> bool:
    """Remember the user's IANA time zone (e.g. Slack's `tz`) on their profile, for off_hours.

    False when the user has no profile yet (nothing to attach it to) or it already says so."""
    p = await load_profile(conn, tenant, user)
    if p is None or p.tz == tz:
        return False
    await save_profile(conn, tenant, msgspec.structs.replace(p, tz=tz), now or datetime.now(UTC))
    return True


_ALLOWS_FOR = select(allow_entries).where(
    allow_entries.c.tenant == bindparam("tenant"),
    allow_entries.c.user_principal.in_(bindparam("users", expanding=True)),
    allow_entries.c.status == "active",
    allow_entries.c.expires_at > bindparam("now"),
)
_WATCHES_FOR = select(watchlist).where(
    watchlist.c.tenant == bindparam("tenant"),
    watchlist.c.user_principal.in_(bindparam("users", expanding=True)),
    watchlist.c.expires_at > bindparam("now"),
)
_SEEN_IDS = select(raw_events.c.event_id).where(
    raw_events.c.source == bindparam("source"),
    raw_events.c.tenant == bindparam("tenant"),
    raw_events.c.event_id.in_(bindparam("ids", expanding=True)),
)


async def active_allows_for(
    conn: AsyncConnection, tenant: str, users: Iterable[str], now: datetime
) -> dict[str, list[AllowEntry]]:
    out: dict[str, list[AllowEntry]] = {}
    for chunk in _chunks(sorted(set(users))):
        rows = await conn.execute(_ALLOWS_FOR, {"tenant": tenant, "users": chunk, "now": now})
        for r in rows:
            out.setdefault(r.user_principal, []).append(_allow(r))
    return out


async def open_cases_of(conn: AsyncConnection, tenant: str, user: str) -> list[Case]:
    """Every open case of one principal (a user, or a campaign), oldest first."""
    rows = await conn.execute(
        select(cases)
        .where(
            cases.c.tenant == tenant,
            cases.c.user_principal == user,
            cases.c.state.not_in([s.value for s in TERMINAL]),
        )
        .order_by(cases.c.opened_at)
    )
    return [_case_from_row(r) for r in rows]


async def load_fleet(conn: AsyncConnection, tenant: str) -> TenantFleet:
    row = (await conn.execute(select(fleets.c.data).where(fleets.c.tenant == tenant))).first()
    return TenantFleet.from_dict(orjson.loads(row.data)) if row else TenantFleet()


async def save_fleet(conn: AsyncConnection, tenant: str, fleet: TenantFleet, now: datetime) -> None:
    data = dumps(fleet.to_dict())
    stmt = _insert(conn, fleets).values(tenant=tenant, data=data, updated_at=now)
    await conn.execute(stmt.on_conflict_do_update(index_elements=["tenant"], set_={"data": data, "updated_at": now}))


def _watch(r: Any) -> Watch:
    d = orjson.loads(r.data)
    return Watch(
        user_principal=r.user_principal,
        case_id=r.case_id,
        contained_at=r.created_at,
        expires_at=r.expires_at,
        quiet_until=r.quiet_until,
        detectors=frozenset(d.get("detectors", [])),
        ips=frozenset(d.get("ips", [])),
        countries=frozenset(d.get("countries", [])),
        asns=frozenset(int(a) for a in d.get("asns", [])),
    )


async def add_watch(conn: AsyncConnection, tenant: str, w: Watch, reason: str) -> None:
    await conn.execute(
        watchlist.insert().values(
            tenant=tenant,
            user_principal=w.user_principal,
            case_id=w.case_id,
            reason=reason[:1000],
            created_at=w.contained_at,
            expires_at=w.expires_at,
            quiet_until=w.quiet_until,
            data=dumps(
                {
                    "detectors": sorted(w.detectors),
                    "ips": sorted(w.ips),
                    "countries": sorted(w.countries),
                    "asns": sorted(w.asns),
                }
            ),
        )
    )


async def active_watches(
    conn: AsyncConnection, tenant: str, users: Iterable[str], now: datetime
) -> dict[str, list[Watch]]:
    """Watch entries not yet expired for these users."""
    out: dict[str, list[Watch]] = {}
    for chunk in _chunks(sorted(set(users))):
        rows = await conn.execute(_WATCHES_FOR, {"tenant": tenant, "users": chunk, "now": now})
        for r in rows:
            out.setdefault(r.user_principal, []).append(_watch(r))
    return out


async def store_raw_batch(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    """Keep many records as received (store_raw's columns per row); the (source, event_id) pairs that
    were new. One SELECT per source and CHUNK ids, one executemany INSERT: no per-record round trip."""
    fresh: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        fresh.setdefault((r["source"], r["tenant"], r["event_id"]), r)
    by_source: dict[tuple[str, str], list[str]] = {}
    for source, tenant, eid in fresh:
        by_source.setdefault((source, tenant), []).append(eid)
    for (source, tenant), ids in by_source.items():
        new = await unseen_raw(conn, source, tenant, ids)
        for eid in ids:
            if eid not in new:
                del fresh[(source, tenant, eid)]
    await insert_raw(conn, list(fresh.values()))
    return {(s, e) for s, _, e in fresh}


async def unseen_raw(conn: AsyncConnection, source: str, tenant: str, ids: Iterable[str]) -> set[str]:
    """The ids among `ids` that raw_events does not hold yet for this source and tenant."""
    out = set(ids)
    for chunk in _chunks(sorted(out)):
        existing = await conn.execute(_SEEN_IDS, {"source": source, "tenant": tenant, "ids": chunk})
        out.difference_update(eid for (eid,) in existing)
    return out


async def prune_raw_batch(
    conn: AsyncConnection, before: datetime, after_id: int = 0, limit: int = 10_000
) -> tuple[int, int | None]:
    """Delete, among the `limit` oldest rows after `after_id`, those that are only duplicate markers:
    accepted, stored before `before`, without JSON. Rows holding JSON (case evidence, rejections, or
    everything under keep_raw="all") stay. Returns (deleted, where the next batch starts), or None
    for the second once the rows reach `before`: ids grow with stored_at, so no later row qualifies.
    Reading in id order keeps each batch an index range, with no index on stored_at to pay for."""
    rows = (
        await conn.execute(
            select(raw_events.c.id, raw_events.c.stored_at, raw_events.c.status, func.length(raw_events.c.payload))
            .where(raw_events.c.id > after_id)
            .order_by(raw_events.c.id)
            .limit(limit)
        )
    ).all()
    doomed = [r[0] for r in rows if r[1] < before and r[2] == "accepted" and not r[3]]
    deleted = 0
    for start in range(0, len(doomed), CHUNK):
        gone = await conn.execute(delete(raw_events).where(raw_events.c.id.in_(doomed[start : start + CHUNK])))
        deleted += gone.rowcount  # another replica pruning too may have taken some first
    reached = len(rows) < limit or any(r[1] >= before for r in rows)
    return deleted, None if reached else int(rows[-1][0])


async def insert_raw(conn: AsyncConnection, rows: Sequence[dict[str, Any] | RawRow]) -> None:
    """Insert raw_events rows (the caller has de-duplicated them) with one executemany. A row is a dict
    of RAW_COLUMNS or a tuple in their order (what the poller builds: no dict per record)."""
    tuples = [r if isinstance(r, tuple) else tuple(r[c] for c in RAW_COLUMNS) for r in rows]
    if tuples and conn.dialect.name == "sqlite":
        # The driver's own executemany: SQLAlchemy's per-row parameter processing costs more than SQLite
        # itself here. Timestamps in the form UTCDateTime stores (naive UTC, microseconds).
        stamps: dict[Any, Any] = {}  # stored_at: one value for a whole batch, converted once
        await conn.exec_driver_sql(
            _RAW_INSERT,
            [
                (
                    *t[:3],
                    _sqlite_value(t[3]),
                    *t[4:8],
                    stamps[t[8]] if t[8] in stamps else stamps.setdefault(t[8], _sqlite_value(t[8])),
                )
                for t in tuples
            ],
        )
    elif tuples:
        await conn.execute(insert(raw_events), [dict(zip(RAW_COLUMNS, t, strict=True)) for t in tuples])


RAW_COLUMNS = (
    "source", "tenant", "event_id", "occurred_at", "user_principal", "status", "reason", "payload", "stored_at"
)  # fmt: skip
# source, tenant, event_id, occurred_at, user_principal, status, reason, payload, stored_at
RawRow = tuple[str, str, str, datetime | None, str | None, str, str | None, str, datetime]
_RAW_INSERT = f"INSERT INTO raw_events ({', '.join(RAW_COLUMNS)}) VALUES ({', '.join('?' * len(RAW_COLUMNS))})"  # noqa: S608 - fixed column names, not input


def _sqlite_value(v: Any) -> Any:
    if isinstance(v, datetime):
        if v.tzinfo is not UTC:  # normalizers hand over UTC already; anything else is converted
            if v.tzinfo is None:
                raise ValueError("naive datetime reached the database")
            v = v.astimezone(UTC)
        # == strftime("%Y-%m-%d %H:%M:%S.%f"), at a third of the cost
        return v.isoformat(" ", "microseconds")[:26]
    return v
