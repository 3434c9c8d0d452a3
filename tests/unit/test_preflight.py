"""Pre-flight checks of a containment plan: pure, facts in, verdicts out."""

from __future__ import annotations

import ast
from pathlib import Path

from actions.preflight import DESTRUCTIVE, ProtectionPolicy, UserFacts, check_plan

PLAN = ("revoke_sessions", "block_sign_in", "reset_password", "require_mfa", "remove_forwarding")
MEMBER = UserFacts("u1", "ada@contoso.example", "Member", None, True)


def test_cloud_member_everything_works() -> None:
    check = check_plan(MEMBER, PLAN)
    assert all(s.will_work and s.note == "" for s in check.steps)
    assert [s.action for s in check.steps] == list(PLAN)
    assert check.auto_contain_allowed and not check.needs_two_approvers and check.notes == ()


def test_guest() -> None:
    guest = UserFacts("g1", "x_fabrikam.example#EXT#@contoso.example", "Guest", None, True)
    check = check_plan(guest, PLAN)
    revoke = check.step("revoke_sessions")
    assert not revoke.will_work
    assert revoke.note == "Guest user: revoking sessions has no effect on their home tenant's sessions"
    assert not check.step("reset_password").will_work and not check.step("remove_forwarding").will_work
    assert check.step("block_sign_in").will_work and "this tenant only" in check.step("block_sign_in").note
    assert check.step("require_mfa").will_work


def test_synced_from_on_premises() -> None:
    synced = UserFacts("s1", "sam@contoso.example", "Member", True, True)
    check = check_plan(synced, PLAN)
    for action in ("block_sign_in", "reset_password"):
        step = check.step(action)
        assert not step.will_work
        assert step.note.startswith("Synced from on-premises AD:") and "overwritten by the next sync" in step.note
    assert check.step("revoke_sessions").will_work


def test_break_glass_is_never_auto_contained() -> None:
    policy = ProtectionPolicy.of(break_glass=["BREAKGLASS@contoso.example"])
    user = UserFacts("bg", "breakglass@contoso.example", "Member", None, True)
    check = check_plan(user, PLAN, policy)
    assert check.needs_two_approvers and not check.auto_contain_allowed
    assert check.notes == ("Protected account (break-glass): never auto-contained; needs two approvers",)
    assert "Protected account (break-glass)" in check.step("block_sign_in").note
    assert check.step("revoke_sessions").note == ""  # not destructive


def test_vip_by_object_id() -> None:
    check = check_plan(MEMBER, ["revoke_sessions"], ProtectionPolicy.of(vip=["U1"]))
    assert check.needs_two_approvers and not check.auto_contain_allowed
    assert "VIP" in check.notes[0]


def test_two_approvers_for_destructive_steps_when_the_policy_says_so() -> None:
    policy = ProtectionPolicy.of(two_approvers_for_destructive=True)
    assert not check_plan(MEMBER, ["revoke_sessions", "confirm_compromised"], policy).needs_two_approvers
    check = check_plan(MEMBER, PLAN, policy)
    assert check.needs_two_approvers and not check.auto_contain_allowed
    assert check.notes == ("Destructive steps (block_sign_in, reset_password, remove_forwarding) need two approvers",)


def test_unknown_action_duplicates_and_odd_facts() -> None:
    unknown = UserFacts("u2", None, None, None, False)
    check = check_plan(unknown, ["frobnicate", "block_sign_in", "block_sign_in", "revoke_sessions"])
    assert [s.action for s in check.steps] == ["frobnicate", "block_sign_in", "revoke_sessions"]
    assert not check.step("frobnicate").will_work and "Unknown action" in check.step("frobnicate").note
    assert check.step("block_sign_in").note == "The account is already disabled"
    assert "userType unknown" in check.step("revoke_sessions").note


def test_destructive_matches_the_actions() -> None:
    expected = {
        "block_sign_in",
        "reset_password",
        "remove_recent_mfa_methods",
        "revoke_app_consent",
        "remove_forwarding",
    }
    assert expected == DESTRUCTIVE


def test_preflight_is_pure() -> None:
    tree = ast.parse((Path(__file__).resolve().parents[2] / "actions/preflight.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names <= {"__future__", "collections.abc", "dataclasses"}
