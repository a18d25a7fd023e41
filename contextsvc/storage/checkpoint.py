"""The index checkpoint of a data file, ``<path>.idx``: where every live service's
newest record is and what it is indexed under, as of some point of the file, so
that a process starting (or finding the file compacted) reads only the records
appended after that point instead of the whole file.

It holds sorted fixed-width arrays (service id -> offset and length; 64-bit hash of
``customer_id``, of ``contact_key`` for services without a customer and of each
idempotency key -> service id; due moment -> service id), which every process maps
read-only: the page cache holds one copy for all of gunicorn's workers, and a
process keeps Python objects only for what was written after the checkpoint (see
:class:`contextsvc.storage.log.LogStore`). A lookup by hash is checked against the
record it finds (hashes may collide).

A checkpoint is only ever a shortcut; the data file stays the one source of truth:

* it is written whole under a temporary name and renamed into place, so a process
  sees an old one or a new one, never half of one; one torn by a crash (or damaged
  later) fails its checksums and is ignored;
* it names the data file it describes (the random ``file`` id of the file's header,
  its inode, its header) and holds a fingerprint of that file's bytes up to the
  point it covers (the last 4 KiB before that point, and blocks spread over the
  rest): a checkpoint of another file, of an older copy put in the file's place,
  or of a file changed other than by appending is refused;
* a refused or missing checkpoint costs one read of the whole file, as before
  checkpoints existed, and the next one written replaces it.
"""

from __future__ import annotations

import array
import bisect
import hashlib
import json
import mmap
import os
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .records import Keys, Location

MAGIC = b"CSVCIDX\x01"
# magic, file id, then: inode, header length, end, records before the end, last id,
# live bytes, rows, customer / anonymous / due / idempotency-key entries, the store's
# own document (offset, length, whether it holds keys), length of the extra JSON,
# length and CRC-32 of the body; the fingerprint of the data file; CRC-32 of all this
_HEAD = struct.Struct("<8s16s" + "Q" * 17 + "32sQ")
BLOCK = 4096   # bytes of the data file in each block of the fingerprint
BLOCKS = 16    # blocks in the fingerprint, the last one ending where the checkpoint does

CUSTOMER, ANONYMOUS, KEYS = 1, 2, 4  # bits of a row's kind
NO_DUE, ODD_DUE = 0, 1  # due codes that are not moments: none, not a normalized timestamp
_MOMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\Z")

Pause = Callable[[], None]  # called now and then by long loops: lets the process's requests run


