"""A large store under a real ``gunicorn -w 4`` (issue 15): workers start from the
index checkpoint, which they map and share, instead of reading the whole file;
a worker forked from a preloaded master, or started in place of one that died,
sees every write; and every worker's view stays right while the file is
compacted, again and again, under writes."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from contextsvc.errors import NotFound
from contextsvc.storage import LogFile, LogStore
from tests.commands import contextsvc, figures
from tests.gunicorn_server import Server
from tests.test_store_tampering import wait_until_every_worker_opened_the_store, workers_of

SERVICES = 30_000
CUSTOMERS = 3_000  # ten services each


def preload(path, replaced: int = 0) -> None:
    """SERVICES services through the import API, then ``replaced`` of them again
    (old versions for a compaction to reclaim); closing leaves a checkpoint."""
    store = LogStore(LogFile(str(path), fsync=False))
    try:
        def doc(sid, n=0):
            return {"service_id": sid, "customer_id": f"cust-{sid % CUSTOMERS}",
                    "started": {"timestamp": "2026-01-01T00:00:00.000Z"},
                    "data": {"pad": "p" * 300, "n": n}, "states": [], "tasks": []}

        for start in range(1, SERVICES + 1, 5000):
            store.put_services([doc(sid) for sid in range(start, start + 5000)])
        for start in range(1, replaced + 1, 5000):
            store.put_services([doc(sid, 1) for sid in range(start, min(replaced + 1, start
                                                                          + 5000))],
                               on_conflict="replace")
    finally:
        store.close()
    assert os.path.exists(str(path) + ".idx")


def mapped_index(pid: int, path) -> bool:
    """Whether process ``pid`` maps the store's index checkpoint."""
    with open(f"/proc/{pid}/maps") as maps:
        return any(line.rstrip().endswith(str(path) + ".idx") for line in maps)


def check_services(server: Server, expected: dict[int, int | None], customers: dict[str, set],
                   rounds: int = 3):
    """Every service of ``expected`` reads as it says (n, or gone), and each
    customer of ``customers`` has exactly those services; asked ``rounds`` times,
    so that each worker answers some."""
    for _ in range(rounds):
        for sid, n in expected.items():
            status, doc, _ = server.request("GET", f"/services/{sid}")
            if n is None:
                assert status == 404, (sid, status, doc)
            else:
                assert status == 200 and doc["n"] == n, (sid, status, doc)
        for customer, sids in customers.items():
            status, docs, _ = server.request("GET", f"/customers/{customer}/services")
            assert status == 200 and {d["service_id"] for d in docs} == sids, customer


@pytest.mark.file_engine("preloads a data file")
def test_a_preloaded_server_and_a_freshly_forked_worker_see_every_write(tmp_path):
    path = tmp_path / "big.json"
    preload(path)
    server = Server(str(path), workers=4, extra_args=("--preload",))
    try:
        pids = wait_until_every_worker_opened_the_store(server, path)
        assert all(mapped_index(pid, path) for pid in pids)  # shared, not read into each
        expected: dict[int, int | None] = {}
        for _ in range(40):
            status, body, _ = server.request("POST", "/services/start", {"customer_id": "new"})
            assert status == 201, body
            expected[body["service_id"]] = None
        for sid in list(expected):
            assert server.request("PUT", f"/services/{sid}/extensions/n", 5)[0] == 200
            expected[sid] = 5
        for sid in range(7, SERVICES, 997):  # preloaded ones: moved, or deleted
            if sid % 2:
                assert server.request("POST", f"/customers/moved/services/{sid}")[0] == 200
                expected[sid] = 0
            else:
                assert server.request("DELETE", f"/services/{sid}")[0] == 200
                expected[sid] = None
        os.kill(pids[0], signal.SIGKILL)  # gunicorn forks another from the master
        deadline = time.monotonic() + 20
        while pids[0] in workers_of(server) or len(workers_of(server)) < 4:
            assert time.monotonic() < deadline, "no worker in place of the one that died"
            time.sleep(0.05)
        fresh = [pid for pid in wait_until_every_worker_opened_the_store(server, path)
                 if pid not in pids]
        assert fresh and mapped_index(fresh[0], path)
        check_services(server, expected, {
            "new": {sid for sid, n in expected.items() if n == 5},
            "moved": {sid for sid in range(7, SERVICES, 997) if sid % 2},
            "cust-7": {sid for sid in range(7, SERVICES + 1, CUSTOMERS)
                       if sid not in expected},
        })
    finally:
        server.stop()


