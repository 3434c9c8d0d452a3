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


class Action(Protocol):
    name: str
    provider: str
    permission: str  # least-privilege application permission, for the README and `doctor`
    destructive: bool

    async def run(self, target: str) -> ActionOutcome: ...

    async def already_done(self, target: str, since: datetime) -> bool | None:
        """Does the provider show this action's effect at or after `since`? None: cannot tell."""
        ...


def idempotency_key(case_id: str, action: str, target: str) -> str:
    return hashlib.sha256(f"{case_id}\x1f{action}\x1f{target}".encode()).hexdigest()
