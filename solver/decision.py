"""Is this banked problem the student's problem? Features of a (question, entry) pair and the learned rule.

This module owns the comparison of two problems once the vector search has proposed a candidate:
- `Reading`: what a problem says, read once: its quantities (value, unit, what they are said of), its
  expressions (`3^12`, `n^2-n`, kept with order and operators), its signature (asked quantity,
  conditions, terms, from `solver.normalize`) and its words.
- `compare`: one bank entry against the question. First the *exact* rules, which never let a pair
  through: a given value that differs on both sides (a number was changed; the same amount in other
  units of one dimension is the same value: 0.5 h and 30 min, 2 km and 2000 m, never 2 km and 2 kg or
  元 and dollars, see `solver.lexicon`), an expression that differs, two quantities that swapped
  roles ("bought for 60, sold for 75" vs the reverse). Then the *features* of what remains
  (similarity, alignment, which parts of the signature differ, the wording edit check) for the learned
  rule; amounts aligned through a conversion are compared in the entry's units, and make a certain hit
  possible only when the question asks the same thing in the same units.
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


def read(canonical: str) -> Reading:
    """Read a canonical text (from `solver.normalize.normalize`)."""
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
    )


def _expressions(canonical: str) -> tuple[str, ...]:
    """Formulas with an operator between two terms ("3^12", "n^2+n"), spaces removed, sorted.

    Only runs that hold an exponent or a letter count: "5-3" between two numbers is as often a
    range or a date as a subtraction, and plain numbers are compared as quantities already."""
    found = []
    for m in _EXPRESSION_RE.finditer(canonical):
        text = re.sub(r"\s+", "", m.group()).translate(_OPERATOR_ALIASES)
        if "^" in text or re.search(r"[a-z]", text):
            found.append(text)
    return tuple(sorted(found))


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
    for quantity in list(q_left):  # explicit with explicit: 30 minutes and 0.5 hour
        partner = next((e for e in e_left if _same_amount(quantity, e)), None)
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
    best, certain = 0.0, None
    for i, v in enumerate(values):
        for w in values[i + 1 :]:
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

    rule: str | None  # "numbers", "expression", "roles" when an exact rule rejects the pair
    reason: str  # a sentence a student can read
    features: tuple[float, ...]
    # every given quantity aligned one to one: only then may the pair be a certain hit (otherwise it
    # can at most be suggested: a value was added or removed, as in "a needed value removed")
    aligned: bool = False


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
    }
    # Amounts equal only once converted (4 h and 240 min) are offered as a suggestion, never a certain
    # hit: other people's labelled data calls such a pair a changed number (GSM-Plus writes one problem
    # in other units as a perturbation), so a student confirms it instead of the cache deciding.
    aligned = alignment.is_exact and not alignment.converted
    return Comparison(
        None,
        _agreement_reason(question, entry, alignment, aligned),
        _vector(features),
        aligned=aligned,
    )


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
    q_side = {q.unit for q, _ in alignment.converted}
    e_side = {e.unit for _, e in alignment.converted}
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
        if data.get("features") != list(FEATURES):
            raise ModelFileError(
                f"{path} was fitted on other features; refit it with `python -m solver calibrate`."
            )
        try:
            trees = tuple(
                tuple(
                    (int(f), float(t), int(left), int(right), float(v))
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
        except (KeyError, TypeError, ValueError) as exc:
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
