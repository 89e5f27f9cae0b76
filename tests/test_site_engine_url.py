"""The site reaches its engine by URL: a service elsewhere (SUANJING_ENGINE_URL), or the one local
`python -m solver serve` that the first process needing it starts and every other process of the same
SUANJING_VAR finds — and the site survives that service dying.

Real services throughout (the tiny random Qwen2, and the embedded SmolLM2 where a generation must be
long or readable); the only stand-ins are programs that are NOT an engine service (a foreign listener on
the port, a server naming its model strangely), which is what those tests are about. Loopback, free ports.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.db.models import Count
from django.test import Client

from solver.engine import GenerationParams
from solver.remote import start_local_service
from tests.site_fixtures import *  # noqa: F403
from tutor.errors import EngineUnavailable
from tutor.models import PrecomputeRun, Problem, Question, RunItem, Solution
from tutor.services import precompute, runtime

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
GREEDY_8 = GenerationParams(max_new_tokens=8, greedy=True, ignore_eos=True)
LONG = "Write a very long story about a rabbit who counts every star in the sky, one by one."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (ProcessLookupError, OSError):
        return False


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def ask(client: Client, text: str):
    return client.post(
        "/api/ask", data=json.dumps({"question": text}), content_type="application/json"
    )


def outcome(question_id: int) -> str:
    return Question.objects.get(pk=question_id).outcome


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def alice(cast):
    client = Client()
    client.force_login(cast.alice)
    return client


@pytest.fixture
def local(site, settings, tmp_path):
    """The site with no SUANJING_ENGINE_URL: its own local service, on a port of this test, in a
    SUANJING_VAR of this test; the service is stopped afterwards."""

    def configure(model) -> None:
        settings.SUANJING_MODELS = str(model.path.parent)
        settings.SUANJING_MODEL = model.manifest.name
        settings.SUANJING_THREADS = 2
        settings.SUANJING_KV_CACHE_GB = 0.5

    settings.VAR_DIR = tmp_path
    settings.SUANJING_ENGINE_URL = ""
    settings.SUANJING_ENGINE_PORT = free_port()
    yield configure
    runtime.stop_local_service()


# -- a service elsewhere, by URL ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_miss_is_generated_by_a_service_at_the_url_and_stored(
    site, settings, alice, embedded_model
):
    process, url = start_local_service(
        embedded_model.path, extra_args=["--threads", "2", "--kv-cache-gb", "0.5"], timeout=300
    )
    try:
        settings.SUANJING_ENGINE_URL = url
        settings.SUANJING_MODELS = str(embedded_model.path.parent)
        settings.SUANJING_MAX_NEW_TOKENS = 48
        response = ask(alice, "What is 2 + 3?")
        assert response.status_code == 202, response.content
        qid = response.json()["id"]
        assert wait_until(lambda: outcome(qid) != "generating", 120)
        question = Question.objects.get(pk=qid)
        solution = question.solution
        assert solution is not None, question.error  # generated and stored (right or wrong)
        assert (solution.source, solution.model_name, solution.manifest_id) == (
            "live",
            embedded_model.manifest.name,
            embedded_model.manifest.manifest_id,  # the served model is one of ours: its manifest
        )
        assert 0 < solution.new_tokens <= 48 and solution.prompt_version == "chatml/1"
        engine, manifest = runtime.get_engine()
        assert engine.base_url == url and manifest.weak_at_math  # SmolLM2 says it is weak at math
        # Served by a machine that does not hold the model: a manifest of the served model, by name.
        runtime.reset()
        settings.SUANJING_MODELS = "/nonexistent-suanjing-models"
        _, remote_manifest = runtime.get_engine()
        assert remote_manifest.name == embedded_model.manifest.name
        assert remote_manifest.family == "chatml" and remote_manifest.weak_at_math
        assert remote_manifest.manifest_id not in ("", embedded_model.manifest.manifest_id)
    finally:
        stop(process)
    # The service is gone: the next miss is refused in a sentence, and the site goes on.
    runtime.reset()
    refused = ask(alice, "What is 7 + 8?")
    assert refused.status_code == 503
    assert "SUANJING_ENGINE_URL" in refused.json()["error"]


class _Models(BaseHTTPRequestHandler):
    """An OpenAI-compatible model list naming `name`: what another server might say."""

    name = "x"

    def do_GET(self):  # noqa: N802
        body = json.dumps({"object": "list", "data": [{"id": self.name}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def other_server():
    servers = []

    def serve(name: str) -> str:
        handler = type("Named", (_Models,), {"name": name})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_served_model_is_named_to_a_prompt_family_or_refused(site, settings, other_server):
    settings.SUANJING_ENGINE_URL = other_server("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    _, manifest = runtime.get_engine()
    assert (manifest.family, manifest.prompt_version, manifest.weak_at_math) == (
        "r1-distill",
        "r1-distill/1",
        False,
    )
    runtime.reset()
    settings.SUANJING_ENGINE_URL = other_server("llama-3.2-3b-instruct")
    with pytest.raises(EngineUnavailable, match="SUANJING_ENGINE_FAMILY"):
        runtime.get_engine()
    settings.SUANJING_ENGINE_FAMILY = "chatml"
    _, manifest = runtime.get_engine()
    assert manifest.family == "chatml" and manifest.name == "llama-3.2-3b-instruct"
    runtime.reset()
    settings.SUANJING_ENGINE_FAMILY = "alpaca"
    with pytest.raises(EngineUnavailable, match="unknown prompt family"):
        runtime.get_engine()
    settings.SUANJING_ENGINE_FAMILY = ""
    # A name from outside is stored with every answer: plain names only.
    settings.SUANJING_ENGINE_URL = other_server("<script>" + "x" * 200)
    with pytest.raises(EngineUnavailable, match="plain name"):
        runtime.get_engine()
    settings.SUANJING_ENGINE_URL = other_server("deepseek-r1")
    settings.SUANJING_MODEL = "another-model"
    with pytest.raises(EngineUnavailable, match="not 'another-model'"):
        runtime.get_engine()


# -- the local service ---------------------------------------------------------------------------------


def _raw_listener(reply: bytes) -> tuple[socket.socket, threading.Thread]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(reply)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return listener, thread


@pytest.mark.parametrize(
    "reply",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",  # not HTTP at all
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nServer: suanjing Python/3.11\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    ],
    ids=["not-http", "another-server", "no-health"],
)
def test_a_foreign_program_on_the_port_is_refused_with_a_sentence(
    local, settings, alice, tiny_model, reply
):
    local(tiny_model)
    listener, _ = _raw_listener(reply)
    try:
        settings.SUANJING_ENGINE_PORT = listener.getsockname()[1]
        with pytest.raises(EngineUnavailable) as caught:
            runtime.get_engine()
        message = str(caught.value)
        assert "SUANJING_ENGINE_PORT" in message and "not Suanjing's engine service" in message
        response = ask(alice, "How many legs do 3 rabbits have?")
        assert response.status_code == 503 and "SUANJING_ENGINE_PORT" in response.json()["error"]
        assert runtime.local_service() is None  # nothing was started
    finally:
        listener.close()


@pytest.mark.slow
def test_a_service_of_another_model_is_refused_unless_this_process_started_it(
    local, settings, tiny_model, tmp_path
):
    # A second prepared model: the tiny model's files under another name.
    store = tmp_path / "store"
    copy = store / "tiny-copy"
    copy.mkdir(parents=True)
    for f in tiny_model.path.iterdir():
        if f.name != "manifest.json":
            (copy / f.name).symlink_to(f)
    data = json.loads((tiny_model.path / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**data, "name": "tiny-copy"}))
    (store / "tiny-qwen2").symlink_to(tiny_model.path)

    local(tiny_model)
    settings.SUANJING_MODELS = str(store)
    port = settings.SUANJING_ENGINE_PORT
    # Someone else's service of tiny-qwen2 on the port: refused for tiny-copy, with what to do.
    process, _ = start_local_service(
        tiny_model.path, port, extra_args=["--threads", "2"], timeout=300
    )
    try:
        settings.SUANJING_MODEL = "tiny-copy"
        with pytest.raises(
            EngineUnavailable, match="serves the model 'tiny-qwen2', not 'tiny-copy'"
        ):
            runtime.get_engine()
        settings.SUANJING_MODEL = "tiny-qwen2"
        engine, manifest = runtime.get_engine()  # the right model: used as it is, nothing started
        assert manifest.name == "tiny-qwen2" and runtime.local_service() is None
        assert engine.generate("1 2 3", GREEDY_8).new_tokens == 8
    finally:
        stop(process)
    # The site's own service, then the site asked for another model: it replaces its own service.
    runtime.reset()
    engine, _ = runtime.get_engine()
    first = runtime.local_service()
    assert first["model"] == "tiny-qwen2" and first["started_by"] == os.getpid()
    runtime.reset()
    settings.SUANJING_MODEL = "tiny-copy"
    engine, manifest = runtime.get_engine()
    second = runtime.local_service()
    assert manifest.name == "tiny-copy" and second["model"] == "tiny-copy"
    assert second["pid"] != first["pid"] and not pid_alive(first["pid"])
    assert engine.generate("1 2 3", GREEDY_8).new_tokens == 8


_PROCESS = textwrap.dedent(
    """
    import json, os, sys
    import django
    django.setup()
    from solver.engine import GenerationParams
    from tutor.services import runtime
    for line in sys.stdin:  # one line: one get_engine and a short generation
        engine, manifest = runtime.get_engine()
        result = engine.generate("1 2 3", GenerationParams(max_new_tokens=4, greedy=True, ignore_eos=True))
        print(json.dumps({"service": runtime.local_service(), "mine": runtime._runtime.service is not None,
                          "tokens": result.new_tokens}), flush=True)
    """
)


@pytest.mark.slow
def test_two_processes_share_one_local_service_and_it_comes_back_when_its_starter_dies(
    tmp_path, tiny_model
):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tutor.settings",
        "PYTHONPATH": str(ROOT),
        "DEBUG": "True",
        "SUANJING_VAR": str(tmp_path),
        "SUANJING_MODELS": str(tiny_model.path.parent),
        "SUANJING_MODEL": "tiny-qwen2",
        "SUANJING_THREADS": "1",
        "SUANJING_ENGINE_PORT": str(free_port()),
        "LOG_LEVEL": "WARNING",
    }
    env.pop("SUANJING_ENGINE_URL", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:  # both at once: one starts the service, the other waits and finds it
            p.stdin.write("go\n")
            p.stdin.flush()
        seen = [json.loads(p.stdout.readline()) for p in procs]
        assert [s["tokens"] for s in seen] == [4, 4]
        pids = {s["service"]["pid"] for s in seen}
        assert len(pids) == 1, seen
        (service,) = pids
        assert sorted(s["mine"] for s in seen) == [False, True]
        starter, other = (procs[0], procs[1]) if seen[0]["mine"] else (procs[1], procs[0])
        assert parent_of(service) == starter.pid
        # The starter dies: the service does not outlive it ...
        starter.kill()
        starter.wait(10)
        assert wait_until(lambda: not pid_alive(service), 20)
        # ... and the next process that needs the engine starts a new one by itself.
        other.stdin.write("again\n")
        other.stdin.flush()
        again = json.loads(other.stdout.readline())
        assert again["tokens"] == 4 and again["mine"]
        assert (
            again["service"]["pid"] != service and parent_of(again["service"]["pid"]) == other.pid
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.stdin.close()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()


@pytest.mark.slow
def test_the_service_killed_mid_generation_fails_the_question_and_comes_back(
    local, settings, cast, alice, make_problem, embedded_model
):
    local(embedded_model)
    settings.SUANJING_MAX_NEW_TOKENS = 2048
    banked = make_problem(
        "What is 6 times 7?", reference="42", solutions=((Solution.Status.VERIFIED, "42"),)
    )
    response = ask(alice, LONG)
    assert response.status_code == 202, response.content
    qid = response.json()["id"]
    stream = iter(alice.get(f"/api/questions/{qid}/stream").streaming_content)
    next(stream)  # connected
    next(stream)  # the story is being written
    service = runtime.local_service()["pid"]
    os.kill(service, signal.SIGKILL)
    killed = time.monotonic()
    assert wait_until(lambda: outcome(qid) == "failed", 10)
    failed_after = time.monotonic() - killed
    assert failed_after < 5, failed_after
    print(f"the question failed {failed_after:.2f} s after the SIGKILL")
    question = Question.objects.get(pk=qid)
    assert question.solution is None and question.error
    detail = alice.get(f"/api/questions/{qid}").json()
    assert detail["status"] == "failed"
    assert f"/questions/{qid}/retry" in alice.get(f"/questions/{qid}").content.decode()
    for _ in stream:  # the stream ends too
        pass
    # Meanwhile another student's cache hit answers as ever.
    bob = Client()
    bob.force_login(cast.bob)
    hit = ask(bob, banked.text).json()
    assert hit["status"] == "hit" and hit["answer"]["final"] == "42"
    # Try again: the next generation starts a new service by itself and is answered.
    settings.SUANJING_MAX_NEW_TOKENS = 32
    retried = alice.post(f"/questions/{qid}/retry")
    assert retried.status_code in (200, 302)
    assert wait_until(lambda: outcome(qid) != "generating", 180)
    question.refresh_from_db()
    assert question.solution is not None, question.error
    assert 0 < question.solution.new_tokens <= 32
    assert runtime.local_service()["pid"] != service


@pytest.mark.slow
def test_a_precompute_run_survives_the_service_being_killed(local, settings, tiny_model):
    local(tiny_model)
    settings.SUANJING_THREADS = 1
    settings.SUANJING_PRECOMPUTE_BATCH = 2
    for i in range(10):
        Problem.objects.create(text=f"Count to {i} slowly.", lang="en")
    run = precompute.create_run(
        selection=precompute.Selection(which="all"),
        max_new_tokens=300,
        greedy=True,
        enqueue=False,
    )
    failure: list[BaseException] = []

    def work() -> None:
        try:
            precompute.work_on_run(run_id=run.pk, fan_out=False)
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    assert wait_until(lambda: run.items.filter(status="done").count() >= 2, 120)
    os.kill(runtime.local_service()["pid"], signal.SIGKILL)
    worker.join(60)
    assert not worker.is_alive()
    # The run stopped on the dead service: nothing is left claimed, unstarted items went back to
    # pending (not failed one by one), and the run is still open.
    assert failure and "engine service" in str(failure[0])
    counts = dict(run.items.values_list("status").annotate(n=Count("id")))
    assert counts.get("running", 0) == 0 and counts.get("pending", 0) >= 1, counts
    run.refresh_from_db()
    assert run.status == PrecomputeRun.Status.RUNNING
    # The next task of the run (a db_worker's) starts a new service and finishes it.
    precompute.work_on_run(run_id=run.pk, fan_out=False)
    run.refresh_from_db()
    assert run.status == PrecomputeRun.Status.DONE
    assert (
        run.items.exclude(status__in=(RunItem.Status.DONE, RunItem.Status.SET_ASIDE)).count() == 0
    )
    assert Solution.objects.filter(run_item__run=run).count() >= 10


def test_an_engine_url_nobody_answers_is_refused_in_a_sentence(site, settings, alice):
    settings.SUANJING_ENGINE_URL = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EngineUnavailable, match="cannot be reached.*SUANJING_ENGINE_URL"):
        runtime.get_engine()
    response = ask(alice, "How many legs do 3 rabbits have?")
    assert response.status_code == 503 and "SUANJING_ENGINE_URL" in response.json()["error"]
