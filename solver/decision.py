"""Is this banked problem the student's problem? Features of a (question, entry) pair and the learned rule.

This module owns the comparison of two problems once the vector search has proposed a candidate:
- `Reading`: what a problem says, read once: its quantities (value, unit, what they are said of), its
  expressions (`3^12`, `n^2-n`, kept with order and operators), its signature (asked quantity,
  conditions, terms, from `solver.normalize`), its words, which value of a share of a whole it asks
  for (`Shares`: "15% of 240" asks the part, "240 is 15% of what" the whole, "what % of 240" the
  share) and what each speaker's quoted claim says.
- `compare`: one bank entry against the question. First the *exact* rules, which never let a pair
  through: a given value that differs on both sides (a number was changed; the same amount in other
  units of one dimension is the same value: 0.5 h and 30 min, 2 km and 2000 m, never 2 km and 2 kg or
  元 and dollars, see `solver.lexicon`), an expression that differs, an answer asked in other units
  ("how many centimetres" vs "多少米"), another value of a share asked for, two quantities that
  swapped roles ("bought for 60, sold for 75" vs the reverse; members of one list, "4, 6 and 10",
  have no order), a word the problem operates on that differs (the letters of LEVEL / LEVER), the
  other extremum asked (the largest / the smallest), the two sides of a comparison swapped ("A is
  taller than B", "角C是角B的2倍"), and, without numbers, a yes-or-no answer against a value. Then
  the *features* of what remains
  (similarity, alignment, which parts of the signature differ, the wording edit check, claims and
  units said without a number that differ, words one side lacks, `converted_units`) for the learned
  rule; amounts aligned through a conversion (30 min and half an hour, 40% and 2/5) are compared in
  the entry's units, and align for a certain hit when the question asks the same thing in the same
  units (the rule weighs `converted_units`).
- `DecisionModel`: gradient-boosted trees over those features, fitted on labelled development data by
  `python -m solver calibrate`, with two thresholds chosen on that data: `hit_at` (a hit is served at
  once; chosen so that wrong hits stay under a stated bound) and `suggest_at` (shown as "Is this your
  question?"). The fitted weights live in `solver/decision_models/<embedder>.json`; plain JSON, no pickle.

It does not search vectors or hold the bank (`solver.cache`), and does not embed (`solver.embed`).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from solver.normalize import (
    Quantity,
    Signature,
    asked_units,
    content_tokens,
    format_number,
    implicit_quantities,
    language,
    lexicon_ids,
    quantities,
    signature_of_canonical,
    word_tokens,
)

MODELS_DIR = Path(__file__).parent / "decision_models"

FEATURES = (
    "sim_same_language",
    "sim_cross_language",
    "margin",
    "same_language",
    "numbers",
    "question_extra_numbers",
    "entry_extra_numbers",
    "extra_numbers_small",
    "units_differ",
    "target_differs",
    "target_overlap",
    "polarity_differs",
    "polarity_changes",
    "terms_differ",
    "terms_overlap",
    "wording_edit",
    "role_shift",
    "token_overlap",
    "sequence_ratio",
    "no_numbers",
    "entry_words_missing",
    "question_words_extra",
    "claims_differ",
    "implicit_differ",
    "converted_units",
)


class ModelFileError(Exception):
    """A decision model file is missing or damaged."""


# --------------------------------------------------------------------------------------------------
# Reading a problem
# --------------------------------------------------------------------------------------------------

_EXPRESSION_RE = re.compile(
    r"(?<![a-z])(?:[a-z]|\d+(?:\.\d+)?)(?:\s*[\^+\-*/×÷]\s*(?:[a-z]|\d+(?:\.\d+)?)(?![a-z]))+"
)
_OPERATOR_ALIASES = str.maketrans({"×": "*", "÷": "/"})
_CONTEXT_WINDOW = 3


@dataclass(frozen=True)
class Reading:
    """A problem as read once: canonical text, signature, words, quantities with their contexts."""

    canonical: str
    signature: Signature
    tokens: tuple[str, ...]
    language: str
    quantities: tuple[Quantity, ...]
    implicit: tuple[Quantity, ...]
    expressions: tuple[str, ...]
    contexts: tuple[tuple[Fraction, frozenset[str]], ...]
    asked: frozenset[str] = frozenset()  # every unit the question asks in, time and money included
    shares: Shares | None = None  # a share of a whole: which of share, whole and part is unknown
    claims: tuple[tuple[str, frozenset[str]], ...] = ()  # what each speaker's quoted words say
    data: tuple[str, ...] = ()  # the words the problem operates on: LEVEL, "banana", the letter e
    extremum: frozenset[str] = frozenset()  # "max" / "min": the largest, 最少, at most how many
    relations: frozenset[tuple[str, str, str]] = frozenset()  # (who, relation, than whom): A > B
    answer_kind: str | None = None  # "yes/no" (is it a leap year) or "value" (which year)


def read(canonical: str, text: str | None = None) -> Reading:
    """Read a canonical text (from `solver.normalize.normalize`); `text`, the text as typed, adds
    the words written in capitals (LEVER), which the canonical text has lower-cased."""
    return Reading(
        canonical,
        signature_of_canonical(canonical),
        content_tokens(canonical),
        language(canonical),
        quantities(canonical),
        implicit_quantities(canonical),
        _expressions(canonical),
        _contexts(canonical),
        asked_units(canonical),
        read_shares(canonical),
        read_claims(canonical),
        read_data(canonical, text),
        read_extremum(canonical),
        read_relations(canonical),
        read_answer_kind(canonical),
    )


# --------------------------------------------------------------------------------------------------
# The kind of answer: yes or no, or a value
# --------------------------------------------------------------------------------------------------
#
# "Write a function that checks whether a year is a leap year" and "... that returns the next leap
# year" share their words and have no number to tell them apart; one answers yes or no, the other
# a value. Read only where the text says it plainly; a text that says both, or neither, has no kind.

_YES_NO_RE = re.compile(
    r"\b(?:check|checks|checking|determine|determines|test|tests|decide|decides|tell|tells|verify|"
    r"verifies|whether)\b(?: or not)?(?:\s+\w+){0,2}?\s*\b(?:whether|if)\b|\bwhether\b"
    r"|\breturns? (?:true|false|a boolean|a bool)\b|\bis it (?:true|possible)\b"
    r"|是否|是不是|能否|可否"
)
_VALUE_RE = re.compile(
    r"\bhow (?:many|much|long|far|old|fast)\b|\bwhat\b|\bwhich\b|\bthe number of\b|\bfind\b"
    r"|\b(?:return|returns|returning|compute|computes|calculate|calculates|count|counts|print|prints|"
    r"output|outputs|list|lists|give|gives|generate|generates) (?:the|a|an|all|every|each|how)\b"
    r"|多少|几|什么|哪|求|计算|输出|返回(?!真|假|true|false)|列出"
)


def read_answer_kind(canonical: str) -> str | None:
    """The kind of answer, "yes/no" or "value", when the text says it plainly, else None."""
    yes_no, value = bool(_YES_NO_RE.search(canonical)), bool(_VALUE_RE.search(canonical))
    if yes_no == value:
        return None
    return "yes/no" if yes_no else "value"


# --------------------------------------------------------------------------------------------------
# Data words: the word, string or letter a problem operates on
# --------------------------------------------------------------------------------------------------
#
# "the letters of LEVEL" and "the letters of LEVER" differ as 12 and 13 do: the word is the given.
# Read from the canonical text: a word after "the letters of", "the word", "the string", a quoted
# word that is not a speaker's claim, a letter after "the letter", a Latin word beside 单词 / 字符串 in
# Chinese; and from the text as typed, a word in capitals that is not an acronym the lexicon knows
# (GCD and HCF are one thing) in text that is not shouted as a whole.

_DATA_RES = (
    re.compile(
        r"\b(?:letters|characters|chars) (?:of|in) (?:the (?:word|string|name) )?[\"']?([a-z]{2,})\b"
    ),
    re.compile(r"\bthe (?:word|string) [\"']?([a-z]{2,})\b"),
    re.compile(r"\bthe (?:letter|character|char) [\"']?([a-z])\b"),
    re.compile(r"(?:单词|字符串|字母|字符)\s*[\"']?([a-z]+)(?![a-z])"),
    re.compile(r"(?<![a-z])([a-z]{2,})[\"']?\s*(?:这个|这)?(?:单词|字符串)"),
    re.compile(r"(?<![a-z])[\"']([^\s\"']{1,30})[\"'](?![a-z])"),
)
_CAPITAL_WORD_RE = re.compile(r"(?<![A-Za-z])[A-Z]{2,}(?![A-Za-z])")


def read_data(canonical: str, text: str | None = None) -> tuple[str, ...]:
    """The words and letters the problem operates on, lower-cased, sorted (see above)."""
    claimed = [m.span() for m in _CLAIM_RE.finditer(canonical)]
    found: set[str] = set()
    for pattern in _DATA_RES:
        for m in pattern.finditer(canonical):
            if not any(a <= m.start() < b for a, b in claimed):
                found.add(m.group(1))
    if text:
        words = re.findall(r"[A-Za-z]{2,}", text)
        letters = sum(len(w) for w in words)
        shouted = letters >= 8 and sum(ch.isupper() for w in words for ch in w) / letters > 0.6
        if not shouted:
            for m in _CAPITAL_WORD_RE.finditer(text):
                word = m.group().lower()
                if not lexicon_ids(word) and not lexicon_ids(m.group()):
                    found.add(word)
    return tuple(sorted(found))


# --------------------------------------------------------------------------------------------------
# The asked extremum: the largest or the smallest
# --------------------------------------------------------------------------------------------------

_EXTREMUM_WORDS = (
    ("max", r"\b(?:the )?(?:largest|greatest|biggest|highest|maximum|max|longest|oldest|most)\b"
            r"|\bat most\b|最大|最多|至多|最高|最长|最远|最重|最贵"),
    ("min", r"\b(?:the )?(?:smallest|least|fewest|lowest|minimum|min|shortest|youngest)\b"
            r"|\bat least\b|最小|最少|至少|最低|最短|最近|最轻|最便宜"),
)  # fmt: skip
# not an asked extremum: gcd and lcm (terms of their own), an order ("from smallest to largest"), a
# condition on a given number ("at least 3", "至少有3个"), "most of", "at the latest"
_NOT_EXTREMUM_RE = re.compile(
    r"greatest common (?:divisor|factor)|highest common factor|(?:least|lowest) common multiple"
    r"|最大公(?:因数|约数)|最小公倍数|(?:smallest|lowest|largest|highest|least|greatest) to "
    r"(?:largest|highest|smallest|lowest|greatest|least)|从小到大|从大到小|由小到大|由大到小"
    r"|(?:\bat (?:most|least)|\bmost|\bleast|最多|最少|至多|至少|最大|最小)\s*(?:有|是|为|要)?\s*\d"
    r"|\bmost of\b"
)
# a condition inside the asking sentence: "... if he buys the cheapest wood", "如果选最便宜的"
_CONDITION_RE = re.compile(
    r"\b(?:if|when|whenever|assuming|given|provided|unless)\b[^,?]*|(?:如果|假如|假设|若|当)[^,?，？]*"
)
_ASKS_RE = re.compile(
    r"\b(?:how|what|which|who|find|calculate|compute|determine)\b|多少|几|什么|哪|谁|求|\?"
)


def read_extremum(canonical: str) -> frozenset[str]:
    """Which extremum ("max", "min") the asking sentence asks for (the last sentence that asks),
    leaving out its conditions ("if he buys the cheapest wood")."""
    sentences = [s for s in re.split(r"(?<=[.?!;。？！；])\s*", canonical) if s.strip()]
    asking = next((s for s in reversed(sentences) if _ASKS_RE.search(s)), "")
    asking = _CONDITION_RE.sub(" ", _NOT_EXTREMUM_RE.sub(" ", asking))
    return frozenset(kind for kind, pattern in _EXTREMUM_WORDS if re.search(pattern, asking))


# --------------------------------------------------------------------------------------------------
# Relations between named things: who is taller, which angle is twice which
# --------------------------------------------------------------------------------------------------
#
# "Amy is taller than Ben" and "Ben is taller than Amy" hold the same words and no number to align;
# "angle C is twice angle B" and "angle B is twice angle C" hold the same numbers. A relation is read
# as (left, relation, right) with its two sides named, and the same relation with the two sides
# swapped is another problem. "As tall as" is left out: it holds both ways.

_THING = r"(?:(?:the|a|an|angle|side|point|line|segment|∠)\s+)*([A-Za-z]\w*)"
_EN_RELATION_RES = (
    # A is 3 times B / A is 2 times as old as B / A is 3 times B's age
    re.compile(
        rf"{_THING}(?:'s \w+)? (?:is|are|was|were|has|had|weighs|runs|costs) (?:\d+(?:\.\d+)? )?"
        rf"(times) (?:as \w+ as |more than |that of )?{_THING}"
    ),
    # A is (3 years) older than B / A has 5 more apples than B / A runs faster than B
    re.compile(
        rf"{_THING}(?:'s \w+)? (?:is|are|was|were|has|had|have|weighs|runs|costs|gets|got|scored|earns)"
        rf"(?: \d+(?:\.\d+)?(?: \w+)?)? (\w+(?:er)|more|less|fewer)(?: \w+)? than {_THING}"
    ),
)
_ZH_NAME = r"(小[\u4e00-\u9fff]|[A-Z]|[\u4e00-\u9fff]{1,2}?)"
_ZH_RELATION_RES = (
    # 甲比乙多 / 小明比小红高3厘米 / 角C比角B大
    re.compile(rf"(?:角|边|点)?{_ZH_NAME}(?:的\w{{0,3}}?)?比(?:角|边|点)?{_ZH_NAME}(?:的\w{{0,3}}?)?"
               r"(多|少|大|小|高|矮|重|轻|快|慢|长|短|早|晚|贵|便宜)"),
    # 角C是角B的2倍
    re.compile(rf"(?:角|边|点)?{_ZH_NAME}(?:的\w{{0,3}}?)?是(?:角|边|点)?{_ZH_NAME}(?:的\w{{0,3}}?)?"
               r"的\d+(?:\.\d+)?(倍)"),
)  # fmt: skip
_NOT_A_SIDE = frozenset("the a an it he she they this that there which who what one".split())


def read_relations(canonical: str) -> frozenset[tuple[str, str, str]]:
    """(left, relation, right) of each comparison between two named sides."""
    found = set()
    for pattern in _EN_RELATION_RES:
        for m in pattern.finditer(canonical):
            left, relation, right = m.group(1), m.group(2), m.group(3)
            if left.lower() not in _NOT_A_SIDE and right.lower() not in _NOT_A_SIDE:
                found.add((left, relation, right))
    for pattern in _ZH_RELATION_RES:
        for m in pattern.finditer(canonical):
            found.add((m.group(1), m.group(3), m.group(2)))
    return frozenset(found)


def relations_swapped(question: Reading, entry: Reading) -> str | None:
    """A relation whose two sides one problem names the other way round, or None."""
    for left, relation, right in sorted(question.relations):
        swapped = (right, relation, left)
        if (
            left != right
            and swapped in entry.relations
            and swapped not in question.relations
            and (left, relation, right) not in entry.relations
        ):
            return f"{left} and {right}"
    return None


# --------------------------------------------------------------------------------------------------
# Quoted claims: what each speaker says, in either language
# --------------------------------------------------------------------------------------------------

_CLAIM_RE = re.compile(
    r"\b([A-H])\s*(?:says|said|claims|claimed|states|replies|answers)\s*[:,]?\s*[\"']([^\"']+)[\"']"
    r"|(?<![A-Za-z])([A-H])\s*(?:说|声称|回答|答)\s*[:,]?\s*\"([^\"]+)\""
)
# What a claim says, as lexicon ids that both languages share: who is what, and how many
_CLAIM_IDS = frozenset(
    {"knight", "knave", "truth", "lie", "thief", "not", "all", "exactly", "at_least", "at_most", "or",
     "same", "different"}
)  # fmt: skip


def read_claims(canonical: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """(speaker, what the quoted words say) for each "A says: '...'" of a puzzle, sorted.

    Only the kinds (knight, knave, truth, lie) and the quantifiers (not, all, exactly, at least)
    are kept: names inside a claim are said in too many ways ("A and I", "我们两个") to compare, while
    "exactly one of us is a knave" and "我们中恰好有1个骑士" must differ."""
    found = []
    for m in _CLAIM_RE.finditer(canonical):
        speaker, words = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        ids = lexicon_ids(words) & _CLAIM_IDS
        found.append((speaker, ids))
    return tuple(sorted(found, key=lambda item: (item[0], sorted(item[1]))))


# --------------------------------------------------------------------------------------------------
# Shares of a whole: which value is the unknown
# --------------------------------------------------------------------------------------------------
#
# "What is 15% of 240?", "240 is 15% of what number?" and "what % of 240 is 36?" hold the same kind of
# relation, part = share × whole, and ask a different one of its three values. The numbers alone
# cannot tell them apart (15 and 240 in the first two), so the reader notes, for each relation it
# finds, whether the whole is a given number or the unknown, and whether the share is asked.

_SHARE = r"\d+(?:\.\d+)?%|\d+(?:\.\d+)?/\d+(?:\.\d+)?"  # 15%, 3/4 (normalize writes both so)
_VALUE = r"\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?)?"
_EN_RELATION = r"of|(?:more|less|fewer|greater|higher|lower|larger|smaller) than"
# an unknown whole: "of what number", "of a certain amount", "of x"; "of the amount" is left out,
# because a story says so of an amount it gave before ("he spent 1/4 of the amount on food")
_EN_UNKNOWN = (
    r"(?:what|which|a|an|some|(?:a |some )?certain|an unknown)\s+"
    r"(?:number|amount|value|quantity|integer|sum)\b|(?:the|this|that) number\b|what\b(?! %)|x\b"
)
_ZH_UNKNOWN = r"(?:1个(?:整)?数|某(?:个)?数|这个数|哪个数|什么数|多少|[A-Z]数|x)"
_SHARE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        # 15% of what number / 15% more than a certain amount / 一个数的15% / 比某数多15%
        ("whole_unknown", rf"(?<![\d.])(?P<share>{_SHARE}) (?:{_EN_RELATION}) (?:{_EN_UNKNOWN})"),
        ("whole_unknown", rf"{_ZH_UNKNOWN}的(?P<share>{_SHARE})"),
        ("whole_unknown", rf"比{_ZH_UNKNOWN}(?:多|少)(?P<share>{_SHARE})"),
        # 15% of 240 / 3/4 more than the 24 / 240的15% / 240元的15% / 比240多15%
        (
            "whole_given",
            rf"(?<![\d.])(?P<share>{_SHARE}) (?:{_EN_RELATION}) (?:(?:the|a total of) )?"
            rf"(?P<whole>{_VALUE})(?![\d/])",
        ),
        (
            "whole_given",
            rf"(?<![\d.])(?P<whole>{_VALUE})(?!个整?数)[^\d,.?!;:的比是]{{0,4}}的(?P<share>{_SHARE})",
        ),
        ("whole_given", rf"比(?P<whole>{_VALUE})[^\d,.?!;:]{{0,4}}?(?:多|少)(?P<share>{_SHARE})"),
        # by what % has it changed / the percent change / 变化了百分之几: a change, not a share
        (
            "change_asked",
            r"\bby (?:what|how many) %|\b(?:what|the) (?:overall |total |net )?(?:%|percent(?:age)?) "
            r"(?:change|increase|decrease)|(?:变化|变|增加|减少|提高|降低|上涨|下降|增长|涨|降)了?"
            r"(?:百分之几|多少%|几成)",
        ),
        # what % of 240 is 36 / 36 is what % of 240 / 36是240的百分之几 / 15%是240的多少
        (
            "share_asked",
            rf"(?:(?<![\d.])(?P<part>{_VALUE}) (?:is|are|was|were) )?\b(?:what|which|how many) "
            rf"(?:%|fraction|part|portion)(?: of (?:the )?(?P<whole>{_VALUE})(?![\d/]))?",
        ),
        (
            "share_asked",
            rf"(?:(?<![\d.])(?P<part>{_VALUE}))?(?:是|占|相当于)(?:(?P<whole>{_VALUE})|[^,.?!;:]{{0,8}}?)"
            r"的(?:百分之几|几分之几|多少(?!倍)|百分比|几成)",
        ),
    )
)
_ASKED_TEXT = {
    "part": "a share of a given amount",
    "whole": "the whole that a given part is a share of",
    "share": "the share one amount is of another",
    "change": "the share by which an amount changed",
}


@dataclass(frozen=True)
class Shares:
    """The share-of-a-whole relations of a problem: which value is asked, and each value's role."""

    # "part" (15% of 240), "whole" (240 is 15% of what), "share" (what % of 240 is 36), "change"
    # (by what % did it change)
    asked: str
    roles: frozenset[tuple[Fraction, str]]  # (value, "share", "whole" or "part") of given values


