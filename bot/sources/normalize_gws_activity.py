"""Google Workspace Reports API activity -> one Event per entry in `events`. Pure.

One activity can hold several events, so this returns a list. Field shapes: detections.md §2.4 and
api-contracts.md §2.2. Shapes seen in public data and handled here: the API's own (`events` is a
list, parameters are `[{name, value|intValue|boolValue|multiValue|messageValue|multiMessageValue}]`),
Elastic's pre-split copy (`events` is one object) and Panther's flattened copy (`type`, `name` and a
`parameters` dict at the top). `uniqueQualifier` and `intValue` are int64 sent as strings.
"""

from __future__ import annotations

from typing import Any

from bot.model import Event, Rejection
from bot.sources.normalize_common import (
    boolean,
    digest_id,
    domain_of,
    integer,
    ip,
    items,
    obj,
    params,
    parse_time,
    strings,
    text,
)

SOURCE = "gws_activity"

# login application, type account_warning / attack_warning (Sigma gcp_gworkspace_suspicious_login,
# gcp_gworkspace_govattack; Panther GSuite.SuspiciousLogins, GSuite.LeakedPassword, GSuite.GovernmentBackedAttack).
WARNINGS = frozenset(
    {
        "suspicious_login",
        "suspicious_login_less_secure_app",
        "suspicious_programmatic_login",
        "account_disabled_password_leak",
        "account_disabled_hijacked",
        "account_disabled_generic",
        "account_disabled_spamming",
        "account_disabled_spamming_through_relay",
        "user_signed_out_due_to_suspicious_session_cookie",
        "gov_attack_warning",
    }
)
SIGN_INS = frozenset({"login_success", "login_failure", "login_challenge", "login_verification"})


def _value(p: dict[str, Any]) -> Any:
    """One Reports API parameter's value, whatever field it travels in."""
    if "value" in p:
        return p["value"]
    if "boolValue" in p:
        return boolean(p["boolValue"])
    if "intValue" in p:
        return integer(p["intValue"])
    if "multiValue" in p:
        return list(strings(p["multiValue"], 300))
    if "multiIntValue" in p:
        return [i for i in (integer(v) for v in items(p["multiIntValue"]) if not isinstance(v, dict)) if i is not None]
    if "messageValue" in p:
        return _params(obj(p["messageValue"]).get("parameter"))
    if "multiMessageValue" in p:
        return [_params(obj(m).get("parameter")) for m in items(p["multiMessageValue"])]
    return None


def _params(raw: Any) -> dict[str, Any]:
    """Parameters as name -> value, from the API's list or Panther's dict; the first of a repeated name wins."""
    if isinstance(raw, dict) and "name" not in raw:
        return {str(k): v for k, v in raw.items()}
    out: dict[str, Any] = {}
    for p in items(raw):
        if isinstance(p, dict):
            name = text(p.get("name"), 128)
            if name is not None and name not in out:
                out[name] = _value(p)
    return out


