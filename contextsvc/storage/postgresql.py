"""The PostgreSQL engine: :class:`~contextsvc.storage.base.ServiceStore` on a
PostgreSQL database (``[storage] engine = postgresql``), for deployments with
several app servers on one database. Plain SQL through psycopg 3 and psycopg-pool.

Layout, in one schema per store (a tenant is a schema):

* ``services``: one row per service: the whole document as ``json`` (its text as
  :func:`~.records.encode` writes it, index keys first), and plain columns copied
  from it on every write for what the store looks up (``customer_id``,
  ``contact_key``, ``due``: the same :func:`~.records.index_keys` the file engine
  indexes) or what SQL reports want (``started``, ``completed``, ``service_type``).
  ``json``, not ``jsonb``: jsonb reorders an object's keys (the representation's
  order is part of its readability) and refuses ``\\u0000`` and lone surrogates,
  which the API accepts as JSON; json keeps the text as written.
* ``service_ids``: the sequence ids come from (CACHE 1: gaps after a unit of work
  that failed, never a reuse); an import moves it past the ids it brings.
* ``requests``: the records of idempotency keys (API.md 10.1), by key, with the
  service whose document holds each (0: the store's own document, as in the file
  engine), written in the unit of work that writes the document.
* ``counters``: how many services and bytes there are, and how many bytes old
  versions and removed services took since the last compaction, in a few rows
  that writers pick by backend pid (one row would serialize every write), so that
  ``count``, ``stats`` and ``reclaim`` need no scan of ``services``.
* ``jobs``: when each periodic job was last done; ``schema_version``.

Each method is one transaction (READ COMMITTED). Writers serialize per service
with ``SELECT … FOR UPDATE``; an idempotency key, a customer id or a contact key
(find-or-create) and the id sequence (against an import) with transaction-scoped
advisory locks, always taken in that order before any row lock. Readers never
wait for writers. Every wait is bounded by ``[storage] lock_timeout`` (the lock,
and a connection from the pool), after which the call raises ``StoreBusy``.

The pool is made lazily in the process that uses it (a gunicorn worker, after the
fork: psycopg-pool does not survive one, psycopg/psycopg#395) and shared by the
stores (tenants) of that process.

A write takes two round trips: BEGIN with its first statements (the idempotency
key's check, the new ids or the rows to change), then its writes, the counters and
COMMIT. Each round trip is one query of several statements prepared once per
connection (``PREPARE``, then ``EXECUTE`` with the values bound on this side by
psycopg's client-side binding, as Django does with psycopg): psycopg's cost is per
query sent, and it was most of a short write's CPU in the app. So a session keeps
state of its own (its prepared statements, and the periodic jobs' advisory lock):
a pooler in front of PostgreSQL must run in session mode, and the values of a
write show in ``pg_stat_activity`` to whoever may see its queries (the database's
own log shows them either way when it logs statements).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import select
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import NotFound, StoreBusy, StoreCorrupt, StoreFailure, TooLarge
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
from .logfile import LogFile, verify_copy, write_copy
from .records import (
    REQUESTS,
    STORE_DOC,
    Encoded,
    decode,
    encode,
    encode_store_doc,
    index_keys,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SHARDS = 16  # rows of the counters table
# How long the pool retries a connection it lost (after 1, 2, 4... s) before giving
# it up. psycopg-pool's default (5 min) lets the delays grow with the outage: a
# database back after 20 s was used 8 s later. Given up sooner, a lost connection
# is replaced on demand: the next request that waits starts a new attempt at once.
RECONNECT_TIMEOUT = 5.0
# A connection of the pool idle for longer than this is checked (a round trip)
# before it is used: the server may have gone meanwhile (a restart, a failover).
IDLE_CHECK = 1.0
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_schema_name(name: str) -> str:
    """A schema name the engine accepts: lower-case letters, digits and ``_``, not
    starting with a digit, at most 63 characters (PostgreSQL's limit), so that it
    needs no quoting anywhere (psql, pg_dump -n). Raises ValueError."""
    if not _SCHEMA_NAME.fullmatch(name) or name.startswith("pg_"):
        raise ValueError(f"{name!r} is not a schema name: lower-case letters, digits and _, "
                         "at most 63, not starting with a digit or pg_")
    return name


def check_dsn(dsn: str) -> None:
    """Raise ValueError when ``dsn`` is not a libpq connection string. The message
    never repeats the string: it may hold a password."""
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ValueError("not a libpq connection string (key=value pairs, or a "
                         "postgresql:// URI)") from None


def _secrets(dsn: str) -> list[str]:
    found = [os.environ.get("PGPASSWORD", "")]
    try:
        found.append(str(conninfo_to_dict(dsn).get("password") or ""))
    except psycopg.ProgrammingError:
        pass
    return [s for s in found if s]


def scrub(message: str, dsn: str) -> str:
    """``message`` (libpq's, psycopg's) in one line, with any password in it masked."""
    for secret in _secrets(dsn):
        message = message.replace(secret, "***")
    return " ".join(message.split())


# ------------------------------------------------------------------ schema
def _migrations(s: sql.Identifier) -> list[list[sql.Composable]]:
    """The schema, one list of statements per version: version N is the first N."""
    q = sql.SQL
    return [[
        q("CREATE SEQUENCE {}.service_ids AS bigint MINVALUE 1 MAXVALUE {} CACHE 1 NO CYCLE"
          ).format(s, sql.Literal(MAX_SERVICE_ID)),
        q("""CREATE TABLE {}.services (
               id bigint PRIMARY KEY,
               doc json NOT NULL,
               bytes integer NOT NULL,
               stale bigint NOT NULL DEFAULT 0,
               customer_id text,
               contact_key text,
               due text COLLATE "C",
               started text COLLATE "C",
               completed text COLLATE "C",
               service_type text)""").format(s),
        q("CREATE INDEX services_customer ON {}.services (customer_id, id) "
          "WHERE customer_id IS NOT NULL").format(s),
        q("CREATE INDEX services_anonymous ON {}.services (contact_key, id) "
          "WHERE customer_id IS NULL AND contact_key IS NOT NULL").format(s),
        q("CREATE INDEX services_due ON {}.services (due, id) WHERE due IS NOT NULL").format(s),
        q("""CREATE TABLE {}.requests (
               key text COLLATE "C" PRIMARY KEY,
               service_id bigint NOT NULL,
               record json NOT NULL,
               until text COLLATE "C" NOT NULL)""").format(s),
        q("CREATE INDEX requests_service ON {}.requests (service_id)").format(s),
        q("""CREATE TABLE {}.counters (
               shard smallint PRIMARY KEY,
               services bigint NOT NULL DEFAULT 0,
               bytes bigint NOT NULL DEFAULT 0,
               garbage bigint NOT NULL DEFAULT 0)""").format(s),
        q("INSERT INTO {}.counters (shard) SELECT generate_series(0, {})"
          ).format(s, sql.Literal(SHARDS - 1)),
        q("CREATE TABLE {}.jobs (name text PRIMARY KEY, done_at timestamptz NOT NULL)"
          ).format(s),
    ]]


def upgrade(conn: psycopg.Connection, schema: str) -> tuple[int, int]:
    """Create the schema, or bring it to :data:`SCHEMA_VERSION`, in one transaction
    (servers starting together wait for each other). Returns (version before,
    version now). Raises StoreFailure when the schema is newer than this code."""
    s = sql.Identifier(schema)
    current = schema_version(conn, schema)
    if current == SCHEMA_VERSION:  # the usual case: nothing written (a read-only role
        return current, current    # or standby may open the store)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                     (f"contextsvc\x1fschema\x1f{schema}",))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {}.schema_version "
                             "(version integer NOT NULL)").format(s))
        row = conn.execute(sql.SQL("SELECT max(version) FROM {}.schema_version").format(s)
                           ).fetchone()
        before = row[0] if row and row[0] is not None else 0
        if before > SCHEMA_VERSION:
            raise StoreFailure(f"schema {schema} is at version {before}, newer than this "
                               f"contextsvc knows ({SCHEMA_VERSION}): upgrade contextsvc")
        for statements in _migrations(s)[before:]:
            for statement in statements:
                conn.execute(statement)
        if before < SCHEMA_VERSION:
            conn.execute(sql.SQL("DELETE FROM {}.schema_version").format(s))
            conn.execute(sql.SQL("INSERT INTO {}.schema_version VALUES (%s)").format(s),
                         (SCHEMA_VERSION,))
    return before, SCHEMA_VERSION


def schema_version(conn: psycopg.Connection, schema: str) -> int:
    """The version of ``schema``, 0 when it has none (reads only)."""
    row = conn.execute("SELECT to_regclass(%s)", (f"{schema}.schema_version",)).fetchone()
    if row is None or row[0] is None:
        return 0
    row = conn.execute(sql.SQL("SELECT max(version) FROM {}.schema_version").format(
        sql.Identifier(schema))).fetchone()
    return row[0] if row and row[0] is not None else 0


# ------------------------------------------------------------------ errors
# SQLSTATE classes and codes -> busy (retry soon) or failing (nothing changed)
_BUSY = (pgerrors.LockNotAvailable, pgerrors.QueryCanceled, pgerrors.SerializationFailure,
         pgerrors.DeadlockDetected, pgerrors.TooManyConnections, pgerrors.CannotConnectNow)
# after these the connection is not worth keeping: a standby, a server going away
# (lock and statement timeouts are OperationalErrors too, but the connection is fine)
IDLE, INTRANS, INERROR = (psycopg.pq.TransactionStatus.IDLE, psycopg.pq.TransactionStatus.INTRANS,
                          psycopg.pq.TransactionStatus.INERROR)
_DISCARD = (pgerrors.ReadOnlySqlTransaction, pgerrors.AdminShutdown, pgerrors.CrashShutdown,
            pgerrors.IdleInTransactionSessionTimeout, psycopg.OperationalError,
            # the session lost the statements it prepared (DISCARD ALL by a pooler
            # in transaction mode): a new connection prepares them again
            pgerrors.InvalidSqlStatementName)


class _Watchdog:
    """Runs an action once its deadline passes, unless disarmed before: one daemon
    thread per process, for the COMMITs of every store (a thread of its own per
    COMMIT would cost more than a short COMMIT). Under gevent it is a greenlet."""

    def __init__(self) -> None:
        self._pid = 0

    def _reset(self) -> None:
        # Made in the process that uses it, on first use: a forked child has not the
        # parent's thread, and a gevent worker patches threading after the fork, so
        # a Condition made at the fork would mix real and patched locks ("cannot
        # notify on un-acquired lock").
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, Callable[[], None]]] = {}
        self._running: set[int] = set()
        self._tokens = 0
        self._thread: threading.Thread | None = None
        # when the thread wakes next by itself (inf: only when notified). A COMMIT
        # arms a deadline later than that at almost every call (they all wait as
        # long): it needs no wake-up, which would cost a switch to the thread each
        self._wake = float("inf")

    def arm(self, seconds: float, action: Callable[[], None]) -> int:
        if self._pid != os.getpid():
            self._reset()
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="contextsvc-commit-watchdog")
                self._thread.start()
            self._tokens += 1
            deadline = time.monotonic() + seconds
            if deadline < self._wake:
                self._cond.notify()  # the thread sleeps until a later deadline, or for ever
            self._due[self._tokens] = (deadline, action)
            return self._tokens

    def disarm(self, token: int) -> bool:
        """True when the action will not run; False when it ran, after it ended."""
        with self._cond:
            if self._due.pop(token, None) is not None:
                return True
            while token in self._running:
                self._cond.wait()
            return False

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                expired = [token for token, (due, _) in self._due.items() if due <= now]
                if not expired:
                    self._wake = min((due for due, _ in self._due.values()),
                                     default=float("inf"))
                    self._cond.wait(None if self._wake == float("inf") else self._wake - now)
                    continue
                actions = [(token, self._due.pop(token)[1]) for token in expired]
                self._running.update(expired)
            for token, action in actions:
                try:
                    action()
                except Exception:  # the thread must go on watching the others
                    log.exception("the COMMIT watchdog's action failed")
                finally:
                    with self._cond:
                        self._running.discard(token)
                        self._cond.notify_all()


_watchdog = _Watchdog()


class _Settings:
    def __init__(self, dsn: str, pool_min: int, pool_max: int, lock_timeout: float,
                 statement_timeout: float):
        self.dsn, self.pool_min, self.pool_max = dsn, pool_min, pool_max
        self.lock_timeout, self.statement_timeout = lock_timeout, statement_timeout

    def key(self) -> tuple[Any, ...]:
        return (self.dsn, self.pool_min, self.pool_max, self.lock_timeout,
                self.statement_timeout)

    def configure(self, conn: psycopg.Connection) -> None:
        """Each new connection's session settings: bounded waits for locks and
        statements, and a transaction left open by a stuck worker ends (its row
        locks with it) instead of holding up the others."""
        ms = [f"{int(self.lock_timeout * 1000)}ms", f"{int(self.statement_timeout * 1000)}ms",
              f"{int(max(self.lock_timeout, self.statement_timeout) * 2000)}ms"]
        conn.execute("SELECT set_config('lock_timeout', %s, false), "
                     "set_config('statement_timeout', %s, false), "
                     "set_config('idle_in_transaction_session_timeout', %s, false)", ms)


@dataclass
class _Shared:
    """What the stores of one process share for one database: the pool, the
    connection that holds the periodic jobs' advisory locks, and which jobs this
    process runs (a session's advisory locks are re-entrant: threads of one
    process must not both get one)."""

    pid: int
    pool: ConnectionPool
    users: int = 0
    jobs_conn: psycopg.Connection | None = None
    jobs_lock: threading.Lock = field(default_factory=threading.Lock)
    running: set[str] = field(default_factory=set)


_last_used: weakref.WeakKeyDictionary[psycopg.Connection, float] = weakref.WeakKeyDictionary()


def _check_idle(conn: psycopg.Connection) -> None:
    """The pool's check of a connection it hands out: a round trip when the connection
    has been idle for more than IDLE_CHECK s, none for one used just now (under load,
    a check of every connection was one round trip of the five of a start-service).
    A connection that went away unnoticed all the same fails its request like any
    lost connection (503) and is replaced."""
    if time.monotonic() - _last_used.get(conn, 0.0) > IDLE_CHECK:
        ConnectionPool.check_connection(conn)


class _GeventConnection(psycopg.Connection):
    """A connection whose waits for the server are gevent's own. Under gevent's
    monkey patching psycopg waits through gevent's emulation of ``select.poll``
    (its C wait would stop the whole worker), which makes a poll object, a watcher
    and a timeout for each wait: most of the CPU a short statement costs this side.
    This first asks the socket, without waiting, whether it is ready already (a
    pipeline's sending asks about fourteen times per start-service, and the socket
    takes the data at once), and only when it is not waits on one watcher of the
    socket, which lets the worker's other greenlets run meanwhile."""

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        if timeout is not None:
            return super().wait(gen, interval=interval, timeout=timeout)
        hub = _gevent_hub()
        fileno = self.pgconn.socket
        try:
            # psycopg's Wait (R 1, W 2, RW 3) are libev's READ and WRITE bits, and
            # its Ready the same bits
            waiting = next(gen)
            while True:
                ready = _ready_now(fileno, waiting)
                if not ready:
                    watcher = hub.loop.io(fileno, int(waiting))
                    try:
                        hub.wait(watcher)
                    finally:
                        watcher.close()
                    ready = int(waiting)  # an operation that is not ready asks again
                waiting = gen.send(ready)
        except StopIteration as done:
            return done.value


def _gevent_hub() -> Any:
    from gevent import get_hub

    return get_hub()


_POLL_BITS = ((1, select.POLLIN), (2, select.POLLOUT))  # psycopg's R and W


def _ready_now(fileno: int, waiting: int) -> int:
    """Which of the ``waiting`` bits the socket is ready for now (0 if none), by a
    poll that does not wait: the system's own, not gevent's emulation. An error or
    a hang-up answers every bit asked for, so that psycopg finds it."""
    poller = _original_poll()()
    poller.register(fileno, sum(mask for bit, mask in _POLL_BITS if waiting & bit))
    events = poller.poll(0)
    if not events:
        return 0
    revents = events[0][1]
    if revents & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
        return int(waiting)
    return sum(bit for bit, mask in _POLL_BITS if revents & mask)


@functools.cache
def _original_poll() -> Any:
    """The system's ``select.poll`` class, which gevent's patching replaced."""
    from gevent.monkey import get_original

    return get_original("select", "poll")


@contextmanager
def _ids_left() -> Iterator[None]:
    """Around statements that draw service ids: the sequence's end, a StoreFailure."""
    try:
        yield
    except pgerrors.SequenceGeneratorLimitExceeded:
        raise StoreFailure("No service ids are left below 2^53") from None


def _connection_class() -> type[psycopg.Connection]:
    """The class of the pool's connections, chosen in the process that uses them."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("select"):
        return _GeventConnection
    return psycopg.Connection


_shared: dict[tuple[Any, ...], _Shared] = {}
_shared_lock = threading.Lock()


def _acquire(settings: _Settings) -> _Shared:
    """The process's pool for these settings, made here (after any fork) on first use.
    A pool inherited from the parent process is left alone, not closed: its sockets
    are the parent's."""
    with _shared_lock:
        shared = _shared.get(settings.key())
        if shared is None or shared.pid != os.getpid():
            pool = ConnectionPool(
                settings.dsn, connection_class=_connection_class(),
                min_size=settings.pool_min, max_size=settings.pool_max,
                # psycopg prepares no statement itself: it runs DEALLOCATE ALL after a
                # ROLLBACK when it has, which would drop the store's own (_prepared)
                kwargs={"autocommit": True, "prepare_threshold": None},
                configure=settings.configure,
                check=_check_idle, timeout=settings.lock_timeout,
                reconnect_timeout=RECONNECT_TIMEOUT, name="contextsvc", open=False)
            shared = _shared[settings.key()] = _Shared(os.getpid(), pool)
            # open=False then open(wait=False): connecting happens in the background
            # and a database that is down now does not stop the process
            pool.open(wait=False)
        shared.users += 1
        return shared


def _release(settings: _Settings, shared: _Shared) -> None:
    with _shared_lock:
        shared.users -= 1
        if shared.users > 0 or shared.pid != os.getpid():
            return
        if _shared.get(settings.key()) is shared:
            del _shared[settings.key()]
    if shared.jobs_conn is not None:
        shared.jobs_conn.close()
    shared.pool.close()


# ------------------------------------------------------------------ the store
# what a JSON string may hold and PostgreSQL's text may not: NUL, and the lone
# surrogates (\ud800 is valid JSON; UTF-8 has no encoding for it)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _col(value: str) -> str:
    """``value`` as a text column (or a lock's name) holds it: NUL and lone surrogates
    become U+FFFD. Not one-to-one (U+FFFD stands for itself too): a lookup by a value
    holding it checks the documents it finds (see :meth:`PostgresStore._exact`)."""
    return _UNSTORABLE.sub("\ufffd", value) if _UNSTORABLE.search(value) else value


def _known(sid: int) -> int:
    """``sid``, or NotFound when no service can have it (nor a bigint hold it: the
    values of the statements of _SENT are literals, checked against their types)."""
    if not 0 < sid <= MAX_SERVICE_ID:
        raise NotFound(f"There is no service {sid}")
    return sid


def _text(value: Any) -> str | None:
    return _col(value) if isinstance(value, str) else None


def _stamp(event: Any) -> str | None:
    return _text(event.get("timestamp")) if isinstance(event, dict) else None


def _records(doc: Doc) -> dict[str, str]:
    """The request records of ``doc`` as JSON text, to tell which changed."""
    records = doc.get(REQUESTS)
    if not isinstance(records, dict):
        return {}
    return {key: json.dumps(rec, ensure_ascii=True, separators=(",", ":"))
            for key, rec in records.items()}


class _Rows:
    """A selection's reader: the documents were read when they were chosen."""

    def read(self, loc: Any) -> Doc:
        return decode(loc.encode())

    def read_raw(self, loc: Any) -> bytes:
        return loc.encode()  # the stored text is records.encode's form

    def close(self) -> None:
        pass


class _Unit:
    """One transaction's writes, and what they change in the counters. The writes are
    kept and sent at the end, all in one query with the counters (and the COMMIT,
    when the unit ends with it): one round trip, an import's batch included."""

    def __init__(self, store: PostgresStore, conn: psycopg.Connection):
        self.store, self.conn = store, conn
        self.services = self.bytes = self.garbage = 0
        self.writes: list[tuple[str, tuple[Any, ...]]] = []

    def body(self, sid: int, doc: Doc) -> str:
        body = encode(doc).decode("ascii")
        limit = self.store.max_service_bytes
        if len(body) > limit:
            raise TooLarge(f"Service {sid} would take {len(body)} bytes, more than the limit "
                           f"of {limit} ([limits] max_service_bytes); nothing was changed")
        return body

    def columns(self, doc: Doc) -> tuple[Any, ...]:
        customer_id, contact_key, due, _ = index_keys(doc)
        service_type = doc.get("service_type")
        return (_text(customer_id), _text(contact_key), _text(due), _stamp(doc.get("started")),
                _stamp(doc.get("completed")),
                None if service_type is None or isinstance(service_type, (dict, list))
                else _col(str(service_type)))

    def insert(self, sid: int, doc: Doc) -> str:
        """Insert ``doc``; returns its text."""
        body = self.body(sid, doc)
        self.writes.append(("insert", (sid, body, len(body), *self.columns(doc))))
        self.requests(sid, {}, doc)
        self.services += 1
        self.bytes += len(body)
        return body

    def update(self, sid: int, doc: Doc, old: dict[str, str], old_bytes: int) -> None:
        body = self.body(sid, doc)
        self.writes.append(("update", (body, len(body), old_bytes, *self.columns(doc), sid)))
        self.requests(sid, old, doc)
        self.bytes += len(body) - old_bytes
        self.garbage += old_bytes

    def delete(self, sid: int, old_bytes: int) -> None:
        self.writes += [("delete", (sid,)), ("drop_requests", (sid,))]
        self.services -= 1
        self.bytes -= old_bytes
        self.garbage += old_bytes

    def requests(self, sid: int, old: dict[str, str], doc: Doc) -> None:
        """Index the document's request records: the latest write of a key wins, as
        in the file engine (a key is recorded only when it has no live record, and
        every write of a document first drops its expired ones)."""
        new = _records(doc)
        gone = [key for key in old if key not in new]
        if gone:
            self.writes.append(("drop_keys", (gone, sid)))
        self.writes += [("put_request", (key, sid, text, str(doc[REQUESTS][key].get("until", ""))))
                        for key, text in new.items() if old.get(key) != text]

    def finish(self, commit: bool = False) -> None:
        """Send the writes and the counters in one query; with ``commit``, the COMMIT
        too (:meth:`PostgresStore._commit`): nothing may follow in the unit."""
        figures = (self.services, self.bytes, self.garbage)
        if any(figures):
            self.writes.append(("count", (*figures, SHARDS, SHARDS)))
        writes, self.writes = self.writes, []
        if commit:
            self.store._commit(self.conn, writes)
        elif writes:
            self.store._send(self.conn, writes)


class PostgresStore:
    engine_name = "postgresql"

    def __init__(self, dsn: str, schema: str = "contextsvc", *, pool_min: int = 1,
                 pool_max: int = 10, lock_timeout: float = 10.0,
                 statement_timeout: float = 30.0, compact_min_bytes: int = 16 << 20,
                 compact_ratio: float = 2.0, max_service_bytes: int = 16 << 20,
                 setup: bool = True):
        self.schema = check_schema_name(schema)
        self.settings = _Settings(dsn, pool_min, pool_max, lock_timeout, statement_timeout)
        self.compact_min_bytes, self.compact_ratio = compact_min_bytes, compact_ratio
        self.max_service_bytes = max_service_bytes
        self._t = _statements(sql.Identifier(schema))
        self._p = _prepared(self._t)
        self._shared: _Shared | None = None
        self._pid = 0
        self._ready = not setup  # whether the schema is known to be there
        self._lock = threading.Lock()
        if setup:
            try:
                self._setup()
            except StoreFailure as exc:
                # a database down now must not stop the process (gunicorn stops its
                # master when a worker fails to boot): requests answer 503 until it is up
                log.warning("the database cannot be used now (%s); requests answer 503 "
                            "until it can", exc.message)

    def __repr__(self) -> str:
        return f"<PostgresStore schema={self.schema}>"

    # ----------------------------------------------------------------- connections
    def _pool(self) -> ConnectionPool:
        shared = self._shared
        if shared is None or self._pid != os.getpid():
            with self._lock:
                if self._shared is None or self._pid != os.getpid():
                    self._shared = _acquire(self.settings)
                    self._pid = os.getpid()
                shared = self._shared
        return shared.pool

    def describe(self) -> str:
        """Where the store is, for people: host, port, database and schema (never the
        user's password)."""
        try:
            info = conninfo_to_dict(self.settings.dsn)
        except psycopg.ProgrammingError:
            info = {}
        host = info.get("host") or os.environ.get("PGHOST") or "localhost"
        port = info.get("port") or os.environ.get("PGPORT") or "5432"
        dbname = info.get("dbname") or os.environ.get("PGDATABASE") or "(default database)"
        return f"postgresql {host} port {port} database {dbname} schema {self.schema}"

    def upgrade(self) -> tuple[int, int]:
        """Connect now (not through the pool, so that libpq's reason is reported when
        it fails) and create or upgrade the schema: returns (version before, version
        now). Raises StoreFailure."""
        try:
            with psycopg.connect(self.settings.dsn, autocommit=True,
                                 connect_timeout=max(2, int(self.settings.lock_timeout))
                                 ) as conn:
                self.settings.configure(conn)
                done = upgrade(conn, self.schema)
        except psycopg.Error as exc:
            raise self._mapped(exc) from None
        self._ready = True
        return done

    def _setup(self) -> None:
        with self._connection() as conn:
            before, now = upgrade(conn, self.schema)
        if before != now:
            log.info("schema %s: version %d (was %d)", self.schema, now, before)
        self._ready = True

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A connection of the pool, for one unit of work; psycopg's errors become the
        domain's. A connection that failed in a way that may last (a standby, a
        server going away) is closed, so that the pool replaces it."""
        try:
            with self._pool().connection(timeout=self.settings.lock_timeout) as conn:
                try:
                    yield conn
                except _DISCARD as exc:
                    if not isinstance(exc, _BUSY):
                        conn.close()
                    raise
                finally:
                    _last_used[conn] = time.monotonic()
        except PoolTimeout:
            raise StoreBusy(f"No database connection within {self.settings.lock_timeout:g} s "
                            "([storage] lock_timeout): all in use, or the database cannot be "
                            "reached") from None
        except psycopg.Error as exc:
            raise self._mapped(exc) from None

    def _mapped(self, exc: psycopg.Error, committing: bool = False) -> Exception:
        message = scrub(str(exc) or type(exc).__name__, self.settings.dsn)
        if (committing and isinstance(exc, psycopg.OperationalError)
                and not isinstance(exc, _BUSY)):
            return StoreFailure("The connection to the database was lost while the write was "
                                f"being committed: it may or may not have been made ({message})")
        if isinstance(exc, _BUSY):
            return StoreBusy(f"The database is busy: {message}")
        if isinstance(exc, pgerrors.ReadOnlySqlTransaction):
            return StoreFailure(f"The database is read-only (a standby?): {message}; nothing "
                                "was changed")
        if isinstance(exc, (psycopg.OperationalError, pgerrors.InsufficientResources)):
            return StoreFailure(f"The database cannot be used: {message}; nothing was changed")
        log.error("database error: %s", message)
        return StoreFailure(f"The database failed: {message}; nothing was changed")

    @contextmanager
    def _unit(self, write: bool = True, snapshot: bool = False, begin: bool = True
              ) -> Iterator[psycopg.Connection]:
        """One transaction. A connection lost during COMMIT leaves its outcome unknown:
        that is reported (StoreFailure, 503), never retried here. Without ``begin``,
        the caller sends BEGIN with its first statements (one round trip fewer)."""
        with self._connection() as conn:
            if not self._ready:
                self._setup_on(conn)
            if begin:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if snapshot
                             else "BEGIN" if write else "BEGIN READ ONLY")
            committing = False
            try:
                yield conn
                committing = True
                if conn.info.transaction_status == IDLE:
                    pass  # committed with the unit's last statements (_Unit.finish)
                elif write and not snapshot:
                    self._commit(conn)
                else:
                    conn.execute("COMMIT")
            except BaseException as exc:
                if not committing and not conn.closed:
                    try:
                        conn.execute("ROLLBACK")
                    except psycopg.Error:
                        conn.close()
                if isinstance(exc, psycopg.Error):
                    if isinstance(exc, _DISCARD) and not isinstance(exc, _BUSY):
                        conn.close()
                    raise self._mapped(exc, committing) from None
                raise

    def _prepare(self, conn: psycopg.Connection) -> None:
        """Prepare the statements :meth:`_send` sends on ``conn``: one round trip, once
        per connection (a ROLLBACK does not undo a PREPARE)."""
        ready = _ready.setdefault(conn, set())
        if self._p.token not in ready:
            with conn.pipeline():
                for statement in self._p.prepare:
                    conn.execute(statement)
            ready.add(self._p.token)

    def _send(self, conn: psycopg.Connection, statements: Sequence[tuple[str, Sequence[Any]]],
              *, begin: bool = False, commit: bool = False) -> list[list[tuple[Any, ...]]]:
        """``statements`` (names of :data:`_SENT`, with their values), after a BEGIN
        and before a COMMIT when asked, in one query; returns the rows of each. When
        one fails, the server skips the rest of the query (COMMIT included)."""
        parts = [b"BEGIN"] if begin else []
        values: list[Any] = []
        for name, params in statements:
            parts.append(self._p.execute[name])
            values += params
        if commit:
            parts.append(b"COMMIT")
        if not parts:
            return []
        if statements:
            self._prepare(conn)
        cursor = psycopg.ClientCursor(conn)
        cursor.execute(b"; ".join(parts), values, prepare=False)
        results = []
        while True:
            results.append(cursor.fetchall() if cursor.description is not None else [])
            if not cursor.nextset():
                break
        return results[1:] if begin else results

    def _commit(self, conn: psycopg.Connection,
                writes: Sequence[tuple[str, Sequence[Any]]] = ()) -> None:
        """COMMIT a write, within ``statement_timeout`` on this side. PostgreSQL does
        not apply statement_timeout to a COMMIT that waits for a synchronous standby:
        the transaction is committed on the primary first, then waits for the
        standby, for ever when the standby is down. Past the bound the wait is
        cancelled (PostgreSQL then ends the COMMIT with a warning, the transaction
        committed on the primary and maybe on no standby) and the write is reported
        as of unknown outcome (StoreFailure, 503), never acknowledged; the
        connection is closed, so that the cancel reaches no later statement.

        ``writes`` are the unit's last statements, sent in one query with the COMMIT.
        When one of them fails, the server skips the rest, COMMIT included, and the
        transaction is left failed: its error is raised as it is (nothing was
        committed). When the connection is lost on the way, whether the COMMIT was
        made is unknown, as for a COMMIT sent alone."""
        def send() -> None:
            try:
                self._send(conn, writes, commit=True)
            except psycopg.Error as exc:
                if conn.info.transaction_status in (INERROR, INTRANS):
                    raise  # failed before the COMMIT: nothing was committed
                raise self._mapped(exc, committing=True) from None

        if self.settings.statement_timeout <= 0:
            send()
            return

        def cancel() -> None:
            try:
                conn.cancel_safe(timeout=max(1.0, self.settings.lock_timeout))
            except psycopg.Error:
                pass  # the COMMIT is ended all the same: the connection is closed below

        token = _watchdog.arm(self.settings.statement_timeout, cancel)
        try:
            send()
        except (psycopg.Error, StoreFailure):
            if _watchdog.disarm(token):
                raise
            cancelled = True
        else:
            cancelled = not _watchdog.disarm(token)
        if cancelled:
            conn.close()
            raise StoreFailure(
                f"The database did not confirm the write within {self.settings.statement_timeout:g}"
                " s ([storage] statement_timeout; a synchronous standby that does not answer "
                "holds every COMMIT): it may or may not have been made")

    def _setup_on(self, conn: psycopg.Connection) -> None:
        upgrade(conn, self.schema)
        self._ready = True

    def _one(self, name: str, params: Sequence[Any] = ()) -> Any:
        """The first row of a single read (a statement of :data:`_SENT`), outside any
        transaction; None when there is none."""
        rows = self._read(name, params)
        return rows[0] if rows else None

    def _read(self, name: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            if not self._ready:
                self._setup_on(conn)
            return self._send(conn, [(name, params)])[0]

    # ----------------------------------------------------------------- reading
    def get_service(self, sid: int) -> Doc:
        row = self._one("get", (_known(sid),))
        if row is None:
            raise NotFound(f"There is no service {sid}")
        return decode(row[0].encode())

    def _select(self, name: str, params: Sequence[Any]) -> Selection:
        rows = self._read(name, params)
        return Selection(_Rows(), [(sid, body) for sid, body in rows],
                         (len(body) for _, body in rows))

    def customer_services(self, customer_id: str) -> Selection:
        return self._exact(self._select("by_customer", (_col(customer_id),)),
                           customer_id, lambda doc: doc.get("customer_id") == customer_id)

    def anonymous_services(self, contact_key: str) -> Selection:
        return self._exact(self._select("anonymous", (_col(contact_key),)),
                           contact_key, lambda doc: doc.get("contact_key") == contact_key)

    @staticmethod
    def _exact(selection: Selection, value: str, owns: Callable[[Doc], bool]) -> Selection:
        if "\ufffd" not in _col(value):
            return selection
        rows = [(sid, loc) for sid, loc in selection.rows if owns(selection.read(loc))]
        return Selection(_Rows(), rows, (len(loc) for _, loc in rows))

    def scan(self, after: int = 0, limit: int | None = None,
             due_by: str | None = None) -> Selection:
        after = min(after, MAX_SERVICE_ID)  # a bigint holds it; no id is above it
        if due_by is None:
            return self._select("scan", (after, limit))
        due_by = _col(due_by)
        return self._select("scan_due", (after, due_by, limit))

    def count(self) -> int:
        return int(self._one("totals")[0])

    def last_id(self) -> int:
        return int(self._one("last_id")[0])

    def find_request(self, key: RequestKey) -> Doc | None:
        row = self._one("get_request", (key.name, key.now))
        return None if row is None else json.loads(row[0])

    def may_hold_request(self, name: str) -> bool:
        return True  # only the database knows

    def _begin(self, conn: psycopg.Connection, key: RequestKey | None,
               *first: tuple[str, Sequence[Any]]) -> list[list[tuple[Any, ...]]]:
        """BEGIN a unit of work (made with ``begin=False``), with its first statements,
        in one round trip; returns the rows of each. With ``key``, the key's lock
        comes first, for the rest of the transaction, and Recorded is raised when the
        key has a live record: a second request with the key waits for the first's
        write, then finds its record (what the statements did is rolled back)."""
        checks = [] if key is None else [("lock", (self._lock_name("key", key.name),)),
                                         ("get_request", (key.name, key.now))]
        with _ids_left():
            results = self._send(conn, [*checks, *first], begin=True)
        if key is not None and results[1]:
            raise Recorded(json.loads(results[1][0][0]))
        return results[len(checks):]

    # ----------------------------------------------------------------- writing
    def _lock_name(self, kind: str, name: str) -> str:
        return _col(f"{self.schema}\x1f{kind}\x1f{name}")

    def _lock_on(self, conn: psycopg.Connection, kind: str, name: str) -> None:
        """A lock on ``name`` until the end of the transaction (hash collisions only
        make two unrelated callers take turns)."""
        conn.execute(self._t["lock"], (self._lock_name(kind, name),))

    def _ids(self, n: int) -> tuple[Any, Sequence[Any]]:
        """The statement that draws ``n`` new ids (after a lock that an import, which
        moves the sequence, takes exclusively)."""
        return "next_ids", (self._lock_name("ids", ""), n)

    def _new_ids(self, conn: psycopg.Connection, n: int) -> list[int]:
        with _ids_left():
            rows = self._send(conn, [self._ids(n)])[0]
        return sorted(row[0] for row in rows)

    def create_service(self, build: Callable[[int], Doc], key: RequestKey | None = None
                       ) -> Doc:
        return self.create_services([build], key)[0]

    def create_services(self, builds: Iterable[Callable[[int], Doc]],
                        key: RequestKey | None = None) -> list[Doc]:
        builds = list(builds)
        with self._unit(begin=False) as conn:
            # two round trips in all: BEGIN, the key's check and the ids; the new
            # rows, the counters and COMMIT
            drawn = self._begin(conn, key, *([self._ids(len(builds))] if builds else []))
            ids = sorted(row[0] for row in drawn[0]) if builds else []
            unit = _Unit(self, conn)
            docs = []
            for sid, build in zip(ids, builds, strict=True):
                doc = build(sid)
                unit.insert(sid, doc)
                docs.append(doc)
            unit.finish(commit=True)
        return docs

    def _locked(self, conn: psycopg.Connection, sid: int, key: RequestKey | None = None
                ) -> tuple[Doc, int]:
        """BEGIN, the key's check and service ``sid``, locked, in one round trip."""
        rows = self._begin(conn, key, ("get_locked", (sid,)))[0]
        if not rows:
            raise NotFound(f"There is no service {sid}")
        return decode(rows[0][0].encode()), rows[0][1]

    def update_service(self, sid: int, change: Callable[[Doc], T],
                       key: RequestKey | None = None) -> tuple[T, Doc]:
        _known(sid)
        with self._unit(begin=False) as conn:
            doc, size = self._locked(conn, sid, key)
            old = _records(doc)
            result = change(doc)
            unit = _Unit(self, conn)
            unit.update(sid, doc, old, size)
            unit.finish(commit=True)
        return result, doc

    def find_or_create(self, wanted: Sequence[tuple[str | None, str | None]],
                       choose: Callable[[int, list[Doc]], Doc | None],
                       build: Callable[[int, int], Doc],
                       change: Callable[[int, Doc, bool], T],
                       key: RequestKey | None = None) -> list[tuple[T, Doc, bool]]:
        customers = sorted({c for c, _ in wanted if c is not None})
        contacts = sorted({k or "" for c, k in wanted if c is None})
        with self._unit(begin=False) as conn:
            # two callers on the same customer (or contact key) take turns here, on any
            # app server: the second sees the service the first made
            *_, owned = self._begin(
                conn, key,
                *[("lock", (self._lock_name("customer", c),)) for c in customers],
                *[("lock", (self._lock_name("anonymous", k),)) for k in contacts],
                ("owned_locked", ([_col(c) for c in customers], [_col(k) for k in contacts])))
            here: dict[int, Doc] = {}  # read or made in this unit, as changed so far
            before: dict[int, tuple[dict[str, str], int]] = {}  # records and size as read
            for sid, body, size in owned:
                here[sid] = decode(body.encode())
                before[sid] = (_records(here[sid]), size)
            made: list[int] = []
            chosen: set[int] = set()
            out = []
            for i, (customer_id, contact_key) in enumerate(wanted):
                docs = [here[sid] for sid in sorted(here)
                        if _owned(here[sid], customer_id, contact_key)]
                doc = choose(i, docs)
                created = doc is None
                if doc is None:
                    sid = self._new_ids(conn, 1)[0]
                    doc = here[sid] = build(i, sid)
                    made.append(sid)
                out.append((change(i, doc, created), doc, created))
                chosen.add(doc["service_id"])
            unit = _Unit(self, conn)
            for sid in sorted(chosen):
                if sid in made:
                    unit.insert(sid, here[sid])
                else:
                    unit.update(sid, here[sid], *before[sid])
            unit.finish(commit=True)
        return out

    def put_request(self, key: RequestKey, record: Doc | None,
                    unless: Callable[[Doc], bool] | None = None) -> None:
        with self._unit() as conn:
            self._lock_on(conn, "key", key.name)
            row = conn.execute(self._t["get_request"], (key.name, key.now)).fetchone()
            if row is not None and unless is not None:
                current = json.loads(row[0])
                if unless(current):
                    raise Recorded(current)
            conn.execute(self._t["drop_expired_own"], (key.now,))
            if record is None:
                conn.execute(self._t["drop_own"], (key.name,))
            else:
                conn.execute(self._t["put_request"],
                             (key.name, STORE_DOC, json.dumps(record, ensure_ascii=True),
                              str(record.get("until", ""))))

    def delete_service(self, sid: int) -> None:
        _known(sid)
        with self._unit(begin=False) as conn:
            _, size = self._locked(conn, sid)
            unit = _Unit(self, conn)
            unit.delete(sid, size)
            unit.finish(commit=True)

    def rewrite_services(self, sids: Iterable[int], change: Callable[[Doc], bool | None]
                         ) -> tuple[int, int]:
        sids = [sid for sid in dict.fromkeys(sids) if 0 < sid <= MAX_SERVICE_ID]
        written = deleted = 0
        with self._unit() as conn:
            rows = {sid: (body, size) for sid, body, size in
                    conn.execute(self._t["many_locked"], (sids,)).fetchall()}
            unit = _Unit(self, conn)
            for sid in sids:
                if sid not in rows:
                    continue
                doc, size = decode(rows[sid][0].encode()), rows[sid][1]
                old = _records(doc)
                verdict = change(doc)
                if verdict is None:
                    unit.delete(sid, size)
                    deleted += 1
                elif verdict:
                    unit.update(sid, doc, old, size)
                    written += 1
            unit.finish(commit=True)
        return written, deleted

    def put_services(self, docs: Iterable[Doc | Encoded], on_conflict: str = "fail") -> int:
        if on_conflict not in ON_CONFLICT:
            raise ValueError(f"on_conflict: one of {', '.join(ON_CONFLICT)}")
        # (documents already encoded save the file engine the encoding; here each
        # one's columns are taken from the document, so it is read back)
        docs = [decode(doc.body) if isinstance(doc, Encoded) else doc for doc in docs]
        for doc in docs:
            sid = doc.get("service_id")
            if isinstance(sid, bool) or not isinstance(sid, int) or not 0 < sid <= MAX_SERVICE_ID:
                raise ValueError(f"service_id {sid!r} is not an id from 1 to 2^53 - 1")
        if not docs:
            return 0
        with self._unit() as conn:
            # no one draws an id while the sequence is moved past the imported ones
            conn.execute(self._t["lock_exclusive"], (self._lock_name("ids", ""),))
            ids = [doc["service_id"] for doc in docs]
            existing = {sid: (body, size) for sid, body, size in
                        conn.execute(self._t["many_locked"], (ids,)).fetchall()}
            if existing and on_conflict == "fail":
                raise import_conflict([sid for sid in dict.fromkeys(ids) if sid in existing])
            if on_conflict == "skip":
                docs = [doc for doc in docs if doc["service_id"] not in existing]
            unit = _Unit(self, conn)
            for doc in docs:
                sid = doc["service_id"]
                if sid in existing:
                    body, size = existing[sid]
                    unit.update(sid, doc, _records(decode(body.encode())), size)
                else:
                    body = unit.insert(sid, doc)
                    existing[sid] = (body, len(body))
            unit.finish()
            conn.execute(self._t["move_ids"], (max(ids),) * 2)
        return len(docs)

    # ----------------------------------------------------------------- upkeep
    @contextmanager
    def periodic(self, name: str, every: float) -> Iterator[bool]:
        """One process of the deployment at a time, by a session advisory lock held on
        a connection of its own for the length of the job (the server drops it if
        the process dies); when it was last done is in the ``jobs`` table."""
        self._pool()
        shared = self._shared
        assert shared is not None
        job = self._lock_name("job", name)
        with shared.jobs_lock:
            if job in shared.running:  # another thread of this process runs it
                mine = False
            else:
                shared.running.add(job)
                mine = True
        if not mine:
            yield False
            return
        try:
            conn = self._jobs_connection(shared)
            try:
                locked = conn.execute(self._t["try_lock"], (job,)).fetchone()[0]
            except psycopg.Error as exc:
                raise self._mapped(exc) from None
            if not locked:
                yield False
                return
            try:
                with self._unit(write=False) as tx:
                    recent = tx.execute(self._t["job_recent"], (name, every)).fetchone()
                if recent is not None:
                    yield False
                    return
                yield True
                with self._unit() as tx:
                    tx.execute(self._t["job_done"], (name,))
            finally:
                try:
                    conn.execute(self._t["unlock"], (job,))
                except psycopg.Error:
                    pass  # a connection that broke released its locks with it
        finally:
            with shared.jobs_lock:
                shared.running.discard(job)

    def _jobs_connection(self, shared: _Shared) -> psycopg.Connection:
        with shared.jobs_lock:
            conn = shared.jobs_conn
            if conn is None or conn.closed or conn.broken:
                try:
                    conn = psycopg.connect(self.settings.dsn, autocommit=True,
                                           connect_timeout=max(2, int(self.settings.lock_timeout)))
                    self.settings.configure(conn)
                except psycopg.Error as exc:
                    raise self._mapped(exc) from None
                shared.jobs_conn = conn
            return conn

    def _figures(self, conn: psycopg.Connection) -> tuple[int, int, int]:
        services, live, garbage = conn.execute(self._t["totals"]).fetchone()
        return int(services), int(live), int(garbage)

    def compact(self, above: float | None = None) -> bool:
        """Forget the bytes of old versions and removed services, and VACUUM the
        tables (a plain VACUUM: it makes their space reusable and blocks no read or
        write; the files keep their size, as VACUUM FULL would not). With
        ``above``, only when they are more than ``above`` times the live data."""
        with self._unit() as conn:
            conn.execute(self._t["counters_locked"])
            _, live, garbage = self._figures(conn)
            if above is not None and live + garbage <= above * live:
                return False
            conn.execute(self._t["forget_garbage"])
        self.vacuum()
        return True

    def vacuum(self) -> None:
        """VACUUM (ANALYZE) the store's tables, with no statement timeout."""
        with self._connection() as conn:
            conn.execute("SET statement_timeout = 0")
            try:
                conn.execute(self._t["vacuum"])
            finally:
                conn.execute("RESET statement_timeout")

    def reclaim(self) -> bool:
        """Compact when old versions and removed services passed ``compact_min_bytes``
        and ``compact_ratio`` times the live data since the last compaction
        (PostgreSQL's autovacuum reclaims space meanwhile, by its own rules)."""
        with self._unit(write=False) as conn:
            _, live, garbage = self._figures(conn)
        total = live + garbage
        if total <= self.compact_min_bytes or total <= self.compact_ratio * live:
            return False
        try:
            return self.compact(above=self.compact_ratio)
        except StoreFailure as exc:
            log.warning("compaction postponed: %s", exc.message)
            return False

    def stats(self) -> StoreStats:
        with self._unit(write=False) as conn:
            services, live, garbage = self._figures(conn)
        return StoreStats(services, live + garbage, garbage)

    def audit(self) -> tuple[StoreStats, list[str]]:
        """``contextsvc check``: verify, writing nothing, that the schema is at this
        code's version, that every row holds the document of its own id, and that the
        counters agree with the rows; return the figures, and notes. Raises
        StoreCorrupt naming what is wrong."""
        with self._unit(snapshot=True) as conn:
            version = schema_version(conn, self.schema)
            if version != SCHEMA_VERSION:
                raise StoreCorrupt(f"schema {self.schema} is at version {version}, not "
                                   f"{SCHEMA_VERSION}: run contextsvc db upgrade")
            wrong = conn.execute(self._t["audit_ids"]).fetchone()
            if wrong is not None:
                raise StoreCorrupt(f"schema {self.schema}: the row of service {wrong[0]} holds "
                                   f"another document (service_id {wrong[1]})")
            counted = conn.execute(self._t["audit_totals"]).fetchone()
            services, live, garbage = self._figures(conn)
            if (services, live) != (int(counted[0]), int(counted[1])):
                raise StoreCorrupt(f"schema {self.schema}: the counters say {services} services "
                                   f"of {live} bytes, the rows {counted[0]} of {counted[1]}")
        return StoreStats(services, live + garbage, garbage), [
            "PostgreSQL checks its own pages; this checked the schema version, each row's "
            "document and the counters"]

    def backup(self, dest: str, overwrite: bool = False,
               progress: Progress | None = None) -> StoreStats:
        """Write the store to ``dest`` as a data file of the file engine (see the
        contract), read in one REPEATABLE READ snapshot: writers do not wait at all.
        (For a backup of the database itself, use pg_dump.)"""

        def fill(tmp: str) -> StoreStats:
            with self._unit(snapshot=True) as conn:
                last = int(conn.execute(self._t["last_id"]).fetchone()[0])
                own = {key: json.loads(record) for key, record
                       in conn.execute(self._t["own_requests"]).fetchall()}
                head = [(STORE_DOC, encode_store_doc({REQUESTS: own}))] if own else []
                with conn.cursor(name="contextsvc_backup") as cur:
                    cur.itersize = 500
                    cur.execute(self._t["all"])
                    engine = LogFile(tmp)
                    try:
                        engine.rewrite(_chain(head, ((sid, body.encode()) for sid, body
                                                     in cur)), last)
                    finally:
                        engine.close()
            return verify_copy(tmp, progress)

        return write_copy(dest, overwrite, fill)

    def close(self) -> None:
        with self._lock:
            shared, self._shared = self._shared, None
        if shared is not None and self._pid == os.getpid():
            _release(self.settings, shared)


