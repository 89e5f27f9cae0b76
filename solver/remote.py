"""An engine by URL: `RemoteEngine` talks to any OpenAI-compatible service (ours, `python -m solver serve`;
llama.cpp's; vLLM; OVMS) behind the same API as `solver.engine.Engine`.

Owns: turning `GenerationParams` into a streamed `/v1/completions` request (raw model input; the caller
renders prompts with `solver.prompts`), reading the server-sent events back into a `GenerationHandle`
(text pieces, finish reason, token counts, time to first token and decode speed as seen by the caller),
cancelling (closing the stream: the service sees the connection end and stops the generation), telling
"service down or busy" (`EngineUnavailable`, with the service's Retry-After) from "bad request"
(`EngineRequestRefused`), and starting a local service as a child process (`start_local_service`).
Does not own: the service itself (`solver.serve`) or generating.

Every request is streamed over HTTP, batch work too: a stream is what lets a cancel reach the service,
and what shows at once that the service went away. A handle asked for without streaming gets its text
in one piece at the end, as from `Engine`.

A generation that the service stops answering ends with finish_reason "error" (as `EngineProcess` does
when its child dies) and keeps the `EngineUnavailable` in `handle.exception`; `generate()` and
`generate_many()` raise it, since a caller of those cannot go on without the service.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from solver.engine import (
    EngineClosed,
    EngineError,
    GeneratingAPI,
    GenerationHandle,
    GenerationParams,
    GenerationResult,
    _Stats,
    longest_first_order,
)

CONNECT_TIMEOUT_S = 5.0
# Longest silence on a stream. Our service sends a comment every few seconds while a request waits;
# other servers may say nothing until the prompt is read.
READ_TIMEOUT_S = 600.0
START_TIMEOUT_S = 600.0


class EngineUnavailable(EngineClosed):
    """The engine service cannot be reached, went away, failed, or is busy; try again later.

    An `EngineClosed`: no request can be taken now, whatever it asks, so a batch stops and gives its
    unstarted items back (`solver.batch.run_batch`) instead of failing each of them in turn."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineRequestRefused(EngineError):
    """The engine service refused the request as wrong (a 4xx other than 429): retrying will not help."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def _error_message(response) -> str:
    try:
        error = json.loads(response.read()).get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = None
    return str(message or response.reason_phrase or "")[:300]


def _retry_after(response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class HTTPGeneration(GenerationHandle):
    """One generation streamed from the service; the same surface as `solver.engine.Generation`."""

    def __init__(
        self, owner: RemoteEngine, request_id: int, params: GenerationParams, streaming: bool
    ) -> None:
        super().__init__(request_id, params, streaming)
        self._owner = owner
        self._response = None
        self.exception: EngineError | None = None

    def cancel(self) -> None:
        """Close the stream (safe from any thread, idempotent): the service cancels the generation."""
        if self.cancel_requested or self.done:
            return
        self.cancel_requested = True
        response = self._response
        if response is None:
            return
        # Closing a socket does not wake a thread blocked reading it (Linux); shutting it down does.
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- the reader thread -------------------------------------------------------------------------

    def _read(self, response) -> None:
        pieces: list[str] = []
        first = last = None
        reason: str | None = None
        vendor: dict = {}
        usage: dict = {}
        chunks = 0
        failure: EngineError | None = None
        try:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # blank lines between events, ": comments" (keep-alives)
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError:
                    failure = EngineUnavailable(
                        f"the engine service sent a bad event: {data[:100]}"
                    )
                    break
                if isinstance(event.get("error"), dict | str):
                    error = event["error"]
                    message = error.get("message") if isinstance(error, dict) else error
                    failure = EngineUnavailable(f"the engine service failed: {str(message)[:300]}")
                    break
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices") or ():
                    text = choice.get("text")
                    if text is None:  # a chat chunk, from a server that answers that way
                        text = (choice.get("delta") or {}).get("content")
                    if text:
                        chunks += 1
                        now = time.perf_counter()
                        first = first or now
                        last = now
                        pieces.append(text)
                        if self.streaming:
                            self._pieces.put(text)
                    if choice.get("finish_reason"):
                        reason = choice["finish_reason"]
                        vendor = choice.get("suanjing") or {}
            else:
                if not self.cancel_requested and reason is None:
                    failure = EngineUnavailable(
                        "the engine service ended the stream without finishing the generation"
                    )
        except Exception as exc:  # httpx's transport errors, and anything else the stream raises
            if not self.cancel_requested:
                failure = EngineUnavailable(
                    f"the engine service at {self._owner.base_url} went away mid-generation "
                    f"({type(exc).__name__}: {str(exc)[:200]})"
                )
        finally:
            response.close()
        finished = time.perf_counter()
        if self.cancel_requested:
            finish = "cancelled"
        elif failure is not None:
            finish = "error"
        else:
            finish = vendor.get("finish_reason") or reason or "stop"
        text = "".join(pieces)
        if text and not self.streaming:
            self._pieces.put(text)
        n = int(vendor.get("completion_tokens") or usage.get("completion_tokens") or chunks)
        prompt_tokens = int(vendor.get("prompt_tokens") or usage.get("prompt_tokens") or 0)
        decode_time = (last - first) if first is not None and last is not None else 0.0
        self.exception = failure
        self._owner._forget(self, n)
        self._set_done(
            GenerationResult(
                text=text,
                prompt_tokens=prompt_tokens,
                new_tokens=n,
                finish_reason=finish,
                ttft_ms=((first or finished) - self.submitted) * 1000.0,
                # As the caller saw it; the service's own figure when no text came to time (tokens
                # that decode to nothing, or a single piece).
                tokens_per_s=(n - 1) / decode_time
                if n > 1 and decode_time > 0 and chunks > 1
                else float(vendor.get("tokens_per_s") or 0.0),
                elapsed_s=finished - self.submitted,
                error=str(failure) if failure is not None else None,
            )
        )


class RemoteEngine(GeneratingAPI):
    """The engine behind an OpenAI-compatible base URL, e.g. "http://127.0.0.1:8100/v1".

    `model`: the model name to ask for (default: the first the service lists at /v1/models).
    `max_in_flight`: most requests `generate_many` keeps open at once (the service queues or batches
    them; when it answers 429, fewer are kept open until some finish). Raises EngineUnavailable if the
    service cannot be reached."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        max_in_flight: int = 64,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> None:
        import httpx

        self._httpx = httpx
        self.base_url = base_url.rstrip("/")
        self.max_in_flight = max(1, max_in_flight)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=self.max_in_flight + 8, max_keepalive_connections=self.max_in_flight
            ),
        )
        self.stats = _Stats()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._running: dict[int, HTTPGeneration] = {}
        self._closed = False
        self.model = model or self.models()[0]

    # -- the service ---------------------------------------------------------------------------

    def _get(self, path: str, timeout: float | None = None):
        try:
            return self._client.get(path, timeout=timeout or self._client.timeout)
        except self._httpx.HTTPError as exc:
            raise EngineUnavailable(
                f"the engine service at {self.base_url} cannot be reached ({type(exc).__name__}: {exc})"
            ) from None

    def models(self) -> list[str]:
        """The model names the service lists; raises EngineUnavailable if it cannot be asked."""
        response = self._get("models", timeout=10.0)
        if response.status_code != 200:
            raise EngineUnavailable(
                f"the engine service at {self.base_url} answered {response.status_code} to /models",
                retry_after=_retry_after(response),
            )
        try:
            names = [m["id"] for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise EngineUnavailable(
                f"{self.base_url}/models is not an OpenAI-compatible model list"
            ) from None
        if not names:
            raise EngineUnavailable(f"the engine service at {self.base_url} serves no model")
        return names

    def health(self) -> dict:
        """{"status": "ok" | "loading" | ..., "model": ...}: the service's /health (beside /v1), or
        for a service without one, whether /models answers. Raises EngineUnavailable if unreachable."""
        root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        response = self._get(root + "/health", timeout=5.0)
        if response.status_code in (200, 503):
            try:
                body = response.json()
                if isinstance(body, dict) and "status" in body:
                    return body
            except ValueError:
                pass
            return {"status": "ok" if response.status_code == 200 else "unavailable"}
        return {"status": "ok", "model": self.models()[0]}

    @property
    def alive(self) -> bool:
        """The service answers and is ready to generate."""
        try:
            return not self._closed and self.health().get("status") == "ok"
        except EngineUnavailable:
            return False

    @property
    def load(self) -> int:
        """Requests this client has open."""
        with self._lock:
            return len(self._running)

    # -- generating ------------------------------------------------------------------------------

    def _body(self, prompt: str, params: GenerationParams) -> dict:
        if len(params.stop_strings) > 4:
            raise ValueError("OpenAI-compatible services take at most 4 stop strings")
        greedy = params.greedy or params.temperature <= 0
        body: dict = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": params.max_new_tokens,
            "temperature": 0.0 if greedy else params.temperature,
            "top_p": 1.0 if greedy else params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop_strings:
            body["stop"] = list(params.stop_strings)
        if params.presence_penalty:
            body["presence_penalty"] = params.presence_penalty
        if params.frequency_penalty:
            body["frequency_penalty"] = params.frequency_penalty
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty
        if params.ignore_eos:
            body["ignore_eos"] = True  # vLLM's and ours
        return body

    def submit(
        self, prompt: str, params: GenerationParams | None = None, *, streaming: bool = False
    ) -> HTTPGeneration:
        """Send one generation; returns once the service accepted it (its response began). Raises
        EngineUnavailable (unreachable, 5xx, 429 with `retry_after`) or EngineRequestRefused (4xx)."""
        params = params or GenerationParams()
        if not prompt:
            raise ValueError("empty prompt")
        if self._closed:
            raise EngineClosed("the engine client is closed")
        generation = HTTPGeneration(self, next(self._ids), params, streaming)
        request = self._client.build_request("POST", "completions", json=self._body(prompt, params))
        try:
            response = self._client.send(request, stream=True)
        except self._httpx.HTTPError as exc:
            raise EngineUnavailable(
                f"the engine service at {self.base_url} cannot be reached ({type(exc).__name__}: {exc})"
            ) from None
        if response.status_code != 200:
            try:
                message = _error_message(response)
            except self._httpx.HTTPError:
                message = ""
            finally:
                response.close()
            status = response.status_code
            if status == 429 or status >= 500:
                raise EngineUnavailable(
                    f"the engine service answered {status}: {message}",
                    retry_after=_retry_after(response),
                )
            raise EngineRequestRefused(
                f"the engine service refused the request ({status}): {message}", status=status
            )
        generation._response = response
        with self._lock:
            self._running[generation.request_id] = generation
        threading.Thread(
            target=generation._read, args=(response,), name="suanjing-remote", daemon=True
        ).start()
        return generation

    def _forget(self, generation: HTTPGeneration, tokens: int) -> None:
        with self._lock:
            self._running.pop(generation.request_id, None)
            self.stats.tokens += tokens

    def generate(self, prompt: str, params: GenerationParams | None = None) -> GenerationResult:
        """One generation to its end; raises EngineUnavailable if the service goes away meanwhile."""
        generation = self.submit(prompt, params)
        result = generation.result()
        if generation.exception is not None:
            raise generation.exception
        return result

    def generate_many(
        self,
        prompts: Sequence[str],
        params: GenerationParams | Sequence[GenerationParams] | None = None,
        *,
        on_result: Callable[[int, GenerationResult], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        longest_first: bool = True,
    ) -> list[GenerationResult]:
        """As `GeneratingAPI.generate_many`, with at most `max_in_flight` requests open: the service
        batches the open ones; a 429 keeps fewer open until one finishes (after its Retry-After).
        Raises EngineUnavailable when the service cannot be reached or goes away (what finished
        before was given to `on_result`); prompts never sent end "cancelled" when `should_stop` says so."""
        if params is None or isinstance(params, GenerationParams):
            params_list = [params or GenerationParams()] * len(prompts)
        else:
            params_list = list(params)
            if len(params_list) != len(prompts):
                raise ValueError("one GenerationParams per prompt")
        results: list[GenerationResult | None] = [None] * len(prompts)
        todo = deque(longest_first_order(prompts) if longest_first else range(len(prompts)))
        open_: dict[int, HTTPGeneration] = {}
        limit = self.max_in_flight
        hold_until = 0.0
        wake = threading.Event()
        stopped = False

        def finish(index: int, result: GenerationResult) -> None:
            results[index] = result
            if on_result is not None:
                on_result(index, result)

        try:
            while todo or open_:
                wake.clear()
                if not stopped and should_stop is not None and should_stop():
                    stopped = True
                    for g in open_.values():
                        g.cancel()
                    while todo:
                        finish(todo.popleft(), _cancelled())
                for index, g in list(open_.items()):
                    if g.done:
                        del open_[index]
                        if g.exception is not None:
                            raise g.exception
                        finish(index, g.result())
                        limit = min(self.max_in_flight, limit + 1)
                while todo and len(open_) < limit and time.monotonic() >= hold_until:
                    index = todo[0]
                    try:
                        g = self.submit(prompts[index], params_list[index])
                    except EngineUnavailable as exc:
                        if exc.retry_after is None or not open_ and exc.retry_after > 60:
                            raise
                        # Busy: keep what is open, send more after Retry-After (or when one ends).
                        limit = max(1, len(open_))
                        hold_until = time.monotonic() + (exc.retry_after or 1.0)
                        break
                    todo.popleft()
                    open_[index] = g
                    g.add_done_callback(wake.set)
                if todo or open_:
                    wake.wait(0.05)
        except BaseException:
            for g in open_.values():
                g.cancel()
            raise
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Cancel what this client has open and close its connections."""
        self._closed = True
        with self._lock:
            running = list(self._running.values())
        for g in running:
            g.cancel()
        for g in running:
            g.wait(5)
        self._client.close()


def _cancelled() -> GenerationResult:
    return GenerationResult(
        text="",
        prompt_tokens=0,
        new_tokens=0,
        finish_reason="cancelled",
        ttft_ms=0.0,
        tokens_per_s=0.0,
        elapsed_s=0.0,
    )


# -- a local service ---------------------------------------------------------------------------------


def start_local_service(
    model_dir_or_name: str | os.PathLike,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    store: str | os.PathLike | None = None,
    extra_args: Sequence[str] = (),
    stderr=None,
    timeout: float = START_TIMEOUT_S,
) -> tuple[subprocess.Popen, str]:
    """Start `python -m solver serve` as a child process and wait until it is ready to generate.

    `model_dir_or_name`: a prepared model's folder, or a model name in `store` (default: the CLI's
    store). `port=0` lets the service pick a free port. The child stops when this process dies.
    Returns (process, base URL like "http://127.0.0.1:PORT/v1"); raises EngineError if it exits or is
    not ready within `timeout` seconds (it is then stopped). `stderr` goes to Popen (default: ours)."""
    path = Path(model_dir_or_name)
    args = [sys.executable, "-m", "solver", "serve", "--host", host, "--port", str(port)]
    if path.is_dir() and (path / "manifest.json").is_file():
        args += ["--store", str(path.resolve().parent), "--model", path.name]
    else:
        args += ["--model", str(model_dir_or_name)]
        if store is not None:
            args += ["--store", str(store)]
    args += ["--exit-with-parent", *extra_args]
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True, env=env
    )
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.append(process.stdout.readline()), daemon=True
    )  # the one line the service prints: its URL
    reader.start()
    try:
        reader.join(max(0.0, deadline - time.monotonic()))
        url = lines[0].strip() if lines else ""
        if not url.startswith("http"):
            raise EngineError(_exit_message(process, "before it listened"))
        # Nothing else comes on stdout; read it to the end so the pipe never fills.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        import httpx

        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EngineError(_exit_message(process, "while loading the model"))
            try:
                root = url[: -len("/v1")]
                if httpx.get(root + "/health", timeout=2.0).status_code == 200:
                    return process, url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise EngineError(f"the engine service was not ready within {timeout:.0f} s")
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        raise


def _exit_message(process: subprocess.Popen, when: str) -> str:
    try:
        code = process.wait(5)
    except subprocess.TimeoutExpired:
        return f"the engine service did not start {when}"
    return f"the engine service exited with code {code} {when} (its error is on its standard error)"
