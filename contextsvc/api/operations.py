"""What an operation is, declared on its view, and the only way to add a route.

::

    @bp.operation("GET", "/services/<id:sid>", "Get a service", role="read",
                  query=query.ServiceView, response="Service")
    def get_service(sid: int, query: dict) -> dict: ...

The decorator registers the URL rule and an :class:`Operation` (body schema, query
schema, success status, response, role) that the OpenAPI document is built from;
:meth:`ApiBlueprint.route` and friends are refused, so no route can be served that
the document does not list. Before anything of the request is read, the wrapper
checks that its API key has the operation's role (:func:`.auth.check`), then
resolves the request's store from its tenant (:func:`.store.resolve_store`). The view
gets the parsed ``query`` (when the operation declares one) and ``body`` (when it
takes one); it returns the payload, or ``(payload, headers)``, or ``None`` for an
answer without a body, and the decorator answers with the operation's status.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import Schema

from ..storage.base import Recorded
from . import auth, retries
from . import request as req
from .query import Parser
from .store import resolve_store

# Who may call an operation (API.md 8.1), each role allowing what the ones before it
# allow: public (no key), read, write, admin. Checked by auth.check before the view.
ROLES = ("public", "read", "write", "admin")

# bodies that are not a schema (attached data): any JSON value, or any JSON object.
# Both are read as any JSON value; the rule that takes an object checks it.
ANY_VALUE = "any JSON value"
ANY_OBJECT = "any JSON object"
# the answer of the export stream: service ids or whole services, as a JSON array or
# as NDJSON (API.md 7.1)
EXPORT = "Export"


@dataclass(frozen=True)
class Operation:
    """One method on one URL rule, as the OpenAPI document shows it."""

    blueprint: str
    view: str
    method: str
    rule: str
    operation_id: str
    summary: str
    role: str
    status: int
    body: type[Schema] | str | None = None
    body_required: bool = False
    query: type[Schema] | None = None
    response: str | None = None
    many: bool = False
    errors: tuple[int, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    # when given, every status the operation answers, with its description, each with
    # the `response` schema (a status report answers its failure in its own shape)
    responses: dict[int, str] = field(default_factory=dict)
    # whether it works on the request's store, and so on the request's tenant
    stored: bool = True


@dataclass(frozen=True)
class _Handling:
    """What the wrapped view does per request; the same for every operation of a view."""

    status: int
    body: str | None  # "value" (any JSON, required), "object" (a JSON object) or None
    body_required: bool
    query: type[Schema] | None
    role: str


class EmptyResponse(Response):
    """An answer without a body, and so without a Content-Type (204, and the 200 of
    a delete)."""

    default_mimetype = None


class ApiBlueprint(Blueprint):
    def __init__(self, name: str, import_name: str, *, store: bool = True):
        """``store=False``: the views do not work on ``g.store`` (the health check
        reaches the store itself, so that a store that fails is its answer)."""
        super().__init__(name, import_name)
        self._store = store  # every view works on g.store, where retries are recorded
        self.operations: list[Operation] = []
        self._views: dict[str, tuple[_Handling, Callable[..., Any]]] = {}

    def route(self, rule: str, **options: Any) -> Callable[..., Any]:
        raise TypeError(f"{self.name}: declare routes with .operation(), so that the "
                        f"OpenAPI document lists them ({rule})")

    def operation(self, method: str, rule: str, summary: str, *, role: str,
                  status: int = 200, body: type[Schema] | str | None = None,
                  body_required: bool = False,
                  query: type[Schema] | None = None, response: str | None = None,
                  many: bool = False, errors: tuple[int, ...] = (),
                  defaults: dict[str, Any] | None = None, suffix: str = "",
                  responses: dict[int, str] | None = None
                  ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare one operation of the decorated view (stack one per route).
        ``suffix`` tells apart the operation ids of several routes of one view."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")

        def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
            name = view.__name__
            kind = None if body is None else "value" if isinstance(body, str) else "object"
            handling = _Handling(status, kind, body_required, query, role)
            known = self._views.get(name)
            if known is None:
                wrapped = _wrap(view, handling, self._store)
                self._views[name] = (handling, wrapped)
            elif known[0] != handling:
                raise ValueError(f"{self.name}.{name}: every route of a view must parse, "
                                 "answer and need a role alike")
            else:
                wrapped = known[1]
            self.operations.append(Operation(
                self.name, name, method, rule, name + suffix, summary, role, status, body,
                body_required, query, response, many, errors,
                dict(defaults or {}), dict(responses or {}), self._store))
            options: dict[str, Any] = {"methods": [method]}
            if defaults:
                options["defaults"] = defaults
            super(ApiBlueprint, self).add_url_rule(rule, name, wrapped, **options)
            return view

        return decorate

    def add_url_rule(self, rule: str, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{self.name}: declare routes with .operation() ({rule})")


def _wrap(view: Callable[..., Any], handling: _Handling, stored: bool = True
          ) -> Callable[..., Any]:
    parse_query = Parser(handling.query) if handling.query is not None else None
    status, body, required = handling.status, handling.body, handling.body_required
    role = handling.role

    @functools.wraps(view)
    def run(**kwargs: Any) -> Response:
        auth.check(role)  # before anything is read: a refused request costs little
        if stored:
            resolve_store()  # the tenant's store (API.md 8.2), and only it
        record = retries.begin() if stored else None
        if record is not None:
            return replay(record)
        if parse_query is not None:
            kwargs["query"] = parse_query(request.args)
        if body == "value":
            kwargs["body"] = req.body_value()
        elif body == "object":
            kwargs["body"] = req.body_object(required=required)
        record = retries.pending(status, kwargs.get("body")) if stored else None
        if record is not None:
            return replay(record)
        try:
            result = view(**kwargs)
        except Recorded as exc:  # the same key, written meanwhile by another request
            return replay(retries.recorded(exc.record))
        headers = None
        if isinstance(result, tuple):
            result, headers = result
        if result is None:
            response = EmptyResponse(status=status)
        elif isinstance(result, Response):  # an answer streamed by the view
            response = result
        else:
            response = jsonify(result)
            response.status_code = status
        if headers:
            response.headers.update(headers)
        return response

    return run


def replay(answer: retries.Answer) -> Response:
    """The answer an idempotency key recorded, again (API.md 10.1)."""
    headers = {"Location": answer.location} if answer.location else {}
    headers[retries.REPLAYED] = "true"
    if answer.body is None:
        return EmptyResponse(status=answer.status, headers=headers)
    return current_app.response_class(answer.body, answer.status, headers,
                                      mimetype=answer.mimetype)
