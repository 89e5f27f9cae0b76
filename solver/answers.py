"""Model output → reasoning, visible answer and final answer; and whether two final answers agree.

Owns three things:
- splitting a reasoning model's output at `</think>` or Sky-T1's `<|end_of_thought|>` (with or without
  the opening tag: the R1 distill's output may begin after a `<think>` the prompt already opened), and
  deciding when a run was truncated inside its reasoning — such a run has no answer, ever;
- extracting the final answer: the last `\\boxed{}` (nested braces), else what a "**Final Answer**"
  heading heads, else a phrase such as 答案是 / "the answer is" / "the final result is" / "####", else
  the value stated by the closing sentence of finished English prose ("Therefore, the height is 5 cm." —
  long reasoning models often never box); a run cut while writing its closing tag, right after a
  "Final Answer" box, has that answer;
- deciding whether two final answers mean the same (23 = 23只 = twenty-three = 二十三, 1/2 = 0.5 = 50%,
  1.5 h = 90 minutes, 5 km = 5000 m (numerals and units from `solver.lexicon`, shared with the cache),
  x=23, y=12 = (23, 12), 星期五 = Friday, vectors and matrices cell by cell, x \\in [1, 2] = [1, 2],
  1 ± √2 = "1+√2, 1-√2", a bare list in any order when the question asks for all values), and the
  majority answer of several samples.

Does not own: models, prompts, the engine, or what is stored. Strings in; strings, bools and one frozen
dataclass out.

Comparison is conservative: when it is unsure it says "different", because a wrong "same" would mark a
wrong answer verified. Plain numbers, tuples, matrices of them, units, weekdays and yes/no are decided
here exactly (with Fractions, never floats). Only latex expressions this module cannot read (\\sqrt,
\\pi, polynomials, sets, intervals with \\infty) go to math-verify, imported lazily; its SIGALRM
timeouts are switched off so it works in worker threads, and inputs that could make sympy run away (long
text, towers of powers, big factorials) never reach it.

Measured against the Qwen2.5-Math evaluation toolkit's verdicts with `python -m solver grade` (see
solver/cli/grade.py); where the two differ the toolkit is often the one that is wrong.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

from solver import lexicon
from solver.lexicon import (
    CN_BIG,
    CN_NUMERAL_CHARS,
    EN_SCALES,
    EN_SMALL,
    EN_TENS,
    parse_cn_numeral,
    parse_en_number,
)

__all__ = [
    "ParsedAnswer",
    "answers_equivalent",
    "asks_for_all",
    "extract_final_answer",
    "looks_cut_off",
    "majority_answer",
    "normalize_answer",
    "parse_output",
    "split_reasoning",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParsedAnswer:
    reasoning: str  # the chain of thought ("" if none)
    answer: str  # the text after the reasoning (the visible answer; "" if none)
    final: str | None  # the extracted final answer, or None when there is none
    # True when the run hit the token limit inside its reasoning (then final is None).
    truncated: bool


# ---------------------------------------------------------------------------------------------------
# Splitting reasoning from answer

# Sky-T1 (and other NovaSky/Bespoke models) write <|begin_of_thought|> ... <|end_of_thought|> and then
# <|begin_of_solution|> ... <|end_of_solution|>: the thought is the reasoning, the solution the answer.
_THINK_OPEN = re.compile(r"<think>|<\|begin_of_thought\|>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>|<\|end_of_thought\|>", re.IGNORECASE)
_THINK_ANY = re.compile(r"</?think>|<\|(?:begin|end)_of_(?:thought|solution)\|>", re.IGNORECASE)


def split_reasoning(text: str) -> tuple[str, str, bool]:
    """(reasoning, answer, closed). Handles '<think>...</think>answer', a bare '...</think>answer' (the R1
    distill's output may begin after an implicit <think>), or no tags at all (then reasoning='' and
    answer=text, closed=True). '<think>...' with no closing tag -> reasoning=rest, answer='', closed=False."""
    text = text or ""
    close = _THINK_CLOSE.search(text)
    opening = _THINK_OPEN.search(text)
    if close is None:
        if opening is None:
            return "", _THINK_ANY.sub("", text).strip(), True
        return _THINK_ANY.sub("", text[opening.end() :]).strip(), "", False
    # Split at the first </think>: the answer is everything after it, so a model that "closes" twice
    # still has its last \boxed in the answer part. Stray tags are removed from both halves.
    start = opening.end() if opening is not None and opening.start() < close.start() else 0
    reasoning = _THINK_ANY.sub("", text[start : close.start()])
    answer = _THINK_ANY.sub("", text[close.end() :])
    return reasoning.strip(), answer.strip(), True


def parse_output(
    text: str, *, finish_reason: str = "stop", implicit_think: bool = False
) -> ParsedAnswer:
    """finish_reason is 'stop' | 'length' | 'cancelled'. implicit_think=True means the prompt already
    opened <think>, so text without any </think> is all reasoning.

    A run whose reasoning never closed has no final answer: truncated when it did not stop by itself.
    After a closed reasoning (or with no tags at all) the answer part's last \\boxed wins; phrase
    fallbacks (答案是, "the answer is") count only when the run stopped by itself, since a cut-off phrase
    may be a cut-off number; the reasoning's last \\boxed is the last resort."""
    text = text or ""
    if implicit_think and not _THINK_CLOSE.search(text):
        reasoning, answer, closed = _THINK_ANY.sub("", text).strip(), "", False
    else:
        reasoning, answer, closed = split_reasoning(text)
    stopped = finish_reason == "stop"
    if finish_reason == "loop":
        # The loop guard ended it: whatever it wrote before repeating itself is not a checked answer.
        return ParsedAnswer(reasoning, answer, None, truncated=True)
    if not closed:
        # Boxes inside unfinished reasoning are drafts the model may still revise: never an answer,
        # except a "Final Answer" box the limit cut while the model was writing its closing tag.
        final = None if stopped else _final_answer_at_close(text)
        return ParsedAnswer(reasoning, answer, final, truncated=not stopped and final is None)
    final = extract_final_answer(answer) if stopped else _last_boxed(answer)
    if final is None and reasoning:
        # The model closed its reasoning itself, so the reasoning is finished prose: its last box,
        # else the value its closing sentence states ("Therefore, the minimum value is 64."), is the
        # answer even when the solution after it was cut short.
        final = _last_boxed(reasoning) or _closing_statement(reasoning)
    return ParsedAnswer(reasoning, answer, final, truncated=False)


