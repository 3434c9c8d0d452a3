"""Pre-flight checks of a containment plan. Pure: facts about the user in, a verdict per step out.

Shown to the SOC before anything runs (peers.md §4.6): which steps will not have the effect an analyst
expects (guests, accounts synced from on-premises AD), and which accounts must never be contained
automatically (break-glass, VIP). The facts come from `actions.microsoft.user_facts`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

# The actions that take something away from the user (must match each Action's `destructive`).
DESTRUCTIVE = frozenset(
    {"block_sign_in", "reset_password", "remove_recent_mfa_methods", "revoke_app_consent", "remove_forwarding"}
)
KNOWN = DESTRUCTIVE | {"revoke_sessions", "require_mfa", "confirm_compromised", "dismiss_risk"}


@dataclass(frozen=True, slots=True)
class UserFacts:
    id: str
    user_principal_name: str | None = None
    user_type: str | None = None  # "Member" | "Guest"; None when Graph did not say
    on_premises_sync_enabled: bool | None = None
    account_enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class ProtectionPolicy:
    """From configuration: object ids or UPNs (case-insensitive)."""

    break_glass: frozenset[str] = frozenset()
    vip: frozenset[str] = frozenset()
    two_approvers_for_destructive: bool = False

    @classmethod
    def of(cls, break_glass: Collection[str] = (), vip: Collection[str] = (), **kw: bool) -> ProtectionPolicy:
        return cls(frozenset(x.lower() for x in break_glass), frozenset(x.lower() for x in vip), **kw)


@dataclass(frozen=True, slots=True)
class StepCheck:
    action: str
    will_work: bool
    note: str = ""  # empty when there is nothing to say


@dataclass(frozen=True, slots=True)
class PlanCheck:
    steps: tuple[StepCheck, ...]
    needs_two_approvers: bool
    auto_contain_allowed: bool
    notes: tuple[str, ...] = ()  # plan-level reasons, for the card

    def step(self, action: str) -> StepCheck:
        return next(s for s in self.steps if s.action == action)


GUEST = {
    "revoke_sessions": (False, "Guest user: revoking sessions has no effect on their home tenant's sessions"),
    "reset_password": (False, "Guest user: the password belongs to their home tenant or provider; reset it there"),
    "block_sign_in": (True, "Guest user: blocks access to this tenant only"),
    "remove_forwarding": (False, "Guest user: no mailbox in this tenant"),
    "remove_recent_mfa_methods": (True, "Guest user: only methods registered in this tenant are listed"),
}
SYNCED = {
    "block_sign_in": (
        False,
        "Synced from on-premises AD: a cloud block is overwritten by the next sync — disable the account in AD",
    ),
    "reset_password": (
        False,
        "Synced from on-premises AD: a cloud password reset is overwritten by the next sync unless password "
        "writeback is on — reset it in AD",
    ),
}


def _protection(user: UserFacts, policy: ProtectionPolicy) -> str | None:
    keys = {user.id.lower()} | ({user.user_principal_name.lower()} if user.user_principal_name else set())
    if keys & policy.break_glass:
        return "break-glass"
    if keys & policy.vip:
        return "VIP"
    return None


def check_step(user: UserFacts, action: str, protection: str | None = None) -> StepCheck:
    if action not in KNOWN:
        return StepCheck(action, False, f"Unknown action {action!r}")
    will_work, notes = True, []
    for table, applies in ((GUEST, user.user_type == "Guest"), (SYNCED, user.on_premises_sync_enabled is True)):
        if applies and action in table:
            ok, note = table[action]
            will_work = will_work and ok
            notes.append(note)
    if user.user_type is None and action == "revoke_sessions":
        notes.append("userType unknown: if this is a guest, revoking has no effect")
    if action == "block_sign_in" and user.account_enabled is False:
        notes.append("The account is already disabled")
    if protection and action in DESTRUCTIVE:
        notes.append(f"Protected account ({protection}): never auto-contained; needs two approvers")
    return StepCheck(action, will_work, "; ".join(notes))


def check_plan(user: UserFacts, actions: Sequence[str], policy: ProtectionPolicy | None = None) -> PlanCheck:
    """Per action: will it have its effect, and why not. For the plan: may it run without a human, and does
    it need a second approver (protected account, or a destructive step when the policy says so)."""
    policy = policy or ProtectionPolicy()
    protection = _protection(user, policy)
    steps = tuple(check_step(user, a, protection) for a in dict.fromkeys(actions))
    destructive = [a for a in dict.fromkeys(actions) if a in DESTRUCTIVE]
    notes: list[str] = []
    if protection:
        notes.append(f"Protected account ({protection}): never auto-contained; needs two approvers")
    elif destructive and policy.two_approvers_for_destructive:
        notes.append("Destructive steps (" + ", ".join(destructive) + ") need two approvers")
    needs_two = protection is not None or bool(destructive and policy.two_approvers_for_destructive)
    return PlanCheck(steps, needs_two, auto_contain_allowed=not needs_two and protection is None, notes=tuple(notes))
