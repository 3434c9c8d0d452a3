"""new_device: a successful interactive sign-in from a device this user has not used.

The device is Entra's deviceId when the device is registered, else its operating system and
browser. New-terms logic with the 7-day warm-up of Elastic's new-terms rules (detections.md A12,
F10); low on its own, because people replace laptops and phones.
"""

from __future__ import annotations

from bot.detect import Params
from bot.detect.common import clip, finding, is_successful_sign_in, last_seen, usual, warmed_up
from bot.detect.profile import device_key
from bot.model import Event, Finding, Profile, Severity

ID = "new_device"
KINDS = frozenset({"sign_in"})  # the event kinds it reads (bot.detect.run_all skips the rest)


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if not is_successful_sign_in(event) or not event.interactive or profile is None:
        return None
    key = device_key(event)
    if key is None or not warmed_up(profile, event, params.baseline_warmup) or not profile.devices:
        return None
    if last_seen(profile.devices, key) is not None:
        return None
    label = clip(event.device or key, 60)
    known = usual(profile.devices)
    return finding(
        ID,
        event,
        Severity.LOW,
        f"First sign-in from the device {label}; this user usually signs in from {known}",
        (("device", label), ("usual_devices", known), ("user_agent", event.user_agent)),
    )
