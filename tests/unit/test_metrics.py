"""The database-backed gauges follow /healthz's report, and a failed database read says so."""

from __future__ import annotations

from prometheus_client import REGISTRY

from bot.metrics import from_health


def value(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def test_gauges_follow_the_health_report_and_an_unreadable_database_only_drops_db_ok() -> None:
    from_health(
        {"ok": True, "db": "ok", "pending_outbox": 3, "oldest_pending_s": 12.5, "dead_outbox": 1, "audit_ok": False}
    )
    assert value("mailwarden_db_ok") == 1 and value("mailwarden_outbox_pending") == 3
    assert value("mailwarden_outbox_oldest_pending_seconds") == 12.5 and value("mailwarden_outbox_dead") == 1
    assert value("mailwarden_audit_chain_ok") == 0
    from_health({"ok": True, "db": "ok", "pending_outbox": 0, "oldest_pending_s": None, "dead_outbox": 0})
    assert value("mailwarden_outbox_oldest_pending_seconds") == 0 and value("mailwarden_outbox_pending") == 0
    # the last figures read stay as they were: the database could not say, and db_ok tells why
    from_health({"ok": False, "db": "error: OperationalError"})
    assert value("mailwarden_db_ok") == 0 and value("mailwarden_outbox_dead") == 0
