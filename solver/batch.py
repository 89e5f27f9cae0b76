"""Batch precompute: many problems through the engine at once, K samples each, every answer checked.

Owns: the status rules of a checked answer (`check_samples`: verified / unverified / failed), running a
list of problems through one engine with continuous batching (`run_batch`: a window of requests is kept
in flight and topped up as problems finish, never "wait for the whole batch"), stopping promptly when
asked, the retry policy (`MAX_ATTEMPTS`), and the live progress figures a progress bar or a web page reads
(`BatchProgress`).
Does not own: where problems come from or where answers go (the caller's `on_item` stores each one: an
answer pack in `solver.packs`, or the site's database), parsing model output (`solver.answers`), prompts
(`solver.prompts`), or the engine itself (`solver.engine`).

Status rules (issue 5, "checked answers"):
- verified: a sample's final answer is equivalent to the reference answer; or, with no reference, the
  majority answer of K >= 3 samples has an agreement at or above the level (default 2/3);
- unverified: anything else that has a final answer (with a reference that no sample matched, the
  majority answer is kept, unverified);
- failed: no sample has a final answer, or every run hit the token limit inside its reasoning. A failed
  answer is never an answer: `final` is None.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass, field, replace
from typing import Protocol

logger = logging.getLogger(__name__)

VERIFIED = "verified"
UNVERIFIED = "unverified"
FAILED = "failed"
STATUSES = (VERIFIED, UNVERIFIED, FAILED)

DEFAULT_MIN_AGREEMENT = 2 / 3
DEFAULT_MIN_SAMPLES_FOR_AGREEMENT = 3
# A problem that failed this many times is set aside (with its error) and the run goes on.
MAX_ATTEMPTS = 3
# Sequences kept in flight. Enough to keep 2 cores busy; small enough that 16 long R1 answers fit the
# default 1 GB KV cache (the scheduler preempts and recomputes beyond that, which wastes time).
DEFAULT_BATCH_SIZE = 16
MAX_SAMPLES = 16
# A "final answer" longer than this is not a short answer (the site's column holds 500 characters).
MAX_FINAL_CHARS = 500


@dataclass(frozen=True)
class BatchItem:
    id: str
    text: str
    reference: str | None = None
    # 1 for the first try; retries use other sampling seeds so that they do not repeat a failure.
    attempt: int = 1


@dataclass(frozen=True)
class SampleResult:
    """One generated sample of one problem, parsed."""

    text: str
    reasoning: str
    answer: str
    final: str | None
    truncated: bool
    finish_reason: str
    new_tokens: int
    elapsed_s: float
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "reasoning": self.reasoning,
            "answer": self.answer,
            "final": self.final,
            "truncated": self.truncated,
            "finish_reason": self.finish_reason,
            "new_tokens": self.new_tokens,
            "error": self.error,
        }


class _HasFinal(Protocol):
    final: str | None
    truncated: bool


@dataclass(frozen=True)
class Verdict:
    status: str
    final: str | None
    # Share of the K samples whose final answer equals `final` (0.0 when failed).
    agreement: float
    # Index of the sample kept as the stored solution (its reasoning and answer text), None if failed.
    chosen: int | None


@dataclass(frozen=True)
class CheckedAnswer:
    """One problem's outcome: what `on_item` receives and what a pack or the site stores."""

    problem_id: str
    status: str
    final: str | None
    agreement: float
    samples: list[dict]
    reasoning: str
    answer_text: str
    reference: str | None
    new_tokens: int
    elapsed_s: float
    error: str | None = None
    chosen: int | None = None
    attempt: int = 1
    finish_reason: str = ""

    def evidence(self) -> dict:
        """What a teacher reads to judge the status: every sample, the agreement, the reference."""
        return {
            "samples": self.samples,
            "k": len(self.samples),
            "agreement": self.agreement,
            "reference": self.reference,
            "chosen": self.chosen,
        }


