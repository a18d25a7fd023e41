"""gunicorn settings for contextsvc: ``gunicorn -c python:contextsvc.gunicorn_conf``.

gunicorn answers requests too malformed to reach the app (a request line over
its limit, broken headers or chunking) with an HTML page of its own, from
``gunicorn.util.write_error``. The contract is that every error is JSON, so this
module, loaded in the master before the workers fork, replaces that one function
with one that writes the contract's error shape.

It also keeps slow clients from taking the service down (see the settings below).
Any setting can still be given on the command line.

**The configuration is checked here, in the master, before any worker forks.** A
value that cannot be used (see :mod:`contextsvc.config`) stops gunicorn with one
line on stderr, ``contextsvc: error: configuration: <where>: <what was expected>``,
and exit status 78 (``EX_CONFIG``), instead of every worker failing to boot with a
traceback. gunicorn imports a ``python:`` configuration module outside its own
``try``/``except Exception`` (gunicorn/app/base.py,
``load_config_from_module_name_or_filename``), and ``SystemExit`` is not an
``Exception``: it leaves gunicorn as it is, with the status given. ``[server]
bind`` and ``workers`` come from the same settings; gunicorn applies its command
line (``-b``, ``-w``) and ``GUNICORN_CMD_ARGS`` after this module, so those win.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import sys
import time
import traceback
from typing import Any

from gunicorn import util

from contextsvc import config as _config
from contextsvc.api.errors import error_body, exception_name

# Names without a leading underscore are gunicorn settings (gunicorn ignores the
# names it does not know; "config" would be one it knows).
try:
    # psycopg is imported in the workers only (see _check_database)
    _settings = _config.load(import_engine=False)
except _config.ConfigError as _exc:
    _config.exit_on(_exc)

bind = _settings["server"]["bind"]
workers = _settings["server"]["workers"]

# The longest request line gunicorn accepts (its maximum; the default is 4094).
limit_request_line = 8190

# Slow clients. A sync worker serves one connection at a time and waits for a slow
# client's request for up to `timeout` seconds (then it is killed): a few dozen
# connections trickling their headers or body stop the service. gunicorn's docs ask
# for a buffering proxy in front of sync workers or for an async worker when it
# faces clients directly. With gevent, a connection waiting for its client holds a
# greenlet, not the worker, and each worker serves up to `worker_connections`
# connections at once. The store works under it: gevent's monkey patching (done
# by the worker before it loads the app) makes the store's threading.RLock and
# time.sleep greenlet-aware, and its file I/O never yields inside a lock.
worker_class = "gevent"
worker_connections = 1000
# gevent's worker reads a request line and its headers under a Timeout of
# `keepalive` seconds (gunicorn/workers/base_async.py): this bounds how long a
# connection may take to send them, as well as how long an idle keep-alive
# connection is kept. Below graceful_timeout, so that idle connections do not hold
# up a worker's restart (benoitc/gunicorn#3227).
keepalive = 5


class _BodyDeadline:
    """A request body reader that gives up once ``seconds`` have passed.

    gunicorn bounds the wait for a request's headers (above) but not for its body:
    a client that sends its headers and then a byte now and then would hold its
    connection for as long as it likes. This puts a deadline on the whole body;
    when it passes, the read raises TimeoutError, which the app answers with a
    JSON 400 and after which gunicorn closes the connection.
    """

    def __init__(self, reader: Any, seconds: float):
        self.reader = reader
        self.deadline = time.monotonic() + seconds

    def read(self, size: int) -> bytes:
        if getattr(self.reader, "length", None) == 0:
            # gunicorn's LengthReader at the end of the body (its reads after the
            # app's, when it drains the body for the next request): nothing to wait for
            return self.reader.read(size)
        import gevent

        left = max(self.deadline - time.monotonic(), 0.001)
        with gevent.Timeout(left, TimeoutError("the request body was not sent in time")):
            return self.reader.read(size)


def pre_request(worker: Any, req: Any) -> None:
    """gunicorn's own hook (a debug line, without the path: before routing, a
    customer id or contact key in it cannot be masked as the access log masks it),
    plus a deadline of ``timeout`` seconds for the request body, under gevent
    workers (a sync worker has its own)."""
    worker.log.debug("%s request received", req.method)
    from gevent import monkey

    body = getattr(req, "body", None)
    if monkey.is_module_patched("socket") and getattr(body, "reader", None) is not None:
        body.reader = _BodyDeadline(body.reader, worker.cfg.timeout)


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn's hook in a new worker, right after the fork.

    Until the worker installs its own signal handlers (gunicorn/workers/base.py,
    ``init_signals``, after gevent's monkey patching: a few hundred milliseconds on
    a busy machine), it runs the master's, which only queue a signal for the
    master's loop. A stop signal sent to the worker in that window was lost: one
    sent to every process at once (``kill`` of the process group, systemd's default
    for a unit), or the master's own when it stops just after starting workers. The
    master then waited ``graceful_timeout`` (30 s) for that worker and killed it.
    Until the worker's own handlers replace these, a stop signal marks the worker
    as stopping, and it stops as soon as it runs."""

    def stop_once_running(signum: int, frame: Any) -> None:
        worker.alive = False

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, stop_once_running)


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    body = json.dumps(error_body(mesg or reason,
                                 exception_name(status_int, reason.replace(" ", ""))))
    response = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}")
    util.write_nonblock(sock, response.encode("latin1"))


