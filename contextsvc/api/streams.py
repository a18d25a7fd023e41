"""Answers written while they are read from the store, one service at a time, so
that a worker's memory does not grow with the size of an answer."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, current_app

from ..domain import queries
from ..domain.model import render_service
from ..storage import Selection

# Answers whose services take more bytes than this are streamed.
STREAM_ABOVE = 1 << 20


def services(selection: Selection, args: dict[str, Any], status: str | None) -> Response:
    """A JSON array of the services of ``selection`` that match, in order. A first
    pass keeps only the order of the matching ones; the second renders them."""
    # the generator runs after the view has returned, outside the app context
    return current_app.response_class(
        _services(selection, args, status, current_app.json.dumps), mimetype="application/json")


def _services(selection: Selection, args: dict[str, Any], status: str | None,
              dumps: Callable[[Any], str]) -> Iterator[bytes]:
    with selection:
        order = []
        for _, loc in selection.rows:
            doc = selection.read(loc)  # None: it expired (API.md 6.3)
            if doc is not None and queries.service_matches(doc, args, status):
                order.append((queries.service_order(doc), loc))
        order.sort(key=lambda item: item[0])
        yield b"["
        first = True
        for _, loc in order:
            doc = selection.read(loc)
            if doc is None:  # it expired between the two passes
                continue
            yield (b"" if first else b",") + dumps(render_service(doc, args)).encode()
            first = False
        yield b"]"


NDJSON = "application/x-ndjson"
CHUNK = 1 << 16  # bytes written at a time


def export(lines: Iterator[bytes | None], ndjson: bool) -> Response:
    """The export stream (API.md 7.1): the values of ``lines`` (None: not selected)
    as a JSON array, or as NDJSON, written in chunks as they are read.

    The first chunk is made here, in the view: a store that is busy or failing when
    the export starts is then answered with its error status, not a 200 cut short.
    A failure later on can only cut the answer short: the client sees an incomplete
    body (no closing ``]``, no final chunk), never a complete-looking one."""
    chunks = _chunks(lines, ndjson)
    first = next(chunks)
    return current_app.response_class(itertools.chain((first,), chunks),
                                      mimetype=NDJSON if ndjson else "application/json")


def _chunks(lines: Iterator[bytes | None], ndjson: bool) -> Iterator[bytes]:
    parts: list[bytes] = [] if ndjson else [b"["]
    size = 0
    first = True
    for n, line in enumerate(lines, 1):
        if line is not None:
            if ndjson:
                parts.append(line + b"\n")
            else:
                parts.append(line if first else b"," + line)
            first = False
            size += len(line)
            if size >= CHUNK:
                yield b"".join(parts)
                parts, size = [], 0
        if n % 256 == 0:
            # let the worker's other requests take a step: under gevent, reading the
            # store and writing to a fast client never wait, so the export would keep
            # the worker (and its heartbeat to the master) to itself
            time.sleep(0)
    if not ndjson:
        parts.append(b"]")
    yield b"".join(parts)
