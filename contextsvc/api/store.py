"""Which store a request works on. It is resolved once per request, before the
view runs, and put on ``flask.g.store``; views reach no other. (With tenants, the
next step, it is resolved from the request's tenant here, and only here.) Also the
process's sweeper, which writes down what time has decided."""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask, current_app, g

from .. import config
from ..domain.timed import Clock, TimedStore
from ..storage import ServiceStore, open_store
from .housekeeping import Sweeper


class StoreHolder:
    """One store per process: a worker forked after the store was opened (gunicorn
    ``--preload``) opens its own instead of sharing the parent's file handles
    (benoitc/gunicorn#1953)."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings
        self._store: ServiceStore | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> ServiceStore:
        store = self._store
        if store is None or self._pid != os.getpid():
            with self._lock:
                store = self._store
                if store is None or self._pid != os.getpid():
                    store = self._store = open_store(self.settings)
                    self._pid = os.getpid()
        return store


def init_app(app: Flask, settings: dict[str, Any], clock: Clock) -> None:
    holder = StoreHolder(settings)
    app.extensions["contextsvc.stores"] = holder
    app.extensions["contextsvc.time"] = (config.policy(settings), clock)
    app.extensions["contextsvc.sweeper"] = Sweeper(
        holder.get, config.policy(settings), clock, settings["lifecycle"]["sweep_interval"])
    holder.get()  # open (and check) the store now: a damaged file stops the start


def resolve_store() -> None:
    """Before every request to an API blueprint: the one store its views use, as time
    makes it (expired services gone, idle ones completed: API.md 6.3)."""
    policy, clock = current_app.extensions["contextsvc.time"]
    g.store = TimedStore(current_app.extensions["contextsvc.stores"].get(), policy, clock)
    current_app.extensions["contextsvc.sweeper"].ensure_running()
