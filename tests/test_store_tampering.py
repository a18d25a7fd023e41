"""What happens to the file store when the world around it misbehaves: another
process compacts, an operator deletes the lock file or swaps the data file, the
disk turns read-only, a reader opens the live file, the disk fills up. Each test
is named after what it guards."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from tinydb import TinyDB

from contextsvc import create_app
from contextsvc.errors import StoreCorrupt
from tests.gunicorn_server import Server

pytestmark = pytest.mark.file_engine  # about the data file


def make(path, **storage):
    return create_app({"storage": {"path": str(path), **storage}}).test_client()


def workers_of(server):
    out = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True)
    return sorted(int(pid) for pid in out.stdout.split())


def wait_until_every_worker_opened_the_store(server, path):
    """Workers boot one after the other: wait until each holds the store's files."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = workers_of(server)
        opened = 0
        for pid in pids:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
                links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds]
            except OSError:
                break
            opened += str(path) in links
        if pids and opened == len(pids):
            return pids
        time.sleep(0.05)
    raise AssertionError("the workers did not open the store")


def respawn_one_worker(server, path):
    before = wait_until_every_worker_opened_the_store(server, path)
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = workers_of(server)
        if len(now) == len(before) and before[0] not in now:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("gunicorn did not respawn the worker")
    wait_until_every_worker_opened_the_store(server, path)


# ------------------------------------------------------------------ compaction
def test_queries_after_another_process_compacts_answer_200(tmp_path):
    path = tmp_path / "db.json"
    reader, writer = make(path), make(path, compact_min_bytes=1, compact_ratio=1.0001)
    sids = [reader.post("/services/start", json={"customer_id": "C"}).get_json()["service_id"]
            for _ in range(3)]
    anon = reader.post("/services/start", json={"contact_key": "k"}).get_json()["service_id"]
    assert len(reader.get("/customers/C/services").get_json()) == 3
    assert len(reader.get("/services/anonymous/k").get_json()) == 1
    # the other "worker" deletes and associates, and compacts the file after each
    compact = writer.application.extensions["contextsvc.stores"].get().reclaim
    assert writer.delete(f"/services/{sids[0]}").status_code == 200 and compact()
    assert writer.post(f"/customers/X/services/{anon}").status_code == 200 and compact()
    assert writer.put(f"/services/{sids[1]}/extensions/n", json=2).status_code == 200
    assert compact()
    r = reader.get("/customers/C/services")
    assert r.status_code == 200, r.get_json()
    assert [(s["service_id"], s.get("n")) for s in r.get_json()] == [(sids[1], 2), (sids[2], None)]
    r = reader.get("/services/anonymous/k")
    assert r.status_code == 200 and r.get_json() == []
    assert [s["service_id"] for s in reader.get("/customers/X/services").get_json()] == [anon]


# ------------------------------------------------------------------ the lock file
def test_a_deleted_lock_file_never_gives_an_id_twice(tmp_path):
    path = tmp_path / "db.json"
    server = Server(str(path), workers=2)
    try:
        assert server.request("POST", "/services/start", {"customer_id": "L"})[0] == 201
        wait_until_every_worker_opened_the_store(server, path)
        os.unlink(str(path) + ".lock")
        respawn_one_worker(server, path)  # the new worker creates a new lock file

        def starts(t):
            ids = []
            for i in range(300):
                status, body, _ = server.request("POST", "/services/start",
                                                 {"customer_id": "L", "t": t, "i": i,
                                                  "pad": "p" * 2_000})
                assert status == 201, body
                ids.append(body["service_id"])
            return ids

        with ThreadPoolExecutor(8) as pool:
            ids = [sid for chunk in pool.map(starts, range(8)) for sid in chunk]
        assert len(ids) == len(set(ids)) == 2400
        _, listed, _ = server.request("GET", "/customers/L/services")
        assert len(listed) == 2401
        for sid in ids[::37]:
            status, doc, _ = server.request("GET", f"/services/{sid}")
            assert status == 200 and doc["service_id"] == sid
    finally:
        server.stop()
    with TinyDB(path, access_mode="r") as db:
        assert len(db.table("services")) == 2401