# Sky-T1 and the R1 distills end their reasoning with "**Final Answer**", a box, then the closing tag.
# A run cut after the box, with only the start of that tag (or nothing) written, has finished its
# reasoning in all but the tag: the box under the heading is its answer.
_FINAL_HEADING_BOX = re.compile(
    r"final\s+answer(?:\s+is)?\W{0,12}(?:\$\$|\\\[|\\\(|\$)?\s*$", re.IGNORECASE
)
_CLOSING_TAGS = ("</think>", "<|end_of_thought|>")


def _final_answer_at_close(text: str) -> str | None:
    """The box under a "Final Answer" heading at the very end of unfinished reasoning, when nothing
    follows it but math delimiters and the beginning of a closing tag; else None."""
    boxes = list(_BOXED.finditer(text))
    if not boxes:
        return None
    last = boxes[-1]
    if last.end() >= len(text) or text[last.end()] != "{":
        return None
    content = _braced(text, last.end())
    if content is None:
        return None
    after = text[last.end() + len(content) + 2 :]
    tail = re.sub(r"^(?:\s|\\\]|\\\)|\$|\.)*", "", after).strip()
    if tail and not any(tag.startswith(tail) for tag in _CLOSING_TAGS):
        return None
    if not _FINAL_HEADING_BOX.search(text[max(0, last.start() - 40) : last.start()]):
        return None
    return _clean_final(content) or None


# ---------------------------------------------------------------------------------------------------
# Extracting the final answer

_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
_ANSWER_PHRASE = re.compile(
    r"最终答案\s*(?:是|为|应该是|应为)?\s*[:：]?"
    r"|答案\s*(?:是(?!否)|为|应该是|应为|[:：])"
    r"|(?<![\u4e00-\u9fff])答\s*[:：]"
    r"|\b(?:final\s+)?answer\s*(?:\*\*\s*)?(?:is|would\s+be|should\s+be|=|[:：])(?:\s*\*\*)?"
    r"|\bfinal\s+result\s*(?:is|would\s+be|should\s+be|=|[:：])"
    r"|####",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"。|！|？|\n|(?<!\\)\.(?=\s|$)")
_MAX_PHRASE_ANSWER = 100


def extract_final_answer(text: str) -> str | None:
    """The last \\boxed{...} (nested braces, also \\fbox{}, '\\boxed {'), else fallbacks: '答案是…',
    '答案：…', '最终答案…', 'the answer is …', 'Final answer: …', 'the final result is …', '#### …',
    else the value stated by the closing sentence ('Therefore, the height is 5 cm.'). Strip $, trailing
    punctuation, surrounding whitespace. None when there is none."""
    if not text:
        return None
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    heading = _under_final_heading(text)
    if heading is not None:
        return heading
    for match in reversed(list(_ANSWER_PHRASE.finditer(text))):
        rest = text[match.end() :].lstrip(" \t:：")
        end = _SENTENCE_END.search(rest)
        value = _clean_final(_ADVERB.sub("", rest[: end.start()] if end else rest))
        if (
            value
            and len(value) <= _MAX_PHRASE_ANSWER
            and not _ECHOED_INSTRUCTION.search(value)
            and not _VERDICT_WORD.match(value)
        ):
            return value
    return _closing_statement(text)


# "**Final Answer**" (or "### Final Answer", "Final answer:") on a line of its own, the answer below it.
_FINAL_HEADING_LINE = re.compile(
    r"^[#*_\s]*final\s+answer[*_:：\s]*\n\s*(?=\S)", re.IGNORECASE | re.MULTILINE
)


def _under_final_heading(text: str) -> str | None:
    """What the last "Final Answer" heading heads: the display math or the line below it, read for
    its value as a closing sentence is ("\\[ x = 3 \\]" -> 3; "east" stays "east")."""
    headings = list(_FINAL_HEADING_LINE.finditer(text))
    if not headings:
        return None
    rest = text[headings[-1].end() :]
    display = _DISPLAY_MATH.match(rest)
    block = display.group(0) if display else rest.split("\n", 1)[0]
    if len(block) > _MAX_CLOSING_SENTENCE or _ECHOED_INSTRUCTION.search(block):
        return None
    value = _stated_value(block)
    if value is None:
        # A word or two ("east", "\\text{Evelyn}") is the answer; a sentence without a value is not.
        value = _clean_final(block) if len(block.split()) <= 3 else None
    if not value or len(value) > _MAX_PHRASE_ANSWER or _VERDICT_WORD.match(value):
        return None
    return value


# "The answer is within \boxed{}." / "...in the specified format": the prompt's instruction echoed back.
# "The answer should be an integer n where 0 ≤ n < 9" / "a common fraction": the kind of answer the
# problem asks for, restated while reading it, not the answer.
_ECHOED_INSTRUCTION = re.compile(
    r"\\boxed|\\fbox|^(?:within|in|inside)\b|specified format|step by step"
    r"|^an?\s+(?!=)[A-Za-z]{2,}",
    re.IGNORECASE,
)
# "the answer is indeed 28", "the answer is definitely \\(8000\\)": the adverb is not part of it.
_ADVERB = re.compile(
    r"^\s*(?:(?:indeed|definitely|clearly|simply|just|exactly|actually|still|therefore|then|now)"
    r"\b,?\s*)+",
    re.IGNORECASE,
)
# "So, our answer is correct.": a verdict on an answer given earlier, not the answer itself.
_VERDICT_WORD = re.compile(
    r"(?:indeed\s+)?(?:correct|incorrect|right|wrong|valid|invalid|consistent|confirmed|verified|"
    r"reasonable|plausible|the same|as follows|as expected|below|above|clear|obvious)\b",
    re.IGNORECASE,
)


# ---------------------------------------------------------------------------------------------------
# The closing statement: the answer of a finished output that never boxes it

# Long reasoning models (Sky-T1 and its kind) often end in prose: "Therefore, the number of divisors of
# 196 is 9." then "I think that's the answer." The value of the last sentence that states one is the
# answer, read only under strict conditions: the text ends like finished prose, the sentence is not a
# question, an aside or a second thought, and it is English (a Chinese closing sentence often lists
# several quantities: 鸡23只，兔12只).
_DISPLAY_MATH = re.compile(r"\$\$.*?\$\$|\\\[.*?\\\]", re.DOTALL)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[^a-z\s])|\n+")
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]")
_NUMBER_TEXT = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?"
_BARE_NUMBER = re.compile(
    rf"(?<![\w.^_{{\\])(?:\(\s*{_NUMBER_TEXT}(?:\s*,\s*{_NUMBER_TEXT})+\s*\)"  # "(-1, 6)"
    rf"|{_NUMBER_TEXT}(?![\w^_])(?:\s*(?:\\?%|percent\b))?)"
)
_SECOND_THOUGHT = re.compile(
    r"^\W*(?:wait|but|however|alternatively|hmm|let\b|let's|maybe|perhaps|if|suppose|assume|"
    r"now|next|first|then|check|verify|consider|note|recall|try|is|are|does|do|can|what|how|why)\b",
    re.IGNORECASE,
)
_MAX_CLOSING_SENTENCE = 400
_MAX_SKIPPED_SENTENCES = 3


