"""The JSON-file engine: a TinyDB file that is written by appending.

The file is an ordinary TinyDB JSON document, laid out one record per line::

    {"_meta": {"1": {"format": 1, "last_service_id": 41}}, "services": {
    "7": {"service_id": 7, ...}
    ,"8": {"service_id": 8, ...}
    ,"7": {"service_id": 7, ...newer version...}
    }}

A write never rewrites what is there: it puts the new versions of the documents it
changed over the closing ``}}`` line, adds a new ``}}`` line, and calls
``fdatasync`` before the request is answered. JSON readers keep the last of
repeated keys (Python's ``json`` documents this), so plain
``tinydb.TinyDB(path).table("services")`` sees the newest version of each service.
A deleted service is a ``{"_deleted": true}`` record until the next compaction.

Why not TinyDB's own ``JSONStorage``: it reads the whole file on every read and
rewrites it on every write (msiemens/tinydb#316, #397), its in-place write is not
crash-safe (#468), and it is not safe across processes (#72, #91, #537). Here:

* Workers coordinate with ``flock`` on ``<path>.lock`` (never replaced, so it
  survives compaction's rename); readers share it, a writer holds it alone.
* Each worker keeps the location of every service's newest record in memory. Under
  the lock it compares the file's inode and size with what it has seen and reads
  only the records other workers appended since (no stale cache, tinydb#179/#276).
* A crash can only leave a torn last line, after every acknowledged record: it is
  ignored by readers and cut off by the next writer. Damage before the last good
  record is not guessed at: :class:`StoreCorrupt` is raised and nothing is written.
* When superseded versions outweigh live data, the file is compacted: rewritten
  to ``<path>.tmp``, fsynced, renamed over the file, the directory fsynced.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import StoreBusy, StoreCorrupt, StoreFailure

FORMAT = 1
HEADER_START = b'{"_meta": '
HEADER_END = b', "services": {\n'
TRAILER = b"}}\n"
TOMBSTONE = b'{"_deleted": true}'
_RECORD = re.compile(rb',?"([1-9][0-9]{0,15})": ')

Location = tuple[int, int]  # (offset of the JSON document, its length)
Record = tuple[int, Location, "dict[str, Any] | None"]


def _dumps(doc: dict[str, Any]) -> bytes:
    # ensure_ascii: lone surrogates from JSON escapes survive the round trip
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LogFile:
    """Low-level engine: bytes, locks and offsets. Knows nothing of services."""

    def __init__(self, path: str, *, fsync: bool = True, lock_timeout: float = 10.0):
        self.path = os.path.abspath(path)
        self.fsync = fsync
        self.lock_timeout = lock_timeout
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
            self._lock_fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                    0o644)
        except OSError as exc:
            raise StoreFailure(f"cannot open the store at {self.path}: {exc.strerror}") from None
        self._fd = -1
        self._ino: int | None = None
        self._end = 0        # offset of the trailer: end of the last good record
        self._seen = 0       # file size when last read
        self._clean = True   # nothing but the trailer after _end
        self._count = 0      # records in the file (the first one has no comma)
        self.last_id = 0     # from the header; records may raise it

    # ------------------------------------------------------------------ locking
    @contextmanager
    def locked(self, exclusive: bool) -> Iterator[None]:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(self._lock_fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            self._wait(mode)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _wait(self, mode: int) -> None:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.0001
        while True:
            time.sleep(delay)
            try:
                fcntl.flock(self._lock_fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreBusy(
                        f"The store is busy: its lock was not free within {self.lock_timeout:g} s"
                    ) from None
                delay = min(delay * 2, 0.005)

    # ------------------------------------------------------------------ reading
    def changes(self) -> tuple[bool, list[Record]]:
        """Under a lock: the records appended since the last call.

        Returns ``(reset, records)``; ``reset`` means the file was replaced (or is
        read for the first time) and ``records`` is its whole content.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._ino is None and self._fd < 0:
                return False, []
            self._close()
            self._ino, self._end, self._seen, self._count, self._clean = None, 0, 0, 0, True
            return True, []
        except OSError as exc:
            raise StoreFailure(f"cannot read {self.path}: {exc.strerror}") from None
        if st.st_ino != self._ino or self._fd < 0:
            return True, self._reopen()
        if st.st_size == self._seen and self._clean:
            return False, []
        return False, list(self._scan(self._end))

    def read(self, loc: Location) -> dict[str, Any]:
        offset, length = loc
        data = os.pread(self._fd, length, offset)
        return json.loads(data)

    def read_raw(self, loc: Location) -> bytes:
        return os.pread(self._fd, loc[1], loc[0])

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _reopen(self) -> list[Record]:
        self._close()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreFailure(f"cannot open {self.path}: {exc.strerror}") from None
        self._ino = os.fstat(self._fd).st_ino
        header = self._read_header()
        self._count = 0
        self._end = self._seen = len(header)
        self._clean = True
        return list(self._scan(self._end))

    def _read_header(self) -> bytes:
        with os.fdopen(os.dup(self._fd), "rb") as handle:
            line = handle.readline(1 << 20)
        if not (line.startswith(HEADER_START) and line.endswith(HEADER_END)):
            raise StoreCorrupt(f"{self.path} is not a contextsvc store file "
                               "(its first line is not the expected header)")
        try:
            meta = json.loads(line[len(HEADER_START):-len(HEADER_END)])["1"]
            self.last_id = int(meta["last_service_id"])
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreCorrupt(f"{self.path}: unreadable header ({exc})") from None
        return line

    def _scan(self, start: int) -> Iterator[Record]:
        """Parse the lines from ``start``; stop at the trailer or at a torn tail."""
        with os.fdopen(os.dup(self._fd), "rb") as handle:
            handle.seek(start)
            offset = start
            count = self._count
            for line in handle:
                if line == TRAILER:
                    self._end, self._count = offset, count
                    self._seen = offset + len(line)
                    rest = handle.read(1)
                    self._clean = not rest
                    if rest:
                        self._check_tail(offset + len(line))
                    return
                record = self._parse(line, offset)
                if record is None:
                    self._end, self._count, self._clean = offset, count, False
                    self._check_tail(offset + len(line))
                    self._seen = os.fstat(self._fd).st_size
                    return
                offset += len(line)
                count += 1
                yield record
            # no trailer: a writer died between its last record and the trailer
            self._end, self._count, self._clean = offset, count, False
            self._seen = offset

    def _parse(self, line: bytes, offset: int) -> Record | None:
        if not line.endswith(b"\n"):
            return None
        match = _RECORD.match(line)
        if match is None:
            return None
        body = line[match.end():-1]
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        loc = (offset + match.end(), len(body))
        sid = int(match.group(1))
        return sid, loc, (None if doc.get("_deleted") is True else doc)

    def _check_tail(self, offset: int) -> None:
        """A bad line is a torn write only if no good record follows it."""
        with os.fdopen(os.dup(self._fd), "rb") as handle:
            handle.seek(offset)
            for line in handle:
                if line != TRAILER and self._parse(line, offset) is not None:
                    raise StoreCorrupt(
                        f"{self.path} is damaged before byte {offset}: a record that cannot "
                        "be read is followed by good ones; refusing to guess what was lost")
                offset += len(line)

    # ------------------------------------------------------------------ writing
    def ensure(self) -> None:
        """Under the exclusive lock: create the file when there is none."""
        if os.path.exists(self.path):
            return
        self._write_file([], self.last_id)

    def append(self, items: Iterable[tuple[int, dict[str, Any] | None]]) -> list[Location]:
        """Under the exclusive lock, after :meth:`changes`: write new versions
        (``None`` deletes) and make them durable."""
        if self._fd < 0:
            self.ensure()
            self._reopen()
        parts: list[bytes] = []
        locations: list[Location] = []
        offset, count = self._end, self._count
        for sid, doc in items:
            body = TOMBSTONE if doc is None else _dumps(doc)
            prefix = b'%s"%d": ' % (b"," if count else b"", sid)
            locations.append((offset + len(prefix), len(body)))
            parts += (prefix, body, b"\n")
            offset += len(prefix) + len(body) + 1
            count += 1
        parts.append(TRAILER)
        blob = b"".join(parts)
        try:
            if not self._clean:
                os.ftruncate(self._fd, self._end)
                self._clean = True
            written = 0
            while written < len(blob):
                written += os.pwrite(self._fd, blob[written:], self._end + written)
            if self.fsync:
                os.fdatasync(self._fd)
        except OSError as exc:
            self._undo()
            raise StoreFailure(f"cannot write {self.path}: {exc.strerror}"
                               + (" (disk full)" if exc.errno == errno.ENOSPC else "")) from None
        self._end, self._count = offset, count
        self._seen = offset + len(TRAILER)
        return locations

    def _undo(self) -> None:
        """Put the trailer back after a failed write; what was acknowledged stays."""
        try:
            os.ftruncate(self._fd, self._end)
            os.pwrite(self._fd, TRAILER, self._end)
            os.fdatasync(self._fd)
            self._seen, self._clean = self._end + len(TRAILER), True
        except OSError:
            self._clean = False  # the next writer cuts the tail

    def repair(self) -> None:
        """Under the exclusive lock: cut a torn tail left by a crashed writer, so
        that plain TinyDB can read the file again."""
        if self._fd >= 0 and not self._clean:
            self._undo()

    def forget(self) -> None:
        """Read the whole file again at the next :meth:`changes`."""
        self._close()
        self._ino = None

    def close(self) -> None:
        self._close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def size(self) -> int:
        return self._seen

    def rewrite(self, docs: Iterable[tuple[int, bytes]], last_id: int) -> list[Location]:
        """Under the exclusive lock: replace the file with just ``docs`` (raw JSON)."""
        locations, end, count = self._write_file(docs, last_id)
        self._close()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreFailure(f"cannot open {self.path}: {exc.strerror}") from None
        self._ino = os.fstat(self._fd).st_ino
        self._end, self._count, self._clean = end, count, True
        self._seen = end + len(TRAILER)
        self.last_id = last_id
        return locations

    def _write_file(self, docs: Iterable[tuple[int, bytes]],
                    last_id: int) -> tuple[list[Location], int, int]:
        tmp = self.path + ".tmp"
        meta = json.dumps({"1": {"format": FORMAT, "last_service_id": last_id}})
        header = HEADER_START + meta.encode() + HEADER_END
        locations = []
        try:
            with open(tmp, "wb") as handle:
                handle.write(header)
                offset, count = len(header), 0
                for sid, body in docs:
                    prefix = b'%s"%d": ' % (b"," if count else b"", sid)
                    handle.write(prefix + body + b"\n")
                    locations.append((offset + len(prefix), len(body)))
                    offset += len(prefix) + len(body) + 1
                    count += 1
                handle.write(TRAILER)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise StoreFailure(f"cannot write {self.path}: {exc.strerror}") from None
        return locations, offset, count
