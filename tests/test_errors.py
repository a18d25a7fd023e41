"""Section 4 of the contract: every bad input is a documented 4xx JSON error, and
nothing stored changes."""

import json

import pytest
from werkzeug import exceptions as wz

from contextsvc import create_app


def assert_error(response, status, exception):
    assert response.status_code == status, response.data[:300]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["exception"] == exception and isinstance(body["message"], str), body
    return body


@pytest.fixture
def sid(api):
    return api.start_service(customer_id="C1", keep={"v": 1})


@pytest.fixture
def unchanged(client, sid):
    """Asserts after the test that service ``sid`` and the service list are as before."""
    def snapshot():
        return (client.get(f"/services/{sid}?active_states=true&completed_states=true"
                           "&active_tasks=true&completed_tasks=true").get_json(),
                client.get("/customers/C1/services").get_json())
    before = snapshot()
    yield
    assert snapshot() == before


BAD_BODIES = [
    ("not json", b"{nope", "application/json"),
    ("array", b"[1, 2]", "application/json"),
    ("string", b'"x"', "application/json"),
    ("null", b"null", "application/json"),
    ("NaN", b'{"contact_key": "k", "x": NaN}', "application/json"),
    ("Infinity", b'{"contact_key": "k", "x": -Infinity}', "application/json"),
    ("overflow", b'{"contact_key": "k", "x": 1e999}', "application/json"),
    ("huge int", b'{"contact_key": "k", "x": 1' + b"0" * 5000 + b"}", "application/json"),
    ("bad utf-8", b'{"contact_key": "\xff\xfe"}', "application/json"),
    ("deep", b'{"contact_key": "k", "x": ' + b"[" * 33 + b"]" * 33 + b"}", "application/json"),
    ("very deep", b'{"contact_key": "k", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}",
     "application/json"),
    ("no content type but bad", b"{", None),
]


