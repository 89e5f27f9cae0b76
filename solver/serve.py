"""The engine as a service: an OpenAI-compatible HTTP API over one engine (`python -m solver serve`).

Owns: the HTTP surface (`GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions`, plain and
streamed as server-sent events in OpenAI's shapes, `GET /health`, `GET /metrics`), checking every request
(bad input is an OpenAI-shaped 400, never a 500), admission (at most `max_running` sequences in the engine;
up to `max_queue` requests wait in order; more get 429 with Retry-After; 503 with Retry-After while the
model loads), and cancelling a generation when its client goes away.
Does not own: generating (`solver.engine`; continuous batching happens there, so concurrent requests
decode together), prompts (`/v1/completions` takes raw model input, as `solver.prompts` renders it;
`/v1/chat/completions` renders messages with the model's own chat template), or clients
(`solver.remote.RemoteEngine`).

Server stack: the standard library's `ThreadingHTTPServer`, one thread per connection. The engine API
is blocking (iterate a handle, wait for a result), so a thread per request is the plain way to drive it;
it adds no dependency, and a school serves tens of streams, not thousands. Slow clients cost one thread
each and are dropped after `client_timeout_s` without progress (socket timeout on reads and writes); a
client that goes away is seen by one watcher thread (epoll on every connection with a request in flight:
end-of-file there means the client closed) and its generations are cancelled at once.

The engine runs in a child process (`solver.engine_process.EngineProcess`) by default: openvino-genai's
`step()` keeps the GIL, and with the engine in this process every HTTP thread waits behind decode steps.
Measured with 16 streams of SmolLM2 decoding (bench/engine.py: GET /health 40 times, on a 2-core
machine that other work kept busy): in process, /health took a median of 374 ms (p90 919 ms, max 3.3 s);
with the engine in the child process 1.8 ms (p90 5.9 ms, max 8.9 ms), as when idle (1.1 ms).
`--in-process` keeps the engine here, for comparison.

Finish reasons: OpenAI's clients accept "stop" and "length" only. The loop guard's "loop" is sent as
"length" (the text was cut short, not finished) with the engine's own reason beside it in a vendor field
that the official client keeps (its models allow extra fields): `choice["suanjing"]["finish_reason"]`.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import selectors
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from solver.engine import (
    EngineClosed,
    EngineError,
    GeneratingAPI,
    GenerationHandle,
    GenerationParams,
    GenerationResult,
    LoopGuard,
)

MAX_BODY_BYTES = 1_000_000
MAX_STOP_STRINGS = 4  # as OpenAI
MAX_STOP_CHARS = 200
MAX_CHOICES = 16  # prompts x n in one request
MAX_MESSAGES = 256


@dataclass(frozen=True)
class ServiceSettings:
    model_name: str
    max_queue: int = 64  # requests waiting for room in the engine; one more gets 429
    max_running: int = (
        64  # sequences in the engine at once (its batch: EngineSettings.max_num_seqs)
    )
    max_tokens_limit: int = 8192  # the largest max_tokens a request may ask for
    max_prompt_tokens: int = 8192
    completion_default_max_tokens: int = 16  # OpenAI's default for /v1/completions
    chat_default_max_tokens: int = 2048
    retry_after_s: int = 2
    client_timeout_s: float = 60.0  # a client that neither sends nor reads for this long is dropped
    keepalive_s: float = (
        5.0  # an SSE comment while a streamed request waits, so proxies keep it open
    )


class RequestError(Exception):
    """A request answered with an OpenAI-shaped error (status, type, message, param, code)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, param: str | None = None) -> RequestError:
    return RequestError(400, message, param=param)


