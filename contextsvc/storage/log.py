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

import array
import bisect
import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NamedTuple

from ..errors import (
    NotFound,
    StoreBusy,
    StoreCorrupt,
    StoreFailure,
    StoreReplaced,
    TooLarge,
)
from . import checkpoint
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
from .checkpoint import Change, Checkpoint
from .logfile import LogFile, Rewrite
from .memory import MemoryLog
from .records import (
    NO_KEYS,
    REQUESTS,
    STORE_DOC,
    TOMBSTONE,
    Encoded,
    Keys,
    Location,
    Record,
    encode,
    encode_store_doc,
    encoded,
    index_keys,
)
from .tinydbfiles import import_tinydb_file

log = logging.getLogger(__name__)


CHECKPOINT_EVERY = 20_000  # records after the checkpoint that make a new one worth writing
ADOPT_AFTER = 2_000  # records after the checkpoint before a process looks for a newer one
LOOK_EVERY = 1.0     # seconds between such looks
CATCH_UP = 1 << 20   # a compaction copies what was written meanwhile outside the exclusive
                     # lock while there is more than this many bytes of it


def pause() -> None:
    """Let the other threads (greenlets, under gevent) of the process run: a long
    job outside the store's lock calls this between its steps. Under gevent a
    greenlet runs until it yields, and sleep(0) yields."""
    time.sleep(0)


class Row(NamedTuple):
    loc: Location
    customer_id: str | None
    contact_key: str | None
    due: str | None
    requests: tuple[str, ...] = NO_KEYS  # idempotency keys the document holds


