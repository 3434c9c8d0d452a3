"""mail_forwarding: mail set to leave for an outside address, by inbox rule or mailbox setting.

Panther Microsoft365.Exchange.External.Forwarding, Sigma microsoft365_susp_email_forwarding_activity
and Splunk o365_mailbox_email_forwarding_enabled: Set-Mailbox / New-InboxRule with
ForwardingSmtpAddress, ForwardTo, ForwardingAddress, RedirectTo or ForwardAsAttachmentTo outside
the organisation's domains; high when the rule also hides what it does
(DeliverToMailboxAndForward False, DeleteMessage True, StopProcessingRules True); detections.md
E8. Google: Sigma gcp_gworkspace_out_of_domain_email_forwarding (F15). This is T1114.003's
territory, kept because the bot reads the same records.
"""

from __future__ import annotations

import re

from bot.detect import Params
from bot.detect.common import clip, finding
from bot.model import Event, Finding, Profile, Severity

ID = "mail_forwarding"
KINDS = frozenset({"forwarding"})  # the event kinds it reads (bot.detect.run_all skips the rest)
EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
HIDING = (("DeliverToMailboxAndForward", "false"), ("DeleteMessage", "true"), ("StopProcessingRules", "true"))


def internal(domain: str, own: frozenset[str]) -> bool:
    d = domain.lower()
    return any(d == o or d.endswith("." + o) for o in own)


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if event.kind != "forwarding" or not event.success:
        return None
    own = {d.lower() for d in params.own_domains}
    if "@" in event.user_principal:
        own.add(event.user_principal.rsplit("@", 1)[1])
    targets = event.target or ""
    outside = sorted({m.group(0).lower() for m in EMAIL.finditer(targets) if not internal(m.group(1), frozenset(own))})
    google = event.operation == "email_forwarding_out_of_domain"
    if not outside and not google:
        return None
    p = {k: v.lower() for k, v in event.parameters}
    hiding = [name for name, bad in HIDING if p.get(name) == bad]
    severity = Severity.HIGH if hiding else Severity.MEDIUM
    shown = ", ".join(outside[:3]) or clip(event.target, 80) or "an outside address"
    how = "an inbox rule" if "inboxrule" in (event.operation or "").lower() else "mailbox forwarding"
    tail = f", and hides it ({', '.join(hiding)})" if hiding else ""
    return finding(
        ID,
        event,
        severity,
        f"{how.capitalize()} now sends {event.user_principal}'s mail to {shown}{tail}",
        (("forward_to", ", ".join(outside) or event.target), ("operation", event.operation), ("ip", event.ip)),
    )
