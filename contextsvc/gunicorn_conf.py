"""gunicorn settings for contextsvc: ``gunicorn -c python:contextsvc.gunicorn_conf``.

gunicorn answers requests too malformed to reach the app (a request line over
its limit, broken headers or chunking) with an HTML page of its own, from
``gunicorn.util.write_error``. The contract is that every error is JSON, so this
module, loaded in the master before the workers fork, replaces that one function
with one that writes the contract's error shape. Everything else is gunicorn's
default, and any setting can still be given on the command line.
"""

from __future__ import annotations

import json

from gunicorn import util

from contextsvc.api.errors import error_body, exception_name

# The longest request line gunicorn accepts (its maximum; the default is 4094).
limit_request_line = 8190

def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    body = json.dumps(error_body(mesg or reason,
                                 exception_name(status_int, reason.replace(" ", ""))))
    response = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}")
    util.write_nonblock(sock, response.encode("latin1"))


util.write_error = write_json_error
