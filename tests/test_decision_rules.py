"""The exact rules of solver.decision that read more than numbers: expressions with fractions and
powers said in words, the asked extremum, the words a problem operates on, swapped sides of a
comparison, the kind of answer of a problem without numbers, unordered lists, and equal amounts in
other units. Each pair is compared without the embedder (a high similarity, as the vector search
would give such near-copies), so what decides is the rule itself."""

from __future__ import annotations

import json

import pytest

from solver.decision import FEATURES, DecisionModel, compare, load_model_for, read
from solver.normalize import normalize


def _compare(question: str, entry: str):
    comparison = compare(
        read(normalize(question), question),
        read(normalize(entry), entry),
        similarity=0.97,
        margin=0.4,
        wording_edit=None,
    )
    return comparison, dict(zip(FEATURES, comparison.features, strict=False))


@pytest.mark.parametrize(
    ("question", "entry", "rule"),
    [
        # signs between fractions kept in order
        ("Work out 1/2 + 2/5 - 3/7.", "Work out 1/2 - 2/5 + 3/7.", "expression"),
        ("计算 5/9 - 1/3 + 1/6", "计算 5/9 + 1/3 × 1/6", "expression"),
        # a power said in words is a power: base and exponent keep their places
        ("3的100次方除以7的余数是多少？", "100的3次方除以7的余数是多少？", "expression"),
        ("100个3相乘，积除以7余几？", "100的3次方除以7的余数是多少？", "expression"),
        (
            "Find the last digit of 100 to the power of 3.",
            "Find the last digit of 3^100.",
            "expression",
        ),
        # the other extremum of the same numbers
        (
            "Which is the greatest number that divides both 12 and 18 and 30?",
            "Which is the least number that 12, 18 and 30 all divide?",
            "extremum",
        ),
        (
            "用12、18和30都能整除的最小的数是多少？",
            "能整除12、18和30的最大的数是多少？",
            "extremum",
        ),
        (
            "At most how many boxes can be filled with 50 apples?",
            "At least how many boxes hold 50 apples?",
            "extremum",
        ),
        # the word the problem works on
        (
            "In how many orders can the letters of RADAR be written?",
            "In how many orders can the letters of RADIO be written?",
            "data",
        ),
        (
            'How many times does "s" occur in "mississippi"?',
            'How many times does "p" occur in "mississippi"?',
            "data",
        ),
        ("单词APPLE的字母有多少种不同的排列？", "单词APPLY的字母有多少种不同的排列？", "data"),
        # the two sides of a comparison swapped
        (
            "Side P is three times side Q and side R is 4 cm. How long is side Q?",
            "Side Q is three times side P and side R is 4 cm. How long is side Q?",
            "roles",
        ),
        (
            "Lucy is older than Mike and Mike is older than Jack. Who is the youngest?",
            "Mike is older than Lucy and Mike is older than Jack. Who is the youngest?",
            "roles",
        ),
        ("小明比小红高，小红比小刚高，谁最矮？", "小红比小明高，小红比小刚高，谁最矮？", "roles"),
        (
            "角P是角Q的3倍，角R是30度，角Q是多少度？",
            "角Q是角P的3倍，角R是30度，角Q是多少度？",
            "roles",
        ),
        # no numbers: a yes or no against a value
        (
            "Write a function that tells whether a word reads the same backwards.",
            "Write a function that returns the word written backwards.",
            "asked",
        ),
        ("写一个函数，判断一个字符串是不是回文", "写一个函数，返回一个字符串反过来的样子", "asked"),
    ],
)
def test_a_changed_given_that_is_not_a_plain_number_is_an_exact_miss(question, entry, rule):
    comparison, _ = _compare(question, entry)
    assert comparison.rule == rule, comparison
    assert comparison.reason and not comparison.features


@pytest.mark.parametrize(
    ("question", "entry"),
    [
        # the same expression, the same power, written otherwise
        ("Work out 1/2 + 2/5 - 3/7.", "计算：1/2 + 2/5 - 3/7 = ?"),
        ("100个3相乘，积的个位数是几？", "3的100次方的个位数是几？"),
        ("Find the last digit of 3 to the power of 100.", "3的100次方的个位数是几？"),
        ("What is 6 × 7 + 1?", "What is 6 × 7 + 1 ?"),
        ("What is 7 × 6?", "What is 6 × 7?"),  # one product, factors in either order
        # a series started with fewer terms is the same series
        ("Find 1 + 2 + 3 + … + 50.", "Find 1 + 2 + … + 50."),
        # the same extremum in other words, and in the other language
        ("What is the largest number that divides 12 and 18?", "12和18的最大公因数是多少？"),
        (
            "What is the smallest number that 12, 18 and 30 all divide?",
            "能被12、18和30整除的最小的数是多少？",
        ),
        # at least as a condition on a given number is not the asked extremum
        (
            "At least 3 of the 5 balls are red. How many balls are not red at most?",
            "5个球中至少有3个是红球，不是红球的最多有几个？",
        ),
        # the same word in capitals, quoted, or in the other language
        (
            "In how many orders can the letters of RADAR be written?",
            'How many ways can the word "radar" be arranged?',
        ),
        (
            "单词RADAR的字母有多少种不同的排列？",
            "In how many orders can the letters of RADAR be written?",
        ),
        # an acronym the lexicon knows is a term, not data
        ("What is the GCD of 12 and 18?", "What is the HCF of 12 and 18?"),
        # the comparison said the other way round with the other word holds the same fact
        ("Lucy is older than Mike. Who is younger?", "Mike is younger than Lucy. Who is younger?"),
        (
            "Lucy is as tall as Mike. Who is taller, Mike or Jack?",
            "Mike is as tall as Lucy. Who is taller, Mike or Jack?",
        ),
        # both ask yes or no
        (
            "Write a function that checks whether a year is a leap year.",
            "Write a function to determine if a given year is a leap year.",
        ),
    ],
)
def test_the_same_given_said_otherwise_is_not_rejected_by_a_rule(question, entry):
    comparison, _ = _compare(question, entry)
    assert comparison.rule is None, comparison


