"""API keys and roles (API.md 8.1), without HTTP: what a configured key is, how a
presented key is found among them, and what each role allows.

A key is configured as ``<name> = <role> <sha256 hex of the key> [<tenant>,...]``
(``[api_keys]``); the key itself is stored nowhere. Keys are random (``new_key``:
256 bits from :mod:`secrets`), so one round of SHA-256 is enough to keep them out of
the configuration: there is no password to guess, and a slow hash would only slow
every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

# The roles a key may have, each allowing what the ones before it allow: read, then
# write (read + every change), then admin (write + /maintenance/).
KEY_ROLES = ("read", "write", "admin")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")
_HASH = re.compile(r"[0-9a-fA-F]{64}")
TENANT = re.compile(r"[^\s,]+")


@dataclass(frozen=True)
class ApiKey:
    """One configured key: its name (what the logs show), its role, the SHA-256 of
    the key, and the tenants it may use (``None``: all of them)."""

    name: str
    role: str
    digest: bytes
    tenants: tuple[str, ...] | None = None


def digest(key: str | bytes) -> bytes:
    """The SHA-256 of a key, as configured (in hex) and as compared (in bytes)."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def new_key() -> str:
    """A fresh random key: 32 bytes from the OS's generator, URL-safe base64 (43
    characters, all of them valid in an ``Authorization: Bearer`` header)."""
    return secrets.token_urlsafe(32)


def config_line(name: str, role: str, key: str, tenants: Iterable[str] = ()) -> str:
    """The ``[api_keys]`` line that configures ``key``."""
    line = f"{name} = {role} {digest(key).hex()}"
    tenants = list(tenants)
    return f"{line} {','.join(tenants)}" if tenants else line


def parse(name: str, value: str) -> ApiKey:
    """The key an ``[api_keys]`` line configures; ValueError says what is wrong."""
    if not name:
        raise ValueError("a key needs a name")
    if not NAME.fullmatch(name):
        raise ValueError("a name is letters, digits and _ . @ - (starting with a letter "
                         "or digit)")
    parts = str(value).split(None, 2)
    if not parts:
        raise ValueError(f"expected '<role> <sha256 hex of the key> [<tenant>,...]', "
                         f"got {value!r}")
    role = parts[0]
    if role not in KEY_ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(KEY_ROLES)}")
    if len(parts) < 2 or not _HASH.fullmatch(parts[1]):
        raise ValueError("the second part must be the SHA-256 of the key, 64 hex "
                         "characters (contextsvc keys new prints the line)")
    tenants = None
    if len(parts) == 3:
        tenants = tuple(t.strip() for t in parts[2].split(","))
        if not all(TENANT.fullmatch(t) for t in tenants):
            raise ValueError(f"tenants are a comma-separated list of names, got {parts[2]!r}")
    return ApiKey(name, role, bytes.fromhex(parts[1]), tenants)


def find(keys: Iterable[ApiKey], key: str | bytes) -> ApiKey | None:
    """The configured key that ``key`` is, or None.

    The presented key is hashed first and digests are compared, never keys: what a
    timing could tell is where the SHA-256 of a guess differs from a configured
    hash, which says nothing of the key (the hash is not a secret; the key is).
    Still, each comparison is constant-time (``hmac.compare_digest``) and every
    configured key is compared, without stopping at a match, so the time taken
    does not depend on which key matched either."""
    presented = digest(key)
    found = None
    for candidate in keys:
        if hmac.compare_digest(candidate.digest, presented) and found is None:
            found = candidate
    return found


def allows(role: str, needed: str) -> bool:
    """Whether a key of ``role`` may use an operation that needs ``needed`` (one of
    :data:`KEY_ROLES`)."""
    return KEY_ROLES.index(role) >= KEY_ROLES.index(needed)


def may_use(key: ApiKey, tenant: str) -> bool:
    """Whether ``key`` may work on the tenant named ``tenant`` (API.md 8.2)."""
    return key.tenants is None or tenant in key.tenants
