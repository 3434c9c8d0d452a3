"""The front door: any source's wire record -> Events (or Rejections). Pure.

`normalize(kind, record, tenant)` returns a list because one Google activity holds several events
and because it also accepts what a replay file may hold instead of one record: a list of records
(an O365 content blob is a JSON array) or one response page (`value`, `items`, `alerts`). It never
raises on a JSON value: a record it cannot read comes back as a Rejection that names the reason.

`detect_kind(record)` guesses the kind from the record's own keys, for `replay --kind auto`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from bot.model import Event, Rejection
from bot.sources.normalize_common import digest_id, lower_keys
from bot.sources.normalize_entra import normalize_signin, signin_from_json
from bot.sources.normalize_entra_risk import normalize_risk
from bot.sources.normalize_gws_activity import normalize_activity
from bot.sources.normalize_gws_alert import normalize_alert
from bot.sources.normalize_o365 import normalize_o365

KINDS = ("entra-signin", "entra-risk", "o365-audit", "gws-activity", "gws-alert")

Normalized = list[Event | Rejection]


def _one(f: Callable[[Any, str], Event | Rejection]) -> Callable[[Any, str], Normalized]:
    return lambda record, tenant: [f(record, tenant)]


NORMALIZERS: dict[str, Callable[[Any, str], Normalized]] = {
    "entra-signin": _one(normalize_signin),
    "entra-risk": _one(normalize_risk),
    "o365-audit": _one(normalize_o365),
    "gws-activity": normalize_activity,
    "gws-alert": _one(normalize_alert),
}
# Kinds with a fast path from one record's JSON bytes (typed decoding: the pipeline's hot path). It
# returns None for what it does not take, which then goes through `normalize` like any other kind.
FAST_PATHS: dict[str, Callable[[bytes, str], Event | None]] = {
    "entra-signin": signin_from_json,
}
SOURCES = {
    "entra-signin": "entra_signin",
    "entra-risk": "entra_risk",
    "o365-audit": "o365_audit",
    "gws-activity": "gws_activity",
    "gws-alert": "gws_alert",
}
# A response page's list, by the key each API uses, unless the dict is itself a record.
PAGE_KEYS = (("value", "createdDateTime"), ("items", "events"), ("alerts", "alertId"))
MAX_NESTING = 3


def _records(value: Any, depth: int = 0) -> list[Any]:
    """The records inside a list or a response page; anything else is one record."""
    if depth < MAX_NESTING:
        if isinstance(value, list):
            return [r for v in value for r in _records(v, depth + 1)]
        if isinstance(value, dict):
            for key, own in PAGE_KEYS:
                inner = value.get(key)
                if isinstance(inner, list) and own not in value:
                    return [r for v in inner for r in _records(v, depth + 1)]
    return [value]


def _kind_of(record: dict[str, Any]) -> str | None:
    if "riskEventType" in record or "riskLastUpdatedDateTime" in record:
        return "entra-risk"
    inner = record.get("properties")
    if "createdDateTime" in record or (isinstance(inner, dict) and "createdDateTime" in inner):
        return "entra-signin"
    if "alertId" in record and ("type" in record or "data" in record):
        return "gws-alert"
    ident = record.get("id")
    if "events" in record or (isinstance(ident, dict) and "applicationName" in ident):
        return "gws-activity"
    keys = lower_keys(record)
    if "creationtime" in keys and "operation" in keys:
        return "o365-audit"
    return None


def detect_kind(record: Any) -> str | None:
    """The source kind of a record (or of the first record in a list or page); None if unrecognised."""
    for r in _records(record):
        if isinstance(r, dict):
            return _kind_of(r)
    return None


def normalize(kind: str, record: Any, tenant: str) -> Normalized:
    """Wire record(s) of one kind -> Events and Rejections. `kind` is one of KINDS, or "auto".

    Raises ValueError only for an unknown `kind` (a caller's mistake, not a record's).
    """
    if kind != "auto" and kind not in NORMALIZERS:
        raise ValueError(f"unknown source kind {kind!r}; expected one of {', '.join(KINDS)} or auto")
    out: Normalized = []
    for r in _records(record):
        k = detect_kind(r) if kind == "auto" else kind
        if k is None:
            out.append(Rejection("unknown", digest_id(r), "could not tell which source this record comes from"))
            continue
        try:
            out.extend(NORMALIZERS[k](r, tenant))
        except Exception as exc:  # a bug in a normalizer must cost one record, never the poll
            out.append(Rejection(SOURCES[k], digest_id(r), f"normalizer error: {type(exc).__name__}"))
    return out


def normalize_json(kind: str, raw: bytes, tenant: str) -> Normalized:
    """A record (or a page, a blob) as JSON bytes -> Events and Rejections; never raises on the bytes.

    Ordinary sign-ins decode straight into a typed struct; everything else is parsed and goes through
    `normalize`. Bytes that are not JSON come back as one Rejection."""
    fast = FAST_PATHS.get(kind)
    if fast is not None:
        try:
            event = fast(raw, tenant)
        except Exception:  # a bug in the fast path must cost speed, never the record: the dict path decides
            event = None
        if event is not None:
            return [event]
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        source = SOURCES.get(kind, "unknown")
        return [Rejection(source, digest_id(raw.decode("utf-8", "replace")), f"not JSON: {exc}")]
    return normalize(kind, record, tenant)


# --- one sign-in, one event -----------------------------------------------------------------------
# Entra ID writes each sign-in to its own sign-in log (Graph `auditLogs/signIns`) and, as an STS logon
# (UserLoggedIn / UserLoginFailed, RecordType 15), to the unified audit log that the Management
# Activity API serves under Audit.AzureActiveDirectory (detections.md §2.3). A tenant that reads both
# would count every failed password twice: three typos then a success look like six failures, which
# is failed_then_success's HIGH case (5 failures, Panther) and a false prompt. No documented field
# joins the two copies, so the richer and sooner of the two (Graph: location, ASN, device, risk,
# minutes instead of 30 min-24 h late) is the tenant's sign-in record whenever it is being read, and
# the STS logons are kept for the record but not detected on. Without Graph's sign-in log (no Entra
# ID P1, or the source off), the STS logons are the sign-ins and are detected on as before.
GRAPH_SIGN_IN_SOURCE = SOURCES["entra-signin"]

# Which of Graph's two sign-in logs holds the copy depends on the logon. One at the OAuth token
# endpoint (RequestType "OAuth2:Token", e.g. an Azure CLI UserLoggedIn in Alert Logic's public O365
# collector test fixtures: a refresh token or code redeemed, or a password grant) is mostly what Entra
# logs as a *non-interactive* sign-in (and normalize_o365 marks it so), which the v1.0 log (the
# `signins` source) does not return (api-contracts.md: non-interactive sign-ins are a beta-only query).
# A stolen refresh token replayed from an attacker's address is exactly such a logon (detections.md
# A6), so a token redemption is left to Graph only while the non-interactive log
# (`signins_noninteractive`) is read too. Without it, a password grant (ROPC, which Entra logs as
# interactive) is counted twice, which costs less than a replayed token unseen.


def is_sts_logon(event: Event) -> bool:
    """A sign-in read from the unified audit log (UserLoggedIn / UserLoginFailed)."""
    return event.kind == "sign_in" and event.source == SOURCES["o365-audit"]


def is_token_redemption(event: Event) -> bool:
    """An STS logon at the OAuth token endpoint (RequestType OAuth2:Token): a non-interactive sign-in."""
    return is_sts_logon(event) and not event.interactive


def is_sign_in_copy(event: Event, *, noninteractive_log: bool = False) -> bool:
    """An Office 365 STS logon that Entra's sign-in log holds too, for a tenant whose interactive Graph
    sign-in log is being read (and, with `noninteractive_log`, its non-interactive one as well)."""
    return is_sts_logon(event) and (event.interactive or noninteractive_log)


def is_graph_sign_in(event: Event) -> bool:
    """A sign-in read from Entra's own sign-in log (v1.0 or beta)."""
    return event.kind == "sign_in" and event.source == GRAPH_SIGN_IN_SOURCE
