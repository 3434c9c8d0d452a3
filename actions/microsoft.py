"""Microsoft Entra ID containment through msgraph-sdk.

Retries: kiota's RetryHandler already retries 429/503/504 honouring Retry-After (including POST,
PATCH and DELETE); nothing here wraps it again (reference/api-contracts.md §1.8). The one exception
is *inside* a `$batch`: the outer POST succeeds with 200 while an inner request can come back 429,
which kiota never sees; `send_batch` re-sends only those inner requests (at most 3 more rounds).

`$batch` (§1.5) is built here as plain JSON and sent through the SDK's own request adapter (same
auth, same retry middleware). msgraph-core's BatchRequestContent is not used: its items keep
absolute URLs, which Graph refuses with 400 (msgraph-sdk-python#1015, msgraph-sdk-python-core#1116),
it serialises `dependsOn` as `depends_on`, and POST/PATCH items fail (msgraph-sdk-python#1120).

Errors: every documented Graph error (4xx/5xx, ODataError or a non-JSON APIError) becomes
ActionOutcome(ok=False) with its code and status. Transport errors (connection reset, timeout)
propagate: the outcome is unknown, the ledger row stays `started`, and the next attempt reconciles
with `already_done` first.

Beta: per-user MFA (`/beta/users/{id}/authentication/requirements`) is not in msgraph-sdk (v1.0).
It goes through the same request adapter with an explicit beta URL; no second SDK.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.groups.item.members.members_request_builder import MembersRequestBuilder
from msgraph.generated.identity_protection.risky_users.confirm_compromised import (
    confirm_compromised_post_request_body as confirm_body,
)
from msgraph.generated.identity_protection.risky_users.dismiss.dismiss_post_request_body import (
    DismissPostRequestBody,
)
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.password_profile import PasswordProfile
from msgraph.generated.models.reference_create import ReferenceCreate
from msgraph.generated.models.user import User
from msgraph.generated.oauth2_permission_grants.oauth2_permission_grants_request_builder import (
    Oauth2PermissionGrantsRequestBuilder,
)
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
from msgraph.graph_service_client import GraphServiceClient

from actions.base import Action, ActionContext, ActionOutcome
from actions.preflight import UserFacts

ERRORS: dict[str, Any] = {"XXX": ODataError}
GRAPH_V1 = "https://graph.microsoft.com/v1.0"
MAX_BATCH = 20
THROTTLED = frozenset({429, 503, 504})
# Entra accepts these symbols in passwords; kept to ones that need no escaping anywhere.
PASSWORD_SYMBOLS = "!#$%&*+-=?@^_"  # noqa: S105 (an alphabet, not a password)
UserQuery = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters
GrantQuery = Oauth2PermissionGrantsRequestBuilder.Oauth2PermissionGrantsRequestBuilderGetQueryParameters
MembersQuery = MembersRequestBuilder.MembersRequestBuilderGetQueryParameters


@dataclass(frozen=True, slots=True)
class MicrosoftActionConfig:
    # The group a Conditional Access "require MFA" policy targets; require_mfa adds the user to it.
    require_mfa_group_id: str | None = None
    # Also (or instead) set the legacy per-user MFA state to enforced (beta API).
    per_user_mfa: bool = False
    # revoke_app_consent also disables the flagged app's service principal (tenant-wide effect).
    disable_service_principal: bool = False
    # Mail domains that count as inside the organisation for remove_forwarding; empty: the user's own.
    internal_domains: tuple[str, ...] = ()
    password_length: int = 24


# --- small helpers ----------------------------------------------------------------------------------


def graph_error(exc: APIError) -> dict[str, Any]:
    err = exc.error if isinstance(exc, ODataError) else None
    return {
        "status": exc.response_status_code,
        "code": err.code if err else None,
        "message": (err.message if err else None) or str(exc),
    }


def _refused(what: str, info: dict[str, Any], **detail: Any) -> ActionOutcome:
    return ActionOutcome(False, f"Graph refused to {what}: {info['code']} ({info['status']})", {**info, **detail})


def random_password(length: int = 24) -> str:
    """A password nobody sees: every character class Entra counts, from `secrets`."""
    if length < 16:
        raise ValueError("a containment password is at least 16 characters")
    classes = [string.ascii_lowercase, string.ascii_uppercase, string.digits, PASSWORD_SYMBOLS]
    chars = [secrets.choice(c) for c in classes]
    chars += [secrets.choice("".join(classes)) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def _v1(graph: GraphServiceClient) -> str:
    return str(graph.request_adapter.base_url).rstrip("/")


def _beta(graph: GraphServiceClient) -> str:
    return re.sub(r"/v1\.0$", "/beta", _v1(graph))


def _seg(value: str) -> str:
    return quote(value, safe="@")


async def send_raw(graph: GraphServiceClient, method: Method, url: str, body: Any = None) -> Any:
    """One request through the SDK's adapter (auth, retry middleware); the parsed JSON, or None on 204."""
    info = RequestInformation()
    info.http_method = method
    info.url = url
    info.headers.try_add("Accept", "application/json")
    if body is not None:
        info.set_stream_content(json.dumps(body).encode(), "application/json")
    adapter: Any = graph.request_adapter
    raw = await adapter.send_primitive_async(info, "bytes", ERRORS)
    return json.loads(raw) if raw else None