def check_samples(
    samples: Sequence[_HasFinal],
    reference: str | None,
    *,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    min_samples_for_agreement: int = DEFAULT_MIN_SAMPLES_FOR_AGREEMENT,
) -> Verdict:
    """The status of a problem's K samples (each with `.final` and `.truncated`), per the rules above."""
    from solver.answers import answers_equivalent, majority_answer

    if not 0 < min_agreement <= 1:
        raise ValueError("min_agreement must be in (0, 1]")
    if min_samples_for_agreement < 1:
        raise ValueError("min_samples_for_agreement must be at least 1")
    k = len(samples)
    # A run cut off inside its reasoning has no answer even if a draft \boxed slipped through.
    finals = [s.final if s.final is not None and not s.truncated else None for s in samples]
    if not any(f is not None and f.strip() for f in finals):
        return Verdict(FAILED, None, 0.0, None)
    if reference is not None and reference.strip():
        matching = [i for i, f in enumerate(finals) if answers_equivalent(f, reference)]
        if matching:
            return Verdict(VERIFIED, finals[matching[0]], len(matching) / k, matching[0])
    answer, agreement = majority_answer(finals)
    if answer is None:  # only blank finals
        return Verdict(FAILED, None, 0.0, None)
    chosen = next(i for i, f in enumerate(finals) if f == answer)
    # With a reference, agreement among wrong answers proves nothing: only a match verifies.
    if (
        (reference is None or not reference.strip())
        and k >= min_samples_for_agreement
        and agreement + 1e-9 >= min_agreement
    ):
        return Verdict(VERIFIED, answer, agreement, chosen)
    return Verdict(UNVERIFIED, answer, agreement, chosen)


def is_settled(status: str, attempts: int) -> bool:
    """True when a stored outcome needs no more work: an answer, or a failure tried MAX_ATTEMPTS times."""
    return status != FAILED or attempts >= MAX_ATTEMPTS


