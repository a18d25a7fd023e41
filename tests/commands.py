"""Running the installed ``contextsvc`` command, and writing to a real server while
it runs, for the tests of the command's store-keeping subcommands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

from contextsvc import create_app
from tests.gunicorn_server import Server
from tests.pgcluster import ENGINE_VARIABLES

COMMAND = shutil.which("contextsvc", path=os.path.dirname(sys.executable))


def contextsvc(*args: str, path=None, env: dict[str, str] | None = None,
               **kwargs) -> subprocess.CompletedProcess:
    """The installed command, on the store at ``path``."""
    assert COMMAND, "the contextsvc command is installed with the package"
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("CONTEXTSVC_") or k in ENGINE_VARIABLES}  # the test's engine
    if path is not None:
        base["CONTEXTSVC_STORAGE_PATH"] = str(path)
    if "stderr" not in kwargs:
        kwargs["capture_output"] = True
    return subprocess.run([COMMAND, *args], text=True, timeout=120, env={**base, **(env or {})},
                          **kwargs)


def figures(result: subprocess.CompletedProcess) -> dict[str, str]:
    """The ``name: value`` lines a command prints."""
    assert result.returncode == 0, result.stderr
    return dict(line.split(": ", 1) for line in result.stdout.splitlines())


def one_line_failure(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("contextsvc: error: "), result.stderr
    return lines[0]


def client(path, **storage):
    # no sweep in the test's process: the tests damage and replace files under it
    return create_app({"storage": {"path": str(path), **storage},
                       "lifecycle": {"sweep_interval": "1d"}}).test_client()


def fill(path, starts: int, updates: int, pad: int = 50) -> list[int]:
    api = client(path, fsync=False)  # set-up: no need to wait for the disk
    sids = []
    for i in range(starts):
        body = {"customer_id": f"C{i % 3}", "pad": "p" * pad, "n": 100 + i}
        sids.append(api.post("/services/start", json=body).get_json()["service_id"])
    for i in range(updates):
        assert api.put(f"/services/{sids[i % starts]}/extensions/u", json=i).status_code == 200
    return sids


class Writers:
    """Threads writing to a server: each start and each update acknowledged (2xx)
    is recorded with the moment its answer arrived. A thread updates the services it
    started, or its share of ``targets`` (one writer per service: versions only grow)."""

    def __init__(self, server: Server, threads: int = 4, pad: int = 200,
                 targets: list[int] | None = None):
        self.server, self.pad, self.threads, self.targets = server, pad, threads, targets
        self.acked: list[tuple[float, int, int]] = []  # (when, service id, version)
        self.refused: list[tuple[int, object]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,)) for t in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, t: int) -> None:
        try:
            self._write(t)
        except Exception as exc:  # noqa: BLE001 - a refusal too (a worker gone, say)
            self.refused.append((0, exc))

    def _write(self, t: int) -> None:
        mine: list[int] = []
        pool = mine if self.targets is None else self.targets[t::self.threads]
        i = 0
        while not self._stop.is_set():
            i += 1
            if i % 3 or not pool:
                status, body, _ = self.server.request(
                    "POST", "/services/start", {"customer_id": f"W{t}", "v": 0,
                                                "pad": "w" * self.pad})
                if status == 201:
                    self.acked.append((time.monotonic(), body["service_id"], 0))
                    mine.append(body["service_id"])
                    continue
            else:
                sid = pool[i % len(pool)]
                status, body, _ = self.server.request("PUT", f"/services/{sid}/extensions/v", i)
                if status == 200:
                    self.acked.append((time.monotonic(), sid, i))
                    continue
            self.refused.append((status, body))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def newest_before(self, moment: float) -> dict[int, int]:
        """Service id -> the newest version acknowledged before ``moment``."""
        newest: dict[int, int] = {}
        for when, sid, version in self.acked:
            if when < moment:
                newest[sid] = max(version, newest.get(sid, 0))
        return newest


def holds(server: Server, newest: dict[int, int]) -> list[str]:
    """What ``server`` is missing of ``newest``."""
    missing = []
    for sid, version in newest.items():
        status, doc, _ = server.request("GET", f"/services/{sid}")
        if status != 200 or doc.get("v", -1) < version:
            missing.append(f"{sid}: {status} {doc}")
    return missing


def errors_in_log(server: Server) -> list[str]:
    with open(server.log.name, errors="replace") as log:
        return [line for line in log if "Traceback" in line or "[ERROR]" in line
                or " 500 " in line or " 503 " in line]
