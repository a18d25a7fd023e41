"""Start, end, get, associate, delete and attached data of services."""

import pytest

from tests.conftest import Api

SEED_START = {  # the Start Service seed's example body
    "timestamp": "2009-05-12T12:05:12.145Z", "interaction_id": "123ABCAADFJ1259ACF",
    "application_type": 400, "application_id": 40, "est_duration": 60, "contact_key": "42",
    "service_type": 100, "media_type": 1, "resource_id": 5005, "resource_type": 2,
    "disposition": 10, "coupon": {"coupon_name": "DISCOUNTCODE15"},
    "satisfaction": {"score": 85, "agentID": 2025},
    "relatedOffers": [{"offer_name": "VIP credit card black ed.", "type": 9},
                      {"offer_name": "life insurance", "type": 3}],
}


def test_start_returns_201_location_and_id(client, base):
    r = client.post(f"{base}/services/start", json=SEED_START)
    assert r.status_code == 201
    sid = r.get_json()["service_id"]
    assert r.get_json() == {"service_id": sid}
    assert r.headers["Location"] == f"{base}/services/{sid}"
    assert client.get(r.headers["Location"]).status_code == 200


def test_seed_start_body_is_represented(client):
    sid = Api(client).start_service(**SEED_START)
    doc = client.get(f"/genesys/1/cs/services/{sid}").get_json()
    assert doc == {
        "service_id": sid, "contact_key": "42", "service_type": 100, "est_duration": 60,
        "started": {"timestamp": "2009-05-12T12:05:12.145Z",
                    "interaction_id": "123ABCAADFJ1259ACF", "application_type": 400,
                    "application_id": 40, "resource_type": 2, "resource_id": 5005,
                    "media_type": 1},
        "disposition": 10,
        "coupon": {"coupon_name": "DISCOUNTCODE15"},
        "satisfaction": {"score": 85, "agentID": 2025},
        "relatedOffers": SEED_START["relatedOffers"],
    }
    assert list(doc)[0] == "service_id"
    assert "customer_id" not in doc and "completed" not in doc


def test_ids_increase_and_are_never_reused(api, client):
    first = api.start_service()
    second = api.start_service()
    assert second > first
    assert client.delete(f"/services/{second}").status_code == 200
    assert api.start_service() > second


def test_timestamp_defaults_to_server_clock_and_normalizes(api):
    sid = api.start_service()
    stamp = api.get(f"/services/{sid}")["started"]["timestamp"]
    assert stamp.endswith("Z") and len(stamp) == len("2009-05-07T12:05:20.157Z")
    sid = api.start_service(timestamp="2009-05-07T14:05:20.157999+02:00")
    assert api.get(f"/services/{sid}")["started"]["timestamp"] == "2009-05-07T12:05:20.157Z"
    sid = api.start_service(timestamp="2009-05-07T12:05:20")
    assert api.get(f"/services/{sid}")["started"]["timestamp"] == "2009-05-07T12:05:20.000Z"


def test_null_field_counts_as_absent(api):
    sid = api.start_service(customer_id="C1", session_id=None, note=None)
    doc = api.get(f"/services/{sid}")
    assert "session_id" not in doc["started"]
    assert doc["note"] is None  # attached data keeps null as a value


def test_end_service(api, client, base):
    sid = api.start_service(customer_id="C1", timestamp="2009-05-07T12:05:20.157Z")
    r = client.post(f"{base}/services/{sid}/end", json={
        "timestamp": "2009-05-07T12:35:20.157Z", "resource_id": 5005, "disposition": 10,
        "disposition_desc": "booked", "survey": {"score": 9},
        # the start body may be sent again: start-only keys are ignored
        "customer_id": "OTHER", "service_type": 7, "est_duration": 5})
    assert r.status_code == 204 and r.data == b"" and "Content-Type" not in r.headers
    doc = api.get(f"/services/{sid}")
    assert doc["completed"] == {"timestamp": "2009-05-07T12:35:20.157Z", "resource_id": 5005}
    assert doc["duration"] == 1_800_000
    assert (doc["disposition"], doc["disposition_desc"]) == (10, "booked")
    assert doc["survey"] == {"score": 9}
    assert doc["customer_id"] == "C1" and "service_type" not in doc and "est_duration" not in doc