# ------------------------------------------------------------------ the data file
def test_a_data_file_replaced_in_place_is_refused_not_written_over(tmp_path):
    path = tmp_path / "db.json"
    client = make(path)
    for i in range(3):
        client.post("/services/start", json={"customer_id": "R", "i": i})
    backup = tmp_path / "backup.json"
    shutil.copyfile(path, backup)
    for i in range(3, 6):
        client.post("/services/start", json={"customer_id": "R", "i": i})
    shutil.copyfile(backup, path)  # cp backup.json db.json: same inode, older content
    restored = path.read_bytes()

    r = client.post("/services/start", json={"customer_id": "R"})
    assert r.status_code == 503, r.get_json()
    assert "replaced" in r.get_json()["message"] and r.headers["Retry-After"]
    r = client.get("/customers/R/services")
    assert r.status_code == 503
    assert path.read_bytes() == restored  # nothing written over it
    # a restart takes the restored file as it is: no silent loss of later records
    again = make(path)
    assert [s["i"] for s in again.get("/customers/R/services").get_json()] == [0, 1, 2]


def test_a_deleted_data_file_is_refused_and_ids_are_not_reused(tmp_path):
    path = tmp_path / "db.json"
    client = make(path)
    sid = client.post("/services/start", json={"customer_id": "D"}).get_json()["service_id"]
    os.unlink(path)
    r = client.post("/services/start", json={"customer_id": "D"})
    assert r.status_code == 503 and "deleted" in r.get_json()["message"]
    assert client.get(f"/services/{sid}").status_code == 503
    assert not path.exists()


def test_an_older_file_moved_into_place_is_refused(tmp_path):
    path = tmp_path / "db.json"
    client = make(path)
    client.post("/services/start", json={"customer_id": "M"})
    backup = tmp_path / "backup.json"
    shutil.copyfile(path, backup)
    last = client.post("/services/start", json={"customer_id": "M"}).get_json()["service_id"]
    os.replace(backup, path)  # mv backup.json db.json: a new inode with fewer ids
    r = client.post("/services/start", json={"customer_id": "M"})
    assert r.status_code == 503, r.get_json()
    assert client.get(f"/services/{last}").status_code == 503


def test_records_after_the_end_of_the_file_stop_the_start(tmp_path):
    path = tmp_path / "db.json"
    client = make(path)
    client.post("/services/start", json={"customer_id": "E"})
    data = path.read_bytes().rstrip()
    stray = b'\n,"9": {"service_id":9,"customer_id":"E","contact_key":null}\n'
    path.write_bytes(data + stray)  # a record written after the closing }}
    with pytest.raises(StoreCorrupt, match="after the end"):
        make(path)


