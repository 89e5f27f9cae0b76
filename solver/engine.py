"""The generation engine: one openvino-genai continuous-batching pipeline per process, on the CPU.

Owns: loading a prepared model folder, running many generations at once (continuous batching), streaming
each one's text as it is produced, cancelling, ending generations that loop (`LoopGuard`), and measuring
(time to first token, tokens per second).
Does not own: prompts (it is given raw model input; `solver.prompts` renders it), parsing answers
(`solver.answers`), or where models come from (`solver.modelstore`).

Threading model: any number of threads may call `submit` / `stream` / `generate_many` at once. One
driver thread owns the pipeline: it adds waiting requests, calls `step()` (which advances every running
request by one token, batched), and hands new tokens to each request's queue. A plain `LLMPipeline`
refuses a second simultaneous `generate`; a `ContinuousBatchingPipeline` driven this way batches them.
"""

from __future__ import annotations

import abc
import itertools
import os
import queue
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from solver.loops import LineRepeats, token_bytes


class EngineError(Exception):
    """The engine failed to load or to run a request."""


class EngineClosed(EngineError):
    """The engine was closed; no new requests are taken."""


@dataclass(frozen=True)
class EngineSettings:
    """Defaults suit a 2-core, 8 GB machine running the 1.5B INT8 model next to the site.

    The options below the first five are openvino-genai's; each was measured on the 1.5B shape by
    `python bench/engine_options.py` (bench/RESULTS.md), and None leaves OpenVINO's own default."""

    # None: all cores. Sets INFERENCE_NUM_THREADS (OV_NUM_THREADS does nothing).
    threads: int | None = None
    # ~37k tokens of KV cache for the 1.5B model; a long answer is ~5k tokens.
    kv_cache_gb: float = 1.0
    max_num_seqs: int = 64  # requests decoded together in one step
    # prompt tokens per step (dynamic split-fuse keeps decode flowing)
    max_num_batched_tokens: int = 256
    device: str = "CPU"
    # KV_CACHE_PRECISION: "u8" (the CPU plugin's default on x86), "f16" or "f32". u8 halves the KV
    # cache's bytes against f16 (twice the tokens in kv_cache_gb) at a small cost in accuracy.
    kv_cache_precision: str | None = None
    # DYNAMIC_QUANTIZATION_GROUP_SIZE: activations quantized to 8 bits per group of this many values
    # so INT8/INT4 weights multiply in integers; 0 turns it off (the CPU plugin's default is 32).
    dynamic_quantization_group_size: int | None = None
    # ENABLE_CPU_PINNING: keep each inference thread on one core (the CPU plugin's default is on).
    cpu_pinning: bool | None = None
    # Keep finished requests' KV blocks to reuse for a prompt that starts the same way.
    prefix_caching: bool = False
    # Speculative decoding: prompt-lookup (draft tokens copied from an earlier n-gram of the prompt and
    # the text so far) or a draft model (a prepared model folder with the same vocabulary). Both verify
    # up to `num_assistant_tokens` drafted tokens in one step of the model.
    prompt_lookup: bool = False
    draft_model: str | None = None
    num_assistant_tokens: int = 5
    max_ngram_size: int = 3

    def __post_init__(self) -> None:
        if self.kv_cache_precision not in (None, *KV_CACHE_PRECISIONS):
            raise ValueError(
                f"kv_cache_precision {self.kv_cache_precision!r}: use one of "
                + ", ".join(KV_CACHE_PRECISIONS)
            )
        if self.dynamic_quantization_group_size is not None and (
            self.dynamic_quantization_group_size < 0
        ):
            raise ValueError("dynamic_quantization_group_size must be >= 0 (0: off)")
        if self.prompt_lookup and self.draft_model:
            raise ValueError("prompt lookup and a draft model cannot be used together")
        if self.num_assistant_tokens < 1 or self.max_ngram_size < 1:
            raise ValueError("num_assistant_tokens and max_ngram_size must be >= 1")

    @property
    def is_speculative(self) -> bool:
        return self.prompt_lookup or bool(self.draft_model)

    def plugin_properties(self) -> dict[str, object]:
        """The OpenVINO CPU plugin properties these settings set (those left None are not set)."""
        properties: dict[str, object] = {}
        if self.threads:
            properties["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.kv_cache_precision is not None:
            properties["KV_CACHE_PRECISION"] = self.kv_cache_precision
        if self.dynamic_quantization_group_size is not None:
            properties["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = int(
                self.dynamic_quantization_group_size
            )
        if self.cpu_pinning is not None:
            properties["ENABLE_CPU_PINNING"] = bool(self.cpu_pinning)
        return properties


KV_CACHE_PRECISIONS = ("u8", "f16", "f32")


@dataclass(frozen=True)
class LoopGuard:
    """When a generation counts as looping, so that the engine ends it (finish_reason "loop").

    Small and distilled models repeat themselves until the token limit ("15. 15. 15. …", "1. 2. 3. … 124.",
    "Wait, maybe… I'm stuck…"). Three rules run on each new token; any one ends the generation:

    - exact: the last `min_span` tokens or more repeat with a period of at most `max_period` tokens, at least
      `min_repeats` times ("15. 15. 15.", "；；；", a sentence said three times over);
    - numbered: the same with every digit token counted as one ("Step 7: 小明剩几个苹果。 Step 8: …", counting
      "57. 58. 59."), over a longer `numbered_span`, since real lists and tables are periodic this way too;
    - long: at least `coverage` of the last `window` tokens continue an `ngram`-token run the generation
      already wrote (a paragraph or a cycle of sentences longer than `max_period`);
    - lines: the same line again and again with only a counter changing, read as text (solver.loops).
    """

    max_period: int = 64
    min_span: int = 48
    min_repeats: int = 3
    numbered_span: int = 256
    # lines: `line_repeats` lines in a row, or four rounds of a cycle of up to 3 lines, the same but for
    # their first number (solver.loops.LineRepeats: "第一步：鸡有15只。第二步：鸡有15只。…")
    line_repeats: int = 10
    ngram: int = 12
    window: int = 200
    coverage: float = 0.9


@dataclass(frozen=True)
class GenerationParams:
    """How to generate one request.

    openvino-genai's continuous-batching sampler applies the penalties and stop strings below to greedy
    and sampled decoding alike; `no_repeat_ngram_size` is not offered because it applies that one to beam
    search only (greedy output came out token for token unchanged). None of the penalties is on by
    default: the loop guard ends loops, and no penalty helped answers. Measured on SmolLM2, 8 short math
    questions at its temperature 0.2, runs that hit a 400-token limit / right final answers: 4 seeds,
    none 12/5, presence 0.5 7/4, presence 1.0 8/4, frequency 0.2 4/3, repetition 1.1 8/0; 12 seeds,
    none 36/10, presence 0.5 31/7."""

    max_new_tokens: int = 2048
    temperature: float = 0.6
    top_p: float = 0.95
    greedy: bool = False
    # None: a fresh random seed per request. (openvino-genai seeds every request with 0 unless told
    # otherwise, so unseeded samples of one prompt would all be the same text.)
    seed: int | None = None
    # Off by default: repetition_penalty also penalises the prompt's tokens, the problem's numbers (at 1.1
    # SmolLM2 answered 160 for a rectangle of 8 cm by 5 cm, 40 without), and frequency_penalty grows with
    # every use of a token, which long reasoning (digits, "=", "the") cannot afford.
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    # Flat, generated tokens only: the gentlest of the three.
    presence_penalty: float = 0.0
    # End the generation when one of these strings appears (it is left out of the text).
    stop_strings: tuple[str, ...] = ()
    # None: let loops run to max_new_tokens.
    loop_guard: LoopGuard | None = LoopGuard()
    # Benchmarks only: keep generating past end-of-sequence so every run has the same length (the loop
    # guard is off too).
    ignore_eos: bool = False


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    new_tokens: int
    # "stop" (the model ended, or a stop string), "length" (hit max_new_tokens), "loop" (the loop guard
    # ended it: a failure, never an answer), "cancelled", "error"
    finish_reason: str
    ttft_ms: float  # submit -> first new token
    tokens_per_s: float  # decode speed after the first token
    elapsed_s: float
    error: str | None = None


class GenerationHandle(abc.ABC):
    """What a caller holds for one request in flight, in this process (`Generation`) or in the engine's
    child process (`solver.engine_process.RemoteGeneration`): iterate it for text pieces as they are
    generated; `cancel()` stops it; `result()` waits for the end."""

    def __init__(self, request_id: int, params: GenerationParams, streaming: bool) -> None:
        self.request_id = request_id
        self.params = params
        # Only streamed generations decode text token by token; batch work decodes once at the end.
        self.streaming = streaming
        self.submitted = time.perf_counter()
        self.cancel_requested = False
        self._pieces: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._done = threading.Event()
        self._result: GenerationResult | None = None
        self._callbacks: list[Callable[[], None]] = []

    def __iter__(self) -> Iterator[str]:
        while True:
            piece = self._pieces.get()
            if piece is None:
                return
            yield piece

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop generating (safe from any thread, idempotent). The result keeps what was produced."""

    def result(self, timeout: float | None = None) -> GenerationResult:
        if not self._done.wait(timeout):
            raise TimeoutError(f"generation {self.request_id} still running")
        assert self._result is not None
        return self._result

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the generation ends or `timeout` passes; True if it ended."""
        return self._done.wait(timeout)

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        """Call `fn()` once when the generation ends (at once if it has), from the engine's thread:
        `fn` must be quick, like setting an Event."""
        with _callback_lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn()

    def _set_done(self, result: GenerationResult) -> None:
        """Store the result, end the piece stream, set done and run the callbacks (each exactly once)."""
        self._result = result
        self._pieces.put(None)
        with _callback_lock:
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn()


_callback_lock = threading.Lock()


class Generation(GenerationHandle):
    """A request running on this process's engine."""

    def __init__(
        self,
        engine: Engine,
        request_id: int,
        prompt_ids,
        params: GenerationParams,
        *,
        streaming: bool,
    ):
        super().__init__(request_id, params, streaming)
        self._engine = engine
        self.prompt_ids = prompt_ids
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.token_ids: list[int] = []
        self._text = IncrementalDecoder(engine._decode) if streaming else None
        self._trim = StopTrimmer(params.stop_strings) if params.stop_strings else None
        self._out: list[str] = []  # what was emitted: the result's text
        guard = params.loop_guard
        self._loops = (
            LoopDetector(guard, engine.token_classes, engine.token_bytes)
            if guard is not None and not params.ignore_eos
            else None
        )
        self.looped = False  # the loop guard ended it
        self.handle = None  # the pipeline's GenerationHandle, set by the driver thread
        self.tag: object = None  # the submitter's label (solver.engine_process: the parent's id)

    def cancel(self) -> None:
        """Stop generating (safe from any thread, idempotent). The result keeps what was produced."""
        self.cancel_requested = True
        self._engine._wake()

    # -- driver side -------------------------------------------------------------------------

    def _take(self, ids: Sequence[int]) -> None:
        if not ids or self.looped:
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if self._loops is not None:
            for n, token in enumerate(ids, 1):
                if self._loops.feed(int(token)):
                    self.looped = True
                    ids = ids[:n]  # nothing after the token that proved the loop
                    break
        self.token_ids.extend(ids)
        if self._text is not None:
            self._out_piece(self._text.feed(ids))

    def _out_piece(self, piece: str, *, last: bool = False) -> None:
        if self._trim is not None:
            piece = self._trim.feed(piece) + (self._trim.finish() if last else "")
        if piece:
            self._out.append(piece)
            self._emit(piece)

    def _finish(self, finish_reason: str, error: str | None = None) -> None:
        self.finished_at = time.perf_counter()
        if self._text is not None:
            self._out_piece(self._text.finish(), last=True)
        else:
            self._out_piece(
                self._engine._decode(self.token_ids).rstrip(REPLACEMENT) if self.token_ids else "",
                last=True,
            )
        text = "".join(self._out)
        n = len(self.token_ids)
        first = self.first_token_at or self.finished_at
        decode_time = self.finished_at - first
        result = GenerationResult(
            text=text,
            prompt_tokens=int(self.prompt_ids.get_shape()[-1])
            if self.prompt_ids is not None
            else 0,
            new_tokens=n,
            finish_reason=finish_reason,
            ttft_ms=(first - self.submitted) * 1000.0,
            tokens_per_s=(n - 1) / decode_time if n > 1 and decode_time > 0 else 0.0,
            elapsed_s=self.finished_at - self.submitted,
            error=error,
        )
        self._set_done(result)
        listener = self._engine.listener
        if listener is not None:
            listener(self, None)

    def _emit(self, piece: str) -> None:
        self._pieces.put(piece)
        listener = self._engine.listener
        if listener is not None:
            listener(self, piece)


REPLACEMENT = (
    "\ufffd"  # what the detokenizer shows for bytes that are not (yet) a whole UTF-8 character
)


class StopTrimmer:
    """Streamed text with the first completed stop string and everything after it removed (OpenAI's
    `stop`).

    Text that could be the start of a stop string is held back until the next piece shows whether it
    is, so nothing emitted is ever taken back; at the end, held text that did not become a stop string
    is let out."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped or not piece:
            return ""
        text = self.held + piece
        # the stop string that was completed first ends the text (as a generation would have stopped)
        found = [(at + len(s), at) for s in self.stops if (at := text.find(s)) >= 0]
        if found:
            self.stopped, self.held = True, ""
            return text[: min(found)[1]]
        keep = max(
            (
                n
                for s in self.stops
                for n in range(min(len(s) - 1, len(text)), 0, -1)
                if s.startswith(text[-n:])
            ),
            default=0,
        )
        self.held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def finish(self) -> str:
        out, self.held = ("" if self.stopped else self.held), ""
        return out


class IncrementalDecoder:
    """Turns a generation's token ids, as they arrive, into text pieces that never split a character.

    Byte-level BPE (SmolLM2, Qwen2 and the R1 distill) gives most CJK characters two or three tokens, each
    holding part of the character's UTF-8 bytes, and the detokenizer shows an unfinished character as
    U+FFFD. So ids wait here until their text no longer ends in U+FFFD; `finish()` drops what is left
    unfinished when the generation stops mid-character (cut off, cancelled). The pieces add up to `text`,
    which is the one-shot decode of all the ids minus that unfinished tail (tests/test_engine.py proves
    it on the real tokenizer). A U+FFFD in the middle of the text is the model's: it wrote bytes that are
    not UTF-8, and the one-shot decode shows them the same way."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._pending: list[int] = []
        self._pieces: list[str] = []

    def feed(self, ids: Sequence[int]) -> str:
        """Take new ids; return the text they complete ("" while a character is unfinished)."""
        self._pending.extend(ids)
        text = self._decode(self._pending)
        if not text or text.endswith(REPLACEMENT):
            return ""
        self._pending = []
        self._pieces.append(text)
        return text

    def finish(self) -> str:
        """The last piece: the waiting ids' text without an unfinished character at its end."""
        tail = self._decode(self._pending).rstrip(REPLACEMENT) if self._pending else ""
        self._pending = []
        if tail:
            self._pieces.append(tail)
        return tail

    @property
    def text(self) -> str:
        return "".join(self._pieces)


class LoopDetector:
    """Applies a `LoopGuard` to one generation's token ids, one token at a time (in the driver thread,
    so each step is a few list comparisons: about 64 per token and rule).

    `classes` maps token ids to their class for the numbered rule (tokens that differ only in digits share
    one, see `token_classes`); ids not in it are their own class."""

    def __init__(
        self,
        guard: LoopGuard,
        classes: Mapping[int, int] | None = None,
        token_bytes: Mapping[int, bytes] | None = None,
    ) -> None:
        self.guard = guard
        self._classes = classes or {}
        # The lines rule reads the tokens' bytes; without them (no readable vocabulary) it is off.
        self._bytes = token_bytes or {}
        self._lines = LineRepeats(guard.line_repeats) if token_bytes else None
        self._ids: list[int] = []
        self._cls: list[int] = []
        # _run[p]: how many tokens in a row, ending with the newest, equal the token p places before them
        self._run = [0] * (guard.max_period + 1)
        self._run_cls = [0] * (guard.max_period + 1)
        self._seen: set[int] = set()  # hashes of the n-grams written so far
        self._recent: deque[bool] = deque(
            maxlen=guard.window
        )  # newest tokens: continues a seen n-gram?
        self._covered = 0
        self.rule: str | None = None  # the rule that fired: "exact", "numbered", "long" or "lines"

    def feed(self, token: int) -> bool:
        """Add the newest token; True once the generation is looping (and from then on)."""
        if self.rule is not None:
            return True
        g = self.guard
        ids, cls = self._ids, self._cls
        ids.append(token)
        c = self._classes.get(token, token)
        cls.append(c)
        i = len(ids) - 1
        run, run_cls = self._run, self._run_cls
        for p in range(1, min(g.max_period, i) + 1):
            run[p] = run[p] + 1 if ids[i - p] == token else 0
            run_cls[p] = run_cls[p] + 1 if cls[i - p] == c else 0
            # The repeating tail is the run plus the first copy it repeats.
            if run[p] + p >= g.min_span and run[p] + p >= g.min_repeats * p:
                self.rule = "exact"
            elif run_cls[p] + p >= g.numbered_span and run_cls[p] + p >= g.min_repeats * p:
                self.rule = "numbered"
            else:
                continue
            return True
        if i + 1 >= g.ngram:
            key = hash(tuple(ids[i + 1 - g.ngram :]))
            covered = key in self._seen
            self._seen.add(key)
            if len(self._recent) == g.window and self._recent[0]:
                self._covered -= 1
            self._recent.append(covered)
            self._covered += covered
            if len(self._recent) == g.window and self._covered >= g.coverage * g.window:
                self.rule = "long"
                return True
        if self._lines is not None and self._lines.feed(self._bytes.get(token, b"")):
            self.rule = "lines"
            return True
        return False


_DIGIT = re.compile(rb"[0-9]")


def token_classes(vocab: Mapping[bytes | str, int]) -> dict[int, int]:
    """Token id -> class for the numbered loop rule: tokens whose text differs only in its ASCII digits
    share a class (a negative number, so never a token id). `vocab` is the tokenizer's text -> id map."""
    keys: dict[bytes, int] = {}
    classes: dict[int, int] = {}
    for piece, token in vocab.items():
        raw = piece.encode("utf-8", "surrogatepass") if isinstance(piece, str) else bytes(piece)
        if _DIGIT.search(raw):
            classes[int(token)] = keys.setdefault(_DIGIT.sub(b"0", raw), -1 - len(keys))
    return classes


@dataclass
class _Stats:
    steps: int = 0
    tokens: int = 0
    busy_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)


