"""Live answers across real processes: two web processes (`manage.py runserver --noreload`, as two
gunicorn workers behind a proxy would be) share one SQLite file and one engine service
(`python -m solver serve` on the embedded SmolLM2, reached by SUANJING_ENGINE_URL), on loopback.

A stream follows a generation another process runs; two students asking the same new question on the
two processes share one generation; kill -9 of the process running a generation mid-stream leaves a
follower on the other process going on (it takes the generation over), a client that was streaming
from the dead one reconnects to the other with Last-Event-ID, and the answer is stored once; Stop sent
to one process cancels a generation the other runs; a generation nobody watches is cancelled.
The same paths in one process, with the fine print, are in tests/test_site_live.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
STUDENTS = ("alice", "bob", "carol", "dave", "erin", "frank")
BANKED = "What is 2 + 3?"
# SmolLM2 ends this one with a final answer within ~100 tokens (3 seeds of 3 at its temperature).
ANSWERED = "A shop sells pens at 3 yuan each. How much do 4 pens cost?"
# Long answers (they end at MAX_NEW_TOKENS), each with other numbers, so that none is a hit or a
# suggestion for another once stored.
LONG = (
    "Write a very long story about the numbers one to one hundred, one paragraph for each number."
)
STOPPED = "Tell me a long tale of a dragon who collects 77 golden coins, describing every coin."
# SmolLM2 writes on for 1,000-2,000 tokens here (its lines differ, so the loop guard lets it run): far past
# the orphan delay, where the desert journey of before sometimes ended in 150 tokens, before anyone could
# call it orphaned.
UNWATCHED = "Write the multiplication tables from 1 to 30, every line written out in full."
KILLED = "Write a long poem about 50 ships sailing the sea, a stanza for each ship."
MAX_NEW_TOKENS = 160


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return predicate()


@pytest.fixture(scope="module")
def model(request):
    """The embedded SmolLM2: the one setup.sh prepared in models/, else prepared for this run."""
    from solver.modelstore import ModelError, ModelStore

    try:
        return ModelStore(REPO / "models").default("smollm2-135m-instruct")
    except ModelError:
        return request.getfixturevalue("embedded_model")


@pytest.fixture(scope="module")
def engine_url(model):
    from solver.remote import start_local_service

    process, url = start_local_service(model.path, extra_args=["--threads", "2"], timeout=300)
    yield url
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


class Site:
    """One web process of the site."""

    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name, self.env, self.logs = name, env, logs
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """How this web process is started (here `runserver`; tests/test_asgi_streams.py: gunicorn)."""
        return [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}"]

    def start(self) -> None:
        self.port = free_port()
        log = open(self.logs / f"{self.name}.log", "ab")
        self.process = subprocess.Popen(
            self.command(),
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

        def up() -> bool:
            assert self.process.poll() is None, f"{self.name} exited: see {self.logs}"
            try:
                return httpx.get(self.url + "/", timeout=2).status_code < 500
            except httpx.HTTPError:
                return False

        assert wait_until(up, 120, 0.25), f"{self.name} did not start: see {self.logs}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Cluster:
    def __init__(self, var: Path, tokens: dict[str, str], a: Site, b: Site) -> None:
        self.var, self.tokens, self.a, self.b = var, tokens, a, b

    def db(self, sql: str, *args) -> list[tuple]:
        with sqlite3.connect(self.var / "suanjing.sqlite3", timeout=10) as conn:
            return conn.execute(sql, args).fetchall()

    def headers(self, student: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[student]}", **extra}

    def ask(self, site: Site, student: str, text: str) -> httpx.Response:
        return httpx.post(
            site.url + "/api/ask",
            json={"question": text},
            headers=self.headers(student),
            timeout=120,
        )

    def generation(self, question_id: int) -> dict:
        rows = self.db(
            "SELECT g.id, g.status, g.owner, g.events, g.generated, g.cancel_requested, g.key "
            "FROM tutor_livegeneration g JOIN tutor_question q ON q.live_id = g.id WHERE q.id = ?",
            question_id,
        )
        keys = ("id", "status", "owner", "events", "generated", "cancel_requested", "key")
        return dict(zip(keys, rows[0], strict=True)) if rows else {}

    def question(self, question_id: int) -> dict:
        outcome, error, solution = self.db(
            "SELECT outcome, error, solution_id FROM tutor_question WHERE id = ?", question_id
        )[0]
        return {"outcome": outcome, "error": error, "solution_id": solution}


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


def start_cluster(var: Path, engine_url: str, model, **extra_env: str) -> Cluster:
    env = {
        **os.environ,
        "SUANJING_VAR": str(var),
        "DEBUG": "True",
        "SECRET_KEY": "test-only-key",
        "SUANJING_MODELS": str(Path(model.path).parent),
        "SUANJING_MODEL": model.manifest.name,
        "SUANJING_ENGINE_URL": engine_url,
        "SUANJING_ENGINE_PORT": str(free_port()),  # never the machine's own local service
        "SUANJING_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS),
        "SUANJING_LIVE_ORPHAN_S": "1",  # cancelled after live.ORPHAN_FLOOR_S (5 s) unwatched
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)  # the default path: polling the database
    env.update(extra_env)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=300)
    out = subprocess.run(
        [*manage, "shell", "-c", SETUP % (STUDENTS, BANKED)],
        cwd=REPO,
        env=env,
        check=True,
        timeout=300,
        capture_output=True,
        text=True,
    ).stdout
    tokens = json.loads(out.split("TOKENS", 1)[1])
    a, b = Site("A", env, var), Site("B", env, var)
    made = Cluster(var, tokens, a, b)
    for site in (a, b):  # one after the other: the first start prepares the embedder's files
        site.start()
        assert made.ask(site, "frank", BANKED).json()["status"] == "hit"  # the cache is loaded
    return made


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, engine_url, model):
    made = start_cluster(tmp_path_factory.mktemp("var"), engine_url, model)
    yield made
    made.a.stop()
    made.b.stop()


@pytest.fixture
def sites(cluster):
    """The two processes, restarted if a test killed one."""
    for site in (cluster.a, cluster.b):
        if not site.alive():
            site.start()
    return cluster


class Follower:
    """A client reading a question's stream on one site, in a thread: (seq, event) as they come."""

    def __init__(self, cluster: Cluster, site: Site, student: str, question_id: int, after=None):
        self.events: list[tuple[int | None, dict]] = []
        self.times: list[float] = []  # when each event arrived (monotonic)
        self.error: Exception | None = None
        self.ended = threading.Event()
        headers = cluster.headers(student, Accept="text/event-stream")
        if after is not None:
            headers["Last-Event-ID"] = str(after)
        self._args = (f"{site.url}/api/questions/{question_id}/stream", headers)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        url, headers = self._args
        seq = None
        try:
            with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(60, read=60)) as r:
                assert r.status_code == 200, r.status_code
                for line in r.iter_lines():
                    if line.startswith("id: "):
                        seq = int(line[4:])
                    elif line.startswith("data: "):
                        self.events.append((seq, json.loads(line[6:])))
                        self.times.append(time.monotonic())
                        seq = None
        except Exception as exc:  # the process we read from was killed
            self.error = exc
        finally:
            self.ended.set()

    @property
    def pieces(self) -> list[tuple[int, dict]]:
        return [(seq, e) for seq, e in self.events if e["type"] != "done"]

    @property
    def done(self) -> dict | None:
        return next((e for _, e in self.events if e["type"] == "done"), None)

    def wait(self, timeout: float) -> dict:
        assert self.ended.wait(timeout), "the stream did not end"
        assert self.error is None, repr(self.error)
        assert self.done is not None, self.events[-3:]
        return self.done


