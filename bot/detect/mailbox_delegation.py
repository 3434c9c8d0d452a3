"""mailbox_delegation: someone was given rights to read or send as another mailbox.

Splunk "O365 Elevated Mailbox Permission Assigned" (Add-MailboxPermission with FullAccess,
ChangePermission or ChangeOwner; detections.md E1) and Elastic "M365 Exchange Mailbox High-Risk
Permission Delegated" (Add-RecipientPermission SendAs, Set-Mailbox GrantSendOnBehalfTo; Exchange's
own NT AUTHORITY\\SYSTEM service actors excluded; E2).
"""

from __future__ import annotations

from bot.detect import Params
from bot.detect.common import clip, finding
from bot.model import Event, Finding, Profile, Severity

ID = "mailbox_delegation"
KINDS = frozenset({"mailbox_permission"})  # the event kinds it reads (bot.detect.run_all skips the rest)

READ_RIGHTS = ("FullAccess", "ChangePermission", "ChangeOwner")


def _rights(event: Event) -> str | None:
    p = dict(event.parameters)
    op = (event.operation or "").lower()
    rights = p.get("AccessRights", "")
    if op == "add-mailboxpermission":
        found = [r for r in READ_RIGHTS if r.lower() in rights.lower()]
        return ", ".join(found) or None
    if op == "add-recipientpermission" and "sendas" in rights.lower():
        return "SendAs"
    if op == "set-mailbox" and p.get("GrantSendOnBehalfTo"):
        return "SendOnBehalf"
    return None


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if event.kind != "mailbox_permission" or not event.success:
        return None
    if event.user_principal.startswith("nt authority\\system"):
        return None  # Exchange's own service host, not a person (Elastic E2 exclusion)
    rights = _rights(event)
    if rights is None:
        return None
    delegate = dict(event.parameters).get("delegate") or "someone"
    mailbox = clip(event.target, 80) or "a mailbox"
    return finding(
        ID,
        event,
        Severity.MEDIUM,
        f"{event.user_principal} gave {clip(delegate, 80)} {rights} rights on {mailbox}",
        (("mailbox", event.target), ("delegate", delegate), ("rights", rights), ("ip", event.ip)),
    )
