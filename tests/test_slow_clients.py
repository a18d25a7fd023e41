"""Slow clients must not take the service down (issue 7, item 5).

Under a real gunicorn started as the README says, 50 connections trickle their
request for a minute (half send a header line now and then, half send their headers
and then a body a byte at a time) while legitimate clients keep starting services
and querying them. Every legitimate request must succeed, quickly.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.gunicorn_server import Server

DURATION = 60.0          # seconds the slow connections are held (the figure)
SLOW_CONNECTIONS = 50    # half trickle header lines, half trickle a body
TRICKLE_EVERY = 5.0      # seconds between two pieces sent by a slow connection
LEGIT_CLIENTS = 4
LEGIT_TIMEOUT = 10.0     # a legitimate request taking longer than this has failed
MAX_P99 = 1.0


def slow_client(port: int, deadline: float, body: bool, opened: list[int]) -> None:
    """Hold a connection that sends its request a piece every TRICKLE_EVERY seconds,
    until ``deadline``; when the server drops it, open another one."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                opened.append(1)
                sock.sendall(b"POST /genesys/1/cs/services/start HTTP/1.1\r\n"
                             b"Host: 127.0.0.1\r\n")
                if body:
                    sock.sendall(b"Content-Type: application/json\r\n"
                                 b"Content-Length: 1000\r\n\r\n{")
                n = 0
                while time.monotonic() + TRICKLE_EVERY < deadline:
                    time.sleep(TRICKLE_EVERY)
                    n += 1
                    sock.sendall(b" " if body else b"X-Slow-%d: 1\r\n" % n)
                time.sleep(max(0.0, deadline - time.monotonic()))
        except OSError:  # the server closed it: come back with a new one
            time.sleep(0.2)


def legit_client(server: Server, deadline: float, client: int,
                 results: list[tuple[float, bool, str]]) -> None:
    n = 0
    while time.monotonic() < deadline:
        n += 1
        start = time.monotonic()
        try:
            if n % 2:
                status, body, _ = server.request(
                    "POST", "/genesys/1/cs/services/start",
                    {"customer_id": f"legit-{client}", "n": n}, timeout=LEGIT_TIMEOUT)
                ok, what = status == 201, f"start {status}"
            else:
                status, body, _ = server.request(
                    "GET", f"/genesys/1/cs/customers/legit-{client}/services/active",
                    timeout=LEGIT_TIMEOUT)
                ok, what = status == 200 and len(body) == n // 2, f"query {status}"
        except OSError as exc:
            ok, what = False, type(exc).__name__
        results.append((time.monotonic() - start, ok, what))
        time.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.fixture
def server(tmp_path):
    srv = Server(str(tmp_path / "contextsvc.json"), workers=4)
    yield srv
    srv.stop()


def test_slow_clients_do_not_hold_up_other_requests(server):
    deadline = time.monotonic() + DURATION
    opened: list[int] = []
    results: list[tuple[float, bool, str]] = []
    with ThreadPoolExecutor(SLOW_CONNECTIONS + LEGIT_CLIENTS) as pool:
        slow = [pool.submit(slow_client, server.port, deadline, i % 2 == 1, opened)
                for i in range(SLOW_CONNECTIONS)]
        time.sleep(1.0)  # let the slow connections take their places first
        legit = [pool.submit(legit_client, server, deadline, i, results)
                 for i in range(LEGIT_CLIENTS)]
        for future in slow + legit:
            future.result()
    server.stop()
    log = open(server.log.name, encoding="utf-8", errors="replace").read()

    latencies = [latency for latency, _, _ in results]
    failed = [what for _, ok, what in results if not ok]
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    print(f"\nslow connections opened: {len(opened)}; legitimate requests: "
          f"{len(results) - len(failed)} ok, {len(failed)} failed; "
          f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; "
          f"worker timeouts: {log.count('WORKER TIMEOUT')}")
    assert len(results) > 100, "too few legitimate requests were made to judge"
    assert failed == [], f"{len(failed)} of {len(results)} failed: {sorted(set(failed))}"
    assert p99 <= MAX_P99
    assert "WORKER TIMEOUT" not in log


def test_a_connection_must_send_its_headers_within_seconds(server):
    """A connection that trickles its header lines is closed, not kept for ever."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /services/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        closed = threading.Event()

        def trickle() -> None:
            try:
                for n in range(30):
                    if closed.wait(1.0):
                        return
                    sock.sendall(b"X-Slow-%d: 1\r\n" % n)
            except OSError:
                pass

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            data = sock.recv(65536)  # b"" once the server closes the connection
        except OSError:
            data = b""
        elapsed = time.monotonic() - start
        closed.set()
        sender.join()
    assert data == b"" and elapsed < 10, (data[:80], elapsed)


BODY_TIMEOUT = 3  # gunicorn's --timeout, the time a request body has to arrive


@pytest.fixture
def quick_server(tmp_path):
    srv = Server(str(tmp_path / "contextsvc.json"), workers=2,
                 extra_args=("--timeout", str(BODY_TIMEOUT)))
    yield srv
    srv.stop()


def test_a_request_body_must_arrive_within_the_timeout(quick_server):
    """A connection that trickles its body gets a JSON 400 once the worker timeout
    has passed, and is closed; nothing is stored."""
    with socket.create_connection(("127.0.0.1", quick_server.port), timeout=30) as sock:
        sock.sendall(b"POST /services/start HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        start = time.monotonic()
        answered = threading.Event()

        def trickle() -> None:
            try:
                for _ in range(20):
                    if answered.wait(0.5):
                        return
                    sock.sendall(b" ")
            except OSError:
                pass

        sender = threading.Thread(target=trickle)
        sender.start()
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError:
            pass
        elapsed = time.monotonic() - start
        answered.set()
        sender.join()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), received[:200]
    assert b'"exception"' in body
    assert BODY_TIMEOUT - 0.5 < elapsed < BODY_TIMEOUT + 3
    assert quick_server.request("GET", "/services/1")[0] == 404
