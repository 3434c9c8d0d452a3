"""`mailwarden replay`, `scenario` and `eval` end to end (the CLI, a temporary store, no Slack)."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.cli import main
from bot.detect import detector_ids
from bot.evaluate import PROMPT_TARGET, RECALL_TARGET, config_for, evaluate, reaches_soc
from bot.model import Case, CaseState, Decision, Severity
from sandbox.scenario import CARRIER_HUBS, CATEGORIES, NATIVE_MAIL_CLIENTS, VPN_EGRESS, generate
from sandbox.wire import sts_logon_of
from sandbox.world import sign_in

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def records() -> list[dict[str, Any]]:
    """Three weeks of jo and ann at home, then a password guessed from Moscow and a spray."""
    out = []
    for d in range(21):
        for i, u in enumerate(("jo", "ann", "bo", "cy", "di", "ed")):
            out.append(
                sign_in(f"{u}@contoso.example", f"id-{u}", u, T0 + timedelta(days=d, minutes=9 * i), seq=d * 10 + i)
            )
    t = T0 + timedelta(days=22)
    attacker = {"ip": "185.220.101.4", "country": "RU", "city": "Moscow"}
    for i in range(6):
        out.append(sign_in("jo@contoso.example", "id-jo", "jo", t + timedelta(seconds=30 * i), ok=False, seq=900 + i,
                           **attacker))  # fmt: skip
    out.append(sign_in("jo@contoso.example", "id-jo", "jo", t + timedelta(minutes=4), seq=990, **attacker))
    for i, u in enumerate(("ann", "bo", "cy", "di", "ed")):
        out.append(sign_in(f"{u}@contoso.example", f"id-{u}", u, t + timedelta(minutes=10, seconds=20 * i), ok=False,
                           seq=800 + i, ip="45.155.205.1", country="NL"))  # fmt: skip
    return out


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["replay", "--json", *argv])
    out = capsys.readouterr()
    return code, [json.loads(line) for line in out.out.splitlines() if line.strip()], out.err


def test_replay_prints_cases_then_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recs = records()
    (tmp_path / "a.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs[:60]) + b"{not json\n")
    (tmp_path / "b.json").write_bytes(orjson.dumps({"value": recs[60:]}))
    code, lines, err = run_json([str(tmp_path / "a.ndjson"), str(tmp_path / "b.json")], capsys)
    assert code == 0
    *case_lines, last = lines
    assert last == {"summary": {"records": len(recs) + 1, "rejected": 1, "cases": len(case_lines)}}
    assert "rejected" in err and "a.ndjson:61" in err and "not JSON" in err
    for c in case_lines:
        assert set(c) == {"case", "user", "users", "severity", "decision", "detectors", "reasons", "events"}
    jo = [c for c in case_lines if c["user"] == "jo@contoso.example"]
    assert jo and jo[0]["severity"] == "high" and "failed_then_success" in jo[0]["detectors"]
    (camp,) = [c for c in case_lines if c["user"] is None]
    assert camp["decision"] == "soc" and len(camp["users"]) == 5 and camp["detectors"] == ["password_spray"]


def test_replay_cards_and_a_malformed_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(orjson.dumps([*records(), {"createdDateTime": "yesterday", "userPrincipalName": "x@y.z"}]))
    code, lines, err = run_json(["--cards", "--kind", "entra-signin", str(path)], capsys)
    assert code == 0 and lines[-1]["summary"]["rejected"] == 1 and "createdDateTime" in err
    jo = next(c for c in lines if c.get("user") == "jo@contoso.example")
    assert jo["cards"] and jo["cards"][0]["audience"] == "user" and jo["cards"][0]["blocks"]
    camp = next(c for c in lines if c.get("user") is None and "case" in c)
    assert camp["cards"][0]["audience"] == "soc"


def test_an_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--json", str(tmp_path / "missing.ndjson")]) == 2
    assert "cannot read" in capsys.readouterr().err


def typos_then_success(user: str, *, typos: int) -> list[dict[str, Any]]:
    """Three weeks of ordinary mornings, then `typos` wrong passwords and the right one, from home."""
    out = [sign_in(user, f"id-{user}", user, T0 + timedelta(days=d), seq=d) for d in range(21)]
    t = T0 + timedelta(days=21)
    out += [
        sign_in(user, f"id-{user}", user, t + timedelta(seconds=30 * i), ok=False, seq=50 + i) for i in range(typos)
    ]
    out.append(sign_in(user, f"id-{user}", user, t + timedelta(seconds=30 * typos + 30), seq=99))
    return out


def test_an_sts_logon_is_not_a_second_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Three typos read from Graph and again from the audit log are three failures, not six (which
    would be failed_then_success's HIGH case and a question to the employee)."""
    graph = typos_then_success("jo@contoso.example", typos=3)
    (tmp_path / "signins.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in graph))
    (tmp_path / "audit.json").write_bytes(orjson.dumps([sts_logon_of(r) for r in graph]))
    _, lines, _ = run_json([str(tmp_path / "signins.ndjson"), str(tmp_path / "audit.json")], capsys)
    assert lines == [{"summary": {"records": 2 * len(graph), "rejected": 0, "cases": 0}}]


def test_sts_logons_are_the_sign_ins_where_graph_is_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No Entra sign-in log in the input (no Entra ID P1): the audit log's STS logons are detected on,
    and a real run of failures is caught from them alone; with the Graph copies beside them, the case
    is the same one, on the Graph records."""
    graph = typos_then_success("ann@contoso.example", typos=6)
    audit = [sts_logon_of(r) for r in graph]
    (tmp_path / "audit.json").write_bytes(orjson.dumps(audit))
    _, lines, _ = run_json([str(tmp_path / "audit.json")], capsys)
    (case,) = lines[:-1]
    assert case["detectors"] == ["failed_then_success"] and case["reasons"][0].startswith("6 failed sign-ins")
    assert case["events"] == [audit[-1]["Id"]]
    (tmp_path / "signins.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in graph))
    _, both, _ = run_json([str(tmp_path / "audit.json"), str(tmp_path / "signins.ndjson")], capsys)
    (both_case,) = both[:-1]
    assert both_case["reasons"] == case["reasons"]  # six failures, not twelve
    assert both_case["events"] == [graph[-1]["id"]]


def test_a_replayed_token_is_seen_in_the_audit_log_until_the_input_holds_noninteractive_sign_ins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The input holds the interactive Graph sign-ins and every STS logon: the interactive logons are
    their copies, but a refresh token redeemed by a script (RequestType OAuth2:Token) is in no Graph
    record of the input, so its STS logon is detected on. With the non-interactive Graph record beside
    it, the STS logon is a copy and the script is caught on the Graph record alone."""
    graph = [sign_in("jo@contoso.example", "id-jo", "jo", T0 + timedelta(days=d), seq=d) for d in range(21)]
    token = sign_in(
        "jo@contoso.example", "id-jo", "jo", T0 + timedelta(days=21, hours=1), ip="203.0.113.9",
        ua="python-requests/2.31.0", seq=77,
    )  # fmt: skip
    token = {**token, "isInteractive": False}
    audit = [sts_logon_of(r) for r in [*graph, token]]
    assert {"Name": "RequestType", "Value": "OAuth2:Token"} in audit[-1]["ExtendedProperties"]
    (tmp_path / "signins.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in graph))
    (tmp_path / "audit.json").write_bytes(orjson.dumps(audit))
    _, lines, _ = run_json([str(tmp_path / "signins.ndjson"), str(tmp_path / "audit.json")], capsys)
    (case,) = lines[:-1]
    assert "scripted_client" in case["detectors"] and case["events"] == [audit[-1]["Id"]]
    (tmp_path / "noninteractive.ndjson").write_bytes(orjson.dumps(token) + b"\n")
    _, both, _ = run_json(
        [str(tmp_path / "signins.ndjson"), str(tmp_path / "noninteractive.ndjson"), str(tmp_path / "audit.json")],
        capsys,
    )
    (both_case,) = both[:-1]
    assert "scripted_client" in both_case["detectors"] and both_case["events"] == [token["id"]]


def test_a_mail_client_refreshing_its_token_at_night_is_not_a_question(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Token redemptions are non-interactive sign-ins: a mail client refreshing its token at 3 a.m.,
    from home, with the audit log's own way of naming the device, says nothing about the person's hours
    or devices (off_hours, new_device), as Graph's non-interactive records do not."""
    graph = [sign_in("jo@contoso.example", "id-jo", "jo", T0 + timedelta(days=d), seq=d) for d in range(21)]
    night = sign_in("jo@contoso.example", "id-jo", "jo", T0 + timedelta(days=21, hours=18), seq=88)
    audit = [sts_logon_of(r) for r in [*graph, {**night, "isInteractive": False}]]
    (tmp_path / "signins.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in graph))
    (tmp_path / "audit.json").write_bytes(orjson.dumps(audit))
    _, lines, _ = run_json([str(tmp_path / "signins.ndjson"), str(tmp_path / "audit.json")], capsys)
    assert lines == [{"summary": {"records": 2 * len(graph) + 1, "rejected": 0, "cases": 0}}]


def case_set(lines: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {
        (c["user"], tuple(c["users"]), c["severity"], c["decision"], tuple(c["detectors"]), tuple(sorted(c["events"])))
        for c in lines
        if "case" in c
    }


RECORDS = records()
EXPECTED: dict[str, set[tuple[Any, ...]]] = {}  # the cases of the records in their original order


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(len(RECORDS))), split=st.integers(min_value=1, max_value=len(RECORDS) - 1))
def test_replay_order_does_not_change_the_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], order: list[int], split: int
) -> None:
    shuffled = [RECORDS[i] for i in order]
    a, b = tmp_path / "x.ndjson", tmp_path / "y.json"
    a.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in shuffled[:split]))
    b.write_bytes(orjson.dumps(shuffled[split:]))
    _, lines, _ = run_json([str(b), str(a)], capsys)
    if "cases" not in EXPECTED:
        base = tmp_path / "base.json"
        base.write_bytes(orjson.dumps(RECORDS))
        _, ref, _ = run_json([str(base)], capsys)
        EXPECTED["cases"] = case_set(ref)
    assert EXPECTED["cases"] and case_set(lines) == EXPECTED["cases"]


