"""solver.lexicon: the numeral words and units that the cache's reader (solver.normalize) and the answer
checker (solver.answers) share, and checks that both readers read every form of it alike, so that a
form added to one reader and not the other fails here."""

from __future__ import annotations

import hashlib
import itertools
from fractions import Fraction
from pathlib import Path

import pytest

from solver import answers, lexicon, normalize
from solver.lexicon import (
    CN_BIG,
    CN_DIGITS,
    CN_NUMERAL_CHARS,
    CN_PLACES,
    EN_SCALES,
    EN_SMALL,
    EN_TENS,
    UNITS,
    parse_cn_numeral,
    parse_en_number,
    same_amount,
    unit_of,
)

# --------------------------------------------------------------------------------------------------
# Numerals


@pytest.mark.parametrize(
    ("run", "lenient", "strict"),
    [
        ("三十五", 35, 35),
        ("十二", 12, 12),
        ("一百零五", 105, 105),
        ("一千零五十", 1050, 1050),
        ("两千", 2000, 2000),
        ("两", 2, 2),
        ("俩", 2, 2),
        ("仨", 3, 3),
        ("贰拾叁", 23, 23),
        ("壹佰零伍", 105, 105),
        ("叁仟", 3000, 3000),
        ("一万五千", 15000, 15000),
        ("二十万", 200000, 200000),
        ("三亿五千万", 350000000, 350000000),
        ("零", 0, 0),
        # colloquial or digit-by-digit forms: read in running text, refused in an answer
        ("二〇二四", 2024, None),
        ("三五", 35, None),
        ("一百五", 150, None),
        ("三万五", 35000, None),
        ("一千五十", 1050, None),
        # not numbers
        ("百", None, None),
        ("五五十", None, None),
        ("一" * 41, None, None),
        ("", None, None),
        ("三点五", None, None),
    ],
)
def test_chinese_numerals_are_read_leniently_in_text_and_strictly_in_answers(run, lenient, strict):
    assert parse_cn_numeral(run) == lenient
    assert parse_cn_numeral(run, strict=True) == strict


def test_a_strict_reading_is_always_the_lenient_value():
    """Over every run of up to three numeral characters: where the strict reading accepts, it gives
    the value the cache's reader gives (one value per numeral, two grammars)."""
    accepted = 0
    for length in (1, 2, 3):
        for chars in itertools.product(CN_NUMERAL_CHARS, repeat=length):
            run = "".join(chars)
            strict = parse_cn_numeral(run, strict=True)
            if strict is not None:
                accepted += 1
                assert strict == parse_cn_numeral(run), run
    assert accepted > 1000


def _write_cn(n: int, digits: str = "零一二三四五六七八九", places: str = "十百千") -> str:
    """A standard Chinese numeral below 10^8 (一万零五, 三千零二十): what a textbook writes."""
    if n == 0:
        return digits[0]

    def section(x: int, leading: bool) -> str:
        out, zero = "", False
        for place, value in ((3, 1000), (2, 100), (1, 10), (0, 1)):
            d = x // value % 10
            if d == 0:
                zero = bool(out)
                continue
            if zero or (not out and not leading and value < 1000):
                out += digits[0]
            zero = False
            if not (place == 1 and d == 1 and not out and leading):
                out += digits[d]
            out += places[place - 1] if place else ""
        return out

    high, low = divmod(n, 10**4)
    if not high:
        return section(low, True)
    text = section(high, True) + "万"
    return text + (section(low, False) if low else "")


@pytest.mark.parametrize("n", [*range(0, 130), 1000, 1005, 1050, 2024, 10005, 10050, 15000, 20020])
def test_standard_numerals_are_read_by_both_grammars(n):
    for digits, places in (("零一二三四五六七八九", "十百千"), ("零壹贰叁肆伍陆柒捌玖", "拾佰仟")):
        written = _write_cn(n, digits, places)
        assert parse_cn_numeral(written) == n, written
        assert parse_cn_numeral(written, strict=True) == n, written


@pytest.mark.parametrize(
    ("text", "lenient", "strict"),
    [
        ("thirty-five", 35, 35),
        ("one hundred and five", 105, 105),
        ("a hundred", 100, 100),
        ("two thousand and twenty-four", 2024, 2024),
        ("three million", 3_000_000, 3_000_000),
        ("zero", 0, 0),
        ("five ten", 15, None),
        ("hundred", 100, None),
        ("twenty and", 20, None),
    ],
)
def test_english_number_words(text, lenient, strict):
    assert parse_en_number(text) == lenient
    assert parse_en_number(text, strict=True) == strict


# --------------------------------------------------------------------------------------------------
# Units


def test_every_form_names_one_unit_and_every_compound_is_made_of_units():
    ids = [u.id for u in UNITS]
    assert len(ids) == len(set(ids))
    for u in UNITS:
        for form in u.forms:
            assert unit_of(form) == u.id, form
        assert (u.factor is None) or u.dimension is not None, u.id
        for part in u.parts:
            assert lexicon.unit(part).dimension is not None, (u.id, part)
    assert unit_of("Kilometres") == unit_of(" km ") == unit_of("公里") == "km"
    assert unit_of("furlongs") is None