def _chain(*parts: Iterable[Any]) -> Iterator[Any]:
    for part in parts:
        yield from part


def _owned(doc: Doc, customer_id: str | None, contact_key: str | None) -> bool:
    """Whether ``doc`` is among the customer's services (customer_id given) or the
    anonymous services of contact_key, as the indexes would have it."""
    if customer_id is not None:
        return doc.get("customer_id") == customer_id
    return doc.get("customer_id") is None and doc.get("contact_key") == (contact_key or "")


def _statements(s: sql.Identifier) -> dict[str, sql.Composable]:
    q = sql.SQL

    def f(text: str) -> sql.Composable:
        return q(text).format(s=s)

    statements = {
        "get": f("SELECT doc::text FROM {s}.services WHERE id = %s"),
        "get_locked": f("SELECT doc::text, bytes FROM {s}.services WHERE id = %s FOR UPDATE"),
        "many_locked": f("SELECT id, doc::text, bytes FROM {s}.services WHERE id = ANY(%s) "
                         "ORDER BY id FOR UPDATE"),
        "owned_locked": f("SELECT id, doc::text, bytes FROM {s}.services "
                          "WHERE customer_id = ANY(%s) OR (customer_id IS NULL AND "
                          "contact_key = ANY(%s)) ORDER BY id FOR UPDATE"),
        "by_customer": f("SELECT id, doc::text FROM {s}.services WHERE customer_id = %s "
                         "ORDER BY id"),
        "anonymous": f("SELECT id, doc::text FROM {s}.services WHERE customer_id IS NULL "
                       "AND contact_key = %s ORDER BY id"),
        "scan": f("SELECT id, doc::text FROM {s}.services WHERE id > %s ORDER BY id LIMIT %s"),
        "scan_due": f("SELECT id, doc::text FROM {s}.services WHERE id > %s AND due IS NOT NULL "
                      "AND due <= %s ORDER BY id LIMIT %s"),
        "all": f("SELECT id, doc::text FROM {s}.services ORDER BY id"),
        "insert": f("INSERT INTO {s}.services (id, doc, bytes, customer_id, contact_key, due, "
                    "started, completed, service_type) "
                    "VALUES (%s, %s::json, %s, %s, %s, %s, %s, %s, %s)"),
        "update": f("UPDATE {s}.services SET doc = %s::json, bytes = %s, stale = stale + %s, "
                    "customer_id = %s, contact_key = %s, due = %s, started = %s, "
                    "completed = %s, service_type = %s WHERE id = %s"),
        "delete": f("DELETE FROM {s}.services WHERE id = %s"),
        "get_request": f("SELECT record::text FROM {s}.requests WHERE key = %s AND until > %s"),
        "put_request": f("INSERT INTO {s}.requests (key, service_id, record, until) "
                         "VALUES (%s, %s, %s::json, %s) ON CONFLICT (key) DO UPDATE SET "
                         "service_id = EXCLUDED.service_id, record = EXCLUDED.record, "
                         "until = EXCLUDED.until"),
        "drop_keys": f("DELETE FROM {s}.requests WHERE key = ANY(%s) AND service_id = %s"),
        "drop_requests": f("DELETE FROM {s}.requests WHERE service_id = %s"),
        "drop_own": f("DELETE FROM {s}.requests WHERE key = %s AND service_id = 0"),
        "drop_expired_own": f("DELETE FROM {s}.requests WHERE service_id = 0 AND until <= %s"),
        "own_requests": f("SELECT key, record::text FROM {s}.requests WHERE service_id = 0 "
                          "ORDER BY key"),
        # a row no other transaction holds (each holds its row until its COMMIT, flush
        # and synchronous standby included), this connection's own first; when every
        # row is held, this connection's own, waiting for it: one statement, whose
        # result the writer need not look at (it goes with the COMMIT)
        "count": f("UPDATE {s}.counters SET services = services + %s, "
                   "bytes = bytes + %s, garbage = garbage + %s WHERE shard = coalesce(("
                   "SELECT shard FROM {s}.counters "
                   "ORDER BY (shard - pg_backend_pid()) %% %s = 0 DESC, shard "
                   "LIMIT 1 FOR UPDATE SKIP LOCKED), pg_backend_pid() %% %s)"),
        "totals": f("SELECT coalesce(sum(services), 0), coalesce(sum(bytes), 0), "
                    "coalesce(sum(garbage), 0) FROM {s}.counters"),
        "counters_locked": f("SELECT shard FROM {s}.counters ORDER BY shard FOR UPDATE"),
        "forget_garbage": f("UPDATE {s}.counters SET garbage = 0 WHERE garbage <> 0"),
        "last_id": f("SELECT CASE WHEN is_called THEN last_value ELSE 0 END "
                     "FROM {s}.service_ids"),
        # shared: an import (exclusive) moves the sequence only when no one draws from
        # it; the lock is taken (once) before the first id is drawn
        "next_ids": q("WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared("
                      "hashtextextended(%s, 0))) SELECT nextval({}) FROM l, "
                      "generate_series(1, %s)").format(
            sql.Literal(f"{s.as_string(None)}.service_ids")),
        "move_ids": q("SELECT setval({seq}, %s) WHERE %s > (SELECT CASE WHEN is_called THEN "
                      "last_value ELSE 0 END FROM {s}.service_ids)").format(
            seq=sql.Literal(f"{s.as_string(None)}.service_ids"), s=s),
        "lock": q("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"),
        "lock_exclusive": q("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"),
        "try_lock": q("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"),
        "unlock": q("SELECT pg_advisory_unlock(hashtextextended(%s, 0))"),
        "job_recent": f("SELECT 1 FROM {s}.jobs WHERE name = %s "
                        "AND done_at > clock_timestamp() - make_interval(secs => %s)"),
        "job_done": f("INSERT INTO {s}.jobs (name, done_at) VALUES (%s, clock_timestamp()) "
                      "ON CONFLICT (name) DO UPDATE SET done_at = EXCLUDED.done_at"),
        "vacuum": f("VACUUM (ANALYZE) {s}.services, {s}.requests, {s}.counters, {s}.jobs"),
        "audit_ids": f("SELECT id, doc->>'service_id' FROM {s}.services "
                       "WHERE (doc->>'service_id') IS DISTINCT FROM id::text LIMIT 1"),
        "audit_totals": f("SELECT count(*), coalesce(sum(bytes), 0) FROM {s}.services"),
    }
    # rendered once: psycopg renders a Composed query again on every execution
    return {name: q(statement.as_string(None)) for name, statement in statements.items()}


