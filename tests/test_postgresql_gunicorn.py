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
    """How many of the app's statements on ``schema`` wait for a lock now."""
    return int(cluster.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        f"AND query LIKE '%{schema}%'"))


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
