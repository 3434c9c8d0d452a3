"""`mailwarden replay`: run saved records through the real pipeline and print the cases it opens.

    mailwarden replay [--json] [--cards] [--kind auto|entra-signin|entra-risk|o365-audit|gws-activity|gws-alert] PATH...

Each PATH is NDJSON (one record per line), a JSON array, or an API response page (`{"value": [...]}`,
`{"items": [...]}`, `{"alerts": [...]}`). Every record is normalized (its kind detected with
`--kind auto`), everything is sorted into event-time order and fed, in batches, through the real
CaseService.ingest on a temporary SQLite store with a simulated clock that follows the events. No
Slack, no Graph. A malformed record is counted in `rejected`, its reason goes to stderr, and the
replay goes on; a file that cannot be read stops it with exit status 2. As in the service, when the
input holds Entra sign-ins, the Office 365 STS logons (UserLoggedIn / UserLoginFailed) are the audit
log's copies of them and are not detected on a second time.

`--json` prints one line per case, `{"case", "user", "users", "severity", "decision", "detectors",
"reasons", "events"}` (`user` is null for a campaign case; `users` lists the accounts it touches),
then `{"summary": {"records", "rejected", "cases"}}`. `--cards` adds the Block Kit each case would
post: `"cards": [{"audience": "user" | "soc", "blocks": [...]}]`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson
import structlog

from bot.cases.machine import Timeouts
from bot.cases.service import CaseService
from bot.clock import SimClock
from bot.config import Settings, load_settings
from bot.detect import Params
from bot.detect.policy import DEFAULT as DEFAULT_POLICY
from bot.detect.policy import Policy
from bot.model import Case, Decision, Event, Rejection
from bot.sources.normalize import KINDS, PAGE_KEYS, is_graph_sign_in, is_sign_in_copy, normalize
from bot.sources.normalize_common import canonical_bytes
from bot.store import db, repo

BATCH = 2000
EXIT_UNREADABLE = 2


@contextmanager
def quiet_logs() -> Iterator[None]:
    """Warnings and errors only, on stderr, for the length of one command (stdout carries its output);
    the previous logging configuration comes back afterwards."""
    old = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    try:
        yield
    finally:
        structlog.configure(**old)


class UnreadableInput(Exception):
    """A replay file that cannot be opened or read at all."""


@dataclass
class ReplayResult:
    cases: list[Case] = field(default_factory=list)
    records: int = 0
    rejected: int = 0
    events: int = 0


def _unpack(value: Any, depth: int = 0) -> Iterator[Any]:
    """The records inside a list or an API page (as normalize reads them), one at a time."""
    if depth < 3:
        if isinstance(value, list):
            for v in value:
                yield from _unpack(v, depth + 1)
            return
        if isinstance(value, dict):
            for key, own in PAGE_KEYS:
                inner = value.get(key)
                if isinstance(inner, list) and own not in value:
                    for v in inner:
                        yield from _unpack(v, depth + 1)
                    return
    yield value


def read_records(path: str) -> Iterator[tuple[str, Any | None, str | None]]:
    """(where, record, problem) for every record of one file: a whole-file JSON value first, else
    NDJSON line by line (a line that is not JSON comes back as a problem, never an exception)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UnreadableInput(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from exc
    stripped = data.strip()
    if not stripped:
        return
    try:
        whole = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        whole = None
    else:
        for i, record in enumerate(_unpack(whole)):
            yield f"{path}#{i + 1}", record, None
        return
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield f"{path}:{n}", None, f"not JSON ({str(exc).split(':')[0]})"
            continue
        for i, record in enumerate(_unpack(value)):
            yield f"{path}:{n}" + (f"#{i + 1}" if isinstance(value, (list, dict)) and i else ""), record, None


def collect(
    paths: Sequence[str], kind: str, tenant: str, errors: IO[str] | None
) -> tuple[list[tuple[Event, bytes]], int, int]:
    """Every event of every file (first copy of each (source, id) wins), records and rejected counts."""
    out: list[tuple[Event, bytes]] = []
    seen: set[tuple[str, str]] = set()
    records = rejected = 0

    def reject(where: str, reason: str) -> None:
        nonlocal rejected
        rejected += 1
        if errors is not None:
            print(f"rejected {where}: {reason}", file=errors)

    for path in paths:
        for where, record, problem in read_records(path):
            records += 1
            if problem is not None:
                reject(where, problem)
                continue
            items = normalize(kind, record, tenant)
            bad = [i for i in items if isinstance(i, Rejection)]
            if bad:
                reject(where, "; ".join(f"{b.reason} ({b.event_id})" for b in bad[:3]))
            good = [i for i in items if isinstance(i, Event)]
            payload = canonical_bytes(record) if good else b""
            for e in good:
                key = (e.source, e.event_id)
                if key not in seen:
                    seen.add(key)
                    out.append((e, payload))
    return out, records, rejected


def _raw_row(e: Event, payload: bytes, now: datetime) -> dict[str, Any]:
    return {
        "source": e.source,
        "tenant": e.tenant,
        "event_id": e.event_id,
        "occurred_at": e.occurred_at,
        "user_principal": e.user_principal,
        "status": "accepted",
        "reason": None,
        "payload": payload.decode("utf-8", "replace"),
        "stored_at": now,
    }


def _case_order(c: Case) -> tuple[datetime, str]:
    return min((f.occurred_at for f in c.findings), default=c.last_event_at), c.id


async def replay_events(
    events: Iterable[tuple[Event, bytes]],
    *,
    params: Params,
    policy: Policy = DEFAULT_POLICY,
    incident_window: timedelta = timedelta(hours=24),
    timeouts: Timeouts | None = None,
    db_path: str | None = None,
    batch: int = BATCH,
) -> list[Case]:
    """Feed events (in event-time order) through the store and the real CaseService; the cases."""
    ordered = sorted(events, key=lambda ep: (ep[0].occurred_at, ep[0].source, ep[0].event_id))
    with tempfile.TemporaryDirectory(prefix="mailwarden-replay-") as tmp:
        engine = db.make_engine(db_path or f"{tmp}/replay.db")
        try:
            await db.migrate(engine)
            start = ordered[0][0].occurred_at if ordered else datetime(2000, 1, 1, tzinfo=UTC)
            clock = SimClock(start)
            counter = iter(range(1, 10**9))
            service = CaseService(
                engine,
                clock,
                params,
                timeouts or Timeouts(user_answer=timedelta(minutes=15), soc_decision=timedelta(minutes=30)),
                incident_window,
                policy=policy,
                new_id=lambda: f"MW-{next(counter):05d}",
                profile_cache_size=100_000,
            )
            # As the service does (bot/sources/base.py): where the input holds a tenant's interactive Graph
            # sign-ins, that tenant's STS logons are their copies, kept but not detected on; its token
            # redemptions only where the input holds its non-interactive Graph sign-ins too.
            graph_tenants = {e.tenant for e, _ in ordered if is_graph_sign_in(e) and e.interactive}
            token_tenants = {e.tenant for e, _ in ordered if is_graph_sign_in(e) and not e.interactive}
            for i in range(0, len(ordered), batch):
                chunk = ordered[i : i + batch]
                clock.set(max(clock.now(), chunk[-1][0].occurred_at))
                async with engine.begin() as conn:
                    fresh = await repo.store_raw_batch(conn, [_raw_row(e, p, clock.now()) for e, p in chunk])
                    detect = fresh - {
                        (e.source, e.event_id)
                        for e, _ in chunk
                        if e.tenant in graph_tenants
                        and is_sign_in_copy(e, noninteractive_log=e.tenant in token_tenants)
                    }
                    await service.ingest(conn, [e for e, _ in chunk if (e.source, e.event_id) in detect])
            async with engine.connect() as conn:
                cases = await repo.list_cases(conn)
        finally:
            await engine.dispose()
    return sorted(cases, key=_case_order)


def case_line(case: Case, *, cards: bool = False) -> dict[str, Any]:
    line: dict[str, Any] = {
        "case": case.id,
        "user": None if case.is_campaign else case.user_principal,
        "users": list(case.users) if case.is_campaign else [case.user_principal],
        "severity": case.severity.label,
        "decision": case.decision.value,
        "detectors": list(case.detectors),
        "reasons": [f.reason for f in case.findings],
        "events": [e.event_id for e in case.events],
    }
    if cards:
        line["cards"] = case_cards(case)
    return line


def case_cards(case: Case) -> list[dict[str, Any]]:
    """The Block Kit the case would post first: the employee's question, or the SOC's card."""
    from bot.slack import cards

    if case.decision is Decision.RECORD:
        return []
    if case.decision is Decision.ASK_USER:
        return [{"audience": "user", "blocks": cards.user_card(case).blocks}]
    return [{"audience": "soc", "blocks": cards.soc_card(case).blocks}]


def detection_from(settings: Settings) -> tuple[Params, Policy]:
    from bot.detection import detection_params, detection_policy

    return detection_params(settings), detection_policy(settings)


async def run_replay(paths: Sequence[str], kind: str, settings: Settings, errors: IO[str] | None) -> ReplayResult:
    params, policy = detection_from(settings)
    events, records, rejected = collect(paths, kind, "replay", errors)
    cases = await replay_events(
        events,
        params=params,
        policy=policy,
        incident_window=timedelta(seconds=settings.incident_window_s),
        timeouts=Timeouts(
            user_answer=timedelta(seconds=settings.user_answer_timeout_s),
            soc_decision=timedelta(seconds=settings.soc_timeout_s),
        ),
    )
    return ReplayResult(cases=cases, records=records, rejected=rejected, events=len(events))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON line per case, then a summary line")
    p.add_argument("--cards", action="store_true", help="with each case, the Slack cards it would post")
    p.add_argument("--kind", default="auto", choices=["auto", *KINDS], help="the records' source (default: detect)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="NDJSON, JSON array or API page files")


def run(args: argparse.Namespace) -> int:
    with quiet_logs():  # findings and cases are the output here, not log lines
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(toml_path=getattr(args, "config", None))
    try:
        result = asyncio.run(run_replay(args.paths, args.kind, settings, sys.stderr))
    except UnreadableInput as exc:
        print(f"mailwarden replay: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    out = sys.stdout
    if args.json:
        for case in result.cases:
            out.write(orjson.dumps(case_line(case, cards=args.cards)).decode() + "\n")
        summary = {"records": result.records, "rejected": result.rejected, "cases": len(result.cases)}
        out.write(orjson.dumps({"summary": summary}).decode() + "\n")
        return 0
    for case in result.cases:
        who = case.user_principal if not case.is_campaign else f"{case.user_principal} ({len(case.users)} accounts)"
        out.write(
            f"{case.id}  {case.severity.label:<8} {case.decision.value:<9} {who}  [{', '.join(case.detectors)}]\n"
        )
        for f in case.findings[:5]:
            out.write(f"    - {f.reason}\n")
        if args.cards:
            for card in case_cards(case):
                out.write(f"    card for {card['audience']}: {len(card['blocks'])} blocks\n")
    out.write(f"{result.records} records, {result.rejected} rejected, {len(result.cases)} cases\n")
    return 0
