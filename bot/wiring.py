"""Composition root: the one place that constructs SDK clients, engines and services."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import structlog
from azure.core.credentials_async import AsyncTokenCredential
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncEngine

from actions.base import Action, ActionContext, ActionOutcome
from actions.ledger import BatchRunner, Executor
from actions.microsoft import MicrosoftActionConfig, microsoft_actions, run_batched, user_facts
from actions.preflight import ProtectionPolicy, check_plan
from bot.audit import log as audit
from bot.audit.chain import Verdict
from bot.cases.machine import Timeouts
from bot.cases.service import CaseService
from bot.clock import Clock
from bot.config import Settings, TenantSettings
from bot.detection import detection_params, detection_policy
from bot.dispatch import Dispatcher
from bot.errors import ConfigError
from bot.escalate.pagerduty import PagerDuty
from bot.model import Case, Severity
from bot.slack.handlers import Interactions, SocDirectory, register
from bot.sources.base import Fetcher, Poller
from bot.sources.registry import Guarded, SourceSpec, TenantClients, guarded
from bot.store import db, repo

log = structlog.get_logger("mailwarden")

GRAPH_SCOPES = ["https://graph.microsoft.com/.default"]


def graph_credential(t: TenantSettings) -> AsyncTokenCredential:
    from azure.identity.aio import CertificateCredential, ClientSecretCredential, WorkloadIdentityCredential

    if t.auth == "certificate":
        assert t.certificate_path
        return CertificateCredential(t.id, t.client_id, t.certificate_path)
    if t.auth == "workload_identity":
        return WorkloadIdentityCredential(tenant_id=t.id, client_id=t.client_id)
    assert t.client_secret
    return ClientSecretCredential(t.id, t.client_id, t.client_secret.get_secret_value())


def graph_client(
    graph_url: str, credential: AsyncTokenCredential, transports: list[httpx.AsyncHTTPTransport] | None = None
) -> GraphServiceClient:
    # Always pass explicit scopes: without them kiota derives the scope from the request host,
    # which is wrong for anything but graph.microsoft.com (api-contracts.md §1.8).
    provider = AzureIdentityAuthenticationProvider(credential, scopes=GRAPH_SCOPES)
    # Our own transport, so it can be closed: msgraph-core's wrapper transport has no aclose() and
    # would leave the connection pool open after the client is gone.
    transport = httpx.AsyncHTTPTransport(http2=True, retries=0)
    if transports is not None:
        transports.append(transport)
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(100.0, connect=30.0))
    )
    adapter = GraphRequestAdapter(provider, http)
    # The setter, not httpx's base_url: httpx would add a slash and produce /v1.0//users.
    adapter.base_url = f"{graph_url.rstrip('/')}/v1.0"
    return GraphServiceClient(request_adapter=adapter)


def batch_runner(graph: GraphServiceClient) -> BatchRunner:
    async def run(target: str, acts: list[Action], context: ActionContext | None) -> dict[str, ActionOutcome]:
        return await run_batched(graph, target, acts, context)

    return run


def ladder_rung(s: Settings, over: dict[str, int]) -> Timeouts:
    """The escalation ladder for one severity: the global settings with that severity's overrides."""

    def get(key: str, default: int | None) -> timedelta | None:
        value = over.get(key, default)
        return None if value is None else timedelta(seconds=value)

    user_answer = get("user_answer_timeout_s", s.user_answer_timeout_s)
    soc_decision = get("soc_timeout_s", s.soc_timeout_s)
    assert user_answer is not None and soc_decision is not None
    return Timeouts(
        user_answer=user_answer,
        soc_decision=soc_decision,
        user_reminder=get("user_reminder_s", s.user_reminder_s),
        soc_reminder=get("soc_reminder_s", s.soc_reminder_s),
    )


def slack_client(s: Settings) -> AsyncWebClient:
    token = s.slack_bot_token.get_secret_value() if s.slack_bot_token else None
    # retry_handlers= replaces slack_sdk's defaults, so the connection-error handler is listed again.
    return AsyncWebClient(
        token=token,
        base_url=s.slack_api_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )


