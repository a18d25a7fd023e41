"""The JSON-file engine: a TinyDB file that is written by appending.

The file is an ordinary TinyDB JSON document, laid out one append per line (most
appends are one record)::

    {"_meta": {"1": {"format": 1, "last_service_id": 41, "file": "5f0c..."}}, "services": {
    "7": {"service_id": 7, ...}
    ,"8": {"service_id": 8, ...}
    ,"7": {"service_id": 7, ...newer version...}
    ,"9":  {"service_id": 9, ...},"10": {"service_id": 10, ...}
    }}

An append of several records (a batch, a find-or-create over several services) is
one line, so that a crash leaves all of it or none. Id 0 is the store's own
document (request records that belong to no one service), never a service.

A write never rewrites what is there: it puts the new versions of the documents it
changed over the closing ``}}`` line, adds a new ``}}`` line, and calls
``fdatasync`` before the request is answered. JSON readers keep the last of
repeated keys (Python's ``json`` documents this), so plain
``tinydb.TinyDB(path).table("services")`` sees the newest version of each service.
A deleted service is a ``{"_deleted": true}`` record until the next compaction.
``file`` in the header is a random id of this file (each compaction writes a new
file, with a new id), which its index checkpoint names (see :mod:`.checkpoint`).

Why not TinyDB's own ``JSONStorage``: it reads the whole file on every read and
rewrites it on every write (msiemens/tinydb#316, #397), its in-place write is not
crash-safe (#468), and it is not safe across processes (#72, #91, #537). Here:

* Workers coordinate with ``flock`` on ``<path>.lock`` (never replaced, so it
  survives compaction's rename); readers share it, a writer holds it alone.
* Each worker knows where every service's newest record is: from the index
  checkpoint ``<path>.idx``, which every worker maps, for the records up to where it
  was written, and from its own memory for those after. Under the lock it compares
  the file's inode and size with what it has seen and reads only the records other
  workers appended since (no stale cache, tinydb#179/#276).
* A crash can only leave a torn last line, after every acknowledged record: it is
  ignored by readers and cut off by the next writer. Damage before the last good
  record is not guessed at: :class:`StoreCorrupt` is raised and nothing is written.
* When superseded versions outweigh live data, the file is compacted: rewritten
  to ``<path>.tmp`` while requests go on, fsynced, renamed over the file (with its
  checkpoint) under the exclusive lock, the directory fsynced.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import secrets
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

from ..errors import StoreBusy, StoreCorrupt, StoreFailure, StoreReplaced
from .base import Progress, StoreStats
from .checkpoint import Checkpoint
from .records import (
    REQUESTS,
    STORE_DOC,
    TOMBSTONE,
    Keys,
    Location,
    Record,
    decode,
    index_keys,
    keys_at,
)

log = logging.getLogger(__name__)

FORMAT = 1
HEADER_START = b'{"_meta": '
HEADER_END = b', "services": {\n'
TRAILER = b"}}\n"
PAD_MIN = 1 << 20  # the file grows by at least this much whitespace at a time...
PAD_SHORT = 4096   # ...unless the disk is too full for that
_RECORD = re.compile(rb',?"(0|[1-9][0-9]{0,15})": ')
# An append of several records is one line: the first record's key is followed by
# two spaces, the others start with ``,"<id>": `` (a sequence compact JSON never
# holds outside a string, and inside one a quote is escaped). A crash leaves a torn
# line, which readers ignore whole: such an append happens entirely or not at all.
_NEXT = re.compile(rb',"(0|[1-9][0-9]{0,15})": ')
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
# What the last writer left in the lock file: the data file's inode and the end of
# its records. A process that has not read the file for a while cannot tell a file
# restored in place from one nobody wrote to since; this tells it.
_LAST_WRITE = struct.Struct("<QQ")
_BLANK = b" \t\r\n\x00"  # what may follow the trailer: padding, or zeroes left by a crash
NO_ID = bytes(16)  # the file id of a data file whose header has none
T = TypeVar("T")

def blocking(call: Callable[..., T], *args: Any) -> T:
    """Run ``call``, a system call that may wait for the disk for long (the flush of
    a whole compacted file), so that the process goes on meanwhile. Under gevent
    (the default worker class) a greenlet in a blocking system call stops its whole
    worker, every other request included: the call goes to gevent's pool of
    native threads instead, and the greenlet waits for it as for I/O. Native
    threads (and plain processes) just call it: the GIL is released during the
    system call."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        import gevent

        return gevent.get_hub().threadpool.apply(call, args)
    return call(*args)