async def _object_id(graph: GraphServiceClient, target: str) -> str:
    """Directory references and risk APIs need the object id; resolve a UPN once."""
    if "@" not in target:
        return target
    config = RequestConfiguration(query_parameters=UserQuery(select=["id"]))
    user = await graph.users.by_user_id(target).get(request_configuration=config)
    if user is None or not user.id:
        raise ValueError(f"no object id for {target}")
    return str(user.id)


async def user_facts(graph: GraphServiceClient, user_id: str) -> UserFacts:
    """What pre-flight needs to know about the user (GET /users/{id}?$select=...)."""
    select = ["id", "userPrincipalName", "userType", "onPremisesSyncEnabled", "accountEnabled"]
    config = RequestConfiguration(query_parameters=UserQuery(select=select))
    user = await graph.users.by_user_id(user_id).get(request_configuration=config)
    if user is None:
        raise ValueError(f"Graph returned no user for {user_id}")
    return UserFacts(
        id=str(user.id or user_id),
        user_principal_name=user.user_principal_name,
        user_type=user.user_type,
        on_premises_sync_enabled=user.on_premises_sync_enabled,
        account_enabled=user.account_enabled,
    )


# --- $batch -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchStep:
    method: str
    url: str  # relative to the version: "/users/{id}"
    body: Any = field(default=None, repr=False)  # may hold a password: never printed


@dataclass(frozen=True, slots=True)
class BatchReply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error(self) -> dict[str, Any]:
        err = self.body.get("error", {}) if isinstance(self.body, dict) else {}
        return {"status": self.status, "code": err.get("code"), "message": err.get("message")}


async def send_batch(
    graph: GraphServiceClient, steps: dict[str, BatchStep], *, rounds: int = 3, max_wait_s: float = 30.0
) -> dict[str, BatchReply]:
    """POST /$batch (≤ 20 per request) and match replies by id; inner 429/503/504 are re-sent."""
    if len(steps) > MAX_BATCH:
        replies: dict[str, BatchReply] = {}
        keys = list(steps)
        for i in range(0, len(keys), MAX_BATCH):
            chunk = {k: steps[k] for k in keys[i : i + MAX_BATCH]}
            replies.update(await send_batch(graph, chunk, rounds=rounds, max_wait_s=max_wait_s))
        return replies
    pending, replies = dict(steps), {}
    for attempt in range(rounds + 1):
        requests: list[dict[str, Any]] = []
        for key, step in pending.items():
            item: dict[str, Any] = {"id": key, "method": step.method, "url": step.url}
            if step.body is not None:
                item["headers"] = {"Content-Type": "application/json"}
                item["body"] = step.body
            requests.append(item)
        data = await send_raw(graph, Method.POST, f"{_v1(graph)}/$batch", {"requests": requests})
        for r in (data or {}).get("responses", []):
            headers = {str(k).lower(): str(v) for k, v in (r.get("headers") or {}).items()}
            replies[str(r.get("id"))] = BatchReply(int(r.get("status", 0)), r.get("body"), headers)
        throttled = {k: s for k, s in pending.items() if k in replies and replies[k].status in THROTTLED}
        if not throttled or attempt == rounds:
            break
        waits = [_seconds(replies[k].headers.get("retry-after")) for k in throttled]
        await asyncio.sleep(min(max_wait_s, max(waits)))
        pending = throttled
    for key in steps:
        replies.setdefault(key, BatchReply(0, {"error": {"code": "missingReply", "message": "no reply in $batch"}}))
    return replies


def _seconds(retry_after: str | None) -> float:
    try:
        return max(0.5, float(retry_after)) if retry_after else 1.0
    except ValueError:
        return 1.0


@runtime_checkable
class Batchable(Protocol):
    """An action whose writes can ride in a shared `$batch` with other actions on the same user."""

    name: str

    async def batch_steps(self, target: str, context: ActionContext | None) -> list[BatchStep] | None: ...

    async def batch_outcome(self, target: str, replies: list[BatchReply]) -> ActionOutcome: ...


