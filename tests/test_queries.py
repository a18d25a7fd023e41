"""Customer and anonymous queries: status routes, date and type filters, flags."""

import pytest


@pytest.fixture
def history(api):
    """Three services of customer C1 and two anonymous ones on one contact key."""
    ids = {
        "old": api.start_service(customer_id="C1", service_type=1,
                                 timestamp="2009-05-01T00:00:00Z"),
        "mid": api.start_service(customer_id="C1", service_type="two",
                                 timestamp="2009-05-02T00:00:00Z"),
        "new": api.start_service(customer_id="C1", service_type=3,
                                 timestamp="2009-05-03T00:00:00Z"),
        "anon": api.start_service(contact_key="408", timestamp="2009-05-02T00:00:00Z"),
        "anon2": api.start_service(contact_key="408", timestamp="2009-05-04T00:00:00Z"),
        "other": api.start_service(customer_id="C2", contact_key="408"),
    }
    api.end(f"/services/{ids['old']}/end", timestamp="2009-05-01T01:00:00Z")
    api.end(f"/services/{ids['mid']}/end", timestamp="2009-05-05T00:00:00Z")
    api.end(f"/services/{ids['anon2']}/end", timestamp="2009-05-04T00:00:01Z")
    return ids


def names(history, docs):
    back = {v: k for k, v in history.items()}
    return [back[d["service_id"]] for d in docs]


@pytest.mark.parametrize("path, params, expected", [
    ("/customers/C1/services", {}, ["old", "mid", "new"]),
    ("/customers/C1/services/active", {}, ["new"]),
    ("/customers/C1/services/completed", {}, ["old", "mid"]),
    ("/customers/C1/services", {"started_from": "2009-05-02T00:00:00Z"}, ["mid", "new"]),
    ("/customers/C1/services", {"started_to": "2009-05-02T00:00:00Z"}, ["old"]),
    ("/customers/C1/services", {"started_from": "2009-05-01T12:00:00",
                                "started_to": "2009-05-03T00:00:00.001Z"}, ["mid", "new"]),
    ("/customers/C1/services", {"completed_from": "2009-05-01T01:00:00Z"}, ["old", "mid"]),
    ("/customers/C1/services", {"completed_to": "2009-05-05T00:00:00Z"}, ["old"]),
    ("/customers/C1/services/active", {"completed_from": "2000-01-01T00:00:00Z"}, []),
    ("/customers/C1/services", {"service_types": "1,3"}, ["old", "new"]),
    ("/customers/C1/services", {"service_types": ["two", "3"]}, ["mid", "new"]),
    ("/customers/C1/services", {"service_types": ""}, ["old", "mid", "new"]),
    ("/customers/C1/services/completed", {"service_types": "3"}, []),
    ("/customers/NOBODY/services", {}, []),
    ("/services/anonymous/408", {}, ["anon", "anon2"]),
    ("/services/anonymous/408/active", {}, ["anon"]),
    ("/services/anonymous/408/completed", {}, ["anon2"]),
    ("/services/anonymous/408", {"started_from": "2009-05-03T00:00:00Z"}, ["anon2"]),
    ("/services/anonymous/nobody", {}, []),
])
def test_query_filters(client, base, history, path, params, expected):
    r = client.get(base + path, query_string=params)
    assert r.status_code == 200, r.get_json()
    assert names(history, r.get_json()) == expected


def test_query_nested_arrays_and_extensions(api, client):
    sid = api.start_service(customer_id="ABC1234", est_duration=86400, keep=1, drop=2)
    stid = api.start_state(sid, state_type=8, keep=3)
    tid = api.start_task(sid, state_id=stid)
    r = client.get("/genesys/1/cs/customers/ABC1234/services/active?active_states=true")
    [doc] = r.get_json()
    assert doc["est_duration"] == 86400
    assert [s["state_id"] for s in doc["active_states"]] == [stid]
    assert "active_tasks" not in doc and "completed_states" not in doc
    [doc] = api.get("/customers/ABC1234/services", active_tasks="true", extensions="keep",
                    active_states="true")
    assert doc["keep"] == 1 and "drop" not in doc and doc["active_states"][0]["keep"] == 3
    assert [t["task_id"] for t in doc["active_tasks"]] == [tid]


@pytest.mark.parametrize("params", [
    {"started_from": "yesterday"}, {"completed_to": "2009-13-01T00:00:00Z"},
    {"active_states": "yes"}, {"completed_tasks": ""}, {"started_to": "2009-05-01"},
])
def test_malformed_query_parameter_is_400(client, params):
    r = client.get("/customers/C1/services", query_string=params)
    assert r.status_code == 400
    body = r.get_json()
    assert body["exception"] == "ValidationError" and set(body["errors"]) == set(params)


def test_dropped_caller_story(api, client):
    """The Query Services seed: an unidentified caller drops and calls back."""
    sid = api.start_service(contact_key="408-832-7799", service_type="new-wireless")
    api.start_state(sid, state_type="agent-queue")
    found = api.get("/services/anonymous/408-832-7799/active", active_states="true")
    assert [s["service_id"] for s in found] == [sid]
    assert found[0]["active_states"][0]["state_type"] == "agent-queue"
    r = client.post(f"/customers/ABC1234/services/{sid}")
    assert r.status_code == 200
    assert api.get("/services/anonymous/408-832-7799/active") == []
    assert [s["service_id"] for s in api.get("/customers/ABC1234/services/active")] == [sid]