async def test_the_labelled_scenario_meets_the_targets(tmp_path: Path) -> None:
    scenario = generate(users=150, days=21, seed=3)
    scenario.write(tmp_path)
    assert {a["category"] for a in scenario.labels} == set(CATEGORIES)  # every category is attacked
    assert set(CATEGORIES) == set(detector_ids())  # a new detector needs its attack in the generator
    ev = await evaluate(tmp_path)
    assert ev.rejected == 0
    for name, cat in ev.categories.items():
        assert cat["caught"] / cat["attacks"] >= RECALL_TARGET, (name, ev.missed)
    assert ev.prompts <= PROMPT_TARGET * ev.users * ev.days / 1000, ev.false_prompts
    assert ev.acting_on_attacks >= len(scenario.labels) - 1  # attacks act (the spray is one case + its victim)


def test_the_scenario_holds_what_real_logs_are_full_of() -> None:
    """MFA interrupts and Google's 2-step verification, Outlook redeeming its refresh tokens (overnight
    too) and a password change's run
    of revoked-token failures fooled earlier versions of the detectors; they are in the labelled set so
    that `eval` measures against them, and must not silently drop out of it. So is the token replay
    only the audit log's token-endpoint record shows."""
    s = generate(users=150, days=21, seed=3)
    graph = Counter(r["status"]["errorCode"] for r in s.files["entra_signins.ndjson"])
    assert graph[50074] > 0 and graph[50140] > 0 and graph[0] > graph[50074]
    people = {p.upn: p for p in s.people}

    def request_type(r: dict[str, Any]) -> str:
        return str(next(p["Value"] for p in r["ExtendedProperties"] if p["Name"] == "RequestType"))

    tokens = [r for r in s.files["o365_audit.json"] if r["RecordType"] == 15 and request_type(r) == "OAuth2:Token"]
    refreshed = [r for r in tokens if r["Operation"] == "UserLoggedIn" and r["UserId"] in people]
    local_hours = {
        datetime.fromisoformat(r["CreationTime"]).replace(tzinfo=UTC).astimezone(people[r["UserId"]].tz).hour
        for r in refreshed
    }
    assert len(refreshed) > len(people) and {0, 1, 2, 3, 4} & local_hours  # every day, and at night
    revoked = [r for r in tokens if r["ErrorNumber"] == "50173"]
    assert len(revoked) >= 5 and {r["LogonError"] for r in revoked} == {"FreshTokenNeeded"}
    runs = Counter(r["UserId"] for r in revoked)
    assert max(runs.values()) >= 5  # enough failures in a row to look like a guessed password
    verified = Counter(
        str(next(p["value"] for p in r["events"][0]["parameters"] if p["name"] == "login_challenge_status"))
        for r in s.files["gws_login.ndjson"]
        if r["events"][0]["name"] == "login_verification"
    )
    assert verified["Challenge Passed."] > 0  # Google's 2-step verification before some sign-ins
    replays = [a for a in s.labels if a["what"] == "stolen refresh token redeemed by a script"]
    assert replays and {a["category"] for a in replays} == {"scripted_client"}
    # phones whose carrier's addresses geolocate to its gateway city, far from home (impossible
    # travel's commonest false positive), and signing in there from day to day
    hubs = {hub[1] for hub in CARRIER_HUBS.values()}
    at_hub = Counter(r["userPrincipalName"] for r in s.files["entra_signins.ndjson"] if r["location"]["city"] in hubs)
    assert at_hub and max(at_hub.values()) >= 5


