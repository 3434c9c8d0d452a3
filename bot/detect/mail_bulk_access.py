"""mail_bulk_access: mail read in bulk, by one session or by one app across many mailboxes.

Per record (`detect`): Elastic "M365 Exchange Mailbox Items Accessed Excessively" fires on a
MailItemsAccessed record with OperationCount >= 100 (detections.md D1); it is high when the reader
is Microsoft Graph or EWS, the two APIs Splunk's T1114.002 rules watch (D2, D3). A `Sync` access
downloads a whole folder (Microsoft's MailItemsAccessed forensics guidance, D6), so a Sync by an
API client is worth the same finding even below the count.

Across mailboxes (`observe_mail_access`): Splunk "O365 Multiple Mailboxes Accessed via API" — one
client app reading > 5 distinct mailboxes in 10 minutes through Graph or EWS (D2). The state is a
plain value the caller keeps per tenant; each app is reported once per window.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime

from bot.detect import Params
from bot.detect.common import clip, finding
from bot.model import Event, Finding, Profile, Severity

ID = "mail_bulk_access"
KINDS = frozenset({"mail_access"})  # the event kinds it reads (bot.detect.run_all skips the rest)
GRAPH_APP = "00000003-0000-0000-c000-000000000000"  # Microsoft Graph resource (detections.md §2.3)


def via_api(event: Event) -> str | None:
    """ "Graph" or "EWS" when the mailbox was read through one of them, else None."""
    app_ids = {event.app_id, *(v for k, v in event.parameters if k == "AppId")}
    if GRAPH_APP in app_ids:
        return "Graph"
    if (event.client_app or "").startswith("Client=WebServices"):
        return "EWS"
    return None


def mailbox_read(event: Event) -> str:
    return event.target or event.user_principal


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if event.kind != "mail_access" or not event.success:
        return None
    api = via_api(event)
    sync = (event.access_type or "").lower() == "sync"
    if event.count < params.mail_bulk_min_items and not (sync and api):
        return None
    severity = Severity.HIGH if api else Severity.MEDIUM
    how = f" through {api}" if api else ""
    what = f"{event.count} mail items" if not sync else f"Whole folders ({event.count} sync operations)"
    client = clip(event.client_app, 50)
    return finding(
        ID,
        event,
        severity,
        f"{what} read from {mailbox_read(event)}'s mailbox in one go{how}" + (f" ({client})" if client else ""),
        (
            ("mailbox", mailbox_read(event)),
            ("items", event.count),
            ("access_type", event.access_type),
            ("client_app_id", event.app_id),
            ("client", event.client_app),
            ("ip", event.ip),
        ),
    )


@dataclass(frozen=True, slots=True)
class MailRead:
    at: datetime
    app: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class MailAccessWindow:
    """Recent API mailbox reads per client app, and when each app was last reported."""

    reads: tuple[MailRead, ...] = ()
    reported: tuple[tuple[str, datetime], ...] = ()


def judge_mail_access(
    event: Event, api: str, mailboxes: Collection[str], reported: bool, params: Params
) -> Finding | None:
    """The cross-mailbox finding for one API read, once it is in the window: `mailboxes` the distinct
    mailboxes the event's app read within the window, `reported` whether the app was reported within
    it. Pure; shared by the reference window below and the per-tenant index (bot.detect.fleet)."""
    if len(mailboxes) < params.mail_bulk_min_mailboxes or reported:
        return None
    sample = sorted(mailboxes)
    minutes = max(1, round(params.mail_bulk_window.total_seconds() / 60))
    return finding(
        ID,
        event,
        Severity.HIGH,
        f"One app ({clip(event.app_id, 40)}) read {len(sample)} different mailboxes through {api} "
        f"within {minutes} minutes",
        (("client_app_id", event.app_id), ("mailboxes", len(sample)), ("sample", ", ".join(sample[:5]))),
    )


def api_read(event: Event) -> str | None:
    """The API ("Graph" / "EWS") of a successful mailbox read by an app, the reads the window counts."""
    if event.kind != "mail_access" or not event.success or not event.app_id:
        return None
    return via_api(event)


def observe_mail_access(
    window: MailAccessWindow, event: Event, params: Params
) -> tuple[MailAccessWindow, Finding | None]:
    """The reference form: every read kept in a plain value (see bot.detect.fleet.TenantFleet)."""
    api = api_read(event)
    if api is None or event.app_id is None:
        return window, None
    horizon = event.occurred_at - params.mail_bulk_window
    reads = tuple(r for r in window.reads if r.at >= horizon)
    reads = (*reads, MailRead(event.occurred_at, event.app_id, mailbox_read(event)))[-params.mail_bulk_max_seen :]
    reported = tuple((a, t) for a, t in window.reported if t >= horizon)
    nxt = MailAccessWindow(reads=reads, reported=reported)
    mailboxes = {r.mailbox for r in reads if r.app == event.app_id}
    found = judge_mail_access(event, api, mailboxes, any(a == event.app_id for a, _ in reported), params)
    if found is not None:
        nxt = replace(nxt, reported=(*reported, (event.app_id, event.occurred_at)))
    return nxt, found
