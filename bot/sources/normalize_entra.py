"""Microsoft Graph `signIn` wire record -> Event. Pure; the only place these dicts are read.

Field shapes: reference/api-contracts.md §1.2 and detections.md §2.1. Real records vary
(null nested objects, string-typed error codes, 7-digit fractions), so every read has a default
and a record is rejected only when it lacks what a detection cannot do without.

Both the v1.0 and the beta shape are read (beta adds `signInEventTypes`, `authenticationProtocol`,
`autonomousSystemNumber`…), interactive and non-interactive alike, and so is the Azure Monitor
export that wraps the same object in `properties` (the form Panther, Elastic and Sentinel rules use).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgspec

from bot.model import APP_PREFIX, Event, Rejection
from bot.sources.normalize_common import (
    boolean,
    canonical_bytes,
    canonical_ip,
    digest_id,
    integer,
    number,
    obj,
    params,
    parse_time,
    strings,
    text,
)

__all__ = [
    "SOURCE",
    "canonical_bytes",
    "normalize_signin",
    "parse_time",
    "record_id",
    "signin_from_json",
    "unwrap",
]

SOURCE = "entra_signin"

# Identity Protection risk types that describe the network the sign-in came from
# (Graph riskEventType values, detections.md A3); risky_ip reads these as provider flags.
ANONYMIZER_RISKS = frozenset({"anonymizedIPAddress"})
BAD_IP_RISKS = frozenset({"maliciousIPAddress", "malwareInfectedIPAddress", "suspiciousIPAddress", "riskyIPAddress"})


def record_id(record: Any) -> str:
    """The record's own id, or a stable digest of its bytes when it has none."""
    if isinstance(record, dict):
        rid = record.get("id")
        if isinstance(rid, str) and rid.strip():
            return rid.strip()[:200]
        inner = record.get("properties")
        if isinstance(inner, dict) and isinstance(inner.get("id"), str) and inner["id"].strip():
            return str(inner["id"]).strip()[:200]
    return digest_id(record)


