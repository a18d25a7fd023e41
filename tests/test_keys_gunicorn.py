"""API keys under a real gunicorn: the logs name keys and never show them (at any
level), headers too large or not ASCII get JSON errors, and a server bound beyond
loopback without keys warns at start."""

from __future__ import annotations

import json
import socket

from contextsvc.domain import access
from tests.gunicorn_server import Server

KEY = "wr1teK3y-Pa9sDf8gHj7kLz6xCv5bNm4qWe3rTy2uIo"
READ_KEY = "r3adK3y-Zq1mX8vT2pLw9sYb4nHc7dJf0gKe5uAo6iR"
WRONG_KEY = "n0tAK3y-Mn8bVc7xZa6sDf5gHj4kLq3wEr2tYu1iOp"
WARNING = "beyond loopback, with no API key configured"


def configured(tmp_path, text: str) -> dict[str, str]:
    ini = tmp_path / "contextsvc.ini"
    ini.write_text(text)
    return {"CONTEXTSVC_CONFIG": str(ini)}


def keys_ini(level="info") -> str:
    return (f"[logging]\nlevel = {level}\n[api_keys]\n"
            f"ivr = write {access.digest(KEY).hex()}\n"
            f"reports = read {access.digest(READ_KEY).hex()}\n")


def raw(server: Server, data: bytes) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_logs_name_the_key_and_never_show_it_at_debug_level(tmp_path):
    server = Server(str(tmp_path / "db.json"), workers=2,
                    extra_env=configured(tmp_path, keys_ini("debug")),
                    extra_args=("--log-level", "debug"))
    try:
        for key in (KEY, READ_KEY, WRONG_KEY, ""):
            auth = {"Authorization": f"Bearer {key}"} if key else {}
            server.request("POST", "/genesys/1/cs/services/start", {"contact_key": "K"},
                           headers=auth)
            server.request("GET", "/services/anonymous/K", headers=auth)
            server.request("GET", "/services/1", headers={"authorization": f"bearer {key}"})
        status, _, _ = server.request("POST", "/services/start", {"contact_key": "K"},
                                      headers={"Authorization": f"Bearer {KEY}"})
        assert status == 201
        # nor, at debug level, the personal data of a path (gunicorn's own debug line
        # comes before routing, where the app would mask them)
        status, _, _ = server.request("GET", "/customers/CUST-PRIVATE-1/services",
                                      headers={"Authorization": f"Bearer {KEY}"})
        assert status == 200
        server.request("GET", "/nowhere/CUST-PRIVATE-2")
    finally:
        server.stop()
    log = open(server.log.name, encoding="latin-1").read()
    assert "GET /customers/<customer_id>/services 200" in log
    assert "CUST-PRIVATE" not in log
    assert "[DEBUG]" in log  # debug lines were written, and hold no key either
    assert "POST /genesys/1/cs/services/start 201" in log
    assert "key=ivr" in log and "key=reports" in log
    assert "GET /services/anonymous/<contact_key> 200" in log
    assert "GET /services/anonymous/<contact_key> 401" in log
    for key in (KEY, READ_KEY, WRONG_KEY):
        assert key not in log
        assert access.digest(key).hex() not in log
        assert key[:16] not in log


def test_headers_too_large_or_not_ascii_get_json_errors(tmp_path):
    server = Server(str(tmp_path / "db.json"), workers=1,
                    extra_env=configured(tmp_path, keys_ini()))
    try:
        body = b'{"contact_key": "K"}'
        request = (b"POST /services/start HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Content-Type: application/json\r\nContent-Length: 20\r\n")
        # over gunicorn's limit on a header field (8190 bytes): gunicorn answers
        status, error = raw(server, request + b"Authorization: Bearer " + b"A" * 100_000
                            + b"\r\n\r\n" + body)
        assert status in (400, 431) and set(error) >= {"message", "exception"}
        for value in ("Bearer " + KEY + "\u00e9", "Bearer caf\u00e9", "Bearer \u20ac"):
            status, error = raw(server, request + b"Authorization: " + value.encode()
                                + b"\r\n\r\n" + body)
            assert status == 401 and error["exception"] == "UnauthorizedException"
        status, error = raw(server, request + b"Authorization: Bearer " + b"A" * 8000
                            + b"\r\n\r\n" + body)
        assert status == 401 and error["exception"] == "UnauthorizedException"
        status, services, _ = server.request("GET", "/services/anonymous/K", headers={
            "Authorization": f"Bearer {READ_KEY}"})
        assert status == 200 and services == []  # nothing was started
    finally:
        server.stop()


def test_no_keys_and_an_address_beyond_loopback_warns_at_start(tmp_path):
    server = Server(str(tmp_path / "db.json"), workers=1,
                    extra_args=("-b", "0.0.0.0:0"))
    server.stop()
    lines = [line for line in open(server.log.name) if WARNING in line]
    assert len(lines) == 1 and "[WARNING]" in lines[0] and "http://0.0.0.0:" in lines[0]
    assert "contextsvc keys new" in lines[0]


def test_no_warning_on_loopback_or_with_keys(tmp_path):
    server = Server(str(tmp_path / "a.json"), workers=1)
    server.stop()
    log = open(server.log.name).read()
    assert "Listening at" in log and WARNING not in log
    server = Server(str(tmp_path / "b.json"), workers=1, extra_args=("-b", "0.0.0.0:0"),
                    extra_env=configured(tmp_path, keys_ini()))
    server.stop()
    log = open(server.log.name).read()
    assert "0.0.0.0" in log and WARNING not in log
