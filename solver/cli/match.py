"""`match`: run the answer cache over a bank and a list of questions, and say what it would serve.

    python -m solver match --bank BANK.jsonl --queries QUERIES.jsonl [--out PRED.jsonl]
    python -m solver match --cases tests/data/cache_cases.jsonl      # a labelled set, both at once

Bank lines are {"id", "text"}; query lines {"text", ...} (other fields are ignored, except "expect",
"kind", "lang" and "bank"/"bank_id", which turn on the scoring summary). One output line per query, in
order: {"text", "hit", "match_id", "score", "reasons"}. The summary goes to stderr.

Scoring (the protocol of tests/test_cache.py): a query with "expect": "hit" is right when it hits the
entry it belongs to ("bank_id", or the entry whose text is its "bank"; any hit when neither is given);
a query with "expect": "miss" is right when it hits nothing, and any hit is a wrong hit.
With --cases, the bank is every distinct "bank" text of the file and the queries are every "query".
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from solver.cli import UsageError

HIT_KINDS = ("paraphrase", "reorder", "format", "numeral", "translation")
MISS_KINDS = ("number_change", "target_change", "negation", "unit_change", "related")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "match",
        help="check the answer cache on a bank and a list of questions",
        description="Look every question up in the answer cache built from the bank and print one JSON "
        'line per question: {"text", "hit", "match_id", "score", "reasons"}. With labelled questions '
        '("expect": "hit"/"miss", "kind") the summary on stderr gives accuracy per kind and wrong hits.',
    )
    p.add_argument("--bank", type=Path, help='lines {"id", "text"}')
    p.add_argument("--queries", type=Path, help='lines {"text", ...}')
    p.add_argument(
        "--cases",
        type=Path,
        help='a labelled set (lines {"bank", "query", "expect", "kind", ...}) used as bank and queries',
    )
    p.add_argument("--out", type=Path, help="write the predictions here instead of stdout")
    p.add_argument(
        "--embedder",
        default="minilm",
        help="minilm (default, bundled), use-multilingual, or st:PATH for a sentence-transformers folder",
    )
    p.add_argument(
        "--backend", choices=("torch", "openvino"), default="torch", help="for minilm and st:"
    )
    p.add_argument(
        "--threshold", type=float, help="similarity needed for a hit (default: per embedder)"
    )
    p.add_argument(
        "--signature-threshold",
        type=float,
        help="similarity needed when the exact facts match and are specific (default: per embedder)",
    )
    p.set_defaults(func=run_match)


# -- reading ----------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every non-blank line of a JSONL file as an object; one clear error for the first bad line."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    rows = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UsageError(f"{path}, line {number}: expected a JSON object")
        row["_line"] = number
        rows.append(row)
    return rows


def _text_field(row: dict[str, Any], key: str, path: Path) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise UsageError(f'{path}, line {row["_line"]}: "{key}" must be a string')
    return value


def read_bank(path: Path) -> list[tuple[str, str]]:
    bank: list[tuple[str, str]] = []
    seen: set[str] = set()
    for row in read_jsonl(path):
        entry_id = row.get("id")
        if (
            isinstance(entry_id, bool)
            or not isinstance(entry_id, (str, int))
            or str(entry_id) == ""
        ):
            raise UsageError(
                f'{path}, line {row["_line"]}: "id" must be a non-empty string or an integer'
            )
        text = _text_field(row, "text", path)
        if not text.strip():
            raise UsageError(f'{path}, line {row["_line"]}: "text" is empty')
        if str(entry_id) in seen:
            raise UsageError(f"{path}, line {row['_line']}: id {entry_id!r} appears twice")
        seen.add(str(entry_id))
        bank.append((str(entry_id), text))
    if not bank:
        raise UsageError(f"{path}: the bank has no entries")
    return bank


def read_queries(path: Path) -> list[dict[str, Any]]:
    queries = read_jsonl(path)
    for row in queries:
        _text_field(row, "text", path)
    return queries


def read_cases(path: Path) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """A labelled set as (bank, queries): the bank is every distinct "bank" text, ids b0, b1, ..."""
    rows = read_jsonl(path)
    bank_ids: dict[str, str] = {}
    queries = []
    for row in rows:
        bank_text = _text_field(row, "bank", path)
        query = _text_field(row, "query", path)
        if bank_text not in bank_ids:
            bank_ids[bank_text] = f"b{len(bank_ids)}"
        queries.append({**row, "text": query, "bank_id": bank_ids[bank_text]})
    if not bank_ids:
        raise UsageError(f"{path}: no cases")
    return [(entry_id, text) for text, entry_id in bank_ids.items()], queries


# -- scoring ----------------------------------------------------------------------------------------


def expected_entry(query: dict[str, Any], bank_ids_by_text: dict[str, str]) -> str | None:
    """The entry a "hit" query must hit, when the query says which one."""
    if query.get("bank_id") is not None:
        return str(query["bank_id"])
    if isinstance(query.get("bank"), str):
        return bank_ids_by_text.get(query["bank"])
    return None


def score(
    queries: list[dict[str, Any]], predictions: list[dict[str, Any]], bank: list[tuple[str, str]]
) -> dict[str, dict[str, int]]:
    """Per group ("all", each kind, "lang:xx", "kind/lang"): correct, total, wrong_hits (labelled queries only)."""
    by_text = {text: entry_id for entry_id, text in bank}
    groups: dict[str, dict[str, int]] = defaultdict(
        lambda: {"correct": 0, "total": 0, "wrong_hits": 0}
    )
    for query, pred in zip(queries, predictions, strict=True):
        expect = query.get("expect")
        if expect not in ("hit", "miss"):
            continue
        if expect == "hit":
            wanted = expected_entry(query, by_text)
            correct = pred["hit"] and (wanted is None or pred["match_id"] == wanted)
            wrong = False
        else:
            correct = not pred["hit"]
            wrong = pred["hit"]
        kind = str(query.get("kind", "unlabelled"))
        names = ["all", kind]
        if isinstance(query.get("lang"), str):
            names += [f"lang:{query['lang']}", f"{kind}/{query['lang']}"]
        for group in names:
            counts = groups[group]
            counts["correct"] += int(correct)
            counts["total"] += 1
            counts["wrong_hits"] += int(wrong)
    return dict(groups)


def summary_lines(
    predictions: list[dict[str, Any]], groups: dict[str, dict[str, int]]
) -> list[str]:
    hits = sum(1 for p in predictions if p["hit"])
    lines = [f"{len(predictions)} questions: {hits} hits, {len(predictions) - hits} misses"]
    if not groups:
        return lines
    served = [groups[k] for k in ("paraphrase", "reorder", "format", "numeral") if k in groups]
    if served:
        ok, total = sum(g["correct"] for g in served), sum(g["total"] for g in served)
        lines.append(
            f"served rewordings (paraphrase+reorder+format+numeral): {ok}/{total} = {ok / total:.1%}"
        )
    if "translation" in groups:
        g = groups["translation"]
        lines.append(
            f"served translations: {g['correct']}/{g['total']} = {g['correct'] / g['total']:.1%}"
        )
    must_miss = [groups[k] for k in groups if k in MISS_KINDS]
    if must_miss:
        wrong, total = sum(g["wrong_hits"] for g in must_miss), sum(g["total"] for g in must_miss)
        lines.append(
            f"wrong hits (questions that must miss): {wrong}/{total} = {wrong / total:.1%}"
        )
    lines.append(f"{'group':28s} {'correct':>9s} {'wrong hits':>10s}")
    for name in sorted(groups, key=lambda n: (n.count("/"), n.startswith("lang:"), n)):
        if name == "all":
            continue
        g = groups[name]
        lines.append(f"{name:28s} {g['correct']:>4d}/{g['total']:<4d} {g['wrong_hits']:>10d}")
    return lines


# -- the command ------------------------------------------------------------------------------------


def run_match(args) -> int:
    if args.cases is not None:
        if args.bank is not None or args.queries is not None:
            raise UsageError("use either --cases or --bank with --queries, not both")
        bank, queries = read_cases(args.cases)
    else:
        if args.bank is None or args.queries is None:
            raise UsageError("give --bank and --queries (or --cases for a labelled set)")
        bank, queries = read_bank(args.bank), read_queries(args.queries)
    for name, value in (
        ("--threshold", args.threshold),
        ("--signature-threshold", args.signature_threshold),
    ):
        if value is not None and not 0.0 < value <= 1.0:
            raise UsageError(f"{name} must be a similarity in (0, 1]")

    from solver.cache import SemanticCache
    from solver.embed import EmbedderUnavailable, load_embedder

    try:
        embedder = load_embedder(args.embedder, backend=args.backend)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except EmbedderUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cache = SemanticCache(
        embedder, threshold=args.threshold, signature_threshold=args.signature_threshold
    )
    try:
        cache.add_many(bank, strict=True)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    decisions = cache.lookup_many([q["text"] for q in queries])
    predictions = [
        {
            "text": q["text"],
            "hit": d.hit,
            "match_id": d.entry_id,
            "score": round(d.score, 4),
            "reasons": list(d.reasons),
        }
        for q, d in zip(queries, decisions, strict=True)
    ]
    out_lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
    if args.out is not None:
        try:
            args.out.write_text(out_lines, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.out}: cannot write ({exc.strerror or exc})") from None
    else:
        sys.stdout.write(out_lines)
    print(
        f"embedder {embedder.name}; thresholds {cache.threshold:.2f} / {cache.signature_threshold:.2f}; "
        f"bank of {len(cache)}",
        file=sys.stderr,
    )
    for line in summary_lines(predictions, score(queries, predictions, bank)):
        print(line, file=sys.stderr)
    return 0