async def run_batched(
    graph: GraphServiceClient, target: str, actions: Iterable[Action], context: ActionContext | None = None
) -> dict[str, ActionOutcome]:
    """Run several actions on one user: single-write actions share one `$batch`, the rest run alone.

    Inner requests run in parallel on Graph's side (no dependsOn: one failing step must not fail the
    others with 424), so only independent writes go in together.
    """
    outcomes: dict[str, ActionOutcome] = {}
    batched: list[tuple[Action, list[str]]] = []
    steps: dict[str, BatchStep] = {}
    alone: list[Action] = []
    for n, action in enumerate(actions):
        planned = await action.batch_steps(target, context) if isinstance(action, Batchable) else None
        if not planned:
            alone.append(action)
            continue
        keys = [f"{n}.{i}" for i in range(len(planned))]
        steps.update(zip(keys, planned, strict=True))
        batched.append((action, keys))
    if steps:
        try:
            replies = await send_batch(graph, steps)
        except APIError as exc:
            info = graph_error(exc)
            for action, _ in batched:
                outcomes[action.name] = _refused(f"run {action.name} ($batch)", info)
        else:
            for action, keys in batched:
                assert isinstance(action, Batchable)
                outcomes[action.name] = await action.batch_outcome(target, [replies[k] for k in keys])
    for action in alone:
        outcomes[action.name] = await action.run(target, context)
    return outcomes


# --- the actions -------------------------------------------------------------------------------------


class RevokeSessions:
    """POST /users/{id}/revokeSignInSessions: every refresh token and session cookie stops working.

    The docs show 200 {"value": true}; older revisions said 204. Both mean done. Does nothing for guests
    (their sessions live in their home tenant; see actions/preflight.py).
    https://learn.microsoft.com/graph/api/user-revokesigninsessions
    """

    name = "revoke_sessions"
    provider = "microsoft"
    permission = "User.RevokeSessions.All"
    destructive = False

    def __init__(self, graph: GraphServiceClient) -> None:
        self.graph = graph

    async def run(self, target: str, context: ActionContext | None = None) -> ActionOutcome:
        try:
            resp = await self.graph.users.by_user_id(target).revoke_sign_in_sessions.post()
        except APIError as exc:
            return _refused("revoke sessions", graph_error(exc))
        return self._outcome(resp.value if resp is not None else None)

    @staticmethod
    def _outcome(value: bool | None) -> ActionOutcome:
        if value is False:
            return ActionOutcome(False, "Graph answered value=false: sessions not revoked", {"value": False})
        return ActionOutcome(True, "All sign-in sessions revoked", {"value": True})

    async def already_done(self, target: str, since: datetime, context: ActionContext | None = None) -> bool | None:
        config = RequestConfiguration(query_parameters=UserQuery(select=["id", "signInSessionsValidFromDateTime"]))
        try:
            user = await self.graph.users.by_user_id(target).get(request_configuration=config)
        except APIError:
            return None
        valid_from = user.sign_in_sessions_valid_from_date_time if user else None
        if valid_from is None:
            return None
        return bool(valid_from >= since)

    async def batch_steps(self, target: str, context: ActionContext | None) -> list[BatchStep] | None:
        return [BatchStep("POST", f"/users/{_seg(target)}/revokeSignInSessions")]

    async def batch_outcome(self, target: str, replies: list[BatchReply]) -> ActionOutcome:
        (reply,) = replies
        if not reply.ok:
            return _refused("revoke sessions", reply.error())
        body = reply.body if isinstance(reply.body, dict) else {}
        return self._outcome(body.get("value"))


class BlockSignIn:
    """PATCH /users/{id} {"accountEnabled": false} → 204. Overwritten by the next sync for users
    synced from on-premises AD (pre-flight says so). Privileged admins need a higher app role."""

    name = "block_sign_in"
    provider = "microsoft"
    permission = "User.EnableDisableAccount.All"
    destructive = True

    def __init__(self, graph: GraphServiceClient) -> None:
        self.graph = graph

    async def run(self, target: str, context: ActionContext | None = None) -> ActionOutcome:
        try:
            await self.graph.users.by_user_id(target).patch(User(account_enabled=False))  # 204, or 200 + user
        except APIError as exc:
            return _refused("block sign-in", graph_error(exc))
        return self._done()

    @staticmethod
    def _done() -> ActionOutcome:
        return ActionOutcome(True, "Sign-in blocked (accountEnabled=false)", {"account_enabled": False})

    async def already_done(self, target: str, since: datetime, context: ActionContext | None = None) -> bool | None:
        config = RequestConfiguration(query_parameters=UserQuery(select=["id", "accountEnabled"]))
        try:
            user = await self.graph.users.by_user_id(target).get(request_configuration=config)
        except APIError:
            return None
        if user is None or user.account_enabled is None:
            return None
        return user.account_enabled is False

    async def batch_steps(self, target: str, context: ActionContext | None) -> list[BatchStep] | None:
        return [BatchStep("PATCH", f"/users/{_seg(target)}", {"accountEnabled": False})]

    async def batch_outcome(self, target: str, replies: list[BatchReply]) -> ActionOutcome:
        (reply,) = replies
        return self._done() if reply.ok else _refused("block sign-in", reply.error())


