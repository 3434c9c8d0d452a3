"""The Microsoft containment actions, through the real msgraph-sdk (kiota over httpx) against the emulator.

For each action: success, an idempotent repeat, throttling, a documented error, and reconcile.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from kiota_http.middleware.options.retry_handler_option import RetryHandlerOption
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from actions.base import ActionContext
from actions.microsoft import (
    BlockSignIn,
    ConfirmCompromised,
    DismissRisk,
    MicrosoftActionConfig,
    RemoveForwarding,
    RemoveRecentMfaMethods,
    RequireMfa,
    ResetPassword,
    RevokeAppConsent,
    RevokeSessions,
    microsoft_actions,
    random_password,
    run_batched,
    user_facts,
)
from actions.preflight import UserFacts
from sandbox.graph import GraphEmulator
from sandbox.server import LoopbackServer
from tests.sandbox.test_graph_emulator import make_client

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
UID = "0a0a0a0a-0000-0000-0000-000000000001"
UPN = "ada@contoso.example"
OTHER = "0b0b0b0b-0000-0000-0000-000000000002"
GROUP = "9f000000-0000-0000-0000-0000000000aa"
EVIL_SP = "5e000000-0000-0000-0000-0000000000e1"
GOOD_SP = "5e000000-0000-0000-0000-0000000000a1"
WINDOW = ActionContext(case_id="c1", window_start=T0, service_principal_ids=(EVIL_SP,))
SINCE = T0 - timedelta(seconds=30)


@dataclass
class MS:
    emu: GraphEmulator
    graph: GraphServiceClient
    now: list[datetime]

    def writes(self) -> list[tuple[str, str]]:
        return [(w["method"], w["path"]) for w in self.emu.writes()]

    def advance(self, delta: timedelta) -> None:
        self.now[0] += delta


@pytest.fixture
async def ms() -> AsyncIterator[MS]:
    now = [T0 + timedelta(minutes=30)]
    emu = GraphEmulator(lambda: now[0])
    emu.add_user(UID, UPN, "Ada Lovelace", last_password_change=T0 - timedelta(days=90))
    emu.add_user(OTHER, "eve@contoso.example", "Eve Example")
    emu.add_group(GROUP, "CA - require MFA")
    # a short retry base delay keeps Identity Protection's header-less 429s fast (kiota backoff + 0.0 s)
    options = {RetryHandlerOption.get_key(): RetryHandlerOption(delay=0.0)}
    async with (
        LoopbackServer(emu.app, "graph") as url,
        GraphClientFactory.create_with_default_middleware(options=options) as http,
    ):
        yield MS(emu, make_client(http, f"{url}/v1.0"), now)


# --- revoke_sessions and block_sign_in --------------------------------------------------------------


async def test_revoke_sessions_still_works_with_one_argument(ms: MS) -> None:
    action = RevokeSessions(ms.graph)
    assert await action.already_done(UID, SINCE) is None  # no signInSessionsValidFromDateTime yet
    assert (await action.run(UID)).ok
    assert await action.already_done(UID, SINCE) is True


async def test_block_sign_in(ms: MS) -> None:
    action = BlockSignIn(ms.graph)
    assert await action.already_done(UID, SINCE) is False
    outcome = await action.run(UID, WINDOW)
    assert outcome.ok and outcome.summary == "Sign-in blocked (accountEnabled=false)"
    assert ms.emu.user(UID)["accountEnabled"] is False
    assert ms.emu.requests[-1].json == {"@odata.type": "#microsoft.graph.user", "accountEnabled": False}
    assert await action.already_done(UID, SINCE) is True
    again = await action.run(UID, WINDOW)  # setting false again is harmless; the ledger avoids it anyway
    assert again.ok and ms.writes() == [("PATCH", f"/v1.0/users/{UID}")] * 2


async def test_block_sign_in_waits_out_429_with_retry_after(ms: MS) -> None:
    ms.emu.faults.inject(rf"^PATCH /v1\.0/users/{UID}$", 429, retry_after=1)
    outcome = await BlockSignIn(ms.graph).run(UID)
    attempts = [r for r in ms.emu.requests if r.method == "PATCH"]
    assert outcome.ok and [r.status for r in attempts] == [429, 204]
    assert attempts[1].at - attempts[0].at >= 0.9
    assert ms.writes() == [("PATCH", f"/v1.0/users/{UID}")]


@pytest.mark.parametrize(
    ("action", "path"),
    [
        ("block", rf"^PATCH /v1\.0/users/{UID}$"),
        ("reset", rf"^PATCH /v1\.0/users/{UID}$"),
        ("revoke", "revokeSignInSessions"),
        ("mfa", r"members/\$ref"),
        ("methods", r"^DELETE .*/microsoftAuthenticatorMethods/"),
        ("consent", r"^DELETE /v1\.0/oauth2PermissionGrants/"),
        ("forwarding", r"^DELETE .*/messageRules/"),
        ("confirm", "confirmCompromised"),
        ("dismiss", r"riskyUsers/dismiss"),
    ],
)
async def test_403_is_an_outcome_with_the_code_never_an_exception(ms: MS, action: str, path: str) -> None:
    seed_methods(ms.emu)
    seed_rules(ms.emu)
    ms.emu.add_grant("g-1", EVIL_SP, principal_id=UID)
    ms.emu.faults.inject(path, 403, times=5)
    actions = {
        "block": BlockSignIn(ms.graph),
        "reset": ResetPassword(ms.graph),
        "revoke": RevokeSessions(ms.graph),
        "mfa": RequireMfa(ms.graph, GROUP),
        "methods": RemoveRecentMfaMethods(ms.graph),
        "consent": RevokeAppConsent(ms.graph),
        "forwarding": RemoveForwarding(ms.graph),
        "confirm": ConfirmCompromised(ms.graph),
        "dismiss": DismissRisk(ms.graph),
    }
    outcome = await actions[action].run(UID, WINDOW)
    assert not outcome.ok
    assert outcome.detail.get("code") == "Authorization_RequestDenied" or (
        outcome.detail.get("group_error", {}).get("code") == "Authorization_RequestDenied"
    )
    assert "Authorization_RequestDenied" in outcome.summary and "403" in outcome.summary
    assert not [w for w in ms.writes() if re.search(path, f"{w[0]} {w[1]}")]  # other deletes may go through


# --- reset_password -----------------------------------------------------------------------------------


def test_random_password_is_long_complex_and_fresh() -> None:
    seen = {random_password() for _ in range(200)}
    assert len(seen) == 200
    for pw in seen:
        assert len(pw) == 24
        assert any(c.islower() for c in pw) and any(c.isupper() for c in pw)
        assert any(c.isdigit() for c in pw) and any(not c.isalnum() for c in pw)
    with pytest.raises(ValueError):
        random_password(12)


async def test_reset_password_never_leaves_the_password_anywhere(ms: MS, caplog: pytest.LogCaptureFixture) -> None:
    action = ResetPassword(ms.graph)
    assert await action.already_done(UID, SINCE) is False
    outcome = await action.run(UID, WINDOW)
    assert outcome.ok and "password" not in str(outcome.detail).lower().replace("force_change_password", "")
    patch = ms.emu.requests[-1]
    assert patch.json == {
        "@odata.type": "#microsoft.graph.user",
        "passwordProfile": {
            "forceChangePasswordNextSignIn": True,
            "password": "<redacted>",  # the emulator checked it, then forgot it
        },
    }
    assert ms.emu.password_profile(UID) == {
        "password": "password set at 2026-03-02T09:30:00Z",
        "forceChangePasswordNextSignIn": True,
        "forceChangePasswordNextSignInWithMfa": False,
    }
    assert ms.emu.user(UID)["lastPasswordChangeDateTime"] == "2026-03-02T09:30:00Z"
    assert await action.already_done(UID, SINCE) is True
    assert await action.already_done(UID, T0 + timedelta(hours=1)) is False
    assert "<redacted>" not in caplog.text and "passwordProfile" not in caplog.text


async def test_reset_password_when_the_app_lacks_the_admin_role(ms: MS) -> None:
    ms.emu.faults.inject(r"^PATCH ", 403, error="Authorization_RequestDenied")
    outcome = await ResetPassword(ms.graph).run(UID)
    assert not outcome.ok and outcome.detail["code"] == "Authorization_RequestDenied"
    assert ms.emu.password_profile(UID) is None


# --- require_mfa --------------------------------------------------------------------------------------


async def test_require_mfa_group_is_idempotent(ms: MS) -> None:
    action = RequireMfa(ms.graph, GROUP)
    assert await action.already_done(UID, SINCE) is False
    first = await action.run(UID, WINDOW)
    assert first.ok and first.summary == "MFA required: added to the require-MFA group"
    assert ms.emu.requests[-1].json == {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{UID}"}
    second = await action.run(UID, WINDOW)  # 400 "already exist", confirmed by a membership read
    assert second.ok and second.summary == "MFA required: already in the require-MFA group"
    assert ms.emu.group_members(GROUP) == [UID]
    assert ms.writes() == [("POST", f"/v1.0/groups/{GROUP}/members/$ref")]
    assert await action.already_done(UID, SINCE) is True
    assert await action.already_done(OTHER, SINCE) is False
    member_read = [r for r in ms.emu.requests if r.method == "GET" and r.path.endswith("/members")][-1]
    assert member_read.params["$filter"] == f"id eq '{OTHER}'" and member_read.headers["consistencylevel"] == "eventual"


async def test_require_mfa_400_that_is_not_membership_fails(ms: MS) -> None:
    ms.emu.faults.inject(r"members/\$ref", 400, error="Request_BadRequest")
    outcome = await RequireMfa(ms.graph, GROUP).run(UID)
    assert not outcome.ok and "Request_BadRequest (400)" in outcome.summary


async def test_require_mfa_per_user_goes_to_beta(ms: MS) -> None:
    action = RequireMfa(ms.graph, None, per_user=True)
    assert action.permission == "Policy.ReadWrite.AuthenticationMethod"
    assert await action.already_done(UID, SINCE) is False
    assert (await action.run(UID)).ok
    assert ms.writes() == [("PATCH", f"/beta/users/{UID}/authentication/requirements")]
    assert ms.emu.per_user_mfa_state(UID) == "enforced"
    assert await action.already_done(UID, SINCE) is True
    ms.emu.per_user_mfa_available = False  # a tenant on Conditional Access only
    outcome = await action.run(UID)
    assert not outcome.ok and "not available in this tenant" in outcome.summary


async def test_require_mfa_only_offered_when_configured(ms: MS) -> None:
    names = [a.name for a in microsoft_actions(ms.graph)]
    assert "require_mfa" not in names and names[0] == "revoke_sessions"
    configured = microsoft_actions(ms.graph, MicrosoftActionConfig(require_mfa_group_id=GROUP))
    assert "require_mfa" in [a.name for a in configured]
    assert {a.name for a in configured if a.destructive} == {
        "block_sign_in",
        "reset_password",
        "remove_recent_mfa_methods",
        "revoke_app_consent",
        "remove_forwarding",
    }
    assert not (await RequireMfa(ms.graph).run(UID)).ok


# --- remove_recent_mfa_methods ------------------------------------------------------------------------


def seed_methods(emu: GraphEmulator) -> None:
    emu.add_auth_method(UID, "microsoftAuthenticator", "ma-old", T0 - timedelta(days=40), displayName="Ada's phone")
    emu.add_auth_method(UID, "microsoftAuthenticator", "ma-new", T0 + timedelta(minutes=5), displayName="iPhone 15")
    emu.add_auth_method(UID, "fido2", "fido-new", T0 + timedelta(minutes=9))
    emu.add_auth_method(UID, "phone", "3179e48a-750b-4051-897c-87b9720928f7", None, phoneNumber="+1 5555550100")


async def test_remove_recent_mfa_methods(ms: MS) -> None:
    seed_methods(ms.emu)
    action = RemoveRecentMfaMethods(ms.graph)
    assert await action.already_done(UID, SINCE, WINDOW) is False
    outcome = await action.run(UID, WINDOW)
    assert outcome.ok, outcome.summary
    assert outcome.detail["removed"] == ["microsoftAuthenticator ma-new", "fido2 fido-new"]
    assert outcome.detail["not_dated"] == ["phone 3179e48a-750b-4051-897c-87b9720928f7"]
    assert "1 method(s) have no registration time" in outcome.summary
    assert ms.emu.auth_method_ids(UID) == ["ma-old", "3179e48a-750b-4051-897c-87b9720928f7"]
    assert sorted(ms.writes()) == [
        ("DELETE", f"/v1.0/users/{UID}/authentication/fido2Methods/fido-new"),
        ("DELETE", f"/v1.0/users/{UID}/authentication/microsoftAuthenticatorMethods/ma-new"),
    ]
    assert ms.emu.calls("POST", r"/v1\.0/\$batch") == 1
    assert await action.already_done(UID, SINCE, WINDOW) is True
    again = await action.run(UID, WINDOW)
    assert again.ok and again.detail["removed"] == [] and len(ms.writes()) == 2
    assert await action.already_done(UID, SINCE) is None  # no window: cannot tell
    assert not (await action.run(UID)).ok


async def test_the_last_strong_method_is_kept_for_the_soc(ms: MS) -> None:
    ms.emu.add_auth_method(UID, "microsoftAuthenticator", "only", T0 + timedelta(minutes=5))
    ms.emu.add_auth_method(UID, "email", "em-new", T0 + timedelta(minutes=6), emailAddress="x@evil.example")
    outcome = await RemoveRecentMfaMethods(ms.graph).run(UID, WINDOW)
    assert not outcome.ok and outcome.detail["kept_last_strong"] == "microsoftAuthenticator only"
    assert "only strong method" in outcome.summary
    assert ms.writes() == [("DELETE", f"/v1.0/users/{UID}/authentication/emailMethods/em-new")]


async def test_throttled_inner_delete_is_resent_alone(ms: MS) -> None:
    seed_methods(ms.emu)
    ms.emu.faults.inject(r"^DELETE .*/fido2Methods/", 429, retry_after=1)
    started = time.monotonic()
    outcome = await RemoveRecentMfaMethods(ms.graph).run(UID, WINDOW)
    assert outcome.ok and time.monotonic() - started >= 0.9
    assert ms.emu.calls("POST", r"/v1\.0/\$batch") == 2
    assert ms.emu.calls("DELETE", r".*/fido2Methods/fido-new") == 2  # refused once, then done
    assert ms.emu.calls("DELETE", r".*/microsoftAuthenticatorMethods/ma-new") == 1  # not re-sent
    assert len(ms.writes()) == 2


# --- revoke_app_consent -------------------------------------------------------------------------------


async def test_revoke_app_consent_only_this_users_grants(ms: MS) -> None:
    ms.emu.add_service_principal(EVIL_SP, "app-evil", "Mail Helper Pro")
    ms.emu.add_grant("g-ada", EVIL_SP, principal_id=UID, scope="Mail.Read Mail.Send offline_access")
    ms.emu.add_grant("g-all", EVIL_SP)  # tenant-wide admin consent: never touched here
    ms.emu.add_grant("g-eve", EVIL_SP, principal_id=OTHER)
    ms.emu.add_grant("g-good", GOOD_SP, principal_id=UID)
    action = RevokeAppConsent(ms.graph)
    assert await action.already_done(UID, SINCE, WINDOW) is False
    outcome = await action.run(UID, WINDOW)
    assert outcome.ok and outcome.detail["removed"] == 1
    assert outcome.detail["scopes"] == ["Mail.Read", "Mail.Send", "offline_access"]
    assert outcome.detail["tenant_wide_grants"] == ["g-all"] and "tenant-wide" in outcome.summary
    assert sorted(ms.emu.grant_ids()) == ["g-all", "g-eve", "g-good"]
    assert ms.writes() == [("DELETE", "/v1.0/oauth2PermissionGrants/g-ada")]
    assert await action.already_done(UID, SINCE, WINDOW) is True
    again = await action.run(UID, WINDOW)
    assert again.ok and again.detail["removed"] == 0 and len(ms.writes()) == 1
    assert ms.emu.service_principal(EVIL_SP)["accountEnabled"] is True


async def test_revoke_app_consent_already_deleted_grant_is_success(ms: MS) -> None:
    ms.emu.add_grant("g-ada", EVIL_SP, principal_id=UID)
    ms.emu.faults.inject(r"^DELETE /v1\.0/oauth2PermissionGrants/g-ada$", 404, error="Request_ResourceNotFound")
    outcome = await RevokeAppConsent(ms.graph).run(UID, WINDOW)
    assert outcome.ok and outcome.detail["removed"] == 1


async def test_revoke_app_consent_can_disable_the_app(ms: MS) -> None:
    ms.emu.add_service_principal(EVIL_SP, "app-evil", "Mail Helper Pro")
    ms.emu.add_grant("g-ada", EVIL_SP, principal_id=UID)
    action = RevokeAppConsent(ms.graph, disable_service_principal=True)
    assert action.permission == "DelegatedPermissionGrant.ReadWrite.All + Application.ReadWrite.All"
    outcome = await action.run(UID, WINDOW)
    assert outcome.ok and "disabled for the whole tenant" in outcome.summary
    assert ms.emu.service_principal(EVIL_SP)["accountEnabled"] is False
    assert sorted(ms.writes()) == [
        ("DELETE", "/v1.0/oauth2PermissionGrants/g-ada"),
        ("PATCH", f"/v1.0/servicePrincipals/{EVIL_SP}"),
    ]
    assert await action.already_done(UID, SINCE, WINDOW) is True
    assert not (await action.run(UID)).ok  # which app? the context must say


# --- remove_forwarding --------------------------------------------------------------------------------


def seed_rules(emu: GraphEmulator) -> dict[str, str]:
    def to(addr: str) -> list[dict[str, object]]:
        return [{"emailAddress": {"name": addr, "address": addr}}]

    return {
        "out": emu.add_message_rule(UID, "Invoices", actions={"forwardTo": to("drop@evil.example")}),
        "internal": emu.add_message_rule(UID, "To Bob", actions={"redirectTo": to("bob@contoso.example")}),
        "hide": emu.add_message_rule(UID, "..", actions={"moveToFolder": "RSS Feeds", "markAsRead": True}),
        "benign": emu.add_message_rule(UID, "Newsletters", actions={"moveToFolder": "Archive"}),
    }


async def test_remove_forwarding(ms: MS) -> None:
    ids = seed_rules(ms.emu)
    context = ActionContext(rule_names=("..",))
    action = RemoveForwarding(ms.graph)
    assert await action.already_done(UID, SINCE, context) is False
    outcome = await action.run(UID, context)
    assert outcome.ok
    assert outcome.detail["removed"] == [
        "'Invoices' (forwards outside to drop@evil.example)",
        "'..' (flagged by the detection)",
    ]
    assert "ForwardingSmtpAddress" in outcome.summary  # what Graph cannot see is said, not hidden
    assert ms.emu.rule_ids(UID) == [ids["internal"], ids["benign"]]
    assert await action.already_done(UID, SINCE, context) is True
    again = await action.run(UID, context)
    assert again.ok and again.detail["removed"] == [] and len(ms.writes()) == 2


async def test_remove_forwarding_internal_domains_from_config(ms: MS) -> None:
    ids = seed_rules(ms.emu)
    outcome = await RemoveForwarding(ms.graph, internal_domains=("fabrikam.example",)).run(UID)
    assert outcome.ok and len(outcome.detail["removed"]) == 2  # contoso is "outside" now
    assert ms.emu.rule_ids(UID) == [ids["hide"], ids["benign"]]


# --- confirm_compromised and dismiss_risk -------------------------------------------------------------


async def test_confirm_compromised(ms: MS) -> None:
    ms.emu.set_budget("identity_protection", None)  # the throttle has its own test below
    ms.emu.set_user_risk(UID, "atRisk", "medium")
    action = ConfirmCompromised(ms.graph)
    assert await action.already_done(UID, SINCE) is False
    assert await action.already_done(OTHER, SINCE) is False  # never risky: 404
    assert (await action.run(UID, WINDOW)).ok
    assert (ms.emu.risky_user(UID) or {})["riskState"] == "confirmedCompromised"
    assert await action.already_done(UID, SINCE) is True
    again = await action.run(UID, WINDOW)  # Graph takes a second confirmation as a no-op
    assert again.ok and ms.writes() == [("POST", "/v1.0/identityProtection/riskyUsers/confirmCompromised")] * 2


async def test_identity_protection_429_without_retry_after_is_backed_off_by_kiota(ms: MS) -> None:
    ms.emu.set_user_risk(UID, "atRisk", "medium")
    action = ConfirmCompromised(ms.graph)
    assert (await action.run(UID, WINDOW)).ok
    assert await action.already_done(UID, SINCE) is True  # the read comes within the same second
    read = [r for r in ms.emu.requests if r.method == "GET" and "riskyUsers" in r.path]
    assert read[0].status == 429 and read[-1].status == 200
    assert read[1].at - read[0].at >= 0.25  # kiota's own backoff (0.5 * 2**-1 + jitter + base delay)
    assert len(ms.writes()) == 1


async def test_dismiss_risk(ms: MS) -> None:
    ms.emu.set_budget("identity_protection", None)
    ms.emu.set_user_risk(UID, "atRisk", "high")
    action = DismissRisk(ms.graph)
    assert await action.already_done(UPN, SINCE) is False
    outcome = await action.run(UPN)  # a UPN target is resolved to the object id riskyUsers needs
    assert outcome.ok and (ms.emu.risky_user(UID) or {})["riskState"] == "dismissed"
    assert ms.emu.requests[-1].json == {"userIds": [UID]}
    assert await action.already_done(UID, SINCE) is True


# --- $batch across actions, user facts ----------------------------------------------------------------


async def test_run_batched_sends_each_write_once_in_one_batch(ms: MS) -> None:
    plan = [RevokeSessions(ms.graph), BlockSignIn(ms.graph), ResetPassword(ms.graph), RequireMfa(ms.graph, GROUP)]
    outcomes = await run_batched(ms.graph, UID, plan, WINDOW)
    assert {k: v.ok for k, v in outcomes.items()} == {
        "revoke_sessions": True,
        "block_sign_in": True,
        "reset_password": True,
        "require_mfa": True,
    }
    assert ms.emu.calls("POST", r"/v1\.0/\$batch") == 1
    assert sorted(ms.writes()) == [
        ("PATCH", f"/v1.0/users/{UID}"),
        ("PATCH", f"/v1.0/users/{UID}"),
        ("POST", f"/v1.0/groups/{GROUP}/members/$ref"),
        ("POST", f"/v1.0/users/{UID}/revokeSignInSessions"),
    ]
    assert ms.emu.user(UID)["accountEnabled"] is False and ms.emu.password_profile(UID)
    assert b"<redacted>" in ms.emu.requests[0].body  # the batch body in the log holds no password
    again = await run_batched(ms.graph, UID, plan[3:], WINDOW)  # already a member: 400 inside the batch
    assert again["require_mfa"].ok and again["require_mfa"].summary.endswith("already in the require-MFA group")


async def test_run_batched_reports_per_item_failures(ms: MS) -> None:
    ms.emu.faults.inject(r"^PATCH /v1\.0/users/", 403, times=1)
    outcomes = await run_batched(ms.graph, UID, [BlockSignIn(ms.graph), RevokeSessions(ms.graph)])
    assert outcomes["revoke_sessions"].ok
    assert (
        not outcomes["block_sign_in"].ok and outcomes["block_sign_in"].detail["code"] == "Authorization_RequestDenied"
    )


async def test_user_facts(ms: MS) -> None:
    ms.emu.add_user("g1", "guest_x#EXT#@contoso.example", "Guest", user_type="Guest", on_premises_sync_enabled=None)
    ms.emu.add_user("s1", "sync@contoso.example", "Synced", on_premises_sync_enabled=True, account_enabled=False)
    assert await user_facts(ms.graph, "g1") == UserFacts("g1", "guest_x#EXT#@contoso.example", "Guest", None, True)
    assert await user_facts(ms.graph, "s1") == UserFacts("s1", "sync@contoso.example", "Member", True, False)
    select = ms.emu.requests[-1].params["$select"]
    assert select == "id,userPrincipalName,userType,onPremisesSyncEnabled,accountEnabled"
