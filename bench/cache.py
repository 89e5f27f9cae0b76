"""Answer-cache benchmark: lookup latency and memory on synthetic banks, exact float32 search vs HNSW.

For each bank size (1 000, 10 000, 100 000, 1 000 000 problems):
  - the bank is generated from ~40 Chinese and English problem templates with random numbers and
    subjects, and goes through the real `SemanticCache.add_many` (normalization, signatures, tokens);
  - its vectors are synthetic unit vectors (a centroid per template and subject, plus noise), so that
    a million entries need no hours of model time; the query vector is its entry's vector plus noise;
  - the same cache is measured with the baseline `ExactIndex` (one float32 matrix product per lookup)
    and with `HnswIndex` (usearch), switched with `SemanticCache.use_index`;
  - a lookup is the full `SemanticCache.lookup` (normalize, read quantities, search, exact rules, the
    learned decision rule of the default embedder) with the embedding taken from a table; the real
    embedding time is measured apart (add it to the lookup for the time a student waits).
Half of the queries are reworded bank questions (full-width digits: must hit), half change one number
(must miss); "agree" is the share of HNSW decisions equal to the exact-search decisions.

    python bench/cache.py --quick                 # 1k and 10k, about a minute
    python bench/cache.py                         # all sizes (the 1M bank takes ~30-40 min to build)
    python bench/cache.py --sizes 1000,100000 --no-embedder

Cold start (`--cold-start`, at 1 000 and 100 000 problems by default): the time from nothing to a
first hit through the vector search, with the real default embedder (USE-multilingual) and its
decision rule, three ways:
  (a) rebuild: `add_many` normalizes, reads and embeds every problem (what the site did until now);
  (b) build with every vector already in a `VectorStore`: normalizes and reads, embeds nothing;
  (c) load the saved cache in a fresh process (`load_or_build`: load, compare with the bank, first
      lookup), plus that process's Python start, imports and embedder load, and one `apply` of a
      new problem followed by its first hit (what a change feed costs per added answer).
Above `--slice` problems (5 000) embedding everything would take most of an hour on 2 busy cores,
so (a) is estimated: (b) minus its store reads plus the embedding time per problem measured while
rebuilding a `--slice` slice for real; the rest of the bank gets synthetic vectors in the store, and
the first-hit question is a reworded problem of the really embedded slice. The page cache is warm for
(c) (the file was just written), as on a machine where the site saved it.

    python bench/cache.py --cold-start                       # 1 000 and 100 000, about 10 minutes
    python bench/cache.py --cold-start --cold-sizes 1000
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from solver.cache import SemanticCache  # noqa: E402
from solver.decision import load_model_for  # noqa: E402
from solver.normalize import (  # noqa: E402
    content_tokens,
    implicit_quantities,
    normalize,
    quantities,
    signature_of_canonical,
)
from solver.vectors import VectorStore, text_key  # noqa: E402

DIM = 512  # USE-multilingual, the default embedder

TEMPLATES_EN = [
    "A farm has {s}s and rabbits. There are {a} heads and {b} legs in total. How many rabbits are there?",
    "A train travels {a} km in {b} hours. What is the average speed of the {s}?",
    "{S} can finish a job in {a} days and Bob can finish it in {b} days. How many days do they take together?",
    "A jacket in the {s} shop costs ${a}. It is on sale for {b}% off. What is the sale price?",
    "A rectangle drawn by {S} is {a} cm long and {b} cm wide. What is its area?",
    "What is the remainder when {a} is divided by {b}?",
    "How many integers from 1 to {a} are divisible by {b} or by {c}?",
    "A bag of {s} has {a} red balls and {b} blue balls. What is the probability of drawing a red one?",
    "{S} is {a} years older than Ben. The sum of their ages is {b}. How old is Ben?",
    "A boat goes {a} km downstream in {b} hours; the current flows at {c} km/h. What is its speed in still water?",
    "What is the {a}th term of the arithmetic sequence that starts at {b} with common difference {c}?",
    "In how many ways can {a} {s}s stand in a row?",
    "How many centimeters are in {a}.{b} meters?",
    "Today is Monday. What day of the week will it be {a} days from now, asks {S}?",
    "A tank of {a} liters is {b}/{c} full. How many liters of water does it hold?",
    "Pipe A fills a {s} tank in {a} hours and pipe B empties it in {b} hours. How long does it take to fill?",
    "{S} has {a} more marbles than Jerry. Together they have {b} marbles. How many marbles does {S} have?",
    "A price rises by {a}% and then falls by {b}%. By what percent has the {s} price changed overall?",
    "Two cars start {a} km apart and drive toward each other at {b} km/h and {c} km/h. When do they meet?",
    "How many {a}-digit numbers made of {s} digits have all digits different?",
]
TEMPLATES_ZH = [
    "{z}笼子里有鸡和兔，共有{a}个头，{b}只脚，问鸡有多少只？",
    "一辆{z}汽车每小时行{a}千米，行驶了{b}小时，一共行了多少千米？",
    "一项工程，{z}单独做{a}天完成，乙单独做{b}天完成，两人合作几天完成？",
    "一件{z}衣服原价{a}元，打{b}折后售价是多少元？",
    "一个{z}长方形长{a}厘米，宽{b}厘米，它的周长是多少厘米？",
    "{a}除以{b}的余数是多少？（{z}）",
    "1到{a}中能被{b}整除的{z}数有多少个？",
    "袋中有{a}个红球和{b}个白球，{z}从中任取一个，取到红球的概率是多少？",
    "{z}比小红大{a}岁，两人年龄之和是{b}岁，小红今年几岁？",
    "船在静水中的速度是每小时{a}千米，水流速度是每小时{b}千米，{z}顺水航行{c}千米需要几小时？",
    "一个等差数列的首项是{a}，公差是{b}，第{c}项是多少？（{z}）",
    "{a}个{z}排成一排，有多少种排法？",
    "{a}.{b}千米等于多少米？（{z}）",
    "今天是星期三，{a}天后是星期几？{z}想知道。",
    "一个{z}水池，单开进水管{a}小时注满，单开排水管{b}小时放空，两管同时打开几小时注满？",
    "{z}把{a}元存入银行，年利率是{b}%，存{c}年，到期利息是多少元？",
    "某{z}商品先提价{a}%，再降价{b}%，现价是原价的百分之几？",
    "甲乙两人从相距{a}千米的两地同时出发相向而行，甲每小时走{b}千米，乙每小时走{c}千米，几小时后相遇？（{z}）",
    "用{a}个不同的{z}数字可以组成多少个没有重复数字的{b}位数？",
    "一个圆的半径是{a}厘米，它的面积是多少平方厘米？（π取3.14，{z}）",
]
SUBJECTS_EN = [
    "apple",
    "bus",
    "tree",
    "lamp",
    "robot",
    "kite",
    "horse",
    "river",
    "castle",
    "piano",
] * 5
NAMES_EN = ["Tom", "Anna", "Lily", "Sam", "Mary", "Alice", "Peter", "Lucy", "Jack", "David"] * 5
SUBJECTS_ZH = ["小明", "小红", "小华", "小刚", "小丽", "老师", "学校", "工厂", "公园", "商店"] * 5
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def make_bank(n: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[int]]:
    """n (id, text) problems and, for each, its cluster (template x subject) for the synthetic vectors."""
    rng = random.Random(seed)
    items, clusters = [], []
    templates = [(t, "en") for t in TEMPLATES_EN] + [(t, "zh") for t in TEMPLATES_ZH]
    for i in range(n):
        t_index = rng.randrange(len(templates))
        template, lang = templates[t_index]
        s_index = rng.randrange(len(SUBJECTS_EN))
        numbers = {k: rng.randint(2, 999) for k in "abc"}
        if lang == "en":
            text = template.format(s=SUBJECTS_EN[s_index], S=NAMES_EN[s_index], **numbers)
        else:
            text = template.format(z=SUBJECTS_ZH[s_index], **numbers)
        items.append((f"p{i}", text))
        clusters.append(t_index * len(SUBJECTS_EN) + s_index)
    return items, clusters


def synthetic_vectors(clusters: list[int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n_clusters = max(clusters) + 1
    centroids = rng.standard_normal((n_clusters, DIM)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    out = np.empty((len(clusters), DIM), dtype=np.float32)
    for start in range(0, len(clusters), 100_000):
        idx = np.asarray(clusters[start : start + 100_000])
        noise = rng.standard_normal((len(idx), DIM)).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        block = centroids[idx] + 0.35 * noise
        out[start : start + len(idx)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


class QueuedEmbedder:
    """An Embedder that hands out prepared vectors in order: the model's time is measured apart."""

    name = "bench-queued"
    dim = DIM

    def __init__(self) -> None:
        self.vectors = np.zeros((0, DIM), dtype=np.float32)
        self.next = 0

    def load(self, vectors: np.ndarray) -> None:
        self.vectors, self.next = vectors, 0

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = self.vectors[self.next : self.next + len(texts)]
        self.next += len(texts)
        return rows


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def make_queries(items, vectors, count: int, seed: int = 1) -> list[tuple[str, np.ndarray, bool]]:
    """(canonical-ish question, vector, must_hit): half reworded (full-width digits), half one number changed."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    out = []
    for q in range(count):
        i = rng.randrange(len(items))
        text = items[i][1]
        if q % 2 == 0:
            question, must_hit = text.translate(FULL_WIDTH), True
        else:
            digits = [m for m in range(len(text)) if text[m].isdigit()]
            pos = rng.choice(digits)
            question = text[:pos] + str((int(text[pos]) + 1) % 10) + text[pos + 1 :]
            must_hit = False
        noise = nrng.standard_normal(DIM).astype(np.float32)
        vector = vectors[i] + 0.05 * noise / np.linalg.norm(noise)
        out.append((question, vector / np.linalg.norm(vector), must_hit))
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def clear_memos() -> None:
    """Empty the normalizer's memo tables, so that nothing measured profits from an earlier run."""
    for memo in (
        normalize,
        signature_of_canonical,
        content_tokens,
        quantities,
        implicit_quantities,
    ):
        if hasattr(memo, "cache_clear"):  # which of them are memoized is solver.normalize's choice
            memo.cache_clear()


