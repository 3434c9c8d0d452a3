"""`mailwarden bench pipeline`: the detection pipeline's throughput against the JSON parse floor.

    mailwarden bench pipeline [--events N] [--gc service|default] [--users U] [--days D] [--offices K]
                              [--stages] [--json]

Generates N Graph `signIns` records (v1.0 shape with eight conditional-access policy entries, about
2.5 KB each, as reference/performance.md §1.8 calibrates), in pages of 1,000 as Graph returns them,
one page at a time (nothing accumulates: G9 is about streaming). For every page it times, on the
same bytes:

- `orjson.loads` alone (the parse floor), and
- the full pipeline, through the sign-in poller's own code (`split_page`, then `take_records`): split
  the page into records, decode each into a typed struct and normalize it, keep the raw record
  (batched insert), detect with every detector, score, correlate into cases and write them,
  profiles and the tenant's cross-user state to SQLite (WAL), one transaction per page.

It prints events/s for both, their ratio (G1: >= 0.30; issue #3 asks 0.5) and peak RSS (G9: <= 256 MB
for a 1,000,000-event run). `--json` prints `{"parse_eps", "pipeline_eps", "ratio", "peak_rss_mb"}`.

`--stages` also times, on the same bytes, the pipeline's first stage alone: splitting the page and
normalizing every record into an Event, as `take_records` does before anything else (pure, no state,
no database), in a second pass over the pages so the first is the plain run unchanged. What is left
of a pipeline event's time after it is what detection, profile learning, correlation and storage cost
together, and a ratio of 0.5 leaves them two parse times less that stage: the figures say how far a
target is from what the code can reach, not only that it is missed.
Generation is not timed. Users are N/100 (about three sign-ins each per day over a month), with
habits (home network, laptop, phone), typos and a little travel, so detection does its real work.
`--users` and `--days` set the density instead (real tenants see 50-200 sign-ins per user per day,
performance.md §5), and `--offices K` puts everyone behind K shared office addresses: dense traffic
and NAT are what fill the per-user and per-address windows, so they are where a per-event cost that
grows with the window shows.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psutil  # type: ignore[import-untyped]

from bot.cases.machine import Timeouts
from bot.cases.service import CaseService
from bot.clock import SimClock
from bot.config import Settings
from bot.detect import Params
from bot.replay import quiet_logs
from bot.runtime import tune_gc, untune_gc
from bot.sources.base import take_records
from bot.sources.entra_signins import split_page
from bot.sources.normalize import normalize_json
from bot.sources.normalize_entra import SOURCE
from bot.store import db
from sandbox.wire import graph_sign_in

PAGE = 1000
START = datetime(2026, 1, 5, tzinfo=UTC)
# (country, city, lat, lon, UTC offset in January): each user signs in during their own working day
COUNTRIES = (
    ("US", "New York", 40.71, -74.01, -5),
    ("GB", "London", 51.51, -0.13, 0),
    ("DE", "Berlin", 52.52, 13.40, 1),
)
TRAVEL = (("FR", "Paris", 48.86, 2.35), ("ES", "Madrid", 40.42, -3.70), ("JP", "Tokyo", 35.68, 139.69))
UAS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
)


def _policies(rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{rng.getrandbits(32):08x}-1f2e-4d3c-8b7a-{i:012d}",
            "displayName": f"CA{i:02d}: require MFA",
            "enforcedGrantControls": ["Mfa"] if i % 2 else ["RequireCompliantDevice"],
            "result": ("success", "notApplied", "notEnabled")[i % 3],
        }
        for i in range(8)
    ]


class Generator:
    """Deterministic sign-in pages: page k is the same bytes on every run with the same seed."""

    def __init__(
        self, events: int, seed: int = 7, *, users: int | None = None, days: int = 30, offices: int = 0
    ) -> None:
        self.events = events
        self.users = max(len(COUNTRIES), users if users else max(50, events // 100))
        self.span = timedelta(days=max(1, days))
        self.offices = offices
        self.seed = seed
        rng = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
        self.people = [
            (
                f"user{i:06d}@contoso.example",
                f"{rng.getrandbits(128):032x}",
                COUNTRIES[i % len(COUNTRIES)],
                self._address(i),
                7922 + i % 5,
                f"{rng.getrandbits(128):032x}",
                rng.choice(UAS),
            )
            for i in range(self.users)
        ]

    def _address(self, i: int) -> str:
        """User i's usual network: their own home address, or (with offices) one of the offices' shared
        egress addresses in their own country, as most of a company's staff sign in behind NAT."""
        if not self.offices:
            return f"198.{(i >> 8) % 250}.{i % 250}.{1 + i % 200}"
        per_country = max(1, -(-self.offices // len(COUNTRIES)))
        office = (i // len(COUNTRIES)) % per_country * len(COUNTRIES) + i % len(COUNTRIES)
        return f"192.0.2.{1 + office % 250}" if office < 250 else f"198.18.{office // 250}.{1 + office % 250}"

    def at(self, seq: int) -> datetime:
        """When record `seq` happens: working hours only, 06:00-24:00 UTC being someone's 07:00-19:00
        in one of the three cities."""
        per_day = max(1, round(self.events / self.span.days))
        day, nth = divmod(seq, per_day)
        return START + timedelta(days=day, hours=6 + 18 * nth / per_day)

    def pages(self) -> int:
        return (self.events + PAGE - 1) // PAGE

    def page(self, k: int) -> bytes:
        rng = random.Random(self.seed * 1_000_003 + k)  # noqa: S311 - synthetic data
        n = min(PAGE, self.events - k * PAGE)
        records = []
        for j in range(n):
            seq = k * PAGE + j
            at = self.at(seq)
            city_now = [c for c in range(len(COUNTRIES)) if 7 <= (at.hour + COUNTRIES[c][4]) % 24 < 19]
            who = rng.randrange(self.users // len(COUNTRIES)) * len(COUNTRIES) + rng.choice(city_now)
            upn, uid, (country, city, lat, lon, _), ip, asn, device_id, ua = self.people[who]
            ok = rng.random() > 0.03
            if rng.random() < 0.002:  # a trip
                country, city, lat, lon = rng.choice(TRAVEL)
                ip, asn = f"203.0.{rng.randrange(256)}.{rng.randrange(1, 255)}", 3215
            record_id = f"{seq:08d}-{rng.getrandbits(32):08x}-4c1d-9e2f-{rng.getrandbits(48):012x}"
            correlation_id = f"{rng.getrandbits(128):032x}"
            records.append(
                graph_sign_in(
                    record_id=record_id,
                    at=at,
                    upn=upn,
                    user_id=uid,
                    name=upn.split("@")[0].title(),
                    ip=ip,
                    country=country,
                    city=city,
                    latitude=lat,
                    longitude=lon,
                    correlation_id=correlation_id,
                    user_agent=ua,
                    code=0 if ok else 50126,
                    conditional_access="success",
                    asn=asn,
                    device_id=device_id,
                    device_name="LAPTOP-" + device_id[:6].upper(),
                    browser="Chrome 131.0.0",
                    compliant=True,
                    managed=True,
                    trust_type="Azure AD joined",
                    policies=_policies(rng),
                )
            )
        return orjson.dumps({"value": records})


async def bench(
    events: int,
    db_path: str | None = None,
    progress: bool = False,
    *,
    users: int | None = None,
    days: int = 30,
    offices: int = 0,
    stages: bool = False,
) -> dict[str, Any]:
    gen = Generator(events, users=users, days=days, offices=offices)
    proc = psutil.Process()
    peak = proc.memory_info().rss
    parse_s = pipeline_s = normalize_s = 0.0
    total_bytes = cases = 0
    with tempfile.TemporaryDirectory(prefix="mailwarden-bench-") as tmp:
        engine = db.make_engine(db_path or f"{tmp}/bench.db")
        await db.migrate(engine)
        clock = SimClock(START)
        service = CaseService(
            engine,
            clock,
            Params(enabled=None),
            Timeouts(user_answer=timedelta(minutes=15), soc_decision=timedelta(minutes=30)),
            timedelta(hours=24),
            profile_cache_size=Settings.model_fields["profile_cache_users"].default,  # as `mailwarden run` on SQLite
        )
        try:
            for k in range(gen.pages()):
                data = gen.page(k)
                total_bytes += len(data)
                t0 = time.perf_counter()
                orjson.loads(data)
                t1 = time.perf_counter()
                parse_s += t1 - t0
                # --- the pipeline, from the same bytes, as the sign-in poller runs it ------------------
                t0 = time.perf_counter()
                records, _ = split_page(data)
                async with engine.begin() as conn:
                    taken = await take_records(
                        conn,
                        service,
                        source=SOURCE,
                        kind="entra-signin",
                        tenant="bench",
                        records=records,
                        now=clock.now(),
                    )
                cases += taken.cases_opened
                clock.set(max(clock.now(), gen.at(k * PAGE + len(records) - 1)))
                pipeline_s += time.perf_counter() - t0
                del records, data
                peak = max(peak, proc.memory_info().rss)
                if progress and k % 50 == 0:
                    print(f"  page {k}/{gen.pages()}", file=sys.stderr)
            # The first stage alone, in a pass of its own over the same pages once the run above is done:
            # timed between the parse and the pipeline it would move where the collector's passes fall
            # and change what they measure (a plain run and a --stages run report the same ratio).
            for k in range(gen.pages() if stages else 0):
                data = gen.page(k)
                t0 = time.perf_counter()
                normalize_page(data)
                normalize_s += time.perf_counter() - t0
                del data
        finally:
            await engine.dispose()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB, the true high-water mark
    peak_mb = max(peak / 2**20, peak_kb / 1024)
    parse_eps = events / parse_s if parse_s else 0.0
    pipeline_eps = events / pipeline_s if pipeline_s else 0.0
    report: dict[str, Any] = {
        "events": events,
        "users": gen.users,
        "days": gen.span.days,
        "offices": gen.offices,
        "bytes_per_event": round(total_bytes / events) if events else 0,
        "cases_opened": cases,
        "parse_eps": round(parse_eps),
        "pipeline_eps": round(pipeline_eps),
        "ratio": round(pipeline_eps / parse_eps, 3) if parse_eps else 0.0,
        "peak_rss_mb": round(peak_mb, 1),
    }
    if stages and events:
        report.update(stage_figures(parse_s / events, normalize_s / events, pipeline_s / events))
    return report


def normalize_page(data: bytes) -> int:
    """The pipeline's first stage alone, exactly as `take_records` runs it: split the page, then each
    record's raw JSON into its Event (or a Rejection). Returns how many items it made."""
    records, _ = split_page(data)
    return sum(len(normalize_json("entra-signin", bytes(record), "bench")) for record in records)


# What `--stages` adds to the JSON report, in the order `stage_figures` gives them.
STAGE_KEYS = ("normalize_eps", "parse_us", "normalize_us", "after_normalize_us", "budget_at_half_us")


def stage_figures(parse_s: float, normalize_s: float, pipeline_s: float) -> dict[str, float]:
    """Per-event microseconds of each stage (times are per event, in seconds) and what a ratio of 0.5
    would leave for everything after normalizing: two parse times, less the normalizing stage."""
    us = 1e6
    return {
        "normalize_eps": round(1 / normalize_s) if normalize_s else 0,
        "parse_us": round(parse_s * us, 2),
        "normalize_us": round(normalize_s * us, 2),
        "after_normalize_us": round((pipeline_s - normalize_s) * us, 2),
        "budget_at_half_us": round((2 * parse_s - normalize_s) * us, 2),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=200_000, help="sign-in records to generate (default 200,000)")
    p.add_argument(
        "--gc",
        choices=("service", "default"),
        default="service",
        help="garbage-collector settings: the service's (`mailwarden run` tunes them once started; the "
        "default) or the interpreter's defaults, as the calibration script of performance.md §1.8 ran",
    )
    p.add_argument(
        "--users", type=int, help="distinct users (default N/100: about three sign-ins per user per day over 30 days)"
    )
    p.add_argument(
        "--days",
        type=int,
        default=30,
        help="simulated days the records span (default 30); fewer days mean more sign-ins per user per day and "
        "fuller per-user and cross-user windows (performance.md: 50-200 per user per day in real tenants)",
    )
    p.add_argument(
        "--offices",
        type=int,
        default=0,
        help="users sign in from this many shared office egress addresses instead of one home address each "
        "(default 0); many accounts behind one address is what the spray window must stay cheap for",
    )
    p.add_argument(
        "--stages",
        action="store_true",
        help="also time the first stage alone (split and normalize each page) and print each stage's "
        "microseconds per event, with what a ratio of 0.5 would leave for detection, learning, cases and storage",
    )
    p.add_argument("--db", help="keep the SQLite database at this path (default: a temporary file)")
    p.add_argument("--progress", action="store_true", help="print progress to stderr")


def run(args: argparse.Namespace) -> int:
    with quiet_logs():  # findings and cases are the output here, not log lines
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    thresholds = tune_gc() if args.gc == "service" else None
    try:
        report = asyncio.run(
            bench(
                args.events,
                args.db,
                args.progress,
                users=args.users,
                days=args.days,
                offices=args.offices,
                stages=args.stages,
            )
        )
    finally:
        if thresholds is not None:
            untune_gc(thresholds)  # the suite runs this in its own process
    report["gc"] = args.gc
    if args.json:
        keys: tuple[str, ...] = ("parse_eps", "pipeline_eps", "ratio", "peak_rss_mb", "events", "gc", "users", "days")
        keys += ("offices", *(STAGE_KEYS if args.stages else ()))
        print(orjson.dumps({k: report[k] for k in keys}).decode())
        return 0
    print(
        f"{report['events']:,} sign-in records ({report['bytes_per_event']:,} B each, {report['users']:,} users, "
        f"{report['days']} days"
        + (f", {report['offices']:,} shared office addresses" if report["offices"] else "")
        + f"), {report['cases_opened']:,} cases opened"
    )
    print(f"garbage collector   {'as the service runs it' if args.gc == 'service' else 'interpreter defaults'}")
    print(f"orjson.loads        {report['parse_eps']:>10,} events/s")
    print(f"full pipeline       {report['pipeline_eps']:>10,} events/s")
    print(f"ratio               {report['ratio']:>10.3f}   (G1: >= 0.30; issue #3 asks 0.5)")
    print(f"peak RSS            {report['peak_rss_mb']:>10.1f} MB (G9: <= 256 MB at 1,000,000 events)")
    if args.stages:
        print(f"split + normalize   {report['normalize_eps']:>10,} events/s (the first stage alone)")
        print(
            f"per event           parse {report['parse_us']:.1f} us; normalize {report['normalize_us']:.1f} us; "
            f"detect, learn, correlate and store {report['after_normalize_us']:.1f} us"
        )
        print(
            f"a ratio of 0.5      leaves {report['budget_at_half_us']:.1f} us per event after normalizing "
            f"(it takes {report['after_normalize_us']:.1f} us)"
        )
    return 0
