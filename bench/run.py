"""Benchmark contextsvc against a SQLite baseline, side by side, in one run.

    python bench/run.py                    # the full run (100,000 services)
    python bench/run.py --services 20000 --seconds 5   # a quicker look

Each server runs under ``gunicorn -w 4`` on loopback and is driven by wrk (installed
with apt-get when missing). Stores are preloaded with N services, each with 2 states
x 2 tasks and a few hundred bytes of attached data, spread over N/10 customers.
Every server starts from a copy of its preloaded store; the systems take turns over
several rounds (alternating order) and the table shows the median of each figure.
Prints req/s, p50/p99 latency, the RSS of master + workers and the time to the
first response after start, with the ratios the targets are stated in.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BENCH = os.path.join(ROOT, "bench")


# ---------------------------------------------------------------- preloading
def build_service(sid: int, i: int, customers: int, year: int = 2026) -> dict:
    from contextsvc.domain import rules
    from contextsvc.domain.inputs import Input

    stamp = f"{year}-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00.000Z"
    doc = rules.new_service(sid, Input(
        {"customer_id": f"cust-{i % customers}",
         "contact_key": f"+1-408-555-{i:07d}", "service_type": 100 + i % 5,
         "timestamp": stamp, "interaction_id": f"IX-{i:010d}", "media_type": "voice"},
        {"coupon": {"coupon_name": "DISCOUNTCODE15"}, "satisfaction": {"score": 85},
         "notes": "caller asked about a family plan and roaming in Europe; call back"}))
    for s in range(2):
        state = rules.start_state(doc, Input({"state_type": s + 1, "timestamp": stamp},
                                             {"queue": "wireless-sales"}))
        for _ in range(2):
            rules.start_task(doc, Input({"task_type": 7, "state_id": state["state_id"],
                                         "timestamp": stamp}, {"step": "collect"}))
    return doc


def preload_contextsvc(path: str, n: int) -> None:
    from contextsvc.storage import LogFile, LogStore

    store = LogStore(LogFile(path))
    customers = max(1, n // 10)
    batch = 2000
    for start in range(0, n, batch):
        store.create_services([lambda sid, i=i: build_service(sid, i, customers)
                               for i in range(start, min(n, start + batch))])
    store.close()


def preload_sqlite(path: str, n: int) -> None:
    sys.path.insert(0, BENCH)
    from baseline_sqlite import connect

    conn = connect(path)
    customers = max(1, n // 10)
    conn.execute("BEGIN")
    for i in range(n):
        doc = build_service(i + 1, i, customers)
        conn.execute("INSERT INTO services (customer_id, contact_key, doc) VALUES (?, ?, ?)",
                     (doc["customer_id"], doc["contact_key"],
                      json.dumps({k: v for k, v in doc.items() if k != "service_id"})))
    conn.execute("COMMIT")
    conn.close()


# ---------------------------------------------------------------- servers
SYSTEMS = {
    "contextsvc": ("wsgi:app", lambda d: {"CONTEXTSVC_STORAGE_PATH": os.path.join(d, "cs.json")},
                   lambda d, n: preload_contextsvc(os.path.join(d, "cs.json"), n)),
    "sqlite": ("bench.baseline_sqlite:app",
               lambda d: {"BENCH_SQLITE_PATH": os.path.join(d, "b.sqlite")},
               lambda d, n: preload_sqlite(os.path.join(d, "b.sqlite"), n)),
    "bare-flask": ("bench.bare:app", lambda d: {}, lambda d, n: None),
}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a gunicorn master's workers, a
    postmaster's backends)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(child) for child in out.split()]


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and of its children, those that
    have ended and been waited for included."""
    def ticks(p: int, fields: slice) -> int:
        try:
            with open(f"/proc/{p}/stat") as handle:
                return sum(int(v) for v in handle.read().rsplit(")", 1)[1].split()[fields])
        except (FileNotFoundError, ProcessLookupError):
            return 0  # ended: its time is now in the parent's
    total = ticks(pid, slice(11, 15)) + sum(ticks(c, slice(11, 13)) for c in children(pid))
    return total / os.sysconf("SC_CLK_TCK")


