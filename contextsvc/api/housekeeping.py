"""The housekeeping thread of a server process. Every worker has one, which keeps
every store of the deployment (one per tenant); a store's ``periodic`` lets
exactly one of the workers do each job on it per period, whatever their number:

* every ``sweep_interval``, a sweep writes down what time has decided (expired
  services removed, auto-completions stored: API.md 6.3);
* once a day (the first time on a store included), a refresh reads every service
  and records the due moments that are stale, so that sweeps find them;
* every few seconds, the store reclaims the space of old versions when there is
  enough of it (requests never compact)."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable

from ..domain import housekeeping
from ..domain.lifecycle import Policy
from ..domain.timed import Clock
from ..errors import ContextError
from ..storage import ServiceStore

log = logging.getLogger("contextsvc.sweeper")
REFRESH_EVERY = 86400.0  # seconds between refreshes, which read every service
RECLAIM_EVERY = 5.0  # seconds between looks at how much space there is to reclaim


class Sweeper:
    def __init__(self, stores: Callable[[], list[ServiceStore]], policy: Policy,
                 clock: Clock, interval: float, sweeps: bool = True):
        """``sweeps=False`` (``[lifecycle] server_sweeps = false``): the thread only
        reclaims space; sweeps and refreshes are left to ``contextsvc sweep``."""
        self.stores, self.policy, self.clock, self.interval = stores, policy, clock, interval
        self.sweeps = sweeps
        self.tick = min(interval, RECLAIM_EVERY)
        self._pid = 0
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        """Start this process's sweeper thread, once per process (a thread does not
        survive gunicorn's fork)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=_run, args=(weakref.ref(self), self.tick),
                                 name="contextsvc-sweeper", daemon=True).start()

    def keep_all(self, failing: dict[int, str | None]) -> None:
        """One tick's housekeeping of every store; ``failing`` holds each store's last
        complaint, so that a complaint is logged once, not at every tick."""
        for n, store in enumerate(self.stores()):
            try:
                self.keep(store)
                failing[n] = None
            except ContextError as exc:  # the store's own: busy, failing, replaced
                if exc.message != failing.get(n):
                    log.warning("housekeeping postponed: %s", exc.message)
                failing[n] = exc.message
            except Exception:  # noqa: BLE001 - logged; the next tick tries again
                log.exception("housekeeping failed; trying again in %g s", self.tick)

    def keep(self, store: ServiceStore) -> None:
        """One tick's housekeeping of one store."""
        self.reclaim(store)
        if self.sweeps and self.run_once(store) is not None:
            self.refresh(store)  # after a sweep, by the process that swept

    def reclaim(self, store: ServiceStore) -> bool:
        """Compact the store if enough of it is old versions and removed services."""
        return housekeeping.reclaim(store, self.tick * 0.9)

    def refresh(self, store: ServiceStore) -> int | None:
        """Once a day across the deployment: record the stale due moments."""
        with store.periodic("refresh", REFRESH_EVERY) as mine:
            if not mine:
                return None
            fixed = housekeeping.refresh(store, self.policy, now=self.clock())
        if fixed:
            log.info("refresh: the due moment of %d services recorded anew", fixed)
        return fixed

    def run_once(self, store: ServiceStore) -> housekeeping.Swept | None:
        """Sweep now if no other process is sweeping or swept within the interval."""
        with store.periodic("sweep", self.interval * 0.9) as mine:
            if not mine:
                return None
            swept = housekeeping.sweep(store, self.policy, self.clock())
        if swept.removed or swept.completed:
            log.info("sweep: %d expired services removed, %d auto-completed",
                     swept.removed, swept.completed)
        return swept


def _run(sweeper: weakref.ref[Sweeper], tick: float) -> None:
    """The sweeper thread: a tick at a time, for as long as its app is there. It holds
    no reference of its own, so that an app that is dropped (an embedding program's,
    a test's) takes its thread with it instead of keeping its stores busy."""
    failing: dict[int, str | None] = {}
    while True:
        time.sleep(tick)
        alive = sweeper()
        if alive is None:
            return
        alive.keep_all(failing)
        del alive
