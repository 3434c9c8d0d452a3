"""Block Kit for everything Mailwarden shows: the employee's DM cards, the SOC case card, the modals
and App Home. Pure: builders take plain data and return dicts; the shell posts them.

Every value that came from a log record passes through `safe` (escaped, clipped); our own values
(ids, enums, times, Slack user ids we looked up) do not need to. No message exceeds 50 blocks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.model import Case, CaseState, Event, HistoryEntry
from bot.slack.ids import Ids
from bot.slack.text import clip, safe

Block = dict[str, Any]

MAX_BLOCKS = 50
# Slack rejects a message with msg_blocks_too_long at about 13,200 characters of blocks even when every
# block is within its own limit (api-contracts.md §3.1, slackapi/bolt-js#2509): stay well under.
MAX_MESSAGE_CHARS = 12_000
MAX_VIEW_BLOCKS = 100
SECTION_LIMIT = 3000

ACTION_LABELS: dict[str, str] = {
    "revoke_sessions": "Revoke all sign-in sessions",
    "reset_password": "Reset the password (user recovers via SSPR/helpdesk)",
    "require_mfa": "Require MFA (add to the MFA group)",
    "block_sign_in": "Block sign-in",
    "remove_recent_mfa_methods": "Remove MFA methods added during the incident",
    "revoke_app_consent": "Revoke the flagged app's consent",
    "remove_forwarding": "Remove forwarding and inbox rules added during the incident",
    "confirm_compromised": "Mark the user compromised in Identity Protection",
    "dismiss_risk": "Dismiss the user's risk in Identity Protection",
}


@dataclass(frozen=True, slots=True)
class Card:
    text: str  # notification / fallback text
    blocks: list[Block]


def size(blocks: list[Block]) -> int:
    return len(json.dumps(blocks, ensure_ascii=False))


def fit(blocks: list[Block], limit: int = MAX_MESSAGE_CHARS) -> list[Block]:
    """Shrink the longest texts until the whole message is under Slack's size limit. Structure, ids and
    buttons are kept; long evidence is what gives way."""
    blocks = json.loads(json.dumps(blocks[:MAX_BLOCKS]))
    for _ in range(64):
        if size(blocks) <= limit:
            return blocks
        texts = [t for b in blocks for t in _text_objects(b)]
        longest = max(texts, key=lambda t: len(t["text"]))
        longest["text"] = clip(longest["text"], max(40, len(longest["text"]) // 2))
    return blocks


def _text_objects(block: Block) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if block.get("type") in ("section", "context", "header"):
        if isinstance(block.get("text"), dict):
            found.append(block["text"])
        found.extend(f for f in block.get("fields", []) if isinstance(f, dict))
        found.extend(e for e in block.get("elements", []) if isinstance(e, dict) and "text" in e)
    return found


def when(at: datetime, tz: str | None = None) -> str:
    """A Slack date token (every reader sees their own time zone); the fallback is the subject's local time."""
    epoch = int(at.timestamp())
    return f"<!date^{epoch}^{{date_short_pretty}} at {{time}}|{local(at, tz)}>"


def local(at: datetime, tz: str | None) -> str:
    if tz:
        try:
            return f"{at.astimezone(ZoneInfo(tz)):%a %d %b %H:%M} ({tz})"
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return f"{at:%a %d %b %H:%M} UTC"


def _mrkdwn(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_LIMIT)}}


def _context(*texts: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(t, 2000)} for t in texts[:10]]}


def _plain(text: str, limit: int = 75) -> dict[str, Any]:
    return {"type": "plain_text", "text": clip(text, limit)}


def _button(text: str, action_id: Ids, value: str, style: str | None = None, confirm: Block | None = None) -> Block:
    b: Block = {"type": "button", "text": _plain(text), "action_id": action_id.value, "value": value}
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


def who(actor: str) -> str:
    return "Mailwarden" if actor == "system" else f"<@{actor}>"  # our own Slack ids, not log data


def _history(entries: Sequence[HistoryEntry]) -> list[str]:
    return [f"{when(h.at)} · {who(h.actor)} · {h.text}" for h in list(entries)[-8:]]


# --- the employee -----------------------------------------------------------------------------------

USER_OUTCOME: dict[CaseState, str] = {
    CaseState.CLOSED_BENIGN: "Thanks, we've noted that it was you. Nothing else to do.",
    CaseState.AWAITING_SOC: "Thanks. The security team is looking at it now and will contact you if needed.",
    CaseState.AWAITING_SECOND_APPROVAL: "Thanks. The security team is securing your account now.",
    CaseState.ESCALATED: "The security team's on-call responder is looking at it now.",
    CaseState.CONTAINING: "The security team is securing your account now.",
    CaseState.CONTAINED: "The security team has secured your account. We've sent you what to do next.",
}
ANSWERS = {
    "yes": "You answered *Yes, it was me*.",
    "no": "You answered *No, I don't recognise this*.",
    "not_me": "You told us *this isn't about you*: we've passed that to the security team.",
}


