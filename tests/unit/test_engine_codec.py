"""Codec round trips for every Event field, campaign cases, and the pure suppression rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from msgspec.structs import fields

from bot.allowlist import CONTEXT, AllowEntry, Watch, after_containment, context_value, unsuppressed
from bot.detect.fleet import Fleet, TenantFleet, fleet_to_dict
from bot.detect.password_spray import Attempt, SprayWindow
from bot.model import Case, CaseState, Decision, Event, Finding, Profile, Severity
from bot.store import codec

T = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def full_event() -> Event:
    return Event(
        source="entra_signin", event_id="e1", tenant="t", occurred_at=T, user_principal="jo@x.example",
        user_id="u1", user_display="Jo", kind="sign_in", success=True, error_code=0, failure_reason=None,
        ip="203.0.113.9", country="PT", city="Lisbon", app="Outlook", client_app="Browser", user_agent="UA",
        device="Windows 10 / Edge", interactive=False, asn=3243, latitude=38.7, longitude=-9.1,
        flags=("anonymizer",), user_type="member", auth_protocol="ropc", auth_requirement="singleFactorAuthentication",
        device_id="dev-1", session_id="s1", risk_types=("leakedCredentials", "unfamiliarFeatures"), risk_level="high",
        risk_state="atRisk", operation="signIn", workload="AzureActiveDirectory", record_type="50", app_id="app-1",
        scopes=("Mail.Read", "offline_access"), target="box@x.example", target_external=True, count=7,
        access_type="Bind", is_throttled=True, parameters=(("AppId", "a"), ("Role", "r")),
    )  # fmt: skip


def test_every_event_field_round_trips() -> None:
    e = full_event()
    d = codec.event_to_dict(e)
    assert set(d) == {f.name for f in fields(Event)}
    assert codec.event_from_dict(d) == e
    assert isinstance(codec.event_from_dict(d).scopes, tuple)  # tuples back from lists


def test_events_stored_by_older_versions_still_read() -> None:
    old = {
        "source": "entra_signin", "event_id": "e0", "tenant": "t", "occurred_at": T.isoformat(),
        "user_principal": "jo@x.example", "user_id": None, "user_display": "Jo", "kind": "sign_in",
        "success": True, "error_code": 0, "failure_reason": None, "ip": None, "country": "US", "city": None,
        "app": None, "client_app": None, "user_agent": None, "device": None, "interactive": True,
    }  # fmt: skip
    e = codec.event_from_dict({**old, "some_future_field": 1})
    assert e.country == "US" and e.flags == () and e.asn is None and e.parameters == ()


def test_campaign_case_keeps_its_users() -> None:
    case = Case(
        id="MW-1", tenant="t", user_principal="campaign:203.0.113.9", state=CaseState.AWAITING_SOC,
        severity=Severity.MEDIUM, decision=Decision.SOC, opened_at=T, updated_at=T, last_event_at=T,
        events=(full_event(),), users=("a@x.example", "b@x.example"),
    )  # fmt: skip
    back = codec.case_from_columns(
        {"id": case.id, "tenant": "t", "user_principal": case.user_principal, "state": "awaiting_soc",
         "severity": "medium", "opened_at": T, "updated_at": T, "last_event_at": T, "deadline_at": None, "version": 0},
        codec.case_data(case),
    )  # fmt: skip
    assert back.users == case.users and back.is_campaign and back.events == case.events


def test_tenant_fleet_round_trips_and_reads_the_single_window_form() -> None:
    window = SprayWindow(attempts=(Attempt(T, "1.2.3.4", "a", False), Attempt(T, "5.6.7.8", "b", True)))
    split = TenantFleet.from_dict(fleet_to_dict(Fleet(spray=window)))
    assert set(split.spray) == {"1.2.3.4", "5.6.7.8"}
    assert split.spray["1.2.3.4"].state("1.2.3.4") == SprayWindow(attempts=(window.attempts[0],))
    assert split.failing_accounts("1.2.3.4") == ("a",) and split.failing_accounts("5.6.7.8") == ()
    again = TenantFleet.from_dict(orjson.loads(orjson.dumps(split.to_dict())))
    assert again.to_dict() == split.to_dict()


def finding(detector: str, event: Event) -> Finding:
    return Finding(detector=detector, severity=Severity.MEDIUM, reason="r", event_id=event.event_id, occurred_at=T)


def test_a_yes_pins_country_network_and_client_together() -> None:
    e = full_event()
    assert context_value(e) == "country=PT;asn=3243;client=Browser"
    entry = AllowEntry("jo@x.example", CONTEXT, context_value(e) or "", T + timedelta(days=30), "yes", "jo", "user")
    fs = [finding(d, e) for d in ("new_country", "new_asn", "failed_then_success", "legacy_protocol")]
    assert [f.detector for f in unsuppressed(fs, [entry], e)] == ["failed_then_success"]
    elsewhere = Event(**{**codec.event_to_dict(e), "occurred_at": T, "asn": 9999})  # same country, other network
    assert {f.detector for f in unsuppressed(fs, [entry], elsewhere)} == {
        d for d in ("new_country", "new_asn", "failed_then_success", "legacy_protocol")
    }


def test_the_quiet_period_after_containment_drops_only_old_detectors_from_usual_places() -> None:
    home = Event(source="s", event_id="h", tenant="t", occurred_at=T + timedelta(hours=2), user_principal="jo",
                 success=True, ip="198.51.100.7", country="US", asn=7922)  # fmt: skip
    profile = Profile(user_principal="jo", first_seen=T - timedelta(days=40), sign_ins=50,
                      countries=(("US", T),), asns=((7922, T),), known_ips=(("198.51.100.7", T),))  # fmt: skip
    watch = Watch("jo", "MW-1", T, T + timedelta(days=30), T + timedelta(hours=24),
                  detectors=frozenset({"failed_then_success"}), ips=frozenset({"185.220.101.4"}))  # fmt: skip
    fs = [finding("failed_then_success", home), finding("mail_forwarding", home)]
    assert [f.detector for f in after_containment(fs, [watch], home, profile)] == ["mail_forwarding"]
    attacker = Event(**{**codec.event_to_dict(home), "occurred_at": T + timedelta(hours=2), "ip": "185.220.101.4"})
    assert len(after_containment(fs, [watch], attacker, profile)) == 2  # the attacker's address is new evidence
    later = Event(**{**codec.event_to_dict(home), "occurred_at": T + timedelta(hours=30)})
    assert len(after_containment(fs, [watch], later, profile)) == 2  # after the quiet period
