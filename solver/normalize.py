"""Canonical text and exact signatures for Chinese and English math and logic questions.

This module owns what "the same question" means before any embedding is involved:
- `normalize(text)`: one canonical string per wording: Unicode NFKC (full-width ３５ → 35), control
  characters and emoji dropped, whitespace and punctuation tidied, lower case (single capital letters
  and 甲乙丙丁 stay as the names A B C D), greetings and filler removed ("请帮忙：", "pls help!!"),
  abbreviations spelled out ("w/o", "hrs", "avg"), and every number written in digits: Chinese
  numerals (三十五, 两, 二〇二四, 一百零五, 三点五, 一个半, 三分之二, 百分之二十, 七五折), English
  number words (thirty-five, a dozen, two thirds, one and a half, twentieth), thousands separators,
  mixed numbers (2 1/2), polygon names (hexagon → 6-sided polygon, 六边形 → 6边形).
- `signature(text)`: the facts that must be equal for two questions to share an answer: the multiset of
  numbers, the units, the asked quantity (target), the polarity cues, and the terms (objects and
  operations the problem is about). Chinese and English map to the same ids so that a translation
  can match its original.
- `content_tokens(text)`: the wording as comparable tokens, for the cache's small-edit check.

Decisions worth knowing (each one was checked against tests/data/cache_cases.jsonl):
- Numbers are exact `Fraction`s: 0.5 == 1/2 == 半 == half. A percentage keeps its own value and the
  unit "%": 20% and 0.2 are *different* signatures (a miss, never a wrong hit). N折 is the share paid
  (七五折 → 75%), so "按原价的75%出售" matches 七五折 and "降价75%" does not (polarity "decrease").
- The value 1 is left out of the numbers: "一个笼子", "a cage", "one cage" and "1 cage" must agree, and
  一/a/one are articles far more often than counts. A change from 1 to any other value still shows,
  because the other value appears.
- Month names are terms (march), not numbers, so "March 1" and "3月1日" agree; weekday names are terms.
- "The two of them" is not a count: 甲乙两人, 我们两个, 两个都是红球 and "both" repeat what is given.
- Numeral words and units come from `solver.lexicon`, which the answer checker (`solver.answers`) reads
  too, so both give a numeral one value and a unit one id. Units are compared as sets of those ids;
  compound units split (km/h → km, h). In the canonical text, metric length/area/volume/mass units are
  written as symbols in both languages (千米, kilometers → km). Each quantity knows its amount in its
  dimension's base unit (0.5 h and 30 min are both 1800 s), for `solver.decision` to align them.
- The target is what the asking clause asks for: quantities (area, age, probability, ...), the thing
  counted after "how many"/几只, a person when several are named, and the unit asked for ("in:cm").
  "Prove ..." and "write a function ..." have no target (their terms carry them), except the facts
  inside "if ..." of a claim, so that a claim and its converse differ.
- Terms are the bilingual lexicon's ids found anywhere; the "hard" ones (operations, parity, shapes,
  sequence kinds, colours, animals, ...) must agree, the soft ones (SOFT_TERMS) may be left implicit.

It does not embed, search or decide hits (that is `solver.cache`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from solver import lexicon
from solver.lexicon import (
    CN_DIGITS,
    CN_NUMERAL_CHARS,
    EN_CARDINAL_WORDS,
    EN_DENOMINATORS,
    EN_ORDINALS,
    EN_SCALES,
    parse_cn_numeral,
    parse_en_number,
)

# The digest of solver/lexicon.py that this normalizer was written for. A saved answer cache is valid
# only for the normalizer that made it (solver.cache hashes this file), so a change of the lexicon
# must change this file too; tests/test_lexicon.py checks that it does.
LEXICON_DIGEST = "40fc1e8e2002ae14"

# --------------------------------------------------------------------------------------------------
# Cleaning: Unicode, control characters, emoji, punctuation
# --------------------------------------------------------------------------------------------------

_PRE_NFKC = {
    "²": "^2",
    "³": "^3",
    "√": " sqrt ",
    "π": " pi ",
    "×": " × ",
    "÷": " ÷ ",
    "−": "-",
    "–": "-",
    "—": "-",
    "…": "...",
    "⋯": "...",
    "⁄": "/",
    "℃": "°c",
    "℉": "°f",
    "。": ". ",
    "“": '"',
    "”": '"',
    "‘": "'",
    "’": "'",
    "「": '"',
    "」": '"',
    "《": '"',
    "》": '"',
    "【": "(",
    "】": ")",
    "≥": " >= ",
    "≤": " <= ",
    "≠": " != ",
}
_PRE_NFKC_RE = re.compile("|".join(re.escape(k) for k in _PRE_NFKC))
_KEEP_SYMBOLS = {"°", "□", "$", "¥", "%", "‰", "^", "+", "=", "<", ">", "×", "÷"}
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff"
_CJK_RE = re.compile(f"[{_CJK}]")


def _clean(text: str) -> str:
    """NFKC, symbols spelled out, control characters and emoji dropped, CJK punctuation made ASCII."""
    text = _PRE_NFKC_RE.sub(lambda m: _PRE_NFKC[m.group()], text)
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\u2044", "/").replace("\u2215", "/")  # ⅔ -> 2⁄3 -> 2/3
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in _KEEP_SYMBOLS:
            out.append(ch)
        elif cat == "Cc" or cat == "Zl" or cat == "Zp":
            out.append(" ")
        elif cat in ("Cf", "Cs", "Co", "Cn", "Mn", "Me"):
            continue  # zero-width joiners, variation selectors, unassigned code points
        elif cat in ("So", "Sk"):
            out.append(" ")  # emoji and pictographs carry no math
        else:
            out.append(ch)
    text = "".join(out)
    text = text.replace("...", " … ")  # an ellipsis is not a sentence end
    return text


# --------------------------------------------------------------------------------------------------
# Names: single capital letters (A says ...) and 甲乙丙丁 keep their identity through lower-casing
# --------------------------------------------------------------------------------------------------

_NAME_FOLLOWERS = (
    "and|or|says|said|say|claims|claimed|states|stated|answers|replies|is|was|can|could|alone|needs|"
    "need|takes|took|fills|empties|works|walks|runs|has|had|will|would|gets|got|finishes|paints|does|did|"
    "tells|lies|must|should|thinks|knows|asks|and|then|by|to"
)
# a letter right before a count of Chinese things is a name too: A、B、C3人
_LETTER_NAME_RE = re.compile(
    r"(?<![A-Za-z0-9])(?<![A-Za-z]')([A-Z])(?![A-Za-z])(?!\d(?!\d*[\u3400-\u4dbf\u4e00-\u9fff]))"
)
_SENTENCE_START_RE = re.compile(r"(?:^|[.?!:;\"'(]\s*|\n\s*)$")
_NAME_AFTER_A_RE = re.compile(rf"\s*(?:[,.:;?!)'\"、]|$|(?:{_NAME_FOLLOWERS})\b|'s\b)")
_ZH_LETTER_NAMES = {"甲": "A", "乙": "B", "丙": "C", "丁": "D"}


def _lower_keeping_names(text: str) -> str:
    """Lower-case everything except capital letters used as names (A, B, X, Y; not the article "A")."""
    # a run of capitals right before Chinese is a list of names: ABC三人, AB两地 (= A、B、C三人)
    text = re.sub(
        rf"(?<![A-Za-z])([A-H]{{2,4}})(?=\d*[{_CJK}])", lambda m: "、".join(m.group(1)), text
    )
    words = re.findall(r"[A-Za-z]{2,}", text)
    letters = sum(len(w) for w in words)
    uppers = sum(ch.isupper() for w in words for ch in w)
    if letters >= 8 and uppers / letters > 0.6:  # SHOUTED TEXT: no way to tell names from words
        return text.lower()
    pieces = []
    last = 0
    for m in _LETTER_NAME_RE.finditer(text):
        letter = m.group(1)
        is_name = letter != "I"
        if letter == "A":
            at_start = bool(_SENTENCE_START_RE.search(text[: m.start()]))
            before_cjk = bool(_CJK_RE.match(text[m.end() : m.end() + 1]))
            if at_start and not before_cjk and not _NAME_AFTER_A_RE.match(text, m.end()):
                is_name = False  # "A train travels ..."
        if is_name:
            pieces.append(text[last : m.start()].lower())
            pieces.append(letter)
            last = m.end()
    pieces.append(text[last:].lower())
    text = "".join(pieces)
    for zh, letter in _ZH_LETTER_NAMES.items():
        text = text.replace(zh, letter)
    return text


# --------------------------------------------------------------------------------------------------
# Filler, abbreviations and synonyms
# --------------------------------------------------------------------------------------------------

_FILLER_PATTERNS = [
    # English greetings, pleas and thanks
    r"^\s*(?:hi|hello|hey|dear (?:teacher|sir|madam)|good (?:morning|afternoon|evening))\b[\s,!.:~-]*",
    r"\b(?:can|could|would) (?:you|someone|anyone) (?:please |pls |plz )?help(?: me)?(?: with this| out)?\b[\s?!.,:]*",
    r"\b(?:pls|plz|please)(?: help(?: me)?)?\b[\s!.,:]*",
    r"\bhelp(?: me)?(?: please| pls| plz)?\s*!+",
    r"\bquick question\b[\s:,.!-]*",
    r"\bi need help(?: with this)?\b[\s:,.!-]*",
    r"\b(?:thanks|thank you|thx|ty|many thanks|thanks a lot|cheers)\b[\s!.]*(?:in advance)?[\s!.]*",
    # Chinese greetings, pleas and thanks
    r"(?:老师|同学们?|大家)?(?:您好|你好)[\s,!.:~]*",
    r"老师好[\s,!.:~]*",
    r"(?:请帮忙|请帮我|帮帮我|帮我看看|帮我|请教一下|请教|请问|麻烦(?:你|您)?|求助|求解答|求答案|求解)[\s,!.:~]*",
    r"(?:谢谢(?:老师|您|你|了|啦)?|多谢|感谢)[\s,!.:~]*",
    r"急+[\s,!.:~]*$",
    r"[啊呀呢吧哦嘛啦]+(?=\s*(?:[?.!,]|$))",
]
_FILLER_RES = [re.compile(p) for p in _FILLER_PATTERNS]

_EN_SYNONYMS = [
    (r"\bw/o\b", "without"),
    (r"(?<![A-Za-z])[cC]\+\+", "cpp"),
    (r"(?<![A-Za-z])[cC]#", "csharp"),
    (r"\bw/", "with "),
    (r"&", " and "),
    (r"\bwhat's\b|\bwhats\b", "what is"),
    (r"\bthat's\b", "that is"),
    (r"\bthere's\b", "there is"),
    (r"\bhow's\b", "how is"),
    (r"\bit's\b", "it is"),
    (r"\bcan't\b|\bcannot\b", "can not"),
    (r"\bwon't\b", "will not"),
    (r"n't\b", " not"),
    (r"\bavg\b", "average"),
    (r"\bhrs?\b", "hours"),
    (r"\bmins\b", "minutes"),
    (r"\bsecs?\b", "seconds"),
    (r"\byrs?\b", "years"),
    (r"\bppl\b", "people"),
    (r"\bprob\b", "probability"),
    (r"\bno\.\s*(?=\d)", "number "),
    (
        r"\b(centi|milli|kilo|deci)?metres?\b",
        lambda m: (m.group(1) or "") + "meter" + ("s" if m.group().endswith("s") else ""),
    ),
    (
        r"\b(milli)?litres?\b",
        lambda m: (m.group(1) or "") + "liter" + ("s" if m.group().endswith("s") else ""),
    ),
    (r"\bday of (?:the )?week\b|\bweek ?day\b", "weekday"),
    (r"\bsquare root of\b", "sqrt"),
    (r"\bsqrt\s*\(\s*([^()]{1,20}?)\s*\)", r"sqrt \1"),
    (r"\bto the power of\b|\braised to(?: the power of)?\b", "^"),
    (r"\b(km|dm|cm|mm|m|ft|feet|yd|inches)\^2(?![\d])", r"square \1"),
    (r"\b(km|dm|cm|mm|m|ft|feet|yd|inches)\^3(?![\d])", r"cubic \1"),
    (r"\bin\^2(?![\d])", "square inches"),
    (r"\bin\^3(?![\d])", "cubic inches"),
    (r"\b(?:the )?square of\b", "^2 of"),
    (r"\b(?:the )?cube of\b", "^3 of"),
    (r"\bsquared\b", "^2"),
    (r"\bcubed\b", "^3"),
    (r"\b(?:a|one) decade\b", "10 years"),
    (r"\b(?:a|one) century\b", "100 years"),
    # "the two shops" names two things already counted, as "both shops" does (see "the two of them")
    (r"\bthe (?:two|2) (?!of\b)(?=[a-z])", "both "),
    (r"\bper cent\b", "percent"),
    (r"\bpercentage\b", "percent"),
    (r"\bfalls on\b|\blands on\b", "is"),
    (r"\bcomes? next\b", "is next"),
    (r"\bshow that\b|\bshow\b(?= (?:adding|whenever|any|every|the))", "prove that"),
    (r"\bhow (?:do|can|would) (?:you|i|we|one) prove\b", "prove"),
    (r"\bjan\.?(?=\s*\d)", "january"),
    (r"\bfeb\.?(?=\s*\d)", "february"),
    (r"\bmar\.?(?=\s*\d)", "march"),
    (r"\bapr\.?(?=\s*\d)", "april"),
    (r"\bjun\.?(?=\s*\d)", "june"),
    (r"\bjul\.?(?=\s*\d)", "july"),
    (r"\baug\.?(?=\s*\d)", "august"),
    (r"\bsept?\.?(?=\s*\d)", "september"),
    (r"\boct\.?(?=\s*\d)", "october"),
    (r"\bnov\.?(?=\s*\d)", "november"),
    (r"\bdec\.?(?=\s*\d)", "december"),
]
_EN_SYNONYM_RES = [(re.compile(p), r) for p, r in _EN_SYNONYMS]

_ZH_SYNONYMS = [
    (r"礼拜", "星期"),
    (r"星期天", "星期日"),
    (r"周([一二三四五六日天几])(?![一二三四五六七八九十])", r"星期\1"),
    (r"星期日", "sunday "),
    (r"星期一", "monday "),
    (r"星期二", "tuesday "),
    (r"星期三", "wednesday "),
    (r"星期四", "thursday "),
    (r"星期五", "friday "),
    (r"星期六", "saturday "),
    (r"元旦", "1月1日"),
    (r"公约数", "公因数"),
    (r"素数", "质数"),
    (r"兔子", "兔"),
    (r"无限", "无穷"),
    (r"(\d+(?:\.\d+)?)\s*块\s*(\d+(?:\.\d+)?)\s*毛", r"\1元\2角"),
    (r"是(\d+)的倍数", r"能被\1整除"),
    (r"根号\s*", "sqrt "),
    (r"(?:请|试|试着|如何|怎么|怎样)证明", "证明"),
    (r"的平方(?![米分厘千])", "^2"),
    (r"的立方(?![米分厘千])", "^3"),
]
_ZH_SYNONYM_RES = [(re.compile(p), r) for p, r in _ZH_SYNONYMS]

# --------------------------------------------------------------------------------------------------
# Numbers: Chinese numerals
# --------------------------------------------------------------------------------------------------

_CN_RUN = f"[{CN_NUMERAL_CHARS}]+"
# a number written in digits or Chinese numerals, matched only from its first character (the look-behind
# keeps long digit runs linear instead of retrying from every position)
_NUM = rf"(?<![\d.{CN_NUMERAL_CHARS}])(?:\d+(?:\.\d+)?|{_CN_RUN})"

# Words whose characters look like numerals but are not numbers here. They are hidden during the
# numeral pass and restored afterwards; some become a math term instead (三角形 → triangle).
_ZH_NOT_NUMBERS = [
    "一些", "一起", "一样", "一边", "一直", "一定", "一般", "一共", "一旦", "一下", "一切", "一致",
    "一同", "统一", "唯一", "万一", "一会", "一点儿", "一面", "一生", "一向", "一再", "一律", "一心",
    "一流", "一时", "一一", "一模一样", "十分", "千万", "一元二次方程", "一元一次方程", "二元一次方程",
    "二次函数", "一次函数", "二次方程", "三角形", "平行四边形", "四边形", "三角函数", "乱七八糟",
    "七上八下", "三番五次", "五颜六色", "一五一十", "九九", "一口气", "一旁", "一律", "一带",
    "千克", "千米", "千瓦", "千卡", "万物", "百分之几", "几分之几", "十位", "百位", "千位", "万位",
    "一元一次", "二元", "不一", "第一时间", "一举", "之一", "一番", "统一", "两两", "一一对应",
    # "the two of them": the 2 only repeats that two people are named (甲乙两人 = A and B)
    "两人", "俩人", "二人", "两个人", "我俩", "他俩", "她俩", "两队", "母女俩", "父子俩", "母子俩",
    "我们两个", "我们俩", "他们两个", "她们两个", "你们两个", "是不是", "是否", "能不能", "会不会", "有没有", "可不可以",
]  # fmt: skip
_ZH_NOT_NUMBERS.sort(key=len, reverse=True)
# The measure words and units a bare numeral may count ("零个", "零度", "两根"): after them a 零 is
# the number 0; before any other character it is the first half of a word (零件, 零钱, 零食, 零售).
_ZH_COUNTERS = (
    "个只条辆人名支本块张次位头枚颗件根片封段袋套盒包瓶杯棵朵粒座台部架间把双份篇首道题箱筐堆层页匹"
    "口顶项场批元角分毛度岁天年月日时秒米克斤吨升亩倍点"
)
_CN_NOT_ZERO = (
    rf"(?<![\d.{CN_NUMERAL_CHARS}点])零(?![\d{CN_NUMERAL_CHARS}点{_ZH_COUNTERS}])(?=[{_CJK}])"
)
# 零件 and 零头 begin with a measure word but are words all the same
_ZH_ZERO_WORDS = r"零件|零部件|零头|零点儿"
# "之一" is "one of" (其中之一) except in a fraction: 三分之一 is 1/3
_ZH_NOT_NUMBERS_RE = re.compile(
    "|".join(re.escape(w) if w != "之一" else r"(?<!分)之一" for w in _ZH_NOT_NUMBERS)
    + f"|{_ZH_ZERO_WORDS}|{_CN_NOT_ZERO}"
    # 俩 and 仨 after a noun are "the two (three) of them": 姐妹俩, 兄弟仨, 他们俩
    + rf"|(?<=[{_CJK}])(?<![{CN_NUMERAL_CHARS}这那有])[俩仨](?![十百千万亿拾佰仟{_ZH_COUNTERS}])"
)


def _cn_number(text: str) -> str | None:
    """A Chinese numeral or digits (possibly with 万/亿) as a decimal string."""
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return text
    value = parse_cn_numeral(
        text
    )  # None beyond lexicon.MAX_NUMERAL_CHARS: nobody writes that in words
    return None if value is None else str(value)


def _fraction_text(numerator: str, denominator: str) -> str:
    return f"{numerator}/{denominator}"


def _zh_numbers(text: str) -> str:
    """Every Chinese numeral form in `text` written in digits."""
    hidden: list[str] = []

    def hide(m: re.Match[str]) -> str:
        hidden.append(m.group())
        return f"\ue000{len(hidden) - 1}\ue001"

    # 周 is a week only where time is spoken of (一周后, 每周, 3周, 周一); 四周 is "all around" (池塘四周
    # 种树: the perimeter) unless a time word stands next to it (四周后, 用了四周)
    text = re.sub(
        r"(?<![过用花需要经续持第每这那前后近头了再])四周(?![后前内以之里时共])", "周围", text
    )
    # 零下5度 is −5 degrees: the sign is written onto the number
    text = re.sub(rf"零下\s*(?=\d|[{CN_NUMERAL_CHARS}])", " -", text)
    text = _ZH_NOT_NUMBERS_RE.sub(hide, text)

    def sub_num(pattern: str, build) -> None:
        nonlocal text

        def repl(m: re.Match[str]) -> str:
            result = build(m)
            return m.group() if result is None else result

        text = re.sub(pattern, repl, text)

    def pct(m: re.Match[str]) -> str | None:
        value = _cn_decimal(m.group(1))
        return None if value is None else f"{value}%"

    sub_num(rf"百分之({_NUM}(?:点[{CN_NUMERAL_CHARS}]+)?)", pct)

    def frac(m: re.Match[str]) -> str | None:
        den, num = _cn_number(m.group(1)), _cn_number(m.group(2))
        return None if den is None or num is None else _fraction_text(num, den)

    sub_num(rf"({_NUM})分之({_NUM})", frac)

    def half_after(m: re.Match[str]) -> str | None:
        whole = _cn_number(m.group(1))
        return None if whole is None else f"{whole}.5"

    sub_num(rf"({_NUM})个半", half_after)
    text = re.sub(r"一半", "1/2", text)
    text = re.sub(
        r"(?<![\d.])半(?=个|小时|天|年|月|斤|价|圈|周|分钟|米|公里|千米|杯|瓶|箱)", "0.5", text
    )
    text = re.sub(r"个0\.5", "0.5个", text)

    def decimal(m: re.Match[str]) -> str | None:
        return _cn_decimal(m.group())

    sub_num(rf"(?<![{CN_NUMERAL_CHARS}]){_CN_RUN}点[零〇一二三四五六七八九]+", decimal)

    # 3万 → 30000, 1.5万 → 15000, 2千 → 2000 (千米/千克 are hidden above)
    def scaled(m: re.Match[str]) -> str:
        value = Fraction(m.group(1)) * {"万": 10**4, "亿": 10**8, "千": 1000, "百": 100}[m.group(2)]
        return _format_fraction(value)

    text = re.sub(r"(?<![\d.])(\d{1,15}(?:\.\d{1,15})?)(万|亿|千|百)", scaled, text)

    def plain(m: re.Match[str]) -> str | None:
        value = _cn_number(m.group())
        if value is None:
            return None
        if m.group() == "零" and m.string[m.end() : m.end() + 1].isdigit():
            return ""  # 2小时零15分 = 2小时15分
        # keep converted numbers apart from neighbouring digits: 用1、2、3、4四个数字 -> "4 4个"
        before = " " if m.start() > 0 and m.string[m.start() - 1].isdigit() else ""
        after = " " if m.end() < len(m.string) and m.string[m.end()].isdigit() else ""
        return f"{before}{value}{after}"

    sub_num(_CN_RUN, plain)

    # 七五折 / 75折 / 8折 / 8.5折: the share of the price that is paid, in percent
    def discount(m: re.Match[str]) -> str:
        raw = m.group(1)
        value = Fraction(raw)
        if "." in raw or value < 10:
            value *= 10
        return f"{_format_fraction(value)}%"

    text = re.sub(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3})?)折", discount, text)
    text = re.sub(r"零(?=\d)", "", text)  # 2小时零15分 = 2小时15分
    # 再过3年 = 3年后; 2小时15分 = 2小时15分钟
    text = re.sub(
        r"再过\s*(\d+(?:\.\d+)?)\s*(个)?(天|年|小时|分钟|周|星期|月|秒)", r"\1\2\3后", text
    )
    text = re.sub(r"(\d)\s*(个)?小时\s*(\d+)\s*分(?![钟之])", r"\1\2小时\3分钟", text)
    text = re.sub(r"\ue000(\d+)\ue001", lambda m: hidden[int(m.group(1))], text)
    # going once around something is a lap, not a week: 绕操场跑一周, 沿着花坛走1周 = 1圈
    text = re.sub(
        r"((?:绕|沿|围绕|环绕|围着|转|走|跑|游|骑)[^,.;?!\d]{0,12}?)(\d+(?:\.\d+)?)\s*周(?![一二三四五六日天几末岁长])",
        r"\1\2圈",
        text,
    )
    return _restated_counts(text)


# A count that only restates how many things are already named or listed is not a given: 甲乙两人 and
# "A and B" say the same, as do 甲、乙、丙三人 and "A, B and C", 这两个数 and "the numbers", 两车相遇 and
# "the trains meet", 姐妹俩 and "the sisters" (the English reader writes "the two shops" as "both
# shops" for the same reason). Such a count is written back as a Chinese numeral character, which no
# reader counts. What counts as restating: a count right after 这/那/该 (the things were introduced
# before), a count equal to the number of names listed right before it (AB两个仓库, ABC三人), 2 before
# a reciprocal word (两车相遇, 两个球颜色相同, 两根水管一起开: "both"), and the number of digits of an
# N-digit number said again (一个三位数 … 三个数字的和).
_ZH_SMALL_NUMERALS = "零一两三四五六七八九十"
_ZH_COUNT_WORDS = "个张人管辆只条位名队列地车次根台艘家所座组"
_ZH_RECIPROCAL = "都|同时|一起|合作|相向|相背|相距|相遇|相撞|相同|同色|一样|相等|相交|共同"
_ZH_NOT_A_NOUN = "小时|钟头|分钟|星期|月|天|年|周|秒|岁|元|米"


def _zh_count_word(m: re.Match[str], group: int = 1) -> str:
    value = int(m.group(group))
    text = m.group()
    start, end = m.span(group)
    word = _ZH_SMALL_NUMERALS[value] if value <= 10 else m.group(group)
    return text[: start - m.start()] + word + text[end - m.start() :]


def _restated_counts(text: str) -> str:
    # after a demonstrative: 这两个数, 这个三位数, 那三天 (not 这1个: the article)
    text = re.sub(r"(?:这|那|该|此)个?\s*([2-9]|10)(?![\d.%])", _zh_count_word, text)

    # the names listed right before: AB2个仓库, A、B、C3人, A和B2人
    def names(m: re.Match[str]) -> str:
        listed = len(re.findall(r"[A-H]", m.group(1)))
        return _zh_count_word(m, 2) if listed == int(m.group(2)) else m.group()

    text = re.sub(
        rf"((?<![A-Za-z])[A-H](?:\s*[、,和与及跟]?\s*[A-H])+)(?![A-Za-z])\s*(\d+)(?=\s*[{_ZH_COUNT_WORDS}])",
        names,
        text,
    )

    # the numbers listed right before: 用1、2、3、4四个数字
    def listed(m: re.Match[str]) -> str:
        items = len(re.findall(r"\d+(?:\.\d+)?", m.group(1)))
        return _zh_count_word(m, 2) if items == int(m.group(2)) else m.group()

    text = re.sub(
        r"((?<![\d.])\d+(?:\.\d+)?(?:\s*[、,和与及]\s*\d+(?:\.\d+)?)+)\s+([2-9]|10)(?=\s*个)",
        listed,
        text,
    )
    # 2 before a reciprocal word ("the two of them", "both"), with a measure word and a short noun
    # between at most: 两车相遇, 两个都是红球, 两根水管一起开, 两个球颜色相同
    text = re.sub(
        rf"(?<![\d.])(2)\s*(?=(?:[{_ZH_COUNT_WORDS}](?!{_ZH_NOT_A_NOUN})[{_CJK}]{{0,3}}?)?(?:{_ZH_RECIPROCAL}))",
        _zh_count_word,
        text,
    )
    text = re.sub(r"(我们|他们|你们|她们)\s*(2)\s*个", lambda m: _zh_count_word(m, 2), text)
    # the digits of an N-digit number: 一个三位数 … 三个数字的和 counts the same three digits
    for n in set(re.findall(r"(?<![\d.])([2-9])位数", text)):
        text = re.sub(rf"(?<![\d.])({n})\s*个数字", _zh_count_word, text)
    return text


def _cn_decimal(run: str) -> str | None:
    if "点" not in run:
        return _cn_number(run)
    whole, _, frac = run.partition("点")
    whole_value = _cn_number(whole)
    if whole_value is None or not frac or any(ch not in CN_DIGITS for ch in frac):
        return None
    return f"{whole_value}." + "".join(str(CN_DIGITS[ch]) for ch in frac)


# --------------------------------------------------------------------------------------------------
# Numbers: English words
# --------------------------------------------------------------------------------------------------

_EN_POLYGONS = {
    "pentagon": 5, "hexagon": 6, "heptagon": 7, "octagon": 8, "nonagon": 9, "decagon": 10,
    "hendecagon": 11, "dodecagon": 12,
}  # fmt: skip


def _en_cardinal(words: list[str]) -> int:
    return parse_en_number(" ".join(words)) or 0


_EN_WORD_RUN_RE = re.compile(
    r"\b(?:" + "|".join(sorted(EN_CARDINAL_WORDS | set(EN_ORDINALS), key=len, reverse=True)) + r")"
    r"(?:(?:\s+|-)(?:and\s+)?(?:"
    + "|".join(sorted(EN_CARDINAL_WORDS | set(EN_ORDINALS), key=len, reverse=True))
    + r"))*\b"
)


def _en_numbers(text: str) -> str:
    """English number words written in digits (thirty-five → 35, two thirds → 2/3, sixth → 6th)."""
    for name, sides in _EN_POLYGONS.items():
        text = re.sub(rf"\b{name}s?\b", f"{sides}-sided polygon", text)
    text = re.sub(r"\b(?:a|one) dozen\b", "12", text)
    text = re.sub(r"\bthe (?:two|2) of (us|them|you)\b", r"both of \1", text)
    text = re.sub(r"\b(?:a|one) (hundred|thousand|million)\b", r"one \1", text)
    text = re.sub(r"\btwice\b", "2 times", text)
    text = re.sub(r"\bthrice\b", "3 times", text)
    text = re.sub(r"\bdouble\b(?! (?:quotes?|check|digits?|letters?))", "2 times", text)
    text = re.sub(r"\btriple\b", "3 times", text)

    def run(m: re.Match[str]) -> str:
        words = [w for w in re.split(r"[\s-]+", m.group()) if w and w != "and"]
        # "and" joins only after hundred/thousand: "five and six" are two numbers
        if len(words) > 1 and " and " in m.group():
            parts = re.split(r"\s+and\s+", m.group())
            if not all(
                re.search(r"(?:hundred|thousand|million|billion)$", p.strip()) for p in parts[:-1]
            ):
                return " and ".join(run(re.match(r".*", p.strip())) for p in parts)  # type: ignore[arg-type]
        ordinal = words[-1] in EN_ORDINALS and words[-1] not in EN_CARDINAL_WORDS
        # a cardinal followed by a denominator word is a fraction: "two thirds"
        if ordinal and len(words) >= 2 and words[-1] in EN_DENOMINATORS:
            numerator = _en_cardinal(words[:-1])
            return f"{numerator}/{EN_DENOMINATORS[words[-1]]}"
        if ordinal:
            head = _en_cardinal(words[:-1]) if len(words) > 1 else 0
            last = EN_ORDINALS[words[-1]]
            if words[-1] == "second" and len(words) == 1:
                return m.group()  # "second" alone is resolved below (ordinal or unit)
            if words[-1] in ("hundredth", "thousandth"):
                value = max(head, 1) * last
            else:
                value = head + last
            return f"{value}th"
        return str(_en_cardinal(words))

    # "a third", "an eighth", "one-quarter" are fractions unless an ordinal noun follows ("a third time");
    # this runs before the ordinals become "8th" below
    text = re.sub(
        r"\b(?:an?|one)[\s-]+(third|quarter|fourth|fifth|sixth|seventh|eighth|ninth|tenth)\b(?![\s-]+(?:term|day|person|number|digit|place|time|grade|floor|row|round|year|week|month|century|one|child|son|daughter|house|car|book|attempt|try|game|prize|quarter))",
        lambda m: f"1/{EN_DENOMINATORS[m.group(1)]}",
        text,
    )
    text = re.sub(  # "1.5 million"
        r"\b(\d+(?:\.\d+)?) (million|billion)\b",
        lambda m: _format_fraction(Fraction(m.group(1)) * EN_SCALES[m.group(2)]),
        text,
    )
    text = _EN_WORD_RUN_RE.sub(run, text)
    # plural denominators after digits: "2 thirds", "2-thirds" (the numerator already in digits)
    text = re.sub(
        r"\b(\d+)[\s-]+(thirds|quarters|fourths|fifths|sixths|sevenths|eighths|ninths|tenths|halves)\b",
        lambda m: f"{m.group(1)}/{EN_DENOMINATORS[m.group(2)]}",
        text,
    )
    text = re.sub(
        r"\b(?:1)\s+(third|quarter|fourth|fifth|sixth|seventh|eighth|ninth|tenth)\b(?!\s+(?:term|day|person|number|digit|place|time))",
        lambda m: f"1/{EN_DENOMINATORS[m.group(1)]}",
        text,
    )
    text = re.sub(r"\bthe second\b", "the 2nd", text)
    text = re.sub(r"\b(\d+)\s+and\s+(?:a\s+)?half\b", lambda m: f"{m.group(1)}.5", text)
    text = re.sub(r"\bhalf\s+(?:an?|of\s+an?)\b", "0.5", text)
    text = re.sub(r"\b(?:a|one|1)\s+half\b", "0.5", text)
    text = re.sub(r"\bhalf past (\d+)\b", r"\1:30", text)
    text = re.sub(r"\bhalf\b", "1/2", text)
    return text


# --------------------------------------------------------------------------------------------------
# Numbers: digits
# --------------------------------------------------------------------------------------------------


def _format_fraction(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    text = f"{as_float:.6f}".rstrip("0").rstrip(".")
    if Fraction(text) == value:
        return text
    return f"{value.numerator}/{value.denominator}"


_MONTHS = [
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december",
]  # fmt: skip


def _digit_forms(text: str) -> str:
    """Thousands separators, mixed numbers, ordinals, percent words, months, digit/letter spacing."""
    text = re.sub(
        r"(?<![\d.,])(\d{1,3})((?:,\d{3})+)(?![\d,])",
        lambda m: m.group(1) + m.group(2).replace(",", ""),
        text,
    )

    # mixed numbers: 2 1/2 -> 2.5 (only proper fractions)
    def mixed(m: re.Match[str]) -> str:
        whole, num, den = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if den == 0 or num >= den:
            return m.group()
        return _format_fraction(whole + Fraction(num, den))

    text = re.sub(r"(?<![\d./])(\d{1,15})\s+(\d{1,15})/(\d{1,15})(?![\d/])", mixed, text)
    text = re.sub(r"(?<!\d)(\d+)\s*(?:st|nd|rd|th)\b", r"\1th", text)
    text = re.sub(r"(\d)\s*(?:percent|pct)\b", r"\1%", text)
    text = re.sub(r"\bwhat\s+percent\b", "what %", text)
    # Chinese month numbers become month names (a term, like "march" in English): 3月1日 -> march 1日
    text = re.sub(
        r"(?<![个\d.])(1[0-2]|[1-9])月(?=\s*\d+\s*[日号]|份)",
        lambda m: f" {_MONTHS[int(m.group(1)) - 1]} ",
        text,
    )
    text = re.sub(r"(?<=年)(1[0-2]|[1-9])月", lambda m: f" {_MONTHS[int(m.group(1)) - 1]} ", text)
    text = re.sub(r"\bmay\b(?=\s*\d)", "may", text)
    return text


_AGE_CONTEXT_RE = re.compile(r"\bhow old\b|\bages?\b|\byears? old\b|\b(?:older|younger)\b|\baged\b")


def _ages(text: str) -> str:
    """An age carries its unit in English as 12岁 does in Chinese: in a question about ages, "Tom is
    12", "aged 12" and "will be 15" say "12 years old"."""
    if not _AGE_CONTEXT_RE.search(text):
        return text
    text = re.sub(r"\baged (\d+(?:\.\d+)?)(?! years?\b)", r"\1 years old", text)
    text = re.sub(r"\b(\d+(?:\.\d+)?)-years?-old\b", r"\1 years old", text)
    return re.sub(
        r"((?:\b(?:is|was|are|were|be|turns?|turned|turning|adds? up to|total(?:s|led)?|equals?)|=)\s*)(\d+(?:\.\d+)?)"
        r"(?=\s*(?:[,.;:?!]|$|and\b|but\b|when\b|now\b|today\b|then\b|this year\b|next\b|in\b|while\b))",
        r"\1\2 years old",
        text,
    )