def user_card(case: Case) -> Card:
    e = headline_event(case)
    account = safe(case.user_principal, 120)
    lead = (
        f"We saw a sign-in to your Microsoft 365 account *{account}* on {when(e.occurred_at, case.slack_tz)} "
        f"from {_where(e)} using {_how(e)}."
        if e
        else f"We saw unusual activity on your account *{account}*."
    )
    blocks: list[Block] = [
        {"type": "header", "text": _plain("Was this you?", 150)},
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
                    _button("This isn't about me", Ids.USER_NOT_ME, case.id),
                ],
            }
        )
        blocks.append(
            _context(
                "If this wasn't you, answering *No* lets the security team lock the attacker out. "
                "We will never ask for your password."
            )
        )
    else:
        said = ANSWERS.get(case.user_answer or "", "We didn't hear back from you in time.")
        blocks.append(_mrkdwn(f"{said} {USER_OUTCOME.get(case.state, '')}".strip()))
    blocks.append(_context(f"Case {case.id}"))
    return Card(text="Was this you? We saw a sign-in to your account that looks unusual.", blocks=fit(blocks))


def user_reminder_text(case: Case) -> str:
    due = f" by {local(case.deadline_at, case.slack_tz)}" if case.deadline_at else ""
    return (
        f"Reminder: we still need your answer about the sign-in to *{safe(case.user_principal, 120)}*. "
        f"Please use the buttons on the card above{due}; after that the security team looks into it without you."
    )


