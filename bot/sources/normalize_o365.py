"""Office 365 Management Activity API record -> Event. Pure.

Reads the Audit.AzureActiveDirectory and Audit.Exchange records (and the Security & Compliance
ones that export mail). Field shapes: detections.md §2.3 and api-contracts.md §1.9. Variations
handled: keys in any case (Panther's copies are lower-cased), `RecordType`/`UserType` as int or
string, `CreationTime` without a zone (UTC) or with a space, `ClientIP` with a port or brackets,
`[{Name, Value}]` lists looked up by name (never by position, detections.md §4), and
`ResultStatus` on STS logon records, which is not the logon outcome (the Operation is).
"""

from __future__ import annotations

import re
from typing import Any

from bot.model import Event, Rejection
from bot.sources.normalize_common import (
    boolean,
    digest_id,
    domain_of,
    integer,
    ip,
    items,
    lower_keys,
    name_values,
    obj,
    params,
    parse_time,
    strings,
    text,
)

SOURCE = "o365_audit"

# AuditLogRecordType values (Management Activity API schema).
USER_TYPES = {
    0: "regular",
    1: "reserved",
    2: "admin",
    3: "dcadmin",
    4: "system",
    5: "application",
    6: "serviceprincipal",
    7: "custompolicy",
    8: "systempolicy",
    9: "partnertechnician",
    10: "guest",
}

SIGN_IN_OPS = {"userloggedin", "userloginfailed", "passwordlogoninitialauthusingpassword"}
# An STS logon at the OAuth token endpoint: a refresh token or code redeemed (or a password grant), which
# Entra logs as a non-interactive sign-in. Like Graph's non-interactive records, it says nothing about
# the person's device, hours or whereabouts: a mail client refreshes its token at 3 a.m. from any laptop.
TOKEN_REQUEST = "oauth2:token"  # noqa: S105 - a RequestType value, not a secret
# ... except a password grant (ROPC), which Entra logs as an *interactive* sign-in: the user's password
# was presented (learn.microsoft.com/entra/identity/monitoring-health/concept-noninteractive-sign-ins:
# non-interactive sign-ins "don't require the user to provide an authentication factor"; Sigma's ROPC
# rule reads the interactive signinlogs). At the token endpoint only a password check fails with these
# codes, and Exchange's basic-auth-to-ROPC bridge announces itself as BAV2ROPC.
PASSWORD_CHECK_CODES = frozenset({50034, 50053, 50055, 50056, 50126})
ROPC_BRIDGE_AGENT = "bav2ropc"  # a user-agent prefix
MAIL_ACCESS_OPS = {"mailitemsaccessed"}
PERMISSION_OPS = {"add-mailboxpermission", "add-recipientpermission", "add-mailboxfolderpermission"}
INBOX_RULE_OPS = {"new-inboxrule", "set-inboxrule", "updateinboxrules"}
ROLE_OPS = {"new-managementroleassignment"}
EXPORT_OPS = {"new-mailboxexportrequest", "searchexported", "searchexportdownloaded"}
CONSENT_OPS = {
    "consent to application.",
    "add delegated permission grant.",
    "add app role assignment to service principal.",
    "add oauth2permissiongrant.",
    "update application.",
}
# The parameters through which Exchange sends mail elsewhere (Panther
# Microsoft365.Exchange.External.Forwarding; Sigma microsoft365_susp_email_forwarding_activity).
FORWARDING_PARAMS = ("ForwardingSmtpAddress", "ForwardTo", "ForwardingAddress", "RedirectTo", "ForwardAsAttachmentTo")
# Sentinel SigninBruteForce-AzurePortal reads the AADSTS code; STS records carry it in ErrorNumber,
# older ones only the LogonError name. Names from Microsoft's AADSTS error reference
# (learn.microsoft.com/entra/identity-platform/reference-error-codes); the interrupts and revoked
# tokens among them are in detect.common.PASSWORD_WAS_RIGHT, so a record naming one is not read as
# a wrong password just because its number is missing.
LOGON_ERROR_CODES = {
    "InvalidUserNameOrPassword": 50126,
    "IdsLocked": 50053,
    "PasswordExpired": 50055,
    "UserStrongAuthClientAuthNRequiredInterrupt": 50074,
    "UserStrongAuthClientAuthNRequired": 50076,
    "SsoArtifactInvalidOrExpired": 50132,
    "SsoArtifactRevoked": 50133,
    "KmsiInterrupt": 50140,
    "FreshTokenNeeded": 50173,
    "InvalidGrant": 70000,
    "ExpiredOrRevokedGrant": 70008,
}
LOGON_ERRORS = {name.lower(): code for name, code in LOGON_ERROR_CODES.items()}
# Well-known app-permission ids found in "Update application." records (detections.md C5, C6).
ENTITLEMENTS = {
    "dc890d15-9560-4a4c-9b7f-a736ec74ec40": "full_access_as_app",
    "810c84a8-4a9e-49e6-bf7d-12d183f40d01": "Mail.Read",
}
EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
SCOPE_IN_PERMISSIONS = re.compile(r"Scope:\s*([^,\]]*)")
CONSENT_TYPE = re.compile(r"ConsentType:\s*([A-Za-z]+)")


