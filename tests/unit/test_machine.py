from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.cases import machine
from bot.cases.machine import NEXT, Timeouts, apply, step
from bot.detect.scoring import case_severity, decide, yes_closes
from bot.errors import IllegalTransition
from bot.model import TERMINAL, Case, CaseEvent, CaseState, Decision, Finding, MessageRef, Severity

T = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TO = Timeouts(user_answer=timedelta(minutes=15), soc_decision=timedelta(minutes=30))


def case(state: CaseState = CaseState.NEW, **kw: object) -> Case:
    return Case(
        id="MW-1",
        tenant="t",
        user_principal="u@x",
        state=state,
        severity=Severity.MEDIUM,
        decision=Decision.ASK_USER,
        opened_at=T,
        updated_at=T,
        last_event_at=T,
        **kw,
    )  # type: ignore[arg-type]


def test_terminal_states_take_no_events() -> None:
    for s in TERMINAL:
        assert s not in NEXT
        for e in CaseEvent:
            with pytest.raises(IllegalTransition):
                step(s, e)


def test_illegal_transition_names_both_sides() -> None:
    with pytest.raises(IllegalTransition) as err:
        step(CaseState.AWAITING_USER, CaseEvent.SOC_CONTAIN)
    assert "awaiting_user" in str(err.value) and "soc_contain" in str(err.value)


def test_every_state_is_reachable_from_new() -> None:
    seen, frontier = {CaseState.NEW}, [CaseState.NEW]
    while frontier:
        s = frontier.pop()
        for nxt in NEXT.get(s, {}).values():
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(CaseState)


def test_asking_the_user_sets_the_answer_deadline_and_posts_the_dm() -> None:
    c, effects = apply(case(), CaseEvent.ASK_USER, now=T, timeouts=TO)
    assert c.state is CaseState.AWAITING_USER
    assert c.deadline_at == T + timedelta(minutes=15) and c.deadline_kind == "user_answer"
    assert effects == [machine.PostUserCard()]
    assert c.history[-1].text.startswith("Asked the user")


def test_no_answer_goes_to_the_soc_with_its_own_deadline() -> None:
    c, _ = apply(case(), CaseEvent.ASK_USER, now=T, timeouts=TO)
    c, effects = apply(c, CaseEvent.USER_TIMED_OUT, now=T + timedelta(minutes=16), timeouts=TO)
    assert c.state is CaseState.AWAITING_SOC and c.deadline_kind == "soc_decision"
    assert machine.PostSocCard() in effects and machine.RefreshUserCard() in effects


def test_containment_runs_each_approved_action_once() -> None:
    c = case(CaseState.AWAITING_SOC, soc_card=MessageRef("C1", "1.1"), user_id="gid-1")
    c, effects = apply(c, CaseEvent.SOC_CONTAIN, now=T, timeouts=TO, actor="U0BOB", actions=("revoke_sessions",))
    assert c.state is CaseState.CONTAINING and c.deadline_at is None
    runs = [e for e in effects if isinstance(e, machine.RunAction)]
    assert runs == [machine.RunAction("revoke_sessions", "gid-1", ("revoke_sessions",))]
    assert c.history[-1].actor == "U0BOB"


def test_scoring_table() -> None:
    def f(d: str, s: Severity) -> Finding:
        return Finding(detector=d, severity=s, reason="r", event_id="e", occurred_at=T)

    assert case_severity([]) is Severity.LOW
    assert case_severity([f("new_country", Severity.MEDIUM)]) is Severity.MEDIUM
    assert case_severity([f("new_country", Severity.MEDIUM), f("failed_then_success", Severity.HIGH)]) is Severity.HIGH
    assert case_severity([f("a", Severity.MEDIUM), f("b", Severity.MEDIUM)]) is Severity.HIGH
    assert case_severity([f("a", Severity.CRITICAL)]) is Severity.CRITICAL
    assert decide(Severity.CRITICAL) is Decision.SOC and decide(Severity.LOW) is Decision.RECORD
    assert yes_closes(Severity.MEDIUM) and not yes_closes(Severity.HIGH) and not yes_closes(Severity.CRITICAL)


def test_a_critical_case_pages_at_once() -> None:
    c = replace(case(), severity=Severity.CRITICAL, decision=Decision.SOC)
    new, effects = apply(c, CaseEvent.SEND_TO_SOC, now=T, timeouts=TO)
    assert new.state is CaseState.AWAITING_SOC and new.paged
    assert machine.Page(reason="critical case opened") in effects and machine.PostSocCard() in effects


