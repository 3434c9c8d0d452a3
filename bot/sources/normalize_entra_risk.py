"""Microsoft Graph `riskDetection` wire record -> Event (kind "risk"). Pure.

Field shapes: reference/api-contracts.md §1.3 and detections.md §2.2. `additionalInfo` is a
JSON-encoded *string* of `[{Key, Value}]`; the documentation's own example carries an invalid IP
(`123.456.7.89`), so the IP is dropped rather than the detection.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bot.model import Event, Rejection
from bot.sources.normalize_common import digest_id, ip, latlon, obj, params, parse_time, text
from bot.sources.normalize_entra import ANONYMIZER_RISKS, BAD_IP_RISKS

SOURCE = "entra_risk"


def _additional_info(raw: Any) -> dict[str, str]:
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}
    out: dict[str, str] = {}
    for entry in parsed if isinstance(parsed, list) else []:
        if isinstance(entry, dict):
            key, value = text(entry.get("Key"), 64), text(entry.get("Value"), 512)
            if key and value and key not in out:
                out[key] = value
    return out


def _when_and_who(record: dict[str, Any], rid: str, field: str, when: Any) -> tuple[datetime, str] | Rejection:
    """The two things no risk record can do without: when it happened and whose account it is."""
    try:
        occurred = parse_time(when)
    except (ValueError, TypeError, OverflowError) as exc:
        return Rejection(SOURCE, rid, f"{field}: {exc}")
    upn = text(record.get("userPrincipalName"), 320)
    if upn is None:
        return Rejection(SOURCE, rid, "userPrincipalName missing or not text")
    return occurred, upn


def normalize_risky_user(record: dict[str, Any], tenant: str) -> Event | Rejection:
    """A `riskyUser` (GET /identityProtection/riskyUsers): the account's current risk, not one detection.

    Its id is the user's id, so the event id adds the time the risk last changed: each change is a new
    event, a re-read of the same state is a duplicate."""
    uid = text(record.get("id"), 64)
    changed = record.get("riskLastUpdatedDateTime")
    rid = f"riskyUser:{uid}:{changed}" if uid and isinstance(changed, str) else digest_id(record)
    who = _when_and_who(record, rid, "riskLastUpdatedDateTime", changed)
    if isinstance(who, Rejection):
        return who
    occurred, upn = who
    level = text(record.get("riskLevel"), 16)
    return Event(
        source=SOURCE,
        event_id=rid,
        tenant=tenant,
        occurred_at=occurred,
        user_principal=upn.lower(),
        user_id=uid,
        user_display=text(record.get("userDisplayName"), 256) or upn,
        kind="risk",
        success=True,
        risk_types=("riskyUser",),
        risk_level=level.lower() if level else None,
        risk_state=text(record.get("riskState"), 32),
        operation="riskyUser",
        workload="AzureActiveDirectory",
        parameters=params([("risk_detail", record.get("riskDetail")), ("is_processing", record.get("isProcessing"))]),
    )


def normalize_risk(record: Any, tenant: str) -> Event | Rejection:
    if not isinstance(record, dict):
        return Rejection(SOURCE, digest_id(record), f"record is a {type(record).__name__}, not an object")
    if "riskLastUpdatedDateTime" in record and "riskEventType" not in record:
        return normalize_risky_user(record, tenant)
    rid = text(record.get("id"), 200) or digest_id(record)
    who = _when_and_who(
        record, rid, "activityDateTime", record.get("activityDateTime") or record.get("detectedDateTime")
    )
    if isinstance(who, Rejection):
        return who
    occurred, upn = who
    risk_type = text(record.get("riskEventType"), 64)
    if risk_type is None:
        return Rejection(SOURCE, rid, "riskEventType missing or not text")
    location = obj(record.get("location"))
    geo = obj(location.get("geoCoordinates"))
    lat, lon = latlon(geo.get("latitude"), geo.get("longitude"))
    info = _additional_info(record.get("additionalInfo"))
    flags = tuple(
        f for f, names in (("anonymizer", ANONYMIZER_RISKS), ("malicious_ip", BAD_IP_RISKS)) if risk_type in names
    )
    level = text(record.get("riskLevel"), 16)
    return Event(
        source=SOURCE,
        event_id=rid,
        tenant=tenant,
        occurred_at=occurred,
        user_principal=upn.lower(),
        user_id=text(record.get("userId"), 64),
        user_display=text(record.get("userDisplayName"), 256) or upn,
        kind="risk",
        success=True,  # the risky activity happened; whether it was blocked is in the sign-in record
        ip=ip(record.get("ipAddress")),
        country=(text(location.get("countryOrRegion"), 8) or "").upper() or None,
        city=text(location.get("city"), 128),
        user_agent=info.get("userAgent"),
        latitude=lat,
        longitude=lon,
        flags=flags,
        risk_types=(risk_type,),
        risk_level=level.lower() if level else None,
        risk_state=text(record.get("riskState"), 32),
        operation=risk_type,
        workload="AzureActiveDirectory",
        record_type=text(record.get("activity"), 16),
        session_id=text(record.get("correlationId"), 64),
        parameters=params(
            [
                ("risk_detail", record.get("riskDetail")),
                ("detection_timing", record.get("detectionTimingType")),
                ("activity", record.get("activity")),
                ("source", record.get("source")),
                ("request_id", record.get("requestId")),
                ("detected_at", record.get("detectedDateTime")),
                *((f"info.{k}", v) for k, v in info.items() if k != "userAgent"),
            ]
        ),
    )