# -- reading requests ------------------------------------------------------------------------------

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _text(value: Any, name: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string", name)
    if not allow_empty and not value:
        raise bad_request(f"'{name}' must not be empty", name)
    if _SURROGATE.search(value):
        raise bad_request(f"'{name}' contains a lone surrogate (not valid Unicode text)", name)
    return value


def _integer(body: dict, name: str, default: int | None, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'{name}' must be an integer", name)
    if not lo <= value <= hi:
        raise bad_request(f"'{name}' must be between {lo} and {hi}, got {value}", name)
    return value


def _number(body: dict, name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(f"'{name}' must be a number", name)
    if not lo <= value <= hi:
        raise bad_request(f"'{name}' must be between {lo} and {hi}, got {value}", name)
    return float(value)


def _flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"'{name}' must be true or false", name)
    return value


@dataclass(frozen=True)
class Request:
    """One checked completion request: the prompts to run, n choices each, and how."""

    prompts: tuple[str, ...]
    n: int
    params: GenerationParams
    stream: bool
    include_usage: bool
    chat: bool

    @property
    def choices(self) -> int:
        return len(self.prompts) * self.n

    def params_for(self, choice: int) -> GenerationParams:
        """Choice i of a prompt gets seed + i: the same seed asked twice gives the same n texts,
        without making the n choices of one request copies of each other."""
        seed = self.params.seed
        if seed is None or choice % self.n == 0:
            return self.params
        return _replace(self.params, seed=(seed + choice % self.n) % 2**63)


def _replace(params: GenerationParams, **changes) -> GenerationParams:
    from dataclasses import replace

    return replace(params, **changes)


_UNSUPPORTED = {
    "logprobs": "logprobs are not supported",
    "top_logprobs": "logprobs are not supported",
    "echo": "echo is not supported",
    "suffix": "suffix (insertion) is not supported",
    "logit_bias": "logit_bias is not supported",
    "tools": "tools are not supported",
    "functions": "functions are not supported",
    "tool_choice": "tools are not supported",
    "function_call": "functions are not supported",
}


def parse_request(
    body: Any, settings: ServiceSettings, *, chat: bool, render: Callable[[list[dict]], str]
) -> Request:
    """Check a decoded JSON body; raise RequestError (400, or 404 for another model) on anything wrong."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != settings.model_name:
        if not isinstance(model, str):
            raise bad_request("'model' must be a string", "model")
        raise RequestError(
            404,
            f"The model '{model[:100]}' does not exist; this service has '{settings.model_name}'",
            param="model",
            code="model_not_found",
        )
    for name, why in _UNSUPPORTED.items():
        value = body.get(name)
        if value not in (None, False, [], {}):
            raise bad_request(why, name)
    best_of = body.get("best_of")
    if best_of not in (None, 1) and best_of != body.get("n", 1):
        raise bad_request("best_of is not supported", "best_of")
    if chat:
        prompts = (render(_messages(body.get("messages"))),)
        response_format = body.get("response_format")
        if response_format is not None and (
            not isinstance(response_format, dict) or response_format.get("type") != "text"
        ):
            raise bad_request(
                "only response_format {'type': 'text'} is supported", "response_format"
            )
    else:
        prompts = _prompts(body.get("prompt"))
    n = _integer(body, "n", 1, 1, MAX_CHOICES)
    if len(prompts) * n > min(MAX_CHOICES, settings.max_running):
        raise bad_request(
            f"at most {min(MAX_CHOICES, settings.max_running)} choices (prompts x n) per request",
            "n",
        )
    default_max = (
        settings.chat_default_max_tokens if chat else settings.completion_default_max_tokens
    )
    max_tokens = _integer(body, "max_tokens", None, 1, settings.max_tokens_limit)
    if chat:
        max_tokens = _integer(
            body, "max_completion_tokens", max_tokens, 1, settings.max_tokens_limit
        )
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p <= 0.0:
        raise bad_request("'top_p' must be greater than 0", "top_p")
    seed = _integer(body, "seed", None, -(2**63), 2**64 - 1)
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and len(stop) <= MAX_STOP_STRINGS:
        stops = tuple(stop)
    else:
        raise bad_request(
            f"'stop' must be a string or a list of at most {MAX_STOP_STRINGS} strings", "stop"
        )
    for s in stops:
        _text(s, "stop")
        if len(s) > MAX_STOP_CHARS:
            raise bad_request(f"a stop string is longer than {MAX_STOP_CHARS} characters", "stop")
    stream = _flag(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object", "stream_options")
    include_usage = _flag(options or {}, "include_usage", False)
    ignore_eos = _flag(body, "ignore_eos", False)  # vLLM's extra parameter (benchmarks)
    params = GenerationParams(
        max_new_tokens=max_tokens or default_max,
        temperature=temperature,
        top_p=top_p,
        greedy=temperature == 0.0,
        seed=None if seed is None else seed % 2**63,
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        # vLLM's extra parameter; 1.0 is off
        repetition_penalty=_number(body, "repetition_penalty", 1.0, 0.01, 2.0),
        stop_strings=stops,
        loop_guard=LoopGuard(),
        ignore_eos=ignore_eos,
    )
    return Request(
        prompts=prompts,
        n=n,
        params=params,
        stream=stream,
        include_usage=include_usage and stream,
        chat=chat,
    )


def _prompts(value: Any) -> tuple[str, ...]:
    if value is None:
        raise bad_request("'prompt' is required", "prompt")
    if isinstance(value, str):
        return (_text(value, "prompt"),)
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        return tuple(_text(p, "prompt") for p in value)
    if isinstance(value, list) and value and all(isinstance(p, int | list) for p in value):
        raise bad_request("token-id prompts are not supported; send text", "prompt")
    raise bad_request("'prompt' must be a string or a non-empty list of strings", "prompt")


def _messages(value: Any) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise bad_request("'messages' must be a non-empty list", "messages")
    if len(value) > MAX_MESSAGES:
        raise bad_request(f"at most {MAX_MESSAGES} messages", "messages")
    messages = []
    for m in value:
        if not isinstance(m, dict):
            raise bad_request("each message must be an object", "messages")
        role = m.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise bad_request(
                "a message's role must be system, developer, user or assistant", "messages"
            )
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            parts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise bad_request("only text content parts are supported", "messages")
                parts.append(_text(part.get("text"), "messages", allow_empty=True))
            content = "".join(parts)
        messages.append({"role": role, "content": _text(content, "messages", allow_empty=True)})
    return messages


# -- admission ---------------------------------------------------------------------------------------


class Busy(Exception):
    """More requests wait than the service queues."""


class Admission:
    """At most `max_running` sequences in the engine; requests beyond that wait, first come first
    served, at most `max_queue` of them."""

    def __init__(self, max_running: int, max_queue: int) -> None:
        self.max_running = max_running
        self.max_queue = max_queue
        self._cond = threading.Condition()
        self._waiting: deque[Ticket] = deque()
        self.running = 0

    def join(self, seats: int) -> Ticket:
        """A ticket for `seats` sequences: admitted at once when there is room and nobody waits, else
        queued. Raises Busy when the queue is full."""
        ticket = Ticket(self, seats)
        with self._cond:
            if not self._waiting and self.running + seats <= self.max_running:
                self.running += seats
                ticket.admitted = True
            elif len(self._waiting) >= self.max_queue:
                raise Busy
            else:
                self._waiting.append(ticket)
        return ticket

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _admit_waiting(self) -> None:
        # Called with the lock held: admit from the head of the queue while there is room.
        while self._waiting and self.running + self._waiting[0].seats <= self.max_running:
            ticket = self._waiting.popleft()
            self.running += ticket.seats
            ticket.admitted = True
        self._cond.notify_all()


class Ticket:
    def __init__(self, admission: Admission, seats: int) -> None:
        self._admission = admission
        self.seats = seats
        self.admitted = False
        self._released = 0

    def wait(self, timeout: float) -> bool:
        """True once admitted; False if `timeout` passed first."""
        cond = self._admission._cond
        with cond:
            return cond.wait_for(lambda: self.admitted, timeout)

    def release_one(self) -> None:
        """One of this ticket's sequences ended."""
        a = self._admission
        with a._cond:
            if self.admitted and self._released < self.seats:
                self._released += 1
                a.running -= 1
                a._admit_waiting()

    def forgo(self, seats: int) -> None:
        """Give back `seats` admitted seats that were never used (the engine refused their submit)."""
        for _ in range(seats):
            self.release_one()

    def leave(self) -> None:
        """Give back every seat not yet released (and the place in the queue)."""
        a = self._admission
        with a._cond:
            if self.admitted:
                a.running -= self.seats - self._released
                self._released = self.seats
            elif self in a._waiting:
                a._waiting.remove(self)
            a._admit_waiting()


# -- disconnects -------------------------------------------------------------------------------------


class DisconnectWatcher:
    """One thread that notices clients closing their connection while their request runs.

    A client that sent its whole request sends nothing more until the response ends (no HTTP client
    pipelines here), so a readable socket means end-of-file (the client closed) or a reset."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="suanjing-disconnects", daemon=True)
        self._thread.start()

    def watch(self, sock: socket.socket, on_gone: Callable[[], None]) -> None:
        with self._lock:
            self._selector.register(sock, selectors.EVENT_READ, on_gone)

    def unwatch(self, sock: socket.socket) -> None:
        with self._lock:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass

    def _run(self) -> None:
        while True:
            with self._lock:
                empty = not self._selector.get_map()
            if empty:
                time.sleep(0.1)
                continue
            for key, _ in self._selector.select(0.2):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    gone = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
                except BlockingIOError:
                    continue
                except OSError:
                    gone = True
                self.unwatch(sock)  # data or not: stop watching (level-triggered epoll would spin)
                if gone:
                    key.data()


# -- the service -------------------------------------------------------------------------------------


class Service:
    """One engine behind admission, with counters. `open_engine()` loads it (in `start()`'s thread)."""

    def __init__(
        self,
        settings: ServiceSettings,
        open_engine: Callable[[], GeneratingAPI],
        model_dir: str | os.PathLike,
    ) -> None:
        self.settings = settings
        self._open_engine = open_engine
        self.model_dir = Path(model_dir)
        self.engine: GeneratingAPI | None = None
        self.tokenizer = None
        self.load_error: str | None = None
        self.loaded = threading.Event()  # set when loading ended, well or not
        self.admission = Admission(settings.max_running, settings.max_queue)
        self.watcher = DisconnectWatcher()
        self.started = time.time()
        self._counts_lock = threading.Lock()
        self.counts = {
            "requests": 0,
            "completed": 0,
            "rejected_busy": 0,
            "rejected_loading": 0,
            "bad_requests": 0,
            "cancelled": 0,
            "errors": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }
        self._samples: deque[tuple[float, int]] = (
            deque()
        )  # (time, engine tokens so far), 1 a second
        self._closed = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._load, name="suanjing-load", daemon=True).start()

    def _load(self) -> None:
        try:
            import openvino_genai as ov_genai

            # A tokenizer of our own, in this process: chat templates and prompt lengths are checked
            # here, before a request takes a place in the engine.
            self.tokenizer = ov_genai.Tokenizer(str(self.model_dir))
            self.engine = self._open_engine()
        except (EngineError, RuntimeError, OSError) as exc:
            self.load_error = str(exc)
        finally:
            self.loaded.set()
        if self.engine is not None:
            threading.Thread(target=self._sample, name="suanjing-rate", daemon=True).start()

    @property
    def ready(self) -> bool:
        return self.engine is not None

    def close(self) -> None:
        self._closed.set()
        if self.engine is not None:
            self.engine.close()

    def count(self, name: str, by: int = 1) -> None:
        with self._counts_lock:
            self.counts[name] += by

    def _sample(self) -> None:
        while not self._closed.wait(1.0):
            now = time.monotonic()
            self._samples.append((now, self._engine_tokens()))
            while self._samples and self._samples[0][0] < now - 61:
                self._samples.popleft()

    def _engine_tokens(self) -> int:
        stats = getattr(self.engine, "stats", None)
        return int(getattr(stats, "tokens", 0))

    def tokens_per_s_last_minute(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        now = time.monotonic()
        old = next((s for s in self._samples if s[0] >= now - 60.5), self._samples[0])
        t0, n0 = old
        span = now - t0
        return (self._engine_tokens() - n0) / span if span > 0 else 0.0

    def metrics(self) -> dict:
        with self._counts_lock:
            counts = dict(self.counts)
        return {
            "model": self.settings.model_name,
            "ready": self.ready,
            "queue": self.admission.waiting,
            "running": self.admission.running,
            "max_queue": self.settings.max_queue,
            "max_running": self.settings.max_running,
            "tokens_per_s_last_minute": round(self.tokens_per_s_last_minute(), 2),
            "totals": counts,
            "uptime_s": round(time.time() - self.started, 1),
        }

    def render_chat(self, messages: list[dict]) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        except RuntimeError as exc:  # the template refused these messages (e.g. roles out of order)
            raise bad_request(
                f"the model's chat template refused the messages: {str(exc).splitlines()[0][:200]}",
                "messages",
            ) from None

    def count_prompt(self, prompt: str) -> int:
        ids = self.tokenizer.encode(prompt, add_special_tokens=False).input_ids
        return int(ids.get_shape()[-1])


def _openai_finish(reason: str) -> str:
    return "length" if reason in ("length", "loop") else "stop"


def _vendor(result: GenerationResult) -> dict:
    return {
        "suanjing": {
            "finish_reason": result.finish_reason,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.new_tokens,
            "ttft_ms": round(result.ttft_ms, 1),
            "tokens_per_s": round(result.tokens_per_s, 2),
        }
    }


class _Gone(Exception):
    """The client went away (or stopped reading) while we answered."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; streamed bodies use chunked transfer encoding
    server_version = "suanjing"
    service: Service  # set on the subclass made by `make_server`

    # -- plumbing ----------------------------------------------------------------------------------

    def setup(self) -> None:
        self.timeout = self.service.settings.client_timeout_s
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm holds the body
        # back until the client's delayed ACK (measured: 40 ms per request on keep-alive connections).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # one line per request on stderr is noise next to a batch of thousands

    def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8", "replace")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: RequestError) -> None:
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
        self._send_json(error.status, error.body(), headers)

    def _read_body(self) -> Any:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise RequestError(411, "send the body with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError(411, "a Content-Length header is required") from None
        if length < 0:
            raise bad_request("bad Content-Length")
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body must not be taken for a next request
            raise RequestError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(length)
        if len(raw) < length:
            raise _Gone
        try:
            return json.loads(raw)
        except RecursionError:
            raise bad_request("the JSON body is nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
            raise bad_request(f"the body is not valid JSON: {exc}") from None

    # -- routes ------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        path = self.path.split("?", 1)[0].rstrip("/")
        service = self.service
        if path == "/health":
            status = 200 if service.ready else 503
            state = "ok" if service.ready else ("failed" if service.load_error else "loading")
            payload = {"status": state, "model": service.settings.model_name}
            if service.load_error:
                payload["error"] = service.load_error
            headers = (
                None if service.ready else {"Retry-After": str(service.settings.retry_after_s)}
            )
            self._send_json(status, payload, headers)
        elif path == "/metrics":
            self._send_json(200, service.metrics())
        elif path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [self._model_card()]})
        elif path == f"/v1/models/{service.settings.model_name}":
            self._send_json(200, self._model_card())
        else:
            self._send_error(RequestError(404, f"no route GET {path[:100]}", code="not_found"))

    def _model_card(self) -> dict:
        return {
            "id": self.service.settings.model_name,
            "object": "model",
            "created": int(self.service.started),
            "owned_by": "suanjing",
        }

    def do_POST(self) -> None:  # noqa: N802 - the base class's name
        path = self.path.split("?", 1)[0].rstrip("/")
        service = self.service
        try:
            if path not in ("/v1/completions", "/v1/chat/completions"):
                self.close_connection = True
                raise RequestError(404, f"no route POST {path[:100]}", code="not_found")
            body = self._read_body()
            if not service.ready:
                service.count("rejected_loading")
                raise RequestError(
                    503,
                    "the model is still loading"
                    if not service.load_error
                    else f"the model failed to load: {service.load_error}",
                    type="server_error",
                    retry_after=service.settings.retry_after_s,
                )
            chat = path == "/v1/chat/completions"
            try:
                request = parse_request(
                    body, service.settings, chat=chat, render=service.render_chat
                )
                for prompt in request.prompts:
                    if service.count_prompt(prompt) > service.settings.max_prompt_tokens:
                        raise bad_request(
                            f"the prompt is longer than {service.settings.max_prompt_tokens} tokens",
                            "messages" if chat else "prompt",
                        )
            except RequestError:
                service.count("bad_requests")
                raise
            try:
                ticket = service.admission.join(request.choices)
            except Busy:
                service.count("rejected_busy")
                raise RequestError(
                    429,
                    f"the service is busy ({service.admission.waiting} requests wait); try again shortly",
                    type="rate_limit_error",
                    code="queue_full",
                    retry_after=service.settings.retry_after_s,
                ) from None
            service.count("requests")
            self._run(request, ticket)
        except RequestError as error:
            self._send_error(error)
        except (_Gone, ConnectionError, TimeoutError):
            self.close_connection = True

    # -- running a request -------------------------------------------------------------------------

    def _run(self, request: Request, ticket: Ticket) -> None:
        service = self.service
        gone = threading.Event()
        handles: list[GenerationHandle] = []
        lock = threading.Lock()

        def on_gone() -> None:
            gone.set()
            with lock:
                for h in handles:
                    h.cancel()

        service.watcher.watch(self.connection, on_gone)
        stream = _Stream(self) if request.stream else None
        try:
            if stream is not None:
                stream.start()
            while not ticket.wait(service.settings.keepalive_s if stream else 0.5):
                if gone.is_set():
                    raise _Gone
                if stream is not None:
                    stream.comment("waiting for room in the engine")
            if gone.is_set():
                raise _Gone
            try:
                for i in range(request.choices):
                    handle = service.engine.submit(
                        request.prompts[i // request.n],
                        request.params_for(i),
                        streaming=request.stream,
                    )
                    handle.add_done_callback(ticket.release_one)
                    with lock:
                        handles.append(handle)
                        if gone.is_set():
                            handle.cancel()
            except EngineClosed:
                raise RequestError(
                    503, "the service is shutting down", type="server_error", retry_after=5
                ) from None
            if stream is not None:
                self._stream(request, handles, stream, gone)
            else:
                self._plain(request, handles, gone)
        except RequestError as error:
            if stream is not None and stream.started:
                stream.error(error)
            else:
                raise
        except (_Gone, ConnectionError, TimeoutError):
            on_gone()
            service.count("cancelled")
            self.close_connection = True
        finally:
            service.watcher.unwatch(self.connection)
            if not handles:
                ticket.leave()
            else:
                ticket.forgo(request.choices - len(handles))
                for h in handles:
                    if not h.done:
                        h.cancel()

    def _results(
        self, request: Request, handles: list[GenerationHandle]
    ) -> tuple[list[GenerationResult], dict]:
        """The finished results and their usage; RequestError when any of them failed."""
        results = [h.result() for h in handles]
        failed = [r for r in results if r.finish_reason in ("error", "cancelled")]
        if failed:
            self.service.count("errors")
            why = failed[0].error or "the generation was cancelled (the service is shutting down)"
            raise RequestError(500 if failed[0].error else 503, why, type="server_error")
        self.service.count("completed")
        prompt = sum(results[i].prompt_tokens for i in range(0, len(results), request.n))
        completion = sum(r.new_tokens for r in results)
        self.service.count("prompt_tokens", prompt)
        self.service.count("completion_tokens", completion)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return results, usage

    def _plain(self, request: Request, handles: list[GenerationHandle], gone: threading.Event):
        for h in handles:
            while not h.wait(0.5):
                if gone.is_set():
                    raise _Gone
        if gone.is_set():
            raise _Gone
        results, usage = self._results(request, handles)
        rid, created, model = _ids(request), int(time.time()), self.service.settings.model_name
        if request.chat:
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": r.text},
                    "logprobs": None,
                    "finish_reason": _openai_finish(r.finish_reason),
                    **_vendor(r),
                }
                for i, r in enumerate(results)
            ]
            obj = "chat.completion"
        else:
            choices = [
                {
                    "text": r.text,
                    "index": i,
                    "logprobs": None,
                    "finish_reason": _openai_finish(r.finish_reason),
                    **_vendor(r),
                }
                for i, r in enumerate(results)
            ]
            obj = "text_completion"
        self._send_json(
            200,
            {
                "id": rid,
                "object": obj,
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": choices,
                "usage": usage,
            },
        )

    def _stream(
        self,
        request: Request,
        handles: list[GenerationHandle],
        stream: _Stream,
        gone: threading.Event,
    ) -> None:
        events: queue.SimpleQueue[tuple[int, str | None]] = queue.SimpleQueue()

        def pump(index: int, handle: GenerationHandle) -> None:
            for piece in handle:
                events.put((index, piece))
            events.put((index, None))

        for i, h in enumerate(handles):
            threading.Thread(target=pump, args=(i, h), daemon=True).start()
        rid, created, model = _ids(request), int(time.time()), self.service.settings.model_name
        obj = "chat.completion.chunk" if request.chat else "text_completion"

        def chunk(choices: list[dict], **extra) -> dict:
            return {
                "id": rid,
                "object": obj,
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": choices,
                **extra,
            }

        if request.chat:
            stream.data(
                chunk(
                    [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                        for i in range(len(handles))
                    ]
                )
            )
        open_ = len(handles)
        while open_:
            try:
                index, piece = events.get(timeout=self.service.settings.keepalive_s)
            except queue.Empty:
                stream.comment("generating")
                continue
            if gone.is_set():
                raise _Gone
            if piece is None:
                open_ -= 1
                continue
            if request.chat:
                choice = {
                    "index": index,
                    "delta": {"content": piece},
                    "logprobs": None,
                    "finish_reason": None,
                }
            else:
                choice = {"text": piece, "index": index, "logprobs": None, "finish_reason": None}
            stream.data(chunk([choice]))
        if gone.is_set():
            raise _Gone
        results, usage = self._results(request, handles)
        final = []
        for i, r in enumerate(results):
            if request.chat:
                choice = {"index": i, "delta": {}, "logprobs": None}
            else:
                choice = {"text": "", "index": i, "logprobs": None}
            choice["finish_reason"] = _openai_finish(r.finish_reason)
            final.append({**choice, **_vendor(r)})
        stream.data(chunk(final))
        if request.include_usage:
            stream.data(chunk([], usage=usage))
        stream.done()


class _Stream:
    """A server-sent-event response in HTTP/1.1 chunked transfer encoding."""

    def __init__(self, handler: Handler) -> None:
        self.h = handler
        self.started = False

    def start(self) -> None:
        h = self.h
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream; charset=utf-8")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("X-Accel-Buffering", "no")  # nginx: pass each event on at once
        h.end_headers()
        self.started = True

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        try:
            self.h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.h.wfile.flush()
        except (OSError, ValueError) as exc:  # reset, broken pipe, a write that timed out
            raise _Gone from exc

    def data(self, payload: dict) -> None:
        self._write(f"data: {json.dumps(payload, ensure_ascii=False)}\n\n")

    def comment(self, text: str) -> None:
        self._write(f": {text}\n\n")

    def error(self, error: RequestError) -> None:
        # OpenAI's clients raise an APIError on a streamed event that holds "error".
        try:
            self._write(f"data: {json.dumps(error.body(), ensure_ascii=False)}\n\n")
            self.done()
        except _Gone:
            self.h.close_connection = True

    def done(self) -> None:
        self._write("data: [DONE]\n\n")
        try:
            self.h.wfile.write(b"0\r\n\r\n")
            self.h.wfile.flush()
        except (OSError, ValueError) as exc:
            raise _Gone from exc


def _ids(request: Request) -> str:
    return f"{'chatcmpl' if request.chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def make_server(service: Service, host: str, port: int) -> Server:
    """A server bound to (host, port) (port 0: a free one; see `server.server_address`)."""
    handler = type("BoundHandler", (Handler,), {"service": service})
    return Server((host, port), handler)


def run_service(
    service: Service,
    host: str,
    port: int,
    *,
    announce: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> None:
    """Listen at once (health answers 503 "loading" meanwhile), load the model, serve until `stop` is
    set (SIGINT/SIGTERM in the command). `announce(url)` gets the base URL once listening; raises
    EngineError if the model fails to load."""
    server = make_server(service, host, port)
    stop = stop or threading.Event()
    thread = threading.Thread(target=server.serve_forever, name="suanjing-http", daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    announce(f"http://{shown}:{bound_port}/v1")
    service.start()
    try:
        while not service.loaded.wait(0.2):
            if stop.is_set():
                return
        if service.load_error:
            raise EngineError(service.load_error)
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        service.close()
