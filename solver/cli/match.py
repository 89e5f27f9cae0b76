"""`match`: run the answer cache over a bank and a list of questions, and say what it would serve.

    python -m solver match --bank BANK.jsonl --queries QUERIES.jsonl [--out PRED.jsonl]
    python -m solver match --cases tests/data/cache_cases.jsonl      # a labelled set, both at once

    python -m solver calibrate --cases A.jsonl --cases B.jsonl     # fit the decision rule (see below)

Bank lines are {"id", "text"}; query lines {"text", ...} (other fields are ignored, except "expect",
"kind", "lang" and "bank"/"bank_id", which turn on the scoring summary). One output line per query, in
order: {"text", "hit", "match_id", "score", "reasons", "suggestions": [{"id", "score"}, ...]}, the
suggestions best first (empty on a hit or a clear miss). The summary goes to stderr.

Scoring: a query with "expect": "hit" is right when it hits the entry it belongs to ("bank_id", or the
entry whose text is its "bank"); it is *found* when it is right or its entry is among the suggestions.
"expect": "miss" is right when it does not hit (a suggestion is not served), and any hit is a wrong hit.
"expect": "either" (the same answer in other words): a hit of its own entry is right, a miss is safe, a
hit of another entry is wrong. With --dense, every question that must miss is added to the bank as an
entry of its own, as in a real bank of same-template problems; a rewording must still hit its own.
With --cases, the bank is every distinct "bank" text of the file(s) and the queries are every "query".

`calibrate` fits the learned rule of `solver.decision` on labelled sets: it splits the problems in two
(by a hash of the bank text; --holdout of them are kept apart), fits boosted trees on the pairs
(question, candidate) of the tuning part in both the plain and the dense bank, chooses `hit_at` as the
lowest probability at which wrong hits and dense wrong matches stay under --max-wrong on the tuning
part (out of fold), plus the margin that a threshold chosen on four folds needs on the fifth, and
`suggest_at` so that --find of the true rewordings are served or suggested; then it reports every
figure on both parts and writes the model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from solver.cli import UsageError, read_text


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
        default="use-multilingual",
        help="use-multilingual (default, bundled), minilm, or st:PATH for a sentence-transformers folder",
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
    p.add_argument(
        "--dense",
        action="store_true",
        help="also bank every question that must miss, and report wrong matches in that dense bank",
    )
    p.set_defaults(func=run_match)

    c = subparsers.add_parser(
        "calibrate",
        help="fit the cache's decision rule on labelled sets and report it on a held-apart part",
        description="Fit the learned hit/suggest/miss rule on labelled sets (tune part) and report every "
        "figure on the tune part and on the part held apart.",
    )
    c.add_argument("--cases", type=Path, action="append", required=True, help="a labelled set")
    c.add_argument("--embedder", default="use-multilingual", help="as for match")
    c.add_argument("--backend", choices=("torch", "openvino"), default="torch")
    c.add_argument("--holdout", type=float, default=0.3, help="share of problems kept apart")
    c.add_argument(
        "--max-wrong",
        type=float,
        default=0.005,
        help="wrong-hit bound on the tune part (the target: 0.5%%)",
    )
    c.add_argument(
        "--find", type=float, default=0.96, help="share of rewordings served or suggested"
    )
    c.add_argument("--out", type=Path, help="where to write the model (default: the shipped one)")
    c.set_defaults(func=run_calibrate)


# -- reading ----------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every non-blank line of a JSONL file as an object; one clear error for the first bad line."""
    raw = read_text(path)
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


def _ratio(pair: tuple[int, int]) -> str:
    count, n = pair
    return f"{count}/{n} = {count / n:.1%}" if n else "-"


