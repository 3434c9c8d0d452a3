"""The Action protocol and the registry. An action states what it is, what it needs, how to do
it once, and how to tell from the provider whether it already happened."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    ok: bool
    summary: str  # one line a SOC analyst reads on the case
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionContext:
    """What an action may need beyond its target, taken from the case and its detections.

    Every field is optional: an action that needs one it was not given returns ok=False saying so
    (run) or None (already_done). JSON round-trips through `to_dict`/`from_dict`, so the
    dispatcher can carry it in an outbox payload.
    """

    case_id: str | None = None
    # Start of the incident window: MFA methods registered at or after it are the attacker's suspects.
    window_start: datetime | None = None
    # Service-principal object ids of the flagged apps (oauth2PermissionGrant.clientId), not appIds.
    service_principal_ids: tuple[str, ...] = ()
    # Inbox rules flagged by the detection (O365 New-InboxRule / Set-InboxRule): Graph ids or rule names.
    rule_ids: tuple[str, ...] = ()
    rule_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "service_principal_ids": list(self.service_principal_ids),
            "rule_ids": list(self.rule_ids),
            "rule_names": list(self.rule_names),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ActionContext:
        data = data or {}
        start = data.get("window_start")
        return cls(
            case_id=data.get("case_id"),
            window_start=datetime.fromisoformat(start) if start else None,
            service_principal_ids=tuple(data.get("service_principal_ids") or ()),
            rule_ids=tuple(data.get("rule_ids") or ()),
            rule_names=tuple(data.get("rule_names") or ()),
        )


class Action(Protocol):
    name: str
    provider: str
    permission: str  # least-privilege application permission, for the README and `doctor`
    destructive: bool

    async def run(self, target: str, context: ActionContext | None = None) -> ActionOutcome: ...

    async def already_done(self, target: str, since: datetime, context: ActionContext | None = None) -> bool | None:
        """Does the provider show this action's effect at or after `since`? None: cannot tell."""
        ...


def idempotency_key(case_id: str, action: str, target: str) -> str:
    return hashlib.sha256(f"{case_id}\x1f{action}\x1f{target}".encode()).hexdigest()
