"""Every source's normalizer: the shapes real records take, and never an exception on any JSON."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from bot.detect.common import is_failed_password
from bot.model import EVENT_KINDS, Event, Rejection
from bot.sources.normalize import (
    KINDS,
    detect_kind,
    is_sign_in_copy,
    is_token_redemption,
    normalize,
    normalize_json,
)
from bot.sources.normalize_common import ip, parse_time
from bot.sources.normalize_entra import normalize_signin
from bot.sources.normalize_entra_risk import normalize_risk
from bot.sources.normalize_gws_activity import normalize_activity
from bot.sources.normalize_gws_alert import normalize_alert
from bot.sources.normalize_o365 import normalize_o365
from sandbox.wire import sts_logon

# Public sample records (copied from reference/samples with their .source.txt provenance)
SAMPLES = Path(__file__).resolve().parents[1] / "data"
PANTHER_SIGNINS = "azure_signinlogs_panther_rule_tests.jsonl"

# --- records in each wire format (our own, shaped like the vendors' documented examples) ----------

SIGNIN_BETA: dict[str, Any] = {
    "id": "ef1e1fcc-0000-489b-82c5-16ad80770e00",
    "createdDateTime": "2026-03-18T18:13:37Z",
    "userDisplayName": "Jo Jones",
    "userPrincipalName": "Jo@Contoso.example",
    "userId": "4562bcc8-0000-4f95-b7c0-4f8ce89dca5e",
    "appId": "de8bc8b5-d9f9-48b1-a8ad-b748da725064",
    "appDisplayName": "Graph Explorer",
    "ipAddress": "197.178.9.154",
    "clientAppUsed": "Browser",
    "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/99.0",
    "correlationId": "17b4f05d-0000-42b8-856d-99322911d398",
    "isInteractive": False,
    "signInEventTypes": ["nonInteractiveUser"],
    "riskLevelDuringSignIn": "medium",
    "riskState": "atRisk",
    "riskEventTypes_v2": ["anonymizedIPAddress", "unlikelyTravel"],
    "resourceDisplayName": "Microsoft Graph",
    "resourceId": "00000003-0000-0000-c000-000000000000",
    "authenticationRequirement": "singleFactorAuthentication",
    "authenticationProtocol": "ropc",
    "userType": "Member",
    "autonomousSystemNumber": "33771",
    "uniqueTokenIdentifier": "ZWYxZTFmY2M",
    "status": {"errorCode": 0, "failureReason": "Other.", "additionalDetails": None},
    "deviceDetail": {"deviceId": "eab73519", "operatingSystem": "Windows 10", "browser": "Chrome 99.0"},
    "location": {
        "city": "Mombasa",
        "state": "Coast",
        "countryOrRegion": "ke",
        "geoCoordinates": {"latitude": -4.05, "longitude": "39.66"},
    },
    "authenticationProcessingDetails": [
        {"key": "Oauth Scope Info", "value": '["Mail.Read","offline_access","User.Read"]'}
    ],
    "networkLocationDetails": [{"networkType": "namedNetwork", "networkNames": ["Suspicious countries"]}],
}

RISK: dict[str, Any] = {
    "id": "6a5874ca-abcd-9d82-5ad39bd71600",
    "requestId": "6a5874ca",
    "correlationId": "abcd74ca",
    "riskEventType": "anonymizedIPAddress",
    "riskState": "atRisk",
    "riskLevel": "High",
    "riskDetail": "none",
    "source": "IdentityProtection",
    "detectionTimingType": "realtime",
    "activity": "signin",
    "ipAddress": "123.456.7.89",
    "location": {"city": "Seattle", "countryOrRegion": "US", "geoCoordinates": None},
    "activityDateTime": "2026-09-05T00:09:18.7822851Z",
    "detectedDateTime": "2026-09-05T00:11:27.773602Z",
    "userId": "abcdefab",
    "userDisplayName": "Olivia",
    "userPrincipalName": "olivia@adatum.example",
    "additionalInfo": '[{"Key":"userAgent","Value":"curl/8.0"},{"Key":"alertUrl","Value":"https://x"}]',
}

MAIL_ACCESS: dict[str, Any] = {
    "CreationTime": "2026-09-15T18:16:53",
    "Id": "461a38ce-0000-4a4d-b73e-643262cc063f",
    "Operation": "MailItemsAccessed",
    "RecordType": "50",
    "ResultStatus": "Succeeded",
    "UserType": "5",
    "Workload": "Exchange",
    "UserId": "jo@contoso.example",
    "AppId": "00000003-0000-0000-c000-000000000000",
    "ClientAppId": "11111111-aaaa-4bbb-8ccc-000000000001",
    "ClientIPAddress": "[2001:db8::7]:443",
    "ClientInfoString": "Client=REST;Client=RESTSystem;;",
    "MailboxOwnerUPN": "boss@contoso.example",
    "SessionId": "dcdad6b2",
    "OperationProperties": [
        {"Name": "MailAccessType", "Value": "Sync"},
        {"Name": "IsThrottled", "Value": "True"},
        {"Name": "IsThrottled", "Value": "False"},  # a repeated name: the first one wins
    ],
    "OperationCount": "120",
}

STS_FAILED: dict[str, Any] = {
    "creationtime": "2026-12-12 15:57:57",  # Panther's copies: lower-case keys, a space before the time
    "id": "abc-def-123",
    "operation": "UserLoginFailed",
    "recordtype": 15,
    "resultstatus": "Success",  # the HTTP call, not the logon (detections.md §2.3)
    "userid": "Sample.User@yourorg.example",
    "usertype": 0,
    "workload": "AzureActiveDirectory",
    "clientip": "198.51.100.1:26061",
    "logonerror": "InvalidUserNameOrPassword",
    "extendedproperties": [{"Name": "UserAgent", "Value": "python-requests/2.31"}],
}

CONSENT: dict[str, Any] = {
    "CreationTime": "2026-05-24T15:10:53",
    "Id": "c-1",
    "Operation": "Consent to application.",
    "RecordType": 8,
    "ResultStatus": "Success",
    "UserId": "jo@contoso.example",
    "Workload": "AzureActiveDirectory",
    "ModifiedProperties": [
        {"Name": "ConsentContext.IsAdminConsent", "NewValue": "False", "OldValue": ""},
        {
            "Name": "ConsentAction.Permissions",
            "NewValue": "[] => [[Id: 1, ConsentType: AllPrincipals, Scope: Mail.Read offline_access, "
            "CreatedDateTime: ]]",
            "OldValue": "",
        },
        {"Name": "TargetId.ServicePrincipalNames", "NewValue": "Evil Reader", "OldValue": ""},
    ],
}

INBOX_RULE: dict[str, Any] = {
    "CreationTime": "2026-05-24T15:10:53",
    "Id": "r-1",
    "Operation": "New-InboxRule",
    "RecordType": 1,
    "ResultStatus": "True",
    "UserId": "jo@contoso.example",
    "Workload": "Exchange",
    "ClientIP": "1.2.3.4:63070",
    "Parameters": [
        {"Name": "ForwardTo", "Value": '"Bob" [SMTP:bob@example.org];joe@contoso.example'},
        {"Name": "DeleteMessage", "Value": "True"},
    ],
}

ACTIVITY: dict[str, Any] = {
    "kind": "admin#reports#activity",
    "id": {
        "time": "2026-03-02T01:14:07.512Z",
        "uniqueQualifier": "-1234567890123456789",
        "applicationName": "login",
        "customerId": "C03az79cb",
    },
    "actor": {"callerType": "USER", "email": "Jo@Contoso.example", "profileId": "1000"},
    "ipAddress": "203.0.113.25",
    "networkInfo": {"ipAsn": [64496], "regionCode": "us", "subdivisionCode": "US-CA"},
    "events": [
        {
            "type": "login",
            "name": "login_success",
            "parameters": [
                {"name": "login_type", "value": "google_password"},
                {"name": "login_challenge_method", "multiValue": ["password", "security_key"]},
                {"name": "is_suspicious", "boolValue": True},
            ],
        },
        {
            "type": "account_warning",
            "name": "suspicious_login",
            "parameters": [
                {"name": "affected_email_address", "value": "al@contoso.example"},
                {"name": "login_timestamp", "intValue": "1593695305123456"},
            ],
        },
    ],
}

TOKEN: dict[str, Any] = {
    "kind": "admin#reports#activity",
    "id": {"time": "2026-01-01T06:24:42.442Z", "uniqueQualifier": 42, "applicationName": "token"},
    "actor": {"email": "jo@contoso.example"},
    "ipAddress": "89.160.20.112",
    "events": {  # Elastic's pre-split copy: one object, not a list
        "name": "authorize",
        "parameters": [
            {"name": "client_id", "value": "923-abc.apps.googleusercontent.com"},
            {"name": "app_name", "value": "Gmail Add-on"},
            {
                "name": "scope_data",
                "multiMessageValue": [
                    {
                        "parameter": [
                            {"name": "scope_name", "value": "https://www.googleapis.com/auth/gmail.readonly"},
                            {"name": "product_bucket", "multiValue": ["GMAIL"]},
                        ]
                    }
                ],
            },
            {"name": "scope", "multiValue": ["https://www.googleapis.com/auth/gmail.readonly"]},
        ],
    },
}

ALERT: dict[str, Any] = {
    "alertId": "91840a82-0000-46d7-95ec-625c1cf0c3f7",
    "customerId": "03az79cb",
    "createTime": "2026-07-13T10:49:29.436394Z",
    "startTime": "2026-07-01T10:38:13.194711Z",
    "type": "Leaked password",
    "source": "Google identity",
    "data": {
        "@type": "type.googleapis.com/google.apps.alertcenter.type.AccountWarning",
        "email": "Jo@Contoso.example",
        "loginDetails": {"loginTime": "2026-03-03T23:41:46.826274Z", "ipAddress": "89.160.20.128"},
    },
    "metadata": {"severity": "HIGH", "status": "NOT_STARTED"},
    "deleted": False,
}

REAL_SHAPED: dict[str, dict[str, Any]] = {
    "entra-signin": SIGNIN_BETA,
    "entra-risk": RISK,
    "o365-audit": MAIL_ACCESS,
    "gws-activity": ACTIVITY,
    "gws-alert": ALERT,
}


def one(kind: str, record: Any) -> Event:
    out = normalize(kind, record, "t1")
    assert len(out) == 1 and isinstance(out[0], Event), out
    return out[0]


# --- Entra ------------------------------------------------------------------------------------


def test_beta_non_interactive_sign_in() -> None:
    e = one("entra-signin", SIGNIN_BETA)
    assert e.user_principal == "jo@contoso.example" and e.success and e.failure_reason is None
    assert not e.interactive and e.asn == 33771 and e.country == "KE"
    assert (e.latitude, e.longitude) == (-4.05, 39.66)
    assert e.auth_protocol == "ropc" and e.user_type == "member" and e.risk_level == "medium"
    assert e.risk_types == ("anonymizedIPAddress", "unlikelyTravel") and e.flags == ("anonymizer",)
    assert e.scopes == ("Mail.Read", "offline_access", "User.Read") and e.device_id == "eab73519"
    assert ("named_networks", "Suspicious countries") in e.parameters


def test_interactive_flag_readings() -> None:
    r = {**SIGNIN_BETA, "signInEventTypes": ["interactiveUser"], "isInteractive": False}
    assert one("entra-signin", r).interactive  # the beta list is the more specific
    r = {k: v for k, v in SIGNIN_BETA.items() if k != "signInEventTypes"}
    assert not one("entra-signin", {**r, "isInteractive": "false"}).interactive
    assert one("entra-signin", {**r, "isInteractive": None}).interactive


def test_azure_monitor_export_is_unwrapped() -> None:
    inner = {k: v for k, v in SIGNIN_BETA.items() if k not in ("signInEventTypes", "isInteractive")}
    wrapped = {"category": "NonInteractiveUserSignInLogs", "operationName": "Sign-in activity", "properties": inner}
    assert detect_kind(wrapped) == "entra-signin"
    e = one("entra-signin", wrapped)
    assert e.event_id == SIGNIN_BETA["id"] and not e.interactive


def test_empty_coordinates_are_unknown() -> None:
    r = copy.deepcopy(SIGNIN_BETA)
    r["location"]["geoCoordinates"] = {}
    e = one("entra-signin", r)
    assert e.latitude is None and e.longitude is None


def test_risk_detection() -> None:
    e = one("entra-risk", RISK)
    assert e.kind == "risk" and e.user_principal == "olivia@adatum.example"
    assert e.ip is None  # the docs' own example IP is invalid; the detection is kept
    assert e.risk_types == ("anonymizedIPAddress",) and e.risk_level == "high" and e.risk_state == "atRisk"
    assert e.user_agent == "curl/8.0" and ("info.alertUrl", "https://x") in e.parameters
    assert e.occurred_at == datetime(2026, 9, 5, 0, 9, 18, 782285, tzinfo=UTC)


# --- Office 365 -------------------------------------------------------------------------------


def test_mail_items_accessed() -> None:
    e = one("o365-audit", MAIL_ACCESS)
    assert e.kind == "mail_access" and e.success and e.count == 120 and e.access_type == "Sync"
    assert e.is_throttled and e.ip == "2001:db8::7" and e.target == "boss@contoso.example"
    assert e.app_id == "11111111-aaaa-4bbb-8ccc-000000000001" and e.user_type == "application"
    assert e.occurred_at == datetime(2026, 9, 15, 18, 16, 53, tzinfo=UTC) and e.record_type == "50"


def test_sts_failure_reads_the_operation_not_result_status() -> None:
    e = one("o365-audit", STS_FAILED)
    assert e.kind == "sign_in" and not e.success and e.error_code == 50126
    assert e.ip == "198.51.100.1" and e.user_agent == "python-requests/2.31"
    assert e.user_principal == "sample.user@yourorg.example"


def test_consent_scopes_by_name() -> None:
    e = one("o365-audit", CONSENT)
    assert e.kind == "consent" and e.scopes == ("Mail.Read", "offline_access") and e.target == "Evil Reader"
    assert ("ConsentType", "AllPrincipals") in e.parameters


def test_inbox_rule_forwarding_addresses() -> None:
    e = one("o365-audit", INBOX_RULE)
    assert e.kind == "forwarding" and e.target == "bob@example.org; joe@contoso.example" and e.target_external
    assert e.ip == "1.2.3.4"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.51.100.1:26061", "198.51.100.1"),
        ("[203.0.113.5]:443", "203.0.113.5"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2603:10b6:930:3d::7", "2603:10b6:930:3d::7"),
        ("123.456.7.89", None),
        ("", None),
        (None, None),
    ],
)
def test_ip_forms(text: str | None, expected: str | None) -> None:
    assert ip(text) == expected


def test_time_forms() -> None:
    assert parse_time("2026-09-15T18:16:53") == datetime(2026, 9, 15, 18, 16, 53, tzinfo=UTC)
    assert parse_time("2022-12-10 22:21:40.079000000") == datetime(2022, 12, 10, 22, 21, 40, 79000, tzinfo=UTC)
    assert parse_time(1_700_000_000, epoch=True) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_time(1_700_000_000)  # a number where ISO text belongs, unless the source says epoch


# --- Google -----------------------------------------------------------------------------------


def test_activity_with_two_events_gives_two_events() -> None:
    out = normalize("gws-activity", ACTIVITY, "t1")
    assert [type(e) for e in out] == [Event, Event]
    first, second = (e for e in out if isinstance(e, Event))
    assert first.event_id != second.event_id and first.event_id.endswith("#0")
    assert first.kind == "sign_in" and first.success and first.flags == ("suspicious",)
    assert first.asn == 64496 and first.country == "US" and first.user_principal == "jo@contoso.example"
    assert second.kind == "risk" and second.user_principal == "al@contoso.example"  # affected_email_address
    assert second.risk_types == ("suspicious_login",)


def test_token_grant_single_event_object() -> None:
    e = one("gws-activity", TOKEN)
    assert e.kind == "consent" and e.app_id == "923-abc.apps.googleusercontent.com" and e.app == "Gmail Add-on"
    assert e.scopes == ("https://www.googleapis.com/auth/gmail.readonly",)
    assert ("product_buckets", "GMAIL") in e.parameters and e.event_id.startswith("token:")


def test_panther_flattened_activity() -> None:
    flat = {
        "id": {"applicationName": "login", "time": "2026-05-26 15:26:09.421000000", "uniqueQualifier": "7"},
        "type": "account_warning",
        "name": "account_disabled_password_leak",
        "parameters": {"affected_email_address": "homer@example.org"},
    }
    e = one("gws-activity", flat)
    assert e.kind == "risk" and e.user_principal == "homer@example.org"


def test_alert() -> None:
    e = one("gws-alert", ALERT)
    assert e.kind == "risk" and e.user_principal == "jo@contoso.example" and e.ip == "89.160.20.128"
    assert e.risk_types == ("Leaked password",) and e.risk_level == "high"
    takeout = {**ALERT, "type": "Customer takeout initiated", "data": {"email": "al@contoso.example"}}
    assert one("gws-alert", takeout).kind == "export"
    phishing = {**ALERT, "type": "User reported phishing", "data": {}}
    assert one("gws-alert", phishing).kind == "alert" and one("gws-alert", phishing).user_principal == ""


# --- the front door ---------------------------------------------------------------------------


def test_detect_kind_for_every_kind() -> None:
    for kind, record in REAL_SHAPED.items():
        assert detect_kind(record) == kind
    assert detect_kind(STS_FAILED) == "o365-audit"
    assert detect_kind({"value": [SIGNIN_BETA]}) == "entra-signin"  # a response page
    assert detect_kind([RISK, RISK]) == "entra-risk"  # a content blob is an array
    assert detect_kind({"hello": 1}) is None and detect_kind(42) is None and detect_kind([]) is None


def test_pages_and_blobs_are_flattened() -> None:
    out = normalize("auto", {"@odata.context": "x", "value": [SIGNIN_BETA, SIGNIN_BETA]}, "t1")
    assert len(out) == 2 and all(isinstance(e, Event) for e in out)
    out = normalize("o365-audit", [MAIL_ACCESS, CONSENT, "junk"], "t1")
    assert [type(e) for e in out] == [Event, Event, Rejection]
    out = normalize("gws-activity", {"kind": "admin#reports#activities", "items": [ACTIVITY, TOKEN]}, "t1")
    assert len(out) == 3
    assert normalize("gws-alert", {"alerts": []}, "t1") == []


def test_every_kind_maps_onto_the_documented_set() -> None:
    kinds = {e.kind for k, r in REAL_SHAPED.items() for e in normalize(k, r, "t1") if isinstance(e, Event)}
    kinds |= {one("o365-audit", r).kind for r in (STS_FAILED, CONSENT, INBOX_RULE)}
    assert kinds <= set(EVENT_KINDS)
    assert KINDS == ("entra-signin", "entra-risk", "o365-audit", "gws-activity", "gws-alert")


def test_unknown_kind_is_the_callers_mistake() -> None:
    with pytest.raises(ValueError, match="unknown source kind"):
        normalize("syslog", {}, "t1")
    (r,) = normalize("auto", {"hello": 1}, "t1")
    assert isinstance(r, Rejection) and "which source" in r.reason


def test_missing_essentials_are_rejected_with_a_reason() -> None:
    r = normalize("o365-audit", {**MAIL_ACCESS, "UserId": None}, "t1")[0]
    assert isinstance(r, Rejection) and "UserId" in r.reason and r.event_id == MAIL_ACCESS["Id"]
    r = normalize("gws-activity", {**ACTIVITY, "id": {"applicationName": "login"}}, "t1")[0]
    assert isinstance(r, Rejection) and "id.time" in r.reason
    r = normalize("entra-risk", {**RISK, "riskEventType": None}, "t1")[0]
    assert isinstance(r, Rejection) and "riskEventType" in r.reason


# --- never raises -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=6),
    max_leaves=25,
)

PER_SOURCE: dict[str, Callable[[Any, str], Any]] = {
    "entra-signin": normalize_signin,
    "entra-risk": normalize_risk,
    "o365-audit": normalize_o365,
    "gws-activity": normalize_activity,
    "gws-alert": normalize_alert,
}


def outcomes(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([*KINDS, "auto"]), json_values)
def test_front_door_never_raises_on_arbitrary_json(kind: str, value: Any) -> None:
    for out in normalize(kind, value, "t1"):
        assert isinstance(out, (Event, Rejection))
        assert not (isinstance(out, Rejection) and out.reason.startswith("normalizer error")), out


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(PER_SOURCE)), json_values)
def test_each_normalizer_never_raises_on_arbitrary_json(kind: str, value: Any) -> None:
    # without the front door's safety net: the normalizers themselves must not raise
    for out in outcomes(PER_SOURCE[kind](value, "t1")):
        assert isinstance(out, (Event, Rejection))


def _mangle(record: Any, path: list[str | int], value: Any) -> Any:
    """`record` with the node at `path` (as far as it exists) replaced by `value`."""
    out = copy.deepcopy(record)
    node = out
    for i, step in enumerate(path):
        if isinstance(node, dict) and node:
            key = list(node)[step % len(node)] if isinstance(step, int) else step
            if i == len(path) - 1 or not isinstance(node.get(key), (dict, list)):
                node[key] = value
                return out
            node = node[key]
        elif isinstance(node, list) and node:
            idx = (step if isinstance(step, int) else len(str(step))) % len(node)
            if i == len(path) - 1 or not isinstance(node[idx], (dict, list)):
                node[idx] = value
                return out
            node = node[idx]
        else:
            return out
    return value


REAL_SHAPED_ALL = [*REAL_SHAPED.items(), ("o365-audit", STS_FAILED), ("o365-audit", CONSENT),
                   ("o365-audit", INBOX_RULE), ("gws-activity", TOKEN)]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(REAL_SHAPED_ALL),
    st.lists(st.one_of(st.integers(0, 50), st.text(max_size=12)), min_size=1, max_size=5),
    json_values,
)
def test_normalizers_never_raise_on_mangled_real_shaped_records(
    pair: tuple[str, dict[str, Any]], path: list[str | int], value: Any
) -> None:
    kind, record = pair
    mangled = json.loads(json.dumps(_mangle(record, path, value)))
    for out in outcomes(PER_SOURCE[kind](mangled, "t1")):
        assert isinstance(out, (Event, Rejection))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(REAL_SHAPED_ALL), st.dictionaries(st.text(max_size=25), json_values, max_size=8))
def test_normalizers_never_raise_on_records_with_replaced_top_level_keys(
    pair: tuple[str, dict[str, Any]], extra: dict[str, Any]
) -> None:
    kind, record = pair
    keys = list(record)
    mangled = {**record, **{keys[sum(map(ord, k)) % len(keys)]: v for k, v in extra.items()}}
    for out in outcomes(PER_SOURCE[kind](json.loads(json.dumps(mangled)), "t1")):
        assert isinstance(out, (Event, Rejection))


# --- the typed fast path for sign-ins gives what the dict path gives --------------------------------

SIGNIN_APP: dict[str, Any] = {
    **{k: v for k, v in SIGNIN_BETA.items() if k not in ("userPrincipalName", "userDisplayName", "userId")},
    "signInEventTypes": ["servicePrincipal"],
    "servicePrincipalId": "0A1B2C3D-0000-4000-8000-00000000A11C",
    "servicePrincipalName": "Mail Sync Daemon",
}

SIGNIN_SHAPES = (
    [r for k, r in REAL_SHAPED_ALL if k == "entra-signin"]
    + [SIGNIN_APP]
    + [
        json.loads((SAMPLES / name).read_text())
        for name in ("graph_signin_beta_failed_50126.json", "graph_signin_beta_noninteractive_graph_explorer.json")
    ]
)


def _both_paths(record: Any) -> tuple[list[Any], list[Any]]:
    """What the poller gets from the bytes, and what the dict path gets from the same bytes parsed."""
    try:
        raw = json.dumps(record, allow_nan=False).encode()
        parsed = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError):
        assume(False)  # not JSON any provider could send (NaN, integers past 64 bits)
    return normalize_json("entra-signin", raw, "t1"), normalize("entra-signin", parsed, "t1")


def test_sign_in_samples_read_the_same_from_bytes_and_from_dicts() -> None:
    panther = [json.loads(line)["log"] for line in (SAMPLES / PANTHER_SIGNINS).read_text().splitlines()]
    shapes = [*SIGNIN_SHAPES, *panther]
    assert len(shapes) > 5
    for record in shapes:
        fast, slow = _both_paths(record)
        assert fast == slow


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(SIGNIN_SHAPES),
    st.lists(st.one_of(st.integers(0, 50), st.text(max_size=12)), min_size=1, max_size=4),
    json_values,
)
def test_sign_in_fast_path_equals_dict_path_on_mangled_records(
    record: dict[str, Any], path: list[str | int], value: Any
) -> None:
    fast, slow = _both_paths(_mangle(record, path, value))
    assert fast == slow


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2", b"\xff\xfe", b'"\\ud800"'])
def test_sign_in_bytes_that_are_not_json_are_one_rejection(raw: bytes) -> None:
    (out,) = normalize_json("entra-signin", raw, "t1")
    assert isinstance(out, Rejection) and out.reason.startswith("not JSON")


def test_a_service_principal_sign_in_is_kept_under_its_app_principal() -> None:
    fast, slow = _both_paths(SIGNIN_APP)
    assert fast == slow
    (e,) = fast
    assert isinstance(e, Event)
    assert e.user_principal == "app:0a1b2c3d-0000-4000-8000-00000000a11c" and e.user_display == "Mail Sync Daemon"
    assert e.user_type == "service_principal" and e.user_id is None and not e.interactive
    # without signInEventTypes (or the export's category) a record with no user is still not understood
    unmarked = {k: v for k, v in SIGNIN_APP.items() if k != "signInEventTypes"}
    (out,) = normalize("entra-signin", unmarked, "t1")
    assert isinstance(out, Rejection) and "userPrincipalName" in out.reason


# --- one sign-in, one event: which STS logons copy a Graph sign-in ---------------------------------


def sts(request_type: str | None, *, failed: bool = False, code: int = 50126, agent: str = "Mozilla/5.0") -> Event:
    """An Office 365 STS logon with the given ExtendedProperties RequestType (None: the entry is absent),
    failed with `code` when `failed`."""
    record = sts_logon(
        record_id="sts-1",
        at=datetime(2026, 3, 18, 9, tzinfo=UTC),
        upn="jo@contoso.example",
        user_id="4562bcc8-0000-4f95-b7c0-4f8ce89dca5e",
        ip="198.51.100.7",
        user_agent=agent,
        code=code if failed else 0,
        request_type=request_type or "",
    )
    if request_type is None:
        record["ExtendedProperties"] = [p for p in record["ExtendedProperties"] if p["Name"] != "RequestType"]
    (event,) = normalize("o365-audit", record, "t1")
    assert isinstance(event, Event) and event.kind == "sign_in"
    return event


@pytest.mark.parametrize("request_type", ["Login:login", "OAuth2:Authorize", "Kmsi:kmsi", "SAS:EndAuth", None])
def test_an_interactive_sts_logon_copies_the_interactive_graph_log(request_type: str | None) -> None:
    for failed in (False, True):
        event = sts(request_type, failed=failed)
        assert event.interactive and not is_token_redemption(event)
        assert is_sign_in_copy(event) and is_sign_in_copy(event, noninteractive_log=True)


@pytest.mark.parametrize("request_type", ["OAuth2:Token", "oauth2:token", " OAUTH2:TOKEN "])
def test_a_token_redemption_copies_graph_only_with_its_noninteractive_log(request_type: str) -> None:
    """A refresh token redeemed (a replayed one too) is a non-interactive sign-in, absent from v1.0's
    log: with only that log read, the STS logon is the sign-in and is detected on."""
    for failed in (False, True):
        event = sts(request_type, failed=failed, code=50173)  # a revoked refresh token refused
        assert not event.interactive and is_token_redemption(event)  # as Graph's non-interactive records
        assert not is_sign_in_copy(event)
        assert is_sign_in_copy(event, noninteractive_log=True)


@pytest.mark.parametrize(
    ("failed", "code", "agent"),
    [
        (True, 50126, "python-requests/2.32"),
        (True, 50053, "Mozilla/5.0"),
        (False, 0, "BAV2ROPC"),
        (True, 50126, "BAV2ROPC"),
    ],
)
def test_a_password_grant_at_the_token_endpoint_is_interactive(failed: bool, code: int, agent: str) -> None:
    """ROPC presents the password, so Entra logs it as an interactive sign-in: its STS logon is a copy
    of the interactive log (one password guess, not two), though it went to the token endpoint."""
    event = sts("OAuth2:Token", failed=failed, code=code, agent=agent)
    assert event.interactive and not is_token_redemption(event) and is_sign_in_copy(event)


def test_only_sts_logons_are_copies() -> None:
    graph = normalize_signin(json.loads(json.dumps(SIGNIN_BETA)), "t1")
    assert isinstance(graph, Event) and graph.kind == "sign_in"
    consent = replace(sts("OAuth2:Token"), kind="consent")
    for event in (graph, consent):
        assert not is_sign_in_copy(event) and not is_sign_in_copy(event, noninteractive_log=True)


@pytest.mark.parametrize(
    ("logon_error", "code", "wrong_password"),
    [
        ("InvalidUserNameOrPassword", 50126, True),
        ("UserStrongAuthClientAuthNRequiredInterrupt", 50074, False),
        ("KmsiInterrupt", 50140, False),
        ("FreshTokenNeeded", 50173, False),
        ("SomethingNewFromMicrosoft", -1, True),
    ],
)
def test_an_sts_failure_with_only_its_logon_error_name(logon_error: str, code: int, wrong_password: bool) -> None:
    """Older STS logons carry the AADSTS name and no ErrorNumber: an MFA or "stay signed in?" interrupt
    or a revoked refresh token named so is still not a wrong password (an unknown name still is)."""
    record = sts_logon(
        record_id="r1", at=datetime(2026, 3, 2, tzinfo=UTC), upn="a@x.example", user_id="u1", ip="192.0.2.1",
        user_agent="Outlook-iOS/2.0", code=50126,
    )  # fmt: skip
    del record["ErrorNumber"]
    record["LogonError"] = logon_error
    (event,) = normalize("o365-audit", record, "t1")
    assert isinstance(event, Event) and not event.success
    assert event.error_code == code and is_failed_password(event) is wrong_password