def looks_cut_off(text: str) -> bool:
    """Whether an output whose finish reason is unknown stops mid-sentence, as one cut at a token limit
    does: its last character closes nothing (no '.', '!', '?', bracket, '$', code fence), and it does
    not end with <|end_of_solution|>. A finished 'The answer is 5' without its period looks cut off too:
    then only its boxes count, which errs on the side of no answer.
    For stored outputs without a finish_reason: pass finish_reason='length' to parse_output when True."""
    if re.search(r"<\|end_of_solution\|>\s*$", text or ""):
        return False  # the model closed its solution itself
    tail = re.sub(r"(?:</think>|<\|end_of_thought\|>|\s)+$", "", text or "")
    if not tail:
        return False
    return not re.search(r"[.!?。！？)\]}$`*>\"']$", tail)


def _closing_statement(text: str) -> str | None:
    """The value stated by the last sentence of finished English prose that states one, or None."""
    if looks_cut_off(text) or re.search(r"`{3}\s*$", text):
        return None  # cut off, or the output ends in a code block: no closing sentence
    flat = _DISPLAY_MATH.sub(lambda m: " " + m.group(0).replace("\n", " ") + " ", text)
    sentences = [x.strip() for x in _SENTENCE_SPLIT.split(flat) if x and x.strip()]
    skipped = 0
    for sentence in reversed(sentences[-(_MAX_SKIPPED_SENTENCES + 1) :]):
        if not (re.search(r"\d", sentence) or _MATH_SPAN.search(sentence)):
            # "I think that's the answer.": it points back at the sentence before it.
            skipped += 1
            continue
        if (
            len(sentence) > _MAX_CLOSING_SENTENCE
            or re.fullmatch(r"\W*\d+[.)]\W*", sentence)  # "1." opens a list: the text goes on
            or re.search(r"[\u3000-\u9fff\uff00-\uffef]", sentence)
            or sentence.rstrip("*").endswith(("?", ":"))
            or _SECOND_THOUGHT.match(sentence)
        ):
            return None
        return _stated_value(sentence)
    return None


def _stated_value(sentence: str) -> str | None:
    """The last value of a sentence: its last math span or bare number, whichever comes later. From
    'a = b = 2' the right-hand side: the sentence states the value ('we have confirmed that tan A = 2')."""
    spans = [
        (m.end(), next(g for g in m.groups() if g is not None))
        for m in _MATH_SPAN.finditer(sentence)
    ]
    outside = _MATH_SPAN.sub(lambda m: " " * len(m.group(0)), sentence)
    numbers = [(m.end(), m.group(0)) for m in _BARE_NUMBER.finditer(outside)]
    candidates = sorted(spans + numbers)
    if not candidates:
        return None
    value = candidates[-1][1]
    has_equals, sides = _split_equals(value)
    if has_equals:
        # "\tan A = 2", "|m - n| = 3" or "x = 4" states a value; "5x - 7y + 11z + 4 = 0" (terms with
        # letters on the left, outside brackets, a number on the right) is an equation, and the
        # equation is the answer ...
        lhs = sides[0].lstrip(" +-")
        for _ in range(3):
            lhs = re.sub(r"\([^()]*\)|\{[^{}]*\}|\|[^|]*\|", "", lhs)
        is_equation = re.search(r"[A-Za-z]", lhs) and re.search(r"[+-]", lhs)
        # ... unless its right side has letters too: "19x - 4x + 1 - 81 = 15x - 80" simplifies.
        if not is_equation or re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", sides[-1])):
            value = sides[-1]
    value = _clean_final(value)
    return value or None


def _split_equals(s: str) -> tuple[bool, list[str]]:
    """(whether s has a top-level '=', the sides). '=' inside brackets or braces does not split."""
    sides, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "=" and depth == 0 and s[i - 1 : i] not in ("<", ">", "!", "\\"):
            sides.append(s[start:i])
            start = i + 1
    sides.append(s[start:])
    return len(sides) > 1, [x.strip() for x in sides]


def _last_boxed(text: str) -> str | None:
    """The content of the last complete, non-empty \\boxed{} / \\fbox{} in text."""
    found = None
    for match in _BOXED.finditer(text):
        i = match.end()
        if i < len(text) and text[i] == "{":
            content = _braced(text, i)
        else:
            # "\boxed 23": latex takes one token without braces.
            token = re.match(r"[^\s${}\\]+", text[i:]) if match.group(0)[-1].isspace() else None
            content = token.group(0) if token else None
        if content is not None:
            content = _clean_final(content)
            if content:  # "\boxed{}" is the instruction echoed, not an answer
                found = content
    return found


def _braced(text: str, i: int) -> str | None:
    """The text inside the brace group opening at text[i], or None when it never closes."""
    depth = 0
    j = i
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            j += 2  # "\{" and "\}" are literal braces (a set), not grouping
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
        j += 1
    return None


def _clean_final(value: str) -> str:
    value = re.sub(r"(?<!\\)\$", "", value)
    value = value.replace("**", "")
    value = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", value.strip())
    return value.strip().strip(":：").rstrip(" \t\n.,;:?。，；：！？、").strip()


# ---------------------------------------------------------------------------------------------------
# Reading an answer: cleaning latex and full-width forms, numbers, units, tuples

_PRE_NFKC = str.maketrans({"²": "^2", "³": "^3", "−": "-", "–": "-", "—": "-", "﹣": "-"})
_WRAPPERS = re.compile(
    r"\\(?:text|textrm|textbf|textit|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}"
)