class ResetPassword:
    """PATCH /users/{id} passwordProfile: a random password nobody sees, and a forced change at the next
    sign-in, so the user recovers through SSPR or the helpdesk.

    The password is generated here, sent once and dropped: it is never returned, logged or stored,
    and the outcome only says that it was reset. Needs `User-PasswordProfile.ReadWrite.All` *and* an
    Entra role on the app that may reset the target (User Administrator; Privileged Authentication
    Administrator for admins); without the role Graph answers 403 (§1.4). The delegated-only
    `authentication/methods/{id}/resetPassword` is not usable by a daemon.
    """

    name = "reset_password"
    provider = "microsoft"
    permission = "User-PasswordProfile.ReadWrite.All"
    destructive = True

    def __init__(self, graph: GraphServiceClient, password_length: int = 24) -> None:
        self.graph = graph
        self.password_length = password_length

    async def run(self, target: str, context: ActionContext | None = None) -> ActionOutcome:
        profile = PasswordProfile(
            password=random_password(self.password_length), force_change_password_next_sign_in=True
        )
        try:
            await self.graph.users.by_user_id(target).patch(User(password_profile=profile))
        except APIError as exc:
            return _refused("reset the password", graph_error(exc))
        finally:
            profile.password = None
        return self._done()

    @staticmethod
    def _done() -> ActionOutcome:
        return ActionOutcome(
            True,
            "Password reset to a random value nobody knows; the user must change it at next sign-in",
            {"force_change_password_next_sign_in": True},
        )

    async def already_done(self, target: str, since: datetime, context: ActionContext | None = None) -> bool | None:
        config = RequestConfiguration(query_parameters=UserQuery(select=["id", "lastPasswordChangeDateTime"]))
        try:
            user = await self.graph.users.by_user_id(target).get(request_configuration=config)
        except APIError:
            return None
        changed = user.last_password_change_date_time if user else None
        if changed is None:
            return None
        return bool(changed >= since)

    async def batch_steps(self, target: str, context: ActionContext | None) -> list[BatchStep] | None:
        profile = {"password": random_password(self.password_length), "forceChangePasswordNextSignIn": True}
        return [BatchStep("PATCH", f"/users/{_seg(target)}", {"passwordProfile": profile})]

    async def batch_outcome(self, target: str, replies: list[BatchReply]) -> ActionOutcome:
        (reply,) = replies
        return self._done() if reply.ok else _refused("reset the password", reply.error())


class RequireMfa:
    """Make the next sign-in ask for MFA.

    Group mode (preferred): POST /groups/{g}/members/$ref adds the user to the group a Conditional
    Access "require MFA" policy targets → 204; 400 when already a member, which counts as done once a
    membership read confirms it (the 400's code is the generic Request_BadRequest). CA needs Entra ID P1.
    Per-user mode: PATCH beta /users/{id}/authentication/requirements {"perUserMfaState": "enforced"}
    → 204; tenants that moved fully to Conditional Access answer 404.
    """

    name = "require_mfa"
    provider = "microsoft"
    destructive = False

    def __init__(self, graph: GraphServiceClient, group_id: str | None = None, per_user: bool = False) -> None:
        self.graph = graph
        self.group_id = group_id
        self.per_user = per_user
        perms = (["GroupMember.ReadWrite.All"] if group_id else []) + (
            ["Policy.ReadWrite.AuthenticationMethod"] if per_user else []
        )
        self.permission = " + ".join(perms) or "GroupMember.ReadWrite.All"

    def _ref(self, user_id: str) -> str:
        return f"{GRAPH_V1}/directoryObjects/{user_id}"

    async def _is_member(self, user_id: str) -> bool:
        assert self.group_id
        query = MembersQuery(filter=f"id eq '{user_id}'", select=["id"], count=True)
        config = RequestConfiguration(query_parameters=query)
        config.headers.add("ConsistencyLevel", "eventual")  # $filter on members is an advanced query
        page = await self.graph.groups.by_group_id(self.group_id).members.get(request_configuration=config)
        return any(m.id == user_id for m in (page.value if page and page.value else []))

    async def _group_outcome(self, user_id: str, exc_info: dict[str, Any] | None) -> tuple[bool, str]:
        if exc_info is None:
            return True, "added to the require-MFA group"
        if exc_info["status"] == 400:
            try:
                if await self._is_member(user_id):
                    return True, "already in the require-MFA group"
            except APIError:
                pass
        return False, f"adding to the require-MFA group failed: {exc_info['code']} ({exc_info['status']})"

    async def run(self, target: str, context: ActionContext | None = None) -> ActionOutcome:
        if not self.group_id and not self.per_user:
            return ActionOutcome(False, "require_mfa is not configured (no require-MFA group, per-user MFA off)")
        try:
            user_id = await _object_id(self.graph, target)
        except APIError as exc:
            return _refused("look up the user", graph_error(exc))
        parts: list[tuple[bool, str]] = []
        detail: dict[str, Any] = {}
        if self.group_id:
            info: dict[str, Any] | None = None
            try:
                ref = ReferenceCreate(odata_id=self._ref(user_id))
                await self.graph.groups.by_group_id(self.group_id).members.ref.post(ref)
            except APIError as exc:
                info = graph_error(exc)
                detail["group_error"] = info
            parts.append(await self._group_outcome(user_id, info))
        if self.per_user:
            try:
                url = f"{_beta(self.graph)}/users/{_seg(user_id)}/authentication/requirements"
                await send_raw(self.graph, Method.PATCH, url, {"perUserMfaState": "enforced"})
                parts.append((True, "per-user MFA enforced"))
            except APIError as exc:
                info = graph_error(exc)
                detail["per_user_error"] = info
                why = "not available in this tenant" if info["status"] == 404 else f"{info['code']} ({info['status']})"
                parts.append((False, f"per-user MFA not set: {why}"))
        ok = all(p[0] for p in parts)
        summary = "MFA required: " + "; ".join(p[1] for p in parts)
        return ActionOutcome(ok, summary if ok else "MFA not fully required: " + "; ".join(p[1] for p in parts), detail)

    async def already_done(self, target: str, since: datetime, context: ActionContext | None = None) -> bool | None:
        if not self.group_id and not self.per_user:
            return None
        try:
            user_id = await _object_id(self.graph, target)
            if self.group_id and not await self._is_member(user_id):
                return False
            if self.per_user:
                url = f"{_beta(self.graph)}/users/{_seg(user_id)}/authentication/requirements"
                body = await send_raw(self.graph, Method.GET, url)
                if (body or {}).get("perUserMfaState") != "enforced":
                    return False
        except APIError:
            return None
        return True

    async def batch_steps(self, target: str, context: ActionContext | None) -> list[BatchStep] | None:
        if not self.group_id or self.per_user or "@" in target:  # beta and UPN lookups do not batch here
            return None
        return [BatchStep("POST", f"/groups/{_seg(self.group_id)}/members/$ref", {"@odata.id": self._ref(target)})]

    async def batch_outcome(self, target: str, replies: list[BatchReply]) -> ActionOutcome:
        (reply,) = replies
        ok, text = await self._group_outcome(target, None if reply.ok else reply.error())
        return ActionOutcome(ok, ("MFA required: " if ok else "MFA not required: ") + text, {})


