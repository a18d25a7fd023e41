"""Failover of the postgresql engine (issue 14): a real gunicorn on a primary with a
synchronous standby, through a multi-host DSN; the primary crashes (SIGKILL of
all its processes) during a storm of writes and the standby is promoted. Every
write the app acknowledged is on the new primary; requests in between are
answered 503 with Retry-After, never 500 and never held past the engine's
timeouts; the app reconnects by itself.

The negative controls show what the check would see if it were not so: with an
asynchronous standby that stopped receiving, acknowledged writes are lost and the
check names them; with the synchronous standby down, a write is answered as of
unknown outcome, not acknowledged.

On real PostgreSQL clusters (tests/pgreplication.py), never a mock; skipped,
saying why, without PostgreSQL's binaries.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from tests import pgcluster
from tests.gunicorn_server import Server
from tests.pgreplication import FAST, Node

why = pgcluster.missing()
pytestmark = pytest.mark.skipif(why is not None, reason=why or "")

LOCK_TIMEOUT = 2.0  # [storage] lock_timeout: the longest wait for a connection or a lock
STATEMENT_TIMEOUT = 3.0  # [storage] statement_timeout
# A hang guard, not a measurement: no request may be held longer than a wait for a
# connection plus a statement plus a COMMIT, with room for a busy machine
ANSWER_WITHIN = LOCK_TIMEOUT + 2 * STATEMENT_TIMEOUT + 10
SYNCHRONOUS = {**FAST, "synchronous_commit": "on"}


def app_env(dsn: str, schema: str) -> dict[str, str]:
    return {"CONTEXTSVC_STORAGE_ENGINE": "postgresql", "CONTEXTSVC_STORAGE_DSN": dsn,
            "CONTEXTSVC_STORAGE_SCHEMA": schema,
            "CONTEXTSVC_STORAGE_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
            "CONTEXTSVC_STORAGE_STATEMENT_TIMEOUT": str(STATEMENT_TIMEOUT),
            "CONTEXTSVC_LIFECYCLE_SWEEP_INTERVAL": "1d"}


def multi_host_dsn(*nodes: Node) -> str:
    """libpq's multi-host form: the first of them that takes writes."""
    return (f"host={','.join('127.0.0.1' for _ in nodes)} "
            f"port={','.join(str(node.port) for node in nodes)} "
            f"user={pgcluster.SUPERUSER} dbname=postgres target_session_attrs=read-write "
            "connect_timeout=2")


def documents(node: Node, schema: str) -> dict[int, dict]:
    """Every service document in ``schema`` on ``node``, by id, read with psql (as
    stored: attached data under ``data``)."""
    out = node.psql(f"SELECT doc::text FROM {schema}.services")
    return {doc["service_id"]: doc for doc in map(json.loads, out.splitlines())}


class Ledger:
    """What the app acknowledged: the services it started (id -> customer and
    ``n``) and, per service, the last value of ``v`` it acknowledged. Each service
    is written by one thread only, with growing values."""

    def __init__(self) -> None:
        self.started: dict[int, tuple[str, int]] = {}
        self.values: dict[int, int] = {}
        self.twice: list[int] = []  # ids acknowledged for two services
        self.lock = threading.Lock()

    def start(self, server: Server, customer: str, n: int) -> tuple[int, dict, dict]:
        status, body, headers = server.request("POST", "/services/start",
                                               {"customer_id": customer, "n": n},
                                               timeout=ANSWER_WITHIN)
        if status == 201:
            with self.lock:
                if body["service_id"] in self.started:
                    self.twice.append(body["service_id"])
                self.started[body["service_id"]] = (customer, n)
        return status, body, headers

    def update(self, server: Server, sid: int, value: int) -> tuple[int, dict, dict]:
        status, body, headers = server.request("PUT", f"/services/{sid}/extensions/v", value,
                                               timeout=ANSWER_WITHIN)
        if status == 200:
            with self.lock:
                self.values[sid] = value
        return status, body, headers

    def missing(self, docs: dict[int, dict]) -> list[str]:
        """The acknowledged writes that ``docs`` (a database's services) lack. A write
        answered 503 after the one acknowledged may have been made (its outcome is
        unknown), so a later value of ``v`` counts as having the acknowledged one."""
        lost = []
        for sid, (customer, n) in sorted(self.started.items()):
            doc = docs.get(sid)
            if doc is None or (doc["customer_id"], doc["data"].get("n")) != (customer, n):
                lost.append(f"service {sid} started for {customer} (n={n}): found {doc}")
        for sid, value in sorted(self.values.items()):
            found = docs[sid]["data"].get("v") if sid in docs else None
            if not isinstance(found, int) or found < value:
                lost.append(f"service {sid}: v={value} acknowledged, v={found} found")
        return lost

    def count(self) -> int:
        with self.lock:
            return len(self.started) + len(self.values)


