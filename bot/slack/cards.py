"""Block Kit for the two cards: the employee's "Was this you?" DM and the SOC's case card. Pure.

Builders take a Case and return plain dicts; the dispatcher posts them. Every value that came
from a log record passes through `safe`; our own values (ids, enums, times) do not need to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.model import Case, CaseState, Event, HistoryEntry
from bot.slack.ids import Ids
from bot.slack.text import clip, safe

Block = dict[str, Any]

MAX_BLOCKS = 50
SECTION_LIMIT = 3000


@dataclass(frozen=True, slots=True)
class Card:
    text: str  # notification / fallback text
    blocks: list[Block]


def when(at: datetime) -> str:
    """A Slack date token: every reader sees it in their own time zone, with a UTC fallback."""
    epoch = int(at.timestamp())
    return f"<!date^{epoch}^{{date_short_pretty}} at {{time}}|{at:%Y-%m-%d %H:%M} UTC>"


def _mrkdwn(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_LIMIT)}}


def _context(*texts: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(t, 2000)} for t in texts[:10]]}


def _button(
    text: str, action_id: Ids, value: str, style: str | None = None, confirm: dict[str, Any] | None = None
) -> Block:
    b: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": text[:75]},
        "action_id": action_id.value,
        "value": value,
    }
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = confirm
    return b


def _where(e: Event) -> str:
    place = ", ".join(safe(x, 80) for x in (e.city, e.country) if x) or "an unknown place"
    return f"{place} ({safe(e.ip, 64)})" if e.ip else place


def _how(e: Event) -> str:
    parts = [safe(x, 120) for x in (e.app, e.client_app, e.device) if x]
    return " · ".join(parts) or "an unknown app"


def headline_event(case: Case) -> Event | None:
    """The event the user is asked about: the latest successful one, else the latest."""
    ok = [e for e in case.events if e.success]
    pool = ok or list(case.events)
    return max(pool, key=lambda e: e.occurred_at) if pool else None


def _history(entries: tuple[HistoryEntry, ...]) -> list[str]:
    def who(actor: str) -> str:
        return "Mailwarden" if actor == "system" else f"<@{actor}>"  # our own Slack ids, not log data

    return [f"{when(h.at)} · {who(h.actor)} · {h.text}" for h in entries[-8:]]


USER_OUTCOME: dict[CaseState, str] = {
    CaseState.CLOSED_BENIGN: "Thanks, we've noted that it was you. Nothing else to do.",
    CaseState.AWAITING_SOC: "Thanks. The security team is looking at it now and will contact you if needed.",
    CaseState.ESCALATED: "The security team's on-call responder is looking at it now.",
    CaseState.CONTAINING: "The security team is securing your account now.",
    CaseState.CONTAINED: "The security team has signed your account out everywhere. Sign in again as usual; "
    "if you are asked to change your password, please do.",
}


def user_card(case: Case) -> Card:
    e = headline_event(case)
    account = safe(case.user_principal, 120)
    lead = (
        f"We saw a sign-in to your Microsoft 365 account *{account}* on {when(e.occurred_at)} "
        f"from {_where(e)} using {_how(e)}."
        if e
        else f"We saw unusual activity on your account *{account}*."
    )
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Was this you?"}},
        _mrkdwn(lead),
        _mrkdwn("*Why we ask:* " + "; ".join(safe(f.reason, 300) for f in case.findings[:5])),
    ]
    if case.state is CaseState.AWAITING_USER:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"user:{case.id}",
                "elements": [
                    _button("Yes, it was me", Ids.USER_YES, case.id, "primary"),
                    _button("No, I don't recognise this", Ids.USER_NO, case.id, "danger"),
                ],
            }
        )
        blocks.append(
            _context(
                "If this wasn't you, don't worry: answering *No* lets the security team lock "
                "the attacker out. We will never ask for your password."
            )
        )
    else:
        answer = {"yes": "You answered *Yes, it was me*.", "no": "You answered *No, I don't recognise this*."}
        said = answer.get(case.user_answer or "", "We didn't hear back from you in time.")
        blocks.append(_mrkdwn(f"{said} {USER_OUTCOME.get(case.state, '')}".strip()))
    blocks.append(_context(f"Case {case.id}"))
    return Card(text="Was this you? We saw a sign-in to your account that looks unusual.", blocks=blocks)


SEVERITY_ICON = {"low": "⚪", "medium": "🟡", "high": "🟠", "critical": "🔴"}


def soc_card(case: Case) -> Card:
    sev = case.severity.label
    who = safe(case.user_display or case.user_principal, 100)
    title = f"{SEVERITY_ICON[sev]} {sev.upper()} · suspicious mailbox access · {who}"
    answer = {"yes": "✅ *Yes, it was me*", "no": "❌ *No, I don't recognise this*"}.get(
        case.user_answer or "", "⏳ no answer yet" if case.state is CaseState.AWAITING_USER else "— no answer"
    )
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(title, 150)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*User*\n{safe(case.user_principal, 200)}"},
                {"type": "mrkdwn", "text": f"*State*\n`{case.state.value}`"},
                {"type": "mrkdwn", "text": f"*User's answer*\n{answer}"},
                {"type": "mrkdwn", "text": f"*Detectors*\n{', '.join(case.detectors) or '—'}"},
            ],
        },
        _mrkdwn("*Why this case:*\n" + "\n".join(f"• {safe(f.reason, 300)}" for f in case.findings[:10])),
    ]
    evidence = sorted(case.events, key=lambda e: e.occurred_at)[-5:]
    if evidence:
        lines = [
            f"• {when(e.occurred_at)} · {'✅ success' if e.success else '✖ failure ' + str(e.error_code)} · "
            f"{_where(e)} · {_how(e)}"
            for e in evidence
        ]
        blocks.append(_mrkdwn("*Evidence (latest sign-ins):*\n" + "\n".join(lines)))
    if case.state in (CaseState.AWAITING_SOC, CaseState.ESCALATED):
        blocks.append(
            {
                "type": "actions",
                "block_id": f"soc:{case.id}",
                "elements": [
                    _button(
                        "Revoke sessions",
                        Ids.SOC_REVOKE,
                        case.id,
                        "danger",
                        confirm={
                            "title": {"type": "plain_text", "text": "Revoke all sessions?"},
                            "text": {"type": "mrkdwn", "text": "Signs the user out of every Microsoft 365 session."},
                            "confirm": {"type": "plain_text", "text": "Revoke"},
                            "deny": {"type": "plain_text", "text": "Cancel"},
                        },
                    ),
                    _button("Dismiss", Ids.SOC_DISMISS, case.id),
                ],
            }
        )
    history = _history(case.history)
    if history:
        blocks.append(_context(*history))
    blocks.append(_context(f"Case {case.id} · opened {when(case.opened_at)}"))
    return Card(
        text=f"{sev.upper()} case {case.id}: suspicious mailbox access for {safe(case.user_principal, 120)}",
        blocks=blocks[:MAX_BLOCKS],
    )


def refusal_text(reason: str) -> str:
    return f":no_entry: {reason}"
