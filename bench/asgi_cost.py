"""What ASGI costs a cache hit: the README's server (gunicorn + uvicorn workers on tutor.asgi) against the
one it replaced (gunicorn gthread on tutor.wsgi, the named baseline), one worker each, both serving the
same SQLite bank at the same time, asked alternately one request at a time by one student, so that
whatever else the machine does falls on both alike.

Uses the bank and the demo student of `./setup.sh` (var/suanjing.sqlite3), DEBUG=False, no engine (a
word-for-word ask of a banked problem with an approved answer never needs one).

    python bench/asgi_cost.py [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    db = sqlite3.connect(REPO / "var" / "suanjing.sqlite3")
    (question,) = db.execute(
        "SELECT p.text FROM tutor_problem p JOIN tutor_solution s ON s.problem_id = p.id "
        "WHERE s.status = 'approved' ORDER BY p.id LIMIT 1"
    ).fetchone()
    env = {
        **os.environ,
        "DEBUG": "False",
        "SECRET_KEY": "bench-" + "x" * 50,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SUANJING_ASKS_PER_MINUTE": "0",
        "SUANJING_ENGINE_URL": "http://127.0.0.1:9/v1",  # never reached: every ask is a hit
    }
    gunicorn = [sys.executable, "-m", "gunicorn", "--workers", "1"]
    servers = {
        "gthread (baseline)": [*gunicorn, "-k", "gthread", "--threads", "16", "tutor.wsgi"],
        "uvicorn (README)": [
            *gunicorn,
            "-k",
            "uvicorn_worker.UvicornWorker",
            "--keep-alive",
            "5",
            "tutor.asgi:application",
        ],
    }
    ports = {name: free_port() for name in servers}
    token = subprocess.run(
        [sys.executable, "manage.py", "api_token", "student"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]
    procs = [
        subprocess.Popen(
            [*cmd, "-b", f"127.0.0.1:{ports[name]}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, cmd in servers.items()
    ]
    try:
        clients = {
            n: httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)
            for n in servers
        }

        def ask(name: str) -> bool:
            try:
                r = clients[name].post(
                    f"http://127.0.0.1:{ports[name]}/api/ask", json={"question": question}
                )
                return r.status_code == 200 and r.json()["status"] == "hit"
            except (httpx.HTTPError, ValueError):
                return False

        for name in servers:  # each loads its cache first
            deadline = time.monotonic() + 600
            while not ask(name) and time.monotonic() < deadline:
                time.sleep(1)
        times: dict[str, list[float]] = {n: [] for n in servers}
        for _ in range(args.requests):
            for name in servers:
                started = time.perf_counter()
                assert ask(name), name
                times[name].append(time.perf_counter() - started)
    finally:
        for p in procs:
            p.terminate()
    base = sorted(times["gthread (baseline)"])[len(times["gthread (baseline)"]) // 2]
    print(f"| server | p50 ms | p90 ms | p99 ms | p50 vs baseline |  ({args.requests} each)")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        s = sorted(values)
        n = len(s)
        print(
            f"| {name} | {s[n // 2] * 1000:.1f} | {s[int(n * 0.9)] * 1000:.1f} | "
            f"{s[int(n * 0.99)] * 1000:.1f} | {s[n // 2] / base:.2f} |"
        )


if __name__ == "__main__":
    main()