# authentication method OData type -> the per-type collection a DELETE goes to (no generic DELETE exists)
METHOD_SEGMENTS: dict[str, str] = {
    "emailAuthenticationMethod": "emailMethods",
    "externalAuthenticationMethod": "externalAuthenticationMethods",
    "fido2AuthenticationMethod": "fido2Methods",
    "microsoftAuthenticatorAuthenticationMethod": "microsoftAuthenticatorMethods",
    "phoneAuthenticationMethod": "phoneMethods",
    "platformCredentialAuthenticationMethod": "platformCredentialMethods",
    "softwareOathAuthenticationMethod": "softwareOathMethods",
    "temporaryAccessPassAuthenticationMethod": "temporaryAccessPassMethods",
    "windowsHelloForBusinessAuthenticationMethod": "windowsHelloForBusinessMethods",
}
# Methods that satisfy MFA and outlive the incident (a Temporary Access Pass expires; email is SSPR only).
STRONG_METHODS = frozenset(
    {
        "externalAuthenticationMethod",
        "fido2AuthenticationMethod",
        "microsoftAuthenticatorAuthenticationMethod",
        "phoneAuthenticationMethod",
        "platformCredentialAuthenticationMethod",
        "softwareOathAuthenticationMethod",
        "windowsHelloForBusinessAuthenticationMethod",
    }
)


@dataclass(frozen=True, slots=True)
class _Method:
    kind: str  # OData type without "#microsoft.graph."
    id: str
    created: datetime | None


