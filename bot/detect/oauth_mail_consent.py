"""oauth_mail_consent: an OAuth app was granted access to mail.

Microsoft: Splunk "O365 Mail Permissioned Application Consent Granted by User" (Mail.Read,
Mail.ReadBasic, Mail.ReadWrite, Mail.Read.Shared, Mail.ReadWrite.Shared, Mail.Send,
Mail.Send.Shared; detections.md C1); Sentinel EndUserConsentMailboxOfflineAccess (with
MailboxSettings.ReadWrite, worse with offline_access; C2); Splunk tenant-wide admin consent
(ConsentType AllPrincipals; C4); Sentinel ExchangeFullAccessGrantedToApp (full_access_as_app, EWS
to every mailbox; C5). The Exchange protocol scopes (EWS/IMAP/POP AccessAsUser.All) reach the
same mail, and eDiscovery scopes (Graph eDiscovery.*, Google Vault's `ediscovery`) search and
export every mailbox. Google: Panther "OAuth app authorised with privileged scopes", extended for
T1114.002 with the Gmail scopes and the GMAIL product bucket (F8). A client the user already granted within
Elastic's 15-day new-client window (F9) is not reported again (token refreshes re-authorize).
A consent to an app the organisation lists as trusted (`trusted_apps`: every new phone's Mail app
asks for full Gmail) is recorded low, not asked about: a native client's id carries no secret, so
anyone can present it, and the record must still be there to join an incident it is part of. Only
access to every mailbox (full_access_as_app, eDiscovery) is never trusted away.
Domain-wide delegation is impersonation_role's.
"""

from __future__ import annotations

from bot.detect import Params
from bot.detect.common import clip, finding, last_seen
from bot.model import Event, Finding, Profile, Severity

ID = "oauth_mail_consent"
KINDS = frozenset({"consent"})  # the event kinds it reads (bot.detect.run_all skips the rest)

MS_MAIL = frozenset(
    {
        "mail.read",
        "mail.readbasic",
        "mail.readwrite",
        "mail.read.shared",
        "mail.readwrite.shared",
        "mail.send",
        "mail.send.shared",
        "mailboxsettings.readwrite",
        "ews.accessasuser.all",
        "imap.accessasuser.all",
        "pop.accessasuser.all",
    }
)
# Every mailbox at once: EWS as any user (full_access_as_app), and eDiscovery, whose searches and
# exports span the organisation's mailboxes: Graph's eDiscovery.Read.All is already the least privilege
# to create a search (learn.microsoft.com/graph/api/security-ediscoverycase-post-searches), and Google
# Vault's `ediscovery` scope exports any custodian's mail (Panther F8 lists it as privileged).
EVERY_MAILBOX = frozenset({"full_access_as_app", "ediscovery.read.all", "ediscovery.readwrite.all"})
GOOGLE_EVERY_MAILBOX = frozenset({"https://www.googleapis.com/auth/ediscovery"})
# Whole-mailbox Gmail scopes (read everything); narrower gmail.* scopes are still reported, lower.
GMAIL_FULL = frozenset(
    {
        "https://mail.google.com/",
        "https://www.googleapis.com/auth/gmail.readonly",
        "https://www.googleapis.com/auth/gmail.modify",
    }
)


def mail_scopes(event: Event) -> tuple[str, ...]:
    out = []
    for s in event.scopes:
        low = s.lower()
        if (
            low in MS_MAIL
            or low in EVERY_MAILBOX
            or s in GMAIL_FULL
            or s in GOOGLE_EVERY_MAILBOX
            or "/auth/gmail." in low
        ):
            out.append(s)
    if not out and any(k == "product_buckets" and "GMAIL" in v for k, v in event.parameters):
        out.append("Gmail (product bucket)")
    return tuple(out)


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if event.kind != "consent" or not event.success or event.operation == "AUTHORIZE_API_CLIENT_ACCESS":
        return None
    scopes = mail_scopes(event)
    if not scopes:
        return None
    client = event.app_id or event.target
    if profile is not None and client:
        seen = last_seen(profile.granted_apps, client)
        if seen is not None and event.occurred_at - seen <= params.consent_memory:
            return None
    p = dict(event.parameters)
    lowered = {s.lower() for s in event.scopes}
    every = bool(EVERY_MAILBOX & lowered or GOOGLE_EVERY_MAILBOX.intersection(event.scopes))
    tenant_wide = p.get("ConsentType") == "AllPrincipals" or p.get("ConsentContext.IsAdminConsent") == "True"
    offline = "offline_access" in lowered
    full_gmail = bool(GMAIL_FULL.intersection(event.scopes))
    trusted = not every and (event.app_id or "").lower() in params.trusted_apps
    if trusted:
        severity = Severity.LOW
    else:
        severity = Severity.HIGH if every or tenant_wide or offline or full_gmail else Severity.MEDIUM
    app = clip(event.app or event.target or event.app_id, 60) or "an app"
    extras = [
        x
        for x, on in (
            ("every mailbox in the tenant", every),
            ("for all users", tenant_wide),
            ("that keeps working offline", offline),
            ("an app the organisation trusts", trusted),
        )
        if on
    ]
    tail = f" ({', '.join(extras)})" if extras else ""
    shown = ", ".join(s.rsplit("/", 1)[-1] or s for s in scopes[:4])
    return finding(
        ID,
        event,
        severity,
        f"Granted {app} access to mail ({shown}){tail}",
        (("app", app), ("client_id", event.app_id), ("scopes", ", ".join(scopes)), ("ip", event.ip)),
    )
