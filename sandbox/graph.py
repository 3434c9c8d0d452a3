"""Loopback emulator of the Microsoft Graph calls Mailwarden makes (api-contracts §1.2-1.8, §5).

Containment endpoints answer with the documented status codes and error bodies; `$batch` runs each inner
request through the same routes (faults, throttling and all) and records it as its own request, so
`writes()` lists each executed write once whether it came alone or in a batch. Passwords sent to the
emulator are checked against the Entra complexity rule and then forgotten: the request log keeps
"<redacted>" and the user keeps "password set at <time>".
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
import string
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.recorder import Fault, Faults, RecordedRequest, SlidingWindow, capture
from sandbox.wire import format_graph_time, graph_sign_in

GRAPH = "https://graph.microsoft.com"
MAX_PAGE = 1000
# What Graph itself sends; kiota only looks at the part before ";".
ODATA_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
_FAULT_CODES = {
    400: "invalidRequest",
    401: "InvalidAuthenticationToken",
    403: "Authorization_RequestDenied",
    404: "Request_ResourceNotFound",
    409: "conflict",
    429: "TooManyRequests",
    503: "serviceNotAvailable",
}
_USER_FIELDS = (
    "id",
    "userPrincipalName",
    "displayName",
    "mail",
    "accountEnabled",
    "userType",
    "onPremisesSyncEnabled",
    "signInSessionsValidFromDateTime",
    "lastPasswordChangeDateTime",
)
# " and " outside single-quoted literals.
_AND = re.compile(r"\s+and\s+(?=(?:[^']*'[^']*')*[^']*$)", re.IGNORECASE)
_COMPARE: dict[str, Callable[[datetime, datetime], bool]] = {
    "ge": lambda a, b: a >= b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "lt": lambda a, b: a < b,
    "eq": lambda a, b: a == b,
}


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def parse_graph_time(text: str) -> datetime:
    return _utc(datetime.fromisoformat(text))


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass
class _SignIn:
    record: dict[str, Any]
    created: datetime
    available_at: datetime

    @property
    def key(self) -> tuple[datetime, str]:
        return self.created, str(self.record.get("id", ""))

    @property
    def event_types(self) -> list[str]:
        """Beta's signInEventTypes; records added in v1.0 shape get it from isInteractive."""
        types = self.record.get("signInEventTypes")
        if isinstance(types, list) and types:
            return [str(t) for t in types]
        return ["interactiveUser"] if self.record.get("isInteractive", True) is not False else ["nonInteractiveUser"]

    def shaped(self, version: str) -> dict[str, Any]:
        """The record as `version` returns it: beta carries signInEventTypes, v1.0 has no such property."""
        record = copy.deepcopy(self.record)
        if version == "beta":
            record["signInEventTypes"] = self.event_types
        else:
            record.pop("signInEventTypes", None)
        return record


@dataclass
class _Call:
    """One operation to run: a plain HTTP request, or one request inside a `$batch`."""

    method: str
    version: str
    params: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes  # the real body; the request log only keeps a redacted copy
    base_url: str

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from None


Handler = Callable[[_Call, dict[str, str]], Awaitable[Response]]
BOTH = frozenset({"v1.0", "beta"})
BETA = frozenset({"beta"})


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    budget: str | None = None  # "reports" or "identity_protection"
    versions: frozenset[str] = BOTH


# authentication method kinds: short name -> (OData type, the per-type collection a DELETE goes to)
METHOD_KINDS: dict[str, tuple[str, str | None]] = {
    "password": ("passwordAuthenticationMethod", None),  # never deletable
    "phone": ("phoneAuthenticationMethod", "phoneMethods"),
    "email": ("emailAuthenticationMethod", "emailMethods"),
    "fido2": ("fido2AuthenticationMethod", "fido2Methods"),
    "microsoftAuthenticator": ("microsoftAuthenticatorAuthenticationMethod", "microsoftAuthenticatorMethods"),
    "softwareOath": ("softwareOathAuthenticationMethod", "softwareOathMethods"),
    "windowsHelloForBusiness": ("windowsHelloForBusinessAuthenticationMethod", "windowsHelloForBusinessMethods"),
    "temporaryAccessPass": ("temporaryAccessPassAuthenticationMethod", "temporaryAccessPassMethods"),
    "platformCredential": ("platformCredentialAuthenticationMethod", "platformCredentialMethods"),
}
_DELETABLE_SEGMENTS = "|".join(seg for _, seg in METHOD_KINDS.values() if seg)
PASSWORD_METHOD_ID = "28c10230-6103-485e-b985-444c60001490"  # the id Graph gives every password method
ALREADY_MEMBER = "One or more added object references already exist for the following modified properties: 'members'."
WEAK_PASSWORD = (
    "The specified password does not comply with password complexity requirements. Please provide a different password."
)
MAX_BATCH = 20
MAX_RISK_PAGE = 500  # riskDetections: "default 20, max $top 500"
DEFAULT_RISK_PAGE = 20
NON_PREMIUM_CODE = "Authentication_RequestFromNonPremiumTenantOrB2CTenant"
NON_PREMIUM_MESSAGE = "Neither tenant is B2C or tenant doesn't have premium license"