async def test_a_mail_app_the_organisation_trusts_is_recorded_not_asked(tmp_path: Path) -> None:
    """A Google account added to a new phone's Mail app grants it the whole mailbox. With the app in the
    organisation's trusted list (the scenario's own mailwarden.toml, which eval reads) the consent is a
    low, recorded case; without it, the employee is asked about every new phone."""
    scenario = generate(users=40, days=12, seed=5)
    scenario.write(tmp_path)
    native = {c[1] for c in NATIVE_MAIL_CLIENTS}
    setups = [
        r
        for r in scenario.files["gws_token.ndjson"]
        if any(p["name"] == "client_id" and p["value"] in native for p in r["events"][0]["parameters"])
    ]
    assert setups
    trusted = await evaluate(tmp_path)
    assert not [p for p in trusted.false_prompts if "oauth_mail_consent" in p["detectors"]], trusted.false_prompts
    assert all(c["recall"] >= RECALL_TARGET for c in trusted.categories.values()), trusted.missed  # attacks still act
    (tmp_path / "mailwarden.toml").unlink()
    untrusted = await evaluate(tmp_path)
    asked = [p for p in untrusted.false_prompts if "oauth_mail_consent" in p["detectors"]]
    assert len(asked) == len({r["actor"]["email"] for r in setups}), untrusted.false_prompts
    # full Gmail access is high: the employee's "Yes" cannot close it, so each one reaches the SOC too
    assert untrusted.soc_reviews == trusted.soc_reviews + len(asked)


