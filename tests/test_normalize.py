"""Normalization and signatures: tables of Chinese and English wordings and the facts they must yield."""

from __future__ import annotations

from fractions import Fraction

import pytest

from solver.normalize import content_tokens, language, normalize, signature


def numbers(text: str) -> list[str]:
    return signature(text).to_dict()["numbers"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Chinese numerals
        ("鸡兔同笼，共有三十五个头，九十四只脚", ["35", "94"]),
        ("两个数的和是五十", ["2", "50"]),
        ("二〇二四年一月一日是星期一", ["2024"]),
        ("一百零五页", ["105"]),
        ("一千二百元", ["1200"]),
        ("三万五千人", ["35000"]),
        ("三分之二的水", ["2/3"]),
        ("百分之二十的学生", ["20"]),
        ("一个半小时", ["1.5"]),
        ("三点五千米", ["3.5"]),
        ("2个小时零15分", ["2", "15"]),
        ("一件衣服打七五折", ["75"]),
        ("打八折出售", ["80"]),
        ("打8.5折", ["85"]),
        ("一半的苹果", ["0.5"]),
        ("1.5万人", ["15000"]),
        ("其中三分之一在苏格兰", ["1/3"]),  # 之一 is "one of" only outside a fraction
        # words that look like numerals but are not counts
        ("一起做一些题，一样多", []),
        ("三角形的面积", []),
        ("甲乙两人合作", []),
        # English number words
        ("thirty-five heads and ninety-four legs", ["35", "94"]),
        ("a dozen eggs", ["12"]),
        ("two thirds of the tank", ["2/3"]),
        ("three and a half meters", ["3.5"]),
        ("half a kilogram", ["0.5"]),
        ("one hundred and five pages", ["105"]),
        ("the twentieth term", ["20"]),
        ("twice as old", ["2"]),
        ("a hexagon", ["6"]),
        ("after a decade of saving", ["10"]),
        ("the two shops sell pens", []),  # as "both shops": the two are already named
        # digit forms
        ("a 1,200-liter tank", ["1200"]),
        ("Is 1,001 divisible by 7?", ["7", "1001"]),
        ("Convert 2 1/2 hours", ["2.5"]),
        ("３５ heads and ９４ legs", ["35", "94"]),
        ("the 21st term", ["21"]),
        ("25% off", ["75"]),  # the share paid, as 打七五折 reads
        ("twenty-five percent off", ["75"]),
        ("x = -3", ["-3"]),
        ("n^3 - n", ["3"]),
        ("n³ − n", ["3"]),
        # the number 1 is an article in both languages
        ("a cage holds one rabbit", []),
        ("一个笼子里有1只兔", []),
    ],
)
def test_it_reads_numbers_in_every_written_form(text: str, expected: list[str]) -> None:
    assert numbers(text) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("鸡兔同笼，共有35个头，94只脚", "鸡兔同笼，共有三十五个头，九十四只脚"),
        ("0.5 kilograms", "half a kilogram"),
        ("1/2 kg", "0.5 kg"),
        ("半小时", "0.5小时"),
        ("按原价的75%出售", "打七五折出售"),
        ("3.5千米", "3.5 km"),
    ],
)
def test_equal_values_give_equal_numbers(a: str, b: str) -> None:
    assert signature(a).numbers == signature(b).numbers


