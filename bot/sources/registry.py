"""Which fetcher serves each configured source name, per tenant. A new source is one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from azure.core.credentials_async import AsyncTokenCredential
from msgraph.graph_service_client import GraphServiceClient

from bot.config import Settings, TenantSettings
from bot.sources.base import Fetcher
from bot.sources.entra_signins import EntraSignIns


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


SourceFactory = Callable[[TenantClients, Settings], SourceSpec]


def _signins(t: TenantClients, s: Settings) -> SourceSpec:
    return SourceSpec(
        EntraSignIns(t.graph),
        timedelta(seconds=s.signin_delay_s),
        timedelta(seconds=s.signin_overlap_s),
        timedelta(seconds=s.initial_lookback_s),
    )


SOURCES: dict[str, SourceFactory] = {
    "signins": _signins,
}