def _padding(size: int) -> bytes:
    return b" " * (size - 1) + b"\n" if size > 0 else b""


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
        self.lock_path = self.path + ".lock"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        except OSError:
            pass  # a read-only disk: the directory is either there or open() says why
        self._lock_fd = -1
        self._lock_id: tuple[int, int] = (0, 0)
        self.index_path = self.path + ".idx"
        # Whether to start from the index checkpoint (LogStore does; tools that must
        # see every record, such as the TinyDB snapshot, do not). ``base`` is the one
        # the records of the last reset of changes() follow.
        self.checkpoints = False
        self.base: Checkpoint | None = None
        self.file_id = NO_ID
        self._fd = -1
        self._writable = False
        self._ino: int | None = None
        self._header = b""
        self._first_read = True
        self._end = 0        # offset of the trailer: end of the last good record
        self._garbage = 0    # end of a torn write after _end (0: none)
        self._cap = 0        # file size: _end + trailer + whitespace padding
        self._count = 0      # records in the file (the first one has no comma)
        self.appended = 0    # appends made by this process...
        self._synced = 0     # ...of which this many are known to be on disk
        self._sync_failed = 0  # appends a failed flush may have lost: never acknowledged
        self._sync_lock = threading.Lock()
        self.last_id = 0     # from the header; records may raise it

    # ------------------------------------------------------------------ locking
    @contextmanager
    def locked(self, exclusive: bool) -> Iterator[None]:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        while True:
            if self._lock_fd < 0:
                self._open_lock()
            try:
                fcntl.flock(self._lock_fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                self._wait(mode)
            if self._lock_is_current():
                break
            # The lock file was deleted or replaced (by hand, or by a tool cleaning
            # up): a process that opens the path now locks another file than the one
            # this process holds, and the two would write at once. Every process
            # moves to the file the path names, so that all of them lock the same.
            log.warning("%s was deleted or replaced while the store was in use; "
                        "locking the file that the path names now", self.lock_path)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextmanager
    def periodic(self, name: str, every: float) -> Iterator[bool]:
        """See :meth:`contextsvc.storage.base.ServiceStore.periodic`: a lock file of
        its own, ``<path>.<name>.lock``, holds the time the job last finished."""
        path = f"{self.path}.{name}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            yield False  # a read-only disk: no housekeeping can write anyway
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False  # another process is running it
                return
            try:
                last = float(os.pread(fd, 32, 0).strip() or 0)
            except ValueError:
                last = 0.0
            if time.time() - last < every:
                yield False
                return
            yield True
            os.pwrite(fd, repr(time.time()).encode().ljust(32), 0)  # repr: exact
        finally:
            os.close(fd)  # releases the flock

    def _open_lock(self) -> None:
        flags = os.O_CLOEXEC
        try:
            fd = os.open(self.lock_path, flags | os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno not in _READ_ONLY:
                raise StoreFailure(f"cannot open {self.lock_path}: {exc.strerror}") from None
            try:  # a read-only disk: flock works on a descriptor opened for reading
                fd = os.open(self.lock_path, flags | os.O_RDONLY)
            except OSError:
                raise StoreFailure(f"cannot open {self.lock_path}: {exc.strerror}") from None
        st = os.fstat(fd)
        self._lock_fd, self._lock_id = fd, (st.st_dev, st.st_ino)

    def _lock_is_current(self) -> bool:
        try:
            st = os.stat(self.lock_path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._lock_id

    def _wait(self, mode: int) -> None:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.00005
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
                delay = min(delay * 2, 0.002)

    # ------------------------------------------------------------------ reading
    def changes(self) -> tuple[bool, Iterator[Record]]:
        """Under a lock: the records appended since the last call (an iterator to
        consume at once). ``reset`` means the file was replaced by a compaction (or
        is read for the first time) and the records are its whole content.

        Raises :class:`StoreReplaced` when the file is not the one this process
        has been reading: deleted, or changed other than by appending."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._ino is None:
                return False, iter(())
            raise self._replaced("was deleted") from None
        except OSError as exc:
            raise StoreFailure(f"cannot read {self.path}: {exc.strerror}") from None
        if st.st_ino != self._ino or self._fd < 0:
            return True, self._reopen()
        if (st.st_size < self._end + len(TRAILER)
                or os.pread(self._fd, len(self._header), 0) != self._header):
            raise self._replaced("was replaced or truncated")
        if self._garbage:
            return False, self._scan(self._end)
        # Every append overwrites the trailer at _end, so a few bytes tell.
        tail = os.pread(self._fd, 24, self._end)
        if tail.startswith(TRAILER):
            if self._first_read:  # after preread(): what follows the trailer is checked
                self._check_padding(self._end + len(TRAILER))
            return False, iter(())
        if not _RECORD.match(tail) or tail.startswith(b",") != (self._count > 0):
            raise self._replaced("was changed other than by appending")
        return False, self._scan(self._end, whole=self._first_read)

    def preread(self) -> Iterator[Record]:
        """Before a process first takes the exclusive lock (LogStore at open): the
        records up to where the last writer recorded their end, to be read with no
        lock held. They never change: a write appends after them, and a compaction
        puts a new file in place while this process goes on reading the old one.
        The first :meth:`changes` under the lock then reads only what was appended
        since (or everything again, if the file was replaced meanwhile). So workers
        starting together on a large store read it side by side, and none of them
        holds up the others or the requests for the length of a whole read.
        Nothing when the lock file records no end for this file (a new store, a
        plain TinyDB file, a crash in the middle of a write): the first
        :meth:`changes` reads it all, under the lock."""
        try:
            with self._reading_lock():
                if self._lock_fd < 0:
                    return iter(())
                raw = os.pread(self._lock_fd, _LAST_WRITE.size, 0)
                if len(raw) != _LAST_WRITE.size:
                    return iter(())
                ino, end = _LAST_WRITE.unpack(raw)
                try:
                    fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    return iter(())
                st = os.fstat(fd)
                if (st.st_ino != ino or st.st_size < end + len(TRAILER)
                        or os.pread(fd, len(TRAILER), end) != TRAILER):
                    os.close(fd)
                    return iter(())
                self._fd, self._ino, self._cap, self._writable = fd, ino, st.st_size, False
                try:
                    self._header = self._read_header()
                except StoreCorrupt:
                    self.forget()
                    return iter(())
        finally:  # the lock file is opened again, for writing, by the first locked()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1
        self._count, self._end, self._garbage = 0, len(self._header), 0
        self._start_at_checkpoint(end)
        return self._scan_until(end)

    def _scan_until(self, end: int) -> Iterator[Record]:
        count = self._count
        for offset, line in self._lines(self._end):
            if offset >= end:
                break
            records = self._parse(line, offset)
            if records is None:  # cannot be, before a recorded end: read it all under the lock
                self.forget()
                raise StoreReplaced(f"{self.path} changed while it was read")
            count += len(records)
            yield from records
        self._end, self._count = end, count

    def _replaced(self, what: str) -> StoreReplaced:
        return StoreReplaced(
            f"The data file {self.path} {what} while the service was using it; this "
            "process refuses to read or write it again. Restart the service to use the "
            "file as it now is")

    def read(self, loc: Location) -> dict[str, Any]:
        try:
            return decode(os.pread(self._fd, loc[1], loc[0]))
        except ValueError:  # UnicodeDecodeError included
            # the record was readable when it was indexed: the file changed under us
            raise self._replaced("was changed other than by appending") from None

    def reader(self) -> _Reader:
        """Under a lock: something that reads the records known now, also after the
        lock is released (see :class:`contextsvc.storage.base.Selection`)."""
        return _Reader(os.dup(self._fd) if self._fd >= 0 else -1, self)

    def read_raw(self, loc: Location) -> bytes:
        return os.pread(self._fd, loc[1], loc[0])

    def keys_of(self, loc: Location) -> Keys | None:
        """The index keys the record at ``loc`` holds (it is not parsed whole)."""
        return keys_at(os.pread(self._fd, loc[1], loc[0]), 0)

    def _close(self) -> None:
        # A flush (sync) runs outside the store's lock, holding _sync_lock: a thread
        # that reopens the file (after a compaction) waits for it, rather than close
        # the descriptor under it (its number could then name another file).
        if self._fd >= 0:
            with self._sync_lock:
                os.close(self._fd)
                self._fd = -1

    def _reopen(self) -> Iterator[Record]:
        self._close()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            self._writable = True
        except OSError as exc:
            if exc.errno not in _READ_ONLY:
                raise StoreFailure(f"cannot open {self.path}: {exc.strerror}") from None
            try:  # serve reads; writes answer 503 until the file can be written again
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                self._writable = False
            except OSError as again:
                raise StoreFailure(f"cannot open {self.path}: {again.strerror}") from None
        st = os.fstat(self._fd)
        self._ino, self._cap = st.st_ino, st.st_size
        self._header = self._read_header()
        self._count, self._end, self._garbage = 0, len(self._header), 0
        self._start_at_checkpoint(self._cap)
        return self._scan(self._end, whole=True)

    def _start_at_checkpoint(self, limit: int) -> None:
        """After the header was read: when the index checkpoint describes this file
        up to a point at or before ``limit``, reading starts there (``base``)."""
        self.base = None
        if not self.checkpoints:
            return
        found = Checkpoint.load(self.index_path)
        if found is None:
            return
        if not found.describes(self._read_at, self.file_id, self._ino or 0,
                               len(self._header), limit):
            log.info("%s does not describe %s as it is now; reading the whole file",
                     self.index_path, self.path)
            return
        self.base = found
        self._end, self._count = found.point.end, found.point.count
        self.last_id = max(self.last_id, found.point.last_id)

    def _read_at(self, size: int, offset: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def checkpoint(self) -> Checkpoint | None:
        """Under a lock, after :meth:`changes`: the index checkpoint now in place,
        if it describes this file up to a point at or before what was read."""
        if self._fd < 0:
            return None
        found = Checkpoint.load(self.index_path)
        if found is None or not found.describes(self._read_at, self.file_id, self._ino or 0,
                                                len(self._header), self._end):
            return None
        return found

    def _writable_fd(self) -> None:
        """Before a write on a file opened read-only: open it for writing, now that
        the disk may allow it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreFailure(f"cannot write {self.path}: {exc.strerror}") from None
        if os.fstat(fd).st_ino != self._ino:
            os.close(fd)
            raise self._replaced("was replaced")
        os.dup2(fd, self._fd)
        os.close(fd)
        self._writable = True

    def _read_header(self) -> bytes:
        line = self._lines(0).__next__()[1] if self._cap else b""
        if not (line.startswith(HEADER_START) and line.endswith(HEADER_END)):
            raise StoreCorrupt(f"{self.path} is not a contextsvc store file "
                               "(its first line is not the expected header)")
        try:
            meta = json.loads(line[len(HEADER_START):-len(HEADER_END)])["1"]
            self.last_id = int(meta["last_service_id"])
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            # files written before ids existed have none; any other value is no id either
            file_id = meta.get("file")
            self.file_id = (bytes.fromhex(file_id) if isinstance(file_id, str)
                            and re.fullmatch("[0-9a-f]{32}", file_id) else NO_ID)
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreCorrupt(f"{self.path}: unreadable header ({exc})") from None
        return line

    def _lines(self, start: int, chunk: int = 1 << 16) -> Iterator[tuple[int, bytes]]:
        """(offset, line) from ``start`` to the end of the file; a last line without
        a newline is yielded as it is."""
        offset, rest = start, b""
        while True:
            data = os.pread(self._fd, chunk, offset + len(rest))
            if not data:
                if rest:
                    yield offset, rest
                return
            buf = rest + data if rest else data
            pos = 0
            while True:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    break
                yield offset + pos, buf[pos:nl + 1]
                pos = nl + 1
            offset, rest = offset + pos, buf[pos:]
            chunk = min(chunk * 2, 1 << 23)

    def _scan(self, start: int, whole: bool = False) -> Iterator[Record]:
        """Parse records from ``start`` up to the trailer, or up to a torn write.
        ``whole``: the file is read from its start, and nothing but padding may
        follow the trailer."""
        count, good = self._count, start
        for offset, line in self._lines(start):
            if line == TRAILER:
                self._end, self._count, self._garbage = offset, count, 0
                if whole:
                    self._check_padding(offset + len(TRAILER))
                return
            records = self._parse(line, offset)
            if records is None:
                # A writer died mid-write: nothing it wrote was acknowledged.
                self._end, self._count = offset, count
                self._garbage = offset + len(line)
                self._check_tail(self._garbage)
                return
            count, good = count + len(records), offset + len(line)
            yield from records
        # the file ends without a trailer: a writer died while growing it
        self._end, self._count, self._garbage = good, count, max(good, 1)

    def _check_padding(self, offset: int) -> None:
        """After the trailer there is only padding. Anything else was not written by
        contextsvc (records after the end would be silently ignored): damage."""
        zeroes = False
        chunk = 1 << 20
        while data := os.pread(self._fd, chunk, offset):
            rest = data.translate(None, _BLANK)
            if rest:
                raise StoreCorrupt(
                    f"{self.path} is damaged: data after the end of the records, at byte "
                    f"{offset + data.index(rest[:1])}; refusing to guess what it holds")
            zeroes = zeroes or b"\x00" in data
            offset += len(data)
        if zeroes:  # left by a crash while the file grew: blanked by the next writer
            self._garbage = offset

    def _parse(self, line: bytes, offset: int) -> list[Record] | None:
        """The records of one line (one append), or None when it is not whole."""
        match = _RECORD.match(line)
        if match is None or not line.endswith(b"}\n"):
            return None
        start, end = match.end(), len(line) - 1
        # (id, where its document begins, where it ends)
        marks = [(int(match.group(1)), start, end)]
        if line.startswith(b" ", start):  # several records (see _NEXT)
            marks[0] = (marks[0][0], start + 1, end)
            for mark in _NEXT.finditer(line, start + 1):
                if line[mark.start() - 1:mark.start()] != b"}":
                    return None
                marks[-1] = (*marks[-1][:2], mark.start())
                marks.append((int(mark.group(1)), mark.end(), end))
        records: list[Record] = []
        for sid, begin, stop in marks:
            loc = (offset + begin, stop - begin)
            if line.startswith(TOMBSTONE, begin) and loc[1] == len(TOMBSTONE):
                records.append((sid, loc, None))
                continue
            keys = keys_at(line, begin, stop)
            if keys is None:
                return None
            records.append((sid, loc, keys))
        return records

    def _check_tail(self, offset: int) -> None:
        """A bad line is a torn write only if no good record follows it."""
        for at, line in self._lines(offset):
            if line != TRAILER and line.strip() and self._parse(line, at) is not None:
                raise StoreCorrupt(
                    f"{self.path} is damaged at byte {offset}: a record that cannot be read "
                    "is followed by good ones; refusing to guess what was lost")

    # ------------------------------------------------------------------ writing
    def ensure(self) -> None:
        """Under the exclusive lock: create the file when there is none."""
        if not os.path.exists(self.path):
            self._write_file([], self.last_id)

    def append(self, items: Iterable[tuple[int, bytes | None]]) -> list[Location]:
        """Under the exclusive lock, after :meth:`changes`: write new versions
        (encoded documents; ``None`` deletes). They are durable once :meth:`sync`
        returns."""
        if self._fd < 0:
            self.ensure()
            for _ in self._reopen():
                pass
        if not self._writable:
            self._writable_fd()
        parts: list[bytes] = []
        locations: list[Location] = []
        items = list(items)
        offset, count = self._end, self._count
        for n, (sid, body) in enumerate(items):
            body = TOMBSTONE if body is None else body
            prefix = b'%s"%d": ' % (b"," if count else b"", sid)
            if n == 0 and len(items) > 1:
                prefix += b" "  # one line for the whole append (see _NEXT)
            locations.append((offset + len(prefix), len(body)))
            parts += (prefix, body)
            offset += len(prefix) + len(body)
            count += 1
        if items:
            parts.append(b"\n")
            offset += 1
        parts.append(TRAILER)
        end = offset
        if end + len(TRAILER) >= self._cap:
            self._cap = max(self._cap, os.fstat(self._fd).st_size)  # others may have grown it
        records = b"".join(parts)
        try:
            cap = self._put(records, end, max(PAD_MIN, self._cap // 8))
        except OSError as exc:
            if exc.errno != errno.ENOSPC or end + len(TRAILER) < self._cap:
                raise self._write_failed(exc) from None
            try:  # the disk is nearly full: grow by just what this write needs
                cap = self._put(records, end, PAD_SHORT)
            except OSError as again:
                raise self._write_failed(again) from None
        self._end, self._count, self._cap, self._garbage = end, count, cap, 0
        self.appended += 1
        self._note_end()
        return locations

    def _put(self, records: bytes, end: int, step: int) -> int:
        """Write ``records`` (ending in the trailer) at the end; grow the padding by
        ``step`` when they do not fit. Returns the new size of the file. On an
        error, puts the file back as it was."""
        cap = self._cap
        blob = records
        if end + len(TRAILER) >= cap:  # grow the padding: the only writes that change the size
            cap = end + len(TRAILER) + step
            blob += _padding(cap - end - len(TRAILER))
        elif self._garbage > end + len(TRAILER):  # blank what a torn write left
            blob += _padding(self._garbage - end - len(TRAILER))
        try:
            written = 0
            while written < len(blob):
                written += os.pwrite(self._fd, blob[written:], self._end + written)
        except OSError:
            self._undo()
            raise
        return cap

    def _write_failed(self, exc: OSError) -> StoreFailure:
        return StoreFailure(f"cannot write {self.path}: {exc.strerror}"
                            + (" (disk full)" if exc.errno == errno.ENOSPC else ""))

    def sync(self, upto: int | None = None) -> None:
        """Make this process's appends durable, up to its ``upto``-th (all by
        default: see :attr:`appended`). Called after the lock is released: writers
        do not wait for each other's disk flush, and a flush covers every byte
        written to the file before it, whoever wrote it. So the threads (or
        greenlets) of a process share flushes (group commit): each first lets the
        others that are ready append too, then one flush covers all of them, and
        those whose append it covered do not flush again. A flush costs more CPU
        than the rest of a small write (a few hundred microseconds here), so this
        is what lets a process write faster than one request per flush."""
        upto = self.appended if upto is None else upto
        if not self.fsync or self._synced >= upto:
            return
        # Under gevent a greenlet runs until it yields, and the flush itself does not
        # yield (it would take a thread pool, which costs more than the flush waits
        # here): yield once before it, so that the ready greenlets append first.
        time.sleep(0)
        with self._sync_lock:
            if upto <= self._sync_failed:
                raise StoreFailure(f"cannot flush {self.path}: an earlier flush of this "
                                   "write failed")
            if self._synced >= upto:
                return
            covered = self.appended  # appends are counted once written: all covered
            try:
                os.fdatasync(self._fd)  # not closed meanwhile: see _close
            except OSError as exc:
                # Linux may report a failed flush only once (and drop the pages): no
                # append it covered is acknowledged, even if a later flush succeeds.
                self._sync_failed = covered
                raise StoreFailure(f"cannot flush {self.path}: {exc.strerror}") from None
            self._synced = max(self._synced, covered)

    def _undo(self) -> None:
        """After a failed write: put the trailer back and blank the rest."""
        try:
            os.pwrite(self._fd, TRAILER + _padding(self._cap - self._end - len(TRAILER)),
                      self._end)
            os.ftruncate(self._fd, self._cap)
            os.fdatasync(self._fd)
        except OSError:
            self._garbage = self._cap  # the next writer blanks it

    def repair(self) -> None:
        """Under the exclusive lock: blank a torn write left by a crashed writer, so
        that plain TinyDB can read the file again."""
        if self._fd >= 0 and self._garbage:
            try:
                self.append([])
                self.sync()
            except StoreFailure:
                pass

    def forget(self) -> None:
        """Read the whole file again at the next :meth:`changes`."""
        self._close()
        self._ino, self._header, self.base = None, b"", None
        self._end = self._cap = self._count = self._garbage = 0

    def close(self) -> None:
        self._close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def size(self) -> int:
        """Bytes of records, padding left out."""
        return self._end

    def rewrite(self, docs: Iterable[tuple[int, bytes]], last_id: int) -> list[Location]:
        """Under the exclusive lock: replace the file with just ``docs`` (raw JSON)."""
        locations, end, count, cap = self._write_file(docs, last_id)
        self._close()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreFailure(f"cannot open {self.path}: {exc.strerror}") from None
        self._ino, self._writable = os.fstat(self._fd).st_ino, True
        self._end, self._count, self._cap, self._garbage = end, count, cap, 0
        self._header = self._read_header()
        self.base = None
        self._note_end()
        return locations

    # ------------------------------------------------------------------ compaction
    @contextmanager
    def rewriting(self, wait: bool = True) -> Iterator[bool]:
        """Held by whoever writes a new data file or index checkpoint of this store
        (a compaction, a checkpoint): one at a time across processes, since both
        write under fixed temporary names. Waits for the one under way, or (not
        ``wait``) gives False at once."""
        path = self.path + ".rewrite.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreFailure(f"cannot open {path}: {exc.strerror}") from None
        try:
            delay = 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait:
                        yield False
                        return
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
            yield True
        finally:
            os.close(fd)  # releases the flock

    def begin_rewrite(self, last_id: int, pause: Callable[[], None]) -> Rewrite:
        """Holding :meth:`rewriting`, not the store's lock: start the data file that
        a compaction puts in place of this one (:meth:`install`)."""
        return Rewrite(self.path + ".tmp", last_id, pause)

    def install(self, new: Rewrite, index_tmp: str) -> None:
        """Under the exclusive lock, after :meth:`changes`: put the finished
        compacted file in place, with its index checkpoint (written to
        ``index_tmp``), and go on with it."""
        new.finish()
        try:
            os.replace(new.path, self.path)
            os.replace(index_tmp, self.index_path)
            _fsync_dir(self.path)
        except OSError as exc:
            raise StoreFailure(f"cannot write {self.path}: {exc.strerror}") from None
        self._close()
        self._fd, new.fd = new.fd, -1
        self._ino, self._writable = new.ino, True
        self._end, self._count, self._cap, self._garbage = new.end, new.count, new.cap, 0
        self._header = self._read_header()
        self.base = Checkpoint.load(self.index_path, verify=False)  # written just now
        self._synced = self.appended  # the new file holds every append, on disk
        self._note_end()

    def _note_end(self) -> None:
        """Under the exclusive lock, after a write: record where the records end."""
        try:
            os.pwrite(self._lock_fd, _LAST_WRITE.pack(self._ino or 0, self._end), 0)
        except OSError:
            pass  # a lock file opened read-only: nothing is written then anyway

    def verify(self) -> None:
        """Under a lock, after the records of :meth:`changes` were read: the file
        must hold every record its last writer recorded. A process that last read
        the file before an older copy was put back in place finds the trailer where
        it left it, and would otherwise hand out ids again."""
        if self._first_read:  # a process starting (under the exclusive lock, see
            self._first_read = False  # LogStore) takes the file as it is
            self._note_end()
            return
        raw = os.pread(self._lock_fd, _LAST_WRITE.size, 0)
        if len(raw) == _LAST_WRITE.size:
            ino, end = _LAST_WRITE.unpack(raw)
            if ino == self._ino and end > self._end and not self._garbage:
                raise self._replaced("was replaced by an older copy")

    def _write_file(self, docs: Iterable[tuple[int, bytes]],
                    last_id: int) -> tuple[list[Location], int, int, int]:
        tmp = self.path + ".tmp"
        header = _new_header(last_id)
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
                pad = max(PAD_MIN, offset // 8)
                handle.write(TRAILER + _padding(pad))
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
        return locations, offset, count, offset + len(TRAILER) + pad

    # ------------------------------------------------------------------ backup and check
    def packed_size(self, rows: Iterable[tuple[int, int]], last_id: int) -> int:
        """What :meth:`size` would be after a compaction that keeps ``rows``."""
        return packed_size(rows, last_id)

    def image(self, live: Iterable[tuple[int, Location]], last_id: int) -> _FileImage:
        """Under a lock, after :meth:`changes`: the file as it is now, to be copied
        after the lock is released. The bytes before the trailer never change in a
        data file (writes go after them; a compaction puts a new file in place and
        this descriptor keeps the old one), so copying them later still gives the
        file of this moment. (``live`` is for engines that hold no such file.)"""
        return _FileImage(os.dup(self._fd), self._end, self.path)

    def audit(self, progress: Progress | None = None) -> tuple[StoreStats, list[str]]:
        """Verify the data file as it is now and return its figures, with notes on
        what a server would repair by itself. Writes nothing, not even the lock
        file (a missing one is not created): it works on a file this process may
        not write, and while servers use the file.

        Under the shared lock it reads the file as a process does at start (for a
        file in use, the lock file tells where its records end, so the records are
        not read under the lock); then, with the lock released, it parses every
        record in full, the bytes before the end never changing. Raises
        :class:`StoreCorrupt` naming the first damage: a file that is not a
        contextsvc store, a record that does not parse, is not the service it is
        filed under or is indexed other than it reads, anything but padding after
        the end, records cut off."""
        with self._reading_lock():
            notes = self._audit_end()
        return self._audit_records(progress), notes

    def backup(self, dest: str, overwrite: bool = False,
               progress: Progress | None = None) -> StoreStats:
        """:meth:`ServiceStore.backup <contextsvc.storage.base.ServiceStore.backup>`
        of the data file, without opening a store on it (which reads the whole file
        under the exclusive lock): the shared lock is held only while the end of
        the records is found, as :meth:`audit` finds it, and nothing is written
        but the copy. A damaged file raises :class:`StoreCorrupt`."""
        with self._reading_lock():
            self._audit_end()
            image = _FileImage(os.dup(self._fd), self._end, self.path)
        try:
            return image.save(dest, overwrite, progress)
        finally:
            image.close()

    def _reading_lock(self) -> AbstractContextManager[None]:
        """The shared lock, taken through a lock file opened for reading only; none
        when there is no lock file (no process has opened the store)."""
        try:
            self._lock_fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return nullcontext()
        except OSError as exc:
            raise StoreFailure(f"cannot open {self.lock_path}: {exc.strerror}") from None
        st = os.fstat(self._lock_fd)
        self._lock_id = (st.st_dev, st.st_ino)
        return self.locked(False)

    def _audit_end(self) -> list[str]:
        """Under the lock: find where the records end (``_end``) and check what
        follows them."""
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreFailure(f"cannot read {self.path}: {exc.strerror}") from None
        st = os.fstat(self._fd)
        self._ino, self._cap = st.st_ino, st.st_size
        if not st.st_size:
            raise StoreCorrupt(f"{self.path} is empty: it holds no store")
        self._header = self._read_header()
        raw = os.pread(self._lock_fd, _LAST_WRITE.size, 0) if self._lock_fd >= 0 else b""
        ino, last_end = _LAST_WRITE.unpack(raw) if len(raw) == _LAST_WRITE.size else (0, 0)
        noted = last_end if ino == self._ino and last_end >= len(self._header) else None
        if noted is not None and os.pread(self._fd, len(TRAILER), noted) == TRAILER:
            self._end = noted  # where the last writer left the trailer
            self._check_padding(noted + len(TRAILER))
            return []
        for _ in self._scan(len(self._header), whole=True):
            pass
        end = self._end
        if os.pread(self._fd, len(TRAILER), end) == TRAILER:
            if noted is not None and noted > end:
                return [f"{self.lock_path} records a last write ending at byte {noted}, "
                        f"after the end of the records (byte {end}): an older copy of the "
                        "file was put in its place; servers that used the file before refuse "
                        "it until they are restarted"]
            return []
        if noted is None or noted > end:
            cut = f"; its last write ended at byte {noted}" if noted else ""
            raise StoreCorrupt(f"{self.path} is damaged: its records stop in the middle of a "
                               f"record at byte {end} (cut short or written over{cut})")
        return [f"a write interrupted by a crash follows the last record, at byte {end}: it "
                "was never acknowledged, and the next write blanks it"]

    def _audit_records(self, progress: Progress | None) -> StoreStats:
        """Without the lock: parse each record before ``_end`` in full."""
        end, start = self._end, len(self._header)
        live: dict[int, int] = {}
        last_id, count, shown = self.last_id, 0, 0
        for offset, line in self._lines(start):
            if offset >= end:
                break
            where = f"{self.path} is damaged at byte {offset}"
            records = self._parse(line, offset)
            if records is None or offset + len(line) > end:
                raise StoreCorrupt(f"{where}: not a record of the store")
            if line.startswith(b",") != (count > 0):
                raise StoreCorrupt(f"{where}: a comma is {'missing' if count else 'extra'} "
                                   "before the record (the file is not valid JSON)")
            for sid, loc, keys in records:
                try:
                    doc = json.loads(line[loc[0] - offset:loc[0] - offset + loc[1]],
                                     parse_constant=_not_json)
                except ValueError as exc:  # UnicodeDecodeError included
                    raise StoreCorrupt(f"{where}: the record of service {sid} is not JSON "
                                       f"({exc})") from None
                if keys is None:
                    live.pop(sid, None)
                elif sid == STORE_DOC:  # the store's own document: request records
                    if not isinstance(doc, dict) or not isinstance(doc.get(REQUESTS), dict):
                        raise StoreCorrupt(f"{where}: the store's own record (id 0) is not "
                                           "one")
                    live[sid] = loc[1]
                else:
                    got = doc.get("service_id") if isinstance(doc, dict) else None
                    if isinstance(got, bool) or got != sid:
                        raise StoreCorrupt(f"{where}: the record filed under service {sid} is "
                                           "not that service's document")
                    held = index_keys(doc)
                    expected = (*(v if isinstance(v, str) else None for v in held[:3]),
                                held[3])
                    if keys != expected:
                        raise StoreCorrupt(f"{where}: the record of service {sid} is indexed "
                                           "under other keys than it holds (customer_id, "
                                           "contact_key, due, request keys)")
                    live[sid] = loc[1]
                last_id, count = max(last_id, sid), count + 1
            if progress is not None and offset - shown >= 1 << 20:
                progress(offset, end)
                shown = offset
        if progress is not None:
            progress(end, end)
        services = len(live) - (STORE_DOC in live)
        return StoreStats(services, end, max(0, end - packed_size(live.items(), last_id)))


class Rewrite:
    """A data file being written by a compaction, under a temporary name: the live
    records first (:meth:`add`, written outside the store's lock), then the records
    appended to the store meanwhile (:meth:`add` again, the last of them under the
    exclusive lock), then the trailer (:meth:`finish`)."""

    def __init__(self, path: str, last_id: int, pause: Callable[[], None]):
        self.path = path
        self.last_id = last_id
        self.pause = pause  # called between writes of the bulk (see LogStore.compact)
        self.header = _new_header(last_id)
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreFailure(f"cannot write {path}: {exc.strerror}") from None
        self.ino = os.fstat(self.fd).st_ino
        self.file_id = bytes.fromhex(json.loads(
            self.header[len(HEADER_START):-len(HEADER_END)])["1"]["file"])
        self.end = len(self.header)
        self.count = 0
        self.cap = 0
        self._parts: list[bytes] = [self.header]
        self._buffered = len(self.header)
        self._written = 0  # bytes of the file written so far (buffered ones follow)

    def add(self, sid: int, body: bytes) -> Location:
        """Append one record; returns its location in the new file."""
        prefix = b'%s"%d": ' % (b"," if self.count else b"", sid)
        self._parts += (prefix, body, b"\n")
        loc = (self.end + len(prefix), len(body))
        self.end += len(prefix) + len(body) + 1
        self._buffered += len(prefix) + len(body) + 1
        self.count += 1
        if self._buffered >= 1 << 20:
            self.flush()
        return loc

    def flush(self) -> None:
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts, self._buffered = [], 0
        try:
            written = 0
            while written < len(data):
                written += os.pwrite(self.fd, data[written:], self._written + written)
        except OSError as exc:
            raise StoreFailure(f"cannot write {self.path}: {exc.strerror}") from None
        self._written += len(data)

    def reserve(self) -> None:
        """After the bulk of the records: the padding that follows them (see
        PAD_MIN), written and flushed to disk now, outside the store's lock, so that
        installing the file later flushes only what was added since."""
        self.flush()
        pad = max(PAD_MIN, self.end // 8)
        self.cap = self.end + len(TRAILER) + pad
        self._pad(self.end, self.cap)
        self.sync()

    def _pad(self, start: int, stop: int) -> None:
        blank = _padding(min(1 << 20, stop - start))
        try:
            at = start
            while at < stop:
                at += os.pwrite(self.fd, blank[:stop - at], at)
                self.pause()
        except OSError as exc:
            raise StoreFailure(f"cannot write {self.path}: {exc.strerror}") from None

    def sync(self) -> None:
        try:
            blocking(os.fdatasync, self.fd)
        except OSError as exc:
            raise StoreFailure(f"cannot flush {self.path}: {exc.strerror}") from None

    def read(self, size: int, offset: int) -> bytes:
        self.flush()
        return os.pread(self.fd, size, offset)

    def finish(self) -> None:
        """The trailer after the last record, and everything flushed to disk."""
        self._parts.append(TRAILER)
        self._buffered += len(TRAILER)
        self.flush()
        if self.end + len(TRAILER) > self.cap:  # more was added than the padding held
            self.cap = self.end + len(TRAILER) + max(PAD_MIN, self.end // 8)
            self._pad(self.end + len(TRAILER), self.cap)
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise StoreFailure(f"cannot flush {self.path}: {exc.strerror}") from None

    def abandon(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.path)
        except OSError:
            pass


class _Reader:
    """Reads records through its own descriptor: a compaction that replaces the
    file leaves this one, with the records it had, to the reader."""

    def __init__(self, fd: int, log: LogFile):
        self._fd, self._log = fd, log

    def read(self, loc: Location) -> dict[str, Any]:
        try:
            return decode(os.pread(self._fd, loc[1], loc[0]))
        except ValueError:  # the file was changed in place, by something else
            raise self._log._replaced("was changed other than by appending") from None

    def read_raw(self, loc: Location) -> bytes:
        raw = os.pread(self._fd, loc[1], loc[0])
        if len(raw) != loc[1]:
            raise self._log._replaced("was changed other than by appending")
        return raw

    def read_at(self, size: int, offset: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _new_header(last_id: int, file_id: str | None = None) -> bytes:
    """The first line of a data file: its format, the highest id handed out, and a
    random id of its own, which names it in its index checkpoint (a compaction
    writes a new file, with a new id)."""
    meta = json.dumps({"1": {"format": FORMAT, "last_service_id": last_id,
                             "file": file_id or secrets.token_hex(16)}})
    return HEADER_START + meta.encode() + HEADER_END


def packed_size(rows: Iterable[tuple[int, int]], last_id: int) -> int:
    """The bytes of records (header included) of a data file holding just ``rows``
    (service id, length of its document), as a compaction writes it: each record is
    ``,"<id>": <document>`` and a newline, the first without the comma."""
    size, count = len(_new_header(last_id, "0" * 32)), 0
    for sid, length in rows:
        size += len(str(sid)) + 6 + length
        count += 1
    return size - 1 if count else size


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


class _FileImage:
    """The first ``end`` bytes of a data file, through a descriptor of its own: the
    records as they were when the image was taken."""

    def __init__(self, fd: int, end: int, source: str):
        self._fd, self.end, self.source = fd, end, source

    def save(self, dest: str, overwrite: bool = False, progress: Progress | None = None
             ) -> StoreStats:
        """Write the records and a trailer to ``dest``, verified (see
        :func:`write_copy`); returns the figures of the copy."""
        end = self.end

        def fill(tmp: str) -> StoreStats:
            with open(tmp, "xb") as out:
                done = 0
                while done < end:
                    chunk = os.pread(self._fd, min(1 << 20, end - done), done)
                    if not chunk:
                        raise StoreFailure(f"the data file ended at byte {done}, before the "
                                           f"end of its records (byte {end})")
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, 2 * end)  # then as much again to verify it
                out.write(TRAILER)  # no padding: a server that starts on it adds some
                out.flush()
                os.fsync(out.fileno())
            return verify_copy(tmp, None if progress is None
                               else lambda done, total: progress(end + done, end + total),
                               self.source)

        return write_copy(dest, overwrite, fill)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def verify_copy(path: str, progress: Progress | None = None, source: str | None = None
                ) -> StoreStats:
    """Check a copy before it is put in place (:meth:`LogFile.audit`): what a
    backup puts at its destination is a store ``contextsvc check`` accepts. A copy
    of a data file's bytes is damaged where the file is: ``source`` names it."""
    engine = LogFile(path)
    try:
        return engine.audit(progress)[0]
    except StoreCorrupt as exc:
        raise StoreCorrupt(exc.message.replace(path, source or "the copy")
                           + " (no copy was kept)") from None
    finally:
        engine.close()


def write_copy(dest: str, overwrite: bool, fill: Callable[[str], T]) -> T:
    """Make the file ``dest`` whole or not at all: ``fill(tmp)`` writes it, flushed,
    under a temporary name beside ``dest``, which is then renamed to ``dest`` and
    the directory flushed. When anything fails or interrupts it, the temporary
    file is removed and ``dest`` is as it was. Without ``overwrite`` an existing
    ``dest`` raises ``FileExistsError`` (also one that appears meanwhile: the
    rename does not replace it). Returns what ``fill`` returns."""
    dest = os.path.abspath(dest)
    if not overwrite and os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dest)
    folder, name = os.path.split(dest)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        result = fill(tmp)
        if overwrite:
            os.replace(tmp, dest)
        else:
            _place(tmp, dest)
        _fsync_dir(dest)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise StoreFailure(f"cannot write {dest}: {exc.strerror}"
                               + (" (disk full)" if exc.errno == errno.ENOSPC else "")
                               ) from None
        raise
    return result


def _place(tmp: str, dest: str) -> None:
    """Rename ``tmp`` to ``dest`` unless ``dest`` exists, in one step (a hard link
    fails on an existing name; where links are not supported, check, then rename)."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dest) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(dest):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dest) from None
        os.replace(tmp, dest)
        return
    os.unlink(tmp)
