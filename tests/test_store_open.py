"""Opening a large store: workers starting together read it side by side, outside
the store's lock, so that none of them waits behind the others' reads (which used
to make the last of four workers give up after lock_timeout and gunicorn stop)."""

from __future__ import annotations

import os

import pytest

from contextsvc.storage import LogFile, LogStore
from tests.gunicorn_server import Server

pytestmark = pytest.mark.file_engine  # about the data file

PAD = "x" * 1500


def preload(path: str, n: int) -> None:
    store = LogStore(LogFile(path))
    try:
        for start in range(0, n, 1000):
            store.create_services([
                lambda sid, i=i: {"service_id": sid, "customer_id": f"C{i % 50}",
                                  "started": {"timestamp": "2026-01-01T00:00:00.000Z"},
                                  "data": {"pad": PAD}, "states": [], "tasks": []}
                for i in range(start, min(n, start + 1000))])
    finally:
        store.close()


def test_four_workers_open_a_large_store_within_a_short_lock_timeout(tmp_path):
    path = str(tmp_path / "big.json")
    preload(path, 30_000)
    assert os.path.getsize(path) > 45_000_000
    # Closing the store left an index checkpoint, from which a worker opens the
    # store without reading the file: this test is about the read, so it goes.
    os.unlink(path + ".idx")
    # each worker's read of the whole file takes longer than this on its own
    server = Server(path, workers=4, extra_env={"CONTEXTSVC_STORAGE_LOCK_TIMEOUT": "0.3"})
    try:
        assert server.proc.poll() is None
        status, body, _ = server.request("GET", "/customers/C7/services")
        assert status == 200 and len(body) == 600
        for _ in range(40):  # every worker answers, and sees what the others write
            status, body, _ = server.request("POST", "/services/start", {"customer_id": "N"})
            assert status == 201, body
        status, body, _ = server.request("GET", "/customers/N/services")
        assert status == 200 and len(body) == 40
    finally:
        server.stop()
    with open(path + ".gunicorn.log") as log:
        text = log.read()
    assert "busy" not in text and "Worker failed to boot" not in text, text


def test_a_store_opened_after_another_process_wrote_reads_its_writes(tmp_path):
    path = str(tmp_path / "db.json")
    preload(path, 100)
    first = LogStore(LogFile(path))
    try:
        sid = first.create_service(lambda sid: {
            "service_id": sid, "customer_id": "late", "started": {"timestamp": "x"},
            "data": {}, "states": [], "tasks": []})["service_id"]
        first.delete_service(1)
        second = LogStore(LogFile(path))
        try:
            assert second.count() == 100
            assert second.get_service(sid)["customer_id"] == "late"
            assert second.last_id() == sid
            new = second.create_service(lambda s: {
                "service_id": s, "started": {"timestamp": "x"}, "data": {}, "states": [],
                "tasks": []})
            assert new["service_id"] == sid + 1
            assert first.get_service(sid + 1)["service_id"] == sid + 1
        finally:
            second.close()
    finally:
        first.close()
