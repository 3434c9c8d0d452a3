"""`mailwarden` command line: run, demo, config show, audit verify/export, bench, replay, scenario, eval, migrate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

from bot.config import Settings, load_settings, missing_for_run, redacted
from bot.errors import ConfigError

EXIT_CONFIG = 2


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(toml_path=getattr(args, "config", None))


def _db_url(args: argparse.Namespace) -> str:
    if getattr(args, "db", None):
        return str(args.db)
    return _settings(args).database_url


def cmd_config_show(args: argparse.Namespace) -> int:
    print(json.dumps(redacted(_settings(args)), indent=2, sort_keys=True))
    return 0


async def _audit_verify(url: str) -> int:
    from bot.audit import log as audit
    from bot.store import db

    engine = db.make_engine(url)
    try:
        async with engine.connect() as conn:
            verdict = await audit.check(conn)
    finally:
        await engine.dispose()
    if verdict.ok:
        print(f"audit log OK: {verdict.checked} entries, chain intact")
        return 0
    print(f"audit log TAMPERED: first bad entry {verdict.first_bad_seq}: {verdict.problem}", file=sys.stderr)
    return 1


async def _audit_export(url: str, out: str | None) -> int:
    import orjson

    from bot.audit import log as audit
    from bot.store import db

    engine = db.make_engine(url)
    stream = open(out, "wb") if out else sys.stdout.buffer  # noqa: SIM115, ASYNC230 - a local file, closed below
    try:
        async with engine.connect() as conn:
            async for e in audit.entries(conn):
                stream.write(
                    orjson.dumps(
                        {
                            "seq": e.seq,
                            "at": e.at.isoformat(),
                            "actor": e.actor,
                            "action": e.action,
                            "case_id": e.case_id,
                            "detail": orjson.loads(e.detail),
                            "prev_hash": e.prev_hash,
                            "hash": e.hash,
                        }
                    )
                    + b"\n"
                )
    finally:
        if out:
            stream.close()
        else:
            stream.flush()
        await engine.dispose()
    return 0


async def _migrate(url: str) -> int:
    from bot.store import db

    engine = db.make_engine(url)
    try:
        await db.migrate(engine)
    finally:
        await engine.dispose()
    print("database is at the latest schema")
    return 0


async def _run(settings: Settings) -> int:
    import uvicorn
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    from bot.clock import SystemClock
    from bot.runtime import tune_gc
    from bot.scheduler import build_scheduler
    from bot.web import build_web
    from bot.wiring import build

    services = await build(settings, SystemClock())
    tune_gc()  # after the heavy imports and start-up: see bot/runtime.py
    scheduler = build_scheduler(
        services,
        poll_s=settings.poll_interval_s,
        dispatch_s=settings.dispatch_interval_s,
        sweep_s=settings.sweep_interval_s,
    )
    scheduler.start()
    web = uvicorn.Server(
        uvicorn.Config(
            build_web(services.bolt, services.health),
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(web.serve())]
    socket: AsyncSocketModeHandler | None = None
    if settings.slack_mode == "socket":
        assert settings.slack_app_token is not None
        socket = AsyncSocketModeHandler(services.bolt, settings.slack_app_token.get_secret_value())
        await socket.connect_async()  # type: ignore[no-untyped-call]
    await stop.wait()
    web.should_exit = True
    if socket is not None:
        await socket.close_async()  # type: ignore[no-untyped-call]
    scheduler.shutdown(wait=False)
    await asyncio.gather(*tasks, return_exceptions=True)
    await services.close()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bot.logs import configure

    settings = _settings(args)
    missing = missing_for_run(settings)
    if missing:
        raise ConfigError(missing)
    configure(settings.log_level)
    return asyncio.run(_run(settings))


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.logs import configure
    from sandbox.demo import run_demo

    configure("warning" if not args.verbose else "info", human=True)
    report = asyncio.run(run_demo(db_path=args.db, stories=args.story))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_demo(report)
    return 0 if report["ok"] else 1


def _print_demo(report: dict[str, Any]) -> None:
    print("Mailwarden demo: the bot on SQLite against the sandbox (emulated Entra ID tenant and Slack)\n")
    for story in report["stories"]:
        mark = "PASS" if story["passed"] else "FAIL"
        print(f"[{mark}] {story['name']}: {story['summary']}")
        print(
            f"       final state {story['final_state']} (expected {story['expected_state']}), "
            f"{story['slack_messages']} Slack messages, provider writes: "
            + (", ".join(f"{w['method']} {w['path']}" for w in story["provider_writes"]) or "none")
        )
        if story.get("error"):
            print(f"       error: {story['error']}")
    print(f"\naudit log {'verified' if report['audit_ok'] else 'FAILED verification'}; database kept at {report['db']}")


# Each benchmark module offers add_arguments(parser) and run(args) -> int; one line here registers it.
BENCHES: dict[str, tuple[str, str]] = {
    "slack": ("bot.bench_slack", "a 200-case storm against Slack's limits; acks while a replay runs"),
    "pipeline": ("bot.bench_pipeline", "sign-in pages through parse, normalize, detect, correlate and SQLite"),
    "graph": ("bot.bench_graph", "an L-tenant day of sign-ins against the Graph reports budget (G2, G3, G8)"),
}


def _bench(module: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(module).run(args))

    return run


def cmd_doctor(args: argparse.Namespace) -> int:
    from bot.doctor import render, run_doctor
    from bot.logs import configure

    configure("warning")
    report = asyncio.run(run_doctor(_settings(args)))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report["ok"] else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailwarden", description=__doc__)
    p.add_argument("--config", help="TOML configuration file (default: $MAILWARDEN_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="run the service from configuration").set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="play the stories on SQLite and the sandbox, on simulated time")
    demo.add_argument("--auto", action="store_true", help="play every story without prompting (the default)")
    demo.add_argument("--json", action="store_true", help="print one JSON report")
    demo.add_argument("--db", help="keep the demo database at this path (default: a temporary file)")
    demo.add_argument("--story", action="append", help="play only this story (repeatable)")
    demo.add_argument("--verbose", action="store_true", help="show the bot's log lines")
    demo.set_defaults(func=cmd_demo)

    config = sub.add_parser("config", help="configuration").add_subparsers(dest="config_cmd", required=True)
    config.add_parser("show", help="print the effective configuration, secrets redacted").set_defaults(
        func=cmd_config_show
    )

    audit = sub.add_parser("audit", help="the tamper-evident audit log").add_subparsers(dest="audit_cmd", required=True)
    verify = audit.add_parser("verify", help="check the hash chain; exit 1 naming the first bad entry")
    verify.add_argument("--db", help="database URL or SQLite path (default: configured database)")
    verify.set_defaults(func=lambda a: asyncio.run(_audit_verify(_db_url(a))))
    export = audit.add_parser("export", help="write the audit log as JSON Lines")
    export.add_argument("--db", help="database URL or SQLite path (default: configured database)")
    export.add_argument("--out", help="file to write (default: stdout)")
    export.set_defaults(func=lambda a: asyncio.run(_audit_export(_db_url(a), a.out)))

    bench = sub.add_parser("bench", help="benchmarks that print figures (see README: Benchmarks)")
    benches = bench.add_subparsers(dest="bench_cmd", required=True)
    for name, (module, about) in BENCHES.items():
        one = benches.add_parser(name, help=about)
        one.add_argument("--json", action="store_true", help="print one JSON object")
        one.set_defaults(func=_bench(module), bench_module=module)
        importlib.import_module(module).add_arguments(one)

    # Detection tooling: each module offers add_arguments(parser) and run(args) -> int.
    for name, module, about in (
        ("replay", "bot.replay", "replay saved records through the pipeline on a temporary store; print the cases"),
        ("scenario", "sandbox.scenario", "write a labelled synthetic tenant (both providers, every attack category)"),
        ("eval", "bot.evaluate", "precision, recall and prompts per 1,000 users per day on a scenario directory"),
    ):
        tool = sub.add_parser(name, help=about)
        importlib.import_module(module).add_arguments(tool)
        tool.set_defaults(func=_bench(module))

    doctor = sub.add_parser(
        "doctor", help="call each enabled Graph / Management API feature once; name missing permissions"
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON report")
    doctor.set_defaults(func=cmd_doctor)

    migrate = sub.add_parser("migrate", help="apply database migrations (also done at start-up)")
    migrate.add_argument("--db", help="database URL or SQLite path")
    migrate.set_defaults(func=lambda a: asyncio.run(_migrate(_db_url(a))))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"mailwarden: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
