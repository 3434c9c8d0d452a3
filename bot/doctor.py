"""`mailwarden doctor`: can each enabled feature of each tenant actually work?

For every configured tenant, each Graph and Management Activity API endpoint the configuration enables
is called once with a minimal request (`$top=1`), and each feature gets a verdict:

- `ok`: the call worked;
- `missing_permission`: a 403 (or the Management API's AF10001); the least-privilege permission is named;
- `missing_licence`: Graph's 403 for a tenant without Entra ID P1/P2
  (`Authentication_RequestFromNonPremiumTenantOrB2CTenant`, "...doesn't have premium license");
- `unchecked`: containment writes cannot be tested without writing. The doctor checks what it can
  without changing anything (the reads the action makes, its target group) and says what it could not;
- `error`: anything else (unknown group, network, a 401 from a wrong secret).

Nothing here writes. Identity Protection calls are paced (1 request / s per tenant, no Retry-After) and
the reports family gets one call per feature (5 requests / 10 s).

The same source checks run at start-up (`startup_checks`, on by default): a source whose permission or
licence is missing is not polled, with one `source.disabled` log line (bot/wiring.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import Any

import structlog
from kiota_abstractions.api_error import APIError
from kiota_abstractions.method import Method

from actions.microsoft import MicrosoftActionConfig, microsoft_actions, send_raw
from bot.clock import Clock, SystemClock
from bot.config import Settings
from bot.sources.entra_signins import EntraSignInsBeta, beta_url
from bot.sources.o365_activity import ManagementApiError, O365Activity
from bot.sources.registry import SOURCE_NEEDS, TenantClients, denial

log = structlog.get_logger("mailwarden.doctor")

OK = "ok"
MISSING_PERMISSION = "missing_permission"
MISSING_LICENCE = "missing_licence"
UNCHECKED = "unchecked"
ERROR = "error"
BROKEN = frozenset({MISSING_PERMISSION, MISSING_LICENCE, ERROR})


@dataclass(frozen=True, slots=True)
class Verdict:
    tenant: str
    kind: str  # "source" | "action"
    feature: str  # the config's source name or the action's name
    status: str
    needs: str  # least-privilege permission(s) first
    licence: str | None
    endpoint: str
    detail: str

    @property
    def broken(self) -> bool:
        return self.status in BROKEN

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _v1(t: TenantClients) -> str:
    return str(t.graph.request_adapter.base_url).rstrip("/")


def _classify(exc: BaseException) -> tuple[str, str]:
    """(status, detail) for a failed probe."""
    found = denial(exc)
    if found is not None:
        status = MISSING_LICENCE if found.kind == "licence" else MISSING_PERMISSION
        return status, f"{found.status} {found.code or ''}: {found.message[:160]}".strip()
    if isinstance(exc, ManagementApiError):
        return ERROR, f"{exc.status} {exc.code or ''}: {exc.message[:160]}"
    if isinstance(exc, APIError):
        err = getattr(exc, "error", None)
        code = getattr(err, "code", None)
        message = getattr(err, "message", None) or str(exc)
        return ERROR, f"{exc.response_status_code} {code or ''}: {message[:160]}"
    return ERROR, f"{type(exc).__name__}: {str(exc)[:160]}"


class _Prober:
    def __init__(self, t: TenantClients, settings: Settings) -> None:
        self.t = t
        self.settings = settings
        self.tenant = t.tenant.id
        self.pacer = t.identity_protection
        self.reports = t.reports
        self._user_id: str | BaseException | None = None

    async def get(self, url: str, *, paced: bool = False) -> Any:
        if paced:
            await self.pacer.wait()
        elif "/auditLogs/" in url:
            await self.reports.wait()
        return await send_raw(self.t.graph, Method.GET, url)

    def verdict(
        self, kind: str, feature: str, status: str, needs: str, licence: str | None, endpoint: str, detail: str
    ) -> Verdict:
        return Verdict(self.tenant, kind, feature, status, needs, licence, endpoint, detail)

    async def probe(
        self, kind: str, feature: str, url: str, needs: str, licence: str | None, *, paced: bool = False, ok: str = ""
    ) -> Verdict:
        endpoint = "GET " + url.replace(_v1(self.t), "/v1.0").replace(beta_url(self.t.graph), "/beta").split("?")[0]
        try:
            await self.get(url, paced=paced)
        except Exception as exc:
            status, detail = _classify(exc)
            return self.verdict(kind, feature, status, needs, licence, endpoint, detail)
        return self.verdict(kind, feature, OK, needs, licence, endpoint, ok or "read works")

    # --- sources ----------------------------------------------------------------------------------

    async def source(self, name: str) -> Verdict:
        need = SOURCE_NEEDS.get(name)
        if need is None:
            return self.verdict("source", name, ERROR, "-", None, "-", "no such source in this release")
        v1 = _v1(self.t)
        now = self.t.clock.now()
        if name == "signins":
            return await self.probe("source", name, f"{v1}/auditLogs/signIns?$top=1", need.permission, need.licence)
        if name == "signins_noninteractive":
            fetcher = EntraSignInsBeta(
                self.t.graph,
                filters=self.settings.noninteractive_filter,
                service_principals=self.settings.noninteractive_service_principals,
            )
            url = fetcher.url(now - timedelta(hours=1), now, top=1)
            return await self.probe("source", name, url, need.permission, need.licence)
        if name == "risk":
            first = await self.probe(
                "source",
                name,
                f"{v1}/identityProtection/riskDetections?$top=1",
                need.permission,
                need.licence,
                paced=True,
            )
            if first.broken or not self.settings.risk_risky_users:
                return first
            users = SOURCE_NEEDS["risk.risky_users"]
            return await self.probe(
                "source",
                name,
                f"{v1}/identityProtection/riskyUsers?$top=1",
                users.permission,
                users.licence,
                paced=True,
                ok="riskDetections and riskyUsers read",
            )
        if name == "o365_audit":
            api = O365Activity(
                self.t.credential,
                tenant_id=self.tenant,
                clock=self.t.clock,
                manage_url=self.t.tenant.manage_url or self.settings.manage_url,
                publisher_id=self.settings.o365_publisher_id,
                content_types=self.settings.o365_content_types,
                max_attempts=2,
            )
            endpoint = "GET /api/v1.0/{tenant}/activity/feed/subscriptions/list"
            try:
                subs = await api.subscriptions()
            except Exception as exc:
                status, detail = _classify(exc)
                return self.verdict("source", name, status, need.permission, None, endpoint, detail)
            enabled = {str(s.get("contentType")) for s in subs if s.get("status") == "enabled"}
            todo = [c for c in self.settings.o365_content_types if c not in enabled]
            detail = "subscriptions enabled: " + (", ".join(sorted(enabled)) or "none")
            if todo:
                detail += f"; the first poll starts {', '.join(todo)} (first blobs can take up to 12 h)"
            return self.verdict("source", name, OK, need.permission, None, endpoint, detail)
        return self.verdict("source", name, ERROR, need.permission, need.licence, "-", "not probed")

    # --- actions ----------------------------------------------------------------------------------

    async def sample_user(self) -> str | None:
        """One user's object id, for the per-user reads; None when users cannot be listed."""
        if self._user_id is None:
            try:
                body = await self.get(f"{_v1(self.t)}/users?$top=1&$select=id")
                values = (body or {}).get("value") or []
                self._user_id = str(values[0]["id"]) if values else ""
            except Exception as exc:
                self._user_id = exc
        return self._user_id if isinstance(self._user_id, str) and self._user_id else None

    async def action(self, name: str, permission: str) -> Verdict:
        v1 = _v1(self.t)
        cfg = self.t.tenant
        no_write = f"the write needs {permission} and cannot be checked without writing"

        def unchecked(read: Verdict, what: str) -> Verdict:
            """A read of the same family worked: say so, and that the write itself was not tried."""
            if read.broken:
                return read
            return replace(read, status=UNCHECKED, detail=f"{what} works; {no_write}")

        if name in ("revoke_sessions", "block_sign_in", "reset_password"):
            url = f"{v1}/users?$top=1&$select=id,signInSessionsValidFromDateTime"
            read = await self.probe("action", name, url, permission, None)
            if read.broken:  # the reconcile read (already_done) needs User.Read.All
                return replace(read, needs=f"User.Read.All (reconcile read); {permission}")
            if name == "reset_password":
                no_write += "; the app also needs an Entra role that may reset the user (User Administrator)"
            return unchecked(read, "user read (User.Read.All)")
        if name == "require_mfa":
            parts: list[Verdict] = []
            if cfg.require_mfa_group_id:
                url = f"{v1}/groups/{cfg.require_mfa_group_id}/members?$top=1&$select=id"
                group = await self.probe("action", name, url, permission, "Entra ID P1 (Conditional Access)")
                if group.status == ERROR and group.detail.startswith("404"):
                    group = replace(group, detail=f"require-MFA group {cfg.require_mfa_group_id} not found")
                parts.append(group)
            if cfg.per_user_mfa and (user := await self.sample_user()):
                url = f"{beta_url(self.t.graph)}/users/{user}/authentication/requirements"
                parts.append(await self.probe("action", name, url, permission, None))
            bad = next((p for p in parts if p.broken), None)
            if bad is not None or not parts:
                return bad or self.verdict("action", name, UNCHECKED, permission, None, "-", no_write)
            return unchecked(parts[0], "group / MFA state read")
        if name in ("remove_recent_mfa_methods", "remove_forwarding"):
            user = await self.sample_user()
            if not user:
                return self.verdict("action", name, UNCHECKED, permission, None, "-", "no user to read: User.Read.All?")
            if name == "remove_forwarding":
                url = f"{v1}/users/{user}/mailFolders/inbox/messageRules?$top=1"
                read = await self.probe("action", name, url, permission, None)
                if read.status == ERROR and read.detail.startswith("404"):
                    return replace(read, status=UNCHECKED, detail=f"the sample user has no mailbox; {no_write}")
                return unchecked(read, "inbox rule read")
            url = f"{v1}/users/{user}/authentication/methods"
            return unchecked(await self.probe("action", name, url, permission, None), "method list read")
        if name == "revoke_app_consent":
            url = f"{v1}/oauth2PermissionGrants?$top=1"
            return unchecked(await self.probe("action", name, url, permission, None), "grant list read")
        if name in ("confirm_compromised", "dismiss_risk"):
            url = f"{v1}/identityProtection/riskyUsers?$top=1"
            read = await self.probe("action", name, url, permission, "Entra ID P2", paced=True)
            return unchecked(read, "riskyUsers read")
        return self.verdict("action", name, UNCHECKED, permission, None, "-", no_write)


