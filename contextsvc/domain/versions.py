"""Versions of a service (API.md 10.2): the ``ETag`` a client reads and sends back in
``If-Match`` (write only if nobody wrote since) or ``If-None-Match`` (answer 304
if nothing changed).

Every client write to a service, its states or its tasks counts one more
``version`` (a server-owned field, never shown); the tag is that count, plus a
digest of what time alone changes in the representation (an auto-completion, the
lifecycle's shown moments) so that a tag never stands for two representations.
Housekeeping writes down what reads already show, and counts nothing.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from typing import Any

from ..errors import Invalid, PreconditionFailed

Doc = dict[str, Any]
ANY = "*"
_TAG = r'(?:W/)?"[\x21\x23-\x7e]*"'
_LIST = re.compile(rf"\s*{_TAG}\s*(?:,\s*{_TAG}\s*)*")
_TAGS = re.compile(_TAG)


def bump(doc: Doc) -> None:
    """A client wrote the service (or one of its states or tasks)."""
    doc["version"] = doc.get("version", 0) + 1


def etag(doc: Doc, shown: Mapping[str, str]) -> str:
    """The strong validator of ``doc`` (settled at the moment of reading) with the
    lifecycle fields ``shown`` beside it."""
    completed = doc.get("completed") or {}
    timed = (completed.get("timestamp") if completed.get("auto_completed") else None,
             shown.get("expiration_time"), shown.get("auto_complete_at"))
    version = doc.get("version", 0)
    if timed == (None, None, None):
        return f'"{version}"'
    return f'"{version}-{zlib.crc32(repr(timed).encode()):08x}"'


def parse(header: str, name: str) -> list[str] | str:
    """The entity tags of an ``If-Match``/``If-None-Match`` header: ``*`` or a list
    of quoted tags (RFC 9110). Anything else is a 400."""
    text = header.strip()
    if text == ANY:
        return ANY
    if not _LIST.fullmatch(text):
        raise Invalid(f"Invalid {name}: expected * or a list of quoted entity tags, such as "
                      '"3"', {name: ['* or quoted entity tags ("3", W/"3"), comma-separated']})
    return _TAGS.findall(text)


def check(tags: list[str] | str, current: str) -> None:
    """If-Match: strong comparison (a weak tag never matches)."""
    if tags != ANY and current not in tags:
        raise PreconditionFailed(f"The service has changed: its ETag is {current}, not "
                                 f"{', '.join(tags)}; read it again")


def unchanged(tags: list[str] | str, current: str) -> bool:
    """If-None-Match: weak comparison."""
    if tags == ANY:
        return True
    return any(tag.removeprefix("W/") == current for tag in tags)
