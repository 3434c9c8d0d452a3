"""Microsoft Graph `signIn` wire record -> Event. Pure; the only place these dicts are read.

Field shapes: reference/api-contracts.md §1.2 and detections.md §2.1. Real records vary
(null nested objects, string-typed error codes, 7-digit fractions), so every read has a default
and a record is rejected only when it lacks what a detection cannot do without.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from datetime import UTC, datetime
from typing import Any

import orjson

from bot.model import Event, Rejection

SOURCE = "entra_signin"


def record_id(record: Any) -> str:
    """The record's own id, or a stable digest of its bytes when it has none."""
    if isinstance(record, dict):
        rid = record.get("id")
        if isinstance(rid, str) and rid.strip():
            return rid.strip()[:200]
    return "sha256:" + hashlib.sha256(canonical_bytes(record)).hexdigest()


def canonical_bytes(record: Any) -> bytes:
    """The record as sorted-key JSON; stdlib json for what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(record, sort_keys=True, default=str).encode()


def parse_time(value: Any) -> datetime:
    """ISO 8601 with any number of fractional digits; naive values are UTC (as Graph means them)."""
    if not isinstance(value, str) or not value:
        raise ValueError("missing timestamp")
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        text = f"{head}.{(digits + '000000')[:6]}{rest[i:]}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _text(value: Any, limit: int = 512) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        out = str(value).strip()
        return out[:limit] or None
    return None


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("boolean where a number belongs")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    if value is None:
        return 0
    raise ValueError(f"not an integer: {type(value).__name__}")


def _ip(value: Any) -> str | None:
    text = _text(value, 64)
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None  # "invalid IP text" happens in real logs; keep the sign-in, drop the IP


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def normalize_signin(record: Any, tenant: str) -> Event | Rejection:
    rid = record_id(record)
    if not isinstance(record, dict):
        return Rejection(SOURCE, rid, f"record is a {type(record).__name__}, not an object")
    try:
        occurred = parse_time(record.get("createdDateTime"))
    except (ValueError, TypeError) as exc:
        return Rejection(SOURCE, rid, f"createdDateTime: {exc}")
    upn = _text(record.get("userPrincipalName"), 320)
    if upn is None:
        return Rejection(SOURCE, rid, "userPrincipalName missing or not text")
    status = _dict(record.get("status"))
    try:
        code = _int(status.get("errorCode"))
    except ValueError as exc:
        return Rejection(SOURCE, rid, f"status.errorCode: {exc}")
    location = _dict(record.get("location"))
    device = _dict(record.get("deviceDetail"))
    device_text = " / ".join(
        t for t in (_text(device.get("operatingSystem"), 100), _text(device.get("browser"), 100)) if t
    )
    interactive = record.get("isInteractive")
    return Event(
        source=SOURCE,
        event_id=rid,
        tenant=tenant,
        occurred_at=occurred,
        user_principal=upn.lower(),
        user_id=_text(record.get("userId"), 64),
        user_display=_text(record.get("userDisplayName"), 256) or upn,
        kind="sign_in",
        success=code == 0,
        error_code=code,
        failure_reason=_text(status.get("failureReason"), 512),
        ip=_ip(record.get("ipAddress")),
        country=(_text(location.get("countryOrRegion"), 8) or "").upper() or None,
        city=_text(location.get("city"), 128),
        app=_text(record.get("appDisplayName"), 256),
        client_app=_text(record.get("clientAppUsed"), 128),
        user_agent=_text(record.get("userAgent"), 512),
        device=device_text or None,
        interactive=interactive if isinstance(interactive, bool) else str(interactive).lower() != "false",
    )
