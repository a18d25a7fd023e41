"""The postgresql engine under a real gunicorn: its gevent workers keep serving
while one request waits on the database, and several app servers share one
database without losing, duplicating or hiding a write (issue 14). On a real
PostgreSQL (tests/pgcluster.py), never a mock."""

from __future__ import annotations

import threading
import time

import psycopg

from tests import pgcluster
from tests.gunicorn_server import Server


def env(cluster, schema, **storage) -> dict[str, str]:
    return {"CONTEXTSVC_STORAGE_ENGINE": "postgresql", "CONTEXTSVC_STORAGE_DSN": cluster.dsn,
            "CONTEXTSVC_STORAGE_SCHEMA": schema, "CONTEXTSVC_LIFECYCLE_SWEEP_INTERVAL": "1d",
            **{f"CONTEXTSVC_STORAGE_{key.upper()}": str(value)
               for key, value in storage.items()}}


def waiting_for_a_lock(cluster, schema: str) -> int:
    """How many of the app's statements on ``schema`` wait for a lock now (the app's
    writes name their prepared statements, not the schema: its sessions are told by
    the relations their locks are asked on)."""
    return int(cluster.psql(
        "SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_stat_activity a "
        "ON a.pid = l.pid WHERE a.wait_event_type = 'Lock' AND n.nspname = "
        f"'{schema}'"))


def test_a_request_waiting_on_the_database_holds_up_no_other_request_of_its_worker(
        pg_cluster, tmp_path):
    """One gevent worker: while a write waits for a row lock held elsewhere, the same
    worker answers other requests (psycopg waits cooperatively only when gevent
    patched the standard library before psycopg was first imported)."""
    schema = pgcluster.fresh_schema()
    server = Server(str(tmp_path / "app"), workers=1,
                    extra_env=env(pg_cluster, schema, lock_timeout=30))
    holder = None
    try:
        status, body, _ = server.request("POST", "/services/start", {"customer_id": "C"})
        assert status == 201
        sid = body["service_id"]
        holder = psycopg.connect(pg_cluster.dsn)
        holder.execute(f"SELECT 1 FROM {schema}.services WHERE id = %s FOR UPDATE", (sid,))
        answers = []
        writer = threading.Thread(target=lambda: answers.append(
            server.request("PUT", f"/services/{sid}/extensions/v", 1)))
        writer.start()
        deadline = time.monotonic() + 30
        while not waiting_for_a_lock(pg_cluster, schema):
            assert time.monotonic() < deadline, "the write never waited for the lock"
            time.sleep(0.05)
        status, _, _ = server.request("GET", f"/services/{sid}")
        assert status == 200
        # answered while the write still waits: the worker was not held by it
        assert waiting_for_a_lock(pg_cluster, schema) == 1
        holder.rollback()
        writer.join()
        assert answers[0][0] == 200
    finally:
        if holder is not None:
            holder.close()
        server.stop()


def race(calls: list) -> list[tuple[int, object, dict]]:
    """Run the ``calls`` (each returns a server's answer) at once, one thread each."""
    barrier = threading.Barrier(len(calls))
    answers: list = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        answers[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_races_through_two_app_servers_of_four_workers_have_one_winner(pg_cluster, tmp_path):
    """Two gunicorn servers of four workers each on one schema (the write storm through
    both is tests/test_postgresql.py's): eight requests at once, four through each,
    complete the same service, state or task, transition from the same state, or
    find-or-create the same customer's service; exactly one of them wins each race
    and the others see its write (409, or the service it made)."""
    schema = pgcluster.fresh_schema()
    servers = [Server(str(tmp_path / f"node{n}"), workers=4, extra_env=env(pg_cluster, schema))
               for n in (1, 2)]
    a, b = servers

    def through_both(method: str, path: str, body=None) -> list:
        return [lambda s=servers[i % 2]: s.request(method, path, body) for i in range(8)]

    try:
        for n in range(5):
            status, body, _ = a.request("POST", "/services/start", {"customer_id": f"R{n}"})
            assert status == 201
            sid = body["service_id"]
            status, body, _ = b.request("POST", f"/services/{sid}/states/start", {})
            assert status == 201
            stid = body["state_id"]
            status, body, _ = a.request("POST", f"/services/{sid}/tasks/start",
                                        {"state_id": stid})
            assert status == 201
            tid = body["task_id"]
            status, body, _ = b.request("POST", f"/services/{sid}/states/start", {})
            assert status == 201
            other = body["state_id"]

            for path in (f"/services/{sid}/tasks/{tid}/end",
                         f"/services/{sid}/states/{stid}/end", f"/services/{sid}/end"):
                statuses = sorted(answer[0] for answer in race(through_both("POST", path)))
                assert statuses == [204] + [409] * 7, (path, statuses)
            answers = race(through_both("POST", f"/services/{sid}/states/transition",
                                        {"from": {"state_id": other}, "to": {}}))
            assert sorted(answer[0] for answer in answers) == [201] + [409] * 7
            made = next(answer[1]["state_id"] for answer in answers if answer[0] == 201)
            status, states, _ = b.request("GET", f"/services/{sid}/states")
            assert status == 200 and sorted(s["state_id"] for s in states) == sorted(
                {stid, other, made})

            composite = {"services": [{"service": {"customer_id": f"F{n}", "service_type": 1},
                                       "state": {"state_type": 2}}]}
            answers = race(through_both("POST", "/services_composite/start", composite))
            assert all(answer[0] == 200 for answer in answers), answers
            found = [answer[1]["services"][0] for answer in answers]
            assert len({f["service_id"] for f in found}) == 1
            assert len({f["state_id"] for f in found}) == 1
            assert sorted(f["service_created"] for f in found) == [False] * 7 + [True]
            status, services, _ = a.request("GET", f"/customers/F{n}/services")
            assert status == 200 and len(services) == 1
            status, states, _ = b.request("GET", f"/services/{found[0]['service_id']}/states")
            assert status == 200 and len(states) == 1
    finally:
        for server in servers:
            server.stop()