# ------------------------------------------------------------------ an unwritable file
def immutable(path, on):
    """chattr +i: nobody, root included, may open the file for writing or write it."""
    done = subprocess.run(["chattr", "+i" if on else "-i", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make a file immutable here: {done.stderr.strip()}")


def test_workers_boot_and_serve_reads_on_an_unwritable_file(tmp_path):
    path = tmp_path / "db.json"
    server = Server(str(path), workers=2)
    try:
        status, body, _ = server.request("POST", "/services/start", {"customer_id": "RO", "v": 1})
        assert status == 201, body
        sid = body["service_id"]
        immutable(path, True)
        for _ in range(2):  # every worker boots again, on a file it cannot write
            respawn_one_worker(server, path)
        assert server.proc.poll() is None, "gunicorn's master stopped"
        for _ in range(8):
            status, doc, _ = server.request("GET", f"/services/{sid}")
            assert status == 200 and doc["v"] == 1
        status, body, headers = server.request("POST", "/services/start", {"customer_id": "RO"})
        assert status == 503 and "cannot write" in body["message"], body
        assert headers["Retry-After"]
        immutable(path, False)
        for _ in range(8):  # writes come back with no restart, on every worker
            status, body, _ = server.request("PUT", f"/services/{sid}/extensions/v", 2)
            assert status == 200, body
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        server.stop()


# ------------------------------------------------------------------ readers of the file
def test_a_snapshot_of_the_live_file_never_sees_a_half_written_record(tmp_path):
    from contextsvc.storage import tinydb_snapshot

    path = tmp_path / "db.json"
    client = make(path, fsync=False)
    sid = client.post("/services/start", json={"customer_id": "S"}).get_json()["service_id"]
    stop, first = threading.Event(), threading.Event()
    statuses = []
    part = "x" * 60_000  # (a string's limit is 65,536 characters)

    def write():
        n = 0
        while not stop.is_set():
            n += 1
            big = {"n": n, **{f"p{i}": part for i in range(8)}}  # 480 kB a write
            statuses.append(client.put(f"/services/{sid}/extensions/big", json=big).status_code)
            first.set()
            # let the reader have the GIL: a thread that never waits keeps it for
            # whole switch intervals, at each of the reader's many reads
            stop.wait(0.002)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert first.wait(30)
        seen, values = 0, set()
        for _ in range(60):
            with tinydb_snapshot(path) as db:
                doc = db.table("services").get(doc_id=sid)
            assert doc["customer_id"] == "S"
            big = doc["data"]["big"]
            assert big == {"n": big["n"], **{f"p{i}": part for i in range(8)}}  # whole
            assert big["n"] >= seen  # and never older than one seen before
            seen = big["n"]
            values.add(seen)
    finally:
        stop.set()
        writer.join()
    assert set(statuses) == {200}
    assert len(values) >= 5  # the snapshots were taken during the writes


# ------------------------------------------------------------------ a full disk
def test_a_full_disk_uses_its_last_free_space(small_disk):
    client = make(small_disk / "db.json")
    stat = os.statvfs(small_disk)
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * (stat.f_bavail * stat.f_frsize - (1 << 20) - (256 << 10)))
    written = 0
    for _ in range(500):
        r = client.post("/services/start", json={"customer_id": "F", "pad": "p" * 20_000})
        if r.status_code != 201:
            break
        written += 1
    assert r.status_code == 503 and "disk full" in r.get_json()["message"]
    stat = os.statvfs(small_disk)
    free = stat.f_bavail * stat.f_frsize
    assert free < 64 << 10, f"503 with {free} bytes still free"
    assert written > 50
    json.loads((small_disk / "db.json").read_bytes())


# ------------------------------------------------------------------ size of a service
def test_a_write_that_makes_a_service_too_large_is_413_and_changes_nothing(tmp_path):
    path = tmp_path / "db.json"
    client = create_app({"storage": {"path": str(path)},
                         "limits": {"max_service_bytes": 200_000}}).test_client()
    sid = client.post("/services/start", json={"customer_id": "B"}).get_json()["service_id"]
    for i in range(3):
        assert client.put(f"/services/{sid}/extensions/k{i}", json="x" * 60_000
                          ).status_code == 200
    before = path.read_bytes()
    r = client.put(f"/services/{sid}/extensions/k9", json="x" * 60_000)
    assert r.status_code == 413 and r.get_json()["exception"] == "PayloadTooLarge"
    assert "200000" in r.get_json()["message"]
    assert client.post(f"/services/{sid}/states/start", json={"p": "y" * 60_000}
                       ).status_code == 413
    assert path.read_bytes() == before
    assert "k9" not in client.get(f"/services/{sid}").get_json()
    big = client.post("/services/start", json={"customer_id": "B", "p": "z" * 60_000,
                                               "q": "z" * 60_000, "r": "z" * 60_000,
                                               "s": "z" * 60_000})
    assert big.status_code == 413


# ------------------------------------------------------------------ large answers
def big_service(client, customer, started, n, kilobytes=400):
    chunks = {f"blob{i}": "b" * 50_000 for i in range(kilobytes // 50)}
    r = client.post("/services/start", json={"customer_id": customer, "timestamp": started,
                                              "service_type": n % 2, "n": n, **chunks})
    assert r.status_code == 201, r.get_json()
    return r.get_json()["service_id"]


def test_a_large_query_answer_is_ordered_and_filtered_as_a_small_one(client):
    # 6 × 400 KB: over the size above which answers are streamed
    stamps = ["2026-01-05T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-04T00:00:00Z",
              "2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z", "2026-01-02T00:00:00Z"]
    sids = [big_service(client, "BIG", stamp, n) for n, stamp in enumerate(stamps)]
    client.post(f"/services/{sids[2]}/end")
    r = client.get("/customers/BIG/services?extensions=n")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert [s["n"] for s in r.get_json()] == [3, 1, 5, 4, 2, 0]
    assert all(set(s) <= {"service_id", "customer_id", "service_type", "started", "n",
                          "completed", "duration"} for s in r.get_json())
    r = client.get("/customers/BIG/services/active?service_types=1&extensions=n")
    assert [s["n"] for s in r.get_json()] == [3, 1, 5]
    full = client.get("/customers/BIG/services/completed").get_json()
    assert [s["service_id"] for s in full] == [sids[2]] and len(full[0]["blob0"]) == 50_000
    assert client.get("/customers/BIG/services?started_from=2030-01-01T00:00:00Z"
                      ).get_json() == []


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))


def test_a_worker_does_not_hold_a_whole_large_answer_in_memory(tmp_path):
    server = Server(str(tmp_path / "db.json"), workers=1)
    try:
        client = create_app({"storage": {"path": str(tmp_path / "db.json")}}).test_client()
        for n in range(60):  # 60 services of 900 KB: a 54 MB answer
            big_service(client, "HUGE", f"2026-01-01T00:00:{n:02d}Z", n, kilobytes=900)
        assert server.request("GET", "/services/anonymous/warm-up")[0] == 200
        server.request("GET", "/customers/HUGE/services/active?extensions=n")
        [worker] = workers_of(server)
        before = peak_rss_kb(worker)
        status, body, _ = server.request("GET", "/customers/HUGE/services", timeout=120)
        assert status == 200 and [s["n"] for s in body] == list(range(60))
        grown_mb = (peak_rss_kb(worker) - before) / 1024
        assert grown_mb < 20, f"the worker grew by {grown_mb:.0f} MB for a 54 MB answer"
    finally:
        server.stop()


def test_a_data_file_restored_in_place_under_gunicorn_is_refused_by_every_worker(tmp_path):
    """Item 3 under a real gunicorn: ``cp backup.json db.json`` while the workers
    run. Every worker refuses (503, a log line) instead of reusing ids or writing
    over the restored file; a restart takes the file as it is."""
    path = tmp_path / "db.json"
    server = Server(str(path), workers=2)
    try:
        for i in range(3):
            assert server.request("POST", "/services/start", {"customer_id": "R", "i": i})[0] == 201
        wait_until_every_worker_opened_the_store(server, path)
        backup = tmp_path / "backup.json"
        shutil.copyfile(path, backup)
        for i in range(3, 6):
            assert server.request("POST", "/services/start", {"customer_id": "R", "i": i})[0] == 201
        for _ in range(8):  # every worker sees at least one read
            server.request("GET", "/customers/R/services")
        shutil.copyfile(backup, path)
        restored = path.read_bytes()
        statuses = [server.request("POST", "/services/start", {"customer_id": "R"})[0]
                    for _ in range(12)]
        assert set(statuses) == {503}, statuses
        assert server.request("GET", "/customers/R/services")[0] == 503
        assert path.read_bytes() == restored
    finally:
        server.stop()
    with open(str(path) + ".gunicorn.log") as log:
        assert "refuses to read or write it again" in log.read()
    again = make(path)
    assert [s["i"] for s in again.get("/customers/R/services").get_json()] == [0, 1, 2]
