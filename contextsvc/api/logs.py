"""Logs on stdout, in gunicorn's format: one INFO line per request with its method,
path, status and duration, and ``key=<name>`` when an API key was found (its name
from ``[api_keys]``; the key itself is never logged).

Customer ids and contact keys are personal data: the logged path shows the route
with ``<customer_id>`` / ``<contact_key>`` in their place, query strings are not
logged, and no body or attached data is ever logged.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

from flask import Flask, g, request

FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
PERSONAL = frozenset({"customer_id", "contact_key"})
_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")

access = logging.getLogger("contextsvc.access")

# Blueprints whose successful answers are logged at debug level, not info: a load
# balancer polls the health check every few seconds, on every worker, and its lines
# would bury the requests of clients. A failed health check is logged as usual.
QUIET = frozenset({"health"})


class StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def logged_path() -> str:
    rule = request.url_rule
    if rule is None:
        return "<unmatched>"  # the raw path may hold a customer id
    values = request.view_args or {}

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"<{name}>" if name in PERSONAL else str(values.get(name, match.group(0)))

    return _ARG.sub(value, rule.rule)


def setup(app: Flask, level: str) -> None:
    logger = logging.getLogger("contextsvc")
    if not any(isinstance(h, StdoutHandler) for h in logger.handlers):
        handler = StdoutHandler()
        handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper())

    @app.before_request
    def _start_clock() -> None:
        g.contextsvc_started = time.perf_counter()

    @app.after_request
    def _log_request(response: Any) -> Any:
        started = g.get("contextsvc_started")
        duration = (time.perf_counter() - started) * 1000 if started else 0.0
        quiet = (response.status_code < 400 and request.blueprint is not None
                 and request.blueprint.removesuffix("_root") in QUIET)
        level = logging.DEBUG if quiet else logging.INFO
        # who: the key's name (never its value) and, with tenants, the tenant
        who = "".join(f" {name}={g.get(attr)}" for name, attr in
                      (("key", "contextsvc_key"), ("tenant", "contextsvc_tenant"))
                      if g.get(attr) is not None)
        access.log(level, "%s %s %s %.1fms%s", request.method, logged_path(),
                   response.status_code, duration, who)
        return response
