"""Engine options benchmark (issue 14): each openvino-genai option the engine offers, measured against the
engine's current defaults in the same run on the same model files; INT4 against INT8; the machine's
memory-bandwidth limit and how close the engine comes to it; and precompute ordering.

Every configuration runs in its own child process (bench/engine.py's `run_child`), so its peak memory (the
child's max RSS) is its own. Single stream: greedy, `--tokens` new tokens after one warm-up request on
another prompt; decode tok/s (after the first token) and TTFT are medians over the prompts and
`--repeats`. The baseline (the engine's defaults) is measured first and last; each row's ratio is against
the mean of the two, and the two's own ratio shows the drift of the machine during the run.

Rows, one option changed at a time:
  KV-cache precision    KV_CACHE_PRECISION f16 (the CPU plugin's default is u8)
  threads               INFERENCE_NUM_THREADS 1 and 2 (the default: all cores)
  core pinning          ENABLE_CPU_PINNING off (the default: on)
  dynamic quantization  DYNAMIC_QUANTIZATION_GROUP_SIZE 0 (off), 32, 64, 128 (the default: 32)
  prefix caching        SchedulerConfig.enable_prefix_caching on (the default: off): a new prompt each
                        time, and the warm-up prompt asked again (a full prefix hit)
  prompt lookup         openvino-genai's prompt_lookup, num_assistant_tokens / max_ngram_size
  draft model           a tiny random Qwen2 with the model's vocabulary: it can only show what drafting
                        costs, since a random draft's tokens are never accepted by a trained model (and
                        the embedded SmolLM2 cannot draft for a Qwen vocabulary)
  INT4 weights          the same model prepared with `python -m solver prepare … --weights int4` (r1-shape)
  raw openvino-genai    LLMPipeline on the same files (bench/engine.py's raw child)
The speculative rows and their baseline run on a text workload: EOS is honoured, so a model that ends its
answer stops, and tokens per step show how many drafted tokens were accepted. On the random 1.5B-shaped
model that figure means little: its greedy text repeats itself, which prompt lookup predicts perfectly.

Bandwidth limit: N processes (N = 1 and 2) each read a buffer of `--buffer-gb` GiB (far larger than the
8 MiB L3) with numpy, started together on a barrier; bandwidth = bytes read by all / wall time of the
slowest, best of 5. Two readers are tried, `numpy.sum` over float64 and BLAS `dot` over two float32
buffers (OPENBLAS_NUM_THREADS=1 in each process), and the faster counts. Weight bytes per token: the
model's IR weight constants (read with openvino.Core.read_model) minus the input embedding table, of which a
token reads one row; the IR's .bin size is shown beside it. Ceiling = bandwidth (processes = the engine's
threads) / bytes per token.

Ordering: `generate_many` on mixed-length prompts with more prompts than the engine decodes at once
(max_num_seqs), submitted longest first vs shuffled, with answers of equal length and with answer lengths
that grow with the prompt (long problems tend to get long answers; that is the assumption ordering
rests on).

    python bench/engine_options.py --quick                # embedded model, a few minutes
    python bench/engine_options.py --models r1-shape      # the 1.5B shape, INT8 and INT4 (~40 minutes)
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Math problems of the kind students ask (the speculative rows need text that refers back to the prompt).
QUESTIONS = [
    "一个笼子里有鸡和兔子共35只，脚共94只，问鸡和兔各有多少只？",
    "A train travels 240 km in 3 hours. At the same speed, how far does it travel in 5 hours?",
    "小明有48元，买了3本书，每本12元，他还剩多少元？",
    "The sum of two numbers is 50 and their difference is 14. What are the two numbers?",
]
WARM_UP = (
    "Count the apples: Tom has 7 apples, Ann gives him 5 more and he eats 2. How many are left?"
)


def load_bench_engine():
    spec = importlib.util.spec_from_file_location("bench_engine", REPO / "bench" / "engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# bench/engine.py: its child-process runner, peak memory, raw openvino-genai child and model builders.
BENCH = load_bench_engine()


# -- children ---------------------------------------------------------------------------------


class _Side:
    """One side of a measurement: the solver engine with some settings, or raw openvino-genai."""

    def __init__(self, spec: dict, model_dir: str, tokens: int, ignore_eos: bool) -> None:
        from solver.engine import GenerationParams
        from solver.prompts import get_family

        self.model_dir = spec.get("model") or model_dir
        manifest = json.loads((Path(self.model_dir) / "manifest.json").read_text())
        self.family = get_family(manifest["family"])
        self.kind = spec.get("kind", "engine")
        self.tokens, self.ignore_eos = tokens, ignore_eos
        started = time.perf_counter()
        if self.kind == "raw":
            import openvino_genai as ov_genai

            self.pipe = ov_genai.LLMPipeline(
                self.model_dir, "CPU", INFERENCE_NUM_THREADS=os.cpu_count() or 2
            )
            self.config = ov_genai.GenerationConfig(
                max_new_tokens=tokens, ignore_eos=ignore_eos, do_sample=False
            )
            self.config.apply_chat_template = False  # the prompt is rendered already
        else:
            from solver.engine import Engine, EngineSettings

            self.engine = Engine(self.model_dir, EngineSettings(**spec.get("settings", {})))
            self.params = GenerationParams(
                max_new_tokens=tokens, greedy=True, ignore_eos=ignore_eos, loop_guard=None
            )
        self.load_s = time.perf_counter() - started
        self.steps = self.produced = 0

    def run(self, question: str) -> tuple[float, float]:
        """(TTFT ms, decode tok/s) of one request."""
        prompt = self.family.render(question)
        if self.kind == "raw":
            metrics = self.pipe.generate([prompt], self.config).perf_metrics
            return metrics.get_ttft().mean, 1000.0 / metrics.get_tpot().mean
        steps, produced = self.engine.stats.steps, self.engine.stats.tokens
        generation = self.engine.stream(prompt, self.params)
        for _piece in generation:  # consume the stream, as the site does
            pass
        result = generation.result()
        self.steps += self.engine.stats.steps - steps
        self.produced += self.engine.stats.tokens - produced
        return result.ttft_ms, result.tokens_per_s

    def tokens_per_step(self) -> float:
        return self.produced / self.steps if self.steps else 0.0

    def close(self) -> None:
        if self.kind != "raw":
            self.engine.close()


def child_engine(
    model_dir: str,
    tokens: int,
    side: dict,
    questions: list[str],
    repeats: int,
    ignore_eos: bool = True,
    same_prompt_again: bool = False,
) -> dict:
    """Single stream on one side alone in this process: decode tok/s, TTFT, peak memory."""
    one = _Side(side, model_dir, tokens, ignore_eos)
    one.run(WARM_UP)  # warm-up on another prompt
    asked = [WARM_UP] if same_prompt_again else questions
    runs = [one.run(q) for _ in range(repeats) for q in asked]
    one.close()
    return {
        "ttft_ms": statistics.median(t for t, _ in runs),
        "decode_tps": statistics.median(r for _, r in runs),
        "tokens_per_step": one.tokens_per_step(),
        "load_s": one.load_s,
        "peak_mb": BENCH.peak_mb(),
    }


def child_ab(
    model_dir: str,
    tokens: int,
    a: dict,
    b: dict,
    questions: list[str],
    rounds: int,
    ignore_eos: bool = True,
) -> dict:
    """Both sides loaded in this one process and asked in turns, request by request: whatever else the
    machine does falls on both alike, so the ratio b / a holds on a busy machine too (peak memory does
    not: it is both sides')."""
    sides = [_Side(a, model_dir, tokens, ignore_eos), _Side(b, model_dir, tokens, ignore_eos)]
    for side in sides:
        side.run(WARM_UP)
    ratios, rates = [], ([], [])
    for r in range(rounds):
        question = questions[r % len(questions)]
        # Alternate which side goes first, so neither always follows the other's work.
        order = (0, 1) if r % 2 == 0 else (1, 0)
        got = {}
        for i in order:
            got[i] = sides[i].run(question)[1]
            rates[i].append(got[i])
        ratios.append(got[1] / got[0])
    for side in sides:
        side.close()
    return {
        "ratio": statistics.median(ratios),
        "a_tps": statistics.median(rates[0]),
        "b_tps": statistics.median(rates[1]),
        "b_tokens_per_step": sides[1].tokens_per_step() if sides[1].kind != "raw" else 0.0,
    }


def child_ordering(
    model_dir: str,
    prompts: int,
    max_num_seqs: int,
    base_tokens: int,
    grow: bool,
    rounds: int,
) -> dict:
    """generate_many over mixed-length prompts, shuffled and longest first in turns on one engine."""
    import random

    from solver.engine import Engine, EngineSettings, GenerationParams
    from solver.prompts import get_family

    family = get_family(json.loads((Path(model_dir) / "manifest.json").read_text())["family"])
    rng = random.Random(14)
    texts, params = [], []
    for i in range(prompts):
        size = 1 + (i % 8)  # 1 to 8 times one problem's length
        question = " ".join(QUESTIONS[(i + k) % len(QUESTIONS)] for k in range(size))
        texts.append(family.render(question))
        # Answers of equal length, or growing with the problem (long problems, long answers).
        length = base_tokens * size // 4 if grow else base_tokens
        params.append(GenerationParams(max_new_tokens=max(length, 4), greedy=True, ignore_eos=True))
    shuffled = list(range(prompts))
    rng.shuffle(shuffled)
    texts = [texts[i] for i in shuffled]
    params = [params[i] for i in shuffled]
    walls: dict[bool, list[float]] = {False: [], True: []}
    with Engine(model_dir, EngineSettings(max_num_seqs=max_num_seqs)) as engine:
        engine.generate(texts[0], GenerationParams(max_new_tokens=4, greedy=True))  # warm-up
        for r in range(rounds):
            for ordered in (False, True) if r % 2 == 0 else (True, False):
                started = time.perf_counter()
                results = engine.generate_many(texts, params, longest_first=ordered)
                walls[ordered].append(time.perf_counter() - started)
    produced = sum(r.new_tokens for r in results)
    ratios = [a / b for a, b in zip(walls[False], walls[True], strict=True)]
    return {
        "tokens": produced,
        "shuffled_s": statistics.median(walls[False]),
        "ordered_s": statistics.median(walls[True]),
        "speedup": statistics.median(ratios),
        "peak_mb": BENCH.peak_mb(),
    }


def _reader(kind: str, gib: float, barrier, times, index: int, rounds: int) -> None:
    import numpy as np

    if kind == "sum":
        data = np.ones(int(gib * 2**30) // 8, dtype=np.float64)
        read = data.sum
        size = data.nbytes
    else:  # BLAS dot over two float32 buffers of half the size each: both are read
        half = int(gib * 2**30) // 8
        x, y = np.ones(half, dtype=np.float32), np.ones(half, dtype=np.float32)

        def read():
            return np.dot(x, y)

        size = x.nbytes + y.nbytes
    read()  # pages touched, code warm
    for r in range(rounds):
        barrier.wait()
        start = time.perf_counter()
        read()
        times[(r * 64 + index) * 3 : (r * 64 + index) * 3 + 3] = [start, time.perf_counter(), size]


def child_bandwidth(model_dir: str, processes: int, gib: float, rounds: int) -> dict:
    """Read bandwidth of `processes` numpy readers at once (model_dir is unused)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    out = {}
    for kind in ("sum", "dot"):
        barrier = ctx.Barrier(processes)
        times = ctx.Array("d", rounds * 64 * 3, lock=False)
        workers = [
            ctx.Process(target=_reader, args=(kind, gib, barrier, times, i, rounds))
            for i in range(processes)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = 0.0
        for r in range(rounds):
            rows = [times[(r * 64 + i) * 3 : (r * 64 + i) * 3 + 3] for i in range(processes)]
            wall = max(e for _, e, _ in rows) - min(s for s, _, _ in rows)
            best = max(best, sum(n for _, _, n in rows) / wall / 1e9)
        out[kind] = best
    return {"gb_s": max(out.values()), "by_reader": out}


def child_weights(model_dir: str) -> dict:
    """Weight bytes of the IR: all constants, and those only a Gather reads (the input embedding table,
    of which a token reads one row). A table tied to the output layer (SmolLM2) also feeds a MatMul,
    which reads all of it every token, so it counts as read."""
    import openvino as ov

    model = ov.Core().read_model(str(Path(model_dir) / "openvino_model.xml"))
    # Weight decompression and layout ops between a constant and the op that uses it.
    passing = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze", "Squeeze"}

    def users(node, seen: set) -> set[str]:
        kinds = set()
        for output in node.outputs():
            for target in output.get_target_inputs():
                user = target.get_node()
                if id(user) in seen:
                    continue
                seen.add(id(user))
                if user.get_type_name() in passing:
                    kinds |= users(user, seen)
                else:
                    kinds.add(user.get_type_name())
        return kinds

    total = table = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant":
            continue
        size = op.get_byte_size()
        total += size
        if size > 1 << 20 and users(op, set()) == {"Gather"}:
            table += size
    return {
        "constants_bytes": total,
        "embedding_bytes": table,
        "per_token_bytes": total - table,
        "bin_bytes": (Path(model_dir) / "openvino_model.bin").stat().st_size,
    }


# -- models -----------------------------------------------------------------------------------


def child_draft(model_dir: str) -> dict:
    """Build (once) a draft model with the vocabulary of `model_dir`, beside it; in a child, since it
    loads torch."""
    return {"path": str(draft_model_dir(Path(model_dir).parent, vocab_size(Path(model_dir))))}


def draft_model_dir(store: Path, vocab_size: int) -> Path:
    """A tiny random Qwen2 (tests/conftest.py's shape) with `vocab_size` rows and SmolLM2's tokenizer, the
    tokenizer of both bench models, prepared INT8: a draft model that shows the mechanism's cost only."""
    from solver.modelstore import ModelStore
    from tests.conftest import build_tiny_qwen2

    name = f"draft-tiny-qwen2-{vocab_size}"
    if (store / name / "manifest.json").is_file():
        return store / name
    hf = store / f".{name}-hf"
    build_tiny_qwen2(hf, vocab_size=vocab_size)
    prepared = ModelStore(store).prepare(name, from_dir=hf, family="r1-distill")
    import shutil

    shutil.rmtree(hf, ignore_errors=True)
    return prepared.path


def vocab_size(model_dir: Path) -> int:
    import openvino as ov

    model = ov.Core().read_model(str(model_dir / "openvino_model.xml"))
    return int(model.output(0).get_partial_shape()[-1].get_length())


# -- the run ----------------------------------------------------------------------------------


def option_rows(
    threads: int, spec: tuple[int, int], draft: Path
) -> list[tuple[str, str, dict, bool]]:
    """(option, value, side, text workload) for the single-stream rows, one change at a time."""
    n, g = spec

    def engine(**settings) -> dict:
        return {"settings": settings}

    return [
        ("KV-cache precision", "f16", engine(kv_cache_precision="f16"), False),
        ("INFERENCE_NUM_THREADS", "1", engine(threads=1), False),
        ("INFERENCE_NUM_THREADS", str(threads), engine(threads=threads), False),
        ("ENABLE_CPU_PINNING", "off", engine(cpu_pinning=False), False),
        (
            "DYNAMIC_QUANTIZATION_GROUP_SIZE",
            "0 (off)",
            engine(dynamic_quantization_group_size=0),
            False,
        ),
        (
            "DYNAMIC_QUANTIZATION_GROUP_SIZE",
            "32",
            engine(dynamic_quantization_group_size=32),
            False,
        ),
        (
            "DYNAMIC_QUANTIZATION_GROUP_SIZE",
            "64",
            engine(dynamic_quantization_group_size=64),
            False,
        ),
        (
            "DYNAMIC_QUANTIZATION_GROUP_SIZE",
            "128",
            engine(dynamic_quantization_group_size=128),
            False,
        ),
        ("prefix caching", "on", engine(prefix_caching=True), False),
        (
            "prompt lookup",
            f"{n} draft tokens, n-grams up to {g}",
            engine(prompt_lookup=True, num_assistant_tokens=n, max_ngram_size=g),
            True,
        ),
        (
            "prompt lookup",
            f"{max(n // 2, 1)} draft tokens, n-grams up to {g}",
            engine(prompt_lookup=True, num_assistant_tokens=max(n // 2, 1), max_ngram_size=g),
            True,
        ),
        (
            "draft model (tiny random Qwen2)",
            f"{n} draft tokens",
            engine(draft_model=str(draft), num_assistant_tokens=n),
            True,
        ),
    ]


HEADER = [
    "| option | value | decode tok/s | vs defaults | A/B in one process | TTFT ms | peak MB | tokens/step |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
]


def fmt_row(option: str, value: str, r: dict, base: dict, ab: dict | None = None) -> str:
    if "error" in r:
        return f"| {option} | {value} | failed: {r['error']} | | | | | |"
    if ab is None:
        shown = ""
    elif "error" in ab:
        shown = "failed"
    else:
        shown = f"{ab['ratio']:.2f}"
    step = f"{r['tokens_per_step']:.2f}" if r.get("tokens_per_step") else ""
    return (
        f"| {option} | {value} | {r['decode_tps']:.1f} | {r['decode_tps'] / base['decode_tps']:.2f} | "
        f"{shown} | {r['ttft_ms']:.0f} | {r['peak_mb']:.0f} | {step} |"
    )


def run_model(name: str, args) -> list[str]:
    """Measure one model; return its markdown lines."""
    be = BENCH
    quick = args.quick
    model_dir = (
        be.embedded_model_dir(args.store)
        if name == "embedded"
        else be.r1_shape_model_dir(args.store, "int8")
    )
    small = name == "embedded"
    tokens = args.tokens or ((64 if quick else 128) if small else 64)
    repeats = args.repeats or (1 if quick else 2)
    rounds = args.rounds or (6 if quick else 10)
    questions = QUESTIONS[:2] if quick else QUESTIONS
    threads = os.cpu_count() or 2
    defaults = {"settings": {}}
    print(f"[{name}] the draft model ...", file=sys.stderr, flush=True)
    draft = be.run_child("draft", model_dir, script=__file__)["path"]

    def own(side: dict, text: bool = False, **kw) -> dict:
        print(f"[{name}] {json.dumps(side)} ...", file=sys.stderr, flush=True)
        return be.run_child(
            "engine",
            model_dir,
            script=__file__,
            check=False,
            tokens=tokens,
            side=side,
            questions=questions,
            repeats=repeats,
            ignore_eos=not text,
            **kw,
        )

    def ab(side: dict, text: bool = False) -> dict | None:
        if args.no_ab:
            return None
        print(f"[{name}] A/B {json.dumps(side)} ...", file=sys.stderr, flush=True)
        return be.run_child(
            "ab",
            model_dir,
            script=__file__,
            check=False,
            tokens=tokens,
            a=defaults,
            b=side,
            questions=questions,
            rounds=rounds,
            ignore_eos=not text,
        )

    first = own(defaults)
    if "error" in first:
        raise SystemExit(f"the baseline failed: {first['error']}")
    text_base = own(defaults, text=True)
    rows = []
    for option, value, side, text in option_rows(
        threads, (args.num_assistant_tokens, args.max_ngram_size), Path(draft)
    ):
        rows.append((option, value, own(side, text), ab(side, text), text))
        if option == "prefix caching":
            side_again = own(side, same_prompt_again=True)
            rows.append(
                ("prefix caching", "on, the warm-up prompt asked again", side_again, None, False)
            )
            rows.append(
                (
                    "(defaults)",
                    "the warm-up prompt asked again",
                    own(defaults, same_prompt_again=True),
                    None,
                    False,
                )
            )
    int4_dir = None
    if not small and not args.no_int4:
        int4_dir = be.r1_shape_model_dir(args.store, "int4")
        side = {"model": str(int4_dir)}
        rows.append(("weights", "INT4 (`prepare --weights int4`)", own(side), ab(side), False))
    raw_side = {"kind": "raw"}
    raw = own(raw_side)
    raw_ab = ab(raw_side)
    rows.append(("raw openvino-genai", f"LLMPipeline, {threads} threads", raw, raw_ab, False))
    last = own(defaults)
    base = {k: (first[k] + last[k]) / 2 for k in ("decode_tps", "ttft_ms", "peak_mb")}

    lines = [
        f"### {name}: single stream, {tokens} new tokens, greedy; medians of {repeats} × "
        f"{len(questions)} requests (own process) and of {rounds} rounds (A/B)",
        "",
        *HEADER,
        fmt_row("defaults (baseline)", "measured first", first, base),
        fmt_row("defaults (baseline)", "measured last", last, base),
    ]
    lines += [fmt_row(o, v, r, base, a) for o, v, r, a, text in rows if not text]
    lines += [
        "",
        f"Speculative decoding, text workload (EOS honoured, up to {tokens} new tokens):",
        "",
        *HEADER,
        fmt_row("defaults, text workload (baseline)", "", text_base, text_base),
    ]
    lines += [fmt_row(o, v, r, text_base, a) for o, v, r, a, text in rows if text]
    lines.append("")

    # The bandwidth limit.
    print(f"[{name}] memory bandwidth and weight bytes ...", file=sys.stderr, flush=True)
    blas1 = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    bandwidth = {
        p: be.run_child(
            "bandwidth",
            model_dir,
            script=__file__,
            env=blas1,
            processes=p,
            gib=args.buffer_gb,
            rounds=5,
        )
        for p in (1, 2)
    }
    weights = be.run_child("weights", model_dir, script=__file__)
    per_token = weights["per_token_bytes"]
    lines += [
        "| memory read bandwidth | numpy.sum GB/s | BLAS dot GB/s | the faster |",
        "|---|---:|---:|---:|",
    ]
    for p, b in bandwidth.items():
        lines.append(
            f"| {p} process{'es' if p > 1 else ''} | {b['by_reader']['sum']:.1f} | "
            f"{b['by_reader']['dot']:.1f} | {b['gb_s']:.1f} |"
        )
    bw = bandwidth[min(threads, 2)]["gb_s"]
    ceiling = bw * 1e9 / per_token
    engine_vs_raw = (
        1 / raw_ab["ratio"]
        if raw_ab and "error" not in raw_ab
        else base["decode_tps"] / raw["decode_tps"]
    )
    lines += [
        "",
        f"- weights: IR constants {weights['constants_bytes'] / 1e9:.3f} GB, of which "
        f"{weights['embedding_bytes'] / 1e9:.3f} GB input embedding table (one row read per token); "
        f"read per token **{per_token / 1e9:.3f} GB** (openvino_model.bin: {weights['bin_bytes'] / 1e9:.3f} GB)",
        f"- ceiling: {bw:.1f} GB/s ({min(threads, 2)} readers) / {per_token / 1e9:.3f} GB = **{ceiling:.1f} tok/s**",
        f"- engine single stream (defaults, mean of first and last): {base['decode_tps']:.1f} tok/s = "
        f"**{base['decode_tps'] / ceiling:.0%} of the ceiling** (target 85%)",
        f"- engine / raw openvino-genai: **{engine_vs_raw:.2f}** (A/B in one process; target 0.95); "
        f"own processes: {base['decode_tps'] / raw['decode_tps']:.2f}",
    ]
    int4 = next((r for o, _, r, _, _ in rows if o == "weights"), None)
    int4_ab = next((a for o, _, _, a, _ in rows if o == "weights"), None)
    if int4_dir is not None and int4 is not None and "error" not in int4:
        w4 = be.run_child("weights", int4_dir, script=__file__)
        ceiling4 = bw * 1e9 / w4["per_token_bytes"]
        speed = (
            int4_ab["ratio"]
            if int4_ab and "error" not in int4_ab
            else int4["decode_tps"] / base["decode_tps"]
        )
        lines += [
            f"- INT4: read per token {w4['per_token_bytes'] / 1e9:.3f} GB "
            f"({per_token / w4['per_token_bytes']:.2f}× fewer bytes), ceiling {ceiling4:.1f} tok/s; decode "
            f"{int4['decode_tps']:.1f} tok/s = {int4['decode_tps'] / ceiling4:.0%} of its ceiling; "
            f"**{speed:.2f}× INT8** (A/B in one process; target 1.6×), own processes "
            f"{int4['decode_tps'] / base['decode_tps']:.2f}×; peak **{int4['peak_mb'] / 1024:.2f} GB** "
            "(target ≤ 2 GB)",
        ]
    lines.append("")

    # Ordering.
    if not args.no_ordering:
        count = 24 if (quick or not small) else 48
        seqs = 8
        base_tokens = (48 if quick else 96) if small else 32
        turns = 2 if quick or not small else 4
        lines += [
            f"Ordering: `generate_many` on {count} prompts of 1 to 8 problems' length, "
            f"max_num_seqs {seqs}; shuffled and longest first in turns on one engine, "
            f"{turns} runs of each (medians):",
            "",
            "| answer lengths | shuffled s | longest first s | tok/s shuffled | tok/s longest first | speed-up |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for grow in (False, True):
            print(f"[{name}] ordering grow={grow} ...", file=sys.stderr, flush=True)
            r = be.run_child(
                "ordering",
                model_dir,
                script=__file__,
                prompts=count,
                max_num_seqs=seqs,
                base_tokens=base_tokens,
                grow=grow,
                rounds=turns,
            )
            label = (
                f"grow with the problem ({base_tokens // 4}–{base_tokens * 2} tokens)"
                if grow
                else f"equal ({base_tokens} tokens)"
            )
            lines.append(
                f"| {label} | {r['shuffled_s']:.1f} | {r['ordered_s']:.1f} | "
                f"{r['tokens'] / r['shuffled_s']:.1f} | {r['tokens'] / r['ordered_s']:.1f} | "
                f"{r['speedup']:.2f} |"
            )
        lines.append("")
    return lines


CHILDREN = {
    "engine": child_engine,
    "ab": child_ab,
    "ordering": child_ordering,
    "bandwidth": child_bandwidth,
    "weights": child_weights,
    "draft": child_draft,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="embedded model, short runs")
    parser.add_argument("--models", default=None, help="comma list: embedded,r1-shape")
    parser.add_argument("--store", type=Path, default=REPO / "bench" / "out" / "models")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens per request")
    parser.add_argument(
        "--repeats", type=int, default=None, help="own-process passes over the prompts"
    )
    parser.add_argument("--rounds", type=int, default=None, help="A/B rounds")
    parser.add_argument("--no-ab", action="store_true", help="skip the A/B column")
    parser.add_argument("--buffer-gb", type=float, default=1.0, help="GiB read per process")
    parser.add_argument("--num-assistant-tokens", type=int, default=5)
    parser.add_argument("--max-ngram-size", type=int, default=3)
    parser.add_argument("--no-int4", action="store_true", help="skip the INT4 row (r1-shape)")
    parser.add_argument("--no-ordering", action="store_true", help="skip the ordering rows")
    parser.add_argument("--child")
    parser.add_argument("--model-dir")
    parser.add_argument("--child-args")
    args = parser.parse_args()

    if args.child:
        result = CHILDREN[args.child](args.model_dir, **json.loads(args.child_args))
        print(json.dumps(result))
        return

    names = (args.models or ("embedded" if args.quick else "r1-shape")).split(",")
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    started = time.perf_counter()
    lines = [
        f"`python bench/engine_options.py {' '.join(sys.argv[1:])}`, "
        f"{dt.datetime.now():%Y-%m-%d %H:%M}; at the start: `{load}`",
        "",
    ]
    for name in names:
        lines += run_model(name, args)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines.append(f"Run time {(time.perf_counter() - started) / 60:.1f} min; at the end: `{load}`")
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
