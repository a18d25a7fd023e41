"""Group commit: the greenlets of a gevent worker share disk flushes, and a flush
that fails fails every write it covered (none of them is acknowledged).

Each case runs in a subprocess, since gevent must patch the process before
anything else runs; greenlets switch only where they yield, so the runs are
deterministic."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from contextsvc.storage import LogFile, LogStore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = """
from gevent import monkey
monkey.patch_all()
import gevent, json, os, sys
from contextsvc.storage import LogFile, LogStore

store = LogStore(LogFile(sys.argv[1]))
flushes, real = [], os.fdatasync

def flush(fd):
    flushes.append(fd)
    if sys.argv[2] == "fail" and len(flushes) == 2:
        raise OSError(5, "Input/output error")
    real(fd)

os.fdatasync = flush
results = []

def work(n):
    for i in range(5):
        try:
            doc = store.create_service(lambda sid: {"service_id": sid, "customer_id": "G",
                                                    "n": n, "i": i})
            results.append(doc["service_id"])
        except Exception as exc:
            results.append(type(exc).__name__)

gevent.joinall([gevent.spawn(work, n) for n in range(4)])
print(json.dumps({"flushes": len(flushes), "results": results}))
"""


def run(path: str, mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, path, mode], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_greenlets_writing_together_share_flushes(tmp_path):
    path = str(tmp_path / "db.json")
    got = run(path, "ok")
    assert sorted(got["results"]) == list(range(1, 21))
    assert got["flushes"] <= 10  # one flush per write would be 20
    store = LogStore(LogFile(path))
    try:
        assert store.count() == 20
    finally:
        store.close()


def test_a_failed_flush_fails_every_write_it_covered(tmp_path):
    path = str(tmp_path / "db.json")
    got = run(path, "fail")
    failed = [r for r in got["results"] if r == "StoreFailure"]
    acknowledged = [r for r in got["results"] if isinstance(r, int)]
    assert len(failed) > 1  # the writer that flushed, and those that waited for it
    assert len(failed) + len(acknowledged) == 20
    store = LogStore(LogFile(path))
    try:
        for sid in acknowledged:
            assert store.get_service(sid)["customer_id"] == "G"
    finally:
        store.close()
