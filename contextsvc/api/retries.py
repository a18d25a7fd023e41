"""Safe retries over HTTP (API.md 10.1, 10.2): the ``Idempotency-Key``, ``If-Match``
and ``If-None-Match`` headers, read once per request by the operation wrapper
(:mod:`.operations`) and handed to the request's store. The rules themselves are
in :mod:`contextsvc.domain.idempotency` and :mod:`contextsvc.domain.versions`.

* ``Idempotency-Key`` is honoured on every POST (sections 3, 6 and 10.3 of the
  contract); other methods are idempotent by themselves, and ignore it.
* ``If-Match`` is checked by every write to a service, its states or its tasks;
  writes that name no existing service (a start, a composite start, a purge)
  ignore it.
* ``If-None-Match`` is answered by ``GET /services/{sid}``.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, request

from ..domain import idempotency, versions
from ..errors import RequestRunning
from . import request as req

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
PREFIX = "/genesys/1/cs"


def begin() -> dict[str, Any] | None:
    """Read the request's conditions onto its store, before its body is parsed.
    Returns the record to replay when the request carries a key that already
    answered this very request (the same bytes)."""
    store = g.store
    if request.method != "GET":
        header = request.headers.get("If-Match")
        if header is not None:
            store.if_match = versions.parse(header, "If-Match")
    if request.method != "POST":
        return None
    raw = request.headers.get(KEY)
    if raw is None:
        return None
    key = idempotency.check_key(raw)
    path = request.path
    if path.startswith(PREFIX + "/"):  # both prefixes name the same resource
        path = path[len(PREFIX):]
    query = list(request.args.items(multi=True)) if request.args else []
    sent = idempotency.raw_fingerprint(request.method, path, query, req.raw_body())
    record = store.find_request(key)  # the fast path; the write checks again
    if (record is not None and record.get("raw") == sent
            and idempotency.replayable(record, None, store.clock())):
        return record
    g.retry = (key, path, query, sent, record)
    return None


def pending(status: int, body: Any) -> dict[str, Any] | None:
    """After the body is parsed: the record to replay when the key answered the
    same request sent with other bytes (another key order, other spacing, the
    other prefix); else the request's key goes to its store, to be recorded."""
    found = g.pop("retry", None)
    if found is None:
        return None
    key, path, query, sent, record = found
    fp = idempotency.fingerprint(request.method, path, query, body)
    if record is not None and idempotency.replayable(record, fp, g.store.clock()):
        return record
    g.store.request = idempotency.Pending(
        key, fp, status, current_app.config["CONTEXTSVC"]["idempotency"]["retention"], sent)
    return None


def recorded(record: dict[str, Any]) -> dict[str, Any]:
    """A write found the key recorded (a duplicate that ran at the same time): the
    record to replay, or the 422/409 it calls for."""
    if not idempotency.replayable(record, g.store.request.fingerprint, g.store.clock()):
        raise RequestRunning("The first request with this Idempotency-Key is still running; "
                             "retry in a moment")
    return record


def not_modified(etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    return header is not None and versions.unchanged(versions.parse(header, "If-None-Match"),
                                                     etag)
