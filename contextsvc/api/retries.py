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

import weakref
from datetime import datetime
from typing import Any, NamedTuple

from flask import current_app, g, request

from ..domain import idempotency, timeutil, versions
from ..errors import RequestRunning
from ..storage import ServiceStore
from . import request as req

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
PREFIX = "/genesys/1/cs"


class Answer(NamedTuple):
    """A recorded answer, as a replay sends it again (see operations.replay)."""

    status: int
    body: bytes | None  # as jsonify writes it
    mimetype: str | None
    location: str | None
    raw: str  # the fingerprint of the bytes of the request it answered
    until: datetime  # when its record expires


def answer(record: dict[str, Any]) -> Answer:
    """The answer a record holds."""
    body = None if record.get("body") is None else current_app.json.response(record["body"])
    return Answer(record["status"], None if body is None else body.get_data(),
                  None if body is None else body.mimetype, record.get("location"),
                  record.get("raw", ""), timeutil.parse(record["until"]))


# Answers replayed by this process, per store: a live record with an answer never
# changes (a key is recorded again only once its record expired), so a retry this
# process has answered before is answered again without asking the store, and
# without decoding and encoding the answer again. The store is asked whenever a
# key is not here, so a record written by another process is found.
KNOWN = 4096  # answers kept per store, the oldest dropped first
_known: weakref.WeakKeyDictionary[ServiceStore, dict[str, Answer]] = (
    weakref.WeakKeyDictionary())


def _remember(store: ServiceStore, key: str, known: Answer) -> None:
    answers = _known.setdefault(store, {})
    if len(answers) >= KNOWN:
        answers.pop(next(iter(answers)), None)
    answers[key] = known


def begin() -> Answer | None:
    """Read the request's conditions onto its store, before its body is parsed.
    Returns the answer to replay when the request carries a key that already
    answered this very request (the same bytes)."""
    store = g.store
    sent_request = request._get_current_object()  # type: ignore[attr-defined]
    method = sent_request.method
    if method != "GET":
        header = sent_request.headers.get("If-Match")
        if header is not None:
            store.if_match = versions.parse(header, "If-Match")
    if method != "POST":
        return None
    raw = sent_request.headers.get(KEY)
    if raw is None:
        return None
    key = idempotency.check_key(raw)
    path = sent_request.path
    if path.startswith(PREFIX + "/"):  # both prefixes name the same resource
        path = path[len(PREFIX):]
    # (no query string: nothing to parse)
    query = list(sent_request.args.items(multi=True)) if sent_request.query_string else []
    sent = idempotency.raw_fingerprint(method, path, query, req.raw_body())
    known = _known.get(store.store, {}).get(key)
    if known is not None and known.raw == sent and known.until > store.clock():
        return known
    # the fast path, for a key this process has seen; the write checks every key again
    record = store.find_request(key) if store.may_hold_request(key) else None
    if (record is not None and record.get("raw") == sent
            and idempotency.replayable(record, None, store.clock())):
        known = answer(record)
        _remember(store.store, key, known)
        return known
    g.retry = (key, path, query, sent, record)
    return None


def pending(status: int, body: Any) -> Answer | None:
    """After the body is parsed: the answer to replay when the key answered the
    same request sent with other bytes (another key order, other spacing, the
    other prefix); else the request's key goes to its store, to be recorded."""
    found = g.pop("retry", None)
    if found is None:
        return None
    key, path, query, sent, record = found
    fp = idempotency.fingerprint(request.method, path, query, body)
    if record is not None and idempotency.replayable(record, fp, g.store.clock()):
        return answer(record)
    g.store.request = idempotency.Pending(
        key, fp, status, current_app.config["CONTEXTSVC"]["idempotency"]["retention"], sent)
    return None


def recorded(record: dict[str, Any]) -> Answer:
    """A write found the key recorded (a duplicate that ran at the same time): the
    answer to replay, or the 422/409 it calls for."""
    if not idempotency.replayable(record, g.store.request.fingerprint, g.store.clock()):
        raise RequestRunning("The first request with this Idempotency-Key is still running; "
                             "retry in a moment")
    return answer(record)


def not_modified(etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    return header is not None and versions.unchanged(versions.parse(header, "If-None-Match"),
                                                     etag)
