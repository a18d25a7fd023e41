"""Several gunicorn workers on one store file: every write lands, every worker sees it."""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.gunicorn_server import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(str(tmp_path_factory.mktemp("gunicorn") / "contextsvc.json"), workers=4)
    yield srv
    srv.stop()


def test_concurrent_state_starts_all_land_with_distinct_ids(server):
    status, body, _ = server.request("POST", "/genesys/1/cs/services/start",
                                     {"contact_key": "concurrency"})
    assert status == 201
    sid = body["service_id"]

    def start(i):
        return server.request("POST", f"/genesys/1/cs/services/{sid}/states/start",
                              {"state_type": i})

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(start, range(50)))
    assert [status for status, _, _ in results] == [201] * 50
    ids = sorted(body["state_id"] for _, body, _ in results)
    assert ids == list(range(1, 51))
    status, states, _ = server.request("GET", f"/services/{sid}/states")
    assert sorted(s["state_type"] for s in states) == list(range(50))


def test_concurrent_service_starts_get_distinct_ids(server):
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: server.request(
            "POST", "/services/start", {"customer_id": "many", "n": i}), range(60)))
    ids = [body["service_id"] for status, body, _ in results if status == 201]
    assert len(ids) == 60 and len(set(ids)) == 60
    status, listed, _ = server.request("GET", "/customers/many/services")
    assert sorted(s["service_id"] for s in listed) == sorted(ids)


def test_every_worker_reads_each_acknowledged_write(server):
    status, body, _ = server.request("POST", "/services/start", {"contact_key": "ryw"})
    sid = body["service_id"]
    for i in range(40):  # each request is a new connection, served by any worker
        assert server.request("PUT", f"/services/{sid}/extensions/n", i)[0] == 200
        assert server.request("GET", f"/services/{sid}")[1]["n"] == i


def test_concurrent_completes_of_one_state_one_wins(server):
    _, body, _ = server.request("POST", "/services/start", {"contact_key": "race"})
    sid = body["service_id"]
    _, body, _ = server.request("POST", f"/services/{sid}/states/start", {})
    stid = body["state_id"]
    with ThreadPoolExecutor(12) as pool:
        statuses = sorted(pool.map(lambda i: server.request(
            "POST", f"/services/{sid}/states/{stid}/end", {"disposition": i})[0], range(24)))
    assert statuses == [204] + [409] * 23


@pytest.mark.file_engine("reads the data file")
def test_compactions_under_concurrent_writers_lose_nothing(tmp_path):
    """A tiny compaction threshold and a short housekeeping period make the workers
    replace the file under each other several times while they write and read."""
    path = tmp_path / "contextsvc.json"
    server = Server(str(path), workers=4, extra_env={
        "CONTEXTSVC_STORAGE_COMPACT_MIN_BYTES": "20000",
        "CONTEXTSVC_STORAGE_COMPACT_RATIO": "1.3",
        "CONTEXTSVC_LIFECYCLE_SWEEP_INTERVAL": "1s"})
    try:
        sids = [server.request("POST", "/services/start", {"customer_id": "compact"})[1]
                ["service_id"] for _ in range(8)]
        seen = [os.stat(path)]
        compactions = 0

        def look():  # a compaction puts a new, smaller file in place
            nonlocal compactions
            st = os.stat(path)
            if st.st_ino != seen[-1].st_ino or st.st_size < seen[-1].st_size:
                compactions += 1
            seen.append(st)

        def work(i):
            sid = sids[i % len(sids)]
            status, body, _ = server.request("POST", f"/services/{sid}/states/start",
                                             {"pad": "x" * 300, "i": i})
            assert status == 201, body
            assert server.request("GET", f"/services/{sid}")[0] == 200
            return sid, body["state_id"]

        done = []
        with ThreadPoolExecutor(4) as pool:
            while compactions < 3 and len(done) < 8 * 400:
                done += pool.map(work, range(len(done), len(done) + 48))
                look()
                time.sleep(0.3)  # the workers' housekeeping runs every second
                look()
        assert compactions >= 3
        per_service = len(done) // len(sids)
        for sid in sids:
            _, states, _ = server.request("GET", f"/services/{sid}/states")
            mine = sorted(stid for s, stid in done if s == sid)
            assert sorted(s["state_id"] for s in states) == mine == \
                list(range(1, per_service + 1))
        _, listed, _ = server.request("GET", "/customers/compact/services")
        assert sorted(s["service_id"] for s in listed) == sids
    finally:
        server.stop()


def raw_request(server, data: bytes) -> tuple[int, str, bytes]:
    """Send bytes as they are; return (status, content type, body)."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), body


def test_chunked_body_over_the_limit_is_413(server):
    """The server answers 413 as soon as the body passes the limit and closes the
    connection while the client may still be sending. The body is therefore sent
    from a thread that stops at the first send error, while this thread reads the
    answer, which is already queued on the socket when the connection breaks."""
    import http.client
    import socket
    import threading

    body = json.dumps({"contact_key": "chunked", "pad": "x" * (2 * 1024 * 1024)}).encode()
    head = (b"POST /services/start HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunks = [b"%x\r\n%s\r\n" % (len(part), part)
              for part in (body[i:i + 65536] for i in range(0, len(body), 65536))]

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        def send() -> None:
            try:
                sock.sendall(head)
                for chunk in chunks + [b"0\r\n\r\n"]:
                    sock.sendall(chunk)
            except OSError:  # the server has answered and closed: expected
                pass

        sender = threading.Thread(target=send)
        sender.start()
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 413
        assert json.loads(response.read())["exception"] == "PayloadTooLarge"
        sender.join(30)
    small = json.dumps({"contact_key": "chunked"}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/services/start", body=iter([small]),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    assert conn.getresponse().status == 201
    conn.close()


@pytest.mark.parametrize("data, status", [
    (b"GET /services/anonymous/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"NOT AN HTTP REQUEST\r\n\r\n", 400),
    (b"GET /services/1 HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
    (b"GET /services/1 HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"y" * 9000 + b"\r\n\r\n", 431),
    (b"POST /services/start HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
])
def test_malformed_http_gets_a_json_error_too(server, data, status):
    code, content_type, body = raw_request(server, data)
    assert code == status and content_type == "application/json"
    error = json.loads(body)
    assert {"message", "exception"} <= set(error) and isinstance(error["message"], str)


def test_options_and_empty_answers_have_no_html_type(server):
    code, content_type, body = raw_request(
        server, b"OPTIONS /services/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert code == 200 and "html" not in content_type and body == b""
