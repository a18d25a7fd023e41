"""Expiration and auto-complete (API.md section 6): plain functions on stored service
documents, with "now" passed in, so that a request, a sweep and a test decide alike.

Time decides, not housekeeping: :func:`settle` brings a document read from the store
to what it is at a moment (gone when expired, completed when idle past its
deadline), whatever the sweeper has or has not written yet.

Fields a service document keeps for this (never shown as they are stored):

* ``updated``: when a client last wrote the service or one of its states or tasks;
  expirations and deadlines count from it.
* ``expires``: an expiration the client set (``ttl``, ``expiration_time``); it wins
  over the configuration and later writes do not move it.
* ``auto_complete_after``: the client's own idle period, in seconds (0: never).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from . import idempotency, timeutil

Doc = dict[str, Any]

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"([1-9][0-9]{0,9})([smhdw])", re.ASCII)
# the representation shows these; a client sends ttl/expiration_time/auto_complete_after
SHOWN = ("expiration_time", "auto_complete_at")


def parse_duration(text: str) -> int | None:
    """Seconds of ``<integer><unit>`` (unit s, m, h, d or w; ``2w`` is two weeks);
    None for an empty text. Raises ValueError."""
    text = text.strip()
    if not text:
        return None
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a duration such as 30s, 15m, 12h, 30d or 2w, got {text!r}")
    return int(match.group(1)) * UNITS[match.group(2)]


@dataclass(frozen=True)
class Policy:
    """The configured retention and idle periods, in seconds (None: none)."""

    expiration: int | None = None
    by_type: Mapping[str, int] = field(default_factory=dict)  # service type -> expiration
    auto_complete_after: int | None = None

    @property
    def active(self) -> bool:
        return bool(self.expiration or self.by_type or self.auto_complete_after)


OFF = Policy()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _updated(doc: Doc) -> datetime:
    # services written before lifecycle existed count from their start
    return timeutil.parse(doc.get("updated") or doc["started"]["timestamp"])


# ------------------------------------------------------------------ writes
def touch(doc: Doc, now: datetime) -> None:
    """A client wrote the service (or a state or task of it) at ``now``."""
    doc["updated"] = timeutil.format(now)


def set_expiration(doc: Doc, fields: Mapping[str, Any], now: datetime) -> None:
    """The client's own expiration, from ``ttl`` (seconds; it wins) or
    ``expiration_time`` (a normalized timestamp) when the body has either."""
    if "ttl" in fields:
        doc["expires"] = timeutil.format(now + timedelta(seconds=fields["ttl"]))
    elif "expiration_time" in fields:
        doc["expires"] = fields["expiration_time"]


def set_auto_complete(doc: Doc, fields: Mapping[str, Any]) -> None:
    if "auto_complete_after" in fields:
        doc["auto_complete_after"] = fields["auto_complete_after"]


# ------------------------------------------------------------------ when
def expiration(doc: Doc, policy: Policy) -> datetime | None:
    """When the service stops existing, if ever."""
    if "expires" in doc:
        return timeutil.parse(doc["expires"])
    period = None
    if policy.by_type and "service_type" in doc:
        period = policy.by_type.get(str(doc["service_type"]))
    period = period or policy.expiration
    return _updated(doc) + timedelta(seconds=period) if period else None


def deadline(doc: Doc, policy: Policy) -> datetime | None:
    """When the service, if still active, completes by itself."""
    if "completed" in doc:
        return None
    period = doc.get("auto_complete_after", policy.auto_complete_after)
    return _updated(doc) + timedelta(seconds=period) if period else None


def due(doc: Doc, policy: Policy) -> datetime | None:
    """The next moment housekeeping has something to write for this service."""
    moments = [m for m in (expiration(doc, policy), deadline(doc, policy)) if m is not None]
    return min(moments) if moments else None


def next_due(doc: Doc, policy: Policy) -> datetime | None:
    """The next moment housekeeping has something to write for this service: its
    own lifecycle, or a record of an idempotency key to drop."""
    moments = [m for m in (due(doc, policy), idempotency.expiry(doc)) if m is not None]
    return min(moments) if moments else None


def mark_due(doc: Doc, policy: Policy) -> bool:
    """Record in ``doc["due"]`` when housekeeping next has work for it (the store
    indexes it, so that a sweep reads only what is due). Returns whether it changed."""
    moment = next_due(doc, policy)
    value = timeutil.format(moment) if moment is not None else None
    if doc.get("due") == value:
        return False
    if value is None:
        doc.pop("due", None)
    else:
        doc["due"] = value
    return True


def _concerned(doc: Doc, policy: Policy) -> bool:
    return policy.active or "expires" in doc or "auto_complete_after" in doc


# ------------------------------------------------------------------ at a moment
def settle(doc: Doc, policy: Policy, now: datetime) -> bool:
    """Bring ``doc`` to what it is at ``now``. Returns False when it has expired (it
    no longer exists); otherwise completes it in place if its auto-complete deadline
    has passed, and returns True."""
    if not _concerned(doc, policy):
        return True
    ends = expiration(doc, policy)
    if ends is not None and now >= ends:
        return False
    at = deadline(doc, policy)
    if at is not None and now >= at:
        auto_complete(doc, at)
    return True


def auto_complete(doc: Doc, at: datetime) -> None:
    """Complete the service and its active states and tasks, at ``at``."""
    stamp = timeutil.format(at)
    for resource in (doc, *doc["states"], *doc["tasks"]):
        if "completed" not in resource:
            resource["completed"] = {"timestamp": stamp, "auto_completed": True}
            resource["duration"] = timeutil.millis_between(resource["started"]["timestamp"],
                                                           stamp)


def shown(doc: Doc, policy: Policy) -> dict[str, str]:
    """What the representation shows: ``expiration_time`` when the service will
    expire, ``auto_complete_at`` while it is active with a deadline."""
    if not _concerned(doc, policy):
        return {}
    out = {}
    ends = expiration(doc, policy)
    if ends is not None:
        out["expiration_time"] = timeutil.format(ends)
    at = deadline(doc, policy)
    if at is not None:
        out["auto_complete_at"] = timeutil.format(at)
    return out


_formatted: tuple[datetime | None, str] = (None, "")


def _format_now(now: datetime) -> str:
    """``now`` formatted, once for all the services of an import (formatting is
    most of what :func:`restore` costs)."""
    global _formatted
    if _formatted[0] != now:
        _formatted = (now, timeutil.format(now))
    return _formatted[1]


def restore(doc: Doc, shown_fields: Mapping[str, str], policy: Policy, now: datetime) -> None:
    """The inverse of :func:`shown`, for import (API.md 7.2): give ``doc`` (a service
    read back from its representation, without lifecycle fields) what makes it show
    ``shown_fields`` under ``policy``, so that it expires and completes by itself
    when the exported one would have.

    * ``expiration_time`` becomes the service's own expiration (``expires``): it
      stays that moment, as a client's ``ttl`` would, whatever the configuration.
    * ``auto_complete_at`` (active services): the configured period counts from
      ``updated`` = the deadline minus that period when that moment has passed;
      otherwise the service gets its own period, from the import to the deadline
      (rounded up to a second, ``updated`` set back by the rest).
    * An active service shown without ``auto_complete_at`` does not complete by
      itself: under a configured period it gets its own ``auto_complete_after`` 0.
    * Otherwise the import counts as its last update (``updated`` = ``now``).
    """
    if "expiration_time" in shown_fields:
        doc["expires"] = shown_fields["expiration_time"]
    at = shown_fields.get("auto_complete_at")
    if at is None or "completed" in doc:
        doc["updated"] = _format_now(now)
        if "completed" not in doc and policy.auto_complete_after:
            doc["auto_complete_after"] = 0
        return
    deadline_ = timeutil.parse(at)
    period = policy.auto_complete_after
    if period and deadline_ - timedelta(seconds=period) <= now:
        doc["updated"] = timeutil.format(deadline_ - timedelta(seconds=period))
        return
    own = max(1, math.ceil((deadline_ - now).total_seconds()))
    doc["auto_complete_after"] = own
    doc["updated"] = timeutil.format(deadline_ - timedelta(seconds=own))