@dataclass
class Services:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    slack: AsyncWebClient
    graph: GraphServiceClient
    cases: CaseService
    executor: Executor
    dispatcher: Dispatcher
    poller: Poller
    bolt: AsyncApp
    interactions: Interactions
    crash_points: set[str] = field(default_factory=set)
    pollers: list[Poller] = field(default_factory=list)
    tenants: dict[str, TenantClients] = field(default_factory=dict)
    transports: list[httpx.AsyncHTTPTransport] = field(default_factory=list)
    last_crash: BaseException | None = None
    _tasks: set[asyncio.Task[int]] = field(default_factory=set)
    # The audit chain as far as this process has verified it, and the first failure it found: a failure
    # stays reported until a check from the first entry passes again.
    _audit_verified: tuple[int, str] | None = None
    _audit_failure: Verdict | None = None
    _audit_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one check at a time: the next goes on from it

    async def kick(self) -> None:
        """Deliver what a click just queued without waiting for the next dispatcher tick."""
        task = asyncio.get_running_loop().create_task(self.dispatcher.drain())
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[int]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.last_crash = exc
            log.error("dispatch.kick_failed", error=repr(exc))

    async def verify_audit(self, *, full: bool = False) -> Verdict:
        """Verify the audit chain: what was appended since the last check, or (full, and the first time)
        every entry. The scheduler runs a full check every `audit_verify_interval_s`."""
        async with self._audit_lock:
            start = None if full else self._audit_verified
            async with self.engine.connect() as conn:
                verdict = await audit.check(conn, start)
            if verdict.ok:
                self._audit_verified = verdict.last
                if start is None:
                    self._audit_failure = None
            else:
                if self._audit_failure is None:
                    log.error("audit.chain_broken", first_bad_seq=verdict.first_bad_seq, problem=verdict.problem)
                self._audit_failure = verdict
            return self._audit_failure or verdict

    async def health(self) -> dict[str, Any]:
        try:
            async with self.engine.connect() as conn:
                box = await repo.outbox_health(conn)
            verdict = await self.verify_audit()
            oldest = box.oldest_pending_at
            return {
                "ok": True,
                "db": "ok",
                "pending_outbox": box.pending,
                # a growing age means delivery is stuck (Slack down, a lane blocked); dead rows never
                # reached Slack or the provider and need a person
                "oldest_pending_s": round(max(0.0, (self.clock.now() - oldest).total_seconds()), 1) if oldest else None,
                "dead_outbox": box.dead,
                "audit_ok": verdict.ok,
                "dry_run": self.settings.dry_run,
            }
        except Exception as exc:
            return {"ok": False, "db": f"error: {type(exc).__name__}"}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for transport in self.transports:
            await transport.aclose()
        await self.engine.dispose()


def _serving(fetcher: Fetcher) -> Callable[[], bool]:
    """Whether one of the tenant's Graph sign-in logs is arriving: then the audit log's STS logons copy it."""
    return lambda: isinstance(fetcher, Guarded) and fetcher.serving


async def _startup_checks(c: TenantClients, settings: Settings) -> tuple[set[str], set[str]]:
    """The sources of one tenant to switch off (their permission or licence is missing) and those the
    provider served (bot/doctor.py)."""
    from bot.doctor import MISSING_LICENCE, MISSING_PERMISSION, OK, check_sources

    off: set[str] = set()
    served: set[str] = set()
    for v in await check_sources(c, settings):
        if v.status == OK:
            served.add(v.feature)
        elif v.status in (MISSING_PERMISSION, MISSING_LICENCE):
            off.add(v.feature)
            log.error(
                "source.disabled",
                tenant=v.tenant,
                source=v.feature,
                missing="licence" if v.status == MISSING_LICENCE else "permission",
                needs=v.licence if v.status == MISSING_LICENCE else v.needs,
                detail=v.detail,
                when="start-up check",
            )
        elif v.broken:
            log.warning("source.check_failed", tenant=v.tenant, source=v.feature, detail=v.detail)
    return off, served


