"""Durability: SIGKILL of the gunicorn master and every worker in the middle of a
write storm loses no acknowledged write, and the store opens afterwards."""

import http.client
import json
import os
import signal
import threading
import time

import pytest

from contextsvc import create_app
from tests.gunicorn_server import Server
from tests.pgcluster import TEST_ENGINE


def storm(server, stop, acked, errors):
    """Start services, states and attached-data writes until the server dies."""
    while not stop.is_set():
        try:
            status, body, _ = server.request("POST", "/services/start",
                                             {"customer_id": "storm", "n": 0}, timeout=5)
            if status != 201:
                errors.append(status)
                continue
            sid = body["service_id"]
            acked.setdefault(sid, {"states": [], "n": 0})
            for n in range(1, 4):
                status, body, _ = server.request("POST", f"/services/{sid}/states/start", {},
                                                 timeout=5)
                if status != 201:
                    errors.append(status)
                    break
                acked[sid]["states"].append(body["state_id"])
                status, _, _ = server.request("PUT", f"/services/{sid}/extensions/n", n,
                                              timeout=5)
                if status != 200:
                    errors.append(status)
                    break
                acked[sid]["n"] = n
        except (OSError, http.client.HTTPException):
            return  # the server is gone (possibly in the middle of an answer)


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_during_writes_loses_no_acknowledged_write(tmp_path, round_):
    db = str(tmp_path / "contextsvc.json")
    acked: dict = {}
    errors: list = []
    for _life in range(2):  # kill, restart on the same file, write more, kill again
        server = Server(db, workers=4)
        stop = threading.Event()
        threads = [threading.Thread(target=storm, args=(server, stop, acked, errors))
                   for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(1.0 + 0.37 * round_)
        os.killpg(server.proc.pid, signal.SIGKILL)  # master and workers, no cleanup
        server.proc.wait()
        stop.set()
        for thread in threads:
            thread.join()
        server.log.close()
    assert not errors
    assert len(acked) > 20, "the storm wrote too little to test anything"

    client = create_app({"storage": {"path": db}}).test_client()  # opens, repairs
    for sid, expect in acked.items():
        r = client.get(f"/services/{sid}")
        assert r.status_code == 200, f"acknowledged service {sid} lost"
        assert r.get_json()["n"] >= expect["n"]
        stored = {s["state_id"] for s in client.get(f"/services/{sid}/states").get_json()}
        assert set(expect["states"]) <= stored
    listed = {s["service_id"] for s in client.get("/customers/storm/services").get_json()}
    assert set(acked) <= listed
    if TEST_ENGINE == "file":
        json.loads(open(db, "rb").read())  # plain JSON (and so plain TinyDB) again


TORN = {
    "half a record": b',"9": {"service_id":9,"custo',
    "record without trailer": b',"9": {"service_id":9,"customer_id":null,"contact_key":"k"}\n}',
    "trailer cut": b"}",
}


@pytest.mark.file_engine("reads the data file")
@pytest.mark.parametrize("tail", TORN.values(), ids=TORN.keys())
def test_torn_writes_at_the_trailer_are_repaired(tmp_path, tail):
    path = tmp_path / "db.json"
    client = create_app({"storage": {"path": str(path)}}).test_client()
    sid = client.post("/services/start", json={"customer_id": "C"}).get_json()["service_id"]
    data = path.read_bytes()
    at = data.rindex(b"\n}}\n") + 1
    path.write_bytes(data[:at] + tail + b" " * 5 + data[at + len(tail) + 5:])
    again = create_app({"storage": {"path": str(path)}}).test_client()
    assert again.get(f"/services/{sid}").status_code == 200
    json.loads(path.read_bytes())
    new = again.post("/services/start", json={"customer_id": "C"}).get_json()["service_id"]
    assert [s["service_id"] for s in again.get("/customers/C/services").get_json()][:1] == [sid]
    assert new > sid


@pytest.mark.file_engine("reads the data file")
def test_a_file_cut_short_after_a_record_is_repaired(tmp_path):
    path = tmp_path / "db.json"
    client = create_app({"storage": {"path": str(path)}}).test_client()
    sid = client.post("/services/start", json={"customer_id": "C"}).get_json()["service_id"]
    data = path.read_bytes()
    path.write_bytes(data[:data.rindex(b"\n}}\n") + 1])  # no trailer, no padding
    again = create_app({"storage": {"path": str(path)}}).test_client()
    assert again.get(f"/services/{sid}").status_code == 200
    json.loads(path.read_bytes())
    assert again.post("/services/start", json={"customer_id": "C"}).status_code == 201


@pytest.mark.file_engine("reads the data file")
def test_a_held_lock_answers_503_with_retry_after(tmp_path):
    import fcntl

    path = tmp_path / "db.json"
    app = create_app({"storage": {"path": str(path), "lock_timeout": 0.3}})
    client = app.test_client()
    sid = client.post("/services/start", json={"customer_id": "C"}).get_json()["service_id"]
    with open(str(path) + ".lock", "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process holds the store
        started = time.monotonic()
        r = client.post(f"/services/{sid}/states/start")
        assert time.monotonic() - started < 2
        assert r.status_code == 503 and r.headers["Retry-After"]
        assert r.get_json()["exception"] == "ServiceUnavailable"
        assert client.get(f"/services/{sid}").status_code == 503
    assert client.get(f"/services/{sid}/states").get_json() == []
