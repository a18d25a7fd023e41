"""Answers written while they are read from the store, one service at a time, so
that a worker's memory does not grow with the size of an answer."""

from __future__ import annotations

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
