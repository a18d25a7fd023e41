"""Benchmark API keys (API.md 8.1): start-service throughput with keys on over keys
off, in one run.

    python bench/keys.py                        # 5 rounds of 10 s per server
    python bench/keys.py --rounds 3 --seconds 3 # a quicker look

Two servers on empty stores, ``gunicorn -w 4`` (gevent workers,
contextsvc/gunicorn_conf.py) on loopback: one with no ``[api_keys]``, one with
--keys keys configured and every request carrying one of them (the last
configured, so that every configured hash is compared first). wrk (``-t2``)
drives start.lua at each in turn, alternating which goes first, over --rounds;
the table shows medians. The target (>= 0.9) is checked on the median of each
round's ratio: the two servers of a round run one after the other, so that a
change in the machine's load between rounds moves both; the ratio of the medians
is shown too. The cost of one key check, measured in process, says what the
throughput figures cannot resolve on a busy machine.
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


def measure(keys_on: bool, args: argparse.Namespace, key: str, ini: str) -> dict:
    workdir = tempfile.mkdtemp(prefix="bench-keys-", dir=args.workdir)
    env = {"CONTEXTSVC_STORAGE_PATH": os.path.join(workdir, "cs.json"),
           "CONTEXTSVC_CONFIG": ini if keys_on else ""}
    server = KeyedServer("wsgi:app", env)
    try:
        scripts = ("auth.lua", "start.lua", "report.lua") if keys_on else (
            "start.lua", "report.lua")
        extra = {"BENCH_KEY": key}
        wrk_finish(wrk_start(server.port, scripts, 2, args.connections, 1, extra), 62)
        return wrk_finish(wrk_start(server.port, scripts, args.seconds, args.connections,
                                    1, extra), args.seconds + 60)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="seconds per load")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--keys", type=int, default=5, help="keys configured")
    parser.add_argument("--workdir", default=None, help="where the stores go (a local disk)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found; installing it with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       stdout=subprocess.DEVNULL)

    keys = [access.new_key() for _ in range(args.keys)]
    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as ini:
        ini.write("[api_keys]\n" + "".join(
            access.config_line(f"client-{i}", "write", key) + "\n"
            for i, key in enumerate(keys)))
    results: dict[bool, list[dict]] = {False: [], True: []}
    try:
        for round_ in range(args.rounds):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for keys_on in order:
                results[keys_on].append(measure(keys_on, args, keys[-1], ini.name))
            print(f"  round {round_ + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    finally:
        os.unlink(ini.name)

    def median(rows: list[dict]) -> dict:
        row = {k: sorted(r[k] for r in rows)[len(rows) // 2]
               for k in ("rps", "p50_us", "p99_us")}
        row["non2xx"] = sum(r["non2xx"] for r in rows)
        row["socket_errors"] = sum(r["socket_errors"] for r in rows)
        return row

    off, on = median(results[False]), median(results[True])
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; gunicorn -w 4, wrk -t2 -c{args.connections}, "
          f"{args.seconds} s per load; median of {args.rounds} interleaved rounds")
    print(f"\n{'start-service':<24} | {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'keys off':<24} | {fmt(off)}")
    print(f"{f'keys on ({args.keys} configured)':<24} | {fmt(on)}")
    ratios = [a["rps"] / b["rps"] for a, b in zip(results[True], results[False], strict=True)]
    paired = sorted(ratios)[len(ratios) // 2]
    print(f"\nkeys on / keys off, median of the rounds' ratios: {paired:.2f} (target >= 0.9: "
          f"{'met' if paired >= 0.9 else 'NOT MET'})")
    print(f"keys on / keys off, ratio of the medians: {on['rps'] / off['rps']:.2f}; per "
          "round: " + ", ".join(f"{r:.2f}" for r in ratios))
    print(f"one key check, in process, {args.keys} keys: {check_cost(keys):.1f} us")


if __name__ == "__main__":
    main()