util.write_error = write_json_error


def on_starting(server: Any) -> None:
    """gunicorn's hook before it binds. Its ``-e``/``raw_env`` variables reach the
    environment after this module was imported: check the configuration again with
    them, so that they too stop the server in one line rather than in each worker."""
    try:
        settings = _config.load(import_engine=False)
    except _config.ConfigError as exc:
        _config.exit_on(exc)
    if settings["storage"]["engine"] == "postgresql":
        _check_database()
    if settings["storage"]["engine"] == "memory" and server.cfg.workers > 1:
        server.log.warning("[storage] engine = memory with %d workers: each worker has its "
                           "own data, so a request may not see an earlier one's writes; "
                           "use -w 1", server.cfg.workers)


def _check_database() -> None:
    """With engine = postgresql, check its settings, connect once before any worker
    forks, and create or upgrade the schema: a setting that cannot be used stops
    gunicorn as any other does (exit status 78), and a database that cannot be
    reached with libpq's reason in one line (never the password), exit status 1.
    Later, workers connect by themselves (each its own pool, made after the fork),
    and a database lost meanwhile makes requests answer 503.

    This runs in a child process of the master, so that the master never imports
    psycopg: psycopg chooses how it waits for the server when it is first imported,
    and it waits cooperatively only if gevent has patched the standard library by
    then (psycopg/psycopg#527). Imported in the master, it would be imported before
    the gevent workers patch it, and each wait for the database would hold up every
    request of its worker."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = _check_database_here()
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code != 0:
        raise SystemExit(code if code > 0 else 1)


def _check_database_here() -> int:
    from contextsvc.errors import ContextError
    from contextsvc.storage import open_postgresql

    try:
        settings = _config.load()
    except _config.ConfigError as exc:
        _config.exit_on(exc)
    store = open_postgresql(settings, setup=False)
    try:
        store.upgrade()
    except ContextError as exc:
        print(f"contextsvc: error: [storage] dsn: {store.describe()}: {exc.message}",
              file=sys.stderr, flush=True)
        return 1
    finally:
        store.close()
    return 0


def exposed(listeners: Any) -> list[str]:
    """The listeners reachable from other machines: TCP on an address other than
    loopback (0.0.0.0 and :: included). Unix sockets are local."""
    found = []
    for listener in listeners:
        sock = getattr(listener, "sock", None)
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(sock.getsockname()[0].split("%")[0])
        mapped = getattr(address, "ipv4_mapped", None)
        if not (mapped or address).is_loopback:
            found.append(str(listener))
    return found


def when_ready(server: Any) -> None:
    """Warn, once the master listens, when the service can be reached from other
    machines and has no API key: anyone who can reach it can then read and change
    every service (API.md 8.1)."""
    try:
        settings = _config.load(import_engine=False)
    except _config.ConfigError:
        return  # on_starting has stopped the server already
    if settings[_config.API_KEYS]:
        return
    for address in exposed(server.LISTENERS):
        server.log.warning(
            "Listening at %s, beyond loopback, with no API key configured: anyone who "
            "can reach this address can read, change and delete every service. Add a "
            "key to [api_keys] (contextsvc keys new NAME --role ROLE) or bind to "
            "127.0.0.1.", address)