def test_a_percentage_is_not_a_fraction() -> None:
    # 20% keeps the unit "%": it is never silently equal to 0.2 (a miss, never a wrong hit)
    assert signature("20% of the price").numbers == (Fraction(20),)
    assert "%" in signature("20% of the price").units
    assert signature("0.2 of the price").numbers == (Fraction(1, 5),)


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("3.5千米等于多少米?", {"km", "m"}),
        ("3.5 km is how many meters?", {"km", "m"}),
        ("36千米/时", {"km", "h"}),
        ("36 km/h", {"km", "h"}),
        ("每小时60千米", {"km", "h"}),
        ("5平方米等于多少平方分米", {"m2", "dm2"}),
        ("how many cm² in 1 m²?", {"cm2", "m2"}),
        ("1元5角", {"yuan", "jiao"}),
        ("1块5毛", {"yuan", "jiao"}),
        ("2小时15分", {"h", "min"}),
        ("A jacket costs $80", {"usd"}),
        ("He is 36 years old", {"year"}),
        ("爸爸今年36岁", {"year"}),
        ("年利率是3%", {"year", "%"}),
        ("月利率是3%", {"month", "%"}),
        ("2024年1月1日", set()),
        ("a circle has a radius of 5 inches", {"inch"}),
        ("240 miles in 3 hours", {"mile", "h"}),
    ],
)
def test_it_finds_units(text: str, units: set[str]) -> None:
    assert set(signature(text).units) == units


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("鸡兔同笼，共有35个头，94只脚，问鸡有多少只？", {"chicken", "count"}),
        ("鸡兔同笼，共有35个头，94只脚，问兔有多少只？", {"rabbit", "count"}),
        ("There are 35 heads and 94 legs. How many rabbits are there?", {"rabbit", "count"}),
        ("A rectangle is 8 cm long and 5 cm wide. What is its area?", {"area"}),
        ("A rectangle is 8 cm long and 5 cm wide. What is its perimeter?", {"perimeter"}),
        ("一个长方形长8厘米，宽5厘米，它的周长是多少厘米？", {"perimeter", "in:cm"}),
        ("Anna is 8 years older than Ben. How old is Ben?", {"age", "ben"}),
        ("小明比小红大3岁，小红今年几岁？", {"age", "xiaohong"}),
        ("Two dice are rolled. What is the probability that the sum is 7?", {"probability", "sum"}),
        ("3.5千米等于多少厘米？", {"in:cm"}),
        ("把36千米/时换算成多少米/秒？", {"in:m"}),
        ("Today is Monday. What day of the week will it be 100 days from now?", {"weekday"}),
        ("一支铅笔多少钱？", {"pencil", "price"}),
        ("Prove that the sum of two odd integers is even.", set()),
        # "total" only sums up what is asked: a count stays a count, money stays a price
        ("How many cookies do they eat in total?", {"count"}),
        ("What is the total number of cookies they eat?", {"count"}),
        ("他们一共吃了多少饼干？", {"count"}),
        ("迪伦一共买了多少根香肠？", {"count"}),
        ("How much money does Jimmy have now?", {"price"}),
        ("吉米现在有多少钱？", {"price"}),
        ("What is the sum of the prime numbers between 1 and 50?", {"sum"}),
        ("两管同时打开，几小时能把满池放空？", {"drain"}),
        ("If both are opened, how many hours does it take to fill the empty pool?", {"fill"}),
    ],
)
def test_it_finds_the_asked_quantity(text: str, expected: set[str]) -> None:
    assert set(signature(text).target) == expected


@pytest.mark.parametrize(
    ("text", "cue"),
    [
        ("Tom has 12 more marbles than Jerry", "more"),
        ("Tom has 12 fewer marbles than Jerry", "less"),
        ("小明比小红大3岁", "more"),
        ("小明比小红小3岁", "less"),
        ("至少有一次正面朝上", "at_least"),
        ("at most one head", "at_most"),
        ("不超过10个", "at_most"),
        ("不少于10个", "at_least"),
        ("1到100中不能被3整除的数", "not"),
        ("the probability that it is not red", "not"),
        ("divisible by neither 3 nor 5", "not"),
        ("Five years ago", "before"),
        ("Five years from now", "after"),
        ("3年后", "after"),
        ("100天前", "before"),
        ("逆水航行", "upstream"),
        ("a boat goes downstream", "downstream"),
        ("相向而行", "toward"),
        ("不放回地取两个", "not"),
        ("先提价20%", "increase"),
        ("再降价20%", "decrease"),
        ("the price dropped by 25%", "decrease"),
        ("45 days before today", "before"),
        ("往前推5年", "before"),
        ("sales went up by 20%", "increase"),
        # a change by a percentage, said either way
        ("sales were 20% more than planned", "increase"),
        ("比计划多了20%", "increase"),
        ("他俩不是同一类人", "different"),
        ("they are not of the same kind", "different"),
        ("Pipe B empties it", "drain"),
    ],
)
def test_it_finds_polarity_cues(text: str, cue: str) -> None:
    assert cue in signature(text).polarity


@pytest.mark.parametrize(
    "text",
    [
        "判断一个字符串是不是回文",  # 是不是 asks a question, it negates nothing
        "它们的速度分别是4和6",  # 分别 (respectively) contains 别
        "非常简单的题",  # 非常 (very) contains 非
        "In 3 hours a train travels 240 km.",  # a duration, not "after"
    ],
)
def test_lookalike_words_are_not_cues(text: str) -> None:
    sig = signature(text)
    assert "not" not in sig.polarity and "after" not in sig.polarity


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "鸡兔同笼，共有35个头，94只脚，问鸡有多少只？",
            "老师好，请问：鸡兔同笼，共有３５个头，９４只脚，鸡有多少只？谢谢！",
        ),
        ("A farm has chickens and rabbits.", "hi pls help!! a farm has chickens and rabbits"),
        ("Sam walks at 4 km/h and runs at 12 km/h.", "Sam walks at 4 km/h & runs at 12 km/h"),
        ("whats the 20th term", "What's the twentieth term?"),
        ("prove that sqrt(2) is irrational pls", "Prove that √2 is irrational."),
        ("今天周三，再过100天是周几？", "今天星期三，再过一百天是星期几？"),
    ],
)
def test_formatting_and_filler_do_not_change_the_canonical_words(a: str, b: str) -> None:
    assert content_tokens(normalize(a)) == content_tokens(normalize(b))
    assert signature(a) == signature(b)