def read_shares(canonical: str) -> Shares | None:
    """What the problem's share-of-a-whole relations leave unknown, or None when it has none.

    An unknown whole wins over the rest ("15% of a number is 240; what is 30% of it?" is solved
    through the whole); then an asked share; a relation with both share and whole given asks its part.
    """
    found: set[str] = set()
    roles: set[tuple[Fraction, str]] = set()
    for kind, pattern in _SHARE_PATTERNS:
        for m in pattern.finditer(canonical):
            found.add(kind)
            named = m.groupdict()
            if named.get("share"):
                roles.add((_value_of(named["share"]), "share"))
            if named.get("whole"):
                roles.add((_value_of(named["whole"]), "whole"))
            if named.get("part"):
                roles.add((_value_of(named["part"]), "part"))
    if "whole_unknown" in found:
        return Shares("whole", frozenset(roles))
    if "change_asked" in found:
        return Shares("change", frozenset(roles))
    if "share_asked" in found:
        return Shares("share", frozenset(roles))
    if "whole_given" in found:
        return Shares("part", frozenset(roles))
    return None


def _value_of(text: str) -> Fraction:
    numerator, _, denominator = text.rstrip("%").partition("/")
    return Fraction(numerator) / (Fraction(denominator) if denominator else 1)


def shares_differ(question: Reading, entry: Reading) -> str | None:
    """Why the two problems ask for different values of a share of a whole, or None."""
    q, e = question.shares, entry.shares
    if q is None or e is None:
        return None
    if q.asked != e.asked:
        return f"the banked problem asks for {_ASKED_TEXT[e.asked]}, you ask for {_ASKED_TEXT[q.asked]}"
    # a value with one role on each side, and another role on the other: "what % of 160 is 40" and
    # "160 is what % of 40" (160 the whole, then the part)
    q_roles, e_roles = _single_roles(q), _single_roles(e)
    for value, role in sorted(q_roles.items()):
        other = e_roles.get(value)
        if other is not None and other != role:
            return f"{format_number(value)} is the {role} in your problem and the {other} in the banked one"
    return None