def _prepare(s: str) -> str:
    """Full-width → ASCII, latex decoration removed; the meaning is unchanged."""
    s = unicodedata.normalize("NFKC", s.translate(_PRE_NFKC)).replace("⁄", "/")
    if "\\boxed" in s or "\\fbox" in s:
        s = _last_boxed(s) or s
    for _ in range(3):
        s, n = _WRAPPERS.subn(r" \1 ", s)
        if not n:
            break
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\(?:left|right|bigl|bigr|big|Big|bigg|Bigg|displaystyle)(?![A-Za-z])", "", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "°", s)
    # "12^{th} grade", "3rd place": an ordinal's suffix (after \text{} was unwrapped) is not part of it.
    s = re.sub(r"(?<=\d)\s*\^?\s*\{?\s*(?:st|nd|rd|th)\s*\}?(?![A-Za-z])", "", s)
    # "11,\! 111,\! 100" is latex for 11,111,100: a thin space after a thousands separator.
    s = re.sub(r"(?<=\d),\s*\\[!,]\s*(?=\d{3}(?!\d))", ",", s)
    # A space macro, but not the second half of a "\\" row break ("a \\ b" keeps its rows).
    s = re.sub(r"(?<!\\)\\[,;:! ]|\\q?quad(?![A-Za-z])|~", " ", s)
    s = s.replace("\\%", "%").replace("\\$", "").replace("$", "")
    s = re.sub(r"\\[()\[\]]", "", s)
    s = re.sub(r"^[A-Za-z]\s*\\in(?![A-Za-z])\s*", "", s)  # "x \in [-2, 7]" is the interval [-2, 7]
    s = re.sub(r"\s+", " ", s).replace("**", "")
    return s.strip().rstrip(" .,;:?。、").strip()


class _Quantity(NamedTuple):
    value: Fraction
    # A unit's canonical id in solver.lexicon ("cm", "day", "yuan"); None for counts and bare numbers.
    unit: str | None
    display: str  # the number as normalize_answer shows it
    # False when the unit's form is ambiguous alone (5分: minutes, cents or points): then the amount
    # equals only the same unit, never one converted
    converts: bool = True


class _Item(NamedTuple):
    name: str | None  # "x" in "x=23", "鸡" in "鸡23只"
    quantity: _Quantity


class _Numbers(NamedTuple):
    kind: str  # "bare", "()", "[]", "[)", "(]" or "{}" (a set)
    items: tuple[_Item, ...]


class _Token(NamedTuple):
    kind: str  # "bool", "day" or "choice"
    value: object


# Forms that are a unit but not which one: 分 after an answer's number may be minutes, cents or points.
_UNCONVERTED_FORMS = frozenset({"分"})
# Words after a number that are only a noun ("23 rabbits", "23只兔子") are ignored; these words change
# the number's meaning or hedge it, so an answer containing them is not read as a plain number.
_HEDGE_CJK = re.compile(
    r"万|亿|千|百|十|分之|平方|立方|次方|多|余|几|左右|以上|以下|以内|不|没|约|近|少|半|点|负|加|减|乘|除"
)
_HEDGE_WORDS = frozenset(
    "thousand thousands million millions billion billions hundred hundreds dozen dozens half halves "
    "quarter quarters percent squared cubed square cubic power root more less than over under about "
    "approximately around nearly almost least most plus minus divided by per not no or and pi times "
    "point third thirds fourth fourths fifth fifths sixth sixths seventh sevenths eighth eighths ninth "
    "ninths tenth tenths hundredth hundredths thousandth thousandths".split()
)
_CJK_NOUN = re.compile(r"[\u4e00-\u9fff]{1,6}")
_EN_NOUN = re.compile(r"[A-Za-z]{2,}\.?(?:[\s-]+[A-Za-z]{2,}\.?)*")

_EN_WORD = "|".join([*EN_SMALL, *EN_TENS, *EN_SCALES, "and", "a"])
_EN_NUMBER = re.compile(rf"(?:(?:{_EN_WORD})\b[\s-]*)+", re.IGNORECASE)
_CN_NUMBER = re.compile(f"[{CN_NUMERAL_CHARS}]+")

_NUMBER_CORE = re.compile(
    r"(?P<frac>(?P<whole>\d+)?\s*\\frac\s*(?:\{\s*(?P<fn>\d+(?:\.\d+)?)\s*\}|(?P<fn1>\d))"
    r"\s*(?:\{\s*(?P<fd>\d+(?:\.\d+)?)\s*\}|(?P<fd1>\d)))"
    r"|(?P<slash>(?P<sn>\d+(?:\.\d+)?)\s*/\s*(?P<sd>\d+(?:\.\d+)?))(?![\d.])"
    r"|(?P<dec>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?![\d,])"
)
# 1.5万, 2 million: a scale after digits multiplies them ("hundred" does not: "5 hundred" is prose)
_MULTIPLIERS = {**CN_BIG, **{w: v for w, v in EN_SCALES.items() if w != "hundred"}}
_MULTIPLIER = re.compile(
    r"\s*(" + "|".join(w if w in CN_BIG else rf"{w}\b" for w in _MULTIPLIERS) + ")", re.IGNORECASE
)
_PERCENT = re.compile(r"\s*(?:%|percent\b|per\s*cent\b)", re.IGNORECASE)


def _digits_number(s: str, m: re.Match[str]) -> tuple[Fraction, str, int]:
    if m.group("frac"):
        num = Fraction(m.group("fn") or m.group("fn1"))
        den = Fraction(m.group("fd") or m.group("fd1"))
        value = num / den + int(m.group("whole") or 0)  # 2\frac{1}{3} is a mixed number, 7/3
    elif m.group("slash"):
        value = Fraction(m.group("sn")) / Fraction(m.group("sd"))
    else:
        value = Fraction(m.group("dec").replace(",", ""))
    display = re.sub(r"[\s,]", "", m.group(0))
    end = m.end()
    mult = _MULTIPLIER.match(s, end)
    if mult and m.group("dec"):
        value *= _MULTIPLIERS[mult.group(1).casefold()]
        display = str(value) if value.denominator == 1 else display + mult.group(1)
        end = mult.end()
    return value, display, end


def _number_at(s: str) -> tuple[Fraction, str, int] | None:
    """(value, display, end) of the number at the start of s: digits, fractions, words, numerals."""
    m = _NUMBER_CORE.match(s)
    if m:
        try:
            return _digits_number(s, m)
        except ZeroDivisionError:
            return None
    m = _CN_NUMBER.match(s)
    if m:
        n = parse_cn_numeral(m.group(0), strict=True)
        return None if n is None else (Fraction(n), str(n), m.end())
    m = _EN_NUMBER.match(s)
    if m:
        text = re.sub(r"(?:[\s-]+(?:and|a))+[\s-]*$", "", m.group(0).rstrip(" -"), flags=re.I)
        n = parse_en_number(text, strict=True)
        return None if n is None else (Fraction(n), str(n), len(text))
    return None


