"""Errors over HTTP: the one table from domain errors to statuses, and the one
function that builds the contract's error body,
``{"message": ..., "exception": ..., ["errors": {...}]}``. The app's handlers and
gunicorn's own error pages (:mod:`contextsvc.gunicorn_conf`) both use it.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from flask import Flask, Response, jsonify
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException

from .. import errors

log = logging.getLogger("contextsvc.errors")


class ErrorStatus(NamedTuple):
    status: int
    exception: str
    retry_after: int | None = None
    challenge: str | None = None  # WWW-Authenticate


# RFC 6750: the challenge of an API that takes bearer tokens
BEARER = "Bearer"


# domain error -> what the client sees; a subclass not listed falls back to its parent
DOMAIN: dict[type[errors.ContextError], ErrorStatus] = {
    errors.ContextError: ErrorStatus(500, "InternalServerError"),
    errors.Invalid: ErrorStatus(400, "ValidationError"),
    errors.Unauthorized: ErrorStatus(401, "UnauthorizedException", challenge=BEARER),
    errors.Forbidden: ErrorStatus(403, "ForbiddenException"),
    errors.InvalidTenant: ErrorStatus(400, "InvalidTenantException"),
    errors.NotFound: ErrorStatus(404, "NotFoundException"),
    errors.Conflict: ErrorStatus(409, "ConflictException"),
    errors.TooLarge: ErrorStatus(413, "PayloadTooLarge"),
    errors.StoreBusy: ErrorStatus(503, "ServiceUnavailable", retry_after=1),
    errors.StoreFailure: ErrorStatus(503, "ServiceUnavailable", retry_after=5),
    errors.StoreCorrupt: ErrorStatus(500, "StoreCorrupt"),
    errors.PreconditionFailed: ErrorStatus(412, "PreconditionFailed"),
    errors.KeyMismatch: ErrorStatus(422, "IdempotencyKeyMismatch"),
    errors.RequestRunning: ErrorStatus(409, "ConflictException", retry_after=1),
}

# the exception names the contract gives to HTTP statuses
HTTP_NAMES = {
    400: "ValidationError",
    401: "UnauthorizedException",
    403: "ForbiddenException",
    404: "NotFoundException",
    405: "MethodNotAllowed",
    409: "ConflictException",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    503: "ServiceUnavailable",
}


def exception_name(status: int, fallback: str) -> str:
    """The contract's name for an HTTP status; ``fallback`` for the others."""
    return HTTP_NAMES.get(status) or fallback


def error_body(message: str, exception: str,
               errors_: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract's error body."""
    body: dict[str, Any] = {"message": message, "exception": exception}
    if errors_:
        body["errors"] = errors_
    return body


class Error(Schema):
    """The error body, for the OpenAPI document."""

    message = fields.String(required=True)
    exception = fields.String(required=True)
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


def mapping_of(exc: errors.ContextError) -> ErrorStatus:
    for cls in type(exc).__mro__:
        if cls in DOMAIN:
            return DOMAIN[cls]
    return DOMAIN[errors.ContextError]


def _respond(status: int, body: dict[str, Any], headers: dict[str, str] | None = None
             ) -> Response:
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def register(app: Flask) -> None:
    """Install the JSON error handlers on the app (not on a blueprint: routing
    404/405 never reach blueprint handlers, pallets/flask#1935)."""

    @app.errorhandler(errors.ContextError)
    def _domain(exc: errors.ContextError) -> Response:
        status, name, retry, challenge = mapping_of(exc)
        if status >= 500:
            log.error("%s: %s", name, exc.message)
        headers = {}
        if retry is not None:
            headers["Retry-After"] = str(retry)
        if challenge is not None:
            headers["WWW-Authenticate"] = challenge
        return _respond(status, error_body(exc.message, name, exc.errors), headers)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        if status == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        message = "No such resource" if status == 404 else (exc.description or exc.name)
        return _respond(status, error_body(message, exception_name(status, type(exc).__name__)),
                        headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return _respond(500, error_body("The server failed to process the request",
                                        "InternalServerError"))