def _paid(m: re.Match[str], zh: bool = False) -> str:
    off = Fraction(m.group("off"))
    if off > 100:
        return m.group()
    paid = _format_fraction(100 - off)
    return f"打{paid}%" if zh else f"{paid}% price"


def _discounts(text: str) -> str:
    """A discount read as the share of the price that is paid, as 打八折 is (80%): "20% off", "a 20%
    discount", "a discount of 20%", 享受20%的折扣 and 半价 all say the same given as 打八折 / 打五折."""
    text = re.sub(
        r"(?<![\d.])(?P<off>\d+(?:\.\d+)?)\s*%\s*(?:off|discount(?:ed)?|reduction)\b", _paid, text
    )
    text = re.sub(r"\bdiscount of (?P<off>\d+(?:\.\d+)?)\s*%", _paid, text)
    zh = lambda m: _paid(m, zh=True)  # noqa: E731
    text = re.sub(r"打?(?<![\d.])(?P<off>\d+(?:\.\d+)?)\s*%\s*的?(?:折扣|优惠)", zh, text)
    text = re.sub(r"(?:优惠|折扣)(?P<off>\d+(?:\.\d+)?)\s*%", zh, text)
    text = re.sub(r"\bhalf[- ]price\b|\b(?:1/2|0\.5)[- ]price\b|\bhalf off\b", "50% price", text)
    return re.sub(r"0\.5价|半价", "打50%", text)