def summary_lines(
    decisions: list[Any],
    groups: dict[str, dict[str, int]],
    dense: dict[str, dict[str, int]] | None = None,
) -> list[str]:
    hits = sum(1 for d in decisions if d.hit)
    suggests = sum(1 for d in decisions if d.outcome == "suggest")
    lines = [
        f"{len(decisions)} questions: {hits} hits, {suggests} suggestions, "
        f"{len(decisions) - hits - suggests} misses"
    ]
    if not groups:
        return lines
    from solver.calibration import headline

    for name, pair in headline(groups, dense).items():
        if pair[1]:
            lines.append(f"{name}: {_ratio(pair)}")
    lines.append(f"{'group':28s} {'correct':>9s} {'found':>9s} {'wrong hits':>10s}")
    for name in sorted(groups, key=lambda n: (n.count("/"), n.startswith(("lang:", "expect:")), n)):
        if name == "all":
            continue
        g = groups[name]
        lines.append(
            f"{name:28s} {g['correct']:>4d}/{g['total']:<4d} {g['found']:>4d}/{g['total']:<4d} "
            f"{g['wrong_hits']:>10d}"
        )
    return lines


# -- the commands -----------------------------------------------------------------------------------


def _load_embedder(args):
    from solver.embed import EmbedderUnavailable, load_embedder

    try:
        return load_embedder(args.embedder, backend=args.backend)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except EmbedderUnavailable as exc:
        raise UsageError(str(exc)) from None


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
    from solver.calibration import dense_bank, same_problems, score

    embedder = _load_embedder(args)

    def build(entries: list[tuple[str, str]]) -> SemanticCache:
        cache = SemanticCache(
            embedder, threshold=args.threshold, signature_threshold=args.signature_threshold
        )
        try:
            cache.add_many(entries, strict=True)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return cache

    cache = build(bank)
    decisions = cache.lookup_many([q["text"] for q in queries])
    predictions = [
        {
            "text": q["text"],
            "hit": d.hit,
            "match_id": d.entry_id,
            "score": round(d.score, 4),
            "reasons": list(d.reasons),
            "suggestions": [s.to_dict() for s in d.suggestions],
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
    entries = dense_bank(bank, queries)
    same = same_problems(queries, entries)
    dense = None
    if args.dense:
        dense_cache = build(entries)
        dense_decisions = dense_cache.lookup_many(
            [q["text"] for q in queries if q.get("expect") != "miss"]
        )
        hit_queries = [q for q in queries if q.get("expect") != "miss"]
        dense = score(hit_queries, dense_decisions, entries, same)
    rule = (
        f"learned rule (hit at {cache.model.hit_at:.3f}, suggest at {cache.model.suggest_at:.3f})"
        if cache.model is not None
        else f"version 1 gates (thresholds {cache.threshold:.2f} / {cache.signature_threshold:.2f})"
    )
    print(f"embedder {embedder.name}; {rule}; bank of {len(cache)}", file=sys.stderr)
    for line in summary_lines(decisions, score(queries, decisions, entries, same), dense):
        print(line, file=sys.stderr)
    return 0


def run_calibrate(args) -> int:
    from solver import calibration
    from solver.calibration import dense_bank

    if not 0.0 <= args.holdout < 1.0:
        raise UsageError("--holdout is a share in [0, 1)")
    bank: list[tuple[str, str]] = []
    queries: list[dict[str, Any]] = []
    for path in args.cases:
        part_bank, part_queries = read_cases(path)
        prefix = f"{path.stem}:"
        bank += [(prefix + entry_id, text) for entry_id, text in part_bank]
        queries += [
            {**q, "bank_id": prefix + q["bank_id"], "source": path.stem} for q in part_queries
        ]
    embedder = _load_embedder(args)
    dense = dense_bank(bank, queries)
    result = calibration.calibrate(
        embedder,
        bank,
        queries,
        dense,
        holdout=args.holdout,
        max_wrong=args.max_wrong,
        find=args.find,
        sources=[str(p) for p in args.cases],
    )
    for name, part in (("tune", result.tune), ("held apart", result.holdout)):
        print(f"== {name} part ({part.problems} problems, {part.queries} questions)")
        for line in summary_lines(part.decisions, part.groups, part.dense):
            print(line)
        for source, figures in part.by_source(dense, result.same).items():
            print(f"-- {name} part, {source} only")
            for label, pair in figures.items():
                if pair[1]:
                    print(f"{label}: {_ratio(pair)}")
    from solver.decision import model_path

    out = args.out or model_path(embedder.name)
    result.model.save(out)
    print(
        f"wrote {out}: hit at {result.model.hit_at:.3f}, suggest at {result.model.suggest_at:.3f}"
    )
    return 0
