"""Tenants (API.md 8.2), without HTTP: the configured contact centers, each with a
store of its own, and which one a request or a command names.

``[tenants]`` holds one line per tenant, ``<name> = <store>`` (for the file engine a
data file), optionally ``<name>.id = <number>`` (the tenant may be named by its
number too) and ``default = <name>`` (the tenant of a request that names none).
Without tenants the service has one store and ignores the names requests send.

A request's tenant is looked up among the configured ones only: nothing of what a
client sends is ever turned into a store's location, so a name such as ``../x``
is one more name that is not configured.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..errors import InvalidTenant

DEFAULT = "default"
ID_SUFFIX = ".id"
# names a request may send: no "." (it ends "<name>.id") and nothing a header or a
# file name would mangle
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_ID = re.compile(r"[0-9]{1,18}")
# GroupId (a business unit of the reference product) is accepted and ignored
MAX_GROUP_ID = 256
# the longest header value echoed back in the message of an unknown tenant
_ECHO = 256

NO_TENANT = ("Invalid tenant specified : no tenant specified in multi-tenant environment. "
             "Verify configuration and 'ContactCenterId' HTTP header.")


def unknown_tenant(value: str) -> str:
    """The reference product's message for a tenant that is not configured."""
    if len(value) > _ECHO:
        value = value[:_ECHO] + "..."
    return (f"Invalid tenant specified : specified tenant in HTTP header "
            f"'ContactCenterId'='{value}' not configured. Verify configuration.")


@dataclass(frozen=True)
class Tenant:
    """One contact center: its name, its number (when it has one), and where its
    store is (for the file engine, the data file)."""

    name: str
    store: str
    id: int | None = None


@dataclass(frozen=True)
class Tenants:
    """The configured tenants; empty when the service is single-tenant."""

    by_name: Mapping[str, Tenant] = field(default_factory=dict)
    default: str | None = None

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def __iter__(self):
        return iter(self.by_name.values())

    def names(self) -> list[str]:
        return list(self.by_name)

    def find(self, value: str) -> Tenant | None:
        """The tenant named ``value`` (its name, or its number), or None."""
        tenant = self.by_name.get(value)
        if tenant is None and _ID.fullmatch(value):
            number = int(value)
            tenant = next((t for t in self.by_name.values() if t.id == number), None)
        return tenant

    def resolve(self, value: str | None) -> Tenant:
        """The tenant of a request whose ``ContactCenterId`` is ``value`` (None when
        absent): the default one without a value; ``InvalidTenant`` with the
        reference product's messages when there is none or it is not configured."""
        if value is None or not value.strip():
            if self.default is None:
                raise InvalidTenant(NO_TENANT)
            return self.by_name[self.default]
        tenant = self.find(value.strip())
        if tenant is None:
            raise InvalidTenant(unknown_tenant(value.strip()))
        return tenant


def parse(values: Mapping[str, str]) -> Tenants:
    """The tenants of the ``[tenants]`` lines ``values`` (key -> value, as read);
    ValueError names the key at fault as ``"<key>: <what is wrong>"``. Store
    locations are kept as written (the configuration makes paths absolute)."""
    stores: dict[str, str] = {}
    ids: dict[str, int] = {}
    default = None
    for key, raw in values.items():
        value = str(raw).strip()
        if key == DEFAULT:
            default = value
            continue
        numbered = key.endswith(ID_SUFFIX)
        name = key.removesuffix(ID_SUFFIX)
        if not NAME.fullmatch(name):
            if "." in name and NAME.fullmatch(name.split(".")[0]):
                raise ValueError(f"{key}: expected <name>, <name>{ID_SUFFIX} or {DEFAULT}")
            raise ValueError(f"{key}: a tenant's name is up to 64 letters, digits, _ and - "
                             "(starting with a letter or digit)")
        if numbered:
            if not _ID.fullmatch(value) or int(value) == 0:
                raise ValueError(f"{key}: expected a positive number, got {value!r}")
            ids[name] = int(value)
        else:
            if not value:
                raise ValueError(f"{key}: the tenant's store is missing")
            stores[name] = value
    for name in ids:
        if name not in stores:
            raise ValueError(f"{name}{ID_SUFFIX}: there is no tenant {name!r} (a line "
                             f"'{name} = <store>' is missing)")
    owners: dict[int, str] = {}
    for name, number in ids.items():
        if number in owners:
            raise ValueError(f"{name}{ID_SUFFIX}: {number} is already the number of "
                             f"{owners[number]}")
        owners[number] = name
    for name in stores:
        if _ID.fullmatch(name) and int(name) in owners and owners[int(name)] != name:
            raise ValueError(f"{name}: the name is the number of {owners[int(name)]}, so "
                             "ContactCenterId could not tell them apart")
    if default is not None and default not in stores:
        raise ValueError(f"{DEFAULT}: names no tenant ({default!r}; tenants: "
                         f"{', '.join(stores) or 'none'})")
    if not stores:
        if values:
            raise ValueError(f"{next(iter(values))}: no tenant is configured (a line "
                             "'<name> = <store>' is missing)")
        return Tenants()
    return Tenants({name: Tenant(name, store, ids.get(name)) for name, store in stores.items()},
                   default)


def limit(tenants: Tenants, names: Iterable[str]) -> tuple[str, ...]:
    """The names of the tenants that ``names`` (names or numbers, as an API key
    lists them) are; ValueError names one that is not configured."""
    found = []
    for name in names:
        tenant = tenants.find(name)
        if tenant is None:
            configured = ", ".join(tenants.names()) or "none: there is no [tenants] section"
            raise ValueError(f"names the tenant {name!r}, which is not configured "
                             f"(tenants: {configured})")
        found.append(tenant.name)
    return tuple(found)