def longest_first_order(texts: Sequence[str]) -> list[int]:
    """The indexes of `texts`, longest first (ties keep their order): the order to start a batch in.

    A continuous batch runs best full. Started longest first, the long ones (long problems tend to get
    long answers) run while the short ones come and go beside them, and the run does not end with one
    long answer decoding alone; prompts of a similar length start together. Length is counted in UTF-8
    bytes, a stand-in for tokens that needs no tokenizer: a byte-level BPE token (SmolLM2, Qwen2) is
    about 3 bytes of Chinese or 4 of English."""
    lengths = [len(t.encode("utf-8", "surrogatepass")) for t in texts]
    return sorted(range(len(texts)), key=lambda i: -lengths[i])


class GeneratingAPI(abc.ABC):
    """What callers use, on top of `submit`: shared by `Engine` and `solver.engine_process.EngineProcess`."""

    @abc.abstractmethod
    def submit(
        self, prompt: str, params: GenerationParams | None = None, *, streaming: bool = False
    ) -> GenerationHandle:
        """Queue one generation of raw model input `prompt` (already rendered by `solver.prompts`).
        With streaming=False the text arrives in one piece at the end (cheaper for batch work)."""

    def stream(self, prompt: str, params: GenerationParams | None = None) -> GenerationHandle:
        """Submit and iterate the returned Generation for text as it is generated."""
        return self.submit(prompt, params, streaming=True)

    def generate(self, prompt: str, params: GenerationParams | None = None) -> GenerationResult:
        return self.submit(prompt, params).result()

    def generate_many(
        self,
        prompts: Sequence[str],
        params: GenerationParams | Sequence[GenerationParams] | None = None,
        *,
        on_result: Callable[[int, GenerationResult], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        longest_first: bool = True,
    ) -> list[GenerationResult]:
        """Run a batch with continuous batching; results come back in the order of `prompts`.
        `on_result(index, result)` is called as each one finishes (in finishing order).
        `should_stop()` is polled; when it returns True the rest is cancelled.
        `longest_first`: submit in `longest_first_order` (the engine starts them in that order when
        there are more than it decodes at once); otherwise in the given order."""
        if params is None or isinstance(params, GenerationParams):
            params_list = [params or GenerationParams()] * len(prompts)
        else:
            params_list = list(params)
            if len(params_list) != len(prompts):
                raise ValueError("one GenerationParams per prompt")
        order = longest_first_order(prompts) if longest_first else range(len(prompts))
        submitted = {i: self.submit(prompts[i], params_list[i]) for i in order}
        generations = [submitted[i] for i in range(len(prompts))]
        wake = threading.Event()
        for g in generations:
            g.add_done_callback(wake.set)
        index_of = {g.request_id: i for i, g in enumerate(generations)}
        remaining = set(index_of)
        results: list[GenerationResult | None] = [None] * len(generations)
        try:
            while remaining:
                wake.clear()  # before looking: an end after this point wakes the wait below
                if should_stop is not None and should_stop():
                    for g in generations:
                        g.cancel()
                for rid in list(remaining):
                    g = generations[index_of[rid]]
                    if g.done:
                        remaining.discard(rid)
                        results[index_of[rid]] = g.result()
                        if on_result is not None:
                            on_result(index_of[rid], g.result())
                if remaining:
                    wake.wait(0.05)  # a generation ended, or time to ask should_stop again
        except BaseException:
            for g in generations:
                g.cancel()
            raise
        return [r for r in results if r is not None]

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abc.abstractmethod
    def close(self) -> None:
        """Stop taking requests, cancel what runs, release the model."""


class Engine(GeneratingAPI):
    """An INT8 OpenVINO model, ready to generate. Create one per process and share it."""

    def __init__(self, model_dir: str | os.PathLike, settings: EngineSettings | None = None):
        self.model_dir = Path(model_dir)
        self.settings = settings or EngineSettings()
        for needed in ("openvino_model.xml", "openvino_tokenizer.xml", "openvino_detokenizer.xml"):
            if not (self.model_dir / needed).is_file():
                raise EngineError(
                    f"{self.model_dir} has no {needed}; prepare the model with `python -m solver prepare`."
                )
        try:
            import openvino_genai as ov_genai
        except ImportError as exc:
            raise EngineError(
                "openvino-genai is not installed: pip install -r requirements.txt"
            ) from exc
        self._ov_genai = ov_genai
        scheduler = ov_genai.SchedulerConfig()
        scheduler.cache_size = max(1, int(round(self.settings.kv_cache_gb)))
        scheduler.max_num_seqs = self.settings.max_num_seqs
        scheduler.max_num_batched_tokens = self.settings.max_num_batched_tokens
        scheduler.dynamic_split_fuse = True
        scheduler.enable_prefix_caching = self.settings.prefix_caching
        properties = self.settings.plugin_properties()
        try:
            if self.settings.prompt_lookup:
                properties["prompt_lookup"] = True
            elif self.settings.draft_model:
                # The draft model gets the same plugin properties (threads, KV cache, ...) as the main one.
                properties["draft_model"] = ov_genai.draft_model(
                    str(self.settings.draft_model),
                    self.settings.device,
                    **self.settings.plugin_properties(),
                )
            self.tokenizer = ov_genai.Tokenizer(str(self.model_dir))
            self.pipeline = ov_genai.ContinuousBatchingPipeline(
                str(self.model_dir), scheduler, self.settings.device, properties
            )
        except RuntimeError as exc:
            raise EngineError(
                f"OpenVINO could not load {self.model_dir}: {str(exc).splitlines()[0][:200]}"
            ) from exc
        self.eos_token_id = int(self.tokenizer.get_eos_token_id())
        try:
            vocab = self.tokenizer.get_vocab()
            self.token_classes = token_classes(vocab)
            self.token_bytes = token_bytes(vocab)
        except (
            Exception
        ):  # a tokenizer without a readable vocabulary: the numbered rule sees raw ids
            self.token_classes = {}
            self.token_bytes = {}
        self._ids = itertools.count(1)
        self._lock = threading.Condition()
        self._waiting: list[Generation] = []
        self._running: dict[int, Generation] = {}
        self._closed = False
        # The driver cancelled a request nobody waits for any more (a loop): one more step lets the
        # pipeline drop it and free its KV cache, even when no other request comes.
        self._draining = False
        self.stats = _Stats()
        # Called by the driver thread with (generation, text piece) as text is produced and with
        # (generation, None) when it ends; solver.engine_process forwards these to another process.
        self.listener: Callable[[Generation, str | None], None] | None = None
        self._driver = threading.Thread(target=self._drive, name="suanjing-engine", daemon=True)
        self._driver.start()

    # -- public API --------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return int(self.tokenizer.encode(text, add_special_tokens=False).input_ids.get_shape()[-1])

    def submit(
        self,
        prompt: str,
        params: GenerationParams | None = None,
        *,
        streaming: bool = False,
        tag: object = None,
    ) -> Generation:
        """Queue one generation of raw model input `prompt` (already rendered by `solver.prompts`).
        With streaming=False the text arrives in one piece at the end (cheaper for batch work)."""
        params = params or GenerationParams()
        if not prompt:
            raise ValueError("empty prompt")
        # Tokenize here, not in the pipeline: a string prompt would get the chat template applied a
        # second time by openvino-genai.
        ids = self.tokenizer.encode(prompt, add_special_tokens=False).input_ids
        generation = Generation(self, next(self._ids), ids, params, streaming=streaming)
        generation.tag = tag
        with self._lock:
            if self._closed:
                raise EngineClosed("the engine is shut down")
            self._waiting.append(generation)
            self._lock.notify()
        return generation

    @property
    def load(self) -> int:
        """Requests queued or running."""
        with self._lock:
            return len(self._waiting) + len(self._running)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for g in self._waiting + list(self._running.values()):
                g.cancel_requested = True
            self._lock.notify()
        self._driver.join(timeout=30)

    # -- the driver thread -------------------------------------------------------------------

    def _wake(self) -> None:
        with self._lock:
            self._lock.notify()

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _config_for(self, params: GenerationParams):
        config = self._ov_genai.GenerationConfig()
        config.max_new_tokens = params.max_new_tokens
        config.ignore_eos = params.ignore_eos
        config.stop_token_ids = {self.eos_token_id}
        if params.stop_strings:
            # The pipeline matches stop strings on whole tokens: with the stop string left out of the
            # output, a stop string that starts inside a token ("ailed" + " c" for "iled c") kept its
            # first characters. So the pipeline keeps it, and `StopTrimmer` cuts the text exactly.
            config.stop_strings = set(params.stop_strings)
            config.include_stop_str_in_output = True
        if self.settings.is_speculative:
            config.num_assistant_tokens = self.settings.num_assistant_tokens
            if self.settings.prompt_lookup:
                config.max_ngram_size = self.settings.max_ngram_size
        config.repetition_penalty = params.repetition_penalty
        config.presence_penalty = params.presence_penalty
        config.frequency_penalty = params.frequency_penalty
        if params.greedy or params.temperature <= 0:
            config.do_sample = False
        else:
            config.do_sample = True
            config.temperature = params.temperature
            config.top_p = params.top_p
            config.rng_seed = (
                params.seed
                if params.seed is not None
                else random.SystemRandom().randrange(1, 2**31)
            )
        return config

    def _drive(self) -> None:
        GS = self._ov_genai.GenerationStatus
        FR = self._ov_genai.GenerationFinishReason
        while True:
            with self._lock:
                while (
                    not self._waiting
                    and not self._running
                    and not self._draining
                    and not self._closed
                ):
                    self._lock.wait()
                if self._closed and not self._waiting and not self._running and not self._draining:
                    return
                waiting, self._waiting = self._waiting, []
                drained = self._draining
            for g in waiting:
                if g.cancel_requested:
                    g._finish("cancelled")
                    continue
                try:
                    g.handle = self.pipeline.add_request(
                        g.request_id, g.prompt_ids, self._config_for(g.params)
                    )
                except Exception as exc:  # a bad request must not take the engine down
                    g._finish("error", error=str(exc)[:300])
                    continue
                self._running[g.request_id] = g
            for g in list(self._running.values()):
                if g.cancel_requested and g.handle is not None:
                    g.handle.cancel()
            if self.pipeline.has_non_finished_requests():
                started = time.perf_counter()
                try:
                    self.pipeline.step()
                except Exception as exc:
                    for g in list(self._running.values()):
                        g._finish("error", error=str(exc)[:300])
                    self._running.clear()
                    continue
                self.stats.steps += 1
                self.stats.busy_s += time.perf_counter() - started
            for rid, g in list(self._running.items()):
                handle = g.handle
                status = handle.get_status()
                reason = None
                if handle.can_read():
                    for output in handle.read().values():
                        self.stats.tokens += len(output.generated_ids)
                        g._take(output.generated_ids)
                        if output.finish_reason == FR.LENGTH:
                            reason = "length"
                        elif output.finish_reason == FR.STOP:
                            reason = "stop"
                if g.looped and not g.cancel_requested:
                    # End it now, not after the pipeline's next step: the caller hears at once, and the
                    # pipeline frees the request's KV cache on that step.
                    if status == GS.RUNNING:
                        handle.cancel()
                    g._finish("loop")
                    del self._running[rid]
                    continue
                if status == GS.RUNNING and not g.cancel_requested:
                    continue
                if status == GS.RUNNING:
                    # cancel was asked; the pipeline drops it on the next step
                    if not self.pipeline.has_non_finished_requests():
                        status = GS.CANCEL
                    else:
                        continue
                if status in (GS.CANCEL, GS.STOP) or g.cancel_requested:
                    g._finish("cancelled")
                elif status == GS.IGNORED:
                    g._finish("error", error="the request did not fit in the KV cache")
                else:
                    if reason is None:
                        reason = "length" if len(g.token_ids) >= g.params.max_new_tokens else "stop"
                    g._finish(reason)
                del self._running[rid]
            self._draining = (
                not drained and not self._running and self.pipeline.has_non_finished_requests()
            )
