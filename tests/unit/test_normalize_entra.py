from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.model import Event, Rejection
from bot.sources.normalize_entra import normalize_signin, parse_time
from sandbox.world import sign_in

T = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def base(**kw: Any) -> dict[str, Any]:
    return sign_in("Jo@Contoso.example", "22222222-0000-0000-0000-000000000001", "Jo", T, **kw)


def test_wire_record_becomes_event() -> None:
    e = normalize_signin(base(country="PT", city="Lisbon", ip="203.0.113.9"), "t1")
    assert isinstance(e, Event)
    assert e.user_principal == "jo@contoso.example"
    assert e.occurred_at == T and e.success and e.country == "PT" and e.ip == "203.0.113.9"
    assert e.device == "Windows 10 / Edge 131"


def test_failure_code_and_string_typed_code() -> None:
    r = base(ok=False)
    r["status"]["errorCode"] = "50126"
    e = normalize_signin(r, "t1")
    assert isinstance(e, Event) and not e.success and e.error_code == 50126


def test_seven_digit_fraction_and_naive_time() -> None:
    assert parse_time("2020-03-13T19:15:41.6195833Z") == datetime(2020, 3, 13, 19, 15, 41, 619583, tzinfo=UTC)
    assert parse_time("2020-03-13T19:15:41") == datetime(2020, 3, 13, 19, 15, 41, tzinfo=UTC)


def test_invalid_ip_text_keeps_the_sign_in() -> None:
    e = normalize_signin(base(ip="not-an-ip"), "t1")
    assert isinstance(e, Event) and e.ip is None


def test_null_nested_objects_are_tolerated() -> None:
    r = base()
    r["location"] = None
    r["deviceDetail"] = None
    r["status"] = None
    e = normalize_signin(r, "t1")
    assert isinstance(e, Event) and e.country is None and e.success


def test_missing_or_wrong_typed_fields_are_rejected_with_id_and_reason() -> None:
    r = base()
    del r["userPrincipalName"]
    out = normalize_signin(r, "t1")
    assert isinstance(out, Rejection) and out.event_id == r["id"] and "userPrincipalName" in out.reason
    r = base()
    r["createdDateTime"] = 12345
    out = normalize_signin(r, "t1")
    assert isinstance(out, Rejection) and "createdDateTime" in out.reason
    r = base()
    r["status"]["errorCode"] = {"nested": True}
    out = normalize_signin(r, "t1")
    assert isinstance(out, Rejection) and "errorCode" in out.reason


def test_record_without_id_gets_a_stable_digest() -> None:
    r = base()
    del r["id"]
    del r["userPrincipalName"]
    a, b = normalize_signin(r, "t1"), normalize_signin(dict(r), "t1")
    assert isinstance(a, Rejection) and a.event_id.startswith("sha256:") and a.event_id == b.event_id  # type: ignore[union-attr]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=6),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_normalizer_never_raises_on_arbitrary_json(value: Any) -> None:
    assert isinstance(normalize_signin(value, "t1"), (Event, Rejection))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(list(base().keys())), json_values, max_size=12))
def test_normalizer_never_raises_on_mangled_signins(mangled: dict[str, Any]) -> None:
    record = {**base(), **mangled}
    out = normalize_signin(json.loads(json.dumps(record)), "t1")
    assert isinstance(out, (Event, Rejection))
