from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block

from bot.model import Case, CaseState, Decision, Event, Finding, HistoryEntry, Severity
from bot.slack.cards import soc_card, user_card
from bot.slack.ids import Ids
from bot.slack.text import safe

T = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
OURS = re.compile(r"<!date\^\d+\^\{date_short_pretty\} at \{time\}\|[^<>]*>|<@U0[A-Z]+>")


def make_case(text: str = "x", state: CaseState = CaseState.AWAITING_USER, n_events: int = 3) -> Case:
    events = tuple(
        Event(
            source="entra_signin",
            event_id=f"e{i}",
            tenant="t",
            occurred_at=T + timedelta(minutes=i),
            user_principal=f"{text}@x",
            user_display=text,
            success=i % 2 == 0,
            ip="203.0.113.9",
            country=text,
            city=text,
            app=text,
            client_app=text,
            user_agent=text,
            device=text,
        )
        for i in range(n_events)
    )
    findings = tuple(
        Finding(detector="new_country", severity=Severity.MEDIUM, reason=f"from {text}", event_id="e0", occurred_at=T)
        for _ in range(3)
    )
    return Case(
        id="MW-ABC",
        tenant="t",
        user_principal=f"{text}@x",
        user_display=text,
        state=state,
        severity=Severity.HIGH,
        decision=Decision.ASK_USER,
        opened_at=T,
        updated_at=T,
        last_event_at=T,
        events=events,
        findings=findings,
        history=tuple(HistoryEntry(at=T, actor="U0BOB", text="SOC approved") for _ in range(20)),
    )


def texts(blocks: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
                out.append(node["text"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(blocks)
    return out


def valid_per_slack_sdk(blocks: list[dict[str, Any]]) -> None:
    for b in blocks:
        parsed = Block.parse(b)
        assert parsed is not None
        parsed.validate_json()  # raises SlackObjectFormationError past Block Kit's limits


def test_user_card_asks_with_three_buttons_for_the_case() -> None:
    card = user_card(make_case())
    actions = [b for b in card.blocks if b["type"] == "actions"]
    assert [e["action_id"] for e in actions[0]["elements"]] == [Ids.USER_YES, Ids.USER_NO, Ids.USER_NOT_ME]
    assert all(e["value"] == "MW-ABC" for e in actions[0]["elements"])
    valid_per_slack_sdk(card.blocks)


def test_answered_card_has_no_buttons_and_says_what_happens_next() -> None:
    card = user_card(replace(make_case(state=CaseState.AWAITING_SOC), user_answer="no"))
    assert not [b for b in card.blocks if b["type"] == "actions"]
    assert any("You answered *No" in t and "security team" in t for t in texts(card.blocks))


def test_soc_card_buttons_only_while_a_decision_is_due() -> None:
    for state, expected in (
        (CaseState.AWAITING_SOC, True),
        (CaseState.ESCALATED, True),
        (CaseState.CONTAINED, False),
        (CaseState.CLOSED_BENIGN, False),
    ):
        card = soc_card(make_case(state=state))
        has = any(b["type"] == "actions" for b in card.blocks)
        assert has is expected, state
        valid_per_slack_sdk(card.blocks)


ATTACKS = [
    "<!channel>",
    "<!here>",
    "<@U0BOB>",
    "<https://evil.example|click>",
    "<!subteam^S1>",
    "*bold* _it_ ~s~ `c`",
    "&lt;",
    "a" * 5000,
    "\u202e\u0000\n\t",
]


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.sampled_from(ATTACKS),
        st.text(max_size=400),
        st.lists(st.sampled_from([*ATTACKS, "<", ">", "&", "x"]), max_size=40).map("".join),
    )
)
def test_no_attacker_string_reaches_a_card_unescaped(evil: str) -> None:
    case = make_case(evil)
    for card in (user_card(case), soc_card(case)):
        assert len(card.blocks) <= 50 and len(json.dumps(card.blocks, ensure_ascii=False)) <= 12_000
        for t in texts(card.blocks):
            stripped = OURS.sub("", t)
            assert "<" not in stripped and ">" not in stripped, t
            assert len(t) <= 3000
        valid_per_slack_sdk(card.blocks)


def test_safe_escapes_and_clips() -> None:
    assert safe("<!channel> & co") == "&lt;!channel&gt; &amp; co"
    assert len(safe("x" * 1000, 100)) == 100
    assert safe("&" * 50, 10).count("&") == safe("&" * 50, 10).count("&amp;")  # never a torn entity


def test_modals_and_home_are_valid_views() -> None:
    from slack_sdk.models.views import View

    from bot.slack.cards import benign_modal, contain_modal, home_view

    case = replace(
        make_case("<!channel>", state=CaseState.AWAITING_SOC),
        plan=("revoke_sessions", "reset_password"),
        plan_notes=(("reset_password", "Synced from on-premises AD <@U1>"), ("*", "Protected")),
    )
    for view in (
        contain_modal(case, ["revoke_sessions", "reset_password", "block_sign_in"], frozenset({"reset_password"})),
        benign_modal(case),
        home_view(is_soc=True, open_cases=[case] * 60, mine=[case] * 20),
    ):
        View(**view).validate_json()  # slack_sdk's own limits: title 24, blocks 100, ...
        assert len(view["blocks"]) <= 100
        for t in texts(view["blocks"]):
            assert "<@U1>" not in t and "<!channel>" not in t


def test_soc_card_answers_the_playbook_questions() -> None:
    card = soc_card(make_case(state=CaseState.AWAITING_SOC))
    text = str(card.blocks)
    for question in (
        "Known or suspicious IP?",
        "Failed sign-ins before the success?",
        "Usual hours and place?",
        "Recent password change or compromised-credential alert?",
        "Device and client as usual?",
    ):
        assert question in text


def test_one_campaign_card_lists_the_accounts() -> None:
    from bot.model import CAMPAIGN_PREFIX

    users = (*(f"user{i}@contoso.example" for i in range(55)), "<!channel>@evil")
    campaign = replace(
        make_case(state=CaseState.AWAITING_SOC),
        user_principal=CAMPAIGN_PREFIX + "185.220.101.4",
        user_display="Password spray from 185.220.101.4",
        users=users,
    )
    card = soc_card(campaign)
    text = str(card.blocks)
    assert "56" in text and "user0@contoso.example" in text and "and 16 more" in text
    assert Ids.SOC_REVOKE not in text and Ids.SOC_CONTAIN not in text  # contain members from their own cases
    valid_per_slack_sdk(card.blocks)
    for t in texts(card.blocks):
        assert "<!channel>" not in OURS.sub("", t)


def test_clip_never_tears_our_own_control_sequences() -> None:
    from bot.slack.text import clip

    token = "<!date^1796115600^{date_short_pretty} at {time}|Tue 01 Dec 09:00 UTC>"
    for limit in range(1, 120):
        out = clip("evidence " + token + " more", limit)
        assert len(out) <= limit and out.count("<") == out.count(">")
