"""States and tasks: start, end, transition, lists, by id, attached data."""

import pytest


def test_state_start_location_and_representation(api, client, base):
    sid = api.start_service()
    r = client.post(f"{base}/services/{sid}/states/start", json={
        "state_type": 8, "est_duration": 500, "timestamp": "2009-05-07T12:08:53.298",
        "media_type": "voice", "step": {"n": 1}})
    assert r.status_code == 201
    stid = r.get_json()["state_id"]
    assert r.headers["Location"] == f"{base}/services/{sid}/states/{stid}"
    state = client.get(r.headers["Location"]).get_json()
    assert state == {"service_id": sid, "state_id": stid, "state_type": 8, "est_duration": 500,
                     "started": {"timestamp": "2009-05-07T12:08:53.298Z", "media_type": "voice"},
                     "step": {"n": 1}}


def test_state_without_body_and_on_completed_service(api, client):
    sid = api.start_service(auto_closed=True)
    r = client.post(f"/services/{sid}/states/start")
    assert r.status_code == 201 and r.get_json() == {"state_id": 1}


def test_state_ids_are_distinct_per_service(api):
    a, b = api.start_service(), api.start_service()
    assert [api.start_state(a), api.start_state(a), api.start_state(b)] == [1, 2, 1]


def test_previous_state_id(api, client):
    sid = api.start_service()
    first = api.start_state(sid)
    second = api.start_state(sid, previous_state_id=first)
    assert api.get(f"/services/{sid}/states/{second}")["previous_state_id"] == first
    r = client.post(f"/services/{sid}/states/start", json={"previous_state_id": 99})
    assert r.status_code == 404 and r.get_json()["exception"] == "NotFoundException"


def test_end_state_keeps_its_tasks_active(api, client, base):
    sid = api.start_service()
    stid = api.start_state(sid, timestamp="2009-05-07T12:00:00Z")
    tid = api.start_task(sid, state_id=stid)
    r = client.post(f"{base}/services/{sid}/states/{stid}/end", json={
        "timestamp": "2009-05-07T12:00:01.5Z", "disposition": "done", "disposition_desc": "ok",
        "state_type": 99, "previous_state_id": 5, "result": True})
    assert r.status_code == 204
    state = api.get(f"/services/{sid}/states/{stid}")
    assert state["completed"] == {"timestamp": "2009-05-07T12:00:01.500Z"}
    assert state["duration"] == 1500 and state["result"] is True
    assert state["disposition"] == "done" and "state_type" not in state
    assert "completed" not in api.get(f"/services/{sid}/tasks/{tid}")
    assert client.post(f"/services/{sid}/states/{stid}/end").status_code == 409


def test_transition_from_seed(api, client, base):
    sid = api.start_service()
    first = api.start_state(sid, state_type=7)
    r = client.post(f"{base}/services/{sid}/states/transition", json={
        "timestamp": "2009-05-07T12:05:20.157", "session_id": "11000ABC-80236C1A-1010",
        "interaction_id": "123ABC908ABFFD8080",
        "from": {"state_id": first, "disposition": 1, "disposition_desc": "SUCCESS",
                 "Satisfaction": [{"place": "Terranova mexico resort"}]},
        "to": {"state_type": 8, "est_duration": 500,
               "Sponsoring": {"Rank": "first", "expire": 7}},
        "channel": "web"})
    assert r.status_code == 201
    new = r.get_json()["state_id"]
    assert r.headers["Location"] == f"{base}/services/{sid}/states/{new}"
    old = api.get(f"/services/{sid}/states/{first}")
    assert old["completed"] == {"timestamp": "2009-05-07T12:05:20.157Z",
                                "session_id": "11000ABC-80236C1A-1010",
                                "interaction_id": "123ABC908ABFFD8080"}
    assert (old["disposition"], old["disposition_desc"]) == (1, "SUCCESS")
    assert old["Satisfaction"] == [{"place": "Terranova mexico resort"}]
    assert old["channel"] == "web" and "Sponsoring" not in old
    state = api.get(f"/services/{sid}/states/{new}")
    assert state["previous_state_id"] == first and state["state_type"] == 8
    assert state["est_duration"] == 500 and state["Sponsoring"]["Rank"] == "first"
    assert state["started"]["timestamp"] == "2009-05-07T12:05:20.157Z"
    assert state["channel"] == "web" and "Satisfaction" not in state