@pytest.mark.parametrize(
    ("question", "entry"),
    [
        (
            "What is the smallest number divisible by 12, 18 and 30?",
            "What is the smallest number divisible by 30, 18 and 12?",
        ),
        ("求能被12、18和30整除的最小的数。", "求能被30、18和12整除的最小的数。"),
        (
            "Three sticks are 3 cm, 4 cm and 5 cm long. Can they form a triangle?",
            "Three sticks are 5 cm, 4 cm and 3 cm long. Can they form a triangle?",
        ),
    ],
)
def test_members_of_one_list_have_no_order_roles(question, entry):
    comparison, features = _compare(question, entry)
    assert comparison.rule is None and comparison.aligned, comparison
    assert features["role_shift"] == 0.0


@pytest.mark.parametrize(
    ("question", "entry"),
    [
        # prices "respectively" give a list its order
        (
            "Pens and rulers cost 3 yuan and 8 yuan respectively. What do 2 pens and 1 ruler cost?",
            "Pens and rulers cost 8 yuan and 3 yuan respectively. What do 2 pens and 1 ruler cost?",
        ),
        # each number counts its own thing
        (
            "A farm has 12 cows and 30 hens. How many legs are there?",
            "A farm has 30 cows and 12 hens. How many legs are there?",
        ),
    ],
)
def test_numbers_that_are_not_one_list_keep_their_roles(question, entry):
    comparison, features = _compare(question, entry)
    assert comparison.rule == "roles" or features["role_shift"] > 0, comparison


_WALK = "Mia cycles for {} at 12 km per hour. How far does she ride?"


@pytest.mark.parametrize(
    ("question", "entry"),
    [
        (_WALK.format("half an hour"), _WALK.format("30 minutes")),
        (_WALK.format("2 weeks"), _WALK.format("14 days")),
        (
            "A trail is 0.4 km long. How many 50 m posts line it?",
            "A trail is 400 m long. How many 50 m posts line it?",
        ),
    ],
)
def test_equal_amounts_in_other_units_may_be_a_certain_hit_and_say_so(question, entry):
    comparison, features = _compare(question, entry)
    assert comparison.rule is None and comparison.aligned, comparison
    assert features["converted_units"] == 1.0
    assert " = " in comparison.reason  # "0.5 h = 30 min"


def test_the_same_units_have_no_conversion():
    _, features = _compare(_WALK.format("30 minutes"), _WALK.format("30 minutes"))
    assert features["converted_units"] == 0.0


def test_a_model_fitted_before_a_feature_was_added_still_walks_its_trees(tmp_path):
    """The shipped model names the features it was fitted on: its trees are walked by name, and a
    feature added since (converted_units) is not used until the next refit."""
    shipped = load_model_for("use-multilingual")
    assert shipped is not None
    data = json.loads(
        (
            __import__("solver.decision", fromlist=["model_path"]).model_path("use-multilingual")
        ).read_text()
    )
    # an older feature list, reordered: the same probability for the same named values
    values = {name: 0.3 + 0.01 * i for i, name in enumerate(FEATURES)}
    vector = tuple(values[name] for name in FEATURES)
    reordered = dict(data)
    order = list(reversed(data["features"]))
    reordered["features"] = order
    remap = {data["features"].index(name): i for i, name in enumerate(order)}
    reordered["trees"] = [
        [[remap[f] if f >= 0 else f, t, left, right, v] for f, t, left, right, v in nodes]
        for nodes in data["trees"]
    ]
    path = tmp_path / "reordered.json"
    path.write_text(json.dumps(reordered))
    assert DecisionModel.load(path).probability(vector) == pytest.approx(
        shipped.probability(vector)
    )
    # a model fitted before converted_units existed (its feature list lacks it; the shipped one was
    # refitted with it) loads, and converted_units changes nothing for its trees
    older = [name for name in data["features"] if name != "converted_units"]
    kept = {i for i, name in enumerate(data["features"]) if name != "converted_units"}
    old_trees = [nodes for nodes in data["trees"] if all(f < 0 or f in kept for f, *_ in nodes)]
    assert old_trees, "every shipped tree splits on converted_units"
    remap_old = {data["features"].index(name): i for i, name in enumerate(older)}
    old_model = dict(
        data,
        features=older,
        trees=[
            [[remap_old[f] if f >= 0 else f, t, left, right, v] for f, t, left, right, v in nodes]
            for nodes in old_trees
        ],
    )
    path.write_text(json.dumps(old_model))
    loaded_old = DecisionModel.load(path)
    changed = list(vector)
    changed[FEATURES.index("converted_units")] = 1.0
    assert loaded_old.probability(tuple(changed)) == loaded_old.probability(vector)
    # a model that needs a feature this version does not compute is refused
    unknown = dict(data, features=[*data["features"][:-1], "no_such_feature"])
    path.write_text(json.dumps(unknown))
    with pytest.raises(Exception, match="other features"):
        DecisionModel.load(path)
