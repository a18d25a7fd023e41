"""Safe retries and one-call resume over HTTP (API.md 10): idempotency keys, ETag /
If-Match / If-None-Match, and the composite start, on both engines."""

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest

from contextsvc import create_app
from contextsvc.domain import housekeeping, idempotency
from contextsvc.domain.lifecycle import OFF

B = "/genesys/1/cs"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(params=["file", "memory"])
def make(request, tmp_path, clock):
    made = []

    def make(**config):
        settings = {"storage": {"engine": request.param, "path": str(tmp_path / "db.json")},
                    **config}
        app = create_app(settings, clock=clock)
        made.append(app)
        return app.test_client()
    return make


def key(n):
    return {"Idempotency-Key": f"key-{n}"}


def answer(r):
    return r.status_code, r.get_data(), r.headers.get("Location")


def count(client, customer="C"):
    return len(client.get(f"{B}/customers/{customer}/services").get_json())


# ------------------------------------------------------------------ idempotency keys
def test_a_retried_start_gets_the_first_answer_and_creates_nothing(client):
    first = client.post(f"{B}/services/start", json={"customer_id": "C", "n": 1}, headers=key(1))
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    again = client.post(f"{B}/services/start", json={"n": 1, "customer_id": "C"}, headers=key(1))
    assert answer(again) == answer(first)
    assert again.headers["Idempotent-Replayed"] == "true"
    # the other prefix names the same resource: the same request
    other = client.post("/services/start", json={"customer_id": "C", "n": 1}, headers=key(1))
    assert answer(other) == answer(first)
    assert count(client) == 1
    assert client.post(f"{B}/services/start", json={"customer_id": "C"}).status_code == 201
    assert count(client) == 2  # without a key, each start is a new service


def started(client):
    sid = client.post(f"{B}/services/start", json={"customer_id": "C"}).get_json()["service_id"]
    assert client.post(f"{B}/services/{sid}/states/start", json={}).status_code == 201
    assert client.post(f"{B}/services/{sid}/tasks/start", json={}).status_code == 201
    return sid


# every POST of sections 3 and 6, with the body of a first request
POSTS = [
    ("/services/start", {"customer_id": "C"}),
    ("/services/{sid}/end", {"disposition": 1}),
    ("/customers/D/services/{sid}", {"note": "x"}),
    ("/services/{sid}/states/start", {"state_type": 1}),
    ("/services/{sid}/states/1/end", {}),
    ("/services/{sid}/states/transition", {"from": {"state_id": 1}, "to": {"state_type": 2}}),
    ("/services/{sid}/tasks/start", {"task_type": 1}),
    ("/services/{sid}/tasks/1/end", {}),
    ("/maintenance/purge", {"limit": "2000-01-01T00:00:00Z",
                            "operation": "purge.service.all"}),
    ("/services_composite/start", {"services": [{"service": {"customer_id": "C"},
                                                 "state": {"state_type": 9}}]}),
]


@pytest.mark.parametrize("path,body", POSTS, ids=[p for p, _ in POSTS])
def test_every_post_honours_the_key(client, path, body):
    sid = started(client)
    path = B + path.format(sid=sid)
    first = client.post(path, json=body, headers=key("p"))
    assert 200 <= first.status_code < 300, first.get_json()
    before = client.get(f"{B}/services/{sid}", query_string={
        "active_states": "true", "completed_states": "true", "active_tasks": "true",
        "completed_tasks": "true"})
    services = client.get(f"{B}/customers/C/services").get_json()
    again = client.post(path, json=body, headers=key("p"))
    assert answer(again) == answer(first) and again.headers["Idempotent-Replayed"] == "true"
    after = client.get(f"{B}/services/{sid}", query_string={
        "active_states": "true", "completed_states": "true", "active_tasks": "true",
        "completed_tasks": "true"})
    assert after.get_json() == before.get_json()  # nothing changed
    assert after.headers["ETag"] == before.headers["ETag"]
    assert client.get(f"{B}/customers/C/services").get_json() == services
    # the same key on another route, or with another body: never the first answer
    elsewhere = f"{B}/services/{sid}/" + ("states/start" if path.endswith("/tasks/start")
                                          else "tasks/start")
    other = client.post(elsewhere, json=body, headers=key("p"))
    assert other.status_code == 422, other.get_json()
    assert other.get_json()["exception"] == "IdempotencyKeyMismatch"
    if "purge" in path:
        other = client.post(path, json={"other": 1}, headers=key("p"))
        assert other.get_json()["exception"] == "IdempotencyKeyMismatch"
    else:
        assert client.post(path, json={**body, "other": 1},
                           headers=key("p")).get_json()["exception"] == "IdempotencyKeyMismatch"