def user_outcome(case: Case, done: Iterable[str], *, recovery_url: str | None, helpdesk: str) -> Card:
    """After containment: what was done and what to do now, in plain words. Never a password."""
    steps = [
        "Sign in again as usual. If you are asked to change your password, choose a new one you haven't used before"
        + (f": <{recovery_url}|reset it here>." if recovery_url else " (use the self-service password reset)."),
        "If you're asked to set up multi-factor authentication again, do it: that locks the attacker out.",
        f"Anything odd, or can't get back in? Contact {safe(helpdesk, 200)} and mention case {case.id}.",
    ]
    done_lines = "\n".join(f"• {d}" for d in done) or "• Your sessions were signed out."
    blocks = [
        {"type": "header", "text": _plain("Your account is secured", 150)},
        _mrkdwn(
            "Because of the sign-in you didn't recognise, the security team contained your account:\n" + done_lines
        ),
        _mrkdwn("*What to do now*\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))),
        _context(f"Case {case.id}"),
    ]
    return Card(text="Your account is secured: here's what to do now.", blocks=blocks)


# --- the SOC --------------------------------------------------------------------------------------------

SEVERITY_ICON = {"low": "⚪", "medium": "🟡", "high": "🟠", "critical": "🔴"}


def _has(case: Case, *detectors: str) -> list[str]:
    return [safe(f.reason, 300) for f in case.findings if f.detector in detectors]


def analysis(case: Case) -> list[tuple[str, str]]:
    """The playbook's Questions for Analysis, each answered from the case's own evidence."""
    e = headline_event(case)
    ip = safe(e.ip, 64) if e and e.ip else "unknown"
    flagged = _has(case, "risky_ip", "password_spray")
    failures = [x for x in case.events if not x.success]
    place = _has(case, "new_country", "new_asn", "impossible_travel")
    hours = _has(case, "off_hours")
    creds = _has(case, "provider_risk")
    device = _has(case, "new_device", "scripted_client", "legacy_protocol")
    return [
        (
            "Known or suspicious IP?",
            "Suspicious: " + "; ".join(flagged) if flagged else f"{ip}: no threat-intel or provider flag",
        ),
        (
            "Failed sign-ins before the success?",
            "; ".join(_has(case, "failed_then_success"))
            or (f"{len(failures)} failed sign-in(s) in this case" if failures else "No"),
        ),
        ("Usual hours and place?", "; ".join(place + hours) or "Usual place and hours for this user"),
        (
            "Recent password change or compromised-credential alert?",
            "; ".join(creds) or "No provider risk or leaked-credential alert in this case",
        ),
        (
            "Device and client as usual?",
            "; ".join(device) or (f"{_how(e)} — no new device or unusual client" if e else "No device data"),
        ),
    ]


def _plan_text(case: Case) -> str:
    if not case.plan:
        return "*Proposed containment:* none proposed"
    notes = dict(case.plan_notes)
    lines = []
    for a in case.plan:
        note = notes.get(a)
        lines.append(f"• {ACTION_LABELS.get(a, a)}" + (f" — ⚠️ {safe(note, 300)}" if note else ""))
    general = [f"⚠️ {safe(n, 300)}" for a, n in case.plan_notes if a == "*"]
    extra = (
        "\n_Two SOC members must approve (protected account or destructive action)._"
        if case.needs_two_approvers
        else ""
    )
    return "*Proposed containment:*\n" + "\n".join(lines + general) + extra


def campaign_card(case: Case) -> Card:
    """One card for an attack on many accounts from one source: the accounts listed, not fifty cards."""
    sev = case.severity.label
    shown = list(case.users)[:40]
    more = len(case.users) - len(shown)
    accounts = ", ".join(safe(u, 80) for u in shown) + (f" and {more} more" if more > 0 else "")
    state = f"`{case.state.value}`" + (f" · taken by {who(case.assignee)}" if case.assignee else "")
    blocks: list[Block] = [
        {
            "type": "header",
            "text": _plain(
                f"{SEVERITY_ICON[sev]} {sev.upper()} · campaign · "
                f"{safe(case.user_display or case.user_principal, 100)}",
                150,
            ),
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Accounts targeted*\n{len(case.users)}"},
                {"type": "mrkdwn", "text": f"*State*\n{state}"},
                {"type": "mrkdwn", "text": f"*Detectors*\n{', '.join(case.detectors) or '—'}"},
            ],
        },
        _mrkdwn("*Why this case:*\n" + "\n".join(f"• {safe(f.reason, 300)}" for f in case.findings[:10])),
        _mrkdwn(f"*Accounts:* {accounts}"),
        _context(
            "Accounts where the attacker also *succeeded* get their own case, with the user asked and "
            "containment offered there; this card tracks the campaign itself."
        ),
    ]
    if case.state in (CaseState.AWAITING_SOC, CaseState.ESCALATED):
        elements = [_button("Benign…", Ids.SOC_BENIGN, case.id)]
        if case.state is CaseState.AWAITING_SOC:
            elements.append(_button("Escalate", Ids.SOC_ESCALATE, case.id))
        if case.assignee is None:
            elements.append(_button("Take it", Ids.SOC_TAKE, case.id, "primary"))
        blocks.append({"type": "actions", "block_id": f"soc:{case.id}", "elements": elements})
    history = _history(case.history)
    if history:
        blocks.append(_context(*history))
    blocks.append(_context(f"Case {case.id} · opened {when(case.opened_at)}"))
    return Card(text=f"{sev.upper()} campaign {case.id}: {len(case.users)} accounts targeted", blocks=fit(blocks))


def soc_card(case: Case) -> Card:
    if case.is_campaign:
        return campaign_card(case)
    sev = case.severity.label
    subject = safe(case.user_display or case.user_principal, 100)
    answer = {
        "yes": "✅ *Yes, it was me*",
        "no": "❌ *No, I don't recognise this*",
        "not_me": "↪️ *This isn't about me*",
    }.get(case.user_answer or "", "⏳ waiting" if case.state is CaseState.AWAITING_USER else "— no answer")
    state = f"`{case.state.value}`" + (f" · taken by {who(case.assignee)}" if case.assignee else "")
    blocks: list[Block] = [
        {
            "type": "header",
            "text": _plain(f"{SEVERITY_ICON[sev]} {sev.upper()} · suspicious mailbox access · {subject}", 150),
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*User*\n{safe(case.user_principal, 200)}"},
                {"type": "mrkdwn", "text": f"*State*\n{state}"},
                {"type": "mrkdwn", "text": f"*User's answer*\n{answer}"},
                {"type": "mrkdwn", "text": f"*Detectors*\n{', '.join(case.detectors) or '—'}"},
            ],
        },
        _mrkdwn("*Why this case:*\n" + "\n".join(f"• {safe(f.reason, 300)}" for f in case.findings[:10])),
        _mrkdwn("*Questions for analysis*\n" + "\n".join(f"• *{q}* {a}" for q, a in analysis(case))),
    ]
    evidence = sorted(case.events, key=lambda e: e.occurred_at)[-5:]
    if evidence:
        lines = [
            f"• {when(e.occurred_at)} · {'✅ success' if e.success else '✖ failure ' + str(e.error_code)} · "
            f"{_where(e)} · {_how(e)}"
            for e in evidence
        ]
        blocks.append(_mrkdwn("*Evidence (latest events):*\n" + "\n".join(lines)))
    blocks.append(_mrkdwn(_plan_text(case)))
    if case.approvals:
        blocks.append(
            _mrkdwn(
                "*Approvals:*\n"
                + "\n".join(
                    f"• {who(a.actor)} approved {', '.join(a.actions) or '—'}: {safe(a.reason, 300)}"
                    for a in case.approvals
                )
            )
        )
    blocks.extend(_soc_buttons(case))
    history = _history(case.history)
    if history:
        blocks.append(_context(*history))
    blocks.append(_context(f"Case {case.id} · opened {when(case.opened_at)}"))
    return Card(
        text=f"{sev.upper()} case {case.id}: suspicious mailbox access for {safe(case.user_principal, 120)}",
        blocks=fit(blocks),
    )