def _parse_quantity(s: str) -> _Quantity | None:
    """A number with an optional unit or counted noun: '23', '-1/2', '50%', '23只', '5 km', '二十三只'."""
    s = s.strip()
    unit = None
    if s[:1] in ("¥", "￥"):
        unit, s = "yuan", s[1:].lstrip()
    sign = 1
    if s[:1] in "+-":
        sign, s = (-1 if s[0] == "-" else 1), s[1:].lstrip()
    elif s[:1] == "负":
        sign, s = -1, s[1:]
    percent = False
    if s.startswith("百分之"):
        percent, s = True, s[3:]
    number = _number_at(s)
    if number is None:
        return None
    value, display, end = number
    pct = _PERCENT.match(s, end)
    if pct and not percent:
        percent, end = True, pct.end()
    rest = s[end:].strip()
    converts = True
    if rest:
        found = _unit_of(rest)
        if found is not None:
            if unit is not None and unit != found:
                return None
            unit, converts = found, rest not in _UNCONVERTED_FORMS
        elif _CJK_NOUN.fullmatch(rest):
            if _HEDGE_CJK.search(rest):
                return None
        elif _EN_NOUN.fullmatch(rest):
            if any(w.strip(".") in _HEDGE_WORDS for w in re.split(r"[\s-]+", rest.casefold())):
                return None
        else:
            return None
    if percent:
        value, display = value / 100, display + "%"
    if sign < 0:
        value, display = -value, "-" + display
    return _Quantity(value, unit, display, converts)


def _unit_of(rest: str) -> str | None:
    """The unit an answer's number is followed by: any form of the lexicon but the period of a rate
    ("500 per annum" is not 500 years) and the percent sign (read above as a share)."""
    found = lexicon.unit_of(rest)
    if found is None or found == "%":
        return None
    key = rest.casefold().strip()
    return None if key in _RATE_FORMS else found


_RATE_FORMS = frozenset(f.casefold() for u in lexicon.UNITS for f in u.rate_forms)


_NAME = re.compile(
    r"([A-Za-z][A-Za-z]*(?:_\{?[A-Za-z0-9]+\}?)?|\\[A-Za-z]+(?:_\{?[A-Za-z0-9]+\}?)?)\s*[=:]\s*"
)
_CJK_NAME_HEDGE = re.compile(
    r"不|没|无|非|超过|多于|少于|大于|小于|至少|至多|以上|以下|不到|将近|接近|差|余|多|少|加|减|乘|除|倍|分之|平方|立方"
)
_CJK_LINK = re.compile(r"\s*(?:共有|一共|共|有|是|为|=|:)?\s*")


def _parse_item(s: str) -> _Item | None:
    """One element of an answer: '23', 'x=23', '鸡23只', '鸡有23只', 'chickens: 23'."""
    s = s.strip()
    if not s:
        return None
    quantity = _parse_quantity(s)
    if quantity is not None:
        return _Item(None, quantity)
    m = _NAME.match(s)
    if m:
        quantity = _parse_quantity(s[m.end() :])
        return None if quantity is None else _Item(m.group(1), quantity)
    cjk = re.match(r"[\u4e00-\u9fff]{1,8}", s)
    if cjk:
        for k in range(1, len(cjk.group(0)) + 1):
            name = s[:k]
            link = _CJK_LINK.match(s, k)
            quantity = _parse_quantity(s[link.end() :])
            if quantity is not None:
                return None if _CJK_NAME_HEDGE.search(name) else _Item(name, quantity)
    return None


_OPEN = "([{"
_CLOSE = ")]}"
_SEPARATORS = re.compile(r",|;")
_WORD_SEPARATORS = re.compile(r",|;|、|和|与|及|或|\s+and\s+|\s+or\s+", re.IGNORECASE)


def _split_top(s: str, *, words: bool) -> tuple[str, list[str]]:
    """(kind, elements) of a list-like answer, split at top-level separators only."""
    kind, inner = "bare", s
    if s.startswith("\\{") and s.endswith("\\}"):
        kind, inner = "{}", s[2:-2]
    elif s[:1] + s[-1:] in ("()", "[]", "[)", "(]", "{}") and _closes_at_end(s):
        kind, inner = s[0] + s[-1], s[1:-1]
    pattern = _WORD_SEPARATORS if words else _SEPARATORS
    parts, depth, start, i = [], 0, 0, 0
    while i < len(inner):
        ch = inner[i]
        if ch == "\\" and i + 1 < len(inner) and inner[i + 1] in "{}":
            depth += 1 if inner[i + 1] == "{" else -1
            i += 2
            continue
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
        elif depth == 0:
            m = pattern.match(inner, i)
            if m and m.end() > i:
                parts.append(inner[start:i])
                start = i = m.end()
                continue
        i += 1
    parts.append(inner[start:])
    return kind, [p.strip() for p in parts]


def _closes_at_end(s: str) -> bool:
    """Whether the bracket opening s closes at its last character (so s is one bracketed group)."""
    depth = 0
    for i, ch in enumerate(s):
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            if depth == 0:
                return i == len(s) - 1
    return False


_DAYS = {
    **dict.fromkeys(("monday", "mon"), 1),
    **dict.fromkeys(("tuesday", "tue", "tues"), 2),
    **dict.fromkeys(("wednesday", "wed"), 3),
    **dict.fromkeys(("thursday", "thu", "thur", "thurs"), 4),
    **dict.fromkeys(("friday", "fri"), 5),
    **dict.fromkeys(("saturday", "sat"), 6),
    **dict.fromkeys(("sunday", "sun"), 7),
}
for _prefix in ("星期", "周", "礼拜"):
    for _i, _ch in enumerate("一二三四五六", start=1):
        _DAYS[_prefix + _ch] = _DAYS[_prefix + str(_i)] = _i
    _DAYS[_prefix + "日"] = _DAYS[_prefix + "天"] = 7

_BOOLS = {
    **dict.fromkeys(
        ("true", "yes", "correct", "成立", "正确", "对", "是", "能", "可以", "√", "✓"), True
    ),
    **dict.fromkeys(
        (
            "false",
            "no",
            "incorrect",
            "wrong",
            "不成立",
            "不正确",
            "错误",
            "错",
            "否",
            "不是",
            "不能",
            "不可以",
            "×",
            "✗",
        ),
        False,
    ),
}
_TUPLE_NAMES = re.compile(r"\(\s*[A-Za-z](?:\s*,\s*[A-Za-z])+\s*\)\s*=\s*")
_CHOICE = re.compile(
    r"(?:(?i:选项?|option|choice)\s*)?\(?([A-E])\)?"
    r"|\(([A-E])\)\s+[A-Za-z][A-Za-z .'-]*"  # "(C) Plane": the letter with its option's text
)


