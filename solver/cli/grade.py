"""`grade`: read graded model outputs with solver.answers and count where it agrees with their grader.

    python -m solver grade FILE.jsonl [FILE.jsonl:START-END ...] [--show-disagreements]

Each line is one problem in the layout of the Qwen2.5-Math evaluation toolkit's output files: "gt" (the
reference answer as the toolkit normalized it), "answer" (optional: the problem's own reference answer, as
MATH-500 publishes it), "code" (a list whose first item is the model's whole output) and "score" (a list whose
first item is the toolkit's verdict); "idx" and "pred" (what the toolkit extracted) are shown when present.
For every line the final answer is extracted from code[0] (parse_output), compared with the reference
(answers_equivalent; a bare list in any order when the "question" asks for all the values), and our
verdict is set against score[0]. The reference is "answer" when the line has
one, else "gt": the toolkit's normalization loses parts of some references (it drops words it takes for
units, so "(a+5)(b+2)" becomes "(+5)(b+2)" and "\\text{east}" becomes "", drops "\\pm" and matrix row
breaks, and reorders or cuts comma-grouped digits), so "gt" would fail correct answers it cannot hold. A `:START-END` suffix grades only those
lines of the file (1-based, inclusive), so a file can be split into a tuning part and a held-out part.
The files keep no finish reason, so an output that stops mid-sentence (solver.answers.looks_cut_off) is
read as one cut at the token limit: its boxes count, its phrases and closing sentence do not.

Owns the reading of those files and the report; how answers are read and compared is solver.answers'.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from solver.answers import answers_equivalent, asks_for_all, looks_cut_off, parse_output
from solver.cli import UsageError, read_text

_LINE_RANGE = re.compile(r"^(?P<path>.+):(?P<start>\d+)-(?P<end>\d+)$")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "grade",
        help="compare solver.answers' verdicts with a grader's on graded model outputs",
        description="For each line of graded outputs ({gt, code: [output], score: [verdict]}), extract "
        "the final answer from code[0], compare it with gt, and count agreement with score[0]. "
        "Prints per file and overall: n, agreement, and both kinds of disagreement.",
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="a JSONL file, optionally FILE:START-END to grade only those lines (1-based, inclusive)",
    )
    p.add_argument(
        "--show-disagreements",
        action="store_true",
        help="print every line where our verdict differs from the grader's",
    )
    p.add_argument(
        "--readings",
        metavar="FILE",
        help="a JSONL file of lines read by a person, {file, idx, right, why}: where the grader is "
        "wrong, also report agreement with the grader corrected by these readings and the wrong "
        "answers we accept by them",
    )
    p.set_defaults(func=run_grade)


@dataclass
class GradedLine:
    line: int
    idx: object
    gt: str
    reference: str  # the problem's own answer when the line has one, else gt
    question: str
    output: str
    grader_pred: object
    grader_accepts: bool


@dataclass
class Tally:
    n: int = 0
    agree: int = 0
    we_accept_grader_rejects: int = 0
    we_reject_grader_accepts: int = 0
    failures: int = 0  # lines whose reading raised (counted as a rejection by us)
    disagreements: list[tuple[GradedLine, str | None, bool]] = field(default_factory=list)
    # Against the verdicts read by a person where there is a reading, else the grader's:
    corrected: int = 0  # readings that overturn the grader's verdict
    read_agree: int = 0
    wrong_accepted: int = 0  # we accept an answer the (corrected) verdict says is wrong
    right_rejected: int = 0

    def add(
        self, item: GradedLine, final: str | None, ours: bool, read: bool | None = None
    ) -> None:
        self.n += 1
        truth = item.grader_accepts if read is None else read
        self.corrected += truth != item.grader_accepts
        if ours == truth:
            self.read_agree += 1
        elif ours:
            self.wrong_accepted += 1
        else:
            self.right_rejected += 1
        if ours == item.grader_accepts:
            self.agree += 1
            return
        if ours:
            self.we_accept_grader_rejects += 1
        else:
            self.we_reject_grader_accepts += 1
        self.disagreements.append((item, final, ours))

    def merge(self, other: Tally) -> None:
        self.n += other.n
        self.agree += other.agree
        self.we_accept_grader_rejects += other.we_accept_grader_rejects
        self.we_reject_grader_accepts += other.we_reject_grader_accepts
        self.failures += other.failures
        self.corrected += other.corrected
        self.read_agree += other.read_agree
        self.wrong_accepted += other.wrong_accepted
        self.right_rejected += other.right_rejected


# -- reading ----------------------------------------------------------------------------------------


def parse_file_argument(argument: str) -> tuple[Path, int | None, int | None]:
    """'FILE' or 'FILE:START-END' (when FILE itself does not exist under the full name)."""
    m = _LINE_RANGE.match(argument)
    if m and not Path(argument).exists():
        start, end = int(m.group("start")), int(m.group("end"))
        if start < 1 or end < start:
            raise UsageError(f"{argument}: the line range must be START-END with 1 <= START <= END")
        return Path(m.group("path")), start, end
    return Path(argument), None, None


def read_graded(path: Path, start: int | None = None, end: int | None = None) -> list[GradedLine]:
    """The lines of a graded file (only lines START..END when given); one clear error for a bad line."""
    raw = read_text(path)
    lines = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if start is not None and not start <= number <= end:
            continue
        if not line.strip():
            continue
        lines.append(_graded_line(line, f"{path}, line {number}", number))
    if not lines:
        raise UsageError(f"{path}: no graded lines" + (f" in {start}-{end}" if start else ""))
    return lines


def _graded_line(line: str, where: str, number: int) -> GradedLine:
    try:
        row: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise UsageError(f"{where}: expected a JSON object")
    gt = row.get("gt")
    if isinstance(gt, bool) or not isinstance(gt, (str, int, float)):
        raise UsageError(f'{where}: "gt" must be a string or a number')
    code, score = row.get("code"), row.get("score")
    if not isinstance(code, list) or not code or not isinstance(code[0], str):
        raise UsageError(
            f'{where}: "code" must be a list whose first item is the output (a string)'
        )
    if not isinstance(score, list) or not score or not isinstance(score[0], bool):
        raise UsageError(f'{where}: "score" must be a list whose first item is true or false')
    answer = row.get("answer")
    if answer is not None and (
        isinstance(answer, bool) or not isinstance(answer, (str, int, float))
    ):
        raise UsageError(f'{where}: "answer" must be a string or a number when present')
    reference = str(answer) if answer is not None and str(answer).strip() else str(gt)
    pred = row.get("pred")
    grader_pred = pred[0] if isinstance(pred, list) and pred else pred
    question = row.get("question")
    question = question if isinstance(question, str) else ""
    return GradedLine(
        number, row.get("idx"), str(gt), reference, question, code[0], grader_pred, score[0]
    )


# -- grading ----------------------------------------------------------------------------------------


def read_readings(path: Path) -> dict[tuple[str, object], bool]:
    """{(file name, idx): right} from a readings file; one clear error for a bad line."""
    readings = {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: not JSON ({exc.msg})") from None
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("file"), str)
            or "idx" not in row
            or not isinstance(row.get("right"), bool)
            or not str(row.get("why") or "").strip()
        ):
            raise UsageError(
                f'{where}: a reading needs "file", "idx", "right" (true/false) and "why"'
            )
        readings[(Path(row["file"]).name, row["idx"])] = row["right"]
    return readings


def grade_lines(lines: list[GradedLine], read: dict[int, bool] | None = None) -> Tally:
    """`read`: {line number: right} for the lines a person read."""
    tally = Tally()
    for item in lines:
        try:
            # The files keep no finish reason: an output that stops mid-sentence was cut off.
            finish_reason = "length" if looks_cut_off(item.output) else "stop"
            final = parse_output(item.output, finish_reason=finish_reason).final
            # "Enter all the roots, separated by commas": a bare list of them may come in any order.
            any_order = asks_for_all(item.question)
            ours = answers_equivalent(final, item.reference, any_order=any_order)
        except Exception as exc:  # one bad line must not stop the run; it counts as a rejection
            print(f"line {item.line}: reading failed ({exc!r})", file=sys.stderr)
            tally.failures += 1
            final, ours = None, False
        tally.add(item, final, ours, (read or {}).get(item.line))
    return tally


def _percent(count: int, n: int) -> str:
    return f"{100 * count / n:.1f}%" if n else "-"


def format_tally(name: str, t: Tally) -> str:
    return (
        f"{name}: n={t.n}  agreement {t.agree} ({_percent(t.agree, t.n)})  "
        f"we accept, grader rejects {t.we_accept_grader_rejects} "
        f"({_percent(t.we_accept_grader_rejects, t.n)})  "
        f"we reject, grader accepts {t.we_reject_grader_accepts} "
        f"({_percent(t.we_reject_grader_accepts, t.n)})"
        + (f"  reading failed {t.failures}" if t.failures else "")
    )


def format_read_tally(name: str, t: Tally) -> str:
    return (
        f"{name}: n={t.n}  with {t.corrected} grader verdicts corrected by reading: "
        f"agreement {t.read_agree} ({_percent(t.read_agree, t.n)})  "
        f"wrong answers accepted {t.wrong_accepted} ({_percent(t.wrong_accepted, t.n)})  "
        f"right answers rejected {t.right_rejected} ({_percent(t.right_rejected, t.n)})"
    )


def _one_line(text: object, limit: int) -> str:
    s = re.sub(r"\s+", " ", str(text)).strip()
    return s if len(s) <= limit else "…" + s[-limit:]


def format_disagreement(name: str, item: GradedLine, final: str | None, ours: bool) -> str:
    verdict = "we accept, grader rejects" if ours else "we reject, grader accepts"
    return (
        f"--- {name}, line {item.line} (idx {item.idx}): {verdict}\n"
        f"    gt:     {item.gt}\n"
        + (f"    answer: {item.reference}\n" if item.reference != item.gt else "")
        + f"    ours:   {final}\n"
        f"    grader: {item.grader_pred}\n"
        f"    output: {_one_line(item.output, 240)}"
    )


def run_grade(args) -> int:
    started = time.perf_counter()
    # Read every file first, so a malformed line stops the run before anything is printed.
    readings = read_readings(Path(args.readings)) if args.readings else None
    files = []
    for argument in args.files:
        path, start, end = parse_file_argument(argument)
        lines = read_graded(path, start, end)
        read = None
        if readings is not None:
            read = {
                item.line: readings[(path.name, item.idx)]
                for item in lines
                if (path.name, item.idx) in readings
            }
        files.append((argument if start else str(path), lines, read))
    overall = Tally()
    reports = []
    for name, lines, read in files:
        tally = grade_lines(lines, read)
        overall.merge(tally)
        if args.show_disagreements:
            for item, final, ours in tally.disagreements:
                print(format_disagreement(name, item, final, ours))
        reports.append(format_tally(name, tally))
        if readings is not None:
            reports.append(format_read_tally(name, tally))
    for report in reports:
        print(report)
    if len(files) > 1:
        print(format_tally("overall", overall))
        if readings is not None:
            print(format_read_tally("overall", overall))
    print(f"graded {overall.n} lines in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0
