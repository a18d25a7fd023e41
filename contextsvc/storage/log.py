"""The log store: service documents kept as a log of versions, with their indexes
in memory. It implements :class:`~contextsvc.storage.base.ServiceStore` over an
engine that only moves bytes: :class:`~contextsvc.storage.logfile.LogFile` (the
JSON file every gunicorn worker shares) or
:class:`~contextsvc.storage.memory.MemoryLog` (one process, nothing kept).

Each method is one unit of work: it runs under the engine's lock and first catches
up on what other processes appended. A writing method returns only once its write
is flushed to disk; when the write fails, nothing changes (when only the flush
fails, it raises although other workers may already read the write).
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import NamedTuple

from ..errors import (
    NotFound,
    StoreBusy,
    StoreCorrupt,
    StoreFailure,
    StoreReplaced,
    TooLarge,
)
from .base import (
    MAX_SERVICE_ID,
    ON_CONFLICT,
    Doc,
    Progress,
    Recorded,
    RequestKey,
    Selection,
    StoreStats,
    T,
    import_conflict,
)
from .logfile import LogFile
from .memory import MemoryLog
from .records import (
    NO_KEYS,
    REQUESTS,
    STORE_DOC,
    Encoded,
    Keys,
    Location,
    encode,
    encode_store_doc,
    encoded,
    index_keys,
)
from .tinydbfiles import import_tinydb_file

log = logging.getLogger(__name__)


class Row(NamedTuple):
    loc: Location
    customer_id: str | None
    contact_key: str | None
    due: str | None
    requests: tuple[str, ...] = NO_KEYS  # idempotency keys the document holds


class LogStore:
    def __init__(self, engine: LogFile | MemoryLog, *, compact_min_bytes: int = 16 << 20,
                 compact_ratio: float = 2.0, max_service_bytes: int = 16 << 20,
                 lock_timeout: float = 10.0):
        self.engine = engine
        self.engine_name = "memory" if isinstance(engine, MemoryLog) else "file"
        self.compact_min_bytes = compact_min_bytes
        self.compact_ratio = compact_ratio
        self.max_service_bytes = max_service_bytes
        self.pid = os.getpid()
        self._mutex = threading.RLock()
        self._wait = lock_timeout
        self._refused: StoreReplaced | None = None
        self._reset()
        try:
            with self._turn():
                self._preread()
            with self._turn(), engine.locked(True):
                if isinstance(engine, LogFile):
                    import_tinydb_file(engine)
                engine.ensure()
                self._sync()
                engine.repair()
        except StoreCorrupt:
            raise  # damage stops the start: nothing is guessed or written over
        except StoreFailure as exc:
            # A disk that cannot be written now (read-only, full) must not stop the
            # process: it serves what it can read, writes answer 503 until the disk
            # takes them again. (gunicorn stops its master when a worker fails to boot.)
            log.warning("the store cannot be written now (%s); reads are served, writes "
                        "answer 503 until it can", exc.message)

    def _preread(self) -> None:
        """Index what the engine can give without its lock (see LogFile.preread);
        anything amiss leaves it all to the first read under the lock."""
        try:
            for sid, loc, keys in self.engine.preread():
                self._apply(sid, loc, keys)
        except (StoreReplaced, StoreCorrupt, StoreFailure):
            self.engine.forget()
            self._reset()
            return
        self._last_id = max(self._last_id, self.engine.last_id)

    # ----------------------------------------------------------------- indexes
    def _reset(self) -> None:
        self._rows: dict[int, Row] = {}
        self._by_customer: dict[str, set[int]] = {}
        self._anonymous: dict[str, set[int]] = {}   # contact_key -> services without customer
        self._order: list[int] = []  # ids in increasing order; deleted ones until pruned
        self._dead = 0  # deleted ids still in _order
        self._live = 0
        self._last_id = self.engine.last_id
        # idempotency key -> the service whose document holds its record (0: the store's
        # own document); _own is where that one is and the keys it holds
        self._requests: dict[str, int] = {}
        self._own: Row | None = None

    def _sync(self) -> None:
        if self._refused is not None:
            raise self._refused
        try:
            reset, records = self.engine.changes()
            known = self._last_id
            if reset:
                self._reset()
            for sid, loc, keys in records:
                self._apply(sid, loc, keys)
            self.engine.verify()
            if self._last_id < known:  # a file with fewer ids than this one has handed out
                raise self.engine._replaced("was replaced by an older one")
        except StoreReplaced as exc:
            self._refused = exc  # for good: the index no longer describes the file
            log.error("%s", exc.message)
            raise

    def _apply(self, sid: int, loc: Location, keys: Keys | None) -> None:
        if sid == STORE_DOC:
            self._index_requests(sid, self._own, keys)
            self._own = None if keys is None else Row(loc, *keys)
            return
        old = self._rows.pop(sid, None)
        if old is not None or (keys is not None and keys[3]):
            self._index_requests(sid, old, keys)
        if old is None and keys is not None:
            self._add_to_order(sid)
        elif old is not None and keys is None:
            self._dead += 1
        if old is not None:
            self._live -= old.loc[1]
            if old.customer_id is not None:
                _discard(self._by_customer, old.customer_id, sid)
            elif old.contact_key is not None:
                _discard(self._anonymous, old.contact_key, sid)
        if sid > self._last_id:
            self._last_id = sid
        if keys is None:
            return
        row = Row(loc, *keys)
        self._rows[sid] = row
        self._live += loc[1]
        if row.customer_id is not None:
            self._by_customer.setdefault(row.customer_id, set()).add(sid)
        elif row.contact_key is not None:
            self._anonymous.setdefault(row.contact_key, set()).add(sid)

    def _index_requests(self, sid: int, old: Row | None, keys: Keys | None) -> None:
        """The latest write of a key's record wins: a record is written only when no
        live one exists, and every write of a document first drops its expired ones."""
        new = keys[3] if keys is not None else NO_KEYS
        if old is not None:
            for key in old.requests:
                if key not in new and self._requests.get(key) == sid:
                    del self._requests[key]
        for key in new:
            self._requests[key] = sid

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's turn at the store. Threads (or greenlets, under gevent
        workers) of one process take turns here before they take the engine's lock;
        they wait at most as long as for that lock, then get StoreBusy (503)."""
        if not self._mutex.acquire(timeout=self._wait):
            raise StoreBusy(f"The store is busy: this process's turn did not come within "
                            f"{self._wait:g} s")
        try:
            yield
        finally:
            self._mutex.release()

    def _add_to_order(self, sid: int) -> None:
        order = self._order
        if not order or sid > order[-1]:
            order.append(sid)  # a new service: the usual case
            return
        at = bisect.bisect_left(order, sid)  # an imported id
        if at < len(order) and order[at] == sid:
            self._dead -= 1  # it was deleted and comes back
        else:
            order.insert(at, sid)

    # ----------------------------------------------------------------- reading
    def get_service(self, sid: int) -> Doc:
        with self._turn(), self.engine.locked(False):
            self._sync()
            return self._read(sid)

    def customer_services(self, customer_id: str) -> Selection:
        """The services associated with ``customer_id``, in id order."""
        return self._select("_by_customer", customer_id)

    def anonymous_services(self, contact_key: str) -> Selection:
        """The anonymous services with ``contact_key``, in id order."""
        return self._select("_anonymous", contact_key)

    def _select(self, index: str, key: str) -> Selection:
        with self._turn(), self.engine.locked(False):
            self._sync()  # may replace the indexes (another process compacted): look after
            return self._selection(sorted(getattr(self, index).get(key, ())))

    def scan(self, after: int = 0, limit: int | None = None,
             due_by: str | None = None) -> Selection:
        with self._turn(), self.engine.locked(False):
            self._sync()
            if self._dead > len(self._order) // 2:
                self._order = [sid for sid in self._order if sid in self._rows]
                self._dead = 0
            order, rows, sids = self._order, self._rows, []
            at = bisect.bisect_right(order, after)
            while at < len(order) and (limit is None or len(sids) < limit):
                row = rows.get(order[at])
                if row is not None and (due_by is None or (row.due is not None
                                                            and row.due <= due_by)):
                    sids.append(order[at])
                at += 1
            return self._selection(sids)

    def _selection(self, sids: list[int]) -> Selection:
        locs = [self._rows[sid].loc for sid in sids]
        return Selection(self.engine.reader(), list(zip(sids, locs, strict=True)),
                         (loc[1] for loc in locs))

    def _read(self, sid: int) -> Doc:
        doc = self.engine.read(self._row(sid).loc)
        if doc.get("service_id") != sid:  # the file changed under the index
            raise self.engine._replaced("was changed other than by appending")
        return doc

    def find_request(self, key: RequestKey) -> Doc | None:
        # (the HTTP layer keeps the answers it replays: contextsvc/api/retries.py)
        with self._turn(), self.engine.locked(False):
            self._sync()
            return self._request(key)

    def may_hold_request(self, name: str) -> bool:
        # this process's index as its last unit of work left it, read without a turn
        return name in self._requests

    def _request(self, key: RequestKey | None) -> Doc | None:
        """Under the lock: the live record of ``key``, wherever it is kept."""
        if key is None:
            return None
        sid = self._requests.get(key.name)
        if sid is None:
            return None
        if sid == STORE_DOC:
            assert self._own is not None
            doc = self.engine.read(self._own.loc)
        else:
            doc = self._read(sid)
        record = doc.get(REQUESTS, {}).get(key.name)
        return record if record is not None and record.get("until", "") > key.now else None

    def _check(self, key: RequestKey | None) -> None:
        record = self._request(key)
        if record is not None:
            raise Recorded(record)

    def count(self) -> int:
        with self._turn(), self.engine.locked(False):
            self._sync()
            return len(self._rows)

    def last_id(self) -> int:
        with self._turn(), self.engine.locked(False):
            self._sync()
            return self._last_id

    def _row(self, sid: int) -> Row:
        row = self._rows.get(sid)
        if row is None:
            raise NotFound(f"There is no service {sid}")
        return row

    # ----------------------------------------------------------------- writing
    def create_service(self, build: Callable[[int], Doc], key: RequestKey | None = None) -> Doc:
        """Give ``build`` a new service id and store the document it returns."""
        return self.create_services([build], key)[0]

    def create_services(self, builds: Iterable[Callable[[int], Doc]],
                        key: RequestKey | None = None) -> list[Doc]:
        """Several new services in one durable write (used for bulk loading)."""
        with self._turn():
            with self.engine.locked(True):
                self._sync()
                self._check(key)
                docs = []
                sid = self._last_id
                for build in builds:
                    sid += 1
                    if sid > MAX_SERVICE_ID:
                        raise StoreFailure("No service ids are left below 2^53")
                    docs.append((sid, build(sid)))
                self._write(docs)
            self.engine.sync()
            return [doc for _, doc in docs]

    def update_service(self, sid: int, change: Callable[[Doc], T],
                       key: RequestKey | None = None) -> tuple[T, Doc]:
        """Read service ``sid``, let ``change`` edit it in place, store the result.

        Whatever ``change`` raises propagates and nothing is written. Returns what
        ``change`` returned and the stored document.
        """
        with self._turn():
            with self.engine.locked(True):
                self._sync()
                self._check(key)
                doc = self._read(sid)
                result = change(doc)
                self._write([(sid, doc)])
            self.engine.sync()
            return result, doc

    def find_or_create(self, wanted: Sequence[tuple[str | None, str | None]],
                       choose: Callable[[int, list[Doc]], Doc | None],
                       build: Callable[[int, int], Doc],
                       change: Callable[[int, Doc, bool], T],
                       key: RequestKey | None = None) -> list[tuple[T, Doc, bool]]:
        with self._turn():
            with self.engine.locked(True):
                self._sync()
                self._check(key)
                here: dict[int, Doc] = {}  # read or made in this unit, as changed so far
                chosen: dict[int, Doc] = {}
                out = []
                sid = self._last_id
                for i, (customer_id, contact_key) in enumerate(wanted):
                    index = (self._by_customer.get(customer_id, ()) if customer_id is not None
                             else self._anonymous.get(contact_key or "", ()))
                    sids = set(index)
                    for known, doc in here.items():  # as this unit left them
                        if _owned(doc, customer_id, contact_key):
                            sids.add(known)
                        else:
                            sids.discard(known)
                    for each in sids:
                        if each not in here:
                            here[each] = self._read(each)
                    doc = choose(i, [here[each] for each in sorted(sids)])
                    created = doc is None
                    if doc is None:
                        sid += 1
                        if sid > MAX_SERVICE_ID:
                            raise StoreFailure("No service ids are left below 2^53")
                        doc = here[sid] = build(i, sid)
                    out.append((change(i, doc, created), doc, created))
                    chosen[doc["service_id"]] = doc
                self._write(sorted(chosen.items()))
            self.engine.sync()
            return out

    def put_request(self, key: RequestKey, record: Doc | None,
                    unless: Callable[[Doc], bool] | None = None) -> None:
        with self._turn():
            with self.engine.locked(True):
                self._sync()
                current = self._request(key)
                if current is not None and unless is not None and unless(current):
                    raise Recorded(current)
                own = self.engine.read(self._own.loc) if self._own is not None else {}
                records = {name: rec for name, rec in own.get(REQUESTS, {}).items()
                           if rec.get("until", "") > key.now}  # expired ones go
                if record is None:
                    records.pop(key.name, None)
                else:
                    records[key.name] = record
                self._write([(STORE_DOC, {REQUESTS: records})])
            self.engine.sync()

    def delete_service(self, sid: int) -> None:
        with self._turn():
            with self.engine.locked(True):
                self._sync()
                self._row(sid)
                self._write([(sid, None)])
            self.engine.sync()

    def rewrite_services(self, sids: Iterable[int], change: Callable[[Doc], bool | None]
                         ) -> tuple[int, int]:
        written = deleted = 0
        with self._turn():
            with self.engine.locked(True):
                self._sync()
                items: list[tuple[int, Doc | None]] = []
                for sid in sids:
                    if sid not in self._rows:
                        continue
                    doc = self._read(sid)
                    verdict = change(doc)
                    if verdict is None:
                        items.append((sid, None))
                        deleted += 1
                    elif verdict:
                        items.append((sid, doc))
                        written += 1
                if items:
                    self._write(items)
            self.engine.sync()
        return written, deleted

    def periodic(self, name: str, every: float) -> AbstractContextManager[bool]:
        return self.engine.periodic(name, every)

    def put_services(self, docs: Iterable[Doc | Encoded], on_conflict: str = "fail") -> int:
        if on_conflict not in ON_CONFLICT:
            raise ValueError(f"on_conflict: one of {', '.join(ON_CONFLICT)}")
        records = []
        for doc in docs:  # encoded before the lock is taken
            sid = doc.service_id if isinstance(doc, Encoded) else doc.get("service_id")
            if isinstance(sid, bool) or not isinstance(sid, int) or not 0 < sid <= MAX_SERVICE_ID:
                raise ValueError(f"service_id {sid!r} is not an id from 1 to 2^53 - 1")
            records.append(doc if isinstance(doc, Encoded) else encoded(doc))
        with self._turn():
            with self.engine.locked(True):
                self._sync()
                existing = [r.service_id for r in records if r.service_id in self._rows]
                if existing and on_conflict == "fail":
                    raise import_conflict(existing)
                if on_conflict == "skip":
                    records = [r for r in records if r.service_id not in self._rows]
                self._append(records)
            self.engine.sync()
            return len(records)

    def _write(self, items: list[tuple[int, Doc | None]]) -> None:
        self._append([(sid, None, None) if doc is None else
                      (sid, encode_store_doc(doc) if sid == STORE_DOC else encode(doc),
                       index_keys(doc)) for sid, doc in items])

    def _append(self, items: Sequence[tuple[int, bytes | None, Keys | None]]) -> None:
        """Write bodies (None deletes) with their index keys, and index them."""
        for sid, body, _ in items:
            if body is not None and len(body) > self.max_service_bytes:
                raise TooLarge(f"Service {sid} would take {len(body)} bytes, more than the "
                               f"limit of {self.max_service_bytes} ([limits] max_service_bytes)"
                               "; nothing was changed")
        locations = self.engine.append([(sid, body) for sid, body, _ in items])
        for (sid, _, keys), loc in zip(items, locations, strict=True):
            self._apply(sid, loc, keys)

    def compact(self, above: float | None = None) -> bool:
        """Rewrite the file with only the newest version of each live service."""
        with self._turn(), self.engine.locked(True):
            self._sync()
            if above is not None and self.engine.size() <= above * self._live:
                return False
            self._compact()
            return True

    def reclaim(self) -> bool:
        """Compact when the file passes ``compact_min_bytes`` and ``compact_ratio``
        times the live data. Requests never compact (a compaction rewrites the
        whole file under the exclusive lock): each server process's housekeeping
        thread calls this every few seconds."""
        with self._turn(), self.engine.locked(False):
            self._sync()
            size = self.engine.size()
            if size <= self.compact_min_bytes or size <= self.compact_ratio * self._live:
                return False
        try:
            return self.compact(above=self.compact_ratio)
        except StoreFailure as exc:  # a full disk: try again next time
            log.warning("compaction postponed: %s", exc.message)
            return False

    def _compact(self) -> None:
        sids = sorted(self._rows)
        own = [self._own] if self._own is not None else []
        docs = [(STORE_DOC, self.engine.read_raw(row.loc)) for row in own]
        docs += ((sid, self.engine.read_raw(self._rows[sid].loc)) for sid in sids)
        locations = self.engine.rewrite(docs, self._last_id)
        if own:
            self._own = self._own._replace(loc=locations.pop(0))  # type: ignore[union-attr]
        self._order, self._dead = sids, 0
        self._live = 0
        for sid, loc in zip(sids, locations, strict=True):
            self._rows[sid] = self._rows[sid]._replace(loc=loc)
            self._live += loc[1]

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close:
            close()

    # ----------------------------------------------------------------- backup and figures
    def stats(self) -> StoreStats:
        with self._turn(), self.engine.locked(False):
            self._sync()
            return self._stats()

    def _stats(self) -> StoreStats:
        size = self.engine.size()
        own = [(STORE_DOC, self._own.loc[1])] if self._own is not None else []
        packed = self.engine.packed_size(
            [*own, *((sid, row.loc[1]) for sid, row in self._rows.items())], self._last_id)
        return StoreStats(len(self._rows), size, max(0, size - packed))

    def backup(self, dest: str, overwrite: bool = False,
               progress: Progress | None = None) -> StoreStats:
        """Copy the store to ``dest`` (see the contract). Only fixing the point of the
        copy happens under the shared lock; the copy is written, and verified,
        after it is released."""
        def live() -> Iterator[tuple[int, Location]]:  # read, under the lock, by engines
            if self._own is not None:                   # that have no file to copy
                yield STORE_DOC, self._own.loc
            rows = self._rows
            for sid in sorted(rows):
                yield sid, rows[sid].loc

        with self._turn(), self.engine.locked(False):
            self._sync()
            image = self.engine.image(live(), self._last_id)
        try:
            return image.save(dest, overwrite, progress)
        finally:
            image.close()


def _owned(doc: Doc, customer_id: str | None, contact_key: str | None) -> bool:
    """Whether ``doc`` is among the customer's services (customer_id given) or the
    anonymous services of contact_key, as the indexes would have it."""
    if customer_id is not None:
        return doc.get("customer_id") == customer_id
    return doc.get("customer_id") is None and doc.get("contact_key") == contact_key


def _discard(index: dict[str, set[int]], key: str, sid: int) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(sid)
        if not members:
            del index[key]