def test_transition_from_completed_state_creates_nothing(api, client):
    sid = api.start_service()
    first = api.start_state(sid)
    api.end(f"/services/{sid}/states/{first}/end")
    r = client.post(f"/services/{sid}/states/transition",
                    json={"from": {"state_id": first}, "to": {}})
    assert r.status_code == 409
    assert len(api.get(f"/services/{sid}/states")) == 1


@pytest.mark.parametrize("body, status", [
    ({"to": {}}, 400),
    ({"from": {"state_id": 1}}, 400),
    ({"from": {}, "to": {}}, 400),
    ({"from": {"state_id": "1"}, "to": {}}, 400),
    ({"from": 1, "to": {}}, 400),
    ({"from": {"state_id": 1}, "to": {"state_type": 1.5}}, 400),
    ({"from": {"state_id": 1, "service_id": 3}, "to": {}}, 400),
    ({"from": {"state_id": 42}, "to": {}}, 404),
])
def test_transition_errors(api, client, body, status):
    sid = api.start_service()
    api.start_state(sid)
    before = api.get(f"/services/{sid}/states")
    r = client.post(f"/services/{sid}/states/transition", json=body)
    assert r.status_code == status, r.get_json()
    assert api.get(f"/services/{sid}/states") == before


def test_state_lists_filters_order_and_tasks(api, client, base):
    sid = api.start_service()
    late = api.start_state(sid, state_type=1, timestamp="2009-05-07T12:00:03Z")
    early = api.start_state(sid, state_type="two", timestamp="2009-05-07T12:00:01Z")
    tie = api.start_state(sid, state_type=3, timestamp="2009-05-07T12:00:01Z")
    api.end(f"/services/{sid}/states/{tie}/end")
    tid = api.start_task(sid, state_id=early)
    done = api.start_task(sid, state_id=early)
    api.end(f"/services/{sid}/tasks/{done}/end")
    api.start_task(sid)  # a task of the service only

    def ids(path, **params):
        r = client.get(f"{base}/services/{sid}/{path}", query_string=params)
        assert r.status_code == 200
        return [s["state_id"] for s in r.get_json()]

    assert ids("states") == [early, tie, late]
    assert ids("states/active") == [early, late]
    assert ids("states/completed") == [tie]
    assert ids("states", state_types="1,two") == [early, late]
    assert ids("states", state_types=["1", "3"]) == [tie, late]
    assert ids("states", state_types="") == [early, tie, late]
    assert ids("states", state_types="9") == []
    states = api.get(f"/services/{sid}/states", active_tasks="true", completed_tasks="true")
    assert [t["task_id"] for t in states[0]["active_tasks"]] == [tid]
    assert [t["task_id"] for t in states[0]["completed_tasks"]] == [done]
    assert states[2]["active_tasks"] == [] and states[0]["service_id"] == sid
    assert "active_tasks" not in api.get(f"/services/{sid}/states/{early}")
    one = api.get(f"/services/{sid}/states/{early}", active_tasks="true")
    assert [t["task_id"] for t in one["active_tasks"]] == [tid]


def test_state_extensions(api, client, base):
    sid = api.start_service()
    stid = api.start_state(sid, notes={"a": 1}, other=1)
    r = client.put(f"{base}/services/{sid}/states/{stid}/extensions/notes/merge", json={"b": 2})
    assert r.status_code == 200
    assert r.get_json()["notes"] == {"a": 1, "b": 2} and r.get_json()["service_id"] == sid
    r = client.put(f"{base}/services/{sid}/states/{stid}/extensions/notes", json=3)
    assert r.get_json()["notes"] == 3
    assert client.put(f"/services/{sid}/states/{stid}/extensions/state_type",
                      json=1).status_code == 400
    assert client.put(f"/services/{sid}/states/9/extensions/x", json=1).status_code == 404
    assert api.get(f"/services/{sid}/states/{stid}", extensions="other") == {
        "service_id": sid, "state_id": stid,
        "started": api.get(f"/services/{sid}/states/{stid}")["started"], "other": 1}