async def build(
    settings: Settings,
    clock: Clock,
    *,
    credential: AsyncTokenCredential | None = None,
    crash_points: set[str] | None = None,
) -> Services:
    engine = db.make_engine(settings.database_url)
    await db.migrate(engine)
    slack = slack_client(settings)
    tenants = settings.effective_tenants()
    if not tenants:
        raise ConfigError(
            [
                "no Microsoft tenant configured: set MAILWARDEN_MS_TENANT_ID and MAILWARDEN_MS_CLIENT_ID, "
                "or [[mailwarden.tenants]] in the TOML file"
            ]
        )
    clients = []
    transports: list[httpx.AsyncHTTPTransport] = []
    for t in tenants:
        cred = credential or graph_credential(t)
        clients.append(TenantClients(t, graph_client(t.graph_url or settings.graph_url, cred, transports), cred, clock))
    actions_by_tenant = {
        c.tenant.id: {
            a.name: a
            for a in microsoft_actions(
                c.graph,
                MicrosoftActionConfig(
                    require_mfa_group_id=c.tenant.require_mfa_group_id,
                    per_user_mfa=c.tenant.per_user_mfa,
                    disable_service_principal=c.tenant.disable_service_principal,
                    internal_domains=tuple(c.tenant.internal_domains),
                ),
            )
        }
        for c in clients
    }
    graph = clients[0].graph
    params = detection_params(settings)  # every detector unless `detectors` restricts; threat lists read here
    timeouts = ladder_rung(settings, {})
    ladder = {Severity.parse(sev): ladder_rung(settings, over) for sev, over in settings.ladder.items()}
    crash = crash_points if crash_points is not None else set()
    actions = actions_by_tenant[tenants[0].id]
    tenant = tenants[0].id
    cases = CaseService(
        engine,
        clock,
        params,
        timeouts,
        timedelta(seconds=settings.incident_window_s),
        ladder=ladder,
        available_actions=tuple(actions),
        destructive_actions=frozenset(n for n, a in actions.items() if a.destructive),
        protected_users=frozenset(settings.protected_users),
        tenant_default=tenant,
        policy=detection_policy(settings),
        watchlist_for=timedelta(days=settings.watchlist_days),
        containment_quiet=timedelta(hours=settings.containment_quiet_hours),
        # SQLite means one replica, the only writer of profiles: keep the recently used ones in memory
        # rather than reading and parsing them again for every poll (several replicas share PostgreSQL,
        # where another replica may have written a profile since: read it every time).
        profile_cache_size=settings.profile_cache_users if db.is_sqlite(settings.database_url) else 0,
    )
    executor = Executor(
        engine,
        clock,
        actions,
        dry_run=settings.dry_run,
        reconcile_skew=timedelta(seconds=settings.reconcile_skew_s),
        crash_points=crash,
        by_tenant=actions_by_tenant,
        batch_runners={c.tenant.id: batch_runner(c.graph) for c in clients},
    )
    pager = None
    if settings.pagerduty_routing_key is not None:
        pager = PagerDuty(
            httpx.AsyncClient(timeout=10.0),
            settings.pagerduty_routing_key.get_secret_value(),
            base_url=settings.pagerduty_url,
        )
    policy = ProtectionPolicy.of(vip=settings.protected_users)

    async def preflight(case: Case) -> tuple[tuple[tuple[str, str], ...], bool]:
        """Pre-flight of every available action for this user, for the SOC card and the Contain… modal."""
        client = next((c for c in clients if c.tenant.id == case.tenant), clients[0])
        try:
            facts = await user_facts(client.graph, case.user_id or case.user_principal)
        except Exception as exc:
            log.warning("preflight.failed", case_id=case.id, error=type(exc).__name__)
            return (("*", f"pre-flight could not read the user ({type(exc).__name__})"),), False
        check = check_plan(facts, list(actions_by_tenant[client.tenant.id]), policy)
        notes = tuple((st.action, st.note) for st in check.steps if st.note)
        return notes + tuple(("*", n) for n in check.notes), check.needs_two_approvers

    dispatcher = Dispatcher(
        engine,
        clock,
        cases,
        slack,
        executor,
        soc_channel=settings.soc_channel or "",
        soc_channels={t.id: settings.soc_channel_for(t.id) for t in tenants},
        pager=pager,
        soc_usergroup=settings.soc_usergroup,
        oncall_usergroup=settings.oncall_usergroup,
        recovery_url=settings.password_recovery_url,
        helpdesk=settings.helpdesk_contact,
        preflight=preflight,
        pace_scale=settings.slack_pace_scale,
        offhours=(settings.business_hours_start, settings.business_hours_end)
        if settings.offhours_direct_to_soc
        else None,
    )
    pollers = []
    for c in clients:
        switched_off, served = await _startup_checks(c, settings) if settings.startup_checks else (set(), set())
        specs: dict[str, SourceSpec] = {}
        for name in c.tenant.sources:
            if name in switched_off:
                continue
            spec = guarded(name, c, settings)
            if spec is None:
                log.warning("source.unavailable", tenant=c.tenant.id, source=name)
                continue
            if isinstance(spec.fetcher, Guarded) and name in served:
                spec.fetcher.proven = True
            specs[name] = spec
        # for the audit log's STS logons (bot/sources/normalize.py, is_sign_in_copy)
        sign_in_log, token_log = specs.get("signins"), specs.get("signins_noninteractive")
        copies_graph = _serving(sign_in_log.fetcher) if sign_in_log else None
        # a filtered non-interactive log (MAILWARDEN_NONINTERACTIVE_FILTER) holds only some token redemptions
        copies_tokens = _serving(token_log.fetcher) if token_log and not settings.noninteractive_filter else None
        for source, spec in specs.items():
            pollers.append(
                Poller(
                    spec.fetcher,
                    engine,
                    clock,
                    cases,
                    tenant=c.tenant.id,
                    delay=spec.delay,
                    overlap=spec.overlap,
                    initial_lookback=spec.initial_lookback,
                    max_window=spec.max_window,
                    keep_raw=settings.keep_raw,
                    graph_sign_ins=copies_graph if source == "o365_audit" else None,
                    graph_noninteractive_sign_ins=copies_tokens if source == "o365_audit" else None,
                )
            )
    if not pollers:
        raise ConfigError(["no source is enabled for any tenant"])
    poller = pollers[0]
    bolt = AsyncApp(
        client=slack,
        signing_secret=settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else "",
        process_before_response=False,
    )
    services_ref: list[Services] = []

    async def kick() -> None:
        await services_ref[0].kick()

    interactions = Interactions(
        cases,
        SocDirectory(slack, settings.soc_usergroup or ""),
        clock,
        kick,
        client=slack,
        soc_channel=settings.soc_channel or "",
        available_actions=tuple(actions),
    )
    register(bolt, interactions)
    services = Services(
        settings,
        clock,
        engine,
        slack,
        graph,
        cases,
        executor,
        dispatcher,
        poller,
        bolt,
        interactions,
        crash,
        pollers=pollers,
        tenants={c.tenant.id: c for c in clients},
        transports=transports,
    )
    services_ref.append(services)
    return services
