"""Store faults: a full disk, a read-only or failing disk, a damaged file. Each
answers a JSON 5xx, keeps what was stored, and the service recovers by itself."""

import errno
import json
import os
import subprocess
import sys

import pytest
from tinydb import TinyDB

from contextsvc import create_app
from contextsvc.storage import logfile
from tests.gunicorn_server import ROOT, free_port

pytestmark = pytest.mark.file_engine  # about the data file


def test_full_disk_answers_503_keeps_data_and_recovers(small_disk):
    client = create_app({"storage": {"path": str(small_disk / "db.json")}}).test_client()
    stat = os.statvfs(small_disk)
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * (stat.f_bavail * stat.f_frsize - 64 * 1024))
    acked = {}
    for i in range(200):  # about 1 MiB of writes: past the room reserved in the file
        r = client.post("/services/start", json={"customer_id": "C", "n": i, "pad": "p" * 20000})
        if r.status_code != 201:
            break
        acked[r.get_json()["service_id"]] = i
    assert r.status_code == 503, "the disk never filled up"
    body = r.get_json()
    assert body["exception"] == "ServiceUnavailable" and "disk full" in body["message"]
    assert int(r.headers["Retry-After"]) > 0
    assert len(acked) > 10
    for sid, i in acked.items():  # everything acknowledged is intact and readable
        assert client.get(f"/services/{sid}").get_json()["n"] == i
    with TinyDB(small_disk / "db.json", access_mode="r") as db:
        assert len(db.table("services")) == len(acked)

    filler.unlink()  # space returns: the next write succeeds, with no restart
    r = client.post("/services/start", json={"customer_id": "C", "n": -1})
    assert r.status_code == 201
    assert len(client.get("/customers/C/services").get_json()) == len(acked) + 1


@pytest.mark.parametrize("call, code", [("pwrite", errno.EROFS), ("pwrite", errno.EIO),
                                        ("fdatasync", errno.EIO)])
def test_a_disk_that_refuses_writes_answers_503_and_recovers(tmp_path, monkeypatch, call, code):
    client = create_app({"storage": {"path": str(tmp_path / "db.json")}}).test_client()
    sid = client.post("/services/start", json={"customer_id": "C", "v": 1}
                      ).get_json()["service_id"]
    real = getattr(os, call)

    def failing(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(logfile.os, call, failing)  # the disk turns read-only / fails
    r = client.put(f"/services/{sid}/extensions/v", json=2)
    assert r.status_code == 503 and r.get_json()["exception"] == "ServiceUnavailable"
    assert r.headers["Retry-After"]
    assert client.get(f"/services/{sid}").status_code == 200  # reads still work
    monkeypatch.setattr(logfile.os, call, real)  # the disk is back
    assert client.put(f"/services/{sid}/extensions/v", json=3).status_code == 200
    assert client.get(f"/services/{sid}").get_json()["v"] == 3
    reopened = create_app({"storage": {"path": str(tmp_path / "db.json")}}).test_client()
    assert reopened.get(f"/services/{sid}").get_json()["v"] == 3
    json.loads((tmp_path / "db.json").read_bytes())


@pytest.mark.parametrize("damage", ["garbage", "directory", "truncated header"])
def test_gunicorn_refuses_to_start_on_a_damaged_file_and_names_it(tmp_path, damage):
    path = tmp_path / "db.json"
    if damage == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"\x00\x01 not json" if damage == "garbage" else b'{"_meta": {"1"')
    before = b"" if damage == "directory" else path.read_bytes()
    env = {**os.environ, "CONTEXTSVC_STORAGE_PATH": str(path)}
    env.pop("CONTEXTSVC_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{free_port()}",
         "wsgi:app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert str(path) in done.stdout + done.stderr
    if damage != "directory":
        assert path.read_bytes() == before  # nothing was written over it
