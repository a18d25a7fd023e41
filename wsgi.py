"""WSGI entry point:
``gunicorn -c python:contextsvc.gunicorn_conf -w 4 -b 127.0.0.1:8080 wsgi:app``.

A configuration that cannot be used is reported in one line, ``contextsvc: error:
configuration: ...``, not with a traceback per worker:

* With ``-c python:contextsvc.gunicorn_conf`` the master has already stopped on it,
  with exit status 78, before any worker started.
* Without it, this module is the first to read the configuration, in each worker.
  gunicorn's master halts only when a worker exits with its "App failed to load"
  status (4); any other status and it starts the worker again, in a loop. And when
  a second worker exits with 4 while the master is halting, the master fails with
  a traceback of its own and status 1. So the first worker gunicorn started
  reports the error and exits with 4; its siblings, which read the same
  configuration, say nothing and wait for the master to stop them. gunicorn then
  stops with status 4 after its own lines ("Worker (pid:...) exited with code 4",
  "Reason: App failed to load.").
* Imported anywhere else (``--preload``, a script), it exits with 78.
"""

import sys
import time
from typing import Any

from contextsvc import config, create_app


def _gunicorn_worker() -> Any:
    """The gunicorn worker this import runs in (found on the stack, in the master's
    spawn_worker that forked it), or None."""
    frame = sys._getframe()
    while frame is not None:
        code = frame.f_code
        if code.co_name == "spawn_worker" and "gunicorn" in code.co_filename:
            return frame.f_locals.get("worker")
        frame = frame.f_back
    return None


def _stop_worker(worker: Any, exc: config.ConfigError) -> None:
    from gunicorn.arbiter import Arbiter

    first_generation = 1 < getattr(worker, "age", 1) <= worker.cfg.workers
    if not first_generation:  # the first worker, or one started later: it reports
        config.exit_on(exc, Arbiter.APP_LOAD_ERROR)
    while worker.alive:  # until the master, halting on the first worker, stops this one
        time.sleep(0.1)
    raise SystemExit(0)


try:
    app = create_app()
except config.ConfigError as exc:
    worker = _gunicorn_worker()
    if worker is not None:
        _stop_worker(worker, exc)
    config.exit_on(exc)
