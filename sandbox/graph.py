"""Loopback emulator of the Microsoft Graph calls Mailwarden makes (api-contracts §1.2, §1.4, §1.6-1.8)."""

from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.recorder import Fault, Faults, RecordedRequest, SlidingWindow, capture

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
)
# " and " outside single-quoted literals.
_AND = re.compile(r"\s+and\s+(?=(?:[^']*'[^']*')*[^']*$)", re.IGNORECASE)
_TIME_CLAUSE = re.compile(r"createdDateTime\s+(ge|le|gt|lt|eq)\s+(\S+)", re.IGNORECASE)
_STRING_CLAUSE = re.compile(r"(userPrincipalName|userId)\s+eq\s+'((?:[^']|'')*)'", re.IGNORECASE)
_ERROR_CODE_CLAUSE = re.compile(r"status/errorCode\s+eq\s+(-?\d+)", re.IGNORECASE)
_COMPARE: dict[str, Callable[[datetime, datetime], bool]] = {
    "ge": lambda a, b: a >= b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "lt": lambda a, b: a < b,
    "eq": lambda a, b: a == b,
}


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def format_graph_time(dt: datetime) -> str:
    """Graph's sign-in timestamp form: 7 fractional digits and "Z"."""
    dt = _utc(dt)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond:06d}0Z"


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


Predicate = Callable[[_SignIn], bool]
Handler = Callable[[Request, str, dict[str, str]], Awaitable[Response]]


class GraphEmulator:
    def __init__(
        self,
        clock: Callable[[], datetime],
        *,
        token: str = "sandbox-graph-token",
        tenant_id: str = "00000000-0000-0000-0000-00000000a11c",
        reports_budget: tuple[int, float] | None = (5, 10.0),
    ) -> None:
        self.clock = clock
        self.token = token
        self.tenant_id = tenant_id
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self._users: dict[str, dict[str, Any]] = {}
        self._sign_ins: list[_SignIn] = []
        self._reports = SlidingWindow(*reports_budget) if reports_budget else None
        # (method, path after the version, handler, counts against the reports budget)
        self._routes: list[tuple[str, re.Pattern[str], Handler, bool]] = [
            ("GET", re.compile(r"/auditLogs/signIns"), self._list_sign_ins, True),
            ("GET", re.compile(r"/users/(?P<user>[^/]+)"), self._get_user, False),
            ("POST", re.compile(r"/users/(?P<user>[^/]+)/revokeSignInSessions"), self._revoke, False),
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
        }

    def add_sign_in(self, record: dict[str, Any], *, available_at: datetime | None = None) -> None:
        created = parse_graph_time(record["createdDateTime"])
        visible = _utc(available_at) if available_at else created
        self._sign_ins.append(_SignIn(copy.deepcopy(record), created, visible))

    def user(self, id_or_upn: str) -> dict[str, Any]:
        user = self._find_user(id_or_upn)
        if user is None:
            raise KeyError(id_or_upn)
        return _user_json(user)

    def calls(self, method: str, path_regex: str) -> int:
        return sum(1 for r in self.requests if r.method == method and re.fullmatch(path_regex, r.path))

    def writes(self) -> list[dict[str, str]]:
        """The changes that reached the directory: not the ones refused by auth, a fault or throttling."""
        return [
            {"provider": "microsoft", "method": r.method, "path": r.path}
            for r in self.requests
            if r.method != "GET" and r.handled
        ]

    format_graph_time = staticmethod(format_graph_time)

    # --- HTTP -------------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        rec = await capture(request)
        self.requests.append(rec)
        try:
            response = await self._handle(request, rec)
        except GraphError as err:
            rec.error = err.code
            response = self._error(rec, err)
        rec.status = response.status_code
        return response

    async def _handle(self, request: Request, rec: RecordedRequest) -> Response:
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
        version, rest = versioned.group(1), (versioned.group(2) or "/").rstrip("/") or "/"
        path_known = False
        for method, pattern, handler, reports in self._routes:
            match = pattern.fullmatch(rest)
            if not match:
                continue
            path_known = True
            if method == rec.method:
                if reports and self._reports:
                    self._spend_reports_budget(self._reports)
                rec.handled = True
                return await handler(request, version, match.groupdict())
        if path_known:
            raise GraphError(405, "Request_BadRequest", f"{rec.method} is not allowed on this resource.")
        segment = rest.rstrip("/").rsplit("/", 1)[-1]
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")

    @staticmethod
    def _spend_reports_budget(budget: SlidingWindow) -> None:
        wait = budget.admit()
        if wait:
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

    # --- operations -------------------------------------------------------------------------------

    async def _list_sign_ins(self, request: Request, version: str, _: dict[str, str]) -> Response:
        params = request.query_params
        top = _parse_top(params.get("$top"))
        predicates = _parse_filter(params.get("$filter", ""))
        after = _decode_skiptoken(params["$skiptoken"]) if "$skiptoken" in params else None
        now = _utc(self.clock())
        rows = sorted(
            (s for s in self._sign_ins if s.available_at <= now and all(p(s) for p in predicates)),
            key=lambda s: s.key,
            reverse=True,
        )
        if after is not None:
            rows = [s for s in rows if s.key < after]
        body: dict[str, Any] = {
            "@odata.context": f"{GRAPH}/{version}/$metadata#auditLogs/signIns",
            "value": [copy.deepcopy(s.record) for s in rows[:top]],
        }
        if len(rows) > top:
            query = [(k, params[k]) for k in ("$filter", "$top", "$select") if k in params]
            query.append(("$skiptoken", _encode_skiptoken(rows[top - 1].key)))
            encoded = "&".join(f"{k}={quote(v, safe='')}" for k, v in query)
            base = str(request.base_url).rstrip("/")
            body["@odata.nextLink"] = f"{base}/{version}/auditLogs/signIns?{encoded}"
        return _ok(body)

    async def _get_user(self, request: Request, version: str, match: dict[str, str]) -> Response:
        user = self._require_user(match["user"])
        body = _user_json(user)
        context = "users/$entity"
        if select := request.query_params.get("$select"):
            names = ["id"] + [n.strip() for n in select.split(",") if n.strip() and n.strip() != "id"]
            by_lower = {k.lower(): k for k in body}
            # Graph has many user properties this emulator does not model; they come back as null.
            body = {by_lower.get(n.lower(), n): body.get(by_lower.get(n.lower(), n)) for n in names}
            context = f"users({','.join(body)})/$entity"
        return _ok({"@odata.context": f"{GRAPH}/{version}/$metadata#{context}", **body})

    async def _revoke(self, request: Request, version: str, match: dict[str, str]) -> Response:
        user = self._require_user(match["user"])
        user["signInSessionsValidFromDateTime"] = _utc(self.clock()).replace(microsecond=0)
        return _ok({"@odata.context": f"{GRAPH}/{version}/$metadata#Edm.Boolean", "value": True})

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


