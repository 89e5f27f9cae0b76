"""The words for numbers and units, in Chinese and English: one lexicon for every reader in solver.

This module owns the vocabulary that `solver.normalize` (the answer cache's reader of questions) and
`solver.answers` (the reader of final answers) share, so that both give a numeral the same value and a
unit the same id:
- Chinese numerals: digits (with 两 俩 仨, 〇, and the financial forms 壹 贰 叁 … 拾 佰 仟), the place
  units 十 百 千 and the big units 万 亿; `parse_cn_numeral` reads a run of them (三十五, 一百零五,
  二〇二四, 三万五), leniently as running text is written or strictly as a standard numeral.
- English number words: cardinals, ordinals, the denominators of fractions (thirds, a quarter) and the
  scales; `parse_en_number` reads a run of cardinal words ("one hundred and five").
- Units: one `Unit` per canonical id, with its English words, symbols and Chinese forms, its dimension
  and its factor to the dimension's base unit (min = 60 s, 公里 = 1000 m, 角 = 0.1 元); `unit_of` looks
  a surface form up, and `same_amount` says whether two amounts in units of one dimension are equal.

Which form counts as a unit where (after a number, after "per", inside a date) is the readers' business,
not this module's: a Chinese single character such as 米 or 分 is marked `zh_counted` (a unit only right
after a number or 每/几/多少), and a form that in running text means something else (3月 is March, 3日
a date, "units" a place value) is marked `answer_only`, read as a unit only when it stands alone after
the number of a final answer.

Conversions are exact (Fractions) and only within one dimension: lengths with lengths, money only
within one currency (元 角 分, or dollars and cents), never across. Temperatures have no factor (their
scales do not start at the same zero), and neither does 分 read out of context in an answer (minutes,
cents or points), nor the percent sign.

It does not read text (that is `solver.normalize` and `solver.answers`) and imports nothing from solver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

__all__ = [
    "CN_BIG",
    "CN_DIGITS",
    "CN_NUMERAL_CHARS",
    "CN_PLACES",
    "EN_CARDINAL_WORDS",
    "EN_DENOMINATORS",
    "EN_ORDINALS",
    "EN_SCALES",
    "EN_SMALL",
    "EN_TENS",
    "MAX_NUMERAL_CHARS",
    "UNITS",
    "Amount",
    "Unit",
    "amount",
    "parse_cn_numeral",
    "parse_en_number",
    "same_amount",
    "unit",
    "unit_of",
]

# A numeral longer than this is not a number anyone writes in words.
MAX_NUMERAL_CHARS = 40

# --------------------------------------------------------------------------------------------------
# Chinese numerals
# --------------------------------------------------------------------------------------------------

CN_DIGITS: dict[str, int] = {
    "零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "仨": 3, "四": 4, "五": 5,
    "六": 6, "七": 7, "八": 8, "九": 9,
    # financial forms, written on cheques and receipts so that no stroke can be added
    "壹": 1, "贰": 2, "叁": 3, "肆": 4, "伍": 5, "陆": 6, "柒": 7, "捌": 8, "玖": 9,
}  # fmt: skip
CN_PLACES: dict[str, int] = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
CN_BIG: dict[str, int] = {"万": 10**4, "亿": 10**8}
CN_NUMERAL_CHARS = "".join(CN_DIGITS) + "".join(CN_PLACES) + "".join(CN_BIG)

# The plain form of each character, for the strict reading (贰拾 is read as 二十, 俩 as 两).
_CN_PLAIN = str.maketrans(
    dict(zip("壹贰叁肆伍陆柒捌玖拾佰仟俩仨", "一二三四五六七八九十百千两三", strict=True))
)


def parse_cn_numeral(run: str, *, strict: bool = False) -> int | None:
    """The value of a run of Chinese numeral characters, or None when it is not a number.

    Lenient (running text): 三十五 = 35, 两千 = 2000, 二〇二四 = 2024 (digits one by one), 三五 = 35,
    三万五 = 35000 and 一百五 = 150 (the colloquial omitted place), 一千五十 = 1050.
    Strict (a final answer, where unsure means "different"): only the standard written forms, so that
    三五, 一百五 and 一千五十 are refused while 一百零五, 一万五千, 十二 and 两 are read. Where the strict
    reading accepts a run, its value is the lenient one."""
    if not run or len(run) > MAX_NUMERAL_CHARS or any(ch not in CN_NUMERAL_CHARS for ch in run):
        return None
    value = _cn_lenient(run)
    if strict and value is not None and _cn_standard(run.translate(_CN_PLAIN)) != value:
        return None
    return value


def _cn_lenient(run: str) -> int | None:
    if all(ch in CN_DIGITS for ch in run):
        if len(run) == 1:
            return CN_DIGITS[run]
        return int("".join(str(CN_DIGITS[ch]) for ch in run))
    total = 0
    section = 0
    number = 0
    last_unit = 0
    zero_seen = False
    pending = False
    for ch in run:
        if ch in CN_DIGITS:
            value = CN_DIGITS[ch]
            if value == 0:
                zero_seen = True
                continue
            if pending:  # two digits in a row inside a united numeral: not a number we understand
                return None
            number = value
            pending = True
        elif ch in CN_PLACES:
            unit = CN_PLACES[ch]
            if not pending:
                if unit != 10:
                    if section == 0 and total == 0:
                        return None
                    number = 1
                else:
                    number = 1
            section += number * unit
            number = 0
            pending = False
            last_unit = unit
            zero_seen = False
        else:  # 万 / 亿
            big = CN_BIG[ch]
            section += number
            if section == 0:
                section = 1 if total == 0 else 0
            total = (total + section) * big if big > 10**4 else total + section * big
            section = 0
            number = 0
            pending = False
            last_unit = big
            zero_seen = False
    if pending:
        if last_unit >= 100 and not zero_seen:
            section += number * (last_unit // 10)  # 一百五 = 150, 三万五 = 35000
        else:
            section += number
    return total + section


_CN_STRICT_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
}
_CN_STRICT_DIGITS |= {"七": 7, "八": 8, "九": 9}
_CN_STRICT_PLACES = {"十": 10, "百": 100, "千": 1000}


def _cn_standard(s: str) -> int | None:
    """The value of a standard written numeral (plain characters only), None for any other form."""
    if s in ("零", "〇"):
        return 0
    for big, scale in (("亿", 10**8), ("万", 10**4)):
        if big in s:
            high_text, low_text = s.split(big, 1)
            high = _cn_standard(high_text) if high_text else None
            if not high or big in low_text:
                return None
            if not low_text:
                return high * scale
            if low_text[0] in "零〇":
                low = _cn_standard(low_text[1:])
                return None if low is None or low >= scale // 10 else high * scale + low
            low = _cn_standard(low_text)
            # 一万五 is colloquial 15000; only 一万五千 is standard.
            return None if low is None or low < scale // 10 else high * scale + low
    return _cn_standard_section(s)


def _cn_standard_section(s: str) -> int | None:
    """A standard numeral below 10000: '三五' and '一百五' are refused, a skipped place needs 零."""
    total, digit, last_unit, zero = 0, None, 10000, False
    for i, ch in enumerate(s):
        if ch in "零〇":
            if digit is not None or i == 0:
                return None
            zero = True
        elif ch in _CN_STRICT_DIGITS:
            if digit is not None:
                return None
            digit = _CN_STRICT_DIGITS[ch]
        else:
            unit = _CN_STRICT_PLACES.get(ch)
            if unit is None or unit >= last_unit:
                return None
            if digit is None:
                if unit != 10 or i != 0:
                    return None
                digit = 1  # 十二 = 12
            if last_unit != 10000 and unit * 10 != last_unit and not zero:
                return None  # a skipped place needs 零: 一千零五十
            total += digit * unit
            last_unit, digit, zero = unit, None, False
    if digit is not None:
        if last_unit not in (10000, 10) and not zero:
            return None
        total += digit
    elif zero:
        return None
    return total if s else None


# --------------------------------------------------------------------------------------------------
# English number words
# --------------------------------------------------------------------------------------------------

EN_SMALL: dict[str, int] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
EN_TENS: dict[str, int] = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
    "ninety": 90,
}  # fmt: skip
EN_SCALES: dict[str, int] = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
EN_CARDINAL_WORDS = frozenset(EN_SMALL) | frozenset(EN_TENS) | frozenset(EN_SCALES)
EN_ORDINALS: dict[str, int] = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
    "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
    "nineteenth": 19, "twentieth": 20, "thirtieth": 30, "fortieth": 40, "fiftieth": 50,
    "sixtieth": 60, "seventieth": 70, "eightieth": 80, "ninetieth": 90, "hundredth": 100,
    "thousandth": 1000,
}  # fmt: skip
# The words that name the denominator of a fraction: "two thirds", "a quarter", "three halves".
EN_DENOMINATORS: dict[str, int] = {
    "half": 2, "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4, "fourth": 4,
    "fourths": 4, "fifth": 5, "fifths": 5, "sixth": 6, "sixths": 6, "seventh": 7, "sevenths": 7,
    "eighth": 8, "eighths": 8, "ninth": 9, "ninths": 9, "tenth": 10, "tenths": 10,
}  # fmt: skip


def parse_en_number(text: str, *, strict: bool = False) -> int | None:
    """The value of a run of English cardinal words ("thirty-five", "one hundred and five").

    Lenient (running text, words already known to be number words): every word adds up and the
    scales multiply what stands before them; "and" and unknown words are skipped, so this never fails.
    Strict (a final answer): only a well-formed number ("a hundred", "one thousand and five"); "five
    ten", "hundred" alone or "and" at the end are refused. Where the strict reading accepts a run, its
    value is the lenient one."""
    words = [w for w in re.split(r"[\s-]+", text.casefold()) if w]
    value = _en_lenient(words)
    if strict and _en_standard(words) != value:
        return None
    return value


def _en_lenient(words: list[str]) -> int:
    total = 0
    current = 0
    for word in words:
        if word in EN_SMALL:
            current += EN_SMALL[word]
        elif word in EN_TENS:
            current += EN_TENS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word in EN_SCALES:
            total += max(current, 1) * EN_SCALES[word]
            current = 0
    return total + current


def _en_standard(words: list[str]) -> int | None:
    words = list(words)
    if words and words[0] == "a":
        if len(words) < 2 or words[1] not in EN_SCALES:
            return None
        words[0] = "one"  # "a hundred", "a thousand"
    if words == ["zero"]:
        return 0
    total, current, last, last_scale = 0, 0, None, 10**12
    for w in words:
        if w in EN_SMALL and w != "zero":
            value = EN_SMALL[w]
            if last == "tens" and value >= 10:
                return None
            if last not in (None, "hundred", "scale", "and", "tens"):
                return None
            current, last = current + value, "unit"
        elif w in EN_TENS:
            if last not in (None, "hundred", "scale", "and"):
                return None
            current, last = current + EN_TENS[w], "tens"
        elif w == "hundred":
            if last != "unit" or not 1 <= current % 100 <= 9 or current >= 100:
                return None
            current, last = current * 100, "hundred"
        elif w in EN_SCALES:
            scale = EN_SCALES[w]
            if last not in ("unit", "tens", "hundred") or scale >= last_scale:
                return None
            total, current, last, last_scale = total + current * scale, 0, "scale", scale
        elif w == "and" and last in ("hundred", "scale"):
            last = "and"
        else:
            return None
    return None if last in (None, "and") else total + current


# --------------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One unit: its canonical id, how it is written, and how it converts.

    `dimension` names what it measures ("length", "money:cny", ...) and `factor` its size in the
    dimension's base unit (m, m², m³, g, s, month, 元, dollar, m/s, degree); None where amounts must
    not be converted. A compound unit (km/h) names its `parts`: the cache's reader of questions reads
    "60 km/h" and "每小时60千米" alike as kilometres and hours."""

    id: str
    dimension: str | None
    factor: Fraction | None
    words: tuple[str, ...] = ()  # English words, singular and plural ("kilometer", "kilometers")
    symbols: tuple[str, ...] = ()  # abbreviations and signs ("km", "$", "°")
    zh: tuple[str, ...] = ()  # Chinese forms read wherever they stand ("千米", "公里")
    zh_counted: tuple[str, ...] = ()  # Chinese forms that are this unit only after a number ("米")
    # forms that are this unit only alone after an answer's number (3日 is a date in a question)
    answer_only: tuple[str, ...] = ()
    # forms that name the unit as the period of a rate ("annually", 年利率): a question is about the
    # unit, but "500 per annum" is not an amount of years
    rate_forms: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()  # a compound unit's simple units, numerator first

    @property
    def amount_forms(self) -> tuple[str, ...]:
        """The forms written after an amount of this unit ("5 km", "5公里"), in any text."""
        return self.words + self.symbols + self.zh + self.zh_counted

    @property
    def forms(self) -> tuple[str, ...]:
        """Every surface form of this unit."""
        return self.amount_forms + self.answer_only + self.rate_forms