def measure(cache: SemanticCache, queries, embedder: QueuedEmbedder) -> dict:
    for question, vector, _ in queries[:20]:  # warm up
        embedder.load(vector[None, :])
        cache.lookup(question)
    clear_memos()  # every measured lookup pays for its own normalization, as a new question does
    lookups, searches, decisions = [], [], []
    for question, vector, _ in queries:
        embedder.load(vector[None, :])
        started = time.perf_counter()
        decision = cache.lookup(question)
        lookups.append((time.perf_counter() - started) * 1000)
        decisions.append((decision.hit, decision.entry_id))
        started = time.perf_counter()
        cache._index.search(vector, cache.candidates)
        searches.append((time.perf_counter() - started) * 1000)
    correct = sum(
        (hit == must_hit) for (hit, _), (_, _, must_hit) in zip(decisions, queries, strict=True)
    )
    return {
        "p50": statistics.median(lookups),
        "p99": percentile(lookups, 99),
        "search_p50": statistics.median(searches),
        "decisions": decisions,
        "correct": correct / len(queries),
        "index_bytes": cache.memory_bytes(),
    }


def bench_size(n: int, queries_count: int) -> list[dict]:
    print(f"\n== {n:,} problems: generating and analysing the bank ...", flush=True)
    items, clusters = make_bank(n)
    vectors = synthetic_vectors(clusters)
    embedder = QueuedEmbedder()
    embedder.load(vectors)
    gc.collect()
    rss_before = rss_bytes()
    started = time.perf_counter()
    # the decision rule shipped for the default embedder, as the site uses it
    cache = SemanticCache(embedder, index="exact", model=load_model_for("use-multilingual"))
    cache.add_many(items, batch_size=4096)
    build_s = time.perf_counter() - started
    rss_per_entry = (rss_bytes() - rss_before) / n
    print(
        f"   built in {build_s:.0f} s ({build_s / n * 1000:.2f} ms per problem, analysis only)",
        flush=True,
    )
    queries = make_queries(items, vectors, queries_count)
    rows = []
    exact = measure(cache, queries, embedder)
    rows.append(
        {"size": n, "index": "exact f32", "build_s": build_s, "rss": rss_per_entry, **exact}
    )
    started = time.perf_counter()
    cache.use_index("hnsw")
    hnsw_build = time.perf_counter() - started
    hnsw = measure(cache, queries, embedder)
    agree = sum(a == b for a, b in zip(exact["decisions"], hnsw["decisions"], strict=True)) / len(
        queries
    )
    rows.append(
        {"size": n, "index": "hnsw", "build_s": hnsw_build, "rss": None, "agree": agree, **hnsw}
    )
    del cache, embedder, items, vectors
    gc.collect()
    return rows