def _single_roles(shares: Shares) -> dict[Fraction, str]:
    """The role of each value that has only one (a value used twice may have two)."""
    seen: dict[Fraction, set[str]] = {}
    for value, role in shares.roles:
        seen.setdefault(value, set()).add(role)
    return {
        value: next(iter(roles)) for value, roles in seen.items() if len(roles) == 1 and value != 1
    }


def _expressions(canonical: str) -> tuple[str, ...]:
    """Formulas with an operator between two terms ("3^12", "n^2+n", "3/4-5/6+2/3"), spaces
    removed, order and operators kept, sorted; and the powers said in words ("2的2025次方",
    "2025个2相乘", "the 2025th power of 2") written as "2^2025".

    A run of plain numbers counts only when it holds +, × or ÷, or subtracts fractions written with
    spaces ("3/4 - 5/6"): "5-3" or "2024-05-06" is as often a range or a date as a subtraction, and
    "1-1/2" is one and a half. A run next to an ellipsis is the start of a series ("1+2+3+…+100"),
    which a rewording may start with fewer terms: its numbers are compared as quantities. A sum or
    a product of plain terms is written in one order (3×4 and 4×3 are one expression)."""
    found = [_power_text(base, exponent) for base, exponent in _word_powers(canonical)]
    for m in _EXPRESSION_RE.finditer(canonical):
        raw = m.group()
        text = re.sub(r"\s+", "", raw).translate(_OPERATOR_ALIASES)
        if not ("^" in text or re.search(r"[a-z]", text)):
            if _SERIES_RE.match(canonical, m.end()) or _SERIES_BEFORE_RE.search(
                canonical, 0, m.start()
            ):
                continue
            if not (re.search(r"[+*×÷]", raw) or ("/" in raw and re.search(r"\s-\s", raw))):
                continue
        found.append(_commuted(text))
    return tuple(sorted(found))


