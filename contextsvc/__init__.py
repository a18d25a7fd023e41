"""contextsvc: a self-hostable Context Services REST API (services, states, tasks)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, Response

__version__ = "0.1.0"

BASE_PATHS = ("/genesys/1/cs", "")


class _Response(Response):
    default_mimetype = None  # a response without a body type (204, OPTIONS) has no Content-Type


def create_app(test_config: Mapping[str, Mapping[str, Any]] | None = None) -> Flask:
    """Build the WSGI app. ``test_config`` overrides settings: ``{section: {key: value}}``."""
    from . import config, docs, errors, logs, services, states, tasks
    from .web import IdConverter, StoreHolder

    settings = config.load(test_config)
    app = Flask(__name__)
    app.response_class = _Response
    app.url_map.converters["id"] = IdConverter
    app.config["CONTEXTSVC"] = settings
    # One byte more than the limit: werkzeug may cut a chunked body at this size
    # instead of refusing it, and the body reader answers 413 for anything longer
    # than the limit itself.
    app.config["MAX_CONTENT_LENGTH"] = settings["limits"]["max_body_bytes"] + 1
    app.json.sort_keys = False  # the representation's field order is part of its readability
    errors.register(app)
    logs.setup(app, settings["logging"]["level"])
    for bp in (services.bp, states.bp, tasks.bp):
        for base in BASE_PATHS:
            app.register_blueprint(bp, url_prefix=base or None,
                                   name=bp.name if base else f"{bp.name}_root")
    app.register_blueprint(docs.bp, url_prefix=BASE_PATHS[0])
    holder = StoreHolder(settings)
    app.extensions["contextsvc"] = holder
    holder.get()  # open (and check) the store now: a damaged file stops the start
    return app
