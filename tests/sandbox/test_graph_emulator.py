"""The Graph emulator, driven by the real msgraph-sdk (kiota over httpx) the bot uses."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph.generated.audit_logs.sign_ins.sign_ins_request_builder import SignInsRequestBuilder
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
from msgraph.graph_request_adapter import GraphRequestAdapter  # `from msgraph import` fails mypy --strict
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from sandbox.graph import GraphEmulator, format_graph_time
from sandbox.server import LoopbackServer

TOKEN = "sandbox-graph-token"
UPN = "ada@contoso.example"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SignInQuery = SignInsRequestBuilder.SignInsRequestBuilderGetQueryParameters
UserQuery = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters


class StaticToken:
    """An async azure.core TokenCredential, which is what the async GraphServiceClient awaits."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> StaticToken:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Graph:
    emu: GraphEmulator
    url: str
    clock: Clock
    client: GraphServiceClient


def make_client(http: httpx.AsyncClient, base_url: str | None = None) -> GraphServiceClient:
    """The SDK stack the bot builds, on an httpx client the caller owns and closes."""
    # Without explicit scopes the provider would ask for "http://127.0.0.1/.default".
    provider = AzureIdentityAuthenticationProvider(StaticToken(TOKEN), scopes=["https://graph.microsoft.com/.default"])
    adapter = GraphRequestAdapter(provider, http)
    if base_url:
        adapter.base_url = base_url  # the setter, unlike httpx's base_url, gives no "//" (api-contracts §1.8)
    return GraphServiceClient(request_adapter=adapter)


@pytest.fixture
async def graph() -> AsyncIterator[Graph]:
    clock = Clock()
    emu = GraphEmulator(clock)
    emu.add_user("u1", UPN, "Ada Lovelace", sign_in_sessions_valid_from=T0 - timedelta(days=9))
    # msgraph-core's AsyncGraphTransport has no aclose(): closing the httpx client would leave its
    # connection pool open, so the test owns and closes the real transport.
    async with (
        LoopbackServer(emu.app, "graph") as url,
        httpx.AsyncHTTPTransport() as transport,
        httpx.AsyncClient(transport=transport) as http,
    ):
        client = make_client(GraphClientFactory.create_with_default_middleware(client=http), f"{url}/v1.0")
        yield Graph(emu, url, clock, client)


def sign_in(n: int, created: datetime, upn: str = "ada@contoso.example") -> dict[str, Any]:
    return {
        "id": f"00000000-0000-0000-0000-{n:012d}",
        "createdDateTime": format_graph_time(created),
        "userPrincipalName": upn,
        "userId": "u1",
        "appDisplayName": "Office 365 Exchange Online",
        "ipAddress": "203.0.113.7",
        "clientAppUsed": "Browser",
        "status": {"errorCode": 0, "failureReason": None, "additionalDetails": None},
        "location": {"city": "Lisbon", "countryOrRegion": "PT"},
    }


async def test_sign_ins_filter_and_paging(graph: Graph) -> None:
    start = T0 - timedelta(hours=5)
    for n in range(2600):
        graph.emu.add_sign_in(sign_in(n, start + timedelta(seconds=6 * n)))
    graph.clock.now = start + timedelta(days=1)
    # msgraph-sdk spends ~4 ms of CPU deserialising each sign-in, so the SDK reads a narrow window in
    # small pages; the 1000-record pages are checked over raw HTTP below.
    low, high = start + timedelta(seconds=6 * 100), start + timedelta(seconds=6 * 224)
    # Any number of fractional digits is accepted, as Graph does.
    window = f"createdDateTime ge {format_graph_time(low)} and createdDateTime le {high:%Y-%m-%dT%H:%M:%SZ}"
    query = SignInQuery(filter=window, top=50)
    page = await graph.client.audit_logs.sign_ins.get(RequestConfiguration(query_parameters=query))
    pages = [page]
    while page and page.odata_next_link:
        assert page.odata_next_link.startswith(f"{graph.url}/v1.0/auditLogs/signIns?")
        page = await graph.client.audit_logs.sign_ins.with_url(page.odata_next_link).get()
        pages.append(page)

    assert [len(p.value or []) for p in pages if p] == [50, 50, 25]
    created = [s.created_date_time for p in pages if p for s in p.value or []]
    assert created == sorted(created, reverse=True)  # type: ignore[type-var]
    assert created[0] == high and created[-1] == low and len(set(created)) == 125
    # kiota's ParametersNameDecodingHandler turns %24filter back into $filter on the wire.
    first = graph.emu.requests[0]
    assert first.query.startswith("$filter=createdDateTime%20ge%202026-03-02T04%3A10%3A00.0000000Z%20and%20")
    assert all(r.params["$top"] == "50" and "$filter" in r.params for r in graph.emu.requests)


