"""Engine benchmark: solver's engine vs raw openvino-genai vs the deployment guide's optimum-intel path.

Each measurement runs in its own child process so its peak memory (max RSS) is its own. Measured in one
run, on the same model files:
  - single stream: time to first token and decode tokens/s of
      raw   openvino_genai.LLMPipeline (the reference)
      solver  solver.engine.Engine (continuous batching pipeline, driver thread, streaming detokenizer)
      optimum optimum-intel OVModelForCausalLM + transformers generate (the deployment guide's path)
      service solver.remote.RemoteEngine -> `python -m solver serve` (HTTP, SSE; the engine in the
              service's child process), timed by the caller
  - batch: solver generate_many on N prompts vs the same prompts one by one (aggregate tokens/s)
  - batch through the service: RemoteEngine.generate_many on 16 prompts vs one by one, both over HTTP

Models: "embedded" (SmolLM2-135M INT8, prepared if missing) and "r1-shape" (a randomly initialised model
with DeepSeek-R1-Distill-Qwen-1.5B's exact config, exported through the same INT8 path; built once under
bench/out/). Generation ignores EOS so every run has the same length.

    python bench/engine.py --quick            # embedded model only, < 1 minute
    python bench/engine.py                    # both models, full sizes
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPT_TEXT = "一个笼子里有鸡和兔子共35只，脚共94只，问鸡和兔各有多少只？"

# DeepSeek-R1-Distill-Qwen-1.5B's config.json (architecture only; no weights are downloaded).
R1_SHAPE = dict(
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=131072,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    sliding_window=4096,
    max_window_layers=21,
    use_sliding_window=False,
)


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that across exec, so
    a child started by a parent that had grown large (one that prepared a model) reported the parent's
    peak as its own."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- children ---------------------------------------------------------------------------------


def child_raw(model_dir: str, tokens: int, threads: int) -> dict:
    import openvino_genai as ov_genai

    from solver.prompts import get_family

    family = get_family(json.loads((Path(model_dir) / "manifest.json").read_text())["family"])
    prompt = family.render(PROMPT_TEXT)
    pipe = ov_genai.LLMPipeline(model_dir, "CPU", INFERENCE_NUM_THREADS=threads)
    config = ov_genai.GenerationConfig(max_new_tokens=tokens, ignore_eos=True, do_sample=False)
    config.apply_chat_template = False  # the prompt is already rendered; no second template
    pipe.generate(prompt, config)  # warm-up
    result = pipe.generate([prompt], config)
    metrics = result.perf_metrics
    return {
        "ttft_ms": metrics.get_ttft().mean,
        "decode_tps": 1000.0 / metrics.get_tpot().mean,
        "peak_mb": peak_mb(),
    }


def child_solver(model_dir: str, tokens: int, threads: int, stream: bool = True) -> dict:
    from solver.engine import Engine, EngineSettings, GenerationParams
    from solver.prompts import get_family

    family = get_family(json.loads((Path(model_dir) / "manifest.json").read_text())["family"])
    prompt = family.render(PROMPT_TEXT)
    params = GenerationParams(max_new_tokens=tokens, ignore_eos=True, greedy=True)
    with Engine(model_dir, EngineSettings(threads=threads)) as engine:
        engine.generate(prompt, params)  # warm-up
        if stream:
            generation = engine.stream(prompt, params)
            for _ in generation:  # consume the stream, as the site does
                pass
            result = generation.result()
        else:
            result = engine.generate(prompt, params)  # text decoded once at the end
    return {"ttft_ms": result.ttft_ms, "decode_tps": result.tokens_per_s, "peak_mb": peak_mb()}


def child_optimum(model_dir: str, tokens: int, threads: int) -> dict:
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    from solver.prompts import get_family

    family = get_family(json.loads((Path(model_dir) / "manifest.json").read_text())["family"])
    prompt = family.render(PROMPT_TEXT)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = OVModelForCausalLM.from_pretrained(
        model_dir, ov_config={"INFERENCE_NUM_THREADS": threads}
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)

    def timed(n: int) -> float:
        started = time.perf_counter()
        model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - started

    timed(4)  # warm-up
    first = timed(1)
    full = timed(tokens)
    return {
        "ttft_ms": first * 1000.0,
        "decode_tps": (tokens - 1) / (full - first),
        "peak_mb": peak_mb(),
    }


def child_batch(model_dir: str, tokens: int, threads: int, prompts: int, sequential: int) -> dict:
    from solver.engine import Engine, EngineSettings, GenerationParams
    from solver.prompts import get_family

    family = get_family(json.loads((Path(model_dir) / "manifest.json").read_text())["family"])
    texts = [family.render(f"{PROMPT_TEXT} (第{i + 1}题) 35+{i}=?") for i in range(prompts)]
    params = GenerationParams(max_new_tokens=tokens, ignore_eos=True, greedy=True)
    with Engine(
        model_dir, EngineSettings(threads=threads, max_num_seqs=max(64, prompts))
    ) as engine:
        engine.generate(texts[0], GenerationParams(max_new_tokens=4, greedy=True))  # warm-up
        started = time.perf_counter()
        one_by_one = sum(engine.generate(t, params).new_tokens for t in texts[:sequential])
        seq_s = time.perf_counter() - started
        started = time.perf_counter()
        batched = sum(r.new_tokens for r in engine.generate_many(texts, params))
        batch_s = time.perf_counter() - started
    return {
        "one_by_one_tps": one_by_one / seq_s,
        "batch_tps": batched / batch_s,
        "prompts": prompts,
        "sequential_prompts": sequential,
        "peak_mb": peak_mb(),
    }


def _service_peak_mb(process) -> float:
    """Peak RSS of the service and its engine process (VmHWM of each, added)."""
    import psutil

    total = 0.0
    service = psutil.Process(process.pid)
    for p in [service, *service.children(recursive=True)]:
        try:
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024.0
        except OSError:
            pass
    return total


def _start_service(model_dir: str, threads: int, prompts: int = 64):
    from solver.remote import RemoteEngine, start_local_service

    process, url = start_local_service(
        model_dir,
        extra_args=["--threads", str(threads), "--max-running", str(max(64, prompts))],
        stderr=subprocess.DEVNULL,
    )
    return process, RemoteEngine(url)


def child_service(model_dir: str, tokens: int, threads: int) -> dict:
    from solver.engine import GenerationParams
    from solver.prompts import get_family

    family = get_family(json.loads((Path(model_dir) / "manifest.json").read_text())["family"])
    prompt = family.render(PROMPT_TEXT)
    params = GenerationParams(max_new_tokens=tokens, ignore_eos=True, greedy=True)
    process, engine = _start_service(model_dir, threads)
    try:
        engine.generate(prompt, params)  # warm-up
        generation = engine.stream(prompt, params)
        for _ in generation:
            pass
        result = generation.result()
        peak = peak_mb() + _service_peak_mb(process)
    finally:
        engine.close()
        process.terminate()
        process.wait(30)
    return {"ttft_ms": result.ttft_ms, "decode_tps": result.tokens_per_s, "peak_mb": peak}


def child_service_batch(
    model_dir: str, tokens: int, threads: int, prompts: int, sequential: int
) -> dict:
    from solver.engine import GenerationParams
    from solver.prompts import get_family

    family = get_family(json.loads((Path(model_dir) / "manifest.json").read_text())["family"])
    texts = [family.render(f"{PROMPT_TEXT} (第{i + 1}题) 35+{i}=?") for i in range(prompts)]
    params = GenerationParams(max_new_tokens=tokens, ignore_eos=True, greedy=True)
    process, engine = _start_service(model_dir, threads, prompts)
    try:
        engine.generate(texts[0], GenerationParams(max_new_tokens=4, greedy=True))  # warm-up
        started = time.perf_counter()
        one_by_one = sum(engine.generate(t, params).new_tokens for t in texts[:sequential])
        seq_s = time.perf_counter() - started
        started = time.perf_counter()
        batched = sum(r.new_tokens for r in engine.generate_many(texts, params))
        batch_s = time.perf_counter() - started
        peak = peak_mb() + _service_peak_mb(process)
    finally:
        engine.close()
        process.terminate()
        process.wait(30)
    return {
        "one_by_one_tps": one_by_one / seq_s,
        "batch_tps": batched / batch_s,
        "prompts": prompts,
        "sequential_prompts": sequential,
        "peak_mb": peak,
    }


def child_service_health(model_dir: str, threads: int, in_process: bool) -> dict:
    """GET /health latency while 16 streams decode: does HTTP wait behind the engine's steps?"""
    import statistics

    import httpx

    from solver.engine import GenerationParams
    from solver.prompts import get_family
    from solver.remote import RemoteEngine, start_local_service

    family = get_family(json.loads((Path(model_dir) / "manifest.json").read_text())["family"])
    extra = ["--threads", str(threads)] + (["--in-process"] if in_process else [])
    process, url = start_local_service(model_dir, extra_args=extra, stderr=subprocess.DEVNULL)
    engine = RemoteEngine(url)
    health = url.removesuffix("/v1") + "/health"
    params = GenerationParams(max_new_tokens=100_000 // 16, greedy=True, ignore_eos=True)

    def timed(client, n: int) -> list[float]:
        out = []
        for _ in range(n):
            started = time.perf_counter()
            client.get(health)
            out.append((time.perf_counter() - started) * 1000.0)
            time.sleep(0.05)
        return out

    try:
        with httpx.Client() as client:
            idle = timed(client, 20)
            streams = [engine.stream(family.render(f"Count to {i}"), params) for i in range(16)]
            next(iter(streams[-1]))  # all 16 decoding
            busy = sorted(timed(client, 40))
            for g in streams:
                g.cancel()
    finally:
        engine.close()
        process.terminate()
        process.wait(30)
    return {
        "idle_ms": statistics.median(idle),
        "median_ms": statistics.median(busy),
        "p90_ms": busy[int(len(busy) * 0.9)],
        "max_ms": busy[-1],
    }


CHILDREN = {
    "raw": child_raw,
    "solver": child_solver,
    "optimum": child_optimum,
    "batch": child_batch,
    "service": child_service,
    "service_batch": child_service_batch,
    "service_health": child_service_health,
}


def run_child(
    kind: str,
    model_dir: Path | str,
    *,
    script: Path | str = __file__,
    check: bool = True,
    env: dict[str, str] | None = None,
    **kwargs,
) -> dict:
    """Run `script --child kind` in a fresh process and return the JSON it prints last. A failure
    stops the benchmark, or with check=False comes back as {"error": the last line of its stderr}."""
    import os

    cmd = [
        sys.executable,
        str(script),
        "--child",
        kind,
        "--model-dir",
        str(model_dir),
        "--child-args",
        json.dumps(kwargs),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **env} if env else None
    )
    if proc.returncode != 0:
        if not check:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            return {"error": (lines[-1] if lines else f"exit {proc.returncode}")[:300]}
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- models -----------------------------------------------------------------------------------


