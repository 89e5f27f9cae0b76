"""Batch precompute: the status rules, continuous batching, stopping, and the progress figures.

The status rules are a table. `run_batch` runs on the tiny real OpenVINO model (its random text never has
a final answer, so every problem fails: the tests assert the mechanics) and, for the statuses end to end
and the shape of the batching, on a scripted stand-in engine. One slow test runs the real SmolLM2.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from solver.batch import (
    FAILED,
    MAX_ATTEMPTS,
    UNVERIFIED,
    VERIFIED,
    BatchItem,
    BatchProgress,
    check_samples,
    is_settled,
    run_batch,
)
from solver.engine import GenerationParams, GenerationResult
from solver.prompts import get_family

R1 = get_family("r1-distill")
SHORT = GenerationParams(max_new_tokens=16, temperature=0.6, top_p=0.95)


@dataclass(frozen=True)
class S:
    final: str | None
    truncated: bool = False


def samples(*finals: str | None) -> list[S]:
    return [S(f) for f in finals]


@pytest.mark.parametrize(
    ("finals", "reference", "status", "final", "agreement"),
    [
        # a reference answer decides: one matching sample verifies, in any spelling
        (samples("5", "7", "8"), "5", VERIFIED, "5", 1 / 3),
        (samples("5只"), "5", VERIFIED, "5只", 1.0),
        (samples(None, "\\frac{1}{2}", "0.5"), "1/2", VERIFIED, "\\frac{1}{2}", 2 / 3),
        # ... and when no sample matches it, agreement among the wrong ones proves nothing
        (samples("7", "7", "7"), "5", UNVERIFIED, "7", 1.0),
        (samples("7", "7", "8"), "5", UNVERIFIED, "7", 2 / 3),
        # no reference: majority agreement at the level with K >= 3 verifies
        (samples("7", "7", "8"), None, VERIFIED, "7", 2 / 3),
        (samples("7", "七", None), None, VERIFIED, "7", 2 / 3),
        (samples("12", "12", "12", "12", "3"), None, VERIFIED, "12", 0.8),
        (samples("7", "7", "8"), "", VERIFIED, "7", 2 / 3),  # a blank reference is no reference
        # ... but not below it, and never with fewer than 3 samples
        (samples("1", "2", "3"), None, UNVERIFIED, "1", 1 / 3),
        (samples("7", None, None), None, UNVERIFIED, "7", 1 / 3),
        (samples("1", "1", "2", "2"), None, UNVERIFIED, "1", 0.5),
        (samples("7", "7"), None, UNVERIFIED, "7", 1.0),
        (samples("7"), None, UNVERIFIED, "7", 1.0),
        # failed: no final answer, or the token limit hit inside the reasoning
        (samples(None, None, None), None, FAILED, None, 0.0),
        (samples(None), "5", FAILED, None, 0.0),
        (samples("  "), None, FAILED, None, 0.0),
        ([S("5", truncated=True)], "5", FAILED, None, 0.0),
        ([S("7", truncated=True), S("7", truncated=True), S(None)], None, FAILED, None, 0.0),
        ([S("7", truncated=True), S("7"), S("7")], None, VERIFIED, "7", 2 / 3),
    ],
)
def test_check_samples_applies_the_status_rules(finals, reference, status, final, agreement):
    verdict = check_samples(finals, reference)
    assert (verdict.status, verdict.final) == (status, final)
    assert verdict.agreement == pytest.approx(agreement)
    if status == FAILED:
        assert verdict.chosen is None
    else:
        assert finals[verdict.chosen].final == final


def test_the_agreement_level_is_configurable():
    finals = samples("7", "7", "8")
    assert check_samples(finals, None, min_agreement=1.0).status == UNVERIFIED
    assert check_samples(finals, None, min_agreement=0.5).status == VERIFIED
    assert check_samples(samples("7", "7"), None, min_samples_for_agreement=2).status == VERIFIED
    with pytest.raises(ValueError):
        check_samples(finals, None, min_agreement=0)


@pytest.mark.parametrize(
    ("status", "attempts", "settled"),
    [
        ("verified", 1, True),
        ("unverified", 1, True),
        ("failed", 1, False),
        ("failed", MAX_ATTEMPTS - 1, False),
        ("failed", MAX_ATTEMPTS, True),
    ],
)
def test_a_failure_is_retried_until_the_attempts_run_out(status, attempts, settled):
    assert is_settled(status, attempts) is settled


def test_progress_figures_count_this_session_only():
    progress = BatchProgress(total=10, initial=4)
    assert progress.eta_s() is None and progress.problems_per_hour() == 0
    progress.started -= 10.0  # 10 s ago
    progress.done = 6  # 2 problems in 10 s this session
    progress.new_tokens = 500
    assert progress.problems_per_hour() == pytest.approx(720, rel=0.01)
    assert progress.tokens_per_s() == pytest.approx(50, rel=0.01)
    assert progress.eta_s() == pytest.approx(20, rel=0.01)  # 4 left at 5 s each
    snapshot = progress.snapshot()
    assert (
        snapshot["done"] == 6
        and snapshot["total"] == 10
        and snapshot["eta_s"] == pytest.approx(20, rel=0.01)
    )


# -- a scripted engine: answers on cue, takes the time it is told ------------------------------------


class ScriptedGeneration:
    def __init__(self, request_id: int, text: str, seconds: float):
        self.request_id = request_id
        self.text = text
        self.ends = time.perf_counter() + seconds
        self.cancelled = False
        self.callbacks: list = []  # called when it ends (a timer) or is cancelled; may run twice

    @property
    def done(self) -> bool:
        return self.cancelled or time.perf_counter() >= self.ends

    def cancel(self) -> None:
        self.cancelled = True
        for fn in self.callbacks:
            fn()

    def add_done_callback(self, fn) -> None:
        self.callbacks.append(fn)
        timer = threading.Timer(max(0.0, self.ends - time.perf_counter()), fn)
        timer.daemon = True
        timer.start()

    def result(self, timeout: float | None = None) -> GenerationResult:
        wait = self.ends - time.perf_counter()
        if not self.done and timeout is not None and wait > timeout:
            time.sleep(timeout)
            raise TimeoutError
        if not self.done:
            time.sleep(max(wait, 0))
        reason = "cancelled" if self.cancelled else "stop"
        return GenerationResult(self.text, 5, 10, reason, 1.0, 100.0, 0.1)


class ScriptedEngine:
    """`script[question]` is the list of outputs of its samples, in order; `seconds[question]` how long
    each takes. Records the most sequences it ever held at once."""

    def __init__(self, script: dict[str, list[str]], seconds: dict[str, float] | None = None):
        self.script = script
        self.seconds = seconds or {}
        self.asked: dict[str, int] = {}
        self.live: list[ScriptedGeneration] = []
        self.most_at_once = 0
        self.seeds: list[int] = []

    def submit(self, prompt: str, params: GenerationParams) -> ScriptedGeneration:
        question = next(q for q in self.script if q in prompt)
        n = self.asked.get(question, 0)
        self.asked[question] = n + 1
        self.seeds.append(params.seed)
        g = ScriptedGeneration(
            len(self.seeds), self.script[question][n], self.seconds.get(question, 0.0)
        )
        self.live = [x for x in self.live if not x.done] + [g]
        self.most_at_once = max(self.most_at_once, len(self.live))
        return g


def boxed(answer: str) -> str:
    return f"Let me think.</think>The answer is \\boxed{{{answer}}}."


def test_run_batch_checks_every_problem_and_reports_each_once():
    engine = ScriptedEngine(
        {
            "Q-ref": [boxed("5"), boxed("6"), "no idea"],
            "Q-majority": [boxed("7"), boxed("7"), boxed("8")],
            "Q-split": [boxed("1"), boxed("2"), boxed("3")],
            "Q-nothing": ["thinking and thinking", "still thinking", "hmm"],
        }
    )
    items = [
        BatchItem("ref", "Q-ref", reference="5"),
        BatchItem("majority", "Q-majority"),
        BatchItem("split", "Q-split"),
        BatchItem("nothing", "Q-nothing"),
    ]
    seen = []
    progress = run_batch(
        engine, R1, items, samples=3, params=SHORT, on_item=seen.append, batch_size=6
    )
    by_id = {c.problem_id: c for c in seen}
    assert len(seen) == 4 and set(by_id) == {"ref", "majority", "split", "nothing"}
    assert (by_id["ref"].status, by_id["ref"].final, by_id["ref"].reference) == (VERIFIED, "5", "5")
    assert (by_id["majority"].status, by_id["majority"].final) == (VERIFIED, "7")
    assert by_id["majority"].agreement == pytest.approx(2 / 3)
    assert (by_id["split"].status, by_id["split"].final) == (UNVERIFIED, "1")
    nothing = by_id["nothing"]
    assert (nothing.status, nothing.final, nothing.answer_text) == (FAILED, None, "")
    assert "no final answer" in nothing.error
    # the stored solution is the sample that was chosen, and the evidence keeps all of them
    assert by_id["ref"].answer_text == "The answer is \\boxed{5}."
    assert [s["final"] for s in by_id["majority"].evidence()["samples"]] == ["7", "7", "8"]
    assert progress.by_status == {VERIFIED: 2, UNVERIFIED: 1, FAILED: 1}
    assert progress.done == 4 and progress.new_tokens == 4 * 3 * 10
    # every sample had its own seed, so K samples of one prompt can differ
    assert len(set(engine.seeds)) == 3 and engine.most_at_once <= 6


def test_run_batch_tops_up_the_window_instead_of_waiting_for_the_batch():
    script = {f"Q{i}": [boxed(str(i))] for i in range(8)}
    engine = ScriptedEngine(script, seconds={"Q0": 0.6})
    items = [BatchItem(str(i), f"Q{i}") for i in range(8)]
    order = []
    run_batch(
        engine, R1, items, params=SHORT, on_item=lambda c: order.append(c.problem_id), batch_size=2
    )
    # Q0 is slow: the seven others went through the second slot while it ran, two at a time at most.
    assert order[-1] == "0" and sorted(order) == sorted(str(i) for i in range(8))
    assert engine.most_at_once == 2


class OrderRecordingEngine(ScriptedEngine):
    def __init__(self, script):
        super().__init__(script)
        self.order: list[str] = []

    def submit(self, prompt, params):
        self.order.append(next(q for q in self.script if q in prompt))
        return super().submit(prompt, params)


@pytest.mark.parametrize(
    ("longest_first", "expected"),
    [(True, ["Q-longest one", "Q-medium", "Q-a"]), (False, ["Q-a", "Q-longest one", "Q-medium"])],
)
def test_run_batch_starts_a_list_of_problems_longest_first(longest_first, expected):
    engine = OrderRecordingEngine({q: [boxed("1")] for q in ("Q-a", "Q-longest one", "Q-medium")})
    items = [BatchItem(q, q) for q in ("Q-a", "Q-longest one", "Q-medium")]
    run_batch(engine, R1, items, params=SHORT, batch_size=1, longest_first=longest_first)
    assert engine.order == expected


def test_run_batch_takes_a_lazy_source_in_its_own_order():
    engine = OrderRecordingEngine({q: [boxed("1")] for q in ("Q-a", "Q-longest one", "Q-medium")})
    items = (BatchItem(q, q) for q in ("Q-a", "Q-longest one", "Q-medium"))
    run_batch(engine, R1, items, params=SHORT, batch_size=1)
    assert engine.order == ["Q-a", "Q-longest one", "Q-medium"]


def test_run_batch_refuses_identical_samples():
    with pytest.raises(ValueError, match="sampling"):
        run_batch(ScriptedEngine({}), R1, [], samples=3, params=GenerationParams(greedy=True))


def test_an_error_in_on_item_stops_the_run_and_cancels_the_rest():
    engine = ScriptedEngine({f"Q{i}": [boxed("1")] for i in range(6)}, seconds={"Q5": 30.0})

    def explode(checked):
        raise RuntimeError("disk full")

    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="disk full"):
        run_batch(
            engine,
            R1,
            [BatchItem(str(i), f"Q{i}") for i in range(6)],
            params=SHORT,
            on_item=explode,
        )
    assert time.perf_counter() - started < 5
    assert all(g.done for g in engine.live)


def test_stopping_keeps_what_finished_and_cancels_the_rest():
    script = {f"Q{i}": [boxed(str(i))] for i in range(8)}
    engine = ScriptedEngine(script, seconds={f"Q{i}": 30.0 for i in range(4, 8)})
    seen = []
    started = time.perf_counter()
    progress = run_batch(
        engine,
        R1,
        [BatchItem(str(i), f"Q{i}") for i in range(8)],
        params=SHORT,
        on_item=seen.append,
        should_stop=lambda: bool(seen),
        batch_size=8,
    )
    assert time.perf_counter() - started < 5
    assert sorted(c.problem_id for c in seen) == ["0", "1", "2", "3"]
    assert progress.stopped and progress.done == 4
    assert all(g.done for g in engine.live)


def test_items_are_taken_lazily_as_the_window_frees():
    script = {f"Q{i}": [boxed(str(i))] for i in range(6)}
    engine = ScriptedEngine(script, seconds={f"Q{i}": 0.05 for i in range(6)})
    taken = []

    def claim():  # stands for a worker claiming the next item of a shared queue
        for i in range(6):
            taken.append(i)
            yield BatchItem(str(i), f"Q{i}")

    taken_when_first_done = []
    run_batch(
        engine,
        R1,
        claim(),
        params=SHORT,
        on_item=lambda c: taken_when_first_done.append(len(taken)),
        batch_size=2,
    )
    assert taken == list(range(6))
    # Not all six claimed up front: the window of two, plus the two that replace them before the first
    # finished item is reported (the window is topped up before `on_item` runs).
    assert taken_when_first_done[0] <= 4


# -- the real engine (tiny random model) ---------------------------------------------------------------


def test_run_batch_on_the_real_engine_reports_every_item_once(any_tiny_engine):
    items = [
        BatchItem(f"p{i}", f"How many legs do {i} rabbits have?", reference=str(4 * i))
        for i in range(6)
    ]
    seen = []
    progress = run_batch(
        any_tiny_engine, R1, items, samples=2, params=SHORT, on_item=seen.append, batch_size=4
    )
    assert sorted(c.problem_id for c in seen) == sorted(i.id for i in items)
    for checked in seen:
        # random text has no \boxed answer: failed, with its reason and both samples as evidence
        assert checked.status == FAILED and checked.final is None and checked.error
        assert len(checked.samples) == 2
        assert checked.new_tokens == sum(s["new_tokens"] for s in checked.samples) > 0
        assert all(0 < s["new_tokens"] <= 16 for s in checked.samples)
        # distinct seeds: the two samples of one prompt are different texts
        assert checked.samples[0]["text"] != checked.samples[1]["text"]
    assert progress.done == 6 and progress.by_status[FAILED] == 6
    assert progress.new_tokens == sum(c.new_tokens for c in seen)
    assert progress.generated_tokens >= progress.new_tokens
    assert progress.tokens_per_s() > 0 and not progress.stopped
    assert any_tiny_engine.load == 0


def test_run_batch_stops_promptly_when_asked(any_tiny_engine):
    long = GenerationParams(max_new_tokens=4000, temperature=0.6, ignore_eos=True)
    items = [BatchItem(f"p{i}", f"Tell a long story number {i}.") for i in range(6)]
    seen = []
    started = time.perf_counter()
    progress = run_batch(
        any_tiny_engine,
        R1,
        items,
        params=long,
        on_item=seen.append,
        should_stop=lambda: time.perf_counter() - started > 0.5,
        batch_size=3,
    )
    assert time.perf_counter() - started < 10
    assert progress.stopped and seen == [] and progress.done == 0
    assert any_tiny_engine.load == 0  # nothing left running in the shared engine


@pytest.mark.slow
def test_the_embedded_model_answers_a_trivial_question(embedded_model):
    from solver.engine import Engine, EngineSettings

    family = get_family(embedded_model.manifest.family)
    params = GenerationParams(
        max_new_tokens=128, temperature=family.temperature, top_p=family.top_p, seed=1234
    )
    items = [
        BatchItem("sum", "What is 2 + 3? Answer with just the number.", reference="5"),
        BatchItem("sum-free", "What is 2 + 3? Answer with just the number."),
    ]
    seen = []
    with Engine(embedded_model.path, EngineSettings(threads=2)) as engine:
        run_batch(engine, family, items, samples=3, params=params, on_item=seen.append)
    assert sorted(c.problem_id for c in seen) == ["sum", "sum-free"]
    answered = [c for c in seen if c.status != FAILED]
    assert answered, [s["text"][-80:] for c in seen for s in c.samples]
    for checked in answered:
        assert checked.final in [s["final"] for s in checked.samples]
        assert checked.samples[checked.chosen]["final"] == checked.final
