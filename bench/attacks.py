"""The attacks of issue 13, rerun against the site as the README runs it in production.

The site: `gunicorn -k uvicorn_worker.UvicornWorker --workers N --keep-alive 5 tutor.asgi:application`
(DEBUG=False, a fresh SQLite file, the fixture bank, the embedded SmolLM2 as a separate engine service
reached by SUANJING_ENGINE_URL), on a free loopback port. One student's cache hit of a banked problem is
the probe: its p50 / p99 on the quiet site is the named baseline of every row, measured in the same run.

Rows (each: requests made, server errors (5xx or a dropped connection), probe p50 / p99, ratio to the
quiet p50):
  - slow clients: 40 connections that send one header line every 3 s and never finish;
  - stream flood: 10 students x 4 tabs following one live answer (a fifth tab must get 429);
  - ask flood: one student asking new questions as fast as the site answers (fair use: refusals are
    429s and are not stored as questions);
  - password guessing: 50 wrong passwords for one account from one address (the lockout: when it starts,
    and whether the right password is then refused too);
  - kill -9 of the web worker: time until gunicorn's new worker answers the probe again.

    python bench/attacks.py               # about 3 minutes after the engine has loaded
    python bench/attacks.py --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BANKED = "What is 2 + 3?"
LONG = "Write the multiplication tables from 1 to 30, every line written out in full."
STUDENTS = [f"s{i}" for i in range(14)]
SETUP = """
import json
from django.contrib.auth.models import Group, User
from tutor.management.commands.setup_demo import ensure_groups
from tutor.models import Problem
from tutor.services.tokens import issue_api_token
ensure_groups()
students = Group.objects.get(name="student")
tokens = {}
for name in %r:
    user = User.objects.create_user(name, password="a-long-password-" + name)
    user.groups.add(students)
    tokens[name] = issue_api_token(user=user)
Problem.objects.create(text=%r, lang="en", reference_answer="5")
print("TOKENS" + json.dumps(tokens))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Site:
    def __init__(self, env: dict[str, str], workers: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-k",
                "uvicorn_worker.UvicornWorker",
                "--workers",
                str(workers),
                "--keep-alive",
                "5",
                "-b",
                f"127.0.0.1:{self.port}",
                "tutor.asgi:application",
            ],
            cwd=REPO,
            env=env,
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,  # noqa: SIM115
        )

    def workers(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Probe:
    """One student asking the banked problem, one request at a time, in a thread."""

    def __init__(self, site: Site, token: str) -> None:
        self.site, self.token = site, token
        self.times: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def once(self, client: httpx.Client) -> float | None:
        started = time.perf_counter()
        try:
            r = client.post(f"{self.site.url}/api/ask", json={"question": BANKED})
            ok = r.status_code == 200 and r.json().get("status") == "hit"
        except (httpx.HTTPError, ValueError):
            ok = False
        if not ok:
            self.errors += 1
            return None
        return time.perf_counter() - started

    def run(self, n: int) -> list[float]:
        with httpx.Client(headers={"Authorization": f"Bearer {self.token}"}, timeout=30) as c:
            return [t for t in (self.once(c) for _ in range(n)) if t is not None]

    def start(self) -> None:
        self.times, self.errors = [], 0
        self._stop.clear()

        def loop() -> None:
            with httpx.Client(headers={"Authorization": f"Bearer {self.token}"}, timeout=30) as c:
                while not self._stop.is_set():
                    t = self.once(c)
                    if t is not None:
                        self.times.append(t)
                    time.sleep(0.05)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> tuple[list[float], int]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(60)
        return self.times, self.errors


def row(
    name: str, requests: int, errors: int, times: list[float], base: float, note: str = ""
) -> dict:
    p50, p99 = (pct(times, 0.5), pct(times, 0.99)) if times else (float("nan"),) * 2
    return {
        "attack": name,
        "requests": requests,
        "server errors": errors,
        "probe n": len(times),
        "probe p50 ms": round(p50 * 1000, 1),
        "probe p99 ms": round(p99 * 1000, 1),
        "p50 vs quiet": round(p50 / base, 2),
        "note": note,
    }


def slow_clients(site: Site, probe: Probe, base: float) -> dict:
    stop, opened = threading.Event(), []

    def slow() -> None:
        try:
            with socket.create_connection(("127.0.0.1", site.port), timeout=30) as conn:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                opened.append(1)
                n = 0
                while not stop.wait(3):
                    conn.sendall(f"X-Slow-{n}: a\r\n".encode())
                    n += 1
        except OSError:
            pass

    threads = [threading.Thread(target=slow, daemon=True) for _ in range(40)]
    for t in threads:
        t.start()
    time.sleep(4)
    probe.start()
    time.sleep(20)
    times, errors = probe.stop()
    stop.set()
    return row(
        "40 slow clients (slowloris)",
        40 + len(times) + errors,
        errors,
        times,
        base,
        f"{len(opened)} slow connections held for 24 s",
    )


def follow(url: str, token: str, events: list, ended: threading.Event, errors: list) -> None:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    try:
        with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(60, read=60)) as r:
            if r.status_code != 200:
                errors.append(r.status_code)
                return
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
    except httpx.HTTPError as exc:
        errors.append(repr(exc))
    finally:
        ended.set()


