"""Plain data <-> JSON-ready dicts for what the store keeps in `data` columns. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import orjson
from msgspec.structs import fields

from bot.model import (
    Approval,
    Case,
    CaseState,
    Decision,
    Event,
    FailedAttempt,
    Finding,
    HistoryEntry,
    Located,
    MessageRef,
    Profile,
    Severity,
)


def _t(v: datetime | None) -> str | None:
    return v.isoformat() if v else None


def _pt(v: Any) -> datetime | None:
    return datetime.fromisoformat(v) if v else None


def _ptr(v: Any) -> datetime:
    out = _pt(v)
    if out is None:
        raise ValueError("required timestamp missing")
    return out


# Event fields that are tuples in the model and lists in JSON; `parameters` holds pairs.
_TUPLE_FIELDS = frozenset({"flags", "risk_types", "scopes"})
_EVENT_FIELDS = tuple(f.name for f in fields(Event))
_EVENT_FIELD_SET = frozenset(_EVENT_FIELDS)


def event_to_dict(e: Event) -> dict[str, Any]:
    """Every Event field; tuples become lists, the timestamp ISO 8601."""
    out: dict[str, Any] = {}
    for name in _EVENT_FIELDS:
        value = getattr(e, name)
        if name == "occurred_at":
            value = _t(value)
        elif name == "parameters":
            value = [[k, v] for k, v in value]
        elif name in _TUPLE_FIELDS:
            value = list(value)
        out[name] = value
    return out


def event_from_dict(d: dict[str, Any]) -> Event:
    """The inverse of event_to_dict. Events stored before a field existed read it as its default;
    keys this version does not know are ignored (a newer writer, an older reader)."""
    kw: dict[str, Any] = {k: v for k, v in d.items() if k in _EVENT_FIELD_SET}
    kw["occurred_at"] = _ptr(d["occurred_at"])
    for name in _TUPLE_FIELDS:
        if name in kw:
            kw[name] = tuple(str(x) for x in kw[name] or ())
    if "parameters" in kw:
        kw["parameters"] = tuple((str(k), str(v)) for k, v in kw["parameters"] or ())
    return Event(**kw)


def finding_to_dict(f: Finding) -> dict[str, Any]:
    return {
        "detector": f.detector,
        "severity": f.severity.label,
        "reason": f.reason,
        "event_id": f.event_id,
        "occurred_at": _t(f.occurred_at),
        "evidence": [list(kv) for kv in f.evidence],
    }


def finding_from_dict(d: dict[str, Any]) -> Finding:
    return Finding(
        detector=d["detector"],
        severity=Severity.parse(d["severity"]),
        reason=d["reason"],
        event_id=d["event_id"],
        occurred_at=_ptr(d["occurred_at"]),
        evidence=tuple((str(k), str(v)) for k, v in d.get("evidence", [])),
    )


def _utc(v: datetime) -> str:
    """A timestamp as a stored profile spells it: ISO 8601, `Z` for UTC (msgspec's RFC 3339)."""
    text = v.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _seen(entries: tuple[tuple[Any, datetime], ...]) -> list[list[Any]]:
    return [[k, _utc(t)] for k, t in entries]


def _unseen(rows: Any, cast: type = str) -> tuple[tuple[Any, datetime], ...]:
    return tuple((cast(k), _ptr(t)) for k, t in rows or [])


def profile_to_dict(p: Profile) -> dict[str, Any]:
    """The stored profile format spelled out (`profile_json` writes exactly this, from the struct)."""
    return {
        "user_principal": p.user_principal,
        "first_seen": _utc(p.first_seen),
        "countries": _seen(p.countries),
        "recent_failures": [[_utc(f.at), f.ip] for f in p.recent_failures],
        "sign_ins": p.sign_ins,
        "asns": _seen(p.asns),
        "devices": _seen(p.devices),
        "user_agents": _seen(p.user_agents),
        "client_apps": _seen(p.client_apps),
        "known_ips": _seen(p.known_ips),
        "granted_apps": _seen(p.granted_apps),
        "hours": list(p.hours),
        "recent_locations": [
            [_utc(loc.at), loc.country, loc.latitude, loc.longitude, loc.ip] for loc in p.recent_locations
        ],
        "tz": p.tz,
        "places": _seen(p.places),
    }


_PROFILE_ENCODER = msgspec.json.Encoder()
_PROFILE_DECODER = msgspec.json.Decoder(Profile)


def profile_json(p: Profile) -> bytes:
    """`profile_to_dict(p)` as JSON, written by msgspec straight from the struct (FailedAttempt and
    Located are array-like): profiles are written back after every page, and building the dict cost
    more than detecting."""
    return _PROFILE_ENCODER.encode(p)


def profile_from_json(data: bytes | str) -> Profile:
    """A stored profile. The struct's own decoder reads what `profile_json` writes in a few µs (the
    dict path takes about 28: it matters where profiles are read on every poll, as on PostgreSQL);
    anything it refuses (a shape from an older release, odd types) takes the tolerant dict path."""
    try:
        p = _PROFILE_DECODER.decode(data)
    except msgspec.DecodeError:  # ValidationError included
        return profile_from_dict(orjson.loads(data))
    # never below the hours' total: detection relies on sign_ins bounding it (bot.detect.profile.add_hour)
    floor = sum(p.hours)
    return msgspec.structs.replace(p, sign_ins=floor) if p.sign_ins < floor else p


def profile_from_dict(d: dict[str, Any]) -> Profile:
    """Profiles stored before a key existed read it as empty (every field after `sign_ins` is optional)."""
    return Profile(
        user_principal=d["user_principal"],
        first_seen=_ptr(d["first_seen"]),
        # never below the hours' total: detection relies on sign_ins bounding it (bot.detect.profile.add_hour)
        sign_ins=max(int(d.get("sign_ins", 0)), sum(int(h) for h in d.get("hours") or ())),
        countries=tuple((c, _ptr(t)) for c, t in d.get("countries", [])),
        recent_failures=tuple(FailedAttempt(at=_ptr(t), ip=ip) for t, ip in d.get("recent_failures", [])),
        asns=_unseen(d.get("asns"), int),
        devices=_unseen(d.get("devices")),
        user_agents=_unseen(d.get("user_agents")),
        client_apps=_unseen(d.get("client_apps")),
        known_ips=_unseen(d.get("known_ips")),
        granted_apps=_unseen(d.get("granted_apps")),
        hours=tuple(int(h) for h in d.get("hours") or ()),
        recent_locations=tuple(
            Located(at=_ptr(at), country=c, latitude=lat, longitude=lon, ip=ip)
            for at, c, lat, lon, ip in d.get("recent_locations") or []
        ),
        tz=d.get("tz"),
        places=_unseen(d.get("places")),
    )


def _ref(r: MessageRef | None) -> list[str] | None:
    return [r.channel, r.ts] if r else None


def _pref(v: Any) -> MessageRef | None:
    return MessageRef(channel=v[0], ts=v[1]) if v else None


def case_data(c: Case) -> dict[str, Any]:
    """The part of a case kept as JSON; the rest lives in indexed columns."""
    return {
        "decision": c.decision.value,
        "user_id": c.user_id,
        "user_display": c.user_display,
        "findings": [finding_to_dict(f) for f in c.findings],
        "events": [event_to_dict(e) for e in c.events],
        "deadline_kind": c.deadline_kind,
        "slack_user_id": c.slack_user_id,
        "user_card": _ref(c.user_card),
        "soc_card": _ref(c.soc_card),
        "user_answer": c.user_answer,
        "history": [[_t(h.at), h.actor, h.text] for h in c.history],
        "state_since": _t(c.state_since),
        "assignee": c.assignee,
        "paged": c.paged,
        "slack_tz": c.slack_tz,
        "approvals": [[a.actor, _t(a.at), list(a.actions), a.reason] for a in c.approvals],
        "plan": list(c.plan),
        "plan_notes": [list(n) for n in c.plan_notes],
        "needs_two_approvers": c.needs_two_approvers,
        "reminders": list(c.reminders),
        "users": list(c.users),
    }


def case_from_columns(cols: dict[str, Any], data: dict[str, Any]) -> Case:
    return Case(
        id=cols["id"],
        tenant=cols["tenant"],
        user_principal=cols["user_principal"],
        state=CaseState(cols["state"]),
        severity=Severity.parse(cols["severity"]),
        decision=Decision(data["decision"]),
        opened_at=cols["opened_at"],
        updated_at=cols["updated_at"],
        last_event_at=cols["last_event_at"],
        deadline_at=cols["deadline_at"],
        version=cols["version"],
        user_id=data.get("user_id"),
        user_display=data.get("user_display", ""),
        findings=tuple(finding_from_dict(f) for f in data.get("findings", [])),
        events=tuple(event_from_dict(e) for e in data.get("events", [])),
        deadline_kind=data.get("deadline_kind"),
        slack_user_id=data.get("slack_user_id"),
        user_card=_pref(data.get("user_card")),
        soc_card=_pref(data.get("soc_card")),
        user_answer=data.get("user_answer"),
        history=tuple(HistoryEntry(at=_ptr(t), actor=a, text=x) for t, a, x in data.get("history", [])),
        state_since=_pt(data.get("state_since")),
        assignee=data.get("assignee"),
        paged=bool(data.get("paged")),
        slack_tz=data.get("slack_tz"),
        approvals=tuple(
            Approval(actor=a, at=_ptr(t), actions=tuple(x), reason=r) for a, t, x, r in data.get("approvals", [])
        ),
        plan=tuple(data.get("plan", [])),
        plan_notes=tuple((str(a), str(n)) for a, n in data.get("plan_notes", [])),
        needs_two_approvers=bool(data.get("needs_two_approvers")),
        reminders=tuple(data.get("reminders", [])),
        users=tuple(data.get("users", [])),
    )
