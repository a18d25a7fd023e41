"""Expiration and auto-complete end to end, under a real ``gunicorn -w 4`` with
durations of seconds: what clients see, what the sweepers write, and a SIGKILL of
every process in the middle of a sweep."""

import http.client
import os
import re
import signal
import threading
import time
from datetime import datetime, timezone

import pytest

from contextsvc import create_app
from contextsvc.storage import tinydb_snapshot
from tests.commands import contextsvc, figures
from tests.gunicorn_server import Server

LIFECYCLE = {"CONTEXTSVC_LIFECYCLE_SWEEP_INTERVAL": "1s",
             "CONTEXTSVC_LIFECYCLE_AUTO_COMPLETE_AFTER": "1s",
             "CONTEXTSVC_LIFECYCLE_EXPIRATION": "3s",
             "CONTEXTSVC_LOGGING_LEVEL": "info"}


def sweep_lines(server):
    with open(server.log.name) as log:
        return [line for line in log if "sweep" in line]


@pytest.mark.file_engine("reads the data file")
def test_services_complete_then_expire_and_the_sweepers_remove_them_once(tmp_path):
    path = tmp_path / "db.json"
    server = Server(str(path), workers=4, extra_env=LIFECYCLE)
    try:
        sids = []
        for i in range(40):
            status, body, _ = server.request("POST", "/services/start",
                                             {"customer_id": "E2E", "i": i})
            assert status == 201
            sids.append(body["service_id"])
            server.request("POST", f"/services/{body['service_id']}/states/start", {})
        status, kept, _ = server.request("POST", "/services/start",
                                         {"customer_id": "KEEP", "ttl": 3600,
                                          "auto_complete_after": 0})
        time.sleep(1.5)  # past the idle period: every worker shows them completed
        for sid in sids[:8]:
            status, doc, _ = server.request("GET", f"/services/{sid}?completed_states=true")
            assert status == 200 and doc["completed"]["auto_completed"] is True
            assert doc["completed_states"][0]["completed"]["auto_completed"] is True
            assert server.request("POST", f"/services/{sid}/end")[0] == 409
        time.sleep(2.5)  # past the expiration: gone for every route, sweep or not
        for sid in sids[:8]:
            assert server.request("GET", f"/services/{sid}")[0] == 404
        assert server.request("GET", "/customers/E2E/services")[1] == []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # within a couple of sweep intervals
            with tinydb_snapshot(path) as db:
                left = [d.doc_id for d in db.table("services").all()]
            if left == [kept["service_id"]]:
                break
            time.sleep(0.25)
        assert left == [kept["service_id"]]
        removed = sum(int(m.group(1)) for line in sweep_lines(server)
                      if (m := re.search(r"sweep: (\d+) expired services removed", line)))
        assert removed == 40  # each removed once, whichever worker swept
        assert not [line for line in sweep_lines(server) if "failed" in line]
        assert server.request("GET", f"/services/{kept['service_id']}")[0] == 200
    finally:
        server.stop()


@pytest.mark.file_engine("reads the data file")
def test_sigkill_during_a_sweep_loses_no_acknowledged_write(tmp_path):
    path = tmp_path / "db.json"
    expires = time.time() + 8  # once the server is up and taking writes
    moment = datetime.fromtimestamp(expires, timezone.utc).isoformat(timespec="milliseconds")
    loader = create_app({"storage": {"path": str(path)}})
    first = loader.test_client().post("/services/start", json={
        "customer_id": "OLD", "expiration_time": moment.replace("+00:00", "Z"),
        "pad": "p" * 300}).get_json()["service_id"]
    store = loader.extensions["contextsvc.stores"].get()
    model = store.get_service(first)  # 2,999 more like it, in one write
    store.create_services([lambda sid: {**model, "service_id": sid}] * 2999)
    assert time.time() < expires - 4, "loading took too long to test anything"
    server = Server(str(path), workers=4, extra_env=LIFECYCLE)
    acked, stop = [], threading.Event()

    def storm():
        while not stop.is_set():
            try:
                status, body, _ = server.request("POST", "/services/start",
                                                 {"customer_id": "NEW", "ttl": 3600}, timeout=5)
            except (OSError, http.client.HTTPException):  # killed while it answered
                return
            if status == 201:
                acked.append(body["service_id"])

    writers = [threading.Thread(target=storm) for _ in range(4)]
    for writer in writers:
        writer.start()
    try:
        while not acked and time.time() < expires:
            time.sleep(0.05)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until a sweep is under way
            at_kill = old_on_disk(path)
            if at_kill < 3000:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("no sweep got under way within 30 s")
        os.killpg(server.proc.pid, signal.SIGKILL)  # master and every worker
        server.proc.wait()
    finally:
        stop.set()
        for writer in writers:
            writer.join()
        server.stop()
    assert acked
    client = create_app({"storage": {"path": str(path)}}).test_client()  # the store opens
    listed = {s["service_id"] for s in client.get("/customers/NEW/services").get_json()}
    assert set(acked) <= listed
    assert client.get("/customers/OLD/services").get_json() == []
    # the batches swept before the kill stay swept, and a sweep removes the rest
    assert old_on_disk(path) <= at_kill
    figures(contextsvc("sweep", path=path))
    assert old_on_disk(path) == 0


def old_on_disk(path) -> int:
    """The services of customer OLD in the data file, expired or not."""
    with tinydb_snapshot(path) as db:
        return len(db.table("services").search(lambda d: d.get("customer_id") == "OLD"))
