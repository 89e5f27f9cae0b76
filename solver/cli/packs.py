"""`precompute` and `pack-info`: build an answer pack from a JSONL file without the site, and describe one.

`precompute` is resumable: rerun the same command and it continues. Problems that already have an answer
from this model and prompt are skipped; a failed one is tried again, up to `MAX_ATTEMPTS` tries in all.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

from solver.cli import UsageError
from solver.cli.generation import add_engine_arguments, open_engine, params_from, read_problems
from solver.cli.models import default_store

DEFAULT_MAX_NEW_TOKENS = 4096


def register(subparsers) -> None:
    from solver.batch import DEFAULT_BATCH_SIZE, MAX_SAMPLES

    p = subparsers.add_parser(
        "precompute",
        help="answer a JSONL file of problems into an answer pack (resumable)",
        description='Answer every problem of a JSONL file (lines {"id", "text", "answer"?}) with '
        "continuous batching, check each answer (verified / unverified / failed) and store it in an answer "
        "pack. Rerun the same command to continue after a stop or a crash.",
    )
    p.add_argument(
        "--in", dest="inp", required=True, type=Path, help='lines {"id", "text", "answer"?}'
    )
    p.add_argument("--out", required=True, type=Path, help="the answer pack (created, or added to)")
    p.add_argument(
        "--samples",
        type=int,
        default=1,
        help=f"samples per problem, 1..{MAX_SAMPLES} (3+ lets agreement verify)",
    )
    p.add_argument("--limit", type=int, default=None, help="answer at most N problems in this run")
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="sequences kept in the engine at once",
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=2 / 3,
        help="agreement that verifies an answer (default 2/3)",
    )
    add_engine_arguments(p)
    p.set_defaults(func=run_precompute)

    i = subparsers.add_parser("pack-info", help="describe an answer pack before importing it")
    i.add_argument("pack", type=Path)
    i.add_argument("--json", action="store_true", help="one JSON object")
    i.set_defaults(func=run_pack_info)


def _reference(value, item_id: str) -> str | None:
    """The optional "answer" of an input line, as text."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UsageError(f'problem {item_id!r}: "answer" must be text or a number')
    text = str(value).strip()
    if len(text) > 500:
        raise UsageError(f'problem {item_id!r}: "answer" is longer than 500 characters')
    return text or None


def _check_arguments(args) -> None:
    from solver.batch import MAX_SAMPLES

    if not 1 <= args.samples <= MAX_SAMPLES:
        raise UsageError(f"--samples must be between 1 and {MAX_SAMPLES}")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if not 0 < args.min_agreement <= 1:
        raise UsageError("--min-agreement must be in (0, 1], e.g. 0.67")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if args.samples > 1 and (
        args.greedy or (args.temperature is not None and args.temperature <= 0)
    ):
        raise UsageError(
            "several --samples need sampling: with --greedy they would all be the same"
        )


def _live(progress) -> str:
    return f"{progress.tokens_per_s():.0f} tok/s, {progress.problems_per_hour():.0f} problems/h"


def run_precompute(args) -> int:
    from solver.batch import BatchItem, is_settled
    from solver.modelstore import ModelError, ModelStore
    from solver.packs import PackError, PackManifest, PackProblem, PackWriter
    from solver.prompts import UnknownPromptFamily, get_family

    _check_arguments(args)
    problems = read_problems(args.inp)
    references = {p["id"]: _reference(p["answer"], p["id"]) for p in problems}
    # Which model answers is known from the store without loading it: a finished pack needs no engine.
    try:
        model = ModelStore(args.store or default_store()).default(args.model)
        family = get_family(model.manifest.family)
    except (ModelError, UnknownPromptFamily) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    manifest_id, prompt_version = model.manifest.manifest_id, family.version
    try:
        writer = PackWriter(args.out)
    except PackError as exc:
        raise UsageError(str(exc)) from None
    try:
        try:
            with writer.transaction():
                writer.add_manifest(PackManifest(manifest_id, model.manifest.to_dict()))
                for p in problems:
                    writer.add_problem(
                        PackProblem(
                            id=p["id"], text=p["text"], reference_answer=references[p["id"]]
                        )
                    )
        except PackError as exc:
            raise UsageError(str(exc)) from None
        states = writer.solution_states(manifest_id, prompt_version)
        todo: list[BatchItem] = []
        settled = 0
        for p in problems:
            status, attempts = states.get(p["id"], ("", 0))
            if status and is_settled(status, attempts):
                settled += 1
            else:
                todo.append(
                    BatchItem(p["id"], p["text"], references[p["id"]], attempt=attempts + 1)
                )
        if args.limit is not None:
            todo = todo[: args.limit]
        if not todo:
            print(
                f"all {len(problems)} problems already have a settled answer in {args.out}",
                file=sys.stderr,
            )
            return 0
        return _answer(args, writer, todo, settled, manifest_id, prompt_version)
    finally:
        writer.close()