def test_end_without_body(api, client):
    sid = api.start_service()
    assert client.post(f"/services/{sid}/end").status_code == 204
    assert "completed" in api.get(f"/services/{sid}")


def test_end_twice_is_409_and_changes_nothing(api, client):
    sid = api.start_service()
    api.end(f"/services/{sid}/end", disposition=1)
    before = api.get(f"/services/{sid}")
    r = client.post(f"/services/{sid}/end", json={"disposition": 2, "x": 1})
    assert r.status_code == 409
    assert r.get_json()["exception"] == "ConflictException"
    assert api.get(f"/services/{sid}") == before


def test_completion_before_start_has_zero_duration(api):
    sid = api.start_service(timestamp="2009-05-07T12:05:20.157Z")
    api.end(f"/services/{sid}/end", timestamp="2009-05-07T12:00:00Z")
    doc = api.get(f"/services/{sid}")
    assert doc["duration"] == 0 and doc["completed"]["timestamp"] == "2009-05-07T12:00:00.000Z"


def test_auto_closed_service_is_completed_at_start(api):
    sid = api.start_service(customer_id="C1", auto_closed=True,
                            timestamp="2009-05-07T12:05:20.157Z")
    doc = api.get(f"/services/{sid}")
    assert doc["completed"] == {"timestamp": "2009-05-07T12:05:20.157Z"}
    assert doc["duration"] == 0 and "auto_closed" not in doc
    assert [s["service_id"] for s in api.get("/customers/C1/services/completed")] == [sid]
    assert api.get("/customers/C1/services/active") == []


def test_associate_anonymous_service(api, client, base):
    sid = api.start_service(contact_key="408-832-7799", service_type=1)
    r = client.post(f"{base}/customers/0004Va58A92T0018/services/{sid}", json={
        "timestamp": "2009-05-12T12:05:12.145Z", "interaction_id": "123ABCAADFJ1259ACF",
        "media_type": 1, "resource_id": 5005, "resource_type": 2, "disposition": 10,
        "Feedback": {"FeedbackType": "survey", "rating": 7},
        "Satisfaction": [{"rating": 2, "useful": True}, {"rating": 8, "useful": False}],
        "customer_id": "IGNORED", "contact_key": "IGNORED"})
    assert r.status_code == 200
    doc = r.get_json()
    assert doc["customer_id"] == "0004Va58A92T0018" and doc["contact_key"] == "408-832-7799"
    assert doc["started"]["timestamp"] == "2009-05-12T12:05:12.145Z"
    assert doc["started"]["resource_id"] == 5005 and doc["disposition"] == 10
    assert doc["Satisfaction"][1] == {"rating": 8, "useful": False}
    assert api.get(f"/services/{sid}") == doc
    assert api.get("/services/anonymous/408-832-7799") == []
    assert [s["service_id"] for s in api.get("/customers/0004Va58A92T0018/services")] == [sid]


def test_associate_replaces_earlier_association(api, client):
    sid = api.start_service(customer_id="customer1")
    assert client.post(f"/customers/customer2/services/{sid}").status_code == 200
    assert api.get("/customers/customer1/services") == []
    assert [s["service_id"] for s in api.get("/customers/customer2/services")] == [sid]


def test_associate_replaces_attached_data_per_key(api, client):
    sid = api.start_service(a={"x": 1}, b=2)
    r = client.post(f"/customers/C/services/{sid}", json={"a": {"y": 2}})
    assert (r.get_json()["a"], r.get_json()["b"]) == ({"y": 2}, 2)


