"""Which fetcher serves each configured source name, per tenant. A new source is one entry here.

Every fetcher is wrapped in `Guarded`: a 403 for a missing permission or licence switches that source
off for that tenant with one `source.disabled` log line naming the permission, instead of failing
every poll (a crash loop in the logs). `mailwarden doctor` and the start-up checks (bot/doctor.py)
find the same problems before the first poll.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from azure.core.credentials_async import AsyncTokenCredential
from kiota_abstractions.api_error import APIError
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_service_client import GraphServiceClient

from bot.clock import Clock, SystemClock
from bot.config import Settings, TenantSettings
from bot.sources.base import Fetcher, SourceDisabled
from bot.sources.entra_risk import EntraRisk, identity_protection_pacer
from bot.sources.entra_signins import EntraSignIns, EntraSignInsBeta, WindowPacer, reports_pacer
from bot.sources.o365_activity import MAX_AGE, MAX_LISTING_WINDOW, ManagementApiError, O365Activity

log = structlog.get_logger("mailwarden.sources")

# Graph's 403 when the tenant has no Entra ID P1/P2 (api-contracts.md §1.2).
LICENCE_CODES = frozenset({"Authentication_RequestFromNonPremiumTenantOrB2CTenant"})
LICENCE_TEXT = ("premium license", "premium licence", "non-premium", "b2c")
PERMISSION_CODES = frozenset({"Authorization_RequestDenied", "accessDenied", "Forbidden", "AF10001"})


@dataclass(frozen=True, slots=True)
class SourceSpec:
    fetcher: Fetcher
    delay: timedelta
    overlap: timedelta
    initial_lookback: timedelta
    max_window: timedelta | None = None


@dataclass(frozen=True, slots=True)
class TenantClients:
    tenant: TenantSettings
    graph: GraphServiceClient
    credential: AsyncTokenCredential
    clock: Clock = field(default_factory=SystemClock)
    # Client-side pacing per tenant (bot/sources/entra_signins.py WindowPacer), shared by its fetchers.
    reports: WindowPacer = field(default_factory=reports_pacer)
    identity_protection: WindowPacer = field(default_factory=identity_protection_pacer)


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a feature needs: least-privilege application permission(s) first, and a licence if any."""

    permission: str
    licence: str | None = None
    api: str = "graph"  # "graph" | "manage" (Office 365 Management Activity API)


# Per source name (config): what reading it needs. The README's permission table says the same.
SOURCE_NEEDS: dict[str, Requirement] = {
    "signins": Requirement("AuditLog.Read.All", "Entra ID P1 or P2"),
    "signins_noninteractive": Requirement("AuditLog.Read.All", "Entra ID P1 or P2"),
    "risk": Requirement("IdentityRiskEvent.Read.All", "Entra ID P1 or P2 (P2 for full detail)"),
    "risk.risky_users": Requirement("IdentityRiskyUser.Read.All", "Entra ID P2"),
    "o365_audit": Requirement("ActivityFeed.Read (Office 365 Management APIs)", None, "manage"),
}


@dataclass(frozen=True, slots=True)
class Denial:
    kind: str  # "permission" | "licence"
    status: int
    code: str | None
    message: str


def denial(exc: BaseException) -> Denial | None:
    """A 403 (or the Management API's AF10001) that says a permission or licence is missing; None otherwise."""
    if isinstance(exc, ManagementApiError):
        if exc.code == "AF10001" or exc.status == 403:
            return Denial("permission", exc.status, exc.code, exc.message)
        return None
    if isinstance(exc, APIError) and exc.response_status_code == 403:
        err = exc.error if isinstance(exc, ODataError) else None
        code = err.code if err else None
        message = (err.message if err else None) or str(exc)
        lowered = message.lower()
        if code in LICENCE_CODES or any(t in lowered for t in LICENCE_TEXT):
            return Denial("licence", 403, code, message)
        return Denial("permission", 403, code, message)
    return None


