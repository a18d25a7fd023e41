"""How contextsvc on the file engine grows from 10,000 to 1,000,000 services (issue 15).

    python bench/scale.py                          # 10k, 100k and 1M services
    python bench/scale.py --sizes 10000,100000     # a quicker look

For each size N, a store of N services (each with 2 states x 2 tasks and a few
hundred bytes of attached data, as bench/run.py preloads them, ten per customer)
is preloaded through the store's import API (``put_services``, what ``contextsvc
import`` calls), with one in ten services imported a second time (replaced), so
that the file holds old versions for a compaction to reclaim, and ``contextsvc
sweep --full`` runs the daily refresh on it (timed: it reads every service), as an
operator would after an import, so that no server starts it during a load. Then, under
``gunicorn -w 4`` on loopback, driven by wrk:

* the time from starting the server to its first answer (a restart: the store
  was written and closed before, as a server leaves it);
* start-service (``start.lua``) and customer-query (``query.lua``) throughput and
  latency, one load after the other;
* the RSS of the master and every worker, summed, after those loads;
* p99 of both loads together without, then during ``contextsvc compact`` run
  on the store the server is using.

The same run measures start-service on an empty store, the customer query on
1,000 services and a bare Flask route that stores nothing (bench/bare.py), which
the targets are ratios to, and the floor of a durable start-service
(bench/floor.py), which splits the gap between the two. It also reports the CPU
seconds the server used per request, which a machine busy with other work
inflates less than throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from run import Server, build_service, tree_cpu, wrk, wrk_finish, wrk_start  # noqa: E402

# the contextsvc command, of the code beside this script (as gunicorn runs it, from ROOT)
CLI = [sys.executable, "-c", "from contextsvc.cli import main; main()"]


# ---------------------------------------------------------------- preloading
def templates(customers: int) -> list[str]:
    """Documents as bench/run.py builds them, as JSON text with %-placeholders for
    what differs from one service to the next (168 variants of the timestamps)."""
    out = []
    for k in range(168):
        doc = build_service(1, k, customers)
        doc["service_id"] = "@SID@"
        doc["customer_id"] = "@CUST@"
        doc["contact_key"] = "@CK@"
        doc["started"]["interaction_id"] = "@IX@"
        text = json.dumps(doc).replace("%", "%%")
        out.append(text.replace('"@SID@"', "%(sid)d").replace("@CUST@", "%(cust)s")
                   .replace("@CK@", "%(ck)s").replace("@IX@", "%(ix)s"))
    return out


def documents(first: int, last: int, customers: int, forms: list[str]) -> list[dict]:
    """Services ``first`` to ``last`` - 1 (id i + 1), as build_service makes them."""
    return [json.loads(forms[i % 168] % {"sid": i + 1, "cust": f"cust-{i % customers}",
                                         "ck": f"+1-408-555-{i:07d}", "ix": f"IX-{i:010d}"})
            for i in range(first, last)]


def preload(path: str, n: int, replaced: float = 0.1) -> float:
    """Import ``n`` services into a new store at ``path``, then ``replaced`` x n of
    them again; returns the seconds it took."""
    from contextsvc.storage import LogFile, LogStore

    began = time.monotonic()
    customers = max(1, n // 10)
    forms = templates(customers)
    store = LogStore(LogFile(path))
    try:
        batch = 5000
        for start in range(0, n, batch):
            store.put_services(documents(start, min(n, start + batch), customers, forms))
        step = max(1, round(1 / replaced)) if replaced else 0
        if step:
            for start in range(0, n, batch * step):
                picked = range(start, min(n, start + batch * step), step)
                store.put_services([documents(i, i + 1, customers, forms)[0] for i in picked],
                                   on_conflict="replace")
    finally:
        store.close()
    return time.monotonic() - began


# ---------------------------------------------------------------- measuring
def load(server: Server, script: str, seconds: int, connections: int, customers: int) -> dict:
    before = tree_cpu(server.proc.pid)
    result = wrk(server.port, script, seconds, connections, customers)
    result["cpu_us"] = 1e6 * (tree_cpu(server.proc.pid) - before) / max(1, result["requests"])
    return result


def both(server: Server, seconds: float, connections: int, customers: int) -> dict:
    """start-service and the customer query together, each with half the
    connections, for ``seconds`` (or until SIGINT)."""
    half = max(1, connections // 2)
    start = wrk_start(server.port, ("start.lua", "report.lua"), seconds, half, customers)
    query = wrk_start(server.port, ("query.lua", "report.lua"), seconds, half, customers)
    return {"start": wrk_finish(start, seconds + 60), "query": wrk_finish(query, seconds + 60)}


def during_compaction(server: Server, path: str, connections: int, customers: int,
                      limit: float) -> tuple[dict, float, str]:
    """Both loads while ``contextsvc compact`` runs on the store (stopped when it
    ends); returns their figures, how long the compaction took and its output."""
    import signal

    half = max(1, connections // 2)
    start = wrk_start(server.port, ("start.lua", "report.lua"), limit, half, customers)
    query = wrk_start(server.port, ("query.lua", "report.lua"), limit, half, customers)
    time.sleep(1)
    began = time.monotonic()
    done = subprocess.run(CLI + ["compact"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "CONTEXTSVC_STORAGE_PATH": path})
    took = time.monotonic() - began
    time.sleep(1)
    for proc in (start, query):
        proc.send_signal(signal.SIGINT)
    figures = {"start": wrk_finish(start, 60), "query": wrk_finish(query, 60)}
    return figures, took, (done.stdout + done.stderr).strip()


def serve(path: str, log: str) -> Server:
    return Server("wsgi:app", {"CONTEXTSVC_STORAGE_PATH": path}, log=log)


def measure_size(n: int, args: argparse.Namespace, workdir: str) -> dict:
    path = os.path.join(workdir, f"cs-{n}.json")
    row: dict = {"services": n}
    if n:
        row["preload_s"] = preload(path, n)
        row["file_mb"] = os.path.getsize(path) / 2**20
        row["index_mb"] = os.path.getsize(path + ".idx") / 2**20 if os.path.exists(
            path + ".idx") else 0.0
        # The daily refresh (api/housekeeping.py) reads every service; on a new store
        # the first server would start it during the loads. Run now, as an operator
        # would after an import, it counts as the deployment's refresh for a day.
        began = time.monotonic()
        subprocess.run(CLI + ["sweep", "--full"], cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, "CONTEXTSVC_STORAGE_PATH": path})
        row["refresh_s"] = time.monotonic() - began
    customers = max(1, n // 10)
    log = path + ".gunicorn.log"
    first = serve(path, log)  # the start after the import
    row["first_start_s"] = first.first_response
    try:
        wrk(first.port, "query.lua", 2, args.connections, customers)  # warm-up
    finally:
        first.stop()
    server = serve(path, log)  # a restart, as the target has it
    row["restart_s"] = server.first_response
    try:
        for name, script in (("start", "start.lua"), ("query", "query.lua")):
            if name == "query" and not n:
                continue
            wrk(server.port, script, 2, args.connections, customers)  # warm-up
            row[name] = load(server, script, args.seconds, args.connections, customers)
        row["rss_mb"] = server.rss_mb()
        if n >= 10_000 and args.compaction:
            row["without"] = both(server, args.seconds, args.connections, customers)
            row["during"], row["compaction_s"], row["compact_out"] = during_compaction(
                server, path, args.connections, customers, args.compaction_limit)
            row["rss_after_compaction_mb"] = server.rss_mb()
    finally:
        server.stop()
    for name in (path, path + ".idx"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
    return row


def measure_bare(args: argparse.Namespace, app: str = "bench.bare:app",
                 env: dict | None = None) -> dict:
    server = Server(app, env or {})
    try:
        wrk(server.port, "start.lua", 2, args.connections, 1)
        return {"start": load(server, "start.lua", args.seconds, args.connections, 1),
                "rss_mb": server.rss_mb()}
    finally:
        server.stop()


def measure_floor(args: argparse.Namespace, workdir: str) -> dict:
    """bench/floor.py: only what any durable start-service must do."""
    path = os.path.join(workdir, "floor.log")
    try:
        return measure_bare(args, "bench.floor:app", {"FLOOR_PATH": path})
    finally:
        for name in (path, path + ".lock"):
            if os.path.exists(name):
                os.unlink(name)


def median(rounds: list[dict]) -> dict:
    """The round whose start-service throughput is the median."""
    return sorted(rounds, key=lambda r: r["start"]["rps"])[len(rounds) // 2]


# ---------------------------------------------------------------- the report
def fmt(result: dict | None) -> str:
    if not result:
        return f"{'-':>8} {'-':>7} {'-':>8} {'-':>6}"
    bad = result["non2xx"] + result["socket_errors"]
    cpu = f"{result['cpu_us']:6.0f}" if "cpu_us" in result else f"{'-':>6}"
    return (f"{result['rps']:8.0f} {result['p50_us'] / 1000:7.2f} {result['p99_us'] / 1000:8.2f} "
            f"{cpu}" + (f" ({bad} failed)" if bad else ""))


def report(rows: list[dict], bare: dict, floor: dict, args: argparse.Namespace) -> None:
    load_avg = os.getloadavg()[0]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB, Python "
          f"{platform.python_version()}, load average {load_avg:.1f} at the end; "
          f"gunicorn -w 4 (gevent), wrk -t2 -c{args.connections}, {args.seconds} s per load")
    print(f"\n{'services':>9} | {'file MB':>7} {'idx MB':>6} {'import s':>8} | {'1st s':>5} "
          f"{'restart s':>9} | {'start/s':>8} {'p50 ms':>7} {'p99 ms':>8} {'cpu us':>6} | "
          f"{'query/s':>8} {'p50 ms':>7} {'p99 ms':>8} {'cpu us':>6} | {'RSS MB':>6}")
    for r in rows:
        print(f"{r['services']:>9,} | {r.get('file_mb', 0):7.0f} {r.get('index_mb', 0):6.1f} "
              f"{r.get('preload_s', 0):8.1f} | {r['first_start_s']:5.2f} {r['restart_s']:9.2f} | "
              f"{fmt(r.get('start'))} | {fmt(r.get('query'))} | {r['rss_mb']:6.0f}")
    print(f"{'bare flask':>9} | {'':>7} {'':>6} {'':>8} | {'':>5} {'':>9} | "
          f"{fmt(bare['start'])} | {fmt(None)} | {bare['rss_mb']:6.0f}")
    print(f"{'floor':>9} | {'':>7} {'':>6} {'':>8} | {'':>5} {'':>9} | "
          f"{fmt(floor['start'])} | {fmt(None)} | {floor['rss_mb']:6.0f}")
    refreshed = [r for r in rows if "refresh_s" in r]
    if refreshed:
        print("\ncontextsvc sweep --full after each import (the daily refresh, which reads "
              "every service): " + ", ".join(f"{r['services']:,} services {r['refresh_s']:.1f} s"
                                             for r in refreshed))
    compacted = [r for r in rows if "during" in r]
    if compacted:
        print(f"\n{'services':>9} | {'compact s':>9} | {'load':<6} | {'without: req/s':>14} "
              f"{'p50 ms':>7} {'p99 ms':>8} {'max ms':>8} | {'during: req/s':>13} "
              f"{'p50 ms':>7} {'p99 ms':>8} {'max ms':>8} {'timeouts':>8} | {'p99 ratio':>9}")
        for r in compacted:
            for name in ("start", "query"):
                a, b = r["without"][name], r["during"][name]
                print(f"{r['services']:>9,} | {r['compaction_s']:9.1f} | {name:<6} | "
                      f"{a['rps']:14.0f} {a['p50_us'] / 1000:7.2f} {a['p99_us'] / 1000:8.2f} "
                      f"{a.get('max_us', 0) / 1000:8.0f} | "
                      f"{b['rps']:13.0f} {b['p50_us'] / 1000:7.2f} {b['p99_us'] / 1000:8.2f} "
                      f"{b.get('max_us', 0) / 1000:8.0f} {b.get('timeouts', 0):8d} | "
                      f"{b['p99_us'] / a['p99_us']:9.2f}")
            print(f"{'':>9}   RSS after the compaction: {r['rss_after_compaction_mb']:.0f} MB; "
                  f"contextsvc compact: {' / '.join(r['compact_out'].splitlines())}")

    by = {r["services"]: r for r in rows}
    big = max(by)
    checks = []
    if 0 in by:
        checks.append(("start, empty store: contextsvc / bare flask",
                       by[0]["start"]["rps"] / bare["start"]["rps"], ">=", 0.5))
    for n, r in sorted(by.items()):
        if not n:
            continue
        if 0 in by:
            checks.append((f"start: {n:,} services / empty store",
                           r["start"]["rps"] / by[0]["start"]["rps"], ">=", 0.8))
        if 1000 in by and n != 1000:
            checks.append((f"query p50: {n:,} services / 1,000",
                           r["query"]["p50_us"] / by[1000]["query"]["p50_us"], "<=", 1.5))
        if n == big or n >= 1_000_000:
            checks.append((f"RSS, master + 4 workers, {n:,} services (MB)", r["rss_mb"], "<=",
                           1536))
            checks.append((f"first answer after a restart, {n:,} services (s)", r["restart_s"],
                           "<=", 5))
            if "during" in r:
                for name in ("start", "query"):
                    # wrk leaves requests that time out (10 s) out of its percentiles
                    timeouts = r["during"][name].get("timeouts", 0)
                    checks.append((f"{name} p99 during / without compaction, {n:,}"
                                   + (f" ({timeouts} timed out)" if timeouts else ""),
                                   r["during"][name]["p99_us"] / r["without"][name]["p99_us"]
                                   if not timeouts else float("inf"), "<=", 3))
    print("\nfigure" + " " * 50 + "value  target")
    for name, value, op, bound in checks:
        ok = value >= bound if op == ">=" else value <= bound
        print(f"{name:<56} {value:6.2f}  {op} {bound:<5} {'met' if ok else 'NOT MET'}")
    # not targets: how the gap to the bare route splits (see bench/floor.py)
    print(f"{'start: floor (durable, nothing else) / bare flask':<56} "
          f"{floor['start']['rps'] / bare['start']['rps']:6.2f}")
    if 0 in by:
        print(f"{'start, empty store: contextsvc / floor':<56} "
              f"{by[0]['start']['rps'] / floor['start']['rps']:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="store sizes, comma-separated (an empty store and 1,000 are "
                             "always measured too)")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per load")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of bare Flask, the floor and the empty store, taking "
                             "turns (medians)")
    parser.add_argument("--no-compaction", dest="compaction", action="store_false",
                        help="skip the loads during a compaction")
    parser.add_argument("--compaction-limit", type=float, default=300,
                        help="longest the loads run during a compaction (s)")
    parser.add_argument("--workdir", default=None, help="where the stores go (a local disk)")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    sizes = [1000] + [int(s) for s in args.sizes.split(",") if s]
    workdir = tempfile.mkdtemp(prefix="bench-scale-", dir=args.workdir)
    rows, bares, floors, empties = [], [], [], []
    try:
        # the bare route, the floor and the empty store take turns: the ratios of
        # their medians
        for _ in range(args.rounds):
            bares.append(measure_bare(args))
            floors.append(measure_floor(args, workdir))
            empties.append(measure_size(0, args, workdir))
        print(f"  bare flask, the floor and the empty store measured ({args.rounds} rounds "
              "each)", file=sys.stderr, flush=True)
        for n in sizes:
            rows.append(measure_size(n, args, workdir))
            print(f"  {n:,} services measured", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    bare, floor, empty = median(bares), median(floors), median(empties)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rows": rows, "bares": bares, "floors": floors, "empties": empties},
                      out, indent=1)
    report([empty, *rows], bare, floor, args)
    def per_round(rounds: list[dict]) -> str:
        return ", ".join(str(round(r["start"]["rps"])) for r in rounds)

    print(f"\nstart-service req/s per round: bare flask {per_round(bares)}; floor "
          f"{per_round(floors)}; empty store {per_round(empties)}")


if __name__ == "__main__":
    main()
