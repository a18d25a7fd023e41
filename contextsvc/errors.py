"""Domain errors: raised by the rules and the store, with no HTTP knowledge.

Each carries a human ``message`` and, for validation errors, ``errors`` by field
(``{"from.state_id": ["Missing data for required field."]}``). The HTTP layer maps
each class to a status, an ``exception`` name and headers in one table
(:mod:`contextsvc.api.errors`).
"""

from __future__ import annotations

from typing import Any


class ContextError(Exception):
    def __init__(self, message: str, errors: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors


class Invalid(ContextError):
    """The input breaks the contract: a body, a field, a query argument."""


class NotFound(ContextError):
    """No such service, state or task."""


class Unauthorized(ContextError):
    """No API key, a malformed one, or one that is not configured (API.md 8.1)."""


class Forbidden(ContextError):
    """The API key's role does not allow the operation, or its tenant (API.md 8.1,
    8.2)."""


class InvalidTenant(ContextError):
    """A multi-tenant service got no tenant, or one it does not have (API.md 8.2)."""


class Conflict(ContextError):
    """The change contradicts the resource's state (completing what is completed)."""


class TooLarge(ContextError):
    """A write would make a service larger than ``[limits] max_service_bytes``."""


class StoreBusy(ContextError):
    """The store's lock could not be taken in time; retrying soon may succeed."""


class StoreFailure(ContextError):
    """The store could not write (disk full, read-only, I/O error); nothing changed."""


class StoreReplaced(StoreFailure):
    """The data file was deleted, or replaced by something other than contextsvc,
    while this process was using it. The process refuses to read or write it again:
    its index no longer describes the file, and writing would reuse ids or write
    over records. A restart takes the file as it now is."""


class StoreCorrupt(ContextError):
    """The data file cannot be read as a contextsvc/TinyDB file."""


class PreconditionFailed(ContextError):
    """``If-Match`` names a version of the service that is no longer the current one
    (API.md 10.2); nothing changed."""


class KeyMismatch(ContextError):
    """An idempotency key reused with another method, path or body (API.md 10.1)."""


class RequestRunning(Conflict):
    """The first request with this idempotency key is still running; retry soon."""
