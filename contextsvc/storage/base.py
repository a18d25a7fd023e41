"""The store contract: what the rest of contextsvc relies on, whatever the engine.

A store holds whole service documents (plain dicts, states and tasks nested in
them) under their service ids, and finds them by id, by ``customer_id``, and, for
services without a customer, by ``contact_key``. Every engine passes the contract
tests in ``tests/storage/test_contract.py``.

Guarantees every method gives:

* **A unit of work.** Each call is atomic: it sees every write acknowledged before
  it, by any process of the deployment, and either happens whole or not at all.
  A writing call returns only once its write is durable.
* **Copies.** Documents handed in and out are the caller's: changing one changes
  nothing stored.
* **Ids.** Service ids are positive, below 2^53, handed out in increasing order,
  and never handed out twice (not after a delete, not after a restart).
* **Errors** are the domain errors of :mod:`contextsvc.errors`: ``NotFound``,
  ``Conflict`` (an id that exists, on import), ``TooLarge``, ``StoreBusy``,
  ``StoreFailure`` (with ``StoreReplaced``) and, at open, ``StoreCorrupt``.
* **Request records** (API.md 10.1). A document may hold ``requests``, a dict of
  idempotency key -> record (a JSON object with an ``until`` timestamp, after which
  it counts as absent); the store's own document (see :meth:`ServiceStore.put_request`)
  holds those of requests that changed no one service. The store indexes every
  key, so that :meth:`ServiceStore.find_request` finds a record wherever it is kept,
  and a write given ``key=`` raises :class:`Recorded` (and writes nothing) when
  the key has a live record: the check and the write are one unit of work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

from ..errors import Conflict
from .records import Encoded

Doc = dict[str, Any]
T = TypeVar("T")
MAX_SERVICE_ID = 2**53 - 1
ON_CONFLICT = ("fail", "skip", "replace")


def import_conflict(existing: Sequence[int]) -> Conflict:
    """The error of an import (``put_services`` with ``fail``) that names ids the
    store has: the first of them, and how many more; nothing is imported."""
    more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
    return Conflict(f"Service {existing[0]} exists{more}; nothing was imported")


class RequestKey(NamedTuple):
    """An idempotency key, and the moment (a normalized timestamp) at which records
    whose ``until`` is not later count as absent."""

    name: str
    now: str


class Recorded(Exception):  # noqa: N818 - not an error: the answer is already known
    """Raised by a write given a ``key`` that already has a live record: nothing was
    written; ``record`` is what the key's first request recorded."""

    def __init__(self, record: dict[str, Any]):
        super().__init__("this idempotency key is recorded")
        self.record = record


class Reader(Protocol):
    """Reads documents of a selection after the store's lock is released."""

    def read(self, loc: Any) -> Doc: ...

    def read_raw(self, loc: Any) -> bytes: ...

    def close(self) -> None: ...


class Selection:
    """Services chosen in one unit of work and read afterwards, so that a slow reader
    of a large answer holds up no writer: each document is read as it was when it was
    chosen. Iterate it (id order), or :meth:`read` one of its ``rows``; close it when
    done (``with`` does)."""

    def __init__(self, reader: Reader, rows: list[tuple[int, Any]], sizes: Iterable[int]):
        self._reader = reader
        self.rows = rows  # (service id, where the engine finds it), in id order
        self.bytes = sum(sizes)  # about what the documents take, to choose how to answer

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Doc]:
        return (self.read(loc) for _, loc in self.rows)

    def read(self, loc: Any) -> Doc:
        return self._reader.read(loc)

    def read_raw(self, loc: Any) -> bytes:
        """The document in its stored form, which :func:`.records.decode` reads: for
        work done in another process."""
        return self._reader.read_raw(loc)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Selection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class StoreStats:
    """What a store holds (:meth:`ServiceStore.stats`, and ``contextsvc check``)."""

    services: int     # services stored (deleted ones not counted)
    bytes: int        # bytes the stored records take (a data file's reserved padding left out)
    reclaimable: int  # of those, what a compaction would free now: old versions, deleted services


