"""Run the app under a real gunicorn on a free loopback port, for the tests that
need several worker processes."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, db_path: str, workers: int = 4, extra_env: dict[str, str] | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.port = free_port()
        env = {**os.environ, "CONTEXTSVC_STORAGE_PATH": db_path}
        env.pop("CONTEXTSVC_CONFIG", None)  # not the caller's own; extra_env may name one
        env.update(extra_env or {})
        self.log = open(db_path + ".gunicorn.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:contextsvc.gunicorn_conf",
             "-w", str(workers), "-b",
             f"127.0.0.1:{self.port}", "--graceful-timeout", "2", *extra_args, "wsgi:app"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                # 401: the configuration has API keys; the app answered all the same
                if self.request("GET", "/services/anonymous/ping")[0] in (200, 401):
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("gunicorn did not start: " + open(self.log.name).read())
            time.sleep(0.1)

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30,
                headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            sent = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers={**sent, **(headers or {})})
            response = conn.getresponse()
            raw = response.read()
            return (response.status, json.loads(raw) if raw else None,
                    dict(response.getheaders()))
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