async def check_sources(t: TenantClients, settings: Settings) -> list[Verdict]:
    prober = _Prober(t, settings)
    return [await prober.source(name) for name in dict.fromkeys(t.tenant.sources)]


async def check_tenant(t: TenantClients, settings: Settings) -> list[Verdict]:
    prober = _Prober(t, settings)
    out = [await prober.source(name) for name in dict.fromkeys(t.tenant.sources)]
    cfg = MicrosoftActionConfig(
        require_mfa_group_id=t.tenant.require_mfa_group_id,
        per_user_mfa=t.tenant.per_user_mfa,
        disable_service_principal=t.tenant.disable_service_principal,
    )
    for action in microsoft_actions(t.graph, cfg):
        out.append(await prober.action(action.name, action.permission))
    return out


async def run_doctor(settings: Settings, *, credential: Any = None, clock: Clock | None = None) -> dict[str, Any]:
    """Every tenant's verdicts as one JSON-able report; `ok` is False when an enabled feature is broken."""
    from bot.wiring import graph_client, graph_credential

    verdicts: list[Verdict] = []
    problems: list[str] = []
    tenants = settings.effective_tenants()
    if not tenants:
        problems.append("no Microsoft tenant configured")
    for tenant in tenants:
        try:
            cred = credential or graph_credential(tenant)
        except (ValueError, OSError) as exc:  # e.g. workload identity without its token file
            problems.append(f"tenant {tenant.id}: cannot build the {tenant.auth} credential: {str(exc)[:200]}")
            continue
        try:
            graph = graph_client(tenant.graph_url or settings.graph_url, cred)
            clients = TenantClients(tenant, graph, cred, clock or SystemClock())
            verdicts += await check_tenant(clients, settings)
        finally:
            if credential is None:
                await cred.close()
    return {
        "ok": not problems and not any(v.broken for v in verdicts),
        "problems": problems,
        "checks": [v.to_dict() for v in verdicts],
    }


def render(report: dict[str, Any]) -> str:
    marks = {
        OK: "OK",
        MISSING_PERMISSION: "MISSING PERMISSION",
        MISSING_LICENCE: "MISSING LICENCE",
        UNCHECKED: "UNCHECKED",
        ERROR: "ERROR",
    }
    lines = [f"problem: {p}" for p in report["problems"]]
    tenant = None
    for c in report["checks"]:
        if c["tenant"] != tenant:
            tenant = c["tenant"]
            lines.append(f"tenant {tenant}")
        what = f"{c['kind']} {c['feature']}"
        needs = c["needs"] + (f"; licence {c['licence']}" if c["licence"] else "")
        lines.append(f"  [{marks.get(c['status'], c['status'])}] {what}: {c['detail']}")
        lines.append(f"      {c['endpoint']} - needs {needs}")
    ok = report["ok"]
    lines.append("doctor: every enabled feature can work" if ok else "doctor: some enabled features are broken")
    return "\n".join(lines)