def _u(
    unit_id: str,
    dimension: str | None,
    factor: int | str | Fraction | None,
    *,
    words: tuple[str, ...] = (),
    symbols: tuple[str, ...] = (),
    zh: tuple[str, ...] = (),
    zh_counted: tuple[str, ...] = (),
    answer_only: tuple[str, ...] = (),
    rate_forms: tuple[str, ...] = (),
    parts: tuple[str, ...] = (),
) -> Unit:
    return Unit(
        unit_id,
        dimension,
        None if factor is None else Fraction(factor),
        words,
        symbols,
        zh,
        zh_counted,
        answer_only,
        rate_forms,
        parts,
    )


def _plural(*words: str) -> tuple[str, ...]:
    """Each English word with its plural: ("meter", "meters")."""
    out: list[str] = []
    for word in words:
        out += [word, word + ("es" if word.endswith(("ch", "sh", "s", "x")) else "s")]
    return tuple(out)


def _square(*names: str) -> tuple[str, ...]:
    return tuple(f"{p} {n}" for n in names for p in ("square", "sq", "sq."))


_INCH, _FOOT, _YARD, _MILE = (
    Fraction("0.0254"),
    Fraction("0.3048"),
    Fraction("0.9144"),
    Fraction("1609.344"),
)
_POUND = Fraction("453.59237")  # grams in the international avoirdupois pound (exact by definition)