def test_task_start_with_and_without_state(api, client, base):
    sid = api.start_service()
    stid = api.start_state(sid)
    r = client.post(f"{base}/services/{sid}/tasks/start",
                    json={"task_type": "collect", "state_id": stid, "field": "x"})
    assert r.status_code == 201
    tid = r.get_json()["task_id"]
    assert r.headers["Location"] == f"{base}/services/{sid}/tasks/{tid}"
    task = client.get(r.headers["Location"]).get_json()
    assert task["service_id"] == sid and task["state_id"] == stid
    assert task["task_type"] == "collect" and task["field"] == "x"
    free = api.start_task(sid)
    assert "state_id" not in api.get(f"/services/{sid}/tasks/{free}")
    assert free != tid
    r = client.post(f"/services/{sid}/tasks/start", json={"state_id": 77})
    assert r.status_code == 404


def test_task_on_completed_state_and_service(api, client):
    sid = api.start_service()
    stid = api.start_state(sid)
    api.end(f"/services/{sid}/states/{stid}/end")
    api.end(f"/services/{sid}/end")
    assert api.start_task(sid, state_id=stid) == 1


def test_task_end_and_conflict(api, client, base):
    sid = api.start_service()
    tid = api.start_task(sid, task_type=1, state_id=None, timestamp="2009-05-07T12:00:00Z")
    r = client.post(f"{base}/services/{sid}/tasks/{tid}/end", json={
        "timestamp": "2009-05-07T12:00:10Z", "disposition": 3, "task_type": 9, "state_id": 4,
        "answer": "yes"})
    assert r.status_code == 204
    task = api.get(f"/services/{sid}/tasks/{tid}")
    assert task["duration"] == 10_000 and task["answer"] == "yes" and task["task_type"] == 1
    assert "state_id" not in task
    r = client.post(f"/services/{sid}/tasks/{tid}/end")
    assert r.status_code == 409 and r.get_json()["exception"] == "ConflictException"


def test_task_lists(api, client, base):
    sid = api.start_service()
    s1, s2 = api.start_state(sid), api.start_state(sid)
    a = api.start_task(sid, state_id=s1, task_type=1, timestamp="2009-05-07T12:00:02Z")
    b = api.start_task(sid, state_id=s2, task_type=2, timestamp="2009-05-07T12:00:01Z")
    c = api.start_task(sid, task_type="x", timestamp="2009-05-07T12:00:03Z")
    api.end(f"/services/{sid}/tasks/{b}/end")

    def ids(path, **params):
        r = client.get(f"{base}/services/{sid}/{path}", query_string=params)
        assert r.status_code == 200, r.get_json()
        return [t["task_id"] for t in r.get_json()]

    assert ids("tasks") == [b, a, c]
    assert ids("tasks/active") == [a, c]
    assert ids("tasks/completed") == [b]
    assert ids("tasks", state_id=s1) == [a]
    assert ids("tasks", state_id=99) == []
    assert ids("tasks", task_types="x,2") == [b, c]
    assert ids("tasks", task_types=["1"], state_id=s2) == []
    assert client.get(f"/services/{sid}/tasks?state_id=abc").status_code == 400
    listed = api.get(f"/services/{sid}/tasks")
    assert all(t["service_id"] == sid for t in listed)


def test_task_extensions(api, client, base):
    sid = api.start_service()
    tid = api.start_task(sid, info={"a": 1})
    r = client.put(f"{base}/services/{sid}/tasks/{tid}/extensions/info/merge", json={"b": 2})
    assert r.status_code == 200 and r.get_json()["info"] == {"a": 1, "b": 2}
    assert r.get_json()["service_id"] == sid
    r = client.put(f"{base}/services/{sid}/tasks/{tid}/extensions/info", json="plain")
    assert r.get_json()["info"] == "plain"
    r = client.put(f"/services/{sid}/tasks/{tid}/extensions/info/merge", json={"c": 1})
    assert r.status_code == 400
    assert client.put(f"/services/{sid}/tasks/{tid}/extensions/task_id", json=1).status_code == 400
    assert client.put(f"/services/{sid}/tasks/5/extensions/x", json=1).status_code == 404