def test_the_same_key_with_another_method_path_or_body_is_422_and_changes_nothing(client):
    sid = started(client)
    assert client.post(f"{B}/services/{sid}/states/start", json={"state_type": 1},
                       headers=key(2)).status_code == 201
    for path, body in [(f"/services/{sid}/states/start", {"state_type": 2}),
                       (f"/services/{sid}/tasks/start", {"state_type": 1}),
                       ("/services/start", {"customer_id": "C"}),
                       (f"/services/{sid}/states/start?x=1", {"state_type": 1})]:
        r = client.post(B + path, json=body, headers=key(2))
        assert r.status_code == 422, path
        assert r.get_json()["exception"] == "IdempotencyKeyMismatch"
    assert len(client.get(f"{B}/services/{sid}/states").get_json()) == 2
    assert len(client.get(f"{B}/services/{sid}/tasks").get_json()) == 1
    assert count(client) == 1


def test_a_refused_request_records_nothing_and_its_retry_is_processed(client):
    r = client.post(f"{B}/services/start", json={"service_type": 1}, headers=key(3))
    assert r.status_code == 400  # no customer_id or contact_key
    r = client.post(f"{B}/services/start", json={"customer_id": "C"}, headers=key(3))
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers


@pytest.mark.parametrize("value,why", [
    ("k" * 256, "longer than 255"), ("tab\there", "not printable"), ("caf\u00e9", "not printable"),
    ("", "empty")])
def test_bad_keys_are_400_and_change_nothing(client, value, why):
    r = client.post(f"{B}/services/start", json={"customer_id": "C"},
                    headers={"Idempotency-Key": value})
    assert r.status_code == 400, r.get_json()
    assert r.get_json()["exception"] == "ValidationError"
    assert "Idempotency-Key" in r.get_json()["errors"]
    assert count(client) == 0


def test_a_key_of_255_printable_characters_is_taken(client):
    value = "".join(chr(32 + i % 95) for i in range(255))
    first = client.post(f"{B}/services/start", json={"customer_id": "C"},
                        headers={"Idempotency-Key": value})
    again = client.post(f"{B}/services/start", json={"customer_id": "C"},
                        headers={"Idempotency-Key": value})
    assert first.status_code == 201 and answer(again) == answer(first)
    assert count(client) == 1


def test_records_expire_after_the_retention_and_housekeeping_drops_them(make, clock):
    client = make(idempotency={"retention": "1h"})
    first = client.post(f"{B}/services/start", json={"customer_id": "C"}, headers=key(4))
    clock.now += timedelta(minutes=59)
    assert answer(client.post(f"{B}/services/start", json={"customer_id": "C"},
                              headers=key(4))) == answer(first)
    clock.now += timedelta(minutes=1)
    again = client.post(f"{B}/services/start", json={"customer_id": "C"}, headers=key(4))
    assert again.status_code == 201 and again.get_json() != first.get_json()
    assert count(client) == 2
    store = client.application.extensions["contextsvc.stores"].get()
    sid = first.get_json()["service_id"]
    assert "requests" in store.get_service(sid)
    clock.now += timedelta(hours=1)
    housekeeping.sweep(store, OFF, clock.now)  # the records are due: dropped
    assert "requests" not in store.get_service(sid)
    assert "requests" not in store.get_service(again.get_json()["service_id"])
    assert client.post(f"{B}/services/start", json={"customer_id": "C"},
                       headers=key(4)).status_code == 201


@pytest.mark.file_engine("several stores in one test")
def test_replays_are_answered_per_store_and_from_records_other_processes_wrote(tmp_path):
    """Each process keeps the answers it replays (contextsvc/api/retries.py), per
    store: a key is one store's, and a record written by another process is found."""
    def app(name):
        return create_app({"storage": {"path": str(tmp_path / name)}}).test_client()

    one, other, beside = app("one.json"), app("other.json"), app("one.json")
    start = {"customer_id": "C"}
    first = one.post(f"{B}/services/start", json=start, headers=key(7))
    assert answer(one.post(f"{B}/services/start", json=start, headers=key(7))) == answer(first)
    # the same key on another store is another request there
    elsewhere = other.post(f"{B}/services/start", json=start, headers=key(7))
    assert elsewhere.status_code == 201 and "Idempotent-Replayed" not in elsewhere.headers
    assert count(other) == 1
    again = other.post(f"{B}/services/start", json=start, headers=key(7))
    assert answer(again) == answer(elsewhere) and again.headers["Idempotent-Replayed"] == "true"
    # a second app on the first store (as another worker) replays the first answer
    seen = beside.post(f"{B}/services/start", json=start, headers=key(7))
    assert answer(seen) == answer(first) and seen.headers["Idempotent-Replayed"] == "true"
    assert count(one) == 1


