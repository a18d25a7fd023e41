"""Benchmark API keys and tenants (API.md 8.1, 8.2): start-service throughput with
keys on and tenants configured over both off, in one run.

    python bench/keys.py                         # 5 rounds of 10 s
    python bench/keys.py --rounds 3 --seconds 3  # a quicker look

Each round starts two servers on empty stores, ``gunicorn -w 4`` (gevent workers,
contextsvc/gunicorn_conf.py) on loopback: one with no ``[api_keys]`` and no
``[tenants]``, one with --keys keys configured, each limited to the --tenants
tenants configured (each with a data file of its own), and every request carrying
the last key (so that every configured hash is compared first) and naming the
last tenant in ``ContactCenterId``. Two wrk (``-t2
-c<connections>`` each) drive start.lua at both at once, for the same seconds: on
a machine that other work shares, whatever it does weighs on both alike, which
taking turns does not ensure. The target (>= 0.9) is checked on the median of
the rounds' ratios. ``--same`` runs both servers without keys: the spread of its
ratios around 1 is the method's noise on the machine at hand.

It also measures, in this process, what the servers' figures cannot resolve on a
busy machine: the cost of one key check, and start-service through Flask's test
client (memory engine, no HTTP server, no disk) with keys on and off, one request
to each in turn.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Server, fmt, wrk_finish, wrk_start  # noqa: E402

from contextsvc.domain import access  # noqa: E402


class KeyedServer(Server):
    """A server that may answer 401 to the readiness probe (it has keys)."""

    def _wait(self) -> float:
        url = f"http://127.0.0.1:{self.port}/genesys/1/cs/customers/nobody/services"
        while time.monotonic() - self.started < 120:
            try:
                with urllib.request.urlopen(url, timeout=60):
                    return time.monotonic() - self.started
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("server did not answer")


def measure_round(args: argparse.Namespace, keys: list[str]) -> dict[bool, dict]:
    """One round: both servers at once, each under its own wrk; keys on -> figures."""
    servers: dict[bool, KeyedServer] = {}
    workdirs = []
    try:
        for keys_on in (False, True):
            workdir = tempfile.mkdtemp(prefix="bench-keys-", dir=args.workdir)
            workdirs.append(workdir)
            ini = os.path.join(workdir, "contextsvc.ini")
            with open(ini, "w") as handle:
                handle.write(configuration(keys, args.tenants, workdir))
            servers[keys_on] = KeyedServer("wsgi:app", {
                "CONTEXTSVC_STORAGE_PATH": os.path.join(workdir, "cs.json"),
                "CONTEXTSVC_CONFIG": ini if keys_on and not args.same else ""})
        tenant = f"tenant-{args.tenants}" if args.tenants else ""

        def load(seconds: int) -> dict[bool, dict]:
            runs = {keys_on: wrk_start(server.port, (
                ("auth.lua",) if keys_on else ()) + ("start.lua", "report.lua"), seconds,
                args.connections, 1, {"BENCH_KEY": keys[-1], "BENCH_TENANT": tenant})
                for keys_on, server in servers.items()}
            return {keys_on: wrk_finish(run, seconds + 60) for keys_on, run in runs.items()}

        load(2)  # warm-up
        return load(args.seconds)
    finally:
        for server in servers.values():
            server.stop()
        for workdir in workdirs:
            shutil.rmtree(workdir, ignore_errors=True)


def configuration(keys: list[str], tenants: int, workdir: str) -> str:
    """The INI text of the server with keys: each key limited to every tenant."""
    names = [f"tenant-{i + 1}" for i in range(tenants)]
    text = "[api_keys]\n" + "".join(
        access.config_line(f"client-{i}", "write", key, names) + "\n"
        for i, key in enumerate(keys))
    if names:
        text += "[tenants]\n" + "".join(
            f"{name} = {os.path.join(workdir, name + '.json')}\n{name}.id = {n + 1}\n"
            for n, name in enumerate(names))
    return text


def check_cost(keys: list[str], n: int = 20_000) -> float:
    """Microseconds of one key check in this process (the header read, the hash
    and the comparisons), through a test client request context; the machine's
    load moves it far less than the throughput figures."""
    from contextsvc import create_app
    from contextsvc.api import auth

    app = create_app({"storage": {"engine": "memory"}, "api_keys": {
        f"client-{i}": f"write {access.digest(k).hex()}" for i, k in enumerate(keys)}})
    with app.test_request_context(headers={"Authorization": f"Bearer {keys[-1]}"}):
        started = time.perf_counter()
        for _ in range(n):
            auth.check("write")
        return (time.perf_counter() - started) / n * 1e6


def in_process(keys: list[str], requests: int = 3000) -> dict[str, float]:
    """Median microseconds of one start-service through the test client, keys off
    and on, one request to each in turn (alternating which goes first), so that a
    burst of other work on the machine falls on both."""
    import logging
    import statistics

    from contextsvc import create_app

    apps = {"off": (create_app({"storage": {"engine": "memory"}}), {}),
            "on": (create_app({"storage": {"engine": "memory"}, "api_keys": {
                f"client-{i}": f"write {access.digest(k).hex()}" for i, k in enumerate(keys)}}),
                {"Authorization": f"Bearer {keys[-1]}"})}
    logging.getLogger("contextsvc").setLevel(logging.WARNING)  # no request lines here
    clients = [(name, app.test_client(), headers) for name, (app, headers) in apps.items()]
    body = {"customer_id": "c", "contact_key": "k", "service_type": 100, "notes": "x" * 200}
    times: dict[str, list[float]] = {name: [] for name, _, _ in clients}
    for i in range(requests):
        for name, client, headers in (clients if i % 2 else clients[::-1]):
            started = time.perf_counter()
            client.post("/genesys/1/cs/services/start", json=body, headers=headers)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) * 1e6 for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="seconds per load")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8, help="per server")
    parser.add_argument("--keys", type=int, default=5, help="keys configured")
    parser.add_argument("--tenants", type=int, default=2, help="tenants configured")
    parser.add_argument("--workdir", default=None, help="where the stores go (a local disk)")
    parser.add_argument("--same", action="store_true",
                        help="no keys on either server (the second still sends one): what "
                             "the ratio is when nothing differs, the method's noise")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found; installing it with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       stdout=subprocess.DEVNULL)

    keys = [access.new_key() for _ in range(args.keys)]
    results: dict[bool, list[dict]] = {False: [], True: []}
    for round_ in range(args.rounds):
        for keys_on, result in measure_round(args, keys).items():
            results[keys_on].append(result)
        print(f"  round {round_ + 1} of {args.rounds} done", file=sys.stderr, flush=True)

    def median(rows: list[dict]) -> dict:
        row = {k: sorted(r[k] for r in rows)[len(rows) // 2]
               for k in ("rps", "p50_us", "p99_us")}
        row["non2xx"] = sum(r["non2xx"] for r in rows)
        row["socket_errors"] = sum(r["socket_errors"] for r in rows)
        return row

    off, on = median(results[False]), median(results[True])
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; two gunicorn -w 4 at once, each under wrk -t2 "
          f"-c{args.connections}, {args.seconds} s; median of {args.rounds} rounds")
    print(f"\n{'start-service':<24} | {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'keys off':<24} | {fmt(off)}")
    label = f"keys on ({args.keys}), {args.tenants} tenants"
    print(f"{'keys off (--same)' if args.same else label:<24} | {fmt(on)}")
    ratios = [a["rps"] / b["rps"] for a, b in zip(results[True], results[False], strict=True)]
    paired = sorted(ratios)[len(ratios) // 2]
    print(f"\nkeys on / keys off, median of the rounds' ratios: {paired:.2f} (target >= 0.9: "
          f"{'met' if paired >= 0.9 else 'NOT MET'})")
    print(f"keys on / keys off, ratio of the medians: {on['rps'] / off['rps']:.2f}; per "
          "round: " + ", ".join(f"{r:.2f}" for r in ratios))
    print(f"one key check, in process, {args.keys} keys: {check_cost(keys):.1f} us")
    per = in_process(keys)
    print(f"start-service through the test client (memory engine): keys off {per['off']:.0f} "
          f"us, keys on {per['on']:.0f} us; on / off throughput {per['off'] / per['on']:.3f}")


if __name__ == "__main__":
    main()