def embedded_model_dir(store: Path) -> Path:
    from solver.modelstore import ModelStore

    return ModelStore(store).prepare_embedded(progress=lambda m: print(m, file=sys.stderr)).path


R1_SHAPE_NAMES = {"int8": "r1-shape-random", "int4": "r1-shape-random-int4"}


def r1_shape_model_dir(store: Path, weights: str = "int8") -> Path:
    """A random model of the 1.5B distill's shape, exported like the real one with `weights` "int8" or
    "int4", each through `python -m solver prepare … --from-dir … --weights W` (~5 minutes once each).

    The Hugging Face folder (~7 GB, float32) is kept under `store` until both weights are built, so the
    INT4 model has the very weights of the INT8 one."""
    import shutil

    name = R1_SHAPE_NAMES[weights]
    if (store / name / "manifest.json").is_file():
        return store / name
    from tests.conftest import build_tiny_qwen2

    hf = store / ".r1-shape-hf"
    if not (hf / "config.json").is_file():
        # The real tokenizer cannot be downloaded here; SmolLM2's stands in. The model keeps the real
        # 151936-row embedding and output layer, so the weight bytes read per token are the real model's.
        print("building a random 1.5B-shaped Qwen2 ...", file=sys.stderr)
        shutil.rmtree(hf, ignore_errors=True)
        build_tiny_qwen2(hf, **R1_SHAPE)
    print(f"preparing {name} ({weights}) with `python -m solver prepare` ...", file=sys.stderr)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "solver",
            "prepare",
            name,
            "--from-dir",
            str(hf),
            "--family",
            "r1-distill",
            "--weights",
            weights,
            "--store",
            str(store),
        ],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if all((store / n / "manifest.json").is_file() for n in R1_SHAPE_NAMES.values()):
        shutil.rmtree(hf, ignore_errors=True)
    return store / name


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="embedded model, short runs (< 1 minute)"
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma list: embedded,r1-shape (default: both; quick: embedded)",
    )
    parser.add_argument("--store", type=Path, default=REPO / "bench" / "out" / "models")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child")
    parser.add_argument("--model-dir")
    parser.add_argument("--child-args")
    args = parser.parse_args()

    if args.child:
        result = CHILDREN[args.child](args.model_dir, **json.loads(args.child_args))
        print(json.dumps(result))
        return

    names = (args.models or ("embedded" if args.quick else "embedded,r1-shape")).split(",")
    rows = []
    service_rows = []
    for name in names:
        model_dir = (
            embedded_model_dir(args.store) if name == "embedded" else r1_shape_model_dir(args.store)
        )
        small = name == "embedded"
        tokens = (64 if args.quick else 128) if small else (32 if args.quick else 64)
        batch_tokens = 32 if args.quick else 64
        prompts = 64 if small else 16
        sequential = 8 if args.quick else (16 if small else 4)
        print(f"[{name}] single stream, {tokens} new tokens ...", file=sys.stderr)
        raw = run_child("raw", model_dir, tokens=tokens, threads=args.threads)
        mine = run_child("solver", model_dir, tokens=tokens, threads=args.threads)
        # Raw is measured twice (before and after) so drift on a shared machine shows in the table.
        batch_only = run_child(
            "solver", model_dir, tokens=tokens, threads=args.threads, stream=False
        )
        service = run_child("service", model_dir, tokens=tokens, threads=args.threads)
        raw_again = run_child("raw", model_dir, tokens=tokens, threads=args.threads)
        optimum = (
            run_child("optimum", model_dir, tokens=tokens, threads=args.threads)
            if not args.quick
            else None
        )
        print(f"[{name}] batch of {prompts} x {batch_tokens} tokens ...", file=sys.stderr)
        batch = run_child(
            "batch",
            model_dir,
            tokens=batch_tokens,
            threads=args.threads,
            prompts=prompts,
            sequential=sequential,
        )
        print(
            f"[{name}] batch of 16 x {batch_tokens} tokens through the service ...", file=sys.stderr
        )
        service_batch = run_child(
            "service_batch",
            model_dir,
            tokens=batch_tokens,
            threads=args.threads,
            prompts=16,
            sequential=min(sequential, 8),
        )
        health = {}
        if small:
            print(f"[{name}] /health while 16 streams decode ...", file=sys.stderr)
            for mode in (False, True):
                health[mode] = run_child(
                    "service_health", model_dir, threads=args.threads, in_process=mode
                )
        rows.append((name, raw, mine, optimum, batch, batch_only, raw_again))
        service_rows.append((name, service, service_batch, health))

    print()
    print("| model | path | TTFT ms | decode tok/s | decode vs raw | peak MB |")
    print("|---|---|---:|---:|---:|---:|")
    for (name, raw, mine, optimum, _, batch_only, raw_again), (_, service, _, _) in zip(
        rows, service_rows, strict=True
    ):
        for label, r in (
            ("raw openvino-genai (baseline)", raw),
            ("solver engine, streaming", mine),
            ("solver engine, text at the end", batch_only),
            ("through the service (RemoteEngine -> solver serve)", service),
            ("raw openvino-genai again", raw_again),
            ("optimum-intel + transformers", optimum),
        ):
            if r is None:
                continue
            print(
                f"| {name} | {label} | {r['ttft_ms']:.0f} | {r['decode_tps']:.1f} | "
                f"{r['decode_tps'] / raw['decode_tps']:.2f} | {r['peak_mb']:.0f} |"
            )
    print()
    print(
        "| model | prompts | one-by-one tok/s (baseline) | generate_many tok/s | ratio | peak MB |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, _, _, b, _, _ in rows:
        print(
            f"| {name} | {b['prompts']} | {b['one_by_one_tps']:.1f} | {b['batch_tps']:.1f} | "
            f"{b['batch_tps'] / b['one_by_one_tps']:.2f} | {b['peak_mb']:.0f} |"
        )
    print()
    print(
        "| model | prompts | one-by-one via the service tok/s (baseline) | "
        "generate_many via the service tok/s | ratio | peak MB (client + service) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, b, _ in service_rows:
        print(
            f"| {name} | {b['prompts']} | {b['one_by_one_tps']:.1f} | {b['batch_tps']:.1f} | "
            f"{b['batch_tps'] / b['one_by_one_tps']:.2f} | {b['peak_mb']:.0f} |"
        )
    print()
    print(
        "| model | solver serve, engine | /health idle ms | while 16 streams decode: median | p90 | max |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for name, _, _, health in service_rows:
        for mode, label in ((False, "in a child process (default)"), (True, "--in-process")):
            if mode in health:
                h = health[mode]
                print(
                    f"| {name} | {label} | {h['idle_ms']:.1f} | {h['median_ms']:.1f} | "
                    f"{h['p90_ms']:.1f} | {h['max_ms']:.0f} |"
                )
    print()
    name, raw, mine, _, _, _, _ = rows[0]
    print(f"decode ratio solver/raw = {mine['decode_tps'] / raw['decode_tps']:.2f}")
    service = service_rows[0][1]
    print(f"decode ratio service/raw = {service['decode_tps'] / raw['decode_tps']:.2f}")


if __name__ == "__main__":
    main()