# --------------------------------------------------------------------------------------------------
# Spacing
# --------------------------------------------------------------------------------------------------


# The metric units written as their symbol in the canonical text, in both languages (千米, kilometers →
# km), so that the embedder and the word check see one token for them.
_SYMBOL_UNITS = (
    "km2",
    "dm2",
    "cm2",
    "mm2",
    "m2",
    "km3",
    "dm3",
    "cm3",
    "mm3",
    "m3",
    "km",
    "dm",
    "cm",
    "mm",
)
_SYMBOL_UNITS += ("kg", "ml")


def _symbol_rewrites() -> tuple[list[tuple[str, str]], list[tuple[re.Pattern[str], str]]]:
    """(Chinese form, symbol) and (English pattern, symbol) pairs, longer forms first (平方千米 before
    千米); "m" and "g" alone are written as symbols only after a number or "how many"."""
    zh: list[tuple[str, str]] = []
    en: list[tuple[str, str]] = []
    for unit_id in _SYMBOL_UNITS:
        found = lexicon.unit(unit_id)
        zh += [(form, found.symbols[0]) for form in found.zh]
        en += [(re.escape(word), found.symbols[0]) for word in found.words]
    zh.sort(key=lambda pair: len(pair[0]), reverse=True)
    en.sort(key=lambda pair: len(pair[0]), reverse=True)
    en += [
        (r"(?<=\d )meters?|(?<=\d)meters?", "m"),
        (r"(?<=\d )grams?", "g"),
        (r"(?<=how many )meters", "m"),
        (r"(?<=how many )grams", "g"),
    ]
    return zh, [(re.compile(rf"(?<![a-z])(?:{p})\b"), symbol) for p, symbol in en]


