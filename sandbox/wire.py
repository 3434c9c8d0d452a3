"""Graph `signIn` records in the wire format (api-contracts.md §1.2), for everything that makes them up:
the sandbox's people, the labelled scenario, the emulator's synthetic tenant and the pipeline benchmark.

One builder, so the shape the product is tested against is written once; each caller passes only what
it varies (who, when, where, with what, and whether it worked).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

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
