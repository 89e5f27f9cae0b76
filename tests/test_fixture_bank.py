"""Checks the bilingual problem bank fixture, fixtures/problems.jsonl.

This module owns the contract of that file: one JSON object per line with typed keys, both languages and every
topic well represented, the site's example questions present, and every worked solution ending in a
\\boxed{} answer equal to the reference answer. It does not judge whether the answers are mathematically right
(they were computed when the bank was written) and it needs neither Django nor any model.
"""

import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest

BANK_PATH = Path(__file__).resolve().parent.parent / "fixtures" / "problems.jsonl"
TOPICS = frozenset(
    {
        "linear_systems",
        "ages",
        "work_rates",
        "travel",
        "percentages",
        "calendar",
        "divisibility",
        "counting",
        "probability",
        "geometry",
        "sequences",
        "unit_conversion",
        "proofs",
        "logic",
        "coding",
    }
)
KEYS = {
    "id": str,
    "text": str,
    "lang": str,
    "topic": str,
    "tags": list,
    "difficulty": int,
    "reference_answer": str,
    "solution": (str, type(None)),
}
REQUIRED = [
    ("请证明：任意奇数的平方减1都能被8整除", "proofs", "成立"),
    ("写一个Python函数判断回文字符串", "coding", "def is_palindrome(s): return s == s[::-1]"),
    ("如果今天是星期三，100天后是星期几？", "calendar", "星期五"),
    ("一个笼子里有鸡和兔子共35只，脚共94只，问鸡和兔各有多少只？", "linear_systems", "23, 12"),
]
CJK = re.compile(r"[\u4e00-\u9fff]")
HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
ID_FORMAT = re.compile(r"^(zh|en)-[a-z]+-\d{3}$")
FRACTION = re.compile(r"^-?(\d+)/(\d+)$")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} in text, matching nested braces; None if absent or unclosed."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def load_bank() -> list[dict]:
    with BANK_PATH.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


BANK = load_bank()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{42}", "42"),
        ("\\boxed{1} then \\boxed{\\frac{2}{3}}", "\\frac{2}{3}"),
        ("\\boxed{a{b{c}}d}", "a{b{c}}d"),
        ("no box here", None),
        ("\\boxed{unclosed", None),
    ],
)
def test_last_boxed_matches_nested_braces(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


def test_bank_has_enough_problems_with_unique_ids_and_texts() -> None:
    assert len(BANK) >= 300
    ids = [p["id"] for p in BANK]
    texts = [p["text"] for p in BANK]
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    assert [t for t, n in Counter(texts).items() if n > 1] == []


@pytest.mark.parametrize("problem", BANK, ids=[p["id"] for p in BANK])
def test_each_problem_has_the_required_keys_and_types(problem: dict) -> None:
    assert set(problem) == set(KEYS)
    for key, kind in KEYS.items():
        assert isinstance(problem[key], kind), key
    assert not isinstance(problem["difficulty"], bool)
    assert 1 <= problem["difficulty"] <= 5
    assert problem["lang"] in ("zh", "en")
    assert problem["topic"] in TOPICS
    assert ID_FORMAT.match(problem["id"]) and problem["id"].startswith(problem["lang"] + "-")
    assert problem["tags"] and all(isinstance(t, str) and 0 < len(t) <= 30 for t in problem["tags"])
    assert problem["text"] == problem["text"].strip() and problem["text"]
    assert (
        problem["reference_answer"] == problem["reference_answer"].strip()
        and problem["reference_answer"]
    )
    assert not HTML_TAG.search(problem["text"])


@pytest.mark.parametrize("problem", BANK, ids=[p["id"] for p in BANK])
def test_text_is_written_in_its_language(problem: dict) -> None:
    has_cjk = bool(CJK.search(problem["text"]))
    assert has_cjk == (problem["lang"] == "zh")


@pytest.mark.parametrize(
    "problem",
    [p for p in BANK if p["topic"] != "coding"],
    ids=[p["id"] for p in BANK if p["topic"] != "coding"],
)
def test_reference_answer_is_short_and_fractions_are_reduced(problem: dict) -> None:
    answer = problem["reference_answer"]
    assert "\n" not in answer and len(answer) <= 20
    if m := FRACTION.match(answer):
        numerator, denominator = int(m[1]), int(m[2])
        assert denominator > 1 and math.gcd(numerator, denominator) == 1


def test_both_languages_are_well_represented() -> None:
    counts = Counter(p["lang"] for p in BANK)
    assert set(counts) == {"zh", "en"}
    for lang in ("zh", "en"):
        assert counts[lang] / len(BANK) >= 0.40, counts


@pytest.mark.parametrize("topic", sorted(TOPICS))
def test_every_topic_has_at_least_fifteen_problems(topic: str) -> None:
    assert sum(p["topic"] == topic for p in BANK) >= 15


def test_only_listed_topics_are_used() -> None:
    assert {p["topic"] for p in BANK} == TOPICS


@pytest.mark.parametrize(("text", "topic", "answer"), REQUIRED)
def test_the_site_example_questions_are_in_the_bank(text: str, topic: str, answer: str) -> None:
    matches = [p for p in BANK if p["text"] == text]
    assert len(matches) == 1
    assert matches[0]["topic"] == topic
    assert matches[0]["lang"] == "zh"
    assert matches[0]["reference_answer"] == answer


def test_about_a_third_of_problems_have_a_worked_solution() -> None:
    with_solution = sum(p["solution"] is not None for p in BANK)
    assert with_solution / len(BANK) >= 0.25


@pytest.mark.parametrize(
    "problem",
    [p for p in BANK if p["solution"] is not None],
    ids=[p["id"] for p in BANK if p["solution"] is not None],
)
def test_each_solution_ends_with_the_boxed_reference_answer(problem: dict) -> None:
    solution = problem["solution"]
    assert last_boxed(solution) == problem["reference_answer"]
    assert solution.rstrip().endswith("}")
    assert bool(CJK.search(solution)) == (problem["lang"] == "zh")
