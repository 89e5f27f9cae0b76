"""The engine in a child process, behind the same API as `solver.engine.Engine`.

Why: openvino-genai's `ContinuousBatchingPipeline.step()` keeps Python's GIL for the whole step (its
binding does not release it; measured here: a 0.5 ms sleep in another thread took 20 ms while SmolLM2
decoded 16 sequences, and one SQLite commit 15 ms). In the process that runs the engine, every other
thread therefore waits up to one engine step each time it gives up the GIL (a socket read, a database
call). With the engine in its own process, the site's cache hits and a precompute worker's database work
no longer queue behind decode steps; the parent only moves small messages. Used by the site, the
precompute workers, and `python -m solver generate|precompute` (which write a file per answer).

Protocol (pickled tuples over one `multiprocessing.Pipe`):
  parent -> child  ("submit", id, prompt, params, streaming) | ("cancel", id) | ("close",)
  child -> parent  ("ready",) | ("failed", message) at start;
                   ("piece", id, text) | ("done", id, result fields) | ("stats", steps, tokens, busy_s)
The child is started with the "spawn" method (no forked locks or threads), ignores Ctrl-C (the parent
decides when to stop), and exits when the parent closes the pipe or dies. Everything about a generation's
text happens in the child's `Engine`: pieces hold whole characters only, the loop guard ends loops there
(finish_reason "loop"), and cancel reaches it as one message; the parent only forwards.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

from solver.engine import (
    EngineClosed,
    EngineError,
    EngineSettings,
    GeneratingAPI,
    GenerationHandle,
    GenerationParams,
    GenerationResult,
    _Stats,
)

START_TIMEOUT_S = 600.0  # loading the 1.5B model from a cold disk takes a minute or two
STATS_EVERY_S = 0.5


class RemoteGeneration(GenerationHandle):
    """A generation running in the engine process: the same surface as `solver.engine.Generation`."""

    def __init__(self, owner: EngineProcess, request_id: int, params: GenerationParams, streaming):
        super().__init__(request_id, params, streaming)
        self._owner = owner

    def cancel(self) -> None:
        if not self.cancel_requested and not self.done:
            self.cancel_requested = True
            self._owner._send(("cancel", self.request_id))


class EngineProcess(GeneratingAPI):
    """`Engine(model_dir, settings)` run in a child process. Raises EngineError if it cannot start."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        settings: EngineSettings | None = None,
        *,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.settings = settings or EngineSettings()
        # The child's counters arrive every STATS_EVERY_S; tokens of finished generations are added at
        # once, so `stats.tokens` never lags behind the results callers hold.
        self.stats = _Stats()
        self._finished_tokens = 0
        self._ids = itertools.count(1)
        self._running: dict[int, RemoteGeneration] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = False
        context = multiprocessing.get_context("spawn")
        self._conn, child_end = context.Pipe()
        self._process = context.Process(
            target=_child_main,
            args=(child_end, str(self.model_dir), self.settings),
            name="suanjing-engine",
            daemon=True,
        )
        self._process.start()
        child_end.close()
        try:
            if not self._conn.poll(start_timeout):
                raise EngineError(f"the engine process did not start within {start_timeout:.0f} s")
            message = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._process.join(5)
            raise EngineError(
                f"the engine process stopped while loading {self.model_dir} "
                f"(exit code {self._process.exitcode})"
            ) from exc
        except EngineError:
            self._process.kill()
            raise
        if message[0] == "failed":
            self._process.join(10)
            raise EngineError(message[1])
        self.pid = self._process.pid
        self._reader = threading.Thread(
            target=self._read, name="suanjing-engine-reader", daemon=True
        )
        self._reader.start()

    # -- the API -------------------------------------------------------------------------------

    def submit(
        self, prompt: str, params: GenerationParams | None = None, *, streaming: bool = False
    ) -> RemoteGeneration:
        params = params or GenerationParams()
        if not prompt:
            raise ValueError("empty prompt")
        generation = RemoteGeneration(self, next(self._ids), params, streaming)
        with self._lock:
            if self._closed:
                raise EngineClosed("the engine is shut down")
            self._running[generation.request_id] = generation
        try:
            self._send(("submit", generation.request_id, prompt, params, streaming))
        except EngineClosed:
            with self._lock:
                self._running.pop(generation.request_id, None)
            raise
        return generation

    @property
    def load(self) -> int:
        """Requests queued or running."""
        with self._lock:
            return len(self._running)

    @property
    def alive(self) -> bool:
        return self._process.is_alive() and not self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._send(("close",), closing=True)
        except EngineClosed:
            pass
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._reader.join(5)
        self._conn.close()
        self._fail_all("the engine was shut down", "cancelled")

    # -- plumbing ------------------------------------------------------------------------------

    def _send(self, message: tuple, *, closing: bool = False) -> None:
        with self._send_lock:
            if self._closed and not closing and message[0] != "cancel":
                raise EngineClosed("the engine is shut down")
            try:
                self._conn.send(message)
            except (OSError, ValueError) as exc:  # the child is gone
                raise EngineClosed(f"the engine process is gone: {exc}") from None

    def _read(self) -> None:
        """Hand the child's events to their generations, until the pipe closes."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "piece":
                generation = self._running.get(message[1])
                if generation is not None:
                    generation._pieces.put(message[2])
            elif kind == "done":
                with self._lock:
                    generation = self._running.pop(message[1], None)
                result = GenerationResult(**message[2])
                self._finished_tokens += result.new_tokens
                self.stats.tokens = max(self.stats.tokens, self._finished_tokens)
                if generation is not None:
                    generation._set_done(result)
            elif kind == "stats":
                self.stats.steps, tokens, self.stats.busy_s = message[1:4]
                self.stats.tokens = max(tokens, self._finished_tokens)
        with self._lock:
            crashed = not self._closed
            self._closed = True
        if crashed:
            code = self._process.exitcode
            self._fail_all(f"the engine process stopped (exit code {code})", "error")

    def _fail_all(self, why: str, reason: str) -> None:
        with self._lock:
            left, self._running = list(self._running.values()), {}
        for generation in left:
            generation._set_done(
                _ended_early(
                    reason,
                    error=why if reason == "error" else None,
                    elapsed_s=time.perf_counter() - generation.submitted,
                )
            )


# -- the child process ---------------------------------------------------------------------------


def _child_main(conn, model_dir: str, settings: EngineSettings) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from solver.engine import Engine

    try:
        engine = Engine(model_dir, settings)
    except EngineError as exc:
        conn.send(("failed", str(exc)))
        return
    except Exception as exc:  # anything else that stops loading: say it in one line
        conn.send(("failed", f"the engine could not load {model_dir}: {exc}"))
        return
    send_lock = threading.Lock()
    by_id: dict[int, object] = {}
    stop = threading.Event()

    def send(message: tuple) -> None:
        with send_lock:
            try:
                conn.send(message)
            except (OSError, ValueError):
                stop.set()

    def listener(generation, piece: str | None) -> None:
        # Runs in the engine's driver thread: no waiting here, one small message per event. (A batch
        # generation's text comes as one piece at its end.)
        if piece is not None:
            send(("piece", generation.tag, piece))
            return
        by_id.pop(generation.tag, None)
        send(("done", generation.tag, asdict(generation.result(0))))

    def report_stats() -> None:
        last = None
        while not stop.wait(STATS_EVERY_S):
            now = (engine.stats.steps, engine.stats.tokens, engine.stats.busy_s)
            if now != last:
                send(("stats", *now))
                last = now

    engine.listener = listener
    conn.send(("ready",))
    threading.Thread(target=report_stats, daemon=True).start()
    try:
        while not stop.is_set():
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            kind = message[0]
            if kind == "submit":
                _, rid, prompt, params, streaming = message
                try:
                    by_id[rid] = generation = engine.submit(
                        prompt, params, streaming=streaming, tag=rid
                    )
                except Exception as exc:  # a prompt the tokenizer refuses: that request fails
                    send(("done", rid, asdict(_ended_early("error", error=str(exc)[:300]))))
                    continue
                if generation.done:  # it ended before it was filed: the listener did not find it
                    by_id.pop(rid, None)
            elif kind == "cancel":
                generation = by_id.get(message[1])
                if generation is not None:
                    generation.cancel()
            elif kind == "close":
                break
    finally:
        stop.set()
        engine.close()
        send(("stats", engine.stats.steps, engine.stats.tokens, engine.stats.busy_s))
        conn.close()


def _ended_early(finish_reason: str, *, error: str | None = None, elapsed_s: float = 0.0):
    """The result of a generation that produced nothing (refused, or its engine went away)."""
    return GenerationResult(
        text="",
        prompt_tokens=0,
        new_tokens=0,
        finish_reason=finish_reason,
        ttft_ms=0.0,
        tokens_per_s=0.0,
        elapsed_s=elapsed_s,
        error=error,
    )
