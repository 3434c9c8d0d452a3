"""The functional core imports no I/O: no SDKs, no database, no asyncio, no HTTP."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = [
    "bot/model.py",
    "bot/clock.py",
    "bot/errors.py",
    "bot/sources/normalize.py",
    "bot/sources/normalize_common.py",
    "bot/sources/normalize_entra.py",
    "bot/sources/normalize_entra_risk.py",
    "bot/sources/normalize_o365.py",
    "bot/sources/normalize_gws_activity.py",
    "bot/sources/normalize_gws_alert.py",
    "bot/detect/__init__.py",
    "bot/detect/common.py",
    "bot/detect/profile.py",
    "bot/detect/fleet.py",
    "bot/detect/scoring.py",
    "bot/detect/policy.py",
    "bot/detect/audit_throttled.py",
    "bot/detect/failed_then_success.py",
    "bot/detect/impersonation_role.py",
    "bot/detect/impossible_travel.py",
    "bot/detect/legacy_protocol.py",
    "bot/detect/mail_bulk_access.py",
    "bot/detect/mail_forwarding.py",
    "bot/detect/mailbox_delegation.py",
    "bot/detect/mailbox_export.py",
    "bot/detect/new_asn.py",
    "bot/detect/new_country.py",
    "bot/detect/new_device.py",
    "bot/detect/oauth_mail_consent.py",
    "bot/detect/off_hours.py",
    "bot/detect/password_spray.py",
    "bot/detect/provider_risk.py",
    "bot/detect/risky_ip.py",
    "bot/detect/scripted_client.py",
    "bot/cases/machine.py",
    "bot/slack/cards.py",
    "bot/slack/text.py",
    "bot/slack/ids.py",
    "bot/audit/chain.py",
    "bot/store/codec.py",
]
FORBIDDEN = (
    "asyncio",
    "slack_bolt",
    "slack_sdk",
    "msgraph",
    "kiota",
    "azure",
    "google",
    "googleapiclient",
    "sqlalchemy",
    "sqlite3",
    "aiosqlite",
    "asyncpg",
    "httpx",
    "aiohttp",
    "requests",
    "socket",
    "starlette",
    "uvicorn",
    "apscheduler",
    "os",
    "subprocess",
    "structlog",
    "logging",
    "time",
)


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_module_does_no_io(module: str) -> None:
    bad = sorted(n for n in imported(ROOT / module) if n.split(".")[0] in FORBIDDEN)
    assert not bad, f"{module} imports I/O modules {bad}"


@pytest.mark.parametrize("module", CORE)
def test_core_imports_only_core_of_its_own(module: str) -> None:
    own = {n for n in imported(ROOT / module) if n.split(".")[0] in ("bot", "actions")}
    allowed = {m.removesuffix(".py").replace("/", ".").removesuffix(".__init__") for m in CORE}
    assert own <= allowed, f"{module} reaches into the shell: {sorted(own - allowed)}"


def test_every_detector_module_is_checked() -> None:
    detectors = {str(p.relative_to(ROOT)) for p in (ROOT / "bot/detect").glob("*.py")}
    assert detectors <= set(CORE)


def test_every_normalizer_module_is_checked() -> None:
    normalizers = {str(p.relative_to(ROOT)) for p in (ROOT / "bot/sources").glob("normalize*.py")}
    assert normalizers <= set(CORE)
