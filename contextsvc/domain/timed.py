"""The store as time makes it (API.md 6.3): a :class:`ServiceStore` whose documents are
what they are at the moment they are read or written, whether or not housekeeping
has run. An expired service does not exist for any call; a service past its
auto-complete deadline reads as completed, and is completed before any change to
it is applied. Every write by a client moves the service's ``updated`` time.

Every request of the API works through one of these, so no route can forget the
rule; housekeeping works on the plain store and writes down what this one shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from ..errors import NotFound
from ..storage.base import Doc, Selection, ServiceStore, T
from . import lifecycle
from .lifecycle import Policy, utc_now

Clock = Callable[[], datetime]


class TimedSelection(Selection):
    """A selection whose documents are settled when read; expired ones read as None
    and are left out when iterating."""

    def __init__(self, inner: Selection, store: TimedStore, now: datetime):
        self._inner, self._store, self._now = inner, store, now
        self.rows, self.bytes = inner.rows, inner.bytes

    def __iter__(self) -> Iterator[Doc]:
        for _, loc in self.rows:
            doc = self.read(loc)
            if doc is not None:
                yield doc

    def read(self, loc: Any) -> Doc | None:  # type: ignore[override]
        return self._store.settled(self._inner.read(loc), self._now)

    def close(self) -> None:
        self._inner.close()


class TimedStore:
    def __init__(self, store: ServiceStore, policy: Policy, clock: Clock = utc_now):
        self.store, self.policy, self.clock = store, policy, clock

    def __getattr__(self, name: str) -> Any:  # count, compact, periodic, close...
        return getattr(self.store, name)

    def settled(self, doc: Doc, now: datetime) -> Doc | None:
        """``doc`` as it is at ``now``, with its lifecycle fields; None if expired."""
        if not lifecycle.settle(doc, self.policy, now):
            return None
        doc.update(lifecycle.shown(doc, self.policy))
        return doc

    # ---------------------------------------------------------------- reading
    def get_service(self, sid: int) -> Doc:
        doc = self.settled(self.store.get_service(sid), self.clock())
        if doc is None:
            raise NotFound(f"There is no service {sid}")
        return doc

    def customer_services(self, customer_id: str) -> Selection:
        return TimedSelection(self.store.customer_services(customer_id), self, self.clock())

    def anonymous_services(self, contact_key: str) -> Selection:
        return TimedSelection(self.store.anonymous_services(contact_key), self, self.clock())

    def scan(self, after: int = 0, limit: int | None = None,
             due_by: str | None = None) -> Selection:
        return TimedSelection(self.store.scan(after, limit, due_by), self, self.clock())

    # ---------------------------------------------------------------- writing
    def create_service(self, build: Callable[[int], Doc]) -> Doc:
        return self.create_services([build])[0]

    def create_services(self, builds: Iterable[Callable[[int], Doc]]) -> list[Doc]:
        now = self.clock()

        def timed(build: Callable[[int], Doc]) -> Callable[[int], Doc]:
            def make(sid: int) -> Doc:
                doc = build(sid)
                lifecycle.touch(doc, now)
                lifecycle.mark_due(doc, self.policy)
                return doc
            return make

        docs = self.store.create_services([timed(build) for build in builds])
        return [self.settled(doc, now) or doc for doc in docs]

    def update_service(self, sid: int, change: Callable[[Doc], T]) -> tuple[T, Doc]:
        now = self.clock()

        def timed(doc: Doc) -> T:
            if not lifecycle.settle(doc, self.policy, now):
                raise NotFound(f"There is no service {sid}")
            result = change(doc)
            lifecycle.touch(doc, now)
            lifecycle.mark_due(doc, self.policy)
            return result

        result, doc = self.store.update_service(sid, timed)
        doc.update(lifecycle.shown(doc, self.policy))
        return result, doc

    def delete_service(self, sid: int) -> None:
        now = self.clock()

        def gone(doc: Doc) -> None:
            if not lifecycle.settle(doc, self.policy, now):
                raise NotFound(f"There is no service {sid}")

        if self.store.rewrite_services([sid], gone)[1] == 0:
            raise NotFound(f"There is no service {sid}")