# a power in words: 2的2025次方 / 2的2025次幂, 2025个2相乘 (2025 twos multiplied), the 2025th power of
# 2, "2 ^ the 2025th power" (normalize reads "raised to" as ^)
_OPERAND = r"\d+(?:\.\d+)?|[a-z]"
_WORD_POWER_RES = (
    (re.compile(rf"(?<![\d.])({_OPERAND})\s*的\s*({_OPERAND})\s*次(?:方|幂)"), 1, 2),
    (re.compile(rf"(?<![\d.])({_OPERAND})\s*个\s*({_OPERAND})\s*(?:相乘|连乘|乘在一起)"), 2, 1),
    (re.compile(rf"\bthe ({_OPERAND})(?:st|nd|rd|th)? power of ({_OPERAND})\b"), 2, 1),
    (re.compile(rf"(?<![\d.])({_OPERAND}) \^ the ({_OPERAND})(?:st|nd|rd|th)? power\b"), 1, 2),
)
_SERIES_RE = re.compile(r"\s*[+\-*×]?\s*(?:…|\.{3}|⋯)")
_SERIES_BEFORE_RE = re.compile(r"(?:…|\.{3}|⋯)\s*[+\-*×]?\s*$")


def _word_powers(canonical: str) -> list[tuple[str, str]]:
    """(base, exponent) of each power said in words."""
    return [
        (m.group(base), m.group(exponent))
        for pattern, base, exponent in _WORD_POWER_RES
        for m in pattern.finditer(canonical)
    ]


