"""Timestamps: ISO 8601 in (zone optional, UTC when absent), UTC milliseconds out."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?\Z",
    re.ASCII)


def parse(text: str) -> datetime:
    """Parse ``YYYY-MM-DDTHH:MM:SS[.fff…][Z|±HH:MM]`` into an aware UTC datetime.

    Digits past the millisecond are truncated. Raises ``ValueError``.
    """
    match = _ISO.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError("Not a valid timestamp; use YYYY-MM-DDTHH:MM:SS.sssZ")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7), match.group(8)
    millis = int((fraction or "0")[:3].ljust(3, "0"))
    offset = timedelta(0)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        zh, zm = int(zone[1:3]), int(zone[4:6])
        if zh > 23 or zm > 59:
            raise ValueError("Not a valid time zone offset")
        offset = sign * timedelta(hours=zh, minutes=zm)
    try:
        local = datetime(year, month, day, hour, minute, second, millis * 1000,
                         tzinfo=timezone(offset))
        value = local.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise ValueError("Not a valid date/time") from None
    if value.year < 1:
        raise ValueError("Not a valid date/time")
    return value


def format(value: datetime) -> str:  # noqa: A001 - mirrors parse()
    # isoformat truncates to the millisecond and ends in "+00:00" in UTC
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


def normalize(text: str) -> str:
    return format(parse(text))


def now() -> str:
    return format(datetime.now(timezone.utc))


def millis_between(start: str, end: str) -> int:
    """Milliseconds from ``start`` to ``end`` (both normalized); 0 when end precedes start."""
    delta = parse(end) - parse(start)
    return max(0, delta // timedelta(milliseconds=1))