def embedding_times(names: list[str], batch: int = 64) -> list[str]:
    """Per-question embedding time of the real models: one at a time and in one batch."""
    from solver.embed import load_embedder

    questions, _ = make_bank(batch, seed=7)
    texts = [t for _, t in questions]
    lines = []
    for name in names:
        started = time.perf_counter()
        embedder = load_embedder(name)
        load_s = time.perf_counter() - started
        embedder.embed(texts[:4])  # warm up
        singles = []
        for text in texts[:32]:
            started = time.perf_counter()
            embedder.embed([text])
            singles.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        embedder.embed(texts)
        batched = (time.perf_counter() - started) * 1000 / len(texts)
        lines.append(
            f"| {name} | {load_s:.1f} s | {statistics.median(singles):.1f} ms | {batched:.1f} ms |"
        )
    return lines


# --------------------------------------------------------------------------------------------------
# Cold start
# --------------------------------------------------------------------------------------------------


class TimedEmbedder:
    """The real embedder, adding up the seconds spent inside it and the texts it embedded."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.seconds, self.texts = 0.0, 0

    def embed(self, texts: list[str]) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self.inner.embed(texts)
        finally:
            self.seconds += time.perf_counter() - started
            self.texts += len(texts)


class TimedStore(VectorStore):
    """A VectorStore adding up the seconds spent in `embed` (its reads, and any embedding)."""

    seconds = 0.0

    def embed(self, embedder, texts, *, batch_size: int = 64):
        started = time.perf_counter()
        try:
            return super().embed(embedder, texts, batch_size=batch_size)
        finally:
            self.seconds += time.perf_counter() - started


def reworded(text: str) -> str:
    """An English bank question said another way, which normalization does not undo (so the lookup
    goes through the vector search, not the exact-text tier)."""
    return text.replace("What is", "Can you tell me").replace("How many", "Tell me how many")


def pick_query(items: list[tuple[str, str]], embedder) -> tuple[str, str]:
    """(entry id, reworded question) that the cache of the first 200 problems serves as a hit through
    the vector search."""
    small = SemanticCache(embedder)
    small.add_many(items[:200])
    for entry_id, text in items[:200]:
        question = reworded(text)
        if normalize(question) == normalize(text):
            continue
        decision = small.lookup(question)
        if decision.hit and decision.entry_id == entry_id:
            return entry_id, question
    raise SystemExit("no reworded question of the first 200 problems is a hit; check the embedder")


def first_hit(cache: SemanticCache, entry_id: str, question: str) -> tuple[float, str]:
    started = time.perf_counter()
    decision = cache.lookup(question)
    outcome = decision.outcome + ("" if decision.entry_id in (entry_id, None) else " (wrong)")
    return time.perf_counter() - started, outcome


def cold_start(n: int, slice_size: int, embedder, work: Path) -> dict:
    print(f"\n== cold start, {n:,} problems", flush=True)
    items, clusters = make_bank(n)
    entry_id, question = pick_query(items[:slice_size], embedder)
    row: dict = {"size": n}

    # (a) rebuild: everything normalized, read and embedded (for real up to the slice)
    real = min(n, slice_size)
    timed = TimedEmbedder(embedder)
    gc.collect()
    clear_memos()
    started = time.perf_counter()
    rebuilt = SemanticCache(timed)
    rebuilt.add_many(items[:real])
    lookup_s, outcome = first_hit(rebuilt, entry_id, question)
    row["a_measured_s"] = time.perf_counter() - started
    row["a_outcome"], row["embed_ms"] = outcome, timed.seconds / real * 1000
    print(
        f"   (a) rebuilt {real:,} for real in {row['a_measured_s']:.1f} s "
        f"(embedding {timed.seconds:.1f} s, {row['embed_ms']:.1f} ms a problem); first lookup: {outcome}",
        flush=True,
    )

    # the store: the rebuild's real vectors, and synthetic ones for the rest of the bank (not timed)
    store_path = work / f"vectors-{n}.sqlite"
    store = TimedStore(store_path)
    keys = sorted(rebuilt._entries)
    canonicals = [rebuilt._entries[k].canonical for k in keys]
    store.put(
        embedder.name, embedder.dim, [text_key(c) for c in canonicals], rebuilt._index.get(keys)
    )
    if n > real:
        rest = synthetic_vectors(clusters)[real:]
        for start in range(0, n - real, 10_000):
            chunk = items[real + start : real + start + 10_000]
            store.put(
                embedder.name,
                embedder.dim,
                [text_key(normalize(t)) for _, t in chunk],
                rest[start : start + len(chunk)],
            )
    del rebuilt
    gc.collect()

    # (b) build with every vector in the store
    timed = TimedEmbedder(embedder)
    clear_memos()
    started = time.perf_counter()
    built = SemanticCache(timed, store=store)
    built.add_many(items)
    lookup_s, outcome = first_hit(built, entry_id, question)
    row["b_s"] = time.perf_counter() - started
    row["b_store_s"], row["b_embedded"], row["b_outcome"] = store.seconds, timed.texts, outcome
    print(
        f"   (b) built from the store in {row['b_s']:.1f} s (store reads {store.seconds:.1f} s, "
        f"{timed.texts} texts embedded, the question included); first lookup: {outcome}",
        flush=True,
    )
    if n > real:
        row["a_s"] = row["b_s"] - row["b_store_s"] + n * row["embed_ms"] / 1000
        row["a_estimated"] = True
    else:
        row["a_s"], row["a_estimated"] = row["a_measured_s"], False

    # (c) save, then load in a fresh process
    folder = work / f"cache-{n}"
    started = time.perf_counter()
    generation = built.save(folder)
    row["save_s"] = time.perf_counter() - started
    row["file_mb"] = sum(p.stat().st_size for p in generation.iterdir()) / 1e6
    row["kind"] = built.index_kind
    del built
    gc.collect()
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--cold-child",
            str(folder),
            str(n),
            entry_id,
            question,
            str(time.time()),
        ],
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        raise SystemExit(f"the loading process failed:\n{child.stderr[-4000:]}")
    row.update(json.loads(child.stdout.strip().splitlines()[-1]))
    print(
        f"   saved ({row['kind']}, {row['file_mb']:.0f} MB) in {row['save_s']:.1f} s; (c) loaded in "
        f"{row['c_load_s']:.2f} s, compared with the bank in {row['c_reconcile_s']:.2f} s, first "
        f"lookup in {row['c_lookup_s'] * 1000:.0f} ms ({row['c_outcome']}; bank changed: "
        f"{row['c_changed']}); the process started, imported and loaded the embedder in "
        f"{row['c_process_s']:.1f} s; one apply + its hit {row['apply_ms']:.0f} ms "
        f"(served: {row['apply_served']})",
        flush=True,
    )
    return row


def cold_child(folder: str, n: int, entry_id: str, question: str, spawned_at: float) -> None:
    """`--cold-child`: the saved cache loaded in this fresh process, as a site worker starts."""
    from solver.embed import load_embedder

    embedder = load_embedder("use-multilingual")
    process_s = time.time() - spawned_at  # interpreter start, imports, the embedder
    items, _ = make_bank(n)  # the site reads these from its database (not counted)
    started = time.perf_counter()
    cache = SemanticCache.load(folder, embedder)
    loaded = time.perf_counter()
    report = cache.reconcile(items)
    reconciled = time.perf_counter()
    lookup_s, outcome = first_hit(cache, entry_id, question)
    total = time.perf_counter() - started
    new_text = "A ladder of 13 m leans on a wall with its foot 5 m away. How high does it reach?"
    applying = time.perf_counter()
    cache.apply(added=[("new-problem", new_text)])
    served = cache.lookup(new_text.replace("13", "１３")).entry_id == "new-problem"
    apply_s = time.perf_counter() - applying
    result = {
        "c_load_s": loaded - started,
        "c_reconcile_s": reconciled - loaded,
        "c_lookup_s": lookup_s,
        "c_s": total,
        "c_outcome": outcome,
        "c_changed": report.changed,
        "c_process_s": process_s,
        "apply_ms": apply_s * 1000,
        "apply_served": served,
    }
    print(json.dumps(result))


def print_cold_start(rows: list[dict]) -> None:
    print(
        "\n| problems | (a) rebuild | (b) build from the vector store | (c) load the saved cache "
        "| (c) vs (a) | (b) vs (a) | index, file | one apply + hit |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        a = f"{r['a_s']:.0f} s" + (" (est.)" if r["a_estimated"] else "")
        print(
            f"| {r['size']:,} | {a} | {r['b_s']:.1f} s | {r['c_s']:.2f} s "
            f"(+{r['c_process_s']:.1f} s start) | {r['c_s'] / r['a_s']:.4f}x | "
            f"{r['b_s'] / r['a_s']:.2f}x | {r['kind']}, {r['file_mb']:.0f} MB | "
            f"{r['apply_ms']:.0f} ms |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1k and 10k only")
    parser.add_argument(
        "--sizes", help="comma-separated bank sizes (default 1000,10000,100000,1000000)"
    )
    parser.add_argument("--queries", type=int, default=400, help="lookups per measurement")
    parser.add_argument(
        "--no-embedder", action="store_true", help="skip the real embedding timings"
    )
    parser.add_argument(
        "--cold-start", action="store_true", help="measure cold starts instead (see above)"
    )
    parser.add_argument("--cold-sizes", default="1000,100000", help="bank sizes for --cold-start")
    parser.add_argument(
        "--slice", type=int, default=5000, help="above this, (a) is estimated from a slice"
    )
    parser.add_argument("--cold-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold_child:
        folder, n, entry_id, question, spawned_at = args.cold_child
        cold_child(folder, int(n), entry_id, question, float(spawned_at))
        return
    if args.cold_start:
        from solver.embed import load_embedder

        embedder = load_embedder("use-multilingual")
        work = Path(tempfile.mkdtemp(prefix="suanjing-cold-"))
        rows = [cold_start(int(n), args.slice, embedder, work) for n in args.cold_sizes.split(",")]
        shutil.rmtree(work, ignore_errors=True)  # kept when a measurement failed, to look at
        print_cold_start(rows)
        return
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]

    rows = []
    for n in sizes:
        rows.extend(bench_size(n, args.queries))

    print(
        "\n| problems | index | lookup p50 | lookup p99 | search p50 | p50 vs exact | index bytes/entry "
        "| RSS bytes/entry | build | decisions right | agree with exact |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    baseline = {}
    for row in rows:
        if row["index"] == "exact f32":
            baseline[row["size"]] = row["p50"]
        ratio = row["p50"] / baseline[row["size"]]
        rss = f"{row['rss']:.0f}" if row["rss"] is not None else "-"
        agree = f"{row['agree']:.1%}" if "agree" in row else "-"
        print(
            f"| {row['size']:,} | {row['index']} | {row['p50']:.2f} ms | {row['p99']:.2f} ms | "
            f"{row['search_p50']:.3f} ms | {ratio:.2f}x | {row['index_bytes'] / row['size']:.0f} | {rss} | "
            f"{row['build_s']:.0f} s | {row['correct']:.1%} | {agree} |"
        )
    if not args.no_embedder:
        print("\nEmbedding one question (not part of the lookup times above):")
        print("| embedder | load | one question | per question in a batch of 64 |")
        print("|---|---:|---:|---:|")
        for line in embedding_times(["minilm", "use-multilingual"]):
            print(line)


if __name__ == "__main__":
    main()