class GraphEmulator:
    def __init__(
        self,
        clock: Callable[[], datetime],
        *,
        token: str = "sandbox-graph-token",
        tenant_id: str = "00000000-0000-0000-0000-00000000a11c",
        reports_budget: tuple[int, float] | None = (5, 10.0),
        identity_protection_budget: tuple[int, float] | None = (1, 1.0),
    ) -> None:
        self.clock = clock
        self.token = token
        self.tenant_id = tenant_id
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        # Tenants that moved fully to Conditional Access answer the beta per-user MFA call with 404 (§1.4).
        self.per_user_mfa_available = True
        self._users: dict[str, dict[str, Any]] = {}
        self._sign_ins: list[_SignIn] = []
        self._groups: dict[str, dict[str, Any]] = {}
        self._methods: dict[str, list[dict[str, Any]]] = {}
        self._grants: dict[str, dict[str, Any]] = {}
        self._service_principals: dict[str, dict[str, Any]] = {}
        self._rules: dict[str, list[dict[str, Any]]] = {}
        self._risky: dict[str, dict[str, Any]] = {}
        self._risk_detections: list[dict[str, Any]] = []
        self._denials: list[tuple[re.Pattern[str], str | None, GraphError]] = []
        self.synthetic: SyntheticSignIns | None = None  # bench: sign-ins generated on demand
        self._budgets: dict[str, SlidingWindow] = {}
        if reports_budget:
            self._budgets["reports"] = SlidingWindow(*reports_budget)
        if identity_protection_budget:
            self._budgets["identity_protection"] = SlidingWindow(*identity_protection_budget)
        u = r"/users/(?P<user>[^/]+)"
        self._routes: list[_Route] = [
            _Route("GET", re.compile(r"/auditLogs/signIns"), self._list_sign_ins, "reports"),
            _Route(
                "GET",
                re.compile(r"/identityProtection/riskDetections"),
                self._list_risk_detections,
                "identity_protection",
            ),
            _Route("GET", re.compile(r"/identityProtection/riskyUsers"), self._list_risky_users, "identity_protection"),
            _Route("GET", re.compile(r"/users"), self._list_users),
            _Route("GET", re.compile(u), self._get_user),
            _Route("PATCH", re.compile(u), self._patch_user),
            _Route("POST", re.compile(u + "/revokeSignInSessions"), self._revoke),
            _Route("GET", re.compile(r"/groups/(?P<group>[^/]+)/members"), self._list_members),
            _Route("POST", re.compile(r"/groups/(?P<group>[^/]+)/members/\$ref"), self._add_member),
            _Route("GET", re.compile(u + "/authentication/methods"), self._list_methods),
            _Route(
                "DELETE",
                re.compile(u + rf"/authentication/(?P<segment>{_DELETABLE_SEGMENTS})/(?P<id>[^/]+)"),
                self._delete_method,
            ),
            _Route("GET", re.compile(u + "/authentication/requirements"), self._get_requirements, versions=BETA),
            _Route("PATCH", re.compile(u + "/authentication/requirements"), self._patch_requirements, versions=BETA),
            _Route("GET", re.compile(r"/oauth2PermissionGrants"), self._list_grants),
            _Route("DELETE", re.compile(r"/oauth2PermissionGrants/(?P<id>[^/]+)"), self._delete_grant),
            _Route("GET", re.compile(r"/servicePrincipals/(?P<id>[^/]+)"), self._get_service_principal),
            _Route("PATCH", re.compile(r"/servicePrincipals/(?P<id>[^/]+)"), self._patch_service_principal),
            _Route("GET", re.compile(u + r"/mailFolders/(?P<folder>[^/]+)/messageRules"), self._list_rules),
            _Route(
                "DELETE",
                re.compile(u + r"/mailFolders/(?P<folder>[^/]+)/messageRules/(?P<id>[^/]+)"),
                self._delete_rule,
            ),
            _Route(
                "GET",
                re.compile(r"/identityProtection/riskyUsers/(?P<id>[^/]+)"),
                self._get_risky_user,
                "identity_protection",
            ),
            _Route(
                "POST",
                re.compile(r"/identityProtection/riskyUsers/(?P<verb>confirmCompromised|dismiss)"),
                self._set_user_risk,
                "identity_protection",
            ),
        ]
        methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
        self.app = Starlette(routes=[Route("/{path:path}", self._endpoint, methods=methods)])

    # --- setup and assertions -------------------------------------------------------------------------

    def add_user(
        self,
        id: str,
        upn: str,
        display_name: str,
        *,
        user_type: str = "Member",
        on_premises_sync_enabled: bool | None = None,
        account_enabled: bool = True,
        sign_in_sessions_valid_from: datetime | None = None,
        last_password_change: datetime | None = None,
    ) -> None:
        self._users[id] = {
            "id": id,
            "userPrincipalName": upn,
            "displayName": display_name,
            "mail": upn,
            "accountEnabled": account_enabled,
            "userType": user_type,
            "onPremisesSyncEnabled": on_premises_sync_enabled,
            "signInSessionsValidFromDateTime": sign_in_sessions_valid_from,
            "lastPasswordChangeDateTime": last_password_change,
            "perUserMfaState": "disabled",
            "passwordProfile": None,  # never the password itself: "password set at <time>"
        }

    def add_sign_in(self, record: dict[str, Any], *, available_at: datetime | None = None) -> None:
        created = parse_graph_time(record["createdDateTime"])
        visible = _utc(available_at) if available_at else created
        self._sign_ins.append(_SignIn(copy.deepcopy(record), created, visible))

    def add_group(self, id: str, display_name: str = "", members: tuple[str, ...] = ()) -> None:
        self._groups[id] = {"id": id, "displayName": display_name or id, "members": list(members)}

    def add_auth_method(self, user: str, kind: str, id: str, created: datetime | None = None, **props: Any) -> None:
        """Register a method; `created=None` models types whose createdDateTime Graph leaves empty (phone)."""
        if kind not in METHOD_KINDS or kind == "password":
            raise ValueError(f"unknown or implicit method kind {kind!r}")
        self._methods.setdefault(self._require_user(user)["id"], []).append(
            {"kind": kind, "id": id, "created": created, "props": props}
        )

    def add_grant(
        self,
        id: str,
        client_id: str,
        *,
        principal_id: str | None = None,
        resource_id: str = "00000003-0000-0000-c000-000000000000",
        scope: str = "Mail.Read offline_access",
    ) -> None:
        self._grants[id] = {
            "id": id,
            "clientId": client_id,
            "consentType": "Principal" if principal_id else "AllPrincipals",
            "principalId": principal_id,
            "resourceId": resource_id,
            "scope": scope,
        }

    def add_service_principal(self, id: str, app_id: str, display_name: str) -> None:
        self._service_principals[id] = {
            "id": id,
            "appId": app_id,
            "displayName": display_name,
            "accountEnabled": True,
        }

    def add_message_rule(
        self,
        user: str,
        display_name: str,
        *,
        actions: dict[str, Any],
        conditions: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> str:
        rules = self._rules.setdefault(self._require_user(user)["id"], [])
        rule_id = id or base64.urlsafe_b64encode(uuid.uuid4().bytes[:8]).decode()  # Exchange ids: base64
        rules.append(
            {
                "id": rule_id,
                "displayName": display_name,
                "sequence": len(rules) + 1,
                "isEnabled": True,
                "hasError": False,
                "isReadOnly": False,
                "conditions": conditions or {},
                "actions": actions,
            }
        )
        return rule_id

    def set_user_risk(self, user: str, state: str = "atRisk", level: str = "high", detail: str = "none") -> None:
        u = self._require_user(user)
        self._risky[u["id"]] = {
            "id": u["id"],
            "isDeleted": False,
            "isProcessing": False,
            "riskLastUpdatedDateTime": f"{_utc(self.clock()):%Y-%m-%dT%H:%M:%SZ}",
            "riskLevel": level,
            "riskState": state,
            "riskDetail": detail,
            "userDisplayName": u["displayName"],
            "userPrincipalName": u["userPrincipalName"],
        }

    def add_risk_detection(self, record: dict[str, Any]) -> None:
        """A riskDetection in Graph's wire shape (api-contracts.md §1.3)."""
        self._risk_detections.append(copy.deepcopy(record))

    def deny(
        self,
        path_regex: str,
        *,
        code: str = "Authorization_RequestDenied",
        message: str = "Insufficient privileges to complete the operation.",
        status: int = 403,
        method: str | None = None,
    ) -> None:
        """Refuse every request whose versioned path matches (e.g. r"/v1\\.0/auditLogs/signIns"), as Graph
        does when the app lacks the permission: 403 Authorization_RequestDenied by default."""
        self._denials.append((re.compile(path_regex), method, GraphError(status, code, message)))

    def deny_licence(self, path_regex: str, *, method: str | None = None) -> None:
        """The answer of a tenant without Entra ID P1/P2 (api-contracts.md §1.2)."""
        self.deny(path_regex, code=NON_PREMIUM_CODE, message=NON_PREMIUM_MESSAGE, method=method)

    def allow_all(self) -> None:
        self._denials.clear()

    def set_budget(self, name: str, budget: tuple[int, float] | None) -> None:
        """Change or lift ("reports" | "identity_protection") a throttling budget: (requests, seconds)."""
        if budget is None:
            self._budgets.pop(name, None)
        else:
            self._budgets[name] = SlidingWindow(*budget)

    def user(self, id_or_upn: str) -> dict[str, Any]:
        user = self._find_user(id_or_upn)
        if user is None:
            raise KeyError(id_or_upn)
        return _user_json(user)

    def password_profile(self, id_or_upn: str) -> dict[str, Any] | None:
        profile = self._require_user(id_or_upn)["passwordProfile"]
        return dict(profile) if profile else None

    def per_user_mfa_state(self, id_or_upn: str) -> str:
        return str(self._require_user(id_or_upn)["perUserMfaState"])

    def group_members(self, group_id: str) -> list[str]:
        return list(self._groups[group_id]["members"])

    def auth_method_ids(self, user: str) -> list[str]:
        return [m["id"] for m in self._methods.get(self._require_user(user)["id"], [])]

    def grant_ids(self) -> list[str]:
        return list(self._grants)

    def service_principal(self, id: str) -> dict[str, Any]:
        return dict(self._service_principals[id])

    def rule_ids(self, user: str) -> list[str]:
        return [r["id"] for r in self._rules.get(self._require_user(user)["id"], [])]

    def risky_user(self, user: str) -> dict[str, Any] | None:
        found = self._risky.get(self._require_user(user)["id"])
        return dict(found) if found else None

    def calls(self, method: str, path_regex: str) -> int:
        return sum(1 for r in self.requests if r.method == method and re.fullmatch(path_regex, r.path))

    def writes(self) -> list[dict[str, str]]:
        """The changes that reached the directory: not the ones refused by auth, a fault, throttling or
        the operation itself (e.g. 400 "already a member"). A `$batch` is not a write; each inner write
        is listed on its own, with its versioned path."""
        return [
            {"provider": "microsoft", "method": r.method, "path": r.path}
            for r in self.requests
            if r.method != "GET" and r.handled and r.status < 400 and not r.path.endswith("/$batch")
        ]

    format_graph_time = staticmethod(format_graph_time)

    # --- HTTP -------------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        rec = await capture(request)
        self.requests.append(rec)
        body, rec.body = rec.body, _redact(rec.body)
        call = _Call(rec.method, "", request.query_params, rec.headers, body, str(request.base_url).rstrip("/"))
        try:
            response = await self._handle(call, rec)
        except GraphError as err:
            rec.error = err.code
            response = self._error(rec, err)
        rec.status = response.status_code
        return response

    async def _handle(self, call: _Call, rec: RecordedRequest) -> Response:
        fault = self.faults.take(f"{rec.method} {rec.path}")
        if fault:
            raise _fault_error(fault)
        auth = rec.headers.get("authorization", "")
        if not auth:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        if auth != f"Bearer {self.token}":
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.")
        versioned = re.fullmatch(r"/(v1\.0|beta)(/.*)?", rec.path)
        if not versioned:
            segment = rec.path.strip("/").split("/")[0]
            raise GraphError(400, "BadRequest", f"Invalid version: {segment}")
        call.version, rest = versioned.group(1), (versioned.group(2) or "/").rstrip("/") or "/"
        if rest == "/$batch":
            if rec.method != "POST":
                raise GraphError(405, "Request_BadRequest", f"{rec.method} is not allowed on this resource.")
            rec.handled = True
            return await self._batch(call, rec)
        return await self._dispatch(call, rec, rest)

    async def _dispatch(self, call: _Call, rec: RecordedRequest, rest: str) -> Response:
        path_known = False
        for route in self._routes:
            match = route.pattern.fullmatch(rest)
            if not match or call.version not in route.versions:
                continue
            path_known = True
            if route.method == call.method:
                full = f"/{call.version}{rest}"
                for pattern, method, err in self._denials:
                    if (method is None or method == call.method) and pattern.fullmatch(full):
                        raise GraphError(err.status, err.code, err.message)
                if route.budget and route.budget in self._budgets:
                    self._spend(route.budget)
                rec.handled = True
                return await route.handler(call, match.groupdict())
        if path_known:
            raise GraphError(405, "Request_BadRequest", f"{call.method} is not allowed on this resource.")
        segment = rest.rstrip("/").rsplit("/", 1)[-1]
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")

    def _spend(self, budget: str) -> None:
        wait = self._budgets[budget].admit()
        if not wait:
            return
        if budget == "identity_protection":
            # "The resources listed earlier don't return a Retry-After header on 429" (§1.3, §1.6).
            raise GraphError(429, "TooManyRequests", "Too many requests.")
        raise GraphError(429, "TooManyRequests", "Too many requests.", {"Retry-After": str(wait)})

    def _error(self, rec: RecordedRequest, err: GraphError) -> Response:
        request_id = str(uuid.uuid4())
        client_request_id = rec.headers.get("client-request-id", request_id)
        inner = {
            "date": f"{_utc(self.clock()):%Y-%m-%dT%H:%M:%S}",
            "request-id": request_id,
            "client-request-id": client_request_id,
        }
        body = {"error": {"code": err.code, "message": err.message, "innerError": inner}}
        headers = {"request-id": request_id, "client-request-id": client_request_id, **err.headers}
        return Response(json.dumps(body), err.status, headers, media_type="application/json")

    # --- $batch (§1.5) ----------------------------------------------------------------------------

    async def _batch(self, call: _Call, rec: RecordedRequest) -> Response:
        invalid = GraphError(400, "BadRequest", "Invalid batch payload format.")
        data = call.json()
        items = data.get("requests") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise invalid
        if len(items) > MAX_BATCH:
            raise GraphError(400, "BadRequest", f"The number of requests in the batch exceeds {MAX_BATCH}.")
        seen: set[str] = set()
        for item in items:
            ok = isinstance(item, dict) and all(isinstance(item.get(k), str) for k in ("id", "method", "url"))
            if not ok:
                raise invalid
            key = item["id"].casefold()
            if key in seen:
                raise GraphError(400, "BadRequest", f"Batch request ids must be unique: '{item['id']}'.")
            depends = item.get("dependsOn", [])
            if not isinstance(depends, list) or any(
                not isinstance(d, str) or d.casefold() not in seen for d in depends
            ):
                raise GraphError(400, "BadRequest", f"Invalid dependsOn in request '{item['id']}'.")
            seen.add(key)
        statuses: dict[str, int] = {}
        responses: list[dict[str, Any]] = []
        for item in items:
            if any(statuses[d.casefold()] >= 400 for d in item.get("dependsOn", [])):
                status, headers, body = (
                    424,
                    {"Content-Type": "application/json"},
                    _error_body("FailedDependency", "A request this one depends on failed.", self.clock()),
                )
            else:
                status, headers, body = await self._batch_item(call, rec, item)
            statuses[item["id"].casefold()] = status
            reply: dict[str, Any] = {"id": item["id"], "status": status, "headers": headers}
            if body is not None:
                reply["body"] = body
            responses.append(reply)
        responses.reverse()  # "responses may come back in any order": clients must match on id
        return _ok({"responses": responses}, media_type="application/json")

    async def _batch_item(
        self, outer: _Call, outer_rec: RecordedRequest, item: dict[str, Any]
    ) -> tuple[int, dict[str, str], Any]:
        method, url = item["method"].upper(), item["url"]
        headers = {str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()}
        raw_body = item.get("body")
        body = b""
        if isinstance(raw_body, dict | list):
            body = json.dumps(raw_body).encode()
        elif isinstance(raw_body, str):
            body = base64.b64decode(raw_body + "=" * (-len(raw_body) % 4))
        split = urlsplit(url if url.startswith("/") or "://" in url else "/" + url)
        path = re.sub("/{2,}", "/", f"/{outer.version}{unquote(split.path)}")
        rec = RecordedRequest(
            method=method,
            path=path if "://" not in url else url,
            query=split.query,
            headers={**headers, "authorization": outer_rec.headers.get("authorization", "")},
            body=_redact(body),
            at=time.monotonic(),
        )
        self.requests.append(rec)
        try:
            if "://" in url:  # msgraph-core's BatchRequestItem sends absolute URLs; Graph refuses them
                first = split.path.strip("/").split("/")[0] if split.path else url
                raise GraphError(400, "BadRequest", f"Resource not found for the segment '{first}'.")
            if raw_body is not None and "content-type" not in headers:
                raise GraphError(400, "BadRequest", "Content-Type header must be specified when a body is present.")
            if fault := self.faults.take(f"{method} {path}"):
                raise _fault_error(fault)
            if split.path.rstrip("/") == "/$batch":
                raise GraphError(400, "BadRequest", "Nested batch requests are not supported.")
            params = dict(_parse_query(split.query))
            call = _Call(method, outer.version, params, headers, body, outer.base_url)
            response = await self._dispatch(call, rec, unquote(split.path).rstrip("/") or "/")
        except GraphError as err:
            rec.error = err.code
            response = self._error(rec, err)
        rec.status = response.status_code
        out_headers = {"Content-Type": "application/json"} if response.body else {}
        if "retry-after" in response.headers:
            out_headers["Retry-After"] = response.headers["retry-after"]
        return response.status_code, out_headers, json.loads(bytes(response.body)) if response.body else None

    # --- operations -------------------------------------------------------------------------------

    async def _list_sign_ins(self, call: _Call, _: dict[str, str]) -> Response:
        params = call.params
        top = _parse_top(params.get("$top"))
        version = call.version
        schema = SIGN_IN_FILTER if version == "beta" else SIGN_IN_FILTER_V1
        predicate, mentioned = parse_filter(params.get("$filter", ""), schema)
        select = _parse_select(params.get("$select"), SIGN_IN_PROPERTIES, "signIn")
        # "Only interactive sign-ins are returned ... unless you set an explicit filter on signInEventTypes"
        every_type = "signInEventTypes" in mentioned
        now = _utc(self.clock())
        body: dict[str, Any] = {"@odata.context": f"{GRAPH}/{version}/$metadata#auditLogs/signIns"}
        if self.synthetic is not None:
            values, next_key = self.synthetic.page(params.get("$filter", ""), params.get("$skiptoken"), top, now)
            body["value"] = [_project(r, select) for r in values]
            if next_key is not None:
                body["@odata.nextLink"] = _next_link(call, "auditLogs/signIns", next_key)
            return _ok(body)
        after = _decode_skiptoken(params["$skiptoken"]) if "$skiptoken" in params else None
        rows = sorted(
            (
                s
                for s in self._sign_ins
                if s.available_at <= now
                and (every_type or "interactiveUser" in s.event_types)
                and predicate(s.shaped("beta"))
            ),
            key=lambda s: s.key,
            reverse=True,
        )
        if after is not None:
            rows = [s for s in rows if s.key < after]
        body["value"] = [_project(s.shaped(version), select) for s in rows[:top]]
        if len(rows) > top:
            body["@odata.nextLink"] = _next_link(call, "auditLogs/signIns", _encode_skiptoken(rows[top - 1].key))
        return _ok(body)

    def _offset_page(
        self, call: _Call, path: str, rows: list[dict[str, Any]], default_top: int, max_top: int
    ) -> dict[str, Any]:
        raw = call.params.get("$top")
        if raw is not None and (not raw.isdigit() or int(raw) < 1):
            raise GraphError(400, "invalidRequest", f"Invalid value '{raw}' for $top.")
        if raw is not None and int(raw) > max_top:
            raise GraphError(400, "invalidRequest", f"The limit of '{max_top}' for Top query has been exceeded.")
        top = int(raw) if raw is not None else default_top
        offset = 0
        if token := call.params.get("$skiptoken"):
            try:
                offset = int(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().removeprefix("o:"))
            except ValueError:
                raise GraphError(400, "invalidRequest", "Invalid $skiptoken.") from None
        body: dict[str, Any] = {
            "@odata.context": f"{GRAPH}/{call.version}/$metadata#{path}",
            "value": copy.deepcopy(rows[offset : offset + top]),
        }
        if offset + top < len(rows):
            token = base64.urlsafe_b64encode(f"o:{offset + top}".encode()).decode().rstrip("=")
            body["@odata.nextLink"] = _next_link(call, path, token)
        return body

    async def _list_risk_detections(self, call: _Call, _: dict[str, str]) -> Response:
        predicate, _mentioned = parse_filter(call.params.get("$filter", ""), RISK_DETECTION_FILTER)
        rows = sorted(
            (r for r in self._risk_detections if predicate(r)),
            key=lambda r: str(r.get("detectedDateTime", "")),
            reverse=True,
        )
        return _ok(self._offset_page(call, "identityProtection/riskDetections", rows, DEFAULT_RISK_PAGE, MAX_RISK_PAGE))

    async def _list_risky_users(self, call: _Call, _: dict[str, str]) -> Response:
        predicate, _mentioned = parse_filter(call.params.get("$filter", ""), RISKY_USER_FILTER)
        rows = [r for r in self._risky.values() if predicate(r)]
        return _ok(self._offset_page(call, "identityProtection/riskyUsers", rows, DEFAULT_RISK_PAGE, MAX_RISK_PAGE))

    async def _list_users(self, call: _Call, _: dict[str, str]) -> Response:
        select = _parse_select(call.params.get("$select"), frozenset(_USER_FIELDS), "user")
        rows = [_project(_user_json(u), select) for u in self._users.values()]
        return _ok(self._offset_page(call, "users", rows, 100, 999))

    async def _get_user(self, call: _Call, match: dict[str, str]) -> Response:
        user = self._require_user(match["user"])
        body = _user_json(user)
        context = "users/$entity"
        if select := call.params.get("$select"):
            names = ["id"] + [n.strip() for n in select.split(",") if n.strip() and n.strip() != "id"]
            by_lower = {k.lower(): k for k in body}
            # Graph has many user properties this emulator does not model; they come back as null.
            body = {by_lower.get(n.lower(), n): body.get(by_lower.get(n.lower(), n)) for n in names}
            context = f"users({','.join(body)})/$entity"
        return _ok({"@odata.context": f"{GRAPH}/{call.version}/$metadata#{context}", **body})

    async def _patch_user(self, call: _Call, match: dict[str, str]) -> Response:
        user = self._require_user(match["user"])
        patch = _strip_odata_type(call.json())
        if not isinstance(patch, dict):
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload.")
        unknown = set(patch) - {"accountEnabled", "passwordProfile", "displayName"}
        if unknown:
            name = sorted(unknown)[0]
            raise GraphError(
                400, "Request_BadRequest", f"Property '{name}' does not exist on type 'microsoft.graph.user'."
            )
        profile = patch.get("passwordProfile")
        if profile is not None:
            password = profile.get("password") if isinstance(profile, dict) else None
            if password is not None and not _complex_enough(password):
                raise GraphError(400, "Request_BadRequest", WEAK_PASSWORD)
        if "accountEnabled" in patch:
            if not isinstance(patch["accountEnabled"], bool):
                raise GraphError(400, "Request_BadRequest", "Invalid value specified for property 'accountEnabled'.")
            user["accountEnabled"] = patch["accountEnabled"]
        if "displayName" in patch:
            user["displayName"] = patch["displayName"]
        if isinstance(profile, dict):
            now = _utc(self.clock()).replace(microsecond=0)
            user["passwordProfile"] = {
                "password": f"password set at {now:%Y-%m-%dT%H:%M:%SZ}" if profile.get("password") else None,
                "forceChangePasswordNextSignIn": bool(profile.get("forceChangePasswordNextSignIn", False)),
                "forceChangePasswordNextSignInWithMfa": bool(
                    profile.get("forceChangePasswordNextSignInWithMfa", False)
                ),
            }
            if profile.get("password"):
                user["lastPasswordChangeDateTime"] = now
        return _no_content()

    async def _revoke(self, call: _Call, match: dict[str, str]) -> Response:
        user = self._require_user(match["user"])
        user["signInSessionsValidFromDateTime"] = _utc(self.clock()).replace(microsecond=0)
        return _ok({"@odata.context": f"{GRAPH}/{call.version}/$metadata#Edm.Boolean", "value": True})

    async def _list_members(self, call: _Call, match: dict[str, str]) -> Response:
        group = self._require_group(match["group"])
        members: list[str] = list(group["members"])
        if text := call.params.get("$filter", "").strip():
            m = re.fullmatch(r"id\s+eq\s+'([^']*)'", text, re.IGNORECASE)
            if not m:
                raise GraphError(400, "Request_UnsupportedQuery", f"Unsupported query: '{text}'.")
            members = [x for x in members if x == m.group(1)]
        body: dict[str, Any] = {
            "@odata.context": f"{GRAPH}/{call.version}/$metadata#directoryObjects",
            "value": [{"@odata.type": "#microsoft.graph.user", "id": x} for x in members],
        }
        if call.params.get("$count", "").lower() == "true":
            body["@odata.count"] = len(members)
        return _ok(body)

    async def _add_member(self, call: _Call, match: dict[str, str]) -> Response:
        group = self._require_group(match["group"])
        ref = call.json()
        odata_id = ref.get("@odata.id") if isinstance(ref, dict) else None
        m = re.fullmatch(
            r"https://graph\.microsoft\.com/(?:v1\.0|beta)/(?:directoryObjects|users)/([^/]+)", odata_id or ""
        )
        if not m:
            raise GraphError(400, "Request_BadRequest", "Invalid object identifier '" + str(odata_id) + "'.")
        user = self._users.get(m.group(1))
        if user is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{m.group(1)}' does not exist or one of its queried "
                "reference-property objects are not present.",
            )
        if user["id"] in group["members"]:
            raise GraphError(400, "Request_BadRequest", ALREADY_MEMBER)
        group["members"].append(user["id"])
        return _no_content()

    async def _list_methods(self, call: _Call, match: dict[str, str]) -> Response:
        user = self._require_user(match["user"])
        changed = user["lastPasswordChangeDateTime"]
        value: list[dict[str, Any]] = [
            {
                "@odata.type": "#microsoft.graph.passwordAuthenticationMethod",
                "id": PASSWORD_METHOD_ID,
                "createdDateTime": _iso(changed),
                "password": None,
            }
        ]
        for m in self._methods.get(user["id"], []):
            odata_type = METHOD_KINDS[m["kind"]][0]
            value.append(
                {
                    "@odata.type": f"#microsoft.graph.{odata_type}",
                    "id": m["id"],
                    "createdDateTime": _iso(m["created"]),
                    **m["props"],
                }
            )
        context = f"{GRAPH}/{call.version}/$metadata#users('{user['id']}')/authentication/methods"
        return _ok({"@odata.context": context, "value": value})

    async def _delete_method(self, call: _Call, match: dict[str, str]) -> Response:
        user = self._require_user(match["user"])
        methods = self._methods.get(user["id"], [])
        found = next(
            (m for m in methods if m["id"] == match["id"] and METHOD_KINDS[m["kind"]][1] == match["segment"]), None
        )
        if found is None:
            raise GraphError(404, "itemNotFound", f"The authentication method '{match['id']}' was not found.")
        methods.remove(found)
        return _no_content()

    async def _get_requirements(self, call: _Call, match: dict[str, str]) -> Response:
        user = self._require_user(match["user"])
        if not self.per_user_mfa_available:
            raise GraphError(404, "Request_ResourceNotFound", "Per-user MFA is not available in this tenant.")
        context = f"{GRAPH}/beta/$metadata#users('{user['id']}')/authentication/requirements/$entity"
        return _ok({"@odata.context": context, "perUserMfaState": user["perUserMfaState"]})

    async def _patch_requirements(self, call: _Call, match: dict[str, str]) -> Response:
        user = self._require_user(match["user"])
        if not self.per_user_mfa_available:
            raise GraphError(404, "Request_ResourceNotFound", "Per-user MFA is not available in this tenant.")
        body = _strip_odata_type(call.json())
        state = body.get("perUserMfaState") if isinstance(body, dict) else None
        if state not in ("disabled", "enabled", "enforced"):
            raise GraphError(400, "BadRequest", f"Invalid value '{state}' for property 'perUserMfaState'.")
        if state == "enabled" and self._methods.get(user["id"]):
            state = "enforced"  # "...has already registered an MFA method, their state changes to enforced"
        user["perUserMfaState"] = state
        return _no_content()

    async def _list_grants(self, call: _Call, _: dict[str, str]) -> Response:
        grants = list(self._grants.values())
        text = call.params.get("$filter", "").strip()
        for clause in _AND.split(text) if text else []:
            m = re.fullmatch(r"(clientId|principalId|consentType|resourceId)\s+eq\s+'([^']*)'", clause.strip(), re.I)
            if not m:
                raise GraphError(
                    400, "Request_UnsupportedQuery", f"Unsupported or invalid query filter clause: '{clause}'."
                )
            field = {"clientid": "clientId", "principalid": "principalId", "consenttype": "consentType"}.get(
                m.group(1).lower(), "resourceId"
            )
            grants = [g for g in grants if str(g[field]) == m.group(2)]
        context = f"{GRAPH}/{call.version}/$metadata#oauth2PermissionGrants"
        return _ok({"@odata.context": context, "value": [dict(g) for g in grants]})

    async def _delete_grant(self, call: _Call, match: dict[str, str]) -> Response:
        if self._grants.pop(match["id"], None) is None:
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{match['id']}' does not exist.")
        return _no_content()

    async def _get_service_principal(self, call: _Call, match: dict[str, str]) -> Response:
        sp = self._require_sp(match["id"])
        return _ok({"@odata.context": f"{GRAPH}/{call.version}/$metadata#servicePrincipals/$entity", **sp})

    async def _patch_service_principal(self, call: _Call, match: dict[str, str]) -> Response:
        sp = self._require_sp(match["id"])
        patch = _strip_odata_type(call.json())
        if not isinstance(patch, dict) or not isinstance(patch.get("accountEnabled", True), bool):
            raise GraphError(400, "Request_BadRequest", "Invalid value specified for property 'accountEnabled'.")
        if "accountEnabled" in patch:
            sp["accountEnabled"] = patch["accountEnabled"]
        return _no_content()

    def _rule_list(self, match: dict[str, str]) -> list[dict[str, Any]]:
        user = self._require_user(match["user"])
        if match["folder"].lower() != "inbox":
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return self._rules.setdefault(user["id"], [])

    async def _list_rules(self, call: _Call, match: dict[str, str]) -> Response:
        rules = self._rule_list(match)
        context = f"{GRAPH}/{call.version}/$metadata#users('{match['user']}')/mailFolders('inbox')/messageRules"
        return _ok({"@odata.context": context, "value": copy.deepcopy(rules)})

    async def _delete_rule(self, call: _Call, match: dict[str, str]) -> Response:
        rules = self._rule_list(match)
        found = next((r for r in rules if r["id"] == match["id"]), None)
        if found is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        rules.remove(found)
        return _no_content()

    async def _get_risky_user(self, call: _Call, match: dict[str, str]) -> Response:
        risky = self._risky.get(match["id"])
        if risky is None:
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{match['id']}' does not exist.")
        return _ok(
            {"@odata.context": f"{GRAPH}/{call.version}/$metadata#identityProtection/riskyUsers/$entity", **risky}
        )

    async def _set_user_risk(self, call: _Call, match: dict[str, str]) -> Response:
        body = call.json()
        ids = body.get("userIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise GraphError(400, "BadRequest", "The request body must contain a non-empty 'userIds' array.")
        if match["verb"] == "confirmCompromised":
            state, level, detail = "confirmedCompromised", "high", "adminConfirmedUserCompromised"
        else:
            state, level, detail = "dismissed", "none", "adminDismissedAllRiskForUser"
        for user_id in ids:
            if user_id in self._users:  # unknown ids are ignored (U: what Graph does with them)
                self.set_user_risk(user_id, state, level, detail)
        return _no_content()

    # --- lookups ----------------------------------------------------------------------------------

    def _find_user(self, key: str) -> dict[str, Any] | None:
        if key in self._users:
            return self._users[key]
        lowered = key.lower()
        return next((u for u in self._users.values() if u["userPrincipalName"].lower() == lowered), None)

    def _require_user(self, key: str) -> dict[str, Any]:
        user = self._find_user(key)
        if user is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
            )
        return user

    def _require_group(self, key: str) -> dict[str, Any]:
        if key not in self._groups:
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist.")
        return self._groups[key]

    def _require_sp(self, key: str) -> dict[str, Any]:
        if key not in self._service_principals:
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist.")
        return self._service_principals[key]


