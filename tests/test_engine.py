"""The engine on a real (tiny, random) OpenVINO INT8 model: streaming, batching, cancel, threads.

Each behaviour runs twice: on `Engine` in this process, and on `EngineProcess` (the same engine in a child
process, as the site and the workers run it). The child process's own failure modes are at the end."""

from __future__ import annotations

import threading
import time

import pytest

from solver.engine import Engine, EngineClosed, EngineError, GenerationParams
from solver.engine_process import STATS_EVERY_S, EngineProcess

FIXED = GenerationParams(max_new_tokens=24, greedy=True)


def test_it_streams_text_that_adds_up_to_the_result(any_tiny_engine):
    generation = any_tiny_engine.stream("Hello there, 35 heads", FIXED)
    pieces = list(generation)
    result = generation.result(timeout=30)
    assert "".join(pieces) == result.text
    assert result.new_tokens == 24
    assert result.finish_reason == "length"
    assert result.prompt_tokens > 0
    assert result.ttft_ms > 0 and result.tokens_per_s > 0


def test_greedy_generation_is_deterministic(any_tiny_engine):
    a = any_tiny_engine.generate("鸡兔同笼 35 94", FIXED)
    b = any_tiny_engine.generate("鸡兔同笼 35 94", FIXED)
    assert a.text == b.text


def test_generate_many_returns_results_in_prompt_order(any_tiny_engine):
    prompts = [f"question number {i} " * (1 + i % 3) for i in range(12)]
    lengths = [4 + i for i in range(12)]
    params = [GenerationParams(max_new_tokens=n, greedy=True) for n in lengths]
    seen = []
    results = any_tiny_engine.generate_many(prompts, params, on_result=lambda i, r: seen.append(i))
    assert [r.new_tokens for r in results] == lengths
    assert sorted(seen) == list(range(12))
    # the same prompt alone gives the same text as inside the batch (batching does not mix requests)
    alone = any_tiny_engine.generate(prompts[5], params[5])
    assert alone.text == results[5].text


def test_concurrent_callers_are_batched_not_refused(any_tiny_engine):
    results = {}

    def ask(i: int) -> None:
        results[i] = any_tiny_engine.generate(
            f"thread {i} asks", GenerationParams(max_new_tokens=32, greedy=True)
        )

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    time.sleep(2 * STATS_EVERY_S)  # the child process reports its counters every STATS_EVERY_S
    steps_before = any_tiny_engine.stats.steps
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 8
    assert all(r.finish_reason == "length" and r.new_tokens == 32 for r in results.values())
    time.sleep(2 * STATS_EVERY_S)
    # 8 x 32 tokens one by one would take >= 256 steps; batched they share steps.
    assert 32 <= any_tiny_engine.stats.steps - steps_before < 8 * 32


def test_cancel_stops_a_generation_early(any_tiny_engine):
    generation = any_tiny_engine.stream(
        "a long story", GenerationParams(max_new_tokens=3000, ignore_eos=True, greedy=True)
    )
    iterator = iter(generation)
    next(iterator)
    generation.cancel()
    result = generation.result(timeout=30)
    assert result.finish_reason == "cancelled"
    assert result.new_tokens < 3000


def test_generate_many_stops_when_asked(any_tiny_engine):
    started = time.perf_counter()
    results = any_tiny_engine.generate_many(
        ["x"] * 4,
        GenerationParams(max_new_tokens=5000, ignore_eos=True, greedy=True),
        should_stop=lambda: time.perf_counter() - started > 0.5,
    )
    assert [r.finish_reason for r in results] == ["cancelled"] * 4


def test_sampling_with_a_seed_is_reproducible(any_tiny_engine):
    params = GenerationParams(max_new_tokens=16, temperature=0.6, top_p=0.95, seed=7)
    assert (
        any_tiny_engine.generate("seeded", params).text
        == any_tiny_engine.generate("seeded", params).text
    )


def test_an_empty_prompt_is_refused(any_tiny_engine):
    with pytest.raises(ValueError):
        any_tiny_engine.submit("", FIXED)


def test_a_folder_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(EngineError, match="prepare"):
        Engine(tmp_path)


def test_a_folder_without_a_model_is_a_clear_error_from_the_child_process_too(tmp_path):
    with pytest.raises(EngineError, match="prepare"):
        EngineProcess(tmp_path)


def test_the_child_process_gives_the_in_process_engines_text(tiny_engine, tiny_engine_process):
    prompts = ["鸡兔同笼 35 94", "What is 2 + 3?", "knights and knaves"]
    local = [tiny_engine.generate(p, FIXED) for p in prompts]
    remote = tiny_engine_process.generate_many(prompts, FIXED)
    assert [r.text for r in remote] == [r.text for r in local]
    assert [r.new_tokens for r in remote] == [r.new_tokens for r in local]


def test_a_killed_engine_process_fails_its_generations_and_refuses_new_ones(tiny_model):
    import os
    import signal

    engine = EngineProcess(tiny_model.path)
    try:
        long = engine.stream(
            "a long story", GenerationParams(max_new_tokens=5000, ignore_eos=True, greedy=True)
        )
        next(iter(long))
        assert engine.alive
        os.kill(engine.pid, signal.SIGKILL)
        result = long.result(timeout=30)
        assert result.finish_reason == "error"
        assert "engine process stopped" in result.error
        assert not engine.alive
        with pytest.raises(EngineClosed):
            engine.submit("anything", FIXED)
    finally:
        engine.close()


def test_closing_the_engine_process_cancels_what_runs_and_ends_the_child(tiny_model):
    engine = EngineProcess(tiny_model.path)
    running = engine.submit(
        "a long story", GenerationParams(max_new_tokens=5000, ignore_eos=True, greedy=True)
    )
    engine.close()
    assert running.result(timeout=30).finish_reason == "cancelled"
    assert not engine.alive and engine._process.exitcode is not None
    with pytest.raises(EngineClosed):
        engine.submit("anything", FIXED)


def test_done_callbacks_run_once_when_a_generation_ends(any_tiny_engine):
    calls = []
    generation = any_tiny_engine.submit("callback", FIXED)
    ended = threading.Event()
    generation.add_done_callback(lambda: (calls.append("first"), ended.set()))
    assert ended.wait(30) and generation.done
    generation.add_done_callback(lambda: calls.append("late"))  # already done: called at once
    assert calls == ["first", "late"]
