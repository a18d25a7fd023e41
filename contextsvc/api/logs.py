"""Logs on stdout, in gunicorn's format: one INFO line per request with its method,
path, status and duration, and ``key=<name>`` when an API key was found (its name
from ``[api_keys]``; the key itself is never logged).

Customer ids and contact keys are personal data: the logged path shows the route
with ``<customer_id>`` / ``<contact_key>`` in their place, query strings are not
logged, and no body or attached data is ever logged.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any

from flask import Flask, Request, g, request

from .request import RULE_ARGUMENT

FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
PERSONAL = frozenset({"customer_id", "contact_key"})

access = logging.getLogger("contextsvc.access")

# Blueprints whose successful answers are logged at debug level, not info: a load
# balancer polls the health check every few seconds, on every worker, and its lines
# would bury the requests of clients. A failed health check is logged as usual.
QUIET = frozenset({"health"})


class StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a record is emitted, and flushes it
    at once (a log collector reading the pipe sees each line as it is written)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        # StreamHandler.emit, without taking the handler's lock a second time for
        # the flush: handle() holds it already. One line per request makes this a
        # measurable part of a small request's cost.
        try:
            stream = sys.stdout
            stream.write(self.format(record) + self.terminator)
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


class LineFormatter(logging.Formatter):
    """:data:`FORMAT`, with the time formatted once per second rather than per line."""

    def __init__(self) -> None:
        super().__init__(FORMAT, DATE_FORMAT)
        self._stamp: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(record.created)

    def stamp(self, created: float) -> str:
        second = int(created)
        cached = self._stamp  # one read: threads may replace it meanwhile
        if cached[0] != second:
            cached = (second, time.strftime(DATE_FORMAT, self.converter(second)))
            self._stamp = cached
        return cached[1]


def _as_set_up(logger: logging.Logger) -> StdoutHandler | None:
    """The handler :func:`setup` gave ``contextsvc`` when the request lines still
    go to it alone, through no filter (nobody configured logging otherwise), else
    None."""
    parent = logger.parent
    if (logger.handlers or logger.filters or logger.disabled or parent is None
            or parent.name != "contextsvc" or parent.filters or len(parent.handlers) != 1):
        return None
    handler = parent.handlers[0]
    if (type(handler) is not StdoutHandler or handler.filters
            or type(handler.formatter) is not LineFormatter):
        return None
    return handler


def write_line(logger: logging.Logger, level: int, message: str) -> None:
    """Log ``message``: the line :data:`FORMAT` makes, written by the code here when
    logging is as :func:`setup` left it. Going through ``logging`` costs a request
    line about 20 microseconds more (a LogRecord with every attribute, the
    handler's lock taken twice, the format), a tenth of a small request's cost in
    the app."""
    if not logger.isEnabledFor(level):
        return
    handler = _as_set_up(logger)
    if handler is None or level < handler.level:
        logger.handle(logger.makeRecord(logger.name, level, "", 0, message, (), None))
        return
    stamp = handler.formatter.stamp(time.time())  # type: ignore[union-attr]
    line = f"[{stamp}] [{os.getpid()}] [{logging.getLevelName(level)}] {message}\n"
    try:
        stream = sys.stdout
        stream.write(line)  # one write: a line is never split by another's
        stream.flush()
    except Exception:  # as a handler does: report it on stderr, the request goes on
        handler.handleError(logger.makeRecord(logger.name, level, "", 0, message, (), None))


def logged_path(sent: Request) -> str:
    rule = sent.url_rule
    if rule is None:
        return "<unmatched>"  # the raw path may hold a customer id
    if "<" not in rule.rule:
        return rule.rule
    values = sent.view_args or {}

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"<{name}>" if name in PERSONAL else str(values.get(name, match.group(0)))

    return RULE_ARGUMENT.sub(value, rule.rule)


def setup(app: Flask, level: str) -> None:
    logger = logging.getLogger("contextsvc")
    if not any(isinstance(h, StdoutHandler) for h in logger.handlers):
        handler = StdoutHandler()
        handler.setFormatter(LineFormatter())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper())

    @app.before_request
    def _start_clock() -> None:
        g.contextsvc_started = time.perf_counter()

    @app.after_request
    def _log_request(response: Any) -> Any:
        # (each use of a werkzeug proxy, request or g, looks the object up again)
        sent = request._get_current_object()  # type: ignore[attr-defined]
        values = g._get_current_object()  # type: ignore[attr-defined]
        started = values.get("contextsvc_started")
        duration = (time.perf_counter() - started) * 1000 if started else 0.0
        blueprint = sent.blueprint
        quiet = (response.status_code < 400 and blueprint is not None
                 and blueprint.removesuffix("_root") in QUIET)
        level = logging.DEBUG if quiet else logging.INFO
        if not access.isEnabledFor(level):
            return response
        # who: the key's name (never its value) and, with tenants, the tenant
        key, tenant = values.get("contextsvc_key"), values.get("contextsvc_tenant")
        who = ((f" key={key}" if key is not None else "")
               + (f" tenant={tenant}" if tenant is not None else ""))
        write_line(access, level, f"{sent.method} {logged_path(sent)} "
                                  f"{response.status_code} {duration:.1f}ms{who}")
        return response