def _soc_buttons(case: Case) -> list[Block]:
    v = case.id
    if case.state is CaseState.AWAITING_SECOND_APPROVAL:
        elements = [
            _button(
                "Approve (second)",
                Ids.SOC_SECOND_APPROVAL,
                v,
                "danger",
                confirm={
                    "title": _plain("Second approval", 100),
                    "text": {"type": "mrkdwn", "text": "Run the containment the first approver chose?"},
                    "confirm": _plain("Approve"),
                    "deny": _plain("Cancel"),
                },
            ),
            _button("Benign…", Ids.SOC_BENIGN, v),
            _button("Escalate", Ids.SOC_ESCALATE, v),
        ]
    elif case.state in (CaseState.AWAITING_SOC, CaseState.ESCALATED):
        elements = [
            _button(
                "Revoke sessions",
                Ids.SOC_REVOKE,
                v,
                "danger",
                confirm={
                    "title": _plain("Revoke all sessions?", 100),
                    "text": {"type": "mrkdwn", "text": "Signs the user out of every Microsoft 365 session."},
                    "confirm": _plain("Revoke"),
                    "deny": _plain("Cancel"),
                },
            ),
            _button("Contain…", Ids.SOC_CONTAIN, v, "danger"),
            _button("Benign…", Ids.SOC_BENIGN, v),
        ]
        if case.state is CaseState.AWAITING_SOC:
            elements.append(_button("Escalate", Ids.SOC_ESCALATE, v))
    else:
        return []
    if case.assignee is None:
        elements.append(_button("Take it", Ids.SOC_TAKE, v, "primary"))
    return [{"type": "actions", "block_id": f"soc:{case.id}", "elements": elements}]


def contain_modal(case: Case, available: Sequence[str], destructive: frozenset[str]) -> dict[str, Any]:
    """One checkbox per action (the plan pre-checked) and a required reason."""

    def option(a: str) -> dict[str, Any]:
        label = ACTION_LABELS.get(a, a) + (" (destructive)" if a in destructive else "")
        return {"text": _plain(label), "value": a}

    options = [option(a) for a in available][:10]
    initial = [option(a) for a in case.plan if a in available][:10]
    checkboxes: Block = {"type": "checkboxes", "action_id": Ids.IN_ACTIONS.value, "options": options}
    if initial:
        checkboxes["initial_options"] = initial
    notes = "\n".join(
        f"• {'Plan' if a == '*' else ACTION_LABELS.get(a, a)}: {safe(n, 200)}" for a, n in case.plan_notes
    )
    blocks: list[Block] = [
        _mrkdwn(f"*{safe(case.user_principal, 200)}* · {case.severity.label} · case {case.id}"),
        {
            "type": "input",
            "block_id": Ids.IN_ACTIONS.value,
            "label": _plain("Actions to run", 2000),
            "element": checkboxes,
        },
        {
            "type": "input",
            "block_id": Ids.IN_REASON.value,
            "label": _plain("Reason (kept in the audit log)", 2000),
            "element": {
                "type": "plain_text_input",
                "action_id": Ids.IN_REASON.value,
                "multiline": True,
                "min_length": 3,
                "max_length": 1000,
            },
        },
    ]
    if notes:
        blocks.insert(1, _mrkdwn("*Pre-flight:*\n" + notes))
    blocks.append(_context("Destructive actions and protected accounts need a second SOC member's approval."))
    return {
        "type": "modal",
        "callback_id": Ids.MODAL_CONTAIN.value,
        "private_metadata": case.id,
        "title": _plain("Contain account", 24),
        "submit": _plain("Approve", 24),
        "close": _plain("Cancel", 24),
        "blocks": blocks,
    }