class RemoveRecentMfaMethods:
    """Delete the authentication methods registered during the incident (an attacker's persistence).

    Rules, kept simple:
    - a method is a suspect when its createdDateTime is at or after `context.window_start`;
    - a method without createdDateTime (Graph leaves it empty for phone, email and software OATH
      methods in practice) is never deleted: it is listed for the SOC to check with the user;
    - the password method is never deleted (Graph cannot);
    - the user's last strong method is never deleted: if every strong method is a suspect, the oldest
      suspect is kept and the outcome is ok=False so the SOC verifies it with the user (then deletes
      it, issuing a Temporary Access Pass to re-register).
    Deletes go to /users/{id}/authentication/{type}Methods/{id} → 204 (one `$batch`); 404 = already gone.
    """

    name = "remove_recent_mfa_methods"
    provider = "microsoft"
    permission = "UserAuthenticationMethod.ReadWrite.All"
    destructive = True

    def __init__(self, graph: GraphServiceClient) -> None:
        self.graph = graph

    async def _methods(self, target: str) -> list[_Method]:
        page = await self.graph.users.by_user_id(target).authentication.methods.get()
        found = []
        for m in page.value if page and page.value else []:
            kind = str(m.odata_type or "").removeprefix("#microsoft.graph.")
            found.append(_Method(kind, str(m.id), m.created_date_time))
        return found

    @staticmethod
    def _plan(methods: list[_Method], since: datetime) -> tuple[list[_Method], list[_Method], _Method | None]:
        """(to delete, without a registration time, kept as the last strong method)."""
        deletable = [m for m in methods if m.kind in METHOD_SEGMENTS]
        suspects = sorted((m for m in deletable if m.created and m.created >= since), key=lambda m: m.created or since)
        untimed = [m for m in deletable if m.created is None]
        kept = None
        strong_left = [m for m in methods if m.kind in STRONG_METHODS and m not in suspects]
        strong_suspects = [m for m in suspects if m.kind in STRONG_METHODS]
        if not strong_left and strong_suspects:
            kept = strong_suspects[0]
            suspects.remove(kept)
        return suspects, untimed, kept

    async def run(self, target: str, context: ActionContext | None = None) -> ActionOutcome:
        if context is None or context.window_start is None:
            return ActionOutcome(False, "remove_recent_mfa_methods needs the incident window start")
        try:
            methods = await self._methods(target)
        except APIError as exc:
            return _refused("list authentication methods", graph_error(exc))
        delete, untimed, kept = self._plan(methods, context.window_start)
        steps = {
            m.id: BatchStep("DELETE", f"/users/{_seg(target)}/authentication/{METHOD_SEGMENTS[m.kind]}/{_seg(m.id)}")
            for m in delete
        }
        try:
            replies = await send_batch(self.graph, steps) if steps else {}
        except APIError as exc:
            return _refused("delete authentication methods", graph_error(exc))
        failed = {k: r.error() for k, r in replies.items() if not r.ok and r.status != 404}
        removed = [f"{m.kind.removesuffix('AuthenticationMethod')} {m.id}" for m in delete if m.id not in failed]
        detail: dict[str, Any] = {
            "removed": removed,
            "not_dated": [f"{m.kind.removesuffix('AuthenticationMethod')} {m.id}" for m in untimed],
            "kept_last_strong": f"{kept.kind.removesuffix('AuthenticationMethod')} {kept.id}" if kept else None,
            "errors": failed,
        }
        text = [f"Removed {len(removed)} MFA method(s) registered since {context.window_start:%Y-%m-%d %H:%M}Z"]
        if untimed:
            text.append(f"{len(untimed)} method(s) have no registration time in Graph and were left: check them")
        if kept:
            text.append(
                f"kept {detail['kept_last_strong']} (registered {kept.created:%Y-%m-%d %H:%M}Z): it is the user's only "
                "strong method; verify it with the user before deleting"
            )
        if failed:
            first = next(iter(failed.values()))
            text.append(f"{len(failed)} delete(s) refused: {first['code']} ({first['status']})")
            detail.update(code=first["code"], status=first["status"])
        return ActionOutcome(not failed and kept is None, "; ".join(text), detail)

    async def already_done(self, target: str, since: datetime, context: ActionContext | None = None) -> bool | None:
        if context is None or context.window_start is None:
            return None
        try:
            methods = await self._methods(target)
        except APIError:
            return None
        delete, _, kept = self._plan(methods, context.window_start)
        return not delete and kept is None


