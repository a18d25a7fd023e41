"""contextsvc: a self-hostable Context Services REST API (services, states, tasks)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the domain and the store are used without Flask (a sweeper, an importer)
    from datetime import datetime

    from flask import Flask

__version__ = "0.1.0"


def create_app(test_config: Mapping[str, Mapping[str, Any]] | None = None, *,
               clock: Callable[[], datetime] | None = None) -> Flask:
    """Build the WSGI app. ``test_config`` overrides settings: ``{section: {key: value}}``;
    ``clock`` (aware UTC datetimes) replaces the real time, for tests of the lifecycle."""
    from . import api, config

    settings = config.load(test_config)
    app = api.App(__name__)
    app.config["CONTEXTSVC"] = settings
    # One byte more than the limit: werkzeug may cut a chunked body at this size
    # instead of refusing it, and the body reader answers 413 for anything longer
    # than the limit itself.
    app.config["MAX_CONTENT_LENGTH"] = settings["limits"]["max_body_bytes"] + 1
    app.json.sort_keys = False  # the representation's field order is part of its readability
    if clock is None:
        api.init_app(app, settings)
    else:
        api.init_app(app, settings, clock)
    return app