ALLOW_SCOPES = {
    "none": "No allow entry",
    "country": "This user + this country",
    "asn": "This user + this network",
    "app": "This user + this app/client",
}


def benign_modal(case: Case) -> dict[str, Any]:
    """Close as benign with a reason; optionally a scoped, expiring allow entry (never a blanket mute)."""
    scope_options = [{"text": _plain(v), "value": k} for k, v in ALLOW_SCOPES.items()]
    day_options = [{"text": _plain(f"{d} days"), "value": str(d)} for d in (1, 7, 30, 90)]
    return {
        "type": "modal",
        "callback_id": Ids.MODAL_BENIGN.value,
        "private_metadata": case.id,
        "title": _plain("Close as benign", 24),
        "submit": _plain("Close case", 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            _mrkdwn(f"*{safe(case.user_principal, 200)}* · {case.severity.label} · case {case.id}"),
            {
                "type": "input",
                "block_id": Ids.IN_REASON.value,
                "label": _plain("Why is this benign?", 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": Ids.IN_REASON.value,
                    "multiline": True,
                    "min_length": 3,
                    "max_length": 1000,
                },
            },
            {
                "type": "input",
                "block_id": Ids.IN_ALLOW_SCOPE.value,
                "optional": True,
                "label": _plain("Allow this again without asking?", 2000),
                "element": {
                    "type": "static_select",
                    "action_id": Ids.IN_ALLOW_SCOPE.value,
                    "options": scope_options,
                    "initial_option": scope_options[0],
                },
            },
            {
                "type": "input",
                "block_id": Ids.IN_ALLOW_DAYS.value,
                "optional": True,
                "label": _plain("For", 2000),
                "element": {
                    "type": "static_select",
                    "action_id": Ids.IN_ALLOW_DAYS.value,
                    "options": day_options,
                    "initial_option": day_options[1],
                },
            },
        ],
    }


def home_view(
    *, is_soc: bool, open_cases: Sequence[Case], mine: Sequence[Case], links: dict[str, str] | None = None
) -> dict[str, Any]:
    """App Home: for SOC members the open cases by state; for everyone their own recent verifications."""
    blocks: list[Block] = [{"type": "header", "text": _plain("Mailwarden", 150)}]
    if is_soc:
        blocks.append(_mrkdwn(f"*Open cases: {len(open_cases)}*"))
        by_state: dict[str, list[Case]] = {}
        for c in open_cases:
            by_state.setdefault(c.state.value, []).append(c)
        for state in sorted(by_state):
            lines = [
                f"• {SEVERITY_ICON[c.severity.label]} {_case_link(c.id, (links or {}).get(c.id))} "
                f"{safe(c.user_principal, 120)} · "
                f"{', '.join(c.detectors)}" + (f" · {who(c.assignee)}" if c.assignee else "")
                for c in by_state[state][:15]
            ]
            blocks.append(_mrkdwn(f"*{state}* ({len(by_state[state])})\n" + "\n".join(lines)))
        blocks.append({"type": "divider"})
    blocks.append(_mrkdwn("*Your recent verifications*"))
    if not mine:
        blocks.append(_context("Nothing yet: we'll DM you if we ever see a sign-in we need you to confirm."))
    for c in list(mine)[:10]:
        e = headline_event(c)
        said = ANSWERS.get(c.user_answer or "", "no answer")
        blocks.append(_context(f"{when(c.opened_at)} · {_where(e) if e else '—'} · {said} · `{c.state.value}`"))
    return {"type": "home", "blocks": blocks[:MAX_VIEW_BLOCKS]}


def _case_link(case_id: str, permalink: str | None) -> str:
    # permalinks come from Slack's chat.getPermalink; a stray control character would break the link
    if permalink and permalink.startswith("https://") and not set(permalink) & set("<>| \n"):
        return f"<{permalink}|{case_id}>"
    return f"`{case_id}`"


def travel_card(request_id: str, requester: str, country: str, until: str) -> Card:
    """A SOC card asking to approve an employee's declared trip."""
    text = f"{who(requester)} declared a trip to *{safe(country, 60)}* until *{safe(until, 40)}*."
    return Card(
        text=f"Travel request {request_id}",
        blocks=[
            {"type": "header", "text": _plain("✈️ Travel declared", 150)},
            _mrkdwn(text + " Approving allows sign-ins from there for this user until that date."),
            {
                "type": "actions",
                "block_id": f"travel:{request_id}",
                "elements": [
                    _button("Approve", Ids.TRAVEL_APPROVE, request_id, "primary"),
                    _button("Refuse", Ids.TRAVEL_REFUSE, request_id),
                ],
            },
        ],
    )
