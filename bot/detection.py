"""The shell side of detection: Params, Policy and the operator's threat lists, from Settings.

The detectors read no file (bot/detect is pure); this module reads the threat-intelligence and Tor
exit lists once, at start-up, and turns every detection setting into the values the core takes.
Every problem (unknown detector id, missing file, bad line) is reported at once as a ConfigError.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

from bot.config import Settings
from bot.detect import IPNetwork, Params, detector_ids
from bot.detect.policy import DEFAULT_BY_DETECTOR, DEFAULT_BY_SEVERITY, Policy
from bot.errors import ConfigError
from bot.model import Decision, Severity


def read_list(path: str, problems: list[str], what: str) -> list[tuple[int, str]]:
    """(line number, entry) for every non-empty, non-comment line; problems appended, never raised."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(f"{what} file {path}: {exc.strerror or type(exc).__name__}")
        return []
    except UnicodeDecodeError:
        problems.append(f"{what} file {path}: not UTF-8 text")
        return []
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.append((n, entry))
    return out


def load_networks(paths: list[str], problems: list[str]) -> tuple[IPNetwork, ...]:
    nets: list[IPNetwork] = []
    for path in paths:
        for n, entry in read_list(path, problems, "threat-intel"):
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                problems.append(f"threat-intel file {path}, line {n}: not an IP address or CIDR network")
    return tuple(dict.fromkeys(nets))


def own_networks(entries: list[str], problems: list[str]) -> tuple[IPNetwork, ...]:
    nets: list[IPNetwork] = []
    for n, entry in enumerate(entries, 1):
        try:
            nets.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:  # by position: configuration errors never echo a value (a secret typed there)
            problems.append(f"MAILWARDEN_OWN_NETWORKS: entry {n} is not an IP address or CIDR network")
    return tuple(dict.fromkeys(nets))


def load_addresses(paths: list[str], problems: list[str]) -> frozenset[str]:
    found: set[str] = set()
    for path in paths:
        for n, entry in read_list(path, problems, "Tor exit"):
            try:
                found.add(str(ipaddress.ip_address(entry)))
            except ValueError:
                problems.append(f"Tor exit file {path}, line {n}: not an IP address")
    return frozenset(found)


def detection_params(s: Settings) -> Params:
    """Every detection setting as Params; ConfigError naming each problem."""
    problems: list[str] = []
    known = set(detector_ids())
    unknown = sorted(set(s.detectors) - known)
    if unknown:
        problems.append(
            f"MAILWARDEN_DETECTORS: unknown detector(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    networks = load_networks(s.threat_intel_files, problems)
    own = own_networks(s.own_networks, problems)
    tor = load_addresses(s.tor_exit_files, problems)
    problems += [f"MAILWARDEN_POLICY_DETECTORS: unknown detector {d}" for d in sorted(set(s.policy_detectors) - known)]
    if problems:
        raise ConfigError(problems)
    return Params(
        enabled=frozenset(s.detectors) if s.detectors else None,
        failed_then_success_min_failures=s.failed_then_success_min_failures,
        failed_then_success_window=timedelta(seconds=s.failed_then_success_window_s),
        new_country_warmup=timedelta(days=s.new_country_warmup_days),
        baseline_warmup=timedelta(days=s.baseline_warmup_days),
        own_domains=frozenset(s.own_domains),
        trusted_apps=frozenset(a.strip().lower() for a in s.trusted_mail_apps if a.strip()),
        threat_networks=networks,
        own_networks=own,
        tor_exits=tor,
    )


def detection_policy(s: Settings) -> Policy:
    return Policy(
        by_severity={**DEFAULT_BY_SEVERITY, **{Severity.parse(k): Decision(v) for k, v in s.policy_severity.items()}},
        by_detector={**DEFAULT_BY_DETECTOR, **{k: Decision(v) for k, v in s.policy_detectors.items()}},
    )
