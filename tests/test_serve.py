"""The engine as an OpenAI-compatible service (`python -m solver serve`) and the engine by URL
(`solver.remote.RemoteEngine`), on real models: the tiny random Qwen2 (fast), the embedded SmolLM2 and
llama.cpp's own server (slow).

The service is driven by the official `openai` client where that client can say it, and by raw HTTP
where the test is about the wire (the SSE framing, bad bodies, disconnects, Retry-After)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import httpx
import pytest

from solver.engine import GenerationParams
from solver.remote import (
    EngineRequestRefused,
    EngineUnavailable,
    RemoteEngine,
    start_local_service,
)
from solver.serve import Admission, Busy

openai = pytest.importorskip("openai")

PROMPT = "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
GREEDY = GenerationParams(max_new_tokens=24, greedy=True)
# Long enough that the test ends it, not the model (ignore_eos also turns the loop guard off).
ENDLESS = GenerationParams(max_new_tokens=4000, greedy=True, ignore_eos=True)


def serve(model, *args: str):
    """`python -m solver serve` on a prepared model, on a free port: (process, base URL)."""
    return start_local_service(model.path, extra_args=["--threads", "2", *args], timeout=300)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def service(tiny_model):
    process, url = serve(tiny_model)
    yield url
    stop(process)


@pytest.fixture(scope="module")
def client(service):
    with openai.OpenAI(base_url=service, api_key="none", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def remote(service):
    engine = RemoteEngine(service)
    yield engine
    engine.close()


def root(url: str) -> str:
    return url.removesuffix("/v1")


def metrics(url: str) -> dict:
    return httpx.get(root(url) + "/metrics", timeout=10).json()


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def sse_events(response: httpx.Response) -> list[str]:
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


# -- the OpenAI surface -------------------------------------------------------------------------------


def test_it_lists_its_one_model(client, service):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-qwen2"]
    health = httpx.get(root(service) + "/health").json()
    assert health == {"status": "ok", "model": "tiny-qwen2"}


def test_a_plain_completion_is_the_engines_text_with_usage(client, tiny_engine):
    expected = tiny_engine.generate(PROMPT, GREEDY)
    completion = client.completions.create(
        model="tiny-qwen2", prompt=PROMPT, max_tokens=24, temperature=0
    )
    choice = completion.choices[0]
    assert choice.text == expected.text
    assert choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 24
    assert completion.usage.prompt_tokens == expected.prompt_tokens
    assert completion.usage.total_tokens == 24 + expected.prompt_tokens


def test_a_streamed_completion_adds_up_to_the_plain_one_and_ends_with_done(client, service):
    plain = client.completions.create(
        model="tiny-qwen2", prompt=PROMPT, max_tokens=24, temperature=0
    )
    pieces, reasons = [], []
    for chunk in client.completions.create(
        model="tiny-qwen2", prompt=PROMPT, max_tokens=24, temperature=0, stream=True
    ):
        pieces.append(chunk.choices[0].text)
        reasons.append(chunk.choices[0].finish_reason)
    assert "".join(pieces) == plain.choices[0].text
    assert reasons[-1] == "length" and set(reasons[:-1]) == {None}
    # On the wire: every event is JSON in OpenAI's shape, and "[DONE]" comes last.
    body = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "stream": True}
    with httpx.stream("POST", service + "/completions", json=body, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" and c["model"] == "tiny-qwen2" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1


def test_chat_renders_the_models_chat_template(client, tiny_model):
    import openvino_genai as ov_genai

    messages = [{"role": "user", "content": "鸡兔同笼，共有35个头，94只脚？"}]
    prompt = ov_genai.Tokenizer(str(tiny_model.path)).apply_chat_template(
        messages, add_generation_prompt=True
    )
    assert "鸡兔同笼" in prompt
    raw = client.completions.create(model="tiny-qwen2", prompt=prompt, max_tokens=16, temperature=0)
    chat = client.chat.completions.create(
        model="tiny-qwen2", messages=messages, max_tokens=16, temperature=0
    )
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == raw.choices[0].text
    assert chat.usage.completion_tokens == 16
    streamed = client.chat.completions.create(
        model="tiny-qwen2",
        messages=messages,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(streamed)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == raw.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16


def test_n_choices_and_a_seed_repeat_exactly(client):
    def ask():
        return client.completions.create(
            model="tiny-qwen2", prompt=PROMPT, max_tokens=20, temperature=1.0, seed=1234, n=2
        )

    first, again = ask(), ask()
    texts = [c.text for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1]
    assert texts == [c.text for c in again.choices]
    assert texts[0] != texts[1]  # each choice samples on its own
    assert first.usage.completion_tokens == 40
    other = client.completions.create(
        model="tiny-qwen2", prompt=PROMPT, max_tokens=20, temperature=1.0, seed=99
    )
    assert other.choices[0].text not in texts


def test_a_stop_string_ends_the_text_before_it(client):
    full = client.completions.create(
        model="tiny-qwen2", prompt=PROMPT, max_tokens=40, temperature=0
    ).choices[0]
    cut = full.text[len(full.text) // 2 :][:3]
    assert cut.strip(), full.text
    stopped = client.completions.create(
        model="tiny-qwen2", prompt=PROMPT, max_tokens=40, temperature=0, stop=[cut]
    ).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.model_extra["suanjing"]["finish_reason"] == "stop"
    assert stopped.text == full.text[: full.text.index(cut)]


def test_the_loop_guard_reaches_the_client_as_length_with_our_reason(client, tiny_engine):
    # Greedy decoding of the random tiny model repeats itself within a few dozen tokens.
    params = GenerationParams(max_new_tokens=1000, greedy=True)
    expected = tiny_engine.generate("What is 2 + 3?", params)
    assert expected.finish_reason == "loop"
    choice = client.completions.create(
        model="tiny-qwen2", prompt="What is 2 + 3?", max_tokens=1000, temperature=0
    ).choices[0]
    assert choice.finish_reason == "length"
    assert choice.model_extra["suanjing"]["finish_reason"] == "loop"
    assert choice.text == expected.text
    chat = client.chat.completions.create(
        model="tiny-qwen2",
        messages=[{"role": "user", "content": "What is 2 + 3?"}],
        max_tokens=1000,
        temperature=0,
        stream=True,
    )
    last = [c for c in chat if c.choices][-1].choices[0]
    assert last.finish_reason in ("length", "stop")
    assert last.model_extra["suanjing"]["finish_reason"] in ("loop", "stop", "length")


BAD_BODIES = [
    ("not JSON", b"{prompt: 1", "not valid JSON"),
    ("not UTF-8", b'{"prompt": "\xff\xfe"}', "not valid JSON"),
    ("a list, not an object", b"[1, 2]", "JSON object"),
    ("nested too deep", b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ("no prompt", {"max_tokens": 5}, "'prompt' is required"),
    ("empty prompt", {"prompt": ""}, "'prompt' must not be empty"),
    ("prompt a number", {"prompt": 5}, "'prompt' must be a string"),
    ("token-id prompt", {"prompt": [1, 2, 3]}, "token-id prompts"),
    ("lone surrogate", b'{"prompt": "a\\ud800b"}', "lone surrogate"),
    ("huge max_tokens", {"prompt": "x", "max_tokens": 10**9}, "'max_tokens' must be between"),
    ("max_tokens a string", {"prompt": "x", "max_tokens": "5"}, "'max_tokens' must be an integer"),
    ("max_tokens true", {"prompt": "x", "max_tokens": True}, "'max_tokens' must be an integer"),
    ("zero max_tokens", {"prompt": "x", "max_tokens": 0}, "'max_tokens' must be between"),
    ("temperature NaN", b'{"prompt": "x", "temperature": NaN}', "'temperature' must be a number"),
    ("temperature 5", {"prompt": "x", "temperature": 5}, "'temperature' must be between"),
    ("top_p 0", {"prompt": "x", "top_p": 0}, "'top_p' must be greater than 0"),
    ("n 0", {"prompt": "x", "n": 0}, "'n' must be between"),
    ("n 100", {"prompt": "x", "n": 100}, "'n' must be between"),
    ("seed a float", {"prompt": "x", "seed": 1.5}, "'seed' must be an integer"),
    ("five stop strings", {"prompt": "x", "stop": list("abcde")}, "'stop' must be"),
    ("empty stop string", {"prompt": "x", "stop": [""]}, "'stop' must not be empty"),
    ("stream a string", {"prompt": "x", "stream": "yes"}, "'stream' must be true or false"),
    ("logprobs", {"prompt": "x", "logprobs": 2}, "logprobs are not supported"),
    ("a prompt too long", {"prompt": "word " * 9000}, "longer than 8192 tokens"),
]


@pytest.mark.parametrize(
    "body,message", [(b, m) for _, b, m in BAD_BODIES], ids=[i for i, _, _ in BAD_BODIES]
)
def test_bad_completion_requests_get_an_openai_shaped_400(service, body, message):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(
        service + "/completions",
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"


BAD_CHATS = [
    ("no messages", {}, "'messages' must be a non-empty list"),
    ("messages a string", {"messages": "hi"}, "'messages' must be a non-empty list"),
    ("unknown role", {"messages": [{"role": "robot", "content": "x"}]}, "role must be"),
    ("content a number", {"messages": [{"role": "user", "content": 3}]}, "must be a string"),
    (
        "an image part",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "only text content parts",
    ),
    (
        "tools",
        {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
        "tools are not supported",
    ),
]


@pytest.mark.parametrize(
    "body,message", [(b, m) for _, b, m in BAD_CHATS], ids=[i for i, _, _ in BAD_CHATS]
)
def test_bad_chat_requests_get_an_openai_shaped_400(service, body, message):
    response = httpx.post(service + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]


def test_the_official_client_raises_its_own_errors(client):
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny-qwen2", prompt="x", max_tokens=10**9)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4o", prompt="x", max_tokens=4)


def test_a_client_that_goes_away_has_its_generation_cancelled(service):
    body = {"prompt": PROMPT, "max_tokens": 4000, "temperature": 0, "ignore_eos": True}
    # Streamed: read two events, then close the connection.
    with httpx.stream(
        "POST", service + "/completions", json={**body, "stream": True}, timeout=30
    ) as response:
        lines = response.iter_lines()
        while not next(lines).startswith("data: "):
            pass
        assert metrics(service)["running"] == 1
    started = time.monotonic()
    assert wait_until(lambda: metrics(service)["running"] == 0, timeout=5)
    assert time.monotonic() - started < 1.5
    # Plain: send the request on a raw socket and close it before any answer.
    host, port = service.removeprefix("http://").split("/")[0].split(":")
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
        )
        assert wait_until(lambda: metrics(service)["running"] == 1, timeout=10)
    started = time.monotonic()
    assert wait_until(lambda: metrics(service)["running"] == 0, timeout=5)
    assert time.monotonic() - started < 1.5
    totals = metrics(service)["totals"]
    assert totals["cancelled"] >= 2


def test_metrics_count_requests_and_tokens(service, client):
    before = metrics(service)
    client.completions.create(model="tiny-qwen2", prompt=PROMPT, max_tokens=10, temperature=0)
    after = metrics(service)
    assert after["totals"]["completed"] == before["totals"]["completed"] + 1
    assert after["totals"]["completion_tokens"] == before["totals"]["completion_tokens"] + 10
    assert set(after) >= {"queue", "running", "tokens_per_s_last_minute", "totals", "model"}
    assert after["queue"] == 0 and after["running"] == 0


def test_a_full_queue_answers_429_with_retry_after(tiny_model):
    process, url = serve(tiny_model, "--max-running", "1", "--max-queue", "1")
    engine = RemoteEngine(url)
    try:
        running = engine.stream(PROMPT, ENDLESS)  # decoding
        assert wait_until(lambda: metrics(url)["running"] == 1)
        waiting = engine.stream(PROMPT, ENDLESS)  # in the queue
        assert wait_until(lambda: metrics(url)["queue"] == 1)
        response = httpx.post(url + "/completions", json={"prompt": "x", "max_tokens": 2})
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["type"] == "rate_limit_error"
        with pytest.raises(EngineUnavailable) as caught:
            engine.generate("x", GREEDY)
        assert caught.value.retry_after is not None and caught.value.retry_after >= 1
        running.cancel()  # room again: the waiting one starts
        assert running.result(10).finish_reason == "cancelled"
        assert wait_until(lambda: metrics(url)["queue"] == 0 and metrics(url)["running"] == 1)
        waiting.cancel()
        assert waiting.result(10).finish_reason == "cancelled"
        assert wait_until(lambda: metrics(url)["running"] == 0)
        assert engine.generate("x", GREEDY).new_tokens == 24
        assert metrics(url)["totals"]["rejected_busy"] == 2
        # generate_many keeps within what the service takes: 4 prompts, one seat, no error.
        results = engine.generate_many(["a", "b", "c", "d"], GREEDY)
        assert [r.new_tokens for r in results] == [24] * 4
    finally:
        engine.close()
        stop(process)


def test_health_is_503_while_the_model_loads(tiny_model):
    from solver.engine import EngineSettings
    from solver.engine_process import EngineProcess
    from solver.serve import Service, ServiceSettings, make_server

    go = threading.Event()

    def open_engine():
        go.wait(60)  # the test decides when loading ends
        return EngineProcess(tiny_model.path, EngineSettings(threads=2))

    service = Service(ServiceSettings(model_name="tiny-qwen2"), open_engine, tiny_model.path)
    server = make_server(service, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    service.start()
    try:
        health = httpx.get(url + "/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        assert health.headers["Retry-After"]
        busy = httpx.post(url + "/v1/completions", json={"prompt": "x"})
        assert busy.status_code == 503 and busy.headers["Retry-After"]
        with pytest.raises(EngineUnavailable) as caught:
            RemoteEngine(url + "/v1").generate("x", GREEDY)
        assert caught.value.retry_after is not None
        go.set()
        assert wait_until(lambda: httpx.get(url + "/health").status_code == 200, timeout=120)
        done = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 3})
        assert done.status_code == 200 and done.json()["usage"]["completion_tokens"] == 3
    finally:
        go.set()
        server.shutdown()
        server.server_close()
        service.loaded.wait(120)
        service.close()


def test_admission_is_first_come_first_served_and_bounded():
    admission = Admission(max_running=2, max_queue=1)
    a = admission.join(2)
    assert a.admitted
    b = admission.join(1)
    assert not b.admitted and admission.waiting == 1
    with pytest.raises(Busy):
        admission.join(1)
    a.release_one()
    assert b.wait(1) and admission.running == 2  # one of a's, and b
    a.leave()
    assert admission.running == 1
    b.release_one()
    assert admission.running == 0 and admission.join(2).admitted


# -- RemoteEngine ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [GREEDY, GenerationParams(max_new_tokens=30, temperature=0.8, top_p=0.9, seed=7)],
    ids=["greedy", "seeded"],
)
def test_remote_engine_gives_the_in_process_engines_results(remote, tiny_engine, params):
    for prompt in (PROMPT, "鸡兔同笼，共有35个头，94只脚"):
        expected = tiny_engine.generate(prompt, params)
        generation = remote.stream(prompt, params)
        pieces = list(generation)
        result = generation.result(30)
        assert result.text == expected.text == "".join(pieces)
        assert result.finish_reason == expected.finish_reason
        assert result.new_tokens == expected.new_tokens
        assert result.prompt_tokens == expected.prompt_tokens
        assert result.ttft_ms > 0 and result.tokens_per_s > 0
        assert remote.generate(prompt, params).text == expected.text


def test_remote_generate_many_keeps_order_and_reports_each(remote, tiny_engine):
    prompts = [f"question number {i} " * (1 + i % 3) for i in range(10)]
    params = [GenerationParams(max_new_tokens=4 + i, greedy=True) for i in range(10)]
    seen = []
    results = remote.generate_many(prompts, params, on_result=lambda i, r: seen.append(i))
    assert [r.new_tokens for r in results] == [4 + i for i in range(10)]
    assert sorted(seen) == list(range(10))
    assert [r.text for r in results] == [r.text for r in tiny_engine.generate_many(prompts, params)]
    assert (
        remote.generate(
            "What is 2 + 3?", GenerationParams(max_new_tokens=1000, greedy=True)
        ).finish_reason
        == "loop"
    )


def test_remote_cancel_closes_the_stream_and_the_service_stops(remote, service):
    generation = remote.stream(PROMPT, ENDLESS)
    pieces = iter(generation)
    next(pieces)
    generation.cancel()
    result = generation.result(5)
    assert result.finish_reason == "cancelled"
    assert result.new_tokens < 4000
    assert wait_until(lambda: metrics(service)["running"] == 0, timeout=2)
    stopped = []
    results = remote.generate_many(
        ["a", "b"], ENDLESS, should_stop=lambda: stopped.append(1) or len(stopped) > 5
    )
    assert [r.finish_reason for r in results] == ["cancelled", "cancelled"]


def test_remote_engine_tells_service_down_from_bad_request(remote):
    with pytest.raises(EngineUnavailable, match="cannot be reached"):
        RemoteEngine("http://127.0.0.1:9/v1", connect_timeout=2)
    with pytest.raises(EngineRequestRefused) as refused:
        remote.submit("x", GenerationParams(max_new_tokens=10**6))
    assert refused.value.status == 400 and "max_tokens" in str(refused.value)
    with pytest.raises(ValueError):
        remote.submit("x", GenerationParams(stop_strings=tuple("abcde")))
    assert remote.alive and remote.health()["status"] == "ok"
    down = RemoteEngine("http://127.0.0.1:9/v1", model="x", connect_timeout=1)
    assert not down.alive
    with pytest.raises(EngineUnavailable):
        down.submit("x", GREEDY)


@pytest.mark.slow
def test_remote_engine_survives_the_service_being_killed(tiny_model):
    process, url = serve(tiny_model)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    engine = RemoteEngine(url)
    try:
        generation = engine.stream(PROMPT, ENDLESS)
        pieces = iter(generation)
        next(pieces)
        killed = time.monotonic()
        os.kill(process.pid, signal.SIGKILL)
        result = generation.result(10)
        assert time.monotonic() - killed < 3
        assert result.finish_reason == "error"
        assert isinstance(generation.exception, EngineUnavailable)
        assert not engine.alive
        with pytest.raises(EngineUnavailable):
            engine.generate(PROMPT, GREEDY)
        with pytest.raises(EngineUnavailable):
            engine.generate_many([PROMPT, PROMPT], GREEDY)
        process.wait(10)
        process, again = serve(tiny_model, "--port", str(port))
        assert again == url
        assert wait_until(lambda: engine.alive, timeout=30)
        assert engine.generate(PROMPT, GREEDY).new_tokens == 24
    finally:
        engine.close()
        stop(process)


def test_the_service_exits_with_its_parent(tiny_model, tmp_path):
    # A parent that starts the service and is then killed: the service must not outlive it.
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from solver.remote import start_local_service\n"
        f"process, url = start_local_service({str(tiny_model.path)!r}, timeout=300)\n"
        "print(process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    try:
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait(10)
        assert wait_until(lambda: not _pid_alive(child), timeout=20)
    finally:
        if parent.poll() is None:
            parent.kill()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie waiting for init to reap it counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# -- the embedded model ------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_embedded_model_through_the_service_matches_the_engine(embedded_model):
    from solver.engine import Engine
    from solver.prompts import BOXED_INSTRUCTION, get_family

    family = get_family(embedded_model.manifest.family)
    prompt = family.render("What is 7 times 8?")
    params = GenerationParams(max_new_tokens=48, greedy=True)
    with Engine(embedded_model.path) as engine:
        expected = engine.generate(prompt, params)
    process, url = serve(embedded_model)
    try:
        remote = RemoteEngine(url)
        assert remote.model == "smollm2-135m-instruct"
        result = remote.generate(prompt, params)
        assert result.text == expected.text and result.new_tokens == expected.new_tokens
        with openai.OpenAI(base_url=url, api_key="none", max_retries=0) as client:
            chat = client.chat.completions.create(
                model=remote.model,
                messages=[{"role": "user", "content": f"What is 7 times 8?\n{BOXED_INSTRUCTION}"}],
                max_tokens=48,
                temperature=0,
            )
        # The model's own template is the chatml family's prompt: same text.
        assert chat.choices[0].message.content == expected.text
        remote.close()
    finally:
        stop(process)


# -- a second implementation: llama.cpp's server ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_remote_engine_against_llama_cpp_server(tmp_path):
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        pytest.skip("llama-cpp-python[server] is not installed (.ci/run installs it)")
    from solver.modelstore import embedded_gguf_path

    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(embedded_gguf_path()),
            "--port",
            str(port),
            "--n_threads",
            "2",
            "--n_ctx",
            "2048",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "llama-server.log", "wb"),  # noqa: SIM115 (closed with the process)
    )
    url = f"http://127.0.0.1:{port}/v1"

    def server_log() -> str:
        return (tmp_path / "llama-server.log").read_text(errors="replace")[-3000:]

    try:

        def up() -> bool:
            try:
                return httpx.get(url + "/models", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(up, timeout=120), "llama_cpp.server did not start:\n" + server_log()
        assert process.poll() is None, "another server answers on its port:\n" + server_log()
        engine = RemoteEngine(url)
        assert engine.alive
        generation = engine.stream(PROMPT, GenerationParams(max_new_tokens=16, greedy=True))
        pieces = list(generation)
        result = generation.result(60)
        if result.finish_reason == "error":
            # Once in CI (not reproduced here in 10 runs) llama.cpp's server closed its first stream
            # right after the headers. Say so with its log, and try once more: what this test checks is
            # that our client reads a second implementation, not that server's first request.
            warnings.warn(f"llama_cpp.server: {result.error}\n{server_log()}", stacklevel=1)
            time.sleep(1)
            generation = engine.stream(PROMPT, GenerationParams(max_new_tokens=16, greedy=True))
            pieces = list(generation)
            result = generation.result(60)
        assert result.text and "".join(pieces) == result.text, (result, server_log())
        assert result.finish_reason in ("length", "stop")
        assert result.new_tokens <= 16 and result.ttft_ms > 0
        long = engine.stream(PROMPT, GenerationParams(max_new_tokens=1500, greedy=True))
        next(iter(long))
        long.cancel()
        assert long.result(10).finish_reason == "cancelled"
        assert (
            engine.generate(PROMPT, GenerationParams(max_new_tokens=8, greedy=True)).finish_reason
            == "length"
        )
        engine.close()
    finally:
        stop(process)
