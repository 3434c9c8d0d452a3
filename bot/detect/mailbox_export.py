"""mailbox_export: a whole mailbox (or tenant) was exported.

Sources: Sigma/Splunk PST export and "eDiscovery search started or exported" alert (D7), Sigma
New-ComplianceSearchAction export (D8), Splunk compliance content search exported (D9), Sigma
and Elastic New-MailboxExportRequest (D11), Panther GSuite.Workspace.DataExportCreated and Alert
Center "Customer takeout initiated" (F11). Always high: there is no benign bulk export the SOC
should not at least see (the policy table sends it straight to them).
"""

from __future__ import annotations

from bot.detect import Params
from bot.detect.common import clip, finding
from bot.model import Event, Finding, Profile, Severity

ID = "mailbox_export"
KINDS = frozenset({"export"})  # the event kinds it reads (bot.detect.run_all skips the rest)


def _what(event: Event) -> str:
    op = (event.operation or "").lower()
    target = clip(event.target, 80)
    if op == "new-mailboxexportrequest":
        return f"requested a PST export of {target}'s mailbox" if target else "requested a PST export of a mailbox"
    if op.startswith("searchexport"):
        return f"exported the eDiscovery search {target}" if target else "exported an eDiscovery search"
    if op == "new-compliancesearchaction":
        return "started a compliance search export to PST"
    if op.startswith("customer_takeout") or op == "customer takeout initiated":
        return "started a Google Takeout of the organisation's data"
    return f"ran {clip(event.operation, 60) or 'an export'}" + (f" on {target}" if target else "")


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if event.kind != "export" or not event.success:
        return None
    who = event.user_principal or "Someone"
    return finding(
        ID,
        event,
        Severity.HIGH,
        f"{who} {_what(event)}: a bulk export of mail",
        (("operation", event.operation), ("target", event.target), ("ip", event.ip), ("source", event.source)),
    )
