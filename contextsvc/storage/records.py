"""How a service document is stored: one line of JSON, with its index keys first.

Both log engines (the file and the in-memory one) store documents in this form;
the store's indexes are built from the keys named in :data:`INDEX_KEYS`, read
without parsing the whole document when it is in this layout.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

# The fields the store indexes, in the order they are written after the id. ``due``
# is when housekeeping next has work for the service (a timestamp the domain keeps
# up to date, see contextsvc.domain.timed); records written before it existed lack it.
INDEX_KEYS = ("customer_id", "contact_key", "due")
# A document may hold the records of the idempotency keys of the requests that wrote
# it (``requests``: key -> record, see contextsvc.domain.idempotency). The store
# indexes those keys too: :func:`encode` lists them under ``_keys`` after the index
# keys, so that catching up finds them without parsing the document.
REQUESTS = "requests"
KEY_LIST = "_keys"
TOMBSTONE = b'{"_deleted": true}'
# Id 0 is never a service: the store's own document, holding the records of requests
# that belong to no one service (a purge).
STORE_DOC = 0

Location = tuple[int, int]  # where an engine keeps a document: (offset or index, length)
# the values of INDEX_KEYS, then the idempotency keys the document holds
Keys = tuple["str | None", "str | None", "str | None", "tuple[str, ...]"]
Record = tuple[int, Location, "Keys | None"]  # (service id, location, keys); None: deleted

_decode = json.JSONDecoder().decode  # json.loads(bytes) would guess the encoding each time

_STRING = rb'(null|"(?:[^"\\]|\\.)*")'
_STR = rb'"(?:[^"\\]|\\.)*"'
_KEYS = re.compile(rb'\{"service_id":[0-9]+,"customer_id":' + _STRING + rb',"contact_key":'
                   + _STRING + rb'(?:,"due":' + _STRING + rb')?'
                   + rb'(?:,"_keys":(\[(?:' + _STR + rb'(?:,' + _STR + rb')*)?\]))?')
NO_KEYS: tuple[str, ...] = ()


# json.dumps builds an encoder at each call when given any argument
_encoder = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def encode(doc: dict[str, Any]) -> bytes:
    """One line of JSON with the id and the index keys first. ensure_ascii: lone
    surrogates from JSON escapes survive the round trip."""
    ordered = {"service_id": doc["service_id"], **{key: doc.get(key) for key in INDEX_KEYS}}
    if doc.get(REQUESTS):
        ordered[KEY_LIST] = list(doc[REQUESTS])
    ordered.update(doc)
    return _encoder.encode(ordered).encode("ascii")


def encode_store_doc(doc: dict[str, Any]) -> bytes:
    """The store's own document (id 0): its request records, nothing else."""
    return _encoder.encode({REQUESTS: doc.get(REQUESTS, {})}).encode("ascii")


def decode(body: bytes) -> dict[str, Any]:
    """The document as it was handed in: index keys it did not have are dropped.
    Raises ValueError (UnicodeDecodeError included) when ``body`` is not one."""
    doc = _decode(body.decode())
    for key in INDEX_KEYS:
        if key in doc and doc[key] is None:
            del doc[key]
    doc.pop(KEY_LIST, None)
    return doc


def index_keys(doc: dict[str, Any]) -> Keys:
    requests = doc.get(REQUESTS)
    return (doc.get("customer_id"), doc.get("contact_key"), doc.get("due"),
            tuple(requests) if requests else NO_KEYS)


class Encoded(NamedTuple):
    """A service document already in its stored form, with what the store indexes:
    a store writes it as it is. Import encodes its services in several processes
    at once (contextsvc.domain.export) and hands these to ``put_services``."""

    service_id: int
    body: bytes
    keys: Keys


def encoded(doc: dict[str, Any]) -> Encoded:
    return Encoded(doc["service_id"], encode(doc), index_keys(doc))


def _string(raw: bytes | None) -> str | None:
    if raw is None or raw == b"null":
        return None
    return json.loads(raw) if b"\\" in raw else raw[1:-1].decode("ascii")


def keys_at(line: bytes, start: int, end: int | None = None) -> Keys | None:
    """The index keys of the document in ``line[start:end]``, or None when it is not
    a service document. Documents in our own layout are not parsed."""
    match = _KEYS.match(line, start, len(line) if end is None else end)
    if match is not None:
        keys = match.group(4)
        return (_string(match.group(1)), _string(match.group(2)), _string(match.group(3)),
                tuple(json.loads(keys)) if keys is not None else NO_KEYS)
    try:  # not in our own layout (written by another tool, or the store's own): parse it
        doc = json.loads(line[start:end])
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    requests = doc.get(REQUESTS)
    return (*(value if isinstance(value, str) else None  # type: ignore[return-value]
              for value in map(doc.get, INDEX_KEYS)),
            tuple(requests) if isinstance(requests, dict) and requests else NO_KEYS)