UNITS: tuple[Unit, ...] = (
    # length, in metres
    _u("km", "length", 1000, words=_plural("kilometer", "kilometre"), symbols=("km", "kms"), zh=("千米", "公里")),
    _u("m", "length", 1, words=_plural("meter", "metre"), symbols=("m",), zh_counted=("米",)),
    _u("dm", "length", "1/10", words=_plural("decimeter", "decimetre"), symbols=("dm",), zh=("分米",)),
    _u("cm", "length", "1/100", words=_plural("centimeter", "centimetre"), symbols=("cm",), zh=("厘米",)),
    _u("mm", "length", "1/1000", words=_plural("millimeter", "millimetre"), symbols=("mm",), zh=("毫米",)),
    _u("mile", "length", _MILE, words=_plural("mile"), zh=("英里",)),
    # "a yard" is a garden far more often than a length: the singular is read only in an answer
    _u("yd", "length", _YARD, words=("yards",), symbols=("yd",), answer_only=("yard",)),
    _u("ft", "length", _FOOT, words=("foot", "feet"), symbols=("ft",), zh=("英尺",)),
    _u("inch", "length", _INCH, words=_plural("inch"), zh=("英寸",)),
    # area, in square metres ("km2", "cm3" glued are written in answers; in a question the cache reads
    # the 2 apart)
    _u("km2", "area", 10**6, words=_square("kilometer", "kilometers", "km"), symbols=("km²", "km^2"), zh=("平方千米", "平方公里"), answer_only=("km2",)),
    _u("m2", "area", 1, words=_square("meter", "meters", "metre", "metres", "m"), symbols=("m²", "m^2"), zh=("平方米",), answer_only=("m2",)),
    _u("dm2", "area", "1/100", words=_square("decimeter", "decimeters", "dm"), symbols=("dm²", "dm^2"), zh=("平方分米",), answer_only=("dm2",)),
    _u("cm2", "area", "1/10000", words=_square("centimeter", "centimeters", "centimetre", "centimetres", "cm"), symbols=("cm²", "cm^2"), zh=("平方厘米",), answer_only=("cm2",)),
    _u("mm2", "area", "1/1000000", words=_square("millimeter", "millimeters", "mm"), symbols=("mm²", "mm^2"), zh=("平方毫米",), answer_only=("mm2",)),
    _u("ha", "area", 10**4, words=_plural("hectare"), symbols=("ha",), zh=("公顷",)),
    _u("mu", "area", "2000/3", symbols=("mu",), zh_counted=("亩",)),
    _u("ft2", "area", _FOOT**2, words=_square("feet", "foot", "ft"), symbols=("ft²", "ft^2", "feet^2")),
    _u("yd2", "area", _YARD**2, words=_square("yards", "yard", "yd"), symbols=("yd²", "yd^2")),
    # "square in", "cubic in": in running text "in" is the preposition ("cubic in shape")
    _u("inch2", "area", _INCH**2, words=_square("inches", "inch"), symbols=("in²", "in^2", "inches^2"), answer_only=_square("in")),
    # volume, in cubic metres
    _u("km3", "volume", 10**9, words=("cubic kilometer", "cubic kilometers", "cubic km"), symbols=("km³", "km^3"), zh=("立方千米",), answer_only=("km3",)),
    _u("m3", "volume", 1, words=("cubic meter", "cubic meters", "cubic metre", "cubic metres", "cubic m"), symbols=("m³", "m^3"), zh=("立方米",), answer_only=("m3",)),
    _u("dm3", "volume", "1/1000", words=("cubic decimeter", "cubic decimeters", "cubic dm"), symbols=("dm³", "dm^3"), zh=("立方分米",), answer_only=("dm3",)),
    _u("cm3", "volume", "1/1000000", words=("cubic centimeter", "cubic centimeters", "cubic cm"), symbols=("cm³", "cm^3", "cc"), zh=("立方厘米",), answer_only=("cm3",)),
    _u("mm3", "volume", "1/1000000000", words=("cubic millimeter", "cubic millimeters", "cubic mm"), symbols=("mm³", "mm^3"), zh=("立方毫米",), answer_only=("mm3",)),
    _u("l", "volume", "1/1000", words=_plural("liter", "litre"), symbols=("l",), zh_counted=("升",)),
    _u("ml", "volume", "1/1000000", words=_plural("milliliter", "millilitre"), symbols=("ml",), zh=("毫升",)),
    _u("ft3", "volume", _FOOT**3, words=("cubic feet", "cubic foot", "cubic ft"), symbols=("ft³", "ft^3", "feet^3")),
    _u("inch3", "volume", _INCH**3, words=("cubic inches", "cubic inch"), symbols=("in³", "in^3", "inches^3"), answer_only=("cubic in",)),
    # mass, in grams
    _u("t", "mass", 10**6, words=_plural("ton", "tonne"), symbols=("t",), zh_counted=("吨",)),
    _u("kg", "mass", 1000, words=_plural("kilogram", "kilo"), symbols=("kg",), zh=("千克", "公斤")),
    _u("g", "mass", 1, words=_plural("gram"), symbols=("g",), zh_counted=("克",)),
    _u("mg", "mass", "1/1000", words=_plural("milligram"), symbols=("mg",), zh=("毫克",)),
    _u("jin", "mass", 500, symbols=("jin",), zh_counted=("斤",)),
    _u("lb", "mass", _POUND, words=_plural("pound"), symbols=("lb", "lbs"), zh=("磅",)),
    # time, in seconds; months and years have no fixed length in seconds, so they are counted apart
    _u("h", "time", 3600, words=_plural("hour"), symbols=("h", "hr", "hrs"), zh=("小时", "个小时", "钟头")),
    _u("min", "time", 60, words=_plural("minute"), symbols=("min", "mins"), zh=("分钟",)),
    _u("s", "time", 1, words=_plural("second"), symbols=("s", "sec", "secs"), zh=("秒钟",), zh_counted=("秒",)),
    _u("day", "time", 86400, words=_plural("day"), zh_counted=("天",), answer_only=("日",)),
    _u("week", "time", 604800, words=_plural("week"), zh=("个星期",), zh_counted=("星期", "周")),
    _u("month", "calendar", 1, words=_plural("month"), zh=("个月",), answer_only=("月",), rate_forms=("月利率",)),
    _u(
        "year", "calendar", 12, words=(*_plural("year"), "year old", "years old"), zh=("周岁",),
        zh_counted=("年", "岁"), rate_forms=("annual", "annually", "per annum", "年利率"),
    ),  # fmt: skip
    # money, in one currency at a time
    _u("yuan", "money:cny", 1, words=("yuan", "rmb"), symbols=("¥",), zh=("人民币",), zh_counted=("元", "块钱", "块")),
    _u("jiao", "money:cny", "1/10", words=("jiao",), zh_counted=("角", "毛")),
    # 分 is a cent of a yuan only where money is spoken of; alone after an answer's number it may be
    # minutes or points, so the answer checker compares it with nothing but itself
    _u("fen", "money:cny", "1/100", words=("fen",), zh_counted=("分",)),
    _u("usd", "money:usd", 1, words=_plural("dollar"), symbols=("usd", "$"), zh=("美元",)),
    _u("cent", "money:usd", "1/100", words=_plural("cent"), zh=("美分",)),
    # speed, in metres per second
    _u(
        "km/h", "speed", "5/18", parts=("km", "h"),
        words=("kilometers per hour", "kilometres per hour", "km per hour"),
        symbols=("km/h", "kmh", "kph"),
        zh=("千米/时", "千米/小时", "千米每小时", "公里/小时", "公里每小时"),
    ),  # fmt: skip
    _u("m/s", "speed", 1, parts=("m", "s"), words=("meters per second", "metres per second"), symbols=("m/s",), zh=("米/秒", "米每秒")),
    _u("m/min", "speed", "1/60", parts=("m", "min"), words=("meters per minute", "metres per minute"), symbols=("m/min",), zh=("米/分", "米/分钟", "米每分", "米每分钟")),
    _u("mph", "speed", _MILE / 3600, parts=("mile", "h"), words=("miles per hour",), symbols=("mph",)),
    # angles, in degrees
    _u("deg", "angle", 1, words=_plural("degree"), symbols=("°",), zh_counted=("度",)),
    # temperatures: no factor (the scales do not share a zero)
    _u("degC", "temperature", None, words=("degree celsius", "degrees celsius", "celsius"), symbols=("°c",), zh=("摄氏度", "摄氏温度", "摄氏")),
    _u("degF", "temperature", None, words=("degree fahrenheit", "degrees fahrenheit", "fahrenheit"), symbols=("°f",), zh=("华氏度", "华氏温度", "华氏")),
    _u("K", "temperature", None, words=_plural("kelvin"), zh=("开尔文温度", "开尔文")),
    # the percent sign: a unit of the cache's signature ("20%" is not 0.2 there); the answer checker
    # reads it as a share (50% = 1/2)
    _u("%", None, None, symbols=("%",)),
    # "12 square units": the unit of a figure drawn on a grid; in running text "units" is a place value
    _u("unit", "grid", 1, answer_only=_plural("unit")),
    _u("unit2", "grid area", 1, answer_only=("units^2", "square units", "sq units")),
    _u("unit3", "grid volume", 1, answer_only=("units^3", "cubic units")),
)  # fmt: skip