def key_hash(text: str) -> int:
    """The 64-bit hash a key is filed under: the same in every process (Python's own
    ``hash`` of a string is not). Lone surrogates (from JSON escapes) are kept."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def due_code(due: str | None) -> int:
    """``due`` as a number that sorts as the text does: a normalized timestamp
    (``YYYY-MM-DDTHH:MM:SS.mmmZ``, all that the domain writes) keeps its digits;
    anything else is ODD_DUE and kept as text beside the arrays."""
    if due is None:
        return NO_DUE
    if not _MOMENT.match(due):
        return ODD_DUE
    return 2 + int(due[0:4] + due[5:7] + due[8:10] + due[11:13] + due[14:16] + due[17:19]
                   + due[20:23])


def due_text(code: int) -> str:
    d = f"{code - 2:017d}"
    return f"{d[0:4]}-{d[4:6]}-{d[6:8]}T{d[8:10]}:{d[10:12]}:{d[12:14]}.{d[14:17]}Z"


def kind_of(keys: Keys) -> tuple[int, int]:
    """The kind bits and key hash of a row with ``keys`` (see LogStore._apply: a
    service with a customer is filed under it, else under its contact key)."""
    customer_id, contact_key, _due, requests = keys
    kind = KEYS if requests else 0
    if customer_id is not None:
        return kind | CUSTOMER, key_hash(customer_id)
    if contact_key is not None:
        return kind | ANONYMOUS, key_hash(contact_key)
    return kind, 0


# ---------------------------------------------------------------------- the content
def _q() -> array.array:
    return array.array("Q")


@dataclass
class Tables:
    """A checkpoint's content, in this process's memory (being built)."""

    sids: array.array = field(default_factory=_q)    # live services, in id order...
    offs: array.array = field(default_factory=_q)    # ...where their record is,
    lens: array.array = field(default_factory=lambda: array.array("I"))  # its length,
    kinds: array.array = field(default_factory=lambda: array.array("B"))  # kind bits,
    khash: array.array = field(default_factory=_q)   # hash it is filed under,
    dues: array.array = field(default_factory=_q)    # and its due code
    cust_h: array.array = field(default_factory=_q)  # (hash of customer_id, id), sorted
    cust_s: array.array = field(default_factory=_q)
    anon_h: array.array = field(default_factory=_q)  # (hash of contact_key, id), sorted
    anon_s: array.array = field(default_factory=_q)
    due_k: array.array = field(default_factory=_q)   # (due code, id), sorted; moments only
    due_s: array.array = field(default_factory=_q)
    keys_h: array.array = field(default_factory=_q)  # (hash of idempotency key, id), sorted
    keys_s: array.array = field(default_factory=_q)
    odd: dict[int, str] = field(default_factory=dict)  # id -> due that is not a moment
    own: Location | None = None  # the store's own document (id 0)
    own_keys: bool = False       # whether it holds idempotency keys (filed under id 0)
    live: int = 0                # bytes of the live services' records


_COLUMNS = ("sids", "offs", "khash", "dues", "lens", "kinds", "cust_h", "cust_s", "anon_h",
            "anon_s", "due_k", "due_s", "keys_h", "keys_s")
_CODES = {"lens": "I", "kinds": "B"}


def _section_sizes(rows: int, cust: int, anon: int, due: int, keys: int) -> list[int]:
    count = {"cust_h": cust, "cust_s": cust, "anon_h": anon, "anon_s": anon,
             "due_k": due, "due_s": due, "keys_h": keys, "keys_s": keys}
    sizes = []
    for name in _COLUMNS:
        width = array.array(_CODES.get(name, "Q")).itemsize
        sizes.append(-(-count.get(name, rows) * width // 8) * 8)  # each starts 8-aligned
    return sizes


@dataclass(frozen=True)
class Point:
    """What a checkpoint describes: a data file up to ``end``."""

    file_id: bytes     # the random id in the data file's header (zeros: none)
    ino: int
    header_len: int
    end: int           # offset of the first record after the checkpoint (or the trailer)
    count: int         # records before ``end`` (the next one starts with a comma if any)
    last_id: int       # the highest service id before ``end`` (header included)
    fingerprint: bytes


def fingerprint(read: Callable[[int, int], bytes], header_len: int, end: int) -> bytes:
    """A digest of the data file's header and of BLOCKS blocks of its records up to
    ``end``: the last one just before ``end``, the others spread evenly."""
    digest = hashlib.blake2b(digest_size=32)
    digest.update(read(header_len, 0))
    span = end - header_len
    starts = {max(header_len, end - BLOCK)}
    if span > BLOCK:
        step = span // BLOCKS
        starts.update(header_len + n * step for n in range(BLOCKS - 1))
    for start in sorted(starts):
        digest.update(read(min(BLOCK, end - start), start))
    return digest.digest()


def write(path: str, tables: Tables, point: Point, pause: Pause | None = None) -> None:
    """Write a checkpoint to ``path``: a temporary name, which the caller renames to
    ``<data file>.idx`` (so that a process sees an old checkpoint or a new one,
    never half of one). Not flushed to disk: a checkpoint torn by a crash fails its
    checksum and is ignored, and the data file it describes is flushed by the
    writes themselves. A failure removes what was written."""
    extra = json.dumps({"odd_due": sorted(tables.odd.items())}).encode() if tables.odd else b""
    columns = [getattr(tables, name) for name in _COLUMNS]
    sizes = _section_sizes(len(tables.sids), len(tables.cust_h), len(tables.anon_h),
                           len(tables.due_k), len(tables.keys_h))
    crc, body_len = 0, 0
    own = tables.own or (0, 0)
    try:
        with open(path, "wb") as out:
            out.write(b"\0" * _HEAD.size)  # the header, once the body's checksum is known
            for column, size in zip(columns, sizes, strict=True):
                data = memoryview(column).cast("B")
                for at in range(0, len(data), 1 << 22):
                    piece = data[at:at + (1 << 22)]
                    out.write(piece)
                    crc = zlib.crc32(piece, crc)
                    if pause is not None:
                        pause()
                pad = b"\0" * (size - len(data))
                out.write(pad)
                crc = zlib.crc32(pad, crc)
                body_len += size
            out.write(extra)
            crc = zlib.crc32(extra, crc)
            body_len += len(extra)
            fields = [MAGIC, point.file_id, point.ino, point.header_len, point.end, point.count,
                      point.last_id, tables.live, len(tables.sids), len(tables.cust_h),
                      len(tables.anon_h), len(tables.due_k), len(tables.keys_h), own[0], own[1],
                      int(tables.own_keys), len(extra), body_len, crc, point.fingerprint]
            head = _HEAD.pack(*fields, 0)
            head = head[:-8] + struct.pack("<Q", zlib.crc32(head[:-8]))
            out.seek(0)
            out.write(head)
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


class Checkpoint:
    """A checkpoint file mapped read-only. Its arrays are memoryviews of the mapping,
    with the names of :class:`Tables`; pages are shared with every other process
    that maps the same file."""

    def __init__(self, path: str, fd: int, size: int, head: tuple[Any, ...]):
        (_magic, file_id, ino, header_len, end, count, last_id, live, rows, cust, anon, due,
         keys, own_off, own_len, own_keys, extra_len, body_len, _crc, fp, _hcrc) = head
        self.path = path
        self.point = Point(file_id, ino, header_len, end, count, last_id, fp)
        self.live = live
        self.own: Location | None = (own_off, own_len) if own_len else None
        self.own_keys = bool(own_keys)
        self._map = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
        view = memoryview(self._map) if self._map is not None else memoryview(b"")
        at = _HEAD.size
        count_of = {"cust_h": cust, "cust_s": cust, "anon_h": anon, "anon_s": anon,
                    "due_k": due, "due_s": due, "keys_h": keys, "keys_s": keys}
        for name, length in zip(_COLUMNS, _section_sizes(rows, cust, anon, due, keys),
                                strict=True):
            n = count_of.get(name, rows)
            code = _CODES.get(name, "Q")
            width = array.array(code).itemsize
            setattr(self, name, view[at:at + n * width].cast(code))
            at += length
        self.odd: dict[int, str] = {}
        if extra_len:
            self.odd = {int(sid): due for sid, due in
                        json.loads(bytes(view[at:at + extra_len]))["odd_due"]}
        self._due_cache: tuple[str, list[int]] | None = None

    @classmethod
    def load(cls, path: str, verify: bool = True) -> Checkpoint | None:
        """The checkpoint at ``path``, its checksums verified; None when there is none
        or it is not whole (it is then ignored, and replaced by the next one).
        ``verify=False`` skips reading the body, for one this process just wrote."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            size = os.fstat(fd).st_size
            raw = os.pread(fd, _HEAD.size, 0)
            if len(raw) != _HEAD.size or not raw.startswith(MAGIC):
                return None
            head = _HEAD.unpack(raw)
            if zlib.crc32(raw[:-8]) != head[-1]:
                return None
            body_len, crc = head[17], head[18]
            if size != _HEAD.size + body_len:
                return None
            sizes = _section_sizes(*head[8:13])
            if sum(sizes) + head[16] != body_len:
                return None
            seen, at = crc, size
            if verify:
                seen, at = 0, _HEAD.size
            while at < size:
                chunk = os.pread(fd, min(1 << 23, size - at), at)
                if not chunk:
                    return None
                seen = zlib.crc32(chunk, seen)
                at += len(chunk)
            if seen != crc:
                return None
            try:
                return cls(path, fd, size, head)
            except (ValueError, KeyError, TypeError):  # the extra JSON: cannot be, CRC aside
                return None
        except OSError:
            return None
        finally:
            os.close(fd)

    def describes(self, read: Callable[[int, int], bytes], file_id: bytes, ino: int,
                  header_len: int, limit: int) -> bool:
        """Whether this is a checkpoint of the data file that ``read(size, offset)``
        reads (with that id, inode and header) as it is now, up to a point at or
        before ``limit``, on a record's boundary."""
        point = self.point
        if (point.file_id, point.ino, point.header_len) != (file_id, ino, header_len):
            return False
        if not header_len <= point.end <= limit:
            return False
        if point.end > header_len and read(1, point.end - 1) != b"\n":
            return False
        after = read(24, point.end)
        if not after.startswith(b"}}\n"):  # else the next record begins here
            if not re.match(rb',?"(0|[1-9][0-9]{0,15})": ', after):
                return False
            if after.startswith(b",") != (point.count > 0):
                return False
        return fingerprint(read, header_len, point.end) == point.fingerprint

    # ------------------------------------------------------------------ lookups
    def find(self, sid: int) -> int:
        """The row of service ``sid``, or -1."""
        at = bisect.bisect_left(self.sids, sid)
        return at if at < len(self.sids) and self.sids[at] == sid else -1

    def location(self, sid: int) -> Location | None:
        at = self.find(sid)
        return None if at < 0 else (self.offs[at], self.lens[at])

    def customer(self, customer_id: str) -> Sequence[int]:
        return _lookup(self.cust_h, self.cust_s, key_hash(customer_id))

    def anonymous(self, contact_key: str) -> Sequence[int]:
        return _lookup(self.anon_h, self.anon_s, key_hash(contact_key))

    def requests(self, name: str) -> Sequence[int]:
        return _lookup(self.keys_h, self.keys_s, key_hash(name))

    def due_by(self, due_by: str) -> list[int]:
        """The ids of the services due at or before ``due_by``, in id order."""
        if self._due_cache is not None and self._due_cache[0] == due_by:
            return self._due_cache[1]
        code = due_code(due_by)
        if code > ODD_DUE:
            upto = bisect.bisect_right(self.due_k, code)
        else:  # not a moment: compare as text, as the codes sort
            lo, hi = 0, len(self.due_k)
            while lo < hi:
                mid = (lo + hi) // 2
                if due_text(self.due_k[mid]) <= due_by:
                    lo = mid + 1
                else:
                    hi = mid
            upto = lo
        sids = sorted([*self.due_s[:upto], *(s for s, d in self.odd.items() if d <= due_by)])
        self._due_cache = (due_by, sids)
        return sids

    def close(self) -> None:
        """Let the mapping go (it is unmapped once nothing uses its arrays)."""
        self._map = None