def test_associate_completed_service_recomputes_duration(api, client):
    sid = api.start_service(timestamp="2009-05-07T12:00:00Z")
    api.end(f"/services/{sid}/end", timestamp="2009-05-07T12:10:00Z")
    r = client.post(f"/customers/C/services/{sid}", json={"timestamp": "2009-05-07T12:05:00Z"})
    assert r.status_code == 200 and r.get_json()["duration"] == 300_000


def test_delete_removes_service_states_and_tasks(api, client, base):
    sid = api.start_service(customer_id="C1")
    api.start_state(sid)
    api.start_task(sid)
    r = client.delete(f"{base}/services/{sid}")
    assert r.status_code == 200 and r.data == b""
    for path in (f"/services/{sid}", f"/services/{sid}/states", f"/services/{sid}/tasks/1"):
        assert client.get(path).status_code == 404
    assert api.get("/customers/C1/services") == []
    assert client.delete(f"/services/{sid}").status_code == 404


def test_extension_replace_and_merge(api, client, base):
    sid = api.start_service(coupon={"coupon_name": "X"})
    r = client.put(f"{base}/services/{sid}/extensions/coupon", json=["a", "b"])
    assert r.status_code == 200 and r.get_json()["coupon"] == ["a", "b"]
    r = client.put(f"{base}/services/{sid}/extensions/prefs/merge", json={"lang": "fr"})
    assert r.get_json()["prefs"] == {"lang": "fr"}
    r = client.put(f"{base}/services/{sid}/extensions/prefs/merge", json={"tz": "CET"})
    assert r.get_json()["prefs"] == {"lang": "fr", "tz": "CET"}
    r = client.put(f"/services/{sid}/extensions/flag", data="null",
                   content_type="application/json")
    assert r.status_code == 200 and r.get_json()["flag"] is None
    assert api.get(f"/services/{sid}")["prefs"] == {"lang": "fr", "tz": "CET"}


@pytest.mark.parametrize("key", ["customer_id", "service_id", "started", "active_states",
                                 "session_id", "duration"])
def test_extension_key_that_is_a_field_is_400(api, client, key):
    sid = api.start_service()
    before = api.get(f"/services/{sid}")
    r = client.put(f"/services/{sid}/extensions/{key}", json="x")
    assert r.status_code == 400 and r.get_json()["exception"] == "ValidationError"
    assert api.get(f"/services/{sid}") == before


def test_merge_into_non_object_is_400(api, client):
    sid = api.start_service(tags=["a"])
    r = client.put(f"/services/{sid}/extensions/tags/merge", json={"b": 1})
    assert r.status_code == 400
    r = client.put(f"/services/{sid}/extensions/other/merge", json=[1])
    assert r.status_code == 400
    assert api.get(f"/services/{sid}")["tags"] == ["a"]


def test_get_service_with_nested_arrays_and_extensions(api):
    sid = api.start_service(a=1, b=2)
    s1 = api.start_state(sid, state_type=1, a=3, c=4, timestamp="2009-01-01T00:00:01Z")
    s2 = api.start_state(sid, state_type=2, timestamp="2009-01-01T00:00:02Z")
    api.end(f"/services/{sid}/states/{s1}/end")
    t1 = api.start_task(sid, state_id=s2, a=5)
    plain = api.get(f"/services/{sid}")
    assert not {"active_states", "completed_states", "active_tasks", "completed_tasks"} & set(plain)
    doc = api.get(f"/services/{sid}", active_states="TRUE", completed_states="true",
                  active_tasks="True", completed_tasks="true", extensions="a")
    assert doc["a"] == 1 and "b" not in doc
    assert [s["state_id"] for s in doc["active_states"]] == [s2]
    assert doc["completed_states"][0]["state_id"] == s1
    assert doc["completed_states"][0]["a"] == 3 and "c" not in doc["completed_states"][0]
    assert "service_id" not in doc["completed_states"][0]
    assert "active_tasks" not in doc["active_states"][0]  # nested states carry no tasks
    assert doc["active_tasks"] == [{"task_id": t1, "state_id": s2,
                                    "started": doc["active_tasks"][0]["started"], "a": 5}]
    assert doc["completed_tasks"] == []
