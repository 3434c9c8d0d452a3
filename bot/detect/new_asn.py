"""new_asn: a successful sign-in from a network (autonomous system) this user has not used.

Elastic's "Google Workspace login from atypical ASN" alerts on an ASN not seen for the user in
7 days (detections.md F10, §0 item 6). A new ASN alone is common (a hotel, a phone carrier), so it
is low on its own and counts when it joins other findings. No finding during the warm-up.
"""

from __future__ import annotations

from bot.detect import Params
from bot.detect.common import finding, from_own_network, is_successful_sign_in, last_seen, usual, warmed_up
from bot.model import Event, Finding, Profile, Severity

ID = "new_asn"
KINDS = frozenset({"sign_in"})  # the event kinds it reads (bot.detect.run_all skips the rest)


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if not is_successful_sign_in(event) or event.asn is None or profile is None:
        return None
    if from_own_network(event, params):
        return None  # the organisation's own egress: its network is the organisation's, not the person's
    if not warmed_up(profile, event, params.baseline_warmup) or not profile.asns:
        return None
    if last_seen(profile.asns, event.asn) is not None:
        return None
    known = usual(profile.asns)
    origin = f" ({event.ip})" if event.ip else ""
    return finding(
        ID,
        event,
        Severity.LOW,
        f"First sign-in from network AS{event.asn}{origin}; this user usually signs in from AS {known}",
        (("asn", event.asn), ("usual_asns", known), ("ip", event.ip)),
    )
