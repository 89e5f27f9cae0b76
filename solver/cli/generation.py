"""`solve` and `generate`: watch the model reason through one question, or run a JSONL file in a batch."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from solver.cli import UsageError
from solver.cli.models import add_store_argument, default_store


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="prepared model name (default: the best prepared one)")
    add_store_argument(parser)
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="default: 2048 (solve), 4096 (generate)"
    )
    parser.add_argument(
        "--temperature", type=float, default=None, help="default: the model family's advice"
    )
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--greedy", action="store_true", help="no sampling")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: all cores)"
    )
    parser.add_argument("--kv-cache-gb", type=float, default=1.0)


def register(subparsers) -> None:
    s = subparsers.add_parser(
        "solve", help="stream the model's reasoning and answer for one question"
    )
    s.add_argument("question")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    add_engine_arguments(s)
    s.set_defaults(func=run_solve)

    g = subparsers.add_parser(
        "generate", help="answer every question of a JSONL file (continuous batching)"
    )
    g.add_argument("--in", dest="inp", required=True, type=Path, help='lines {"id", "text"}')
    g.add_argument(
        "--out", required=True, type=Path, help="answers, one JSON line each; rerun to resume"
    )
    add_engine_arguments(g)
    g.set_defaults(func=run_generate)


def open_engine(args, *, child_process: bool = False):
    """(engine, prepared model, prompt family) for the command's arguments; exits 1 with advice if no model.

    `child_process`: run the engine in a child process (`solver.engine_process`), for commands that write
    a file per answer while the batch runs: in this process each write would wait for a decode step."""
    from solver.engine import Engine, EngineError, EngineSettings
    from solver.engine_process import EngineProcess
    from solver.modelstore import ModelError, ModelStore
    from solver.prompts import get_family

    store = ModelStore(args.store or default_store())
    try:
        model = store.default(args.model)
        family = get_family(model.manifest.family)
        settings = EngineSettings(threads=args.threads, kv_cache_gb=args.kv_cache_gb)
        engine = (EngineProcess if child_process else Engine)(model.path, settings)
    except (ModelError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if model.manifest.weak_at_math:
        print(
            f"note: {model.name} is a small model that is weak at math; its answers are often wrong. "
            "Prepare deepseek-r1-distill-qwen-1.5b for real use.",
            file=sys.stderr,
        )
    return engine, model, family


def params_from(args, family, default_max: int):
    from solver.engine import GenerationParams

    return GenerationParams(
        max_new_tokens=args.max_new_tokens or default_max,
        temperature=family.temperature if args.temperature is None else args.temperature,
        top_p=family.top_p if args.top_p is None else args.top_p,
        greedy=args.greedy,
        seed=args.seed,
    )


class ReasoningPrinter:
    """Prints streamed output with the reasoning set apart from the answer (`</think>` splits them)."""

    TAG = "</think>"

    def __init__(self, out, *, starts_in_reasoning: bool):
        self.out = out
        self.color = out.isatty() and not os.environ.get("NO_COLOR")
        self.in_reasoning = starts_in_reasoning
        self.buffer = ""
        if starts_in_reasoning:
            self._header("reasoning")

    def _header(self, title: str) -> None:
        line = f"\n── {title} " + "─" * (40 - len(title)) + "\n"
        self.out.write(f"\033[1m{line}\033[0m" if self.color else line)

    def _write(self, text: str) -> None:
        if not text:
            return
        if self.in_reasoning and self.color:
            self.out.write(f"\033[2m{text}\033[0m")
        else:
            self.out.write(text)
        self.out.flush()

    def feed(self, piece: str) -> None:
        self.buffer += piece.replace("<think>", "")
        if self.in_reasoning:
            idx = self.buffer.find(self.TAG)
            if idx >= 0:
                self._write(self.buffer[:idx])
                self.buffer = self.buffer[idx + len(self.TAG) :].lstrip("\n")
                self.in_reasoning = False
                self._header("answer")
            else:
                # keep a possible partial tag for the next piece
                keep = len(self.TAG) - 1
                self._write(self.buffer[:-keep] if len(self.buffer) > keep else "")
                self.buffer = self.buffer[-keep:] if len(self.buffer) > keep else self.buffer
                return
        self._write(self.buffer)
        self.buffer = ""

    def close(self) -> None:
        self._write(self.buffer)
        self.buffer = ""
        self.out.write("\n")


def run_solve(args) -> int:
    from solver.answers import parse_output
    from solver.prompts import InvalidQuestion, clean_question

    try:
        question = clean_question(args.question)
    except InvalidQuestion as exc:
        raise UsageError(str(exc)) from None
    engine, model, family = open_engine(args)
    params = params_from(args, family, 2048)
    generation = engine.stream(family.render(question), params)
    try:
        if args.json:
            result = generation.result()
        else:
            if not family.implicit_think:
                print("── answer " + "─" * 34, flush=True)
            printer = ReasoningPrinter(sys.stdout, starts_in_reasoning=family.implicit_think)
            for piece in generation:
                printer.feed(piece)
            printer.close()
            result = generation.result()
    except KeyboardInterrupt:
        generation.cancel()
        result = generation.result()
        engine.close()
        print("\ninterrupted", file=sys.stderr)
        return 130
    engine.close()
    parsed = parse_output(
        result.text, finish_reason=result.finish_reason, implicit_think=family.implicit_think
    )
    if args.json:
        print(
            json.dumps(
                {
                    "question": question,
                    "reasoning": parsed.reasoning,
                    "answer": parsed.answer,
                    "final": parsed.final,
                    "truncated": parsed.truncated,
                    "finish_reason": result.finish_reason,
                    "prompt_tokens": result.prompt_tokens,
                    "new_tokens": result.new_tokens,
                    "ttft_ms": round(result.ttft_ms, 1),
                    "tokens_per_s": round(result.tokens_per_s, 2),
                    "elapsed_s": round(result.elapsed_s, 3),
                    "model": model.name,
                    "manifest_id": model.manifest.manifest_id,
                    "prompt_version": family.version,
                },
                ensure_ascii=False,
            )
        )
    else:
        if parsed.truncated:
            final = "none (the token limit was reached while still reasoning; try --max-new-tokens)"
        else:
            final = parsed.final if parsed.final is not None else "none (no final answer found)"
        print(f"final answer: {final}")
        print(
            f"{result.new_tokens} tokens, {result.tokens_per_s:.1f} tokens/s, "
            f"first token after {result.ttft_ms:.0f} ms, model {model.name}",
            file=sys.stderr,
        )
    return 0


def read_problems(path: Path) -> list[dict]:
    """Lines {"id", "text"}; every line is checked before any work starts (exit 2 on the first bad one)."""
    from solver.prompts import InvalidQuestion, clean_question

    if not path.is_file():
        raise UsageError(f"{path} does not exist")
    items: list[dict] = []
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text (expected JSON lines)") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict) or "text" not in item:
            raise UsageError(f'{path}:{number}: expected an object with "id" and "text"')
        item_id = str(item.get("id", number))
        if item_id in seen:
            raise UsageError(f"{path}:{number}: duplicate id {item_id!r}")
        seen.add(item_id)
        try:
            text = clean_question(item["text"])
        except InvalidQuestion as exc:
            raise UsageError(f"{path}:{number}: {exc}") from None
        items.append({"id": item_id, "text": text, "answer": item.get("answer")})
    if not items:
        raise UsageError(f"{path} has no problems")
    return items


def finished_ids(out: Path) -> set[str]:
    """Ids already answered in an earlier (interrupted) run of the same command. A last line cut short
    by a crash is dropped from the file, so that item is simply redone."""
    done: set[str] = set()
    if not out.exists():
        return done
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(out, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)
    with open(out, encoding="utf-8") as fh:
        for line in fh:
            try:
                done.add(str(json.loads(line)["id"]))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash is simply redone
    return done


def run_generate(args) -> int:
    from tqdm import tqdm

    from solver.answers import parse_output

    problems = read_problems(args.inp)
    done = finished_ids(args.out)
    todo = [p for p in problems if p["id"] not in done]
    if not todo:
        print(f"all {len(problems)} problems already answered in {args.out}", file=sys.stderr)
        return 0
    engine, model, family = open_engine(args, child_process=True)
    params = params_from(args, family, 4096)
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    previous = signal.signal(signal.SIGTERM, on_signal)
    bar = tqdm(
        total=len(problems), initial=len(problems) - len(todo), unit="problem", dynamic_ncols=True
    )
    tokens = 0
    started = time.perf_counter()
    with open(args.out, "a", encoding="utf-8") as out:

        def on_result(index: int, result) -> None:
            nonlocal tokens
            if result.finish_reason == "cancelled":
                return  # not finished: the next run redoes it
            item = todo[index]
            parsed = parse_output(
                result.text,
                finish_reason=result.finish_reason,
                implicit_think=family.implicit_think,
            )
            record = {
                "id": item["id"],
                "text": item["text"],
                "reasoning": parsed.reasoning,
                "answer": parsed.answer,
                "final": parsed.final,
                "truncated": parsed.truncated,
                "finish_reason": result.finish_reason,
                "new_tokens": result.new_tokens,
                "ttft_ms": round(result.ttft_ms, 1),
                "tokens_per_s": round(result.tokens_per_s, 2),
                "model": model.name,
                "manifest_id": model.manifest.manifest_id,
                "prompt_version": family.version,
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            tokens += result.new_tokens
            rate = tokens / max(time.perf_counter() - started, 1e-6)
            bar.set_postfix_str(f"{rate:.0f} tok/s")
            bar.update(1)

        try:
            results = engine.generate_many(
                [family.render(p["text"]) for p in todo],
                params,
                on_result=on_result,
                should_stop=lambda: stop["now"],
            )
        except KeyboardInterrupt:
            stop["now"] = True
            results = []
        finally:
            bar.close()
            signal.signal(signal.SIGTERM, previous)
            engine.close()
    finished = sum(1 for r in results if r.finish_reason != "cancelled")
    if stop["now"]:
        print(
            f"stopped: kept {len(problems) - len(todo) + finished}/{len(problems)} in {args.out}; rerun to continue",
            file=sys.stderr,
        )
        return 130
    print(f"answered {finished} problems ({tokens} tokens) into {args.out}", file=sys.stderr)
    return 0