class Guarded:
    """A fetcher that switches itself off, once and loudly, when the provider refuses it for good.

    After a denial every fetch raises SourceDisabled, which the Poller takes as "skip, and keep the
    cursor where it is": once the permission is granted and the service restarted, the period the
    source was off is read back (within the provider's retention)."""

    def __init__(self, inner: Fetcher, *, tenant: str, name: str, need: Requirement) -> None:
        self.inner = inner
        self.source = inner.source
        self.kind = inner.kind
        self.tenant = tenant
        self.name = name
        self.need = need
        self.disabled: Denial | None = None
        # The provider has served this source (a fetch, or the start-up check, went through). Until
        # then its data is not relied on in place of another source's (Poller.graph_sign_ins).
        self.proven = False

    @property
    def serving(self) -> bool:
        """Proven and not switched off: its records are arriving."""
        return self.proven and self.disabled is None

    async def fetch(self, start: datetime, end: datetime) -> tuple[list[Any], int]:
        if self.disabled is not None:
            raise SourceDisabled(self.name)
        try:
            fetched = await self.inner.fetch(start, end)
        except Exception as exc:
            found = denial(exc)
            if found is None:
                raise
            self.disabled = found
            missing = self.need.licence if found.kind == "licence" else self.need.permission
            log.error(
                "source.disabled",
                tenant=self.tenant,
                source=self.name,
                missing=found.kind,
                needs=missing,
                code=found.code,
                status=found.status,
                message=found.message[:200],
                fix=f"grant {self.need.permission}"
                if found.kind == "permission"
                else f"the tenant needs {self.need.licence}",
            )
            raise SourceDisabled(self.name) from exc
        self.proven = True
        return fetched


SourceFactory = Callable[[TenantClients, Settings], SourceSpec]


def _signins(t: TenantClients, s: Settings) -> SourceSpec:
    return SourceSpec(
        EntraSignIns(t.graph, t.reports),
        timedelta(seconds=s.signin_delay_s),
        timedelta(seconds=s.signin_overlap_s),
        timedelta(seconds=s.initial_lookback_s),
    )


def _signins_noninteractive(t: TenantClients, s: Settings) -> SourceSpec:
    return SourceSpec(
        EntraSignInsBeta(
            t.graph,
            filters=s.noninteractive_filter,
            service_principals=s.noninteractive_service_principals,
            pacer=t.reports,
        ),
        timedelta(seconds=s.signin_delay_s),
        timedelta(seconds=s.signin_overlap_s),
        timedelta(seconds=s.initial_lookback_s),
    )


def _risk(t: TenantClients, s: Settings) -> SourceSpec:
    return SourceSpec(
        EntraRisk(t.graph, pacer=t.identity_protection, risky_users=s.risk_risky_users),
        timedelta(seconds=s.risk_delay_s),
        timedelta(seconds=s.risk_overlap_s),
        timedelta(seconds=s.initial_lookback_s),
    )


def _o365_audit(t: TenantClients, s: Settings) -> SourceSpec:
    return SourceSpec(
        O365Activity(
            t.credential,
            tenant_id=t.tenant.id,
            clock=t.clock,
            manage_url=t.tenant.manage_url or s.manage_url,
            publisher_id=s.o365_publisher_id,
            content_types=s.o365_content_types,
        ),
        timedelta(seconds=s.o365_delay_s),
        timedelta(seconds=s.o365_overlap_s),
        min(timedelta(seconds=s.initial_lookback_s), MAX_AGE - timedelta(hours=1)),
        max_window=MAX_LISTING_WINDOW,
    )


SOURCES: dict[str, SourceFactory] = {
    "signins": _signins,
    "signins_noninteractive": _signins_noninteractive,
    "risk": _risk,
    "o365_audit": _o365_audit,
}


def guarded(name: str, t: TenantClients, s: Settings) -> SourceSpec | None:
    """The source `name` for one tenant, wrapped in `Guarded`; None if no such source exists."""
    factory = SOURCES.get(name)
    if factory is None:
        return None
    spec = factory(t, s)
    need = SOURCE_NEEDS[name]
    if name == "risk" and s.risk_risky_users:
        need = Requirement(f"{need.permission} + {SOURCE_NEEDS['risk.risky_users'].permission}", "Entra ID P2")
    return SourceSpec(
        Guarded(spec.fetcher, tenant=t.tenant.id, name=name, need=need),
        spec.delay,
        spec.overlap,
        spec.initial_lookback,
        spec.max_window,
    )
