"""Persistence of service documents: plain dicts in, fresh copies out.

:class:`Store` is the whole interface the rest of the service uses. Each method is
one unit of work: it runs under the engine's lock and sees every write acknowledged
by any worker before it. A writing method returns only once its write is flushed
to disk; when the write fails, nothing changes (when only the flush fails, it
raises although other workers may already read the write). The engine
underneath (:class:`LogFile`, or :class:`MemoryLog` for tests and demos) only moves
bytes; the indexes by ``customer_id`` and ``contact_key`` live here.

No Flask here: errors are the domain errors of :mod:`contextsvc.errors`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, TypeVar

from ..errors import NotFound, StoreCorrupt, StoreFailure, StoreReplaced, TooLarge
from .logfile import Keys, Location, LogFile, _dumps, keys_of
from .memory import MemoryLog

__all__ = ["Store", "LogFile", "MemoryLog", "open_store", "tinydb_snapshot"]

log = logging.getLogger(__name__)
MAX_SERVICE_ID = 2**53 - 1
T = TypeVar("T")
Doc = dict[str, Any]


class Row(NamedTuple):
    loc: Location
    customer_id: str | None
    contact_key: str | None


class Store:
    def __init__(self, engine: LogFile | MemoryLog, *, compact_min_bytes: int = 16 << 20,
                 compact_ratio: float = 2.0, max_service_bytes: int = 16 << 20):
        self.engine = engine
        self.compact_min_bytes = compact_min_bytes
        self.compact_ratio = compact_ratio
        self.max_service_bytes = max_service_bytes
        self.pid = os.getpid()
        self._mutex = threading.RLock()
        self._refused: StoreReplaced | None = None
        self._reset()
        try:
            with self._mutex, engine.locked(True):
                if isinstance(engine, LogFile):
                    _import_foreign(engine)
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

    # ----------------------------------------------------------------- indexes
    def _reset(self) -> None:
        self._rows: dict[int, Row] = {}
        self._by_customer: dict[str, set[int]] = {}
        self._anonymous: dict[str, set[int]] = {}   # contact_key -> services without customer
        self._live = 0
        self._last_id = self.engine.last_id

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
            if self._last_id < known:  # a file with fewer ids than this one has handed out
                raise self.engine._replaced("was replaced by an older one")
        except StoreReplaced as exc:
            self._refused = exc  # for good: the index no longer describes the file
            log.error("%s", exc.message)
            raise

    def _apply(self, sid: int, loc: Location, keys: Keys | None) -> None:
        old = self._rows.pop(sid, None)
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

    # ----------------------------------------------------------------- reading
    def get_service(self, sid: int) -> Doc:
        with self._mutex, self.engine.locked(False):
            self._sync()
            return self._read(sid)

    def customer_services(self, customer_id: str) -> Selection:
        """The services associated with ``customer_id``, in id order."""
        return self._select("_by_customer", customer_id)

    def anonymous_services(self, contact_key: str) -> Selection:
        """The anonymous services with ``contact_key``, in id order."""
        return self._select("_anonymous", contact_key)

    def _select(self, index: str, key: str) -> Selection:
        with self._mutex, self.engine.locked(False):
            self._sync()  # may replace the indexes (another process compacted): look after
            sids = sorted(getattr(self, index).get(key, ()))
            return Selection(self.engine.reader(), [(sid, self._rows[sid].loc) for sid in sids])

    def _read(self, sid: int) -> Doc:
        doc = self.engine.read(self._row(sid).loc)
        if doc.get("service_id") != sid:  # the file changed under the index
            raise self.engine._replaced("was changed other than by appending")
        return doc

    def count(self) -> int:
        with self._mutex, self.engine.locked(False):
            self._sync()
            return len(self._rows)

    def _row(self, sid: int) -> Row:
        row = self._rows.get(sid)
        if row is None:
            raise NotFound(f"There is no service {sid}")
        return row

    # ----------------------------------------------------------------- writing
    def create_service(self, build: Callable[[int], Doc]) -> Doc:
        """Give ``build`` a new service id and store the document it returns."""
        return self.create_services([build])[0]

    def create_services(self, builds: Iterable[Callable[[int], Doc]]) -> list[Doc]:
        """Several new services in one durable write (used for bulk loading)."""
        with self._mutex:
            with self.engine.locked(True):
                self._sync()
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

    def update_service(self, sid: int, change: Callable[[Doc], T]) -> tuple[T, Doc]:
        """Read service ``sid``, let ``change`` edit it in place, store the result.

        Whatever ``change`` raises propagates and nothing is written. Returns what
        ``change`` returned and the stored document.
        """
        with self._mutex:
            with self.engine.locked(True):
                self._sync()
                doc = self._read(sid)
                result = change(doc)
                self._write([(sid, doc)])
            self.engine.sync()
            return result, doc

    def delete_service(self, sid: int) -> None:
        with self._mutex:
            with self.engine.locked(True):
                self._sync()
                self._row(sid)
                self._write([(sid, None)])
            self.engine.sync()

    def _write(self, items: list[tuple[int, Doc | None]]) -> None:
        bodies = [(sid, None if doc is None else _dumps(doc)) for sid, doc in items]
        for sid, body in bodies:
            if body is not None and len(body) > self.max_service_bytes:
                raise TooLarge(f"Service {sid} would take {len(body)} bytes, more than the "
                               f"limit of {self.max_service_bytes} ([limits] max_service_bytes)"
                               "; nothing was changed")
        locations = self.engine.append(bodies)
        for (sid, doc), loc in zip(items, locations, strict=True):
            self._apply(sid, loc, None if doc is None else keys_of(doc))
        size = self.engine.size()
        if size > self.compact_min_bytes and size > self.compact_ratio * self._live:
            try:
                self._compact()
            except StoreFailure as exc:  # the write itself is done; compact another time
                log.warning("compaction postponed: %s", exc.message)

    def compact(self) -> None:
        """Rewrite the file with only the newest version of each live service."""
        with self._mutex, self.engine.locked(True):
            self._sync()
            self._compact()

    def _compact(self) -> None:
        sids = sorted(self._rows)
        docs = ((sid, self.engine.read_raw(self._rows[sid].loc)) for sid in sids)
        locations = self.engine.rewrite(docs, self._last_id)
        self._live = 0
        for sid, loc in zip(sids, locations, strict=True):
            self._rows[sid] = self._rows[sid]._replace(loc=loc)
            self._live += loc[1]

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close:
            close()


class Selection:
    """Services chosen under the lock and read after it is released, so that a slow
    reader of a large answer holds up no writer: each document is read as it was
    when chosen (the file is only appended to, and a compaction leaves the old file
    to the readers that still have it open). Iterate it, or :meth:`read` one row,
    once each; close it when done (``with`` does)."""

    def __init__(self, reader: Any, rows: list[tuple[int, Location]]):
        self._reader = reader
        self.rows = rows
        self.bytes = sum(loc[1] for _, loc in rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Doc]:
        return (self.read(loc) for _, loc in self.rows)

    def read(self, loc: Location) -> Doc:
        return self._reader.read(loc)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Selection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _discard(index: dict[str, set[int]], key: str, sid: int) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(sid)
        if not members:
            del index[key]


def _import_foreign(engine: LogFile) -> None:
    """A data file written by plain TinyDB (``{"services": {"1": {...}}}``) is
    converted once to the line layout; the original is kept beside it."""
    path = engine.path
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(b'{"_meta": '))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreCorrupt(f"cannot read {path}: {exc.strerror}") from None
    if head == b'{"_meta": ' or head == b"":
        if head == b"":
            os.unlink(path)  # an empty file holds nothing: start afresh
        return
    from tinydb import TinyDB

    try:
        with TinyDB(path, access_mode="r") as db:
            tables = db.tables()
            unexpected = tables - {"services", "_meta", "_default"}
            if unexpected or len(db.table("_default")):
                raise ValueError(f"unexpected tables {sorted(unexpected) or ['_default']}")
            meta = db.table("_meta").get(doc_id=1) or {}
            docs = sorted((doc.doc_id, doc) for doc in db.table("services").all()
                          if not doc.get("_deleted"))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StoreCorrupt(f"{path} is neither a contextsvc store nor a TinyDB file of "
                           f"services ({exc}); not starting, so that it is not overwritten"
                           ) from None
    last_id = max([int(meta.get("last_service_id", 0))] + [sid for sid, _ in docs])
    backup = path + ".tinydb-import.bak"
    if not os.path.exists(backup):
        os.link(path, backup)
    engine.rewrite(((sid, _dumps({**doc, "service_id": sid})) for sid, doc in docs), last_id)
    engine.forget()  # the store indexes it from the start


def open_store(settings: dict[str, Any]) -> Store:
    storage = settings["storage"]
    if storage["engine"] == "memory":
        engine: LogFile | MemoryLog = MemoryLog()
    else:
        engine = LogFile(storage["path"], fsync=storage["fsync"],
                         lock_timeout=storage["lock_timeout"])
    return Store(engine, compact_min_bytes=storage["compact_min_bytes"],
                 compact_ratio=storage["compact_ratio"],
                 max_service_bytes=settings["limits"]["max_service_bytes"])


def tinydb_snapshot(path: str | os.PathLike[str], lock_timeout: float = 10.0) -> Any:
    """The store at ``path`` as a read-only TinyDB in memory, read under the store's
    shared lock, so that no write is ever seen half done, even while a server runs.
    (Plain ``TinyDB(path)`` is safe only on a file no server is writing.) Deleted
    services are left out."""
    from tinydb import TinyDB
    from tinydb.storages import MemoryStorage

    engine = LogFile(os.fspath(path), lock_timeout=lock_timeout)
    try:
        with engine.locked(False):
            live: dict[int, Location] = {}
            for sid, loc, keys in engine.changes()[1]:
                if keys is None:
                    live.pop(sid, None)
                else:
                    live[sid] = loc
            services = {str(sid): engine.read(loc) for sid, loc in sorted(live.items())}
    finally:
        engine.close()
    db = TinyDB(storage=MemoryStorage)
    db.storage.write({"services": services})
    return db
