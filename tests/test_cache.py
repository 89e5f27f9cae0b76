"""The semantic answer cache: gates, decisions, storage, concurrency, the `match` command, and the
figures of issue 3 measured on the whole labelled set tests/data/cache_cases.jsonl.

Unit tests use a small hashing embedder (character n-grams) so that they run in milliseconds. The
same lookup, add and concurrency paths also run with the real models: the numpy Universal Sentence
Encoder (loads in ~2 s, in the default run) and the bundled MiniLM (marked slow: loading torch and the
model takes ~10 s), which also measure the labelled-set figures.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from solver.cache import (
    CacheFileError,
    ExactIndex,
    HnswIndex,
    SemanticCache,
    check_wording,
    recommended_thresholds,
)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
HIT_KINDS = ("paraphrase", "reorder", "format", "numeral", "translation")
MISS_KINDS = ("number_change", "target_change", "negation", "unit_change", "related")


# --------------------------------------------------------------------------------------------------
# A fast stand-in embedder for unit tests
# --------------------------------------------------------------------------------------------------


class HashingEmbedder:
    """Bag of character 1- to 3-grams hashed into 256 dimensions, L2-normalized. Deterministic."""

    name = "hashing-test"
    dim = 256

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for n in (1, 2, 3):
                for i in range(len(text) - n + 1):
                    h = hashlib.blake2b(text[i : i + n].encode(), digest_size=4).digest()
                    out[row, int.from_bytes(h, "little") % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


BANK = [
    ("chickens", "鸡兔同笼，共有35个头，94只脚，问鸡有多少只？"),
    ("train", "A train travels 240 km in 3 hours. What is its average speed?"),
    (
        "boat",
        "A boat goes 24 km downstream in 2 hours. The current flows at 3 km/h. What is the boat's speed in still water?",
    ),
    (
        "knights",
        "Knights always tell the truth and knaves always lie. A says: 'B is a knave.' B says: 'A and I are both knaves.' Who is a knight and who is a knave?",
    ),
    ("percent", "40 is what percent of 160?"),
]


BANK_CAGE = "Chickens and rabbits are in a cage: 20 heads and 56 legs. How many chickens are there?"
KNIGHTS = BANK[3][1]


@pytest.fixture
def cache() -> SemanticCache:
    c = SemanticCache(HashingEmbedder(), threshold=0.5, signature_threshold=0.3)
    c.add_many(BANK)
    return c


@pytest.mark.parametrize(
    ("question", "entry"),
    [
        ("鸡兔同笼，共有三十五个头，九十四只脚，问鸡有多少只？", "chickens"),
        ("老师好，请问：鸡兔同笼，共有３５个头，９４只脚，鸡有多少只？谢谢！", "chickens"),
        (
            "A train travels two hundred forty km in three hours. What is its average speed?",
            "train",
        ),
        ("In 3 hours a train travels 240 km. What is its average speed?", "train"),
        ("What percent of 160 is 40?", "percent"),
    ],
)
def test_it_serves_a_reworded_question_from_cache(cache, question, entry):
    decision = cache.lookup(question)
    assert decision.hit, decision.reasons
    assert decision.outcome == "hit" and not decision.suggestions
    assert decision.entry_id == entry
    assert decision.explanation and "#" not in decision.explanation


@pytest.mark.parametrize(
    ("question", "gate", "words"),
    [
        (
            "鸡兔同笼，共有35个头，96只脚，问鸡有多少只？",
            "numbers",
            "has 94 where you have 96",
        ),
        ("鸡兔同笼，共有35个头，94只脚，问兔有多少只？", "target", "asks for chicken"),
        (
            "A train travels 240 miles in 3 hours. What is its average speed?",
            "numbers",
            "has 240 km where you have 240 mile",
        ),
        (
            "A boat goes 24 km upstream in 2 hours. The current flows at 3 km/h. What is the boat's speed in still water?",
            "polarity",
            "downstream",
        ),
        (
            "Knights always tell the truth and knaves always lie. A says: 'B is a knight.' B says: 'A and I are both knaves.' Who is a knight and who is a knave?",
            "wording",
            "it says 'knave' where you wrote 'knight'",
        ),
        # the share reader sees it before the wording check: 40 was the part, here it is the whole
        ("160 is what percent of 40?", "unknown", "40 is the whole in your problem"),
    ],
)
def test_a_changed_question_misses_and_says_which_gate_decided(cache, question, gate, words):
    decision = cache.lookup(question)
    assert not decision.hit and decision.outcome == "miss" and not decision.suggestions
    assert decision.entry_id is None
    top = decision.candidates[0]
    assert top.gate == gate
    assert words in decision.reasons[0]
    assert words in decision.explanation and "#" not in decision.explanation


@pytest.mark.parametrize(
    ("question", "reason"),
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("鸡" * 100_000, "characters long"),
        ("35 94", "no words"),
        ("🐔🐰🐔", "no words"),
        ("\x00\x1b[31m\x7f", "no words"),
        (None, "not text"),
        (35, "not text"),
    ],
)
def test_bad_input_is_a_miss_with_a_reason(cache, question, reason):
    decision = cache.lookup(question)
    assert not decision.hit
    assert reason in decision.reasons[0]


@pytest.mark.parametrize(
    "question",
    [
        "鸡兔同笼\x07，共有35个头，94只脚🐔🐰，问鸡有多少只？",
        "鸡兔同笼 chickens and rabbits, 35 heads 94 legs, 问鸡有多少只？",
    ],
)
def test_control_characters_emoji_and_mixed_scripts_never_crash(cache, question):
    decision = cache.lookup(question)
    assert decision.entry_id in (None, "chickens")
    json.dumps(decision.to_dict(), ensure_ascii=False)


def test_an_added_entry_is_served_at_once_and_a_removed_one_is_not(cache):
    question = "A pool is filled by a pipe in 6 hours and emptied by another in 9 hours. How many hours to fill it?"
    assert not cache.lookup(question).hit
    cache.add("pool", question)
    assert cache.lookup(question).entry_id == "pool"
    assert len(cache) == len(BANK) + 1
    assert cache.remove("pool")
    assert not cache.remove("pool")
    assert not cache.lookup(question).hit
    assert len(cache) == len(BANK)


def test_a_banked_text_asked_again_is_decided_without_the_embedder(cache):
    """Word for word (after folding width, numerals, case and spacing) is the exact tier: no model call."""
    calls = cache.embedder.calls
    again = "鸡兔同笼，共有３５个头，９４只脚，问鸡有多少只？"  # full-width digits: the same canonical text
    decision = cache.lookup(again)
    assert decision.hit and decision.entry_id == "chickens" and decision.score == 1.0
    assert "same text" in decision.explanation
    assert cache.embedder.calls == calls
    changed = "鸡兔同笼，共有35个头，96只脚，问鸡有多少只？"
    assert not cache.lookup(changed).hit
    assert cache.embedder.calls == calls + 1


def test_the_exact_tier_reaches_the_vector_searchs_decision(cache):
    from solver.decision import read as _analyze
    from solver.normalize import normalize

    for _entry_id, text in BANK:
        question = _analyze(normalize(text))
        fast = cache._exact_hit(question)
        slow = cache._lookup_vector(question, cache.embedder.embed([question.canonical])[0])
        assert fast is not None and slow.hit
        assert fast.entry_id == slow.entry_id and fast.outcome == slow.outcome == "hit"


def test_a_text_banked_twice_is_served_until_both_are_removed(cache):
    original, text = BANK[1]
    cache.add("copy", text)
    assert cache.lookup(text).entry_id == original  # the older of the two
    cache.remove(original)
    assert cache.lookup(text).entry_id == "copy"
    cache.remove("copy")
    assert not cache.lookup(text).hit


def test_adding_an_id_again_replaces_the_entry(cache):
    cache.add("train", "A car travels 300 km in 5 hours. What is its average speed?")
    assert len(cache) == len(BANK)
    assert not cache.lookup(BANK[1][1]).hit
    assert (
        cache.lookup("A car travels 300 km in 5 hours. What is its average speed?").entry_id
        == "train"
    )


def test_unusable_bank_entries_are_skipped_in_bulk_and_refused_one_by_one(cache):
    assert (
        cache.add_many(
            [("empty", "  "), ("long", "x" * 10_000), ("ok", "How many days are in 3 weeks?")]
        )
        == 1
    )
    with pytest.raises(ValueError, match="empty"):
        cache.add("empty", " ")


def test_the_decision_is_json_serialisable(cache):
    data = cache.lookup("鸡兔同笼，共有35个头，94只脚，问鸡有多少只？").to_dict()
    assert json.loads(json.dumps(data, ensure_ascii=False)) == data
    assert data["hit"] is True and data["entry_id"] == "chickens"
    assert {"entry_id", "score", "passed", "gate", "reason"} <= set(data["candidates"][0])


def test_lookup_many_equals_lookup_one_by_one(cache):
    questions = [q for _, q in BANK] + ["", "鸡兔同笼，共有35个头，96只脚，问鸡有多少只？"]
    assert [d.to_dict() for d in cache.lookup_many(questions)] == [
        cache.lookup(q).to_dict() for q in questions
    ]


def test_an_empty_bank_misses(tmp_path):
    assert "empty" in SemanticCache(HashingEmbedder()).lookup("What is 2 + 2?").reasons[0]


def test_save_and_load_keep_every_decision(cache, tmp_path):
    generation = cache.save(tmp_path / "bank")
    assert sorted(p.name for p in (tmp_path / "bank").iterdir()) == ["CURRENT", generation.name]
    assert sorted(p.name for p in generation.iterdir()) == [
        "entries.json",
        "manifest.json",
        "vectors.npy",
    ]
    loaded = SemanticCache.load(
        tmp_path / "bank", HashingEmbedder(), threshold=0.5, signature_threshold=0.3
    )
    assert len(loaded) == len(cache)
    for question in [q for _, q in BANK] + ["鸡兔同笼，共有35个头，96只脚，问鸡有多少只？"]:
        assert loaded.lookup(question).to_dict() == cache.lookup(question).to_dict()


def test_loading_refuses_another_embedder_and_damaged_files(cache, tmp_path):
    generation = cache.save(tmp_path / "bank")

    class Other(HashingEmbedder):
        name = "other"

    with pytest.raises(CacheFileError, match="re-embed"):
        SemanticCache.load(tmp_path / "bank", Other())
    (generation / "entries.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CacheFileError):
        SemanticCache.load(tmp_path / "bank", HashingEmbedder())
    with pytest.raises(CacheFileError):
        SemanticCache.load(tmp_path / "missing", HashingEmbedder())


def test_exact_and_hnsw_indexes_agree():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    keys = np.arange(500)
    exact, hnsw = ExactIndex(32), HnswIndex(32)
    exact.add(keys, vectors)
    hnsw.add(keys, vectors)
    for i in (0, 17, 499):
        assert exact.search(vectors[i], 1)[0][0] == i
        assert hnsw.search(vectors[i], 1)[0][0] == i
        assert hnsw.search(vectors[i], 1)[0][1] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(hnsw.get([3, 4]), exact.get([3, 4]), atol=1e-6)
    exact.remove(17)
    hnsw.remove(17)
    assert len(exact) == len(hnsw) == 499
    assert exact.search(vectors[17], 1)[0][0] != 17
    assert hnsw.search(vectors[17], 1)[0][0] != 17


def test_the_cache_moves_to_hnsw_as_the_bank_grows(monkeypatch):
    import solver.cache as cache_module

    monkeypatch.setattr(cache_module, "AUTO_HNSW_AT", 3)
    c = SemanticCache(HashingEmbedder(), threshold=0.5, signature_threshold=0.3)
    c.add_many(BANK[:3])
    assert c.index_kind == "ExactIndex"
    c.add_many(BANK[3:])
    assert c.index_kind == "HnswIndex"
    assert c.lookup(BANK[0][1]).entry_id == "chickens"
    assert c.lookup(BANK[4][1]).entry_id == "percent"


def test_lookups_run_safely_while_entries_are_added_and_removed(cache):
    errors: list[BaseException] = []
    stop = threading.Event()

    def look() -> None:
        try:
            while not stop.is_set():
                for _, question in BANK:
                    decision = cache.lookup(question)
                    assert decision.entry_id in (None,) + tuple(entry for entry, _ in BANK)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=look) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(60):
        cache.add(f"extra{i}", f"What is the remainder when {i + 100} is divided by 7?")
        if i % 3 == 0:
            cache.remove(f"extra{i}")
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) == len(BANK) + 40
    assert cache.lookup("What is the remainder when 101 is divided by 7?").entry_id == "extra1"


@pytest.mark.parametrize(
    ("question", "entry", "blocked"),
    [
        # a typo
        (
            "hi pls help!! chickens and rabits in a cage, 20 heads and 56 legs. how many chickens?",
            BANK_CAGE,
            False,
        ),
        # the same clauses in another order
        (
            "There are 56 legs and 20 heads in a cage holding chickens and rabbits. How many chickens are there?",
            BANK_CAGE,
            False,
        ),
        # one word changed in a long question
        (BANK[2][1].replace("still water", "the river"), BANK[2][1], True),
        (KNIGHTS.replace("'B is a knave.'", "'B is a knight.'"), KNIGHTS, True),
        # two numbers swapped their places
        ("160 is what percent of 40?", "40 is what percent of 160?", True),
        # a short question is left to the exact gates
        (
            "Which number comes next: 1, 1, 2, 3, 5, 8, 13?",
            "What is the next number in the sequence 1, 1, 2, 3, 5, 8, 13?",
            False,
        ),
    ],
)
def test_the_wording_check_allows_typos_and_catches_one_word_changes(question, entry, blocked):
    from solver.decision import read as _analyze
    from solver.normalize import normalize

    reason = check_wording(_analyze(normalize(question)), _analyze(normalize(entry)), "#1")
    assert (reason is not None) == blocked


def test_thresholds_are_chosen_per_embedder():
    assert recommended_thresholds("minilm:torch") == (0.75, 0.45)
    assert recommended_thresholds("use-multilingual") == (0.65, 0.45)
    assert recommended_thresholds("st:some-model:torch") == (0.80, 0.55)
    c = SemanticCache(HashingEmbedder(), threshold=0.9)
    assert c.threshold == 0.9 and c.signature_threshold <= 0.9


# --------------------------------------------------------------------------------------------------
# The labelled set and its protocol
# --------------------------------------------------------------------------------------------------


def load_cases() -> list[dict]:
    """tests/data/cache_cases.jsonl, or its two halves while they are being written."""
    merged = DATA / "cache_cases.jsonl"
    paths = [merged] if merged.exists() else sorted(DATA.glob("cache_cases_*.jsonl"))
    cases = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                cases.append(json.loads(line))
    return cases


@dataclass
class Figures:
    """Counts per group ("all", a kind, "lang:xx", "kind/lang") on a labelled set."""

    correct: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    wrong_hits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    def rate(self, *groups: str) -> float:
        return sum(self.correct[g] for g in groups) / max(1, sum(self.total[g] for g in groups))

    def wrong_rate(self, *groups: str) -> float:
        return sum(self.wrong_hits[g] for g in groups) / max(1, sum(self.total[g] for g in groups))


def evaluate(cache: SemanticCache, cases: list[dict]) -> Figures:
    """The protocol of issue 3: the bank is every distinct `bank` text, the queries every `query`.

    A "hit" case is correct when it hits the entry whose text is its `bank`; a "miss" case is correct
    when it hits nothing, and a hit on any entry is a wrong hit. As in `python -m solver match`, an
    entry that the set itself declares the same problem (a text banked in both languages, linked by a
    translation case) counts as the case's own (`solver.calibration.same_problems`).
    """
    from solver.calibration import same_problems

    bank_ids: dict[str, str] = {}
    for case in cases:
        bank_ids.setdefault(case["bank"], f"b{len(bank_ids)}")
    entries = [(entry_id, text) for text, entry_id in bank_ids.items()]
    same = same_problems(
        [{**case, "text": case["query"], "bank_id": bank_ids[case["bank"]]} for case in cases],
        entries,
    )
    text_of = dict(entries)
    cache.add_many(entries, strict=True)
    decisions = cache.lookup_many([case["query"] for case in cases])
    figures = Figures()
    for case, decision in zip(cases, decisions, strict=True):
        own = decision.hit and (
            decision.entry_id == bank_ids[case["bank"]]
            or same.get(text_of[decision.entry_id]) == same.get(case["query"])
        )
        if case["expect"] == "hit":
            correct, wrong = own, False
        else:
            correct, wrong = not decision.hit or own, decision.hit and not own
        for group in (
            "all",
            case["kind"],
            f"lang:{case['lang']}",
            f"{case['kind']}/{case['lang']}",
        ):
            figures.correct[group] += int(correct)
            figures.total[group] += 1
            figures.wrong_hits[group] += int(wrong)
        if not correct:
            figures.failures.append(
                (case["id"], case["kind"], decision.reasons[0] if decision.reasons else "")
            )
    return figures


def test_the_labelled_set_has_every_kind_in_both_languages():
    cases = load_cases()
    assert len(cases) >= 400
    kinds = {case["kind"] for case in cases}
    assert kinds == set(HIT_KINDS) | set(MISS_KINDS)
    for case in cases:
        assert case["expect"] == ("hit" if case["kind"] in HIT_KINDS else "miss"), case["id"]
    langs = [case["lang"] for case in cases]
    assert 0.35 < langs.count("zh") / len(langs) < 0.65


# --------------------------------------------------------------------------------------------------
# Real embedders
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def minilm():
    from solver.embed import load_embedder

    return load_embedder("minilm")


@pytest.fixture(scope="session")
def use_multilingual():
    from solver.embed import load_embedder

    return load_embedder("use-multilingual")


@pytest.fixture(scope="session")
def minilm_figures(minilm) -> Figures:
    return evaluate(SemanticCache(minilm), load_cases())


@pytest.fixture(scope="session")
def use_figures(use_multilingual) -> Figures:
    return evaluate(SemanticCache(use_multilingual), load_cases())


def test_the_multilingual_encoder_embeds_both_languages(use_multilingual):
    vectors = use_multilingual.embed(
        [
            "今天是星期三，100天后是星期几？",
            "Today is Wednesday. What day is it 100 days from now?",
            "",
        ]
    )
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) > 0.6


@pytest.mark.parametrize(("question", "entry"), [(q, e) for e, q in BANK])
def test_the_real_multilingual_cache_serves_the_bank_and_guards_it(
    use_multilingual, question, entry
):
    cache = SemanticCache(use_multilingual)
    cache.add_many(BANK)
    assert cache.lookup(question).entry_id == entry
    assert not cache.lookup(
        question.replace("35", "36")
        .replace("240", "250")
        .replace("24 km", "25 km")
        .replace("160", "150")
        .replace("knave.'", "knight.'")
    ).hit


def test_the_real_multilingual_cache_is_safe_under_concurrent_lookups_and_adds(use_multilingual):
    cache = SemanticCache(use_multilingual)
    cache.add_many(BANK)
    errors: list[BaseException] = []
    results: list[str | None] = []

    def look() -> None:
        try:
            for _ in range(3):
                results.append(cache.lookup(BANK[0][1]).entry_id)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=look) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(5):
        cache.add(f"extra{i}", f"一个长方形长{i + 10}厘米，宽5厘米，它的面积是多少平方厘米？")
    for t in threads:
        t.join()
    assert not errors
    assert results == ["chickens"] * 9
    assert (
        cache.lookup("一个长方形长十二厘米，宽五厘米，它的面积是多少平方厘米？").entry_id
        == "extra2"
    )


# Pairs written apart from the labelled set (after its figures were measured): one bank entry, one
# question. Questions that must miss may never hit; these are the checks a held-out set makes.
FRESH_PAIRS = [
    # the same numbers, the given and the unknown of a share swapped: which value is asked decides
    ("What is 15% of 240?", "240 is 15% of what number?", False),
    ("What is 15% of 240?", "Find fifteen percent of 240.", True),
    ("240的15%是多少？", "15%是240的多少？", False),
    ("240的15%是多少？", "一个数的15%是240，这个数是多少？", False),
    ("240的15%是多少？", "240是多少的15%？", False),
    ("24的四分之三是多少？", "某数的四分之三是24，求这个数。", False),
    ("40 is what percent of 160?", "160 is what percent of 40?", False),
    (
        "A price rises by 20% and then falls by 20%. By what percent has it changed overall?",
        "某商品先提价20%，再降价20%，现价是原价的百分之几？",
        False,
    ),
    (
        "一个正方形的周长是24厘米，它的面积是多少平方厘米？",
        "一个正方形的面积是24平方厘米，它的周长是多少厘米？",
        False,
    ),
    (
        "一个正方形的周长是24厘米，它的面积是多少平方厘米？",
        "正方形周长24厘米，求面积（平方厘米）。",
        True,
    ),
    (
        "一个正方形的周长是24厘米，它的面积是多少平方厘米？",
        "A square has a perimeter of 24 cm. What is its area in square centimeters?",
        True,
    ),
    (
        "How many prime numbers are there between 1 and 50?",
        "What is the sum of the prime numbers between 1 and 50?",
        False,
    ),
    ("从1到100的所有偶数的和是多少？", "从1到100的所有奇数的和是多少？", False),
    (
        "If 3 apples cost 5 yuan, how much do 12 apples cost?",
        "If 3 apples cost 5 yuan, how many apples can you buy with 12 yuan?",
        False,
    ),
    (
        "Write a Python function that counts the vowels in a string.",
        "Write a Python function that counts the consonants in a string.",
        False,
    ),
    (
        "用Python写一个函数，把列表按从小到大排序。",
        "用Python写一个函数，把列表按从大到小排序。",
        False,
    ),
    ("用Python写一个函数，计算n的阶乘。", "用Python写一个函数，计算1到n的和。", False),
    (
        "A cylinder has radius 3 cm and height 10 cm. What is its volume?",
        "A cone has radius 3 cm and height 10 cm. What is its volume?",
        False,
    ),
    (
        "一个圆柱的底面半径是3厘米，高10厘米，体积是多少立方厘米？",
        "圆柱底面半径3厘米，高10厘米，求它的体积（立方厘米）。",
        True,
    ),
    (
        "What is the least common multiple of 12 and 18?",
        "What is the greatest common divisor of 12 and 18?",
        False,
    ),
    ("What is the least common multiple of 12 and 18?", "Find the LCM of 18 and 12.", True),
    (
        "A clock shows 3:00. What is the angle between the hands?",
        "A clock shows 3:30. What is the angle between the hands?",
        False,
    ),
    (
        "Two numbers have a sum of 40 and a product of 391. What is the larger number?",
        "Two numbers have a sum of 40 and a product of 391. What is the smaller number?",
        False,
    ),
    (
        "A die is rolled twice. What is the probability that both rolls are even?",
        "A die is rolled twice. What is the probability that at least one roll is even?",
        False,
    ),
    ("How many minutes are there in 3 hours?", "How many seconds are there in 3 hours?", False),
    (
        "What is the area of a circle with radius 4?",
        "What is the area of a circle with diameter 4?",
        False,
    ),
    ("What is the median of 3, 7, 9, 12, 15?", "What is the mean of 3, 7, 9, 12, 15?", False),
    (
        "A coin is flipped 3 times. What is the probability of exactly 2 heads?",
        "Flip a coin three times. What's the chance of getting exactly two heads?",
        True,
    ),
    (
        "甲乙两地相距360千米，一辆汽车每小时行60千米，从甲地到乙地需要几小时？",
        "甲乙两地相距360千米，一辆汽车每分钟行60千米，从甲地到乙地需要几小时？",
        False,
    ),
]


@pytest.mark.parametrize(("bank", "question", "should_hit"), FRESH_PAIRS)
def test_fresh_pairs_with_the_multilingual_encoder(use_multilingual, bank, question, should_hit):
    cache = SemanticCache(use_multilingual)
    cache.add("x", bank)
    decision = cache.lookup(question)
    assert decision.hit == should_hit, decision.reasons


@pytest.mark.slow
def test_the_real_minilm_cache_serves_rewordings_and_refuses_changes(minilm):
    cache = SemanticCache(minilm)
    cache.add_many(BANK)
    assert minilm.dim == 384
    assert (
        cache.lookup("鸡兔同笼，共有三十五个头，九十四只脚，问鸡有多少只？").entry_id == "chickens"
    )
    assert (
        cache.lookup("In 3 hours a train travels 240 km. What is its average speed?").entry_id
        == "train"
    )
    assert not cache.lookup("鸡兔同笼，共有35个头，96只脚，问鸡有多少只？").hit
    assert not cache.lookup("A train travels 240 miles in 3 hours. What is its average speed?").hit
    assert not cache.lookup("").hit


@pytest.mark.slow
def test_minilm_makes_no_wrong_hit_on_number_or_unit_changes(minilm_figures):
    f = minilm_figures
    assert f.wrong_hits["number_change"] == 0
    assert f.wrong_hits["unit_change"] == 0
    assert f.wrong_rate(*MISS_KINDS) <= 0.01, f.failures


@pytest.mark.slow
def test_minilm_serves_at_least_85_percent_of_rewordings(minilm_figures):
    f = minilm_figures
    assert f.rate("paraphrase", "reorder", "format", "numeral") >= 0.85, f.failures
    # the English-only default still serves some translations through the exact-signature path;
    # this floor only guards against a regression (about 19% measured)
    assert f.rate("translation") >= 0.10


@pytest.mark.slow
def test_the_default_multilingual_cache_v2_figures_on_our_own_set(use_figures):
    """Development figures (the decision rule was fitted on part of this set), measured with `python
    -m solver match --cases tests/data/cache_cases.jsonl` (2026-12-07, the rule refitted on this set,
    tests/data/cache_cases_more.jsonl and the GSM development data: 78.8% served, 71.1% of translations);
    the held-apart figures are in bench/RESULTS.md."""
    f = use_figures
    assert f.rate("paraphrase", "reorder", "format", "numeral") >= 0.78, f.failures
    assert f.rate("format", "numeral") >= 0.88, f.failures
    assert f.rate("translation") >= 0.7, f.failures  # 71.1%
    assert f.wrong_hits["number_change"] == 0
    assert f.wrong_hits["unit_change"] == 0
    # The only wrong hits are right answers: the chickens-and-rabbits problem is banked in both
    # languages, and each language's "ask the other animal" variant is the other language's entry.
    # The set labels them misses of their own entry and does not link the two.
    wrong = {case_id for case_id, kind, _ in f.failures if kind in MISS_KINDS}
    assert wrong <= {"zh-005", "en-005"}, f.failures


@pytest.mark.slow
def test_the_decision_rule_holds_on_the_gsm_development_data_held_apart():
    """The problems of ../shared/data/gsm_cache_dev.jsonl that `calibrate` kept apart (a hash of the
    bank text): the rule never saw them. Natural paraphrases written by other people."""
    from solver.calibration import is_held_apart, score
    from solver.cli.match import read_cases
    from solver.embed import load_embedder

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm_cache_dev.jsonl"
    if not path.is_file():
        pytest.skip("the shared development data is not on this machine")
    bank, queries = read_cases(path)
    text_of = dict(bank)
    queries = [q for q in queries if is_held_apart(text_of[q["bank_id"]], 0.3)]
    cache = SemanticCache(load_embedder("use-multilingual"))
    cache.add_many(bank)
    groups = score(queries, cache.lookup_many([q["text"] for q in queries]), bank)
    must_miss = groups["expect:miss"]
    assert must_miss["wrong_hits"] / must_miss["total"] <= 0.005
    assert groups["paraphrase"]["correct"] / groups["paraphrase"]["total"] >= 0.6
    assert groups["translation"]["correct"] / groups["translation"]["total"] >= 0.6
    # measured 91.9% (79/86) of rewordings served or suggested right (2026-12-07)
    assert groups["expect:hit"]["found"] / groups["expect:hit"]["total"] >= 0.9


@pytest.mark.slow
def test_the_decision_rule_on_the_second_hand_written_set_held_apart():
    """tests/data/cache_cases_more.jsonl (402 pairs over 60 problems, written after the first set and
    checked against the shipped rule before it was tuned on): its problems that `calibrate` kept apart.
    Measured 2026-12-07 with the rule refitted on all three sets: 54.5% of rewordings served at once,
    96.7% served or suggested right, 1 wrong hit of 51 (a remainder problem read like a divisibility one),
    none on a changed number or unit."""
    from solver.calibration import is_held_apart, score
    from solver.cli.match import read_cases
    from solver.embed import load_embedder

    bank, queries = read_cases(DATA / "cache_cases_more.jsonl")
    text_of = dict(bank)
    queries = [q for q in queries if is_held_apart(text_of[q["bank_id"]], 0.3)]
    cache = SemanticCache(load_embedder("use-multilingual"))
    cache.add_many(bank)
    groups = score(queries, cache.lookup_many([q["text"] for q in queries]), bank)
    assert groups["expect:miss"]["wrong_hits"] <= 1
    for kind in ("number_change", "unit_change"):
        assert groups.get(kind, {}).get("wrong_hits", 0) == 0, kind
    assert groups["expect:hit"]["found"] / groups["expect:hit"]["total"] >= 0.95


# --------------------------------------------------------------------------------------------------
# python -m solver match
# --------------------------------------------------------------------------------------------------


def match(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "solver", "match", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_match_prints_one_line_per_query_in_order(tmp_path):
    bank = write_jsonl(
        tmp_path / "bank.jsonl",
        [{"id": k, "text": t} for k, t in BANK]
        + [{"id": 7, "text": "How many days are in 3 weeks?"}],
    )
    queries = [
        {
            "text": "鸡兔同笼，共有三十五个头，九十四只脚，问鸡有多少只？",
            "expect": "hit",
            "kind": "numeral",
            "lang": "zh",
            "bank_id": "chickens",
        },
        {
            "text": "鸡兔同笼，共有35个头，96只脚，问鸡有多少只？",
            "expect": "miss",
            "kind": "number_change",
            "lang": "zh",
        },
        {"text": "", "note": "empty"},
        {"text": "How many days are there in three weeks?"},
    ]
    q = write_jsonl(tmp_path / "q.jsonl", queries)
    proc = match("--bank", str(bank), "--queries", str(q), "--embedder", "use-multilingual")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["text"] for line in lines] == [row["text"] for row in queries]
    for line in lines:
        assert set(line) == {"text", "hit", "match_id", "score", "reasons", "suggestions"}
    assert lines[0]["hit"] and lines[0]["match_id"] == "chickens"
    assert not lines[1]["hit"] and "96" in lines[1]["reasons"][0]
    assert not lines[2]["hit"] and lines[2]["reasons"] == ["the question is empty"]
    assert lines[3]["match_id"] == "7"  # integer ids come back as strings
    assert "4 questions: 2 hits, 0 suggestions, 2 misses" in proc.stderr
    assert "wrong hits (questions that must miss): 0/1" in proc.stderr
    assert "number_change" in proc.stderr


def test_match_writes_predictions_to_a_file(tmp_path):
    bank = write_jsonl(tmp_path / "bank.jsonl", [{"id": k, "text": t} for k, t in BANK])
    q = write_jsonl(tmp_path / "q.jsonl", [{"text": t} for _, t in BANK])
    out = tmp_path / "pred.jsonl"
    proc = match(
        "--bank",
        str(bank),
        "--queries",
        str(q),
        "--out",
        str(out),
        "--embedder",
        "use-multilingual",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert [
        json.loads(line)["match_id"] for line in out.read_text(encoding="utf-8").splitlines()
    ] == [k for k, _ in BANK]


@pytest.mark.parametrize(
    ("bank_text", "queries_text", "extra", "message"),
    [
        (
            '{"id": 1, "text": "a"}\n{"id": 2, "text": \n',
            '{"text": "a"}\n',
            [],
            "bank.jsonl, line 2: not valid JSON",
        ),
        (
            '{"id": 1, "text": "a"}\n',
            '{"text": "a"}\n[1, 2]\n',
            [],
            "q.jsonl, line 2: expected a JSON object",
        ),
        (
            '{"id": 1, "text": "a"}\n',
            '{"text": 5}\n',
            [],
            'q.jsonl, line 1: "text" must be a string',
        ),
        ('{"id": 1}\n', '{"text": "a"}\n', [], 'bank.jsonl, line 1: "text" must be a string'),
        (
            '{"id": 1, "text": "a"}\n{"id": "1", "text": "b"}\n',
            '{"text": "a"}\n',
            [],
            "appears twice",
        ),
        ('{"id": 1, "text": "  "}\n', '{"text": "a"}\n', [], '"text" is empty'),
        ("\n\n", '{"text": "a"}\n', [], "the bank has no entries"),
        (
            '{"id": 1, "text": "a"}\n',
            '{"text": "a"}\n',
            ["--threshold", "1.5"],
            "--threshold must be",
        ),
        (
            '{"id": 1, "text": "a"}\n',
            '{"text": "a"}\n',
            ["--embedder", "bogus"],
            "unknown embedder",
        ),
    ],
)
def test_match_refuses_bad_input_with_exit_code_2(
    tmp_path, bank_text, queries_text, extra, message
):
    (tmp_path / "bank.jsonl").write_text(bank_text, encoding="utf-8")
    (tmp_path / "q.jsonl").write_text(queries_text, encoding="utf-8")
    proc = match(
        "--bank", str(tmp_path / "bank.jsonl"), "--queries", str(tmp_path / "q.jsonl"), *extra
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1  # one clear sentence, no traceback


def test_match_refuses_missing_files_and_mixed_modes(tmp_path):
    proc = match("--bank", str(tmp_path / "none.jsonl"), "--queries", str(tmp_path / "none.jsonl"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
    proc = match("--queries", str(tmp_path / "none.jsonl"))
    assert proc.returncode == 2 and "--bank" in proc.stderr
    proc = match("--cases", str(DATA / "cache_cases.jsonl"), "--bank", str(tmp_path / "b.jsonl"))
    assert proc.returncode == 2 and "either --cases" in proc.stderr


@pytest.mark.slow
def test_match_on_the_labelled_set_reports_the_same_figures_as_the_tests(tmp_path, use_figures):
    cases = DATA / "cache_cases.jsonl"
    if not cases.exists():
        pytest.skip("the merged labelled set is not written yet")
    proc = match("--cases", str(cases), "--out", str(tmp_path / "pred.jsonl"))
    assert proc.returncode == 0, proc.stderr
    f = use_figures
    hits = sum(f.correct[k] for k in ("paraphrase", "reorder", "format", "numeral"))
    total = sum(f.total[k] for k in ("paraphrase", "reorder", "format", "numeral"))
    assert (
        f"served rewordings (format, numeral, reorder, paraphrase): {hits}/{total}" in proc.stderr
    )
    wrong = sum(f.wrong_hits[k] for k in MISS_KINDS)
    assert f"wrong hits (questions that must miss): {wrong}/" in proc.stderr


# --------------------------------------------------------------------------------------------------
# Embedders
# --------------------------------------------------------------------------------------------------


def test_an_unknown_embedder_name_is_refused():
    from solver.embed import load_embedder

    with pytest.raises(ValueError, match="unknown embedder"):
        load_embedder("bogus")


def test_a_folder_that_is_not_a_model_is_refused(tmp_path):
    from solver.embed import EmbedderUnavailable, load_embedder

    with pytest.raises(EmbedderUnavailable, match="not a sentence-transformers model folder"):
        load_embedder(f"st:{tmp_path}")


def test_a_failed_modelscope_download_is_one_clear_sentence(monkeypatch, tmp_path):
    import modelscope

    from solver.embed import EmbedderUnavailable, prepare_embedder_from_modelscope

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'modelscope.cn'")

    monkeypatch.setattr(modelscope, "snapshot_download", offline)
    with pytest.raises(EmbedderUnavailable) as info:
        prepare_embedder_from_modelscope(
            "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", tmp_path
        )
    message = str(info.value)
    assert (
        "Could not download sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2" in message
    )
    assert "ConnectionError" in message and "\n" not in message


def test_the_bundled_minilm_folder_is_found():
    from solver.embed import bundled_minilm_path

    assert (bundled_minilm_path() / "model.safetensors").is_file()


@pytest.mark.slow
def test_minilm_embeds_unit_rows(minilm):
    texts = ["鸡兔同笼，共有35个头，94只脚", "A train travels 240 km in 3 hours.", ""]
    rows = minilm.embed(texts)
    assert rows.shape == (3, 384) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert minilm.embed([]).shape == (0, 384)


OPENVINO_CHECK = """
import sys
import numpy as np
from solver.embed import SentenceTransformerEmbedder
texts = ["鸡兔同笼，共有35个头，94只脚", "A train travels 240 km in 3 hours."]
torch_rows = SentenceTransformerEmbedder().embed(texts)
ov = SentenceTransformerEmbedder(backend="openvino", openvino_dir=sys.argv[1])
again = SentenceTransformerEmbedder(backend="openvino", openvino_dir=sys.argv[1])
print(float(np.min(np.sum(ov.embed(texts) * torch_rows, axis=1))))
print(float(np.max(np.abs(again.embed(texts) - ov.embed(texts)))))
"""


@pytest.mark.slow
def test_the_openvino_backend_agrees_with_torch(tmp_path):
    # its own process: OpenVINO's export traces the model with torch, and mixing their thread pools
    # with the other libraries this session has loaded (usearch, the numpy encoder) can stall it
    proc = subprocess.run(
        [sys.executable, "-c", OPENVINO_CHECK, str(tmp_path / "ov")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    agreement, reload_difference = (float(x) for x in proc.stdout.split()[-2:])
    assert agreement > 0.99
    # the export is kept: the second load reads it instead of exporting again
    assert (tmp_path / "ov" / "openvino" / "openvino_model.xml").is_file()
    assert reload_difference < 1e-4


# --------------------------------------------------------------------------------------------------
# Cache v2: aliases, blocks, suggestions, the decision model file, the exact rules
# --------------------------------------------------------------------------------------------------


def test_an_alias_is_an_exact_hit_and_a_block_never_matches_again(cache, tmp_path):
    wording = "Someone asks in their own words about a train doing 240 km over three hours"
    assert cache.lookup(wording).entry_id != "train"
    cache.add_alias(wording, "train")
    calls = cache.embedder.calls
    decision = cache.lookup(wording)
    assert decision.hit and decision.entry_id == "train" and "teacher" in decision.explanation
    assert cache.embedder.calls == calls  # the exact tier
    cache.save(tmp_path / "saved")
    again = SemanticCache.load(tmp_path / "saved", cache.embedder, threshold=0.5)
    assert again.lookup(wording).entry_id == "train"  # aliases are saved with the cache
    # "not my question": that wording never matches that entry again, even word for word
    cache.add_block(wording, "train")
    assert cache.lookup(wording).entry_id != "train"
    banked = BANK[1][1]
    cache.add_block(banked, "train")
    blocked = cache.lookup(banked)
    assert not blocked.hit and all(
        c.gate == "blocked" for c in blocked.candidates if c.entry_id == "train"
    )
    assert cache.remove_block(banked, "train") and cache.lookup(banked).entry_id == "train"
    with pytest.raises(ValueError):
        cache.add_alias("", "train")


def test_a_plausible_question_is_suggested_best_first_and_never_served():
    from solver.cache import CandidateCheck, decide

    def check(entry_id: str, probability: float, aligned: bool = True) -> CandidateCheck:
        return CandidateCheck(entry_id, 0.9, True, None, "close", probability, (0.0,), aligned)

    # two certain-looking candidates (a dense bank): the student chooses
    both = decide([check("a", 0.97), check("b", 0.99)], hit_at=0.94, suggest_at=0.06)
    assert both.outcome == "suggest" and not both.hit
    assert [s.entry_id for s in both.suggestions] == ["b", "a"]
    # a certain probability without every quantity aligned is only a suggestion
    unaligned = decide([check("a", 0.99, aligned=False)], hit_at=0.94, suggest_at=0.06)
    assert unaligned.outcome == "suggest" and unaligned.entry_id is None
    one = decide([check("a", 0.97), check("b", 0.5)], hit_at=0.94, suggest_at=0.06)
    assert one.hit and one.entry_id == "a" and not one.suggestions
    none = decide([check("a", 0.01)], hit_at=0.94, suggest_at=0.06)
    assert none.outcome == "miss" and not none.suggestions


@pytest.mark.parametrize(
    ("question", "entry", "rule"),
    [
        (
            "Pipe A fills 4 feet a day; how tall after 20 feet?",
            "Pipe A fills 4 days; 20 feet?",
            "numbers",
        ),
        ("What is 3^12?", "What is 12^3?", "expression"),
        ("What is 15% of 240?", "240 is 15% of what number?", "unknown"),
        ("240的15%是多少？", "15%是240的多少？", "unknown"),
        ("一个数的15%是240，这个数是多少？", "240的15%是多少？", "unknown"),
        (
            "What is three quarters of 24?",
            "Three quarters of a number is 24. What is it?",
            "unknown",
        ),
        ("What percent of 160 is 40?", "160 is what percent of 40?", "unknown"),
        ("What is 240% of 15?", "What is 15% of 240?", "unknown"),
        ("How many centimeters are in 3.5 meters?", "3.5米等于多少毫米？", "asked unit"),
        ("What is n^2+n when n is 5?", "What is n^2-n when n is 5?", "expression"),
        (
            "5 workers build a wall in 12 days. 4 workers take how long?",
            "5 workers build a wall in 12 days. How many workers for 4 days?",
            "numbers",
        ),
        (
            "A ratio of -3 and a first term of 2: the 5th term?",
            "A ratio of 3 and a first term of 2: the 5th term?",
            "numbers",
        ),
    ],
)
def test_the_exact_rules_reject_a_changed_given(question, entry, rule):
    from solver.decision import compare, read
    from solver.normalize import normalize

    comparison = compare(
        read(normalize(question)),
        read(normalize(entry)),
        similarity=0.99,
        margin=0.5,
        wording_edit=None,
    )
    assert comparison.rule == rule, comparison


def test_the_shipped_decision_model_loads_and_a_damaged_one_is_refused(tmp_path):
    from solver.decision import FEATURES, DecisionModel, ModelFileError, load_model_for

    model = load_model_for("use-multilingual")
    assert model is not None and 0 < model.suggest_at <= model.hit_at < 1
    # fitted on these features (a feature added since is unused by its trees until the next refit)
    assert "held_apart_share" in model.notes and set(model.notes["features"]) <= set(FEATURES)
    p = model.probability(tuple(0.0 for _ in FEATURES))
    assert 0.0 < p < 1.0
    assert load_model_for("st:/some/folder") is None  # no model: the version 1 gates
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 2, "features": ["x"]}')
    with pytest.raises(ModelFileError):
        DecisionModel.load(bad)
    data = model.to_dict()
    data["trees"][0][0][2] = 10_000  # a node pointing outside its tree
    bad.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="outside"):
        DecisionModel.load(bad)


# --------------------------------------------------------------------------------------------------
# The same amount in other units (solver.lexicon's factors): one quantity when the text means the same


def _compared(bank: str, question: str):
    from solver.decision import FEATURES, compare, read
    from solver.normalize import normalize

    comparison = compare(
        read(normalize(question)),
        read(normalize(bank)),
        similarity=0.95,
        margin=0.5,
        wording_edit="the wording check of solver.cache found a difference",
    )
    return comparison, dict(zip(FEATURES, comparison.features, strict=False))


_WALK = "Tom walks to school for {} at 4 km per hour. How far is his school?"
_ROAD = "A road is {} long. A tree is planted every 50 m along one side, including both ends. How many trees are planted?"


@pytest.mark.parametrize(
    ("bank", "question"),
    [
        (_WALK.format("30 minutes"), _WALK.format("half an hour")),
        (_WALK.format("30 minutes"), _WALK.format("0.5 h")),
        (_ROAD.format("2 km"), _ROAD.format("2000 m")),
        (
            "小明步行上学要30分钟，每小时走4千米，他家离学校多远？",
            "小明步行上学要半小时，每小时走4千米，他家离学校多远？",
        ),
        (
            "一条路长2千米，每隔50米种一棵树，两端都种，一共种多少棵树？",
            "一条路长2000米，每隔50米种一棵树，两端都种，一共种多少棵树？",
        ),
        (
            "A tank fills in 60 minutes. How many tanks fill in 6 hours?",
            "A tank fills in an hour. How many tanks fill in 6 hours?",
        ),
        (
            "A bag holds 1.5 kg of rice. How many bags hold 30 kg?",
            "A bag holds 1500 g of rice. How many bags hold 30 kg?",
        ),
    ],
)
def test_the_same_amount_in_other_units_aligns_as_one_quantity(bank, question):
    """Paired and compared in the bank's units, aligned like equal numbers (a certain hit is
    possible), with the conversion told to the learned rule (labelled data sometimes calls such
    pairs changed numbers, so the rule weighs `converted_units`)."""
    comparison, features = _compared(bank, question)
    assert comparison.rule is None and comparison.aligned, comparison
    assert features["converted_units"] == 1.0
    # compared in the bank's units, nothing differs: no unit, no word (the wording check's edit was
    # only the way the amount is written)
    assert features["units_differ"] == 0.0 and features["wording_edit"] == 0.0
    assert features["sequence_ratio"] == 1.0


@pytest.mark.parametrize(
    ("bank", "question", "rule"),
    [
        (_WALK.format("30 minutes"), _WALK.format("3 hours"), "numbers"),
        (_ROAD.format("2 km"), _ROAD.format("2 kg"), "numbers"),
        (_ROAD.format("2 km"), _ROAD.format("200 m"), "numbers"),
        ("1元5角等于多少元？", "1元5分等于多少元？", "numbers"),
        ("买3支铅笔花11元，一支铅笔多少钱？", "买3支铅笔花11美元，一支铅笔多少钱？", "numbers"),
    ],
)
def test_a_real_change_of_value_in_other_units_is_a_changed_number(bank, question, rule):
    comparison, _ = _compared(bank, question)
    assert comparison.rule == rule, comparison


@pytest.mark.parametrize(
    ("bank", "question"),
    [
        # 72 km pairs with 72000 m, but the speeds are per hour and per second
        (
            "A car travels at 72 km/h for 2 hours. How far does it go?",
            "A car travels at 72000 m/s for 2 hours. How far does it go?",
        ),
        # the answer is asked in other units: 3 hours or 180 minutes
        (
            "A tank fills in 90 minutes. How many minutes do two tanks take?",
            "A tank fills in 1.5 hours. How many hours do two tanks take?",
        ),
        (
            "一个水池进水管90分钟注满，两个水池要几分钟？",
            "一个水池进水管1.5小时注满，两个水池要几小时？",
        ),
        # "each minute" is the unit of a rate, not a given minute: the question lacks the 60 seconds
        (
            "He reads 2 pages each minute. How many pages does he read in 60 seconds?",
            "He reads 2 pages each minute. How many pages does he read?",
        ),
    ],
)
def test_a_conversion_that_changes_what_is_asked_or_a_rate_is_never_a_certain_hit(bank, question):
    comparison, features = _compared(bank, question)
    # a miss when the answer is asked in other units (the banked number would be wrong in them)
    assert comparison.rule in (None, "asked unit") and not comparison.aligned, comparison
    assert "the same amounts" not in comparison.reason


@pytest.mark.parametrize(
    ("bank", "question", "outcome"),
    [
        (_WALK.format("30 minutes"), _WALK.format("half an hour"), "suggest"),
        (_WALK.format("30 minutes"), _WALK.format("0.5 h"), "suggest"),
        (
            "小明步行上学要30分钟，每小时走4千米，他家离学校多远？",
            "小明步行上学要半小时，每小时走4千米，他家离学校多远？",
            "suggest",
        ),
        (
            "一条路长2千米，每隔50米种一棵树，两端都种，一共种多少棵树？",
            "一条路长2000米，每隔50米种一棵树，两端都种，一共种多少棵树？",
            "suggest",
        ),
        (
            "A tank fills in 90 minutes. How many tanks fill in 6 hours?",
            "A tank fills in 1.5 hours. How many tanks fill in 6 hours?",
            "suggest",
        ),
        (_WALK.format("30 minutes"), _WALK.format("3 hours"), "miss"),
        (
            "小明步行上学要30分钟，每小时走4千米，他家离学校多远？",
            "小明步行上学要3小时，每小时走4千米，他家离学校多远？",
            "miss",
        ),
        (_ROAD.format("2 km"), _ROAD.format("2 kg"), "miss"),
        (
            "一条路长2千米，每隔50米种一棵树，两端都种，一共种多少棵树？",
            "一条路长2千克，每隔50米种一棵树，两端都种，一共种多少棵树？",
            "miss",
        ),
        (
            "A car travels at 72 km/h for 2 hours. How far does it go?",
            "A car travels at 72000 m/s for 2 hours. How far does it go?",
            "not hit",
        ),
        (
            "A tank fills in 90 minutes. How many minutes do two tanks take?",
            "A tank fills in 1.5 hours. How many hours do two tanks take?",
            "not hit",
        ),
    ],
)
def test_the_multilingual_cache_suggests_the_same_amount_in_other_units(
    use_multilingual, bank, question, outcome
):
    """Through the real embedder and the shipped decision rule: the same amount in other units is
    served or offered as "Is this your question?" (a hit is possible since the conversion aligns
    like equal numbers), a changed amount in other units misses."""
    cache = SemanticCache(use_multilingual)
    cache.add("x", bank)
    decision = cache.lookup(question)
    if outcome == "not hit":
        assert not decision.hit, decision.reasons
    elif outcome == "suggest":
        assert decision.outcome in ("hit", "suggest"), decision.reasons
        assert decision.hit or decision.suggestions[0].entry_id == "x"
    else:
        assert decision.outcome == outcome, decision.reasons
