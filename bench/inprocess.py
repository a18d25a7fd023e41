"""Start-service's CPU per request in process, without a server: the bare route
(bench/bare.py), the floor of a durable start-service (bench/floor.py) and
contextsvc on the file engine, each called as a WSGI app with ``start.lua``'s
bodies.

    python bench/inprocess.py                 # 5 rounds of 4,000 requests each
    python bench/inprocess.py --no-fsync      # the floor and contextsvc without flushes

Through gunicorn, the server's own share of each request and the noise of a
shared machine hide differences of a few percent (see README.rst, "A million
services"); here only the app runs. Each measurement is a fresh process with
gevent's monkey patching applied first, as in gunicorn's gevent worker; the
systems take turns over the rounds, and the report gives the median CPU time
(user + system) per request of each and their ratios.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEMS = ("bare", "floor", "contextsvc")
PAD = "x" * 200


def environ(i: int) -> dict:
    """A POST /services/start as bench/start.lua sends it."""
    body = json.dumps({
        "customer_id": f"new-{random.randrange(10**9)}-{i}", "contact_key": f"408-{i}",
        "service_type": 100, "interaction_id": "bench", "media_type": 1,
        "coupon": {"coupon_name": "DISCOUNTCODE15"}, "notes": PAD},
        separators=(",", ":")).encode()
    return {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/genesys/1/cs/services/start",
        "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8080",
        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": True,
        "wsgi.run_once": False}


def measure(system: str, requests: int, fsync: bool, workdir: str) -> None:
    """In this (fresh) process: print the CPU microseconds per request of ``system``."""
    from gevent import monkey

    monkey.patch_all()
    import time

    sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]
    if system == "bare":
        from bare import app
    elif system == "floor":
        os.environ["FLOOR_PATH"] = os.path.join(workdir, "floor.log")
        os.environ["FLOOR_FSYNC"] = "1" if fsync else "0"
        from floor import app
    else:
        os.environ["CONTEXTSVC_STORAGE_PATH"] = os.path.join(workdir, "contextsvc.json")
        os.environ["CONTEXTSVC_STORAGE_FSYNC"] = "true" if fsync else "false"
        os.environ.pop("CONTEXTSVC_CONFIG", None)
        from contextsvc import create_app

        app = create_app()
    statuses: list[str] = []

    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        statuses.append(status)

    def drive(environs: list[dict]) -> None:
        for env in environs:
            answer = app(env, start_response)
            for _ in answer:
                pass
            if hasattr(answer, "close"):
                answer.close()

    sys.stdout.flush()
    real_stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # the request log
    try:
        drive([environ(i) for i in range(300)])  # warm-up
        environs = [environ(300 + i) for i in range(requests)]
        began = time.process_time()
        drive(environs)
        cpu = time.process_time() - began
    finally:
        sys.stdout.close()
        sys.stdout = real_stdout
    refused = [status for status in statuses if not status.startswith("201")]
    if refused:
        raise SystemExit(f"{system}: {len(refused)} requests not answered 201: {refused[0]}")
    print(json.dumps({"system": system, "cpu_us": cpu / requests * 1e6}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000, help="per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-fsync", dest="fsync", action="store_false",
                        help="the floor and contextsvc without their disk flushes")
    parser.add_argument("--workdir", default=None, help="where the stores go (a local disk)")
    parser.add_argument("--measure", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--into", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.requests, args.fsync, args.into)
        return
    figures: dict[str, list[float]] = {system: [] for system in SYSTEMS}
    for _ in range(args.rounds):
        for system in SYSTEMS:  # taking turns
            with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", system, "--into", workdir,
                     "--requests", str(args.requests)] + ([] if args.fsync else ["--no-fsync"]),
                    check=True, capture_output=True, text=True, cwd=ROOT).stdout
            figures[system].append(json.loads(out.splitlines()[-1])["cpu_us"])
    medians = {system: statistics.median(values) for system, values in figures.items()}
    print(f"start-service in process, {args.requests:,} requests per measurement, "
          f"{args.rounds} rounds, flush {'on' if args.fsync else 'off'}: CPU us per request")
    for system in SYSTEMS:
        rounds = ", ".join(f"{value:.0f}" for value in figures[system])
        print(f"  {system:<10} median {medians[system]:6.0f}   (rounds: {rounds})")
    print(f"  floor / bare        {medians['floor'] / medians['bare']:5.2f}")
    print(f"  contextsvc / bare   {medians['contextsvc'] / medians['bare']:5.2f}")
    print(f"  contextsvc / floor  {medians['contextsvc'] / medians['floor']:5.2f}")


if __name__ == "__main__":
    main()
