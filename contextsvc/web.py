"""Helpers the blueprints share: the store of this process, bodies, query arguments,
and the 201 response. Everything HTTP-specific stays here and in the blueprints."""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import current_app, jsonify, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from . import jsonbody, schemas
from .errors import Invalid
from .store import Store, open_store


class IdConverter(BaseConverter):
    """A resource id in a path: ASCII digits without leading zeros.

    werkzeug's ``int`` converter matches any Unicode digit (``/services/%EF%BC%91``,
    a fullwidth 1, is service 1) and zero padding (``/services/01``); API.md 2.1
    says such an id does not match the route. ``0`` does match, like an id past
    the largest: it names no resource, and the store answers 404 for every method
    the route serves (a method it does not serve stays a 405). There is no upper
    bound for the same reason: with one, werkzeug answers 405 instead of 404 when
    an out-of-range id meets a method the route does not serve.
    """

    regex = r"0|[1-9][0-9]*"
    part_isolating = True

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(int(value))


SID = "<id:sid>"
STID = "<id:stid>"
TID = "<id:tid>"


class StoreHolder:
    """One store per process: a worker forked after the store was opened (gunicorn
    ``--preload``) opens its own instead of sharing the parent's file handles
    (benoitc/gunicorn#1953)."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings
        self._store: Store | None = None
        self._lock = threading.Lock()

    def get(self) -> Store:
        store = self._store
        if store is None or store.pid != os.getpid():
            with self._lock:
                store = self._store
                if store is None or store.pid != os.getpid():
                    store = self._store = open_store(self.settings)
        return store


def store() -> Store:
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


def ok(payload: Any):
    return jsonify(payload)


def empty(status: int = 204):
    """A response with no body, and so no Content-Type."""
    return current_app.response_class(status=status)
