"""Benchmark the postgresql engine against the file engine, in one run (issue 14).

    flock /work/bench.lock .venv/bin/python bench/postgresql.py    # the full run
    .venv/bin/python bench/postgresql.py --services 50000 --seconds 5 --rounds 1

Starts a PostgreSQL cluster of its own on this machine, durable as a production
one is (fsync, synchronous_commit and full_page_writes on; no standby), with
initdb and pg_ctl from Debian's packages (as the ``postgres`` user when run as
root: tests/pgreplication.py), and preloads two schemas through the store's
import path (``put_services``, as ``contextsvc import`` writes), with services of
2 states x 2 tasks and a few hundred bytes of attached data, ten per customer:
``--services`` (1,000,000) and ``--small`` (1,000). ``contextsvc sweep --full``
then runs the daily refresh once on the large one, as a server would have done
on its first day (it reads every service), and VACUUM ANALYZE follows.

Each round, in alternating order, runs ``gunicorn -w 4`` (each under wrk -t2
-c16 for ``--seconds`` after a 2 s warm-up, as bench/run.py does):

* the file engine on an empty store (the baseline: start-service);
* the postgresql engine on an empty schema (start-service), on the small schema
  (customer query) and on the large one (start-service, customer query);
* two app servers on one empty schema, each under its own wrk at once
  (start-service, aggregate); then one app server, and two, with each app
  server's processes pinned to a core of its own (as if each had a machine; on
  two cores, two unpinned app servers share the CPU one already saturates).

Every store is swept once with ``contextsvc sweep --full`` before its servers
start, so that no server runs the daily refresh during a load.

A CHECKPOINT precedes each load. The table shows the median of each figure, then
the ratios the targets are stated in, the writes per second, the CPU each
request costs the app server (master and workers) and PostgreSQL (all its
processes; from ``/proc``, user + system, over the measured load), and the bytes
each service takes in the database (table, TOAST and indexes over services) and
in the WAL (per start-service).
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Server, build_service, children, fmt, median_row, tree_cpu, wrk_finish, wrk_start  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests import pgcluster  # noqa: E402
from tests.pgreplication import Node  # noqa: E402

COMMAND = shutil.which("contextsvc", path=os.path.dirname(sys.executable)) or "contextsvc"
# a durable cluster (PostgreSQL's defaults for these, spelled out), with memory and
# WAL room for a million services on a machine of 23 GB shared with others
# (wal_compression: the full-page images written after each checkpoint, one per
# index page a random key lands on, are most of the WAL of a write to a large table)
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
           "wal_compression": "lz4", "shared_buffers": "1GB", "effective_cache_size": "4GB",
           "max_wal_size": "8GB", "checkpoint_timeout": "30min"}
LARGE, SMALL = "bench_large", "bench_small"


def log(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def pg_env(node: Node, schema: str) -> dict[str, str]:
    return {"CONTEXTSVC_STORAGE_ENGINE": "postgresql", "CONTEXTSVC_STORAGE_DSN": node.dsn,
            "CONTEXTSVC_STORAGE_SCHEMA": schema}


def preload(node: Node, schema: str, n: int) -> float:
    """N services into ``schema`` through the store's import path; returns services/s."""
    from contextsvc.storage.postgresql import PostgresStore

    store = PostgresStore(node.dsn, schema, statement_timeout=600)
    customers = max(1, n // 10)
    began = time.monotonic()
    try:
        batch = 5000
        for start in range(0, n, batch):
            store.put_services([build_service(i + 1, i, customers)
                                for i in range(start, min(n, start + batch))])
            if start and start % 100_000 == 0:
                log(f"{schema}: {start:,} services")
    finally:
        store.close()
    rate = n / (time.monotonic() - began)
    sweep_full(pg_env(node, schema))
    node.psql(f"VACUUM ANALYZE {schema}.services")
    return rate


def sweep_full(env: dict[str, str]) -> None:
    """``contextsvc sweep --full`` on the store ``env`` names: the daily refresh (it
    reads every service) is then done, and no server runs it during a load."""
    env = {**os.environ, **env}
    env.pop("CONTEXTSVC_CONFIG", None)
    done = subprocess.run([COMMAND, "sweep", "--full"], env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"contextsvc sweep --full: {done.stderr.strip()}")


def sizes(node: Node, schema: str) -> dict[str, float]:
    row = node.psql(
        f"SELECT (SELECT sum(services) FROM {schema}.counters), "
        f"pg_relation_size('{schema}.services'), "
        f"pg_total_relation_size('{schema}.services') - pg_relation_size('{schema}.services') "
        f"- pg_indexes_size('{schema}.services'), pg_indexes_size('{schema}.services'), "
        f"(SELECT avg(bytes) FROM {schema}.services)").split("|")
    services, heap, toast, indexes, document = (float(v) for v in row)
    return {"services": services, "heap": heap / services, "toast": toast / services,
            "indexes": indexes / services, "total": (heap + toast + indexes) / services,
            "document": document}


def postmaster(node: Node) -> int:
    with open(os.path.join(node.data, "postmaster.pid")) as handle:
        return int(handle.readline())


def wal_lsn(node: Node) -> str:
    return node.psql("SELECT pg_current_wal_lsn()")


def measure(node: Node, system: str, size: int, schema: str | None, workdir: str,
            args: argparse.Namespace, loads: tuple[str, ...]) -> dict:
    """Start the server(s), run the loads, stop them; one row of figures."""
    customers = max(1, size // 10)
    if system == "file":
        from contextsvc.storage import LogFile, LogStore

        LogStore(LogFile(os.path.join(workdir, "cs.json"))).close()  # a new, empty store
        envs = [{"CONTEXTSVC_STORAGE_PATH": os.path.join(workdir, "cs.json")}]
    else:
        envs = [pg_env(node, schema)] * (2 if system.startswith("postgresql x2") else 1)
    if size == 0:
        sweep_full(envs[0])
    node.psql("CHECKPOINT")
    servers: list[Server] = []
    row: dict = {}
    try:
        for env in envs:
            servers.append(Server("wsgi:app", env, log=os.path.join(workdir, "gunicorn.log")))
        if system.endswith("(1 core each)"):
            for cpu, server in enumerate(servers):
                pin(server, cpu)
        for load in loads:
            script = {"start": "start.lua", "query": "query.lua"}[load]
            for warm in (True, False):
                began = wal_lsn(node)
                cpu = [sum(tree_cpu(s.proc.pid) for s in servers), tree_cpu(postmaster(node))]
                procs = [wrk_start(s.port, (script, "report.lua"), 2 if warm else args.seconds,
                                   args.connections, customers) for s in servers]
                results = [wrk_finish(p, timeout=args.seconds + 60) for p in procs]
            app_cpu = sum(tree_cpu(s.proc.pid) for s in servers) - cpu[0]
            db_cpu = tree_cpu(postmaster(node)) - cpu[1]
            wal = float(node.psql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{began}')"))
            total = sum(r["requests"] for r in results)
            row[load] = {"rps": sum(r["rps"] for r in results),
                         "p50_us": max(r["p50_us"] for r in results),
                         "p99_us": max(r["p99_us"] for r in results),
                         "non2xx": sum(r["non2xx"] for r in results),
                         "socket_errors": sum(r["socket_errors"] for r in results),
                         "wal_per_request": wal / total if total else 0.0,
                         "app_cpu_us": app_cpu / total * 1e6 if total else 0.0,
                         "db_cpu_us": db_cpu / total * 1e6 if total else 0.0}
            if len(results) > 1:
                row[load]["each_rps"] = [r["rps"] for r in results]
    finally:
        for server in servers:
            server.stop()
    return row


def pin(server: Server, cpu: int) -> None:
    """Run the server's master and workers on one CPU only: as if each app server
    had a machine (a core) of its own, the database and wrk having the rest."""
    for pid in [server.proc.pid, *children(server.proc.pid)]:
        os.sched_setaffinity(pid, {cpu})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1_000_000, help="large schema size")
    parser.add_argument("--small", type=int, default=1_000, help="small schema size")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per load")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds; the table shows medians")
    parser.add_argument("--connections", type=int, default=16, help="per wrk (per server)")
    parser.add_argument("--workdir", default=None,
                        help="where the file stores go (a local disk; the cluster goes to the "
                             "system's temporary directory)")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    why = pgcluster.missing()
    if why:
        sys.exit(f"bench/postgresql.py: {why}")
    if not shutil.which("wrk"):
        sys.exit("bench/postgresql.py: wrk is not installed (apt-get install wrk)")

    load_before = f"{os.getloadavg()[0]:.1f}"
    node = Node(DURABLE, name="bench")
    results: dict[str, list[dict]] = {}
    try:
        version = node.psql("SHOW server_version")
        log(f"PostgreSQL {version} at {node.dir}; preloading")
        preload(node, SMALL, args.small)
        preload_rate = preload(node, LARGE, args.services)
        log(f"preloaded {args.services:,} services at {preload_rate:,.0f} services/s")
        footprint = sizes(node, LARGE)
        plan = [("file", "empty", ("start",)), ("postgresql", "empty", ("start",)),
                ("postgresql", "small", ("query",)), ("postgresql", "large", ("start", "query")),
                ("postgresql x2", "empty", ("start",)),
                ("postgresql (1 core each)", "empty", ("start",)),
                ("postgresql x2 (1 core each)", "empty", ("start",))]
        size_of = {"empty": 0, "small": args.small, "large": args.services}
        for round_ in range(args.rounds):
            for system, size_key, loads in (plan if round_ % 2 == 0 else plan[::-1]):
                workdir = tempfile.mkdtemp(prefix="bench-pg-", dir=args.workdir)
                schema = {"small": SMALL, "large": LARGE}.get(size_key,
                                                             f"bench_empty_{round_}")
                try:
                    row = measure(node, system, size_of[size_key], schema, workdir, args, loads)
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
                    if size_key == "empty" and system != "file":
                        node.psql(f"DROP SCHEMA {schema} CASCADE")
                results.setdefault(f"{system}/{size_key}", []).append(row)
            log(f"round {round_ + 1} of {args.rounds} done")
        footprint_after = sizes(node, LARGE)
    finally:
        node.close()

    rows = {key: median_row([{"first_response_s": 0, "rss_mb": 0, **r} for r in rounds])
            for key, rounds in results.items()}
    for key, rounds in results.items():
        for load in ("start", "query"):
            if load in rounds[0]:
                for figure in ("wal_per_request", "app_cpu_us", "db_cpu_us"):
                    rows[key][load][figure] = sorted(
                        r[load][figure] for r in rounds)[len(rounds) // 2]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, PostgreSQL {version} (fsync, synchronous_commit, "
          f"full_page_writes on; wal_compression {DURABLE['wal_compression']}; shared_buffers "
          f"{DURABLE['shared_buffers']}); load average {load_before} before the run, "
          f"{os.getloadavg()[0]:.1f} after; gunicorn -w 4, "
          f"wrk -t2 -c{args.connections} per server, {args.seconds} s per load; median of "
          f"{args.rounds} interleaved rounds")
    print(f"\n{'engine':<27} {'services':>9} | {'start req/s':>9} {'p50 ms':>8} {'p99 ms':>8} | "
          f"{'query req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for system, size_key, _ in plan:
        r = rows[f"{system}/{size_key}"]
        print(f"{system:<27} {size_of[size_key]:>9,} | {fmt(r.get('start'))} | "
              f"{fmt(r.get('query'))}")

    def rps(key: str, load: str = "start") -> float:
        return rows[key][load]["rps"]

    big = args.services
    checks = [
        ("start, empty: postgresql / file", rps("postgresql/empty") / rps("file/empty"),
         ">= 0.6"),
        (f"start: postgresql {big:,} / postgresql empty (flat)",
         rps("postgresql/large") / rps("postgresql/empty"), ">= 0.8"),
        (f"query p50: postgresql {big:,} / postgresql {args.small:,}",
         rows["postgresql/large"]["query"]["p50_us"] / rows["postgresql/small"]["query"]["p50_us"],
         "<= 1.5"),
        ("start: two app servers / one (aggregate)",
         rps("postgresql x2/empty") / rps("postgresql/empty"), ">= 1.5"),
        ("  the same, each app server on one core",
         rps("postgresql x2 (1 core each)/empty") / rps("postgresql (1 core each)/empty"),
         ">= 1.5"),
    ]
    print("\nratio" + " " * 51 + "value  target")
    for name, value, target in checks:
        op, bound = target.split()
        ok = value >= float(bound) if op == ">=" else value <= float(bound)
        print(f"{name:<55} {value:6.2f}  {target:<7} {'met' if ok else 'NOT MET'}")
    for key in ("postgresql x2/empty", "postgresql x2 (1 core each)/empty"):
        each = [r["start"].get("each_rps") for r in results[key]]
        print(f"{key.split('/')[0]}, req/s of each server per round: "
              f"{', '.join(' + '.join(f'{x:.0f}' for x in pair) for pair in each)}")
    print(f"writes/s (start-service, one transaction each): "
          f"{rps('postgresql/empty'):,.0f} empty, {rps('postgresql/large'):,.0f} at {big:,}, "
          f"{rps('postgresql x2/empty'):,.0f} through two app servers")
    print(f"WAL per start-service: {rows['postgresql/empty']['start']['wal_per_request']:,.0f} "
          f"bytes empty, {rows['postgresql/large']['start']['wal_per_request']:,.0f} at {big:,}")
    print("CPU per request, us of one core (the app server's master and workers / "
          "PostgreSQL's processes), median:")
    for system, size_key, loads in plan:
        r = rows[f"{system}/{size_key}"]
        print(f"  {system:<27} {size_of[size_key]:>9,}  " + ", ".join(
            f"{load} {r[load]['app_cpu_us']:,.0f} / {r[load]['db_cpu_us']:,.0f}"
            for load in loads))
    print(f"preload through put_services (the import path): {preload_rate:,.0f} services/s")
    for label, f in (("after the preload", footprint), ("after the rounds", footprint_after)):
        print(f"bytes per service, {label} ({f['services']:,.0f} services): {f['total']:,.0f} "
              f"(heap {f['heap']:,.0f}, TOAST {f['toast']:,.0f}, indexes {f['indexes']:,.0f}; "
              f"the document's JSON text {f['document']:,.0f})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "rounds": results, "footprint": footprint,
                       "footprint_after": footprint_after, "preload_rate": preload_rate},
                      handle, indent=1)


if __name__ == "__main__":
    main()
