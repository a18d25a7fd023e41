"""Benchmark safe retries (API.md 10), each figure against a baseline of the same run.

    python bench/retries.py                          # 6 rounds of 10 s per load
    python bench/retries.py --seconds 3 --rounds 2   # a quicker look

One server, ``gunicorn -w 4`` (gevent workers, contextsvc/gunicorn_conf.py) on
loopback, on a store of --services services made by keyed starts over HTTP before
the run. Loads, driven by wrk, taking turns over --rounds (alternating order; the
table shows medians):

* start: ``POST /services/start`` (start.lua), no key;
* keyed start: the same with an ``Idempotency-Key`` new for every request
  (keyed_start.lua): the record is written with the service;
* GET: ``GET /services/{sid}`` of a preloaded service (get_service.lua);
* replay: a retry of one of the preloaded keyed starts (replay.lua): the recorded
  answer, with ``Idempotent-Replayed: true``.

Targets: keyed start >= 0.8 x start; replay >= 1.0 x GET (the median of the
rounds' ratios).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Server, fmt, wrk_finish, wrk_start  # noqa: E402

LOADS = {  # name -> lua scripts, joined in this order
    "start": ("start.lua",),
    "keyed start": ("start.lua", "keyed_start.lua"),
    "GET": ("get_service.lua",),
    "replay": ("replay.lua",),
}


def preload(port: int, n: int) -> None:
    """n keyed starts, the answers replay.lua will ask for again."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(n):
        body = json.dumps({"customer_id": f"cust-{i}", "service_type": 100,
                           "interaction_id": f"IX-{i}"}, separators=(",", ":"))
        conn.request("POST", "/genesys/1/cs/services/start", body=body,
                     headers={"Content-Type": "application/json",
                              "Idempotency-Key": f"preload-{i}"})
        response = conn.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"preload: {response.status}")
    conn.close()


def load(port: int, name: str, seconds: int, connections: int, services: int) -> dict:
    proc = wrk_start(port, (*LOADS[name], "report.lua"), seconds, connections, 1,
                     env={"BENCH_SERVICES": str(services)})
    return wrk_finish(proc, timeout=seconds + 60)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6,
                        help="interleaved rounds, an even number: each order as often")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found; installing it with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       stdout=subprocess.DEVNULL)
    workdir = tempfile.mkdtemp(prefix="bench-retries-", dir=args.workdir)
    server = Server("wsgi:app", {"CONTEXTSVC_STORAGE_PATH": os.path.join(workdir, "cs.json")},
                    log=os.path.join(workdir, "gunicorn.log"))
    results: dict[str, list[dict]] = {name: [] for name in LOADS}
    try:
        preload(server.port, args.services)
        for name in LOADS:  # warm-up
            load(server.port, name, 1, args.connections, args.services)
        for round_ in range(args.rounds):
            order = list(LOADS) if round_ % 2 == 0 else list(LOADS)[::-1]
            for name in order:
                results[name].append(load(server.port, name, args.seconds, args.connections,
                                          args.services))
            print(f"  round {round_ + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    rows = {name: {key: median([r[key] for r in runs]) for key in ("rps", "p50_us", "p99_us")}
            | {"non2xx": sum(r["non2xx"] for r in runs),
               "socket_errors": sum(r["socket_errors"] for r in runs)}
            for name, runs in results.items()}
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; gunicorn -w 4, wrk -t2 -c{args.connections}, "
          f"{args.seconds} s per load; median of {args.rounds} interleaved rounds; "
          f"{args.services} preloaded services")
    print(f"\n{'load':<12} | {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, row in rows.items():
        print(f"{name:<12} | {fmt(row)}")
    def ratio(a: str, b: str) -> float:
        """The median of the rounds' ratios: each round runs the two loads one after
        the other, which a busy machine disturbs less than it does whole rounds."""
        return median([x["rps"] / y["rps"] for x, y in zip(results[a], results[b],
                                                             strict=True)])

    checks = [("keyed start / start", ratio("keyed start", "start"), 0.8),
              ("replay / GET /services/{sid}", ratio("replay", "GET"), 1.0)]
    print("\nratio" + " " * 27 + "value  target")
    for name, value, bound in checks:
        print(f"{name:<32} {value:6.2f}  >= {bound:<4} {'met' if value >= bound else 'NOT MET'}")


if __name__ == "__main__":
    main()
