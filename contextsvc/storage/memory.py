"""An in-process engine with the interface of :class:`LogFile`: for tests and for
single-process demos (``[storage] engine = memory``). Nothing survives a restart and
nothing is shared between gunicorn workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .base import Progress, StoreStats
from .logfile import LogFile, verify_copy, write_copy
from .records import TOMBSTONE, Keys, Location, Record, decode, keys_at


class MemoryLog:
    path = ":memory:"
    appended = 0  # nothing to flush: see LogFile.sync
    base = None   # no index checkpoint: the store indexes everything in memory

    def __init__(self) -> None:
        self._blobs: list[bytes] = []
        self._size = 0
        self.last_id = 0
        self._jobs: dict[str, threading.Lock] = {}
        self._done: dict[str, float] = {}

    @contextmanager
    def locked(self, exclusive: bool) -> Iterator[None]:
        yield  # the Store's own mutex is all a single process needs

    def changes(self) -> tuple[bool, Iterator[Record]]:
        return False, iter(())

    def preread(self) -> Iterator[Record]:
        return iter(())

    @contextmanager
    def periodic(self, name: str, every: float) -> Iterator[bool]:
        mutex = self._jobs.setdefault(name, threading.Lock())
        if not mutex.acquire(blocking=False):
            yield False
            return
        try:
            if time.time() - self._done.get(name, 0.0) < every:
                yield False
                return
            yield True
            self._done[name] = time.time()
        finally:
            mutex.release()

    def verify(self) -> None:
        pass

    def sync(self, upto: int | None = None) -> None:
        pass

    def ensure(self) -> None:
        pass

    def repair(self) -> None:
        pass

    def read(self, loc: Location) -> dict[str, Any]:
        return decode(self._blobs[loc[0]])

    def reader(self) -> _Reader:
        return _Reader(self._blobs)  # a compaction makes a new list; this one stays

    def read_raw(self, loc: Location) -> bytes:
        return self._blobs[loc[0]]

    def keys_of(self, loc: Location) -> Keys | None:
        return keys_at(self._blobs[loc[0]], 0)

    def append(self, items: Iterable[tuple[int, bytes | None]]) -> list[Location]:
        locations = []
        for _sid, body in items:
            body = TOMBSTONE if body is None else body
            locations.append((len(self._blobs), len(body)))
            self._blobs.append(body)
            self._size += len(body)
        return locations

    def size(self) -> int:
        return self._size

    def rewrite(self, docs: Iterable[tuple[int, bytes]], last_id: int) -> list[Location]:
        self._blobs = [body for _sid, body in docs]
        self._size = sum(len(b) for b in self._blobs)
        self.last_id = last_id
        return [(i, len(b)) for i, b in enumerate(self._blobs)]

    def packed_size(self, rows: Iterable[tuple[int, int]], last_id: int) -> int:
        """What :meth:`size` would be after a compaction that keeps ``rows``."""
        return sum(length for _sid, length in rows)

    def image(self, live: Iterable[tuple[int, Location]], last_id: int) -> _Image:
        """The services ``live`` (id, location) as they are now, to be written as a
        data file of the file engine after the store is released."""
        return _Image([(sid, self._blobs[loc[0]]) for sid, loc in live], last_id)


class _Image:
    def __init__(self, docs: list[tuple[int, bytes]], last_id: int):
        self.docs, self.last_id = docs, last_id

    def save(self, dest: str, overwrite: bool = False, progress: Progress | None = None
             ) -> StoreStats:
        def fill(tmp: str) -> StoreStats:
            engine = LogFile(tmp)  # its own compaction writes a whole data file
            try:
                engine.rewrite(iter(self.docs), self.last_id)
            finally:
                engine.close()
            return verify_copy(tmp, progress)

        return write_copy(dest, overwrite, fill)

    def close(self) -> None:
        pass


class _Reader:
    def __init__(self, blobs: list[bytes]):
        self._blobs = blobs

    def read(self, loc: Location) -> dict[str, Any]:
        return decode(self._blobs[loc[0]])

    def read_raw(self, loc: Location) -> bytes:
        return self._blobs[loc[0]]

    def close(self) -> None:
        pass
