"""Benchmark export and import (API.md 7.1, 7.2), each figure from this one run.

    python bench/export.py                     # the full run (100,000 services)
    python bench/export.py --services 20000    # a quicker look

1. Import: N services as ``contextsvc export`` writes them (2 states x 2 tasks and a
   few hundred bytes of attached data each, as in run.py, ten per customer) loaded
   by ``contextsvc import FILE`` into an empty store; services/s from the command's
   start to its end.
2. On that store, ``gunicorn -w 4`` (gevent workers, contextsvc/gunicorn_conf.py) on
   loopback, once its first housekeeping (a refresh that reads every service) is
   over. Export over HTTP (``GET /maintenance/services/stream``, whole services,
   a JSON array and NDJSON) read as fast as a client can, and by the command
   (``contextsvc export -o FILE``) on the store the server uses; services/s each.
   The server's RSS (master + workers, from /proc) is sampled every 20 ms from
   before the first export to the end of the last: its peak growth.
3. Start-service throughput (wrk, start.lua) without an export, and while one
   client exports over HTTP again and again; the ratio. The two alternate over
   --rounds; the ratio is of the medians.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Server, build_service, fmt, wrk  # noqa: E402

from contextsvc.domain import export  # noqa: E402

API = "/genesys/1/cs"
# every service (the preloaded ones are stamped all over 2026; time_to defaults to now)
STREAM = (f"{API}/maintenance/services/stream?time_from=2000-01-01T00:00:00Z"
          "&time_to=3000-01-01T00:00:00Z&export_content=true")
COMMAND = shutil.which("contextsvc", path=os.path.dirname(sys.executable)) or "contextsvc"


def log(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def write_services(path: str, n: int) -> int:
    """N services in the export form; returns the file's size."""
    customers = max(1, n // 10)
    with open(path, "wb") as out:
        for start in range(0, n, 1000):
            out.write(b"".join(
                json.dumps(export.whole(build_service(i + 1, i, customers)),
                           separators=(",", ":")).encode() + b"\n"
                for i in range(start, min(n, start + 1000))))
    return os.path.getsize(path)


def command(*args: str, store: str) -> tuple[float, float]:
    """Run the contextsvc command on ``store``: (seconds it took, CPU seconds it used)."""
    env = {**os.environ, "CONTEXTSVC_STORAGE_PATH": store}
    env.pop("CONTEXTSVC_CONFIG", None)
    began, cpu = time.monotonic(), _children_cpu()
    done = subprocess.run([COMMAND, *args], env=env, capture_output=True, text=True)
    took, used = time.monotonic() - began, _children_cpu() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"contextsvc {' '.join(args)}: {done.stderr.strip()}")
    return took, used


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Rss:
    """Samples the RSS of a process and its children (MB) in a thread."""

    def __init__(self, pid: int, every: float = 0.02):
        self.pid, self.every = pid, every
        self.peak = self.first = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def pids(self) -> list[int]:
        pids = [self.pid]
        try:
            tasks = os.listdir(f"/proc/{self.pid}/task")
        except FileNotFoundError:  # the server has stopped
            return []
        for task in tasks:
            try:
                with open(f"/proc/{self.pid}/task/{task}/children") as handle:
                    pids += [int(p) for p in handle.read().split()]
            except FileNotFoundError:
                pass
        return pids

    def cpu(self) -> float:
        """CPU seconds used so far by the process and its children."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
            except (FileNotFoundError, ProcessLookupError):
                pass
        return total / os.sysconf("SC_CLK_TCK")

    def now(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/statm") as handle:
                    total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (FileNotFoundError, ProcessLookupError):
                pass
        return total / 1e6

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.now())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def http_export(port: int, ndjson: bool) -> tuple[float, int, int]:
    """One export read to its end: (seconds, bytes, services when NDJSON)."""
    headers = {"Accept": "application/x-ndjson"} if ndjson else {}
    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("GET", STREAM, headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"export answered {response.status}: {response.read()[:200]}")
        size = lines = 0
        last = b""
        while block := response.read(1 << 20):
            size += len(block)
            lines += block.count(b"\n")
            last = block
    finally:
        conn.close()
    took = time.monotonic() - began
    if not ndjson and not last.endswith(b"]"):
        raise RuntimeError("the JSON export did not end with ]")
    return took, size, lines


def wait_for_refresh(store: str, timeout: float = 300) -> None:
    """A server's first sweep on a store is followed by a refresh that reads every
    service once (contextsvc/api/housekeeping.py): several CPU seconds at 100,000
    services, in one worker, a few seconds after the start. Wait for its end (the
    refresh's lock file then holds its finish time), so that it does not weigh on
    the exports measured; before this wait, it fell on the first one (the JSON
    array), which then seemed to cost 6.1 CPU-s against NDJSON's 3.6."""
    path, deadline = store + ".refresh.lock", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as handle:
                if handle.read().strip():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server's first refresh did not end within {timeout:g} s")


class Exporting:
    """A client exporting over HTTP (NDJSON) again and again until stopped."""

    def __init__(self, port: int):
        self.port, self.done, self.services = port, 0, 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            took, _, lines = http_export(self.port, ndjson=True)
            self.done += 1
            self.services += lines
            self.seconds += took

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10, help="seconds per start load")
    parser.add_argument("--rounds", type=int, default=2,
                        help="start loads without / with an export, alternating")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workdir", default=None, help="where the stores go (a local disk)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found; installing it with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       stdout=subprocess.DEVNULL)
    n = args.services
    tmp = tempfile.mkdtemp(prefix="bench-export-", dir=args.workdir)
    figures: dict = {"services": n}
    try:
        source, store = os.path.join(tmp, "services.ndjson"), os.path.join(tmp, "cs.json")
        figures["file_mb"] = write_services(source, n) / 1e6
        log(f"wrote {n:,} services ({figures['file_mb']:.0f} MB); importing")
        figures["import_s"], figures["import_cpu"] = command("import", source, store=store)
        log(f"imported in {figures['import_s']:.1f} s; starting gunicorn -w 4")

        server = Server("wsgi:app", {"CONTEXTSVC_STORAGE_PATH": store}, workers=4,
                        log=os.path.join(tmp, "gunicorn.log"))
        try:
            http_export(server.port, ndjson=True)  # every worker has read the file
            wait_for_refresh(store)
            # one more, untimed: the first export after the server has been idle
            # costs about 0.3 CPU-s more, whatever its form, and the JSON array,
            # measured first, would carry it
            http_export(server.port, ndjson=False)
            rss = Rss(server.proc.pid)
            figures["rss_before_mb"] = rss.first
            for name, ndjson in (("json", False), ("ndjson", True)):
                cpu = rss.cpu()
                took, size, lines = http_export(server.port, ndjson)
                figures[f"http_{name}_cpu"] = rss.cpu() - cpu
                if ndjson and lines != n:
                    raise RuntimeError(f"the NDJSON export had {lines} services, not {n}")
                figures[f"http_{name}_s"] = took
                log(f"HTTP export ({name}): {took:.1f} s, {size / 1e6:.0f} MB")
            out = os.path.join(tmp, "exported.ndjson")
            figures["cli_s"], figures["cli_cpu"] = command("export", "-o", out, store=store)
            if sum(1 for _ in open(out, "rb")) != n:
                raise RuntimeError("the command's export does not have every service")
            log(f"command export: {figures['cli_s']:.1f} s")
            figures["rss_peak_mb"] = rss.stop()

            customers = max(1, n // 10)
            figures["start_alone"], figures["start_during"] = [], []
            figures["exports_during"] = []
            for round_ in range(args.rounds):
                alone = wrk(server.port, "start.lua", args.seconds, args.connections, customers)
                exporting = Exporting(server.port)
                try:
                    during = wrk(server.port, "start.lua", args.seconds, args.connections,
                                 customers)
                finally:
                    exporting.stop()
                figures["start_alone"].append(alone)
                figures["start_during"].append(during)
                figures["exports_during"].append(
                    exporting.services / exporting.seconds if exporting.seconds else 0.0)
                log(f"round {round_ + 1}: start {alone['rps']:.0f} req/s alone, "
                    f"{during['rps']:.0f} during {exporting.done} exports")
        finally:
            server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, figures)