class LogStore:
    """The indexes are in two parts. The *base* is the index checkpoint of the data
    file (:mod:`.checkpoint`): arrays mapped from ``<path>.idx``, shared by every
    process through the page cache, describing the file up to some point. The
    *delta* is in this process's memory, as Python objects: every record after that
    point (``_rows``: services written since, ``_dead``: deleted since). A service
    the delta names is as the delta says; any other is as the base says. The
    housekeeping thread of one process writes a new checkpoint when the delta has
    grown (:meth:`reclaim`), and every process then takes it up and drops the part
    of its delta that the checkpoint holds. The memory engine has no base."""

    def __init__(self, engine: LogFile | MemoryLog, *, compact_min_bytes: int = 16 << 20,
                 compact_ratio: float = 2.0, max_service_bytes: int = 16 << 20,
                 lock_timeout: float = 10.0, checkpoint_every: int = CHECKPOINT_EVERY):
        self.engine = engine
        self.engine_name = "memory" if isinstance(engine, MemoryLog) else "file"
        self.compact_min_bytes = compact_min_bytes
        self.compact_ratio = compact_ratio
        self.max_service_bytes = max_service_bytes
        self.checkpoint_every = checkpoint_every
        self.pid = os.getpid()
        self._mutex = threading.RLock()
        self._compacting = threading.Lock()
        self._wait = lock_timeout
        self._refused: StoreReplaced | None = None
        self._file = engine if isinstance(engine, LogFile) else None
        if self._file is not None:
            self._file.checkpoints = True
        self._look_at = 0.0  # when to look for a newer checkpoint next
        self._seen: tuple[int, int, int] | None = None  # the checkpoint file last looked at
        self._newer: Checkpoint | None = None  # one found, to take up under the lock
        self._holding = False  # a compaction is under way here: the delta stays as it is
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
            return
        # A store read without a (recent) checkpoint: write one now, so that the other
        # processes starting too, and the next start, read only what follows it.
        self._checkpoint_quietly(wait=False)

    def _preread(self) -> None:
        """Index what the engine can give without its lock (see LogFile.preread);
        anything amiss leaves it all to the first read under the lock."""
        try:
            records = self.engine.preread()
            self._reset()  # on the checkpoint preread started from, if any
            for sid, loc, keys in records:
                self._apply(sid, loc, keys)
        except (StoreReplaced, StoreCorrupt, StoreFailure):
            self.engine.forget()
            self._reset()
            return
        self._last_id = max(self._last_id, self.engine.last_id)

    # ----------------------------------------------------------------- indexes
    def _reset(self) -> None:
        base = self._base = self.engine.base
        self._rows: dict[int, Row] = {}  # services written since the base
        self._dead: dict[int, Location] = {}  # services deleted since: where the deletion is
        self._by_customer: dict[str, set[int]] = {}
        self._anonymous: dict[str, set[int]] = {}   # contact_key -> services without customer
        self._order: list[int] = []  # ids of _rows in increasing order; deleted ones until pruned
        self._stale = 0  # deleted ids still in _order
        self._count = len(base.sids) if base is not None else 0
        self._live = base.live if base is not None else 0
        self._last_id = max(self.engine.last_id, base.point.last_id if base is not None else 0)
        # idempotency key -> the service whose document holds its record (0: the store's
        # own document), for records written since the base (the base has its own
        # index of them); _own is where the store's own document is and the keys it holds
        self._requests: dict[str, int] = {}
        self._own: Row | None = (Row(base.own, None, None, None) if base is not None
                                 and base.own is not None else None)
        self._own_changed = False

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
        if self._newer is not None and not self._holding:
            newer, self._newer = self._newer, None
            self._take_up(newer)

    def _apply(self, sid: int, loc: Location, keys: Keys | None) -> None:
        if sid == STORE_DOC:
            self._index_requests(sid, self._own, keys)
            self._own = None if keys is None else Row(loc, *keys)
            self._own_changed = True
            return
        old = self._rows.pop(sid, None)
        base = self._base
        at = -1
        if old is None and base is not None and sid not in self._dead:
            at = base.find(sid)
        if old is not None or (keys is not None and keys[3]):
            self._index_requests(sid, old, keys)
        if old is not None:
            self._live -= old.loc[1]
            if old.customer_id is not None:
                _discard(self._by_customer, old.customer_id, sid)
            elif old.contact_key is not None:
                _discard(self._anonymous, old.contact_key, sid)
        elif at >= 0:  # a service of the base, written for the first time since
            self._live -= base.lens[at]  # type: ignore[union-attr]
        was_live = old is not None or at >= 0
        if sid > self._last_id:
            self._last_id = sid
        if keys is None:
            self._dead[sid] = loc
            if was_live:
                self._count -= 1
            if old is not None:
                self._stale += 1
            return
        if not was_live:
            self._count += 1
        if old is None:
            self._add_to_order(sid)
            self._dead.pop(sid, None)
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
            if self._file is not None and len(self._rows) + len(self._dead) >= ADOPT_AFTER:
                self._look_for_checkpoint()
            yield
        finally:
            self._mutex.release()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A unit of work that writes: this process's turn and the engine's exclusive
        lock, then, with both released, the wait for the disk flush. While one thread
        (or greenlet) waits for the disk, the others of the process go on and write
        too; one flush then makes all of their writes durable (see LogFile.sync)."""
        with self._turn():
            with self.engine.locked(True):
                self._sync()
                yield
            written = self.engine.appended
        self.engine.sync(written)

    def _add_to_order(self, sid: int) -> None:
        order = self._order
        if not order or sid > order[-1]:
            order.append(sid)  # a new service: the usual case
            return
        at = bisect.bisect_left(order, sid)  # an imported id, or one of the base's
        if at < len(order) and order[at] == sid:
            self._stale -= 1  # it was deleted and comes back
        else:
            order.insert(at, sid)

    def _loc(self, sid: int) -> Location | None:
        """Where the newest record of live service ``sid`` is; None: there is none."""
        row = self._rows.get(sid)
        if row is not None:
            return row.loc
        if self._base is None or sid in self._dead:
            return None
        return self._base.location(sid)

    def _where(self, sid: int) -> Location:
        loc = self._loc(sid)
        if loc is None:
            raise NotFound(f"There is no service {sid}")
        return loc

    def _overridden(self, sid: int) -> bool:
        """Whether the delta says what service ``sid`` is (the base may not)."""
        return sid in self._rows or sid in self._dead

    def _candidates(self, customer_id: str | None, contact_key: str | None) -> list[int]:
        """Under the lock: the services of ``customer_id`` (when given) or the anonymous
        services of ``contact_key``, in id order. Those the base names by a hash are
        checked against the keys their record holds."""
        base = self._base
        if customer_id is not None:
            sids = set(self._by_customer.get(customer_id, ()))
            found = base.customer(customer_id) if base is not None else ()
        else:
            contact_key = contact_key or ""
            sids = set(self._anonymous.get(contact_key, ()))
            found = base.anonymous(contact_key) if base is not None else ()
        for sid in found:
            if self._overridden(sid):
                continue
            keys = self.engine.keys_of(base.location(sid))  # type: ignore[union-attr, arg-type]
            if keys is not None and (keys[0] == customer_id if customer_id is not None
                                     else keys[0] is None and keys[1] == contact_key):
                sids.add(sid)
        return sorted(sids)

    # ----------------------------------------------------------------- reading
    def get_service(self, sid: int) -> Doc:
        with self._turn(), self.engine.locked(False):
            self._sync()
            return self._read(sid)

    def customer_services(self, customer_id: str) -> Selection:
        """The services associated with ``customer_id``, in id order."""
        with self._turn(), self.engine.locked(False):
            self._sync()  # may replace the indexes (another process compacted): look after
            return self._selection(self._candidates(customer_id, None))

    def anonymous_services(self, contact_key: str) -> Selection:
        """The anonymous services with ``contact_key``, in id order."""
        with self._turn(), self.engine.locked(False):
            self._sync()
            return self._selection(self._candidates(None, contact_key))

    def scan(self, after: int = 0, limit: int | None = None,
             due_by: str | None = None) -> Selection:
        with self._turn(), self.engine.locked(False):
            self._sync()
            if self._stale > len(self._order) // 2:
                self._order = [sid for sid in self._order if sid in self._rows]
                self._stale = 0
            order, rows, dead, sids = self._order, self._rows, self._dead, []
            at = bisect.bisect_right(order, after)
            base: Sequence[int] = ()
            if self._base is not None:
                base = self._base.sids if due_by is None else self._base.due_by(due_by)
            got = bisect.bisect_right(base, after)
            while limit is None or len(sids) < limit:
                mine = order[at] if at < len(order) else None
                theirs = base[got] if got < len(base) else None
                if mine is None and theirs is None:
                    break
                if theirs is None or (mine is not None and mine <= theirs):
                    at += 1
                    row = rows.get(mine)  # type: ignore[arg-type]
                    if row is not None and (due_by is None or (row.due is not None
                                                                and row.due <= due_by)):
                        sids.append(mine)
                else:
                    got += 1
                    if theirs not in rows and theirs not in dead:
                        sids.append(theirs)
            return self._selection(sids)

    def _selection(self, sids: list[int]) -> Selection:
        rows = [(sid, self._where(sid)) for sid in sids]
        return Selection(self.engine.reader(), rows, (loc[1] for _, loc in rows))

    def _read(self, sid: int) -> Doc:
        doc = self.engine.read(self._where(sid))
        if doc.get("service_id") != sid:  # the file changed under the index
            raise self.engine._replaced("was changed other than by appending")
        return doc

    def find_request(self, key: RequestKey) -> Doc | None:
        # (the HTTP layer keeps the answers it replays: contextsvc/api/retries.py)
        with self._turn(), self.engine.locked(False):
            self._sync()
            return self._request(key)

    def may_hold_request(self, name: str) -> bool:
        # this process's indexes as its last unit of work left them, without the
        # engine's lock (the base is read in the process's turn: it may be replaced)
        if name in self._requests:
            return True
        with self._turn():
            return self._base is not None and bool(self._base.requests(name))

    def _request(self, key: RequestKey | None) -> Doc | None:
        """Under the lock: the live record of ``key``, wherever it is kept: in a
        document written since the base (the delta's index), else in one the base
        files under the key's hash (checked by reading it: hashes may collide, and a
        document may have dropped an expired record)."""
        if key is None:
            return None
        sid = self._requests.get(key.name)
        if sid is not None:
            sids: Iterable[int] = (sid,)
        elif self._base is not None:
            sids = [sid for sid in self._base.requests(key.name)
                    if not (self._own_changed if sid == STORE_DOC else self._overridden(sid))]
        else:
            return None
        found = None
        for sid in sids:
            if sid == STORE_DOC:
                if self._own is None:
                    continue
                doc = self.engine.read(self._own.loc)
            else:
                doc = self._read(sid)
            record = doc.get(REQUESTS, {}).get(key.name)
            if (record is not None and record.get("until", "") > key.now
                    and (found is None or record["until"] > found["until"])):
                found = record
        return found

    def _check(self, key: RequestKey | None) -> None:
        record = self._request(key)
        if record is not None:
            raise Recorded(record)

    def count(self) -> int:
        with self._turn(), self.engine.locked(False):
            self._sync()
            return self._count

    def last_id(self) -> int:
        with self._turn(), self.engine.locked(False):
            self._sync()
            return self._last_id

    # ----------------------------------------------------------------- writing
    def create_service(self, build: Callable[[int], Doc], key: RequestKey | None = None) -> Doc:
        """Give ``build`` a new service id and store the document it returns."""
        return self.create_services([build], key)[0]

    def create_services(self, builds: Iterable[Callable[[int], Doc]],
                        key: RequestKey | None = None) -> list[Doc]:
        """Several new services in one durable write (used for bulk loading)."""
        with self._writing():
            self._check(key)
            docs = []
            sid = self._last_id
            for build in builds:
                sid += 1
                if sid > MAX_SERVICE_ID:
                    raise StoreFailure("No service ids are left below 2^53")
                docs.append((sid, build(sid)))
            self._write(docs)
            return [doc for _, doc in docs]

    def update_service(self, sid: int, change: Callable[[Doc], T],
                       key: RequestKey | None = None) -> tuple[T, Doc]:
        """Read service ``sid``, let ``change`` edit it in place, store the result.

        Whatever ``change`` raises propagates and nothing is written. Returns what
        ``change`` returned and the stored document.
        """
        with self._writing():
            self._check(key)
            doc = self._read(sid)
            result = change(doc)
            self._write([(sid, doc)])
            return result, doc

    def find_or_create(self, wanted: Sequence[tuple[str | None, str | None]],
                       choose: Callable[[int, list[Doc]], Doc | None],
                       build: Callable[[int, int], Doc],
                       change: Callable[[int, Doc, bool], T],
                       key: RequestKey | None = None) -> list[tuple[T, Doc, bool]]:
        with self._writing():
            self._check(key)
            here: dict[int, Doc] = {}  # read or made in this unit, as changed so far
            chosen: dict[int, Doc] = {}
            out = []
            sid = self._last_id
            for i, (customer_id, contact_key) in enumerate(wanted):
                sids = set(self._candidates(customer_id, contact_key))
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
            return out

    def put_request(self, key: RequestKey, record: Doc | None,
                    unless: Callable[[Doc], bool] | None = None) -> None:
        with self._writing():
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

    def delete_service(self, sid: int) -> None:
        with self._writing():
            self._where(sid)
            self._write([(sid, None)])

    def rewrite_services(self, sids: Iterable[int], change: Callable[[Doc], bool | None]
                         ) -> tuple[int, int]:
        written = deleted = 0
        with self._writing():
            items: list[tuple[int, Doc | None]] = []
            for sid in sids:
                if self._loc(sid) is None:
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
        with self._writing():
            existing = [r.service_id for r in records if self._loc(r.service_id) is not None]
            if existing and on_conflict == "fail":
                raise import_conflict(existing)
            if on_conflict == "skip":
                records = [r for r in records if self._loc(r.service_id) is None]
            self._append(records)
        # An import of many services (a command, with no housekeeping thread to write
        # checkpoints) would otherwise keep every one of them in this process's memory.
        if len(self._rows) + len(self._dead) >= 4 * self.checkpoint_every:
            self._checkpoint_quietly(wait=False)
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
        """Rewrite the file with only the newest version of each live service.

        The file engine writes the new file beside the old one while requests go
        on, then copies what they wrote meanwhile; only the last of that copy and
        putting the new file in place happen under the exclusive lock (see
        :meth:`_compact_file`)."""
        if self._file is not None:
            return self._compact_file(above)
        with self._turn(), self.engine.locked(True):
            self._sync()
            if above is not None and self.engine.size() <= above * self._live:
                return False
            self._compact()
            return True

    def reclaim(self) -> bool:
        """Compact when the file passes ``compact_min_bytes`` and ``compact_ratio``
        times the live data; otherwise write a new index checkpoint when enough was
        written since the last one (``checkpoint_every`` records). Requests never
        do either: each server process's housekeeping thread calls this every few
        seconds. Returns whether it compacted."""
        with self._turn(), self.engine.locked(False):
            self._sync()
            size = self.engine.size()
            if size <= self.compact_min_bytes or size <= self.compact_ratio * self._live:
                size = 0
        try:
            if size:
                return self.compact(above=self.compact_ratio)
            self._checkpoint_quietly(wait=True)
            return False
        except StoreFailure as exc:  # a full disk: try again next time
            log.warning("compaction postponed: %s", exc.message)
            return False

    def _compact(self) -> None:
        """The memory engine's compaction: everything at once, under the lock."""
        sids = sorted(self._rows)
        own = [self._own] if self._own is not None else []
        docs = [(STORE_DOC, self.engine.read_raw(row.loc)) for row in own]
        docs += ((sid, self.engine.read_raw(self._rows[sid].loc)) for sid in sids)
        locations = self.engine.rewrite(docs, self._last_id)
        if own:
            self._own = self._own._replace(loc=locations.pop(0))  # type: ignore[union-attr]
        self._order, self._stale = sids, 0
        self._dead.clear()
        self._live = 0
        for sid, loc in zip(sids, locations, strict=True):
            self._rows[sid] = self._rows[sid]._replace(loc=loc)
            self._live += loc[1]

    # ----------------------------------------------------------------- checkpoints
    def _changes(self, since: int = 0
                 ) -> tuple[list[Change], tuple[Location | None, Sequence[str]] | None]:
        """Under the lock: what the delta holds of records at or after offset
        ``since``, as :func:`checkpoint.merge` takes it: the services, in id order,
        and the store's own document if it was written."""
        changes: list[Change] = [(sid, row.loc, row[1:]) for sid, row in self._rows.items()
                                 if row.loc[0] >= since]
        changes += ((sid, None, None) for sid, loc in self._dead.items() if loc[0] >= since)
        changes.sort(key=lambda change: change[0])
        own = None
        if self._own_changed and (self._own is None or self._own.loc[0] >= since):
            own = (None, ()) if self._own is None else (self._own.loc, self._own.requests)
        return changes, own

    def _checkpoint_quietly(self, wait: bool) -> bool:
        try:
            return self.checkpoint(wait=wait)
        except (StoreFailure, OSError) as exc:
            log.warning("no index checkpoint written: %s", getattr(exc, "message", exc))
            return False

    def checkpoint(self, force: bool = False, wait: bool = True) -> bool:
        """Write the index checkpoint of the file as it is now, when ``checkpoint_every``
        records were written since the last one (or ``force``), and take it up.
        The work is done outside the store's lock; a compaction or checkpoint under
        way elsewhere is waited for (``wait``) or makes this one unneeded. Returns
        whether it wrote one."""
        engine = self._file
        if engine is None or (not force and len(self._rows) + len(self._dead)
                              < self.checkpoint_every):
            return False  # (looked at again under the lock)
        if not self._compacting.acquire(blocking=wait):
            return False
        try:
            with engine.rewriting(wait) as mine:
                return mine and self._write_checkpoint(force)
        finally:
            self._compacting.release()

    def _write_checkpoint(self, force: bool) -> bool:
        engine = self._file
        assert engine is not None
        with self._turn(), engine.locked(False):
            self._sync()
            if not force and len(self._rows) + len(self._dead) < self.checkpoint_every:
                return False
            base, changes, own = self._base, *self._changes()
            reader = engine.reader()
            ino, end, count = engine._ino or 0, engine._end, engine._count
            header_len, file_id, last_id = len(engine._header), engine.file_id, self._last_id
        try:
            tables = checkpoint.merge(base, changes, own, pause)
            point = checkpoint.Point(file_id, ino, header_len, end, count, last_id,
                                     checkpoint.fingerprint(reader.read_at, header_len, end))
            tmp = engine.index_path + ".tmp"
            checkpoint.write(tmp, tables, point, pause)
        finally:
            reader.close()
        with self._turn(), engine.locked(False):
            self._sync()
            if engine._ino != ino:  # compacted meanwhile (by a process without this lock)
                os.unlink(tmp)
                return False
            os.replace(tmp, engine.index_path)
            written = Checkpoint.load(engine.index_path, verify=False)
            if written is not None:
                self._take_up(written)
        return True

    def _look_for_checkpoint(self) -> None:
        """In this process's turn, before the lock: when the delta has grown, look
        (at most every LOOK_EVERY seconds) for a checkpoint another process wrote,
        and read it now (verifying it costs a read of the whole file), so that the
        next unit of work takes it up under the lock (:meth:`_take_up`)."""
        now = time.monotonic()
        if now < self._look_at:
            return
        self._look_at = now + LOOK_EVERY
        try:
            st = os.stat(self._file.index_path)  # type: ignore[union-attr]
        except OSError:
            return
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen == self._seen:
            return
        self._seen = seen
        found = Checkpoint.load(self._file.index_path)  # type: ignore[union-attr]
        base = self._base
        if found is not None and (base is None or found.point.end > base.point.end
                                  or found.point.ino != base.point.ino):
            self._newer = found

    def _take_up(self, found: Checkpoint) -> None:
        """Under the lock, after the changes were read: make ``found`` the base when
        it describes the file this process reads, further than the present base,
        and keep of the delta only what follows it."""
        engine = self._file
        base = self._base
        if engine is None or (base is not None and found.point.ino == base.point.ino
                              and found.point.end <= base.point.end):
            return
        if not found.describes(engine._read_at, engine.file_id, engine._ino or 0,
                               len(engine._header), engine._end):
            return
        later = self._later(found.point.end)
        last_id = self._last_id
        engine.base = found
        self._reset()
        for sid, loc, keys in later:
            self._apply(sid, loc, keys)
        self._last_id = max(self._last_id, last_id)

    # ----------------------------------------------------------------- compaction
    def _compact_file(self, above: float | None) -> bool:
        """Compact the file engine's file without stopping requests:

        1. under the shared lock, fix the point to compact: the live services
           there (base and delta), and a descriptor of the file;
        2. with no lock, write their records to the new file (the bytes before
           that point never change), its padding, flushed, and its checkpoint;
        3. copy what was written meanwhile, with no lock while there is much of it
           (reading under the shared lock where it ends), then the rest under the
           exclusive lock, and put the new file and its checkpoint in place.

        A write acknowledged at any moment is in the old file, durable, until the
        new one, flushed, holding it too, is renamed over it."""
        engine = self._file
        assert engine is not None
        with self._compacting, engine.rewriting(True), self._not_taking_up():
            with self._turn(), engine.locked(False):
                self._sync()
                if above is not None and engine.size() <= above * self._live:
                    return False
                base, changes, own = self._base, *self._changes()
                reader = engine.reader()
                ino, covered, last_id = engine._ino, engine._end, self._last_id
                own_loc = self._own.loc if self._own is not None else None
            new = engine.begin_rewrite(last_id, pause)
            index_tmp = engine.index_path + ".tmp"
            try:
                tables = checkpoint.merge(base, changes, own, pause)
                if own_loc is not None:
                    tables.own = new.add(STORE_DOC, reader.read_raw(own_loc))
                tables.offs = _copy(reader, new, tables)
                new.reserve()
                point = checkpoint.Point(new.file_id, new.ino, len(new.header), new.end,
                                         new.count, last_id,
                                         checkpoint.fingerprint(new.read, len(new.header),
                                                                new.end))
                checkpoint.write(index_tmp, tables, point, pause)
                held = _Held(tables.sids)
                added: list[Record] = []
                while True:
                    with self._turn(), engine.locked(False):
                        self._sync()
                        if engine._ino != ino:
                            raise StoreFailure(f"{engine.path} was replaced during compaction")
                        if engine._end - covered < CATCH_UP:
                            break
                        later, covered = self._later(covered), engine._end
                    added += _append(reader, new, later, held)
                    pause()
                with self._turn():
                    with engine.locked(True):
                        self._sync()
                        if engine._ino != ino:
                            raise StoreFailure(f"{engine.path} was replaced during compaction")
                        added += _append(reader, new, self._later(covered), held)
                        if self._last_id > max([last_id, *(sid for sid, _, _ in added)]):
                            # the highest id handed out was deleted meanwhile: its
                            # tombstone keeps it from being handed out again
                            added.append((self._last_id, new.add(self._last_id, TOMBSTONE),
                                          None))
                        last_id = self._last_id
                        engine.install(new, index_tmp)
                        self._reset()
                        for sid, loc, keys in added:
                            self._apply(sid, loc, keys)
                        self._last_id = max(self._last_id, last_id)
                        engine.verify()
            except BaseException:
                new.abandon()
                try:
                    os.unlink(index_tmp)
                except OSError:
                    pass
                raise
            finally:
                reader.close()
        return True

    @contextmanager
    def _not_taking_up(self) -> Iterator[None]:
        """While this process compacts, its delta keeps every record the compaction
        has yet to copy: no checkpoint found meanwhile is taken up."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    def _later(self, since: int) -> list[Record]:
        """Under the lock: the newest record of each service (and of the store's own
        document) written at or after offset ``since``, in the order they were
        written; keys None: a deletion. What a compaction copies after the bulk,
        and what a process keeps of its delta when it takes up a checkpoint."""
        changes, own = self._changes(since)
        later = [(self._dead[sid] if loc is None else loc, sid, keys)
                 for sid, loc, keys in changes]
        if own is not None and self._own is not None:
            later.append((self._own.loc, STORE_DOC, self._own[1:]))
        later.sort(key=lambda item: item[0][0])
        return [(sid, loc, keys) for loc, sid, keys in later]

    def close(self) -> None:
        if self._file is not None and len(self._rows) + len(self._dead) >= self.checkpoint_every:
            self._checkpoint_quietly(wait=False)  # the next start reads less
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
            [*own, *((sid, loc[1]) for sid, loc in self._live_rows())], self._last_id)
        return StoreStats(self._count, size, max(0, size - packed))

    def _live_rows(self) -> Iterator[tuple[int, Location]]:
        """Under the lock: every live service and where it is, in id order."""
        rows, dead, base = self._rows, self._dead, self._base
        mine = sorted(rows)
        theirs = ((sid, (off, length)) for sid, off, length in zip(
            base.sids, base.offs, base.lens, strict=True) if sid not in rows
            and sid not in dead) if base is not None else iter(())
        return heapq.merge(((sid, rows[sid].loc) for sid in mine), theirs)

    def backup(self, dest: str, overwrite: bool = False,
               progress: Progress | None = None) -> StoreStats:
        """Copy the store to ``dest`` (see the contract). Only fixing the point of the
        copy happens under the shared lock; the copy is written, and verified,
        after it is released."""
        def live() -> Iterator[tuple[int, Location]]:  # read, under the lock, by engines
            if self._own is not None:                   # that have no file to copy
                yield STORE_DOC, self._own.loc
            yield from self._live_rows()

        with self._turn(), self.engine.locked(False):
            self._sync()
            image = self.engine.image(live(), self._last_id)
        try:
            return image.save(dest, overwrite, progress)
        finally:
            image.close()


def _copy(reader: Any, new: Rewrite, tables: checkpoint.Tables) -> array.array:
    """Write the records of ``tables`` to ``new``, in id order; returns their new
    offsets. Runs of records that lie close together in the old file are read in
    one go."""
    sids, offs, lens = tables.sids, tables.offs, tables.lens
    out = array.array("Q")
    window, start, stop = b"", 0, 0
    n = len(sids)
    for i in range(n):
        off, length = offs[i], lens[i]
        if not start <= off or off + length > stop:
            stop = off + length
            j = i + 1
            while j < n and j - i < 4096 and off <= offs[j] and offs[j] + lens[j] - off <= 1 << 20:
                stop = max(stop, offs[j] + lens[j])
                j += 1
            start, window = off, reader.read_at(stop - off, off)
        out.append(new.add(sids[i], window[off - start:off - start + length])[0])
        if i % 2048 == 2047:
            pause()
    return out


class _Held:
    """Which services the new file of a compaction holds: those of its bulk
    (``sids``, sorted), then as the records copied after it say."""

    def __init__(self, sids: Sequence[int]):
        self.sids, self.changed = sids, {}

    def __contains__(self, sid: int) -> bool:
        held = self.changed.get(sid)
        if held is not None:
            return held
        at = bisect.bisect_left(self.sids, sid)
        return at < len(self.sids) and self.sids[at] == sid


def _append(reader: Any, new: Rewrite, later: list[Record], held: _Held) -> list[Record]:
    """Copy records written after the bulk of a compaction to ``new``; a deletion is
    copied when the new file holds the service. Returns (id, new location, keys)."""
    added = []
    for sid, loc, keys in later:
        if keys is None:
            if sid in held:
                added.append((sid, new.add(sid, TOMBSTONE), None))
                held.changed[sid] = False
            continue
        added.append((sid, new.add(sid, reader.read_raw(loc)), keys))
        held.changed[sid] = True
    return added


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
