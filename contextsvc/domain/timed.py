"""The store as time makes it (API.md 6.3): a :class:`ServiceStore` whose documents are
what they are at the moment they are read or written, whether or not housekeeping
has run. An expired service does not exist for any call; a service past its
auto-complete deadline reads as completed, and is completed before any change to
it is applied. Every write by a client moves the service's ``updated`` time.

Every request of the API works through one of these, so no route can forget the
rule; housekeeping works on the plain store and writes down what this one shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from ..errors import NotFound, StoreReplaced
from ..storage.base import Doc, RequestKey, Selection, ServiceStore, T
from ..storage.records import decode
from . import idempotency, lifecycle, timeutil, versions
from .lifecycle import Policy, utc_now

Clock = Callable[[], datetime]
# makes the answer to a request from a write's result and the service as written
# (lifecycle fields shown): (body or None, headers)
Answer = Callable[[Any, Doc], tuple[Any, "dict[str, str] | None"]]


def settled(doc: Doc, policy: Policy, now: datetime) -> Doc | None:
    """``doc`` as it is at ``now``, with its lifecycle fields; None if expired."""
    if not lifecycle.settle(doc, policy, now):
        return None
    doc.update(lifecycle.shown(doc, policy))
    return doc


class Settler(NamedTuple):
    """Reads documents in their stored form (:meth:`TimedSelection.read_raw`) as the
    selection they come from reads them: for work done in another process."""

    policy: Policy
    now: datetime

    def __call__(self, raw: bytes) -> Doc | None:
        try:
            doc = decode(raw)
        except ValueError:  # UnicodeDecodeError included
            raise StoreReplaced("The data file was changed other than by appending while "
                                "it was read") from None
        return settled(doc, self.policy, self.now)


class TimedSelection(Selection):
    """A selection whose documents are settled when read; expired ones read as None
    and are left out when iterating. Documents read in their stored form
    (:meth:`read_raw`) are not: its :meth:`settler` reads them."""

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

    def read_raw(self, loc: Any) -> bytes:
        return self._inner.read_raw(loc)

    def settler(self) -> Settler:
        return Settler(self._store.policy, self._now)

    def close(self) -> None:
        self._inner.close()


class TimedStore:
    def __init__(self, store: ServiceStore, policy: Policy, clock: Clock = utc_now):
        self.store, self.policy, self.clock = store, policy, clock

    def __getattr__(self, name: str) -> Any:  # count, compact, periodic, close...
        return getattr(self.store, name)

    def settled(self, doc: Doc, now: datetime) -> Doc | None:
        """``doc`` as it is at ``now``, with its lifecycle fields; None if expired."""
        return settled(doc, self.policy, now)

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

    def find_request(self, key: str) -> Doc | None:
        """The live record of idempotency key ``key``, if any."""
        return self.store.find_request(RequestKey(key, timeutil.format(self.clock())))

    def etag(self, doc: Doc) -> str:
        """The ETag of ``doc`` as read or written through this store."""
        return versions.etag(doc, lifecycle.shown(doc, self.policy))

    # ---------------------------------------------------------------- writing
    # Every client write: drops the expired records of idempotency keys, counts a
    # version, moves ``updated`` and the due moment. With ``answer``, the answer to
    # the request is made in the unit of work, and recorded there when the request
    # carries an idempotency key (``self.request``); the call then returns it in
    # place of what ``change`` returned. ``self.if_match`` (If-Match) is checked in
    # the unit of work, before any change.
    request: idempotency.Pending | None = None
    if_match: list[str] | str | None = None

    def _key(self, now: datetime) -> RequestKey | None:
        if self.request is None:
            return None
        return RequestKey(self.request.key, timeutil.format(now))

    def _written(self, doc: Doc, now: datetime) -> None:
        idempotency.prune(doc, now)
        versions.bump(doc)
        lifecycle.touch(doc, now)

    def _answered(self, doc: Doc, answer: Answer, result: Any, now: datetime) -> Any:
        out = answer(result, self._shown(doc))
        if self.request is not None:
            body, headers = out
            idempotency.record(doc, self.request, body, (headers or {}).get("Location"), now)
        return out

    def _shown(self, doc: Doc) -> Doc:
        return {**doc, **lifecycle.shown(doc, self.policy)}

    def create_service(self, build: Callable[[int], Doc], answer: Answer | None = None) -> Any:
        """The new service's document; with ``answer``, what it returned."""
        now, out = self.clock(), []

        def make(sid: int) -> Doc:
            doc = build(sid)
            self._written(doc, now)
            if answer is not None:
                out.append(self._answered(doc, answer, doc, now))
            lifecycle.mark_due(doc, self.policy)
            return doc

        doc = self.store.create_service(make, self._key(now))
        return out[0] if answer is not None else (self.settled(doc, now) or doc)

    def create_services(self, builds: Iterable[Callable[[int], Doc]]) -> list[Doc]:
        now = self.clock()

        def timed(build: Callable[[int], Doc]) -> Callable[[int], Doc]:
            def make(sid: int) -> Doc:
                doc = build(sid)
                self._written(doc, now)
                lifecycle.mark_due(doc, self.policy)
                return doc
            return make

        docs = self.store.create_services([timed(build) for build in builds])
        return [self.settled(doc, now) or doc for doc in docs]

    def update_service(self, sid: int, change: Callable[[Doc], T],
                       answer: Answer | None = None) -> tuple[Any, Doc]:
        now = self.clock()

        def timed(doc: Doc) -> Any:
            if not lifecycle.settle(doc, self.policy, now):
                raise NotFound(f"There is no service {sid}")
            if self.if_match is not None:
                versions.check(self.if_match, self.etag(doc))
            result = change(doc)
            self._written(doc, now)
            if answer is not None:
                result = self._answered(doc, answer, result, now)
            lifecycle.mark_due(doc, self.policy)
            return result

        result, doc = self.store.update_service(sid, timed, self._key(now))
        doc.update(lifecycle.shown(doc, self.policy))
        return result, doc

    def find_or_create(self, wanted: Sequence[tuple[str | None, str | None]],
                       choose: Callable[[int, list[Doc]], Doc | None],
                       build: Callable[[int, int, datetime], Doc],
                       change: Callable[[int, Doc, bool], T],
                       answer: Callable[[list[T]], tuple[Any, dict[str, str]]]) -> Any:
        """Find or create (see the store's contract) with the services as time makes
        them: expired ones are not candidates, idle ones are completed. Returns what
        ``answer`` made of the elements' results."""
        now, results, out = self.clock(), [], []
        last = len(wanted) - 1

        def settled(i: int, docs: list[Doc]) -> Doc | None:
            return choose(i, [doc for doc in docs if lifecycle.settle(doc, self.policy, now)])

        def timed(i: int, doc: Doc, created: bool) -> T:
            result = change(i, doc, created)
            results.append(result)
            self._written(doc, now)
            if i == last:  # the request's answer, kept with the last service it wrote
                out.append(self._answered(doc, lambda r, _: answer(r), results, now))
            lifecycle.mark_due(doc, self.policy)
            return result

        self.store.find_or_create(wanted, settled, lambda i, sid: build(i, sid, now), timed,
                                  self._key(now))
        return out[0]

    def delete_service(self, sid: int) -> None:
        now = self.clock()

        def gone(doc: Doc) -> None:
            if not lifecycle.settle(doc, self.policy, now):
                raise NotFound(f"There is no service {sid}")
            if self.if_match is not None:
                versions.check(self.if_match, self.etag(doc))

        if self.store.rewrite_services([sid], gone)[1] == 0:
            raise NotFound(f"There is no service {sid}")