def stream_flood(site: Site, tokens: dict[str, str], probe: Probe, base: float) -> dict:
    followers, server_errors, ids = [], [], {}
    for name in STUDENTS[2:12]:
        r = httpx.post(
            f"{site.url}/api/ask",
            json={"question": LONG},
            headers={"Authorization": f"Bearer {tokens[name]}"},
            timeout=60,
        )
        if r.status_code >= 500:
            server_errors.append(r.status_code)
        ids[name] = r.json().get("id")
    for name, qid in ids.items():
        for _ in range(4):
            events, ended, errs = [], threading.Event(), []
            url = f"{site.url}/api/questions/{qid}/stream"
            threading.Thread(
                target=follow, args=(url, tokens[name], events, ended, errs), daemon=True
            ).start()
            followers.append((events, ended, errs))
    time.sleep(5)
    fifth = httpx.get(
        f"{site.url}/api/questions/{ids['s2']}/stream",
        timeout=10,
        headers={"Authorization": f"Bearer {tokens['s2']}"},
    ).status_code
    probe.start()
    time.sleep(15)
    times, errors = probe.stop()
    still_open = sum(not ended.is_set() for _, ended, _ in followers)
    for name, qid in ids.items():
        httpx.post(
            f"{site.url}/api/questions/{qid}/stop",
            headers={"Authorization": f"Bearer {tokens[name]}"},
            timeout=30,
        )
    for _, ended, _ in followers:
        ended.wait(60)
    stream_errors = [e for _, _, errs in followers for e in errs if not str(e).startswith("4")]
    return row(
        "stream flood: 10 students x 4 tabs on one live answer",
        50 + len(times) + errors,
        errors + len(server_errors) + len(stream_errors),
        times,
        base,
        f"{still_open} streams open while probed; a fifth tab got {fifth}",
    )


def ask_flood(site: Site, tokens: dict[str, str], probe: Probe, base: float, db: Path) -> dict:
    import sqlite3

    statuses: dict[int, int] = {}
    stop = threading.Event()

    def flood() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {tokens['s12']}"}, timeout=30) as c:
            i = 0
            while not stop.is_set():
                try:
                    code = c.post(
                        f"{site.url}/api/ask",
                        json={"question": f"What is {i} plus {i + 7} times 3?"},
                    ).status_code
                except httpx.HTTPError:
                    code = 599
                statuses[code] = statuses.get(code, 0) + 1
                i += 1

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    probe.start()
    time.sleep(20)
    times, errors = probe.stop()
    stop.set()
    thread.join(30)
    with sqlite3.connect(db) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM tutor_question q JOIN auth_user u ON q.user_id = u.id "
            "WHERE u.username = 's12'"
        ).fetchone()[0]
    flood_errors = sum(n for code, n in statuses.items() if code >= 500)
    return row(
        "ask flood: one student, new questions non-stop",
        sum(statuses.values()) + len(times),
        errors + flood_errors,
        times,
        base,
        f"answers {dict(sorted(statuses.items()))}; stored questions {stored}",
    )