@pytest.mark.parametrize("method, path, query", [
    ("POST", "/services/start", []), ("POST", "/services/7/end", [("b", "2"), ("a", "\u00e9")])])
def test_the_fingerprint_of_a_request_as_sent_stays_what_stored_records_hold(method, path,
                                                                               query):
    """Records written before keep matching their retries by the bytes sent."""
    body = b'{"customer_id": "C"}'
    head = json.dumps([method, path, sorted(query)], separators=(",", ":"))
    expected = hashlib.sha256(head.encode() + b"\n" + body).hexdigest()
    for _ in range(2):  # computed, then remembered
        assert idempotency.raw_fingerprint(method, path, query, body) == expected


def test_a_bad_retention_is_refused():
    from contextsvc.config import ConfigError

    with pytest.raises(ConfigError, match="idempotency"):
        create_app({"storage": {"engine": "memory"}, "idempotency": {"retention": "soon"}})


# ------------------------------------------------------------------ ETag, If-Match
def etag(client, sid):
    r = client.get(f"{B}/services/{sid}")
    assert r.status_code == 200
    return r.headers["ETag"]


def test_the_etag_changes_on_every_write_to_the_service_its_states_and_tasks(client):
    sid = started(client)
    seen = [etag(client, sid)]
    assert etag(client, sid) == seen[0]  # reading changes nothing
    for method, path, body in [
            ("post", "/states/start", {}), ("put", "/states/1/extensions/a", 1),
            ("post", "/states/1/end", {}), ("post", "/tasks/start", {}),
            ("put", "/tasks/1/extensions/a", 1), ("post", "/tasks/1/end", {}),
            ("put", "/extensions/a", 1), ("post", "/end", {}),
            ("post", "/states/transition", {"from": {"state_id": 2}, "to": {}})]:
        r = getattr(client, method)(f"{B}/services/{sid}{path}", json=body)
        assert r.status_code < 300, (path, r.get_json())
        seen.append(etag(client, sid))
    r = client.post(f"{B}/customers/D/services/{sid}", json={})
    assert r.headers["ETag"] == etag(client, sid)
    seen.append(r.headers["ETag"])
    assert len(set(seen)) == len(seen)
    r = client.put(f"{B}/services/{sid}/extensions/b", json=2)
    assert r.headers["ETag"] == etag(client, sid) not in seen


def test_if_none_match_answers_304_while_unchanged(client):
    sid = started(client)
    tag = etag(client, sid)
    for header in (tag, f'"x", {tag}', f"W/{tag}", "*"):
        r = client.get(f"{B}/services/{sid}", headers={"If-None-Match": header})
        assert r.status_code == 304 and r.get_data() == b"" and r.headers["ETag"] == tag
    client.post(f"{B}/services/{sid}/tasks/start", json={})
    r = client.get(f"{B}/services/{sid}", headers={"If-None-Match": tag})
    assert r.status_code == 200 and r.headers["ETag"] != tag


def test_if_match_lets_only_the_first_of_two_concurrent_editors_write(client):
    sid = started(client)
    tag = etag(client, sid)  # both agent desktops read the service
    first = client.put(f"{B}/services/{sid}/extensions/notes", json="from desk 1",
                       headers={"If-Match": tag})
    assert first.status_code == 200
    second = client.put(f"{B}/services/{sid}/extensions/notes", json="from desk 2",
                        headers={"If-Match": tag})
    assert second.status_code == 412
    assert second.get_json()["exception"] == "PreconditionFailed"
    assert client.get(f"{B}/services/{sid}").get_json()["notes"] == "from desk 1"
    assert client.put(f"{B}/services/{sid}/extensions/notes", json="from desk 2",
                      headers={"If-Match": first.headers["ETag"]}).status_code == 200


@pytest.mark.parametrize("method,path,body", [
    ("post", "/end", {}), ("post", "/states/start", {}), ("post", "/states/1/end", {}),
    ("post", "/states/transition", {"from": {"state_id": 1}, "to": {}}),
    ("post", "/tasks/start", {}), ("post", "/tasks/1/end", {}), ("put", "/extensions/k", 1),
    ("put", "/states/1/extensions/k", 1), ("put", "/tasks/1/extensions/k", 1),
    ("put", "", {"ttl": 60}), ("delete", "", None)])
