"""Precompute benchmark: a batch precompute run (the site's task path, inline) vs answering the same
problems one by one through the engine, in the same run of this script, on the same model.

Measured:
  - problems per hour and aggregate tokens/s of both; the ratio precompute / one-by-one;
  - the task framework's and the database's overhead: the same problems through `solver.batch.run_batch`
    with the same window and nothing around it, on the engine in this process ("solver batch") and on
    the engine in a child process as the workers run it ("batch, child"), interleaved with the
    precompute runs; overhead = 1 - batch, child wall / precompute wall (target < 5%);
  - the framework's and the database's own cost per item with no engine running (claim, store, settle);
  - the wall time the worker spent inside those calls during the run (they overlap generation);
  - the overnight estimate: problems a 2-core PC fills in a 10-hour night with the real 1.5B model,
    from the batch speed-up measured here applied to that model's single-stream tok/s (--r1-tps) and an
    average answer length (--avg-tokens).

Models: "embedded" (SmolLM2-135M INT8) and "r1-shape" (a random model of DeepSeek-R1-Distill-Qwen-1.5B's
shape), prepared under bench/out/models as bench/engine.py does. Greedy decoding, so both sides generate
the same text.

    python bench/precompute.py --quick                      # embedded model, 64 problems
    python bench/precompute.py --models embedded,r1-shape --r1-tps 9.5
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUESTIONS = [
    "鸡兔同笼，共有{a}个头，{b}只脚，问兔有几只？",
    "What is {a} times {b}?",
    "一个数加上{a}等于{b}，这个数是多少？",
    "A train travels {a} km in {b} hours. What is its average speed?",
]


def bench_engine_module():
    spec = importlib.util.spec_from_file_location("bench_engine", REPO / "bench" / "engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def setup_django(var: Path, model_dir: Path, batch: int) -> None:
    os.environ.update(
        DEBUG="True",
        SECRET_KEY="bench-only",
        SUANJING_VAR=str(var),
        SUANJING_MODELS=str(model_dir.parent),
        SUANJING_MODEL=model_dir.name,
        SUANJING_PRECOMPUTE_BATCH=str(batch),
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="tutor.settings",
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def one_by_one(engine, family, texts: list[str], params) -> dict:
    started = time.perf_counter()
    tokens = 0
    for text in texts:
        tokens += engine.generate(family.render(text), params).new_tokens
    wall = time.perf_counter() - started
    return {"wall_s": wall, "tokens": tokens, "problems": len(texts)}


def solver_batch(engine, family, texts: list[str], params, batch: int) -> dict:
    """The same problems through `solver.batch.run_batch` with the same window, and no site around it:
    no task, no claims, nothing stored. The precompute row minus this row is the framework's cost."""
    from solver.batch import BatchItem, run_batch

    tokens = []  # from each answer: an EngineProcess's counters reach this process only twice a second
    started = time.perf_counter()
    run_batch(
        engine,
        family,
        [BatchItem(str(i), t) for i, t in enumerate(texts)],
        params=params,
        batch_size=batch,
        on_item=lambda checked: tokens.append(checked.new_tokens),
    )
    wall = time.perf_counter() - started
    return {"wall_s": wall, "tokens": sum(tokens), "problems": len(texts)}


def framework_alone(count: int) -> dict:
    """The site's per-item work with no engine running: claim, store a checked answer (its Solution and
    RunItem rows, the run's counters), settle, for `count` fresh problems. Wall and CPU per item."""
    from types import SimpleNamespace

    from solver.batch import CheckedAnswer
    from tutor.models import Problem
    from tutor.services import precompute as services

    Problem.objects.all().delete()
    Problem.objects.bulk_create(
        [Problem(text=f"framework item {i}", reference_answer="42") for i in range(count)]
    )
    manifest = SimpleNamespace(name="framework-only", manifest_id="framework-only", to_dict=dict)
    started, cpu = time.perf_counter(), time.process_time()
    run = services.create_run(
        selection=services.Selection(which="all"), greedy=True, max_new_tokens=8, enqueue=False
    )
    services.record_manifest(manifest)
    while True:
        services.requeue_expired(run_id=run.pk)
        items = services.claim_items(run_id=run.pk, worker_id="bench")
        if not items:
            break
        for item in items:
            checked = CheckedAnswer(
                problem_id=str(item.pk),
                status="verified",
                final="42",
                agreement=1.0,
                samples=[{"final": "42", "new_tokens": 200, "finish_reason": "stop"}],
                reasoning="r" * 800,
                answer_text="so the answer is \\boxed{42}",
                reference="42",
                new_tokens=200,
                elapsed_s=1.0,
                finish_reason="stop",
            )
            services.store_run_item(
                item_id=item.pk,
                checked=checked,
                manifest=manifest,
                prompt_version="bench",
                retry_failed=False,
            )
    run = services.settle_run(run_id=run.pk, fan_out=False)
    assert run.status == "done", run.status
    return {
        "ms_per_item": 1000 * (time.perf_counter() - started) / count,
        "cpu_ms_per_item": 1000 * (time.process_time() - cpu) / count,
    }