def unwrap(record: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The signIn object and the Azure Monitor category when the record is that export's wrapper."""
    inner = record.get("properties")
    if "createdDateTime" not in record and isinstance(inner, dict):
        category = text(record.get("category"), 64)
        return inner, category
    return record, None


def app_principal(
    service_principal_id: str | None, event_types: tuple[str, ...], category: str | None = None
) -> str | None:
    """The principal of a service principal's own sign-in, "app:<servicePrincipalId>", when beta's
    `signInEventTypes` (or the Azure Monitor export's category) says it is one; it has no user."""
    if service_principal_id and ("servicePrincipal" in event_types or category == "ServicePrincipalSignInLogs"):
        return APP_PREFIX + service_principal_id.lower()
    return None


def _scopes(details: Any) -> tuple[str, ...]:
    """`authenticationProcessingDetails` "Oauth Scope Info" holds a JSON-encoded list of scopes."""
    for entry in details if isinstance(details, list) else []:
        if isinstance(entry, dict) and entry.get("key") == "Oauth Scope Info":
            raw = entry.get("value")
            try:
                parsed = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError:
                parsed = raw.split() if isinstance(raw, str) else []
            return strings(parsed, 128)
    return ()


def _flags(risk_types: tuple[str, ...]) -> tuple[str, ...]:
    if not risk_types:
        return ()
    out: list[str] = []
    if ANONYMIZER_RISKS.intersection(risk_types):
        out.append("anonymizer")
    if BAD_IP_RISKS.intersection(risk_types):
        out.append("malicious_ip")
    return tuple(out)


def normalize_signin(record: Any, tenant: str) -> Event | Rejection:
    rid = record_id(record)
    if not isinstance(record, dict):
        return Rejection(SOURCE, rid, f"record is a {type(record).__name__}, not an object")
    record, category = unwrap(record)
    try:
        occurred = parse_time(record.get("createdDateTime"))
    except (ValueError, TypeError, OverflowError) as exc:
        return Rejection(SOURCE, rid, f"createdDateTime: {exc}")
    upn = text(record.get("userPrincipalName"), 320) or app_principal(
        text(record.get("servicePrincipalId"), 64), strings(record.get("signInEventTypes"), 64), category
    )
    if upn is None:
        return Rejection(SOURCE, rid, "userPrincipalName missing or not text (and not a service principal)")
    status = obj(record.get("status"))
    raw_code = status.get("errorCode")
    code = integer(raw_code) if raw_code is not None else 0
    if code is None:
        return Rejection(SOURCE, rid, f"status.errorCode: not an integer: {type(raw_code).__name__}")
    return _event(
        _loose_wire(record, status), tenant, rid=rid, occurred=occurred, upn=upn, code=code, category=category
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# --- the fast path: one record's bytes straight into a typed struct ------------------------------------
# A page of sign-ins is ~2.5 KB per record, most of it (conditional-access policies) never read. Decoding
# into a dict of everything cost more than detecting (G1, performance.md: "If the project decodes pages
# straight into typed structs (msgspec), ... the gain shows up as a higher ratio"). The struct names only
# what `normalize_signin` reads; msgspec skips the rest without building it. Fields whose real variants
# are not one JSON type (string-typed numbers and booleans, detections.md §2) are `Any` and go through
# the same readers as the dict path. Anything the struct refuses (a number where text belongs, an object
# where a list belongs, the Azure Monitor wrapper, no timestamp or user) falls back to `normalize_signin`
# on the parsed dict, so both paths give the same Event (tests/unit/test_normalize_entra.py checks that).


class _Status(msgspec.Struct):
    errorCode: Any = None
    failureReason: str | None = None


class _Geo(msgspec.Struct):
    latitude: float | None = None
    longitude: float | None = None


class _Location(msgspec.Struct):
    city: str | None = None
    countryOrRegion: str | None = None
    geoCoordinates: _Geo | None = None


class _Device(msgspec.Struct):
    deviceId: str | None = None
    operatingSystem: str | None = None
    browser: str | None = None


class SignInWire(msgspec.Struct):
    """The fields of a Graph signIn (v1.0 and beta) that detection reads."""

    id: str | None = None
    createdDateTime: str | None = None
    userPrincipalName: str | None = None
    userId: str | None = None
    userDisplayName: str | None = None
    userType: str | None = None
    appId: str | None = None
    appDisplayName: str | None = None
    ipAddress: str | None = None
    autonomousSystemNumber: Any = None
    clientAppUsed: str | None = None
    userAgent: str | None = None
    correlationId: str | None = None
    sessionId: str | None = None
    conditionalAccessStatus: str | None = None
    isInteractive: Any = None
    signInEventTypes: list[str] | None = None
    status: _Status | None = None
    deviceDetail: _Device | None = None
    location: _Location | None = None
    networkLocationDetails: Any = None
    riskEventTypes: list[str] | None = None
    riskEventTypes_v2: list[str] | None = None
    riskLevelDuringSignIn: str | None = None
    riskLevelAggregated: str | None = None
    riskState: str | None = None
    authenticationProtocol: str | None = None
    authenticationRequirement: str | None = None
    authenticationProcessingDetails: Any = None
    resourceDisplayName: str | None = None
    resourceId: str | None = None
    tokenIssuerType: str | None = None
    uniqueTokenIdentifier: str | None = None
    servicePrincipalId: str | None = None
    servicePrincipalName: str | None = None


_DECODER = msgspec.json.Decoder(SignInWire)
_NO_STATUS = _Status()
_NO_LOCATION = _Location()
_NO_DEVICE = _Device()
_NO_GEO = _Geo()


def _s(value: str | None, limit: int) -> str | None:
    """`text()` for a value already known to be a str or None."""
    return (value.strip()[:limit] or None) if value else None


def _strings(values: list[str] | None) -> tuple[str, ...]:
    """`strings(values, 64)` for a list already known to hold only text."""
    return strings(values, 64) if values else ()


def signin_from_json(raw: bytes, tenant: str) -> Event | None:
    """One ordinary signIn record as JSON bytes (as Graph sent it) -> its Event, the same one
    `normalize_signin(orjson.loads(raw), tenant)` gives, several times faster. None for anything else
    (not JSON, odd types, a wrapper or a page): the caller parses it and takes the dict path, which
    reads what can be read and rejects the rest with a reason."""
    try:
        wire = _DECODER.decode(raw)
    except msgspec.DecodeError:  # ValidationError included: a shape the struct does not take
        return None
    return _from_wire(wire, tenant)


def _from_wire(w: SignInWire, tenant: str) -> Event | None:
    """The Event for an ordinary record; None hands the record to the dict path (which rejects with a reason)."""
    rid = _s(w.id, 200)
    upn = _s(w.userPrincipalName, 320) or app_principal(_s(w.servicePrincipalId, 64), _strings(w.signInEventTypes))
    if rid is None or upn is None or w.createdDateTime is None:
        return None
    try:
        occurred = parse_time(w.createdDateTime)
    except (ValueError, TypeError, OverflowError):
        return None
    raw_code = (w.status or _NO_STATUS).errorCode
    code = integer(raw_code) if raw_code is not None else 0
    if code is None:
        return None
    return _event(w, tenant, rid=rid, occurred=occurred, upn=upn, code=code, category=None)


_WHOLE = 4096  # longer than any field's own limit: `_event` clips each to its own


def _loose_wire(record: dict[str, Any], status: dict[str, Any]) -> SignInWire:
    """A dict's values read into the struct's types, as text() and friends read them (what does not fit
    reads as missing): the dict path then builds its Event exactly as the fast path does. (A Struct's
    constructor checks no types; only decoding does.)"""
    location, device = obj(record.get("location")), obj(record.get("deviceDetail"))
    geo = obj(location.get("geoCoordinates"))

    def t(key: str, within: dict[str, Any] = record) -> str | None:
        return text(within.get(key), _WHOLE)

    def listed(key: str) -> list[str] | None:
        return list(strings(record.get(key), 64)) or None

    return SignInWire(
        userId=t("userId"),
        userDisplayName=t("userDisplayName"),
        userType=t("userType"),
        appId=t("appId"),
        appDisplayName=t("appDisplayName"),
        ipAddress=t("ipAddress"),
        autonomousSystemNumber=record.get("autonomousSystemNumber"),
        clientAppUsed=t("clientAppUsed"),
        userAgent=t("userAgent"),
        correlationId=t("correlationId"),
        sessionId=t("sessionId"),
        conditionalAccessStatus=t("conditionalAccessStatus"),
        isInteractive=record.get("isInteractive"),
        signInEventTypes=listed("signInEventTypes"),
        status=_Status(failureReason=t("failureReason", status)),
        deviceDetail=_Device(t("deviceId", device), t("operatingSystem", device), t("browser", device)),
        location=_Location(
            t("city", location),
            t("countryOrRegion", location),
            _Geo(number(geo.get("latitude")), number(geo.get("longitude"))),
        ),
        networkLocationDetails=record.get("networkLocationDetails"),
        riskEventTypes=listed("riskEventTypes"),
        riskEventTypes_v2=listed("riskEventTypes_v2"),
        riskLevelDuringSignIn=t("riskLevelDuringSignIn"),
        riskLevelAggregated=t("riskLevelAggregated"),
        riskState=t("riskState"),
        authenticationProtocol=t("authenticationProtocol"),
        authenticationRequirement=t("authenticationRequirement"),
        authenticationProcessingDetails=record.get("authenticationProcessingDetails"),
        resourceDisplayName=t("resourceDisplayName"),
        resourceId=t("resourceId"),
        tokenIssuerType=t("tokenIssuerType"),
        uniqueTokenIdentifier=t("uniqueTokenIdentifier"),
        servicePrincipalName=t("servicePrincipalName"),
    )


def _event(
    w: SignInWire, tenant: str, *, rid: str, occurred: datetime, upn: str, code: int, category: str | None
) -> Event:
    """The one place a sign-in becomes an Event, for both paths."""
    status = w.status or _NO_STATUS
    location = w.location or _NO_LOCATION
    geo = location.geoCoordinates or _NO_GEO
    lat, lon = geo.latitude, geo.longitude
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        lat = lon = None  # both or neither, on the globe, and (0, 0) is Graph's "unknown"
    device = w.deviceDetail or _NO_DEVICE
    system, browser = _s(device.operatingSystem, 100), _s(device.browser, 100)
    device_text = f"{system} / {browser}" if system and browser else system or browser
    risk_types = _strings(w.riskEventTypes_v2) or _strings(w.riskEventTypes)
    risk_level = _s(w.riskLevelDuringSignIn, 16) or _s(w.riskLevelAggregated, 16)
    networks = [n for d in _list(w.networkLocationDetails) for n in strings(obj(d).get("networkNames"))]
    event_types = _strings(w.signInEventTypes)
    address = _s(w.ipAddress, 80)
    # beta's signInEventTypes is the most specific; then isInteractive; then the Azure Monitor export's category
    interactive = "interactiveUser" in event_types if event_types else boolean(w.isInteractive)
    if interactive is None:
        interactive = category == "SignInLogs" if category is not None else True
    return Event(
        source=SOURCE,
        event_id=rid,
        tenant=tenant,
        occurred_at=occurred,
        user_principal=upn.lower(),
        user_id=_s(w.userId, 64),
        user_display=_s(w.userDisplayName, 256) or _s(w.servicePrincipalName, 256) or upn,
        kind="sign_in",
        success=code == 0,
        error_code=code,
        failure_reason=_s(status.failureReason, 512) if code != 0 else None,
        ip=canonical_ip(address) if address else None,
        country=(_s(location.countryOrRegion, 8) or "").upper() or None,
        city=_s(location.city, 128),
        app=_s(w.appDisplayName, 256),
        client_app=_s(w.clientAppUsed, 128),
        user_agent=_s(w.userAgent, 512),
        device=device_text or None,
        interactive=interactive,
        asn=integer(w.autonomousSystemNumber),
        latitude=lat,
        longitude=lon,
        flags=_flags(risk_types),
        user_type="service_principal" if upn.startswith(APP_PREFIX) else (_s(w.userType, 32) or "").lower() or None,
        auth_protocol=_s(w.authenticationProtocol, 32),
        auth_requirement=_s(w.authenticationRequirement, 64),
        device_id=_s(device.deviceId, 64),
        session_id=_s(w.sessionId, 64) or _s(w.correlationId, 64),
        risk_types=risk_types,
        risk_level=risk_level.lower() if risk_level else None,
        risk_state=_s(w.riskState, 32),
        operation="signIn",
        workload="AzureActiveDirectory",
        app_id=_s(w.appId, 64),
        scopes=_scopes(w.authenticationProcessingDetails) if w.authenticationProcessingDetails else (),
        parameters=_parameters(w, networks, event_types),
    )


def _parameters(w: SignInWire, networks: list[str], event_types: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """`params([...])` of the dict path, for values already known to be text (lists only when present)."""
    out: list[tuple[str, str]] = []
    if w.resourceDisplayName and (t := w.resourceDisplayName.strip()[:512]):
        out.append(("resource", t))
    if w.resourceId and (t := w.resourceId.strip()[:512]):
        out.append(("resource_id", t))
    if w.conditionalAccessStatus and (t := w.conditionalAccessStatus.strip()[:512]):
        out.append(("conditional_access", t))
    if w.tokenIssuerType and (t := w.tokenIssuerType.strip()[:512]):
        out.append(("token_issuer", t))
    if w.uniqueTokenIdentifier and (t := w.uniqueTokenIdentifier.strip()[:512]):
        out.append(("unique_token_id", t))
    if w.correlationId and (t := w.correlationId.strip()[:512]):
        out.append(("correlation_id", t))
    if networks or event_types:
        out.extend(params([("named_networks", networks), ("sign_in_event_types", list(event_types))]))
    return tuple(out)