def _answer(args, writer, todo, settled: int, manifest_id: str, prompt_version: str) -> int:
    """Run the engine over `todo`, storing each checked answer as it finishes."""
    from tqdm import tqdm

    from solver.batch import FAILED, MAX_ATTEMPTS, BatchProgress, run_batch
    from solver.engine import EngineError
    from solver.packs import PackError

    engine, model, family = open_engine(args, child_process=True)
    params = params_from(args, family, DEFAULT_MAX_NEW_TOKENS)
    progress = BatchProgress(total=settled + len(todo), initial=settled)
    stop = threading.Event()
    set_aside = 0

    def on_signal(signum, frame) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    bar = tqdm(
        total=progress.total,
        initial=settled,
        unit="problem",
        dynamic_ncols=True,
        smoothing=0.1,
        file=sys.stderr,
    )
    last_refresh = [time.perf_counter()]

    def should_stop() -> bool:
        # Polled every 50 ms: refresh the rates while long answers are still being generated.
        now = time.perf_counter()
        if now - last_refresh[0] > 1.0:
            last_refresh[0] = now
            bar.set_postfix_str(_live(progress))
        return stop.is_set()

    def on_item(checked) -> None:
        nonlocal set_aside
        writer.record(checked, manifest_id=manifest_id, prompt_version=prompt_version)
        if checked.status == FAILED and checked.attempt >= MAX_ATTEMPTS:
            set_aside += 1
            bar.write(
                f"set aside after {checked.attempt} failed attempts: {checked.problem_id} ({checked.error})"
            )
        bar.update(1)  # the rates beside the bar are refreshed by should_stop

    try:
        run_batch(
            engine,
            family,
            todo,
            samples=args.samples,
            params=params,
            on_item=on_item,
            should_stop=should_stop,
            batch_size=args.batch_size,
            min_agreement=args.min_agreement,
            progress=progress,
        )
    except (EngineError, PackError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        engine.close()
    figures = progress.snapshot()
    counts = writer.counts()
    by = figures["by_status"]
    line = (
        f"{figures['done'] - settled} problems answered into {args.out}: {by['verified']} verified, "
        f"{by['unverified']} unverified, {by['failed']} failed"
        + (f" ({set_aside} set aside after {MAX_ATTEMPTS} attempts)" if set_aside else "")
        + f"; {figures['new_tokens']} tokens, {figures['tokens_per_s']:.1f} tokens/s, "
        f"{figures['problems_per_hour']:.0f} problems/hour, {figures['elapsed_s']:.0f} s; "
        f"model {model.name}. The pack holds {counts['solutions']} solutions of {counts['problems']} problems."
    )
    if progress.stopped:
        print(f"stopped: {line} Rerun the same command to continue.", file=sys.stderr)
        return 130
    print(line, file=sys.stderr)
    return 0


def run_pack_info(args) -> int:
    from solver.packs import PackError, pack_info

    try:
        info = pack_info(args.pack)
    except PackError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
        return 0
    print(
        f"{args.pack}: answer pack, schema version {info['schema_version']}, created {info['created']} "
        f"by {info['tool']} {info['tool_version']}"
    )
    statuses = ", ".join(f"{n} {status}" for status, n in info["by_status"].items() if n) or "none"
    print(f"  problems   {info['problems']}")
    print(f"  solutions  {info['solutions']} ({statuses})")
    embedders = ", ".join(f"{n} {name}" for name, n in info["embedders"].items())
    print(f"  vectors    {info['vectors']}" + (f" ({embedders})" if embedders else ""))
    print(f"  manifests  {len(info['manifests'])}")
    for m in info["manifests"]:
        weak = ", weak at math" if m["weak_at_math"] else ""
        print(
            f"    {m['manifest_id']}  {m['name'] or '?'}  prompt {m['prompt_version'] or '?'}{weak}: "
            f"{m['solutions']} solutions"
        )
    return 0