def test_a_stale_if_match_is_412_on_every_write_and_changes_nothing(client, method, path, body):
    sid = started(client)
    before = client.get(f"{B}/services/{sid}?active_states=true&active_tasks=true")
    for stale in ('"999"', 'W/' + before.headers["ETag"]):  # a weak tag never matches
        r = getattr(client, method)(f"{B}/services/{sid}{path}", json=body,
                                    headers={"If-Match": stale})
        assert r.status_code == 412, r.get_json()
    after = client.get(f"{B}/services/{sid}?active_states=true&active_tasks=true")
    assert after.get_json() == before.get_json()
    assert after.headers["ETag"] == before.headers["ETag"]
    for good in (before.headers["ETag"], f'"1", {before.headers["ETag"]}'):
        r = getattr(client, method)(f"{B}/services/{sid}{path}", json=body,
                                    headers={"If-Match": good})
        assert r.status_code < 300, r.get_json()
        sid = started(client)
        before = client.get(f"{B}/services/{sid}")
    r = getattr(client, method)(f"{B}/services/{sid}{path}", json=body,
                                headers={"If-Match": "*"})
    assert r.status_code < 300


@pytest.mark.parametrize("header", ["3", '"3', "**", '"a" "b"', '"a",, "b"', 'W/3'])
def test_a_malformed_if_match_is_400_and_changes_nothing(client, header):
    sid = started(client)
    tag = etag(client, sid)
    r = client.post(f"{B}/services/{sid}/states/start", json={}, headers={"If-Match": header})
    assert r.status_code == 400 and "If-Match" in r.get_json()["errors"]
    r = client.get(f"{B}/services/{sid}", headers={"If-None-Match": header})
    assert r.status_code == 400
    assert etag(client, sid) == tag


def test_time_alone_changes_the_etag_when_it_changes_the_service(make, clock):
    client = make()
    sid = client.post(f"{B}/services/start", json={"customer_id": "C",
                                                    "auto_complete_after": 60}).get_json()[
        "service_id"]
    tag = etag(client, sid)
    clock.now += timedelta(seconds=61)  # completed by time, before any sweep wrote it
    shown = client.get(f"{B}/services/{sid}")
    assert "completed" in shown.get_json() and shown.headers["ETag"] != tag
    store = client.application.extensions["contextsvc.stores"].get()
    housekeeping.sweep(store, OFF, clock.now)  # writing down what reads show...
    assert etag(client, sid) == shown.headers["ETag"]  # ...changes no version


# ------------------------------------------------------------------ composite start
def composite(client, *elements, query="", headers=None):
    return client.post(f"{B}/services_composite/start{query}",
                       json={"services": list(elements)}, headers=headers)


IVR = {"service": {"contact_key": "408-832-7799", "service_type": "wireless"},
       "state": {"state_type": "queue"}, "task": {"task_type": "callback"},
       "associate_state_task": True}


def test_a_caller_who_rings_back_resumes_their_open_service_and_state(client):
    first = composite(client, IVR)
    assert first.status_code == 200
    assert first.get_json() == {"services": [{
        "service_id": 1, "service_created": True, "state_id": 1, "state_created": True,
        "task_id": 1, "task_created": True}]}
    assert first.headers["Location"] == f"{B}/services/1/tasks/1"
    again = composite(client, IVR)
    assert again.get_json()["services"][0] == {
        "service_id": 1, "service_created": False, "state_id": 1, "state_created": False,
        "task_id": 1, "task_created": False}
    task = client.get(f"{B}/services/1/tasks/1").get_json()
    assert task["state_id"] == 1 and task["task_type"] == "callback"
    # the state is done: a new one in the same service
    client.post(f"{B}/services/1/states/1/end", json={})
    third = composite(client, IVR).get_json()["services"][0]
    assert third == {"service_id": 1, "service_created": False, "state_id": 2,
                     "state_created": True, "task_id": 2, "task_created": True}
    # the service is done: a new one
    client.post(f"{B}/services/1/end", json={})
    assert composite(client, IVR).get_json()["services"][0]["service_id"] == 2


