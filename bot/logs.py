"""structlog set-up: one JSON object per line on stderr, stable keys, no f-string messages."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", *, human: bool = False) -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s")
    for noisy in ("httpx", "uvicorn.access", "slack_bolt", "slack_sdk", "azure", "alembic"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))
    # a skipped tick (the previous one still running) is normal with coalescing jobs
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=False) if human else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