def test_closing_a_paged_case_resolves_the_page_and_taking_it_acknowledges() -> None:
    c = replace(case(CaseState.ESCALATED), paged=True, soc_card=MessageRef("C1", "1.1"))
    taken, effects = apply(c, CaseEvent.SOC_TAKE, now=T, timeouts=TO, actor="U0CAROL")
    assert taken.assignee == "U0CAROL" and machine.AcknowledgePage() in effects
    closed, effects = apply(taken, CaseEvent.SOC_DISMISS, now=T, timeouts=TO, actor="U0CAROL", note="benign")
    assert machine.ResolvePage() in effects and not closed.paged


def test_the_ladder_reminds_before_it_times_out() -> None:
    t = Timeouts(
        user_answer=timedelta(minutes=15),
        soc_decision=timedelta(minutes=30),
        user_reminder=timedelta(minutes=10),
        soc_reminder=timedelta(minutes=15),
    )
    c, _ = apply(case(), CaseEvent.ASK_USER, now=T, timeouts=t)
    assert (c.deadline_at, c.deadline_kind) == (T + timedelta(minutes=10), "user_reminder")
    c, effects = apply(c, CaseEvent.USER_REMINDED, now=T + timedelta(minutes=10), timeouts=t)
    assert effects == [machine.RemindUser()] and c.state is CaseState.AWAITING_USER
    assert (c.deadline_at, c.deadline_kind) == (T + timedelta(minutes=15), "user_answer")  # counted from the ask
    c, _ = apply(c, CaseEvent.USER_TIMED_OUT, now=T + timedelta(minutes=15), timeouts=t)
    assert (c.deadline_at, c.deadline_kind) == (T + timedelta(minutes=30), "soc_reminder")
    c, effects = apply(c, CaseEvent.SOC_REMINDED, now=T + timedelta(minutes=30), timeouts=t)
    assert any(isinstance(e, machine.SocThreadNote) and e.mention_soc for e in effects)
    assert (c.deadline_at, c.deadline_kind) == (T + timedelta(minutes=45), "soc_decision")
    taken, _ = apply(c, CaseEvent.SOC_TAKE, now=T + timedelta(minutes=31), timeouts=t, actor="U0BOB")
    assert taken.deadline_at is None  # an owner stops the nagging


def test_two_person_rule() -> None:
    destructive = frozenset({"reset_password", "block_sign_in"})
    c = case(CaseState.AWAITING_SOC)
    assert machine.approval_event(c, "U1", ("revoke_sessions",), destructive) is CaseEvent.SOC_CONTAIN
    assert machine.approval_event(c, "U1", ("reset_password",), destructive) is CaseEvent.SOC_FIRST_APPROVAL
    protected = replace(c, needs_two_approvers=True)
    assert machine.approval_event(protected, "U1", ("revoke_sessions",), destructive) is CaseEvent.SOC_FIRST_APPROVAL
    first, _ = apply(
        c, CaseEvent.SOC_FIRST_APPROVAL, now=T, timeouts=TO, actor="U1", actions=("reset_password",), note="user denies"
    )
    assert first.state is CaseState.AWAITING_SECOND_APPROVAL and first.approvals[0].actor == "U1"
    with pytest.raises(machine.SameApprover):
        machine.approval_event(first, "U1", ("reset_password",), destructive)
    assert machine.approval_event(first, "U2", ("reset_password",), destructive) is CaseEvent.SOC_CONTAIN


def test_wrong_person_goes_to_the_soc_with_a_note() -> None:
    c, _ = apply(case(), CaseEvent.ASK_USER, now=T, timeouts=TO)
    c, effects = apply(c, CaseEvent.USER_WRONG_PERSON, now=T, timeouts=TO, actor="U0IVAN")
    assert c.state is CaseState.AWAITING_SOC and c.user_answer == "not_me"
    assert machine.PostSocCard() in effects


def test_off_hours_in_the_employees_own_time_zone() -> None:
    from bot.cases.plan import off_hours

    at = datetime(2026, 12, 1, 3, 30, tzinfo=UTC)  # 03:30 UTC
    assert off_hours(at, None, 7, 20)
    assert not off_hours(at, "Asia/Tokyo", 7, 20)  # 12:30 in Tokyo
    assert off_hours(at, "America/New_York", 7, 20)  # 22:30 the day before
    assert off_hours(at, "Not/AZone", 7, 20)  # unknown zone: UTC
