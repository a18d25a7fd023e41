"""PostgreSQL clusters that replicate, for the failover tests of the postgresql
engine (and the durable cluster of bench/postgresql.py): a primary made with
initdb, standbys made from it with pg_basebackup that stream its WAL, a crash of
a whole cluster (SIGKILL of the postmaster and every process it started) and
the promotion of a standby.

Built on :class:`tests.pgcluster.Cluster` (the same runuser as postgres when the
tests run as root, the same psql); what differs is that each node's settings are
chosen by the caller (``synchronous_commit``, ``fsync``), and that
``synchronous_standby_names`` and ``primary_conninfo`` are left to ALTER SYSTEM,
so that a test can change them while the node runs.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from tests.gunicorn_server import free_port
from tests.pgcluster import SUPERUSER, Cluster, bindir

# what every node runs with; the caller's settings are added (and win)
BASE = {"listen_addresses": "127.0.0.1", "max_connections": "300", "wal_level": "replica",
        "max_wal_senders": "10", "hot_standby": "on", "wal_receiver_status_interval": "1s",
        "wal_retrieve_retry_interval": "500ms"}
# a throwaway node: nothing is flushed to disk (a killed process loses nothing the
# kernel has; only a crash of the machine would)
FAST = {"fsync": "off", "full_page_writes": "off"}


class Node(Cluster):
    """One cluster of a replicated set. ``Node(settings)`` makes a primary;
    ``node.standby(name, settings)`` a standby streaming from it, named ``name``
    (its ``application_name``, what ``synchronous_standby_names`` lists). Its files
    go to a new directory under ``parent`` (the system's temporary directory by
    default)."""

    def __init__(self, settings: dict[str, str] | None = None, *, name: str = "primary",
                 source: Node | None = None, parent: str | None = None) -> None:
        # Cluster.__init__ makes a primary with settings of its own: not called
        self.bin = bindir()
        assert self.bin is not None
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"contextsvc-pg-{name}-", dir=parent)
        self.port = free_port()
        self.data = os.path.join(self.dir, "data")
        self._as = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        every = {**BASE, **(settings or {}), "port": str(self.port),
                 "unix_socket_directories": self.dir}
        self.options = " ".join(f"-c {key}={value}" for key, value in every.items())
        self.dsn = f"host={self.dir} port={self.port} user={SUPERUSER} dbname=postgres"
        self.tcp_dsn = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"
        try:
            if source is None:
                self._run("initdb", "-D", self.data, "-U", SUPERUSER, "-A", "trust", "-E",
                          "UTF8", "--locale=C.UTF-8", "--no-sync")
            else:
                self._run("pg_basebackup", "-D", self.data, "-d", source.dsn, "-X", "stream",
                          "-c", "fast", "--no-sync")
                self._run("touch", os.path.join(self.data, "standby.signal"))
                # the copy has the source's ALTER SYSTEM settings: a standby has no
                # synchronous standby of its own, also once promoted
                with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as conf:
                    conf.write(f"primary_conninfo = '{source.conninfo(name)}'\n"
                               "synchronous_standby_names = ''\n")
            self.start()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _run(self, program: str, *args: str) -> None:
        path = os.path.join(self.bin, program) if program != "touch" else "touch"
        done = subprocess.run([*self._as, path, *args], capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stdout}{done.stderr}")

    def conninfo(self, application_name: str) -> str:
        """How a standby named ``application_name`` connects to this node."""
        return (f"host=127.0.0.1 port={self.port} user={SUPERUSER} "
                f"application_name={application_name}")

    def standby(self, name: str, settings: dict[str, str] | None = None) -> Node:
        return Node(settings, name=name, source=self)

    def set(self, **settings: str) -> None:
        """ALTER SYSTEM SET each setting, and reload the configuration."""
        for key, value in settings.items():
            self.psql(f"ALTER SYSTEM SET {key} = '{value}'")
        self.psql("SELECT pg_reload_conf()")

    def streaming(self) -> list[tuple[str, str]]:
        """(application_name, sync_state) of each standby streaming from this node."""
        out = self.psql("SELECT application_name, sync_state FROM pg_stat_replication "
                        "WHERE state = 'streaming'")
        return [tuple(line.split("|")) for line in out.splitlines() if line]

    def wait_streaming(self, name: str, sync_state: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (name, sync_state) not in self.streaming():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} is not streaming from {self.name} as "
                                   f"{sync_state}: {self.streaming()}")
            time.sleep(0.1)

    def receiving(self) -> bool:
        """Whether this standby's WAL receiver runs."""
        return self.psql("SELECT count(*) FROM pg_stat_wal_receiver") != "0"

    def pids(self) -> list[int]:
        """The postmaster's pid and those of the processes it started."""
        with open(os.path.join(self.data, "postmaster.pid")) as handle:
            postmaster = int(handle.readline())
        children = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    stat = handle.read()
            except OSError:
                continue
            # the second field is "(comm)", which may hold spaces: split after it
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(entry))
        return [postmaster, *children]

    def kill(self) -> None:
        """A crash: SIGKILL to the postmaster and to every process it started, so that
        nothing of this node answers or sends WAL any more."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.killed = True

    def promote(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-w", "-t", "60", "promote")

    def close(self) -> None:
        if getattr(self, "killed", False):
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            super().close()
