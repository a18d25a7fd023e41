"""Helpers the blueprints share: the store of this process, bodies, query arguments,
and the 201 response. Everything HTTP-specific stays here and in the blueprints."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from flask import current_app, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from . import jsonbody, rules, schemas
from .errors import Invalid
from .storage import Selection, ServiceStore, open_store

# Plain int converters: with min/max, werkzeug answers 405 instead of 404 when an
# out-of-range id meets a method the route does not serve. An id that names no
# resource (0, or past the largest) is a 404 from the store, for every method.
SID = "<int:sid>"
STID = "<int:stid>"
TID = "<int:tid>"


class StoreHolder:
    """One store per process: a worker forked after the store was opened (gunicorn
    ``--preload``) opens its own instead of sharing the parent's file handles
    (benoitc/gunicorn#1953)."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings
        self._store: ServiceStore | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> ServiceStore:
        store = self._store
        if store is None or self._pid != os.getpid():
            with self._lock:
                store = self._store
                if store is None or self._pid != os.getpid():
                    store = self._store = open_store(self.settings)
                    self._pid = os.getpid()
        return store


def store() -> ServiceStore:
    return current_app.extensions["contextsvc"].get()


def limits() -> dict[str, int]:
    return current_app.config["CONTEXTSVC"]["limits"]


def _raw_body() -> bytes:
    try:
        return request.get_data(cache=False)
    except HTTPException:
        raise  # 413 and the like, rendered by the error handler
    except Exception as exc:  # broken chunking, a client that went away mid-body...
        raise Invalid("The request body could not be read",
                      {"_body": [f"unreadable body: {type(exc).__name__}"]}) from None


def body_object(required: bool = False) -> dict[str, Any]:
    return jsonbody.parse_object(_raw_body(), request.mimetype, limits(), required=required)


def body_value() -> Any:
    value = jsonbody.parse(_raw_body(), request.mimetype, limits())
    if value is jsonbody.ABSENT:
        raise Invalid("A JSON value body is required", {"_body": ["body is required"]})
    return value


def args() -> dict[str, Any]:
    return schemas.query_args(request.args)


def created(endpoint: str, payload: dict[str, Any], **values: Any):
    response = jsonify(payload)
    response.status_code = 201
    response.headers["Location"] = url_for(f"{request.blueprint}.{endpoint}", **values)
    return response


# Answers whose services take more bytes than this are streamed: read, filtered and
# rendered one service at a time, so that a worker's memory does not grow with the
# size of the answer. Smaller ones are read at once, which is faster.
STREAM_ABOVE = 1 << 20


def service_list(selection: Selection, query: dict[str, Any], status: str | None):
    """The JSON array of the selected services that match ``query``, in order."""
    if selection.bytes <= STREAM_ABOVE:
        with selection:
            docs = list(selection)
        return ok([rules.render_service(doc, query) for doc in rules.order_services(docs)
                   if rules.service_matches(doc, query, status)])
    # the generator runs after the view has returned, outside the app context
    return current_app.response_class(_stream(selection, query, status, current_app.json.dumps),
                                      mimetype="application/json")


def _stream(selection: Selection, query: dict[str, Any], status: str | None,
            dumps: Callable[[Any], str]) -> Iterator[bytes]:
    with selection:
        order = []  # first pass: keep only what orders the matching services
        for _, loc in selection.rows:
            doc = selection.read(loc)
            if rules.service_matches(doc, query, status):
                order.append((rules.service_order(doc), loc))
        order.sort(key=lambda item: item[0])
        yield b"["
        for i, (_, loc) in enumerate(order):
            text = dumps(rules.render_service(selection.read(loc), query))
            yield (b"," if i else b"") + text.encode()
        yield b"]"


def ok(payload: Any):
    return jsonify(payload)


def empty(status: int = 204):
    """A response with no body, and so no Content-Type."""
    return current_app.response_class(status=status)