@pytest.mark.parametrize(
    ("chinese", "english"),
    [
        ("3.5千米等于多少米？", "How many meters are there in 3.5 kilometers?"),
        (
            "一个长方形长8厘米，宽5厘米，它的周长是多少厘米？",
            "A rectangle is 8 cm long and 5 cm wide. What is its perimeter in centimeters?",
        ),
        (
            "今天是星期三，100天后是星期几？",
            "Today is Wednesday. What day of the week will it be 100 days from now?",
        ),
        (
            "袋中有3个红球和5个白球，从中任取一个，取到红球的概率是多少？",
            "A bag has 3 red balls and 5 white balls. One ball is drawn. What is the probability that it is red?",
        ),
    ],
)
def test_a_translation_has_the_same_signature(chinese: str, english: str) -> None:
    assert signature(chinese).key() == signature(english).key()


@pytest.mark.parametrize(
    ("bank", "changed", "field"),
    [
        (
            "鸡兔同笼，共有35个头，94只脚，问鸡有多少只？",
            "鸡兔同笼，共有35个头，96只脚，问鸡有多少只？",
            "numbers",
        ),
        (
            "鸡兔同笼，共有35个头，94只脚，问鸡有多少只？",
            "鸡兔同笼，共有35个头，94只脚，问兔有多少只？",
            "target",
        ),
        ("A train travels 240 km in 3 hours.", "A train travels 240 miles in 3 hours.", "units"),
        ("今天是星期三，100天后是星期几？", "今天是星期三，100周后是星期几？", "units"),
        (
            "A boat goes 24 km downstream in 2 hours.",
            "A boat goes 24 km upstream in 2 hours.",
            "polarity",
        ),
        (
            "What is the sum of the interior angles of a hexagon?",
            "What is the sum of the exterior angles of a hexagon?",
            "terms",
        ),
        (
            "What is the sum of the interior angles of a hexagon?",
            "What is the sum of the interior angles of an octagon?",
            "numbers",
        ),
        ("证明：如果n²是偶数，那么n是偶数。", "证明：如果n是偶数，那么n²是偶数。", "target"),
        (
            "Two dice are rolled. What is the probability that the sum is 7?",
            "Two dice are rolled. What is the probability that the product is 7?",
            "terms",
        ),
    ],
)
def test_a_changed_fact_changes_the_signature(bank: str, changed: str, field: str) -> None:
    a, b = signature(bank).to_dict(), signature(changed).to_dict()
    if field == "terms":
        assert signature(bank).hard_terms != signature(changed).hard_terms
    else:
        assert a[field] != b[field]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\x00\x01\x1b",
        "🐔🐰🐔",
        "9" * 5000,
        "三" * 3000,
        "%%%",
        "\u202e\u200b",
        "1/0",
        "x" * 20000,
    ],
)
def test_odd_input_never_raises(text: str) -> None:
    signature(text)
    content_tokens(normalize(text))


def test_language_follows_the_script() -> None:
    assert language(normalize("鸡兔同笼，共有35个头")) == "zh"
    assert language(normalize("Chickens and rabbits: 35 heads")) == "en"