def test_reuse_rules(client):
    def start(**body):
        return client.post(f"{B}/services/start", json=body).get_json()["service_id"]

    old = start(customer_id="C", service_type=100, timestamp="2026-01-01T00:00:00Z")
    recent = start(customer_id="C", service_type=100, timestamp="2026-02-01T00:00:00Z")
    start(customer_id="C", service_type=200)
    start(customer_id="C")  # no type
    anonymous = start(contact_key="K", service_type=100)
    start(customer_id="D", contact_key="K", service_type=100)  # not anonymous

    def found(service, query=""):
        r = composite(client, {"service": service}, query=query)
        assert r.status_code == 200, r.get_json()
        return r.get_json()["services"][0]["service_id"]

    assert found({"customer_id": "C", "service_type": "100"}) == recent  # as text
    assert found({"customer_id": "C", "contact_key": "K", "service_type": 100}) == recent
    assert found({"contact_key": "K", "service_type": 100}) == anonymous
    assert found({"customer_id": "C"}) == 4  # an absent type matches an absent type only
    assert found({"customer_id": "C", "service_type": 300}) == anonymous + 2  # none: started
    new = found({"customer_id": "C", "service_type": 100}, "?create_new_services=TRUE")
    assert new == anonymous + 3
    assert found({"customer_id": "C", "service_type": 100},
                 "?create_new_services=false") == new  # now the most recently started
    assert {s["service_id"] for s in composite(
        client, *[{"service": {"customer_id": "C", "service_type": 100}}] * 3
    ).get_json()["services"]} == {new} != {old}


def test_elements_of_one_call_see_each_other_and_locations_follow_the_first(client):
    r = composite(client, {"service": {"customer_id": "E", "service_type": 1},
                           "state": {"state_type": "s"}},
                  {"service": {"customer_id": "E", "service_type": 1},
                   "task": {"task_type": "t"}},
                  {"service": {"customer_id": "F"}})
    assert r.status_code == 200
    services = r.get_json()["services"]
    assert services[0]["service_id"] == services[1]["service_id"]
    assert [s["service_created"] for s in services] == [True, False, True]
    assert "state_id" not in services[1] and services[1]["task_created"] is True
    assert client.get(f"{B}/services/{services[0]['service_id']}/tasks/1").get_json()[
        "task_type"] == "t"
    assert r.headers["Location"] == f"{B}/services/{services[0]['service_id']}/states/1"
    r = client.post("/services_composite/start", json={"services": [{"service": {
        "customer_id": "G"}}]})
    assert r.headers["Location"] == f"/services/{r.get_json()['services'][0]['service_id']}"


def test_a_keyed_composite_start_is_replayed(client):
    first = composite(client, IVR, headers=key(5))
    again = composite(client, IVR, headers=key(5))
    assert answer(again) == answer(first) and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["services"][0]["service_created"] is True
    assert composite(client, IVR).get_json()["services"][0]["service_created"] is False


@pytest.mark.parametrize("body,field", [
    ({}, "services"), ({"services": []}, "services"), ({"services": {}}, "services"),
    ({"services": [IVR], "x": 1}, "x"),
    ({"services": [IVR, 3]}, "services.1"),
    ({"services": [IVR, {"state": {}}]}, "services.1.service"),
    ({"services": [IVR, {"service": {"customer_id": 5}}]}, "services.1.service.customer_id"),
    ({"services": [IVR, {"service": {"service_type": 1}}]}, "services.1.service.customer_id"),
    ({"services": [{"service": {"customer_id": "C"}, "state": []}]}, "services.0.state"),
    ({"services": [{"service": {"customer_id": "C"}, "task": {"task_type": 1.5}}]},
     "services.0.task.task_type"),
    ({"services": [{"service": {"customer_id": "C"}, "state": {"state_id": 1}}]},
     "services.0.state.state_id"),
    ({"services": [{"service": {"customer_id": "C"}, "tasks": {}}]}, "services.0.tasks"),
    ({"services": [{"service": {"customer_id": "C"}, "associate_state_task": "yes"}]},
     "services.0.associate_state_task"),
    ({"services": [{"service": {"customer_id": "C"}, "task": {},
                    "associate_state_task": True}]}, "services.0.associate_state_task"),
    ({"services": [{"service": {"customer_id": "C"}}] * 101}, "services"),
])
def test_bad_composite_bodies_are_400_naming_the_element_and_change_nothing(client, body, field):
    r = client.post(f"{B}/services_composite/start", json=body)
    assert r.status_code == 400, r.get_json()
    assert field in r.get_json()["errors"], r.get_json()
    assert count(client) == 0 and client.get(f"{B}/services/1").status_code == 404


def test_a_composite_naming_a_missing_state_is_404_and_changes_nothing(client):
    r = composite(client, {"service": {"customer_id": "C"}},
                  {"service": {"customer_id": "C", "service_type": 2},
                   "task": {"state_id": 7}})
    assert r.status_code == 404
    assert count(client) == 0
    r = client.post(f"{B}/services_composite/start?create_new_services=maybe",
                    json={"services": [IVR]})
    assert r.status_code == 400
