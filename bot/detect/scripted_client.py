"""scripted_client: a script or an attack tool, not a person's mail client, got in.

User-agent lists: Elastic "AAD Graph access with suspicious User-Agent" (fasthttp, aiohttp, hound,
aadinternals, go-http-client, python*, curl/, okhttp, axios, node-fetch, go-resty, bav2ropc,
undici; detections.md B1), Sigma/Elastic AzureHound/BloodHound (B2), Elastic TeamFiltration's exact
Teams/Electron 8.5.1 string (B3), Elastic Kali365 (B4), AADInternals' MSIE 7 + Outlook 16 string
(SimuLand, B6), Sigma's hacktool list entry for ruler (B7), ROADtools' roadrecon/roadtx. Only
successes: a script that failed to sign in is password_spray's or failed_then_success's concern.
"""

from __future__ import annotations

import functools
import re

from bot.detect import Params
from bot.detect.common import clip, finding
from bot.model import EVENT_KINDS, Event, Finding, Profile, Severity

ID = "scripted_client"
KINDS = frozenset(EVENT_KINDS) - {"risk", "alert"}  # the event kinds it reads (bot.detect.run_all skips the rest)

# Offensive tooling: someone is attacking on purpose.
TOOLS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("AADInternals", re.compile(r"aadinternals", re.I)),
    ("AzureHound / BloodHound", re.compile(r"(azure|sharp|blood)hound", re.I)),
    ("ROADtools", re.compile(r"road(recon|tools|tx)", re.I)),
    ("Kali365", re.compile(r"^kali365-live/", re.I)),
    ("ruler", re.compile(r"^ruler\b", re.I)),
    (
        "TeamFiltration",
        re.compile(r"Teams/1\.3\.00\.30866 Chrome/80\.0\.3987\.165 Electron/8\.5\.1", re.I),
    ),
    ("AADInternals (spoofed Outlook)", re.compile(r"MSIE 7\.0; Windows NT 10\.0.*Microsoft Outlook 16\.0\.4266", re.I)),
)
# Generic HTTP libraries: automation, maybe a developer, never Outlook.
LIBRARIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("python", re.compile(r"^python|python-requests|python-urllib|aiohttp|httpx/", re.I)),
    ("curl", re.compile(r"curl/", re.I)),
    ("Go", re.compile(r"go-http-client|go-resty|fasthttp", re.I)),
    ("okhttp", re.compile(r"okhttp", re.I)),
    ("Node.js", re.compile(r"axios|node-fetch|undici|^node$", re.I)),
    ("PowerShell", re.compile(r"WindowsPowerShell/", re.I)),
    ("BAV2ROPC", re.compile(r"bav2ropc", re.I)),
)


# Plain substrings that every pattern above needs (lower case): almost every user agent is a browser
# or Outlook, and a few `in` tests on the lowered string cost far less than fourteen regex scans
# (the pipeline's hot path). Only a user agent holding one of them is classified.
NEEDLES = (
    "aadinternals", "hound", "road", "kali365", "ruler", "electron/8.5.1", "msie 7.0", "python", "aiohttp",
    "httpx/", "curl/", "go-http-client", "go-resty", "fasthttp", "okhttp", "axios", "node", "undici",
    "windowspowershell/", "bav2ropc",
)  # fmt: skip


@functools.lru_cache(maxsize=4096)
def classify(user_agent: str) -> tuple[Severity, str] | None:
    """Cached: a tenant has a few hundred distinct user agents and sees each one thousands of times."""
    low = user_agent.lower()
    if not any(n in low for n in NEEDLES):
        return None
    for name, pattern in TOOLS:
        if pattern.search(user_agent):
            return Severity.HIGH, name
    for name, pattern in LIBRARIES:
        if pattern.search(user_agent):
            return Severity.MEDIUM, name
    return None


def detect(event: Event, profile: Profile | None, params: Params) -> Finding | None:
    if not event.user_agent or not event.success or event.kind in ("risk", "alert"):
        return None
    verdict = classify(event.user_agent)
    if verdict is None:
        return None
    severity, tool = verdict
    what = "an attack tool" if severity is Severity.HIGH else "a script"
    # A non-interactive sign-in is a refresh token redeemed: the SOC's answer is revoking the user's
    # sessions (a stolen token outlives nothing but that), so the reason says which it was.
    if event.kind == "sign_in":
        action = "Signed in" if event.interactive else "Redeemed a sign-in token"
    else:
        action = clip(event.operation, 40) or "Acted"
    return finding(
        ID,
        event,
        severity,
        f'{action} with {what} ({tool}), user agent "{clip(event.user_agent, 60)}"',
        (("user_agent", event.user_agent), ("tool", tool), ("ip", event.ip)),
    )
