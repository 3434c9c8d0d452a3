"""Making attacker-controlled strings safe for Slack. Pure.

Slack reads `&`, `<` and `>` as control characters: escaping exactly those three neutralises
mentions (`<!channel>`, `<@U…>`, `<!subteam^…>`) and links (`<https://…|…>`), and nothing else
may be HTML-encoded (reference/api-contracts.md §3.2). Every string that came from a log record
goes through `safe` before it reaches a card.
"""

from __future__ import annotations

import unicodedata

ELLIPSIS = "…"


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """Cut to at most `limit` characters without ending on a torn escape (`&am`) or a torn control
    sequence of our own (`<!date^…`): escaped log text holds no raw `<`, so any open one is ours."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - 1)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    if cut.rfind("<") > cut.rfind(">"):
        cut = cut[: cut.rfind("<")]
    return cut + ELLIPSIS


def safe(value: object, limit: int = 200) -> str:
    """Escape and clip a log-derived value; control characters become spaces, and formatting
    characters are wrapped so they cannot style the surrounding card."""
    raw = "" if value is None else str(value)
    cleaned = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in raw).strip()
    # zero-width space after mrkdwn markers stops *bold*, _italic_, ~strike~ and `code` spans opened by
    # the attacker from closing on our own text
    for mark in ("*", "_", "~", "`"):
        cleaned = cleaned.replace(mark, mark + "\u200b")
    return clip(escape(cleaned), limit)