def _scopes(ps: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Granted scopes and their product buckets (`scope`, `scope_data`; admin DWD's `API_SCOPES`)."""
    dwd = ps.get("API_SCOPES")
    dwd_scopes = [x.strip() for x in dwd.split(",")] if isinstance(dwd, str) else list(strings(dwd, 300))
    scopes = list(strings(ps.get("scope"), 300)) + dwd_scopes
    buckets: list[str] = []
    data = ps.get("scope_data")
    for entry in data if isinstance(data, list) else []:
        if isinstance(entry, dict):
            scopes.extend(strings(entry.get("scope_name"), 300))
            buckets.extend(strings(entry.get("product_bucket"), 64))
    return tuple(dict.fromkeys(s for s in scopes if s)), tuple(dict.fromkeys(buckets))


def _kind(app: str, etype: str, name: str) -> str:
    if app == "login":
        if name in WARNINGS or etype in ("account_warning", "attack_warning"):
            return "risk"
        if name in SIGN_INS:
            return "sign_in"
        if name == "email_forwarding_out_of_domain":
            return "forwarding"
        return "other"
    if app == "token" and name == "authorize":
        return "consent"
    if app == "admin":
        if name.startswith("CUSTOMER_TAKEOUT_"):
            return "export"  # Panther GSuite.Workspace.DataExportCreated
        if name == "AUTHORIZE_API_CLIENT_ACCESS":
            return "consent"  # domain-wide delegation: the client may act as any user
    return "other"


def _success(name: str, ps: dict[str, Any]) -> bool:
    if name == "login_failure":
        return False
    if name in ("login_challenge", "login_verification"):
        status = str(ps.get("login_challenge_status") or "").lower()
        return status.startswith("challenge passed") or status == "passed"
    return True


def normalize_activity(record: Any, tenant: str) -> list[Event | Rejection]:
    if not isinstance(record, dict):
        return [Rejection(SOURCE, digest_id(record), f"record is a {type(record).__name__}, not an object")]
    ident = obj(record.get("id"))
    app = text(ident.get("applicationName"), 64) or ""
    uq = text(ident.get("uniqueQualifier"), 40)
    base_id = f"{app}:{text(ident.get('time'), 40)}:{uq}" if uq else digest_id(record)
    try:
        occurred = parse_time(ident.get("time"), epoch=True)
    except (ValueError, TypeError, OverflowError, OSError) as exc:
        return [Rejection(SOURCE, base_id, f"id.time: {exc}")]
    events = record.get("events")
    if events is None and ("name" in record or "parameters" in record):
        events = [{"type": record.get("type"), "name": record.get("name"), "parameters": record.get("parameters")}]
    entries = items(events)
    if not entries:
        return [Rejection(SOURCE, base_id, "no events in the activity")]
    actor = obj(record.get("actor"))
    net = obj(record.get("networkInfo"))
    asns = [a for a in (integer(x) for x in items(net.get("ipAsn")) if not isinstance(x, dict)) if a is not None]
    if not asns and integer(net.get("ipAsn")) is not None:
        asns = [integer(net.get("ipAsn")) or 0]
    out: list[Event | Rejection] = []
    for i, raw in enumerate(entries):
        eid = f"{base_id}#{i}"
        if not isinstance(raw, dict):
            out.append(Rejection(SOURCE, eid, "event is not an object"))
            continue
        name = text(raw.get("name"), 128) or ""
        etype = text(raw.get("type"), 64) or ""
        ps = _params(raw.get("parameters"))
        # suspicious_login can omit actor.email; the account is in affected_email_address (detections.md §2.4)
        user = text(ps.get("affected_email_address"), 320) or text(actor.get("email"), 320)
        if user is None:
            out.append(Rejection(SOURCE, eid, "no actor.email or affected_email_address"))
            continue
        kind = _kind(app, etype, name)
        scopes, buckets = _scopes(ps)
        suspicious = ps.get("is_suspicious") is True or boolean(ps.get("is_suspicious")) is True
        target: str | None = None
        if kind == "forwarding":
            target = text(ps.get("email_forwarding_destination_address"), 320) or text(ps.get("destination"), 320)
        elif kind == "consent":
            target = text(ps.get("app_name"), 256) or text(ps.get("API_CLIENT_NAME"), 256)
        ext_target = bool(target and domain_of(target) and domain_of(target) != domain_of(user))
        out.append(
            Event(
                source=SOURCE,
                event_id=eid,
                tenant=tenant,
                occurred_at=occurred,
                user_principal=user.lower(),
                user_id=text(actor.get("profileId"), 64),
                user_display=user,
                kind=kind,
                success=_success(name, ps),
                failure_reason=text(ps.get("login_failure_type"), 128) if name == "login_failure" else None,
                ip=ip(record.get("ipAddress")),
                country=(text(net.get("regionCode"), 8) or "").upper() or None,
                app=text(ps.get("app_name"), 256),
                client_app=text(ps.get("login_type"), 64),
                asn=asns[0] if asns else None,
                flags=("suspicious",) if suspicious else (),
                auth_protocol=text(ps.get("login_type"), 64),
                risk_types=(name,) if kind == "risk" else (),
                operation=name or None,
                workload=app or None,
                record_type=etype or None,
                app_id=text(ps.get("client_id"), 256) or text(ps.get("API_CLIENT_NAME"), 256),
                scopes=scopes,
                target=target,
                target_external=ext_target,
                parameters=params(
                    [
                        ("caller_type", actor.get("callerType")),
                        ("product_buckets", list(buckets)),
                        ("login_challenge_method", ps.get("login_challenge_method")),
                        ("login_challenge_status", ps.get("login_challenge_status")),
                        ("is_second_factor", str(ps.get("is_second_factor")) if "is_second_factor" in ps else None),
                        ("sensitive_action_name", ps.get("sensitive_action_name")),
                        ("client_type", ps.get("client_type")),
                        ("login_timestamp", ps.get("login_timestamp")),
                        ("subdivision", net.get("subdivisionCode")),
                        *(
                            (k, v)
                            for k, v in ps.items()
                            if k.isupper() and isinstance(v, (str, int)) and not isinstance(v, bool)
                        ),
                    ]
                ),
            )
        )
    return out
