"""`python -m solver ...`: the command line. Each subcommand lives in its own module here and exposes
`register(subparsers)`, which adds an argparse parser whose `func(args) -> int` runs it.

Exit codes: 0 done, 1 the work failed (model missing, engine error), 2 bad input (usage, unreadable file),
130 interrupted (what finished is kept).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

COMMAND_MODULES = (
    "solver.cli.models",  # prepare, models
    "solver.cli.generation",  # solve, generate
    "solver.cli.match",  # match
    "solver.cli.packs",  # precompute, pack-info
    "solver.cli.grade",  # grade
    "solver.cli.serve",  # serve
)


class UsageError(Exception):
    """Bad input from the user: printed as one sentence, exit code 2."""


def read_text(path: Path) -> str:
    """A UTF-8 input file's text, or one clear UsageError (missing, a folder, not UTF-8, unreadable)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a JSONL file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m solver", description="Suanjing solver tools.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that command is not part of this build
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
