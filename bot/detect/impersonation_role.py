"""impersonation_role: an account or app was given the power to act as (or export) every mailbox.

Splunk "O365 ApplicationImpersonation Role Assigned" (New-ManagementRoleAssignment, Role
ApplicationImpersonation: what MailSniper needs for tenant-wide search; detections.md E3) and the
Mailbox Import Export role behind New-MailboxExportRequest (Elastic exchange management role
assignment, D11/E4). Google's counterpart is domain-wide delegation (Sigma
gcp_gworkspace_granted_domain_api_access: AUTHORIZE_API_CLIENT_ACCESS; F12).
"""

from __future__ import annotations

from bot.detect import Params
from bot.detect.common import clip, finding
from bot.model import Event, Finding, Profile, Severity

ID = "impersonation_role"
KINDS = frozenset({"consent", "role_assignment"})  # the event kinds it reads (bot.detect.run_all skips the rest)

ROLES = {"applicationimpersonation": "ApplicationImpersonation", "mailbox import export": "Mailbox Import Export"}


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if not event.success:
        return None
    if event.kind == "consent" and event.operation == "AUTHORIZE_API_CLIENT_ACCESS":
        client = clip(event.app_id or event.target, 80) or "a client"
        scopes = ", ".join(event.scopes[:4])
        return finding(
            ID,
            event,
            Severity.HIGH,
            f"{event.user_principal} let {client} act as any user in the domain (domain-wide delegation)",
            (("client", client), ("scopes", scopes), ("ip", event.ip)),
        )
    if event.kind != "role_assignment":
        return None
    role = ROLES.get(dict(event.parameters).get("Role", "").strip().lower())
    if role is None:
        return None
    grantee = clip(dict(event.parameters).get("delegate") or event.target, 80) or "someone"
    return finding(
        ID,
        event,
        Severity.HIGH,
        f"{event.user_principal} assigned the {role} role to {grantee}, which reaches every mailbox",
        (("role", role), ("grantee", grantee), ("ip", event.ip)),
    )
