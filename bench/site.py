"""Site benchmark: HTTP latency of a cache hit through `POST /api/ask`, next to `SemanticCache.lookup` alone.

A bank of 10 000 problems (--quick: 1 000) is synthesised from templates with varied numbers (each with
its true answer, stored as a verified solution) and bulk-inserted into a temporary SQLite database (WAL,
the site's own settings) or a scratch PostgreSQL database (--database-url). The answer cache holds every
problem, embedded with the site's embedder (default USE-multilingual) once over all runs: the vectors
are kept in bench/out/site-vectors.sqlite, the built cache under bench/out/site-cache/.

Two sets of questions, each asking 2 000 banked problems: "word for word" (the banked text, as students
paste their homework: the cache's exact tier, no embedder call) and "reworded" (a rewording per template
with the same numbers and unknown: the embedder and the vector search). The reworded set keeps only the
rewordings that the cache built here serves as a hit on their problem (with USE-multilingual three of the
eight templates' rewordings are suggestions, not hits; the report says how many were kept). Every answer
must be a hit on the asked problem: anything else (an HTTP error, a miss, another problem) is an error.

Measured in one run of this script, for each set:
  - baseline: `solver.cache.SemanticCache.lookup` alone, in this process, one question at a time;
  - the site: a real server started with the README's production command (`gunicorn -k
    uvicorn_worker.UvicornWorker --workers N --keep-alive 5 tutor.asgi:application`, N from --workers,
    default 2 as in the README; DEBUG=False) on a free loopback port, asked by 1, 10 and 50 concurrent
    clients (--clients; threads of this process, keep-alive connections, a student's Bearer token);
  - with --gthread-baseline: the server the README ran before ASGI (`gunicorn -k gthread --workers N
    --threads 16 --timeout 0 tutor.wsgi`), asked the same questions in the same run, as the named
    baseline of the ASGI rows (their p50 and p99 as a ratio of its own);
  - with --live N: word-for-word hits at 1 and 10 clients while N other students' answers are generated
    live by SmolLM2 and streamed, the engine started as the README's product starts it: no
    SUANJING_ENGINE_URL, so the server starts its local `python -m solver serve` on the first miss
    (SUANJING_ENGINE_PORT: a free loopback port) and reaches it by URL.
p50 and p99 latency per row, requests per second, and each row's ratio to its set's baseline. The targets
of issue 11, with 2 or more web workers on 2 cores: at 10 clients reworded hits p50 <= 25 ms and p99 <= 80
ms, word-for-word hits p50 <= 10 ms; at 50 clients no errors; while 4 answers stream (--live 4),
word-for-word hits at 10 clients p50 <= 30 ms.

The clients share the machine's cores with the server, so the figures include their cost too.

    python bench/site.py --quick          # 1 000 problems, fewer requests (< 1 min after embedding)
    python bench/site.py                  # 10 000 problems (embedding them takes a minute or two, once)
    python bench/site.py --workers 1 --clients 10 --gthread-baseline   # one web process, ASGI vs gthread
    python bench/site.py --live 4         # and hits while 4 live generations stream
    python bench/site.py --cold-start     # time to a first hit when the site starts (100 000 problems)

The server starts as the README starts it (gunicorn with uvicorn workers on tutor.asgi, no config file,
no hook): each of its worker processes finds in its SUANJING_VAR the saved cache this script wrote there
after embedding the bank (as an earlier start of the site leaves it), loads it and reconciles it with
the database on its first question (`tutor.services.bankcache`). Measuring starts once every worker
has logged its loaded cache. The bank's vectors are kept in bench/out/site-vectors.sqlite (a
`solver.vectors.VectorStore`), so a text is embedded once over all runs.

Cold start (`--cold-start`, `--cold-problems N`, default 100 000): a bank of N problems in a new
database and a new SUANJING_VAR, the site started with the README's gunicorn command (--workers), asked one
banked question word for word (then one reworded) over and over from the moment it is spawned; the time
to the first hit, two ways, reported apart:
  - the very first start: no saved cache and no vector store, so the site embeds the whole bank (misses
    meanwhile: each ask waits at most `bankcache.ASK_WAIT_S` and is then answered live, here refused as
    no model is prepared); the server is stopped once it has saved its cache;
  - the next start on the same SUANJING_VAR: the saved cache is loaded (target: a first hit within 10 s).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE_ROOT = REPO / "bench" / "out" / "site-cache"
VECTORS = REPO / "bench" / "out" / "site-vectors.sqlite"
# Issue 11's targets, for 2 or more web workers: (question set, clients) -> (p50 ms, p99 ms); None: no
# bound. At 50 clients the target is no errors.
TARGETS = {("reworded", 10): (25.0, 80.0), ("word for word", 10): (10.0, None)}
TARGET_LIVE_P50_MS = 30.0
TARGET_MIN_WORKERS = 2
CONCURRENCY = (1, 10, 50)
SERVERS = {
    "asgi": "uvicorn (README)",
    "gthread": "gthread (README before ASGI)",
}


# -- the synthetic bank ------------------------------------------------------------------------------
# (text template, numbers -> (fields, answer)). Numbers are drawn per template; a problem is unique by
# its template and the multiset of its numbers, so that no two banked problems are the same question.


def _times(rng):
    a, b = sorted(rng.sample(range(2, 1000), 2))
    return {"a": a, "b": b}, a * b


def _add_to(rng):
    a, b = sorted(rng.sample(range(2, 2000), 2))
    return {"a": a, "b": b}, b - a


def _train(rng):
    t, v = rng.randint(2, 12), rng.randint(20, 300)
    return {"d": v * t, "t": t}, v


def _cage(rng):
    rabbits, chickens = rng.randint(1, 300), rng.randint(1, 300)
    return {"h": rabbits + chickens, "l": 4 * rabbits + 2 * chickens}, rabbits


def _rectangle(rng):
    b, a = sorted(rng.sample(range(2, 500), 2))
    return {"a": a, "b": b}, a * b


def _books(rng):
    a, b = rng.randint(1, 500), rng.randint(1, 500)
    return {"a": a, "b": b}, a + b


def _percent(rng):
    a, p = 20 * rng.randint(1, 200), 5 * rng.randint(1, 19)
    return {"a": a, "p": p}, a * p // 100


def _pens(rng):
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    return {"a": a, "b": b}, a * b


# (banked text, numbers -> (fields, answer), language, a student's rewording with the same numbers and
# the same unknown). Each rewording was checked to be served by the cache for every draw of its numbers
# with the earlier MiniLM embedder; with USE-multilingual the rewordings of the add-to, train and cage
# templates are suggestions, so `served_only` leaves out of the reworded set what the cache does not serve.
# A rewording's canonical text differs from the banked one, so it takes the embedder and the vector search.
TEMPLATES = [
    ("What is {a} times {b}?", _times, "en", "What do you get when you multiply {a} by {b}?"),
    ("一个数加上{a}等于{b}，这个数是多少？", _add_to, "zh", "某数加{a}得{b}，求这个数。"),
    (
        "A train travels {d} km in {t} hours at a steady speed. What is its average speed in km/h?",
        _train,
        "en",
        "In {t} hours a train travels {d} km at a steady speed. What is its average speed in km/h?",
    ),
    (
        "鸡兔同笼，共有{h}个头，{l}只脚，问兔有几只？",
        _cage,
        "zh",
        "鸡兔同笼，一共{h}个头、{l}只脚，兔有多少只？",
    ),
    (
        "A rectangle is {a} cm long and {b} cm wide. What is its area in square centimetres?",
        _rectangle,
        "en",
        "A rectangle is {b} cm wide and {a} cm long. What is its area in square centimetres?",
    ),
    (
        "小明有{a}本书，小红比他多{b}本，小红有几本书？",
        _books,
        "zh",
        "小红比小明多{b}本书，小明有{a}本书，小红有几本书？",
    ),
    ("{a}的{p}%是多少？", _percent, "zh", "{a}的百分之{p}是多少？"),
    (
        "A pen costs {a} yuan. How many yuan do {b} pens cost?",
        _pens,
        "en",
        "How many yuan do {b} pens cost if a pen costs {a} yuan?",
    ),
]
FULL_AFTER = 2000
QUESTION_SETS = {
    "word for word": "the banked text itself, as a student pastes the homework (exact tier)",
    "reworded": "a rewording with the same numbers (embedder and vector search)",
}


def make_bank(n: int, seed: int = 0) -> list[tuple[str, str, str, str]]:
    """n distinct (text, answer, lang, reworded text) problems, round-robin over the templates. A
    template whose numbers run out (FULL_AFTER draws in a row all taken: a few thousand problems for
    the narrowest) is left out from then on, so that 100 000 fit; smaller banks are as before."""
    rng = random.Random(seed)
    seen: set[tuple] = set()
    bank = []
    full: set[int] = set()
    taken = 0  # draws in a row that gave a problem already in the bank
    while len(bank) < n:
        index = len(bank) % len(TEMPLATES)
        while index in full:
            index = (index + 1) % len(TEMPLATES)
        template, draw, lang, reworded = TEMPLATES[index]
        fields, answer = draw(rng)
        key = (template, tuple(sorted(fields.values())))
        if key in seen:
            taken += 1
            if taken >= FULL_AFTER:
                full.add(index)
                taken = 0
                if len(full) == len(TEMPLATES):
                    raise SystemExit(f"the templates hold fewer than {n} distinct problems")
            continue
        taken = 0
        seen.add(key)
        bank.append((template.format(**fields), str(answer), lang, reworded.format(**fields)))
    return bank


# -- Django, the database and the cache ---------------------------------------------------------------


def server_env(var: Path, database_url: str) -> dict[str, str]:
    """Production-like settings for this process and the server: DEBUG off, a real SECRET_KEY, no model
    (a miss is refused at once, and counted as an error)."""
    env = dict(os.environ)
    env.update(
        DEBUG="False",
        SECRET_KEY=secrets.token_urlsafe(48),
        SUANJING_VAR=str(var),
        SUANJING_MODELS=str(var / "no-models"),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="tutor.settings",
        # One student asks thousands of questions a minute here: fair use would refuse them (429).
        SUANJING_ASKS_PER_MINUTE="1000000000",
    )
    env.pop("SUANJING_CACHE_THRESHOLD", None)
    env.pop("SUANJING_EMBEDDER", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    else:
        env.pop("DATABASE_URL", None)
    return env


def fill_database(bank: list[tuple[str, str, str, str]]) -> tuple[list[int], str]:
    """Insert the bank with one verified answer per problem; returns (problem ids, a student's token)."""
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command

    from tutor.management.commands.setup_demo import ensure_groups
    from tutor.models import Problem, Solution
    from tutor.services import tokens as services

    call_command("migrate", verbosity=0)
    if Problem.objects.exists():
        raise SystemExit(
            "the database already holds problems: give --database-url a scratch database"
        )
    problems = Problem.objects.bulk_create(
        [
            Problem(text=text, lang=lang, topic="bench", reference_answer=answer, origin="import")
            for text, answer, lang, _reworded in bank
        ],
        batch_size=1000,
    )
    Solution.objects.bulk_create(
        [
            Solution(
                problem=p,
                answer=f"\\boxed{{{p.reference_answer}}}",
                final=p.reference_answer,
                status=Solution.Status.VERIFIED,
                source=Solution.Source.BATCH,
                evidence={"reference": p.reference_answer, "matches_reference": True},
            )
            for p in problems
        ],
        batch_size=1000,
    )
    ensure_groups()
    student = User.objects.create_user("bench-student", password=secrets.token_urlsafe(16))
    student.groups.add(Group.objects.get(name="student"))
    return [p.pk for p in problems], services.issue_api_token(user=student)


def cache_folder(items: list[tuple[str, str]]) -> Path:
    """bench/out/site-cache/<size>-<digest of the bank>/ (a saved cache of another normalizer or
    embedder is refused by `SemanticCache.load` and built again)."""
    digest = hashlib.sha256(json.dumps(items, ensure_ascii=False).encode())
    return CACHE_ROOT / f"{len(items)}-{digest.hexdigest()[:16]}"


def build_cache(items: list[tuple[str, str]], var: Path):
    """The cache over every item: loaded from bench/out/site-cache/ or built now (vectors from
    bench/out/site-vectors.sqlite, embedding only what it lacks) and saved there; then saved into the
    server's SUANJING_VAR where the site looks for it (`bankcache.cache_folder`)."""
    from django.conf import settings as dj_settings

    from solver.cache import CacheFileError, SemanticCache
    from solver.embed import load_embedder
    from solver.vectors import VectorStore
    from tutor.services import bankcache

    # The same embedder and backend as the server, so the baseline row measures the same lookup.
    embedder = load_embedder(
        dj_settings.SUANJING_EMBEDDER,
        backend=dj_settings.SUANJING_EMBEDDER_BACKEND,
        cache_dir=REPO / "bench" / "out" / "embedders",
    )
    folder = cache_folder(items)
    started = time.perf_counter()
    try:
        cache = SemanticCache.load(folder, embedder)
        how = f"loaded from {folder.relative_to(REPO)}"
    except CacheFileError:
        print(
            f"building the cache of {len(items)} problems with {embedder.name} (vectors kept in "
            f"{VECTORS.relative_to(REPO)})",
            file=sys.stderr,
        )
        store = VectorStore(VECTORS)
        before = store.count(embedder.name, embedder.dim)
        cache = SemanticCache(embedder, store=store)
        cache.add_many(items)
        embedded = store.count(embedder.name, embedder.dim) - before
        cache.save(folder)
        how = f"built ({embedded} texts embedded with {embedder.name}, the rest from the store)"
    if len(cache) != len(items):
        raise SystemExit(f"the cache holds {len(cache)} of {len(items)} problems")
    cache.save(bankcache.cache_folder(var, embedder.name), feed_position=0)
    return cache, f"{how} in {time.perf_counter() - started:.1f} s"


def set_torch_threads(threads: int) -> int:
    """Torch's intra-op threads for the embedder (0: torch's default); returns the number in use.

    Measured on this 2-core machine while another process kept one core busy: one MiniLM embedding took
    250-360 ms with torch's default 2 threads (they spin-wait for each other) and 12 ms with 1 thread."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


# -- measuring ----------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def in_thread(fn, *args):
    """Run fn(*args) in a new thread, as the server runs a request's view, and return its result.

    Measured here: torch's encoder called from the main thread with its default 2 intra-op threads took
    ~300 ms per sentence on a busy 2-core machine, against ~15 ms from any other thread."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # re-raised in the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def time_lookups(cache, questions: list[tuple[str, int]], count: int) -> dict:
    for text, _ in questions[:10]:
        cache.lookup(text)  # warm-up
    times, errors = [], 0
    started = time.perf_counter()
    for i in range(count):
        text, expected = questions[i % len(questions)]
        t0 = time.perf_counter()
        decision = cache.lookup(text)
        times.append((time.perf_counter() - t0) * 1000.0)
        errors += not (decision.hit and decision.entry_id == str(expected))
    return {"times": times, "errors": errors, "wall": time.perf_counter() - started}


def served_only(cache, questions: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The questions that `cache` serves as a hit on their own problem (what the site must serve too)."""
    kept = []
    for text, expected in questions:
        decision = cache.lookup(text)
        if decision.hit and decision.entry_id == str(expected):
            kept.append((text, expected))
    return kept


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask(conn: http.client.HTTPConnection, token: str, text: str) -> tuple[int, bytes]:
    conn.request(
        "POST",
        "/api/ask",
        body=json.dumps({"question": text}, ensure_ascii=False).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    return response.status, response.read()


def check(status: int, body: bytes, expected: int) -> str | None:
    """None for a hit on the expected problem, else what went wrong."""
    if status != 200:
        return f"HTTP {status}"
    data = json.loads(body)
    if data.get("status") != "hit":
        return f"not a hit ({data.get('status')})"
    if data.get("match", {}).get("problem_id") != expected:
        return "hit on another problem"
    return None


def server_command(port: int, *, workers: int, server: str = "asgi") -> list[str]:
    """The README's production command on a loopback port ("asgi"), or the one the README gave before
    it moved to ASGI ("gthread": 16 threads per worker, no timeout), with `workers` worker processes."""
    gunicorn = [sys.executable, "-m", "gunicorn"]
    bind = ["-b", f"127.0.0.1:{port}"]
    if server == "asgi":
        return [
            *gunicorn, "-k", "uvicorn_worker.UvicornWorker", "--workers", str(workers),
            "--keep-alive", "5", *bind, "tutor.asgi:application",
        ]  # fmt: skip
    if server == "gthread":
        return [
            *gunicorn, "-k", "gthread", "--workers", str(workers), "--threads", "16",
            "--timeout", "0", *bind, "tutor.wsgi",
        ]  # fmt: skip
    raise ValueError(f"unknown server {server!r}")


def start_server(
    env: dict[str, str], port: int, log: Path, *, workers: int, server: str = "asgi"
) -> subprocess.Popen:
    """The server, its output in `log`. At LOG_LEVEL=INFO (here) each worker logs its loaded answer
    cache, which `wait_all_workers` waits for; the hit path logs nothing at that level."""
    command = server_command(port, workers=workers, server=server)
    return subprocess.Popen(
        command,
        cwd=REPO,
        env={**env, "LOG_LEVEL": "INFO"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def wait_ready(
    server: subprocess.Popen,
    port: int,
    token: str,
    question: tuple[str, int],
    log: Path,
    *,
    within: float = 300.0,
) -> dict:
    """Ask `question` until it is a hit on its problem: {"first_answer_s", "first_hit_s", "misses"}
    counted from now. An answer other than that hit before it (the cache still starting: a miss,
    refused here as no model is prepared) is counted, not an error; a hit on another problem is."""
    started = time.monotonic()
    first_answer = None
    misses = 0
    while time.monotonic() - started < within:
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            status, body = ask(conn, token, question[0])
            conn.close()
        except (OSError, http.client.HTTPException):
            time.sleep(0.2)
            continue
        first_answer = first_answer or time.monotonic() - started
        problem = check(status, body, question[1])
        if problem is None:
            return {
                "first_answer_s": first_answer,
                "first_hit_s": time.monotonic() - started,
                "misses": misses,
            }
        if problem in ("hit on another problem", "not a hit (suggest)") or status == 500:
            # The cache answered, and not with this problem: not a start still under way.
            raise SystemExit(f"the server's answer is wrong: {problem}: {body[:300]!r}")
        misses += 1
        time.sleep(0.5)
    raise SystemExit(f"no hit within {within:.0f} s ({misses} misses):\n{log.read_text()[-3000:]}")


CACHE_READY = re.compile(r"answer cache: \d+ problems (loaded|built)")


def wait_all_workers(
    server: subprocess.Popen,
    port: int,
    token: str,
    questions: list[tuple[str, int]],
    log: Path,
    workers: int,
    *,
    within: float = 300.0,
) -> None:
    """Ask from 4 x `workers` new connections at once, round after round, until each of the server's
    workers has logged its loaded cache: a worker starts its cache on its own first question, and the
    kernel gives a new connection to whichever worker accepts it first, so one question is not enough."""
    deadline = time.monotonic() + within

    def one(text: str) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            ask(conn, token, text)
            conn.close()
        except (OSError, http.client.HTTPException):
            pass

    while len(CACHE_READY.findall(log.read_text(errors="replace"))) < workers:
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"not every worker loaded its cache:\n{log.read_text()[-3000:]}")
        askers = [
            threading.Thread(target=one, args=(questions[i % len(questions)][0],))
            for i in range(4 * workers)
        ]
        for t in askers:
            t.start()
        for t in askers:
            t.join()


def run_clients(
    port: int, token: str, questions: list[tuple[str, int]], clients: int, total: int
) -> dict:
    """`clients` threads, each on its own keep-alive connection, `total` measured requests in all (each
    client first sends two unmeasured requests to open its connection)."""
    per_client = max(1, total // clients)
    times: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        rng = random.Random(index)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        wrong: dict[str, int] = {}
        for _ in range(2):
            text, _expected = rng.choice(questions)
            try:
                ask(conn, token, text)
            except (OSError, http.client.HTTPException):
                conn.close()
        ready.wait()
        # A new connection now, unmeasured: on a busy machine the warm-ups of the slowest client can
        # outlast the server's keep-alive (5 s; gthread 2 s), and a connection the server closed while
        # its client waited here fails its first request with a broken pipe (seen: 2 of 2 000).
        conn.close()
        conn.connect()
        for _ in range(per_client):
            text, expected = rng.choice(questions)
            t0 = time.perf_counter()
            try:
                status, body = ask(conn, token, text)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()  # http.client reconnects on the next request
                kind = f"transport: {type(exc).__name__}"
                wrong[kind] = wrong.get(kind, 0) + 1
                continue
            mine.append((time.perf_counter() - t0) * 1000.0)
            problem = check(status, body, expected)
            if problem:
                wrong[problem] = wrong.get(problem, 0) + 1
        conn.close()
        with lock:
            times.extend(mine)
            for kind, n in wrong.items():
                errors[kind] = errors.get(kind, 0) + n

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return {
        "times": times,
        "errors": errors,
        "wall": time.perf_counter() - started,
        "sent": per_client * clients,
    }


def embedded_model_dir() -> Path:
    """SmolLM2 prepared under bench/out/models (as bench/engine.py does; ~1 min the first time)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_engine", REPO / "bench" / "engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.embedded_model_dir(REPO / "bench" / "out" / "models")


def keep_generating(
    port: int, token: str, stop: threading.Event, started: list, index: int
) -> None:
    """One student whose questions always miss: ask, follow the live stream to its end, ask again."""
    n = 0
    while not stop.is_set():
        n += 1
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            text = f"Write a long story about the number {index * 100_000 + n} and its friends?"
            status, body = ask(conn, token, text)
            if status != 202:
                time.sleep(0.5)
                continue
            started.append(time.perf_counter())
            conn.request(
                "GET",
                f"/api/questions/{json.loads(body)['id']}/stream",
                headers={"Authorization": f"Bearer {token}"},
            )
            response = conn.getresponse()
            while not stop.is_set():
                line = response.readline()
                if not line or line.startswith(b'data: {"type": "done"'):
                    break
        except (OSError, http.client.HTTPException):
            time.sleep(0.5)
        finally:
            conn.close()


def hits_during_generation(
    env: dict, token: str, questions, live: int, per_level: dict, var: Path, workers: int
) -> dict:
    """Word-for-word hits at 1 and 10 clients while `live` students' answers are generated by SmolLM2
    through the site's own local engine service (the default: started by the server on the first miss)."""
    model = embedded_model_dir()
    label = "local engine service"
    out = {}
    server_env_live = {
        **env,
        "SUANJING_MODELS": str(model.parent),
        "SUANJING_MODEL": model.name,
        "SUANJING_MAX_NEW_TOKENS": "1024",
        "SUANJING_MAX_LIVE_JOBS": str(max(4, live)),
        "SUANJING_ENGINE_PORT": str(free_port()),
    }
    server_env_live.pop("SUANJING_ENGINE_URL", None)
    port = free_port()
    log = var / "gunicorn-live.log"
    server = start_server(server_env_live, port, log, workers=workers)
    stop = threading.Event()
    started: list[float] = []
    generators = [
        threading.Thread(target=keep_generating, args=(port, token, stop, started, i), daemon=True)
        for i in range(live)
    ]
    try:
        wait_ready(server, port, token, questions[0], log)
        wait_all_workers(server, port, token, questions[:8], log, workers)
        for g in generators:
            g.start()
        deadline = time.monotonic() + 120
        while len(started) < live and time.monotonic() < deadline:
            time.sleep(0.2)
        if len(started) < live:
            raise SystemExit(
                f"only {len(started)} of {live} live generations started:\n{log.read_text()[-2000:]}"
            )
        time.sleep(2)  # the generations are decoding now
        out[label] = {c: run_clients(port, token, questions, c, per_level[c]) for c in (1, 10)}
        out[label]["generations"] = len(started)
    finally:
        stop.set()
        stop_server(server)
        for g in generators:
            g.join(10)
    return out


# -- cold start -------------------------------------------------------------------------------------


def first_hits(
    server: subprocess.Popen,
    port: int,
    token: str,
    questions: dict,
    log: Path,
    *,
    spawned: float,
    within: float,
) -> dict:
    """Seconds from `spawned` (time.monotonic()) to the first answer and to the first hit of each
    question, asked in order."""
    out: dict = {}
    for name, question in questions.items():
        began = time.monotonic() - spawned
        left = within - began
        timing = wait_ready(server, port, token, question, log, within=max(1.0, left))
        out.setdefault("first_answer_s", began + timing["first_answer_s"])
        out[name] = {"first_hit_s": began + timing["first_hit_s"], "misses": timing["misses"]}
    return out


def cache_log_lines(log: Path) -> list[str]:
    return [
        line.strip()
        for line in log.read_text(errors="replace").splitlines()
        if "answer cache:" in line
    ]


def cold_start(n: int, database_url: str, within: float, workers: int) -> dict:
    """The very first start of the site on a bank of `n` problems, then the next start (see above)."""
    with tempfile.TemporaryDirectory(prefix="suanjing-bench-cold-") as tmp:
        var = Path(tmp)
        env = {**server_env(var, database_url), "LOG_LEVEL": "INFO"}
        for name in set(os.environ) - set(env):
            del os.environ[name]
        os.environ.update(env)
        sys.path.insert(0, str(REPO))
        import django

        django.setup()
        from django.db import connection

        from tutor.services import bankcache

        started = time.perf_counter()
        bank = make_bank(n)
        ids, token = fill_database(bank)
        insert_s = time.perf_counter() - started
        connection.close()
        # A problem of the first template, whose rewording the cache serves (a hit, not a suggestion).
        first = TEMPLATES[0][0].split("{")[0]
        pick = random.Random(11).choice([i for i, p in enumerate(bank) if p[0].startswith(first)])
        questions = {
            "word for word": (bank[pick][0], ids[pick]),
            "reworded": (bank[pick][3], ids[pick]),
        }
        folder = bankcache.cache_folder(var, "use-multilingual")
        runs = {}
        for run in ("very first start", "next start (saved cache)"):
            port = free_port()
            log = var / f"gunicorn-{len(runs)}.log"
            spawned = time.monotonic()
            server = start_server(env, port, log, workers=workers)
            try:
                result = first_hits(
                    server, port, token, questions, log, spawned=spawned, within=within
                )
                if run == "very first start":
                    while bankcache.saved_position(folder) is None:  # stop it once it has saved
                        if time.monotonic() - spawned > within:
                            raise SystemExit(f"no saved cache after {within:.0f} s")
                        time.sleep(1)
                    result["saved_s"] = time.monotonic() - spawned
            finally:
                stop_server(server)
            result["log"] = cache_log_lines(log)
            runs[run] = result
            print(f"{run}: {json.dumps(result, ensure_ascii=False)}", file=sys.stderr, flush=True)
        saved_mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
        store_mb = (var / "vectors.sqlite").stat().st_size / 1e6
    return {
        "n": n,
        "insert_s": insert_s,
        "runs": runs,
        "saved_mb": saved_mb,
        "store_mb": store_mb,
        "workers": workers,
    }


def print_cold_start(report: dict, database_url: str) -> None:
    n = report["n"]
    print(f"## Cold start of the site: {n:,} problems\n")
    print(
        f"Bank: {n:,} synthetic problems ({len(TEMPLATES)} templates), each with a verified answer, "
        f"inserted in {report['insert_s']:.0f} s into "
        f"{'PostgreSQL' if database_url else 'SQLite (WAL)'}; a new SUANJING_VAR. Server: the README's "
        f"`{' '.join(server_command(8000, workers=report['workers'])[2:])}`, DEBUG=False, the "
        "default embedder (USE-multilingual), no model (a miss is refused at once). Times from the "
        f"spawn of gunicorn; CPU cores: {os.cpu_count()}, shared with the asking loop. Saved cache "
        f"{report['saved_mb']:.0f} MB, vector store {report['store_mb']:.0f} MB.\n"
    )
    print(
        "| start | first answer | first hit, word for word | first hit, reworded | misses before |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, r in report["runs"].items():
        print(
            f"| {name} | {r['first_answer_s']:.1f} s | {r['word for word']['first_hit_s']:.1f} s | "
            f"{r['reworded']['first_hit_s']:.1f} s | {r['word for word']['misses']} |"
        )
    for name, r in report["runs"].items():
        extra = f" (cache saved {r['saved_s']:.0f} s after the spawn)" if "saved_s" in r else ""
        print(f"\n{name}{extra}, the site's log:")
        for line in r["log"]:
            print(f"    {line}")


# -- the report ---------------------------------------------------------------------------------------


def summary(result: dict) -> tuple[float, float, int, int, float]:
    """(p50 ms, p99 ms, errors, requests, requests per second) of one row."""
    times = result["times"]
    errors = (
        result["errors"] if isinstance(result["errors"], int) else sum(result["errors"].values())
    )
    requests = result.get("sent", len(times))
    rate = requests / result["wall"] if result["wall"] > 0 else 0.0
    return percentile(times, 50), percentile(times, 99), errors, requests, rate


def row(
    what: str,
    clients: int,
    result: dict,
    base: tuple[float, float],
    named: tuple[float, float] | None = None,
) -> str:
    """One table row: its ratios to the lookup baseline `base` and to the named baseline server's row
    `named` (the gthread server at the same clients), "–" when there is none."""
    p50, p99, errors, requests, rate = summary(result)
    vs = f"{p50 / named[0]:.2f}× | {p99 / named[1]:.2f}×" if named else "– | –"
    return (
        f"| {what} | {clients} | {requests} | {errors} | {p50:.2f} | {p99:.2f} | {rate:.0f} "
        f"| {p50 / base[0]:.1f}× | {p99 / base[1]:.1f}× | {vs} |"
    )


def verdicts(results: dict, clients: list[int], workers: int, live: dict) -> list[str]:
    """Issue 11's targets against the README's server's rows, each met / NOT met / not measured."""
    out = []
    for (name, c), (p50_max, p99_max) in TARGETS.items():
        bound = f"p50 <= {p50_max:.0f} ms" + (f", p99 <= {p99_max:.0f} ms" if p99_max else "")
        if c not in clients:
            out.append(f"{name} at {c} clients ({bound}): not measured")
            continue
        p50, p99, *_ = summary(results[name][c])
        met = p50 <= p50_max and (p99_max is None or p99 <= p99_max)
        out.append(
            f"{name} at {c} clients ({bound}): {'met' if met else 'NOT met'} "
            f"(p50 {p50:.1f} ms, p99 {p99:.1f} ms)"
        )
    if 50 in clients:
        errors = sum(summary(results[name][50])[2] for name in QUESTION_SETS)
        out.append(f"50 clients, no errors: {'met' if not errors else 'NOT met'} ({errors} errors)")
    else:
        out.append("50 clients, no errors: not measured")
    for label, by_clients in live.items():
        p50 = summary(by_clients[10])[0]
        met = p50 <= TARGET_LIVE_P50_MS
        out.append(
            f"word for word at 10 clients while answers stream ({label}, p50 <= "
            f"{TARGET_LIVE_P50_MS:.0f} ms): {'met' if met else 'NOT met'} (p50 {p50:.1f} ms)"
        )
    if workers < TARGET_MIN_WORKERS:
        out = [
            f"{v} [the targets are for {TARGET_MIN_WORKERS}+ workers; this run has {workers}]"
            for v in out
        ]
    return out


def parse_clients(value: str) -> list[int]:
    try:
        clients = sorted({int(part) for part in value.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give numbers such as 1,10,50") from None
    if not clients or clients[0] < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give numbers of 1 or more")
    return clients


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 000 problems and fewer requests")
    parser.add_argument(
        "--problems", type=int, default=None, help="bank size (default 10 000; quick 1 000)"
    )
    parser.add_argument(
        "--requests", type=int, default=None, help="measured requests per concurrency level"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="web worker processes of the server (gunicorn --workers; default 2, as the README)",
    )
    parser.add_argument(
        "--clients",
        type=parse_clients,
        default=list(CONCURRENCY),
        help="concurrent clients per level, comma-separated (default 1,10,50)",
    )
    parser.add_argument(
        "--gthread-baseline",
        action="store_true",
        help="also measure the README's former server (gunicorn gthread on tutor.wsgi, same --workers) "
        "in this run, as the named baseline of the ASGI rows",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads for MiniLM, here and in the server (0: torch's default; see set_torch_threads)",
    )
    parser.add_argument(
        "--database-url", default="", help="a scratch PostgreSQL database (default: temp SQLite)"
    )
    parser.add_argument(
        "--live",
        type=int,
        default=0,
        help="also measure hits while this many live generations stream (SmolLM2, through the site's "
        "local engine service)",
    )
    parser.add_argument(
        "--cold-start",
        action="store_true",
        help="measure the site's cold start instead (see above)",
    )
    parser.add_argument(
        "--cold-problems", type=int, default=100_000, help="bank size for --cold-start"
    )
    parser.add_argument(
        "--cold-within",
        type=float,
        default=4 * 3600.0,
        help="give up a start after this many seconds",
    )
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be 1 or more")
    if args.cold_start:
        report = cold_start(args.cold_problems, args.database_url, args.cold_within, args.workers)
        print_cold_start(report, args.database_url)
        return
    n = args.problems or (1000 if args.quick else 10_000)
    clients = args.clients
    per_level = {
        c: args.requests or (c * 10 if args.quick else max(500, c * 100)) for c in {*clients, 1, 10}
    }
    per_level[1] = args.requests or (100 if args.quick else 500)
    lookups = 200 if args.quick else 1000
    servers = ["gthread", "asgi"] if args.gthread_baseline else ["asgi"]

    with tempfile.TemporaryDirectory(prefix="suanjing-bench-site-") as tmp:
        var = Path(tmp)
        env = server_env(var, args.database_url)
        for name in set(os.environ) - set(env):
            del os.environ[name]
        os.environ.update(env)
        sys.path.insert(0, str(REPO))
        import django

        django.setup()
        from django.db import connection

        started = time.perf_counter()
        bank = make_bank(n)
        ids, token = fill_database(bank)
        insert_s = time.perf_counter() - started
        items = [(str(pk), text) for pk, (text, *_) in zip(ids, bank, strict=True)]
        torch_threads = set_torch_threads(args.torch_threads)
        cache, cache_note = in_thread(build_cache, items, var)
        sample = random.Random(7).sample(list(zip(ids, bank, strict=True)), min(n, 2000))
        reworded = [(reworded, pk) for pk, (_t, _a, _l, reworded) in sample]
        question_sets = {
            "word for word": [(text, pk) for pk, (text, *_) in sample],
            "reworded": in_thread(served_only, cache, reworded),
        }
        if not question_sets["reworded"]:
            raise SystemExit("the cache serves none of the rewordings as a hit")

        # Baselines first, while no server is running: the cache alone, one question at a time.
        baselines = {
            name: in_thread(time_lookups, cache, questions, lookups)
            for name, questions in question_sets.items()
        }
        del cache
        connection.close()

        results: dict[str, dict] = {}
        ready_s: dict[str, float] = {}
        warm_up = [q for questions in question_sets.values() for q in questions[:4]]
        for kind in servers:  # one server at a time, so that each has the cores to itself
            port = free_port()
            log = var / f"gunicorn-{kind}.log"
            server = start_server(env, port, log, workers=args.workers, server=kind)
            try:
                ready_s[kind] = wait_ready(
                    server, port, token, question_sets["word for word"][0], log
                )["first_hit_s"]
                wait_all_workers(server, port, token, warm_up, log, args.workers)
                results[kind] = {
                    name: {c: run_clients(port, token, questions, c, per_level[c]) for c in clients}
                    for name, questions in question_sets.items()
                }
            finally:
                stop_server(server)
        live = (
            hits_during_generation(
                env, token, question_sets["word for word"], args.live, per_level, var, args.workers
            )
            if args.live
            else {}
        )

    database = (
        "PostgreSQL (--database-url)" if args.database_url else "SQLite (WAL), temporary file"
    )
    print(
        f"## Cache hit through `POST /api/ask`: {n:,} problems{' (quick)' if args.quick else ''}\n"
    )
    described = "; ".join(
        f"{SERVERS[kind]}: `{' '.join(server_command(8000, workers=args.workers, server=kind)[2:])}`, "
        f"first hit {ready_s[kind]:.1f} s after it was spawned"
        for kind in servers
    )
    print(
        f"Bank: {n} synthetic problems from {len(TEMPLATES)} templates, each with a verified answer; "
        f"inserted in {insert_s:.1f} s into {database}. Cache: {len(items)} entries, {cache_note}. "
        f"Server ({args.workers} web worker{'s' if args.workers > 1 else ''}, DEBUG=False, each "
        f"worker's saved cache loaded and reconciled with the database before measuring): {described}. "
        f"Clients: threads of the benchmark process on keep-alive "
        f"loopback connections with a student's Bearer token; CPU cores: {os.cpu_count()}; torch "
        f"threads for MiniLM: {torch_threads} (--torch-threads {args.torch_threads}, same in the "
        f"server). Questions: {len(sample)} banked problems, asked "
        + "; ".join(f"{name}: {how}" for name, how in QUESTION_SETS.items())
        + f" ({len(question_sets['reworded'])} of the {len(reworded)} rewordings, those the cache "
        "serves as a hit on their problem)"
        + ". Each row's ratios are against the lookup baseline of its own question set"
        + (", and against the gthread server at the same clients" if args.gthread_baseline else "")
        + ".\n"
    )
    print(
        "| questions | what | clients | requests | errors | p50 ms | p99 ms | req/s "
        "| p50 / lookup p50 | p99 / lookup p99 | p50 / gthread p50 | p99 / gthread p99 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    all_errors: dict[str, int] = {}
    for name in QUESTION_SETS:
        baseline = baselines[name]
        base = (percentile(baseline["times"], 50), percentile(baseline["times"], 99))
        print(f"| {name} " + row("`SemanticCache.lookup` alone (baseline)", 1, baseline, base))
        if baseline["errors"]:
            all_errors[f"{name}: baseline misses"] = baseline["errors"]
        for c in clients:
            named = None
            if "gthread" in results:
                named = summary(results["gthread"][name][c])[:2]
            for kind in servers:
                what = f"`POST /api/ask` (hit), {SERVERS[kind]} × {args.workers}"
                result = results[kind][name][c]
                print(f"| {name} " + row(what, c, result, base, named if kind == "asgi" else None))
                for problem, count in result["errors"].items():
                    key = f"{name}, {kind}: {problem}"
                    all_errors[key] = all_errors.get(key, 0) + count
    for label, by_clients in live.items():
        base = (
            percentile(baselines["word for word"]["times"], 50),
            percentile(baselines["word for word"]["times"], 99),
        )
        for c in (1, 10):
            print(
                f"| word for word, {args.live} live generations streaming, {label} "
                + row(
                    f"`POST /api/ask` (hit), {SERVERS['asgi']} × {args.workers}",
                    c,
                    by_clients[c],
                    base,
                )
            )
            for kind, count in by_clients[c]["errors"].items():
                key = f"live, {label}: {kind}"
                all_errors[key] = all_errors.get(key, 0) + count
    total_errors = sum(all_errors.values())
    print("\nIssue 11's targets, on the README's server:")
    for verdict in verdicts(results["asgi"], clients, args.workers, live):
        print(f"- {verdict}")
    print(f"- {total_errors} errors in all" + (f": {all_errors}" if all_errors else ""))
    if total_errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
