"""Detection: one pure function per detector, its sample records beside it (`<id>.samples.json`).

Rule: a per-user detector sees one Event and that user's Profile *before* the event, returns a
Finding with a sentence a person understands, or None. No clock, no I/O, no module state.

Two detectors need to see several users at once (`password_spray`: one IP failing for many
accounts; `mail_bulk_access`: one app reading many mailboxes). They keep a small state value that
the caller passes in and gets back (bot/detect/fleet.py: `observe_fleet(fleet, event, params) ->
(fleet, findings)`), so they stay pure too. `mail_bulk_access` also has a per-user part (one
record reading many items), which runs with the others here.

Which detectors run is `Params.enabled`: by default the two this release shipped with, so turning
the rest on is one deliberate change in the wiring (`Params(enabled=None)` runs them all).
"""

from __future__ import annotations

import importlib
import ipaddress
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cache
from types import ModuleType

from bot.model import Event, Finding, Profile

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RELEASED = frozenset({"failed_then_success", "new_country"})

# Cloud and VPS providers' own autonomous systems (their RIR registrations): sign-ins from them are
# servers, VPNs or VDI, not people at home. Microsoft's AS8075 is left out on purpose: its own
# services sign in from there (Panther azure_excessive_account_lockouts excludes it, detections.md A11).
HOSTING_ASNS = frozenset(
    {
        16509,  # Amazon (AWS)
        14618,  # Amazon (AWS)
        396982,  # Google Cloud
        14061,  # DigitalOcean
        16276,  # OVH
        24940,  # Hetzner
        63949,  # Linode / Akamai
        20473,  # Vultr (Choopa)
        9009,  # M247
        51167,  # Contabo
        60781,  # Leaseweb NL
        12876,  # Scaleway
    }
)


@dataclass(frozen=True, slots=True)
class Params:
    """Every threshold in one place; each default names its public source beside the detector that reads it."""

    enabled: frozenset[str] | None = RELEASED  # None runs every detector
    # failed_then_success: Panther brute-force-success (>= 5 failures then a success),
    # Sentinel SigninBruteForce-AzurePortal (20-minute window)
    failed_then_success_min_failures: int = 5
    failed_then_success_window: timedelta = timedelta(minutes=20)
    # new_country: Elastic new-terms rules use a 7-day history
    new_country_warmup: timedelta = timedelta(days=7)
    country_memory: timedelta = timedelta(days=90)
    max_countries: int = 50
    max_failures_kept: int = 100
    # new_asn, new_device, off_hours: the same 7-day new-terms warm-up (Elastic
    # initial_access_google_workspace_login_from_atypical_asn, detections.md F10)
    baseline_warmup: timedelta = timedelta(days=7)
    baseline_memory: timedelta = timedelta(days=90)
    max_asns: int = 50
    max_devices: int = 20
    max_user_agents: int = 20
    max_client_apps: int = 20
    max_known_ips: int = 50
    max_granted_apps: int = 50
    # impossible_travel: Elastic "Microsoft Entra ID Impossible Travel Sign-in" (>= 500 km, >= 800 km/h,
    # 90-minute look-back) and "M365 Identity Login from Impossible Travel Location" (2 countries in 15 min)
    travel_min_km: float = 500.0
    travel_min_kmh: float = 800.0
    travel_window: timedelta = timedelta(minutes=90)
    travel_country_window: timedelta = timedelta(minutes=15)
    max_locations: int = 20
    # ... and not between places the user has signed in from before (within the baseline's memory):
    # Entra's atypical travel skips "locations regularly used" by the user, and Elastic's rule names
    # "mobile carrier hubs" and VPN egress among its false positives (detections.md A1, A3)
    max_places: int = 50
    # risky_ip: the operator's own lists, loaded by the shell; no file is read here
    threat_networks: tuple[IPNetwork, ...] = ()
    # The organisation's own egress (offices' NAT, its VPN, VDI, a secure web gateway), often in a cloud
    # network and another country: where a sign-in from there comes from says nothing about where the
    # person is. The public rules list exactly these as their false positives ("VPN/proxy egress, AWS
    # WorkSpaces / VDI in cloud ASNs", "NAT'd corporate egress": detections.md A1, A6, A7); Entra's
    # trusted named locations serve the same end. new_country, new_asn, impossible_travel and
    # risky_ip's hosting-network check leave them out, and baselines do not learn their whereabouts.
    own_networks: tuple[IPNetwork, ...] = ()
    tor_exits: frozenset[str] = frozenset()
    hosting_asns: frozenset[int] = HOSTING_ASNS
    # password_spray: Sentinel SigninPasswordSpray (>= 5 users per IP in 20 min); a success from that IP
    # stays suspect for Panther's 30-h brute-force-success look-back
    spray_min_users: int = 5
    spray_window: timedelta = timedelta(minutes=20)
    spray_memory: timedelta = timedelta(hours=30)
    spray_max_attempts: int = 10_000
    # legacy_protocol: Elastic unusual legacy-auth client, first time per user in 7 days
    legacy_memory: timedelta = timedelta(days=7)
    # off_hours: hour-binned baseline as Sentinel MailItemsAccessedTimeSeries (1-h bins); a user's
    # working day in their own time zone when it is known
    # about one warm-up week of a typical user's interactive sign-ins (two or three per working day)
    off_hours_min_sign_ins: int = 14
    off_hours_max_share: float = 0.02
    work_start_hour: int = 6
    work_end_hour: int = 22
    hours_cap: int = 2000
    # mail_bulk_access: Elastic "M365 Exchange Mailbox Items Accessed Excessively" (OperationCount >= 100);
    # Splunk o365_multiple_mailboxes_accessed_via_api (> 5 mailboxes per app in 10 min)
    mail_bulk_min_items: int = 100
    mail_bulk_min_mailboxes: int = 6
    mail_bulk_window: timedelta = timedelta(minutes=10)
    mail_bulk_max_seen: int = 10_000
    # oauth_mail_consent: Elastic first-time third-party OAuth app, new client vs 15 days
    consent_memory: timedelta = timedelta(days=15)
    # ... and the apps the organisation approved (Google OAuth client ids, Entra service-principal object
    # ids, lower case): Panther's F8 names "legitimate admin tools" as its false positives and Panther's
    # login-type rule is "configure allow-list" (detections.md F8, F14). Phone and desktop mail clients
    # (Apple's iOS Mail, Outlook, Thunderbird) ask for full Gmail on every new device.
    trusted_apps: frozenset[str] = frozenset()
    # mail_forwarding: the organisation's own mail domains (subdomains included); the user's own
    # domain always counts as internal
    own_domains: frozenset[str] = frozenset()

    def runs(self, detector: str) -> bool:
        return self.enabled is None or detector in self.enabled

    def strict(self) -> Params:
        """Thresholds for a user on the watchlist after a confirmed incident: three failures before a
        success are enough (below Panther's five), and no warm-up hides a new country, network,
        device or legacy client. Findings of sign-in anomalies also count one level higher
        (bot.cases.service)."""
        return replace(
            self,
            failed_then_success_min_failures=min(3, self.failed_then_success_min_failures),
            new_country_warmup=timedelta(0),
            baseline_warmup=timedelta(0),
        )


