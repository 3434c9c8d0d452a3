"""Graph `signIn` records in the wire format (api-contracts.md §1.2), for everything that makes them up:
the sandbox's people, the labelled scenario, the emulator's synthetic tenant and the pipeline benchmark.

One builder, so the shape the product is tested against is written once; each caller passes only what
it varies (who, when, where, with what, and whether it worked).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bot.sources.normalize_o365 import LOGON_ERROR_CODES

EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
EXCHANGE = "Office 365 Exchange Online"
EDGE_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Edg/131.0"
WRONG_PASSWORD = "Invalid username or password."


def format_graph_time(dt: datetime) -> str:
    """Graph's sign-in timestamp form: 7 fractional digits and "Z"."""
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond:06d}0Z"


def graph_sign_in(
    *,
    record_id: str,
    at: datetime,
    upn: str,
    user_id: str,
    name: str,
    ip: str,
    country: str,
    city: str,
    correlation_id: str,
    latitude: float | None = None,
    longitude: float | None = None,
    app: str = EXCHANGE,
    resource: str | None = None,
    client: str = "Browser",
    user_agent: str = EDGE_UA,
    code: int = 0,
    failure_reason: str = WRONG_PASSWORD,
    conditional_access: str = "notApplied",
    asn: int | None = None,
    protocol: str | None = None,
    risk_types: Sequence[str] = (),
    risk_level: str = "none",
    risk_state: str = "none",
    device_id: str = "",
    device_name: str | None = None,
    operating_system: str = "Windows 10",
    browser: str = "Edge 131",
    compliant: bool | None = None,
    managed: bool | None = None,
    trust_type: str | None = None,
    policies: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """One v1.0 signIn record (`autonomousSystemNumber` and `authenticationProtocol`, beta fields that
    Graph also returns on v1.0 today, only when given)."""
    record: dict[str, Any] = {
        "id": record_id,
        "createdDateTime": format_graph_time(at),
        "userDisplayName": name,
        "userPrincipalName": upn,
        "userId": user_id,
        "appId": EXCHANGE_APP_ID,
        "appDisplayName": app,
        "ipAddress": ip,
        "clientAppUsed": client,
        "correlationId": correlation_id,
        "conditionalAccessStatus": conditional_access,
        "isInteractive": True,
        "riskDetail": "none",
        "riskLevelAggregated": "none",
        "riskLevelDuringSignIn": risk_level,
        "riskState": risk_state,
        "riskEventTypes": [],
        "riskEventTypes_v2": list(risk_types),
        "resourceDisplayName": resource or app,
        "resourceId": EXCHANGE_APP_ID,
        "userAgent": user_agent,
        "status": {
            "errorCode": code,
            "failureReason": None if code == 0 else failure_reason,
            "additionalDetails": None,
        },
        "deviceDetail": {
            "deviceId": device_id,
            "displayName": device_name,
            "operatingSystem": operating_system,
            "browser": browser,
            "isCompliant": compliant,
            "isManaged": managed,
            "trustType": trust_type,
        },
        "location": {
            "city": city,
            "state": None,
            "countryOrRegion": country,
            "geoCoordinates": {"altitude": None, "latitude": latitude, "longitude": longitude},
        },
        "appliedConditionalAccessPolicies": list(policies),
    }
    if asn is not None:
        record["autonomousSystemNumber"] = asn
    if protocol is not None:
        record["authenticationProtocol"] = protocol
    return record


# The LogonError name STS logon records carry beside ErrorNumber (detections.md §2.3), by AADSTS code.
LOGON_ERROR_NAMES = {code: name for name, code in LOGON_ERROR_CODES.items()}


def sts_logon(
    *,
    record_id: str,
    at: datetime,
    upn: str,
    user_id: str,
    ip: str,
    user_agent: str,
    code: int = 0,
    app_id: str = EXCHANGE_APP_ID,
    operating_system: str = "Windows10",
    browser: str = "Edge",
    compliant: bool = False,
    request_type: str = "Login:login",
) -> dict[str, Any]:
    """The unified audit log's copy of one sign-in (Audit.AzureActiveDirectory, RecordType 15), as the
    Office 365 Management Activity API serves it: `CreationTime` without a zone, the outcome in the
    Operation and ErrorNumber (ResultStatus "Success" means only that the call was logged), the client
    in [{Name, Value}] lists (detections.md §2.3, the Panther and Elastic samples)."""
    failed = code != 0
    return {
        "CreationTime": f"{at.astimezone(UTC):%Y-%m-%dT%H:%M:%S}",
        "Id": record_id,
        "Operation": "UserLoginFailed" if failed else "UserLoggedIn",
        "OrganizationId": "contoso-org",
        "RecordType": 15,
        "ResultStatus": "Success",
        "UserKey": user_id,
        "UserType": 0,
        "Version": 1,
        "Workload": "AzureActiveDirectory",
        "ClientIP": ip,
        "ObjectId": app_id,
        "UserId": upn,
        "AzureActiveDirectoryEventType": 1,
        "ExtendedProperties": [
            {"Name": "ResultStatusDetail", "Value": "Failure" if failed else "Success"},
            {"Name": "UserAgent", "Value": user_agent},
            {"Name": "RequestType", "Value": request_type},
        ],
        "ModifiedProperties": [],
        "Actor": [{"ID": user_id, "Type": 0}, {"ID": upn, "Type": 5}],
        "ActorIpAddress": ip,
        "ApplicationId": app_id,
        "DeviceProperties": [
            {"Name": "OS", "Value": operating_system},
            {"Name": "BrowserType", "Value": browser},
            {"Name": "IsCompliantAndManaged", "Value": str(compliant)},
        ],
        "ErrorNumber": str(code),
        **({"LogonError": LOGON_ERROR_NAMES.get(code, "AuthenticationFailed")} if failed else {}),
    }


def sts_logon_of(graph: dict[str, Any]) -> dict[str, Any]:
    """The STS logon that the unified audit log holds for a Graph sign-in record (its id prefixed
    `sts-`): what a tenant reading both sources gets twice. A non-interactive sign-in's copy is a token
    redemption at the OAuth token endpoint (RequestType OAuth2:Token), and so is a password grant's."""
    noninteractive = graph.get("isInteractive") is False or "nonInteractiveUser" in graph.get("signInEventTypes", ())
    password_grant = graph.get("authenticationProtocol") == "ropc"  # also at the token endpoint
    return sts_logon(
        record_id=f"sts-{graph['id']}",
        at=datetime.fromisoformat(graph["createdDateTime"]),
        upn=graph["userPrincipalName"],
        user_id=graph["userId"],
        ip=graph["ipAddress"],
        user_agent=graph["userAgent"],
        code=graph["status"]["errorCode"],
        request_type="OAuth2:Token" if noninteractive or password_grant else "Login:login",
    )
