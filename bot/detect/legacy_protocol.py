"""legacy_protocol: a successful sign-in over a protocol that cannot do MFA.

Lists: Sigma "Use of Legacy Authentication Protocols" and Elastic "Unusual legacy authentication
client" (`clientAppUsed` IMAP4, POP3, Authenticated SMTP, Exchange Web Services, Other clients…;
detections.md A12); Sigma/Panther ROPC rules (`authenticationProtocol == ropc`, user agent
BAV2ROPC / CBAinPROD / CBAinTAR; A13). For a legacy client Elastic fires the first time per user
in 7 days, so a user who used the same client within `legacy_memory` is not asked again, and
(being a new-terms rule) not before the user's `baseline_warmup` of history; ROPC skips MFA
outright and fires every time, as Sigma's rule does.
"""

from __future__ import annotations

import functools

from bot.detect import Params
from bot.detect.common import finding, is_successful_sign_in, last_seen, warmed_up
from bot.model import Event, Finding, Profile, Severity

ID = "legacy_protocol"
KINDS = frozenset({"sign_in"})  # the event kinds it reads (bot.detect.run_all skips the rest)

LEGACY_CLIENTS = frozenset(
    {
        "Authenticated SMTP",
        "Autodiscover",
        "Exchange ActiveSync",
        "Exchange Online PowerShell",
        "Exchange Web Services",
        "IMAP4",
        "IMAP",
        "MAPI Over HTTP",
        "MAPI",
        "Offline Address Book",
        "Outlook Anywhere",
        "Outlook Anywhere (RPC over HTTP)",
        "Outlook Service",
        "POP3",
        "Reporting Web Services",
        "SMTP",
        "Other clients",
        "Other client",
    }
)
ROPC_AGENTS = ("bav2ropc", "cbainprod", "cbaintar")


@functools.lru_cache(maxsize=4096)
def _ropc_agent(user_agent: str) -> bool:
    """Cached per user agent, as scripted_client's classification: the same few hundred repeat."""
    low = user_agent.lower()
    return any(a in low for a in ROPC_AGENTS)


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if not is_successful_sign_in(event):
        return None
    ropc = (event.auth_protocol or "").lower() == "ropc" or _ropc_agent(event.user_agent or "")
    legacy = event.client_app in LEGACY_CLIENTS
    if not (ropc or legacy):
        return None
    client = event.client_app if legacy else "ROPC"
    if not ropc and not warmed_up(profile, event, params.baseline_warmup):
        # "First time per user in 7 days" is a new-terms rule: it needs 7 days of the user's own
        # history to mean anything (issue 3 warm-up), or a fresh install asks every IMAP user.
        return None
    if profile is not None and client:
        seen = last_seen(profile.client_apps, client)
        if seen is not None and event.occurred_at - seen <= params.legacy_memory and not ropc:
            return None
    how = (
        "the password-only ROPC flow, which skips MFA"
        if ropc
        else f"{client}, a legacy protocol that cannot ask for MFA"
    )
    return finding(
        ID,
        event,
        Severity.MEDIUM,
        f"Signed in with {how}",
        (("client_app", event.client_app), ("auth_protocol", event.auth_protocol), ("user_agent", event.user_agent)),
    )