_ZH_UNIT_SYMBOLS, _EN_UNIT_SYMBOL_RES = _symbol_rewrites()


def _unit_symbols(text: str) -> str:
    """Length, area, volume and mass units written as symbols in both languages (千米, kilometers → km)."""
    for word, symbol in _ZH_UNIT_SYMBOLS:
        text = text.replace(word, f" {symbol} ")
    text = re.sub(r"(?<=\d)\s*米(?!/)|(?<=多少)米|(?<=成)米|米(?=数)", " m ", text)
    text = re.sub(r"(?<=[km\d])\s*/\s*(?:时|小时)", "/h", text)
    text = re.sub(r"(?<=[m\d])\s*/\s*秒", "/s", text)
    text = re.sub(r"米/秒", "m/s", text)
    text = re.sub(r"km每小时|km/小时", "km/h", text)
    for pattern, symbol in _EN_UNIT_SYMBOL_RES:
        text = pattern.sub(symbol, text)
    return text


def _tidy_spacing(text: str) -> str:
    text = re.sub(r"(\d)([a-z])", r"\1 \2", text)
    text = re.sub(r"(?<=\d) (th)\b", r"\1", text)  # keep "20th" together
    text = re.sub(
        r"([a-z])(\d)",
        lambda m: m.group(1) + (" " if m.group(1) not in "nxyzk^" else "") + m.group(2),
        text,
    )
    text = re.sub(r"([,;:!?])(?=[a-z])", r"\1 ", text)
    text = re.sub(r"(?<=[a-z])\.(?=[a-z])", ". ", text)
    text = re.sub(r"([!?])\1+", r"\1", text)
    text = re.sub(r"\?!|!\?", "?", text)
    text = re.sub(r"\s+", " ", text).strip()
    # a space between Chinese words stands for a comma ("5个人排成一排 甲不站在两端"); next to digits,
    # Latin words or punctuation it is only spacing ("相距 30 千米", "用 python 输出")
    text = re.sub(rf"(?<=[{_CJK}A-Z]) (?=[{_CJK}A-Z])", ",", text)
    text = re.sub(
        rf"(?<=[{_CJK}])\s+(?=[{_CJK}\d(a-z])|(?<=[{_CJK}\d)a-z])\s+(?=[{_CJK}])", "", text
    )
    text = re.sub(r"\s+([,.;:!?)])", r"\1", text)
    text = re.sub(r"\(\s+", "(", text)
    return text


# --------------------------------------------------------------------------------------------------
# normalize()
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def normalize(text: str) -> str:
    """The canonical form of a question: what the cache embeds and compares word by word."""
    text = _clean(text)
    text = _lower_keeping_names(text)
    for pattern, repl in _EN_SYNONYM_RES:
        text = pattern.sub(repl, text)
    for pattern, repl in _ZH_SYNONYM_RES:
        text = pattern.sub(repl, text)
    for _ in range(2):  # greetings may be stacked: "hi! pls help!!"
        for pattern in _FILLER_RES:
            text = pattern.sub(" ", text)
    text = re.sub(
        r"(^|[,.:;?!]\s*)问[:\s]*(?=\S)", r"\1", text
    )  # "..., 问鸡有多少只" -> "..., 鸡有多少只"
    text = _zh_numbers(text)
    text = _en_numbers(text)
    text = _digit_forms(text)
    # "these 3 numbers", "those 2 days" restate a count, as 这三个数 does (see _restated_counts)
    text = re.sub(r"\b(these|those) (?:[2-9]|10) (?=[a-z])", r"\1 ", text)
    text = _discounts(text)
    text = _ages(text)
    text = _unit_symbols(text)
    text = _tidy_spacing(text)
    text = re.sub(r"^(?:[\s,.:;!?]|-(?!\d))+", "", text)
    return text


# --------------------------------------------------------------------------------------------------
# Signature pieces: numbers
# --------------------------------------------------------------------------------------------------

_MAX_DIGITS = 40


def _exact(text: str) -> Fraction:
    """The value of a decimal numeral; absurdly long ones get a stand-in that keeps them distinct."""
    if len(text) <= _MAX_DIGITS:
        return Fraction(text)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Fraction(10**_MAX_DIGITS + int(digest, 16))


_NUMBER_RE = re.compile(r"(?<![a-z\d.])(\d+(?:\.\d+)?)(?:/(\d+(?:\.\d+)?))?(?![\d])")


def _is_negative_sign(canonical: str, start: int) -> bool:
    """A minus written onto the number: "-3", "of -3", "(-3)", "= -3"; not "5-3" or "5 - 3"."""
    before = canonical[:start]
    if not before.endswith("-"):
        return False
    head = before[:-1]
    if not head.strip():
        return True
    if head[-1] == " ":  # "x -3" is negative unless a number or a bracket stands before: "5 -3"
        prev = head.rstrip()[-1:]
        return not (prev.isdigit() or prev in ")]")
    return head[-1] in "([=,:<>^*/×÷"


def _numbers(canonical: str) -> list[Fraction]:
    """The given values of a canonical text (see `quantities`, which reads them with their units)."""
    return [q.value for q in quantities(canonical)]


# --------------------------------------------------------------------------------------------------
# Signature pieces: units
# --------------------------------------------------------------------------------------------------


# The units come from `solver.lexicon`; what is read here is where a form counts as a unit. English
# words match after a number, after per/a/an/each/every/how many/in/into/to, or anywhere when plural;
# symbols only right after a number or "/" or "per"; Chinese single characters (and the lexicon's
# `zh_counted` forms) only right after a number or 每/几/多少. A compound unit is read as its parts
# ("km/h", "千米/时" and "每小时…千米" all give km and h), so only the compound symbols that cannot be
# split where they stand (kph, mph) are forms of their own here.
def _reader_forms() -> tuple[dict[str, str], dict[str, str], set[str]]:
    """(English form → id, Chinese form → id, the forms that need a number before them)."""
    en: dict[str, str] = {}
    zh: dict[str, str] = {"%": "%"}  # the percent sign after Chinese words too: 提高了多少%
    counted: set[str] = set()
    for found in lexicon.UNITS:
        if found.parts:
            en |= {form: found.id for form in found.symbols if "/" not in form}
            continue
        rates = [form for form in found.rate_forms if form.isascii()]
        en |= {form: found.id for form in found.words + found.symbols + tuple(rates)}
        zh |= {form: found.id for form in found.zh + found.zh_counted}
        zh |= {form: found.id for form in found.rate_forms if not form.isascii()}
        counted |= set(found.zh_counted)
    return en, zh, counted


_EN_UNIT_FORMS, _ZH_UNIT_FORMS, _ZH_SHORT_UNITS = _reader_forms()
_UNIT_SYMBOLS = frozenset(form for u in lexicon.UNITS for form in u.symbols)
# Chinese forms that are units only before certain characters: 5块 is money, 一块蛋糕 a piece; 分之 is
# a fraction
_ZH_FORM_AFTER = {"块": r"(?=[\d,.;:!?]|$)", "分": r"(?![钟之])"}


def _alternation(forms: dict[str, str], after: dict[str, str] | None = None) -> str:
    ordered = sorted(
        forms, key=len, reverse=True
    )  # 平方千米 before 千米, "years old" before "years"
    return "|".join(re.escape(f) + (after or {}).get(f, "") for f in ordered)


_EN_UNIT_RE = re.compile(rf"(?<![a-z])(?:{_alternation(_EN_UNIT_FORMS)})(?![a-z²³])")
_ZH_UNIT_RE = re.compile(_alternation(_ZH_UNIT_FORMS, _ZH_FORM_AFTER))


def _unit_ids(form: str, table: dict[str, str]) -> tuple[str, ...]:
    """The unit ids a matched form stands for: its own, or a compound's parts (kph → km, h)."""
    found = lexicon.unit(table[form])
    return found.parts or (found.id,)


_UNIT_CONTEXT_BEFORE_RE = re.compile(
    r"(?:\d|\d\s|\d-|/\s*|\bper\s|\ban?\s|\beach\s|\bevery\s|\bhow many\s|\bhow much\s|\bin\s|\binto\s|\bto\s|\bof\s|\bsquare\s|\bcubic\s|\bwhat\s|\b(?:number|count) of\s)$"
)
_ZH_UNIT_CONTEXT_BEFORE_RE = re.compile(
    r"(?:\d|\d\s|[每几成(]|多少|[几多]个|\d个|\d多|\d余|个|0\.5|/|\d分|输入|返回|输出)$"
)


