"""Benchmark the lifecycle housekeeping (issue 9), each figure against a baseline
measured in the same run.

    python bench/lifecycle.py                              # the full run (100,000 services)
    python bench/lifecycle.py --services 5000 --seconds 3  # a quicker look

1. Sweep. A store of N services (2 states x 2 tasks and a few hundred bytes of
   attached data, as in run.py), half of which carry a client-fixed expiration at
   one moment a little after the servers will be up. A first server on it, which
   never sweeps (sweep_interval 1h), gives the baseline: the start-service and the
   customer-query loads at once (two wrk) for --seconds. A second server on the same
   file sweeps every --interval. The script watches its housekeeping (a sweep holds
   the flock of ``<store>.sweep.lock``, seen in /proc/locks, and writes its finish
   time in that file; the refresh likewise ``<store>.refresh.lock``) and runs the
   same two loads from the start to the end of the refresh that follows the first
   sweep on the store (it reads every service; nothing is due yet) and of the
   sweep that removes the expired services.
2. Writes with lifecycle on: start-service throughput on an empty store with a
   default expiration (30d) and auto_complete_after (4h) configured, over the same
   with neither; the two servers take turns over --rounds; medians.
3. Purge. A store of N services started last year; POST /maintenance/purge
   (purge.service.all, limit the first of January) while wrk starts services and
   keeps every id the server acknowledges. Every such id must still be readable
   afterwards and "purged" must equal N; the p99 of the start load during the
   purge is compared with its p99 just before.

Servers run ``gunicorn -w 4`` (gevent workers, contextsvc/gunicorn_conf.py) on
loopback; stores go in a temporary directory under --workdir, removed at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timezone
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Server, build_service, fmt, wrk, wrk_finish, wrk_start  # noqa: E402

from contextsvc.domain import timeutil  # noqa: E402
from contextsvc.storage import LogFile, LogStore, tinydb_snapshot  # noqa: E402

API = "/genesys/1/cs"
APP = "wsgi:app"


# ---------------------------------------------------------------- helpers
def iso(moment: float) -> str:
    return timeutil.format(datetime.fromtimestamp(moment, timezone.utc))


def preload(path: str, n: int, year: int, expires: str | None = None) -> None:
    """N services started in ``year``, updated now; with ``expires``, every other one
    (the even indexes: half of each customer's) expires at that moment."""
    updated = iso(time.time())
    customers = max(1, n // 10)

    def build(sid: int, i: int) -> dict:
        doc = build_service(sid, i, customers, year=year)
        doc["updated"] = updated
        if expires and i % 2 == 0:
            doc["expires"] = expires
            doc["due"] = expires  # as the server records it (lifecycle.mark_due)
        return doc

    os.makedirs(os.path.dirname(path), exist_ok=True)
    store = LogStore(LogFile(path))
    try:
        for start in range(0, n, 2000):
            store.create_services([lambda sid, i=i: build(sid, i)
                                   for i in range(start, min(n, start + 2000))])
    finally:
        store.close()


def data_bytes(path: str) -> int:
    """The data file's size without its trailing whitespace padding
    (``len(data.rstrip())``), read from the end."""
    with open(path, "rb") as handle:
        end = os.fstat(handle.fileno()).st_size
        while end > 0:
            start = max(0, end - (1 << 20))
            handle.seek(start)
            kept = handle.read(end - start).rstrip()
            if kept:
                return start + len(kept)
            end = start
    return 0


def env_for(path: str, **lifecycle: str) -> dict:
    env = {"CONTEXTSVC_STORAGE_PATH": path, "CONTEXTSVC_LOGGING_LEVEL": "info",
           "CONTEXTSVC_LIFECYCLE_EXPIRATION": "", "CONTEXTSVC_LIFECYCLE_AUTO_COMPLETE_AFTER": ""}
    for key, value in lifecycle.items():
        env[f"CONTEXTSVC_LIFECYCLE_{key.upper()}"] = value
    return env


def sleep_until(moment: float) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(min(left, 0.5))


class Loads:
    """wrk loads running together: ``start`` (start.lua, keeping the acknowledged ids
    in ``ids`` when given) and, unless ``query`` is False, ``query`` (query.lua).
    They run ``seconds`` or until :meth:`stop` interrupts them."""

    def __init__(self, port: int, customers: int, connections: int, seconds: int = 3600,
                 query: bool = True, ids: str | None = None):
        self.seconds = seconds
        self.procs: dict = {}
        try:
            scripts = ("start.lua", "report.lua") + (("ids.lua",) if ids else ())
            self.procs["start"] = wrk_start(port, scripts, seconds, connections, customers,
                                            {"BENCH_IDS": ids} if ids else None)
            if query:
                self.procs["query"] = wrk_start(port, ("query.lua", "report.lua"), seconds,
                                                connections, customers)
        except BaseException:
            self.close()
            raise

    def wait(self) -> dict:
        return self._finish(self.seconds + 60)

    def stop(self) -> dict:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        return self._finish(60)

    def _finish(self, timeout: float) -> dict:
        try:
            return {name: wrk_finish(proc, timeout) for name, proc in self.procs.items()}
        finally:
            self.close()

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class SweepWatch:
    """A housekeeping job of the servers on one store, seen from outside: a sweep
    holds the flock of ``<store>.sweep.lock`` while it runs and writes there when it
    finished (contextsvc.storage.logfile.LogFile.periodic), a refresh likewise with
    ``<store>.refresh.lock``; /proc/locks shows the flock."""

    def __init__(self, store: str, job: str = "sweep"):
        self.path = f"{store}.{job}.lock"

    def running(self) -> bool:
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return False
        with open("/proc/locks") as handle:
            for line in handle:
                fields = line.split()  # "1: FLOCK ADVISORY WRITE pid maj:min:inode 0 EOF"
                if (len(fields) > 5 and fields[1] == "FLOCK"
                        and fields[5].rsplit(":", 1)[-1] == str(inode)):
                    return True
        return False

    def last_finish(self) -> float:
        try:
            with open(self.path, "rb") as handle:
                return float(handle.read(32).strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0.0

    def wait_start(self, until: float) -> float | None:
        """When a sweep is next seen running (held over two polls, so that a worker
        merely checking whether it is its turn does not count); None at ``until``."""
        seen = None
        while time.time() < until:
            if self.running():
                if seen is not None:
                    return seen
                seen = time.time()
            else:
                seen = None
            time.sleep(0.01)
        return None

    def wait_idle(self, until: float) -> None:
        while self.running() and time.time() < until:
            time.sleep(0.01)

    def wait_end(self, previous: float, until: float) -> float | None:
        """The finish time the running sweep writes (newer than ``previous``)."""
        while time.time() < until:
            finish = self.last_finish()
            if finish > previous and not self.running():
                return finish
            time.sleep(0.01)
        return None


SWEPT = re.compile(rb"sweep: (\d+) expired services removed, (\d+) auto-completed")


def swept(log: str) -> list[int]:
    with open(log, "rb") as handle:
        return [int(m.group(1)) for m in SWEPT.finditer(handle.read())]


def notable(log: str, limit: int = 12) -> list[str]:
    """The server's log lines worth showing: sweeps, warnings, errors."""
    with open(log, "rb") as handle:
        lines = handle.read().decode(errors="replace").splitlines()
    keep = [ln for ln in lines if re.search(r"sweep|warning|error|exception|busy|compact",
                                            ln, re.IGNORECASE)]
    return keep[:limit] + ([f"... and {len(keep) - limit} more"] if len(keep) > limit else [])


def timed(call: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    began = time.monotonic()
    result = call(*args)
    return result, time.monotonic() - began


def post(port: int, path: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{API}{path}",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def unreadable(port: int, ids: list[int], connections: int = 4) -> list[int]:
    """The ids that GET /services/{id} does not answer with 200 (a few keep-alive
    connections at once)."""
    with ThreadPoolExecutor(connections) as pool:
        parts = pool.map(lambda k: _unreadable(port, ids[k::connections]), range(connections))
        return sorted(sid for part in parts for sid in part)


def _unreadable(port: int, ids: list[int]) -> list[int]:
    missing = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for sid in ids:
            for attempt in range(2):
                try:
                    conn.request("GET", f"{API}/services/{sid}")
                    response = conn.getresponse()
                    response.read()
                    if response.status != 200:
                        missing.append(sid)
                    break
                except (http.client.HTTPException, OSError):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    if attempt:
                        missing.append(sid)
    finally:
        conn.close()
    return missing


def read_ids(path: str) -> list[int]:
    try:
        with open(path) as handle:
            return [int(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def log(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- 1. the sweep
def sweep_part(args: argparse.Namespace, tmp: str) -> dict:
    n, interval, c = args.services, args.interval, args.connections
    customers = max(1, n // 10)
    expiring = (n + 1) // 2
    path = os.path.join(tmp, "sweep", "cs.json")
    startup = 2 + n / 25_000  # a server's first answer, generously
    # room for the baseline, the refresh that follows the first sweep (measured for
    # --window seconds at most) and a sweep interval, before the moment
    lead = args.lead or (n / 5000 + 2 * startup + 2 * (2 + args.seconds) + args.window
                         + 2 * interval + 15)
    expiry = time.time() + lead
    preload(path, n, args.year, expires=iso(expiry))
    log(f"sweep: preloaded {n:,} services, {expiring:,} expiring at {iso(expiry)} "
        f"(in {expiry - time.time():.0f} s)")
    out: dict = {"services": n, "expiring": expiring, "interval_s": interval}

    # its output goes to a file too, like the sweeping server's (one line per request)
    server = Server(APP, env_for(path, sweep_interval="1h"), log=os.path.join(tmp, "base.log"))
    try:
        Loads(server.port, customers, c, 2).wait()  # warm-up
        out["baseline"] = Loads(server.port, customers, c, args.seconds).wait()
    finally:
        server.stop()
    log("sweep: baseline measured (no sweep)")

    server_log = os.path.join(tmp, "sweep.log")
    server = Server(APP, env_for(path, sweep_interval=f"{interval}s"), log=server_log)
    watch = SweepWatch(path)
    try:
        Loads(server.port, customers, c, 2).wait()  # warm-up: every worker's sweeper starts
        if time.time() > expiry - 1:
            raise RuntimeError("the expiry moment came before the servers were ready; "
                               "run again with a larger --lead")
        refresh = SweepWatch(path, "refresh")
        previous = refresh.last_finish()
        started = refresh.wait_start(until=expiry - 1)
        if started is not None:  # the refresh: every service is read, nothing is due
            loads = Loads(server.port, customers, c)
            finished = refresh.wait_end(previous, until=min(started + args.window,
                                                            expiry - interval))
            out["refresh"] = loads.stop()
            out["refresh_loaded_s"] = time.time() - started
            finished = finished or refresh.wait_end(previous, until=time.time() + 600)
            out["refresh_s"] = (finished or time.time()) - started
            log(f"sweep: refresh measured ({out['refresh_s']:.1f} s)")

        sleep_until(expiry)
        out["bytes_before"] = data_bytes(path)
        bound = expiry + 3 * interval + 600
        watch.wait_idle(bound)  # a sweep begun before the moment removes nothing
        previous = watch.last_finish()
        started = watch.wait_start(until=bound)
        if started is None:
            raise RuntimeError("no sweep started after the expiry moment")
        loads = Loads(server.port, customers, c)
        finished = watch.wait_end(previous, until=started + args.window)
        out["during"] = loads.stop()
        out["sweep_loaded_s"] = time.time() - started
        finished = finished or watch.wait_end(previous, until=bound)
        out["sweep_s"] = (finished or time.time()) - started
        out["sweep_start_after_expiry_s"] = started - expiry
        log(f"sweep: removing sweep measured ({out['sweep_s']:.1f} s)")
        out["bytes_after"] = data_bytes(path)
        # the log line follows the finish; more sweeps if one did not remove them all
        wait = min(bound, time.time() + 2 * interval + 10)
        while time.time() < wait:
            time.sleep(0.2)
            if sum(swept(server_log)) >= expiring:
                break
            if not watch.running() and watch.last_finish() > (finished or 0):
                finished = watch.last_finish()
        out["removed_logged"] = swept(server_log)
        out["gone_after_s"] = (finished or time.time()) - expiry
    finally:
        server.stop()
        out["log"] = notable(server_log)
    snapshot = tinydb_snapshot(path).table("services")
    out["left_expiring"] = sum(1 for doc in snapshot.all() if "expires" in doc)
    out["services_after"] = len(snapshot)
    return out


# ---------------------------------------------------------------- 2. writes
def writes_part(args: argparse.Namespace, tmp: str) -> dict:
    configs = {"off": {}, "on": {"expiration": "30d", "auto_complete_after": "4h"}}
    rounds: dict[str, list[dict]] = {name: [] for name in configs}
    for round_ in range(args.rounds):
        for name in list(configs) if round_ % 2 == 0 else list(configs)[::-1]:
            workdir = tempfile.mkdtemp(prefix=f"writes-{name}-", dir=tmp)
            server = Server(APP, env_for(os.path.join(workdir, "cs.json"), **configs[name]))
            try:
                wrk(server.port, "start.lua", 2, 2 * args.connections, 1)  # warm-up
                rounds[name].append(wrk(server.port, "start.lua", args.seconds,
                                        2 * args.connections, 1))
            finally:
                server.stop()
                shutil.rmtree(workdir, ignore_errors=True)
        log(f"writes: round {round_ + 1} of {args.rounds} done")
    return {name: {"rounds": r, **median(r)} for name, r in rounds.items()}


def median(results: list[dict]) -> dict:
    def med(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    row = {key: med([r[key] for r in results]) for key in ("rps", "p50_us", "p99_us")}
    row["non2xx"] = sum(r["non2xx"] for r in results)
    row["socket_errors"] = sum(r["socket_errors"] for r in results)
    return row


# ---------------------------------------------------------------- 3. purge
def purge_part(args: argparse.Namespace, tmp: str) -> dict:
    n, c = args.services, 2 * args.connections
    path = os.path.join(tmp, "purge", "cs.json")
    preload(path, n, args.year)
    log(f"purge: preloaded {n:,} services started in {args.year}")
    limit = f"{args.year + 1}-01-01T00:00:00.000Z"
    ids = {name: os.path.join(tmp, f"ids-{name}.txt") for name in ("warm", "before", "during")}
    out: dict = {"services": n, "limit": limit}
    # no sweep in the window: part 1 measures sweeps
    server_log = os.path.join(tmp, "purge.log")
    server = Server(APP, env_for(path, sweep_interval="1h"), log=server_log)
    try:
        Loads(server.port, 1, c, 2, query=False, ids=ids["warm"]).wait()
        out["baseline"] = Loads(server.port, 1, c, args.seconds, query=False,
                                ids=ids["before"]).wait()["start"]
        body = {"limit": limit, "operation": "purge.service.all"}
        with ThreadPoolExecutor(1) as pool:
            loads = Loads(server.port, 1, c, query=False, ids=ids["during"])
            try:
                began = time.monotonic()
                purge = pool.submit(timed, post, server.port, "/maintenance/purge", body, 3600)
                try:  # the load runs until the purge answers, for --window seconds at most
                    purge.result(timeout=args.window)
                except FutureTimeout:
                    pass
            finally:
                out["during"] = loads.stop()["start"]
            out["loaded_s"] = time.monotonic() - began
            answer, out["purge_s"] = purge.result(timeout=1800)
            out["purged"] = answer["purged"]
        log(f"purge: {out['purged']:,} purged in {out['purge_s']:.1f} s")
        during = read_ids(ids["during"])
        out["acknowledged_during"] = len(during)
        out["unreadable"] = unreadable(server.port, during)
        log(f"purge: {len(during):,} ids acknowledged during the purge read back")
    finally:
        server.stop()
        out["log"] = notable(server_log)
    # and every id acknowledged at any time is in the file
    acknowledged = set().union(*(read_ids(p) for p in ids.values()))
    stored = {int(doc.doc_id) for doc in tinydb_snapshot(path).table("services").all()}
    out["acknowledged"] = len(acknowledged)
    out["not_in_file"] = len(acknowledged - stored)
    out["services_after"] = len(stored)
    return out


# ---------------------------------------------------------------- report
def loaded(part: dict, name: str) -> str:
    """How long the sweep took, and for how much of it the loads ran when not all."""
    took, load = part[f"{name}_s"], part[f"{name}_loaded_s"]
    return f"{took:.1f} s" if load >= took - 0.1 else f"{took:.1f} s, loads the first {load:.0f}"


def report(args: argparse.Namespace, sweep: dict, writes: dict, purge: dict) -> None:
    n, c = args.services, args.connections
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; gunicorn -w 4 (gevent); wrk -t2 -c{c} per load when "
          f"the start and query loads run together, -c{2 * c} when start runs alone; "
          f"{args.seconds} s per baseline load; writes: median of {args.rounds} "
          f"interleaved rounds")

    print(f"\n1. sweep: {sweep['expiring']:,} of {n:,} services expire at once, "
          f"sweep_interval {sweep['interval_s']} s")
    print(f"{'window':<34} | {'start req/s':>9} {'p50 ms':>8} {'p99 ms':>8} | "
          f"{'query req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    windows = [("no sweep (baseline)", sweep["baseline"])]
    if "refresh" in sweep:
        windows.append((f"refresh, reads all ({loaded(sweep, 'refresh')})", sweep["refresh"]))
    windows.append((f"removing sweep ({loaded(sweep, 'sweep')})", sweep["during"]))
    for name, loads in windows:
        print(f"{name:<34} | {fmt(loads['start'])} | {fmt(loads['query'])}")
    print(f"removing sweep began {sweep['sweep_start_after_expiry_s']:.1f} s after the expiry "
          f"moment; expired services all gone {sweep['gone_after_s']:.1f} s after it "
          f"(logged removals: {', '.join(f'{r:,}' for r in sweep['removed_logged']) or 'none'}"
          f"; expiring services left in the file: {sweep['left_expiring']:,})")
    print(f"data file (padding left out): {sweep['bytes_before'] / 1e6:.1f} MB at the expiry "
          f"moment, {sweep['bytes_after'] / 1e6:.1f} MB after the sweep")
    for line in sweep["log"]:
        print(f"  server log: {line}")

    print("\n2. start-service on an empty store, lifecycle off / on "
          "(expiration 30d, auto_complete_after 4h)")
    print(f"{'lifecycle':<34} | {'start req/s':>9} {'p50 ms':>8} {'p99 ms':>8} | per round req/s")
    for name in ("off", "on"):
        per_round = ", ".join(f"{r['rps']:.0f}" for r in writes[name]["rounds"])
        print(f"{name:<34} | {fmt(writes[name])} | {per_round}")

    print(f"\n3. purge of {purge['services']:,} services (purge.service.all, limit "
          f"{purge['limit']}) under the start-service load")
    print(f"{'window':<34} | {'start req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'no purge (baseline)':<34} | {fmt(purge['baseline'])}")
    window = ("during the purge" if purge["loaded_s"] >= purge["purge_s"] - 0.1
              else f"its first {purge['loaded_s']:.0f} s")
    print(f"{window:<34} | {fmt(purge['during'])}")
    print(f"purge: {purge['purged']:,} purged in {purge['purge_s']:.1f} s "
          f"({purge['purged'] / purge['purge_s']:,.0f} services/s); "
          f"{purge['acknowledged_during']:,} services acknowledged during the load, "
          f"{len(purge['unreadable'])} of them not readable (GET) afterwards; "
          f"{purge['acknowledged']:,} acknowledged in the whole run, {purge['not_in_file']} "
          f"of them missing from the file; {purge['services_after']:,} services in it")
    for line in purge["log"]:
        print(f"  server log: {line}")

    p99 = "p99_us"
    checks = [
        ("sweep: expiry to all gone / sweep_interval",
         sweep["gone_after_s"] / sweep["interval_s"], "<=", 2),
        ("sweep: start p99 during the sweep / no sweep",
         sweep["during"]["start"][p99] / sweep["baseline"]["start"][p99], "<=", 3),
        ("sweep: query p99 during the sweep / no sweep",
         sweep["during"]["query"][p99] / sweep["baseline"]["query"][p99], "<=", 3),
        ("sweep: data file after / before",
         sweep["bytes_after"] / sweep["bytes_before"], "<=", 0.6),
        ("start req/s: lifecycle on / off", writes["on"]["rps"] / writes["off"]["rps"],
         ">=", 0.9),
        ("purge: start p99 during the purge / no purge",
         purge["during"][p99] / purge["baseline"][p99], "<=", 3),
        ("purge: purged / preloaded", purge["purged"] / purge["services"], "==", 1),
        ("purge: acknowledged writes lost",
         len(purge["unreadable"]) + purge["not_in_file"], "==", 0),
    ]
    print("\nratio" + " " * 44 + "value  target")
    for name, value, op, bound in checks:
        ok = {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[op]
        print(f"{name:<48} {value:6.2f}  {op} {bound:<4} {'met' if ok else 'NOT MET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=100_000, help="store size (sweep, purge)")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per baseline load")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of the lifecycle on/off comparison")
    parser.add_argument("--interval", type=int, default=10, help="sweep_interval, seconds")
    parser.add_argument("--connections", type=int, default=8,
                        help="wrk connections per load when two run together (twice alone)")
    parser.add_argument("--window", type=int, default=60,
                        help="the loads during a sweep or the purge stop after this many "
                             "seconds, if it has not finished by then")
    parser.add_argument("--lead", type=float, default=None,
                        help="seconds from preloading to the expiry moment (default: estimated)")
    parser.add_argument("--workdir", default=None, help="where the stores go (a local disk)")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    args.year = datetime.now(timezone.utc).year - 1  # purge limit: the first of this year
    if not shutil.which("wrk"):
        print("wrk not found; installing it with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)

    tmp = tempfile.mkdtemp(prefix="bench-lifecycle-", dir=args.workdir)
    try:
        sweep = sweep_part(args, tmp)
        writes = writes_part(args, tmp)
        purge = purge_part(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"sweep": sweep, "writes": writes, "purge": purge}, handle, indent=1)
    report(args, sweep, writes, purge)


if __name__ == "__main__":
    main()