def report(args: argparse.Namespace, f: dict) -> None:
    n = f["services"]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; gunicorn -w 4 (gevent); {n:,} services with 2 states "
          f"x 2 tasks and attached data ({f['file_mb']:.0f} MB as NDJSON); wrk -t2 "
          f"-c{args.connections}, {args.seconds} s per start load, {args.rounds} rounds")
    alone, during = ({**{key: median([r[key] for r in runs])
                         for key in ("rps", "p50_us", "p99_us")},
                      "non2xx": sum(r["non2xx"] for r in runs),
                      "socket_errors": sum(r["socket_errors"] for r in runs)}
                     for runs in (f["start_alone"], f["start_during"]))
    print(f"\n{'start-service (median of rounds)':<34} | {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'without an export':<34} | {fmt(alone)}")
    print(f"{'while a client exports':<34} | {fmt(during)}")
    print(f"exports running meanwhile: {median(f['exports_during']):,.0f} services/s")
    growth = f["rss_peak_mb"] - f["rss_before_mb"]
    print(f"server RSS: {f['rss_before_mb']:.0f} MB before the exports, "
          f"{f['rss_peak_mb']:.0f} MB at their peak")
    print("CPU seconds used (by the command; by the server for HTTP), which a busy machine "
          "inflates less than elapsed time:")
    for name, key in (("import, command", "import"), ("export, HTTP JSON", "http_json"),
                      ("export, HTTP NDJSON", "http_ndjson"), ("export, command", "cli")):
        print(f"  {name:<20} {f[key + '_cpu']:6.2f} s CPU for {f[key + '_s']:6.2f} s elapsed: "
              f"{n / f[key + '_cpu']:9,.0f} services per CPU second")
    checks = [
        ("import into an empty store (command), services/s", n / f["import_s"], ">=", 10_000),
        ("export over HTTP, JSON array, services/s", n / f["http_json_s"], ">=", 20_000),
        ("export over HTTP, NDJSON, services/s", n / f["http_ndjson_s"], ">=", 20_000),
        ("export by the command, services/s", n / f["cli_s"], ">=", 20_000),
        ("server RSS growth during the exports, MB", growth, "<=", 50),
        ("start-service during an export / without", during["rps"] / alone["rps"], ">=", 0.5),
    ]
    print("\n" + f"{'figure':<52} {'value':>9}  target")
    for name, value, op, bound in checks:
        met = value >= bound if op == ">=" else value <= bound
        shown = f"{value:9,.0f}" if bound > 1 else f"{value:9.2f}"
        print(f"{name:<52} {shown}  {op} {bound:<7,} {'met' if met else 'NOT MET'}")


if __name__ == "__main__":
    main()
