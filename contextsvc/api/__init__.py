"""The HTTP layer: blueprints with their operations, request parsing, error
rendering, the OpenAPI document, the docs page and the journey page. It calls the domain
(:mod:`contextsvc.domain`) and the store; nothing below it imports it."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import FunctionType
from typing import Any

import flask
from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider
from werkzeug.routing import Rule

from ..domain.timed import Clock, utc_now
from . import (
    auth,
    cors,
    docs,
    errors,
    health,
    journey,
    logs,
    maintenance,
    services,
    states,
    store,
    tasks,
)
from .operations import ApiBlueprint, EmptyResponse
from .request import IdConverter

BASE_PATHS = ("/genesys/1/cs", "")
BLUEPRINTS: tuple[ApiBlueprint, ...] = (services.bp, states.bp, tasks.bp, maintenance.bp,
                                        health.bp)


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, with each encoder it uses built once: ``json.dumps`` given any
    argument builds a new one at every call, a few microseconds of each answer."""

    def __init__(self, app: Flask) -> None:
        super().__init__(app)
        self._encoders: dict[tuple[Any, ...], json.JSONEncoder] = {}

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if not set(kwargs) <= {"separators", "indent"}:
            return super().dumps(obj, **kwargs)
        key = (self.ensure_ascii, self.sort_keys, kwargs.get("separators"), kwargs.get("indent"))
        encoder = self._encoders.get(key)
        if encoder is None:
            encoder = self._encoders[key] = json.JSONEncoder(
                default=self.default, ensure_ascii=self.ensure_ascii,
                sort_keys=self.sort_keys, **kwargs)
        return encoder.encode(obj)


class LazyRule(Rule):
    """A URL rule that compiles its URL builders when a URL is first built from it.

    werkzeug generates and compiles the Python code of two builders per rule as
    the rule is added, about 1 ms per rule: nearly all of the time an app takes to
    build (the API has over 80 rules) and so of each gunicorn worker's boot. Few
    rules ever build a URL (the pages' assets; Location is built from the rule's
    text, see :func:`.request.location`). The builders are werkzeug's own, only
    made later; should a werkzeug version no longer call ``_compile_builder``,
    its rules compile as before."""

    def _compile_builder(self, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        compile_now = super()._compile_builder
        name = "_build_unknown" if append_unknown else "_build"

        def build(rule: Rule, *args: Any, **kwargs: Any) -> tuple[str, str]:
            builder = compile_now(append_unknown).__get__(rule, None)
            setattr(rule, name, builder)  # the next builds call it directly
            return builder(*args, **kwargs)

        return build


class App(Flask):
    json_provider_class = JSONProvider
    url_rule_class = LazyRule

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Flask's, answered once per function: Flask asks it of the view and of each
        before/after-request function at every request, and ``inspect``'s check
        whether a function is a coroutine costs a few microseconds each time."""
        if type(func) is not FunctionType:  # (a bound method is a new object each time)
            return super().ensure_sync(func)
        sync = self._sync.get(func)
        if sync is None:
            sync = self._sync[func] = super().ensure_sync(func)
        return sync

    def make_default_options_response(self) -> Response:
        """An OPTIONS answer has no body, and so no Content-Type (Flask's would say
        text/html). A browser's CORS preflight gets 204 (API.md 8.3); its CORS
        headers, when its origin is allowed, come from :mod:`.cors`."""
        response = super().make_default_options_response()
        # (flask.request: the name "request" here is this package's module)
        headers = flask.request.headers
        preflight = "Origin" in headers and "Access-Control-Request-Method" in headers
        empty = EmptyResponse(status=204 if preflight else response.status_code)
        empty.headers["Allow"] = response.headers["Allow"]
        return empty


def init_app(app: Flask, settings: dict[str, Any], clock: Clock = utc_now) -> None:
    app.url_map.converters["id"] = IdConverter
    errors.register(app)
    logs.setup(app, settings["logging"]["level"])
    auth.init_app(app, settings)
    cors.init_app(app, settings["http"]["cors_origins"])
    app.extensions["contextsvc.api"] = BLUEPRINTS
    for bp in (*BLUEPRINTS, docs.bp, journey.bp):
        for base in BASE_PATHS:
            app.register_blueprint(bp, url_prefix=base or None,
                                   name=bp.name if base else f"{bp.name}_root")
    store.init_app(app, settings, clock)