class Server:
    """``gunicorn -w N`` on loopback; ``log`` names a file for its output (else dropped)."""

    def __init__(self, app: str, env: dict, workers: int = 4, log: str | None = None):
        self.port = free_port()
        self.started = time.monotonic()
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "python:contextsvc.gunicorn_conf",
                 "-w", str(workers), "-b", f"127.0.0.1:{self.port}", "--timeout", "120", app],
                cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            if log:
                out.close()
        try:
            self.first_response = self._wait()
        except BaseException:
            self.stop()
            raise

    def _wait(self) -> float:
        url = f"http://127.0.0.1:{self.port}/genesys/1/cs/customers/nobody/services"
        while time.monotonic() - self.started < 120:
            try:
                with urllib.request.urlopen(url, timeout=60):
                    return time.monotonic() - self.started
            except OSError as exc:
                if getattr(exc, "code", None) == 404:  # bare-flask has no such route
                    return time.monotonic() - self.started
                time.sleep(0.02)
        raise RuntimeError("server did not answer")

    def rss_mb(self) -> float:
        pids = [self.proc.pid, *children(self.proc.pid)]
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/status") as handle:
                    for line in handle:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except FileNotFoundError:
                pass
        return total / 1024

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def wrk_start(port: int, scripts: tuple[str, ...], seconds: float, connections: int,
              customers: int, env: dict | None = None) -> subprocess.Popen:
    """Start wrk with ``scripts`` (names in bench/, joined in that order; the last
    one's ``done`` reports). SIGINT stops it early and it still reports."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        for name in scripts:
            lua.write(open(os.path.join(BENCH, name)).read() + "\n")
    proc = subprocess.Popen(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", lua.name,
         f"http://127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BENCH_CUSTOMERS": str(customers), **(env or {})})
    proc.lua = lua.name  # type: ignore[attr-defined]
    return proc


def wrk_finish(proc: subprocess.Popen, timeout: float | None = None) -> dict:
    """Wait for wrk (killed after ``timeout`` s) and return its BENCH figures."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    finally:
        os.unlink(proc.lua)  # type: ignore[attr-defined]
    line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError("wrk failed: " + stdout + stderr)
    result = json.loads(line[6:])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def wrk(port: int, script: str, seconds: int, connections: int, customers: int) -> dict:
    return wrk_finish(wrk_start(port, (script, "report.lua"), seconds, connections, customers),
                      timeout=seconds + 60)


# ---------------------------------------------------------------- the run
PLAN = [  # (system, store size key, loads)
    ("contextsvc", "empty", ("start",)),
    ("contextsvc", "small", ("query",)),
    ("contextsvc", "large", ("start", "query")),
    ("sqlite", "empty", ("start",)),
    ("sqlite", "small", ("query",)),
    ("sqlite", "large", ("start", "query")),
    ("bare-flask", "empty", ("start",)),
]


def prepare(args: argparse.Namespace, sizes: dict[str, int]) -> dict[tuple[str, str], str]:
    """Preload each store once; every round starts from a copy of it."""
    pristine = {}
    for system, size_key, _ in PLAN:
        workdir = tempfile.mkdtemp(prefix=f"bench-{system}-{size_key}-", dir=args.workdir)
        if sizes[size_key]:
            SYSTEMS[system][2](workdir, sizes[size_key])
        pristine[(system, size_key)] = workdir
        print(f"  preloaded {system} with {sizes[size_key]:,} services", file=sys.stderr,
              flush=True)
    return pristine