async def test_default_page_is_1000_and_top_is_capped(graph: Graph) -> None:
    for n in range(2500):
        graph.emu.add_sign_in(sign_in(n, T0 - timedelta(seconds=n + 1)))
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        sizes, ids = [], set()
        url: str | None = f"{graph.url}/v1.0/auditLogs/signIns"
        while url:
            body = (await http.get(url)).json()
            sizes.append(len(body["value"]))
            ids |= {s["id"] for s in body["value"]}
            url = body.get("@odata.nextLink")
        capped = await http.get(f"{graph.url}/v1.0/auditLogs/signIns", params={"$top": "5000"})
    assert sizes == [1000, 1000, 500] and len(ids) == 2500
    assert body["@odata.context"] == "https://graph.microsoft.com/v1.0/$metadata#auditLogs/signIns"
    assert len(capped.json()["value"]) == 1000 and "$top=5000" in capped.json()["@odata.nextLink"]


async def test_filter_on_user_and_unknown_filters(graph: Graph) -> None:
    graph.emu.add_sign_in(sign_in(1, T0 - timedelta(minutes=1)))
    graph.emu.add_sign_in(sign_in(2, T0 - timedelta(minutes=2), upn="eve@contoso.example"))
    upn_filter = "userPrincipalName eq 'ADA@contoso.example' and createdDateTime lt 2026-03-02T09:00:00Z"
    async with httpx.AsyncClient(base_url=graph.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        by_user = await http.get("/beta/auditLogs/signIns", params={"$filter": upn_filter})
        bad = await http.get("/v1.0/auditLogs/signIns", params={"$filter": "ipAddress eq '203.0.113.7'"})
    assert [s["id"][-1] for s in by_user.json()["value"]] == ["1"]
    assert by_user.json()["@odata.context"].endswith("/beta/$metadata#auditLogs/signIns")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalidRequest"


async def test_ingestion_delay_hides_records(graph: Graph) -> None:
    graph.emu.add_sign_in(sign_in(1, T0), available_at=T0 + timedelta(minutes=4))
    graph.emu.add_sign_in(sign_in(2, T0 - timedelta(minutes=1)))
    graph.clock.now = T0 + timedelta(minutes=1)
    early = await graph.client.audit_logs.sign_ins.get()
    graph.clock.now = T0 + timedelta(minutes=4)
    late = await graph.client.audit_logs.sign_ins.get()
    assert early and [s.id for s in early.value or []] == ["00000000-0000-0000-0000-000000000002"]
    assert late and len(late.value or []) == 2 and late.value and late.value[0].created_date_time == T0


async def test_revoke_sign_in_sessions(graph: Graph) -> None:
    graph.clock.now = T0 + timedelta(microseconds=654321)
    result = await graph.client.users.by_user_id(UPN).revoke_sign_in_sessions.post()
    assert result is not None and result.value is True
    assert graph.emu.user("u1")["signInSessionsValidFromDateTime"] == "2026-03-02T09:00:00Z"
    assert graph.emu.calls("POST", r"/v1\.0/users/ada@contoso\.example/revokeSignInSessions") == 1
    path = f"/v1.0/users/{UPN}/revokeSignInSessions"
    assert graph.emu.writes() == [{"provider": "microsoft", "method": "POST", "path": path}]


async def test_get_user_with_select(graph: Graph) -> None:
    query = UserQuery(select=["displayName", "accountEnabled", "signInSessionsValidFromDateTime"])
    user = await graph.client.users.by_user_id("u1").get(RequestConfiguration(query_parameters=query))
    assert user is not None
    assert (user.id, user.display_name, user.account_enabled) == ("u1", "Ada Lovelace", True)
    assert user.sign_in_sessions_valid_from_date_time == T0 - timedelta(days=9)
    assert user.user_principal_name is None  # not selected
    assert graph.emu.requests[-1].params["$select"] == ",".join(query.select or [])


async def test_unknown_user_is_an_odata_error(graph: Graph) -> None:
    with pytest.raises(ODataError) as caught:
        await graph.client.users.by_user_id("nobody").get()
    err = caught.value
    assert err.response_status_code == 404
    assert err.error is not None and err.error.code == "Request_ResourceNotFound"
    assert err.error.inner_error is not None and err.error.inner_error.request_id
    assert graph.emu.writes() == []


async def test_auth_and_routing_errors(graph: Graph) -> None:
    async with httpx.AsyncClient(base_url=graph.url) as http:
        anonymous = await http.get("/v1.0/users/u1", headers={"client-request-id": "crid-1"})
        wrong = await http.get("/v1.0/users/u1", headers={"Authorization": "Bearer nope"})
        unknown = await http.get("/v1.0/usersx/u1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert anonymous.headers["content-type"] == "application/json"
    error = anonymous.json()["error"]
    assert error["code"] == "InvalidAuthenticationToken"
    assert error["innerError"]["client-request-id"] == "crid-1"
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "BadRequest"
    assert "segment 'u1'" in unknown.json()["error"]["message"]
    assert [r.status for r in graph.emu.requests] == [401, 401, 400]


async def test_injected_429_is_retried_by_kiota(graph: Graph) -> None:
    graph.emu.faults.inject(r"^GET /v1\.0/users/u1$", 429, retry_after=1)
    user = await graph.client.users.by_user_id("u1").get()
    assert user is not None and user.user_principal_name == UPN
    first, second = graph.emu.requests
    assert graph.emu.calls("GET", "/v1.0/users/u1") == 2
    assert (first.status, first.error, second.status) == (429, "TooManyRequests", 200)
    assert second.at - first.at >= 0.9
    assert second.headers.get("retry-attempt") == "1"


async def test_injected_503_error_code(graph: Graph) -> None:
    graph.emu.faults.inject("revokeSignInSessions", 503)
    async with httpx.AsyncClient(base_url=graph.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        failed = await http.post("/v1.0/users/u1/revokeSignInSessions")
        done = await http.post("/v1.0/users/u1/revokeSignInSessions")
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "serviceNotAvailable"
    assert done.status_code == 200 and done.json()["value"] is True
    assert len(graph.emu.writes()) == 1  # the refused attempt never reached the directory


async def test_reports_budget_throttles_the_sixth_request(graph: Graph) -> None:
    async with httpx.AsyncClient(base_url=graph.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        replies = [await http.get("/v1.0/auditLogs/signIns") for _ in range(6)]
        user = await http.get("/v1.0/users/u1")  # other families are not in the reports budget
    assert [r.status_code for r in replies] == [200] * 5 + [429]
    assert replies[-1].json()["error"]["code"] == "TooManyRequests"
    assert 1 <= int(replies[-1].headers["retry-after"]) <= 10
    assert user.status_code == 200
    assert graph.emu.requests[5].status == 429 and not graph.emu.requests[5].handled


async def test_double_slash_from_httpx_base_url_is_collapsed(graph: Graph) -> None:
    # The msgraph-sdk trap: an httpx client with base_url=.../v1.0 produces /v1.0//users/...
    async with (
        httpx.AsyncHTTPTransport() as transport,
        httpx.AsyncClient(transport=transport, base_url=f"{graph.url}/v1.0") as http,
    ):
        client = make_client(GraphClientFactory.create_with_default_middleware(client=http))
        user = await client.users.by_user_id("u1").get()
    assert user is not None and user.display_name == "Ada Lovelace"
    assert graph.emu.requests[-1].path == "/v1.0/users/u1"


# --- containment endpoints and $batch (api-contracts §1.3-1.5) ----------------------------------------

AUTH = {"Authorization": f"Bearer {TOKEN}"}
REF = {"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/u1"}


async def test_patch_user_ignores_odata_type_and_checks_passwords(graph: Graph) -> None:
    async with httpx.AsyncClient(base_url=graph.url, headers=AUTH) as http:
        block = await http.patch(
            "/v1.0/users/u1", json={"@odata.type": "#microsoft.graph.user", "accountEnabled": False}
        )
        weak = await http.patch("/v1.0/users/u1", json={"passwordProfile": {"password": "password1"}})
        strong = {"passwordProfile": {"password": "Xk4!pQ9#mW2$vL7&", "forceChangePasswordNextSignIn": True}}
        reset = await http.patch("/v1.0/users/u1", json=strong)
        unknown = await http.patch("/v1.0/users/u1", json={"shoeSize": 9})
    assert block.status_code == 204 and block.content == b"" and graph.emu.user("u1")["accountEnabled"] is False
    assert weak.status_code == 400 and weak.json()["error"]["code"] == "Request_BadRequest"
    assert "complexity" in weak.json()["error"]["message"]
    assert reset.status_code == 204 and graph.emu.password_profile("u1") == {
        "password": "password set at 2026-03-02T09:00:00Z",
        "forceChangePasswordNextSignIn": True,
        "forceChangePasswordNextSignInWithMfa": False,
    }
    assert unknown.status_code == 400
    assert all(b"Xk4!" not in r.body and b"password1" not in r.body for r in graph.emu.requests)
    assert [w["method"] for w in graph.emu.writes()] == ["PATCH", "PATCH"]  # refused ones did not write


async def test_group_members_ref(graph: Graph) -> None:
    graph.emu.add_group("g1")
    async with httpx.AsyncClient(base_url=graph.url, headers=AUTH) as http:
        added = await http.post("/v1.0/groups/g1/members/$ref", json=REF)
        again = await http.post("/v1.0/groups/g1/members/$ref", json=REF)
        ghost = await http.post("/v1.0/groups/g1/members/$ref", json={"@odata.id": REF["@odata.id"][:-2] + "x9"})
        found = await http.get("/v1.0/groups/g1/members", params={"$filter": "id eq 'u1'", "$count": "true"})
        none = await http.get("/v1.0/groups/g1/members", params={"$filter": "id eq 'u2'"})
    assert added.status_code == 204
    assert again.status_code == 400 and again.json()["error"] == {
        **again.json()["error"],
        "code": "Request_BadRequest",
        "message": "One or more added object references already exist for the following modified properties: "
        "'members'.",
    }
    assert ghost.status_code == 404
    assert found.json()["value"] == [{"@odata.type": "#microsoft.graph.user", "id": "u1"}]
    assert found.json()["@odata.count"] == 1 and none.json()["value"] == []
    assert len(graph.emu.writes()) == 1


async def test_auth_methods_grants_rules_and_per_user_mfa(graph: Graph) -> None:
    graph.emu.add_auth_method("u1", "fido2", "f1", T0)
    graph.emu.add_auth_method("u1", "phone", "p1")
    graph.emu.add_grant("g1", "sp1", principal_id="u1")
    graph.emu.add_grant("g2", "sp1")
    rule = graph.emu.add_message_rule("u1", "fwd", actions={"forwardTo": []})
    async with httpx.AsyncClient(base_url=graph.url, headers=AUTH) as http:
        methods = (await http.get("/v1.0/users/u1/authentication/methods")).json()["value"]
        wrong_type = await http.delete("/v1.0/users/u1/authentication/phoneMethods/f1")
        deleted = await http.delete("/v1.0/users/u1/authentication/fido2Methods/f1")
        password = await http.delete(f"/v1.0/users/u1/authentication/passwordMethods/{methods[0]['id']}")
        mine = await http.get(
            "/v1.0/oauth2PermissionGrants", params={"$filter": "clientId eq 'sp1' and principalId eq 'u1'"}
        )
        bad_filter = await http.get("/v1.0/oauth2PermissionGrants", params={"$filter": "startswith(scope,'Mail')"})
        grant = [await http.delete("/v1.0/oauth2PermissionGrants/g1") for _ in range(2)]
        rules = (await http.get("/v1.0/users/u1/mailFolders/inbox/messageRules")).json()["value"]
        rule_gone = [await http.delete(f"/v1.0/users/u1/mailFolders/inbox/messageRules/{rule}") for _ in range(2)]
        v1_mfa = await http.patch("/v1.0/users/u1/authentication/requirements", json={"perUserMfaState": "enforced"})
        beta_mfa = await http.patch("/beta/users/u1/authentication/requirements", json={"perUserMfaState": "enabled"})
        mfa_state = await http.get("/beta/users/u1/authentication/requirements")
    assert [(m["@odata.type"].split(".")[-1], m["createdDateTime"]) for m in methods] == [
        ("passwordAuthenticationMethod", None),
        ("fido2AuthenticationMethod", "2026-03-02T09:00:00Z"),
        ("phoneAuthenticationMethod", None),
    ]
    assert wrong_type.status_code == 404 and deleted.status_code == 204 and password.status_code == 400
    assert [g["id"] for g in mine.json()["value"]] == ["g1"] and bad_filter.status_code == 400
    assert [r.status_code for r in grant] == [204, 404]
    assert rules[0]["id"] == rule and "createdDateTime" not in rules[0]
    assert [r.status_code for r in rule_gone] == [204, 404]
    assert rule_gone[1].json()["error"]["code"] == "ErrorItemNotFound"
    assert v1_mfa.status_code == 400  # beta only
    assert beta_mfa.status_code == 204 and mfa_state.json()["perUserMfaState"] == "enforced"  # had a method


async def test_identity_protection_throttle_has_no_retry_after(graph: Graph) -> None:
    graph.emu.set_user_risk("u1")
    async with httpx.AsyncClient(base_url=graph.url, headers=AUTH) as http:
        first = await http.post("/v1.0/identityProtection/riskyUsers/confirmCompromised", json={"userIds": ["u1"]})
        second = await http.get("/v1.0/identityProtection/riskyUsers/u1")
        graph.emu.set_budget("identity_protection", None)
        read = await http.get("/v1.0/identityProtection/riskyUsers/u1")
        empty = await http.post("/v1.0/identityProtection/riskyUsers/dismiss", json={"userIds": []})
        dismissed = await http.post("/v1.0/identityProtection/riskyUsers/dismiss", json={"userIds": ["u1"]})
    assert first.status_code == 204
    assert second.status_code == 429 and "retry-after" not in second.headers
    assert read.json()["riskState"] == "confirmedCompromised" and read.json()["riskLevel"] == "high"
    assert empty.status_code == 400 and dismissed.status_code == 204
    assert graph.emu.risky_user("u1") is not None and (graph.emu.risky_user("u1") or {})["riskState"] == "dismissed"


async def test_batch(graph: Graph) -> None:
    graph.emu.add_group("g1")
    requests = [
        {
            "id": "1",
            "method": "PATCH",
            "url": "/users/u1",
            "headers": {"Content-Type": "application/json"},
            "body": {"accountEnabled": False},
        },
        {
            "id": "2",
            "method": "POST",
            "url": "/groups/g1/members/$ref",
            "headers": {"Content-Type": "application/json"},
            "body": REF,
        },
        {"id": "3", "method": "GET", "url": "/users/nobody"},
        {"id": "4", "method": "POST", "url": "/users/u1/revokeSignInSessions", "dependsOn": ["3"]},
        {"id": "5", "method": "GET", "url": f"{graph.url}/v1.0/users/u1"},  # msgraph-core's absolute URL
        {"id": "6", "method": "PATCH", "url": "/users/u1", "body": {"accountEnabled": True}},  # no Content-Type
    ]
    async with httpx.AsyncClient(base_url=graph.url, headers=AUTH) as http:
        ok = await http.post("/v1.0/$batch", json={"requests": requests})
        dup = await http.post("/v1.0/$batch", json={"requests": [requests[2], {**requests[2], "id": "3"}]})
        big = await http.post("/v1.0/$batch", json={"requests": [{**requests[2], "id": str(i)} for i in range(21)]})
        junk = await http.post("/v1.0/$batch", content=b"{not json", headers={"Content-Type": "application/json"})
    assert ok.status_code == 200
    replies = ok.json()["responses"]
    assert [r["id"] for r in replies] == ["6", "5", "4", "3", "2", "1"]  # any order: match on id
    status = {r["id"]: r["status"] for r in replies}
    assert status == {"1": 204, "2": 204, "3": 404, "4": 424, "5": 400, "6": 400}
    assert {r["id"]: r.get("body", {}).get("error", {}).get("code") for r in replies if r["status"] >= 400} == {
        "3": "Request_ResourceNotFound",
        "4": "FailedDependency",
        "5": "BadRequest",
        "6": "BadRequest",
    }
    assert [r.status_code for r in (dup, big, junk)] == [400, 400, 400]
    assert graph.emu.writes() == [
        {"provider": "microsoft", "method": "PATCH", "path": "/v1.0/users/u1"},
        {"provider": "microsoft", "method": "POST", "path": "/v1.0/groups/g1/members/$ref"},
    ]
    assert graph.emu.user("u1")["accountEnabled"] is False and graph.emu.group_members("g1") == ["u1"]
