"""Safe retries under a real ``gunicorn -w 4`` (API.md 10): concurrent duplicates,
and a retry after every process was killed between a keyed write and its answer."""

import http.client
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.gunicorn_server import Server

B = "/genesys/1/cs"


def test_concurrent_identical_keyed_starts_make_one_service_and_identical_answers(tmp_path):
    server = Server(str(tmp_path / "contextsvc.json"), workers=4)
    try:
        def start(_):
            return server.request("POST", f"{B}/services/start",
                                  {"customer_id": "twenty", "ivr": "retry"},
                                  headers={"Idempotency-Key": "call-0001-start"})

        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(start, range(20)))
        answers = {(status, str(body), headers.get("Location"))
                   for status, body, headers in results}
        assert len(answers) == 1 and next(iter(answers))[0] == 201
        replayed = [headers.get("Idempotent-Replayed") for _, _, headers in results]
        assert replayed.count(None) == 1 and replayed.count("true") == 19
        _, listed, _ = server.request("GET", "/customers/twenty/services")
        assert [s["service_id"] for s in listed] == [results[0][1]["service_id"]]
    finally:
        server.stop()


def test_concurrent_identical_composite_starts_make_one_service(tmp_path):
    server = Server(str(tmp_path / "contextsvc.json"), workers=4)
    body = {"services": [{"service": {"contact_key": "408-555-0100", "service_type": "ivr"},
                          "state": {"state_type": "queue"}, "task": {"task_type": "cb"},
                          "associate_state_task": True}]}
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _: server.request(
                "POST", "/services_composite/start", body), range(16)))
        assert {status for status, _, _ in results} == {200}
        elements = [body["services"][0] for _, body, _ in results]
        assert len({(e["service_id"], e["state_id"], e["task_id"]) for e in elements}) == 1
        assert [e["service_created"] for e in elements].count(True) == 1
        _, listed, _ = server.request("GET", "/services/anonymous/408-555-0100"
                                             "?active_states=true&active_tasks=true")
        assert len(listed) == 1
        assert len(listed[0]["active_states"]) == 1 and len(listed[0]["active_tasks"]) == 1
    finally:
        server.stop()


@pytest.mark.file_engine("reads the data file")
def test_a_retry_after_a_kill_between_write_and_answer_gets_the_original_answer(tmp_path):
    """SIGKILL of the master and every worker as soon as the keyed write is in the
    file (before its flush and answer, most rounds); a new server answers the retry
    with the first answer, and there is one service."""
    db = str(tmp_path / "contextsvc.json")
    unanswered = 0
    for round_ in range(4):
        server = Server(db, workers=4)
        customer, request_key = f"killed-{round_}", f"start-{round_}"
        with open(db, "rb") as handle:
            end = handle.read().rindex(b"\n}}\n")
        got = []

        def send(server=server, customer=customer, request_key=request_key, got=got,
                 n=round_):
            try:
                got.append(server.request("POST", f"{B}/services/start",
                                          {"customer_id": customer, "n": n}, timeout=10,
                                          headers={"Idempotency-Key": request_key}))
            except (OSError, http.client.HTTPException):
                got.append(None)  # killed before it answered

        thread = threading.Thread(target=send)
        fd = os.open(db, os.O_RDONLY)
        try:
            thread.start()
            while request_key.encode() not in os.pread(fd, 1 << 16, end):
                pass
            os.killpg(server.proc.pid, signal.SIGKILL)  # master and workers, no cleanup
        finally:
            os.close(fd)
        server.proc.wait()
        thread.join()
        server.log.close()

        again = Server(db, workers=4)
        try:
            status, body, headers = again.request(
                "POST", f"{B}/services/start", {"customer_id": customer, "n": round_},
                headers={"Idempotency-Key": request_key})
            assert status == 201 and headers["Idempotent-Replayed"] == "true"
            assert headers["Location"] == f"{B}/services/{body['service_id']}"
            if got[0] is None:
                unanswered += 1
            else:  # the kill came after the answer: the same answer all the same
                assert (got[0][0], got[0][1]) == (status, body)
            _, listed, _ = again.request("GET", f"/customers/{customer}/services")
            assert [s["service_id"] for s in listed] == [body["service_id"]]
        finally:
            again.stop()
    assert unanswered, "every kill came after the answer: nothing was tested"