Progress = Callable[[int, int], None]  # (done, total): called as a long operation advances


class ServiceStore(Protocol):
    """One tenant's services. Engines implement this; nothing else touches storage."""

    engine_name: str

    # ---------------------------------------------------------------- reading
    def get_service(self, sid: int) -> Doc:
        """The service ``sid``; ``NotFound`` when there is none."""

    def customer_services(self, customer_id: str) -> Selection:
        """The services associated with ``customer_id``."""

    def anonymous_services(self, contact_key: str) -> Selection:
        """The services with ``contact_key`` and no ``customer_id``."""

    def scan(self, after: int = 0, limit: int | None = None,
             due_by: str | None = None) -> Selection:
        """Services with ids above ``after``, in id order, at most ``limit`` of them:
        export and housekeeping walk the store in batches with it. With ``due_by``
        (a timestamp), only the services whose ``due`` field is a timestamp at or
        before it: the store indexes ``due`` so that housekeeping reads only what
        has work for it."""

    def count(self) -> int:
        """How many services there are."""

    def last_id(self) -> int:
        """The highest service id handed out so far (0 when none): a walk that
        should not take services created after it began stops there."""

    def find_request(self, key: RequestKey) -> Doc | None:
        """The live record of idempotency key ``key.name``, wherever it is kept;
        None when there is none. An engine may answer from memory with a record it
        has handed out before, while that record is live and holds an answer (such
        a record never changes), even if the service that held it was deleted since:
        the write that a key protects is checked in its own unit of work anyway."""

    def may_hold_request(self, name: str) -> bool:
        """False when this process knows, without asking the engine, that no record
        of idempotency key ``name`` is kept (it may be stale: a record another
        process wrote since is not known). A caller may then skip
        :meth:`find_request` for a key that is most likely new; the write it
        protects checks the key in its own unit of work anyway. An engine that
        cannot tell without asking answers True."""

    # ---------------------------------------------------------------- writing
    # ``key``: see "Request records" above; Recorded is raised before anything runs.
    def create_service(self, build: Callable[[int], Doc], key: RequestKey | None = None
                       ) -> Doc:
        """Give ``build`` a new service id and store the document it returns."""

    def create_services(self, builds: Iterable[Callable[[int], Doc]],
                        key: RequestKey | None = None) -> list[Doc]:
        """Several new services in one unit of work."""

    def update_service(self, sid: int, change: Callable[[Doc], T],
                       key: RequestKey | None = None) -> tuple[T, Doc]:
        """Read service ``sid``, let ``change`` edit it in place, store the result.
        Whatever ``change`` raises propagates and nothing is written. Returns what
        ``change`` returned and the stored document."""

    def find_or_create(self, wanted: Sequence[tuple[str | None, str | None]],
                       choose: Callable[[int, list[Doc]], Doc | None],
                       build: Callable[[int, int], Doc],
                       change: Callable[[int, Doc, bool], T],
                       key: RequestKey | None = None) -> list[tuple[T, Doc, bool]]:
        """Find or create services, in one unit of work (API.md 10.3: two callers
        racing on the same customer get one service). For each element ``i`` of
        ``wanted``, a pair ``(customer_id, contact_key)``, in turn: the candidates
        are the services of ``customer_id`` when it is given, else the anonymous
        services of ``contact_key``, in id order and as this unit has left them
        (earlier elements' changes and new services included); ``choose(i,
        candidates)`` returns one of them, or None for a new service, which
        ``build(i, sid)`` makes; ``change(i, doc, created)`` edits the service.
        Every service chosen or made is stored, in one write that happens whole or
        not at all; whatever a callable raises propagates and nothing is written.
        Returns ``(what change returned, the stored document, created)`` per
        element."""

    def put_request(self, key: RequestKey, record: Doc | None,
                    unless: Callable[[Doc], bool] | None = None) -> None:
        """Keep ``record`` under ``key.name`` in the store's own document (None
        removes it), for requests whose effect spans several units of work (a
        purge). With ``unless``: when the key has a live record for which
        ``unless(record)`` is true, raise :class:`Recorded` and store nothing.
        Records of the store's own document that are no longer live are dropped.
        Replacing or removing is meant for claims (records without an answer),
        which :meth:`find_request` never answers from memory."""

    def delete_service(self, sid: int) -> None:
        """Remove service ``sid``; ``NotFound`` when there is none. Its id is not
        handed out again."""

    def rewrite_services(self, sids: Iterable[int], change: Callable[[Doc], bool | None]
                         ) -> tuple[int, int]:
        """Several services in one unit of work (housekeeping works in such batches):
        ``change`` edits each in place and returns True to store it, False to leave
        it as it was, None to delete it. Ids that name no service are passed over.
        It never compacts by itself: a walk of many batches calls :meth:`compact`
        once at its end. Returns (services written, services deleted)."""

    def put_services(self, docs: Iterable[Doc | Encoded], on_conflict: str = "fail") -> int:
        """Store documents under the ids they carry (import), in one unit of work;
        later new ids come after them. An id that exists: ``fail`` raises
        ``Conflict`` and stores nothing, ``skip`` keeps the stored one, ``replace``
        overwrites it. Returns how many were stored. A document may come already
        encoded (:func:`~contextsvc.storage.records.encoded`): it is stored as it is."""

    # ---------------------------------------------------------------- upkeep
    def periodic(self, name: str, every: float) -> AbstractContextManager[bool]:
        """Whether this process should run the periodic job ``name`` now: ``with
        store.periodic("sweep", 60) as mine:`` gives True when no process of the
        deployment is running it and none finished it within ``every`` seconds;
        leaving the block after True records it as done now. Never waits."""

    def compact(self, above: float | None = None) -> bool:
        """Reclaim the space of old versions and removed services now; with
        ``above``, only when what is stored exceeds ``above`` times the live data
        (housekeeping reclaims after large removals). Returns whether it did."""

    def reclaim(self) -> bool:
        """Compact if the engine's own thresholds say the space is worth it
        (``[storage] compact_min_bytes`` and ``compact_ratio`` for the file engine).
        Writes never compact by themselves: housekeeping calls this, in the
        background, every few seconds. Returns whether it compacted."""

    def stats(self) -> StoreStats:
        """How many services there are, the bytes their records take, and how many of
        those bytes a compaction would free now (old versions, deleted services):
        right after :meth:`compact`, ``reclaimable`` is 0. One unit of work that
        writes nothing."""

    def backup(self, dest: str, overwrite: bool = False,
               progress: Progress | None = None) -> StoreStats:
        """Write a copy of the store as it is now to the file ``dest``, in the file
        engine's format: a data file that a server can start on, holding every write
        acknowledged before the call (none made after it).

        Writers wait only while the point of the copy is fixed, not while it is
        written, and nothing done to the store meanwhile (writes, compactions) can
        tear the copy. The copy is written under a temporary name beside ``dest``,
        flushed to disk, verified as ``contextsvc check`` verifies a store, then
        renamed to ``dest`` (and the directory flushed): a backup that fails or is
        interrupted leaves no file at ``dest`` and leaves one that was there
        untouched. An existing ``dest`` raises ``FileExistsError`` unless
        ``overwrite``; a copy that cannot be written raises ``StoreFailure``, one
        that is not sound ``StoreCorrupt``. ``progress(done, total)`` is called as
        the copy is written and verified. Returns the figures of the copy (for a
        file store, the store's own: the copy holds its records as they were)."""

    def close(self) -> None:
        """Release files and connections."""