def _power_text(base: str, exponent: str) -> str:
    return f"{base}^{exponent}"


def _commuted(text: str) -> str:
    """A sum of terms or a product of factors, with no other operator, in one order."""
    for operator in "+*":
        others = re.sub(r"(?<=\d)/(?=\d)", "", text.replace(operator, ""))
        if operator in text and not re.search(r"[\^+\-*/]", others):
            return operator.join(sorted(text.split(operator)))
    return text


def _contexts(canonical: str) -> tuple[tuple[Fraction, frozenset[str]], ...]:
    """For each number token, the content words within a few words of it (what it is said of)."""
    tokens = word_tokens(canonical)
    out = []
    for i, tok in enumerate(tokens):
        if not tok[:1].isdigit():
            continue
        try:
            value = Fraction(tok.rstrip("%"))
        except (ValueError, ZeroDivisionError):
            continue
        if value == 1:
            continue
        around = set()
        for j in range(max(0, i - _CONTEXT_WINDOW), min(len(tokens), i + _CONTEXT_WINDOW + 1)):
            if j != i and not tokens[j][:1].isdigit():
                around.add(tokens[j])
        out.append((value, frozenset(set(content_tokens(" ".join(around))) or around)))
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# Aligning quantities
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    """Which given values of the question and the entry have no partner on the other side."""

    question_extra: tuple[Quantity, ...]
    entry_extra: tuple[Quantity, ...]
    # (question's, entry's) pairs that are equal only once converted: 0.5 h and 30 min, 2 km and
    # 2000 m, an "an hour" and 60 min
    converted: tuple[tuple[Quantity, Quantity], ...] = ()

    @property
    def is_exact(self) -> bool:
        """Every value paired with an equal amount, none through the unit of a rate: "per hour" is
        not a given hour ("每小时行60千米" and "60 minutes" do not make 60 km an hour's walk)."""
        return (
            not self.question_extra
            and not self.entry_extra
            and not any(q.is_rate or e.is_rate for q, e in self.converted)
        )

    @property
    def value_changed(self) -> bool:
        """Both sides have a value the other lacks: a given number was changed."""
        return bool(self.question_extra) and bool(self.entry_extra)


def align(question: Reading, entry: Reading) -> Alignment:
    """Pair the quantities one to one: the same value with the same unit first, then the same value
    where one side names no unit; the leftovers then pair by their amount in the base unit of one
    dimension (0.5 h and 30 min, 2 km and 2000 m, 1.5 元 and 15 角; never 2 km and 2 kg, never 元 and
    dollars), first with an explicit quantity of the other side, then with one of its implicit ones
    ("an hour", "1 km", "每小时"). The same value with two different units ("4 feet" and "4 days")
    does not pair: it is a given that changed. What is still left over is returned."""
    q_left = list(question.quantities)
    e_left = list(entry.quantities)
    for compatible in (
        lambda a, b: a.unit == b.unit and (a.word == b.word or None in (a.word, b.word)),
        lambda a, b: a.unit == b.unit,
        _unit_and_word_compatible,
    ):
        for quantity in list(q_left):
            partner = next(
                (e for e in e_left if e.value == quantity.value and compatible(quantity, e)), None
            )
            if partner is not None:
                q_left.remove(quantity)
                e_left.remove(partner)
    converted: list[tuple[Quantity, Quantity]] = []
    for quantity in list(q_left):  # explicit with explicit: 30 minutes and 0.5 hour, 40% and 2/5
        partner = next(
            (e for e in e_left if _same_amount(quantity, e) or _same_share(quantity, e)), None
        )
        if partner is not None:
            q_left.remove(quantity)
            e_left.remove(partner)
            converted.append((quantity, partner))
    # a leftover pairs with an implicit one of the other side: "in 60 minutes" and "in an hour"
    for mine, theirs, is_question in (
        (q_left, list(entry.implicit), True),
        (e_left, list(question.implicit), False),
    ):
        for quantity in list(mine):
            partner = next((t for t in theirs if _same_amount(quantity, t)), None)
            if partner is None:
                continue
            mine.remove(quantity)
            theirs.remove(partner)
            converted.append((quantity, partner) if is_question else (partner, quantity))
    return Alignment(tuple(q_left), tuple(e_left), tuple(converted))


def _same_amount(a: Quantity, b: Quantity) -> bool:
    amount = a.amount
    return amount is not None and amount == b.amount


def _same_share(a: Quantity, b: Quantity) -> bool:
    """A percentage and the same share written as a fraction or a decimal: 40% and 2/5, 25% and 0.25.
    Only a value that is not a whole number counts as a share ("50%" and "50 apples" never pair)."""
    if (a.unit == "%") == (b.unit == "%"):
        return False
    percent, plain = (a, b) if a.unit == "%" else (b, a)
    return (
        plain.unit is None and plain.value.denominator != 1 and percent.value / 100 == plain.value
    )


