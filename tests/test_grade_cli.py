"""`python -m solver grade`: counts on a small inline file, clear errors on bad input, and the agreement
with the published grader on the real MATH-500 outputs (when /work/shared/data/graded is present)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from solver.cli import main

REPO = Path(__file__).resolve().parents[1]
GRADED = Path("/work/shared/data/graded")
QWEN = GRADED / "math500_qwen2.5-math-7b.jsonl"
SKY = GRADED / "math500_sky-t1-27b.jsonl"

LINES = [
    # both accept
    {"idx": 0, "gt": "9", "code": ["So there are \\boxed{9}."], "pred": ["9"], "score": [True]},
    # both reject
    {"idx": 1, "gt": "9", "code": ["It is \\boxed{8}."], "pred": ["8"], "score": [False]},
    # we accept, grader rejects: the toolkit cut "-2 + " off the answer
    {
        "idx": 2,
        "gt": "-2+7i",
        "code": ["I end up with the same answer: $-2 + 7i$.\n\nI think that's the correct result."],
        "pred": ["7"],
        "score": [False],
    },
    # we reject, grader accepts: a run cut off inside its thought, credited with its last number
    {
        "idx": 3,
        "gt": "16",
        "code": ["<|begin_of_thought|>\n\nBut earlier methods gave me 16, so"],
        "pred": ["16"],
        "score": [True],
    },
    # both accept: a vector of fractions against a reference written with slashes
    {
        "idx": 4,
        "gt": "\\begin{pmatrix}-1/3\\\\2/3\\end{pmatrix}",
        "code": ["Thus \\boxed{\\begin{pmatrix} -\\frac{1}{3} \\\\ \\frac{2}{3} \\end{pmatrix}}."],
        "score": [True],
    },
]


def write_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def counts(report_line: str) -> dict[str, int]:
    m = re.search(
        r"n=(\d+)\s+agreement (\d+) \([\d.]+%\)\s+we accept, grader rejects (\d+) \([\d.]+%\)\s+"
        r"we reject, grader accepts (\d+)",
        report_line,
    )
    assert m, report_line
    return dict(
        zip(("n", "agree", "accept_only", "reject_only"), map(int, m.groups()), strict=True)
    )


def test_it_counts_agreement_and_both_kinds_of_disagreement(tmp_path, capsys):
    path = write_lines(tmp_path / "graded.jsonl", LINES)
    assert main(["grade", str(path)]) == 0
    out = capsys.readouterr().out
    assert counts(out) == {"n": 5, "agree": 3, "accept_only": 1, "reject_only": 1}
    assert "agreement 3 (60.0%)" in out and "we accept, grader rejects 1 (20.0%)" in out


def test_it_shows_each_disagreement_and_an_overall_line(tmp_path, capsys):
    path = write_lines(tmp_path / "graded.jsonl", LINES)
    assert main(["grade", str(path), f"{path}:1-3", "--show-disagreements"]) == 0
    out = capsys.readouterr().out
    # Lines 3 and 4 of the whole file, line 3 again in the 1-3 part.
    assert out.count("we accept, grader rejects\n") == 2
    assert out.count("we reject, grader accepts\n") == 1
    assert "line 3 (idx 2)" in out and "ours:   -2 + 7i" in out
    report = {line.split(": n=")[0]: counts(line) for line in out.splitlines() if ": n=" in line}
    assert report[f"{path}:1-3"] == {"n": 3, "agree": 2, "accept_only": 1, "reject_only": 0}
    assert report["overall"] == {"n": 8, "agree": 5, "accept_only": 2, "reject_only": 1}


def test_the_problems_own_answer_is_the_reference_when_the_line_has_one(tmp_path, capsys):
    # The toolkit's "gt" lost parts of these references (a letter taken for a unit, a matrix's row
    # breaks); "answer" keeps them. A line without "answer" is read against "gt".
    rows = [
        {
            "gt": "(+2)(c-1)",
            "answer": "(b+2)(c-1)",
            "code": ["\\boxed{(b+2)(c-1)}"],
            "score": [True],
        },
        {
            "gt": "\\begin{pmatrix}3-12\\end{pmatrix}",
            "answer": "\\begin{pmatrix} 3 \\\\ -12 \\end{pmatrix}",
            "code": ["So \\boxed{\\begin{pmatrix} 3 \\\\ -12 \\end{pmatrix}}."],
            "score": [True],
        },
        {"gt": "", "answer": "\\text{south}", "code": ["\\boxed{\\text{south}}"], "score": [True]},
        {"gt": "", "answer": "\\text{south}", "code": ["\\boxed{\\text{west}}"], "score": [True]},
        {"gt": "5", "code": ["\\boxed{5}"], "score": [True]},
    ]
    path = write_lines(tmp_path / "graded.jsonl", rows)
    assert main(["grade", str(path), "--show-disagreements"]) == 0
    out = capsys.readouterr().out
    assert counts(out) == {"n": 5, "agree": 4, "accept_only": 0, "reject_only": 1}
    assert "line 4 (idx None): we reject, grader accepts" in out
    assert "answer: \\text{south}" in out


def test_readings_correct_the_graders_verdict_and_count_wrong_answers_accepted(tmp_path, capsys):
    path = write_lines(tmp_path / "graded.jsonl", LINES)
    readings = tmp_path / "readings.jsonl"
    # idx 2: the grader cut a right answer (we accept: right); idx 3: a cut-off run it credited
    # (we reject: right); idx 0: a reading that the answer is wrong after all, so we accept a wrong one.
    readings.write_text(
        "".join(
            json.dumps({"file": "graded.jsonl", "idx": idx, "right": right, "why": "read"}) + "\n"
            for idx, right in [(2, True), (3, False), (0, False)]
        ),
        encoding="utf-8",
    )
    assert main(["grade", str(path), "--readings", str(readings)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert counts(out[0]) == {"n": 5, "agree": 3, "accept_only": 1, "reject_only": 1}
    assert "with 3 grader verdicts corrected by reading: agreement 4 (80.0%)" in out[1]
    assert "wrong answers accepted 1 (20.0%)  right answers rejected 0 (0.0%)" in out[1]


@pytest.mark.parametrize(
    "content",
    [
        '{"file": "g.jsonl", "idx": 1, "right": "yes", "why": "x"}\n',
        '{"file": "g.jsonl"}\n',
        "{oops\n",
    ],
    ids=["right-not-bool", "fields-missing", "not-json"],
)
def test_a_bad_readings_file_is_a_clear_error(tmp_path, capsys, content):
    path = write_lines(tmp_path / "graded.jsonl", LINES)
    readings = tmp_path / "readings.jsonl"
    readings.write_text(content, encoding="utf-8")
    assert main(["grade", str(path), "--readings", str(readings)]) == 2
    assert "readings.jsonl:1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "question, agree",
    [
        ("Find all integers $n$ with $n^2 = n + 2$. Enter them separated by commas.", 1),
        ("How many apples and how many pears does she have?", 0),
    ],
)
def test_a_list_of_all_values_is_read_in_any_order_when_the_question_asks_for_all(
    tmp_path, capsys, question, agree
):
    row = {"question": question, "gt": "2,-1", "answer": "2, -1", "code": ["\\boxed{-1, 2}"]}
    path = write_lines(tmp_path / "graded.jsonl", [{**row, "score": [True]}])
    assert main(["grade", str(path)]) == 0
    assert counts(capsys.readouterr().out)["agree"] == agree


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json\n", "line 1: not valid JSON"),
        ("[1, 2]\n", "line 1: expected a JSON object"),
        ('{"gt": "1", "score": [true]}\n', 'line 1: "code" must be a list'),
        ('{"gt": "1", "code": ["\\\\boxed{1}"], "score": ["yes"]}\n', 'line 1: "score" must be'),
        ('{"gt": null, "code": ["x"], "score": [true]}\n', 'line 1: "gt" must be'),
        ('{"gt": "1", "answer": [1], "code": ["x"], "score": [true]}\n', '"answer" must be'),
        ("\n\n", "no graded lines"),
    ],
)
def test_a_malformed_file_is_a_clear_error(tmp_path, capsys, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    assert main(["grade", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_bad_arguments_are_clear_errors_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(LINES[0]) + "\n{oops\n", encoding="utf-8")
    for args, message in [
        ([str(bad)], "bad.jsonl, line 2: not valid JSON"),
        ([str(tmp_path / "missing.jsonl")], "missing.jsonl: no such file"),
        ([f"{bad}:3-1"], "the line range must be START-END"),
        ([str(tmp_path)], "is a directory"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "solver", "grade", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------------------------------------------
# The real graded outputs. Tuned on all of Qwen2.5-Math-7B and the first half of Sky-T1; the second
# half of Sky-T1 was measured once, at the end. Floors are the measured figures rounded down by less
# than one point, so a regression of a few answers fails.

FLOORS = [
    # (file argument, agreement floor in %, ceiling on "we accept, grader rejects" in %)
    # Read against each problem's own "answer" (the toolkit's "gt" lost parts of some references).
    # measured: 99.2% agreement, 0.8% we accept where the grader rejects (4 lines, each one the
    # toolkit's error: \\textbf{(B)}, 15x - 80 read as 80, a gt cut to "10,80", the empty
    # last box of a question the model invented after answering)
    (f"{QWEN}", 98.8, 1.0),
    # measured: 94.4%, 3.6% (9 lines, each one the toolkit's error: it cut or kept words)
    (f"{SKY}:1-250", 93.6, 4.0),
    # held out: 94.4%, 2.8% (7 lines) when first measured; then 95.2%, 3.2% (8 lines, each one the
    # toolkit's error; tests/data/graded_readings.jsonl says why for every disagreement)
    (f"{SKY}:251-500", 94.4, 3.6),
]
READINGS = REPO / "tests" / "data" / "graded_readings.jsonl"


@pytest.mark.skipif(not (QWEN.exists() and SKY.exists()), reason="graded outputs not present")
def test_agreement_with_the_published_grader_on_math500(capsys):
    started = time.perf_counter()
    assert main(["grade", *(f for f, _, _ in FLOORS)]) == 0
    elapsed = time.perf_counter() - started
    out = capsys.readouterr().out
    report = {line.split(": n=")[0]: counts(line) for line in out.splitlines() if ": n=" in line}
    for name, floor, ceiling in FLOORS:
        c = report[name]
        assert 100 * c["agree"] / c["n"] >= floor, (name, c)
        assert 100 * c["accept_only"] / c["n"] <= ceiling, (name, c)
    assert elapsed < 60, f"grading 1000 lines took {elapsed:.0f} s"


@pytest.mark.skipif(not (QWEN.exists() and SKY.exists()), reason="graded outputs not present")
def test_against_the_verdicts_read_by_a_person_no_wrong_answer_is_accepted(capsys):
    # Every disagreement with the toolkit was read (tests/data/graded_readings.jsonl, with why). With
    # those verdicts corrected, agreement is 100% and no wrong answer is accepted; a reading change or a
    # regression that accepts one wrong answer in 250 fails here.
    assert main(["grade", "--readings", str(READINGS), *(f for f, _, _ in FLOORS)]) == 0
    out = capsys.readouterr().out
    read = [line for line in out.splitlines() if "corrected by reading" in line]
    assert len(read) == 4
    for line in read:
        m = re.search(r"agreement (\d+) \(([\d.]+)%\)\s+wrong answers accepted (\d+)", line)
        assert m and float(m.group(2)) >= 99.6 and int(m.group(3)) == 0, line