class Storm:
    """Threads that start services and update them through the app as fast as it
    answers, recording each acknowledged write in a :class:`Ledger` and every
    other answer: a 503 must carry Retry-After, nothing else may come back (a 500,
    a hang past ANSWER_WITHIN)."""

    def __init__(self, server: Server, threads: int = 8):
        self.server, self.ledger = server, Ledger()
        self.answers: Counter[int] = Counter()
        self.wrong: list[str] = []
        self.after = 0.0  # acknowledged writes sent after this moment are counted
        self.acked_after = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,)) for t in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, t: int) -> None:
        sid, i = None, 0
        while not self._stop.is_set():
            i += 1
            sent = time.monotonic()
            try:
                if sid is None or i % 4 == 0:
                    status, body, headers = self.ledger.start(self.server, f"storm{t}", i)
                    if status == 201:
                        sid = body["service_id"]
                else:
                    status, body, headers = self.ledger.update(self.server, sid, i)
            except OSError as exc:  # a timeout included: the hang guard
                self.wrong.append(f"thread {t}: no answer within {ANSWER_WITHIN} s ({exc!r})")
                return
            with self.ledger.lock:
                self.answers[status] += 1
                if status in (200, 201) and self.after and sent > self.after:
                    self.acked_after += 1
            if status not in (200, 201, 503) or (
                    status == 503 and not headers.get("Retry-After", "").isdigit()):
                self.wrong.append(f"thread {t}: {status} {headers} {body}")

    def wait(self, acknowledged: int, timeout: float, why: str) -> None:
        """Until ``acknowledged`` writes have been (counting from ``after``, once set)."""
        deadline = time.monotonic() + timeout
        while (self.acked_after if self.after else self.ledger.count()) < acknowledged:
            assert not self.wrong, self.wrong
            assert time.monotonic() < deadline, f"{why}: {dict(self.answers)}"
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


@pytest.fixture
def nodes():
    made: list[Node] = []
    yield made
    for node in reversed(made):
        node.close()


def synchronous_pair(nodes: list) -> tuple[Node, Node]:
    """A primary and its synchronous standby ("standby1"), streaming."""
    primary = Node(SYNCHRONOUS)
    nodes.append(primary)
    primary.set(synchronous_standby_names="standby1")
    standby = primary.standby("standby1", SYNCHRONOUS)
    nodes.append(standby)
    primary.wait_streaming("standby1", "sync")
    return primary, standby


def test_a_primary_crash_loses_no_acknowledged_write_and_the_app_reconnects(nodes, tmp_path):
    primary, standby = synchronous_pair(nodes)
    schema = pgcluster.fresh_schema()
    server = Server(str(tmp_path / "app"), workers=4,
                    extra_env=app_env(multi_host_dsn(primary, standby), schema))
    storm = None
    try:
        storm = Storm(server)
        storm.wait(200, 30, "writes were not acknowledged before the crash")
        primary.kill()
        # the outage lasts longer than a request may wait for a connection, so that
        # requests are answered during it, not only after
        time.sleep(LOCK_TIMEOUT + 1)
        standby.promote()
        storm.after = time.monotonic()
        storm.wait(200, 45, "the app did not take writes again on the new primary")
        storm.stop()
        assert not storm.wrong, storm.wrong
        assert storm.answers[503] > 0, f"no request was answered during the outage: {storm.answers}"
        docs = documents(standby, schema)
        assert storm.ledger.missing(docs) == []
        assert storm.ledger.twice == []
        # the app reads its writes back from the new primary
        status, services, _ = server.request("GET", "/customers/storm0/services")
        assert status == 200
        assert {d["service_id"] for d in services} >= {
            sid for sid, (customer, _) in storm.ledger.started.items() if customer == "storm0"}
    finally:
        if storm is not None:
            storm.stop()
        server.stop()


