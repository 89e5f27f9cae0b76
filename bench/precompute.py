"""Precompute benchmark: a batch precompute run (the site's task path, inline) vs answering the same
problems one by one through the engine, in the same run of this script, on the same model.

Measured:
  - problems per hour and aggregate tokens/s of both; the ratio precompute / one-by-one;
  - the task framework's and the database's overhead per item: time spent outside generation (claiming
    items, storing answers, renewing claims, polling for cancel), and its share of the run's wall time;
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


def precompute(texts: list[str], max_new_tokens: int) -> dict:
    """The site's path: a run of RunItems, claimed, answered with continuous batching, stored."""
    from tutor import services
    from tutor.models import PrecomputeRun, Problem

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
    from solver.modelstore import ModelStore
    from solver.prompts import get_family
    from tutor import services

    rows = []
    for name, model_dir in targets:
        prepared = ModelStore(model_dir.parent).get(model_dir.name)
        family = get_family(prepared.manifest.family)
        params = GenerationParams(max_new_tokens=args.max_new_tokens, greedy=True)
        with Engine(model_dir, EngineSettings(threads=args.threads)) as engine:
            services.use_engine(engine, prepared.manifest)
            engine.generate(
                family.render("warm up"), GenerationParams(max_new_tokens=4, greedy=True)
            )
            base = one_by_one(engine, family, texts, params)
            batch = precompute(texts, args.max_new_tokens)
            services.use_engine(None, None)
        for kind, r in (("one by one", base), ("precompute", batch)):
            r.update(
                model=name,
                kind=kind,
                tps=r["tokens"] / r["wall_s"],
                pph=r["problems"] * 3600 / r["wall_s"],
            )
        batch["ratio_tps"] = batch["tps"] / base["tps"]
        batch["ratio_pph"] = batch["pph"] / base["pph"]
        base["ratio_tps"] = base["ratio_pph"] = 1.0
        rows += [base, batch]

    print(
        f"\n{args.problems} problems, greedy, max {args.max_new_tokens} new tokens, batch {args.batch}, {args.threads} threads"
    )
    print(
        f"{'model':<10} {'path':<11} {'wall s':>8} {'tokens':>8} {'tok/s':>8} {'problems/h':>11} {'x tok/s':>8} {'x prob/h':>9} {'overhead/item':>14} {'overhead %':>10}"
    )
    for r in rows:
        over = ""
        share = ""
        if "outside_s" in r:
            over = f"{1000 * r['outside_s'] / r['problems']:.1f} ms"
            share = f"{100 * r['outside_s'] / r['wall_s']:.2f}%"
        print(
            f"{r['model']:<10} {r['kind']:<11} {r['wall_s']:>8.1f} {r['tokens']:>8} {r['tps']:>8.1f} "
            f"{r['pph']:>11.0f} {r['ratio_tps']:>8.2f} {r['ratio_pph']:>9.2f} {over:>14} {share:>10}"
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