# Words after a number that do not say what it counts ("4 more days", "3 times", "2 of them").
_NOT_COUNTED_NOUNS = frozenset(
    "more less fewer times time of and or per each extra other additional full whole same total "
    "consecutive straight in to for at on by as than is are was were the more".split()
)


def _unit_and_word_compatible(a: Quantity, b: Quantity) -> bool:
    """One side names a unit, the other none: the same quantity ("4" and "4 days"), unless the other
    says it counts something else ("4 workers" and "4 days")."""
    if a.unit is not None and b.unit is not None:
        return False
    bare = a if a.unit is None else b
    return (
        bare.word is None or bare.word in _NOT_COUNTED_NOUNS or (a.unit is None and b.unit is None)
    )


def role_shift(question: Reading, entry: Reading) -> tuple[float, str | None]:
    """How strongly two shared values traded what they are said of, and the pair when it is certain.

    For values v and w found on both sides, v's words in the question overlap w's words in the entry
    (and not v's own), and the same the other way round: "pens cost 3, notebooks 7" vs "pens cost 7,
    notebooks 3". Returns (strength 0..1, "3 and 7" when both own overlaps are empty)."""
    if question.language != entry.language:
        return 0.0, None
    q_ctx = _context_by_value(question)
    e_ctx = _context_by_value(entry)
    values = sorted(set(q_ctx) & set(e_ctx))
    q_lists, e_lists = _lists(question.canonical), _lists(entry.canonical)
    best, certain = 0.0, None
    for i, v in enumerate(values):
        for w in values[i + 1 :]:
            if any({v, w} <= members for members in q_lists) and any(
                {v, w} <= members for members in e_lists
            ):
                continue  # "divisible by 4, 6 and 10" and "by 10, 6 and 4": a list has no order
            own = _overlap(q_ctx[v], e_ctx[v]) + _overlap(q_ctx[w], e_ctx[w])
            cross = _overlap(q_ctx[v], e_ctx[w]) + _overlap(q_ctx[w], e_ctx[v])
            if _overlap(q_ctx[v], e_ctx[w]) > _overlap(q_ctx[v], e_ctx[v]) and _overlap(
                q_ctx[w], e_ctx[v]
            ) > _overlap(q_ctx[w], e_ctx[w]):
                strength = cross / (cross + own) if cross + own else 0.0
                if strength > best:
                    best = strength
                if own == 0 and certain is None:
                    certain = f"{format_number(v)} and {format_number(w)}"
    return best, certain


# A list of numbers: "4, 6 and 10", "4、6和10", "3 cm, 4 cm or 5 cm" (each member with the same word
# or none). "respectively" / 分别 gives the members an order: such a list is left out.
_LIST_MEMBER = r"\d+(?:\.\d+)?%?(?:\s?[a-z]+|[\u4e00-\u9fff]{1,2}?)?"
_LIST_RE = re.compile(
    rf"(?<![\d.])({_LIST_MEMBER}(?:\s*[,、]\s*{_LIST_MEMBER})*,?\s*(?:\band\b|\bor\b|和|与|及|或|、)"
    rf"\s*{_LIST_MEMBER})(?![\d.])"
)
_ORDERED_LIST_RE = re.compile(r"^\s*,?\s*(?:respectively\b|分别)|分别(?:是|为)?\s*$")


def _lists(canonical: str) -> list[frozenset[Fraction]]:
    """The values of each unordered list of numbers in the text."""
    out = []
    for m in _LIST_RE.finditer(canonical):
        if _ORDERED_LIST_RE.search(canonical[m.end() : m.end() + 16]) or _ORDERED_LIST_RE.search(
            canonical[max(0, m.start() - 6) : m.start()]
        ):
            continue
        pieces = [
            re.fullmatch(r"(\d+(?:\.\d+)?)%?\s*(.*)", piece)
            for piece in re.split(r"\s*(?:,|、|\band\b|\bor\b|和|与|及|或)\s*", m.group(1))
            if piece
        ]
        # what each member counts; the last one's Chinese word may be the next verb (10整除)
        words = {p.group(2) for p in pieces[:-1] if p} | {
            p.group(2) for p in pieces[-1:] if p and re.fullmatch(r"[a-z]*", p.group(2))
        }
        if len(words) > 1 or not all(pieces):
            continue  # "4 apples and 6 pears": each number counts its own thing
        out.append(frozenset(Fraction(p.group(1)) for p in pieces if p))
    return out


def _context_by_value(reading: Reading) -> dict[Fraction, frozenset[str]]:
    """Words around each value that occurs once (a repeated value has no single role)."""
    counts = Counter(v for v, _ in reading.contexts)
    return {v: ctx for v, ctx in reading.contexts if counts[v] == 1}


