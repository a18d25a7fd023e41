"""Which store a request works on, the one place that decides it (API.md 8.2).

A deployment has one store, or one per tenant (``[tenants]``). The operation
wrapper (:mod:`.operations`) calls :func:`resolve_store` once per request, after
the API key is checked and before anything else: it finds the request's tenant
among the configured ones from its ``ContactCenterId`` header, checks that the key
may use it, and puts that tenant's store on ``flask.g.store``. Views reach no
other: there is no route, parameter or id that names a store, so no request can
reach another tenant's data. Also the process's sweeper, which keeps every
tenant's store.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask, current_app, g, request

from .. import config
from ..domain import tenancy
from ..domain.timed import Clock, TimedStore
from ..errors import Invalid
from ..storage import ServiceStore, open_store
from . import auth
from .housekeeping import Sweeper

TENANT_HEADER = "ContactCenterId"
GROUP_HEADER = "GroupId"


class StoreHolder:
    """One store per process: a worker forked after the store was opened (gunicorn
    ``--preload``) opens its own instead of sharing the parent's file handles
    (benoitc/gunicorn#1953)."""

    def __init__(self, settings: dict[str, Any], location: str | None = None):
        self.settings, self.location = settings, location
        self._store: ServiceStore | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> ServiceStore:
        store = self._store
        if store is None or self._pid != os.getpid():
            with self._lock:
                store = self._store
                if store is None or self._pid != os.getpid():
                    store = self._store = open_store(self.settings, self.location)
                    self._pid = os.getpid()
        return store


class Stores:
    """The stores of the deployment: one, or one per tenant."""

    def __init__(self, settings: dict[str, Any]):
        self.tenants: tenancy.Tenants = settings["tenants"]
        self._holders = ({t.name: StoreHolder(settings, t.store) for t in self.tenants}
                         if self.tenants else {None: StoreHolder(settings)})

    def get(self, tenant: str | None = None) -> ServiceStore:
        """The store of ``tenant`` (a configured tenant's name; None without tenants)."""
        return self._holders[tenant].get()

    def all(self) -> dict[str | None, ServiceStore]:
        """Every store, by tenant name (None for the one store without tenants)."""
        return {name: holder.get() for name, holder in self._holders.items()}


def init_app(app: Flask, settings: dict[str, Any], clock: Clock) -> None:
    stores = Stores(settings)
    app.extensions["contextsvc.stores"] = stores
    app.extensions["contextsvc.time"] = (config.policy(settings), clock)
    app.extensions["contextsvc.sweeper"] = Sweeper(
        lambda: list(stores.all().values()), config.policy(settings), clock,
        settings["lifecycle"]["sweep_interval"], settings["lifecycle"]["server_sweeps"])
    stores.all()  # open (and check) every store now: a damaged file stops the start


def resolve_store() -> None:
    """Before the view of an operation that works on a store: the one store it uses,
    as time makes it (expired services gone, idle ones completed: API.md 6.3)."""
    extensions = current_app.extensions
    stores: Stores = extensions["contextsvc.stores"]
    tenant = None
    if stores.tenants:
        headers = request.headers
        group = headers.get(GROUP_HEADER)
        if group is not None and len(group) > tenancy.MAX_GROUP_ID:
            raise Invalid(f"The {GROUP_HEADER} header is longer than "
                          f"{tenancy.MAX_GROUP_ID} characters")
        tenant = stores.tenants.resolve(headers.get(TENANT_HEADER)).name
        auth.check_tenant(tenant)
        g.contextsvc_tenant = tenant
    policy, clock = extensions["contextsvc.time"]
    g.store = TimedStore(stores.get(tenant), policy, clock)
    extensions["contextsvc.sweeper"].ensure_running()
