"""Who may call an operation (API.md 8.1): the one place where a request's API key
is read, found among the configured keys, and checked against the role the
operation declares. The operation wrapper (:mod:`.operations`) calls :func:`check`
before the view runs and before the body is read, so a refused request changes
nothing and costs little.

With no ``[api_keys]`` every operation is open, as it was before keys existed.

The header is ``Authorization: Bearer <key>`` (RFC 6750 2.1): the scheme is
case-insensitive (RFC 9110 11.1), one or more spaces may follow it, and the key is
a ``b64token``. Anything else (another scheme, no key, a key with other
characters, non-ASCII included, two ``Authorization`` headers) is answered like
a missing key: 401 ``UnauthorizedException`` with ``WWW-Authenticate: Bearer``. The
key's value is never logged nor put in a message; the access log names the key
(``key=<name>``) once it is found.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, current_app, g, request

from ..domain import access
from ..errors import Forbidden, Unauthorized

PUBLIC = "public"  # the role of operations that need no key
_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)
_SCHEME = re.compile(r"[^\s]*")
# A longer value is no key of ours (new_key makes 43 characters); refusing it
# before hashing keeps a huge header cheap.
MAX_HEADER = 1024

USAGE = "Send an API key: Authorization: Bearer <key>"


def init_app(app: Flask, settings: dict[str, Any]) -> None:
    app.extensions["contextsvc.keys"] = tuple(settings["api_keys"].values())


def check(role: str) -> None:
    """Raise Unauthorized or Forbidden unless the request may use an operation that
    needs ``role``."""
    if role == PUBLIC:
        return
    keys = current_app.extensions["contextsvc.keys"]
    if not keys:
        return
    key = access.find(keys, _presented())
    if key is None:
        raise Unauthorized("The API key is not valid. " + USAGE)
    g.contextsvc_key = key.name
    g.contextsvc_api_key = key
    if not access.allows(key.role, role):
        raise Forbidden(f"The API key {key.name!r} has the role {key.role}; "
                        f"this operation needs the role {role}")


def check_tenant(tenant: str) -> None:
    """Raise Forbidden if the request's key is limited to other tenants (API.md 8.2)."""
    key = g.get("contextsvc_api_key")
    if key is not None and not access.may_use(key, tenant):
        raise Forbidden(f"The API key {key.name!r} may not be used with the tenant "
                        f"{tenant!r}")


def _presented() -> str:
    """The key of the request's ``Authorization`` header."""
    value = request.headers.get("Authorization")
    if value is None:
        raise Unauthorized("An API key is required. " + USAGE)
    # (two Authorization headers reach WSGI joined by a comma: malformed below)
    value = value.strip()
    if len(value) > MAX_HEADER:
        raise Unauthorized("The Authorization header is too long to hold an API key. "
                           + USAGE)
    match = _BEARER.fullmatch(value)
    if match is None:
        scheme = _SCHEME.match(value).group(0)  # type: ignore[union-attr]
        if scheme.lower() != "bearer":
            raise Unauthorized("Only the Bearer scheme is accepted. " + USAGE)
        raise Unauthorized("The Authorization header is malformed. " + USAGE)
    return match.group(1)