def _overlap(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / max(1, min(len(a), len(b)))


# --------------------------------------------------------------------------------------------------
# Comparing a candidate
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one entry with the question: a rule that rejects it, or features."""

    # "numbers", "expression", "asked unit", "unknown", "roles" when an exact rule rejects the pair
    rule: str | None
    reason: str  # a sentence a student can read
    features: tuple[float, ...]
    # every given quantity aligned one to one: only then may the pair be a certain hit (otherwise it
    # can at most be suggested: a value was added or removed, as in "a needed value removed")
    aligned: bool = False


def _share_missing(words: tuple[str, ...], other: tuple[str, ...]) -> float:
    """The share of distinct `words` that `other` does not have."""
    mine = set(words)
    return len(mine - set(other)) / len(mine) if mine else 0.0


def _jaccard(a: tuple[str, ...] | set[str], b: tuple[str, ...] | set[str]) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def _values_text(items: tuple[Quantity, ...]) -> str:
    return ", ".join(
        format_number(q.value) + (f" {q.unit}" if q.unit and q.unit != "%" else q.unit or "")
        for q in items
    )


def compare(
    question: Reading,
    entry: Reading,
    *,
    similarity: float,
    margin: float,
    wording_edit: str | None,
) -> Comparison:
    """Compare a banked problem with the question (see the module docstring)."""
    alignment = align(question, entry)
    if alignment.value_changed:
        return Comparison(
            "numbers",
            f"the banked problem has {_values_text(alignment.entry_extra)} where you have "
            f"{_values_text(alignment.question_extra)}",
            (),
        )
    if question.expressions and entry.expressions and question.expressions != entry.expressions:
        return Comparison(
            "expression",
            f"the banked problem has {', '.join(entry.expressions)} where you have "
            f"{', '.join(question.expressions)}",
            (),
        )
    if question.asked and entry.asked and question.asked.isdisjoint(entry.asked):
        # the answer asked in other units ("how many centimetres are in 3.5 m" and "3.5米是多少毫米")
        # is another number; so is the answer of a problem written in other units throughout ("90
        # minutes ... how many minutes" and "1.5 hours ... how many hours"): the banked answer would
        # be wrong in the student's units
        return Comparison(
            "asked unit",
            f"the banked problem asks for the answer in {', '.join(sorted(entry.asked))}, "
            f"you ask in {', '.join(sorted(question.asked))}",
            (),
        )
    unknown = shares_differ(question, entry)
    if unknown:
        return Comparison("unknown", unknown, ())
    if question.data and entry.data and question.data != entry.data:
        # the word a problem operates on is one of its givens: the letters of LEVEL and of LEVER
        return Comparison(
            "data",
            f"the banked problem works on {', '.join(entry.data)}, yours on {', '.join(question.data)}",
            (),
        )
    if question.extremum and entry.extremum and question.extremum.isdisjoint(entry.extremum):
        return Comparison(
            "extremum",
            f"the banked problem asks for the {_EXTREMUM_TEXT[entry.extremum]}, "
            f"you ask for the {_EXTREMUM_TEXT[question.extremum]}",
            (),
        )
    if (
        not question.quantities
        and not entry.quantities
        and question.answer_kind
        and entry.answer_kind
        and question.answer_kind != entry.answer_kind
    ):
        # without a number to align, the kind of answer is the evidence that the asked thing is
        # another: a yes or no (is it a leap year) against a value (the next leap year)
        return Comparison(
            "asked",
            f"the banked problem asks for {_KIND_TEXT[entry.answer_kind]}, "
            f"you ask for {_KIND_TEXT[question.answer_kind]}",
            (),
        )
    swapped = relations_swapped(question, entry)
    if swapped:
        return Comparison(
            "roles", f"{swapped} swap places in a comparison between the two problems", ()
        )
    shift, certain = role_shift(question, entry)
    if certain:
        return Comparison(
            "roles", f"the numbers {certain} are used for different things in the two problems", ()
        )
    qs, es = question.signature, entry.signature
    same_language = question.language == entry.language
    extras = alignment.question_extra + alignment.entry_extra
    q_tokens, units_differ, edit = question.tokens, qs.units != es.units, wording_edit
    converted = bool(alignment.converted) and _conversions_hold(question, entry, alignment)
    claims_differ = bool(question.claims and entry.claims and question.claims != entry.claims)
    implicit_differ = _implicit_difference(question, entry, alignment)
    if converted:
        # compared in the entry's units: "30 minutes" is read as the entry's "0.5 hour", so that
        # neither the units nor the words differ where only the way of writing an amount does
        units_differ = False
        q_tokens = _tokens_in_entry_units(question, entry, alignment) or q_tokens
        if q_tokens == entry.tokens:
            edit = None
    features = {
        "sim_same_language": similarity if same_language else 0.0,
        "sim_cross_language": 0.0 if same_language else similarity,
        "margin": margin,
        "same_language": float(same_language),
        "numbers": math.log1p(len(question.quantities)),
        "question_extra_numbers": float(len(alignment.question_extra)),
        "entry_extra_numbers": float(len(alignment.entry_extra)),
        "extra_numbers_small": float(
            bool(extras) and all(abs(q.value) <= 10 and q.value.denominator == 1 for q in extras)
        ),
        "units_differ": float(units_differ),
        "target_differs": float(qs.target != es.target),
        "target_overlap": _jaccard(qs.target, es.target),
        "polarity_differs": float(qs.polarity != es.polarity),
        "polarity_changes": float(len(set(qs.polarity) ^ set(es.polarity))),
        "terms_differ": float(qs.hard_terms != es.hard_terms),
        "terms_overlap": _jaccard(qs.hard_terms, es.hard_terms),
        "wording_edit": float(edit is not None),
        "role_shift": shift,
        "token_overlap": _jaccard(q_tokens, entry.tokens) if same_language else 0.0,
        "sequence_ratio": (
            difflib.SequenceMatcher(None, q_tokens, entry.tokens, autojunk=False).ratio()
            if same_language
            else 0.0
        ),
        "no_numbers": float(not question.quantities),
        # which side says more: a clause removed from the entry (a needed fact gone) leaves many of
        # its words missing and adds few; a rewording moves both ways
        "entry_words_missing": _share_missing(entry.tokens, q_tokens) if same_language else 0.0,
        "question_words_extra": _share_missing(q_tokens, entry.tokens) if same_language else 0.0,
        "claims_differ": float(claims_differ),
        "implicit_differ": float(implicit_differ),
        # amounts that align only once converted (half an hour and 30 minutes): the learned rule
        # weighs them, since other people's labelled data sometimes calls such a pair a changed
        # number (GSM-Plus writes one problem in other units as a perturbation)
        "converted_units": float(converted),
    }
    # Amounts equal once converted align like equal numbers when the conversions leave the problem
    # the same (no rate, the same asked quantity and units): the rule may serve them as a hit.
    aligned = alignment.is_exact and (not alignment.converted or converted)
    return Comparison(
        None,
        _agreement_reason(question, entry, alignment, aligned),
        _vector(features),
        aligned=aligned,
    )


_KIND_TEXT = {"yes/no": "a yes or no", "value": "a value"}
_EXTREMUM_TEXT = {
    frozenset({"max"}): "largest value",
    frozenset({"min"}): "smallest value",
}


def _implicit_difference(question: Reading, entry: Reading, alignment: Alignment) -> int:
    """How many units said without a number ("another hour", "per day", "每小时") one side has and
    the other lacks, leaving out those that an alignment already paired ("an hour" = 60 min)."""
    used = {id(q) for pair in alignment.converted for q in pair}

    def said(reading: Reading) -> Counter[tuple[str | None, bool]]:
        return Counter((q.unit, q.is_rate) for q in reading.implicit if id(q) not in used)

    q_said, e_said = said(question), said(entry)
    return sum(((q_said - e_said) + (e_said - q_said)).values())


def _conversions_hold(question: Reading, entry: Reading, alignment: Alignment) -> bool:
    """Whether amounts paired only once converted leave the problem the same: no pair through the
    unit of a rate, the same asked quantity, the same units asked in (the answer of "几小时" is not
    in minutes), and no unit on either side that the conversions do not explain ("72 km/h" and
    "72000 m/s" pair 72 km with 72000 m, but hours are not seconds)."""
    if not alignment.is_exact:
        return False
    qs, es = question.signature, entry.signature
    if qs.target != es.target or question.asked != entry.asked:
        return False
    q_side = {q.unit for q, _ in alignment.converted} - {None}
    e_side = {e.unit for _, e in alignment.converted} - {None}
    return set(qs.units) | e_side == set(es.units) | q_side


def _tokens_in_entry_units(
    question: Reading, entry: Reading, alignment: Alignment
) -> tuple[str, ...] | None:
    """The question's words with each converted amount written as the entry writes it."""
    text = question.canonical
    spans = sorted(alignment.converted, key=lambda pair: pair[0].position, reverse=True)
    last = len(text) + 1
    for q, e in spans:
        if q.end < 0 or e.end < 0 or q.end > last:
            return None  # overlapping or unknown spans: keep the words as they are
        text = text[: q.position] + entry.canonical[e.position : e.end] + text[q.end :]
        last = q.position
    return content_tokens(text)


def with_margin(comparison: Comparison, margin: float) -> Comparison:
    """The comparison with its "margin" feature set: the similarity lead over the other candidates
    that the exact rules let through (known only once every candidate is compared)."""
    if not comparison.features:
        return comparison
    features = list(comparison.features)
    features[FEATURES.index("margin")] = float(margin)
    return replace(comparison, features=tuple(features))


def _vector(features: dict[str, float]) -> tuple[float, ...]:
    return tuple(float(features[name]) for name in FEATURES)


def _agreement_reason(
    question: Reading, entry: Reading, alignment: Alignment, aligned: bool
) -> str:
    """What the two problems share, in a sentence for a student."""
    parts = []
    if question.quantities and aligned:
        as_entry = {id(q): e for q, e in alignment.converted}
        given = {id(q) for q in question.quantities}
        shown = ", ".join(
            [
                f"{_values_text((q,))} = {_values_text((as_entry[id(q)],))}"
                if id(q) in as_entry
                else format_number(q.value)
                for q in question.quantities[:6]
            ]
            + [  # "an hour" said in words, the entry's "60 minutes"
                f"{_values_text((q,))} = {_values_text((e,))}"
                for q, e in alignment.converted
                if id(q) not in given
            ]
        )
        parts.append(f"the same {'amounts' if as_entry else 'numbers'} ({shown})")
    if question.signature.target and question.signature.target == entry.signature.target:
        parts.append("the same question asked")
    if question.language != entry.language:
        parts.append("the same problem in the other language")
    if not parts:
        return "it says the same thing in other words"
    return "it has " + " and ".join(parts)


# --------------------------------------------------------------------------------------------------
# The learned rule
# --------------------------------------------------------------------------------------------------


Node = tuple[
    int, float, int, int, float
]  # (feature or -1 for a leaf, threshold, left, right, value)


@dataclass(frozen=True)
class DecisionModel:
    """Gradient-boosted decision trees over the features, with the two calibrated thresholds.

    Trees, not a linear rule: the features interact (a high similarity means little between two
    edits of one text, much across two languages), and a linear fit gave similarity a negative
    weight. The trees are stored as plain node lists and walked here, so the site needs no
    scikit-learn and loads no pickle."""

    embedder: str
    baseline: float
    trees: tuple[tuple[Node, ...], ...]
    hit_at: float
    suggest_at: float
    notes: dict[str, Any]

    def probability(self, features: tuple[float, ...]) -> float:
        """The model's probability that the pair is the same problem."""
        z = self.baseline
        for nodes in self.trees:
            i = 0
            while True:
                feature, threshold, left, right, value = nodes[i]
                if feature < 0:
                    z += value
                    break
                i = left if features[feature] <= threshold else right
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": 2,
            "embedder": self.embedder,
            "features": list(FEATURES),
            "baseline": self.baseline,
            "trees": [[list(node) for node in nodes] for nodes in self.trees],
            "hit_at": self.hit_at,
            "suggest_at": self.suggest_at,
            "notes": self.notes,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> DecisionModel:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"Cannot read the decision model {path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != 2:
            raise ModelFileError(f"{path} is not a decision model this version can read.")
        fitted_on = data.get("features")
        if (
            not isinstance(fitted_on, list)
            or not fitted_on
            or any(name not in FEATURES for name in fitted_on)
        ):
            # a model that needs a feature this version no longer computes cannot be walked
            raise ModelFileError(
                f"{path} was fitted on other features; refit it with `python -m solver calibrate`."
            )
        # The trees number features as the model's list does; walk them by this version's numbers.
        # A feature added since the fit is simply not used by these trees until the next refit.
        position = [FEATURES.index(name) for name in fitted_on]
        try:
            trees = tuple(
                tuple(
                    (
                        position[int(f)] if int(f) >= 0 else int(f),
                        float(t),
                        int(left),
                        int(right),
                        float(v),
                    )
                    for f, t, left, right, v in nodes
                )
                for nodes in data["trees"]
            )
            model = cls(
                embedder=str(data["embedder"]),
                baseline=float(data["baseline"]),
                trees=trees,
                hit_at=float(data["hit_at"]),
                suggest_at=float(data["suggest_at"]),
                notes=dict(data.get("notes") or {}),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelFileError(f"{path} is damaged: {exc}") from exc
        for nodes in trees:
            for feature, _, left, right, _ in nodes:
                if feature >= len(FEATURES) or (
                    feature >= 0 and not (0 < left < len(nodes) and 0 < right < len(nodes))
                ):
                    raise ModelFileError(f"{path} is damaged: a tree points outside itself.")
        if not 0.0 < model.suggest_at <= model.hit_at < 1.0:
            raise ModelFileError(f"{path}: thresholds must satisfy 0 < suggest_at <= hit_at < 1.")
        return model


def model_path(embedder_name: str) -> Path:
    return MODELS_DIR / f"{embedder_name.split(':')[0]}.json"


def load_model_for(embedder_name: str) -> DecisionModel | None:
    """The fitted model shipped for this embedder, or None when there is none."""
    path = model_path(embedder_name)
    return DecisionModel.load(path) if path.is_file() else None