def cross_process_lag(sites: Cluster, gen: dict, followers: list[Follower], how: str) -> float:
    """The median delay of a piece on the follower in the other process than the owner's (s)."""
    mine = 0 if f":{sites.a.process.pid}:" in gen["owner"] else 1
    n = len(followers[0].pieces)
    lags = sorted(followers[1 - mine].times[i] - followers[mine].times[i] for i in range(n))
    median = lags[n // 2]
    print(
        f"cross-process lag, {how}, {n} pieces: median {median * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms"
    )
    return median


def numbered_once(pieces: list[tuple[int, dict]]) -> bool:
    return [seq for seq, _ in pieces] == list(range(1, len(pieces) + 1))


def test_a_stream_follows_on_b_what_a_runs_and_b_then_hits(sites):
    asked = sites.ask(sites.a, "alice", ANSWERED)
    assert asked.status_code == 202, asked.text
    qid = asked.json()["id"]
    follower = Follower(sites, sites.b, "alice", qid)
    done = follower.wait(240)
    assert follower.pieces and numbered_once(follower.pieces)
    gen = sites.generation(qid)
    assert gen["status"] == "done" and f":{sites.a.process.pid}:" in gen["owner"]
    assert "".join(e["text"] for _, e in follower.pieces) == gen["generated"]
    assert done["status"] == "answered", done  # SmolLM2 wrote a final answer
    hit = sites.ask(sites.b, "bob", ANSWERED).json()
    assert hit["status"] == "hit" and hit["answer"]["solution_id"] == done["answer"]["solution_id"]


def test_the_same_new_question_on_a_and_b_shares_one_generation(sites):
    first = sites.ask(sites.a, "carol", LONG)
    second = sites.ask(sites.b, "dave", LONG.lower())  # the same question key
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    followers = [
        Follower(sites, sites.a, "carol", first.json()["id"]),
        Follower(sites, sites.b, "dave", second.json()["id"]),
    ]
    dones = [f.wait(300) for f in followers]
    gen = sites.generation(first.json()["id"])
    assert sites.generation(second.json()["id"])["id"] == gen["id"]
    assert sites.db("SELECT count(*) FROM tutor_livegeneration WHERE key = ?", gen["key"]) == [(1,)]
    assert dones[0]["problem_id"] == dones[1]["problem_id"] is not None
    problem = dones[0]["problem_id"]
    assert sites.db("SELECT count(*) FROM tutor_solution WHERE problem_id = ?", problem) == [(1,)]
    assert followers[0].pieces == followers[1].pieces and numbered_once(followers[0].pieces)
    # How much later a piece reaches the process that polls the database than the owner's own
    # follower, which is woken at once.
    median = cross_process_lag(sites, gen, followers, "polling the database")
    assert median < 1.0


def test_stop_on_b_cancels_a_generation_a_runs(sites):
    asked = sites.ask(sites.a, "erin", STOPPED)
    qid = asked.json()["id"]
    follower = Follower(sites, sites.a, "erin", qid)
    assert wait_until(lambda: len(follower.pieces) >= 2, 120)
    stopped = httpx.post(
        f"{sites.b.url}/api/questions/{qid}/stop", headers=sites.headers("erin"), timeout=30
    )
    assert stopped.status_code == 200 and stopped.json()["status"] == "failed"
    started = time.monotonic()
    assert wait_until(lambda: sites.generation(qid)["status"] == "cancelled", 30)
    assert time.monotonic() - started < 5  # A saw it at a flush, not at the end of the generation
    assert follower.wait(30)["status"] == "failed"
    assert sites.question(qid)["error"].startswith("You stopped")
    assert f":{sites.a.process.pid}:" in sites.generation(qid)["owner"]


def test_a_generation_nobody_watches_is_cancelled(sites):
    # A third process on the same database and engine whose budget outlasts the orphan delay: with
    # the cluster's 160 tokens a quiet machine ends the generation before anyone could call it
    # orphaned, and the test would prove nothing.
    site = Site("C", {**sites.a.env, "SUANJING_MAX_NEW_TOKENS": "4000"}, sites.var)
    site.start()
    try:
        asked = sites.ask(site, "frank", UNWATCHED)
        assert asked.status_code == 202, asked.text
        qid = asked.json()["id"]
        # Nobody streams or polls: after SUANJING_LIVE_ORPHAN_S (at least live.ORPHAN_FLOOR_S) C
        # cancels it, long before 4000 tokens.
        assert wait_until(lambda: sites.generation(qid).get("status") == "cancelled", 60, 0.5), (
            sites.generation(qid)
        )
        question = sites.question(qid)
        assert question["outcome"] == "failed" and "cancelled" in question["error"]
    finally:
        site.stop()


def test_kill_9_of_the_owner_mid_stream_the_other_process_takes_over(sites):
    asked = sites.ask(sites.a, "bob", KILLED)
    assert asked.status_code == 202, asked.text
    qid = asked.json()["id"]
    on_b = Follower(sites, sites.b, "bob", qid)  # a student whose stream goes through B
    on_a = Follower(sites, sites.a, "bob", qid)  # one whose stream goes through A, which dies
    assert wait_until(lambda: len(on_a.pieces) >= 3, 180), "A streamed nothing"
    owner = sites.generation(qid)["owner"]
    assert f":{sites.a.process.pid}:" in owner
    sites.a.kill()
    killed_at = time.monotonic()
    assert on_a.ended.wait(10) and on_a.done is None  # that stream broke
    # The browser reconnects (to any worker) from the last event it had.
    last = on_a.pieces[-1][0]
    resumed = Follower(sites, sites.b, "bob", qid, after=last)
    done = on_b.wait(300)
    assert resumed.wait(60) == done
    gen = sites.generation(qid)
    assert gen["status"] == "done" and f":{sites.b.process.pid}:" in gen["owner"]
    # Pieces A flushed before it died arrive within a poll; the next ones come from B's takeover.
    resumed_at = next(t for t in on_b.times if t > killed_at + 1.0)
    print(f"kill -9 -> the next piece on B: {resumed_at - killed_at:.1f} s (lease 6 s)")
    # The follower on B saw one stream: every event once, in order, no gap at the takeover.
    assert numbered_once(on_b.pieces) and on_b.pieces[-1][0] == gen["events"]
    assert "".join(e["text"] for _, e in on_b.pieces) == gen["generated"]
    assert len(gen["generated"]) > len("".join(e["text"] for _, e in on_a.pieces))  # it went on
    # The reconnected client: what it had from A, then the rest from B, with nothing twice.
    assert on_a.pieces + resumed.pieces == on_b.pieces
    # Stored once.
    assert sites.db(
        "SELECT count(*) FROM tutor_solution WHERE problem_id = ?", done["problem_id"]
    ) == [(1,)]
    assert sites.question(qid)["solution_id"] is not None


# -- the ask page in a real browser, behind a proxy that fails over --------------------------------

CHROMIUM = "/usr/bin/chromium"
BROWSER_QUESTION = (
    "Write a long song about 30 trains crossing the mountains, a verse for each train."
)


class FailoverProxy:
    """A TCP proxy in front of the two processes: each new connection goes to the first one alive (A,
    then B), as a load balancer fails over when a worker dies."""

    def __init__(self, backends: list[Site]) -> None:
        self.backends = backends
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        for site in self.backends:
            if site.alive():
                try:
                    upstream = socket.create_connection(("127.0.0.1", site.port), 2)
                    upstream.settimeout(None)  # the 2 s were for connecting; a stream waits longer
                    break
                except OSError:
                    continue
        if upstream is None:
            client.close()
            return

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    def close(self) -> None:
        self.listener.close()


# Keeps the longest text the live section showed (ask.js clears it when the answer arrives).
RECORD_STREAM = """() => {
  window.__seen = "";
  const reasoning = document.getElementById("reasoning");
  const answer = document.getElementById("answer-stream");
  new MutationObserver(() => {
    const text = reasoning.textContent + answer.textContent;
    if (text.length >= window.__seen.length) window.__seen = text;
  }).observe(document.getElementById("live"), {subtree: true, childList: true, characterData: true});
}"""


def test_the_ask_page_reconnects_to_the_other_process_when_its_own_dies(sites):
    if not Path(CHROMIUM).exists():
        pytest.skip("apt-get install -y chromium fonts-wqy-microhei")
    from playwright.sync_api import sync_playwright

    proxy = FailoverProxy([sites.a, sites.b])
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page()
            page.goto(proxy.url + "/accounts/login/")
            page.fill("input[name=username]", "carol")
            page.fill("input[name=password]", "a-long-password-carol")
            page.click("button[type=submit]")
            page.wait_for_url(proxy.url + "/")
            page.goto(proxy.url + "/ask")
            page.evaluate(RECORD_STREAM)
            page.fill("#question", BROWSER_QUESTION)
            page.click("#ask-button")
            # Polled from here: the site's CSP (script-src 'self') refuses wait_for_function's eval.
            assert wait_until(lambda: page.evaluate("() => window.__seen.length") > 20, 180, 0.2)
            (qid,) = sites.db(
                "SELECT q.id FROM tutor_question q JOIN auth_user u ON u.id = q.user_id "
                "WHERE u.username = 'carol' ORDER BY q.id DESC LIMIT 1"
            )[0]
            assert f":{sites.a.process.pid}:" in sites.generation(qid)["owner"]
            sites.a.kill()  # the page's stream (and the generation's owner) dies with it
            page.wait_for_selector("#answer-html .answer-block", timeout=240_000)
            seen = page.evaluate("window.__seen")
            status = page.inner_text("#live-status")
            browser.close()
    finally:
        proxy.close()
    gen = sites.generation(qid)
    assert gen["status"] == "done" and f":{sites.b.process.pid}:" in gen["owner"]
    # The page showed the whole text once: what A streamed, then what B did after its takeover.
    assert seen == gen["generated"] and len(seen) > 20
    assert "Reconnecting" not in status


# -- Redis wake-ups ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False

    assert wait_until(up, 10)
    yield f"redis://127.0.0.1:{port}/0"
    server.kill()
    server.wait(10)


def test_with_redis_the_other_process_is_woken_at_once(
    tmp_path_factory, engine_url, model, redis_url
):
    sites = start_cluster(
        tmp_path_factory.mktemp("var-redis"), engine_url, model, REDIS_URL=redis_url
    )
    try:
        asked = sites.ask(sites.a, "carol", LONG)
        qid = asked.json()["id"]
        followers = [Follower(sites, site, "carol", qid) for site in (sites.a, sites.b)]
        for follower in followers:
            follower.wait(300)
        assert followers[0].pieces == followers[1].pieces and numbered_once(followers[0].pieces)
        median = cross_process_lag(sites, sites.generation(qid), followers, "Redis pub/sub")
        assert median < 0.05  # polling alone gives about POLL_S / 2 (75 ms)
    finally:
        sites.a.stop()
        sites.b.stop()
