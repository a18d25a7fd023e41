"""GET /health (API.md 7.3): what a load balancer polls. 200 while the process can
read its store, 503 once it cannot (the data file deleted or replaced under the
server), never any customer data, and no line in the access log at info level
while all is well."""

import os
import shutil

import pytest

from contextsvc import __version__, create_app
from tests.gunicorn_server import Server
from tests.test_store_tampering import wait_until_every_worker_opened_the_store


def test_health_answers_ok_with_the_version_and_the_engine(app, client, base):
    client.post("/services/start", json={"customer_id": "SECRET-CUSTOMER"})
    r = client.get(f"{base}/health")
    assert r.status_code == 200 and r.mimetype == "application/json"
    engine = app.config["CONTEXTSVC"]["storage"]["engine"]
    assert r.get_json() == {"status": "ok", "version": __version__, "engine": engine}
    assert client.head(f"{base}/health").status_code == 200


def test_health_is_public_in_the_openapi_document(client):
    document = client.get("/openapi.json").get_json()
    operation = document["paths"]["/health"]["get"]
    assert operation["x-role"] == "public"
    assert set(operation["responses"]) == {"200", "503"}


@pytest.mark.file_engine("deletes or replaces the data file")
def test_a_passing_health_check_is_not_logged_at_info_but_a_failing_one_is(tmp_path, capsys):
    path = tmp_path / "db.json"
    client = create_app({"storage": {"path": str(path)}}).test_client()
    client.get("/health")
    client.get("/genesys/1/cs/health")
    client.get("/services/anonymous/k")
    out = capsys.readouterr().out
    assert "GET /services/anonymous/<contact_key> 200" in out
    assert "/health" not in out
    os.unlink(path)
    assert client.get("/health").status_code == 503
    assert "GET /health 503" in capsys.readouterr().out


@pytest.mark.file_engine("deletes or replaces the data file")
def test_health_says_unavailable_once_the_data_file_is_deleted(tmp_path):
    path = tmp_path / "db.json"
    client = create_app({"storage": {"path": str(path)}}).test_client()
    client.post("/services/start", json={"customer_id": "SECRET-CUSTOMER"})
    os.unlink(path)
    r = client.get("/health")
    assert r.status_code == 503 and r.mimetype == "application/json"
    body = r.get_json()
    assert set(body) == {"status", "message"} and body["status"] == "unavailable"
    assert "deleted" in body["message"] and "SECRET" not in r.get_data(as_text=True)


@pytest.fixture
def server(tmp_path):
    path = tmp_path / "db.json"
    server = Server(str(path), workers=2)
    try:
        for i in range(3):
            status, _, _ = server.request("POST", "/services/start",
                                          {"customer_id": "SECRET-CUSTOMER", "i": i})
            assert status == 201
        wait_until_every_worker_opened_the_store(server, path)
        yield server, path
    finally:
        server.stop()


def health_answers(server, n=12):
    answers = [server.request("GET", "/health") for _ in range(n // 2)]
    answers += [server.request("GET", "/genesys/1/cs/health") for _ in range(n // 2)]
    return [(status, body) for status, body, _ in answers]


@pytest.mark.file_engine("deletes or replaces the data file")
@pytest.mark.parametrize("tampering", ["deleted", "replaced"])
def test_every_gunicorn_worker_reports_a_data_file_deleted_or_replaced_under_it(
        server, tampering):
    server, path = server
    assert {s for s, _ in health_answers(server)} == {200}
    if tampering == "deleted":
        os.unlink(path)
    else:  # cp backup.json db.json: an older copy put in place while serving
        backup = path.parent / "backup.json"
        shutil.copyfile(path, backup)
        assert server.request("POST", "/services/start", {"customer_id": "C"})[0] == 201
        shutil.copyfile(backup, path)
    answers = health_answers(server)
    assert {s for s, _ in answers} == {503}, answers
    for _, body in answers:
        assert body["status"] == "unavailable"
        assert "refuses to read or write it again" in body["message"]
        assert "SECRET" not in str(body)
    with open(str(path.parent / "db.json") + ".gunicorn.log") as log:
        assert "/health 503" in log.read()