class RevokeAppConsent:
    """Remove the flagged apps' delegated permission grants for this user.

    GET /oauth2PermissionGrants?$filter=clientId eq '{sp}' and principalId eq '{user}' (clientId is the
    app's service-principal object id), then DELETE /oauth2PermissionGrants/{id} → 204; 404 = already
    gone. `AllPrincipals` grants (tenant-wide admin consent) are never deleted while containing one
    user: they are reported for an admin. Existing access tokens stay valid until they expire.
    Optionally (config) PATCH /servicePrincipals/{id} accountEnabled=false, which disables the app for
    everyone in the tenant.
    """

    name = "revoke_app_consent"
    provider = "microsoft"
    destructive = True

    def __init__(self, graph: GraphServiceClient, disable_service_principal: bool = False) -> None:
        self.graph = graph
        self.disable_service_principal = disable_service_principal
        self.permission = "DelegatedPermissionGrant.ReadWrite.All" + (
            " + Application.ReadWrite.All" if disable_service_principal else ""
        )

    async def _grants(self, flt: str) -> list[Any]:
        config = RequestConfiguration(query_parameters=GrantQuery(filter=flt))
        page = await self.graph.oauth2_permission_grants.get(request_configuration=config)
        return list(page.value if page and page.value else [])

    async def run(self, target: str, context: ActionContext | None = None) -> ActionOutcome:
        if context is None or not context.service_principal_ids:
            return ActionOutcome(False, "revoke_app_consent needs the flagged app's service-principal id")
        try:
            user_id = await _object_id(self.graph, target)
            mine: list[Any] = []
            tenant_wide: list[str] = []
            for sp in context.service_principal_ids:
                grants = await self._grants(f"clientId eq '{sp}' and principalId eq '{user_id}'")
                mine += [g for g in grants if g.consent_type == "Principal" and g.principal_id == user_id]
                admin = await self._grants(f"clientId eq '{sp}' and consentType eq 'AllPrincipals'")
                tenant_wide += [str(g.id) for g in admin]
        except APIError as exc:
            return _refused("list the app's permission grants", graph_error(exc))
        steps = {f"g{i}": BatchStep("DELETE", f"/oauth2PermissionGrants/{_seg(str(g.id))}") for i, g in enumerate(mine)}
        if self.disable_service_principal:
            for i, sp in enumerate(context.service_principal_ids):
                steps[f"sp{i}"] = BatchStep("PATCH", f"/servicePrincipals/{_seg(sp)}", {"accountEnabled": False})
        try:
            replies = await send_batch(self.graph, steps) if steps else {}
        except APIError as exc:
            return _refused("delete the permission grants", graph_error(exc))
        failed = {k: r.error() for k, r in replies.items() if not r.ok and not (k.startswith("g") and r.status == 404)}
        removed = sum(1 for k in replies if k.startswith("g") and k not in failed)
        scopes = sorted({s for g in mine for s in str(g.scope or "").split()})
        text = [f"Removed {removed} delegated grant(s) ({' '.join(scopes) or 'no scopes'}) of the flagged app"]
        if self.disable_service_principal and not any(k.startswith("sp") for k in failed):
            text.append("app disabled for the whole tenant")
        if tenant_wide:
            text.append(f"{len(tenant_wide)} tenant-wide admin consent grant(s) left for an admin to review")
        detail: dict[str, Any] = {"removed": removed, "scopes": scopes, "tenant_wide_grants": tenant_wide}
        if failed:
            first = next(iter(failed.values()))
            text.append(f"{len(failed)} change(s) refused: {first['code']} ({first['status']})")
            detail.update(errors=failed, code=first["code"], status=first["status"])
        return ActionOutcome(not failed, "; ".join(text), detail)

    async def already_done(self, target: str, since: datetime, context: ActionContext | None = None) -> bool | None:
        if context is None or not context.service_principal_ids:
            return None
        try:
            user_id = await _object_id(self.graph, target)
            for sp in context.service_principal_ids:
                grants = await self._grants(f"clientId eq '{sp}' and principalId eq '{user_id}'")
                if any(g.consent_type == "Principal" for g in grants):
                    return False
                if self.disable_service_principal:
                    found = await self.graph.service_principals.by_service_principal_id(sp).get()
                    if found is None or found.account_enabled is not False:
                        return False
        except APIError:
            return None
        return True


class RemoveForwarding:
    """Delete the inbox rules that forward or redirect mail outside, or that the detection flagged.

    GET /users/{id}/mailFolders/inbox/messageRules; DELETE .../messageRules/{id} → 204 (one `$batch`),
    404 = already gone. messageRule has no createdDateTime, so a rule is removed when its id or name
    came from the detection (the O365 New-InboxRule / Set-InboxRule record, `context.rule_ids` /
    `rule_names`) or when forwardTo, redirectTo or forwardAsAttachmentTo holds an address outside the
    internal domains.
    Not possible through Graph: mailbox-level forwarding (Set-Mailbox -ForwardingSmtpAddress /
    ForwardingAddress / DeliverToMailboxAndForward) and transport rules live in Exchange Online
    PowerShell only; the outcome says they were not checked.
    """

    name = "remove_forwarding"
    provider = "microsoft"
    permission = "MailboxSettings.ReadWrite"
    destructive = True
    NOT_COVERED = (
        "mailbox-level forwarding (Set-Mailbox ForwardingSmtpAddress) needs Exchange Online PowerShell: not checked"
    )

    def __init__(self, graph: GraphServiceClient, internal_domains: Sequence[str] = ()) -> None:
        self.graph = graph
        self.internal_domains = tuple(d.lower() for d in internal_domains)

    async def _internal(self, target: str) -> set[str]:
        if self.internal_domains:
            return set(self.internal_domains)
        if "@" in target:
            return {target.rsplit("@", 1)[1].lower()}
        config = RequestConfiguration(query_parameters=UserQuery(select=["id", "userPrincipalName", "mail"]))
        user = await self.graph.users.by_user_id(target).get(request_configuration=config)
        names = [user.user_principal_name, user.mail] if user else []
        return {n.rsplit("@", 1)[1].lower() for n in names if n and "@" in n}

    async def _suspects(self, target: str, context: ActionContext | None) -> list[tuple[Any, str]]:
        internal = await self._internal(target)
        page = await self.graph.users.by_user_id(target).mail_folders.by_mail_folder_id("inbox").message_rules.get()
        ids = set(context.rule_ids) if context else set()
        names = {n.lower() for n in context.rule_names} if context else set()
        found = []
        for rule in page.value if page and page.value else []:
            acts = rule.actions
            recipients = (
                [*(acts.forward_to or []), *(acts.redirect_to or []), *(acts.forward_as_attachment_to or [])]
                if acts
                else []
            )
            outside = sorted(
                addr
                for r in recipients
                if r.email_address
                and (addr := str(r.email_address.address or "")).lower().rsplit("@", 1)[-1] not in internal
            )
            if rule.id in ids or (rule.display_name or "").lower() in names:
                found.append((rule, "flagged by the detection"))
            elif outside:
                found.append((rule, "forwards outside to " + ", ".join(outside)))
        return found

    async def run(self, target: str, context: ActionContext | None = None) -> ActionOutcome:
        try:
            suspects = await self._suspects(target, context)
        except APIError as exc:
            return _refused("list inbox rules", graph_error(exc))
        base = f"/users/{_seg(target)}/mailFolders/inbox/messageRules"
        steps = {str(rule.id): BatchStep("DELETE", f"{base}/{_seg(str(rule.id))}") for rule, _ in suspects}
        try:
            replies = await send_batch(self.graph, steps) if steps else {}
        except APIError as exc:
            return _refused("delete inbox rules", graph_error(exc))
        failed = {k: r.error() for k, r in replies.items() if not r.ok and r.status != 404}
        removed = [f"'{rule.display_name}' ({why})" for rule, why in suspects if str(rule.id) not in failed]
        text = [f"Removed {len(removed)} inbox rule(s)" + (": " + "; ".join(removed) if removed else "")]
        detail: dict[str, Any] = {"removed": removed, "not_covered": self.NOT_COVERED}
        if failed:
            first = next(iter(failed.values()))
            text.append(f"{len(failed)} delete(s) refused: {first['code']} ({first['status']})")
            detail.update(errors=failed, code=first["code"], status=first["status"])
        text.append(self.NOT_COVERED)
        return ActionOutcome(not failed, ". ".join(text), detail)

    async def already_done(self, target: str, since: datetime, context: ActionContext | None = None) -> bool | None:
        try:
            return not await self._suspects(target, context)
        except APIError:
            return None