def _units(canonical: str) -> set[str]:
    found: set[str] = set()
    # English (and symbols): need a context unless the word is an unambiguous plural
    for m in _EN_UNIT_RE.finditer(canonical):
        unit_ids = _unit_ids(m.group(), _EN_UNIT_FORMS)
        unit_id = unit_ids[0]
        # the rules look at the first word: "years old" is the plural "years"
        word = m.group().split(" ")[0] if " " in m.group() else m.group()
        before = canonical[max(0, m.start() - 16) : m.start()]
        has_context = bool(_UNIT_CONTEXT_BEFORE_RE.search(before))
        is_symbol = m.group() in _UNIT_SYMBOLS or len(m.group()) <= 3
        if canonical[m.end() : m.end() + 1] == "数" or _CJK_RE.match(before.rstrip()[-1:] or "x"):
            pass  # "km数" (a number of kilometres); a symbol inside Chinese text came from 千米, 厘米, ...
        elif is_symbol:
            if not re.search(
                r"(?:\d\s?|\d-|/\s?|\bper\s|\bin\s|\binto\s|\bhow many\s|\bto\s|多少|成|\()$",
                before,
            ):
                continue
            if word in ("m", "s", "h", "t", "l", "g") and not re.search(
                r"(?:\d\s?|\d-|/\s?|\bper\s|\bhow many\s|多少|成)$", before
            ):
                continue
        elif word == "second" and not has_context:
            continue
        elif (
            not has_context
            and not word.endswith("s")
            and unit_id not in ("degC", "degF", "K", "year")
        ):
            continue
        elif (
            unit_id == "year"
            and word.startswith("year")
            and not has_context
            and not word.endswith("s")
        ):
            continue
        found.update(unit_ids)
    # Chinese
    for m in _ZH_UNIT_RE.finditer(canonical):
        unit_id = _ZH_UNIT_FORMS[m.group()]
        word = m.group()
        before = canonical[max(0, m.start() - 6) : m.start()]
        if word in _ZH_SHORT_UNITS or len(word) == 1:
            if not _ZH_UNIT_CONTEXT_BEFORE_RE.search(before):
                continue
            if word == "年" and re.search(r"\d{4}$", before):
                continue  # 2024年 is a date
            if word == "分":
                # 2小时15分 is minutes; 1元5分 is money; 90分 alone is a score
                window = canonical[max(0, m.start() - 10) : m.start()]
                if re.search(r"小时|时|点", window) or re.search(r"(?:/|[m米]每)$", before):
                    unit_id = "min"  # and 米/分, 米每分: metres a minute
                elif not re.search(r"元|角|块", window):
                    continue
            if word == "度" and re.search(r"(?:多少|几)$", before):
                continue  # "多少度": angles are asked in degrees whether or not the question says so
            if word == "毛" and not re.search(r"[元块]", before):
                continue
            if word == "度" and re.search(r"[速温角长高宽难程态]$", before):
                continue
        found.add(unit_id)
    for m in re.finditer(r"([$¥])\s*\d", canonical):
        found.add("usd" if m.group(1) == "$" else "yuan")
    # compound units written with a slash or 每 ("千米/时", "km/h", "米/秒") already give both halves,
    # except the one-letter Chinese 时 after a slash
    if re.search(r"/\s*时", canonical):
        found.add("h")
    return found


# --------------------------------------------------------------------------------------------------
# Signature pieces: the lexicon of terms, targets and polarity cues
# --------------------------------------------------------------------------------------------------

# Polarity cues (compared as sets): conditions that flip the answer when flipped.
POLARITY_IDS = frozenset(
    {
        "not", "at_least", "at_most", "more", "less", "after", "before", "upstream", "downstream",
        "increase", "decrease", "toward", "away", "same_direction", "different", "or", "fill", "drain",
        "ascending", "descending",
    }
)  # fmt: skip
# Persons: part of the target when the question names one of several people ("how old is Ben").
PERSON_IDS = frozenset(
    {
        "A", "B", "C", "D", "E", "F", "G", "H", "X", "Y", "Z", "father", "mother", "son", "daughter",
        "brother", "sister", "grandfather", "grandmother", "mary", "lily", "alice", "bob", "tom", "jerry",
        "anna", "ben", "sam", "amy", "john", "jack", "lucy", "mike", "peter", "david", "xiaoming",
        "xiaohong", "xiaohua", "xiaogang", "xiaoli", "xiaowang", "xiaozhang", "xiaoqiang", "xiaofang",
        "xiaojun", "xiaoliang", "xiaolin",
    }
)  # fmt: skip
# Quantities that can be the asked thing wherever they appear in the asking clause.
ASKABLE_IDS = frozenset(
    {
        "age", "speed", "distance", "area", "perimeter", "volume", "surface_area", "hypotenuse",
        "price", "original", "saving", "interest", "percent", "fraction", "probability", "ways",
        "weekday", "date", "sum", "difference", "product", "quotient", "average", "next",
        "index", "gcd", "lcm", "each", "red", "blue", "white", "black", "green", "yellow", "which",
        "whole",
        "big", "small",
        # the direction of the asked work: filling a pool or emptying it
        "fill", "drain",
    }
)  # fmt: skip
# Counted things: part of the target only right next to "how many" / 有多少 / 几个 ("how many rabbits").
OBJECT_IDS = frozenset(
    {
        "chicken", "rabbit", "duck", "cow", "sheep", "head", "leg", "pencil", "pen", "notebook", "eraser",
        "marble", "worker", "student", "boy", "girl", "child", "truck", "knight", "knave",
        "ball", "segment", "triangle", "diagonal", "prime", "handshake", "integer", "digit", "card", "ace",
    }
)  # fmt: skip
# Terms a rewording may leave implicit; they do not take part in the terms gate.
SOFT_TERMS = frozenset(
    {
        "sequence", "integer", "consecutive", "student", "people", "length", "width", "height", "digit",
        "python", "function", "program", "print", "job", "time", "speed", "term", "prove", "list",
        "string", "sale", "price", "original", "current", "still_water", "distance", "age", "whether",
        "head", "leg", "same", "all", "exactly", "which", "each", "car", "train", "boat", "bridge",
        "pipe", "pool", "wall", "room", "card", "dice", "coin", "side", "angle", "polygon", "remainder",
        "divisible", "power", "sqrt", "ace", "worker", "next", "repeat",
        "ball", "child", "saving", "row", "weekday", "date", "percent", "fraction",
        "respectively",
        "whole",
    }
)  # fmt: skip

# Programming languages, as they are written in either language's text (C++ and C# are spelled out
# as cpp and csharp by the synonyms, since "C" alone is a name).
_PROGRAMMING_LANGUAGES = {
    "python": r"python|py",
    "javascript": r"javascript|js|node\.?js",
    "typescript": r"typescript",
    "java": r"java",
    "cpp": r"cpp",
    "csharp": r"csharp",
    "golang": r"golang",
    "rust": r"rust(?= (?:code|program|function))|(?<=in )rust|(?<=用)rust",
    "kotlin": r"kotlin",
    "php": r"php",
    "matlab": r"matlab",
}
_LANGUAGE_RE = "|".join(_PROGRAMMING_LANGUAGES.values())