def _structure(text: str) -> _Numbers | _Token | None:
    """What this module can read exactly; None when the answer needs math-verify (or is plain text)."""
    key = text.casefold().strip(" .!。")
    if key in _DAYS:
        return _Token("day", _DAYS[key])
    if key in _BOOLS:
        return _Token("bool", _BOOLS[key])
    choice = _CHOICE.fullmatch(text)
    if choice:
        return _Token("choice", choice.group(1) or choice.group(2))
    if len(text) > _MAX_ANSWER_CHARS:
        return None
    names = _TUPLE_NAMES.match(text)
    if names:
        text = text[names.end() :]  # "(x, y) = (23, 12)" is the tuple (23, 12)
    item = _parse_item(text)
    if item is not None:
        return _Numbers("bare", (item,))
    kind, parts = _split_top(text, words=True)
    if len(parts) == 1 and kind == "()":
        kind = "bare"  # "(23)" is just 23
    items = [_parse_item(p) for p in parts]
    if any(i is None for i in items):
        return None
    return _Numbers(kind, tuple(items))


def _same_item(a: _Item, b: _Item) -> bool:
    qa, qb = a.quantity, b.quantity
    if qa.unit is not None and qb.unit is not None and qa.unit != qb.unit:
        # 1.5 h = 90 minutes, 5 km = 5000 m: equal amounts in units of one dimension
        return (
            qa.converts
            and qb.converts
            and lexicon.same_amount(qa.value, qa.unit, qb.value, qb.unit)
        )
    if qa.value == qb.value:
        return True
    # "10%" against a bare 10: references write a percentage without its sign ("What percent ...?
    # 10"), so a percent sign on one side only compares the numbers as written.
    pa, pb = qa.display.endswith("%"), qb.display.endswith("%")
    if pa != pb and qa.unit is None and qb.unit is None:
        return (qa.value * 100 if pa else qa.value) == (qb.value * 100 if pb else qb.value)
    return False


def _same_multiset(a: tuple[_Item, ...], b: tuple[_Item, ...]) -> bool:
    left = list(b)
    for item in a:
        match = next((j for j, other in enumerate(left) if _same_item(item, other)), None)
        if match is None:
            return False
        left.pop(match)
    return not left


def _same_structure(a: _Numbers | _Token, b: _Numbers | _Token, any_order: bool) -> bool:
    if isinstance(a, _Token) or isinstance(b, _Token):
        return a == b
    if len(a.items) != len(b.items):
        return False
    if "{}" in (a.kind, b.kind):
        return {a.kind, b.kind} <= {"{}", "bare"} and _same_multiset(a.items, b.items)
    unnamed = all(i.name is None for i in a.items + b.items)
    if any_order and a.kind == b.kind == "bare" and unnamed and len(a.items) > 1:
        return _same_multiset(a.items, b.items)  # "all the roots: 1, -2" is "-2, 1"
    if not (a.kind == b.kind or {a.kind, b.kind} == {"bare", "()"}):
        return False  # (1, 2) is not [1, 2]: tuples and intervals keep their brackets
    names_a = [i.name for i in a.items]
    names_b = [i.name for i in b.items]
    if None not in names_a and None not in names_b:
        if len(set(names_a)) == len(names_a) and set(names_a) == set(names_b):
            # x=23, y=12 is y=12, x=23: match by name.
            by_name = {i.name: i for i in b.items}
            return all(_same_item(i, by_name[i.name]) for i in a.items)
        if len(set(names_a) | set(names_b)) == 1 and len(a.items) > 1:
            return _same_multiset(a.items, b.items)  # x=2 或 x=3: the roots, in any order
    return all(_same_item(x, y) for x, y in zip(a.items, b.items, strict=True))


# ---------------------------------------------------------------------------------------------------
# math-verify, for latex this module cannot read itself

_SYMPY_MAX_CHARS = 200
_MAX_ANSWER_CHARS = 1000
_math_verify_lock = threading.Lock()
_math_verify_module = None


class _DropTimeoutWarning(logging.Filter):
    """math-verify warns once that its timeout is off; here that is deliberate (see _safe_for_sympy)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


def _load_math_verify():
    global _math_verify_module
    with _math_verify_lock:
        if _math_verify_module is None:
            import math_verify

            for name in ("math_verify.parser", "math_verify.grader"):
                logging.getLogger(name).addFilter(_DropTimeoutWarning())
            _math_verify_module = math_verify
    return _math_verify_module


def _exponents(s: str) -> list[str]:
    out = []
    for m in re.finditer(r"\^|\*\*", s):
        rest = s[m.end() :].lstrip()
        if rest.startswith("{"):
            out.append(_braced(rest, 0) or rest)
        else:
            token = re.match(r"\\[A-Za-z]+|\d+|.", rest)
            out.append(token.group(0) if token else "")
    return out


def _safe_for_sympy(s: str) -> bool:
    """Whether s is short, plain latex math that sympy will finish with quickly.

    math-verify runs here without its SIGALRM timeout (which only works in the main thread), so this
    guard is the timeout: no text words (sympy would read 'ab' as a*b), no towers of powers or big
    exponents (9^{9^9} never finishes), no big factorials or binomials, no sums, integrals or limits."""
    if not s or len(s) > _SYMPY_MAX_CHARS or not s.isascii() or ":" in s:
        return False
    if re.search(r"[A-Za-z]{2,}", re.sub(r"\\[A-Za-z]+", " ", s)):
        return False
    if re.search(r"\\(?:sum|prod|int|iint|iiint|oint|lim|begin|over|choose|mathbb)(?![A-Za-z])", s):
        return False
    if re.search(r"\d{31,}", s):
        return False
    depth = 0
    for ch in s:
        if ch in "({[":
            depth += 1
            if depth > 8:
                return False
        elif ch in ")}]":
            depth -= 1
    exponents = _exponents(s)
    if len(exponents) > 3:
        return False
    for exponent in exponents:
        if "^" in exponent or "!" in exponent or re.search(r"\d{4,}", exponent):
            return False
    if ("!" in s or "binom" in s) and (exponents or s.count("!") > 1 or re.search(r"\d{4,}", s)):
        return False
    return True


def _math_verify_equal(a: str, b: str) -> bool:
    if not (_safe_for_sympy(a) and _safe_for_sympy(b)):
        return False
    mv = _load_math_verify()
    config = [mv.LatexExtractionConfig()]
    try:
        gold = mv.parse(f"${a}$", config, fallback_mode="no_fallback", parsing_timeout=None)
        pred = mv.parse(f"${b}$", config, fallback_mode="no_fallback", parsing_timeout=None)
        if not gold or not pred:
            return False
        # verify() is not symmetric (assignments, intervals): both directions must agree.
        return bool(
            mv.verify(gold, pred, timeout_seconds=None)
            and mv.verify(pred, gold, timeout_seconds=None)
        )
    except Exception:
        logger.debug("math-verify failed on %r vs %r", a[:80], b[:80], exc_info=True)
        return False


# ---------------------------------------------------------------------------------------------------
# The public comparison functions


def _text_key(s: str) -> str:
    # Spaces go, except between two digits or letters ("1 1/2" is not "11/2").
    key = re.sub(r"(?<![A-Za-z0-9])\s+|\s+(?![A-Za-z0-9])", "", s)
    # Words compare without case ("Alice" = "alice"); single letters are math and keep it ("A" ≠ "a").
    if re.fullmatch(r"[A-Za-z][A-Za-z '-]*[A-Za-z]", s):
        key = key.casefold()
    return key


def _latex_form(structure: _Numbers | _Token | None, text: str) -> str | None:
    """The text math-verify should see for one side: a plain number's exact value, else the text."""
    if structure is None:
        return text
    if isinstance(structure, _Numbers) and len(structure.items) == 1 and structure.kind == "bare":
        value = structure.items[0].quantity.value
        return (
            str(value.numerator)
            if value.denominator == 1
            else f"{value.numerator}/{value.denominator}"
        )
    if isinstance(structure, _Numbers):
        return text
    return None