# The statements of the reads a request makes and of a write's round trips, prepared
# once on each connection and then sent by name with their values in the query's
# text (EXECUTE), several in one query: psycopg's cost on this side is per query
# sent, and is most of a short write's CPU here; the server plans each of them once
# per connection, as for psycopg's own prepared statements.
_SENT = ("get", "by_customer", "anonymous", "scan", "scan_due", "totals", "last_id",
         "lock", "get_request", "next_ids", "get_locked", "owned_locked", "insert", "update",
         "delete", "drop_requests", "drop_keys", "put_request", "count")
_PLACEHOLDER = re.compile(r"%%|%s")


@dataclass(frozen=True)
class _Prepared:
    token: str  # names this set of statements on a connection
    prepare: tuple[bytes, ...]
    execute: dict[str, bytes]  # name -> "EXECUTE <prepared>(%s, ...)", bound on this side


def _prepared(statements: dict[str, sql.Composable]) -> _Prepared:
    texts = {name: statements[name].as_string(None) for name in _SENT}
    token = "cs_" + hashlib.blake2b("\0".join(texts.values()).encode(),
                                     digest_size=8).hexdigest()
    prepare, execute = [], {}
    for name, text in texts.items():
        count = 0

        def number(match: re.Match[str]) -> str:
            nonlocal count
            if match.group(0) == "%%":
                return "%"
            count += 1
            return f"${count}"

        prepared = f"{token}_{name}"
        prepare.append(f"PREPARE {prepared} AS {_PLACEHOLDER.sub(number, text)}".encode())
        execute[name] = (f"EXECUTE {prepared}({', '.join(['%s'] * count)})" if count
                         else f"EXECUTE {prepared}").encode()
    return _Prepared(token, tuple(prepare), execute)


# which sets of statements each connection has prepared (a new connection has none)
_ready: weakref.WeakKeyDictionary[psycopg.Connection, set[str]] = weakref.WeakKeyDictionary()
