"""How a service document is stored: one line of JSON, with its index keys first.

Both log engines (the file and the in-memory one) store documents in this form;
the store's indexes are built from the keys named in :data:`INDEX_KEYS`, read
without parsing the whole document when it is in this layout.
"""

from __future__ import annotations

import json
import re
from typing import Any

# The fields the store indexes, in the order they are written after the id. ``due``
# is when housekeeping next has work for the service (a timestamp the domain keeps
# up to date, see contextsvc.domain.timed); records written before it existed lack it.
INDEX_KEYS = ("customer_id", "contact_key", "due")
TOMBSTONE = b'{"_deleted": true}'

Location = tuple[int, int]  # where an engine keeps a document: (offset or index, length)
Keys = tuple["str | None", "str | None", "str | None"]  # the values of INDEX_KEYS
Record = tuple[int, Location, "Keys | None"]  # (service id, location, keys); None: deleted

_decode = json.JSONDecoder().decode  # json.loads(bytes) would guess the encoding each time

_STRING = rb'(null|"(?:[^"\\]|\\.)*")'
_KEYS = re.compile(rb'\{"service_id":[0-9]+,"customer_id":' + _STRING + rb',"contact_key":'
                   + _STRING + rb'(?:,"due":' + _STRING + rb')?')


def encode(doc: dict[str, Any]) -> bytes:
    """One line of JSON with the id and the index keys first. ensure_ascii: lone
    surrogates from JSON escapes survive the round trip."""
    ordered = {"service_id": doc["service_id"], **{key: doc.get(key) for key in INDEX_KEYS},
               **doc}
    return json.dumps(ordered, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def decode(body: bytes) -> dict[str, Any]:
    """The document as it was handed in: index keys it did not have are dropped.
    Raises ValueError (UnicodeDecodeError included) when ``body`` is not one."""
    doc = _decode(body.decode())
    for key in INDEX_KEYS:
        if key in doc and doc[key] is None:
            del doc[key]
    return doc


def index_keys(doc: dict[str, Any]) -> Keys:
    return doc.get("customer_id"), doc.get("contact_key"), doc.get("due")


def _string(raw: bytes | None) -> str | None:
    if raw is None or raw == b"null":
        return None
    return json.loads(raw) if b"\\" in raw else raw[1:-1].decode("ascii")


def keys_at(line: bytes, start: int) -> Keys | None:
    """The index keys of the document that starts at ``line[start]``, or None when
    it is not a service document. Documents in our own layout are not parsed."""
    match = _KEYS.match(line, start)
    if match is not None:
        return _string(match.group(1)), _string(match.group(2)), _string(match.group(3))
    try:  # not in our own layout (written by another tool): parse it all
        doc = json.loads(line[start:])
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    return tuple(  # type: ignore[return-value]
        value if isinstance(value, str) else None for value in map(doc.get, INDEX_KEYS))
