"""Export and import of whole services (API.md 7.1 and 7.2): which services an export
selects, the form it writes them in, and the way back from that form to stored
documents. The HTTP export stream and the ``contextsvc export``/``import`` commands
both use this module, so that they select, write and read alike.

**The form.** One JSON value per service: its id alone, or the whole service in the
representation of API.md 2.3, as ``GET /services/{sid}`` shows it with every flag
on (its fields, ``expiration_time``/``auto_complete_at`` when it has them, its
attached data, and ``active_states``, ``completed_states``, ``active_tasks``,
``completed_tasks``, with all their attached data). Import reads exactly that form
back, losslessly: export, import into an empty store of the same configuration,
and export again give the same bytes.

**Selection** (:class:`Selector`) is judged on each service as time makes it when
it is read (:mod:`.timed`): an expired service is never exported, one past its
auto-complete deadline is completed at that deadline.

**Streaming.** :func:`lines` walks the store in id order with ``scan(after, limit)``,
one unit of work per batch of :data:`BATCH` services: each service is read as it was
when its batch was chosen (whole, never torn), writes go on between batches, and
memory holds one batch at a time whatever the size of the store.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import pickle
import re
import signal
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, NamedTuple, TypeVar

from marshmallow import fields as mfields
from marshmallow import validate

from ..errors import Conflict, ContextError, Invalid
from ..storage.base import ON_CONFLICT, ServiceStore
from ..storage.records import Encoded, encoded
from . import lifecycle, timeutil
from .events import EVENT_FIELDS, SCHEMAS
from .fields import MAX_TYPE_LENGTH, IntOrString, Timestamp
from .jsontext import finite_float, no_constant
from .lifecycle import Policy
from .model import COMMON, KINDS, RESERVED, STATE, TASK, Doc, Kind, is_active, render_service
from .timed import Settler

T = TypeVar("T")

EVENTS = ("any", "started", "completed")  # filter_events / --events
STATES = ("any", "active", "inactive")    # filter_state / --state
BATCH = 500  # services per unit of work while exporting
# every nested array on: the whole service
WHOLE = {"active_states": True, "completed_states": True, "active_tasks": True,
         "completed_tasks": True, "extensions": None}

# One JSON text per value, compact and ASCII (lone surrogates from JSON escapes
# survive, as in the store). Documents come from the store: never circular.
_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"),
                           check_circular=False).encode


# ================================================================== selecting
@dataclass(frozen=True)
class Selector:
    """Which services an export selects (the reference product's filters).

    ``time_from``/``time_to``: normalized timestamps, on or after / strictly before
    (as the query parameters of API.md 3.4); None leaves that side open.
    ``events``: ``any`` (a start or a completion in the range), ``started``,
    ``completed``. ``state``: ``any``, ``active``, ``inactive`` (completed), as the
    service is when it is read, whatever the range.
    """

    time_from: str | None = None
    time_to: str | None = None
    events: str = "any"
    state: str = "any"

    def __post_init__(self) -> None:
        if self.events not in EVENTS or self.state not in STATES:
            raise ValueError(f"events: one of {EVENTS}; state: one of {STATES}")

    def _in_range(self, stamp: str) -> bool:
        return ((self.time_from is None or stamp >= self.time_from)
                and (self.time_to is None or stamp < self.time_to))

    def selects(self, doc: Doc) -> bool:
        """Whether the service ``doc`` (as time makes it now) is exported."""
        if self.state != "any" and (self.state == "active") != is_active(doc):
            return False
        if self.events != "completed" and self._in_range(doc["started"]["timestamp"]):
            return True
        return (self.events != "started" and "completed" in doc
                and self._in_range(doc["completed"]["timestamp"]))


def whole(doc: Doc) -> Doc:
    """The whole service: the representation with every nested array."""
    return render_service(doc, WHOLE)


def lines(store: ServiceStore, selector: Selector, content: bool = True,
          batch: int | None = None, jobs: int = 1) -> Iterator[bytes | None]:
    """For each service of ``store`` in id order: its JSON text (the whole service,
    or with ``content`` False its id) when ``selector`` selects it, else None (a
    progress bar counts those too). ``store`` is a :class:`~.timed.TimedStore`, so
    that what is read is what time makes it (expired services read as None).

    Each batch is one unit of work; its documents are read after the store is free
    again, each as it was when the batch was chosen.

    ``jobs`` > 1 (the export command): the documents are read here, in their stored
    form, and made into lines by ``jobs`` processes at once (see :class:`_InOrder`:
    never in a server's worker)."""
    batch = batch or BATCH
    if jobs > 1:
        with _InOrder(functools.partial(_lines_of, selector, content), jobs) as workers:
            for block in workers.map(_stored(store, batch)):
                yield from block
        return
    after = 0
    while True:
        with store.scan(after=after, limit=batch) as selection:
            rows = selection.rows
            for _, loc in rows:
                yield _line(selection.read(loc), selector, content)
        if len(rows) < batch:
            return
        after = rows[-1][0]


def _line(doc: Doc | None, selector: Selector, content: bool) -> bytes | None:
    if doc is None or not selector.selects(doc):
        return None
    if content:
        return _encode(whole(doc)).encode("ascii")
    return str(doc["service_id"]).encode("ascii")


def _stored(store: ServiceStore, batch: int, size: int = 1 << 20
            ) -> Iterator[tuple[Settler, list[bytes]]]:
    """The documents of :func:`lines` in their stored form, in blocks of about
    ``size`` bytes at most, each with what reads it as its batch reads it."""
    after = 0
    while True:
        with store.scan(after=after, limit=batch) as selection:
            rows = selection.rows
            settler = selection.settler()  # type: ignore[attr-defined]
            block: list[bytes] = []
            held = 0
            for _, loc in rows:
                block.append(selection.read_raw(loc))
                held += len(block[-1])
                if held >= size:
                    yield settler, block
                    block, held = [], 0
            if block:
                yield settler, block
        if len(rows) < batch:
            return
        after = rows[-1][0]


def _lines_of(selector: Selector, content: bool, settler: Settler, block: list[bytes]
              ) -> list[bytes | None]:
    return [_line(settler(raw), selector, content) for raw in block]


def _ignore_interrupts() -> None:
    # Ctrl-C reaches every process of the terminal's group; the command's own
    # process decides what it means, its workers just end
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _InOrder:
    """``function`` applied to items, the results in order: one item in ``jobs``
    in this process, the others in ``jobs - 1`` worker processes (started at the
    second item: a single item is done here alone), which work on theirs while
    this process reads the next ones, does its own and takes the results.

    For the commands only: the workers are forked, which is safe in a process that
    has no other thread (a command; never a server's worker), and a worker only
    computes: it never touches the store or its files."""

    AHEAD = 2  # items queued per process, so that no worker waits for this one

    def __init__(self, function: Callable[..., T], jobs: int):
        self.function, self.jobs = function, max(1, jobs)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _InOrder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def map(self, items: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
        pending: deque[Future[Any] | tuple[Any, ...]] = deque()
        for i, item in enumerate(items):
            if i % self.jobs:
                pending.append(self._workers().submit(self.function, *item))
            else:
                pending.append(item)  # done here when its turn comes
            while len(pending) > self.AHEAD * self.jobs:
                yield self._result(pending.popleft())
        while pending:
            yield self._result(pending.popleft())

    def _result(self, item: Future[Any] | tuple[Any, ...]) -> Any:
        if isinstance(item, Future):
            try:
                return item.result()
            except BrokenProcessPool:  # killed (out of memory, by hand)
                raise ContextError("a worker process of the command stopped before "
                                   "its work was done") from None
        return self.function(*item)

    def _workers(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.jobs - 1, multiprocessing.get_context("fork"),
                                             initializer=_ignore_interrupts)
        return self._pool


def processors() -> int:
    """How many processes a command may work with: one per processor it may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ================================================================== reading back
class _Bad(ValueError):
    """A value that is not what the representation says; ``where`` is its path."""

    def __init__(self, message: str, where: str = ""):
        super().__init__(message)
        self.message, self.where = message, where

    def inside(self, where: str) -> _Bad:
        self.where = f"{where}.{self.where}" if self.where else where
        return self


_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z",
                        re.ASCII)


def _timestamp(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("not a timestamp (a string)")
    if _CANONICAL.fullmatch(value):  # as exported: check the date, keep it
        try:
            datetime.fromisoformat(value[:-1])
        except ValueError:
            raise _Bad(f"{value!r} is not a valid date/time") from None
        return value
    try:
        return timeutil.normalize(value)
    except ValueError as exc:
        raise _Bad(f"{value!r}: {exc}") from None


def _int_range(fld: mfields.Field) -> tuple[int | None, int | None]:
    low = high = None
    for rule in fld.validators:
        if isinstance(rule, validate.Range):
            low, high = rule.min, rule.max
    return low, high


def _checker(fld: mfields.Field) -> Callable[[Any], Any]:
    """A fast check of one field, derived from its marshmallow declaration (the one
    description of the representation): the same values pass, and a timestamp comes
    back normalized. Import checks tens of fields per service; a marshmallow load of
    each would cost more than everything else it does."""
    if isinstance(fld, Timestamp):
        return _timestamp
    if isinstance(fld, IntOrString):
        max_length = MAX_TYPE_LENGTH

        def int_or_string(value: Any) -> Any:
            if isinstance(value, str):
                if len(value) > max_length:
                    raise _Bad(f"longer than {max_length} characters")
                return value
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Bad("not an integer or a string")
            if not -(2**63) <= value < 2**63:
                raise _Bad("outside the 64-bit integer range")
            return value
        return int_or_string
    if isinstance(fld, mfields.Integer):
        low, high = _int_range(fld)

        def integer(value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Bad("not an integer")
            if (low is not None and value < low) or (high is not None and value > high):
                raise _Bad(f"not an integer from {low} to {'any' if high is None else high}")
            return value
        return integer
    if isinstance(fld, mfields.String):
        shortest, longest = 0, None
        for rule in fld.validators:
            if isinstance(rule, validate.Length):
                shortest, longest = rule.min or 0, rule.max

        def string(value: Any) -> str:
            if not isinstance(value, str):
                raise _Bad("not a string")
            if len(value) < shortest or (longest is not None and len(value) > longest):
                raise _Bad(f"not a string of {shortest} to {longest} characters")
            return value
        return string
    raise TypeError(f"no import check for {fld!r}")


_EVENT_CHECKS = {name: _checker(SCHEMAS["SharedEvent"].fields[name]) for name in EVENT_FIELDS}


def _event(value: Any, completion: bool) -> Doc:
    if not isinstance(value, dict):
        raise _Bad("not an object (an event)")
    out = {}
    for key, item in value.items():
        check = _EVENT_CHECKS.get(key)
        if check is not None:
            if item is not None:
                try:
                    out[key] = check(item)
                except _Bad as exc:
                    raise exc.inside(key) from None
        elif key == "auto_completed" and completion and item is True:
            out[key] = True  # completed by the server (API.md 6.2)
        else:
            raise _Bad("not a field of an event", key)
    if "timestamp" not in out:
        raise _Bad("required", "timestamp")
    return out


_NESTED, _RESERVED = "nested", "reserved"


class _Shape:
    """How one kind reads back: what each key is (a field and its check, an array
    of nested resources, a reserved name); any other key is attached data."""

    def __init__(self, kind: Kind, nests: bool):
        self.kind, self.name = kind, kind.name.lower()
        roles: dict[str, Any] = dict.fromkeys(RESERVED, _RESERVED)
        declared = {**kind.own, **COMMON}
        roles.update({name: _checker(fld) for name, fld in declared.items()
                      if name not in ("started", "completed")})
        roles["started"] = lambda value: _event(value, False)
        roles["completed"] = lambda value: _event(value, True)
        if nests:
            roles.update(dict.fromkeys(kind.nested, _NESTED))
        self.roles = roles

    def read(self, rep: Any, nested: dict[str, list[Any]] | None = None
             ) -> tuple[Doc, Doc]:
        """``rep`` split into (fields, as stored; attached data); the arrays the kind
        nests go to ``nested``. Fields keep the order they come in; a field given as
        null counts as absent."""
        if not isinstance(rep, dict):
            raise _Bad(f"not an object (a {self.name})")
        doc: Doc = {}
        data: Doc = {}
        roles = self.roles
        for key, value in rep.items():
            role = roles.get(key)
            if role is None:
                data[key] = value
            elif role is _RESERVED:
                raise _Bad(f"not a field of a {self.name}, and a reserved name (not "
                           "attached data)", key)
            elif value is None:
                continue
            elif role is _NESTED:
                if not isinstance(value, list):
                    raise _Bad("not an array", key)
                nested[key] = value  # type: ignore[index]
            else:
                try:
                    doc[key] = role(value)
                except _Bad as exc:
                    raise exc.inside(key) from None
        if "started" not in doc:
            raise _Bad("required", "started")
        return doc, data


_SERVICE = _Shape(KINDS["service"], nests=True)
_STATE = _Shape(STATE, nests=False)  # a state's tasks are listed on the service
_TASK = _Shape(TASK, nests=False)


def _children(arrays: dict[str, list[Any]], kind: str, shape: _Shape, id_field: str,
              states: dict[int, str] | None = None) -> dict[int, tuple[Doc, str]]:
    """The states (or tasks) of a service, from its active and completed arrays, by
    id, each with where it was (for messages). Ids are required and unique; a
    reference to a state (``state_id`` of a task, ``previous_state_id``) must name one
    of ``states`` (for states: of the states themselves, checked by the caller)."""
    out: dict[int, tuple[Doc, str]] = {}
    for status in ("active", "completed"):
        name = f"{status}_{kind}"
        for i, rep in enumerate(arrays.get(name, ())):
            where = f"{name}[{i}]"
            try:
                child, data = shape.read(rep)
                if id_field not in child:
                    raise _Bad("required", id_field)
                if is_active(child) != (status == "active"):
                    raise _Bad("present in an active one" if status == "active"
                               else "required in a completed one", "completed")
                if child[id_field] in out:
                    raise _Bad(f"{child[id_field]} is also the id of {out[child[id_field]][1]}",
                               id_field)
                if states is not None and "state_id" in child and child["state_id"] not in states:
                    raise _Bad(f"{child['state_id']} is not a state of the service", "state_id")
            except _Bad as exc:
                raise exc.inside(where) from None
            child["data"] = data
            out[child[id_field]] = (child, where)
    return out


def _in_order(children: dict[int, tuple[Doc, str]]) -> list[Doc]:
    return [children[key][0] for key in sorted(children)]


def document(rep: Any, policy: Policy, now: datetime) -> Doc:
    """The stored document of a whole service as exported (the inverse of
    :func:`whole`), with its lifecycle (:func:`.lifecycle.restore`) and the moment
    housekeeping has work for it. Raises :class:`Invalid` saying what is wrong
    (``active_states[1].started.timestamp: ...``)."""
    try:
        arrays: dict[str, list[Any]] = {}
        doc, data = _SERVICE.read(rep, arrays)
        if "service_id" not in doc:
            raise _Bad("required", "service_id")
        if "customer_id" not in doc and "contact_key" not in doc:
            raise _Bad("customer_id or contact_key is required", "customer_id")
        shown = {key: doc.pop(key) for key in lifecycle.SHOWN if key in doc}
        if "auto_complete_at" in shown and not is_active(doc):
            raise _Bad("only an active service has one", "auto_complete_at")
        states = _children(arrays, "states", _STATE, STATE.id_field)
        for state, where in states.values():
            previous = state.get("previous_state_id")
            if previous is not None and previous not in states:
                raise _Bad(f"{previous} is not a state of the service",
                           f"{where}.previous_state_id")
        ids = {sid: where for sid, (_, where) in states.items()}
        tasks = _children(arrays, "tasks", _TASK, TASK.id_field, ids)
    except _Bad as exc:
        raise Invalid(f"{exc.where}: {exc.message}" if exc.where else exc.message) from None
    doc["data"], doc["states"], doc["tasks"] = data, _in_order(states), _in_order(tasks)
    lifecycle.restore(doc, shown, policy, now)
    lifecycle.mark_due(doc, policy)
    return doc


# ================================================================== importing
_decode = json.JSONDecoder(parse_float=finite_float, parse_constant=no_constant).decode


def parse(raw: bytes) -> Any:
    """One line of an export: a JSON value. Raises :class:`Invalid` saying why not."""
    try:
        return _decode(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Invalid(f"not UTF-8 (byte {exc.start + 1})") from None
    except RecursionError:
        raise Invalid("not JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise Invalid(f"not JSON: {exc.msg} (at character {exc.pos + 1})") from None
    except ValueError as exc:  # JSONDecodeError, non-finite numbers, over-long integers
        raise Invalid(f"not JSON: {exc}") from None


class _Reading(NamedTuple):
    """What checking a line needs; it goes with each block to the process that
    checks it."""

    policy: Policy
    now: datetime
    max_service_bytes: int


class _Block(NamedTuple):
    """A block of lines, checked: the ids of its services with their line numbers,
    in order; its first fault, (line number, message), after which nothing of the
    block was read; its service with the highest id, (line number, service); and
    its services as the store will write them, a pickled list of
    :class:`~contextsvc.storage.records.Encoded` (spooled as it is)."""

    ids: list[tuple[int, int]]
    fault: tuple[int, str] | None
    top: tuple[int, Encoded] | None
    records: bytes


def _check_block(reading: _Reading, first: int, lines: list[bytes]) -> _Block:
    """Check ``lines``, numbered from ``first``: each a whole service, within the
    store's size limit. Blank lines are passed over."""
    ids: list[tuple[int, int]] = []
    records: list[Encoded] = []
    fault = top = None
    for number, raw in enumerate(lines, first):
        if not raw.strip():
            continue
        try:
            record = encoded(document(parse(raw), reading.policy, reading.now))
        except Invalid as exc:
            fault = (number, exc.message)
            break
        sid, size = record.service_id, len(record.body)
        if size > reading.max_service_bytes:  # what the store would refuse
            fault = (number, f"service {sid} would take {size} bytes, more than the limit "
                             f"of {reading.max_service_bytes} ([limits] max_service_bytes)")
            break
        ids.append((sid, number))
        records.append(record)
        if top is None or sid > top[1].service_id:
            top = (number, record)
    return _Block(ids, fault, top, pickle.dumps(records, pickle.HIGHEST_PROTOCOL))


def _blocks(lines: Iterable[bytes], count: int, size: int
            ) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, lines): ``count`` lines, or fewer that hold at
    least ``size`` bytes."""
    first, block, held = 1, [], 0
    for raw in lines:
        block.append(raw)
        held += len(raw)
        if len(block) >= count or held >= size:
            yield first, block
            first, block, held = first + len(block), [], 0
    if block:
        yield first, block


@dataclass
class Checked:
    """What :meth:`Importer.check` found: every id in the file, by line; the line
    with the highest id and its service (written first: see :class:`Importer`);
    and every service of the file as the store will write it, in a temporary file
    (:meth:`records`), so that writing them parses nothing again."""

    spool: IO[bytes]
    lines: dict[int, int] = field(default_factory=dict)  # service id -> line number
    top: tuple[int, Encoded] | None = None  # (line number, service) of the highest id

    def __len__(self) -> int:
        return len(self.lines)

    def records(self) -> Iterator[Encoded]:
        """The services of the file, in its order."""
        self.spool.seek(0)
        while True:
            try:
                block = pickle.load(self.spool)
            except EOFError:
                return
            yield from block

    def close(self) -> None:
        self.spool.close()


@dataclass
class Imported:
    imported: int = 0
    skipped: int = 0


class Importer:
    """Loads services as exported (one per line, API.md 7.2) into ``store`` under the
    ids they carry; the store's id counter moves past them.

    :meth:`check` reads every line and writes nothing to the store: each line must
    be a whole service of the representation (:func:`document`), ids unique in the
    file and from 1 to 2^53 - 1, each service within the store's size limit, and,
    with ``on_conflict`` ``fail``, no id may exist in the store. Any fault refuses
    the whole file, with its line number. Each line is parsed once: the check keeps
    each service as the store will write it (encoded, in a temporary file), and
    :meth:`load` then writes those. The lines are checked in blocks, by ``jobs``
    processes at once (by default, one per processor).

    **Writing, and the store's lock.** Services are written with ``put_services`` in
    batches of about :data:`WRITE_BYTES` (at most :data:`WRITE_COUNT` services), each
    one unit of work: a server on the same store waits at most one batch (some tens
    of milliseconds) for its turn, instead of the whole import (seconds for 100,000
    services, past its ``lock_timeout``), and memory holds one batch. The price is
    that an import is not one unit of work, so for ``fail`` all-or-nothing is kept
    another way: the service with the highest id is written first, alone, which
    moves the id counter past every id of the file, so that no service the server
    creates meanwhile can take one of them; a conflict that still arises later (an
    import running at the same time), a failure to write, or an interruption
    (Ctrl-C) removes what this import wrote, and nothing is imported (the ids it
    took are not handed out again). A process killed in the middle of :meth:`load`
    leaves the batches written before it.

    ``skip`` keeps a stored service with the same id, ``replace`` overwrites it;
    both write the rest.
    """

    WRITE_BYTES = 1 << 20
    WRITE_COUNT = 2000
    BLOCK_LINES = 1000  # lines checked at a time by one process...
    BLOCK_BYTES = 1 << 20  # ...or fewer, when they hold this many bytes

    def __init__(self, store: ServiceStore, policy: Policy, now: datetime,
                 on_conflict: str = "fail", max_service_bytes: int = 16 << 20,
                 jobs: int | None = None):
        if on_conflict not in ON_CONFLICT:
            raise ValueError(f"on_conflict: one of {', '.join(ON_CONFLICT)}")
        self.store, self.on_conflict = store, on_conflict
        self.reading = _Reading(policy, now, max_service_bytes)
        self.jobs = jobs or processors()

    def check(self, lines: Iterable[bytes]) -> Checked:
        """Read every line and refuse the file at its first fault (:class:`Invalid`,
        or :class:`Conflict` for an id that exists, with ``fail``), naming the line.
        Blank lines are passed over."""
        checked = Checked(tempfile.TemporaryFile(prefix="contextsvc-import-"))
        try:
            check = functools.partial(_check_block, self.reading)
            with _InOrder(check, self.jobs) as checkers:
                for block in checkers.map(_blocks(lines, self.BLOCK_LINES, self.BLOCK_BYTES)):
                    self._take(block, checked)
            if self.on_conflict == "fail":
                seen = checked.lines
                existing = self._existing(seen)
                if existing:
                    first = min(existing, key=seen.__getitem__)
                    more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
                    raise Conflict(f"line {seen[first]}: service {first} exists in the store"
                                   f"{more}; nothing was imported")
        except BaseException:
            checked.close()
            raise
        return checked

    @staticmethod
    def _take(block: _Block, checked: Checked) -> None:
        """Add a block's results, the blocks in order: its first fault is the
        file's, unless a line before it repeats an id of an earlier line."""
        seen = checked.lines
        for sid, number in block.ids:
            if sid in seen:
                raise Invalid(f"line {number}: service {sid} is also on line {seen[sid]}")
            seen[sid] = number
        if block.fault is not None:
            raise Invalid(f"line {block.fault[0]}: {block.fault[1]}")
        checked.spool.write(block.records)
        if block.top is not None and (checked.top is None
                                      or block.top[1].service_id > checked.top[1].service_id):
            checked.top = block.top

    def _existing(self, ids: dict[int, int]) -> list[int]:
        found, after = [], 0
        while True:
            with self.store.scan(after=after, limit=10_000) as selection:
                rows = selection.rows
            found += [sid for sid, _ in rows if sid in ids]
            if len(rows) < 10_000:
                return found
            after = rows[-1][0]

    def load(self, records: Iterable[Encoded], checked: Checked) -> Imported:
        """Write the services :meth:`check` accepted: ``records``, from
        :meth:`Checked.records` (a caller may count them as they go)."""
        done = Imported()
        try:
            if checked.top is None:
                return done
            written: list[int] = []  # for fail: what to take back if a conflict comes late
            top = checked.top[1]
            try:
                self._put([top], checked, done, written)
                batch: list[Encoded] = []
                size = 0
                for record in records:
                    if record.service_id == top.service_id:
                        continue
                    batch.append(record)
                    size += len(record.body)
                    if size >= self.WRITE_BYTES or len(batch) >= self.WRITE_COUNT:
                        self._put(batch, checked, done, written)
                        batch, size = [], 0
                if batch:
                    self._put(batch, checked, done, written)
            except (ContextError, KeyboardInterrupt) as exc:
                failure = exc if isinstance(exc, ContextError) else ContextError("interrupted")
                if self.on_conflict == "fail":
                    self._take_back(written, failure)
                elif done.imported:
                    failure.message += f" (after {done.imported} services were imported)"
                if failure is exc:
                    raise
                raise failure from None
        finally:
            checked.close()
        return done

    def _put(self, batch: list[Encoded], checked: Checked, done: Imported,
             written: list[int]) -> None:
        try:
            stored = self.store.put_services(batch, self.on_conflict)
        except Conflict:
            lines = {record.service_id: checked.lines[record.service_id] for record in batch}
            existing = self._existing(lines)
            first = min(existing, key=lines.__getitem__) if existing else None
            raise Conflict(
                f"line {lines[first]}: service {first} exists in the store (written while "
                "the import ran)" if first is not None else
                "a service of the file was written while the import ran") from None
        done.imported += stored
        done.skipped += len(batch) - stored
        if self.on_conflict == "fail":
            written.extend(record.service_id for record in batch)

    def _take_back(self, written: list[int], exc: ContextError) -> None:
        """Remove what this import wrote (for ``fail``), and say so in ``exc``."""
        try:
            for start in range(0, len(written), 1000):
                self.store.rewrite_services(written[start:start + 1000], lambda doc: None)
        except ContextError as again:
            exc.message += (f"; the {len(written)} services imported before it could not "
                            f"be removed ({again.message})")
        else:
            exc.message += "; nothing was imported"
