"""The sandbox world: emulated Entra ID tenant and Slack workspace on loopback, and the real bot
(its bolt app behind its own HTTP endpoint, its SQLite database) wired to them.

Used by `mailwarden demo` and by the integration tests, so both exercise the same path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_SUBMITTED
from azure.core.credentials import AccessToken

from bot.clock import SimClock
from bot.config import Settings
from bot.scheduler import build_scheduler
from bot.web import build_web
from bot.wiring import Services, build
from sandbox.graph import GraphEmulator
from sandbox.o365 import O365Emulator
from sandbox.pagerduty import PagerDutyEmulator
from sandbox.server import LoopbackServer
from sandbox.slack import SlackEmulator
from sandbox.wire import graph_sign_in

TENANT = "00000000-0000-0000-0000-00000000a11c"
GRAPH_TOKEN = "sandbox-graph-token"
MANAGE_TOKEN = "sandbox-manage-token"  # the Management Activity API token (audience manage.office.com)
PUBLISHER_ID = "00000000-0000-0000-0000-0000000b0a1d"  # the vendor tenant GUID sent as PublisherIdentifier
SOC_CHANNEL = "C0SOC"
SOC_GROUP = "S0SOC"
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class SandboxCredential:
    """azure-identity's async TokenCredential shape, handing out the emulator's token.

    Real tenants use ClientSecretCredential / CertificateCredential / WorkloadIdentityCredential;
    the emulator has no Entra token endpoint to talk to."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        # One token per audience, as Entra issues them: the Management API refuses a Graph token.
        if any(s.startswith("https://manage.office.com") for s in scopes):
            return AccessToken(MANAGE_TOKEN, int(time.time()) + 3600)
        return AccessToken(GRAPH_TOKEN, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> SandboxCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


MFA_GROUP = "22222222-0000-0000-0000-0000000000f1"  # the group a Conditional Access "require MFA" policy targets

PEOPLE = {
    # slack id: (upn, name, graph user id)
    "U0ALICE": ("alice@contoso.example", "Alice Archer", "11111111-0000-0000-0000-000000000001"),
    "U0DAVE": ("dave@contoso.example", "Dave Diaz", "11111111-0000-0000-0000-000000000004"),
    "U0ERIN": ("erin@contoso.example", "Erin Evans", "11111111-0000-0000-0000-000000000005"),
    "U0BOB": ("bob@contoso.example", "Bob Baker (SOC)", "11111111-0000-0000-0000-000000000002"),
    "U0CAROL": ("carol@contoso.example", "Carol Chen (SOC)", "11111111-0000-0000-0000-000000000003"),
    "U0MALLORY": ("mallory@contoso.example", "Mallory Moss", "11111111-0000-0000-0000-000000000006"),
    "U0FRANK": ("frank@contoso.example", "Frank Fischer (CFO)", "11111111-0000-0000-0000-000000000007"),
    "U0GRACE": ("grace@contoso.example", "Grace Green", "11111111-0000-0000-0000-000000000008"),
    "U0HEIDI": ("heidi@contoso.example", "Heidi Hall", "11111111-0000-0000-0000-000000000009"),
    "U0IVAN": ("ivan@contoso.example", "Ivan Ivanov", "11111111-0000-0000-0000-000000000010"),
}
SOC_MEMBERS = ["U0BOB", "U0CAROL"]
ONCALL_GROUP = "S0ONCALL"
PD_ROUTING_KEY = "R0SANDBOX00000000000000000000000"
TRAVELLERS = ("U0ALICE", "U0DAVE", "U0ERIN", "U0FRANK", "U0GRACE", "U0HEIDI", "U0IVAN")


def sign_in(
    upn: str,
    user_id: str,
    name: str,
    at: datetime,
    *,
    ok: bool = True,
    ip: str = "198.51.100.20",
    country: str = "US",
    city: str = "New York",
    app: str = "Office 365 Exchange Online",
    client: str = "Browser",
    ua: str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Edg/131.0",
    seq: int = 0,
) -> dict[str, Any]:
    """A sign-in record in Graph's v1.0 wire format (api-contracts.md §1.2)."""
    return graph_sign_in(
        record_id=f"{user_id[-4:]}-{int(at.timestamp())}-{seq}",
        at=at,
        upn=upn,
        user_id=user_id,
        name=name,
        ip=ip,
        country=country,
        city=city,
        correlation_id=f"corr-{seq}",
        app=app,
        client=client,
        user_agent=ua,
        code=0 if ok else 50126,
        failure_reason="Invalid username or password or Invalid on-premise username or password.",
    )


class Sandbox:
    def __init__(
        self,
        db_path: str,
        *,
        clock: SimClock | None = None,
        enforce_slack_limits: bool = True,
        overrides: dict[str, Any] | None = None,
        slack_time_scale: float = 1.0,
    ) -> None:
        self.db_path = db_path
        self.clock = clock or SimClock(START)
        self.graph = GraphEmulator(self.clock.now, token=GRAPH_TOKEN, tenant_id=TENANT)
        self.slack = SlackEmulator(enforce_limits=enforce_slack_limits, time_scale=slack_time_scale)
        self.pagerduty = PagerDutyEmulator()
        self.pagerduty_url = ""
        self.o365 = O365Emulator(self.clock.now, token=MANAGE_TOKEN, tenant_id=TENANT)
        self.manage_url = ""
        self.overrides = overrides or {}
        self.crash_points: set[str] = set()
        self._servers: list[LoopbackServer] = []
        self._bot_server: LoopbackServer | None = None
        self.services: Services | None = None
        self.scheduler: Any = None
        self.request_url = ""

    @property
    def bot(self) -> Services:
        assert self.services is not None, "sandbox not started"
        return self.services

    def settings(self) -> Settings:
        values: dict[str, Any] = {
            "database_url": f"sqlite+aiosqlite:///{self.db_path}",
            "slack_mode": "http",
            "slack_bot_token": self.slack.bot_token,
            "slack_signing_secret": self.slack.signing_secret,
            "slack_api_url": self.slack.base_url + "/api/",
            "soc_channel": SOC_CHANNEL,
            "soc_usergroup": SOC_GROUP,
            "ms_tenant_id": TENANT,
            "ms_client_id": "mailwarden-sandbox",
            "graph_url": self.graph_url,
            "manage_url": self.manage_url,
            "ms_sources": ["signins", "o365_audit"],  # the mailbox and directory audit trail too
            "o365_publisher_id": PUBLISHER_ID,
            # the full Microsoft plan has something to do: require_mfa adds to this group, and
            # revoke_app_consent also disables the flagged app (story contain-all-microsoft)
            "ms_require_mfa_group_id": MFA_GROUP,
            "ms_disable_service_principal": True,
            # The start-up probes would add requests the tests count; tests/integration/test_doctor.py
            # turns them on.
            "startup_checks": False,
            "signin_delay_s": 120,
            "signin_overlap_s": 60,
            "initial_lookback_s": 40 * 86_400,
            "user_answer_timeout_s": 900,
            "soc_timeout_s": 1800,
            "new_country_warmup_days": 7,
            "user_reminder_s": 600,
            "soc_reminder_s": 900,
            "pagerduty_routing_key": PD_ROUTING_KEY,
            "pagerduty_url": self.pagerduty_url,
            "oncall_usergroup": ONCALL_GROUP,
            "password_recovery_url": "https://passwordreset.microsoftonline.com/",
            "helpdesk_contact": "the IT helpdesk (#it-help, +1 555 0100)",
            "protected_users": ["frank@contoso.example"],
        }
        values.update(self.overrides)
        return Settings.model_validate(values)

    def seed(self) -> None:
        for uid, (upn, name, gid) in PEOPLE.items():
            self.slack.add_user(uid, upn, name)
            self.graph.add_user(gid, upn, name, sign_in_sessions_valid_from=START - timedelta(days=60))
        self.slack.add_channel(SOC_CHANNEL, "soc-mailwarden")
        self.slack.add_usergroup(SOC_GROUP, "soc", SOC_MEMBERS)
        self.slack.add_usergroup(ONCALL_GROUP, "soc-oncall", ["U0CAROL"])
        self.graph.add_group(MFA_GROUP, "Require MFA (Mailwarden containment)")
        # a month of ordinary history: weekday sign-ins from New York
        for uid in TRAVELLERS:
            upn, name, gid = PEOPLE[uid]
            for day in range(30, 0, -2):
                at = START - timedelta(days=day) + timedelta(minutes=17 * (day % 5))
                self.graph.add_sign_in(sign_in(upn, gid, name, at, seq=day))

    async def start(self) -> Sandbox:
        graph_srv = LoopbackServer(self.graph.app, "graph")
        slack_srv = LoopbackServer(self.slack.app, "slack")
        pd_srv = LoopbackServer(self.pagerduty.app, "pagerduty")
        self.graph_url = await graph_srv.start()
        self.slack.base_url = await slack_srv.start()
        self.pagerduty_url = await pd_srv.start()
        o365_srv = LoopbackServer(self.o365.app, "o365")
        self.manage_url = await o365_srv.start()
        self._servers += [graph_srv, slack_srv, pd_srv, o365_srv]
        await self._start_bot()
        return self

    async def _start_bot(self) -> None:
        self.services = await build(
            self.settings(), self.clock, credential=SandboxCredential(), crash_points=self.crash_points
        )
        self._bot_server = LoopbackServer(build_web(self.bot.bolt, self.bot.health), "bot")
        self.request_url = await self._bot_server.start() + "/slack/events"

    def run_scheduler(self, *, poll_s: float = 0.2, dispatch_s: float = 0.1, sweep_s: float = 0.1) -> None:
        """Run the bot's real APScheduler jobs (fast real-time ticks; the simulated clock decides what is due)."""
        self.scheduler = build_scheduler(self.bot, poll_s=poll_s, dispatch_s=dispatch_s, sweep_s=sweep_s)
        self._running_jobs = 0

        def count(event: Any) -> None:
            if str(event.job_id).startswith("poll."):  # polls only: a paced Slack drain may be cut short
                self._running_jobs += 1 if event.code == EVENT_JOB_SUBMITTED else -1

        self.scheduler.add_listener(count, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        self.scheduler.start()

    async def stop_bot(self) -> None:
        if self.scheduler is not None:
            # Let a poll in flight (an O365 catch-up) finish instead of cancelling it mid-request.
            self.scheduler.pause()
            deadline = time.monotonic() + 10.0
            while getattr(self, "_running_jobs", 0) > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        if self._bot_server is not None:
            await self._bot_server.stop()
            self._bot_server = None
        if self.services is not None:
            await self.services.close()
            self.services = None

    async def restart_bot(self) -> None:
        await self.stop_bot()
        await self._start_bot()

    async def stop(self) -> None:
        await self.stop_bot()
        for srv in reversed(self._servers):
            await srv.stop()
        self._servers.clear()

    # --- helpers for stories and tests ----------------------------------------------------------------
    def dm_card(self, slack_user: str) -> dict[str, Any]:
        messages = self.slack.messages(self.slack.dm_channel(slack_user))
        if not messages:
            raise LookupError(f"no DM to {slack_user}")
        return messages[-1]

    def soc_cards(self) -> list[dict[str, Any]]:
        return [m for m in self.slack.messages(SOC_CHANNEL) if not m.get("thread_ts")]

    async def submit_modal(self, slack_user: str, values: dict[str, dict[str, Any]]) -> Any:
        """Submit the modal the bot opened for this user, with Slack's view.state.values shape."""
        view = self.slack.open_view(slack_user)
        return await self.slack.submit(
            request_url=self.request_url, user_id=slack_user, view_id=view["id"], values=values
        )

    async def command(self, slack_user: str, text: str) -> Any:
        return await self.slack.slash(request_url=self.request_url, user_id=slack_user, text=text)

    async def click(self, slack_user: str, message: dict[str, Any], action_id: str, **kw: Any) -> Any:
        return await self.slack.click(
            request_url=self.request_url,
            user_id=slack_user,
            channel=message["channel"],
            ts=message["ts"],
            action_id=action_id,
            **kw,
        )


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 15.0, what: str = "condition"
) -> None:
    """Wait (in real time) until `check` holds; the bot works in the background."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