def _ok(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), 200, {"request-id": str(uuid.uuid4())}, media_type=ODATA_JSON)


def _user_json(user: dict[str, Any]) -> dict[str, Any]:
    body = {k: user[k] for k in _USER_FIELDS}
    valid_from = user["signInSessionsValidFromDateTime"]
    if valid_from is not None:
        body["signInSessionsValidFromDateTime"] = f"{_utc(valid_from):%Y-%m-%dT%H:%M:%SZ}"
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


def _parse_filter(text: str) -> list[Predicate]:
    predicates: list[Predicate] = []
    for clause in _AND.split(text.strip()) if text.strip() else []:
        predicates.append(_parse_clause(clause.strip()))
    return predicates


def _parse_clause(clause: str) -> Predicate:
    if m := _TIME_CLAUSE.fullmatch(clause):
        compare = _COMPARE[m.group(1).lower()]
        try:
            bound = parse_graph_time(m.group(2))
        except ValueError:
            raise GraphError(400, "invalidRequest", f"Invalid date in filter: '{m.group(2)}'.") from None
        return lambda s: compare(s.created, bound)
    if m := _STRING_CLAUSE.fullmatch(clause):
        field, wanted = m.group(1), m.group(2).replace("''", "'").lower()
        name = "userPrincipalName" if field.lower() == "userprincipalname" else "userId"
        return lambda s: str(s.record.get(name, "")).lower() == wanted
    if m := _ERROR_CODE_CLAUSE.fullmatch(clause):
        code = int(m.group(1))
        return lambda s: (s.record.get("status") or {}).get("errorCode") == code
    raise GraphError(400, "invalidRequest", f"Invalid filter clause: '{clause}' is not supported.")


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
