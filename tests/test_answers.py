"""solver.answers: splitting model output, extracting the final answer, comparing answers.

Tables of messy model outputs (Chinese and English, R1-style bare </think>, truncated runs) and of answer
pairs that must or must not count as the same. No model is needed: these are pure string functions.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from solver.answers import (
    ParsedAnswer,
    answers_equivalent,
    asks_for_all,
    extract_final_answer,
    looks_cut_off,
    majority_answer,
    normalize_answer,
    parse_output,
    split_reasoning,
)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------
# split_reasoning


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>\nlet me think\n</think>\n\n答案是 5", ("let me think", "答案是 5", True)),
        (
            "bare reasoning, the prompt opened the tag\n</think>\nSo 5.",
            ("bare reasoning, the prompt opened the tag", "So 5.", True),
        ),
        ("no tags at all, \\boxed{3}", ("", "no tags at all, \\boxed{3}", True)),
        ("<think>still thinking about \\boxed{4}", ("still thinking about \\boxed{4}", "", False)),
        ("", ("", "", True)),
        ("<THINK>upper</THINK>case", ("upper", "case", True)),
        ("<think>a</think>b</think>c", ("a", "bc", True)),
        ("</think>", ("", "", True)),
    ],
)
def test_split_reasoning(text, expected):
    assert split_reasoning(text) == expected


# ---------------------------------------------------------------------------------------------------
# parse_output

CHICKENS = (
    "<think>\n设鸡有x只，兔有y只。x+y=35，2x+4y=94，解得y=12，x=23。\n</think>\n\n"
    "鸡有23只，兔有12只。\n\n\\boxed{鸡23只，兔12只}"
)


@pytest.mark.parametrize(
    "text, kwargs, final, truncated",
    [
        pytest.param(CHICKENS, {}, "鸡23只，兔12只", False, id="zh-think-tags-boxed"),
        pytest.param(
            "First, 48/2 = 24 clips in May.\nTotal 48+24 = 72.\n</think>\n\n**Final Answer**\n\\boxed{72}",
            {"implicit_think": True},
            "72",
            False,
            id="en-bare-close-tag",
        ),
        pytest.param(
            "<think>try 4: no. try \\boxed{5}? yes</think>The answer is \\boxed{3} — wait, \\boxed{5}.",
            {},
            "5",
            False,
            id="several-boxes-last-wins",
        ),
        pytest.param(
            "So the probability is \\boxed{\\frac{2}{3}}.",
            {},
            "\\frac{2}{3}",
            False,
            id="nested-braces",
        ),
        pytest.param(
            "<think>算一下……</think>所以答案是 23 只。", {}, "23 只", False, id="zh-no-box-phrase"
        ),
        pytest.param(
            "<think>compute</think>Therefore, the answer is 42. Hope that helps!",
            {},
            "42",
            False,
            id="en-no-box-phrase",
        ),
        pytest.param("Natalia sold 24 clips in May.\n#### 72", {}, "72", False, id="gsm8k-hashes"),
        pytest.param(
            "Let me think. 2+3 is 5, so maybe \\boxed{5} but let me double-check the",
            {"finish_reason": "length", "implicit_think": True},
            None,
            True,
            id="truncated-inside-implicit-reasoning",
        ),
        pytest.param(
            "<think>鸡兔同笼，先假设全是鸡……\\boxed{23}再验证",
            {"finish_reason": "length"},
            None,
            True,
            id="truncated-inside-explicit-reasoning",
        ),
        pytest.param(
            "<think>we have \\boxed{9} so far",
            {"finish_reason": "cancelled"},
            None,
            True,
            id="cancelled-inside-reasoning",
        ),
        pytest.param(
            "Reasoning that ended by itself without closing \\boxed{7}",
            {"implicit_think": True},
            None,
            False,
            id="stopped-inside-reasoning-no-answer",
        ),
        pytest.param(
            "<think>so 12</think>The answer is \\boxed{12}. Let me also explain why this",
            {"finish_reason": "length"},
            "12",
            False,
            id="length-after-think-with-box-counts",
        ),
        pytest.param(
            "<think>2+2</think>The answer is 4 and the reason is th",
            {"finish_reason": "length"},
            None,
            False,
            id="length-after-think-phrase-not-trusted",
        ),
        pytest.param(
            "<think>so it is \\boxed{8}</think>Yes, eight.",
            {},
            "8",
            False,
            id="reasoning-box-fallback",
        ),
        pytest.param("", {}, None, False, id="empty"),
        pytest.param(
            "",
            {"finish_reason": "length", "implicit_think": True},
            None,
            True,
            id="empty-truncated",
        ),
        pytest.param("}{}{ \\boxed{ ¿¿ <<>> ", {}, None, False, id="garbage-unclosed-box"),
        pytest.param(
            "I will put the final answer within \\boxed{}. It is \\boxed {7}",
            {},
            "7",
            False,
            id="echoed-instruction-empty-box",
        ),
        pytest.param(
            "我们来验证答案是否正确。答：鸡有23只。", {}, "鸡有23只", False, id="zh-da-colon"
        ),
        pytest.param("The answer to this question is unclear.", {}, None, False, id="no-answer"),
    ],
)
def test_parse_output(text, kwargs, final, truncated):
    parsed = parse_output(text, **kwargs)
    assert isinstance(parsed, ParsedAnswer)
    assert (parsed.final, parsed.truncated) == (final, truncated)


def test_parse_output_keeps_reasoning_and_answer_apart():
    parsed = parse_output(CHICKENS)
    assert parsed.reasoning.startswith("设鸡有x只")
    assert "</think>" not in parsed.reasoning and "<think>" not in parsed.answer
    assert parsed.answer.startswith("鸡有23只")


def test_implicit_think_text_without_close_is_all_reasoning():
    parsed = parse_output("The answer is \\boxed{5}", implicit_think=True, finish_reason="length")
    assert parsed == ParsedAnswer("The answer is \\boxed{5}", "", None, True)


# ---------------------------------------------------------------------------------------------------
# extract_final_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("\\boxed{23}", "23"),
        ("The answer is within \\boxed{}.", None),  # the instruction echoed, not an answer
        ("So the answer is in the specified format.", None),
        ("first \\boxed{1}, then \\boxed{2}", "2"),
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),
        ("\\boxed {42}", "42"),
        ("\\fbox{12}", "12"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{$23$}.", "23"),
        ("\\boxed{\\boxed{5}}", "5"),
        ("答案是23。", "23"),
        ("答案：鸡有23只，兔有12只。", "鸡有23只，兔有12只"),
        ("最终答案为 $\\frac{1}{2}$。", "\\frac{1}{2}"),
        ("So the answer is 3.5 apples. Next question.", "3.5 apples"),
        ("Final answer: 17", "17"),
        ("**Final Answer:** $x = 2$", "x = 2"),
        ("#### 1,000", "1,000"),
        ("the answer is 4.\nLater: the answer is 5.", "5"),
        ("答案是否正确还要验证", None),
        ("no answer here", None),
        ("", None),
        ("\\boxed{}", None),
        ("\\boxed{12", None),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


# Outputs that never box their answer (Sky-T1 writes <|begin_of_thought|> ... <|end_of_solution|>, or
# plain prose): the closing sentence states the answer, unless the text is a question, an aside, a
# second thought, a list that goes on, code, or Chinese.
SKY_SOLVED = (
    "<|begin_of_thought|>\n\nSo 6 = 6, fine. \\boxed{6}\n\n<|end_of_thought|>\n\n"
    "<|begin_of_solution|>\n\nThe product is \\(\\boxed{12}\\).\n\n<|end_of_solution|>"
)


@pytest.mark.parametrize(
    "text, kwargs, final",
    [
        pytest.param(SKY_SOLVED, {}, "12", id="sky-solution-box"),
        pytest.param(
            "<|begin_of_thought|>\n\nSo far \\boxed{5}, but let me check",
            {"finish_reason": "length"},
            None,
            id="sky-thought-never-closed",
        ),
        pytest.param(
            "<|begin_of_thought|>\nso 2\n<|end_of_thought|>\n<|begin_of_solution|>\n"
            "In conclusion, we have confirmed that:\n\n$$\\tan A = 2$$\n\n<|end_of_solution|>",
            {},
            "2",
            id="sky-solution-display-math-no-box",
        ),
        pytest.param(
            "That's 9 divisors.\n\nTherefore, the number of positive divisors of 196 is 9.",
            {},
            "9",
            id="closing-sentence",
        ),
        pytest.param(
            "12 + 11 = 23.\n\nSo, the result is 23.\n\nI think that's the answer.",
            {},
            "23",
            id="closing-sentence-then-pointer-back",
        ),
        pytest.param("I think I'm good. The height is 5 cm.", {}, "5", id="number-with-unit"),
        pytest.param(
            "So, I'm confident that \\(y = -4\\) is the correct solution.",
            {},
            "-4",
            id="value-in-inline-math",
        ),
        pytest.param(
            "The remainder when $(n + 2)(n + 4)$ is divided by 7, given that $n \\equiv 2 \\pmod{7}$, "
            "is 3.\n\nThis problem demonstrates modular arithmetic.",
            {},
            "3",
            id="last-value-wins-over-earlier-math",
        ),
        pytest.param("The midpoint is (-1,6).", {}, "(-1,6)", id="bare-tuple"),
        pytest.param("The area decreases by 10%.", {}, "10%", id="percent"),
        pytest.param(
            "Thus, the equation of the plane is:\n\\[\n5x - 7y + 11z + 4 = 0\n\\]",
            {},
            "5x - 7y + 11z + 4 = 0",
            id="equation-is-the-answer",
        ),
        pytest.param(
            "Combine like terms: $$19x - 4x + 1 - 81 = 15x - 80.$$",
            {},
            "15x - 80",
            id="simplification-chain",
        ),
        pytest.param(
            "Adding up, 2 + 27 + 13 = 42. The final result is 42.", {}, "42", id="final-result-is"
        ),
        pytest.param(
            "Therefore, the answer is indeed 28.\n\nSo, the final answer is 28 different pizzas.",
            {},
            "28 different pizzas",
            id="final-answer-with-noun",
        ),
        pytest.param(
            "The answer is definitely \\(8000\\).", {}, "8000", id="adverb-before-the-answer"
        ),
        pytest.param(
            "x = 5 satisfies both. So, our answer is correct.", {}, "5", id="verdict-is-no-answer"
        ),
        pytest.param("Wait, maybe it is 12.", {}, None, id="second-thought"),
        pytest.param("Maybe 12. Is it 12?", {}, None, id="question"),
        pytest.param(
            "Next, we compute the partial derivatives:\n\n1.", {}, None, id="list-goes-on"
        ),
        pytest.param("```python\nprint(6 * 7)\n```", {}, None, id="ends-in-code"),
        pytest.param("所以鸡有23只，兔有12只。", {}, None, id="chinese-prose-is-not-read"),
        pytest.param("Profit: $93 - $15 = $78.\n\nAlternatively", {}, None, id="cut-off-prose"),
        pytest.param(
            "I need the remainder mod 7. The answer should be an integer r with 0 ≤ r < 7.\n\n"
            "Adding the digits gives 40, and 40 = 5 × 7 + 5.\n\nTherefore, the value of r is 5.",
            {},
            "5",
            id="restated-kind-of-answer-is-not-the-answer",
        ),
        pytest.param(
            "<|begin_of_thought|>\n\nTry k = 3: 9 + 8 = 17. Nothing larger works.\n\n"
            "Therefore, the largest value is 17.\n\n<|end_of_thought|>\n\n"
            "<|begin_of_solution|>\n\nTo find the largest",
            {"finish_reason": "length"},
            "17",
            id="closed-thought-cut-solution",
        ),
        pytest.param(
            "<|begin_of_thought|>\n\nTry k = 3: 9 + 8 = 17.\n\nWait, maybe k = 4 gives more.\n\n"
            "<|end_of_thought|>\n\n<|begin_of_solution|>\n\nTo find the largest",
            {"finish_reason": "length"},
            None,
            id="closed-thought-ending-in-a-second-thought",
        ),
    ],
)
def test_parse_output_reads_unboxed_and_sky_t1_outputs(text, kwargs, final):
    assert parse_output(text, **kwargs).final == final


# A "Final Answer" heading heads the answer (boxed or not); a box under it at the very end of reasoning
# the limit cut while its closing tag was being written is the answer, any other box in unfinished
# reasoning is still a draft.
@pytest.mark.parametrize(
    "text, kwargs, final, truncated",
    [
        pytest.param(
            "The sum is 3 + 4.\n\n**Final Answer**\n\n7", {}, "7", False, id="bold-heading"
        ),
        pytest.param(
            "So y = 11.\n\n### Final Answer\n\\[\n y = 11\n\\]", {}, "11", False, id="md-heading"
        ),
        pytest.param("Final answer:\n\\text{north}", {}, "\\text{north}", False, id="text-answer"),
        pytest.param(
            "**Final Answer**\n\nThe box has 12 marbles.", {}, "12", False, id="sentence-with-value"
        ),
        pytest.param(
            "**Final Answer**\n\nI put it in the box as asked above.",
            {},
            None,
            False,
            id="sentence-without-value",
        ),
        pytest.param(
            "<|begin_of_thought|>\n9 - 2 = 7.\n\n**Final Answer**\n\n\\[ \\boxed{7} \\]\n<|end_of",
            {"finish_reason": "length"},
            "7",
            False,
            id="cut-inside-closing-tag",
        ),
        pytest.param(
            "<think>\nSo 14.\n\n**Final Answer**\n\\boxed{14}\n</th",
            {"finish_reason": "length"},
            "14",
            False,
            id="cut-inside-think-tag",
        ),
        pytest.param(
            "<|begin_of_thought|>\n**Final Answer**\n\\boxed{7}\n\nWait, let me check 9 - 2",
            {"finish_reason": "length"},
            None,
            True,
            id="thought-goes-on-after-the-box",
        ),
        pytest.param(
            "<|begin_of_thought|>\nSo far \\boxed{7}\n<|end_of",
            {"finish_reason": "length"},
            None,
            True,
            id="box-without-heading",
        ),
    ],
)
def test_final_answer_heading(text, kwargs, final, truncated):
    parsed = parse_output(text, **kwargs)
    assert (parsed.final, parsed.truncated) == (final, truncated)


# "Find all ...": a bare list of values may come in any order; otherwise a bare list keeps its order
# (chickens, then rabbits), and tuples and intervals always keep theirs.
@pytest.mark.parametrize(
    "question, expected",
    [
        ("Find all real numbers $x$ such that $x^2 = 4$.", True),
        ("Enter all the solutions, separated by commas.", True),
        ("What are all values of $k$ for which the roots are equal?", True),
        ("求方程的所有解。", True),
        ("How many chickens and how many rabbits are there?", False),
        ("Find the ordered pair $(x, y)$.", False),
        ("Is this true for all triangles? Find the area.", False),
        ("", False),
    ],
)
def test_asks_for_all(question, expected):
    assert asks_for_all(question) is expected


@pytest.mark.parametrize(
    "a, b, any_order, expected",
    [
        ("3, -5", "-5, 3", True, True),
        ("3, -5", "-5, 3", False, False),
        ("\\frac12, 2, -1", "-1, 0.5, 2", True, True),
        ("\\sqrt{2}, -\\sqrt{2}", "-\\sqrt2, \\sqrt2", True, True),
        ("3, -5", "-5, 3, 3", True, False),
        ("3, -5", "3, 5", True, False),
        ("(3, -5)", "(-5, 3)", True, False),
        ("[1, 4)", "[4, 1)", True, False),
        ("x=3, y=-5", "x=-5, y=3", True, False),
    ],
)
def test_a_bare_list_of_all_values_matches_in_any_order(a, b, any_order, expected):
    assert answers_equivalent(a, b, any_order=any_order) is expected
    assert answers_equivalent(b, a, any_order=any_order) is expected


@pytest.mark.parametrize(
    "text, cut",
    [
        ("The answer is 5.", False),
        ("\\boxed{5}", False),
        ("$$x = 2$$", False),
        ("```\n5\n```", False),
        ("the answer is 5<|end_of_solution|>", False),
        ("In this case, we need:", True),
        ("Alternatively", True),
        ("= 24 +", True),
        ("", False),
    ],
)
def test_looks_cut_off(text, cut):
    assert looks_cut_off(text) is cut


# ---------------------------------------------------------------------------------------------------
# normalize_answer


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("23只", "23"),
        ("二十三只", "23"),
        ("23 rabbits", "23"),
        ("\\text{5 km}", "5"),
        ("$1,000$", "1000"),
        ("１２元", "12"),
        ("50\\%", "50%"),
        ("x=23只, y=12只", "x=23,y=12"),
        ("鸡23只，兔12只", "鸡23,兔12"),
        ("\\dfrac{2}{3}", "\\frac{2}{3}"),
        ("  Friday ", "Friday"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


# ---------------------------------------------------------------------------------------------------
# answers_equivalent

SAME = [
    ("23", "23"),
    ("2 + 3 = 5", "5"),  # a worked sum: its result is the answer
    ("35×2 = 70", "70"),
    ("23", "23只"),
    ("23", "23 rabbits"),
    ("23", "twenty-three"),
    ("23", "二十三"),
    ("二十三只", "23 rabbits"),
    ("105", "one hundred and five"),
    ("105", "一百零五"),
    ("0.5", "1/2"),
    ("0.5", "\\frac{1}{2}"),
    ("0.5", "\\dfrac12"),
    ("0.5", "50%"),
    ("50\\%", "1/2"),
    # A reference writes a percentage without its sign ("What percent ...?" 10): the numbers as written.
    ("50%", "50"),
    ("百分之五十", "0.5"),
    ("2/3", "\\frac{2}{3}"),
    ("-\\frac{1}{2}", "-0.5"),
    ("1\\frac{1}{2}", "3/2"),
    ("1,000", "1000"),
    ("1.5万", "15000"),
    ("１２３", "123"),
    ("x=23, y=12", "23, 12"),
    ("x=23, y=12", "(23, 12)"),
    ("x=23, y=12", "鸡23只，兔12只"),
    ("x=23, y=12", "y=12, x=23"),
    ("(x, y) = (23, 12)", "x=23, y=12"),
    ("鸡有23只，兔有12只", "23只鸡和12只兔"),
    ("x=1 or x=2", "\\{2, 1\\}"),
    ("\\{1, 2\\}", "\\{2, 1\\}"),
    ("星期五", "周五"),
    ("Friday", "星期五"),
    ("friday", "Friday"),
    ("周日", "Sunday"),
    ("True", "成立"),
    ("False", "不成立"),
    ("A", "(A)"),
    ("\\text{23 cm}", "23厘米"),
    ("30^\\circ", "30°"),
    ("\\boxed{23}", "23"),
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}"),
    ("2\\sqrt{3}", "\\sqrt{12}"),
    ("x^2-1", "(x-1)(x+1)"),
    ("\\frac{\\pi}{2}", "\\pi/2"),
    ("23", "\\sqrt{529}"),
    ("(\\sqrt{2}, 1)", "\\left(\\frac{2}{\\sqrt{2}}, 1\\right)"),
    ("Alice", "alice"),
]

DIFFERENT = [
    ("23", "24"),
    ("2 + 3 = 5", "6"),
    ("x + 3 = 5", "5"),  # an equation to solve, not a result
    ("2/3", "0.67"),
    ("1/3", "0.333"),
    ("23, 12", "12, 23"),
    ("x=23, y=12", "x=12, y=23"),
    ("x=23, y=12", "23"),
    ("(\\sqrt{2}, 1)", "(1, \\sqrt{2})"),
    ("(1, 2)", "[1, 2]"),
    ("Friday", "星期四"),
    ("True", "False"),
    ("成立", "不成立"),
    ("True", "1"),
    ("A", "B"),
    ("A", "a"),
    ("23 cm", "23 km"),
    ("5分", "5分钟"),
    ("23以上", "23"),
    ("约23只", "24只"),
    ("不是23", "23"),
    ("more than 23", "23"),
    ("三五", "35"),
    ("一百五", "150"),
    ("one-third", "1"),
    ("1 1/2", "11/2"),
    ("2x", "2"),
    ("ab", "ba"),
    ("\\sqrt{2}", "2"),
    ("9^{9^{9}}", "1"),
    ("10^{10^{10}}", "10^{10^{10}}+1"),
    ("99999!", "1"),
    (None, None),
    (None, "23"),
    ("", ""),
    ("   ", "23"),
]


# Mechanisms found by reading every disagreement with a published grader on MATH-500 outputs
# (`python -m solver grade`): vectors and matrices, intervals, text answers, degrees, units, percent
# signs, thin-space thousands, worked sums with dots.
SAME += [
    (
        "\\begin{pmatrix}-1/3\\\\2/3\\\\5/3\\end{pmatrix}",
        "\\begin{pmatrix} -\\frac{1}{3} \\\\ \\frac{2}{3} \\\\ \\frac{5}{3} \\end{pmatrix}",
    ),
    ("\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}", "\\left(\\frac15, -\\frac{18}{5}\\right)"),
    (
        "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
        "\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}",
    ),
    (
        "\\begin{pmatrix} \\sqrt{2} \\\\ 0 \\end{pmatrix}",
        "\\begin{pmatrix} \\frac{2}{\\sqrt{2}} \\\\ 0 \\end{pmatrix}",
    ),
    ("x \\in [-2,7]", "[-2, 7]"),
    ("x \\in (-\\infty, 3)", "(-\\infty,3)"),
    ("(-\\infty, 3) \\cup (5, \\infty)", "(-\\infty,3)\\cup(5,\\infty)"),
    ("\\text{east}", "east"),
    ("\\text{East}", "east"),
    ("\\textbf{(B)}", "(B)"),
    ("\\text{(C)}", "C"),
    ("(C) Plane", "(C)"),
    ("120^\\circ", "120"),
    ("120^{\\circ}", "120 degrees"),
    ("10\\%", "10"),
    ("11,\\! 111,\\! 100", "11111100"),
    ("864 \\mbox{ inches}^2", "864"),
    ("12 square units", "12"),
    ("\\$32", "32"),
    ("2 + 27 + \\cdots + 13 = 42", "42"),
    ("2 \\times 3 = 3 + 3 = 6", "6"),
    ("\\frac{1}{2} + \\frac{1}{3} = \\frac{5}{6}", "5/6"),
    ("\\dfrac{3}{4}", "0.75"),
    ("3\\pi", "3 \\pi"),
    ("x=3", "3"),
]
DIFFERENT += [
    (
        "\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}",
        "\\begin{pmatrix} -18/5 \\\\ 1/5 \\end{pmatrix}",
    ),
    (
        "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
        "\\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}",
    ),
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "(1, 2, 3, 4)"),
    (
        "\\begin{vmatrix} 1 & 2 \\\\ 3 & 4 \\end{vmatrix}",
        "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
    ),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\\\ 0 \\end{pmatrix}"),
    ("x \\in [-2,7]", "(-2, 7)"),
    ("(-\\infty, 3]", "(-\\infty, 3)"),
    ("\\text{east}", "\\text{west}"),
    ("(C) Plane", "(D)"),
    ("120^\\circ", "121"),
    ("10\\%", "0.1\\%"),
    ("2 + 27 + \\cdots + 13 = 42", "43"),
    ("5 inches", "5 feet"),
    ("\\pi", "3.14"),
    ("1, 2, 3", "123"),
]


# "±" names two values, in no order: each element with one ± is read as its + and its - value.
SAME += [
    ("2 \\pm \\sqrt{7}", "2+\\sqrt7, 2-\\sqrt7"),
    ("2 \\pm \\sqrt{7}", "2-\\sqrt{7}, 2+\\sqrt{7}"),
    ("\\pm 4", "4, -4"),
    ("x = \\pm 4", "-4, 4"),
    ("\\{3 \\pm \\sqrt{2}, 0\\}", "0, 3-\\sqrt2, 3+\\sqrt2"),
    ("-1 ± 2i", "-1+2i, -1-2i"),
]
DIFFERENT += [
    ("2 \\pm \\sqrt{7}", "2+\\sqrt{7}"),
    ("2 \\pm \\sqrt{7}", "2+\\sqrt7, 2-\\sqrt5"),
    ("\\pm 4", "4"),
    ("\\pm 4", "4, -4, 0"),
    ("(\\pm 1, 2)", "(1, 2)"),
]


# Equal amounts in units of one dimension are the same answer (solver.lexicon's factors, exact); a real
# change of value, another dimension, another currency, a temperature scale or an ambiguous 分 is not.
SAME += [
    ("1.5 h", "90 minutes"),
    ("0.5 hours", "30 minutes"),
    ("2小时", "120分钟"),
    ("5 km", "5000 m"),
    ("2 kilometres", "2000 meters"),
    ("3 feet", "36 inches"),
    ("2 kg", "2000 g"),
    ("1.5元", "15角"),
    ("12^{\\text{th}}\\text{ grade}", "12"),
    ("3rd place", "3"),
    ("2 dollars", "200 cents"),
    ("1 year", "12 months"),
    ("36 km/h", "10 m/s"),
    ("2 m^2", "20000 cm^2"),
    ("1 l", "1000 ml"),
    ("x=1.5 h, y=2 km", "x=90 min, y=2000 m"),
]
DIFFERENT += [
    ("30 minutes", "3 hours"),
    ("1.5 h", "15 minutes"),
    ("2 km", "2 kg"),
    ("2 km", "2000 kg"),
    ("5 km", "500 m"),
    ("1元", "100 cents"),  # another currency
    ("30°C", "86°F"),  # temperatures are not converted
    ("5分", "0.05元"),  # 分 alone may be minutes, cents or points
    ("1 day", "24"),
    ("500 per annum", "500 years"),
    ("12^{\\text{th}}\\text{ grade}", "11"),
    ("5 thousand", "5"),
]


@pytest.mark.parametrize("a, b", SAME)
def test_equivalent_answers_are_the_same_both_ways(a, b):
    assert answers_equivalent(a, b) is True
    assert answers_equivalent(b, a) is True


@pytest.mark.parametrize("a, b", DIFFERENT)
def test_different_answers_are_not_the_same_either_way(a, b):
    assert answers_equivalent(a, b) is False
    assert answers_equivalent(b, a) is False


@pytest.mark.parametrize(
    "junk",
    [
        "\\boxed{" * 300,
        "{" * 5000 + "}" * 4999,
        "1/0",
        "\\frac{1}{0}",
        "x" * 100_000,
        "2^{2^{2^{2^{2^{2}}}}}",
        "\\sum_{n=1}^{10^{9}} n",
        "((((((((((((1))))))))))))",
        "\x00\ufffd\U0001f600",
    ],
)
def test_pathological_answers_return_quickly_without_raising(junk):
    results = []

    def compare():
        results.append(answers_equivalent(junk, "\\frac{\\sqrt{3}}{2}"))
        results.append(answers_equivalent(junk, "1"))
        results.append(normalize_answer(junk))

    worker = threading.Thread(target=compare, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "comparison hung"
    assert results[:2] == [False, False]
    assert isinstance(results[2], str)


def test_latex_comparison_works_in_worker_threads():
    # math-verify's default timeout uses SIGALRM, which raises outside the main thread.
    pairs = [
        ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", True),
        ("\\sqrt{12}", "2\\sqrt{3}", True),
        ("x^2+2x+1", "(x+1)^2", True),
        ("\\frac{\\pi}{3}", "\\frac{\\pi}{4}", False),
        ("\\sqrt{2}", "\\sqrt{3}", False),
        ("e^{2}", "e^2", True),
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda p: answers_equivalent(p[0], p[1] + " "), pairs))
    assert results == [expected for _, _, expected in pairs]


# ---------------------------------------------------------------------------------------------------
# majority_answer


@pytest.mark.parametrize(
    "finals, expected",
    [
        (["23", "23只", "24", None], ("23", 0.5)),
        (["1/2", "0.5", "\\frac{1}{2}", "1/3"], ("1/2", 0.75)),
        (["5", "5", "6", "6"], ("5", 0.5)),
        (["6", "5", "5", "6", "6"], ("6", 0.6)),
        ([None, None, "7"], ("7", 1 / 3)),
        ([None, None], (None, 0.0)),
        ([], (None, 0.0)),
        (["twenty-three", "23", "23"], ("23", 1.0)),
        (["Friday", "星期五", "周四"], ("Friday", 2 / 3)),
    ],
)
def test_majority_answer(finals, expected):
    answer, agreement = majority_answer(finals)
    assert answer == expected[0]
    assert agreement == pytest.approx(expected[1])


# ---------------------------------------------------------------------------------------------------
# Import cost


def test_importing_answers_does_not_import_math_verify_or_sympy():
    code = (
        "import sys, solver.answers\n"
        "heavy = [m for m in ('math_verify', 'sympy', 'latex2sympy2_extended', 'django') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert solver.answers.answers_equivalent('1/2', '0.5')\n"
        "assert 'sympy' not in sys.modules  # plain numbers never need it\n"
        "assert solver.answers.answers_equivalent('\\\\sqrt{4}', '2')\n"
        "assert 'math_verify' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
