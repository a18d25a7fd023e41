"""``contextsvc purge`` and ``contextsvc sweep`` as installed: what each purge
operation removes, purging and sweeping under a real ``gunicorn -w 4`` with writes
going on, a sweep that waits for the one another process runs. Lifecycle durations
are seconds of real time."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from contextsvc import create_app
from contextsvc.config import load
from contextsvc.storage import open_store, tinydb_snapshot
from tests.commands import (
    COMMAND,
    Writers,
    client,
    contextsvc,
    errors_in_log,
    figures,
    holds,
)
from tests.gunicorn_server import Server

LIMIT = "2026-01-01T00:00:00.000Z"
BEFORE, AFTER = "2025-06-01T10:00:00.000Z", "2026-01-02T10:00:00.000Z"
KINDS = {  # started before LIMIT; (completed, anonymous)
    "active": (False, False), "active anonymous": (False, True),
    "completed": (True, False), "completed anonymous": (True, True),
}
PURGED = {
    "purge.service.all": set(KINDS),
    "purge.service.started": {"active", "active anonymous"},
    "purge.service.started.anonymous": {"active anonymous"},
    "purge.service.completed": {"completed", "completed anonymous"},
    "purge.service.completed.anonymous": {"completed anonymous"},
}


def start(api, started: str, completed: bool, anonymous: bool, **extra) -> int:
    who = {"contact_key": "k"} if anonymous else {"customer_id": "C", "contact_key": "k"}
    sid = api.post("/services/start", json={**who, "timestamp": started, **extra}
                   ).get_json()["service_id"]
    if completed:
        assert api.post(f"/services/{sid}/end", json={"timestamp": started}).status_code == 204
    return sid


def on_disk(path) -> dict[int, dict]:
    with tinydb_snapshot(path) as db:
        return {doc.doc_id: dict(doc) for doc in db.table("services").all()}


# ------------------------------------------------------------------ purge
@pytest.mark.parametrize("operation", PURGED)
def test_each_purge_operation_removes_what_it_names_and_only_before_the_limit(tmp_path,
                                                                                operation):
    path = tmp_path / "db.json"
    api = client(path)
    old = {kind: [start(api, BEFORE, *how) for _ in range(2)] for kind, how in KINDS.items()}
    new = [start(api, AFTER, *how) for how in KINDS.values()]
    result = figures(contextsvc("purge", "--limit", LIMIT, "--operation", operation, path=path))
    gone = {sid for kind in PURGED[operation] for sid in old[kind]}
    assert result == {"purged": str(len(gone))}
    api = client(path)
    for sids in old.values():
        for sid in sids:
            assert api.get(f"/services/{sid}").status_code == (404 if sid in gone else 200)
    for sid in new:
        assert api.get(f"/services/{sid}").status_code == 200
    assert figures(contextsvc("purge", "--limit", LIMIT, "--operation", operation,
                              path=path)) == {"purged": "0"}


@pytest.mark.parametrize("args, says", [
    (("--limit", "yesterday", "--operation", "purge.service.all"), "'--limit'"),
    (("--limit", "2026-02-30T00:00:00Z", "--operation", "purge.service.all"), "'--limit'"),
    (("--limit", LIMIT, "--operation", "purge.service.everything"), "'--operation'"),
    (("--limit", LIMIT), "'--operation'"),
    (("--operation", "purge.service.all"), "'--limit'"),
])
def test_a_bad_limit_or_operation_is_bad_usage(tmp_path, args, says):
    path = tmp_path / "db.json"
    api = client(path)
    sid = start(api, BEFORE, False, False)
    result = contextsvc("purge", *args, path=path)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert client(path).get(f"/services/{sid}").status_code == 200


def test_purge_under_a_running_server_loses_no_write(tmp_path):
    path = tmp_path / "db.json"
    api = client(path, fsync=False)
    completed = [start(api, BEFORE, True, i % 2 == 0, pad="p" * 500) for i in range(400)]
    active = [start(api, BEFORE, False, i % 2 == 0, pad="p" * 500) for i in range(100)]
    server = Server(str(path), workers=4)
    writers = None
    try:
        # new services, and updates of old active ones (kept) all along the purge
        writers = Writers(server, targets=active)
        while len(writers.acked) < 100:
            time.sleep(0.05)
        purged = figures(contextsvc("purge", "--limit", LIMIT, "--operation",
                                    "purge.service.completed", path=path))
        done = time.monotonic()
        while sum(when > done for when, _, _ in writers.acked) < 50:
            time.sleep(0.05)
        writers.stop()
        assert purged == {"purged": "400"}
        assert not writers.refused, writers.refused[:3]
        assert not holds(server, writers.newest_before(float("inf")))
        assert any(sid in active for _, sid, _ in writers.acked)
        for sid in completed[::10]:
            assert server.request("GET", f"/services/{sid}")[0] == 404
        for sid in active:
            assert server.request("GET", f"/services/{sid}")[0] == 200
        assert not errors_in_log(server)
    finally:
        if writers is not None:
            writers.stop()
        server.stop()
    assert not set(completed) & set(on_disk(path))


# ------------------------------------------------------------------ sweep
LIFECYCLE = {"CONTEXTSVC_LIFECYCLE_EXPIRATION": "3s",
             "CONTEXTSVC_LIFECYCLE_AUTO_COMPLETE_AFTER": "1s",
             # only the command sweeps (a server's first sweep would otherwise come
             # a few seconds after it starts)
             "CONTEXTSVC_LIFECYCLE_SERVER_SWEEPS": "false"}


@pytest.mark.file_engine("reads the data file")
def test_sweep_removes_what_expired_and_writes_auto_completions_the_server_agrees(tmp_path):
    path = tmp_path / "db.json"
    server = Server(str(path), workers=4, extra_env=LIFECYCLE)
    try:
        def started(**body):
            status, doc, _ = server.request("POST", "/services/start",
                                            {"customer_id": "L", **body})
            assert status == 201
            return doc["service_id"]

        expiring = [started() for _ in range(20)]  # idle 1 s, gone 3 s after
        idle = [started(ttl=3600) for _ in range(10)]  # completes after 1 s, stays
        kept = [started(ttl=3600, auto_complete_after=0) for _ in range(5)]
        time.sleep(3.5)
        assert server.request("GET", f"/services/{expiring[0]}")[0] == 404  # time decides
        stored = on_disk(path)
        assert set(expiring) <= set(stored)  # ...and nothing has written it down yet
        assert not any("completed" in stored[sid] for sid in idle)

        swept = figures(contextsvc("sweep", path=path, env=LIFECYCLE))
        assert swept == {"removed": "20", "auto-completed": "10"}
        stored = on_disk(path)
        assert set(stored) == set(idle + kept)
        for sid in idle:
            assert stored[sid]["completed"]["auto_completed"] is True
            status, doc, _ = server.request("GET", f"/services/{sid}")
            assert status == 200 and doc["completed"]["auto_completed"] is True
        for sid in kept:
            assert "completed" not in stored[sid]
            assert "completed" not in server.request("GET", f"/services/{sid}")[1]
        for sid in expiring:
            assert server.request("GET", f"/services/{sid}")[0] == 404
        listed = server.request("GET", "/customers/L/services")[1]
        assert sorted(doc["service_id"] for doc in listed) == sorted(idle + kept)
        assert figures(contextsvc("sweep", path=path, env=LIFECYCLE)) == {
            "removed": "0", "auto-completed": "0"}  # written once
        assert figures(contextsvc("check", path=path))["services"] == "15"
        assert not errors_in_log(server)
    finally:
        server.stop()


@pytest.mark.file_engine("reads the data file")
def test_sweep_uses_the_expiration_of_each_service_type_from_the_configuration(tmp_path):
    path = tmp_path / "db.json"
    (tmp_path / "lifecycle.ini").write_text(
        "[lifecycle]\nsweep_interval = 1h\n\n[expiration]\nShort-Lived = 1s\n")
    api = create_app({"storage": {"path": str(path)}, "lifecycle": {"sweep_interval": "1h"},
                      "expiration": {"Short-Lived": "1s"}}).test_client()  # the same rules
    short = [api.post("/services/start", json={"customer_id": "T", "service_type": "Short-Lived"}
                      ).get_json()["service_id"] for _ in range(4)]
    other = [api.post("/services/start", json={"customer_id": "T", "service_type": "short-lived"}
                      ).get_json()["service_id"] for _ in range(3)]
    time.sleep(1.5)
    swept = figures(contextsvc("sweep", path=path,
                               env={"CONTEXTSVC_CONFIG": str(tmp_path / "lifecycle.ini")}))
    assert swept == {"removed": "4", "auto-completed": "0"}
    assert set(on_disk(path)) == set(other)
    assert not set(short) & set(on_disk(path))


def test_a_full_sweep_reads_services_written_before_the_configuration_changed(tmp_path):
    path = tmp_path / "db.json"
    api = client(path)  # no lifecycle configured: nothing is due, none is indexed as due
    sids = [start(api, BEFORE, False, False) for _ in range(5)]
    time.sleep(1.2)
    shorter = {"CONTEXTSVC_LIFECYCLE_EXPIRATION": "1s"}
    # an ordinary sweep reads what the store's index says is due: not these
    assert figures(contextsvc("sweep", path=path, env=shorter))["removed"] == "0"
    assert figures(contextsvc("sweep", "--full", path=path, env=shorter))["removed"] == "5"
    assert not set(sids) & set(on_disk(path))


@pytest.mark.file_engine("reads the data file")
def test_sweep_waits_for_the_sweep_another_process_is_running(tmp_path):
    path = tmp_path / "db.json"
    api = client(path)
    sids = [api.post("/services/start", json={"contact_key": "k", "ttl": 1}
                     ).get_json()["service_id"] for _ in range(3)]
    time.sleep(1.2)
    store = open_store(load({"storage": {"path": str(path)}}, environ={}))
    holding, release, released = threading.Event(), threading.Event(), []

    def server_sweeping():  # as a server's sweeper holds it
        with store.periodic("sweep", 0) as mine:
            assert mine
            holding.set()
            release.wait(30)
            released.append(time.monotonic())

    holder = threading.Thread(target=server_sweeping)
    holder.start()
    try:
        assert holding.wait(10)
        sweeping = subprocess.Popen([COMMAND, "sweep"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True,
                                    env={"CONTEXTSVC_STORAGE_PATH": str(path), "PATH": ""})
        time.sleep(1.5)
        assert sweeping.poll() is None  # waiting
    finally:
        release.set()
        holder.join()
    out, err = sweeping.communicate(timeout=60)
    ended = time.monotonic()
    assert sweeping.returncode == 0 and err == "", err
    assert out.splitlines() == ["removed: 3", "auto-completed: 0"]
    assert released[0] < ended and not set(sids) & set(on_disk(path))
    with store.periodic("sweep", 3600) as mine:
        assert not mine  # the command's sweep counts as the deployment's sweep
    store.close()
