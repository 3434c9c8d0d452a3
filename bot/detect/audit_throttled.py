"""audit_throttled: Exchange stopped auditing mail reads for this mailbox (IsThrottled).

Microsoft's MailItemsAccessed forensics guidance: IsThrottled is True when a mailbox produces
more than 1,000 MailItemsAccessed records in under 24 hours, and Bind auditing then stops for 24
hours, so everything in that window must be assumed read (detections.md D6). Elastic "M365
Exchange Mailbox Items Accessed Excessively" alerts on the marker itself (D1).
"""

from __future__ import annotations

from bot.detect import Params
from bot.detect.common import finding
from bot.model import Event, Finding, Profile, Severity

ID = "audit_throttled"
KINDS = frozenset({"mail_access"})  # the event kinds it reads (bot.detect.run_all skips the rest)


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if event.kind != "mail_access" or not event.is_throttled:
        return None
    mailbox = event.target or event.user_principal
    return finding(
        ID,
        event,
        Severity.HIGH,
        f"Over 1,000 mail reads in under 24 hours in {mailbox}'s mailbox: Microsoft stopped logging reads "
        "for the next 24 hours, so assume everything in it was read",
        (("mailbox", mailbox), ("client", event.client_app), ("client_app_id", event.app_id), ("ip", event.ip)),
    )
