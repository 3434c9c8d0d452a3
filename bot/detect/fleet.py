"""Cross-user detection state: what one tenant's users look like together. Pure.

`password_spray` (one address failing for many accounts) and the cross-mailbox half of
`mail_bulk_access` (one app reading many mailboxes) cannot be seen from one user's profile. Their
state is this value: the caller keeps one Fleet per tenant, passes it in with every event in
event-time order and keeps what comes back. It is bounded by the detectors' windows and caps.

    fleet, more = observe_fleet(fleet, event, params)   # after run_all(event, profile, params)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from bot.detect import Params
from bot.detect.mail_bulk_access import MailAccessWindow, MailRead, observe_mail_access
from bot.detect.password_spray import Attempt, SprayWindow, observe_spray
from bot.model import Event, Finding


@dataclass(frozen=True, slots=True)
class Fleet:
    spray: SprayWindow = field(default_factory=SprayWindow)
    mail: MailAccessWindow = field(default_factory=MailAccessWindow)


def observe_fleet(fleet: Fleet, event: Event, params: Params) -> tuple[Fleet, list[Finding]]:
    """Feed one event to the enabled cross-user detectors; the next state and their findings."""
    found: list[Finding] = []
    if params.runs("password_spray"):
        spray, f = observe_spray(fleet.spray, event, params)
        fleet = replace(fleet, spray=spray)
        if f is not None:
            found.append(f)
    if params.runs("mail_bulk_access"):
        mail, f = observe_mail_access(fleet.mail, event, params)
        fleet = replace(fleet, mail=mail)
        if f is not None:
            found.append(f)
    return fleet, found


def _t(v: datetime) -> str:
    return v.isoformat()


def fleet_to_dict(f: Fleet) -> dict[str, Any]:
    """JSON-ready form, for whoever stores the fleet between polls."""
    return {
        "spray": {
            "attempts": [[_t(a.at), a.ip, a.user, a.ok] for a in f.spray.attempts],
            "sprayers": [[ip, _t(at), n] for ip, at, n in f.spray.sprayers],
        },
        "mail": {
            "reads": [[_t(r.at), r.app, r.mailbox] for r in f.mail.reads],
            "reported": [[app, _t(at)] for app, at in f.mail.reported],
        },
    }


def fleet_from_dict(d: dict[str, Any]) -> Fleet:
    """The inverse of fleet_to_dict; missing parts are empty."""
    spray, mail = d.get("spray") or {}, d.get("mail") or {}
    p = datetime.fromisoformat
    return Fleet(
        spray=SprayWindow(
            attempts=tuple(Attempt(p(at), ip, user, bool(ok)) for at, ip, user, ok in spray.get("attempts", [])),
            sprayers=tuple((ip, p(at), int(n)) for ip, at, n in spray.get("sprayers", [])),
        ),
        mail=MailAccessWindow(
            reads=tuple(MailRead(p(at), app, mb) for at, app, mb in mail.get("reads", [])),
            reported=tuple((app, p(at)) for app, at in mail.get("reported", [])),
        ),
    )