def record_id(record: Any) -> str:
    if isinstance(record, dict):
        rid = text(lower_keys(record).get("id"), 200)
        if rid:
            return rid
    return digest_id(record)


def _ok(r: dict[str, Any]) -> bool:
    status = (text(r.get("resultstatus"), 32) or "").lower()
    return status not in ("false", "failed", "failure", "partiallysucceeded")


def _addresses(values: list[str]) -> tuple[str, ...]:
    """Mail addresses from `smtp:bob@x`, `"Bob" [SMTP:bob@x]` or `a@x;b@y` forms."""
    found: list[str] = []
    for v in values:
        for m in EMAIL.findall(v):
            if m.lower() not in found:
                found.append(m.lower())
    return tuple(found)


GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _service_principal_id(r: dict[str, Any]) -> str | None:
    """The consented app's service-principal object id: what oauth2PermissionGrant.clientId holds.

    "Consent to application." records name it in Target ("ServicePrincipal_<id>") and ObjectId, not in
    AppId (which, when present, is the application's client id)."""
    targets = r.get("target")
    for t in targets if isinstance(targets, list) else []:
        ident = t.get("ID") if isinstance(t, dict) else None
        if isinstance(ident, str) and ident.startswith("ServicePrincipal_") and GUID.fullmatch(ident[17:]):
            return ident[17:].lower()
    obj = r.get("objectid")
    return obj.lower() if isinstance(obj, str) and GUID.fullmatch(obj.strip()) else None


def _external(actor: str, addresses: tuple[str, ...]) -> bool:
    """Outside the actor's own domain or its subdomains (the detector applies the org's full list)."""
    own = domain_of(actor)
    if own is None:
        return False
    for a in addresses:
        d = domain_of(a)
        if d is not None and d != own and not d.endswith("." + own):
            return True
    return False


def _consent_details(r: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, Any]], str | None]:
    """Scopes, extra parameters and the app's name from ModifiedProperties (matched by Name)."""
    props = name_values(r.get("modifiedproperties"))
    scopes: list[str] = []
    extra: list[tuple[str, Any]] = []
    perms = props.get("ConsentAction.Permissions", "")
    for chunk in SCOPE_IN_PERMISSIONS.findall(perms):
        scopes.extend(chunk.split())
    if m := CONSENT_TYPE.search(perms):
        extra.append(("ConsentType", m.group(1)))
    for key in ("DelegatedPermissionGrant.Scope", "AppRole.Value"):
        scopes.extend(props.get(key, "").replace('"', " ").split())
    raw_app = props.get("AppAddress") or ""  # "Update application." carries JSON describing permissions
    for key, value in props.items():
        if key.startswith(("AppAddress", "RequiredResourceAccess")) or "EntitlementId" in value:
            raw_app += value
    for guid, name in ENTITLEMENTS.items():
        if guid in raw_app.lower():
            scopes.append(name)
    for key in ("ConsentContext.IsAdminConsent", "ConsentContext.IsAppOnly", "ConsentContext.OnBehalfOfAll"):
        if key in props:
            extra.append((key, props[key]))
    app = props.get("TargetId.ServicePrincipalNames") or None
    if app is None:
        for t in items(r.get("target")):
            tid = text(lower_keys(t).get("id") if isinstance(t, dict) else None, 200)
            if tid and not tid.lower().startswith("serviceprincipal_"):
                app = tid
                break
    clean = tuple(dict.fromkeys(s.strip('",[]') for s in scopes if s.strip('",[]')))
    return clean, extra, app


def _kind(op: str, p: dict[str, str], r: dict[str, Any]) -> str:
    if op in SIGN_IN_OPS:
        return "sign_in"
    if op in MAIL_ACCESS_OPS or text(r.get("recordtype"), 8) == "50":
        return "mail_access"  # RecordType 50 is ExchangeItemAggregated: MailItemsAccessed, AttachmentAccess
    if op in PERMISSION_OPS:
        return "mailbox_permission"
    if op in ROLE_OPS:
        return "role_assignment"
    if op in CONSENT_OPS:
        return "consent"
    if op in INBOX_RULE_OPS:
        return "forwarding" if any(p.get(k) for k in FORWARDING_PARAMS) else "other"
    if op == "set-mailbox":
        if any(p.get(k) for k in FORWARDING_PARAMS):
            return "forwarding"
        return "mailbox_permission" if p.get("GrantSendOnBehalfTo") else "other"
    if op in EXPORT_OPS:
        return "export"
    if op == "new-compliancesearchaction" and "export" in str(r.get("parameters", "")).lower():
        return "export"  # Sigma microsoft365_pst_export_alert_using_new_compliancesearchaction
    if op == "alerttriggered" and "exported" in (text(r.get("name"), 200) or "").lower():
        return "export"  # Sigma/Splunk "eDiscovery search started or exported" alert
    return "other"


