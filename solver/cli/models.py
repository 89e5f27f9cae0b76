"""`prepare` and `models`: put models into the local store and list them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from solver.cli import UsageError


def default_store() -> Path:
    """The model store folder: $SUANJING_MODELS, else `models/` in the repository."""
    env = os.environ.get("SUANJING_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="model store folder (default: $SUANJING_MODELS or ./models in the repository)",
    )


def register(subparsers) -> None:
    from solver.modelstore import DEFAULT_WEIGHTS, WEIGHTS  # stdlib-only import: keeps --help fast

    p = subparsers.add_parser(
        "prepare",
        help="download a model and export it to OpenVINO INT8 (or INT4)",
        description="Download (ModelScope) or read a model, export it to OpenVINO IR with INT8 weights "
        "(or INT4 with --weights int4), and register it in the model store.",
    )
    p.add_argument("name", nargs="?", help="model name, e.g. deepseek-r1-distill-qwen-1.5b")
    p.add_argument("--embedded", action="store_true", help="prepare the offline SmolLM2-135M model")
    p.add_argument(
        "--from-dir", metavar="PATH", help="a Hugging Face model folder or a .gguf file you have"
    )
    p.add_argument("--revision", help="ModelScope revision (default: master)")
    p.add_argument(
        "--family", choices=["r1-distill", "chatml"], help="prompt family (default: detected)"
    )
    p.add_argument(
        "--weights",
        choices=list(WEIGHTS),
        default=DEFAULT_WEIGHTS,
        help="int8 (default) or int4: a smaller file and faster answers on a slow PC, somewhat less "
        "accurate (see the README's model section)",
    )
    p.add_argument("--force", action="store_true", help="prepare again even if already prepared")
    add_store_argument(p)
    p.set_defaults(func=run_prepare)

    m = subparsers.add_parser("models", help="list prepared models")
    m.add_argument("--json", action="store_true")
    m.add_argument(
        "--verify", action="store_true", help="check every file's hash against the manifest"
    )
    add_store_argument(m)
    m.set_defaults(func=run_models)


def run_prepare(args) -> int:
    from solver.modelstore import EMBEDDED_NAME, KNOWN_MODELS, ModelError, ModelStore

    if args.embedded == bool(args.name):
        raise UsageError("name one model to prepare, or pass --embedded")
    store = ModelStore(args.store or default_store())
    name = EMBEDDED_NAME if args.embedded else args.name

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    spec = KNOWN_MODELS.get(name)
    if spec is not None and spec.weak_at_math:
        progress(f"note: {spec.description}")
    try:
        model = store.prepare(
            name,
            from_dir=args.from_dir,
            revision=args.revision,
            family=args.family,
            progress=progress,
            force=args.force,
            weights=args.weights,
        )
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(model.path)
    return 0


def run_models(args) -> int:
    from solver.modelstore import ModelStore

    store = ModelStore(args.store or default_store())
    models = store.list()
    if args.json:
        print(
            json.dumps(
                [dict(m.manifest.to_dict(), path=str(m.path)) for m in models],
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    if not models:
        print(f"no models prepared in {store.root}; run: python -m solver prepare --embedded")
        return 0
    bad = 0
    for m in models:
        line = f"{m.name:32} {m.manifest.family:11} {m.manifest.manifest_id}  {m.path}"
        if m.manifest.weak_at_math:
            line += "  (small model: weak at math)"
        if args.verify:
            broken = store.verify(m.name)
            bad += bool(broken)
            line += "  OK" if not broken else f"  CHANGED: {', '.join(broken)}"
        print(line)
    return 1 if bad else 0
