"""``contextsvc export`` and ``contextsvc import`` (API.md 7.2), run as installed: what
they write and read, the round trip, conflicts, bad input refused whole with its line
number, exit statuses and one-line failures. The store is shared with an app that
reads and writes it over HTTP, as a running server would."""

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from contextsvc import create_app
from contextsvc.config import load
from contextsvc.domain import housekeeping, lifecycle
from contextsvc.storage import open_store
from tests.conftest import Api

COMMAND = shutil.which("contextsvc", path=os.path.dirname(sys.executable))
WHOLE = {"active_states": "true", "completed_states": "true", "active_tasks": "true",
         "completed_tasks": "true"}
STAMP = "2026-01-01T00:00:00.000Z"


def run(db, *args, stdin=None, env=None):
    assert COMMAND, "the contextsvc command is installed with the package"
    environ = {**os.environ, "CONTEXTSVC_STORAGE_PATH": str(db), **(env or {})}
    environ.pop("CONTEXTSVC_CONFIG", None)
    return subprocess.run([COMMAND, *args], input=stdin, capture_output=True, timeout=120,
                          env=environ)


def ok(result):
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""  # quiet when not on a terminal
    return result.stdout


def failed(result, *words):
    """Exit 1, explained in one line that says ``words``."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    message = result.stderr.decode()
    assert message.startswith("contextsvc: error: ") and message.count("\n") == 1, message
    for word in words:
        assert word in message, message
    return message


def service(sid, customer="C", **extra):
    return {"service_id": sid, "customer_id": customer, "started": {"timestamp": STAMP},
            **extra}


def ndjson(*services):
    return "".join(json.dumps(s) + "\n" for s in services).encode()


@pytest.fixture
def db(tmp_path):
    return tmp_path / "a" / "db.json"


@pytest.fixture
def app_on(db):
    """An app on the same store as the command: what a user of the API sees."""
    return create_app({"storage": {"path": str(db)}}).test_client()


@pytest.fixture
def journeys(app_on):
    """A varied store, written over HTTP."""
    api = Api(app_on)
    one = api.start_service(customer_id="ABC", service_type="wireless", coupon={"code": 15},
                            interaction_id="IX-1", ttl=86400, note="caf\u00e9 \ud83d\ude00")
    queue = api.start_state(one, state_type="queue", queue="sales")
    api.start_task(one, state_id=queue, task_type="collect", step=[1, 2.5, None])
    api.start_task(one, task_type="survey")
    app_on.post(f"/services/{one}/states/transition", json={
        "from": {"state_id": queue, "disposition": "answered", "timestamp": "data"},
        "to": {"state_type": "setup", "interaction_id": "data too"}})
    api.end(f"/services/{one}/tasks/2/end", note="done")
    two = api.start_service(contact_key="408-832-7799", auto_complete_after=3600,
                            states="attached data named like a field of the store")
    three = api.start_service(customer_id="DEF", contact_key="k2", auto_closed=True,
                              big=2**70, empty={})
    app_on.delete(f"/services/{api.start_service(customer_id='gone')}")
    api.end(f"/services/{two}/states/{api.start_state(two)}/end")
    return [one, two, three]


# ------------------------------------------------------------------ export
def test_export_writes_one_whole_service_per_line_in_id_order(db, app_on, journeys):
    lines = ok(run(db, "export")).decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        Api(app_on).get(f"/services/{sid}", **WHOLE) for sid in journeys]
    assert ok(run(db, "export", "--state", "inactive")).count(b"\n") == 1
    assert ok(run(db, "export", "--events", "completed")).count(b"\n") == 1
    assert ok(run(db, "export", "--from", "2999-01-01T00:00:00Z")) == b""
    assert ok(run(db, "export", "--to", "2000-01-01T00:00:00")) == b""


def test_export_to_a_file(db, journeys, tmp_path):
    out = tmp_path / "out" / "all.ndjson"
    out.parent.mkdir()
    assert ok(run(db, "export", "-o", str(out))) == b""
    assert out.read_bytes() == ok(run(db, "export"))
    assert os.listdir(out.parent) == ["all.ndjson"]  # no partial file left beside it


def test_export_filters_as_the_http_stream_does(db, app_on, journeys):
    http = app_on.get("/maintenance/services/stream", query_string={
        "time_from": "2000-01-01T00:00:00Z", "filter_state": "active",
        "export_content": "true"}, headers={"Accept": "application/x-ndjson"})
    assert ok(run(db, "export", "--from", "2000-01-01T00:00:00Z", "--state", "active")
              ) == http.data


# ------------------------------------------------------------------ the round trip
@pytest.mark.file_engine("several stores in one test")
def test_export_import_export_gives_the_same_bytes(db, journeys, tmp_path, app_on):
    exported = ok(run(db, "export"))
    fresh = tmp_path / "b" / "db.json"
    assert ok(run(fresh, "import", "-", stdin=exported)) == b""
    assert ok(run(fresh, "export")) == exported
    # the imported store serves them: ids kept, indexes found, the counter past them
    client = create_app({"storage": {"path": str(fresh)}}).test_client()
    api = Api(client)
    assert api.get("/customers/ABC/services", **WHOLE) == Api(app_on).get(
        "/customers/ABC/services", **WHOLE)
    assert [s["service_id"] for s in api.get("/services/anonymous/408-832-7799")] == [
        journeys[1]]
    assert api.start_service(customer_id="new") == journeys[-1] + 1  # after the imported ids


@pytest.mark.file_engine("several stores in one test")
def test_a_large_store_goes_out_and_back_the_same(db, tmp_path, app_on):
    """More lines and services than one block of work: on a machine with several
    processors both commands share them with worker processes (their rules are tested
    in tests/domain/test_export_rules.py); what comes out is what the HTTP stream
    gives, and comes back the same."""
    source = tmp_path / "in.ndjson"
    source.write_bytes(ndjson(*(service(sid, f"C{sid % 7}", n=sid, pad="x" * 1000)
                                for sid in range(1, 1501))))
    assert ok(run(db, "import", str(source))) == b""
    exported = ok(run(db, "export"))
    http = app_on.get("/maintenance/services/stream", query_string={
        "time_from": "2000-01-01T00:00:00Z", "export_content": "true"},
        headers={"Accept": "application/x-ndjson"})
    assert exported == http.data and exported.count(b"\n") == 1500
    fresh = tmp_path / "b" / "db.json"
    assert ok(run(fresh, "import", "-", stdin=exported)) == b""
    assert ok(run(fresh, "export")) == exported


def handmade():
    """Lines written by hand: what export writes, and forms it tolerates."""
    return [
        service(5, "E", contact_key="k", service_type=2**63 - 1, est_duration=0,
                started={"timestamp": "2026-01-01T01:00:00+01:00", "media_type": 1},
                completed={"timestamp": "2026-01-02T00:00:00.000Z", "auto_completed": True},
                duration=86400000, disposition="ok", disposition_desc="d", data={"x": None},
                updated="data", due="data", expires="data", nested=[{"a": [1.5, "\ud800"]}],
                active_states=[], completed_states=[{
                    "state_id": 3, "state_type": 1, "started": {"timestamp": STAMP},
                    "completed": {"timestamp": STAMP, "auto_completed": True}, "duration": 0,
                    "previous_state_id": 3, "q": 1}],
                active_tasks=[], completed_tasks=[{
                    "task_id": 9, "state_id": 3, "started": {"timestamp": STAMP},
                    "completed": {"timestamp": STAMP}, "duration": 0}]),
        service(2**53 - 1, None, contact_key="anon", expiration_time="2999-01-01T00:00:00Z"),
    ]


@pytest.mark.file_engine("several stores in one test")
def test_import_keeps_ids_and_what_was_exported(db, app_on, tmp_path):
    source = tmp_path / "in.ndjson"
    source.write_bytes(ndjson(*handmade()) + b"\n  \n")  # blank lines are passed over
    assert ok(run(db, "import", str(source))) == b""
    api = Api(app_on)
    first = api.get("/services/5", **WHOLE)
    assert first["started"]["timestamp"] == "2026-01-01T00:00:00.000Z"  # normalized
    assert first["nested"] == [{"a": [1.5, "\ud800"]}] and first["updated"] == "data"
    assert first["completed_states"][0]["completed"]["auto_completed"] is True
    assert api.get("/services/anonymous/anon")[0]["expiration_time"] == (
        "2999-01-01T00:00:00.000Z")
    r = app_on.post("/services/start", json={"customer_id": "C"})
    assert r.status_code == 503 and "No service ids are left" in r.get_json()["message"]
    again = ok(run(db, "export"))
    fresh = tmp_path / "c" / "db.json"
    ok(run(fresh, "import", "-", stdin=again))
    assert ok(run(fresh, "export")) == again


@pytest.mark.file_engine("several stores in one test")
def test_imported_services_are_found_by_housekeeping(db, tmp_path):
    """The due index: a sweep that reads only what is due removes an imported service
    whose expiration has passed, and completes one past its auto-complete moment."""
    source = tmp_path / "in.ndjson"
    source.write_bytes(ndjson(
        service(1, expiration_time="2026-02-01T00:00:00Z"),
        service(2, auto_complete_at="2026-02-01T00:00:00Z"),
        service(3, expiration_time="2999-01-01T00:00:00Z")))
    ok(run(db, "import", str(source)))
    store = open_store(load({"storage": {"path": str(db)}}, environ={}))
    try:
        now = datetime(2026, 3, 1, tzinfo=timezone.utc)
        swept = housekeeping.sweep(store, lifecycle.OFF, now)
        assert (swept.removed, swept.completed) == (1, 1)
        assert store.get_service(2)["completed"] == {
            "timestamp": "2026-02-01T00:00:00.000Z", "auto_completed": True}
        assert store.count() == 2
    finally:
        store.close()


# ------------------------------------------------------------------ conflicts
def test_on_conflict(db, app_on, tmp_path):
    api = Api(app_on)
    for i in range(2):
        api.start_service(customer_id="stored", n=i)
    source = tmp_path / "in.ndjson"
    source.write_bytes(ndjson(service(3, "file"), service(2, "file"), service(1, "file")))

    message = failed(run(db, "import", str(source)), "line 2: service 2 exists", "(and 1 more)",
                     "nothing was imported")
    assert "line 2" in message
    assert app_on.get("/services/3").status_code == 404

    assert ok(run(db, "import", str(source), "--on-conflict", "skip")) == b""
    assert [api.get(f"/services/{sid}")["customer_id"] for sid in (1, 2, 3)] == [
        "stored", "stored", "file"]

    source.write_bytes(ndjson(service(2, "replaced"), service(4, "file")))
    assert ok(run(db, "import", str(source), "--on-conflict", "replace")) == b""
    assert [s["service_id"] for s in api.get("/customers/replaced/services")] == [2]
    assert [s["service_id"] for s in api.get("/customers/stored/services")] == [1]
    assert api.start_service(customer_id="C") == 5


# ------------------------------------------------------------------ bad input
GOOD = service(10, "good")


@pytest.mark.parametrize("lines, words", [
    ([GOOD, b"{not json"], ["line 2: not JSON"]),
    ([GOOD, GOOD, service(11)], ["line 2: service 10 is also on line 1"]),
    ([GOOD, service(2**53)], ["line 2: service_id: not an integer from 1 to 9007199254740991"]),
    ([GOOD, service(0)], ["line 2: service_id"]),
    ([GOOD, {"customer_id": "C", "started": {"timestamp": STAMP}}],
     ["line 2: service_id: required"]),
    ([GOOD, service(11, started={"timestamp": "soon"})], ["line 2: started.timestamp"]),
    ([GOOD, service(11, ttl=60)], ["line 2: ttl: not a field of a service"]),
    ([GOOD, 11], ["line 2: not an object (a service)"]),
    ([GOOD, b"", service(12, active_tasks=[{"task_id": 1, "state_id": 4, "started": {
        "timestamp": STAMP}}])], ["line 3: active_tasks[0].state_id: 4 is not a state"]),
    ([GOOD, b"\xff\xfe"], ["line 2: not UTF-8"]),
    ([GOOD, b'{"service_id": 11, "x": NaN}'], ["line 2: not JSON: NaN is not a JSON number"]),
])
@pytest.mark.parametrize("mode", ["fail", "skip", "replace"])
def test_bad_input_is_refused_whole_with_its_line_number(db, app_on, tmp_path, lines, words,
                                                         mode):
    source = tmp_path / "in.ndjson"
    source.write_bytes(b"".join(line + b"\n" if isinstance(line, bytes)
                                else json.dumps(line).encode() + b"\n" for line in lines))
    failed(run(db, "import", str(source), "--on-conflict", mode), *words)
    assert ok(run(db, "export")) == b""  # nothing was imported
    assert Api(app_on).start_service(customer_id="C") == 1  # nor the id counter moved


def test_a_service_over_the_size_limit_is_refused_before_anything_is_written(db, tmp_path):
    source = tmp_path / "in.ndjson"
    source.write_bytes(ndjson(GOOD, service(11, pad="x" * 3000)))
    failed(run(db, "import", str(source), env={"CONTEXTSVC_LIMITS_MAX_SERVICE_BYTES": "2000"}),
           "line 2: service 11 would take", "max_service_bytes")
    assert ok(run(db, "export")) == b""


# ------------------------------------------------------------------ usage
@pytest.mark.parametrize("args, words", [
    (["export", "--events", "ended"], ["--events"]),
    (["export", "--state", "done"], ["--state"]),
    (["export", "--from", "yesterday"], ["--from", "timestamp"]),
    (["export", "--to", "2026-13-01T00:00:00Z"], ["--to"]),
    (["import"], ["FILE"]),
    (["import", "x.ndjson", "--on-conflict", "merge"], ["--on-conflict"]),
])
def test_bad_usage_exits_2(db, args, words):
    result = run(db, *args)
    assert result.returncode == 2
    for word in words:
        assert word in result.stderr.decode()


def test_failures_are_one_line(db, tmp_path):
    failed(run(db, "import", str(tmp_path / "missing.ndjson")), "no such file")
    out = tmp_path / "nowhere" / "x.ndjson"
    failed(run(db, "export", "-o", str(out)), "nowhere")
    failed(run(db, "export", env={"CONTEXTSVC_STORAGE_ENGINE": "nope"}), "configuration")


def test_help_describes_every_option():
    for command, options in [("export", ["--from", "--to", "--events", "--state", "--output"]),
                             ("import", ["FILE", "--on-conflict", "fail", "skip", "replace"])]:
        text = subprocess.run([COMMAND, command, "--help"], capture_output=True, text=True,
                              timeout=60).stdout
        for option in options:
            assert option in text, (command, option)


def test_on_a_terminal_long_runs_show_progress_and_a_summary(db, tmp_path):
    """stderr a terminal (stdout a file): progress bars and a closing line."""
    import pty

    source = tmp_path / "in.ndjson"
    source.write_bytes(ndjson(*(service(sid) for sid in range(1, 301))))
    seen = {}
    for args in (["import", str(source)], ["export", "-o", str(tmp_path / "out.ndjson")]):
        leader, follower = pty.openpty()
        environ = {**os.environ, "CONTEXTSVC_STORAGE_PATH": str(db)}
        environ.pop("CONTEXTSVC_CONFIG", None)
        proc = subprocess.Popen([COMMAND, *args], stderr=follower, stdout=subprocess.DEVNULL,
                                env=environ)
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed with the command
                break
            if not chunk:
                break
            output += chunk
        os.close(leader)
        assert proc.wait(60) == 0
        seen[args[0]] = output.decode()
    assert "checking" in seen["import"] and "importing" in seen["import"]
    assert "imported 300 services" in seen["import"]
    assert "exporting" in seen["export"] and "exported 300 services" in seen["export"]
    assert (tmp_path / "out.ndjson").read_bytes().count(b"\n") == 300


@pytest.mark.file_engine("several stores in one test")
def test_an_import_interrupted_while_writing_takes_back_what_it_wrote(db, tmp_path):
    import signal
    import time

    source = tmp_path / "in.ndjson"
    source.write_bytes(ndjson(*(service(sid, pad="x" * 500) for sid in range(1, 20001))))
    environ = {**os.environ, "CONTEXTSVC_STORAGE_PATH": str(db)}
    environ.pop("CONTEXTSVC_CONFIG", None)
    proc = subprocess.Popen([COMMAND, "import", str(source)], stderr=subprocess.PIPE,
                            env=environ)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if db.exists() and db.stat().st_size > 3 << 20:  # some batches are written
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.005)
    stderr = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 1, "the import ended before it could be interrupted"
    assert stderr == "contextsvc: error: interrupted; nothing was imported\n"
    assert ok(run(db, "export")) == b""