class BatchProgress:
    """Live figures of a run, safe to read from another thread (a progress bar, a web page).

    `total` counts every problem of the run, `initial` those already done before this session (a
    resumed run); rates and the time left are computed from this session's work only."""

    def __init__(self, total: int, *, initial: int = 0):
        self._lock = threading.Lock()
        self.total = total
        self.initial = initial
        self.done = initial
        self.by_status: dict[str, int] = dict.fromkeys(STATUSES, 0)
        self.new_tokens = 0  # tokens of finished problems
        # Every token the engine produced since the run began (live; on an engine shared with the
        # site it includes live answers too).
        self.generated_tokens = 0
        self.in_flight = 0  # problems submitted and not finished
        self.lost = 0  # problems whose generations were cancelled from outside (redone next run)
        self.stopped = False
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()
        self.finished: float | None = None

    def record(self, checked: CheckedAnswer) -> None:
        with self._lock:
            self.done += 1
            self.by_status[checked.status] = self.by_status.get(checked.status, 0) + 1
            self.new_tokens += checked.new_tokens

    def elapsed_s(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    def tokens_per_s(self) -> float:
        elapsed = self.elapsed_s()
        return max(self.generated_tokens, self.new_tokens) / elapsed if elapsed > 0 else 0.0

    def problems_per_hour(self) -> float:
        elapsed = self.elapsed_s()
        return (self.done - self.initial) * 3600.0 / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        """Seconds left at this session's rate; None before the first problem finishes."""
        finished_here = self.done - self.initial
        if finished_here <= 0:
            return None
        return max(self.total - self.done, 0) * self.elapsed_s() / finished_here

    def snapshot(self) -> dict:
        """Plain numbers for JSON (a web page) or a log line."""
        with self._lock:
            eta = self.eta_s()
            return {
                "total": self.total,
                "done": self.done,
                "initial": self.initial,
                "by_status": dict(self.by_status),
                "in_flight": self.in_flight,
                "lost": self.lost,
                "new_tokens": self.new_tokens,
                "generated_tokens": self.generated_tokens,
                "elapsed_s": round(self.elapsed_s(), 3),
                "cpu_s": round(time.process_time() - self.cpu_started, 3),
                "tokens_per_s": round(self.tokens_per_s(), 2),
                "problems_per_hour": round(self.problems_per_hour(), 1),
                "eta_s": None if eta is None else round(eta, 1),
                "stopped": self.stopped,
            }


@dataclass
class _InFlight:
    item: BatchItem
    generations: list = field(default_factory=list)
    error: str | None = None

    @property
    def is_done(self) -> bool:
        return all(g.done for g in self.generations)


def _sample_seed(base: int, item: BatchItem, j: int, samples: int) -> int:
    # openvino-genai's sampler seeds every request with rng_seed (default 0): without distinct seeds the
    # K samples of one prompt would be the very same text, and a retry would repeat the failure.
    return (base + (item.attempt - 1) * samples + j) % (2**31 - 1)


def run_batch(
    engine,
    family,
    items: Iterable[BatchItem],
    *,
    samples: int = 1,
    params=None,
    on_item: Callable[[CheckedAnswer], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    min_samples_for_agreement: int = DEFAULT_MIN_SAMPLES_FOR_AGREEMENT,
    progress: BatchProgress | None = None,
    poll_s: float = 0.05,
    longest_first: bool = True,
) -> BatchProgress:
    """Answer every item with `samples` generations each, keeping about `batch_size` sequences in the
    engine at all times. A list of items is started longest first (`order_longest_first`, unless
    `longest_first` is False); a lazy iterator is taken in its own order, so its source orders it (the
    site's runs are claimed longest first). `on_item(checked)` is called in this thread as each problem's samples are all
    done (in finishing order; an exception from it stops the run and is raised). `should_stop()` is
    polled every `poll_s`: when true, every generation in flight is cancelled, unfinished problems are not
    reported, and the function returns with `progress.stopped` set. `items` may be a lazy iterator: an item
    is taken only when the window has room for it (a site worker can claim work from a shared queue).

    `engine` is a `solver.engine.Engine` (or anything with its `submit`), `family` a
    `solver.prompts.PromptFamily`, `params` a `GenerationParams` (default: the family's sampling advice)."""
    from solver.engine import EngineClosed, GenerationParams

    if not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples must be between 1 and {MAX_SAMPLES}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if params is None:
        params = GenerationParams(temperature=family.temperature, top_p=family.top_p)
    if samples > 1 and (params.greedy or params.temperature <= 0):
        raise ValueError(
            "several samples need sampling: with greedy decoding they would all be the same"
        )
    if progress is None:
        progress = BatchProgress(total=len(items) if isinstance(items, Sized) else 0)
    if longest_first and isinstance(items, Sequence):
        items = order_longest_first(items)
    source = iter(items)
    base_seed = (
        params.seed if params.seed is not None else random.SystemRandom().randrange(1, 2**31 - 1)
    )
    stats = getattr(engine, "stats", None)
    tokens_before = getattr(stats, "tokens", 0)
    in_flight: list[_InFlight] = []
    exhausted = False
    # Set whenever a generation ends (done callbacks), so the loop refills the window at once; the
    # loop still looks every `poll_s` for `should_stop`.
    wake = threading.Event()

    def submit(item: BatchItem) -> _InFlight:
        work = _InFlight(item)
        prompt = family.render(item.text)
        try:
            for j in range(samples):
                seeded = replace(params, seed=_sample_seed(base_seed, item, j, samples))
                generation = engine.submit(prompt, seeded)
                work.generations.append(generation)
                generation.add_done_callback(wake.set)
        except EngineClosed:
            for g in work.generations:
                g.cancel()
            raise
        except Exception as exc:
            # One bad item (e.g. a prompt the tokenizer refuses) must not stop the run.
            logger.warning("could not submit problem %s", item.id, exc_info=True)
            for g in work.generations:
                g.cancel()
            work.generations = []
            work.error = f"could not start generating: {str(exc)[:200]}"
        return work

    def report(finished: list[_InFlight]) -> None:
        for work in finished:
            checked = _finish(work, family, min_agreement, min_samples_for_agreement)
            if checked is None:
                progress.lost += 1
                continue
            if on_item is not None:
                on_item(checked)
            progress.record(checked)
        progress.in_flight = len(in_flight)
        if stats is not None:
            progress.generated_tokens = getattr(stats, "tokens", 0) - tokens_before

    try:
        while True:
            wake.clear()  # before looking: an end after this point wakes the wait below
            finished = [w for w in in_flight if w.is_done]
            for work in finished:
                in_flight.remove(work)
            if should_stop is not None and should_stop():
                progress.stopped = True
                report(finished)
                # Keep what completed while the cancellations land; drop the rest.
                _cancel_all(in_flight)
                landed = [w for w in in_flight if w.is_done]
                for work in landed:
                    in_flight.remove(work)
                report(landed)
                break
            # Top up the window first, then report what finished: the engine starts the next items
            # while `on_item` stores the last ones. Items are pulled one at a time, so `items` may be a
            # generator that claims work from a shared queue only when there is room for it.
            sequences = len(in_flight) * samples
            while not exhausted and (not in_flight or sequences + samples <= batch_size):
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                in_flight.append(submit(item))
                sequences += samples
            report(finished)
            progress.in_flight = len(in_flight)
            if exhausted and not in_flight:
                break
            if not finished:
                wake.wait(poll_s)
    finally:
        _cancel_all(in_flight)
        progress.in_flight = 0
        progress.finished = time.perf_counter()
        if stats is not None:
            progress.generated_tokens = getattr(stats, "tokens", 0) - tokens_before
    return progress


def order_longest_first(items: Sequence[BatchItem]) -> list[BatchItem]:
    """`items` longest problem text first, ties in their given order (`solver.engine.longest_first_order`
    says why: the continuous batch stays full, and the run does not end on one long answer alone)."""
    from solver.engine import longest_first_order

    return [items[i] for i in longest_first_order([item.text for item in items])]


def _cancel_all(in_flight: list[_InFlight], wait_s: float = 10.0) -> None:
    """Cancel what is still running and give the engine a moment to drop it, so that the engine is idle
    when run_batch returns (it may be shared with the site)."""
    generations = [g for w in in_flight for g in w.generations]
    for g in generations:
        g.cancel()
    deadline = time.perf_counter() + wait_s
    for g in generations:
        try:
            g.result(timeout=max(deadline - time.perf_counter(), 0.0))
        except TimeoutError:
            logger.warning("generation %s did not stop within %.0f s", g.request_id, wait_s)
            return


def _finish(
    work: _InFlight, family, min_agreement: float, min_samples: int
) -> CheckedAnswer | None:
    """A problem's samples are all done: parse and check them. None if they were cancelled from outside
    (engine closing), so the problem is not reported and the next run does it again."""
    item = work.item
    if work.error is not None:
        return _failed(item, work.error)
    results = [g.result() for g in work.generations]
    if any(r.finish_reason == "cancelled" for r in results):
        return None
    try:
        return _check(item, results, family, min_agreement, min_samples)
    except Exception as exc:  # one item's surprise must not end a night's run
        logger.warning("checking problem %s failed", item.id, exc_info=True)
        return _failed(item, f"checking the answer failed: {str(exc)[:200]}", results)


def _check(
    item: BatchItem, results, family, min_agreement: float, min_samples: int
) -> CheckedAnswer:
    from solver.answers import parse_output

    parsed = []
    for r in results:
        p = parse_output(
            r.text, finish_reason=r.finish_reason, implicit_think=family.implicit_think
        )
        final = p.final if p.final is None or len(p.final) <= MAX_FINAL_CHARS else None
        parsed.append(
            SampleResult(
                text=r.text,
                reasoning=p.reasoning,
                answer=p.answer,
                final=final,
                truncated=p.truncated,
                finish_reason=r.finish_reason,
                new_tokens=r.new_tokens,
                elapsed_s=r.elapsed_s,
                error=r.error,
            )
        )
    verdict = check_samples(
        parsed, item.reference, min_agreement=min_agreement, min_samples_for_agreement=min_samples
    )
    shown = parsed[verdict.chosen if verdict.chosen is not None else 0]
    error = None
    if verdict.status == FAILED:
        error = _why_failed(parsed)
    return CheckedAnswer(
        problem_id=item.id,
        status=verdict.status,
        final=verdict.final,
        agreement=verdict.agreement,
        samples=[s.to_dict() for s in parsed],
        reasoning=shown.reasoning,
        answer_text=shown.answer if verdict.status != FAILED else "",
        reference=item.reference,
        new_tokens=sum(s.new_tokens for s in parsed),
        elapsed_s=max(s.elapsed_s for s in parsed),
        error=error,
        chosen=verdict.chosen,
        attempt=item.attempt,
        finish_reason=shown.finish_reason,
    )


def _why_failed(samples: list[SampleResult]) -> str:
    errors = [s.error for s in samples if s.error]
    if errors:
        return f"generation error: {errors[0]}"
    if all(s.truncated for s in samples):
        return "the token limit was reached inside the reasoning (raise max_new_tokens)"
    return f"no final answer in {len(samples)} sample(s)"


def _failed(item: BatchItem, error: str, results=()) -> CheckedAnswer:
    return CheckedAnswer(
        problem_id=item.id,
        status=FAILED,
        final=None,
        agreement=0.0,
        samples=[],
        reasoning="",
        answer_text="",
        reference=item.reference,
        new_tokens=sum(r.new_tokens for r in results),
        elapsed_s=max((r.elapsed_s for r in results), default=0.0),
        error=error,
        chosen=None,
        attempt=item.attempt,
    )
