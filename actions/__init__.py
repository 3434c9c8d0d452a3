"""Containment actions: one class per (provider, action); the ledger runs each exactly once."""

from __future__ import annotations

from actions.base import Action, ActionOutcome, idempotency_key

__all__ = ["Action", "ActionOutcome", "idempotency_key"]