# (ids, English regex or "", Chinese regex or ""). Order matters: earlier entries mask their text, so
# compounds come before their parts (最大公因数 before 最大, 铅笔 before 笔, 小红 before 红).
_LEXICON: list[tuple[tuple[str, ...], str, str]] = [
    # names
    (("xiaoming",), r"xiao ?ming", r"小明"),
    (("xiaohong",), r"xiao ?hong", r"小红"),
    (("xiaohua",), r"xiao ?hua", r"小华"),
    (("xiaogang",), r"xiao ?gang", r"小刚"),
    (("xiaoli",), r"xiao ?li", r"小李|小丽"),
    (("xiaowang",), r"xiao ?wang", r"小王"),
    (("xiaozhang",), r"xiao ?zhang", r"小张"),
    (("xiaoqiang",), r"xiao ?qiang", r"小强"),
    (("xiaofang",), r"xiao ?fang", r"小芳"),
    (("xiaojun",), r"xiao ?jun", r"小军"),
    (("xiaoliang",), r"xiao ?liang", r"小亮"),
    (("xiaolin",), r"xiao ?lin", r"小林"),
    (("mary",), r"mary", r"玛丽"),
    (("lily",), r"lily", r"莉莉"),
    (("alice",), r"alice", r"爱丽丝"),
    (("bob",), r"bob", r"鲍勃"),
    (("tom",), r"tom", r"汤姆"),
    (("jerry",), r"jerry", r"杰瑞"),
    (("anna",), r"anna", r"安娜"),
    (("ben",), r"ben", ""),
    (("sam",), r"sam", r"萨姆"),
    (("amy",), r"amy", r"艾米"),
    (("john",), r"john", r"约翰"),
    (("jack",), r"jack", r"杰克"),
    (("lucy",), r"lucy", r"露西"),
    (("mike",), r"mike", r"迈克"),
    (("peter",), r"peter", r"彼得"),
    (("david",), r"david", r"大卫"),
    # yes/no question forms that contain a negation character
    (("whether",), r"whether", r"是不是|是否|能不能|会不会|有没有|可不可以|对不对"),
    # logic puzzles
    (("knight",), r"knights?", r"骑士"),
    (("knave",), r"knaves?", r"无赖"),
    (("truth",), r"truth|truthful|tells? the truth|never lies?", r"真话|实话|说真|诚实"),
    (("lie",), r"lies|lie|liars?|lying", r"假话|谎话|撒谎|说谎|说假"),
    (("thief",), r"thief|thieves", r"小偷"),
    # vocabulary with a built-in negation
    (("not", "rational"), r"irrational", r"无理数"),
    (("rational",), r"rational", r"有理数"),
    (
        ("not", "replacement"),
        r"without (?:replacement|replacing|putting (?:it |them |the \w+ (?:one )?)?back)",
        r"不放回",
    ),
    (
        ("replacement",),
        r"with replacement|replac(?:ed|ing) (?:it|them)|put (?:it |them )?back",
        r"放回",
    ),
    (("gcd",), r"greatest common (?:divisor|factor)|highest common factor|gcd|hcf", r"最大公因数"),
    (("lcm",), r"least common multiple|lowest common multiple|lcm", r"最小公倍数"),
    (("perfect_square",), r"perfect squares?|square numbers?", r"完全平方数|平方数"),
    (("prime",), r"primes?|prime numbers?", r"质数"),
    (("infinite",), r"infinitely|infinite|infinity", r"无穷|无限"),
    (("quadratic",), r"quadratic", r"一元二次方程|二次方程|二次函数"),
    (("case",), r"case(?:-| )?(?:sensitive|insensitive)?|upper ?case|lower ?case", r"大小写"),
    (
        ("ascending",),
        r"ascending|increasing order|(?:smallest|lowest) to (?:largest|highest)|low to high",
        r"从小到大|由小到大|升序",
    ),
    (
        ("descending",),
        r"descending|decreasing order|(?:largest|highest) to (?:smallest|lowest)|high to low",
        r"从大到小|由大到小|降序",
    ),
    (("same_direction",), r"(?:in )?the same direction", r"同向|同方向"),
    (("toward",), r"toward(?:s)? each other", r"相向"),
    (("away",), r"opposite directions?|away from each other", r"相背|背向|反向"),
    (
        ("at_least",),
        r"at least|no (?:fewer|less) than|not (?:fewer|less) than|minimum|smallest|least|fewest|lowest|youngest|shortest",
        r"至少|最少|不少于|不低于|不小于|最小|最低|最短|最年轻|>=",
    ),
    (
        ("at_most",),
        r"at most|no more than|not more than|maximum|largest|greatest|biggest|highest|oldest|longest|most",
        r"至多|最多|不超过|不多于|不大于|不高于|最大|最高|最长|最年长|<=",
    ),
    (
        ("ways",),
        r"(?:different |distinct )?ways|(?:different |distinct )?arrangements",
        r"(?:多少种|几种)(?:不同的)?(?:选法|排法|站法|方法|取法|走法|结果)?|不同的(?:选法|排法|站法|方法|取法|走法)|选法|排法|站法|方法",
    ),
    # "not the same kind" is "different kinds": 不是同一类人 and "different types" say one condition
    (
        ("different",),
        r"different|distinct|differ|not (?:of )?the same",
        r"不同|不一样|互不相同|不是同[1一]|不是1类|不属于同[1一]|不在同[1一]",
    ),
    (
        ("not", "repeat"),
        r"no repeated|without repeat(?:ed|ing|s)?|non-?repeating",
        r"没有重复|不重复|不能重复|无重复",
    ),
    (("repeat",), r"repeated|repeat(?:s|ing)?", r"重复"),
    (("exactly",), r"exactly", r"恰好|恰有|正好|刚好"),
    (("respectively",), r"respectively", r"分别|区别|特别|别人|别的|差别"),
    (
        ("not",),
        r"not|never|no|none|neither|nor|nobody|nothing|without|excluding|except",
        r"不|没有|没|非(?!常)|无法|无|未|别|勿",
    ),
    (("or",), r"or|either", r"或者|或|还是|要么"),
    (
        ("more",),
        r"(?<!% )(?:more|greater|larger|bigger|higher|taller|older|longer|heavier|faster)|exceeds?|exceeding|above",
        r"多于|大于|超过|高于|较大|较多|比[^,.?!;]{0,12}?(?:多|大|高|长|重|快|贵|老)(?![^\d,.;?!]{0,3}\d+(?:\.\d+)?%)",
    ),
    (
        ("less",),
        r"(?<!% )(?:fewer|less|smaller|lower|shorter|younger|lighter|slower|cheaper)|below|under",
        r"少于|小于|低于|较小|较少|比[^,.?!;]{0,12}?(?:少|小|低|短|轻|慢|便宜)(?![^\d,.;?!]{0,3}\d+(?:\.\d+)?%)",
    ),
    (
        ("increase",),
        # a change by a percentage is one condition however it is said: "20% more", "up 20%", "rose
        # by 20%", 多20%, 提高了20%
        r"increases?|increased|rises?|rose|raised?|raises|goes up|went up|go up|grows?|markup|(?<=% )(?:more|greater|larger|bigger|higher)|up(?= (?:by )?\d+(?:\.\d+)?%)",
        r"提价|涨价|上涨|增加|提高|增长|涨了|涨|(?<=比)[^,.?!;]{0,12}?(?:多|大|高|贵)(?=[^\d,.;?!]{0,3}\d+(?:\.\d+)?%)|多(?=了?\d+(?:\.\d+)?%)",
    ),
    (
        ("decrease",),
        r"decreases?|decreased|falls?(?! on)|fell(?! on)|drops?|dropped|goes down|went down|go down|reduced?|discount(?:ed)?|off|cheaper|(?<=% )(?:less|fewer|lower|smaller)|down(?= (?:by )?\d+(?:\.\d+)?%)",
        r"降价|下降|降低|减少|便宜|打折|降了|降|(?<=比)[^,.?!;]{0,12}?(?:少|小|低|便宜)(?=[^\d,.;?!]{0,3}\d+(?:\.\d+)?%)|少(?=了?\d+(?:\.\d+)?%)",
    ),
    (
        ("after",),
        r"from now|later|in \d+(?:\.\d+)? (?:years?|days?|hours?|minutes?|months?|weeks?)(?=[^.?!;]*\b(?:will|would)\b)|in(?= how many (?:years?|days?|hours?|minutes?|months?|weeks?))|after(?= (?:how many )?(?:\d+(?:\.\d+)? )?(?:years?|days?|hours?|minutes?|months?|weeks?))",
        r"(?<=[年天时钟月周期秒岁])(?:以后|之后|后)|再过",
    ),
    (
        ("before",),
        r"ago|earlier|before \d+(?:\.\d+)? (?:years?|days?|hours?)|(?:(?<=years )|(?<=days )|(?<=hours )|(?<=months )|(?<=weeks )|(?<=minutes )|(?<=year )|(?<=day )|(?<=week ))before|before (?:today|now|this)",
        r"(?<=[年天时钟月周期秒岁])(?:以前|之前|前)|往前推|往回推|倒推",
    ),
    (("upstream",), r"upstream|against the current", r"逆流|逆水"),
    (("downstream",), r"downstream|with the current", r"顺流|顺水"),
    (("fill",), r"fills?|filled|filling", r"注满|灌满|进水"),
    (("drain",), r"empties|emptied|emptying|drains?|drained", r"放空|放完|排水|排空|放水"),
    (("same",), r"same|identical|equal", r"同一|相同|一样"),
    (("each",), r"each (?:person|one)|per person|apiece", r"每人|每个人"),
    (("all",), r"all|every|each|any|both", r"所有|全部|都|每|任意|任何"),
    # parity and kinds of numbers
    (("odd",), r"odd", r"奇数|单数"),
    (("even",), r"even(?! if)", r"偶数|双数"),
    (("integer",), r"integers?|whole numbers?", r"整数|自然数"),
    (("digit",), r"digits?|\d+-digit", r"数字|位数"),
    (("consecutive",), r"consecutive", r"连续"),
    # operations
    (
        ("sum",),
        # "the total", "in total" and "altogether" only sum up what is asked ("the total number of
        # cookies" is a count, "the total cost" a price), and "adds 2 cups" is a story's verb: none
        # of them makes a problem a sum
        r"sums?|add(?:ing|ed|s)? up|plus|\d\s*\+\s*\d",
        r"之和|的和|和是|和为|和等于|和多少|总和|加到|相加|加起来|\d\s*\+\s*\d",
    ),
    (("difference",), r"difference|minus", r"之差|的差|差是|差为"),
    (("product",), r"products?|multiplied", r"之积|的积|(?<![面体容])积是|(?<![面体容])积为|乘积"),
    (("quotient",), r"quotient", r"商是|商为|商多少|的商|商等于"),
    (("remainder",), r"remainders?", r"余数|余"),
    (
        ("divisible",),
        r"divisible|divides?|divided (?:evenly )?by|multiples? of|division",
        r"整除|倍数|除以",
    ),
    (("power",), r"\^|powers?|exponent", r"次方|次幂|\^"),
    (("sqrt",), r"sqrt", r"sqrt"),
    (("average",), r"average|mean", r"平均"),
    # sequences
    (("arithmetic",), r"arithmetic", r"等差"),
    (("geometric",), r"geometric", r"等比"),
    (("common_difference",), r"common difference", r"公差"),
    (("common_ratio",), r"common ratio", r"公比"),
    (("fibonacci",), r"fibonacci|fib", r"斐波那契"),
    (("next",), r"next|comes? after", r"下1个|下一个|接下来|下一项|填数|\(\s*\)"),
    (("index",), r"which term|what term|position", r"第几项|第几个"),
    (("term",), r"terms?", r"第\d+项|前\d+项|首项|的项|每项|通项|末项"),
    (("sequence",), r"sequences?|series", r"数列|这列数"),
    # geometry
    (("surface_area",), r"surface area", r"表面积"),
    (("area",), r"areas?", r"面积"),
    (("perimeter",), r"perimeters?|circumference", r"周长"),
    (("volume",), r"volumes?|capacity", r"体积|容积"),
    (("hypotenuse",), r"hypotenuse|hypotnuse", r"斜边"),
    (("right_angle",), r"right(?:-angled| angled)?(?= triangle)", r"直角(?!边)"),
    (("radius",), r"radius|radii", r"半径"),
    (("diameter",), r"diameters?", r"直径"),
    (("diagonal",), r"diagonals?", r"对角线"),
    (("segment",), r"(?:line )?segments?", r"线段"),
    (("interior",), r"interior", r"内角"),
    (("exterior",), r"exterior", r"外角"),
    (("angle",), r"angles?", r"角度|夹角"),
    (("triangle",), r"triangles?", r"三角形"),
    (("parallelogram",), r"parallelograms?", r"平行四边形"),
    (("quadrilateral",), r"quadrilaterals?", r"四边形"),
    (("rectangle",), r"rectangles?|rectangular", r"长方形|矩形"),
    (
        ("square",),
        r"squares?(?! (?:meters?|centimeters?|kilometers?|decimeters?|millimeters?|root|cm|km|dm|mm|m)\b)",
        r"正方形",
    ),
    (("cuboid",), r"cuboids?|rectangular prisms?", r"长方体"),
    (("cube",), r"cubes?", r"正方体|立方体"),
    (("cylinder",), r"cylinders?", r"圆柱"),
    (("cone",), r"cones?", r"圆锥"),
    (("sphere",), r"spheres?", r"球体"),
    (("circle",), r"circles?|circular", r"圆(?![柱锥桌周])"),
    (("polygon",), r"polygons?|\d+-sided|sided", r"边形"),
    (("side",), r"side lengths?|edge lengths?|edges?", r"边长|棱长"),
    (
        ("length",),
        r"length|long(?! (?:does|do|did|will|would|to|it|is it))",
        r"长度|多长(?!时间)|长(?=\d)",
    ),
    (("width",), r"width|wide", r"宽度|宽(?=\d)"),
    (("height",), r"height|tall", r"高度|多高|高(?=\d)"),
    # rates, money, time
    (("still_water",), r"still water", r"静水"),
    (("current",), r"current", r"水流|水速"),
    (("speed",), r"speeds?|velocity|how fast", r"速度|时速|速率|多快"),
    (("distance",), r"distance|how far|far apart|apart", r"距离|路程|相距|多远"),
    (
        ("time",),
        r"how long(?= (?:does|do|did|will|would|to|it|is it))|time|how many (?:hours|days|minutes|seconds|weeks|months|years)",
        r"时间|多久|多长时间|几(?:个)?(?:小时|天|分钟|秒|周|星期|个月|年)|多少(?:个)?(?:小时|天|分钟|秒|周|星期|个月|年)(?!的)",
    ),
    (("age",), r"ages?|how old|years old|as old as", r"年龄|岁数|几岁|多大|多少岁"),
    (("round_trip",), r"round trip|there and back|back and forth", r"往返"),
    (("original", "price"), r"original price|originally|original", r"原价|原来"),
    (("sale", "price"), r"sale price|sale|sold|sells?|selling", r"售价|现价|出售"),
    (
        ("price",),
        r"prices?|costs?|how much (?:does|do|is|are|was|were|money)|how many dollars|unit price|worth",
        r"价格|单价|价钱|多少钱|价",
    ),
    (("saving",), r"save|saving|savings", r"便宜了|节省|省了"),
    (("interest",), r"interest", r"利息"),
    (("percent",), r"what %|% change|percent change", r"百分之几|百分比|百分数"),
    (("fraction",), r"what fraction", r"几分之几"),
    (
        ("whole",),
        r"of what (?:number|amount|value|price|sum)",
        r"是多少的|是哪个数的",
    ),
    (("probability",), r"probability|probabilty|chances?|likelihood|likely", r"概率|可能性|几率"),
    (("ways",), r"combinations|permutations", r""),
    (("weekday",), r"weekday|what day|which day", r"星期几|周几"),
    (("date",), r"what date|which date", r"几月几日|几号|哪天|哪一天"),
    (
        ("which",),
        r"who|which (?:person|one|of them|of us)|what (?:are|is) (?=[A-Z])",
        r"谁|哪个人|哪位|什么人|各是|分别是|身份",
    ),
    (("handshake",), r"handshakes?|shakes? hands", r"握手|握"),
    (("row",), r"(?:in )?a row|in a line|lined up", r"1排|一排|1行|排成|站成"),
    # people seated or standing in a circle; going once around a field (绕…1圈, 1周) is a lap
    (
        ("round_table",),
        r"round table|in a circle|around a table",
        r"圆桌|围坐|(?:围|坐|站|排)成1圈|围着(?:1张)?桌",
    ),
    # days and months
    *[
        ((day,), day, day)
        for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    ],
    *[((month,), month, month) for month in _MONTHS],
    # people and animals
    (("grandfather",), r"grandfathers?|grandpa", r"爷爷|祖父|外公"),
    (("grandmother",), r"grandmothers?|grandma", r"奶奶|祖母|外婆"),
    (("father",), r"fathers?|dad|daddy", r"父亲|爸爸|爸|父"),
    (("mother",), r"mothers?|mom|mum|mummy", r"母亲|妈妈|妈|母"),
    (("son",), r"sons?", r"儿子"),
    (("daughter",), r"daughters?", r"女儿"),
    (("brother",), r"brothers?", r"哥哥|弟弟|兄弟"),
    (("sister",), r"sisters?", r"姐姐|妹妹|姐妹"),
    (("boy",), r"boys?", r"男生|男孩|男同学"),
    (("girl",), r"girls?", r"女生|女孩|女同学"),
    (("child",), r"children|child|kids?", r"孩子|小孩|儿童"),
    (("student",), r"students?|pupils?", r"学生|同学"),
    (("worker",), r"workers?", r"工人"),
    (("people",), r"people|persons?|islanders?", r"人"),
    (("chicken",), r"chickens?|hens?|roosters?", r"鸡"),
    (("rabbit",), r"rabbits?|rabits?|bunn(?:y|ies)", r"兔"),
    (("duck",), r"ducks?", r"鸭"),
    (("cow",), r"cows?|cattle|oxen", r"牛"),
    (("sheep",), r"sheep|goats?", r"羊"),
    (("head",), r"heads?", r"头|正面"),
    (("leg",), r"legs?|feet", r"脚|腿|足|直角边"),
    # things
    (("pencil",), r"pencils?", r"铅笔"),
    (("notebook",), r"notebooks?", r"笔记本|本子"),
    (("pen",), r"pens?", r"笔"),
    (("eraser",), r"erasers?|rubbers?", r"橡皮"),
    (("marble",), r"marbles?", r"弹珠|玻璃球"),
    (("big", "truck"), r"(?:big|large) trucks?", r"大卡车|大车|大货车"),
    (("small", "truck"), r"(?:small|little) trucks?", r"小卡车|小车|小货车"),
    (("truck",), r"trucks?|lorr(?:y|ies)", r"卡车|货车"),
    (("car",), r"cars?|vehicles?", r"汽车|轿车"),
    (("train",), r"trains?", r"火车|列车"),
    (("boat",), r"boats?|ships?", r"船"),
    (("bridge",), r"bridges?", r"桥"),
    (("pipe",), r"pipes?|inlet", r"管"),
    (("pool",), r"tanks?|pools?", r"水池|水箱|池"),
    (("red",), r"red", r"红"),
    (("blue",), r"blue", r"蓝"),
    (("white",), r"white", r"白"),
    (("black",), r"black", r"黑"),
    (("green",), r"green", r"绿"),
    (("yellow",), r"yellow", r"黄"),
    (("ball",), r"balls?", r"球"),
    (("dice",), r"dice|die", r"骰子"),
    (("coin",), r"coins?", r"硬币"),
    (("card",), r"cards?|deck", r"扑克|牌"),
    (("ace",), r"aces?", r""),
    (("job",), r"job|work|project|task", r"工程|工作|任务"),
    (("wall",), r"walls?", r"墙"),
    (("room",), r"rooms?", r"房间"),
    (("celsius",), r"celsius", r"摄氏"),
    (("fahrenheit",), r"fahrenheit", r"华氏"),
    (("kelvin",), r"kelvin", r"开尔文"),
    # coding
    (("python",), r"python|py", r"python"),
    # the other programming languages must agree: a bank of Python answers does not answer "in Java"
    *[
        ((lang,), pattern, pattern)
        for lang, pattern in _PROGRAMMING_LANGUAGES.items()
        if lang != "python"
    ],
    (("function",), r"functions?|def|implement", r"函数"),
    (("program",), r"programs?|script", r"程序"),
    (("print",), r"prints?|output|display", r"打印|输出"),
    (("string",), r"strings?", r"字符串"),
    (("list",), r"lists?|arrays?", r"列表|数组"),
    (("palindrome",), r"palindromes?", r"回文"),
    (("reverse",), r"revers(?:e|es|ed|ing)", r"反转|倒序|逆序|翻转"),
    (("slicing",), r"slic(?:e|es|ing)", r"切片"),
    (("prove",), r"prove|proof", r"证明"),
]

