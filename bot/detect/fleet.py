"""Cross-user detection state: what one tenant's users look like together. Pure.

`password_spray` (one address failing for many accounts) and the cross-mailbox half of
`mail_bulk_access` (one app reading many mailboxes) cannot be seen from one user's profile. Their
state is this value: the caller keeps one Fleet per tenant, passes it in with every event in
event-time order and keeps what comes back. It is bounded by the detectors' windows and caps.

    fleet, more = observe_fleet(fleet, event, params)   # after run_all(event, profile, params)
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, KeysView
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Generic, TypeVar

from bot.detect import Params
from bot.detect.mail_bulk_access import (
    MailAccessWindow,
    MailRead,
    api_read,
    judge_mail_access,
    mailbox_read,
    observe_mail_access,
)
from bot.detect.password_spray import Attempt, SprayWindow, counts_toward_spray, judge_spray, observe_spray
from bot.model import Event, Finding

K = TypeVar("K", bound=Hashable)


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


def _windows(d: dict[str, Any], part: str) -> list[tuple[str, Any]]:
    return list((d.get(part) or {}).items())


class Sightings(Generic[K]):
    """Who was seen within a sliding time window, and how often: a heap of (when, who), oldest first,
    and a count per member. Adding, and expiring what fell out of the window, cost O(log n) per sighting
    however many the window holds; the distinct members are the count's keys. Sightings may arrive out
    of order: the heap still expires exactly those older than the horizon."""

    __slots__ = ("_count", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, K]] = []
        self._count: dict[K, int] = {}

    def add(self, at: datetime, member: K) -> None:
        heapq.heappush(self._heap, (at, member))
        self._count[member] = self._count.get(member, 0) + 1

    def expire(self, horizon: datetime) -> None:
        """Forget sightings older than `horizon` (those at the horizon stay, as in the reference windows)."""
        heap = self._heap
        while heap and heap[0][0] < horizon:
            self._forget_oldest()

    def oldest(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    def _forget_oldest(self) -> None:
        _, member = heapq.heappop(self._heap)
        left = self._count[member] - 1
        if left:
            self._count[member] = left
        else:
            del self._count[member]

    def drop_oldest(self) -> None:
        if self._heap:
            self._forget_oldest()

    def members(self) -> KeysView[K]:
        return self._count.keys()

    def sightings(self) -> list[tuple[datetime, K]]:
        return sorted(self._heap)

    def __len__(self) -> int:
        return len(self._heap)


class AddressWindow:
    """One address's recent sign-in attempts (accounts failing, accounts succeeding) and its sprayer
    record (when it was last caught, for how many accounts)."""

    __slots__ = ("failed", "sprayer", "succeeded")

    def __init__(self) -> None:
        self.failed: Sightings[str] = Sightings()
        self.succeeded: Sightings[str] = Sightings()
        self.sprayer: tuple[datetime, int] | None = None

    def expire(self, attempts_from: datetime, sprayer_from: datetime) -> None:
        self.failed.expire(attempts_from)
        self.succeeded.expire(attempts_from)
        if self.sprayer is not None and self.sprayer[0] < sprayer_from:
            self.sprayer = None

    def cap(self, limit: int) -> None:
        """At most `limit` attempts, the oldest going first (the reference window's cap)."""
        while len(self.failed) + len(self.succeeded) > max(0, limit):
            f, s = self.failed.oldest(), self.succeeded.oldest()
            (self.failed if s is None or (f is not None and f <= s) else self.succeeded).drop_oldest()

    def empty(self) -> bool:
        return not self.failed and not self.succeeded and self.sprayer is None

    def state(self, ip: str) -> SprayWindow:
        """The same window as the reference value (attempts oldest first)."""
        attempts = [Attempt(at, ip, user, False) for at, user in self.failed.sightings()]
        attempts += [Attempt(at, ip, user, True) for at, user in self.succeeded.sightings()]
        return SprayWindow(
            attempts=tuple(sorted(attempts, key=lambda a: a.at)),
            sprayers=((ip, *self.sprayer),) if self.sprayer is not None else (),
        )

    @classmethod
    def of(cls, window: SprayWindow, ip: str) -> AddressWindow:
        out = cls()
        for a in window.attempts:
            if a.ip == ip:
                (out.succeeded if a.ok else out.failed).add(a.at, a.user)
        for s_ip, at, users in window.sprayers:
            if s_ip == ip and (out.sprayer is None or at >= out.sprayer[0]):
                out.sprayer = (at, users)
        return out


class AppWindow:
    """One client app's recent API mailbox reads, and when it was last reported."""

    __slots__ = ("reads", "reported")

    def __init__(self) -> None:
        self.reads: Sightings[str] = Sightings()
        self.reported: datetime | None = None

    def expire(self, horizon: datetime) -> None:
        self.reads.expire(horizon)
        if self.reported is not None and self.reported < horizon:
            self.reported = None

    def empty(self) -> bool:
        return not self.reads and self.reported is None

    def state(self, app: str) -> MailAccessWindow:
        return MailAccessWindow(
            reads=tuple(MailRead(at, app, mailbox) for at, mailbox in self.reads.sightings()),
            reported=((app, self.reported),) if self.reported is not None else (),
        )

    @classmethod
    def of(cls, window: MailAccessWindow, app: str) -> AppWindow:
        out = cls()
        for r in window.reads:
            if r.app == app:
                out.reads.add(r.at, r.mailbox)
        for a, at in window.reported:
            if a == app and (out.reported is None or at > out.reported):
                out.reported = at
        return out


class TenantFleet:
    """One tenant's cross-user state, indexed per address and per app, so an event costs O(log n) of its
    own address's or app's window, not a pass over everything that address or app did in it.

    An office's NAT address carries thousands of sign-ins per 20 minutes and a backup app reads
    thousands of mailboxes; the reference windows (`observe_spray`, `observe_mail_access`) filter
    and rebuild their whole tuple on every event, which made each such event cost what the window
    holds. The decisions are the same pure functions (`judge_spray`, `judge_mail_access`) over the same
    counts, so this index finds what `observe_fleet` finds on the same events (tested equal). It is the
    caller's mutable state, owned by one ingest at a time, and serializes to the reference form.
    """

    __slots__ = ("mail", "spray")

    def __init__(self, spray: dict[str, AddressWindow] | None = None, mail: dict[str, AppWindow] | None = None) -> None:
        self.spray: dict[str, AddressWindow] = spray or {}
        self.mail: dict[str, AppWindow] = mail or {}

    def observe(self, event: Event, params: Params) -> list[Finding]:
        found: list[Finding] = []
        if event.ip is not None and params.runs("password_spray") and counts_toward_spray(event):
            f = self._observe_spray(event, event.ip, params)
            if f is not None:
                found.append(f)
        if event.kind == "mail_access" and params.runs("mail_bulk_access"):
            api = api_read(event)
            if api is not None and event.app_id is not None:
                f = self._observe_mail(event, event.app_id, api, params)
                if f is not None:
                    found.append(f)
        return found

    def _observe_spray(self, event: Event, ip: str, params: Params) -> Finding | None:
        w = self.spray.get(ip)
        if w is None:
            w = self.spray[ip] = AddressWindow()
        at = event.occurred_at
        w.expire(at - params.spray_window, at - params.spray_memory)
        (w.succeeded if event.success else w.failed).add(at, event.user_principal)
        w.cap(params.spray_max_attempts)
        if event.success:
            record, f = judge_spray(event, w.sprayer, (), 0, params)
        else:
            record, f = judge_spray(event, w.sprayer, w.failed.members(), len(w.succeeded.members()), params)
        if record is not None:
            w.sprayer = record
        if w.empty():
            del self.spray[ip]
        return f

    def _observe_mail(self, event: Event, app: str, api: str, params: Params) -> Finding | None:
        w = self.mail.get(app)
        if w is None:
            w = self.mail[app] = AppWindow()
        w.expire(event.occurred_at - params.mail_bulk_window)
        w.reads.add(event.occurred_at, mailbox_read(event))
        while len(w.reads) > max(0, params.mail_bulk_max_seen):
            w.reads.drop_oldest()
        f = judge_mail_access(event, api, w.reads.members(), w.reported is not None, params)
        if f is not None:
            w.reported = event.occurred_at
        if w.empty():
            del self.mail[app]
        return f

    def sprayer(self, ip: str | None) -> tuple[datetime, int] | None:
        """When and for how many accounts this address was caught spraying, if it was."""
        window = self.spray.get(ip) if ip else None
        return window.sprayer if window is not None else None

    def failing_accounts(self, ip: str) -> tuple[str, ...]:
        """The accounts that failed from this address within the spray window, sorted."""
        window = self.spray.get(ip)
        return tuple(sorted(window.failed.members())) if window is not None else ()

    def prune(self, now: datetime, params: Params) -> None:
        """Age out what no detector will read again (attempts past the spray window, sprayers past their
        memory, reads past the bulk window) and drop empty keys: the state stays as small as its windows,
        however many addresses and apps the tenant has seen."""
        attempts_from, sprayers_from = now - params.spray_window, now - params.spray_memory
        for ip, w in list(self.spray.items()):
            w.expire(attempts_from, sprayers_from)
            if w.empty():
                del self.spray[ip]
        reads_from = now - params.mail_bulk_window
        for app, mw in list(self.mail.items()):
            mw.expire(reads_from)
            if mw.empty():
                del self.mail[app]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the same per-window shape as fleet_to_dict, keyed by address and app."""
        return {
            "version": 2,
            "spray": {ip: fleet_to_dict(Fleet(spray=w.state(ip)))["spray"] for ip, w in self.spray.items()},
            "mail": {app: fleet_to_dict(Fleet(mail=w.state(app)))["mail"] for app, w in self.mail.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TenantFleet:
        """Reads to_dict's form, and the single-window form of fleet_to_dict (split by key)."""
        if d.get("version") != 2:
            return cls.from_fleet(fleet_from_dict(d))
        spray = {
            ip: AddressWindow.of(fleet_from_dict({"spray": w}).spray, ip) for ip, w in (d.get("spray") or {}).items()
        }
        mail = {app: AppWindow.of(fleet_from_dict({"mail": w}).mail, app) for app, w in (d.get("mail") or {}).items()}
        return cls(spray, mail)

    @classmethod
    def from_fleet(cls, fleet: Fleet) -> TenantFleet:
        out = cls()
        for ip in {a.ip for a in fleet.spray.attempts} | {s[0] for s in fleet.spray.sprayers}:
            out.spray[ip] = AddressWindow.of(fleet.spray, ip)
        for app in {r.app for r in fleet.mail.reads} | {a for a, _ in fleet.mail.reported}:
            out.mail[app] = AppWindow.of(fleet.mail, app)
        return out