@pytest.mark.parametrize(
    ("a", "a_unit", "b", "b_unit", "same"),
    [
        ("0.5", "h", "30", "min", True),
        ("1.5", "h", "90", "min", True),
        ("2", "km", "2000", "m", True),
        ("1.5", "yuan", "15", "jiao", True),
        ("2", "usd", "200", "cent", True),
        ("1", "year", "12", "month", True),
        ("1", "l", "1", "dm3", True),
        ("1", "ml", "1", "cm3", True),
        ("1", "ha", "10000", "m2", True),
        ("1", "week", "7", "day", True),
        ("36", "km/h", "10", "m/s", True),
        ("1", "ft", "12", "inch", True),
        ("30", "min", "3", "h", False),
        ("2", "km", "2", "kg", False),
        ("1", "yuan", "100", "cent", False),  # two currencies
        ("1", "month", "30", "day", False),  # a month has no fixed number of days
        ("30", "degC", "86", "degF", False),  # temperature scales do not share a zero
        ("5", "%", "5", "%", False),
        ("5", None, "5", None, False),
    ],
)
def test_amounts_are_equal_only_within_one_dimension(a, a_unit, b, b_unit, same):
    assert same_amount(Fraction(a), a_unit, Fraction(b), b_unit) is same


# --------------------------------------------------------------------------------------------------
# Both readers read the lexicon alike


def _is_chinese(form: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in form)


def _amount_text(form: str, value: str = "5") -> str:
    return f"{value}{form}" if _is_chinese(form) else f"{value} {form}"


# What the cache's reader needs around a form to take it for a unit (the answer checker reads a
# final answer, where the number and its unit stand alone): 毛 and 分 are money after 元
_CONTEXT_BEFORE = {"毛": "1元", "分": "1元"}


def _unit_cases() -> list[tuple[str, str]]:
    return [(u.id, form) for u in UNITS for form in u.amount_forms if u.id != "%"]


@pytest.mark.parametrize(("unit_id", "form"), _unit_cases())
def test_the_cache_and_the_answer_checker_read_every_unit_form_as_the_same_unit(unit_id, form):
    found = lexicon.unit(unit_id)
    # the answer checker: the amount's unit is the lexicon's id
    quantity = answers._parse_quantity(_amount_text(form))
    assert quantity is not None and quantity.unit == unit_id, quantity
    # the cache's reader: the amount has that unit (a compound: its first part) and the signature
    # names it (a compound: all its parts), in a sentence of either language
    amount = _CONTEXT_BEFORE.get(form, "") + _amount_text(form)
    sentence = f"有{amount}。" if _is_chinese(form) else f"It is {amount}."
    canonical = normalize.normalize(sentence)
    read = normalize.quantities(canonical)
    assert [q.unit for q in read] == [(found.parts or (unit_id,))[0]], (canonical, read)
    assert set(found.parts or (unit_id,)) <= set(normalize.signature(sentence).units), canonical
    # and both give the same amount in the base unit
    assert read[0].amount == lexicon.amount(quantity.value, unit_id) or found.parts


def test_the_percent_sign_is_a_unit_for_the_cache_and_a_share_for_the_answer_checker():
    assert normalize.quantities(normalize.normalize("It is 5%."))[0].unit == "%"
    assert answers._parse_quantity("5%").value == Fraction(1, 20)


def _numeral_cases() -> list[tuple[str, int]]:
    cases = []
    for ch, value in CN_DIGITS.items():
        cases.append((f"{ch}百{ch}十{ch}" if value else f"三百{ch}五", 111 * value or 305))
    for ch, value in CN_PLACES.items():
        cases.append((f"三{ch}", 3 * value))
    for ch, value in CN_BIG.items():
        cases.append((f"五{ch}", 5 * value))
    return cases


@pytest.mark.parametrize(("numeral", "value"), _numeral_cases())
def test_both_readers_give_every_chinese_numeral_character_the_same_value(numeral, value):
    assert normalize.normalize(f"有{numeral}个苹果") == f"有{value}个苹果"
    assert answers._parse_quantity(f"{numeral}个").value == value
    assert answers.answers_equivalent(numeral, str(value))


def _word_cases() -> list[tuple[str, int]]:
    cases = [(w, v) for w, v in {**EN_SMALL, **EN_TENS}.items()]
    cases += [(f"two {w}", 2 * v) for w, v in EN_SCALES.items()]
    cases += [(f"{w}-three", v + 3) for w, v in EN_TENS.items()]
    return cases


@pytest.mark.parametrize(("words", "value"), _word_cases())
def test_both_readers_give_every_english_number_word_the_same_value(words, value):
    assert normalize.normalize(f"there are {words} apples") == f"there are {value} apples"
    assert answers._parse_quantity(f"{words} apples").value == value
    assert answers.answers_equivalent(words, str(value))


def test_the_saved_cache_digest_covers_the_lexicon():
    """Saved caches are valid only for the normalizer that made them (solver.cache hashes
    solver/normalize.py); normalize.py pins the lexicon's digest so that changing a unit or a
    numeral changes normalize.py too, and a saved cache is rebuilt."""
    source = Path(lexicon.__file__).read_bytes()
    assert normalize.LEXICON_DIGEST == hashlib.sha256(source).hexdigest()[:16], (
        "solver/lexicon.py changed: set LEXICON_DIGEST in solver/normalize.py to "
        f"{hashlib.sha256(source).hexdigest()[:16]!r}"
    )
