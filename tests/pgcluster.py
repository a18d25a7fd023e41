"""A throwaway PostgreSQL cluster for the tests of the postgresql engine: initdb
into a temporary directory, a unix socket in that directory and a free loopback
port, stopped and removed at the end of the test session.

PostgreSQL refuses to run as root, so when the tests run as root the server runs
as the ``postgres`` user (which Debian's packages create) through ``runuser``.
Nothing here is durable on purpose (fsync off): the cluster lives for one run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid

from tests.gunicorn_server import free_port

SUPERUSER = "contextsvc_test"
# CONTEXTSVC_TEST_ENGINE=postgresql runs the suite on the postgresql engine: the app
# fixture, and every app, server and command a test starts (through these
# CONTEXTSVC_STORAGE_* variables, naming the test cluster and a fresh schema per
# test: tests/conftest.py). Taken out of the environment: the configuration refuses
# CONTEXTSVC_ variables that name no setting.
TEST_ENGINE = os.environ.pop("CONTEXTSVC_TEST_ENGINE", "") or "file"
ENGINE_VARIABLES = ("CONTEXTSVC_STORAGE_ENGINE", "CONTEXTSVC_STORAGE_DSN",
                    "CONTEXTSVC_STORAGE_SCHEMA")


def bindir() -> str | None:
    """The directory of initdb and pg_ctl: on the PATH, or Debian's
    /usr/lib/postgresql/<version>/bin (the newest), or None."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl", path=os.path.dirname(os.path.realpath(initdb))):
        return os.path.dirname(os.path.realpath(initdb))
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def missing() -> str | None:
    """Why no cluster can be started here, or None."""
    if bindir() is None:
        return ("PostgreSQL's binaries (initdb, pg_ctl) are not installed: "
                "apt-get install postgresql")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


class Cluster:
    def __init__(self) -> None:
        self.bin = bindir()
        assert self.bin is not None
        self.dir = tempfile.mkdtemp(prefix="contextsvc-pg-")
        self.port = free_port()
        self.data = os.path.join(self.dir, "data")
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", self.data, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        self.options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.dir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w",
                  "-t", "60", "-o", self.options, "start")
        self.dsn = f"host={self.dir} port={self.port} user={SUPERUSER} dbname=postgres"
        self.tcp_dsn = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run([*self._as, os.path.join(self.bin, program), *args],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stdout}{done.stderr}")

    def psql(self, sql: str) -> str:
        done = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.dsn,
                               "-c", sql], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        return done.stdout.strip()

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w",
                  "-t", "60", "-o", self.options, "start")

    def close(self) -> None:
        try:
            self.stop()
        except (RuntimeError, subprocess.TimeoutExpired):
            time.sleep(1)
        shutil.rmtree(self.dir, ignore_errors=True)


def fresh_schema() -> str:
    """A schema name no other test uses (the engine creates it)."""
    return "t_" + uuid.uuid4().hex[:16]
