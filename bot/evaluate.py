"""`mailwarden eval DIR`: precision and recall of acting cases against a scenario's labels.

Replays every record file in DIR (what `mailwarden scenario` wrote) through the real pipeline
(bot.replay) and reads `labels.json`. A case *acts* when its decision is anything but `record`: it
asks the user, goes to the SOC, pages or contains. Then:

- an attack is caught when an acting case holds at least one of the attack's events; recall per
  category (and overall) is caught ÷ attacks;
- precision per detector is the share of acting cases with that detector's finding that hold an
  attack's event (overall: all acting cases);
- prompts per 1,000 users per day counts the cases that ask a user (`ask_user`) and hold no
  attack's event: the questions ordinary traffic costs employees;
- SOC reviews per 1,000 users per day counts the cases holding no attack's event that reach the SOC
  all the same: those policy sends there (or pages, or contains) and the high or critical prompts,
  which the employee's "Yes" cannot close: the alert queue ordinary traffic costs the SOC (no target
  in issue 3; printed so that a change that moves the burden from employees to analysts shows).

It runs with --config when given, else with the scenario's own settings (DIR/mailwarden.toml: the mail
apps its organisations trust), else $MAILWARDEN_CONFIG or the defaults.

Targets (issue 3): recall >= 0.97 in every category; <= 0.5 prompts per 1,000 users per day.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bot.config import load_settings
from bot.detect.policy import yes_closes
from bot.model import Case, Decision
from bot.replay import UnreadableInput, quiet_logs, run_replay

RECALL_TARGET = 0.97
PROMPT_TARGET = 0.5  # per 1,000 users per day


@dataclass
class Evaluation:
    users: int
    days: int
    records: int
    rejected: int
    cases: int
    acting: int
    acting_on_attacks: int
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)
    detectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    prompts: int = 0
    false_prompts: list[dict[str, Any]] = field(default_factory=list)
    soc_reviews: int = 0  # ordinary-traffic cases that reach the SOC (see the module's docstring)
    missed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def recall(self) -> float:
        total = sum(c["attacks"] for c in self.categories.values())
        return sum(c["caught"] for c in self.categories.values()) / total if total else 1.0

    @property
    def precision(self) -> float:
        return self.acting_on_attacks / self.acting if self.acting else 1.0

    @property
    def prompts_per_1000_per_day(self) -> float:
        return self.prompts / (self.users * self.days / 1000) if self.users and self.days else 0.0

    @property
    def soc_reviews_per_1000_per_day(self) -> float:
        return self.soc_reviews / (self.users * self.days / 1000) if self.users and self.days else 0.0

    @property
    def targets_met(self) -> bool:
        return (
            all(c["recall"] >= RECALL_TARGET for c in self.categories.values())
            and self.prompts_per_1000_per_day <= PROMPT_TARGET
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "days": self.days,
            "records": self.records,
            "rejected": self.rejected,
            "cases": self.cases,
            "acting_cases": self.acting,
            "overall": {"precision": round(self.precision, 4), "recall": round(self.recall, 4)},
            "categories": self.categories,
            "detectors": self.detectors,
            "prompts": {
                "count": self.prompts,
                "per_1000_users_per_day": round(self.prompts_per_1000_per_day, 4),
            },
            "soc_reviews": {
                "count": self.soc_reviews,
                "per_1000_users_per_day": round(self.soc_reviews_per_1000_per_day, 4),
            },
            "targets": {"recall": RECALL_TARGET, "prompts_per_1000_users_per_day": PROMPT_TARGET},
            "targets_met": self.targets_met,
            "missed": self.missed,
            "false_prompts": self.false_prompts[:20],
        }


def score(cases: list[Case], labels: dict[str, Any], records: int = 0, rejected: int = 0) -> Evaluation:
    attacks = labels["attacks"]
    attack_of: dict[str, str] = {eid: a["id"] for a in attacks for eid in a["events"]}
    acting = [c for c in cases if c.decision is not Decision.RECORD]
    caught: set[str] = set()
    per_detector: dict[str, list[int]] = {}
    on_attacks = prompts = 0
    ev = Evaluation(
        users=int(labels["users"]),
        days=int(labels["days"]),
        records=records,
        rejected=rejected,
        cases=len(cases),
        acting=len(acting),
        acting_on_attacks=0,
    )
    for c in acting:
        touched = {attack_of[e.event_id] for e in c.events if e.event_id in attack_of}
        caught |= touched
        on_attacks += bool(touched)
        for d in c.detectors:
            hit = per_detector.setdefault(d, [0, 0])
            hit[0] += 1
            hit[1] += bool(touched)
        if not touched and reaches_soc(c):
            ev.soc_reviews += 1
        if c.decision is Decision.ASK_USER and not touched:
            prompts += 1
            ev.false_prompts.append(
                {
                    "case": c.id,
                    "user": c.user_principal,
                    "detectors": list(c.detectors),
                    "reasons": [f.reason for f in c.findings][:3],
                }
            )
    ev.acting_on_attacks = on_attacks
    ev.prompts = prompts
    for a in attacks:
        cat = ev.categories.setdefault(a["category"], {"attacks": 0, "caught": 0, "recall": 0.0})
        cat["attacks"] += 1
        if a["id"] in caught:
            cat["caught"] += 1
        else:
            ev.missed.append({"id": a["id"], "category": a["category"], "users": a["users"][:3]})
    for cat in ev.categories.values():
        cat["recall"] = round(cat["caught"] / cat["attacks"], 4) if cat["attacks"] else 1.0
    ev.detectors = {
        d: {"cases": n, "on_attacks": t, "precision": round(t / n, 4)} for d, (n, t) in sorted(per_detector.items())
    }
    return ev


def reaches_soc(case: Case) -> bool:
    """Whether the SOC sees the case whatever the employee answers: policy sends it there (or pages or
    contains), or it asks the employee at a severity whose "Yes" does not close it."""
    if case.decision is Decision.ASK_USER:
        return not yes_closes(case.severity)
    return case.decision is not Decision.RECORD


def record_files(directory: Path) -> list[str]:
    return sorted(str(p) for p in directory.iterdir() if p.suffix in (".json", ".ndjson") and p.name != "labels.json")


# The settings of the scenario's own organisations, written beside its records by `mailwarden scenario`
SCENARIO_CONFIG = "mailwarden.toml"


def config_for(directory: Path, config: str | None) -> str | None:
    """The configuration an evaluation runs with: --config when given, else the scenario's own
    (its organisations' trusted apps, say), else $MAILWARDEN_CONFIG."""
    if config:
        return config
    own = directory / SCENARIO_CONFIG
    return str(own) if own.is_file() else None


async def evaluate(directory: Path, config: str | None = None, errors: Any = None) -> Evaluation:
    labels = orjson.loads((directory / "labels.json").read_bytes())
    settings = load_settings(toml_path=config_for(directory, config))
    result = await run_replay(record_files(directory), "auto", settings, errors)
    return score(result.cases, labels, result.records, result.rejected)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", metavar="DIR", help="a directory written by `mailwarden scenario`")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--config",
        default=argparse.SUPPRESS,  # `mailwarden --config X eval DIR` means the same; neither overrides the other
        help="TOML configuration to evaluate with "
        "(default: the scenario's DIR/mailwarden.toml, else $MAILWARDEN_CONFIG)",
    )