def _ok(body: dict[str, Any], media_type: str = ODATA_JSON) -> Response:
    return Response(json.dumps(body), 200, {"request-id": str(uuid.uuid4())}, media_type=media_type)


def _no_content() -> Response:
    return Response(b"", 204, {"request-id": str(uuid.uuid4())})


def _iso(dt: datetime | None) -> str | None:
    return f"{_utc(dt):%Y-%m-%dT%H:%M:%SZ}" if dt is not None else None


def _error_body(code: str, message: str, now: datetime) -> dict[str, Any]:
    inner = {"date": f"{_utc(now):%Y-%m-%dT%H:%M:%S}", "request-id": str(uuid.uuid4())}
    return {"error": {"code": code, "message": message, "innerError": inner}}


def _strip_odata_type(value: Any) -> Any:
    """msgraph-sdk sends "@odata.type" with every model it serialises; Graph ignores it (§1.4)."""
    if isinstance(value, dict):
        return {k: _strip_odata_type(v) for k, v in value.items() if k != "@odata.type"}
    return value


def _complex_enough(password: Any) -> bool:
    """Entra's cloud rule: 8-256 characters, and three of lower case, upper case, digits, symbols."""
    if not isinstance(password, str) or not 8 <= len(password) <= 256:
        return False
    classes = [string.ascii_lowercase, string.ascii_uppercase, string.digits]
    found = [any(c in cls for c in password) for cls in classes]
    found.append(any(not c.isalnum() for c in password))
    return sum(found) >= 3