def _lookup(hashes: Sequence[int], sids: Sequence[int], h: int) -> Sequence[int]:
    lo = bisect.bisect_left(hashes, h)
    hi = bisect.bisect_right(hashes, h, lo)
    return sids[lo:hi]


# ---------------------------------------------------------------------- building
Change = tuple[int, "Location | None", "Keys | None"]  # (id, location, keys; None: deleted)


def merge(base: Checkpoint | Tables | None, changes: Sequence[Change],
          own: tuple[Location | None, Sequence[str]] | None, pause: Pause | None = None
          ) -> Tables:
    """The content of ``base`` with ``changes`` applied: ``changes`` holds, in id
    order, every service written since the base (its newest location and keys, or
    None when it was deleted); ``own`` the store's own document when it was
    written since (its location, or None, and the idempotency keys it holds)."""
    base = base if base is not None else Tables()
    out = Tables()
    pause = pause or (lambda: None)
    # rows: the base's, in runs between the changed ids, with the changes in between
    drop_cust, drop_anon, drop_due, add_cust, add_anon, add_due, add_keys = ([] for _ in range(7))
    drop_keys: set[int] = set()
    columns = ("sids", "offs", "lens", "kinds", "khash", "dues")
    base_cols = [getattr(base, name) for name in columns]
    out_cols = [getattr(out, name) for name in columns]
    odd = dict(base.odd)
    at = 0
    for n, (sid, loc, keys) in enumerate(changes):
        found = bisect.bisect_left(base.sids, sid, at)
        for src, dst in zip(base_cols, out_cols, strict=True):
            dst.frombytes(_raw(src[at:found]))
        at = found
        if found < len(base.sids) and base.sids[found] == sid:  # replaced or deleted
            kind, h, due = base.kinds[found], base.khash[found], base.dues[found]
            if kind & CUSTOMER:
                drop_cust.append((h, sid))
            elif kind & ANONYMOUS:
                drop_anon.append((h, sid))
            if kind & KEYS:
                drop_keys.add(sid)
            if due > ODD_DUE:
                drop_due.append((due, sid))
            odd.pop(sid, None)
            at += 1
        if loc is not None and keys is not None:
            kind, h = kind_of(keys)
            due = due_code(keys[2])
            for dst, value in zip(out_cols, (sid, loc[0], loc[1], kind, h, due), strict=True):
                dst.append(value)
            if kind & CUSTOMER:
                add_cust.append((h, sid))
            elif kind & ANONYMOUS:
                add_anon.append((h, sid))
            if due > ODD_DUE:
                add_due.append((due, sid))
            elif due == ODD_DUE:
                odd[sid] = keys[2]  # type: ignore[assignment]
            add_keys.extend((key_hash(name), sid) for name in keys[3])
        if n % 4096 == 4095:
            pause()
    for src, dst in zip(base_cols, out_cols, strict=True):
        dst.frombytes(_raw(src[at:]))
    pause()
    out.cust_h, out.cust_s = _merge_pairs(base.cust_h, base.cust_s, drop_cust, add_cust)
    out.anon_h, out.anon_s = _merge_pairs(base.anon_h, base.anon_s, drop_anon, add_anon)
    out.due_k, out.due_s = _merge_pairs(base.due_k, base.due_s, drop_due, add_due)
    pause()
    out.own, out.own_keys = base.own, base.own_keys
    if own is not None:
        if base.own_keys:
            drop_keys.add(0)
        out.own, out.own_keys = own[0], bool(own[1])
        add_keys.extend((key_hash(name), 0) for name in own[1])
    keys_h, keys_s = base.keys_h, base.keys_s
    if drop_keys:  # the keys a row held are not kept per row: filter them out
        kept = [(h, s) for h, s in zip(keys_h, keys_s, strict=True) if s not in drop_keys]
        keys_h = array.array("Q", (h for h, _ in kept))
        keys_s = array.array("Q", (s for _, s in kept))
    out.keys_h, out.keys_s = _merge_pairs(keys_h, keys_s, [], add_keys)
    out.odd = odd
    out.live = sum(out.lens)
    return out