def test_with_an_asynchronous_standby_that_stopped_receiving_the_check_finds_lost_writes(
        nodes, tmp_path):
    """Negative control: the same crash and promotion without a synchronous standby;
    writes acknowledged while the standby received nothing are lost, and the check
    used above names exactly them."""
    primary = Node(SYNCHRONOUS)  # synchronous_commit on, but no synchronous standby
    nodes.append(primary)
    standby = primary.standby("standby1", SYNCHRONOUS)
    nodes.append(standby)
    primary.wait_streaming("standby1", "async")
    schema = pgcluster.fresh_schema()
    server = Server(str(tmp_path / "app"), workers=2,
                    extra_env=app_env(multi_host_dsn(primary, standby), schema))
    try:
        early, late = Ledger(), Ledger()
        for i in range(10):
            assert early.start(server, "early", i)[0] == 201
        # the standby has replayed everything so far, then its WAL receiver stops
        target = primary.psql("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + 30
        while standby.psql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'") != "t":
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.05)
        standby.set(primary_conninfo="")
        assert not standby.receiving()
        for i in range(10):
            assert late.start(server, "late", i)[0] == 201
        for sid in list(early.started)[:5]:
            assert early.update(server, sid, 1)[0] == 200
        primary.kill()
        standby.promote()
        docs = documents(standby, schema)
        assert set(early.started) <= set(docs)
        assert len(late.missing(docs)) == 10  # every service started late
        lost = early.missing(docs)  # and the five updates
        assert len(lost) == 5 and all("v=1 acknowledged, v=None found" in line for line in lost)
    finally:
        server.stop()


def test_with_the_synchronous_standby_down_a_write_is_answered_as_unknown(nodes, tmp_path):
    """Negative control: PostgreSQL commits on the primary and then waits for the
    standby, for ever, whatever statement_timeout says. The app gives up after its
    statement timeout and answers 503: the write may or may not have been made; it
    is never acknowledged. Reads go on meanwhile; writes are acknowledged again once
    the standby is back."""
    primary, standby = synchronous_pair(nodes)
    schema = pgcluster.fresh_schema()
    server = Server(str(tmp_path / "app"), workers=2,
                    extra_env=app_env(multi_host_dsn(primary, standby), schema))
    try:
        ledger = Ledger()
        assert ledger.start(server, "C", 0)[0] == 201
        sid = next(iter(ledger.started))
        standby.stop("immediate")
        answers: list[tuple[int, dict, dict]] = []

        def write(n: int) -> None:
            answers.append(ledger.start(server, "C", n))

        writers = [threading.Thread(target=write, args=(n,)) for n in (1, 2, 3)]
        for thread in writers:
            thread.start()
        status, body, _ = server.request("GET", f"/services/{sid}", timeout=ANSWER_WITHIN)
        assert status == 200 and body["n"] == 0
        update = ledger.update(server, sid, 7)
        for thread in writers:
            thread.join()
        for status, body, headers in [*answers, update]:
            assert status == 503, body
            assert headers["Retry-After"].isdigit()
            assert "may or may not have been made" in body["message"], body
        assert len(ledger.started) == 1 and ledger.values == {}
        # committed on the primary all the same: not acknowledged is not undone
        assert len(documents(primary, schema)) == 4
        standby.start()
        primary.wait_streaming("standby1", "sync")
        assert ledger.start(server, "C", 4)[0] == 201
    finally:
        server.stop()