async def test_the_organisations_own_vpn_egress_is_not_a_question(tmp_path: Path) -> None:
    """The Microsoft 365 organisation's VPN egress lies in a hosting network (AWS), abroad for most of
    its staff. Listed as its own network (the scenario's mailwarden.toml) it raises no question; left
    out, every day on the VPN is a sign-in from a hosting network to ask its user about."""
    scenario = generate(users=40, days=12, seed=5)
    scenario.write(tmp_path)
    egress = ipaddress.ip_network(VPN_EGRESS)
    tunneled = [r for r in scenario.files["entra_signins.ndjson"] if ipaddress.ip_address(r["ipAddress"]) in egress]
    assert tunneled and {r["location"]["countryOrRegion"] for r in tunneled} == {"US"}
    own = await evaluate(tmp_path)
    assert own.targets_met, (own.false_prompts, own.missed)
    assert not [p for p in own.false_prompts if p["user"] in scenario.vpn_users], own.false_prompts
    config = tmp_path / "mailwarden.toml"
    config.write_text("".join(line for line in config.read_text().splitlines(True) if "own_networks" not in line))
    unlisted = await evaluate(tmp_path)
    asked = [p for p in unlisted.false_prompts if p["user"] in scenario.vpn_users]
    assert asked and all("risky_ip" in p["detectors"] for p in asked), unlisted.false_prompts


@pytest.mark.parametrize(
    ("decision", "severity", "reaches"),
    [
        (Decision.RECORD, Severity.CRITICAL, False),
        (Decision.ASK_USER, Severity.MEDIUM, False),
        (Decision.ASK_USER, Severity.HIGH, True),
        (Decision.SOC, Severity.MEDIUM, True),
        (Decision.PAGE, Severity.CRITICAL, True),
    ],
)
def test_a_case_reaches_the_soc_when_the_employees_yes_cannot_close_it(
    decision: Decision, severity: Severity, reaches: bool
) -> None:
    at = datetime(2026, 3, 10, tzinfo=UTC)
    case = Case("MW-1", "t1", "jo@contoso.example", CaseState.NEW, severity, decision, at, at, at)
    assert reaches_soc(case) is reaches


def test_eval_reads_its_configuration_from_the_option_then_the_scenario(tmp_path: Path) -> None:
    assert config_for(tmp_path, None) is None
    (tmp_path / "mailwarden.toml").write_text("[mailwarden]\n")
    assert config_for(tmp_path, None) == str(tmp_path / "mailwarden.toml")
    assert config_for(tmp_path, "/etc/mailwarden.toml") == "/etc/mailwarden.toml"


def test_scenario_and_eval_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    assert main(["scenario", "--users", "40", "--days", "12", "--seed", "5", "--out", str(out)]) == 0
    assert (out / "labels.json").is_file() and (out / "entra_signins.ndjson").is_file()
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert {"overall", "categories", "detectors", "prompts", "soc_reviews", "targets_met", "config"} <= set(report)
    assert report["prompts"]["per_1000_users_per_day"] >= 0
    assert report["config"] == str(out / "mailwarden.toml")  # the scenario's own settings
    bare = tmp_path / "bare.toml"
    bare.write_text("[mailwarden]\n")
    either_place = (["eval", str(out), "--config", str(bare)], ["--config", str(bare), "eval", str(out)])
    for argv in either_place:
        assert main([*argv, "--json"]) == 0
        without = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert without["config"] == str(bare)
        # without the VPN and mail apps as the organisation's, their sign-ins and set-ups are asked about
        assert without["prompts"]["count"] > report["prompts"]["count"]