def precompute(texts: list[str], max_new_tokens: int) -> dict:
    """The site's path: a run of RunItems, claimed, answered with continuous batching, stored."""
    from tutor.models import PrecomputeRun, Problem
    from tutor.services import precompute as services

    Problem.objects.all().delete()
    Problem.objects.bulk_create([Problem(text=t) for t in texts])
    outside = {"s": 0.0}

    def timed(fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                outside["s"] += time.perf_counter() - t

        return wrapper

    # Framework + database time: every call the worker makes that is not generation.
    originals = {
        name: getattr(services, name)
        for name in ("claim_items", "requeue_expired", "store_run_item", "settle_run")
    }
    for name, fn in originals.items():
        setattr(services, name, timed(fn))
    try:
        started = time.perf_counter()
        run = services.create_run(
            selection=services.Selection(which="all"),
            greedy=True,
            max_new_tokens=max_new_tokens,
            enqueue=False,
        )
        services.work_on_run(run_id=run.pk, fan_out=False)
        wall = time.perf_counter() - started
    finally:
        for name, fn in originals.items():
            setattr(services, name, fn)
    run = PrecomputeRun.objects.get(pk=run.pk)
    assert run.status == "done", run.status
    return {
        "wall_s": wall,
        "tokens": run.new_tokens,
        "problems": run.total,
        "outside_s": outside["s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="embedded model, 64 problems")
    parser.add_argument(
        "--models", default=None, help="embedded,r1-shape (default: both; quick: embedded)"
    )
    parser.add_argument(
        "--model-dir", type=Path, help="a prepared model folder instead of --models"
    )
    parser.add_argument("--store", type=Path, default=REPO / "bench" / "out" / "models")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16, help="sequences in flight")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=2, help="interleaved runs of solver batch and precompute"
    )
    parser.add_argument(
        "--r1-tps", type=float, default=None, help="the real 1.5B model's single-stream tok/s"
    )
    parser.add_argument(
        "--avg-tokens", type=int, default=1500, help="average R1 answer length in tokens"
    )
    args = parser.parse_args()

    if args.model_dir:
        targets = [("custom", args.model_dir)]
    else:
        names = (args.models or ("embedded" if args.quick else "embedded,r1-shape")).split(",")
        eb = bench_engine_module()
        makers = {"embedded": eb.embedded_model_dir, "r1-shape": eb.r1_shape_model_dir}
        targets = [(n, makers[n](args.store)) for n in names]

    texts = [
        QUESTIONS[i % len(QUESTIONS)].format(a=i + 3, b=2 * i + 7) for i in range(args.problems)
    ]
    var = Path(tempfile.mkdtemp(prefix="suanjing-bench-"))
    setup_django(var, targets[0][1], args.batch)

    from solver.engine import Engine, EngineSettings, GenerationParams
    from solver.engine_process import EngineProcess
    from solver.modelstore import ModelStore
    from solver.prompts import get_family
    from tutor.services import runtime as services

    rows = []
    alone = framework_alone(max(64, args.problems))
    for name, model_dir in targets:
        prepared = ModelStore(model_dir.parent).get(model_dir.name)
        family = get_family(prepared.manifest.family)
        params = GenerationParams(max_new_tokens=args.max_new_tokens, greedy=True)
        engine_settings = EngineSettings(threads=args.threads)
        warm = GenerationParams(max_new_tokens=4, greedy=True)
        # One by one and solver batch: the engine in this process, as `solver` runs it. Precompute: the
        # site's worker path, whose engine runs in a child process (SUANJING_ENGINE_PROCESS, the
        # default); its messages are part of the overhead measured. Both engines idle when not used.
        with (
            Engine(model_dir, engine_settings) as engine,
            EngineProcess(model_dir, engine_settings) as worker_engine,
        ):
            engine.generate(family.render("warm up"), warm)
            worker_engine.generate(family.render("warm up"), warm)
            services.use_engine(worker_engine, prepared.manifest)
            base = one_by_one(engine, family, texts, params)
            # Interleaved repeats, best of each: the machine's noise is larger than the difference.
            plain, child, site = [], [], []
            for _ in range(args.repeats):
                plain.append(solver_batch(engine, family, texts, params, args.batch))
                child.append(solver_batch(worker_engine, family, texts, params, args.batch))
                site.append(precompute(texts, args.max_new_tokens))
            services.use_engine(None, None)
        plain_best, child_best, site_best = (
            min(runs, key=lambda r: r["wall_s"]) for runs in (plain, child, site)
        )
        # The framework's share: against the same engine (the child process) without the site; the
        # child process's own cost: against the engine in this process.
        site_best["overhead"] = 1 - child_best["wall_s"] / site_best["wall_s"]
        child_best["overhead"] = 1 - plain_best["wall_s"] / child_best["wall_s"]
        for best, runs in ((plain_best, plain), (child_best, child), (site_best, site)):
            best["walls"] = [r["wall_s"] for r in runs]
        for kind, r in (
            ("one by one", base),
            ("solver batch", plain_best),
            ("batch, child", child_best),
            ("precompute", site_best),
        ):
            r.update(
                model=name,
                kind=kind,
                tps=r["tokens"] / r["wall_s"],
                pph=r["problems"] * 3600 / r["wall_s"],
                ratio_tps=r["tokens"] / r["wall_s"] / (base["tokens"] / base["wall_s"]),
                ratio_pph=base["wall_s"] / r["wall_s"],
            )
            rows.append(r)

    print(
        f"\n{args.problems} problems, greedy, max {args.max_new_tokens} new tokens, batch {args.batch}, "
        f"{args.threads} threads; the three batch rows: best of {args.repeats} interleaved runs"
    )
    print(
        f"{'model':<10} {'path':<13} {'wall s':>8} {'tokens':>8} {'tok/s':>8} {'problems/h':>11} "
        f"{'x tok/s':>8} {'x prob/h':>9} {'in calls/item':>14} {'overhead':>9}"
    )
    for r in rows:
        calls = f"{1000 * r['outside_s'] / r['problems']:.1f} ms" if "outside_s" in r else ""
        over = f"{100 * r['overhead']:.1f}%" if "overhead" in r else ""
        print(
            f"{r['model']:<10} {r['kind']:<13} {r['wall_s']:>8.1f} {r['tokens']:>8} {r['tps']:>8.1f} "
            f"{r['pph']:>11.0f} {r['ratio_tps']:>8.2f} {r['ratio_pph']:>9.2f} {calls:>14} {over:>9}"
        )
    for r in rows:
        if "walls" in r:
            print(
                f"  {r['model']} {r['kind']} walls: " + ", ".join(f"{w:.1f} s" for w in r["walls"])
            )
    print(
        "\noverhead of precompute = 1 - 'batch, child' wall / precompute wall: the share of the "
        "precompute run's time that the task framework and the database add to the same batch "
        "generation on the same engine, in its child process (target < 5%). Overhead of 'batch, child' "
        "= 1 - solver batch wall / its wall: what running the engine in a child process costs. "
        "'in calls/item' is the wall time the worker spent inside claim/store/settle calls; they "
        "overlap generation, which runs in the engine's child process."
    )
    print(
        f"framework and database alone, no engine running ({max(64, args.problems)} items): "
        f"{alone['ms_per_item']:.2f} ms wall, {alone['cpu_ms_per_item']:.2f} ms CPU per item"
    )
    speedups = {r["model"]: r["ratio_tps"] for r in rows if r["kind"] == "precompute"}
    speedup = speedups.get("r1-shape") or next(iter(speedups.values()))
    if args.r1_tps:
        per_night = args.r1_tps * speedup * 10 * 3600 / args.avg_tokens
        print(
            f"\novernight estimate (1.5B model, 2 cores): {args.r1_tps} tok/s single stream x {speedup:.2f} "
            f"batch speed-up = {args.r1_tps * speedup:.1f} tok/s; at {args.avg_tokens} tokens per answer "
            f"that is about {per_night:.0f} problems per 10-hour night"
        )
    else:
        print(
            "\n(pass --r1-tps with the real 1.5B model's single-stream tok/s for the overnight estimate)"
        )


if __name__ == "__main__":
    main()
