"""One root for every error Mailwarden raises on purpose."""

from __future__ import annotations


class MailwardenError(Exception):
    """Root of our own errors; anything else escaping is a bug."""


class ConfigError(MailwardenError):
    """The configuration is incomplete or invalid; the message lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class IllegalTransition(MailwardenError):
    def __init__(self, state: str, event: str) -> None:
        self.state = state
        self.event = event
        super().__init__(f"case in state {state!r} cannot take event {event!r}")


class ConcurrentUpdate(MailwardenError):
    """Another writer changed the case first; the caller reloads and decides again."""