def _redact(body: bytes) -> bytes:
    """The request log never holds a password."""
    if b"assword" not in body:
        return body
    try:
        data = json.loads(body)
    except ValueError:
        return body
    return json.dumps(_scrub(data)).encode()


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: "<redacted>" if k.lower() in ("password", "newpassword") and isinstance(v, str) else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _parse_query(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def _user_json(user: dict[str, Any]) -> dict[str, Any]:
    body = {k: user[k] for k in _USER_FIELDS}
    for key in ("signInSessionsValidFromDateTime", "lastPasswordChangeDateTime"):
        body[key] = _iso(user[key])
    return body


def _fault_error(fault: Fault) -> GraphError:
    code = fault.error or _FAULT_CODES.get(fault.status, "generalException")
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    return GraphError(fault.status, code, f"Injected fault {fault.status}.", headers)


def _parse_top(raw: str | None) -> int:
    if raw is None:
        return MAX_PAGE
    if not raw.isdigit() or int(raw) < 1:
        raise GraphError(400, "invalidRequest", f"Invalid value '{raw}' for $top.")
    return min(int(raw), MAX_PAGE)


@dataclass(frozen=True)
class _Schema:
    """What `$filter` may name on one collection; anything else is a 400 as Graph answers."""

    entity: str
    times: frozenset[str] = frozenset()
    strings: frozenset[str] = frozenset()  # eq / ne, compared case-insensitively
    ints: frozenset[str] = frozenset()  # eq / ne on integer paths such as status/errorCode
    collections: frozenset[str] = frozenset()  # name/any(t: t eq '...')


SIGN_IN_FILTER = _Schema(
    "signIn",
    times=frozenset({"createdDateTime"}),
    strings=frozenset(
        {"userPrincipalName", "userId", "appId", "clientAppUsed", "riskLevelDuringSignIn", "riskState", "correlationId"}
    ),
    ints=frozenset({"status/errorCode"}),
    collections=frozenset({"signInEventTypes"}),
)
SIGN_IN_FILTER_V1 = _Schema(
    "signIn", SIGN_IN_FILTER.times, SIGN_IN_FILTER.strings, SIGN_IN_FILTER.ints, frozenset()
)  # v1.0 has no signInEventTypes (api-contracts.md §1.2)
RISK_DETECTION_FILTER = _Schema(
    "riskDetection",
    times=frozenset({"detectedDateTime", "lastUpdatedDateTime", "activityDateTime"}),
    strings=frozenset({"userId", "userPrincipalName", "riskEventType", "riskLevel", "riskState"}),
)
RISKY_USER_FILTER = _Schema(
    "riskyUser",
    times=frozenset({"riskLastUpdatedDateTime"}),
    strings=frozenset({"riskLevel", "riskState", "userPrincipalName"}),
)
RecordPredicate = Callable[[dict[str, Any]], bool]
_LEAF_TIME = re.compile(r"([A-Za-z]+)\s+(ge|le|gt|lt|eq)\s+(\S+)", re.IGNORECASE)
_LEAF_STRING = re.compile(r"([A-Za-z/]+)\s+(eq|ne)\s+'((?:[^']|'')*)'", re.IGNORECASE)
_LEAF_INT = re.compile(r"([A-Za-z/]+)\s+(eq|ne)\s+(-?\d+)", re.IGNORECASE)
_LEAF_ANY = re.compile(r"([A-Za-z]+)/any\((\w+)\s*:\s*(\w+)\s+eq\s+'((?:[^']|'')*)'\)", re.IGNORECASE)
_CONNECTIVE = re.compile(r"\s+(and|or)\s+", re.IGNORECASE)


def _path(record: dict[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _tokens(text: str) -> list[str]:
    """'(', ')', 'and', 'or' and leaf clauses; a leaf keeps its own quotes and any(...) parentheses."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text[i] in "()":
            out.append(text[i])
            i += 1
            continue
        m = re.match(r"(and|or)\b", text[i:], re.IGNORECASE)
        if m and out and out[-1] not in ("(", "and", "or"):
            out.append(m.group(1).lower())
            i += len(m.group(1))
            continue
        start, depth, quoted = i, 0, False
        while i < n:
            c = text[i]
            if c == "'":
                quoted = not quoted
            elif not quoted and c == "(":
                depth += 1
            elif not quoted and c == ")":
                if depth == 0:
                    break
                depth -= 1
            elif not quoted and depth == 0 and _CONNECTIVE.match(text, i):
                break
            i += 1
        out.append(text[start:i].strip())
    return out


def parse_filter(text: str, schema: _Schema) -> tuple[RecordPredicate, set[str]]:
    """An OData `$filter` (and, or, parentheses) as a predicate, and the property names it mentions."""
    tokens = _tokens(text.strip()) if text.strip() else []
    mentioned: set[str] = set()
    pos = 0

    def expect_more() -> str:
        if pos >= len(tokens):
            raise GraphError(400, "invalidRequest", f"Invalid filter: '{text}' ends too early.")
        return tokens[pos]

    def factor() -> RecordPredicate:
        nonlocal pos
        tok = expect_more()
        pos += 1
        if tok == "(":
            inner = disjunction()
            if pos >= len(tokens) or tokens[pos] != ")":
                raise GraphError(400, "invalidRequest", f"Invalid filter: unbalanced parentheses in '{text}'.")
            pos += 1
            return inner
        if tok in (")", "and", "or"):
            raise GraphError(400, "invalidRequest", f"Invalid filter: unexpected '{tok}' in '{text}'.")
        return _leaf(tok, schema, mentioned)

    def conjunction() -> RecordPredicate:
        nonlocal pos
        parts = [factor()]
        while pos < len(tokens) and tokens[pos] == "and":
            pos += 1
            parts.append(factor())
        return parts[0] if len(parts) == 1 else (lambda r: all(p(r) for p in parts))

    def disjunction() -> RecordPredicate:
        nonlocal pos
        parts = [conjunction()]
        while pos < len(tokens) and tokens[pos] == "or":
            pos += 1
            parts.append(conjunction())
        return parts[0] if len(parts) == 1 else (lambda r: any(p(r) for p in parts))

    if not tokens:
        return (lambda r: True), mentioned
    predicate = disjunction()
    if pos != len(tokens):
        raise GraphError(400, "invalidRequest", f"Invalid filter: unexpected '{tokens[pos]}' in '{text}'.")
    return predicate, mentioned


def _unknown_property(name: str, schema: _Schema) -> GraphError:
    return GraphError(
        400, "BadRequest", f"Could not find a property named '{name}' on type 'microsoft.graph.{schema.entity}'."
    )


def _leaf(clause: str, schema: _Schema, mentioned: set[str]) -> RecordPredicate:
    if m := _LEAF_ANY.fullmatch(clause):
        name, var, var2, wanted = m.group(1), m.group(2), m.group(3), m.group(4).replace("''", "'")
        if name not in schema.collections:
            raise _unknown_property(name, schema)
        if var != var2:
            raise GraphError(400, "invalidRequest", f"Invalid filter clause: '{clause}'.")
        mentioned.add(name)
        return lambda r: wanted in (r.get(name) or [])
    if m := _LEAF_TIME.fullmatch(clause):
        name, op, raw = m.group(1), m.group(2).lower(), m.group(3)
        if name in schema.times:
            compare = _COMPARE[op]
            try:
                bound = parse_graph_time(raw)
            except ValueError:
                raise GraphError(400, "invalidRequest", f"Invalid date in filter: '{raw}'.") from None
            mentioned.add(name)

            def on_time(r: dict[str, Any]) -> bool:
                value = r.get(name)
                return isinstance(value, str) and compare(parse_graph_time(value), bound)

            return on_time
    if m := _LEAF_STRING.fullmatch(clause):
        name, op, wanted = m.group(1), m.group(2).lower(), m.group(3).replace("''", "'").lower()
        if name in schema.strings:
            mentioned.add(name)
            if op == "eq":
                return lambda r: str(_path(r, name) or "").lower() == wanted
            return lambda r: str(_path(r, name) or "").lower() != wanted
    if m := _LEAF_INT.fullmatch(clause):
        name, op, number = m.group(1), m.group(2).lower(), int(m.group(3))
        if name in schema.ints:
            mentioned.add(name)
            if op == "eq":
                return lambda r: _path(r, name) == number
            return lambda r: _path(r, name) != number
    raise GraphError(400, "invalidRequest", f"Invalid filter clause: '{clause}' is not supported.")


SIGN_IN_PROPERTIES = frozenset(
    {
        "id",
        "createdDateTime",
        "userDisplayName",
        "userPrincipalName",
        "userId",
        "userType",
        "appId",
        "appDisplayName",
        "ipAddress",
        "ipAddressFromResourceProvider",
        "autonomousSystemNumber",
        "clientAppUsed",
        "userAgent",
        "correlationId",
        "originalRequestId",
        "conditionalAccessStatus",
        "isInteractive",
        "signInEventTypes",
        "tokenIssuerName",
        "tokenIssuerType",
        "processingTimeInMilliseconds",
        "riskDetail",
        "riskLevelAggregated",
        "riskLevelDuringSignIn",
        "riskState",
        "riskEventTypes",
        "riskEventTypes_v2",
        "resourceDisplayName",
        "resourceId",
        "resourceTenantId",
        "homeTenantId",
        "servicePrincipalId",
        "servicePrincipalName",
        "status",
        "deviceDetail",
        "location",
        "networkLocationDetails",
        "appliedConditionalAccessPolicies",
        "authenticationProtocol",
        "authenticationRequirement",
        "authenticationProcessingDetails",
        "authenticationMethodsUsed",
        "authenticationDetails",
        "uniqueTokenIdentifier",
        "mfaDetail",
        "flaggedForReview",
        "crossTenantAccessType",
        "incomingTokenType",
    }
)


def _parse_select(raw: str | None, known: frozenset[str], entity: str) -> list[str] | None:
    if not raw:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    for name in names:
        if name not in known:
            raise GraphError(
                400, "BadRequest", f"Could not find a property named '{name}' on type 'microsoft.graph.{entity}'."
            )
    return names


def _project(record: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """$select: the named properties only (Graph also always returns the entity's id)."""
    if select is None:
        return record
    return {k: record.get(k) for k in dict.fromkeys(["id", *select])}


def _next_link(call: _Call, path: str, token: str) -> str:
    query = [(k, call.params[k]) for k in ("$filter", "$top", "$select") if k in call.params]
    query.append(("$skiptoken", token))
    encoded = "&".join(f"{k}={quote(v, safe='')}" for k, v in query)
    return f"{call.base_url}/{call.version}/{path}?{encoded}"


class SyntheticSignIns:
    """A large tenant's sign-ins made on demand (no 15 M dicts in memory): record `i` happened at
    `start + i * 86400 / per_day` seconds and became visible `lag_s(i)` seconds later.

    The bench (bot/bench_graph.py) reads it like the real collection: newest first, `$top` pages,
    keyset `$skiptoken`, `createdDateTime ge/le` bounds and the ingestion lag."""

    _BOUND = re.compile(r"createdDateTime\s+(ge|le|gt|lt)\s+(\S+)", re.IGNORECASE)

    def __init__(
        self,
        start: datetime,
        per_day: int,
        *,
        users: int = 2000,
        lag_s: Callable[[int], float] | None = None,
    ) -> None:
        self.start = _utc(start)
        self.per_day = per_day
        self.step = 86_400 / per_day
        self.users = users
        self.lag_s = lag_s or (lambda i: 0.0)

    def created(self, i: int) -> datetime:
        return self.start + timedelta(seconds=i * self.step)

    def _visible(self, i: int, now: datetime) -> bool:
        return self.created(i) + timedelta(seconds=self.lag_s(i)) <= now

    def record(self, i: int) -> dict[str, Any]:
        u = i % self.users
        return graph_sign_in(
            record_id=f"syn-{i:012d}",
            at=self.created(i),
            upn=f"user{u}@contoso.example",
            user_id=f"00000000-0000-0000-0001-{u:012d}",
            name=f"User {u}",
            ip=f"198.51.100.{u % 250 + 1}",
            country="US",
            city="New York",
            correlation_id=f"corr-{i}",
        )

    def _index(self, at: datetime, op: str) -> int:
        offset = (at - self.start).total_seconds() / self.step
        exact = math.isclose(offset, round(offset), abs_tol=1e-6)
        if op in ("ge", "gt"):
            i = round(offset) if exact else math.ceil(offset)
            return i + 1 if op == "gt" and exact else i
        i = round(offset) if exact else math.floor(offset)
        return i - 1 if op == "lt" and exact else i

    def page(self, flt: str, skiptoken: str | None, top: int, now: datetime) -> tuple[list[dict[str, Any]], str | None]:
        lo, hi = 0, self._index(now, "le")
        for op, raw in self._BOUND.findall(flt):
            try:
                bound = parse_graph_time(raw)
            except ValueError:
                raise GraphError(400, "invalidRequest", f"Invalid date in filter: '{raw}'.") from None
            if op.lower() in ("ge", "gt"):
                lo = max(lo, self._index(bound, op.lower()))
            else:
                hi = min(hi, self._index(bound, op.lower()))
        if skiptoken:
            try:
                hi = min(hi, int(base64.urlsafe_b64decode(skiptoken + "=" * (-len(skiptoken) % 4)).decode()[2:]))
            except ValueError:
                raise GraphError(400, "invalidRequest", "Invalid $skiptoken.") from None
        out: list[dict[str, Any]] = []
        i = hi
        while i >= lo and len(out) < top:
            if self._visible(i, now):
                out.append(self.record(i))
            i -= 1
        while i >= lo and not self._visible(i, now):  # a nextLink only when another record follows
            i -= 1
        if i < lo:
            return out, None
        return out, base64.urlsafe_b64encode(f"s:{i}".encode()).decode().rstrip("=")


def _encode_skiptoken(key: tuple[datetime, str]) -> str:
    # Keyset, not offset: records arriving late (ingestion delay) must not shift the pages being read.
    raw = f"{format_graph_time(key[0])}|{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_skiptoken(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        created, record_id = raw.split("|", 1)
        return parse_graph_time(created), record_id
    except ValueError:
        raise GraphError(400, "invalidRequest", "Invalid $skiptoken.") from None