@pytest.mark.file_engine("preloads a data file")
def test_every_workers_view_stays_right_across_compactions_under_writes(tmp_path):
    path = tmp_path / "big.json"
    preload(path, replaced=SERVICES // 2)
    server = Server(str(path), workers=4)
    acked: dict[int, int | None] = {}
    started: dict[str, set[int]] = {f"w{seed}": set() for seed in range(4)}  # live ones
    lock = threading.Lock()
    stop = threading.Event()
    errors: list = []

    def write(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[int] = []
        # preloaded services this writer updates: no other writer does, so the order
        # in which it records its acknowledged values is the order of its writes
        # (two writers' concurrent PUTs to one service may be recorded in the other
        # order than the store applied them)
        preloaded = list(range(1 + seed, SERVICES, 101 * 4))
        while not stop.is_set():
            try:
                choice = rng.random()
                if choice < 0.5 or not mine:
                    status, body, _ = server.request("POST", "/services/start",
                                                     {"customer_id": f"w{seed}", "n": 0})
                    if status != 201:
                        errors.append((status, body))
                        continue
                    sid = body["service_id"]
                    mine.append(sid)
                    n = 0
                elif choice < 0.8:
                    sid = rng.choice(mine + preloaded)
                    n = rng.randrange(1, 1000)
                    status, body, _ = server.request("PUT", f"/services/{sid}/extensions/n", n)
                    if status != 200:
                        errors.append((status, body))
                        continue
                else:
                    sid = mine.pop(rng.randrange(len(mine)))
                    status, body, _ = server.request("DELETE", f"/services/{sid}")
                    if status != 200:
                        errors.append((status, body))
                        continue
                    n = None
                with lock:
                    acked[sid] = n
                    if n is None:
                        started[f"w{seed}"].discard(sid)
                    elif sid > SERVICES:
                        started[f"w{seed}"].add(sid)
            except OSError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(seed,)) for seed in range(4)]
    try:
        for thread in threads:
            thread.start()
        compactions = []
        for _ in range(3):  # while the writers go on
            time.sleep(0.5)
            compactions.append(figures(contextsvc("compact", path=path)))
        stop.set()
        for thread in threads:
            thread.join()
        assert not errors, errors[:5]
        assert len(acked) > 50, "the writers wrote too little to test anything"
        first = compactions[0]  # it reclaimed the old versions
        assert int(first["bytes after"]) < 0.8 * int(first["bytes before"])
        # each writer's customer has exactly the services it started and did not delete
        check_services(server, acked, {
            **started,
            "cust-1": {sid for sid in range(1, SERVICES + 1, CUSTOMERS)},
        }, rounds=1)
        status, body, _ = server.request("GET", "/customers/cust-1/services")
        assert [doc["n"] for doc in body] == [acked.get(sid, 1 if sid <= SERVICES // 2 else 0)
                                              for sid in range(1, SERVICES + 1, CUSTOMERS)]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        server.stop()
    store = LogStore(LogFile(str(path)))  # and a process opened afterwards
    try:
        for sid, n in acked.items():
            if n is None:
                with pytest.raises(NotFound):
                    store.get_service(sid)
            else:
                assert store.get_service(sid)["data"]["n"] == n
    finally:
        store.close()
