"""Small readers shared by every normalizer. Pure, and none of them raises on odd input.

Real records vary in ways the vendors' docs do not promise (detections.md §2, §4): numbers and
booleans arrive as strings, `ClientIP` carries a port or brackets, timestamps come without a zone
or with nine fractional digits, objects are null, and name/value lists repeat a name. Each helper
returns a typed value or None and never raises, except `parse_time` whose callers turn the error
into a Rejection that names the field.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson


def canonical_bytes(record: Any) -> bytes:
    """The record as sorted-key JSON; stdlib json for what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(record, sort_keys=True, default=str).encode()


def digest_id(record: Any) -> str:
    """A stable id for a record that has none of its own."""
    return "sha256:" + hashlib.sha256(canonical_bytes(record)).hexdigest()


def parse_time(value: Any, *, epoch: bool = False) -> datetime:
    """ISO 8601 with any number of fractional digits, a `T` or a space; naive values are UTC.

    With `epoch`, numbers are Unix seconds (Google documents `id.time` as epoch seconds although it
    sends RFC 3339); elsewhere a number where a timestamp belongs is an error.
    """
    if epoch and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or not 0 <= value < 253402300800:
            raise ValueError("epoch seconds out of range")
        return datetime.fromtimestamp(value, tz=UTC)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("missing timestamp")
    if len(value) <= 35 and value[:4].isdigit():
        # The usual forms (Graph's `2026-01-05T06:00:00.1234567Z`, `...Z`, `+00:00`): Python 3.11's parser
        # reads them, truncating past microseconds as below, at a tenth of the cost of the loop.
        try:
            fast = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return (fast if fast.tzinfo else fast.replace(tzinfo=UTC)).astimezone(UTC)
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        text = f"{head}.{(digits + '000000')[:6]}{rest[i:]}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def text(value: Any, limit: int = 512) -> str | None:
    """A scalar as stripped, clipped text; None for empty, objects and lists."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float)):
        out = str(value).strip()
        return out[:limit] or None
    return None


def integer(value: Any) -> int | None:
    """An int from an int or a decimal string ("15", "-6709442587437772138"); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        s = value.strip()
        if s.lstrip("-").isdigit() and len(s) < 40:
            return int(s)
    return None


def number(value: Any) -> float | None:
    """A finite float from a number or numeric text."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value.strip()[:40])
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def boolean(value: Any) -> bool | None:
    """True/False from a bool or its text ("True", "false", "1", "0"); None when it is neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0 if value in (0, 1) else None
    if isinstance(value, str):
        s = value.strip().lower()
        if s in ("true", "1", "yes"):
            return True
        if s in ("false", "0", "no"):
            return False
    return None


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[Any]:
    """A list as is, one object as a one-element list, anything else as empty."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    return []


def lower_keys(record: Mapping[str, Any]) -> dict[str, Any]:
    """Keys folded to lower case: Panther's copies of O365 records use `creationtime`, the API `CreationTime`."""
    return {k.lower(): v for k, v in record.items() if isinstance(k, str)}


def name_values(value: Any) -> dict[str, str]:
    """`[{Name, Value}]` lists (ExtendedProperties, Parameters…) as a dict; the first of a repeated name wins."""
    out: dict[str, str] = {}
    for entry in items(value):
        if not isinstance(entry, dict):
            continue
        e = lower_keys(entry)
        name = text(e.get("name"), 128)
        if name is None or name in out:
            continue
        v = e.get("value", e.get("newvalue"))
        if isinstance(v, bool):
            out[name] = "True" if v else "False"
        else:
            out[name] = text(v, 2048) or ""
    return out


_BRACKETED = re.compile(r"^\[([^\]]+)\](?::\d+)?$")


def ip(value: Any) -> str | None:
    """A canonical IP from text that may carry a port (`1.2.3.4:443`, `[2001:db8::1]:443`); None if invalid."""
    raw = text(value, 80)
    if raw is None:
        return None
    return canonical_ip(raw)


@functools.lru_cache(maxsize=65536)
def canonical_ip(raw: str) -> str | None:
    """`ip()` for stripped, clipped text. Cached: a tenant's sign-ins come from far fewer addresses than
    records (bounded, so a flood of distinct addresses only costs misses)."""
    m = _BRACKETED.match(raw)
    candidates = [m.group(1)] if m else [raw]
    if not m and raw.count(":") == 1:
        candidates.append(raw.split(":", 1)[0])  # IPv4 with a port; IPv6 always has more colons
    for c in candidates:
        try:
            return str(ipaddress.ip_address(c.strip()))
        except ValueError:
            continue
    return None  # "invalid IP text" happens in real logs (e.g. 123.456.7.89); keep the record, drop the IP


def latlon(lat: Any, lon: Any) -> tuple[float | None, float | None]:
    """Coordinates only when both are present and on the globe; Graph sends `{}` or nulls when unknown."""
    a, b = number(lat), number(lon)
    if a is None or b is None or not (-90 <= a <= 90 and -180 <= b <= 180) or (a == 0 and b == 0):
        return None, None
    return a, b


def strings(value: Any, limit: int = 200, max_items: int = 100) -> tuple[str, ...]:
    """A list of scalars (or one scalar) as unique texts in order."""
    out: list[str] = []
    for v in value if isinstance(value, list) else [value]:
        t = text(v, limit)
        if t is not None and t not in out:
            out.append(t)
        if len(out) >= max_items:
            break
    return tuple(out)


def params(pairs: Iterable[tuple[str, Any]], limit: int = 40) -> tuple[tuple[str, str], ...]:
    """(name, text) pairs for Event.parameters, skipping empties, clipped in count and length."""
    out: list[tuple[str, str]] = []
    for name, value in pairs:
        if isinstance(value, (list, tuple)):
            t = ", ".join(x for x in (text(v, 200) for v in value) if x)[:512] or None
        else:
            t = text(value, 512)
        if t is not None:
            out.append((name[:128], t))
        if len(out) >= limit:
            break
    return tuple(out)


def domain_of(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rsplit("@", 1)[1].strip().strip(">]").lower() or None
