"""`mailwarden scenario`: a labelled synthetic tenant, in the providers' own wire formats.

    mailwarden scenario --users N --days D --seed S --out DIR

Two organisations share the run: one on Microsoft 365 (Entra ID sign-ins, Identity Protection risk
detections, Office 365 Management Activity records) and one on Google Workspace (Reports API login,
token and admin activities, Alert Center alerts). Ordinary life happens in each user's own time
zone: a laptop in the morning, a phone during the day, the office some days and home others, a
typo now and then (one or two failed passwords before the right one), an occasional late evening,
weekends mostly quiet, a few trips (abroad and at home, on the hotel's Wi-Fi), new phones, mail read
by Outlook, apps authorised without mail scopes, the odd legitimate mailbox delegation, and now and
then a Google account added to a phone's or laptop's mail app, which asks for the whole mailbox
(the organisation trusts those apps: the directory's mailwarden.toml lists them). Some of the
Microsoft 365 staff work from home through the corporate VPN, whose egress is in AWS us-east-1
(the same file lists it as the organisation's own network).

Attacks of every detector category are mixed in after the first week (the baseline an install has
from its initial look-back), each on its own victim, and written to `labels.json` with the ids of
the events they produced. Nothing here knows the detectors' thresholds beyond what the public
rules describe; `mailwarden eval DIR` measures the detectors against it.

Every Entra sign-in is also in o365_audit.json as the unified audit log's STS logon
(UserLoggedIn / UserLoginFailed), as a tenant reading both sources sees it.

What a real tenant's logs are full of, and earlier detectors tripped on, is in there too (drawn from
a generator of its own, so the people, their days and the first attacks are what they were): MFA and
"stay signed in?" interrupts before browser sign-ins (AADSTS50074, 50140: failures with the right
password) and Google's 2-step verification (`login_verification`, now and then after a mistyped
code); Outlook on every laptop and phone redeeming its refresh tokens through the day and the
phone's overnight, which only the audit log's token-endpoint STS logons (OAuth2:Token) show; and a
password change now and then, after which the phone's Outlook fails on its revoked token (50173) every
minute or two until its owner signs in on it again. A refresh token stolen and redeemed by a script,
seen only in those token-endpoint records, is among the labelled attacks (scripted_client).

Files: entra_signins.ndjson, entra_risk.json ({"value": [...]}), o365_audit.json (a content blob:
a JSON array), gws_login.ndjson, gws_token.ndjson, gws_admin.ndjson, gws_alerts.json
({"alerts": [...]}), labels.json, mailwarden.toml (the organisations' own settings).
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from bot.model import Event
from bot.sources.normalize import normalize
from sandbox.wire import WRONG_PASSWORD, graph_sign_in, sts_logon

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
STS_NAMESPACE = uuid.UUID("6d2b1d43-5a0c-4f5e-9c1e-2f4b8e0a7d11")  # the STS copies' ids, from their sign-in's
MS_DOMAIN = "contoso.example"
GWS_DOMAIN = "fabrikam.example"
WARMUP_DAYS = 8  # attacks start after the first week: the history an install reads at start-up

# (country, city, lat, lon, tz, home ISP ASNs, mobile carrier ASN)
City = tuple[str, str, float, float, str, tuple[int, ...], int]
MS_CITIES: tuple[City, ...] = (
    ("US", "New York", 40.71, -74.01, "America/New_York", (7922, 701), 21928),
    ("US", "Chicago", 41.88, -87.63, "America/Chicago", (7922, 7018), 21928),
    ("US", "San Francisco", 37.77, -122.42, "America/Los_Angeles", (7922, 7018), 21928),
    ("GB", "London", 51.51, -0.13, "Europe/London", (2856, 5089), 12576),
    ("CA", "Toronto", 43.65, -79.38, "America/Toronto", (577, 812), 812),
    ("IN", "Bangalore", 12.97, 77.59, "Asia/Kolkata", (24560, 9829), 45609),
)
GWS_CITIES: tuple[City, ...] = (
    ("DE", "Berlin", 52.52, 13.40, "Europe/Berlin", (3320, 6805), 3209),
    ("FR", "Paris", 48.86, 2.35, "Europe/Paris", (3215, 12322), 51207),
    ("NL", "Amsterdam", 52.37, 4.90, "Europe/Amsterdam", (1136, 33915), 20857),
    ("BR", "Sao Paulo", -23.55, -46.63, "America/Sao_Paulo", (28573, 18881), 26599),
    ("AU", "Sydney", -33.87, 151.21, "Australia/Sydney", (1221, 4804), 4804),
    ("JP", "Tokyo", 35.68, 139.69, "Asia/Tokyo", (2516, 4713), 9605),
)
TRIP_CITIES = (
    MS_CITIES
    + GWS_CITIES
    + (
        ("ES", "Madrid", 40.42, -3.70, "Europe/Madrid", (3352,), 12479),
        ("SG", "Singapore", 1.35, 103.82, "Asia/Singapore", (7473,), 4773),
        ("MX", "Mexico City", 19.43, -99.13, "America/Mexico_City", (8151,), 28403),
    )
)
# Where attackers sit: countries none of the employees live in.
ATTACKERS: tuple[tuple[str, str, float, float, int], ...] = (
    ("RU", "Moscow", 55.75, 37.62, 12389),
    ("NG", "Lagos", 6.52, 3.38, 29465),
    ("CN", "Shenzhen", 22.54, 114.06, 4134),
    ("VN", "Hanoi", 21.03, 105.85, 7552),
    ("RO", "Bucharest", 44.43, 26.10, 8708),
    ("ID", "Jakarta", -6.21, 106.85, 7713),
    ("TR", "Istanbul", 41.01, 28.98, 9121),
)
HOSTING = (
    (16509, "Frankfurt", 50.11, 8.68, "DE"),
    (14061, "Amsterdam", 52.37, 4.90, "NL"),
    (24940, "Nuremberg", 49.45, 11.08, "DE"),
)
RESIDENTIAL_PROXY_ASNS = (20001, 22773, 10796, 11427, 5650)
# failureReason texts of the sign-in log (AADSTS error reference)
MFA_REQUIRED = "Strong Authentication is required."
KMSI = "This error occurred due to 'Keep me signed in' interrupt when the user was signing in."

OUTLOOK_APP = "d3590ed6-52b3-4102-aeff-aad2292ab01c"
OUTLOOK_MOBILE_APP = "27922004-5251-4030-b22d-91ecd9a37ea4"
# What Outlook says when it redeems a refresh token: the desktop client on a laptop, the app on a phone.
OUTLOOK_DESKTOP_UA = {
    "Windows": "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)",
    "MacOs": "Microsoft Office/16.0 (Macintosh; Mac OS X 10.15; Microsoft Outlook 16.89)",
}
OUTLOOK_MOBILE_UA = {"Ios": "Outlook-iOS/2.0", "Android": "Outlook-Android/2.0"}
# Scripts that redeem a stolen refresh token (TokenTactics, roadtx and home-grown ones).
TOKEN_REPLAY_UAS = ("python-requests/2.32.3", "Go-http-client/1.1", "axios/1.7.7")
# Mail apps that ask Google for the whole mailbox on every device they are set up on, which the scenario's
# Google organisation trusts (mailwarden.toml): (app_name, client_id, client_type, where it runs).
NATIVE_MAIL_CLIENTS = (
    (
        "iOS Account Manager",
        "450232826690-0rm6bs9d2fps9tifvk2oodh3tasd7vl7.apps.googleusercontent.com",
        "NATIVE_IOS",
        "phone",
    ),
    (
        "Microsoft apps & services",
        "1023917826473-5u1ofhqb3l6nqmh4ebq3aqcbp2a0vcsd.apps.googleusercontent.com",
        "NATIVE_IOS",
        "phone",
    ),
    (
        "Thunderbird",
        "406964657835-aq8lmia8j95dhl1a2bvharmfk3t1hgqj.apps.googleusercontent.com",
        "NATIVE_DESKTOP",
        "laptop",
    ),
)
# The Microsoft 365 organisation's corporate VPN: its egress is a few addresses in AWS us-east-1, a
# hosting network in another country for most of its staff. Some employees working from home connect
# through it on some days (mailwarden.toml lists it as the organisation's own network).
VPN_EGRESS = "44.206.19.32/29"
VPN_NET = ipaddress.ip_network(VPN_EGRESS)
VPN_CITY: City = ("US", "Ashburn", 39.04, -77.49, "America/New_York", (16509,), 16509)
VPN_USERS = 0.15  # the share of the organisation's staff who use it
# Mobile carriers' gateways: geolocation databases place many of a carrier's addresses in the city of the
# gateway its traffic leaves by, not where the phone is (detections.md A1 lists "mobile carrier hubs"
# among impossible travel's false positives). For some people the phone seems to sign in from there.
CARRIER_HUBS: dict[int, tuple[str, str, float, float]] = {
    21928: ("US", "Dallas", 32.78, -96.80),
    812: ("CA", "Calgary", 51.05, -114.07),
    45609: ("IN", "Mumbai", 19.08, 72.88),
}
HUB_GEOLOCATED = 0.4  # the share of people whose carrier's addresses geolocate to its hub
NATIVE_MAIL_SCOPES = (
    "https://mail.google.com/",
    "https://www.googleapis.com/auth/calendar",
    "https://www.googleapis.com/auth/carddav",
    "openid",
    "https://www.googleapis.com/auth/userinfo.email",
)
GRAPH_APP = "00000003-0000-0000-c000-000000000000"
EXCHANGE_APP = "00000002-0000-0ff1-ce00-000000000000"
CHROMIUM = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
LAPTOPS = (
    (
        "Windows 10",
        "Edge 131.0.0",
        CHROMIUM + " Edg/131.0.0.0",
    ),
    (
        "Windows 11",
        "Chrome 131.0.0",
        CHROMIUM,
    ),
    (
        "MacOs",
        "Chrome 131.0.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
    ),
)
PHONES = (
    (
        "Ios 18.1",
        "Mobile Safari",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    ),
    (
        "Android 14",
        "Chrome Mobile 131",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Mobile Safari/537.36",
    ),
)
ATTACKER_DEVICES = (
    ("Linux", "Firefox 128.0", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    ("Windows 10", "Firefox 115.0", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Firefox/115.0"),
    (
        "MacOs",
        "Safari 17.4",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Safari/605.1.15",
    ),
)
CATEGORIES = (
    "new_country",
    "new_asn",
    "impossible_travel",
    "risky_ip",
    "failed_then_success",
    "password_spray",
    "scripted_client",
    "legacy_protocol",
    "new_device",
    "off_hours",
    "mail_bulk_access",
    "audit_throttled",
    "mailbox_export",
    "oauth_mail_consent",
    "mailbox_delegation",
    "impersonation_role",
    "mail_forwarding",
    "provider_risk",
)


@dataclass(frozen=True)
class Device:
    os: str
    browser: str
    ua: str
    device_id: str | None


@dataclass
class Person:
    upn: str
    uid: str
    name: str
    provider: str  # "ms" | "gws"
    city: City
    home_ip: str
    home_asn: int
    laptop: Device
    phone: Device
    evenings: bool
    admin: bool
    trips: list[tuple[int, int, City]] = field(default_factory=list)  # (first day, last day, where)
    new_phone_day: int | None = None
    new_phone: Device | None = None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.city[4])


def _ip(rng: random.Random, asn: int) -> str:
    """An address that belongs to `asn` in this synthetic world (stable prefix per ASN)."""
    a = 11 + asn % 180
    if a in (100, 127, 169, 172, 192):
        a += 1
    return f"{a}.{(asn // 180) % 250}.{rng.randrange(0, 256)}.{rng.randrange(1, 255)}"


def _graph_time(at: datetime) -> str:
    return f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond:06d}0Z"


class Scenario:
    def __init__(self, users: int, days: int, seed: int) -> None:
        self.rng = random.Random(seed)
        # Records added to the scenario after its first release draw from their own generator (see
        # `background`), so the people, their ordinary days and the attacks stay what they were and an
        # evaluation's change can be put down to what was added.
        self.noise = random.Random(f"background:{seed}")
        self.vpn = random.Random(f"vpn:{seed}")  # who is on the corporate VPN when, and at which address
        self.geo = random.Random(f"geo:{seed}")  # which phone sign-ins geolocate to the carrier's hub
        self.users_n = users
        self.days = days
        self.seed = seed
        self.files: dict[str, list[Any]] = {
            "entra_signins.ndjson": [],
            "entra_risk.json": [],
            "o365_audit.json": [],
            "gws_login.ndjson": [],
            "gws_token.ndjson": [],
            "gws_admin.ndjson": [],
            "gws_alerts.json": [],
        }
        self.labels: list[dict[str, Any]] = []
        self._capture: list[tuple[str, Any]] | None = None
        self.people: list[Person] = []
        self.offices: dict[tuple[str, str], str] = {}

    # --- ids and emission ------------------------------------------------------------------------
    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    @contextmanager
    def background(self) -> Iterator[None]:
        saved, self.rng = self.rng, self.noise
        try:
            yield
        finally:
            self.rng = saved

    def emit(self, file: str, record: dict[str, Any]) -> dict[str, Any]:
        self.files[file].append(record)
        if self._capture is not None:
            self._capture.append((file, record))
        return record

    @contextmanager
    def attack(self, category: str, victims: list[Person], what: str) -> Iterator[None]:
        self._capture = []
        try:
            yield
        finally:
            captured, self._capture = self._capture, None
        kinds = {
            "entra_signins.ndjson": "entra-signin",
            "entra_risk.json": "entra-risk",
            "o365_audit.json": "o365-audit",
            "gws_alerts.json": "gws-alert",
        }
        ids = [
            e.event_id
            for file, rec in captured
            for e in normalize(kinds.get(file, "gws-activity"), rec, "replay")
            if isinstance(e, Event)
        ]
        self.labels.append(
            {
                "id": f"A{len(self.labels) + 1:04d}",
                "category": category,
                "users": sorted({v.upn for v in victims}),
                "what": what,
                "events": ids,
            }
        )

    # --- people ---------------------------------------------------------------------------------------
    def make_people(self) -> None:
        rng = self.rng
        n_ms = round(self.users_n * 0.65)
        for i in range(self.users_n):
            ms = i < n_ms
            city = rng.choice(MS_CITIES if ms else GWS_CITIES)
            home_asn = rng.choice(city[5])
            laptop = rng.choice(LAPTOPS)
            phone = rng.choice(PHONES)
            # Company laptops are registered in Entra (a deviceId); 70 % of phones are enrolled too.
            p = Person(
                upn=f"user{i:04d}@{MS_DOMAIN if ms else GWS_DOMAIN}",
                uid=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                name=f"User {i:04d}",
                provider="ms" if ms else "gws",
                city=city,
                home_ip=_ip(rng, home_asn),
                home_asn=home_asn,
                laptop=Device(*laptop, self.uuid() if ms and rng.random() < 0.95 else None),
                phone=Device(*phone, self.uuid() if ms and rng.random() < 0.7 else None),
                evenings=rng.random() < 0.15,
                admin=ms and rng.random() < 0.02,
            )
            if rng.random() < 0.012 * self.days / 30:  # about one employee in 80 travels in a month
                first = rng.randrange(0, max(1, self.days - 2))
                abroad = rng.random() < 0.7
                options = [c for c in TRIP_CITIES if (c[0] != city[0]) == abroad and c[1] != city[1]]
                options = options or [c for c in TRIP_CITIES if c[0] != city[0]]
                p.trips.append((first, first + rng.randrange(1, 5), rng.choice(options)))
            if rng.random() < 0.006 * self.days / 30:
                p.new_phone_day = rng.randrange(1, self.days)
                p.new_phone = Device(*rng.choice(PHONES), self.uuid() if ms else None)
            self.people.append(p)

    def office_ip(self, p: Person) -> str:
        key = (p.provider, p.city[1])
        if key not in self.offices:
            self.offices[key] = _ip(self.rng, p.city[5][0])
        return self.offices[key]

    # --- record builders ------------------------------------------------------------------------------
    def ms_signin(
        self,
        p: Person,
        at: datetime,
        *,
        ip: str,
        asn: int,
        where: tuple[str, str, float, float],
        device: Device,
        code: int = 0,
        failure_reason: str | None = None,
        client: str = "Browser",
        app: str = "Office 365 Exchange Online",
        risk: tuple[str, ...] = (),
        protocol: str | None = None,
        ua: str | None = None,
    ) -> dict[str, Any]:
        country, city, lat, lon = where
        jitter = self.rng.uniform(-0.05, 0.05)
        record_id, correlation_id = self.uuid(), self.uuid()  # in this order: the seed's sequence
        record = graph_sign_in(
            record_id=record_id,
            at=at,
            upn=p.upn,
            user_id=p.uid,
            name=p.name,
            ip=ip,
            country=country,
            city=city,
            latitude=lat + jitter,
            longitude=lon + jitter,
            correlation_id=correlation_id,
            app=app,
            resource="Office 365 Exchange Online",
            client=client,
            user_agent=ua if ua is not None else device.ua,
            code=code,
            failure_reason=failure_reason or WRONG_PASSWORD,
            conditional_access="success" if code == 0 else "notApplied",
            asn=asn,
            protocol=protocol or "none",
            risk_types=risk,
            risk_level="medium" if risk else "none",
            risk_state="atRisk" if risk else "none",
            device_id=device.device_id or "",
            operating_system=device.os,
            browser=device.browser,
            compliant=bool(device.device_id),
            managed=bool(device.device_id),
            trust_type="Azure AD joined" if device.device_id else None,
        )
        # The unified audit log holds every sign-in a second time (an STS logon): a tenant that reads
        # both must not count it twice. Its id comes from the sign-in's, so the seed's sequence holds.
        self.emit(
            "o365_audit.json",
            sts_logon(
                record_id=str(uuid.uuid5(STS_NAMESPACE, record_id)),
                at=at,
                upn=p.upn,
                user_id=p.uid,
                ip=ip,
                user_agent=ua if ua is not None else device.ua,
                code=code,
                operating_system=device.os,
                browser=device.browser,
                compliant=bool(device.device_id),
                request_type="OAuth2:Token" if protocol == "ropc" else "Login:login",  # a password grant
            ),
        )
        return self.emit("entra_signins.ndjson", record)

    def token_redemption(
        self,
        p: Person,
        at: datetime,
        *,
        ip: str,
        ua: str,
        app_id: str,
        device: Device | None = None,
        code: int = 0,
    ) -> dict[str, Any]:
        """A refresh token redeemed at the OAuth token endpoint, as the unified audit log holds it: an
        STS logon with RequestType OAuth2:Token, no location and no network. Entra also logs it as a
        non-interactive sign-in, in the beta log that the default sources (and this scenario) leave out."""
        return self.emit(
            "o365_audit.json",
            sts_logon(
                record_id=self.uuid(),
                at=at,
                upn=p.upn,
                user_id=p.uid,
                ip=ip,
                user_agent=ua,
                code=code,
                app_id=app_id,
                operating_system=device.os if device else "",
                browser="",
                compliant=bool(device and device.device_id),
                request_type="OAuth2:Token",
            ),
        )

    def gws(
        self,
        file: str,
        p: Person,
        at: datetime,
        app: str,
        etype: str,
        name: str,
        params: list[dict[str, Any]],
        *,
        ip: str | None = None,
        asn: int | None = None,
        region: str | None = None,
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "kind": "admin#reports#activity",
            "id": {
                "time": f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z",
                "uniqueQualifier": str(self.rng.getrandbits(62) - 2**61),
                "applicationName": app,
                "customerId": "C03fabrik",
            },
            "actor": {"callerType": "USER", "email": p.upn, "profileId": str(10**12 + self.rng.getrandbits(30))},
            "events": [{"type": etype, "name": name, "parameters": params}],
        }
        if ip:
            record["ipAddress"] = ip
        if asn is not None or region:
            record["networkInfo"] = {
                **({"ipAsn": [asn]} if asn is not None else {}),
                **({"regionCode": region} if region else {}),
            }
        return self.emit(file, record)

    def gws_authorize(
        self,
        p: Person,
        at: datetime,
        *,
        client_id: str,
        app: str,
        scopes: Sequence[str],
        ip: str,
        client_type: str | None = None,
    ) -> dict[str, Any]:
        """An OAuth client authorised by the user: the Reports API's token `authorize` event."""
        params: list[dict[str, Any]] = [
            {"name": "client_id", "value": client_id},
            {"name": "app_name", "value": app},
            *([{"name": "client_type", "value": client_type}] if client_type else []),
            {"name": "scope", "multiValue": list(scopes)},
        ]
        return self.gws("gws_token.ndjson", p, at, "token", "auth", "authorize", params, ip=ip)

    def gws_login(
        self,
        p: Person,
        at: datetime,
        *,
        ip: str,
        asn: int,
        region: str,
        ok: bool = True,
        extra: list[Any] | None = None,
        second_factor: str | None = None,
    ) -> dict[str, Any]:
        params: list[dict[str, Any]] = [
            {"name": "login_type", "value": "google_password"},
            {"name": "is_suspicious", "boolValue": False},
            *(extra or []),
        ]
        if second_factor:
            params.append({"name": "login_challenge_method", "multiValue": ["password", second_factor]})
        if not ok:
            params.append({"name": "login_failure_type", "value": "login_failure_invalid_password"})
        return self.gws(
            "gws_login.ndjson",
            p,
            at,
            "login",
            "login",
            "login_success" if ok else "login_failure",
            params,
            ip=ip,
            asn=asn,
            region=region,
        )

    def o365(self, p: Person, at: datetime, operation: str, **fields: Any) -> dict[str, Any]:
        exchange = fields.pop("workload", "Exchange")
        record: dict[str, Any] = {
            "CreationTime": f"{at:%Y-%m-%dT%H:%M:%S}",
            "Id": self.uuid(),
            "Operation": operation,
            "OrganizationId": "contoso-org",
            "RecordType": fields.pop("record_type", 1),
            "ResultStatus": fields.pop("result", "True"),
            "UserKey": p.uid,
            "UserType": fields.pop("user_type", 2 if p.admin else 0),
            "Version": 1,
            "Workload": exchange,
            "UserId": p.upn,
            "ObjectId": fields.pop("object_id", p.upn),
            "OrganizationName": "contoso.onmicrosoft.com",
        }
        record.update(fields)
        return self.emit("o365_audit.json", record)

    def mail_read(
        self,
        p: Person,
        at: datetime,
        *,
        ip: str,
        count: int,
        access: str = "Bind",
        app: str = OUTLOOK_APP,
        client: str = "Client=MSExchangeRPC",
        throttled: bool = False,
        mailbox: Person | None = None,
        client_app_id: str | None = None,
    ) -> dict[str, Any]:
        owner = mailbox or p
        return self.o365(
            p,
            at,
            "MailItemsAccessed",
            record_type=50,
            result="Succeeded",
            user_type=0,
            object_id=owner.upn,
            ClientIPAddress=ip,
            ClientInfoString=client,
            AppId=app,
            ClientAppId=client_app_id or app,
            MailboxOwnerUPN=owner.upn,
            LogonType=0,
            OperationCount=count,
            OperationProperties=[
                {"Name": "MailAccessType", "Value": access},
                {"Name": "IsThrottled", "Value": "True" if throttled else "False"},
            ],
        )

    # --- ordinary life -------------------------------------------------------------------------------
    def local(self, p: Person, day: int, hour: float, tz: ZoneInfo | None = None) -> datetime:
        d: date = (START + timedelta(days=day)).date()
        h = int(hour)
        m = int((hour - h) * 60)
        return datetime.combine(d, time(h, m), tzinfo=tz or p.tz).astimezone(UTC)

    def trip_on(self, p: Person, day: int) -> tuple[int, int, City] | None:
        return next((t for t in p.trips if t[0] <= day <= t[1] + 1), None)

    def ordinary(self) -> None:
        rng = self.rng
        for p in self.people:
            carrier = p.city[6]
            for day in range(self.days):
                trip = self.trip_on(p, day)
                local_day = (START + timedelta(days=day)).date()
                weekday = local_day.weekday() < 5
                phone = self.phone_on(p, day)
                if trip is not None and day == trip[1] + 1:
                    continue  # flying home
                if trip is not None:
                    self.travel_day(p, day, trip, phone)
                    continue
                if not weekday:
                    if rng.random() < 0.3:
                        self.sign_in(p, self.local(p, day, rng.uniform(10, 20)), phone, _ip(rng, carrier), carrier)
                    continue
                office = rng.random() < 0.5
                net_ip, net_asn = (self.office_ip(p), p.city[5][0]) if office else (p.home_ip, p.home_asn)
                where = None
                if not office and self.on_vpn(p):
                    net_ip, net_asn, where = self.vpn_address(), VPN_CITY[6], VPN_CITY
                self.sign_in(
                    p, self.local(p, day, rng.uniform(7.5, 9.5)), p.laptop, net_ip, net_asn, typo=True, where=where
                )
                for _ in range(rng.choice((0, 1, 1, 2))):
                    self.sign_in(p, self.local(p, day, rng.uniform(10, 18)), phone, _ip(rng, carrier), carrier)
                if rng.random() < 0.4:
                    self.sign_in(p, self.local(p, day, rng.uniform(12.5, 17.5)), p.laptop, net_ip, net_asn, where=where)
                if p.evenings and rng.random() < 0.3:
                    self.sign_in(p, self.local(p, day, rng.uniform(20, 22.5)), p.laptop, p.home_ip, p.home_asn)
                if p.provider == "ms":
                    for _ in range(rng.choice((1, 1, 2))):
                        self.mail_read(
                            p,
                            self.local(p, day, rng.uniform(8, 18)),
                            ip=net_ip,
                            count=rng.randint(1, 40),
                            access=rng.choice(("Bind", "Sync")),
                        )
                elif rng.random() < 0.01:
                    self.gws_authorize(
                        p,
                        self.local(p, day, rng.uniform(9, 17)),
                        client_id=f"{rng.randrange(10**9)}-cal.apps.googleusercontent.com",
                        app=rng.choice(("Calendly", "Zoom", "Miro")),
                        scopes=("https://www.googleapis.com/auth/calendar", "openid"),
                        ip=net_ip,
                    )
            self.admin_work(p)

    def sign_in(
        self, p: Person, at: datetime, dev: Device, ip: str, asn: int, *, typo: bool = False, where: City | None = None
    ) -> None:
        c = where or p.city
        rng = self.rng
        failures = rng.choice((1, 1, 2)) if typo and rng.random() < 0.06 else 0
        for i in range(failures):
            t = at - timedelta(seconds=40 * (failures - i))
            if p.provider == "ms":
                self.ms_signin(p, t, ip=ip, asn=asn, where=c[:4], device=dev, code=50126)
            else:
                self.gws_login(p, t, ip=ip, asn=asn, region=c[0], ok=False)
        if p.provider == "ms":
            phone = dev.os.startswith(("Ios", "Android"))
            if not phone:
                with self.background():
                    self.interrupts(p, at, dev, ip, asn, c)
            located = self.carrier_hub(p) if phone and where is None and asn == p.city[6] else None
            self.ms_signin(
                p,
                at,
                ip=ip,
                asn=asn,
                where=located or c[:4],
                device=dev,
                client="Mobile Apps and Desktop clients" if phone else "Browser",
                app="Microsoft Outlook" if phone else "Office 365 Exchange Online",
            )
        else:
            with self.background():
                factor = self.second_step(p, at, ip, asn, c)
            self.gws_login(p, at, ip=ip, asn=asn, region=c[0], second_factor=factor)

    def interrupts(self, p: Person, at: datetime, dev: Device, ip: str, asn: int, where: City) -> None:
        """What a browser sign-in passes through before it completes: "Strong Authentication is
        required" (AADSTS50074) while the user approves the MFA prompt, now and then "Stay signed in?"
        (50140). Both logs record them as failed sign-ins, with the right password."""
        if self.rng.random() >= 0.35:
            return
        before = at - timedelta(seconds=self.rng.uniform(12, 40))
        self.ms_signin(p, before, ip=ip, asn=asn, where=where[:4], device=dev, code=50074, failure_reason=MFA_REQUIRED)
        if self.rng.random() < 0.25:
            before = at - timedelta(seconds=self.rng.uniform(2, 8))
            self.ms_signin(p, before, ip=ip, asn=asn, where=where[:4], device=dev, code=50140, failure_reason=KMSI)

    def second_step(self, p: Person, at: datetime, ip: str, asn: int, where: City) -> str | None:
        """Google's 2-step verification on a browser it does not remember (about one sign-in in eight):
        a `login_verification` passed just before the `login_success`, now and then after a code
        mistyped. Returns the factor used, or None when Google did not ask."""
        rng = self.rng
        if rng.random() >= 0.12:
            return None
        factor = rng.choices(("google_prompt", "idv_preregistered_phone", "totp"), (6, 3, 1))[0]
        if rng.random() < 0.04:
            self.gws_verification(p, at - timedelta(seconds=rng.uniform(40, 90)), ip, asn, where, factor, passed=False)
        self.gws_verification(p, at - timedelta(seconds=rng.uniform(5, 30)), ip, asn, where, factor)
        return factor

    def gws_verification(
        self, p: Person, at: datetime, ip: str, asn: int, where: City, factor: str, *, passed: bool = True
    ) -> dict[str, Any]:
        params: list[dict[str, Any]] = [
            {"name": "login_type", "value": "google_password"},
            {"name": "login_challenge_method", "multiValue": [factor]},
            {"name": "is_second_factor", "boolValue": True},
            {"name": "login_challenge_status", "value": "Challenge Passed." if passed else "Challenge Failed."},
        ]
        return self.gws(
            "gws_login.ndjson", p, at, "login", "login", "login_verification", params, ip=ip, asn=asn, region=where[0]
        )

    def carrier_hub(self, p: Person) -> tuple[str, str, float, float] | None:
        """Where Entra places this phone sign-in over the carrier's network when that is the carrier's
        gateway city rather than the person's own (most of the time, for the people it happens to)."""
        hub = CARRIER_HUBS.get(p.city[6])
        if hub is None or p.upn not in self.hub_users:
            return None
        return hub if self.geo.random() < 0.8 else None

    @functools.cached_property
    def hub_users(self) -> frozenset[str]:
        """About HUB_GEOLOCATED of everyone: those whose carrier's addresses geolocate to its hub."""
        return self._some_people("hub", HUB_GEOLOCATED)

    def _some_people(self, what: str, share: float) -> frozenset[str]:
        """A stable `share` of the people, each drawn from a generator of its own (seed, what, person),
        so that choosing them changes nothing else in the scenario."""
        return frozenset(p.upn for p in self.people if random.Random(f"{what}:{self.seed}:{p.upn}").random() < share)

    def on_vpn(self, p: Person) -> bool:
        """Whether a Microsoft 365 employee working from home connects through the corporate VPN today
        (drawn from a generator of its own: the rest of the scenario is what it was without the VPN)."""
        if p.upn not in self.vpn_users:
            return False
        return self.vpn.random() < 0.6

    @functools.cached_property
    def vpn_users(self) -> frozenset[str]:
        """About VPN_USERS of the Microsoft 365 staff, at least one in every scenario."""
        ms = [p.upn for p in self.people if p.provider == "ms"]
        return frozenset(self._some_people("vpn", VPN_USERS).intersection(ms) or ms[:1])

    def vpn_address(self) -> str:
        return str(VPN_NET[1 + self.vpn.randrange(VPN_NET.num_addresses - 2)])

    def phone_on(self, p: Person, day: int) -> Device:
        new = p.new_phone is not None and p.new_phone_day is not None and day >= p.new_phone_day
        return p.new_phone if new and p.new_phone is not None else p.phone

    def travel_day(self, p: Person, day: int, trip: tuple[int, int, City], phone: Device) -> None:
        rng = self.rng
        first, _, dest = trip
        hotel_asn = dest[5][-1] + 1000
        hotel_ip = _ip(random.Random(f"{p.upn}:{first}"), hotel_asn)
        if day == first:
            leave = self.local(p, day, rng.uniform(6.5, 8))
            self.sign_in(p, leave, p.laptop, p.home_ip, p.home_asn)
            from bot.detect.impossible_travel import distance_km

            hours = distance_km(p.city[2], p.city[3], dest[2], dest[3]) / 750 + 3
            arrive = leave + timedelta(hours=hours + rng.uniform(1, 3))
            self.sign_in(p, arrive, rng.choice((p.laptop, phone)), hotel_ip, hotel_asn, where=dest)
            return
        tz = ZoneInfo(dest[4])
        for hour in sorted(rng.uniform(8, 19) for _ in range(rng.choice((1, 2, 3)))):
            self.sign_in(
                p, self.local(p, day, hour, tz), rng.choice((p.laptop, phone)), hotel_ip, hotel_asn, where=dest
            )

    def admin_work(self, p: Person) -> None:
        rng = self.rng
        if not p.admin:
            return
        for _ in range(self.days // 30 + (rng.random() < (self.days % 30) / 30)):
            day = rng.randrange(0, self.days)
            at = self.local(p, day, rng.uniform(9, 17))
            peers = [q for q in self.people if q.provider == "ms" and q is not p]
            if not peers:
                return
            boss, assistant = rng.sample(peers, 2) if len(peers) > 1 else (peers[0], peers[0])
            if rng.random() < 0.5:  # an assistant gets access to a manager's mailbox: legitimate, still asked
                self.o365(
                    p,
                    at,
                    "Add-MailboxPermission",
                    object_id=boss.upn,
                    ClientIP=self.office_ip(p),
                    Parameters=[
                        {"Name": "Identity", "Value": boss.upn},
                        {"Name": "User", "Value": assistant.upn},
                        {"Name": "AccessRights", "Value": "FullAccess"},
                    ],
                )
            else:  # internal forwarding for a leaver: no finding
                self.o365(
                    p,
                    at,
                    "Set-Mailbox",
                    object_id=boss.upn,
                    ClientIP=self.office_ip(p),
                    Parameters=[
                        {"Name": "Identity", "Value": boss.upn},
                        {"Name": "ForwardingSmtpAddress", "Value": f"smtp:{assistant.upn}"},
                    ],
                )

    # --- background: what the first release of the scenario left out -------------------------------------
    def mail_clients(self) -> None:
        """Outlook on every laptop and phone keeps its tokens fresh through the day, and the phone's
        overnight too: refresh tokens redeemed at the token endpoint (`token_redemption`). Once in a
        while someone changes their password and the phone's Outlook fails on its revoked token
        (AADSTS50173) every minute or two until they sign in on the phone again."""
        rng = self.rng
        ms = [p for p in self.people if p.provider == "ms"]
        # about one employee in 40 changes their password in a month; at least one in every scenario
        changing = {p.upn for p in rng.sample(ms, min(len(ms), max(1, round(len(ms) * self.days / 30 / 40))))}
        for p in ms:
            desktop = OUTLOOK_DESKTOP_UA["MacOs" if p.laptop.os.startswith("MacOs") else "Windows"]
            at_work = [d for d in range(1, self.days) if self.trip_on(p, d) is None and _weekday(d)]
            change = rng.choice(at_work) if p.upn in changing and at_work else None
            for day in range(self.days):
                trip = self.trip_on(p, day)
                phone = self.phone_on(p, day)
                mobile = OUTLOOK_MOBILE_UA["Ios" if phone.os.startswith("Ios") else "Android"]
                if trip is not None and day in (trip[0], trip[1] + 1):
                    continue  # on a plane, or in flight mode most of the day
                if trip is not None:
                    dest = trip[2]
                    hotel_ip = _ip(random.Random(f"{p.upn}:{trip[0]}"), dest[5][-1] + 1000)
                    for _ in range(rng.choice((1, 2))):
                        at = self.local(p, day, rng.uniform(7, 22), ZoneInfo(dest[4]))
                        self.token_redemption(p, at, ip=hotel_ip, ua=mobile, app_id=OUTLOOK_MOBILE_APP, device=phone)
                    continue
                phone_ip = _ip(rng, p.city[6])
                hours = [rng.uniform(7, 22) for _ in range(rng.choice((1, 1, 2)))]
                if rng.random() < 0.5:
                    hours.append(rng.uniform(0.25, 5.0))  # background sync while its owner sleeps
                for hour in hours:
                    at = self.local(p, day, hour)
                    self.token_redemption(p, at, ip=phone_ip, ua=mobile, app_id=OUTLOOK_MOBILE_APP, device=phone)
                if not _weekday(day):
                    continue
                net_ip = self.office_ip(p) if rng.random() < 0.5 else p.home_ip
                for _ in range(rng.choice((1, 2))):
                    at = self.local(p, day, rng.uniform(8, 18))
                    self.token_redemption(p, at, ip=net_ip, ua=desktop, app_id=OUTLOOK_APP, device=p.laptop)
                if day == change:
                    self.password_change(p, day, phone, phone_ip, mobile)

    def native_mail_setups(self) -> None:
        """Now and then someone on Google Workspace adds their account to a new phone's Mail app, Outlook,
        or Thunderbird at home: an `authorize` of full Gmail access (https://mail.google.com/) by a
        client the organisation trusts, about one employee in 30 a month (at least one in every scenario)."""
        rng = self.rng
        gws = [p for p in self.people if p.provider == "gws"]
        setting_up = rng.sample(gws, min(len(gws), max(1, round(len(gws) * self.days / 30 / 30))))  # >= 1 a run
        for p in setting_up:
            at_home = [d for d in range(1, self.days) if self.trip_on(p, d) is None]  # not set up in a hotel
            if not at_home:
                continue
            day = rng.choice(at_home)
            app, client_id, client_type, where = rng.choice(NATIVE_MAIL_CLIENTS)
            at = self.local(p, day, rng.uniform(12, 22))
            ip = _ip(rng, p.city[6]) if where == "phone" else p.home_ip
            self.gws_authorize(
                p, at, client_id=client_id, app=app, scopes=NATIVE_MAIL_SCOPES, ip=ip, client_type=client_type
            )

    def password_change(self, p: Person, day: int, phone: Device, phone_ip: str, mobile_ua: str) -> None:
        rng = self.rng
        at = self.local(p, day, rng.uniform(9, 16))
        self.sign_in(p, at, p.laptop, self.office_ip(p), p.city[5][0])  # the change, in the browser
        t = at + timedelta(minutes=rng.uniform(1, 3))
        for _ in range(rng.randint(5, 8)):
            self.token_redemption(p, t, ip=phone_ip, ua=mobile_ua, app_id=OUTLOOK_MOBILE_APP, device=phone, code=50173)
            t += timedelta(seconds=rng.uniform(60, 140))
        self.sign_in(p, t + timedelta(minutes=rng.uniform(0, 2)), phone, phone_ip, p.city[6])

    def token_replays(self) -> None:
        """Labelled attacks (scripted_client): a refresh token stolen by an adversary-in-the-middle page
        or an infostealer and redeemed by a script from a rented server, then mail synced with it. No
        password and no MFA: the token endpoint's STS logon is the only sign-in record
        (detections.md A6), and it carries no location, so its user agent is what gives it away."""
        rng = self.rng
        taken = {u for a in self.labels for u in a["users"]}
        pool = [p for p in self.people if p.provider == "ms" and p.upn not in taken and not p.trips]
        last = max(WARMUP_DAYS + 1, self.days - 1)
        for i in range(min(len(pool), max(1, self.users_n // 200))):
            v = pool.pop(rng.randrange(len(pool)))
            ip = _ip(rng, rng.choice(HOSTING)[0])
            day = rng.randrange(WARMUP_DAYS + 1, last) if last > WARMUP_DAYS + 1 else WARMUP_DAYS
            at = self.local(v, day, rng.uniform(0, 24))
            with self.attack("scripted_client", [v], "stolen refresh token redeemed by a script"):
                ua = TOKEN_REPLAY_UAS[i % len(TOKEN_REPLAY_UAS)]
                self.token_redemption(v, at, ip=ip, ua=ua, app_id=OUTLOOK_APP)
                self.mail_read(
                    v,
                    at + timedelta(minutes=rng.uniform(1, 5)),
                    ip=ip,
                    count=rng.randint(20, 80),
                    access="Sync",
                    client="Client=REST;Client=RESTSystem;;",
                )

    # --- attacks -------------------------------------------------------------------------------------------
    def attacks(self) -> None:
        rng = self.rng
        per = max(2, self.users_n // 100)
        ms = [p for p in self.people if p.provider == "ms"]
        gws = [p for p in self.people if p.provider == "gws"]
        used: set[str] = set()
        last = max(WARMUP_DAYS + 1, self.days - 1)

        def victim(pool: list[Person]) -> Person:
            free = [p for p in pool if p.upn not in used and not p.trips] or pool
            v = rng.choice(free)
            used.add(v.upn)
            return v

        def when(v: Person, hours: tuple[float, float] = (9, 17)) -> datetime:
            day = rng.randrange(WARMUP_DAYS + 1, last) if last > WARMUP_DAYS + 1 else WARMUP_DAYS
            return self.local(v, day, rng.uniform(*hours))

        makers: dict[str, Callable[[Person, datetime, int], None]] = {
            "new_country": self.a_new_country,
            "new_asn": self.a_new_asn,
            "impossible_travel": self.a_impossible_travel,
            "risky_ip": self.a_risky_ip,
            "failed_then_success": self.a_failed_then_success,
            "scripted_client": self.a_scripted,
            "legacy_protocol": self.a_legacy,
            "new_device": self.a_new_device,
            "off_hours": self.a_off_hours,
            "mail_bulk_access": self.a_bulk,
            "audit_throttled": self.a_throttled,
            "mailbox_export": self.a_export,
            "oauth_mail_consent": self.a_consent,
            "mailbox_delegation": self.a_delegation,
            "impersonation_role": self.a_impersonation,
            "mail_forwarding": self.a_forwarding,
            "provider_risk": self.a_provider_risk,
        }
        # Google's login records carry no device or user agent: the device, script and legacy-client
        # attacks (and an attacker in the user's own country on a new network) are Microsoft-only.
        ms_only = {
            "new_asn",
            "scripted_client",
            "legacy_protocol",
            "new_device",
            "off_hours",
            "mail_bulk_access",
            "audit_throttled",
            "mailbox_delegation",
        }
        for category in CATEGORIES:
            if category == "password_spray":
                for _ in range(max(1, per // 2)):
                    self.a_spray(ms if rng.random() < 0.6 else gws, when(ms[0]) if ms else when(gws[0]))
                continue
            for i in range(per):
                pool = ms if category in ms_only or not gws or (ms and i % 3 != 2) else gws
                v = victim(pool)
                hours = (1.5, 4.0) if category in ("off_hours",) else (9, 17)
                at = when(v, hours)
                with self.attack(category, [v], category):
                    makers[category](v, at, i)

    def attacker(self, v: Person) -> tuple[str, str, float, float, int]:
        return self.rng.choice([a for a in ATTACKERS if a[0] != v.city[0]])

    def attacker_sign_in(
        self,
        v: Person,
        at: datetime,
        *,
        where: tuple[str, str, float, float],
        asn: int,
        ip: str,
        device: Device | None = None,
        **kw: Any,
    ) -> None:
        dev = device or Device(*self.rng.choice(ATTACKER_DEVICES), None)
        if v.provider == "ms":
            self.ms_signin(v, at, ip=ip, asn=asn, where=where, device=dev, **kw)
        else:
            self.gws_login(v, at, ip=ip, asn=asn, region=where[0], ok=kw.get("code", 0) == 0)

    def a_new_country(self, v: Person, at: datetime, i: int) -> None:
        a = self.attacker(v)
        ip = _ip(self.rng, a[4])
        self.attacker_sign_in(v, at, where=a[:4], asn=a[4], ip=ip)
        if v.provider == "ms":
            self.mail_read(
                v,
                at + timedelta(minutes=3),
                ip=ip,
                count=self.rng.randint(5, 40),
                client="Client=OWA;Action=ViaProxy",
                app=EXCHANGE_APP,
            )

    def a_new_asn(self, v: Person, at: datetime, i: int) -> None:
        asn = self.rng.choice(RESIDENTIAL_PROXY_ASNS)
        self.attacker_sign_in(v, at, where=v.city[:4], asn=asn, ip=_ip(self.rng, asn))

    def a_impossible_travel(self, v: Person, at: datetime, i: int) -> None:
        # the victim's own sign-in at home is ordinary life, not part of the attack
        self._capture_pause(
            lambda: self.sign_in(v, at - timedelta(minutes=self.rng.randint(10, 40)), v.laptop, v.home_ip, v.home_asn)
        )
        a = self.attacker(v)
        self.attacker_sign_in(v, at, where=a[:4], asn=a[4], ip=_ip(self.rng, a[4]))

    def _capture_pause(self, f: Callable[[], None]) -> None:
        saved, self._capture = self._capture, None
        try:
            f()
        finally:
            self._capture = saved

    def a_risky_ip(self, v: Person, at: datetime, i: int) -> None:
        asn, city, lat, lon, country = self.rng.choice(HOSTING)
        where = (country, city, lat, lon)
        ip = _ip(self.rng, asn)
        if v.provider == "ms" and i % 2 == 0:  # an anonymising VPN Microsoft recognises
            self.attacker_sign_in(v, at, where=v.city[:4], asn=v.home_asn + 7, ip=ip, risk=("anonymizedIPAddress",))
        else:
            self.attacker_sign_in(v, at, where=where if v.provider == "ms" else (v.city[0], *where[1:]), asn=asn, ip=ip)

    def a_failed_then_success(self, v: Person, at: datetime, i: int) -> None:
        a = self.attacker(v) if i % 2 == 0 else (*v.city[:4], self.rng.choice(RESIDENTIAL_PROXY_ASNS))
        ip = _ip(self.rng, a[4])
        n = self.rng.randint(6, 14)
        for k in range(n):
            self.attacker_sign_in(v, at - timedelta(seconds=45 * (n - k)), where=a[:4], asn=a[4], ip=ip, code=50126)
        self.attacker_sign_in(v, at, where=a[:4], asn=a[4], ip=ip)

    def a_spray(self, pool: list[Person], at: datetime) -> None:
        rng = self.rng
        a = rng.choice(ATTACKERS)
        ip = _ip(rng, a[4])
        targets = rng.sample(pool, min(len(pool), rng.randint(15, 40)))
        with self.attack("password_spray", targets, f"spray from {ip}"):
            for k, v in enumerate(targets):
                self.attacker_sign_in(v, at + timedelta(seconds=20 * k), where=a[:4], asn=a[4], ip=ip, code=50126)
            lucky = targets[rng.randrange(len(targets))]
            self.attacker_sign_in(lucky, at + timedelta(seconds=20 * len(targets) + 60), where=a[:4], asn=a[4], ip=ip)

    def a_scripted(self, v: Person, at: datetime, i: int) -> None:
        ua = ("python-requests/2.31.0", "curl/8.5.0", "Go-http-client/2.0", "AADInternals", "roadtx/1.3")[i % 5]
        asn = v.home_asn if i % 2 else self.rng.choice(RESIDENTIAL_PROXY_ASNS)
        self.attacker_sign_in(
            v, at, where=v.city[:4], asn=asn, ip=_ip(self.rng, asn), client="Mobile Apps and Desktop clients", ua=ua
        )

    def a_legacy(self, v: Person, at: datetime, i: int) -> None:
        asn = self.rng.choice(RESIDENTIAL_PROXY_ASNS)
        if i % 2 == 0:
            self.attacker_sign_in(v, at, where=v.city[:4], asn=asn, ip=_ip(self.rng, asn), client="IMAP4", ua="")
        else:
            self.attacker_sign_in(
                v,
                at,
                where=v.city[:4],
                asn=asn,
                ip=_ip(self.rng, asn),
                client="Other clients",
                ua="BAV2ROPC",
                protocol="ropc",
            )

    def a_new_device(self, v: Person, at: datetime, i: int) -> None:
        # someone with the password on their own machine, from the victim's own ISP (a neighbour behind
        # the same carrier-grade NAT, a colleague at home): only the device, and the hour, are new
        late = self.local(v, (at - START).days, self.rng.uniform(1.0, 4.5))
        self.attacker_sign_in(v, late, where=v.city[:4], asn=v.home_asn, ip=_ip(self.rng, v.home_asn))

    def a_off_hours(self, v: Person, at: datetime, i: int) -> None:
        self.attacker_sign_in(v, at, where=v.city[:4], asn=v.home_asn, ip=_ip(self.rng, v.home_asn))

    def a_bulk(self, v: Person, at: datetime, i: int) -> None:
        ip = _ip(self.rng, HOSTING[0][0])
        app = self.uuid()
        if i % 2 == 0:  # one Graph app reading many mailboxes in a few minutes
            peers = [q for q in self.people if q.provider == "ms" and q is not v]
            for k, owner in enumerate([v, *self.rng.sample(peers, min(len(peers), 7))]):
                self.mail_read(
                    v,
                    at + timedelta(seconds=50 * k),
                    ip=ip,
                    count=self.rng.randint(10, 60),
                    app=GRAPH_APP,
                    client=f"Client=REST;Client=RESTSystem;AppId={app}",
                    mailbox=owner,
                    client_app_id=app,
                )
        else:
            self.mail_read(
                v,
                at,
                ip=ip,
                count=self.rng.randint(300, 900),
                app=GRAPH_APP,
                client=f"Client=REST;AppId={app}",
                client_app_id=app,
            )

    def a_throttled(self, v: Person, at: datetime, i: int) -> None:
        self.mail_read(
            v,
            at,
            ip=_ip(self.rng, HOSTING[1][0]),
            count=self.rng.randint(20, 80),
            access="Sync",
            client="Client=WebServices;ExchangeWebServices",
            app=self.uuid(),
            throttled=True,
        )

    def a_export(self, v: Person, at: datetime, i: int) -> None:
        if v.provider == "ms":
            target = self.rng.choice([q for q in self.people if q.provider == "ms"])
            self.o365(
                v,
                at,
                "New-MailboxExportRequest",
                user_type=2,
                ClientIP=_ip(self.rng, 9009),
                Parameters=[
                    {"Name": "Mailbox", "Value": target.upn},
                    {"Name": "FilePath", "Value": "\\\\10.0.0.5\\pst\\export.pst"},
                ],
            )
        else:
            self.gws(
                "gws_admin.ndjson",
                v,
                at,
                "admin",
                "CUSTOMER_TAKEOUT",
                "CUSTOMER_TAKEOUT_CREATED",
                [{"name": "OBFUSCATED_CUSTOMER_TAKEOUT_REQUEST_ID", "value": self.uuid()[:8]}],
                ip=_ip(self.rng, 9009),
            )

    def a_consent(self, v: Person, at: datetime, i: int) -> None:
        if v.provider == "ms":
            app = self.rng.choice(("Mail Sync Pro", "PDF Converter Online", "Secure Docs Viewer"))
            perms = (
                f"[] => [[Id: {self.uuid()}, ClientId: {self.uuid()}, PrincipalId: {v.uid}, "
                f"ResourceId: {self.uuid()}, ConsentType: Principal, "
                "Scope: Mail.Read Mail.ReadWrite offline_access User.Read openid profile, CreatedDateTime: , "
                "LastModifiedDateTime ]; ]"
            )
            self.o365(
                v,
                at,
                "Consent to application.",
                workload="AzureActiveDirectory",
                record_type=8,
                result="Success",
                user_type=0,
                object_id=self.uuid(),
                ClientIP=v.home_ip,
                ModifiedProperties=[
                    {"Name": "ConsentContext.IsAdminConsent", "NewValue": "False", "OldValue": ""},
                    {"Name": "ConsentAction.Permissions", "NewValue": perms, "OldValue": ""},
                    {"Name": "TargetId.ServicePrincipalNames", "NewValue": app, "OldValue": ""},
                ],
                Target=[{"ID": app, "Type": 1}],
            )
        else:
            self.gws_authorize(
                v,
                at,
                client_id=f"{self.rng.randrange(10**9)}-x.apps.googleusercontent.com",
                app="Inbox Cleaner",
                scopes=("https://mail.google.com/", "openid"),
                ip=v.home_ip,
            )

    def a_delegation(self, v: Person, at: datetime, i: int) -> None:
        helper = f"svc-{self.uuid()[:6]}@{MS_DOMAIN}"
        target = self.rng.choice([q for q in self.people if q.provider == "ms" and q is not v] or [v])
        self.o365(
            v,
            at,
            "Add-MailboxPermission",
            user_type=2,
            object_id=target.upn,
            ClientIP=_ip(self.rng, 9009),
            Parameters=[
                {"Name": "Identity", "Value": target.upn},
                {"Name": "User", "Value": helper},
                {"Name": "AccessRights", "Value": "FullAccess"},
            ],
        )

    def a_impersonation(self, v: Person, at: datetime, i: int) -> None:
        if v.provider == "ms":
            self.o365(
                v,
                at,
                "New-ManagementRoleAssignment",
                user_type=2,
                ClientIP=_ip(self.rng, 9009),
                Parameters=[
                    {"Name": "Role", "Value": "ApplicationImpersonation"},
                    {"Name": "User", "Value": f"svc-{self.uuid()[:6]}@{MS_DOMAIN}"},
                ],
            )
        else:
            self.gws(
                "gws_admin.ndjson",
                v,
                at,
                "admin",
                "SECURITY_SETTINGS",
                "AUTHORIZE_API_CLIENT_ACCESS",
                [
                    {"name": "API_CLIENT_NAME", "value": str(self.rng.randrange(10**10))},
                    {"name": "API_SCOPES", "value": "https://mail.google.com/"},
                ],
                ip=_ip(self.rng, 9009),
            )

    def a_forwarding(self, v: Person, at: datetime, i: int) -> None:
        drop = f"archive{self.rng.randrange(1000)}@mailbox-drop.example.net"
        if v.provider == "ms":
            self.o365(
                v,
                at,
                "New-InboxRule",
                ClientIP=_ip(self.rng, 9009),
                Parameters=[
                    {"Name": "Name", "Value": "."},
                    {"Name": "ForwardTo", "Value": drop},
                    {"Name": "DeleteMessage", "Value": "True"},
                    {"Name": "StopProcessingRules", "Value": "True"},
                ],
            )
        else:
            self.gws(
                "gws_login.ndjson",
                v,
                at,
                "login",
                "email_forwarding_change",
                "email_forwarding_out_of_domain",
                [{"name": "email_forwarding_destination_address", "value": drop}],
                ip=_ip(self.rng, 9009),
            )

    def a_provider_risk(self, v: Person, at: datetime, i: int) -> None:
        if v.provider == "ms":
            a = self.attacker(v)
            self.emit(
                "entra_risk.json",
                {
                    "id": self.uuid(),
                    "requestId": self.uuid(),
                    "correlationId": self.uuid(),
                    "riskEventType": "leakedCredentials",
                    "riskState": "atRisk",
                    "riskLevel": "high",
                    "riskDetail": "none",
                    "source": "IdentityProtection",
                    "detectionTimingType": "offline",
                    "activity": "user",
                    "tokenIssuerType": "AzureAD",
                    "ipAddress": None,
                    "location": None,
                    "activityDateTime": _graph_time(at),
                    "detectedDateTime": _graph_time(at),
                    "lastUpdatedDateTime": _graph_time(at),
                    "userId": v.uid,
                    "userDisplayName": v.name,
                    "userPrincipalName": v.upn,
                    "additionalInfo": "[]",
                    **({"ipAddress": _ip(self.rng, a[4])} if i % 2 else {}),
                },
            )
        elif i % 2 == 0:
            self.emit(
                "gws_alerts.json",
                {
                    "alertId": self.uuid(),
                    "customerId": "C03fabrik",
                    "createTime": _graph_time(at),
                    "startTime": _graph_time(at),
                    "endTime": _graph_time(at),
                    "updateTime": _graph_time(at),
                    "type": "Leaked password",
                    "source": "Google identity",
                    "data": {
                        "@type": "type.googleapis.com/google.apps.alertcenter.type.AccountWarning",
                        "email": v.upn,
                    },
                    "metadata": {"severity": "HIGH", "status": "NOT_STARTED"},
                    "deleted": False,
                },
            )
        else:
            a = self.attacker(v)
            self.gws(
                "gws_login.ndjson",
                v,
                at,
                "login",
                "account_warning",
                "suspicious_login",
                [
                    {"name": "affected_email_address", "value": v.upn},
                    {"name": "login_timestamp", "intValue": str(int(at.timestamp() * 1_000_000))},
                ],
                ip=_ip(self.rng, a[4]),
            )

    # --- output ----------------------------------------------------------------------------------------------
    def build(self) -> Scenario:
        self.make_people()
        self.ordinary()
        self.attacks()
        with self.background():
            self.mail_clients()
            self.token_replays()
            self.native_mail_setups()
        return self

    def write(self, out: Path) -> dict[str, int]:
        out.mkdir(parents=True, exist_ok=True)
        counts: dict[str, int] = {}
        for name, records in self.files.items():
            records.sort(key=_when)
            counts[name] = len(records)
            path = out / name
            if name.endswith(".ndjson"):
                path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
            elif name == "entra_risk.json":
                path.write_bytes(orjson.dumps({"value": records}))
            elif name == "gws_alerts.json":
                path.write_bytes(orjson.dumps({"alerts": records}))
            else:
                path.write_bytes(orjson.dumps(records))
        labels = {
            "users": self.users_n,
            "days": self.days,
            "seed": self.seed,
            "start": START.isoformat(),
            "ordinary_users": [p.upn for p in self.people],
            "attacks": self.labels,
        }
        (out / "labels.json").write_bytes(orjson.dumps(labels, option=orjson.OPT_INDENT_2))
        (out / CONFIG_FILE).write_text(SCENARIO_CONFIG)
        return counts


# What the scenario's organisations have configured; `mailwarden eval DIR` reads it from DIR.
CONFIG_FILE = "mailwarden.toml"
SCENARIO_CONFIG = (
    "# The scenario's tenants' own settings (mailwarden eval reads this file from the scenario's directory).\n"
    "[mailwarden]\n"
    "# the mail apps the Google organisation's admin console lists as trusted\n"
    "trusted_mail_apps = [\n" + "".join(f'  "{c[1]}",  # {c[0]}\n' for c in NATIVE_MAIL_CLIENTS) + "]\n"
    "# the Microsoft 365 organisation's corporate VPN egress (AWS us-east-1)\n"
    f'own_networks = ["{VPN_EGRESS}"]\n'
)


def _weekday(day: int) -> bool:
    return (START + timedelta(days=day)).weekday() < 5


def _when(r: dict[str, Any]) -> str:
    ident = r.get("id")
    if isinstance(ident, dict):
        return str(ident.get("time"))
    return str(r.get("createdDateTime") or r.get("CreationTime") or r.get("activityDateTime") or r.get("startTime"))


def generate(users: int, days: int, seed: int) -> Scenario:
    return Scenario(users, days, seed).build()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=200, help="employees across both organisations (default 200)")
    p.add_argument("--days", type=int, default=30, help="days of activity (default 30; attacks after day 8)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--out", required=True, help="directory to write the records and labels.json into")


def run(args: argparse.Namespace) -> int:
    if args.users < 10 or args.days < WARMUP_DAYS + 2:
        print(f"mailwarden scenario: need --users >= 10 and --days >= {WARMUP_DAYS + 2}")
        return 2
    s = generate(args.users, args.days, args.seed)
    counts = s.write(Path(args.out))
    total = sum(counts.values())
    print(f"wrote {total} records for {args.users} users over {args.days} days to {args.out}")
    for name, n in counts.items():
        print(f"  {name}: {n}")
    cats: dict[str, int] = {}
    for a in s.labels:
        cats[a["category"]] = cats.get(a["category"], 0) + 1
    print(f"  labels.json: {len(s.labels)} attacks in {len(cats)} categories")
    return 0