def password_guessing(site: Site) -> dict:
    codes = []
    for _ in range(50):
        with httpx.Client(timeout=30) as c:
            page = c.get(f"{site.url}/accounts/login/").text
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
            r = c.post(
                f"{site.url}/accounts/login/",
                data={"username": "s13", "password": "wrong", "csrfmiddlewaretoken": token},
                headers={"Referer": f"{site.url}/accounts/login/"},
            )
            codes.append(r.status_code)
    with httpx.Client(timeout=30) as c:
        page = c.get(f"{site.url}/accounts/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        right = c.post(
            f"{site.url}/accounts/login/",
            data={
                "username": "s13",
                "password": "a-long-password-s13",
                "csrfmiddlewaretoken": token,
            },
            headers={"Referer": f"{site.url}/accounts/login/"},
        ).status_code
    first_locked = next((i + 1 for i, code in enumerate(codes) if code == 429), None)
    return {
        "attack": "50 wrong passwords, one account, one address",
        "requests": 51,
        "server errors": sum(c >= 500 for c in codes),
        "note": f"locked from try {first_locked}; the right password then got {right}",
    }


def kill_worker(site: Site, probe: Probe) -> dict:
    victim = site.workers()[0]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    with httpx.Client(headers={"Authorization": f"Bearer {probe.token}"}, timeout=5) as c:
        failed = 0
        while time.monotonic() - killed < 300:
            if probe.once(c) is not None and victim not in site.workers():
                break
            failed += 1
            time.sleep(0.2)
    recovered = time.monotonic() - killed
    return {
        "attack": "kill -9 of the web worker",
        "requests": failed + 1,
        "server errors": 0,
        "note": f"probe answered again {recovered:.1f} s later (gunicorn started a new worker; "
        f"{failed} probes failed meanwhile)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    from solver.modelstore import ModelStore
    from solver.remote import start_local_service

    model = ModelStore(REPO / "models").default("smollm2-135m-instruct")
    engine, engine_url = start_local_service(model.path, extra_args=["--threads", "2"], timeout=300)
    var = Path(tempfile.mkdtemp(prefix="suanjing-attacks-"))
    env = {
        **os.environ,
        "SUANJING_VAR": str(var),
        "DEBUG": "False",
        "SECRET_KEY": "bench-" + "x" * 50,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SUANJING_MODELS": str(model.path.parent),
        "SUANJING_MODEL": model.manifest.name,
        "SUANJING_ENGINE_URL": engine_url,
        "SUANJING_ENGINE_PORT": str(free_port()),
        "SUANJING_MAX_NEW_TOKENS": "1500",
        # Cache hits count towards SUANJING_ASKS_PER_MINUTE (20): the probe asks hundreds a minute.
        # Lifted here, so the ask flood meets the other limits (one live answer at a time, the live
        # slots); the per-minute limit has its own test (tests/test_fair_use.py).
        "SUANJING_ASKS_PER_MINUTE": "0",
    }
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    manage = [sys.executable, "manage.py"]
    for command in (
        ["migrate", "-v0"],
        ["createcachetable"],
        ["collectstatic", "--noinput", "-v0"],
        ["load_bank", "fixtures/problems.jsonl"],
    ):
        subprocess.run([*manage, *command], cwd=REPO, env=env, check=True, capture_output=True)
    out = subprocess.run(
        [*manage, "shell", "-c", SETUP % (STUDENTS, BANKED)],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    tokens = json.loads(out.split("TOKENS", 1)[1])
    site = Site(env, args.workers, var / "site.log")
    rows = []
    try:
        probe = Probe(site, tokens["s0"])
        deadline = time.monotonic() + 300
        while not probe.run(1) and time.monotonic() < deadline:
            time.sleep(1)
        probe.errors = 0  # the asks that waited for the site to start
        quiet = probe.run(100)
        base = statistics.median(quiet)
        rows.append(row("none (quiet site): the baseline", 100, probe.errors, quiet, base))
        rows.append(slow_clients(site, probe, base))
        rows.append(stream_flood(site, tokens, probe, base))
        rows.append(ask_flood(site, tokens, probe, base, var / "suanjing.sqlite3"))
        rows.append(password_guessing(site))
        rows.append(kill_worker(site, probe))
    finally:
        site.stop()
        engine.terminate()
    print(
        f"\nSite: gunicorn + uvicorn workers x {args.workers}, DEBUG=False, SQLite; "
        f"probe: one student's cache hit, one request at a time"
    )
    print(
        "| attack | requests | server errors | probe p50 ms | probe p99 ms | p50 vs quiet | note |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['attack']} | {r['requests']} | {r['server errors']} | {r.get('probe p50 ms', '')} "
            f"| {r.get('probe p99 ms', '')} | {r.get('p50 vs quiet', '')} | {r.get('note', '')} |"
        )


if __name__ == "__main__":
    main()
