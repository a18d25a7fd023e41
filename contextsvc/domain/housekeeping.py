"""Housekeeping (API.md 6.3 and 6.4): writing down what time has already decided
(removing expired services, storing auto-completions), and purging on request.

Both walk the store in id order, in small batches. Choosing what to do reads each
batch without holding the store (a sweep trusts the store's index of due moments
and reads nothing to choose); doing it is one unit of work per batch, in which
each service is judged again as it is then, so that a client's write in between
is never undone or half applied. No request waits behind more than one batch, and
between batches the walk rests so that the requests of its own process go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import idempotency, lifecycle, timeutil
from .lifecycle import Policy

Doc = dict[str, Any]
BATCH = 500
# Between batches a walk rests as long as the batch took, at most this long (s):
# under gevent the walk shares its worker with that worker's requests, and a
# greenlet runs until it yields.
REST_MAX = 0.01
# after a walk that removed services, compact once the store holds more than this
# many times its live data, so that the space comes back now
RECLAIM_ABOVE = 1.25
COMPACT_JOB = "compact"

PURGES: dict[str, Callable[[Doc], bool]] = {
    "purge.service.all": lambda doc: True,
    "purge.service.started": lambda doc: "completed" not in doc,
    "purge.service.started.anonymous":
        lambda doc: "completed" not in doc and doc.get("customer_id") is None,
    "purge.service.completed": lambda doc: "completed" in doc,
    "purge.service.completed.anonymous":
        lambda doc: "completed" in doc and doc.get("customer_id") is None,
}


@dataclass
class Swept:
    removed: int = 0
    completed: int = 0


def _walk(store: Any, pick: Callable[[Doc], bool] | None, change: Callable[[Doc], bool | None],
          batch: int, due_by: str | None = None, upto: int | None = None,
          tick: Callable[[], None] | None = None) -> tuple[int, int]:
    """Walk the services with ids up to ``upto`` (all when None) in batches: ``pick``
    chooses from each as read without the lock (None: every service of the batch),
    ``change`` applies to the chosen ones in one unit of work."""
    written = deleted = 0
    after = 0
    while True:
        began = time.monotonic()
        with store.scan(after=after, limit=batch, due_by=due_by) as selection:
            rows = [(sid, loc) for sid, loc in selection.rows if upto is None or sid <= upto]
            chosen = ([sid for sid, _ in rows] if pick is None
                      else [sid for sid, loc in rows if pick(selection.read(loc))])
        if not rows:
            return written, deleted
        after = rows[-1][0]
        if chosen:
            done = store.rewrite_services(chosen, change)
            written, deleted = written + done[0], deleted + done[1]
        if tick is not None:
            tick()
        time.sleep(min(time.monotonic() - began, REST_MAX))


def sweep(store: Any, policy: Policy, now: datetime, batch: int = BATCH) -> Swept:
    """Remove the services expired at ``now`` and store the auto-completions due.

    Only the services whose recorded ``due`` moment has come are read, from the
    store's index; each is judged again, as it is, in the unit of work that
    changes it (a client may have written it since, or its recorded moment may be
    stale: then only the moment is recorded anew). Reclaims the space when much
    was removed."""

    def is_due(doc: Doc) -> bool:
        moment = lifecycle.due(doc, policy)
        return moment is not None and moment <= now

    completed = 0
    stamp = timeutil.format(now)

    def change(doc: Doc) -> bool | None:
        nonlocal completed
        fixed = doc.get("expires")  # a client-fixed moment; normalized ones compare as text
        if isinstance(fixed, str) and len(fixed) == len(stamp) and fixed <= stamp:
            return None
        pruned = idempotency.prune(doc, now)  # records of idempotency keys that expired
        if not is_due(doc):
            return lifecycle.mark_due(doc, policy) or pruned
        if not lifecycle.settle(doc, policy, now):
            return None
        completed += 1
        lifecycle.mark_due(doc, policy)
        return True

    with _removing(store):
        _, deleted = _walk(store, None, change, batch, stamp)
        if deleted:
            store.compact(above=RECLAIM_ABOVE)
    return Swept(removed=deleted, completed=completed)


def refresh(store: Any, policy: Policy, batch: int = BATCH, now: datetime | None = None) -> int:
    """Read every service that exists as it begins and record the ``due`` moment of
    those whose record is stale (written before lifecycle existed, or under another
    configuration), so that sweeps find them. Removes and completes nothing itself:
    the next sweep does. Returns how many records it corrected."""
    moment = now or lifecycle.utc_now()

    def change(doc: Doc) -> bool | None:
        # no write keeps an expired record of an idempotency key: its key may be
        # recorded anew elsewhere, and the store indexes the latest write of a key
        idempotency.prune(doc, moment)
        return lifecycle.mark_due(doc, policy)

    # Only the services that exist now: every write records the due moment as this
    # configuration has it, so those written meanwhile are not stale, and a walk that
    # also took them would read back every service a steady write load creates.
    return _walk(store, lambda doc: _stale(doc, policy), change, batch,
                 upto=store.last_id())[0]


def _stale(doc: Doc, policy: Policy) -> bool:
    moment = lifecycle.next_due(doc, policy)
    return doc.get("due") != (timeutil.format(moment) if moment is not None else None)


def purge(store: Any, limit: str, operation: str, policy: Policy, now: datetime,
          batch: int = BATCH, tick: Callable[[], None] | None = None) -> int:
    """Remove the services started before ``limit`` (a normalized timestamp) that
    the purge ``operation`` names, as they are at ``now``. Returns how many.
    ``tick`` is called after each batch."""
    wanted = PURGES[operation]

    def pick(doc: Doc) -> bool:
        return (doc["started"]["timestamp"] < limit and lifecycle.settle(doc, policy, now)
                and wanted(doc))

    def change(doc: Doc) -> bool | None:
        return None if pick(doc) else False

    with _removing(store):
        # the services that exist now: a walk that also took those created meanwhile
        # might never end under a steady write load
        deleted = _walk(store, pick, change, batch, upto=store.last_id(), tick=tick)[1]
        if deleted:
            store.compact(above=RECLAIM_ABOVE)
    return deleted


def _removing(store: Any) -> AbstractContextManager[bool]:
    """Held by a walk that removes services: the background's compactions (the
    periodic job "compact", see :func:`reclaim`) wait until its end, where it
    compacts once, instead of rewriting the file each time its removals pass the
    ratio. (When a compaction is running as the walk begins, the walk goes on
    without holding it.)"""
    return store.periodic(COMPACT_JOB, 0)


def reclaim(store: Any, every: float) -> bool:
    """The background's compaction: at most once per ``every`` seconds across the
    deployment, never during a walk that removes services; the store decides from
    its thresholds whether the space is worth a rewrite."""
    with store.periodic(COMPACT_JOB, every) as mine:
        return mine and store.reclaim()
