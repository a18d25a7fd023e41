"""Export and import end to end, under gunicorn -w 4 (API.md 7.1, 7.2): an export
over HTTP and one by the command while clients start services, an import of it into
a fresh store that a second server then serves, and the same answers from both; an
import into a store while its server takes new services."""

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from contextsvc.domain import export, lifecycle
from tests.gunicorn_server import Server

COMMAND = shutil.which("contextsvc", path=os.path.dirname(sys.executable))
B = "/genesys/1/cs"
WHOLE = "active_states=true&completed_states=true&active_tasks=true&completed_tasks=true"
PRELOADED = 1500


def command(db, *args):
    env = {**os.environ, "CONTEXTSVC_STORAGE_PATH": str(db)}
    env.pop("CONTEXTSVC_CONFIG", None)
    result = subprocess.run([COMMAND, *args], capture_output=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def journey(sid, i):
    """A service as export writes it: two states, two tasks, attached data."""
    stamp = f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00.000Z"
    return {
        "service_id": sid, "customer_id": f"cust-{i % 60}", "contact_key": f"+1-408-{i:07d}",
        "service_type": 100 + i % 3, "started": {"timestamp": stamp, "interaction_id": f"IX{i}"},
        "coupon": {"coupon_name": "DISCOUNTCODE15"}, "notes": "caller asked about roaming",
        "active_states": [{"state_id": 2, "state_type": 2, "previous_state_id": 1,
                           "started": {"timestamp": stamp}, "queue": "wireless-sales"}],
        "completed_states": [{"state_id": 1, "state_type": 1, "started": {"timestamp": stamp},
                              "completed": {"timestamp": stamp}, "duration": 0}],
        "active_tasks": [{"task_id": 1, "task_type": 7, "state_id": 2,
                          "started": {"timestamp": stamp}, "step": "collect"}],
        "completed_tasks": [{"task_id": 2, "task_type": 7, "state_id": 1,
                             "started": {"timestamp": stamp}, "completed": {"timestamp": stamp},
                             "duration": 0}]}


def preload(db, tmp_path, sids):
    source = tmp_path / f"preload-{sids[0]}.ndjson"
    source.write_text("".join(json.dumps(journey(sid, i)) + "\n" for i, sid in enumerate(sids)))
    command(db, "import", str(source))


class Starters:
    """Clients starting services (new customers) until stopped; every answer kept."""

    def __init__(self, server, clients=4):
        self.server, self.stop = server, threading.Event()
        self.answers: list[tuple[int, object]] = []
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(clients)]
        for thread in self.threads:
            thread.start()

    def _run(self, n):
        i = 0
        try:
            while not self.stop.is_set():
                i += 1
                status, body, _ = self.server.request("POST", f"{B}/services/start", {
                    "customer_id": f"live-{n}-{i}", "contact_key": "live", "pad": "x" * 200})
                self.answers.append((status, body))
        except Exception as exc:  # noqa: BLE001 - kept as an answer, which finish() fails
            self.answers.append((0, exc))

    def count(self):
        return len(self.answers)

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        assert all(status == 201 for status, _ in self.answers), self.answers[:3]
        return [body["service_id"] for _, body in self.answers]


def wait_for(condition):
    deadline = threading.Event()
    for _ in range(3000):
        if condition():
            return
        deadline.wait(0.01)
    raise AssertionError("the starts did not go on")


@pytest.mark.file_engine("several stores in one test")
def test_export_under_load_import_elsewhere_and_the_same_answers(tmp_path):
    db, fresh = tmp_path / "a" / "db.json", tmp_path / "b" / "db.json"
    preload(db, tmp_path, list(range(1, PRELOADED + 1)))
    server = Server(str(db), workers=4)
    try:
        starters = Starters(server)
        wait_for(lambda: starters.count() > 20)
        # over HTTP, read slowly: the server's worker waits on the socket mid-export
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("GET", f"{B}/maintenance/services/stream?time_from=2000-01-01T00:00:00Z"
                            "&export_content=true", headers={"Accept": "application/x-ndjson"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/x-ndjson"
        head = response.read(64 << 10)
        before = starters.count()
        wait_for(lambda: starters.count() > before + 20)  # writes go on meanwhile
        over_http = head + response.read()
        conn.close()
        # and by the command, on the store the server is using
        by_command = command(db, "export")
        live = starters.finish()
    finally:
        server.stop()

    for exported in (over_http, by_command):
        lines = exported.splitlines()
        services = [json.loads(line) for line in lines]
        sids = [s["service_id"] for s in services]
        assert sids == sorted(set(sids))  # id order, each once
        assert sids[:PRELOADED] == list(range(1, PRELOADED + 1))
        assert set(sids[PRELOADED:]) <= set(live)
        for service in services:  # each one whole: it reads back as a service
            export.document(service, lifecycle.OFF, lifecycle.utc_now())
    assert over_http.splitlines()[:PRELOADED] == by_command.splitlines()[:PRELOADED]

    source = tmp_path / "exported.ndjson"
    source.write_bytes(by_command)
    command(fresh, "import", str(source))
    assert command(fresh, "export") == by_command

    one, two = Server(str(db), workers=2), Server(str(fresh), workers=2)
    try:
        for path in ["/customers/cust-7/services?" + WHOLE, "/customers/cust-59/services/active",
                     "/customers/cust-42/services?started_from=2026-01-10T00:00:00Z",
                     "/customers/live-0-1/services"]:  # started before the export
            status, body, _ = one.request("GET", B + path)
            assert status == 200 and body
            assert two.request("GET", B + path)[:2] == (status, body)
        status, body, _ = two.request("POST", f"{B}/services/start", {"customer_id": "new"})
        assert status == 201 and body["service_id"] == max(
            json.loads(line)["service_id"] for line in by_command.splitlines()) + 1
    finally:
        one.stop()
        two.stop()


def test_an_import_into_a_store_in_use_takes_no_id_from_the_server(tmp_path):
    """The import writes in batches while the server creates services: the ids of the
    file stay the file's, the server's go after them, nothing fails."""
    db = tmp_path / "db.json"
    preload(db, tmp_path, [1, 2, 3])
    server = Server(str(db), workers=4)
    try:
        starters = Starters(server)
        wait_for(lambda: starters.count() > 10)
        preload(db, tmp_path, list(range(5001, 5001 + 3000)))
        live = starters.finish()
        assert len(set(live)) == len(live)
        assert not set(live) & set(range(5001, 8001))
        status, body, _ = server.request("POST", f"{B}/services/start", {"customer_id": "C"})
        assert status == 201 and body["service_id"] > 8000
        status, body, _ = server.request("GET", f"{B}/services/8000?{WHOLE}")
        assert status == 200 and body["customer_id"] == f"cust-{2999 % 60}"
    finally:
        server.stop()