Detector = Callable[[Event, Profile | None, Params], Finding | None]

CROSS_USER = ("mail_bulk_access", "password_spray")


def registry() -> dict[str, Detector]:
    """Every per-user detector by id (enabled or not); a fresh dict, so callers may filter it."""
    return dict(_registry())


# Modules of this package that hold shared machinery, not a detector.
NOT_DETECTORS = frozenset({"common", "fleet", "policy", "profile", "scoring"})


@cache
def _modules() -> tuple[ModuleType, ...]:
    """Every module here with an ID and a per-user `detect`: adding a detector is adding its module."""
    # Imported lazily: each detector module imports Params from this package.
    mods = [
        importlib.import_module(f"{__name__}.{m.name}")
        for m in pkgutil.iter_modules(__path__)
        if m.name not in NOT_DETECTORS
    ]
    return tuple(sorted((m for m in mods if hasattr(m, "detect") and hasattr(m, "ID")), key=lambda m: m.ID))


@cache
def _registry() -> tuple[tuple[str, Detector], ...]:
    return tuple((m.ID, m.detect) for m in _modules())


def detector_ids() -> tuple[str, ...]:
    """Every detector id, per-user and cross-user."""
    return tuple(sorted({*registry(), *CROSS_USER}))


@cache
def _enabled(enabled: frozenset[str] | None, kind: str) -> tuple[Detector, ...]:
    """The enabled detectors that read events of `kind` (a module's KINDS; all kinds when it has none)."""
    return tuple(
        m.detect
        for m in _modules()
        if (enabled is None or m.ID in enabled) and (getattr(m, "KINDS", None) is None or kind in m.KINDS)
    )


def run_all(event: Event, profile: Profile | None, params: Params) -> list[Finding]:
    """The enabled per-user detectors on one event (cross-user ones: bot.detect.fleet.observe_fleet)."""
    return [f for d in _enabled(params.enabled, event.kind) if (f := d(event, profile, params)) is not None]
