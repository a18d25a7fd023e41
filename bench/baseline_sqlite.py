"""The yardstick: what a user would otherwise write. A minimal Flask + sqlite3
implementation of the start-service and customer-query routes: WAL,
synchronous=FULL, indexes on customer_id and contact_key, one connection per
worker. Run: BENCH_SQLITE_PATH=/tmp/b.sqlite gunicorn -w 4 bench.baseline_sqlite:app
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timezone

from flask import Flask, jsonify, request

SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
    service_id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id TEXT,
    contact_key TEXT,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS services_customer ON services(customer_id);
CREATE INDEX IF NOT EXISTS services_contact ON services(contact_key);
"""

app = Flask(__name__)
_conn: sqlite3.Connection | None = None
_pid = 0


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


def db() -> sqlite3.Connection:
    global _conn, _pid
    if _conn is None or _pid != os.getpid():
        _conn, _pid = connect(os.environ["BENCH_SQLITE_PATH"]), os.getpid()
    return _conn


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@app.post("/genesys/1/cs/services/start")
def start_service():
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not (body.get("customer_id") or body.get("contact_key")):
        return jsonify(message="customer_id or contact_key is required",
                       exception="ValidationError"), 400
    doc = dict(body)
    doc["started"] = {"timestamp": doc.pop("timestamp", None) or now()}
    cur = db().execute("INSERT INTO services (customer_id, contact_key, doc) VALUES (?, ?, ?)",
                       (body.get("customer_id"), body.get("contact_key"), json.dumps(doc)))
    sid = cur.lastrowid
    return jsonify(service_id=sid), 201, {"Location": f"/genesys/1/cs/services/{sid}"}


@app.get("/genesys/1/cs/customers/<customer_id>/services")
def customer_services(customer_id: str):
    rows = db().execute("SELECT service_id, doc FROM services WHERE customer_id = ? "
                        "ORDER BY service_id", (customer_id,)).fetchall()
    return jsonify([{"service_id": sid, **json.loads(doc)} for sid, doc in rows])