def test_names_keep_their_identity() -> None:
    assert set(signature("A says: 'B is a knave.' Is A a knight?").terms) >= {"A", "B"}
    assert set(signature("甲单独做10天完成，乙单独做15天完成").terms) >= {"A", "B"}
    # the article "A" at the start of a sentence is not a person
    assert "A" not in signature("A train travels 240 km in 3 hours.").terms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("他取得了4分", [("4", None)]),  # a score, not a cent of a yuan
        ("3元5角2分", [("3", "yuan"), ("5", "jiao"), ("2", "fen")]),
        ("买了5分钱的糖", [("5", "fen")]),
        ("2小时15分", [("2", "h"), ("15", "min")]),
        ("Each cookie costs $0.10; he pays with a $10 bill", [("0.1", "usd"), ("10", "usd")]),
        ("每片0.10美元，他用10美元付款", [("0.1", "usd"), ("10", "usd")]),
    ],
)
def test_a_quantity_reads_the_unit_it_is_given_in(
    text: str, expected: list[tuple[str, str | None]]
) -> None:
    from solver.normalize import format_number, quantities

    found = [(format_number(q.value), q.unit) for q in quantities(normalize(text))]
    assert found == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # 零 is a numeral only inside a number or alone as "zero"
        ("车间生产了一批零件，共用了6天", ["6"]),
        ("他用零钱买了3支笔", ["3"]),
        ("超市的零食和零售价格", []),
        ("夜里气温是零下八度", ["-8"]),  # 零下 is a sign
        ("一千零八十", ["1080"]),
        ("四点零五", ["4.05"]),
        ("余数是零", ["0"]),
        ("有零个苹果", ["0"]),
        # a count that restates how many things are named or listed is not a given
        ("兄弟俩一共有40本书", ["40"]),
        ("她们俩同时出发", []),
        ("甲乙两个车间共生产900个", ["900"]),
        ("甲、乙、丙三人平分90元", ["90"]),
        ("两列火车相遇时", []),
        ("任取两张，两张牌颜色相同的概率", ["2"]),
        ("用5、6、7三个数字组成", ["5", "6", "7"]),
        ("有一个四位数，这个四位数的四个数字之和是20", ["4", "20"]),
        ("这两周他跑了60千米", ["60"]),
        ("the sum of those 3 numbers is 27", ["27"]),
        ("连续3天都下雨", ["3"]),  # a duration before 都 is a given
        ("买了2支笔一共花了10元", ["2", "10"]),
        # 周 is a week only with time context
        ("在鱼塘四周栽树，每隔3米栽一棵", ["3"]),
        ("绕湖跑一周是2千米", ["2"]),
        ("四周后再来", ["4"]),
        # discounts are the share of the price that is paid
        ("a coat is sold at 30% off", ["70"]),
        ("with a 15% discount", ["85"]),
        ("a discount of 40% on shoes", ["60"]),
        ("半价出售", ["50"]),
        ("half-price tickets", ["50"]),
    ],
)
def test_it_reads_only_given_counts(text: str, expected: list[str]) -> None:
    assert sorted(numbers(text), key=Fraction) == sorted(expected, key=Fraction)


@pytest.mark.parametrize(
    ("chinese", "english"),
    [
        ("外套打七折出售", "the coat is sold at 30% off"),
        ("A、B两家工厂共有工人500名", "factories A and B have 500 workers in all"),
        (
            "小明12岁，爸爸40岁。几年后爸爸的年龄是小明的2倍？",
            "Xiaoming is 12 and his dad is 40. In how many years will dad be twice Xiaoming's age?",
        ),
    ],
)
def test_a_translation_reads_the_same_givens(chinese: str, english: str) -> None:
    zh, en = signature(chinese), signature(english)
    assert zh.numbers == en.numbers
    assert set(zh.units) == set(en.units)


@pytest.mark.parametrize(
    ("text", "term", "present"),
    [
        ("绕操场走一周是多少米", "round_table", False),  # a lap, not people in a circle
        ("沿着花坛走一圈", "round_table", False),
        ("六个人围坐在一张桌子旁", "round_table", True),
        ("8 people sit at a round table", "round_table", True),
        ("Write a function in JavaScript that sums a list", "javascript", True),
        ("用JS写一个求和函数", "javascript", True),
        ("用C++写一个程序输出1到10", "cpp", True),
        ("Write a C# program that prints hello", "csharp", True),
        ("用Java写一个函数", "java", True),
        ("Both shops sell pens", "all", True),
    ],
)
def test_it_reads_terms_in_their_sense(text: str, term: str, present: bool) -> None:
    assert (term in signature(text).terms) is present


def test_programming_languages_differ_as_hard_terms() -> None:
    python = signature("Write a function in Python that reverses a string")
    javascript = signature("Write a function in JavaScript that reverses a string")
    assert python.hard_terms != javascript.hard_terms
    assert signature("用JavaScript写一个反转字符串的函数").hard_terms == javascript.hard_terms


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("Ann is 9 and Ben is 14. How old will Ann be when Ben is 20?", "year"),
        ("a girl aged 7. how old is her mother?", "year"),
        ("the sum of their ages is 50", "year"),
        ("安娜9岁", "year"),
    ],
)
def test_an_age_carries_its_unit_in_both_languages(text: str, unit: str) -> None:
    from solver.normalize import quantities

    assert all(q.unit == unit for q in quantities(normalize(text)))


def test_the_answer_is_not_an_age_outside_an_age_question() -> None:
    from solver.normalize import quantities

    assert [q.unit for q in quantities(normalize("The answer is 5."))] == [None]