def _merge_pairs(hashes: Sequence[int], sids: Sequence[int], drop: list[tuple[int, int]],
                 add: list[tuple[int, int]]) -> tuple[array.array, array.array]:
    """The sorted pairs (hashes[i], sids[i]) without ``drop`` and with ``add``: runs
    of the old arrays are copied whole, so the cost is in the changes, not the size."""
    out_h, out_s = array.array("Q"), array.array("Q")
    gone = sorted(p for p in (_position(hashes, sids, h, s) for h, s in drop) if p is not None)
    at, g = 0, 0
    for h, s in sorted(add) + [(None, None)]:
        upto = len(hashes) if h is None else _insertion(hashes, sids, h, s)
        while g < len(gone) and gone[g] < upto:
            out_h.frombytes(_raw(hashes[at:gone[g]]))
            out_s.frombytes(_raw(sids[at:gone[g]]))
            at, g = gone[g] + 1, g + 1
        out_h.frombytes(_raw(hashes[at:upto]))
        out_s.frombytes(_raw(sids[at:upto]))
        at = upto
        if h is not None:
            out_h.append(h)
            out_s.append(s)
    return out_h, out_s


def _raw(part: Any) -> memoryview:
    """The bytes of a slice of an array or of a typed memoryview (frombytes wants
    them untyped)."""
    return memoryview(part).cast("B")


def _insertion(hashes: Sequence[int], sids: Sequence[int], h: int, s: int) -> int:
    lo = bisect.bisect_left(hashes, h)
    hi = bisect.bisect_right(hashes, h, lo)
    return bisect.bisect_left(sids, s, lo, hi)


def _position(hashes: Sequence[int], sids: Sequence[int], h: int, s: int) -> int | None:
    at = _insertion(hashes, sids, h, s)
    return at if at < len(hashes) and hashes[at] == h and sids[at] == s else None