class _RiskVerdict:
    """POST /identityProtection/riskyUsers/{verb} {"userIds": [...]} → 204. Identity Protection allows
    1 request/s per tenant and its 429s carry no Retry-After: kiota then backs off on its own
    (≈ 3.5-4.5 s with the default RetryHandlerOption). Needs Entra ID P2."""

    provider = "microsoft"
    permission = "IdentityRiskyUser.ReadWrite.All"
    destructive = False
    verb = ""
    state = ""
    summary = ""

    def __init__(self, graph: GraphServiceClient) -> None:
        self.graph = graph

    async def _post(self, user_id: str) -> None:
        raise NotImplementedError

    async def run(self, target: str, context: ActionContext | None = None) -> ActionOutcome:
        try:
            user_id = await _object_id(self.graph, target)
            await self._post(user_id)
        except APIError as exc:
            return _refused(self.verb, graph_error(exc))
        return ActionOutcome(True, self.summary, {"risk_state": self.state})

    async def already_done(self, target: str, since: datetime, context: ActionContext | None = None) -> bool | None:
        try:
            user_id = await _object_id(self.graph, target)
            risky = await self.graph.identity_protection.risky_users.by_risky_user_id(user_id).get()
        except ODataError as exc:
            return False if exc.response_status_code == 404 else None  # 404: never risky, so not confirmed
        except APIError:
            return None
        state = getattr(risky.risk_state, "value", risky.risk_state) if risky else None
        return None if state is None else state == self.state


class ConfirmCompromised(_RiskVerdict):
    name = "confirm_compromised"
    verb = "confirm the user compromised"
    state = "confirmedCompromised"
    summary = "Identity Protection told: user confirmed compromised (risk set to high)"

    async def _post(self, user_id: str) -> None:
        body = confirm_body.ConfirmCompromisedPostRequestBody(user_ids=[user_id])
        await self.graph.identity_protection.risky_users.confirm_compromised.post(body)


class DismissRisk(_RiskVerdict):
    """On a SOC "benign" verdict: POST /identityProtection/riskyUsers/dismiss → 204."""

    name = "dismiss_risk"
    verb = "dismiss the user's risk"
    state = "dismissed"
    summary = "Identity Protection told: user risk dismissed (SOC verdict benign)"

    async def _post(self, user_id: str) -> None:
        await self.graph.identity_protection.risky_users.dismiss.post(DismissPostRequestBody(user_ids=[user_id]))


def microsoft_actions(graph: GraphServiceClient, config: MicrosoftActionConfig | None = None) -> list[Action]:
    """Every Microsoft action, bound to one tenant's Graph client. require_mfa only when configured, so
    the bot never offers an action it cannot perform."""
    cfg = config or MicrosoftActionConfig()
    actions: list[Action] = [
        RevokeSessions(graph),
        BlockSignIn(graph),
        ResetPassword(graph, cfg.password_length),
        RemoveRecentMfaMethods(graph),
        RevokeAppConsent(graph, cfg.disable_service_principal),
        RemoveForwarding(graph, cfg.internal_domains),
        ConfirmCompromised(graph),
        DismissRisk(graph),
    ]
    if cfg.require_mfa_group_id or cfg.per_user_mfa:
        actions.insert(3, RequireMfa(graph, cfg.require_mfa_group_id, cfg.per_user_mfa))
    return actions