def normalize_o365(record: Any, tenant: str) -> Event | Rejection:
    rid = record_id(record)
    if not isinstance(record, dict):
        return Rejection(SOURCE, rid, f"record is a {type(record).__name__}, not an object")
    r = lower_keys(record)
    try:
        occurred = parse_time(r.get("creationtime"))
    except (ValueError, TypeError, OverflowError) as exc:
        return Rejection(SOURCE, rid, f"CreationTime: {exc}")
    operation = text(r.get("operation"), 128)
    if operation is None:
        return Rejection(SOURCE, rid, "Operation missing or not text")
    user = text(r.get("userid"), 320)
    if user is None:
        return Rejection(SOURCE, rid, "UserId missing or not text")
    op = operation.lower()
    p = name_values(r.get("parameters")) if isinstance(r.get("parameters"), list) else {}
    ext = name_values(r.get("extendedproperties"))
    dev = name_values(r.get("deviceproperties"))
    opprops = name_values(r.get("operationproperties"))
    access = obj(r.get("appaccesscontext"))
    kind = _kind(op, p, r)
    user_type_n = integer(r.get("usertype"))
    record_type = text(r.get("recordtype"), 16)
    success = _ok(r)
    code = 0
    failure: str | None = None
    if kind == "sign_in":
        # STS logons: ResultStatus "Success" only means the HTTP call worked (detections.md §2.3).
        success = op == "userloggedin" or (op.startswith("passwordlogon") and _ok(r))
        if not success:
            code = integer(r.get("errornumber")) or LOGON_ERRORS.get((text(r.get("logonerror"), 64) or "").lower(), -1)
            failure = text(r.get("logonerror"), 200) or ext.get("LoginError") or "failed"
    scopes: tuple[str, ...] = ()
    target: str | None = None
    target_external = False
    extra: list[tuple[str, Any]] = []
    app: str | None = None
    if kind == "mail_access":
        target = text(r.get("mailboxownerupn"), 320)
    elif kind in ("mailbox_permission", "role_assignment"):
        target = p.get("Identity") or text(r.get("objectid"), 320)
        delegate = p.get("User") or p.get("Trustee") or p.get("GrantSendOnBehalfTo") or p.get("App")
        extra.append(("delegate", delegate))
        target_external = _external(user, _addresses([delegate or ""]))
    elif kind == "forwarding":
        addresses = _addresses([p.get(k, "") for k in FORWARDING_PARAMS])
        target = "; ".join(addresses)[:512] or None
        target_external = _external(user, addresses)
    elif kind == "consent":
        scopes, extra, app = _consent_details(r)
        target = app or text(r.get("objectid"), 320)
    elif kind == "export":
        target = p.get("Mailbox") or text(r.get("objectid"), 320) or text(r.get("exchangelocations"), 320)
    app_id = (
        (_service_principal_id(r) if kind == "consent" else None)
        or text(r.get("clientappid"), 64)
        or text(access.get("ClientAppId"), 64)
        or text(r.get("applicationid"), 64)
        or text(r.get("appid"), 64)
    )
    count = integer(r.get("operationcount"))
    return Event(
        source=SOURCE,
        event_id=rid,
        tenant=tenant,
        occurred_at=occurred,
        user_principal=user.lower(),
        user_id=None,
        user_display=user,
        kind=kind,
        success=success,
        error_code=code,
        failure_reason=failure,
        ip=ip(r.get("clientip")) or ip(r.get("clientipaddress")) or ip(r.get("actoripaddress")),
        app=app or text(access.get("ClientAppName"), 256),
        client_app=text(r.get("clientinfostring"), 256) or text(r.get("clientapplication"), 128),
        user_agent=ext.get("UserAgent") or None,
        device=" / ".join(x for x in (dev.get("OS"), dev.get("BrowserType")) if x) or None,
        interactive=not (
            kind == "sign_in"
            and (ext.get("RequestType") or "").strip().lower() == TOKEN_REQUEST
            and code not in PASSWORD_CHECK_CODES
            and not (ext.get("UserAgent") or "").lower().startswith(ROPC_BRIDGE_AGENT)
        ),
        user_type=USER_TYPES.get(user_type_n) if user_type_n is not None else None,
        session_id=text(r.get("sessionid"), 64) or dev.get("SessionId") or text(access.get("AADSessionId"), 64),
        operation=operation,
        workload=text(r.get("workload"), 64),
        record_type=record_type,
        app_id=app_id,
        scopes=scopes,
        target=target,
        target_external=target_external,
        count=max(1, count) if count is not None else 1,
        access_type=opprops.get("MailAccessType") or opprops.get("AttachmentAccessType") or None,
        is_throttled=boolean(opprops.get("IsThrottled")) is True,
        parameters=params(
            [
                *extra,
                ("AppId", r.get("appid")),
                ("RequestType", ext.get("RequestType")),
                ("LogonType", r.get("logontype")),
                ("ExternalAccess", r.get("externalaccess")),
                ("OrganizationName", r.get("organizationname")),
                ("UniqueTokenId", access.get("UniqueTokenId")),
                ("AlertName", r.get("name")),
                *((k, v) for k, v in p.items()),
                ("Folders", [obj(f).get("Path") for f in items(r.get("folders"))]),
                ("Scopes", list(strings(scopes))),
            ]
        ),
    )
