"""`mailwarden doctor` verdicts against the emulators, and the start-up checks that switch sources off."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from bot.doctor import render, run_doctor
from sandbox.world import Sandbox, SandboxCredential

ALL_SOURCES = ["signins", "signins_noninteractive", "risk", "o365_audit"]


def by_feature(report: dict[str, object]) -> dict[str, dict[str, str]]:
    return {c["feature"]: c for c in report["checks"]}  # type: ignore[attr-defined, index]


async def test_doctor_everything_readable(sandbox: Sandbox) -> None:
    settings = sandbox.settings().model_copy(update={"ms_sources": ALL_SOURCES, "risk_risky_users": True})
    report = await run_doctor(settings, credential=SandboxCredential(), clock=sandbox.clock)
    checks = by_feature(report)
    assert report["ok"] is True
    for source in ALL_SOURCES:
        assert checks[source]["status"] == "ok", checks[source]
    assert checks["signins"]["needs"] == "AuditLog.Read.All" and "P1" in str(checks["signins"]["licence"])
    assert "subscriptions enabled" in checks["o365_audit"]["detail"]
    # writes are never tried: the doctor says so instead of pretending
    assert checks["revoke_sessions"]["status"] == "unchecked"
    assert "User.RevokeSessions.All" in checks["revoke_sessions"]["detail"]
    assert checks["require_mfa"]["status"] == "unchecked"  # the sandbox's require-MFA group exists
    assert sandbox.graph.writes() == [] and sandbox.o365.calls("POST", "start") == 0
    assert "every enabled feature can work" in render(report)


async def test_doctor_names_missing_permissions_and_licences(sandbox: Sandbox) -> None:
    sandbox.graph.deny(r"/v1\.0/auditLogs/signIns")
    sandbox.graph.deny_licence(r"/v1\.0/identityProtection/riskDetections")
    sandbox.graph.deny(r"/v1\.0/oauth2PermissionGrants")
    sandbox.o365.permission_denied = True
    settings = sandbox.settings().model_copy(
        update={"ms_sources": ["signins", "risk", "o365_audit"], "ms_require_mfa_group_id": "no-such-group"}
    )
    report = await run_doctor(settings, credential=SandboxCredential(), clock=sandbox.clock)
    checks = by_feature(report)
    assert report["ok"] is False
    assert (checks["signins"]["status"], checks["signins"]["needs"]) == ("missing_permission", "AuditLog.Read.All")
    assert checks["risk"]["status"] == "missing_licence"
    assert checks["o365_audit"]["status"] == "missing_permission" and "AF10001" in checks["o365_audit"]["detail"]
    assert checks["revoke_app_consent"]["status"] == "missing_permission"
    assert checks["revoke_app_consent"]["needs"].startswith("DelegatedPermissionGrant.ReadWrite.All")
    assert checks["require_mfa"]["status"] == "error" and "not found" in checks["require_mfa"]["detail"]
    assert checks["confirm_compromised"]["status"] == "unchecked"  # riskyUsers itself was readable
    text = render(report)
    assert "MISSING PERMISSION" in text and "MISSING LICENCE" in text and "some enabled features are broken" in text


async def test_startup_check_switches_a_denied_source_off(tmp_path: Path) -> None:
    sb = Sandbox(str(tmp_path / "mw.db"), overrides={"startup_checks": True})
    sb.seed()
    sb.graph.deny(r"/v1\.0/auditLogs/signIns")
    with capture_logs() as logs:
        await sb.start()
    try:
        assert [p.fetcher.source for p in sb.bot.pollers] == ["o365_audit"]
        disabled = [e for e in logs if e["event"] == "source.disabled"]
        assert len(disabled) == 1 and disabled[0]["source"] == "signins"
        assert disabled[0]["needs"] == "AuditLog.Read.All" and disabled[0]["when"] == "start-up check"
    finally:
        await sb.stop()


async def test_the_audit_log_leaves_sign_ins_to_graph_only_while_graph_serves_them(tmp_path: Path) -> None:
    """The service wires the rule of bot/sources/normalize.py (is_sign_in_copy): the audit-log poller
    leaves sign-ins to Graph once Graph has served them (the start-up check, or a first poll), and
    not at all when the start-up check switched the sign-in log off; token redemptions only while the
    whole non-interactive log is read too."""
    checked = Sandbox(str(tmp_path / "a.db"), overrides={"startup_checks": True})
    checked.seed()
    await checked.start()
    try:
        pollers = {p.fetcher.source: p for p in checked.bot.pollers}
        assert pollers["o365_audit"].graph_sign_ins is not None and pollers["o365_audit"].graph_sign_ins()
        assert pollers["entra_signin"].graph_sign_ins is None
        assert pollers["o365_audit"].graph_noninteractive_sign_ins is None  # not read: token redemptions are not copies
    finally:
        await checked.stop()

    sources = ["signins", "signins_noninteractive", "o365_audit"]
    both = Sandbox(str(tmp_path / "d.db"), overrides={"startup_checks": True, "ms_sources": sources})
    both.seed()
    await both.start()
    try:
        pollers = {p.fetcher.source: p for p in both.bot.pollers}
        tokens = pollers["o365_audit"].graph_noninteractive_sign_ins
        assert tokens is not None and tokens()  # the non-interactive log holds the token redemptions' copies
    finally:
        await both.stop()

    filtered = Sandbox(
        str(tmp_path / "e.db"),
        overrides={"startup_checks": True, "ms_sources": sources, "noninteractive_filter": ["failures"]},
    )
    filtered.seed()
    await filtered.start()
    try:
        pollers = {p.fetcher.source: p for p in filtered.bot.pollers}
        assert "entra_signin_noninteractive" in pollers
        assert pollers["o365_audit"].graph_noninteractive_sign_ins is None  # holds only some of them
    finally:
        await filtered.stop()

    unchecked = Sandbox(str(tmp_path / "b.db"), overrides={"startup_checks": False})
    unchecked.seed()
    await unchecked.start()
    try:
        pollers = {p.fetcher.source: p for p in unchecked.bot.pollers}
        leaves = pollers["o365_audit"].graph_sign_ins
        assert leaves is not None and not leaves()  # Graph has not served yet: nothing is left to it
        await pollers["entra_signin"].poll_once()
        assert leaves()
    finally:
        await unchecked.stop()

    denied = Sandbox(str(tmp_path / "c.db"), overrides={"startup_checks": True})
    denied.seed()
    denied.graph.deny_licence(r"/v1\.0/auditLogs/signIns")
    await denied.start()
    try:
        (audit,) = denied.bot.pollers
        assert audit.fetcher.source == "o365_audit" and audit.graph_sign_ins is None
    finally:
        await denied.stop()