_CONCEPT_ENTRIES: list[tuple[tuple[str, ...], re.Pattern[str] | None, re.Pattern[str] | None]] = [
    (
        ids,
        re.compile(rf"(?<![a-z])(?:{en})(?![a-z])") if en else None,
        re.compile(zh) if zh else None,
    )
    for ids, en, zh in _LEXICON
]


def _concepts(canonical: str) -> list[tuple[str, int]]:
    """(id, position) for every lexicon match, earlier entries masking what they matched."""
    work = canonical
    found: list[tuple[str, int]] = []
    for ids, en_re, zh_re in _CONCEPT_ENTRIES:
        for pattern in (en_re, zh_re):
            if pattern is None:
                continue
            spans = [m.span() for m in pattern.finditer(work) if m.end() > m.start()]
            if not spans:
                continue
            for start, _end in spans:
                for concept in ids:
                    found.append((concept, start))
            chars = list(work)
            for start, end in spans:
                chars[start:end] = "\x00" * (end - start)
            work = "".join(chars)
    # single capital letters are names (A says ..., pipe A, 甲 → A); the canonical text keeps them upper case
    for m in re.finditer(r"(?<![a-z])([A-HJ-Z])(?![a-z])", canonical):
        found.append((m.group(1), m.start()))
    # single lower-case letters are variables (n^2, the k-th person); unit letters (m, s, h, g, l, t) are not
    for m in re.finditer(r"(?<![a-zA-Z'])([b-fjknpqru-z])(?![a-zA-Z'])", canonical):
        found.append((f"var:{m.group(1)}", m.start()))
    return found


def lexicon_ids(canonical: str) -> frozenset[str]:
    """Every id of the bilingual lexicon found in a canonical text (terms, conditions, persons)."""
    return frozenset(c for c, _ in _concepts(canonical))


# --------------------------------------------------------------------------------------------------
# Signature pieces: the asked part of the question
# --------------------------------------------------------------------------------------------------

_EN_STRONG_ASK = r"how|what|which|who|whom|whose|find|calculate|compute|determine|prove|write|implement|convert|count"
_EN_WEAK_ASK = r"is|are|can|could|does|do|did|will|would|should|has|have"
_ASK_RE = re.compile(
    rf"\b(?:{_EN_STRONG_ASK})\b|^\s*(?:{_EN_WEAK_ASK})\b|多少|几|什么|哪|谁|求|吗|是否|是不是|证明|写|输出|打印|判断|换算|转换|化成|等于|如何|怎样|怎么|还是|填|多大|多远|多长|多久|多快|多高"
)
_IMPERATIVE_RE = re.compile(
    rf"\bprove\b|^\s*(?:write|implement|print|use (?:{_LANGUAGE_RE})|in (?:{_LANGUAGE_RE})|given a list)\b|^\s*(?:{_LANGUAGE_RE}):|\bwrite (?:an? |the )?(?:(?:{_LANGUAGE_RE}) )?(?:function|program|script)|证明|用(?:{_LANGUAGE_RE})|^\s*(?:写|编写|给定)|(?:写|编写)(?:1个|个)?(?:{_LANGUAGE_RE})|(?:{_LANGUAGE_RE})(?:写|函数|程序)"
)
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[?!;])|(?<=[.])(?!\d)")
_CONDITION_RE = re.compile(
    r"^\s*(?:if|when|given that|given|provided that|whereas|so|yes)\b|^\s*(?:如果|假如|若|已知|照这样|要是)"
)
_CLAUSE_SPLIT_RE = re.compile(r",|(?=\b(?:if|when|given that|provided that)\b)|(?=如果|假如|若)")
_COUNT_EN_RE = re.compile(
    r"\bhow many\b(?! (?:more |fewer )?(?:hours|days|minutes|seconds|weeks|months|years|times|ways|kilometers|meters|centimeters|millimeters|grams|kilograms|liters|yuan|dollars|cents|degrees|square|cubic|pounds|inches|miles|(?:km|dm|cm|mm|m)[²³]?|kg|g|ml|l)(?![a-z]))|\bnumber of\b|^\s*count\b"
)
# The measure words of counted things (几只, 多少件, 多少根), and 多少 right before a noun that is
# not a unit (多少菠萝, 多少饼干); 多少钱, 多少岁, 多少倍, 多少种 and units (多少米) ask other things.
_ZH_MEASURE_WORDS = "个只条辆人名支本块张次位头枚颗件根片封段袋套盒包瓶杯棵朵粒座台部架间把双份篇首道题箱筐堆层页匹口顶项场批"
_COUNT_ZH_RE = re.compile(
    rf"(?:几|多少)[{_ZH_MEASURE_WORDS}](?!数)|的个数"
    rf"|多少(?![{''.join(sorted({f[0] for f in _ZH_UNIT_FORMS}))}钱岁倍种分之是呢吗啊呀])"
    r"(?!时间|路程|距离|面积|体积|容积|周长|利润|收入|工资|重量|速度|年龄|水|油|零钱)"
    rf"(?=[{_CJK}])"
)
# the thing whose price is asked: "一支铅笔多少钱", "求铅笔的单价", "how much does one pen cost"
_PRICE_EN_RE = re.compile(r"\bhow much (?:does|do|is|are|was|were)\b|\bprice of\b|\bcost of\b")
_PRICE_ZH_RE = re.compile(r"多少钱|单价|价格|价钱")


def _question_span(canonical: str) -> tuple[int, int, bool]:
    """Start and end of the clause that asks the question, and whether it is a task (prove/write)."""
    sentences: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_SPLIT_RE.finditer(canonical):
        if m.start() > start:
            sentences.append((start, m.start()))
            start = m.start()
    if start < len(canonical):
        sentences.append((start, len(canonical)))
    sentences = [s for s in sentences if canonical[s[0] : s[1]].strip(" .?!;\"'")]
    if not sentences:
        return (0, len(canonical), False)

    def asks(span: tuple[int, int]) -> bool:
        return bool(_ASK_RE.search(canonical[span[0] : span[1]].strip(" \"'")))

    chosen = next(
        (s for s in reversed(sentences) if canonical[s[0] : s[1]].rstrip(" \"')").endswith("?")),
        None,
    )
    if chosen is None:
        chosen = next((s for s in reversed(sentences) if asks(s)), sentences[-1])
    s0, s1 = chosen
    piece = canonical[s0:s1]
    if _IMPERATIVE_RE.search(piece.strip(" \"'")):
        return (s0, s1, True)
    cuts = sorted({0, len(piece)} | {m.start() for m in _CLAUSE_SPLIT_RE.finditer(piece)})
    clauses = [(s0 + a, s0 + b) for a, b in zip(cuts, cuts[1:], strict=False)]
    clauses = [c for c in clauses if canonical[c[0] : c[1]].strip(" ,:?.!\"'")]
    for i in range(len(clauses) - 1, -1, -1):
        text = canonical[clauses[i][0] : clauses[i][1]].strip(" ,")
        if asks(clauses[i]) and not _CONDITION_RE.match(text):
            end = clauses[i][1]
            # a list that the comma split apart belongs to the asking clause: "what are A, B and C?"
            for follower in clauses[i + 1 :]:
                rest = canonical[follower[0] : follower[1]].strip(" ,")
                if asks(follower) or _CONDITION_RE.match(rest):
                    break
                end = follower[1]
            return (clauses[i][0], end, False)
    return (s0, s1, False)


# --------------------------------------------------------------------------------------------------
# The signature
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """What must agree for two questions to have the same answer."""

    numbers: tuple[Fraction, ...]
    units: tuple[str, ...]
    target: tuple[str, ...]
    polarity: tuple[str, ...]
    terms: tuple[str, ...]

    def key(self) -> str:
        """A string that is equal exactly when two signatures pass every gate of the cache."""
        return "|".join(
            ",".join(str(item) for item in part)
            for part in (self.numbers, self.units, self.target, self.polarity, self.hard_terms)
        )

    @property
    def hard_terms(self) -> tuple[str, ...]:
        """The terms that take part in the terms gate (soft terms and persons left out)."""
        return tuple(t for t in self.terms if t not in SOFT_TERMS and t not in PERSON_IDS)

    @property
    def is_specific(self) -> bool:
        """Enough exact facts (two distinct numbers and a known target) to trust a looser similarity."""
        return len(set(self.numbers)) >= 2 and bool(self.target)

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "numbers": [format_number(n) for n in self.numbers],
            "units": list(self.units),
            "target": list(self.target),
            "polarity": list(self.polarity),
            "terms": list(self.terms),
        }


def format_number(value: Fraction) -> str:
    """35, 3.5, 2/3: the shortest exact way to write a number."""
    return _format_fraction(value)


def signature(text: str) -> Signature:
    """The exact facts of a question (numbers, units, asked quantity, polarity, terms)."""
    return signature_of_canonical(normalize(text))


@lru_cache(maxsize=4096)
def signature_of_canonical(canonical: str) -> Signature:
    numbers = tuple(sorted(_numbers(canonical)))
    units = tuple(sorted(_units(canonical)))
    concepts = _concepts(canonical)
    polarity = sorted({c for c, _ in concepts if c in POLARITY_IDS})
    terms = sorted({c for c, _ in concepts if c not in POLARITY_IDS})
    return Signature(numbers, units, _target(canonical, concepts), tuple(polarity), tuple(terms))


_TIME_UNITS = frozenset(u.id for u in lexicon.UNITS if u.dimension in ("time", "calendar"))
_MONEY_UNITS = frozenset(u.id for u in lexicon.UNITS if (u.dimension or "").startswith("money"))