def measure(system: str, size: int, pristine: str, args: argparse.Namespace,
            loads: tuple[str, ...]) -> dict:
    app, env_of, _ = SYSTEMS[system]
    workdir = tempfile.mkdtemp(prefix=f"bench-{system}-run-", dir=args.workdir)
    shutil.rmtree(workdir)
    shutil.copytree(pristine, workdir)
    server = Server(app, env_of(workdir))
    row = {"first_response_s": server.first_response}
    try:
        for load in loads:
            script = {"start": "start.lua", "query": "query.lua"}[load]
            wrk(server.port, script, 2, args.connections, max(1, size // 10))  # warm-up
            row[load] = wrk(server.port, script, args.seconds, args.connections,
                            max(1, size // 10))
        row["rss_mb"] = server.rss_mb()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return row


def median_row(rounds: list[dict]) -> dict:
    """The median of each figure over the rounds."""
    def med(values: list[float]) -> float:
        values = sorted(values)
        return values[len(values) // 2]

    row = {key: med([r[key] for r in rounds]) for key in ("first_response_s", "rss_mb")}
    for load in ("start", "query"):
        if load in rounds[0]:
            row[load] = {key: med([r[load][key] for r in rounds])
                         for key in ("rps", "p50_us", "p99_us")}
            row[load]["non2xx"] = sum(r[load]["non2xx"] for r in rounds)
            row[load]["socket_errors"] = sum(r[load]["socket_errors"] for r in rounds)
    return row


def fmt(result: dict | None) -> str:
    if not result:
        return f"{'-':>9} {'-':>8} {'-':>8}"
    bad = result["non2xx"] + result["socket_errors"]
    flag = f" ({bad} failed)" if bad else ""
    return (f"{result['rps']:9.0f} {result['p50_us'] / 1000:8.2f} "
            f"{result['p99_us'] / 1000:8.2f}{flag}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=100_000, help="large store size")
    parser.add_argument("--small", type=int, default=1_000, help="small store size")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per load")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds; the table shows medians")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workdir", default=None, help="where the stores go (a local disk)")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found; installing it with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       stdout=subprocess.DEVNULL)

    sizes = {"empty": 0, "small": args.small, "large": args.services}
    pristine = prepare(args, sizes)
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        for round_ in range(args.rounds):
            # alternate the order, so that neither system always runs first
            plan = PLAN if round_ % 2 == 0 else PLAN[::-1]
            for system, size_key, loads in plan:
                results.setdefault((system, size_key), []).append(
                    measure(system, sizes[size_key], pristine[(system, size_key)], args, loads))
            print(f"  round {round_ + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    finally:
        for workdir in pristine.values():
            shutil.rmtree(workdir, ignore_errors=True)
    rows = [{"system": system, "size": sizes[size_key], **median_row(results[(system, size_key)])}
            for system, size_key, _ in PLAN]

    by = {(r["system"], r["size"]): r for r in rows}
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}; gunicorn -w 4, "
          f"wrk -t2 -c{args.connections}, {args.seconds} s per load; median of "
          f"{args.rounds} interleaved rounds")
    print(f"\n{'system':<11} {'services':>8} | {'start req/s':>9} {'p50 ms':>8} {'p99 ms':>8} | "
          f"{'query req/s':>9} {'p50 ms':>8} {'p99 ms':>8} | {'RSS MB':>7} {'1st resp s':>10}")
    for r in rows:
        print(f"{r['system']:<11} {r['size']:>8,} | {fmt(r.get('start'))} | "
              f"{fmt(r.get('query'))} | {r['rss_mb']:7.0f} {r['first_response_s']:10.2f}")

    cs, sq, big, small = "contextsvc", "sqlite", args.services, args.small

    def rps(system, size, load):
        return by[(system, size)][load]["rps"]

    checks = [
        ("start, empty store: contextsvc / sqlite", rps(cs, 0, "start") / rps(sq, 0, "start"),
         ">= 1.0"),
        (f"start, {big:,} services: contextsvc / sqlite",
         rps(cs, big, "start") / rps(sq, big, "start"), ">= 1.0"),
        ("start, empty store: contextsvc / bare flask (stretch)",
         rps(cs, 0, "start") / rps("bare-flask", 0, "start"), ">= 0.5"),
        (f"start: contextsvc {big:,} / contextsvc empty (flat)",
         rps(cs, big, "start") / rps(cs, 0, "start"), ">= 0.8"),
        (f"query, {big:,} services: contextsvc / sqlite",
         rps(cs, big, "query") / rps(sq, big, "query"), ">= 1.0"),
        (f"query p50: contextsvc {big:,} / contextsvc {small:,}",
         by[(cs, big)]["query"]["p50_us"] / by[(cs, small)]["query"]["p50_us"], "<= 1.5"),
    ]
    print("\nratio" + " " * 52 + "value  target")
    for name, value, target in checks:
        op, bound = target.split()
        ok = value >= float(bound) if op == ">=" else value <= float(bound)
        print(f"{name:<56} {value:6.2f}  {target:<7} {'met' if ok else 'NOT MET'}")
    print(f"{'RSS, master + 4 workers, ' + format(big, ',') + ' services (MB)':<56} "
          f"{by[(cs, big)]['rss_mb']:6.0f}  <= 1536  "
          f"{'met' if by[(cs, big)]['rss_mb'] <= 1536 else 'NOT MET'}")
    print(f"{'first response after start, ' + format(big, ',') + ' services (s)':<56} "
          f"{by[(cs, big)]['first_response_s']:6.2f}  <= 5    "
          f"{'met' if by[(cs, big)]['first_response_s'] <= 5 else 'NOT MET'}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "rounds": {f"{k[0]}/{k[1]}": v
                                                for k, v in results.items()}}, handle, indent=1)


if __name__ == "__main__":
    main()
