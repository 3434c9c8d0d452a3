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


class TenantFleet:
    """One tenant's cross-user state, kept per address and per app so each event costs what its own
    address or app has seen, not what the whole tenant has.

    `observe_spray` only ever reads attempts and sprayers of the event's own address, and
    `observe_mail_access` only reads of the event's own app, so one small window per key behaves
    exactly like the single tenant-wide window of `observe_fleet` (the caps apply per key). The
    windows are the same pure values; this holder is the caller's mutable index over them, owned
    by one ingest at a time.
    """

    __slots__ = ("mail", "spray")

    def __init__(
        self, spray: dict[str, SprayWindow] | None = None, mail: dict[str, MailAccessWindow] | None = None
    ) -> None:
        self.spray: dict[str, SprayWindow] = spray or {}
        self.mail: dict[str, MailAccessWindow] = mail or {}

    def observe(self, event: Event, params: Params) -> list[Finding]:
        found: list[Finding] = []
        if event.kind == "sign_in" and event.ip is not None and params.runs("password_spray"):
            window = self.spray.get(event.ip)
            nxt, f = observe_spray(window or SprayWindow(), event, params)
            if nxt.attempts or nxt.sprayers:
                self.spray[event.ip] = nxt
            if f is not None:
                found.append(f)
        if event.kind == "mail_access" and event.app_id and params.runs("mail_bulk_access"):
            mw = self.mail.get(event.app_id)
            nmw, f = observe_mail_access(mw or MailAccessWindow(), event, params)
            if nmw.reads or nmw.reported:
                self.mail[event.app_id] = nmw
            if f is not None:
                found.append(f)
        return found

    def sprayer(self, ip: str | None) -> tuple[datetime, int] | None:
        """When and for how many accounts this address was caught spraying, if it was."""
        window = self.spray.get(ip) if ip else None
        return window.sprayer(ip) if window is not None and ip else None

    def prune(self, now: datetime, params: Params) -> None:
        """Age out what no detector will read again (attempts past the spray window, sprayers past their
        memory, reads past the bulk window) and drop empty keys: the state stays as small as its windows,
        however many addresses and apps the tenant has seen."""
        attempts_from, sprayers_from = now - params.spray_window, now - params.spray_memory
        for ip, w in list(self.spray.items()):
            attempts = tuple(a for a in w.attempts if a.at >= attempts_from)
            sprayers = tuple(x for x in w.sprayers if x[1] >= sprayers_from)
            if not attempts and not sprayers:
                del self.spray[ip]
            elif len(attempts) != len(w.attempts) or len(sprayers) != len(w.sprayers):
                self.spray[ip] = SprayWindow(attempts=attempts, sprayers=sprayers)
        reads_from = now - params.mail_bulk_window
        for app, mw in list(self.mail.items()):
            reads = tuple(r for r in mw.reads if r.at >= reads_from)
            reported = tuple(x for x in mw.reported if x[1] >= reads_from)
            if not reads and not reported:
                del self.mail[app]
            elif len(reads) != len(mw.reads) or len(reported) != len(mw.reported):
                self.mail[app] = MailAccessWindow(reads=reads, reported=reported)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the same per-window shape as fleet_to_dict, keyed by address and app."""
        return {
            "version": 2,
            "spray": {ip: fleet_to_dict(Fleet(spray=w))["spray"] for ip, w in self.spray.items()},
            "mail": {app: fleet_to_dict(Fleet(mail=w))["mail"] for app, w in self.mail.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TenantFleet:
        """Reads to_dict's form, and the single-window form of fleet_to_dict (split by key)."""
        if d.get("version") != 2:
            return cls.from_fleet(fleet_from_dict(d))
        spray = {ip: fleet_from_dict({"spray": w}).spray for ip, w in (d.get("spray") or {}).items()}
        mail = {app: fleet_from_dict({"mail": w}).mail for app, w in (d.get("mail") or {}).items()}
        return cls(spray, mail)

    @classmethod
    def from_fleet(cls, fleet: Fleet) -> TenantFleet:
        out = cls()
        for ip in {a.ip for a in fleet.spray.attempts} | {s[0] for s in fleet.spray.sprayers}:
            out.spray[ip] = SprayWindow(
                attempts=tuple(a for a in fleet.spray.attempts if a.ip == ip),
                sprayers=tuple(s for s in fleet.spray.sprayers if s[0] == ip),
            )
        for app in {r.app for r in fleet.mail.reads} | {a for a, _ in fleet.mail.reported}:
            out.mail[app] = MailAccessWindow(
                reads=tuple(r for r in fleet.mail.reads if r.app == app),
                reported=tuple(x for x in fleet.mail.reported if x[0] == app),
            )
        return out
