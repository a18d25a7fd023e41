"""Housekeeping (API.md 6.3 and 6.4): writing down what time has already decided
(removing expired services, storing auto-completions), and purging on request.

Both walk the store in id order, in small batches. Choosing what to do reads each
batch without holding the store; doing it is one unit of work per batch, in which
each service is judged again as it is then, so that a client's write in between
is never undone or half applied. No request waits behind more than one batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import lifecycle, timeutil
from .lifecycle import Policy

Doc = dict[str, Any]
BATCH = 200
# after a walk that removed services, compact once the store holds more than this
# many times its live data, so that the space comes back now
RECLAIM_ABOVE = 1.25

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


def _walk(store: Any, pick: Callable[[Doc], bool], change: Callable[[Doc], bool | None],
          batch: int, due_by: str | None = None) -> tuple[int, int]:
    written = deleted = 0
    after = 0
    while True:
        began = time.monotonic()
        with store.scan(after=after, limit=batch, due_by=due_by) as selection:
            rows = selection.rows
            chosen = [sid for sid, loc in rows if pick(selection.read(loc))]
        if not rows:
            return written, deleted
        after = rows[-1][0]
        if chosen:
            done = store.rewrite_services(chosen, change)
            written, deleted = written + done[0], deleted + done[1]
        # Rest as long as the batch took: the requests of this process get at least
        # half its time (under gevent a greenlet runs until it yields, so a bare
        # yield would let each request take one step per batch).
        time.sleep(time.monotonic() - began)


def sweep(store: Any, policy: Policy, now: datetime, batch: int = BATCH,
          full: bool = False) -> Swept:
    """Remove the services expired at ``now`` and store the auto-completions due.

    Only the services whose recorded ``due`` moment has come are read, from the
    store's index. ``full`` reads every service instead, and also records the
    ``due`` moment of those whose record is stale (written before lifecycle existed,
    or under another configuration)."""

    def is_due(doc: Doc) -> bool:
        moment = lifecycle.due(doc, policy)
        return moment is not None and moment <= now

    def pick(doc: Doc) -> bool:
        return is_due(doc) or (full and _stale(doc, policy))

    completed = 0

    def change(doc: Doc) -> bool | None:
        nonlocal completed
        if not is_due(doc):
            # a client wrote it meanwhile, or its recorded due moment is stale
            return lifecycle.mark_due(doc, policy)
        if not lifecycle.settle(doc, policy, now):
            return None
        completed += 1
        lifecycle.mark_due(doc, policy)
        return True

    _, deleted = _walk(store, pick, change, batch, None if full else timeutil.format(now))
    if deleted:
        store.compact(above=RECLAIM_ABOVE)
    return Swept(removed=deleted, completed=completed)


def _stale(doc: Doc, policy: Policy) -> bool:
    moment = lifecycle.due(doc, policy)
    return doc.get("due") != (timeutil.format(moment) if moment is not None else None)


def purge(store: Any, limit: str, operation: str, policy: Policy, now: datetime,
          batch: int = BATCH) -> int:
    """Remove the services started before ``limit`` (a normalized timestamp) that
    the purge ``operation`` names, as they are at ``now``. Returns how many."""
    wanted = PURGES[operation]

    def pick(doc: Doc) -> bool:
        return (doc["started"]["timestamp"] < limit and lifecycle.settle(doc, policy, now)
                and wanted(doc))

    def change(doc: Doc) -> bool | None:
        return None if pick(doc) else False

    deleted = _walk(store, pick, change, batch)[1]
    if deleted:
        store.compact(above=RECLAIM_ABOVE)
    return deleted