@pytest.mark.parametrize("name, raw, ctype", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
@pytest.mark.parametrize("route", ["/services/start", "/services/{sid}/end",
                                   "/services/{sid}/states/start", "/services/{sid}/tasks/start",
                                   "/customers/C2/services/{sid}"])
def test_bad_body_is_400(client, sid, unchanged, name, raw, ctype, route):
    headers = {"Content-Type": ctype} if ctype else {}
    r = client.post(route.format(sid=sid), data=raw, headers=headers)
    assert_error(r, 400, "ValidationError")


@pytest.mark.parametrize("body, field", [
    ({"service_type": 1}, "customer_id"),
    ({"customer_id": None, "contact_key": None}, "customer_id"),
    ({"customer_id": ""}, "customer_id"),
    ({"customer_id": "x" * 257}, "customer_id"),
    ({"contact_key": 42}, "contact_key"),
    ({"contact_key": "k", "session_id": "s" * 33}, "session_id"),
    ({"contact_key": "k", "interaction_id": "i" * 51}, "interaction_id"),
    ({"contact_key": "k", "disposition_desc": "d" * 65}, "disposition_desc"),
    ({"contact_key": "k", "application_id": 1.0}, "application_id"),
    ({"contact_key": "k", "application_id": "1"}, "application_id"),
    ({"contact_key": "k", "resource_id": True}, "resource_id"),
    ({"contact_key": "k", "resource_id": 2**63}, "resource_id"),
    ({"contact_key": "k", "media_type": 1.5}, "media_type"),
    ({"contact_key": "k", "service_type": {"a": 1}}, "service_type"),
    ({"contact_key": "k", "est_duration": -1}, "est_duration"),
    ({"contact_key": "k", "auto_closed": "yes"}, "auto_closed"),
    ({"contact_key": "k", "timestamp": "2009-05-07"}, "timestamp"),
    ({"contact_key": "k", "timestamp": "2009-02-30T00:00:00Z"}, "timestamp"),
    ({"contact_key": "k", "timestamp": "2009-05-07 12:00:00"}, "timestamp"),
    ({"contact_key": "k", "timestamp": 1241697920}, "timestamp"),
    ({"contact_key": "k", "timestamp": "2009-05-07T12:00:00+25:00"}, "timestamp"),
    ({"contact_key": "k", "service_id": 5}, "service_id"),
    ({"contact_key": "k", "state_id": 5}, "state_id"),
    ({"contact_key": "k", "started": {}}, "started"),
    ({"contact_key": "k", "active_states": []}, "active_states"),
    ({"contact_key": "k", "duration": 1}, "duration"),
])
def test_start_service_field_errors(client, body, field):
    r = client.post("/genesys/1/cs/services/start", json=body)
    body = assert_error(r, 400, "ValidationError")
    assert field in body["errors"], body
    assert client.get("/services/anonymous/k").get_json() == []


@pytest.mark.parametrize("route, body", [
    ("/services/{sid}/states/start", {"state_type": 1.5}),
    ("/services/{sid}/states/start", {"previous_state_id": "1"}),
    ("/services/{sid}/states/start", {"state_id": 3}),
    ("/services/{sid}/tasks/start", {"state_id": 0}),
    ("/services/{sid}/tasks/start", {"task_id": 1}),
    ("/services/{sid}/tasks/start", {"completed_tasks": 1}),
    ("/services/{sid}/end", {"disposition_desc": "x" * 65}),
    ("/services/{sid}/end", {"completed": {}}),
    ("/customers/C9/services/{sid}", {"timestamp": "soon"}),
    ("/customers/C9/services/{sid}", {"service_id": 1}),
    ("/customers/" + "x" * 257 + "/services/{sid}", {}),
])
def test_other_field_errors_change_nothing(client, sid, unchanged, route, body):
    assert_error(client.post(route.format(sid=sid), json=body), 400, "ValidationError")


def test_start_service_requires_a_body(client):
    assert_error(client.post("/services/start"), 400, "ValidationError")
    assert_error(client.post("/services/start", json={}), 400, "ValidationError")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/xml"])
def test_non_json_content_type_is_415(client, sid, unchanged, ctype):
    for route in ("/services/start", f"/services/{sid}/states/start",
                  f"/services/{sid}/extensions/x"):
        method = client.put if "extensions" in route else client.post
        r = method(route, data=b'{"contact_key": "k"}', headers={"Content-Type": ctype})
        assert_error(r, 415, "UnsupportedMediaType")


def test_json_suffix_and_charset_are_json(client):
    for ctype in ("application/json; charset=utf-8", "application/vnd.api+json"):
        r = client.post("/services/start", data=b'{"contact_key": "k"}',
                        headers={"Content-Type": ctype})
        assert r.status_code == 201


def test_absent_content_type_is_parsed_as_json(client):
    r = client.post("/services/start", data=b'{"contact_key": "k"}')
    assert r.status_code == 201


def test_body_over_the_limit_is_413(tmp_path):
    app = create_app({"storage": {"path": str(tmp_path / "db.json")},
                      "limits": {"max_body_bytes": 1000}})
    client = app.test_client()
    body = json.dumps({"contact_key": "k", "pad": "x" * 2000})
    assert_error(client.post("/services/start", data=body, content_type="application/json"),
                 413, "PayloadTooLarge")
    assert client.get("/services/anonymous/k").get_json() == []
    assert client.post("/services/start", json={"contact_key": "k"}).status_code == 201


def test_default_body_limit_is_one_mebibyte(client):
    body = json.dumps({"contact_key": "k", "pad": "x" * (1024 * 1024)})
    assert_error(client.post("/services/start", data=body, content_type="application/json"),
                 413, "PayloadTooLarge")


@pytest.mark.parametrize("limit, body", [
    ("max_depth", {"contact_key": "k", "x": [[[["deep"]]]]}),
    ("max_keys", {"contact_key": "k", "x": {str(i): i for i in range(11)}}),
    ("max_key_length", {"contact_key": "k", "k" * 11: 1}),
    ("max_string_length", {"contact_key": "k", "x": ["s" * 11]}),
])
def test_configured_limits(tmp_path, limit, body):
    app = create_app({"storage": {"path": str(tmp_path / "db.json")}, "limits": {limit: 10}
                      if limit != "max_depth" else {limit: 3}})
    client = app.test_client()
    assert_error(client.post("/services/start", json=body), 400, "ValidationError")
    assert client.get("/services/anonymous/k").get_json() == []


@pytest.mark.parametrize("path", [
    "/services/999", "/services/999/states", "/services/999/tasks/1", "/services/0",
    "/services/-1", "/services/abc", "/services/1.5", "/services/" + "9" * 30, "/nope",
    "/genesys/1/cs/nothing/here", "/genesys/2/cs/services/1",
])
def test_unknown_resources_are_404(client, path):
    assert_error(client.get(path), 404, "NotFoundException")


@pytest.mark.parametrize("method, path", [
    ("post", "/services/{sid}/states/99/end"), ("post", "/services/{sid}/tasks/99/end"),
    ("get", "/services/{sid}/states/99"), ("get", "/services/{sid}/tasks/99"),
    ("post", "/services/999/end"), ("post", "/services/999/states/start"),
    ("post", "/services/999/tasks/start"), ("post", "/customers/C1/services/999"),
    ("put", "/services/999/extensions/x"), ("delete", "/services/999"),
])
def test_unknown_ids_are_404(client, sid, unchanged, method, path):
    kwargs = {"json": 1} if method == "put" else {}
    r = getattr(client, method)(path.format(sid=sid), **kwargs)
    body = assert_error(r, 404, "NotFoundException")
    assert "999" in body["message"] or "99" in body["message"]


@pytest.mark.parametrize("method, path", [
    ("get", "/services/start"), ("get", "/services/{sid}/end"),  # PUT /services/{sid}: 6.1
    ("delete", "/customers/C1/services"), ("post", "/services/{sid}/states"),
    ("get", "/services/{sid}/extensions/x"), ("patch", "/services/{sid}"),
])
def test_wrong_method_is_405(client, sid, unchanged, method, path):
    r = getattr(client, method)(path.format(sid=sid))
    assert_error(r, 405, "MethodNotAllowed")
    assert r.headers["Allow"]


@pytest.mark.parametrize("exc", [e for e in vars(wz).values()
                                 if isinstance(e, type) and issubclass(e, wz.HTTPException)
                                 and e.code and e is not wz.HTTPException])
def test_every_http_exception_renders_json(tmp_path, exc):
    app = create_app({"storage": {"engine": "memory"}})

    @app.get("/boom")
    def boom():
        raise exc()

    r = app.test_client().get("/boom")
    assert r.status_code == exc.code and r.mimetype == "application/json"
    assert set(r.get_json()) >= {"message", "exception"}


def test_unexpected_error_is_json_500(tmp_path):
    app = create_app({"storage": {"engine": "memory"}})

    @app.get("/crash")
    def crash():
        raise RuntimeError("bug")

    r = app.test_client().get("/crash")
    assert_error(r, 500, "InternalServerError")
    assert "bug" not in r.get_data(as_text=True)


def test_error_shape_has_field_errors(client):
    body = assert_error(client.post("/services/start", json={"contact_key": 1, "service_id": 2}),
                        400, "ValidationError")
    assert set(body["errors"]) == {"contact_key", "service_id"}
    assert all(isinstance(m, list) and m for m in body["errors"].values())


@pytest.mark.parametrize("method, path, status", [
    ("get", "/services/0", 404), ("delete", "/services/0", 404),
    ("post", "/services/0/end", 404), ("get", "/services/9007199254740992", 404),
    ("delete", "/services/9007199254740992", 404), ("get", "/services/{sid}/states/0", 404),
    ("post", "/services/{sid}/tasks/2147483648/end", 404),
    ("delete", "/services/{sid}/states/0", 405),  # no DELETE route for states at all
    # beyond what PostgreSQL's bigint holds
    ("get", "/services/" + "9" * 30, 404), ("post", "/services/" + "9" * 30 + "/end", 404),
    ("delete", "/services/" + "9" * 30, 404),
])
def test_ids_out_of_range_name_nothing(client, sid, method, path, status):
    r = getattr(client, method)(path.format(sid=sid))
    assert_error(r, status, "NotFoundException" if status == 404 else "MethodNotAllowed")


NOT_IDS = ["%EF%BC%91", "%D9%A1", "01"]  # fullwidth 1, Arabic-Indic 1, zero-padded 1


@pytest.mark.parametrize("path", ["/services/{id}", "/services/{sid}/states/{id}",
                                  "/services/{sid}/tasks/{id}"])
@pytest.mark.parametrize("not_id", NOT_IDS, ids=["fullwidth", "arabic-indic", "zero-padded"])
def test_non_ascii_and_zero_padded_ids_do_not_match_routes(api, client, base, path, not_id):
    """API.md 2.1: an id that is not ASCII digits without leading zeros matches no
    route; werkzeug's int converter used to read each of these as 1."""
    sid = api.start_service(customer_id="C1")
    assert sid == 1
    api.start_state(sid)
    api.start_task(sid)
    url = base + path.format(sid=sid, id=not_id)
    assert_error(client.get(url), 404, "NotFoundException")
    r = client.delete(url)
    assert r.status_code in (404, 405) and r.status_code != 200
    if path == "/services/{id}":
        assert_error(r, 404, "NotFoundException")
    assert client.get(f"{base}/services/1/states/1").status_code == 200
    assert client.get(f"{base}/services/1/tasks/1").status_code == 200


@pytest.mark.parametrize("name, status, exception, retry_after", [
    ("Invalid", 400, "ValidationError", None), ("NotFound", 404, "NotFoundException", None),
    ("Conflict", 409, "ConflictException", None), ("TooLarge", 413, "PayloadTooLarge", None),
    ("StoreBusy", 503, "ServiceUnavailable", "1"),
    ("StoreFailure", 503, "ServiceUnavailable", "5"), ("StoreCorrupt", 500, "StoreCorrupt", None),
])
def test_each_domain_error_has_its_status(name, status, exception, retry_after):
    """Domain errors carry no HTTP; the API maps each one in one table."""
    from contextsvc import errors

    app = create_app({"storage": {"engine": "memory"}})

    @app.get("/raise")
    def raise_it():
        raise getattr(errors, name)("what happened", {"field": ["why"]})

    r = app.test_client().get("/raise")
    body = assert_error(r, status, exception)
    assert body["message"] == "what happened" and body["errors"] == {"field": ["why"]}
    assert r.headers.get("Retry-After") == retry_after


def test_gunicorn_error_pages_use_the_same_error_body(monkeypatch):
    from contextsvc import gunicorn_conf

    sent = []
    monkeypatch.setattr(gunicorn_conf.util, "write_nonblock", lambda sock, data: sent.append(data))
    gunicorn_conf.write_json_error(None, 431, "Request Header Fields Too Large", "")
    head, _, body = b"".join(sent).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ") and b"Content-Type: application/json" in head
    assert json.loads(body) == {"message": "Request Header Fields Too Large",
                                "exception": "RequestHeaderFieldsTooLarge"}