# "2 + 3 = 5", "35×2 = 70", "2 + 27 + \\cdots + 13 = 42" or "2 \\times 3 = 3 + 3 = 6": a worked sum
# whose result is the answer (no letters on the left, only numbers, operators and dots).
_ARITHMETIC_MACRO = re.compile(
    r"\\(?:[cl]?dots|cdot|times|div|[dt]?frac|left|right)(?![A-Za-z])|…|⋯|[{}]"
)
_ARITHMETIC = re.compile(r"[\d\s.,+\-*/×÷·()（）^]+")


def _result_of_sum(text: str) -> str:
    *worked, result = text.split("=")
    if not worked or not result.strip():
        return text
    for side in worked:
        plain = _ARITHMETIC_MACRO.sub(" ", side)
        if not _ARITHMETIC.fullmatch(plain) or not re.search(r"\d", plain):
            return text
    if not re.search(r"[+\-*/×÷·^]|\\(?:[cl]?dots|cdot|times|div|[dt]?frac)|…|⋯", worked[0]):
        return text  # "12 = 12" or "1, 2 = 3" is not a worked sum
    return result.strip()


_MATRIX = re.compile(
    r"\\begin\{(?P<env>[pbB]?matrix|[vV]matrix|array)\}(?:\{[^{}]*\})?(?P<body>.*)\\end\{(?P=env)\}",
    re.DOTALL,
)


class _Matrix(NamedTuple):
    kind: str  # "matrix" (pmatrix, bmatrix, matrix, array: brackets only) or "det" (vmatrix)
    rows: tuple[tuple[str, ...], ...]
    is_tuple: bool  # written as a tuple "(a, b, c)": a vector that may stand for a row or a column


def _matrix(text: str) -> _Matrix | None:
    """A latex matrix or vector, cell by cell: \\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}."""
    m = _MATRIX.fullmatch(text.strip())
    if m is None:
        return None
    body = m.group("body").strip()
    rows = [r for r in (_split_cells(row, "&") for row in _split_cells(body, "\\\\")) if any(r)]
    if not rows or len({len(r) for r in rows}) != 1 or not all(all(c for c in r) for r in rows):
        return None
    kind = "det" if m.group("env").lower() == "vmatrix" else "matrix"
    return _Matrix(kind, tuple(tuple(r) for r in rows), False)


