"""Google Workspace Alert Center alert -> Event. Pure.

Field shapes: detections.md §2.5 and api-contracts.md §2.4. The alert `type` decides the kind:
identity alerts become "risk" (provider_risk reads them), a takeout becomes "export", the rest
"alert". Alerts about no single account (phishing campaigns, settings) keep an empty principal:
they are recorded, and no per-user detector reads them.
"""

from __future__ import annotations

from typing import Any

from bot.model import Event, Rejection
from bot.sources.normalize_common import digest_id, ip, obj, params, parse_time, text

SOURCE = "gws_alert"

# Alert Center types about one account's identity (Elastic google_workspace_alert_center_promotion,
# detections.md F13). Google has used both spellings of the government warning.
IDENTITY_TYPES = frozenset(
    {
        "Suspicious login",
        "Suspicious programmatic login",
        "Suspicious login (less secure app)",
        "Leaked password",
        "Government attack warning",
        "Government-backed attacks",
        "User suspended (suspicious activity)",
        "User suspended",
        "Account suspension warning",
    }
)
EXPORT_TYPES = frozenset({"Customer takeout initiated"})


def normalize_alert(record: Any, tenant: str) -> Event | Rejection:
    if not isinstance(record, dict):
        return Rejection(SOURCE, digest_id(record), f"record is a {type(record).__name__}, not an object")
    rid = text(record.get("alertId"), 200) or digest_id(record)
    try:
        occurred = parse_time(record.get("startTime") or record.get("createTime"))
    except (ValueError, TypeError, OverflowError) as exc:
        return Rejection(SOURCE, rid, f"startTime/createTime: {exc}")
    alert_type = text(record.get("type"), 128)
    if alert_type is None:
        return Rejection(SOURCE, rid, "type missing or not text")
    data = obj(record.get("data"))
    meta = obj(record.get("metadata"))
    login = obj(data.get("loginDetails"))
    user = text(data.get("email"), 320) or ""
    kind = "risk" if alert_type in IDENTITY_TYPES else "export" if alert_type in EXPORT_TYPES else "alert"
    severity = text(meta.get("severity"), 16)
    return Event(
        source=SOURCE,
        event_id=rid,
        tenant=tenant,
        occurred_at=occurred,
        user_principal=user.lower(),
        user_display=user,
        kind=kind,
        success=True,
        ip=ip(login.get("ipAddress")) or ip(data.get("sourceIp")),
        risk_types=(alert_type,),
        risk_level=severity.lower() if severity else None,
        risk_state=text(meta.get("status"), 32),
        operation=alert_type,
        workload=text(record.get("source"), 64),
        record_type=text(data.get("@type"), 200),
        target=text(data.get("takeoutRequestId"), 200),
        parameters=params(
            [
                ("login_time", login.get("loginTime")),
                ("created", record.get("createTime")),
                ("deleted", str(record.get("deleted")) if "deleted" in record else None),
                ("investigation_link", record.get("securityInvestigationToolLink")),
                ("state", data.get("state")),
            ]
        ),
    )
