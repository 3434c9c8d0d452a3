"""risky_ip: activity from an address the provider flags, the operator lists, or a hosting network.

Sources: Entra's own risk types on the sign-in (anonymizedIPAddress, maliciousIPAddress… —
Sigma's Identity Protection rules, detections.md A3); the operator's threat-intel networks and Tor
exit list (passed in through Params; this module reads no file); cloud and VPS autonomous systems,
which Elastic's impossible-travel rules name as where VPN and VDI traffic comes from (A1).
Failed sign-ins are left to password_spray: an address that never got in is not this user's case.
"""

from __future__ import annotations

from bot.detect import Params
from bot.detect.common import finding, from_own_network, within
from bot.model import EVENT_KINDS, Event, Finding, Profile, Severity

ID = "risky_ip"
# Kinds whose IP is the provider's own (risk detections, alerts) are provider_risk's to read.
SKIP_KINDS = frozenset({"risk", "alert"})
KINDS = frozenset(EVENT_KINDS) - SKIP_KINDS  # the event kinds it reads (bot.detect.run_all skips the rest)


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if event.kind in SKIP_KINDS or not event.success or (event.ip is None and event.asn is None):
        return None
    where = event.ip or f"AS{event.asn}"
    verdict: tuple[Severity, str, str] | None = None
    if event.ip and event.ip in params.tor_exits:
        verdict = (Severity.HIGH, "tor_exit", "is a Tor exit node")
    elif event.ip and params.threat_networks and within(event.ip, params.threat_networks):
        verdict = (Severity.HIGH, "threat_intel", "is on the threat-intelligence list")
    elif "malicious_ip" in event.flags:
        verdict = (Severity.HIGH, "provider_malicious", "Microsoft flags as a malicious or risky address")
    elif "anonymizer" in event.flags:
        verdict = (Severity.MEDIUM, "provider_anonymizer", "Microsoft flags as an anonymising proxy or VPN")
    elif event.asn is not None and event.asn in params.hosting_asns and not from_own_network(event, params):
        verdict = (Severity.MEDIUM, "hosting", f"belongs to a hosting provider (AS{event.asn}), not a home or office")
    if verdict is None:
        return None
    severity, why, sentence = verdict
    action = "Signed in" if event.kind == "sign_in" else f"{event.operation or event.kind} came"
    return finding(
        ID,
        event,
        severity,
        f"{action} from {where}, which {sentence}",
        (("ip", event.ip), ("asn", event.asn), ("why", why)),
    )