def _split_cells(s: str, separator: str) -> list[str]:
    """s split at separator outside braces and brackets, each part stripped."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        if s.startswith(separator, i) and depth == 0:
            parts.append(s[start:i])
            i = start = i + len(separator)
            continue
        if s[i] == "\\":
            i += 2
            continue
        if s[i] in "{([":
            depth += 1
        elif s[i] in "})]":
            depth -= 1
        i += 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


def _as_vector(text: str) -> _Matrix | None:
    kind, parts = _split_top(text, words=False)
    if kind != "()" or len(parts) < 2 or not all(parts):
        return None
    return _Matrix("matrix", tuple((p,) for p in parts), True)


def _same_matrix(a: _Matrix, b: _Matrix) -> bool:
    """Same kind and shape, cell by cell; a tuple also matches a row or a column of its length."""
    if a.kind != b.kind:
        return False
    cells_a = [c for row in a.rows for c in row]
    cells_b = [c for row in b.rows for c in row]
    shape_a, shape_b = (len(a.rows), len(a.rows[0])), (len(b.rows), len(b.rows[0]))
    if shape_a != shape_b and not (
        (a.is_tuple or b.is_tuple)
        and len(cells_a) == len(cells_b)
        and 1 in shape_a
        and 1 in shape_b
    ):
        return False
    return all(_equivalent(*sorted((x, y))) for x, y in zip(cells_a, cells_b, strict=True))


@lru_cache(maxsize=4096)
def _equivalent(a: str, b: str, any_order: bool = False) -> bool:
    a, b = _result_of_sum(a), _result_of_sum(b)
    ta, tb = _prepare(a), _prepare(b)
    if not ta or not tb:
        return False
    if _text_key(ta) == _text_key(tb):
        return True
    ma, mb = _matrix(ta), _matrix(tb)
    if ma is not None or mb is not None:
        # Vectors and matrices compare cell by cell, so "-\\frac{1}{3}" meets "-1/3" as a number.
        ma, mb = ma or _as_vector(ta), mb or _as_vector(tb)
        return ma is not None and mb is not None and _same_matrix(ma, mb)
    pa, pb = _expand_pm(ta), _expand_pm(tb)
    if pa is not None or pb is not None:
        # "1 \\pm \\sqrt{19}" names two values, in no order: "1+\\sqrt{19}, 1-\\sqrt{19}".
        parts_a = pa if pa is not None else _list_parts(ta)
        parts_b = pb if pb is not None else _list_parts(tb)
        return (
            parts_a is not None
            and parts_b is not None
            and len(parts_a) == len(parts_b)
            and _same_parts_any_order(parts_a, parts_b)
        )
    sa, sb = _structure(ta), _structure(tb)
    if sa is not None and sb is not None:
        return _same_structure(sa, sb, any_order)
    la, lb = _latex_form(sa, ta), _latex_form(sb, tb)
    if la is None or lb is None:
        return False
    kind_a, parts_a = _split_top(la, words=False)
    kind_b, parts_b = _split_top(lb, words=False)
    if len(parts_a) > 1 or len(parts_b) > 1:
        if "{}" in (kind_a, kind_b):
            return kind_a == kind_b and _math_verify_equal(la, lb)
        if len(parts_a) != len(parts_b):
            return False
        if not (kind_a == kind_b or {kind_a, kind_b} == {"bare", "()"}):
            return False
        if any_order and kind_a == kind_b == "bare" and "=" not in la + lb:
            return _same_parts_any_order(parts_a, parts_b)
        # Element by element, so tuples stay ordered (math-verify may compare them as sets).
        return all(_equivalent(*sorted((x, y))) for x, y in zip(parts_a, parts_b, strict=True))
    return _math_verify_equal(la, lb)


_PLUS_MINUS = re.compile(r"\\pm(?![A-Za-z])|±")


def _list_parts(text: str) -> list[str] | None:
    """The elements of a bare list or a set ("a, b", "\\{a, b\\}"); None for tuples and intervals."""
    kind, parts = _split_top(text, words=False)
    return parts if kind in ("bare", "{}") and all(parts) else None


def _expand_pm(text: str) -> list[str] | None:
    """The values a list with "±" names, each ± read as two ("1 ± √5, -2" -> 1+√5, 1-√5, -2); None
    when there is no ± or it is not in a bare list or set, or an element has more than one."""
    if not _PLUS_MINUS.search(text):
        return None
    parts = _list_parts(text)
    if parts is None:
        return None
    values = []
    for part in parts:
        found = _PLUS_MINUS.findall(part)
        if len(found) > 1:
            return None
        if found:
            values += [_PLUS_MINUS.sub("+", part), _PLUS_MINUS.sub("-", part)]
        else:
            values.append(part)
    return [v.replace("(+", "(").strip().lstrip("+").strip() for v in values]


def _same_parts_any_order(a: list[str], b: list[str]) -> bool:
    left = list(b)
    for x in a:
        match = next((j for j, y in enumerate(left) if _equivalent(*sorted((x, y)))), None)
        if match is None:
            return False
        left.pop(match)
    return not left


# "Find all the integer roots ... separated by commas", "求所有的解": the answer is a set of values.
_ASKS_FOR_ALL = re.compile(
    r"\ball\b[^.?!]{0,60}?\b(?:solutions?|roots|values|integers|numbers|zeros|such)\b"
    r"|所有|全部",
    re.IGNORECASE,
)


def asks_for_all(question: str) -> bool:
    """Whether a question asks for all the values of something ("find all real x", "enter all the
    roots, separated by commas", 所有的解), so a bare list answer may come in any order: pass the
    result as answers_equivalent(..., any_order=...)."""
    return bool(_ASKS_FOR_ALL.search(question or ""))


def answers_equivalent(a: str | None, b: str | None, *, any_order: bool = False) -> bool:
    """True when two final answers mean the same: 23 = 23只 = '23 rabbits' = twenty-three = 二十三,
    0.5 = 1/2 = \\frac{1}{2} = \\dfrac12 = 50%, 1,000 = 1000, 'x=23, y=12' = '(23, 12)' = '鸡23只，兔12只'
    (tuples keep their order), 星期五 = 周五 = Friday, True = 成立; latex through math-verify.
    A bare list ("23, 12") keeps its order too (chickens, then rabbits) unless any_order is True (the
    question asks for all solutions: asks_for_all); bracketed tuples and intervals always keep theirs.
    Conservative: unsure means False; None and "" never equal anything. Never raises."""
    if a is None or b is None:
        return False
    try:
        a, b = str(a), str(b)
        if max(len(a), len(b)) > _MAX_ANSWER_CHARS:
            # Nothing this long is read as a number or sent to sympy; only identical text matches,
            # and it is not cached (the cache would hold the long strings).
            ta, tb = _prepare(a), _prepare(b)
            return bool(ta) and _text_key(ta) == _text_key(tb)
        return _equivalent(*sorted((a, b)), any_order)
    except Exception:
        logger.warning("answer comparison failed", exc_info=True)
        return False


_UNIT_SUFFIX = re.compile(
    r"(?<=[\d}%])\s*(?:"
    + "|".join(
        re.escape(u)
        for u in sorted(
            {
                f
                for u in lexicon.UNITS
                for f in u.amount_forms + u.answer_only
                if f not in ("度", "%", "$", "¥") and not f.startswith("°")
            }
            | set("只个人名位辆本支条张头匹件次棵朵颗瓶杯盒箱台道题套双对"),
            key=len,
            reverse=True,
        )
    )
    + r")(?![A-Za-z])",
    re.IGNORECASE,
)


def normalize_answer(ans: str) -> str:
    """Canonical short form for display/grouping: strip \\text{}, units/量词 (只, 个, 元, cm, km, days,
    ...), spaces, $; full-width -> ASCII. A plain number shows as digits ('二十三只' -> '23')."""
    try:
        text = _prepare(ans or "")
        item = _parse_item(text) if len(text) <= _MAX_ANSWER_CHARS else None
        if item is not None and item.name is None:
            return item.quantity.display
        return re.sub(r"\s+", "", _UNIT_SUFFIX.sub("", text))
    except Exception:
        logger.warning("answer normalization failed", exc_info=True)
        return (ans or "").strip()


def majority_answer(finals: list[str | None]) -> tuple[str | None, float]:
    """Group equivalent answers (answers_equivalent), return (representative of the largest group,
    agreement = size/len(finals)). None entries count in the denominator but never win. (None, 0.0)
    for no answers. Ties go to the group seen first; the representative is its most common spelling."""
    groups: list[list[str]] = []
    for final in finals:
        if final is None or not final.strip():
            continue
        for group in groups:
            if answers_equivalent(group[0], final):
                group.append(final)
                break
        else:
            groups.append([final])
    if not groups:
        return None, 0.0
    best = max(groups, key=len)  # max keeps the first of equal sizes
    representative = Counter(best).most_common(1)[0][0]
    return representative, len(best) / len(finals)