def run(args: argparse.Namespace) -> int:
    with quiet_logs():  # findings and cases are the output here, not log lines
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if not (directory / "labels.json").is_file():
        print(
            f"mailwarden eval: {directory}/labels.json not found (write one with `mailwarden scenario`)",
            file=sys.stderr,
        )
        return 2
    try:
        ev = asyncio.run(evaluate(directory, getattr(args, "config", None), sys.stderr))
    except UnreadableInput as exc:
        print(f"mailwarden eval: {exc}", file=sys.stderr)
        return 2
    config = config_for(directory, getattr(args, "config", None)) or os.environ.get("MAILWARDEN_CONFIG")
    if args.json:
        print(orjson.dumps({**ev.as_json(), "config": config}).decode())
        return 0
    print(
        f"{ev.users} users, {ev.days} days: {ev.records} records ({ev.rejected} rejected), {ev.cases} cases, "
        f"{ev.acting} acting"
    )
    print(f"configuration: {config or 'the defaults'}")
    print(f"\n{'category':<22}{'attacks':>8}{'caught':>8}{'recall':>8}")
    for name, c in sorted(ev.categories.items()):
        mark = "" if c["recall"] >= RECALL_TARGET else "  < target"
        print(f"{name:<22}{c['attacks']:>8}{c['caught']:>8}{c['recall']:>8.2f}{mark}")
    print(f"\n{'detector':<22}{'cases':>8}{'attack':>8}{'precision':>10}")
    for name, d in ev.detectors.items():
        print(f"{name:<22}{d['cases']:>8}{d['on_attacks']:>8}{d['precision']:>10.2f}")
    print(f"\noverall precision {ev.precision:.3f}, recall {ev.recall:.3f}")
    print(
        f"prompts on ordinary traffic: {ev.prompts} = {ev.prompts_per_1000_per_day:.3f} per 1,000 users per day "
        f"(target <= {PROMPT_TARGET})"
    )
    print(
        f"SOC reviews on ordinary traffic: {ev.soc_reviews} = {ev.soc_reviews_per_1000_per_day:.3f} per 1,000 users "
        "per day (cases the SOC sees whatever the employee answers; no target)"
    )
    print(f"targets {'met' if ev.targets_met else 'NOT met'}")
    return 0