_BY_ID = {u.id: u for u in UNITS}


def _surface_key(surface: str) -> str:
    """How a surface form is looked up: case and braces folded, spacing around / and ^ removed."""
    s = re.sub(r"[{}]", "", surface.casefold())
    s = re.sub(r"\s*([/^])\s*", r"\1", s)
    return re.sub(r"\s+", " ", s).strip()


_BY_SURFACE: dict[str, str] = {}
for _unit in UNITS:
    for _form in _unit.forms:
        _key = _surface_key(_form)
        if _BY_SURFACE.setdefault(_key, _unit.id) != _unit.id:
            raise ValueError(f"lexicon: {_form!r} is both {_BY_SURFACE[_key]} and {_unit.id}")


def unit(unit_id: str) -> Unit:
    """The unit with this canonical id (KeyError for an unknown id)."""
    return _BY_ID[unit_id]


def unit_of(surface: str) -> str | None:
    """The canonical id of a unit's surface form ("kilometres", "公里", "KM" → "km"), else None."""
    return _BY_SURFACE.get(_surface_key(surface))


class Amount(NamedTuple):
    """An amount in its dimension's base unit: 30 min → ("time", 1800)."""

    dimension: str
    value: Fraction


def amount(value: Fraction, unit_id: str | None) -> Amount | None:
    """`value` of the unit `unit_id` in its dimension's base unit; None when it cannot be converted."""
    found = _BY_ID.get(unit_id or "")
    if found is None or found.dimension is None or found.factor is None:
        return None
    return Amount(found.dimension, value * found.factor)


def same_amount(a: Fraction, a_unit: str | None, b: Fraction, b_unit: str | None) -> bool:
    """Whether two amounts are equal once converted: 0.5 h and 30 min, 2 km and 2000 m, 1.5 元 and 15
    角. False across dimensions (2 km and 2 kg), across currencies, and for units without a factor."""
    x, y = amount(a, a_unit), amount(b, b_unit)
    return x is not None and y is not None and x == y
