"""Idempotency keys (API.md 10.1): what a key may be, what makes two requests the
same, and the record a key leaves.

The record of a key is kept with the effect it protects, in the unit of work that
makes it: in the document of the service the request wrote (``requests``: key ->
record, a server-owned field never shown), or, for a request whose effect spans
several units of work (a purge), in the store's own document. The store indexes
every key (see contextsvc.storage.base, "Request records"), so that a retry on any
worker finds it, and refuses to write a key twice. A record::

    {"fp": <fingerprint>, "until": <when it expires>,
     "status": 201, "body": {...} | null, "location": "/genesys/1/cs/services/7" | null}

A purge's record says ``"running_until"`` instead of the answer while it runs (a
lease it renews; a purge whose worker died leaves it to expire, and a retry then
takes over). Only successful answers are recorded: a refused request changed
nothing, and its retry is processed anew.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..errors import ContextError, Invalid, KeyMismatch, RequestRunning
from ..storage.base import RequestKey
from . import timeutil

Doc = dict[str, Any]
REQUESTS = "requests"  # the field of a document that holds its records
MAX_KEY_LENGTH = 255
_KEY = re.compile(r"[\x20-\x7e]{1,255}")
# how long a running purge's claim on its key lasts without being renewed
LEASE = 60
RENEW_EVERY = 15


@dataclass(frozen=True)
class Pending:
    """A request that carries a key: what its record will say it was."""

    key: str
    fingerprint: str
    status: int
    retention: int  # seconds a record is kept
    raw: str = ""  # the fingerprint of the body's bytes (see raw_fingerprint)


def check_key(value: str) -> str:
    """A key as the header gave it: 1 to 255 printable ASCII characters."""
    if not _KEY.fullmatch(value):
        what = ("empty" if not value else f"longer than {MAX_KEY_LENGTH} characters"
                if len(value) > MAX_KEY_LENGTH else "not printable ASCII")
        raise Invalid(f"Invalid Idempotency-Key: {what}",
                      {"Idempotency-Key": [f"1 to {MAX_KEY_LENGTH} printable ASCII characters; "
                                           f"this one is {what}"]})
    return value


def fingerprint(method: str, path: str, query: list[tuple[str, str]], body: Any) -> str:
    """What makes two requests the same: method, path (without the prefix: both
    prefixes name the same resource), query arguments and body (as canonical JSON,
    so that key order and spacing do not matter)."""
    canonical = json.dumps([method, path, sorted(query), body], sort_keys=True,
                           separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def raw_fingerprint(method: str, path: str, query: list[tuple[str, str]], body: bytes) -> str:
    """The fingerprint of a request as sent: a retry sends the same bytes, and is
    known by them without parsing its body (the canonical fingerprint decides
    when the bytes differ)."""
    return hashlib.sha256(_head(method, path, tuple(query)) + body).hexdigest()


@functools.lru_cache(maxsize=256)  # retries mostly go to a few paths (starts)
def _head(method: str, path: str, query: tuple[tuple[str, str], ...]) -> bytes:
    return json.dumps([method, path, sorted(query)], separators=(",", ":")).encode() + b"\n"


def _until(now: datetime, seconds: int) -> str:
    return timeutil.format(now + timedelta(seconds=seconds))


def answered(pending: Pending, body: Any, location: str | None, now: datetime) -> Doc:
    return {"fp": pending.fingerprint, "raw": pending.raw,
            "until": _until(now, pending.retention),
            "status": pending.status, "body": body, "location": location}


def running(pending: Pending, now: datetime) -> Doc:
    return {"fp": pending.fingerprint, "raw": pending.raw,
            "until": _until(now, pending.retention), "running_until": _until(now, LEASE)}


def record(doc: Doc, pending: Pending, body: Any, location: str | None,
           now: datetime) -> None:
    """Keep the answer to ``pending`` in ``doc``, the document its effect is in."""
    doc.setdefault(REQUESTS, {})[pending.key] = answered(pending, body, location, now)


def abandoned(rec: Doc, now: datetime) -> bool:
    """A running request whose claim lapsed: its worker died."""
    return "running_until" in rec and rec["running_until"] <= timeutil.format(now)


def replayable(rec: Doc, fp: str | None, now: datetime) -> bool:
    """Whether ``rec`` answers a request with fingerprint ``fp`` (None: known to be
    the same request) now: True to replay it, False when it is a running request
    that was abandoned (take it over). Raises KeyMismatch or RequestRunning."""
    if fp is not None and rec.get("fp") != fp:
        raise KeyMismatch("This Idempotency-Key was used with another request (method, "
                          "path or body); use a new key for a new request")
    if "running_until" in rec:
        if abandoned(rec, now):
            return False
        raise RequestRunning("The first request with this Idempotency-Key is still running; "
                             "retry in a moment")
    return True


def prune(doc: Doc, now: datetime) -> bool:
    """Drop the records that expired; whether any did."""
    records = doc.get(REQUESTS)
    if not records:
        return False
    stamp = timeutil.format(now)
    live = {key: rec for key, rec in records.items() if rec.get("until", "") > stamp}
    if len(live) == len(records):
        return False
    if live:
        doc[REQUESTS] = live
    else:
        del doc[REQUESTS]
    return True


def expiry(doc: Doc) -> datetime | None:
    """When the first record of ``doc`` expires (housekeeping then drops it)."""
    records = doc.get(REQUESTS)
    if not records:
        return None
    return timeutil.parse(min(rec.get("until", "") for rec in records.values()))


def spanning(store: Any, pending: Pending | None, clock: Callable[[], datetime],
             work: Callable[[Callable[[], None]], Any]) -> Any:
    """Run ``work(tick)``, whose effect spans several units of work (a purge), once
    per key: its key is claimed in the store's own document first (a duplicate
    meanwhile gets RequestRunning, 409), the claim is renewed when ``work`` calls
    ``tick``, and the answer replaces the claim at the end. A claim whose worker
    died lapses after LEASE seconds; a retry then runs the work again. Returns
    what ``work`` returned (the body of the answer)."""
    if pending is None:
        return work(lambda: None)

    def key() -> RequestKey:
        return RequestKey(pending.key, timeutil.format(clock()))

    store.put_request(key(), running(pending, clock()),
                      unless=lambda rec: not abandoned(rec, clock()))
    renewed = time.monotonic()

    def tick() -> None:
        nonlocal renewed
        if time.monotonic() - renewed >= RENEW_EVERY:
            store.put_request(key(), running(pending, clock()))
            renewed = time.monotonic()

    try:
        body = work(tick)
    except BaseException:
        try:
            store.put_request(key(), None)  # a retry may run it again at once
        except ContextError:
            pass  # the claim lapses by itself
        raise
    store.put_request(key(), answered(pending, body, None, clock()))
    return body
