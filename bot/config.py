"""Settings: read once from MAILWARDEN_* environment variables and an optional TOML file.

The only module that reads the environment. Every problem is reported at once, secrets are
SecretStr so they never reach a log line or `config show` in clear.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from bot.errors import ConfigError

ENV_PREFIX = "MAILWARDEN_"


SourceName = Literal["signins", "signins_noninteractive", "risk", "o365_audit"]
AuthKind = Literal["secret", "certificate", "workload_identity"]
# Filtered non-interactive sign-ins (any of): failures, legacy-protocol clients, risky sign-ins.
NonInteractiveFilter = Literal["failures", "legacy", "risky"]
DecisionName = Literal["record", "ask_user", "soc", "page", "auto_contain"]
O365ContentType = Literal["Audit.Exchange", "Audit.AzureActiveDirectory", "Audit.General", "Audit.SharePoint"]


def _default_sources() -> list[SourceName]:
    return ["signins"]


def _default_content_types() -> list[O365ContentType]:
    return ["Audit.Exchange", "Audit.AzureActiveDirectory"]


class TenantSettings(BaseModel):
    """One Microsoft 365 tenant: its own credentials, sources, containment settings and SOC channel."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    client_id: str
    auth: AuthKind = "secret"
    client_secret: SecretStr | None = None
    certificate_path: str | None = None
    soc_channel: str | None = None  # default: the global soc_channel
    graph_url: str | None = None  # default: the global graph_url
    manage_url: str | None = None  # default: the global manage_url
    sources: list[SourceName] = Field(default_factory=_default_sources)
    require_mfa_group_id: str | None = None  # the Conditional Access "require MFA" group
    per_user_mfa: bool = False  # beta per-user MFA state instead of (or as well as) the group
    disable_service_principal: bool = False  # revoke_app_consent also disables the app in this tenant
    internal_domains: list[str] = Field(default_factory=list)  # forwarding elsewhere is "outside"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str = "sqlite+aiosqlite:///mailwarden.db"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    dry_run: bool = False

    # Slack
    slack_mode: Literal["socket", "http"] = "socket"
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    soc_channel: str | None = None
    soc_usergroup: str | None = None
    http_host: str = "0.0.0.0"  # noqa: S104 - HTTP mode sits behind the operator's load balancer
    http_port: int = Field(default=3000, ge=1, le=65535)
    slack_pace_scale: float = Field(default=1.0, gt=0)  # benchmarks only: compresses Slack pacing in time

    # Microsoft Entra ID / Graph
    ms_tenant_id: str | None = None
    ms_client_id: str | None = None
    ms_auth: Literal["secret", "certificate", "workload_identity"] = "secret"
    ms_client_secret: SecretStr | None = None
    ms_certificate_path: str | None = None
    graph_url: str = "https://graph.microsoft.com"
    manage_url: str = "https://manage.office.com"
    ms_sources: list[SourceName] = Field(default_factory=_default_sources)
    ms_require_mfa_group_id: str | None = None
    ms_per_user_mfa: bool = False
    ms_disable_service_principal: bool = False
    ms_internal_domains: list[str] = Field(default_factory=list)
    # Beta non-interactive sign-ins (source "signins_noninteractive"). Empty filter: every record, which
    # exceeds the reports budget in large tenants (README "Non-interactive sign-ins"); otherwise only
    # records matching any of the listed kinds are read.
    noninteractive_filter: list[NonInteractiveFilter] = Field(default_factory=list)
    noninteractive_service_principals: bool = False  # also servicePrincipal sign-ins
    # Identity Protection (source "risk"): riskDetections always; riskyUsers too unless switched off
    # (its risk level needs Entra ID P2; without it the level reads "hidden" and nothing is raised).
    risk_risky_users: bool = True
    risk_delay_s: int = Field(default=300, ge=0)
    risk_overlap_s: int = Field(default=300, ge=0)
    # Office 365 Management Activity API (source "o365_audit"). The window is on contentCreated (when a
    # blob became available), so the delay only covers listing propagation, not the 30 min-24 h lag.
    o365_publisher_id: str | None = None  # the vendor's tenant GUID: a dedicated throttling quota
    o365_content_types: list[O365ContentType] = Field(default_factory=_default_content_types)
    o365_delay_s: int = Field(default=300, ge=0)
    o365_overlap_s: int = Field(default=900, ge=0)
    # `mailwarden run` probes each enabled source first and switches off those it cannot read.
    startup_checks: bool = True
    # Several tenants: [[mailwarden.tenants]] tables in TOML; when given, the ms_* keys above are unused.
    tenants: list[TenantSettings] = Field(default_factory=list)

    # Polling (reference/performance.md "Lag vs budget": delayed watermark + small overlap)
    poll_interval_s: int = Field(default=60, ge=5)
    signin_delay_s: int = Field(default=300, ge=0)
    signin_overlap_s: int = Field(default=60, ge=0)
    initial_lookback_s: int = Field(default=900, ge=0)
    # Which provider records keep their full JSON in raw_events.payload. Every record keeps a row (its
    # id, time, user and status: what de-duplicates the poll overlap). "evidence" keeps the JSON of
    # rejected records and of records that became evidence of a case; "all" keeps every one, at
    # ~2.5 KB per sign-in (a 10,000-user tenant signs in about 1.5 M times a day: ~3.7 GB a day).
    keep_raw: Literal["evidence", "all"] = "evidence"
    # Rows without JSON only de-duplicate re-reads; after this many days none can reach them (the
    # Management Activity API lists at most 7 days back) and they are deleted (bot/store/retention.py).
    raw_retention_days: int = Field(default=14, ge=8)
    prune_interval_s: float = Field(default=3600.0, gt=0)
    # /healthz and /metrics verify only the audit entries appended since their last check; the whole
    # chain, whose cost grows with the log (~2 s per 100,000 entries), is verified this often.
    audit_verify_interval_s: float = Field(default=3600.0, gt=0)
    # Baselines kept in memory between polls on SQLite (one replica): about 3 KB each.
    profile_cache_users: int = Field(default=20_000, ge=0)

    # Case life and the escalation ladder: user reminder -> user timeout -> SOC card -> SOC reminder
    # -> SOC timeout -> page. Per-severity overrides in TOML, e.g. [mailwarden.ladder.critical] soc_timeout_s = 300
    user_answer_timeout_s: int = Field(default=900, ge=10)
    user_reminder_s: int | None = Field(default=600, ge=10)
    soc_timeout_s: int = Field(default=1800, ge=10)
    soc_reminder_s: int | None = Field(default=900, ge=10)
    ladder: dict[Literal["low", "medium", "high", "critical"], dict[str, int]] = Field(default_factory=dict)
    incident_window_s: int = Field(default=86_400, ge=60)
    sweep_interval_s: float = Field(default=5.0, gt=0)
    dispatch_interval_s: float = Field(default=2.0, gt=0)

    # Detection thresholds (sources cited in bot/detect)
    failed_then_success_min_failures: int = Field(default=5, ge=1)
    failed_then_success_window_s: int = Field(default=1200, ge=60)
    new_country_warmup_days: int = Field(default=7, ge=0)
    # Which detectors run: empty runs every one (bot.detect.detector_ids()); a list restricts to those.
    detectors: list[str] = Field(default_factory=list)
    # No "new country / network / device / legacy client" finding before a user has this much history.
    baseline_warmup_days: int = Field(default=7, ge=0)
    # The organisation's own mail domains: forwarding to them is internal (subdomains included).
    own_domains: list[str] = Field(default_factory=list)
    # OAuth apps the organisation approved for mail (Google OAuth client ids, e.g. the Google Admin
    # console's "Trusted" apps; Entra service-principal object ids): a user's consent to one is recorded
    # as low, not asked about. Consents to any other app are asked about as before.
    trusted_mail_apps: list[str] = Field(default_factory=list)
    # The organisation's own egress networks (IP addresses or CIDRs: offices' NAT, the corporate VPN,
    # VDI, a secure web gateway): sign-ins from them are not read for the person's whereabouts
    # (new country or network, impossible travel) nor as a hosting network.
    own_networks: list[str] = Field(default_factory=list)
    # The operator's threat intelligence, read at start-up: text files with one IP or CIDR per line
    # (`#` starts a comment). A missing or unreadable file, or a bad line, is a configuration error.
    threat_intel_files: list[str] = Field(default_factory=list)
    tor_exit_files: list[str] = Field(default_factory=list)
    # After a contained incident: stricter thresholds for the user for this long, and no new case
    # for this long from the user's usual places and devices with the same detectors (no
    # revoke -> sign in again -> alert loop).
    watchlist_days: int = Field(default=30, ge=0)
    containment_quiet_hours: int = Field(default=24, ge=0)
    # Decision policy overrides (bot/detect/policy.py): severity -> decision, detector -> decision.
    policy_severity: dict[Literal["low", "medium", "high", "critical"], DecisionName] = Field(default_factory=dict)
    policy_detectors: dict[str, DecisionName] = Field(default_factory=dict)

    # Paging (PagerDuty Events API v2) and who to tell
    pagerduty_routing_key: SecretStr | None = None
    pagerduty_url: str = "https://events.pagerduty.com"
    oncall_usergroup: str | None = None  # mentioned in the SOC channel when on-call is paged
    password_recovery_url: str | None = None  # told to the employee after containment
    helpdesk_contact: str = "the IT helpdesk"

    # Off-hours routing: at night (employee's own time zone) a high or critical case goes straight to the
    # SOC instead of waking the employee, whose "Yes" could not close it anyway.
    offhours_direct_to_soc: bool = False
    business_hours_start: int = Field(default=7, ge=0, le=23)
    business_hours_end: int = Field(default=20, ge=1, le=24)

    # Accounts never contained by one person alone (break-glass, VIPs): UPNs, lower case
    protected_users: list[str] = Field(default_factory=list)

    # Containment: tolerated clock skew when reconciling an action whose outcome is unknown
    reconcile_skew_s: int = Field(default=30, ge=0)

    def effective_tenants(self) -> list[TenantSettings]:
        """The configured tenants, or the single tenant described by the MAILWARDEN_MS_* keys."""
        if self.tenants:
            return list(self.tenants)
        if not self.ms_tenant_id or not self.ms_client_id:
            return []
        return [
            TenantSettings(
                id=self.ms_tenant_id,
                client_id=self.ms_client_id,
                auth=self.ms_auth,
                client_secret=self.ms_client_secret,
                certificate_path=self.ms_certificate_path,
                sources=list(self.ms_sources),
                require_mfa_group_id=self.ms_require_mfa_group_id,
                per_user_mfa=self.ms_per_user_mfa,
                disable_service_principal=self.ms_disable_service_principal,
                internal_domains=list(self.ms_internal_domains),
            )
        ]

    def soc_channel_for(self, tenant: str) -> str:
        for t in self.tenants:
            if t.id == tenant and t.soc_channel:
                return t.soc_channel
        return self.soc_channel or ""

    @field_validator("protected_users", "ms_internal_domains", "ms_sources", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        # environment variables carry lists as "a@x.com,b@x.com"
        if isinstance(value, str):
            return [v.strip().lower() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [str(v).strip().lower() for v in value]
        return value

    @field_validator("detectors", "own_domains", "trusted_mail_apps", mode="before")
    @classmethod
    def _comma_list_lower(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip().lower() for v in value.split(",") if v.strip()]
        return value

    @field_validator(
        "noninteractive_filter",
        "o365_content_types",
        "threat_intel_files",
        "tor_exit_files",
        "own_networks",
        mode="before",
    )
    @classmethod
    def _comma_list_as_is(cls, value: Any) -> Any:
        # "failures,legacy" from the environment; values keep their case (content types are case-sensitive)
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value


def load_settings(env: Mapping[str, str] | None = None, toml_path: str | Path | None = None) -> Settings:
    """Merge the TOML file (if any) and MAILWARDEN_* variables; the environment wins."""
    env = os.environ if env is None else env
    path = toml_path or env.get(ENV_PREFIX + "CONFIG")
    data: dict[str, Any] = {}
    problems: list[str] = []
    if path:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
            data.update(raw.get("mailwarden", raw))
        except OSError as exc:
            problems.append(f"config file {path}: {exc.strerror}")
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"config file {path}: {exc}")
    for key, value in env.items():
        if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG":
            data[key[len(ENV_PREFIX) :].lower()] = value
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(root)"
            name = ENV_PREFIX + field.upper()
            if err["type"] == "extra_forbidden":
                problems.append(f"{name}: unknown setting")
            else:
                # never echo the input: it may be a secret typed into the wrong key
                problems.append(f"{name}: {err['msg']}")
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return settings


def missing_for_run(s: Settings) -> list[str]:
    """Every credential or target `mailwarden run` needs and does not have, named by its variable."""
    need: list[str] = []

    def want(field: str, why: str = "") -> None:
        if getattr(s, field) in (None, ""):
            need.append(f"{ENV_PREFIX}{field.upper()}: missing{why}")

    want("slack_bot_token")
    want("soc_channel")
    want("soc_usergroup")
    if s.slack_mode == "http":
        want("slack_signing_secret", " (required in HTTP mode)")
    else:
        want("slack_app_token", " (required in Socket Mode; an xapp- token with connections:write)")
    if s.tenants:
        for t in s.tenants:
            if t.auth == "secret" and t.client_secret is None:
                need.append(f"tenants[{t.id}].client_secret: missing (auth = secret)")
            if t.auth == "certificate" and not t.certificate_path:
                need.append(f"tenants[{t.id}].certificate_path: missing (auth = certificate)")
        return need
    want("ms_tenant_id")
    want("ms_client_id")
    if s.ms_auth == "secret":
        want("ms_client_secret", " (MAILWARDEN_MS_AUTH=secret)")
    elif s.ms_auth == "certificate":
        want("ms_certificate_path", " (MAILWARDEN_MS_AUTH=certificate)")
    return need


def redacted(s: Settings) -> dict[str, Any]:
    """The effective configuration as JSON; pydantic prints every SecretStr, nested ones too, as stars."""
    return s.model_dump(mode="json")
