"""Domain errors, and the one handler that turns every error into the JSON shape
of the API contract: ``{"message": ..., "exception": ..., ["errors": {...}]}``.

The domain errors carry no HTTP knowledge beyond their status; they are raised by
the store and the rules, and only :func:`register` maps them onto responses.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class ContextError(Exception):
    status = 500
    exception = "InternalServerError"

    def __init__(self, message: str, errors: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors


class Invalid(ContextError):
    status = 400
    exception = "ValidationError"


class NotFound(ContextError):
    status = 404
    exception = "NotFoundException"


class Conflict(ContextError):
    status = 409
    exception = "ConflictException"


class TooLarge(ContextError):
    """A write would make a service larger than ``[limits] max_service_bytes``."""

    status = 413
    exception = "PayloadTooLarge"


class StoreBusy(ContextError):
    """The store's lock could not be taken in time."""

    status = 503
    exception = "ServiceUnavailable"
    retry_after = 1


class StoreFailure(ContextError):
    """The store could not write (disk full, read-only, I/O error); nothing changed."""

    status = 503
    exception = "ServiceUnavailable"
    retry_after = 5


class StoreReplaced(StoreFailure):
    """The data file was deleted, or replaced by something other than contextsvc,
    while this process was using it. The process refuses to read or write it again:
    its index no longer describes the file, and writing would reuse ids or write
    over records. A restart takes the file as it now is."""


class StoreCorrupt(ContextError):
    """The data file cannot be read as a contextsvc/TinyDB file."""

    status = 500
    exception = "StoreCorrupt"


def flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Marshmallow nests errors by field; the contract wants ``{"a.b": [..]}``."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                out.update(flatten(value, name))
            else:
                out[name] = [str(m) for m in (value if isinstance(value, list) else [value])]
    elif messages:
        items = messages if isinstance(messages, list) else [messages]
        out[prefix or "_schema"] = [str(m) for m in items]
    return out


def invalid(errors: dict[str, list[str]], what: str = "request") -> Invalid:
    first = next(iter(errors.items()))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return Invalid(f"Invalid {what}: {first[0]}: {first[1][0]}{more}", errors)


# the exception names the contract gives to HTTP statuses
HTTP_NAMES = {
    400: "ValidationError",
    404: "NotFoundException",
    405: "MethodNotAllowed",
    409: "ConflictException",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    503: "ServiceUnavailable",
}


def register(app: Any) -> None:
    """Install the JSON error handlers on the app (not on a blueprint: routing
    404/405 never reach blueprint handlers, pallets/flask#1935)."""
    from flask import jsonify
    from werkzeug.exceptions import HTTPException

    def render(status: int, exception: str, message: str,
               errors: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        body: dict[str, Any] = {"message": message, "exception": exception}
        if errors:
            body["errors"] = errors
        response = jsonify(body)
        response.status_code = status
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    @app.errorhandler(ContextError)
    def _domain(exc: ContextError):
        headers = {}
        retry = getattr(exc, "retry_after", None)
        if retry is not None:
            headers["Retry-After"] = str(retry)
        if exc.status >= 500:
            log.error("%s: %s", exc.exception, exc.message)
        return render(exc.status, exc.exception, exc.message, exc.errors, headers)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        status = exc.code or 500
        name = HTTP_NAMES.get(status) or type(exc).__name__
        headers = {}
        if status == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        message = exc.description or exc.name
        if status == 404:
            message = "No such resource"
        return render(status, name, message, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return render(500, "InternalServerError", "The server failed to process the request")
