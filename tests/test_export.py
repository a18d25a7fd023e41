"""The export stream over HTTP (API.md 7.1): GET /maintenance/services/stream, its
parameters and errors, what it selects, its two forms (a JSON array, NDJSON), and
that it is streamed: written while read, each service whole, writes going on."""

import fcntl
import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from contextsvc import create_app
from contextsvc.domain import export
from tests.conftest import Api

STREAM = "/maintenance/services/stream"
ALL = {"time_from": "2000-01-01T00:00:00Z"}
WHOLE = {"active_states": "true", "completed_states": "true", "active_tasks": "true",
         "completed_tasks": "true"}
NDJSON = {"Accept": "application/x-ndjson"}
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def stream(client, base="/genesys/1/cs", headers=None, **params):
    r = client.get(base + STREAM, query_string=params, headers=headers or {})
    assert r.status_code == 200, r.get_json()
    if r.mimetype == "application/x-ndjson":
        text = r.get_data(as_text=True)
        assert text == "" or text.endswith("\n")
        return [json.loads(line) for line in text.splitlines()]
    assert r.mimetype == "application/json"
    return r.get_json()


def ids(client, **params):
    return stream(client, **{**ALL, **params})


# ------------------------------------------------------------------ parameters
@pytest.mark.parametrize("params, field", [
    ({}, "time_from"),
    ({"time_to": "2026-01-01T00:00:00Z"}, "time_from"),
    ({"time_from": "yesterday"}, "time_from"),
    ({"time_from": "2026-02-30T00:00:00Z"}, "time_from"),
    ({**ALL, "time_to": "2026-01-01"}, "time_to"),
    ({**ALL, "filter_events": "ended"}, "filter_events"),
    ({**ALL, "filter_state": "completed"}, "filter_state"),
    ({**ALL, "export_content": "yes"}, "export_content"),
])
def test_missing_or_malformed_parameters_are_400(client, base, params, field):
    r = client.get(base + STREAM, query_string=params)
    assert r.status_code == 400
    body = r.get_json()
    assert body["exception"] == "ValidationError" and field in body["errors"]


def test_by_default_a_json_array_of_service_ids_in_id_order(api, client, base):
    sids = [api.start_service(customer_id=f"C{i}") for i in range(3)]
    api.client.delete(f"/services/{sids[1]}")
    assert stream(client, base, **ALL) == [sids[0], sids[2]]
    r = client.get(base + STREAM, query_string=ALL)
    assert r.headers["Content-Type"] == "application/json"
    assert client.get(base + STREAM, query_string={
        "time_from": "2999-01-01T00:00:00Z", "time_to": "3000-01-01T00:00:00Z"}).data == b"[]"


def test_export_content_gives_each_service_whole_as_a_get_shows_it(api, client):
    sid = api.start_service(customer_id="ABC", service_type=100, coupon={"code": 15},
                            interaction_id="IX-1", ttl=86400)
    one = api.start_state(sid, state_type="queue", queue="sales")
    api.start_task(sid, state_id=one, task_type="collect", step=1)
    api.start_task(sid, task_type="survey")
    two = client.post(f"/services/{sid}/states/transition", json={
        "from": {"state_id": one, "disposition": "answered"}, "to": {"state_type": "setup"},
        "agent": "A7"}).get_json()["state_id"]
    api.end(f"/services/{sid}/tasks/2/end", note="done")
    anonymous = api.start_service(contact_key="408-832-7799", auto_complete_after=3600)
    api.end(f"/services/{anonymous}/end", disposition=3)
    exported = ids(client, export_content="true")
    assert exported == [api.get(f"/services/{s}", **WHOLE) for s in (sid, anonymous)]
    first = exported[0]
    assert [s["state_id"] for s in first["active_states"]] == [two]
    assert [s["state_id"] for s in first["completed_states"]] == [one]
    assert len(first["active_tasks"]) == len(first["completed_tasks"]) == 1
    assert first["coupon"] == {"code": 15} and "expiration_time" in first


def test_ndjson_with_accept_gives_the_same_values_one_per_line(api, client, base):
    for i in range(3):
        api.start_service(customer_id=f"C{i}", n=i)
    for content in ("false", "true"):
        r = client.get(base + STREAM, query_string={**ALL, "export_content": content},
                       headers=NDJSON)
        assert r.headers["Content-Type"] == "application/x-ndjson"
        assert stream(client, base, NDJSON, **ALL, export_content=content) == stream(
            client, base, **ALL, export_content=content)
    assert client.get(base + STREAM, query_string=ALL, headers=NDJSON).data == b"1\n2\n3\n"


# ------------------------------------------------------------------ what is selected
@pytest.fixture
def history(api):
    """Services with known start and completion moments (January 2026)."""
    def service(name, started, completed=None):
        sid = api.start_service(customer_id=name, timestamp=f"2026-01-{started}T00:00:00Z")
        if completed:
            api.end(f"/services/{sid}/end", timestamp=f"2026-01-{completed}T00:00:00Z")
        return name, sid
    return dict([
        service("before", "01", "02"),        # both events before the range
        service("starts-in", "10", "25"),     # started in the range, completed after it
        service("ends-in", "05", "12"),       # started before, completed in the range
        service("inside", "11", "13"),        # both in the range
        service("open-in", "14"),             # started in the range, still active
        service("open-before", "03"),         # started before, still active
        service("at-to", "20"),               # started at time_to: outside (strictly before)
        service("at-from", "10"),             # started at time_from: inside
    ])