def _target(canonical: str, concepts: list[tuple[str, int]]) -> tuple[str, ...]:
    """What the question asks for: asked quantities, named persons, counted things, the asked unit."""
    q_start, q_end, is_task = _question_span(canonical)
    if is_task:  # "prove ..." / "write a function ...": the terms carry the content, not a target
        target = {f"in:{u}" for u in _units_converted(canonical[q_start:q_end])}
        if re.search(r"\bprove\b|证明", canonical[q_start:q_end]):
            target |= _hypothesis(canonical, q_start, q_end, concepts)
        return tuple(sorted(target))
    asked = canonical[q_start:q_end]
    target = {c for c, pos in concepts if q_start <= pos < q_end and c in ASKABLE_IDS}
    persons_in_text = {c for c, _ in concepts if c in PERSON_IDS}
    if len(persons_in_text) > 1:  # "how old is Ben" matters only when there is someone else
        target |= {c for c, pos in concepts if q_start <= pos < q_end and c in PERSON_IDS}
    windows = []
    for m in _COUNT_EN_RE.finditer(asked):
        windows.append((q_start + m.start(), q_start + m.end() + 28))
    for m in _COUNT_ZH_RE.finditer(asked):
        windows.append((q_start + m.start() - 5, q_start + m.end() + 5))
    if windows:
        target.add("count")
    for m in _PRICE_EN_RE.finditer(asked):
        windows.append((q_start + m.start(), q_start + m.end() + 16))
    for m in _PRICE_ZH_RE.finditer(asked):
        windows.append((q_start + m.start() - 6, q_start + m.end()))
    windows = [(max(a, q_start), min(b, q_end)) for a, b in windows]
    for c, pos in concepts:
        if c in OBJECT_IDS and any(a <= pos < b for a, b in windows):
            target.add(c)
    for unit in _units_asked(asked):
        target.add(f"in:{unit}")
    if "percent" in target:  # "by what % has the price changed" asks a percent, not a price
        target -= {"price", "original"}
    return tuple(sorted(target))


_HYPOTHESIS_RE = re.compile(
    r"\b(?:if|whenever|suppose|supposing|assuming)\b(.*?)(?:,|\bthen\b|$)|(?:如果|假如|若|当|假设)(.*?)(?:,|那么|则|$)"
)


def _hypothesis(canonical: str, start: int, end: int, concepts: list[tuple[str, int]]) -> set[str]:
    """The facts inside "if ..." of a statement to prove, so that a claim and its converse differ."""
    facts: set[str] = set()
    for m in _HYPOTHESIS_RE.finditer(canonical, start, end):
        group = 1 if m.group(1) is not None else 2
        a, b = m.span(group)
        facts |= {f"if:{_format_fraction(v)}" for v in _numbers(canonical[a:b])}
        facts |= {
            f"if:{c}"
            for c, pos in concepts
            if a <= pos < b and (c in POLARITY_IDS or (c not in SOFT_TERMS and c not in PERSON_IDS))
        }
    return facts


def _units_converted(text: str) -> set[str]:
    """The unit a conversion goes to ("把摄氏温度转换为华氏温度", "convert 2.5 hours into minutes")."""
    asked: set[str] = set()
    for m in re.finditer(
        r"(?:转换为|转换成|换算成|换算为|化成|化为|变成|输出|返回)(?:对应的)?(\S{1,6})|\b(?:into|to)\s+(\S+(?: \S+)?)",
        text,
    ):
        asked |= _units(f"1 {m.group(1) or m.group(2)}")
    return asked


def _units_asked(question: str, *, every: bool = False) -> set[str]:
    """The unit an answer is asked in ("多少厘米", "how many centimeters", "换算成多少米/秒"); time,
    money and degrees only when `every` (the target leaves them out: "how long" and "how many hours"
    ask the same)."""
    asked: set[str] = set()
    for m in re.finditer(
        r"(?:多少|几个?|成|为|\()(\S{1,6})|\b(?:into|how many|how much)\s+(\S+(?: \S+)?)|\bin\s+([a-z]\S*(?: \S+)?)\s*[?.!]*\s*$",
        question,
    ):
        phrase = m.group(1) or m.group(2) or m.group(3)
        asked |= {
            u
            for u in _units(f"1 {phrase}")
            if every or u not in _TIME_UNITS | _MONEY_UNITS | {"deg"}
        }
    return asked


def asked_units(canonical: str) -> frozenset[str]:
    """Every unit the asking clause names or converts to, time and money included: "几小时" asks in
    hours, "how many minutes" in minutes, "convert 2.5 hours into seconds" in seconds."""
    q_start, q_end, _ = _question_span(canonical)
    asked = canonical[q_start:q_end]
    return frozenset(_units_asked(asked, every=True) | _units_converted(asked))


# --------------------------------------------------------------------------------------------------
# Content tokens: the wording, for the cache's small-edit check
# --------------------------------------------------------------------------------------------------

_EN_STOPWORDS = frozenset(
    """a an the is are was were be been being am of in on at to for from by with as and that this these
    those it its they them their there here he she his her him we us our you your i me my do does did
    has have had will would can could should shall may might must what how which whom whose when
    where why many much find calculate compute determine please then so if than also just only very
    really all any some one ones up out into about over under again further once get gets got give
    gives given let lets say says said tell know need needs want wants like now current currently
    question answer help thanks thank pls plz hi hello hey ok okay altogether together total value
    number numbers th always getting""".split()
)
_ZH_STOPCHARS = frozenset(
    "的了是有在与及个只条支块名位一这那些么呢吗啊呀吧哦嘛请问求已知就都也还又再把被给让从向对于为以而且并其它他她们我你之所多少几什哪怎样如何能可以会要需共计总合全等"
)
_TOKEN_SYNONYMS = {
    "distinct": "different",
    "chance": "probability",
    "likelihood": "probability",
    "cover": "travel",
    "毛": "角",
    "add": "sum",
    "adding": "sum",
    "added": "sum",
    "$": "dollar",
    "¥": "yuan",
    # the negation characters are one token: 无理数 and 不是有理数 differ only in which one is used
    "无": "不",
    "没": "不",
    "非": "不",
    "未": "不",
}
_TOKEN_RE = re.compile(
    r"\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?)?%?|[a-z]+(?:'[a-z]+)?|[A-Z]|[\u3400-\u4dbf\u4e00-\u9fff]|[\^=<>□×÷$¥]|/(?=[a-z\u4e00-\u9fff])"
)


def word_tokens(canonical: str) -> tuple[str, ...]:
    """Every word, Chinese character and number of a canonical text (numbers written canonically)."""
    tokens = []
    for m in _TOKEN_RE.finditer(canonical):
        tok = m.group()
        if tok[0].isdigit():
            raw = tok.rstrip("%")
            if len(raw) > _MAX_DIGITS:
                tokens.append(raw)
                continue
            try:
                number = Fraction(raw)
            except (ValueError, ZeroDivisionError):
                continue
            tok = _format_fraction(number) + ("%" if tok.endswith("%") else "")
        tokens.append(tok)
    return tuple(tokens)


@lru_cache(maxsize=4096)
def content_tokens(canonical: str) -> tuple[str, ...]:
    """The tokens that carry meaning: no stopwords, no articles (the number 1), English words stemmed."""
    tokens: list[str] = []
    for tok in word_tokens(canonical):
        if tok == "1":
            continue  # "a", "one", "一个" and "1" are the same article; see _numbers()
        if tok.isascii() and tok.isalpha() and tok.islower():
            if tok in _EN_STOPWORDS:
                continue
            tok = _stem(tok)
        elif _CJK_RE.match(tok):
            if tok in _ZH_STOPCHARS:
                continue
        tokens.append(_TOKEN_SYNONYMS.get(tok, tok))
    return tuple(tokens)


def _stem(word: str) -> str:
    """A light English stemmer: plural and verb endings, enough to match 'rabbits' with 'rabbit'."""
    for suffix, repl in (
        ("ies", "y"),
        ("sses", "ss"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("xes", "x"),
    ):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + repl
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        word = word[:-1]
    if word.endswith("ing") and len(word) > 6:
        return word[:-3]
    return word


def language(canonical: str) -> str:
    """'zh' when Chinese characters dominate the words, else 'en'."""
    cjk = len(_CJK_RE.findall(canonical))
    latin = len(re.findall(r"[a-z]+", canonical))
    return "zh" if cjk >= latin else "en"


# --------------------------------------------------------------------------------------------------
# Quantities: a number with the unit written right after it, and what it is said of
# --------------------------------------------------------------------------------------------------

_IMPLICIT_ONE_RE = re.compile(
    r"\b(?:(an?|one)|per|each|every)\s+(hour|minute|second|day|week)\b|(?<![\d.])(?:(一)|每)(小时|分钟|秒|天|星期|周)"
)


@dataclass(frozen=True)
class Quantity:
    """A given number as read from a canonical text: its value, the unit right after it, its position."""

    value: Fraction
    unit: str | None
    position: int
    word: str | None = None  # the English word right after it when that is not a unit ("4 workers")
    end: int = -1  # where the number and its unit end in the canonical text
    # one of the unit a rate is counted in ("per hour", "每小时"), not an amount that is given
    is_rate: bool = False

    @property
    def amount(self) -> lexicon.Amount | None:
        """The value in its dimension's base unit (0.5 h and 30 min are both 1800 s; 2 km and 2000 m
        both 2000 m); None without a unit that converts (a count, a temperature, a percentage)."""
        return lexicon.amount(self.value, self.unit)


def _unit_after(canonical: str, end: int) -> tuple[str, int] | None:
    """The unit written right after a number that ends at `end`, and where the unit ends."""
    rest = canonical[end : end + 24]
    start = end + len(rest) - len(rest.lstrip(" -"))
    m = _EN_UNIT_RE.match(canonical, start, end + 24) or _ZH_UNIT_RE.match(
        canonical, start, end + 24
    )
    if not m:
        return None
    table = _EN_UNIT_FORMS if m.group() in _EN_UNIT_FORMS else _ZH_UNIT_FORMS
    unit_id = _unit_ids(m.group(), table)[0]
    if m.group() == "分":
        # as in `_units`: 2小时15分 is minutes, 1元5分 is money, 得了4分 a score (no unit)
        window = canonical[max(0, end - 12) : end]
        if re.search(r"小时|时|点", window):
            unit_id = "min"
        elif not re.search(r"元|角|块", window) and canonical[m.end() : m.end() + 1] != "钱":
            return None
    return unit_id, m.end()


_PREFIX_UNITS = {"$": "usd", "¥": "yuan"}


@lru_cache(maxsize=4096)
def _read_quantities(canonical: str) -> tuple[tuple[Quantity, ...], tuple[Quantity, ...]]:
    """(the given numbers, the ones of a unit said as an article: "1 hour", "1 km")."""
    found = []
    ones = []
    for m in _NUMBER_RE.finditer(canonical):
        value = _exact(m.group(1))
        if m.group(2) is not None:
            den = _exact(m.group(2))
            if den == 0:
                continue
            value /= den
        if _is_negative_sign(canonical, m.start()):
            value = -value
        percent = canonical[m.end() : m.end() + 1] == "%"
        after = None if percent else _unit_after(canonical, m.end())
        unit = "%" if percent else (after[0] if after else None)
        if unit is None:  # a currency sign written before the number: $7.50, ¥20
            unit = _PREFIX_UNITS.get(canonical[: m.start()].rstrip(" -")[-1:])
        end = m.end() + 1 if percent else (after[1] if after else m.end())
        if value == 1 and not percent:
            # 1 is an article far more often than a count (see the module docstring); "1 hour" is
            # still one hour where it is needed to align with "60 minutes"
            if lexicon.amount(value, unit) is not None:
                ones.append(Quantity(value, unit, m.start(), None, end))
            continue
        word = None
        if unit is None:
            following = re.match(r"[\s-]*([a-z]{3,})", canonical[m.end() : m.end() + 24])
            word = following.group(1) if following else None
        found.append(Quantity(value, unit, m.start(), word, end))
    return tuple(found), tuple(ones)


def quantities(canonical: str) -> tuple[Quantity, ...]:
    """Every given number of a canonical text (the same numbers as the signature's), each with the
    unit written after it. The ones of a unit ("an hour", "1 km", "每小时") are apart, in
    `implicit_quantities`: they count only where they are needed to align with an explicit quantity
    ("in 60 minutes" vs "in an hour")."""
    return _read_quantities(canonical)[0]


@lru_cache(maxsize=4096)
def implicit_quantities(canonical: str) -> tuple[Quantity, ...]:
    """One of a unit said without a number or as an article: "an hour", "1 km", "per minute", "每天"
    (the last two are the unit of a rate: `is_rate`)."""
    said = [
        Quantity(
            Fraction(1),
            lexicon.unit_of(m.group(2) or m.group(4)),
            m.start(),
            None,
            m.end(),
            is_rate=not (m.group(1) or m.group(3)),
        )
        for m in _IMPLICIT_ONE_RE.finditer(canonical)
    ]
    return tuple(sorted([*said, *_read_quantities(canonical)[1]], key=lambda q: q.position))
