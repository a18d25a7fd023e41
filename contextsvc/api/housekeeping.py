"""The sweeper of a server process (API.md 6.3): every ``sweep_interval`` it offers
to write down what time has decided (expired services removed, auto-completions
stored). Every worker has one; the store's ``periodic`` lets exactly one of them
sweep per interval, whatever the number of workers."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from ..domain import housekeeping
from ..domain.lifecycle import Policy
from ..domain.timed import Clock
from ..storage import ServiceStore

log = logging.getLogger("contextsvc.sweeper")
FULL_EVERY = 86400.0  # seconds between sweeps that read every service


class Sweeper:
    def __init__(self, store: Callable[[], ServiceStore], policy: Policy, clock: Clock,
                 interval: float):
        self.store, self.policy, self.clock, self.interval = store, policy, clock, interval
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
                threading.Thread(target=self._run, name="contextsvc-sweeper",
                                 daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - logged; the next interval tries again
                log.exception("the sweep failed; trying again in %g s", self.interval)

    def run_once(self) -> housekeeping.Swept | None:
        """Sweep now if no other process is sweeping or swept within the interval."""
        store = self.store()
        with store.periodic("sweep", self.interval * 0.9) as mine:
            if not mine:
                return None
            # Sweeps read only what the index says is due. One a day, across the
            # deployment (the first one on a store included), reads everything, to
            # catch services whose recorded due moment is stale (written before
            # lifecycle existed, or under another configuration).
            with store.periodic("sweep-full", FULL_EVERY) as full:
                swept = housekeeping.sweep(store, self.policy, self.clock(), full=full)
        if swept.removed or swept.completed:
            log.info("sweep: %d expired services removed, %d auto-completed",
                     swept.removed, swept.completed)
        return swept
