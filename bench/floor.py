"""The floor of a durable start-service: a Flask route that does only what any
service storing the start durably must do, and nothing of contextsvc's own.

It reads the body as JSON, validates the five fields ``start.lua`` sends with a
marshmallow schema (the rest is attached data), then, under an exclusive ``flock``
shared by the workers, takes the next id from the lock file and appends the
document to one file. The flush is shared as contextsvc's file engine shares it
(``LogFile.sync``): a greenlet yields once after its append, and one
``fdatasync`` covers every append of the worker made before it.

What it leaves out is what contextsvc adds: an index of customers and contact
keys, idempotency keys, lifecycle fields, If-Match, the request log, body limits,
tenants and API keys, and the checks that the file was not replaced or changed by
another program. bench/scale.py measures it beside the bare route
(bench/bare.py) and the empty store: ``floor / bare`` is what durability alone
costs on the machine, ``contextsvc / floor`` what the rest costs.

The file is ``$FLOOR_PATH`` (a temporary file by default); ``FLOOR_FSYNC=0``
leaves the flush out, to see what it costs.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time

from flask import Flask, Response, request
from marshmallow import Schema, fields

app = Flask(__name__)
PATH = os.environ.get("FLOOR_PATH") or os.path.join(tempfile.gettempdir(), "bench-floor.log")
FSYNC = os.environ.get("FLOOR_FSYNC", "1") != "0"


class Start(Schema):
    customer_id = fields.String()
    contact_key = fields.String()
    service_type = fields.Integer(required=True)
    interaction_id = fields.String()
    media_type = fields.Integer()


SCHEMA = Start()
KNOWN = frozenset(SCHEMA.fields)
_files: dict[str, int] = {}  # opened in each worker, after the fork
_flushes = {"appended": 0, "synced": 0}


def _fds() -> tuple[int, int]:
    if not _files:
        _files["data"] = os.open(PATH, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _files["lock"] = os.open(PATH + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    return _files["data"], _files["lock"]


@app.post("/genesys/1/cs/services/start")
def start_service() -> Response:
    body = json.loads(request.get_data())
    known = {key: value for key, value in body.items() if key in KNOWN}
    data = {key: value for key, value in body.items() if key not in KNOWN}
    loaded = SCHEMA.load(known)
    data_fd, lock_fd = _fds()
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        sid = int(os.pread(lock_fd, 20, 0) or b"0") + 1
        doc = {"service_id": sid, **loaded, "data": data, "states": [], "tasks": []}
        os.write(data_fd, json.dumps(doc).encode() + b"\n")
        os.pwrite(lock_fd, b"%20d" % sid, 0)
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
    _flushes["appended"] += 1
    mine = _flushes["appended"]
    if FSYNC:
        time.sleep(0)  # under gevent: the ready greenlets append first, one flush for all
        if _flushes["synced"] < mine:
            covered = _flushes["appended"]
            os.fdatasync(data_fd)
            _flushes["synced"] = max(_flushes["synced"], covered)
    return Response(json.dumps({"service_id": sid}), 201,
                    {"Location": f"/genesys/1/cs/services/{sid}"}, mimetype="application/json")