RANGE = {"time_from": "2026-01-10T00:00:00Z", "time_to": "2026-01-20T00:00:00Z"}


@pytest.mark.parametrize("events, state, expected", [
    ("any", "any", ["starts-in", "ends-in", "inside", "open-in", "at-from"]),
    ("started", "any", ["starts-in", "inside", "open-in", "at-from"]),
    ("completed", "any", ["ends-in", "inside"]),
    ("any", "active", ["open-in", "at-from"]),
    ("any", "inactive", ["starts-in", "ends-in", "inside"]),
    ("started", "inactive", ["starts-in", "inside"]),
    ("completed", "active", []),
])
def test_events_and_state_filters(client, history, events, state, expected):
    got = stream(client, **RANGE, filter_events=events, filter_state=state)
    assert got == sorted(history[name] for name in expected)
    # the same selection with content, and filter_state works without it too
    whole = stream(client, **RANGE, filter_events=events, filter_state=state,
                   export_content="true")
    assert [s["service_id"] for s in whole] == got


@pytest.fixture
def clock():
    class Clock:
        now = T0

        def __call__(self):
            return self.now
    return Clock()


@pytest.fixture(params=["file", "memory"])
def timed(request, tmp_path, clock):
    def make(**config):
        return create_app({"storage": {"engine": request.param,
                                       "path": str(tmp_path / "db.json")}, **config},
                          clock=clock).test_client()
    return make


def test_time_to_defaults_to_now_included(timed, clock):
    client = timed()
    api = Api(client)
    past = api.start_service(customer_id="C", timestamp="2026-03-01T12:00:00.000Z")
    future = api.start_service(customer_id="C", timestamp="2026-03-01T12:00:00.001Z")
    assert ids(client) == [past]
    clock.now += timedelta(milliseconds=1)
    assert ids(client) == [past, future]


def test_expired_services_are_never_exported_and_idle_ones_read_as_completed(timed, clock):
    client = timed(lifecycle={"auto_complete_after": "1h"})
    api = Api(client)
    at = "2026-03-01T11:00:00Z"  # a start stamped by the client: the server's clock is real
    short = api.start_service(customer_id="C", ttl=60, timestamp=at)
    idle = api.start_service(customer_id="C", timestamp=at)
    assert ids(client, filter_state="active") == [short, idle]
    clock.now += timedelta(hours=1)  # no sweep has run: time decides
    assert ids(client) == [idle]
    assert ids(client, filter_state="active") == []
    window = {"time_from": "2026-03-01T13:00:00Z", "time_to": "2026-03-01T13:00:00.001Z"}
    assert stream(client, **window, filter_events="completed") == [idle]
    [service] = stream(client, **window, export_content="true", filter_state="inactive")
    assert service["completed"] == {"timestamp": "2026-03-01T13:00:00.000Z",
                                    "auto_completed": True}
    assert "auto_complete_at" not in service


# ------------------------------------------------------------------ streaming
def test_the_answer_is_streamed_and_writes_go_on_while_it_is_read(api, client, monkeypatch):
    """Each batch is chosen when the stream reaches it; a service changed after its
    batch was read stays as it was, one changed before its batch comes new; no
    service is torn."""
    monkeypatch.setattr(export, "BATCH", 4)
    monkeypatch.setattr("contextsvc.api.streams.CHUNK", 1)  # a chunk per service
    sids = [api.start_service(customer_id="C", v=0, pad="x" * 100) for _ in range(12)]
    r = client.get(STREAM, query_string={**ALL, "export_content": "true"}, headers=NDJSON,
                   buffered=False)
    assert r.status_code == 200 and r.is_streamed
    body = iter(r.response)
    first = [json.loads(next(body)) for _ in range(2)]  # the first batch was chosen
    for sid in (sids[0], sids[3], sids[10]):
        r2 = client.put(f"/services/{sid}/extensions/v", json=1)
        assert r2.status_code == 200
    client.delete(f"/services/{sids[11]}")
    rest = [json.loads(line) for chunk in body for line in chunk.splitlines()]
    r.close()
    services = first + rest
    assert [s["service_id"] for s in services] == sids[:11]
    assert [s["v"] for s in services] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert all(s["pad"] == "x" * 100 for s in services)


@pytest.mark.file_engine("holds the data file's lock")
def test_a_busy_store_at_the_start_is_a_503_not_a_cut_answer(tmp_path):
    path = tmp_path / "db.json"
    client = create_app({"storage": {"path": str(path), "lock_timeout": 0.2}}).test_client()
    Api(client).start_service(customer_id="C")
    fd = os.open(str(path) + ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a writer of another process would
        r = client.get(STREAM, query_string=ALL)
    finally:
        os.close(fd)
    assert r.status_code == 503
    assert r.get_json()["exception"] == "ServiceUnavailable" and "Retry-After" in r.headers
    assert stream(client, **ALL) == [1]
