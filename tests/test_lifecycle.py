"""Expiration, auto-complete and purge over HTTP (API.md 6), with the server's clock
moved by the test: time decides what a client sees, whether or not a sweep ran."""

import gc
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from tinydb import TinyDB

from contextsvc import create_app
from contextsvc.config import ConfigError
from contextsvc.domain import housekeeping
from contextsvc.storage import tinydb_snapshot
from tests.conftest import Api

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
B = "/genesys/1/cs"


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += timedelta(**delta)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(params=["file", "memory"])
def make(request, tmp_path, clock):
    def make(**config):
        settings = {"storage": {"engine": request.param, "path": str(tmp_path / "db.json")},
                    **config}
        return create_app(settings, clock=clock).test_client()
    return make


def stamp(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def gone(client, sid, customer="C"):
    """Service ``sid`` does not exist for any route."""
    for method, path in [("get", f"/services/{sid}"), ("get", f"/services/{sid}/states"),
                         ("post", f"/services/{sid}/end"), ("delete", f"/services/{sid}"),
                         ("post", f"/services/{sid}/states/start"),
                         ("put", f"/services/{sid}/extensions/x"),
                         ("post", f"/customers/{customer}/services/{sid}")]:
        r = getattr(client, method)(B + path, json=1 if "extensions" in path else {})
        assert r.status_code == 404, (method, path, r.get_json())
    listed = client.get(f"{B}/customers/{customer}/services").get_json()
    return sid not in [s["service_id"] for s in listed]


# ------------------------------------------------------------------ expiration
def test_default_expiration_counts_from_the_last_update(make, clock):
    client = make(lifecycle={"expiration": "1h"})
    api = Api(client)
    sid = api.start_service(customer_id="C")
    assert api.get(f"/services/{sid}")["expiration_time"] == "2026-03-01T13:00:00.000Z"
    clock.advance(minutes=40)
    api.start_state(sid)  # a state write moves it
    assert api.get(f"/services/{sid}")["expiration_time"] == "2026-03-01T13:40:00.000Z"
    clock.advance(minutes=59, seconds=59)
    assert client.get(f"{B}/services/{sid}").status_code == 200
    clock.advance(seconds=1)  # the very moment: no sweep has run
    assert gone(client, sid)


def test_expiration_per_service_type_wins_over_the_default(make, clock):
    client = make(lifecycle={"expiration": "1d"}, expiration={"wireless": "10m", "7": "1h"})
    api = Api(client)
    wireless = api.start_service(customer_id="C", service_type="wireless")
    seven = api.start_service(customer_id="C", service_type=7)
    other = api.start_service(customer_id="C", service_type="hotel")
    assert api.get(f"/services/{seven}")["expiration_time"] == "2026-03-01T13:00:00.000Z"
    clock.advance(minutes=10)
    assert gone(client, wireless)
    assert api.get(f"/services/{other}")["expiration_time"] == "2026-03-02T12:00:00.000Z"


def test_a_clients_ttl_wins_and_is_not_moved_by_updates(make, clock):
    client = make(lifecycle={"expiration": "1d"})
    api = Api(client)
    sid = api.start_service(customer_id="C", ttl=60, expiration_time="2030-01-01T00:00:00Z")
    clock.advance(seconds=50)
    api.start_task(sid)
    assert api.get(f"/services/{sid}")["expiration_time"] == "2026-03-01T12:01:00.000Z"
    clock.advance(seconds=10)
    assert gone(client, sid)


def test_expiration_set_on_end_associate_and_put(make, clock):
    client = make()
    api = Api(client)
    sid = api.start_service(contact_key="k")
    assert "expiration_time" not in api.get(f"/services/{sid}")
    r = client.post(f"{B}/customers/C/services/{sid}", json={"ttl": 3600})
    assert r.status_code == 200 and r.get_json()["expiration_time"] == "2026-03-01T13:00:00.000Z"
    api.end(f"/services/{sid}/end", expiration_time="2026-03-05T00:00:00+02:00")
    assert api.get(f"/services/{sid}")["expiration_time"] == "2026-03-04T22:00:00.000Z"
    r = client.put(f"{B}/services/{sid}", json={"ttl": 120})
    assert r.status_code == 200 and r.get_json()["expiration_time"] == "2026-03-01T12:02:00.000Z"
    assert r.get_json()["customer_id"] == "C"
    r = client.put(f"{B}/services/{sid}", json={"expiration_time": stamp(T0 - timedelta(1))})
    assert r.status_code == 200  # in the past: accepted, and the service expires at once
    assert gone(client, sid)


@pytest.mark.parametrize("body", [{}, {"ttl": 0}, {"ttl": -5}, {"ttl": 1.5}, {"ttl": "60"},
                                  {"ttl": True}, {"expiration_time": "tomorrow"},
                                  {"ttl": 60, "note": "x"}, {"auto_complete_after": 5}, []])
def test_bad_expiration_bodies_are_400_and_change_nothing(make, body):
    client = make()
    sid = Api(client).start_service(customer_id="C")
    before = client.get(f"{B}/services/{sid}").get_json()
    r = client.put(f"{B}/services/{sid}", json=body)
    assert r.status_code == 400 and r.get_json()["exception"] == "ValidationError"
    assert client.get(f"{B}/services/{sid}").get_json() == before


@pytest.mark.parametrize("body", [{"ttl": 0}, {"ttl": 2.5}, {"auto_complete_after": -1},
                                  {"auto_complete_after": "1h"}, {"expiration_time": 5},
                                  {"auto_complete_at": "2030-01-01T00:00:00Z"}])
def test_bad_lifecycle_fields_in_a_start_body_are_400(make, body):
    client = make()
    r = client.post(f"{B}/services/start", json={"customer_id": "C", **body})
    assert r.status_code == 400, r.get_json()
    assert client.get(f"{B}/customers/C/services").get_json() == []


def test_lifecycle_names_are_fields_not_attached_data(make):
    client = make()
    api = Api(client)
    sid = api.start_service(customer_id="C")
    for key in ("ttl", "expiration_time", "auto_complete_after", "auto_complete_at"):
        r = client.put(f"{B}/services/{sid}/extensions/{key}", json=1)
        assert r.status_code == 400, key
        r = client.post(f"{B}/services/{sid}/states/start", json={key: 1})
        assert r.status_code == 400, key


@pytest.mark.parametrize("ini, key", [
    ("[lifecycle]\nexpiration = 2 weeks\n", "[lifecycle] expiration"),
    ("[lifecycle]\nauto_complete_after = -1m\n", "[lifecycle] auto_complete_after"),
    ("[lifecycle]\nsweep_interval =\n", "[lifecycle] sweep_interval"),
    ("[expiration]\nwireless = soon\n", "[expiration] wireless"),
])
def test_a_bad_duration_in_the_configuration_stops_the_start_naming_the_key(
        tmp_path, monkeypatch, ini, key):
    path = tmp_path / "bad.ini"
    path.write_text(f"[storage]\npath = {tmp_path / 'db.json'}\n{ini}")
    monkeypatch.setenv("CONTEXTSVC_CONFIG", str(path))
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        create_app()


def test_service_types_in_the_configuration_keep_their_case(tmp_path, monkeypatch, clock):
    path = tmp_path / "types.ini"
    path.write_text(f"[storage]\npath = {tmp_path / 'db.json'}\n"
                    "[expiration]\nNew-Wireless = 1m\n")
    monkeypatch.setenv("CONTEXTSVC_CONFIG", str(path))
    api = Api(create_app(clock=clock).test_client())
    sid = api.start_service(customer_id="C", service_type="New-Wireless")
    assert api.get(f"/services/{sid}")["expiration_time"] == "2026-03-01T12:01:00.000Z"


# ------------------------------------------------------------------ auto-complete
def test_an_idle_service_completes_at_its_deadline_with_what_is_active(make, clock):
    client = make(lifecycle={"auto_complete_after": "30m"})
    api = Api(client)
    now = stamp(T0)  # events carry the clock's time, as a client's would
    sid = api.start_service(customer_id="C", timestamp=now)
    state = api.start_state(sid, state_type="queue", timestamp=now)
    done_state = api.start_state(sid, timestamp=now)
    api.end(f"/services/{sid}/states/{done_state}/end", timestamp=now)
    task = api.start_task(sid, state_id=state, timestamp=now)
    assert api.get(f"/services/{sid}")["auto_complete_at"] == "2026-03-01T12:30:00.000Z"
    clock.advance(minutes=20)
    api.start_task(sid)  # any write moves the deadline
    clock.advance(minutes=29)
    assert "completed" not in api.get(f"/services/{sid}")
    clock.advance(minutes=1)
    doc = api.get(f"/services/{sid}", active_states="true", completed_states="true",
                  completed_tasks="true", active_tasks="true")
    auto = {"timestamp": "2026-03-01T12:50:00.000Z", "auto_completed": True}
    assert doc["completed"] == auto and doc["duration"] == 50 * 60 * 1000
    assert "auto_complete_at" not in doc and "disposition" not in doc
    assert doc["active_states"] == [] and doc["active_tasks"] == []
    states = {s["state_id"]: s for s in doc["completed_states"]}
    assert states[state]["completed"] == auto
    assert states[done_state]["completed"] == {"timestamp": "2026-03-01T12:00:00.000Z"}
    assert api.get(f"/services/{sid}/tasks/{task}")["completed"] == auto
    r = client.post(f"{B}/services/{sid}/end")
    assert r.status_code == 409 and r.get_json()["exception"] == "ConflictException"
    assert [s["service_id"] for s in api.get("/customers/C/services/completed")] == [sid]
    assert api.get("/customers/C/services/active") == []


def test_a_services_own_idle_period_wins_and_zero_turns_it_off(make, clock):
    client = make(lifecycle={"auto_complete_after": "30m"})
    api = Api(client)
    never = api.start_service(customer_id="C", auto_complete_after=0)
    soon = api.start_service(customer_id="C", auto_complete_after=60)
    assert "auto_complete_at" not in api.get(f"/services/{never}")
    clock.advance(days=30)
    assert "completed" not in api.get(f"/services/{never}")
    assert api.get(f"/services/{soon}")["completed"]["timestamp"] == "2026-03-01T12:01:00.000Z"


def test_an_auto_completed_service_is_written_completed_by_the_next_write(make, clock,
                                                                           tmp_path):
    client = make(lifecycle={"auto_complete_after": "1m"})
    api = Api(client)
    sid = api.start_service(customer_id="C")
    clock.advance(minutes=5)
    api.start_state(sid)  # allowed on a completed service; the completion is stored
    doc = api.get(f"/services/{sid}", active_states="true")
    assert doc["completed"]["auto_completed"] and len(doc["active_states"]) == 1


# ------------------------------------------------------------------ housekeeping
@pytest.mark.file_engine("reads the data file")
def test_a_sweep_removes_expired_services_and_stores_auto_completions(tmp_path, clock):
    path = tmp_path / "db.json"
    app = create_app({"storage": {"path": str(path), "compact_min_bytes": 1},
                      "lifecycle": {"auto_complete_after": "1h"},
                      "expiration": {"short": "10m"}}, clock=clock)
    api = Api(app.test_client())
    short = [api.start_service(customer_id="C", service_type="short", pad="x" * 2000)
             for _ in range(20)]
    long = [api.start_service(customer_id="C", service_type="long") for _ in range(5)]
    size = len(path.read_bytes().rstrip())
    clock.advance(hours=2)
    sweeper = app.extensions["contextsvc.sweeper"]
    store = app.extensions["contextsvc.stores"].get()
    swept = sweeper.run_once(store)
    assert (swept.removed, swept.completed) == (20, 5)
    with tinydb_snapshot(path) as db:
        services = db.table("services")
        assert sorted(d.doc_id for d in services.all()) == long
        assert all(d["completed"]["auto_completed"] for d in services.all())
    assert len(path.read_bytes().rstrip()) <= 0.6 * size  # the space is reclaimed
    assert sweeper.run_once(store) is None  # not again within the interval
    assert not set(short) & {s["service_id"] for s in api.get("/customers/C/services")}


def test_a_client_write_racing_the_sweep_is_never_undone(tmp_path, clock):
    """The sweep chooses a service (its deadline has passed) without holding the
    store; a client writes to it before the sweep applies: the sweep judges it again
    as it is then, and leaves it."""
    app = create_app({"storage": {"path": str(tmp_path / "db.json")}},
                     clock=clock)
    api = Api(app.test_client())
    sid = api.start_service(customer_id="C", auto_complete_after=60)
    store = app.extensions["contextsvc.stores"].get()
    policy, _ = app.extensions["contextsvc.time"]
    clock.advance(seconds=59)

    class Racing:
        def __getattr__(self, name):
            return getattr(store, name)

        def rewrite_services(self, sids, change):
            api.start_state(sid)  # the client's write lands between choosing and applying
            return store.rewrite_services(sids, change)

    swept = housekeeping.sweep(Racing(), policy, clock.now + timedelta(seconds=1))
    assert (swept.removed, swept.completed) == (0, 0)
    clock.advance(seconds=1)
    doc = api.get(f"/services/{sid}", active_states="true")
    assert "completed" not in doc and len(doc["active_states"]) == 1


# ------------------------------------------------------------------ purge
def test_purge_operations(make, clock):
    client = make()
    api = Api(client)
    old = T0 - timedelta(days=10)
    ids = {}
    for name, body in [("active", {"customer_id": "C"}), ("active_anon", {"contact_key": "k"}),
                       ("done", {"customer_id": "C"}), ("done_anon", {"contact_key": "k"})]:
        ids[name] = api.start_service(timestamp=stamp(old), **body)
        if name.startswith("done"):
            api.end(f"/services/{ids[name]}/end")
    recent = api.start_service(customer_id="C", timestamp=stamp(T0))
    limit = stamp(T0 - timedelta(days=1))

    def purge(operation):
        r = client.post(f"{B}/maintenance/purge", json={"limit": limit, "operation": operation})
        assert r.status_code == 200, r.get_json()
        return r.get_json()["purged"]

    assert purge("purge.service.completed.anonymous") == 1
    assert purge("purge.service.started.anonymous") == 1
    assert purge("purge.service.completed") == 1
    assert purge("purge.service.started") == 1
    assert purge("purge.service.all") == 0
    assert [s["service_id"] for s in api.get("/customers/C/services")] == [recent]
    assert client.post(f"{B}/maintenance/purge", json={
        "limit": stamp(T0 + timedelta(1)), "operation": "purge.service.all"}).get_json() == \
        {"purged": 1}


@pytest.mark.parametrize("body", [{}, {"limit": "2026-01-01T00:00:00Z"},
                                  {"operation": "purge.service.all"},
                                  {"limit": "yesterday", "operation": "purge.service.all"},
                                  {"limit": "2026-01-01T00:00:00Z", "operation": "purge.all"},
                                  {"limit": "2026-01-01T00:00:00Z",
                                   "operation": "purge.service.all", "force": True}])
def test_bad_purges_are_400_and_remove_nothing(make, body):
    client = make()
    sid = Api(client).start_service(customer_id="C", timestamp="2020-01-01T00:00:00Z")
    r = client.post(f"{B}/maintenance/purge", json=body)
    assert r.status_code == 400 and r.get_json()["exception"] == "ValidationError"
    assert client.get(f"{B}/services/{sid}").status_code == 200


@pytest.mark.file_engine("reads the data file")
def test_plain_tinydb_still_reads_a_store_with_lifecycle_fields(tmp_path, clock):
    path = tmp_path / "db.json"
    api = Api(create_app({"storage": {"path": str(path)}}, clock=clock).test_client())
    sid = api.start_service(customer_id="C", ttl=600)
    with TinyDB(path, access_mode="r") as db:
        assert db.table("services").get(doc_id=sid)["customer_id"] == "C"


def test_a_refresh_walks_only_the_services_that_existed_as_it_began(tmp_path, clock):
    """Under a steady write load a refresh that also took the services created
    meanwhile would read back every one of them (and might never end)."""
    path = str(tmp_path / "db.json")
    api = Api(create_app({"storage": {"path": path}}, clock=clock).test_client())
    for _ in range(5):
        api.start_service(customer_id="C")  # written with no expiration configured
    app = create_app({"storage": {"path": path}, "lifecycle": {"expiration": "1h"}},
                     clock=clock)
    store = app.extensions["contextsvc.stores"].get()
    policy, _ = app.extensions["contextsvc.time"]
    batches = []

    class Watched:
        """The store, creating a stale service each time the walk reads a batch."""

        def __getattr__(self, name):
            return getattr(store, name)

        def scan(self, *args, **kwargs):
            batches.append(kwargs)
            if len(batches) <= 20:  # the writer without expiration, meanwhile
                api.start_service(customer_id="C")
            return store.scan(*args, **kwargs)

    assert housekeeping.refresh(Watched(), policy, batch=2, now=clock.now) == 5


def test_a_large_streamed_answer_leaves_out_what_expired(make, clock):
    client = make()
    api = Api(client)
    blobs = {f"b{i}": "x" * 50_000 for i in range(8)}
    keep = [api.start_service(customer_id="BIG", ttl=3600, **blobs) for _ in range(3)]
    for _ in range(3):
        api.start_service(customer_id="BIG", ttl=60, **blobs)
    clock.advance(minutes=5)  # half of 2.4 MB of services expired: still over 1 MiB
    r = client.get(f"{B}/customers/BIG/services?extensions=none")
    assert r.status_code == 200 and [s["service_id"] for s in r.get_json()] == keep


@pytest.mark.file_engine("reads the data file")
def test_a_sweep_reads_only_services_due_and_a_refresh_fixes_stale_records(tmp_path, clock):
    path = str(tmp_path / "db.json")
    api = Api(create_app({"storage": {"path": path}}, clock=clock).test_client())
    old = api.start_service(customer_id="C")  # written with no expiration configured
    app = create_app({"storage": {"path": path}, "lifecycle": {"expiration": "1h"}},
                     clock=clock)
    api = Api(app.test_client())
    new = api.start_service(customer_id="C")
    store = app.extensions["contextsvc.stores"].get()
    policy, _ = app.extensions["contextsvc.time"]
    clock.advance(hours=2)
    # both have expired for every reader...
    assert api.get("/customers/C/services") == []
    # ...an indexed sweep finds the one whose record says it is due
    assert housekeeping.sweep(store, policy, clock.now).removed == 1
    with tinydb_snapshot(path) as db:
        assert [d.doc_id for d in db.table("services").all()] == [old]
    # ...a refresh records the due moment of the one written before the
    # configuration said so, and the next sweep finds it
    assert housekeeping.refresh(store, policy, now=clock.now) == 1
    assert housekeeping.refresh(store, policy, now=clock.now) == 0
    assert housekeeping.sweep(store, policy, clock.now).removed == 1
    with tinydb_snapshot(path) as db:
        assert db.table("services").all() == []
    assert new != old


@pytest.mark.file_engine("reads the data file")
def test_with_server_sweeps_off_the_server_only_reclaims(tmp_path, clock):
    """[lifecycle] server_sweeps = false: the housekeeping thread leaves expired
    services on disk for ``contextsvc sweep``; reads are exact all the same."""
    path = tmp_path / "db.json"
    app = create_app({"storage": {"path": str(path)},
                      "lifecycle": {"expiration": "1h", "server_sweeps": "false"}},
                     clock=clock)
    api = Api(app.test_client())
    sids = [api.start_service(customer_id="C") for _ in range(3)]
    clock.advance(hours=2)
    sweeper = app.extensions["contextsvc.sweeper"]
    sweeper.keep(app.extensions["contextsvc.stores"].get())
    with tinydb_snapshot(path) as db:
        assert sorted(d.doc_id for d in db.table("services").all()) == sids  # still there
    assert api.get("/customers/C/services") == []  # but gone for every read


def test_an_app_that_is_dropped_stops_its_housekeeping(tmp_path):
    """A program that makes apps in-process and drops them (an embedding program, a
    test suite) does not keep a housekeeping thread per app working on their stores."""
    def sweepers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "contextsvc-sweeper"}

    before = sweepers()
    app = create_app({"storage": {"path": str(tmp_path / "db.json")},
                      "lifecycle": {"sweep_interval": "1s"}})
    assert app.test_client().get("/genesys/1/cs/customers/C/services").status_code == 200
    (thread,) = sweepers() - before  # the first request started it
    time.sleep(1.5)
    assert thread.is_alive()  # it keeps the store while the app is there
    del app
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()
