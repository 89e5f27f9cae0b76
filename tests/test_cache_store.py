"""A cache that is loaded instead of rebuilt: the vector store, the saved format (memory-mapped vectors,
lazy readings, delta + tombstones, atomic generations), and the change-feed API (apply, reconcile,
fingerprints, load_or_build).

Everything runs on the real embedders: the numpy Universal Sentence Encoder (the default, with its
decision model) and MiniLM (no decision model; slow: torch). Query vectors are memoized by a thin
wrapper around the real embedder so that the same question is not embedded twice per session; the
wrapper that counts embedding calls also passes every text to the real model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import solver.cache as cache_module
from solver.cache import (
    CacheFileError,
    ExactIndex,
    LayeredIndex,
    SemanticCache,
    _MappedExactBase,
    text_fingerprint,
)
from solver.normalize import normalize
from solver.vectors import VectorStore, VectorStoreError, text_key

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "tests" / "data" / "cache_cases.jsonl"


class Memoized:
    """The real embedder, remembering each text's vector (the same question is embedded once)."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self._memo: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
            if missing:
                for text, row in zip(missing, self.inner.embed(missing), strict=True):
                    self._memo[text] = row
            return np.stack([self._memo[t] for t in texts]) if texts else self.inner.embed([])


class Counting:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.texts: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.embed(texts)


def labelled(step: int = 1) -> tuple[list[tuple[str, str]], list[str]]:
    """Every `step`-th case of tests/data/cache_cases.jsonl: the bank (its distinct `bank` texts) and
    the queries."""
    cases = [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line]
    cases = cases[::step]
    ids: dict[str, str] = {}
    for case in cases:
        ids.setdefault(case["bank"], f"b{len(ids)}")
    return [(entry_id, text) for text, entry_id in ids.items()], [c["query"] for c in cases]


def decisions(cache: SemanticCache, queries: list[str]) -> list[dict]:
    return [d.to_dict() for d in cache.lookup_many(queries)]


@pytest.fixture(scope="session")
def use():
    from solver.embed import load_embedder

    return Memoized(load_embedder("use-multilingual"))


@pytest.fixture(scope="session")
def minilm():
    from solver.embed import load_embedder

    return Memoized(load_embedder("minilm"))


SMALL_BANK = [
    ("cage", "鸡兔同笼，共有35个头，94只脚，问鸡有多少只？"),
    ("train", "A train travels 240 km in 3 hours. What is its average speed?"),
    ("percent", "40 is what percent of 160?"),
    ("rectangle", "一个长方形长12厘米，宽5厘米，它的面积是多少平方厘米？"),
    ("ages", "Tom is 5 years older than Ben. The sum of their ages is 31. How old is Ben?"),
]


@pytest.fixture
def small(use) -> SemanticCache:
    cache = SemanticCache(use)
    cache.add_many(SMALL_BANK)
    return cache


# --------------------------------------------------------------------------------------------------
# Round trips on the labelled set
# --------------------------------------------------------------------------------------------------


def round_trip(embedder, step: int, index: str, tmp_path: Path) -> None:
    bank, queries = labelled(step)
    built = SemanticCache(embedder, index=index)
    built.add_many(bank, strict=True)
    expected = decisions(built, queries)
    saved = built.save(tmp_path / "cache")
    assert json.loads((saved / "manifest.json").read_text())["index"] == index

    loaded = SemanticCache.load(tmp_path / "cache", embedder)
    assert isinstance(loaded._index, LayeredIndex) and len(loaded) == len(built)
    entries = list(loaded._entries.values())
    assert not any(e.is_read for e in entries)  # nothing was normalized or read at load
    assert decisions(loaded, queries) == expected


@pytest.mark.parametrize("index", ["exact", "hnsw"])
def test_a_loaded_cache_decides_every_labelled_question_as_the_built_one(use, tmp_path, index):
    round_trip(use, 4, index, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("index", ["exact", "hnsw"])
def test_a_loaded_cache_decides_the_whole_labelled_set_as_the_built_one(use, tmp_path, index):
    round_trip(use, 1, index, tmp_path)


@pytest.mark.slow
def test_a_loaded_minilm_cache_without_a_decision_model_decides_as_the_built_one(minilm, tmp_path):
    assert SemanticCache(minilm).model is None  # the version-1 gates and thresholds decide
    round_trip(minilm, 3, "exact", tmp_path)
    round_trip(minilm, 5, "hnsw", tmp_path / "hnsw")


def test_lazy_readings_equal_eager_ones_and_are_safe_from_many_threads(use, tmp_path):
    bank, queries = labelled(6)
    built = SemanticCache(use)
    built.add_many(bank)
    expected = decisions(built, queries)
    built.save(tmp_path / "cache")
    loaded = SemanticCache.load(tmp_path / "cache", use)
    assert loaded.lookup(queries[0]).to_dict() == expected[0]
    read_now = sum(e.is_read for e in loaded._entries.values())
    assert 1 <= read_now <= loaded.candidates + cache_module._MAX_SIGNATURE_CANDIDATES
    assert read_now < len(bank)  # one lookup reads its candidates, not the bank
    results: dict[int, list[dict]] = {}
    errors: list[BaseException] = []

    def look(worker: int) -> None:
        try:  # every thread reads the same unread entries at once
            results[worker] = [loaded.lookup(q).to_dict() for q in queries]
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=look, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r == expected for r in results.values())
    for key, entry in loaded._entries.items():
        if entry.is_read:
            eager = built._entries[key].reading
            assert entry.reading == eager


# --------------------------------------------------------------------------------------------------
# After a load: the delta, tombstones, and saving again
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", ["exact", "hnsw"])
def test_entries_added_and_removed_after_a_load_are_served_and_saved(use, tmp_path, index):
    cache = SemanticCache(use, index=index)
    cache.add_many(SMALL_BANK)
    cache.save(tmp_path / "cache")
    loaded = SemanticCache.load(tmp_path / "cache", use)
    layered = loaded._index
    assert isinstance(layered, LayeredIndex) and type(layered.base).kind == index

    report = loaded.apply(
        added=[
            ("boat", "A boat goes 24 km downstream in 2 hours. What is its speed downstream?"),
            ("train", "A train travels 300 km in 4 hours. What is its average speed?"),
        ],
        removed=["percent"],
    )
    assert (report.added, report.replaced, report.removed, report.embedded) == (1, 1, 1, 2)
    assert len(loaded) == 5 and len(layered.delta) == 2 and len(layered.removed) == 2
    assert loaded.lookup(
        "A boat goes 24 km downstream in 2 hours. What is its speed downstream?"
    ).hit
    assert loaded.lookup("A train travels 300 km in 4 hours. What is its average speed?").hit
    assert not loaded.lookup(SMALL_BANK[1][1]).hit  # the old text of "train"
    assert not loaded.lookup("40 is what percent of 160?").hit  # removed
    assert loaded.lookup(SMALL_BANK[0][1]).entry_id == "cage"  # the base still serves
    # through the vector search: the delta and the base are searched together
    reworded = loaded.lookup(
        "In 2 hours a boat goes 24 km downstream. What is its speed downstream?"
    )
    assert reworded.candidates[0].entry_id == "boat"
    reworded = loaded.lookup(
        "Tom is 5 years older than Ben, and their ages add up to 31. Ben's age?"
    )
    assert reworded.candidates[0].entry_id == "ages"

    expected = decisions(loaded, [t for _, t in SMALL_BANK] + ["What percent of 160 is 40?"])
    generation = loaded.save(tmp_path / "cache")
    again = SemanticCache.load(tmp_path / "cache", use)
    assert again.loaded_from == generation
    assert len(again._index.delta) == 0 and not again._index.removed  # merged into one file
    assert len(again._index.base) == 5
    assert decisions(again, [t for _, t in SMALL_BANK] + ["What percent of 160 is 40?"]) == expected


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_a_layered_index_searches_like_one_index_after_many_removals(kind, tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((600, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    keys = list(range(0, 1200, 2))
    if kind == "exact":
        base = _MappedExactBase(vectors[:500], keys[:500])
    else:
        from usearch.index import Index

        from solver.cache import _ViewedHnswBase

        graph = Index(ndim=32, metric="ip", dtype="f32")
        graph.add(np.asarray(keys[:500], dtype=np.uint64), vectors[:500], threads=1)
        graph.save(str(tmp_path / "g.usearch"))
        base = _ViewedHnswBase(Index.restore(str(tmp_path / "g.usearch"), view=True))
    layered, plain = LayeredIndex(base), ExactIndex(32)
    plain.add(np.asarray(keys[:500]), vectors[:500])
    layered.add(np.asarray(keys[500:]), vectors[500:])
    plain.add(np.asarray(keys[500:]), vectors[500:])
    for key in keys[:450]:  # most of the base is removed: the search must look past the tombstones
        layered.remove(key)
        plain.remove(key)
    assert len(layered) == len(plain) == 150
    removed = set(keys[:450])
    for i in (460, 499, 520, 599):
        found = [k for k, _ in layered.search(vectors[i], 5)]
        assert found[0] == keys[i] and len(found) == 5 and not removed & set(found)
        if kind == "exact":
            assert found == [k for k, _ in plain.search(vectors[i], 5)]
    np.testing.assert_allclose(layered.get([keys[455], keys[550]]), vectors[[455, 550]], atol=1e-6)


# --------------------------------------------------------------------------------------------------
# The vector store
# --------------------------------------------------------------------------------------------------


def test_a_second_build_with_the_store_embeds_nothing(use, tmp_path):
    bank, queries = labelled(8)
    counting = Counting(use.inner)  # the real model, not the memo: every text it gets is embedded
    store = VectorStore(tmp_path / "vectors.sqlite")
    first = SemanticCache(counting, store=store)
    first.add_many(bank)
    distinct = {normalize(t) for _, t in bank}
    assert sorted(counting.texts) == sorted(distinct)
    assert store.count(counting.name, counting.dim) == len(distinct)

    counting.texts.clear()
    second = SemanticCache(counting)
    second.add_many(bank, store=VectorStore(tmp_path / "vectors.sqlite"))  # another connection
    assert counting.texts == []
    np.testing.assert_allclose(
        second._index.get(list(second._entries)), first._index.get(list(first._entries)), atol=1e-6
    )
    from_store = SemanticCache(use)  # use-multilingual's vectors, written by the first build
    from_store.add_many(bank, store=store)
    plain = SemanticCache(use)
    plain.add_many(bank)
    assert decisions(from_store, queries) == decisions(plain, queries)


def test_the_cache_embeds_only_what_its_store_lacks(use, tmp_path):
    counting = Counting(use.inner)
    cache = SemanticCache(counting, store=VectorStore(tmp_path / "v.sqlite"))
    cache.add_many(SMALL_BANK[:3])
    counting.texts.clear()
    report = cache.apply(added=SMALL_BANK)  # three unchanged, two new
    assert (report.unchanged, report.added, report.embedded) == (3, 2, 2)
    assert len(counting.texts) == 2
    other = SemanticCache(counting, store=VectorStore(tmp_path / "v.sqlite"))
    counting.texts.clear()
    other.add("a", SMALL_BANK[0][1].replace("35", "３５"))  # normalizes to a stored text
    assert counting.texts == [] and other.lookup(SMALL_BANK[0][1]).entry_id == "a"


def test_a_damaged_row_is_embedded_again_and_overwritten(use, tmp_path):
    store = VectorStore(tmp_path / "v.sqlite")
    text = normalize(SMALL_BANK[1][1])
    store.put(use.name, use.dim, [text_key(text)], np.full((1, use.dim), 3.0, dtype=np.float32))
    assert store.fetch(use.name, use.dim, [text_key(text)]) == {}  # not a unit vector: refused
    counting = Counting(use.inner)
    vectors, embedded = store.embed(counting, [text, text])
    assert embedded == 1 and counting.texts == [text]
    np.testing.assert_allclose(vectors[0], use.inner.embed([text])[0], atol=1e-6)
    again = store.fetch(use.name, use.dim, [text_key(text)])
    np.testing.assert_allclose(again[text_key(text)], vectors[0], atol=1e-6)


def test_a_file_that_is_not_a_vector_store_is_refused(tmp_path):
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(VectorStoreError, match="Cannot open the vector store"):
        VectorStore(tmp_path / "junk.sqlite")


WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from solver.vectors import VectorStore, text_key
    path, worker, start_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    store = VectorStore(path, timeout=30)
    rng = np.random.default_rng(worker)
    while time.time() < start_at:
        time.sleep(0.005)
    written = 0
    for batch in range(60):  # many small transactions: the two writers meet again and again
        texts = [f"text {i}" for i in range(batch * 10 + worker * 300, batch * 10 + worker * 300 + 10)]
        rows = rng.standard_normal((10, 16)).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        written += store.put("model-a", 16, [text_key(t) for t in texts], rows)
    print(written)
    """
)


def test_two_processes_write_the_store_at_once(tmp_path):
    path = tmp_path / "shared.sqlite"
    VectorStore(path).close()
    start_at = time.time() + 3.0  # both children have imported numpy and opened the file by then
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(worker), str(start_at)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in (0, 1)
    ]
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    written = [int(out.strip()) for out, _ in outputs]
    # worker 0 writes texts 0..599, worker 1 texts 300..899: the 300 shared ones are written once
    assert sum(written) == 900
    store = VectorStore(path)
    assert store.count("model-a", 16) == 900 and store.count("model-b") == 0
    rows = store.fetch("model-a", 16, [text_key(f"text {i}") for i in range(900)])
    assert len(rows) == 900


# --------------------------------------------------------------------------------------------------
# Damaged, mismatching and old files
# --------------------------------------------------------------------------------------------------


def reseal(generation: Path) -> None:
    """Record the files' current sizes and digests in the manifest, as a buggy writer would."""
    manifest = json.loads((generation / "manifest.json").read_text())
    for name in manifest["files"]:
        manifest["files"][name] = cache_module._file_record(generation / name)
    (generation / "manifest.json").write_text(json.dumps(manifest))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_json(name: str, change):
    def damage(generation: Path) -> None:
        data = json.loads((generation / name).read_text())
        change(data)
        (generation / name).write_text(json.dumps(data))
        if name != "manifest.json":
            reseal(generation)

    return damage


DAMAGES = {
    "a flipped byte in the vectors": (
        lambda g: flip_byte(g / "vectors.npy"),
        "exact",
        "not the file that was saved",
    ),
    "a flipped byte in the graph": (
        lambda g: flip_byte(g / "index.usearch"),
        "hnsw",
        "not the file that was saved",
    ),
    "a truncated graph": (
        lambda g: truncate(g / "index.usearch"),
        "hnsw",
        "bytes, its manifest says",
    ),
    "a truncated graph, resealed": (
        lambda g: (truncate(g / "index.usearch"), reseal(g)),
        "hnsw",
        "index.usearch",
    ),
    "garbage vectors, resealed": (
        lambda g: ((g / "vectors.npy").write_bytes(b"\x93NUMPY garbage"), reseal(g)),
        "exact",
        "Cannot read the vectors",
    ),
    "vectors of another shape, resealed": (
        lambda g: (np.save(g / "vectors.npy", np.zeros((2, 512), np.float32)), reseal(g)),
        "exact",
        "not float32",
    ),
    "a missing vectors file": (
        lambda g: (g / "vectors.npy").unlink(),
        "exact",
        "vectors.npy is missing",
    ),
    "entries that do not match": (
        edit_json("entries.json", lambda d: d["ids"].pop()),
        "exact",
        "entries.json is not what was saved",
    ),
    "a duplicated id": (
        edit_json("entries.json", lambda d: d["ids"].__setitem__(1, d["ids"][0])),
        "hnsw",
        "entries.json is not what was saved",
    ),
    "a graph without every entry": (
        edit_json("entries.json", lambda d: d["keys"].__setitem__(0, 10**6)),
        "hnsw",
        "does not hold every entry",
    ),
    "a manifest of another format": (
        edit_json("manifest.json", lambda d: d.__setitem__("format", 3)),
        "exact",
        "format 3",
    ),
    "another normalizer": (
        edit_json("manifest.json", lambda d: d.__setitem__("normalizer", "0" * 16)),
        "exact",
        "another version of solver/normalize.py",
    ),
    "a manifest without files": (
        edit_json("manifest.json", lambda d: d.pop("files")),
        "hnsw",
        "manifest is incomplete",
    ),
    "a pointer out of the folder": (
        lambda g: (g.parent / "CURRENT").write_text("../../etc"),
        "exact",
        "does not name a saved cache",
    ),
    "a pointer to a generation that is gone": (
        lambda g: (g.parent / "CURRENT").write_text("gen-00000000000000000001-1"),
        "exact",
        "damaged",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_saved_cache_is_refused_with_a_reason(use, tmp_path, damage):
    change, index, words = DAMAGES[damage]
    cache = SemanticCache(use, index=index)
    cache.add_many(SMALL_BANK)
    generation = cache.save(tmp_path / "cache")
    change(generation)
    with pytest.raises(CacheFileError, match=words):
        SemanticCache.load(tmp_path / "cache", use)


def test_without_verification_a_damaged_graph_is_still_refused_by_its_size(use, tmp_path):
    cache = SemanticCache(use, index="hnsw")
    cache.add_many(SMALL_BANK)
    truncate(cache.save(tmp_path / "cache") / "index.usearch")
    with pytest.raises(CacheFileError, match="bytes"):
        SemanticCache.load(tmp_path / "cache", use, verify=False)


def test_another_embedder_or_no_folder_is_refused(small, tmp_path):
    small.save(tmp_path / "cache")

    class Other:
        name, dim = "other", 512

        def embed(self, texts):
            raise AssertionError("never called")

    with pytest.raises(CacheFileError, match="re-embed"):
        SemanticCache.load(tmp_path / "cache", Other())
    with pytest.raises(CacheFileError, match="no saved cache"):
        SemanticCache.load(tmp_path / "nothing", small.embedder)


def test_the_format_of_version_1_is_still_read(small, tmp_path):
    """The files version 1 wrote: entries.json (ids, texts) and vectors.npy in the folder itself."""
    folder = tmp_path / "v1"
    folder.mkdir()
    keys = sorted(small._entries)
    meta = {
        "format": 1,
        "embedder": small.embedder.name,
        "dim": small.embedder.dim,
        "entries": [
            {"id": small._entries[k].entry_id, "text": small._entries[k].text} for k in keys
        ],
        "aliases": [],
        "blocks": [],
    }
    np.save(folder / "vectors.npy", small._index.get(keys))
    (folder / "entries.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    questions = [t for _, t in SMALL_BANK] + ["鸡兔同笼，共有35个头，96只脚，问鸡有多少只？"]
    loaded = SemanticCache.load(folder, small.embedder)
    assert decisions(loaded, questions) == decisions(small, questions)
    loaded.save(folder)  # a save writes version 2 and removes the old files
    assert not (folder / "entries.json").exists() and (folder / "CURRENT").exists()
    assert decisions(SemanticCache.load(folder, small.embedder), questions) == decisions(
        small, questions
    )


# --------------------------------------------------------------------------------------------------
# Atomic saves
# --------------------------------------------------------------------------------------------------


SAVER = textwrap.dedent(
    """
    import sys
    from solver.cache import SemanticCache
    from solver.embed import load_embedder
    a_folder, b_folder, target, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    embedder = load_embedder("use-multilingual")
    caches = [SemanticCache.load(a_folder, embedder), SemanticCache.load(b_folder, embedder)]
    print("ready", flush=True)
    for i in range(rounds):
        caches[i % 2].save(target)
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_a_process_loading_while_another_saves_never_sees_half_a_cache(use, tmp_path):
    three, five = SemanticCache(use), SemanticCache(use, index="hnsw")
    three.add_many(SMALL_BANK[:3])
    five.add_many(SMALL_BANK)
    three.save(tmp_path / "a")
    five.save(tmp_path / "b")
    three.save(tmp_path / "target")
    saver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SAVER,
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            str(tmp_path / "target"),
            "40",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert saver.stdout.readline().strip() == "ready"
    sizes = []
    while saver.poll() is None:
        loaded = SemanticCache.load(tmp_path / "target", use)
        sizes.append(len(loaded))
        assert loaded.lookup(SMALL_BANK[0][1]).entry_id == "cage"
    out, err = saver.communicate()
    assert saver.returncode == 0 and "done" in out, err
    assert set(sizes) <= {3, 5} and len(sizes) >= 3
    left = sorted(p.name for p in (tmp_path / "target").iterdir())
    assert left[0] == "CURRENT" and len(left) <= 1 + cache_module._KEEP_GENERATIONS
    assert len(SemanticCache.load(tmp_path / "target", use)) == 5  # the last save was the 40th


@pytest.mark.parametrize("index", ["exact", "hnsw"])
def test_a_save_that_fails_leaves_the_previous_cache_in_place(use, tmp_path, monkeypatch, index):
    from usearch.index import Index

    cache = SemanticCache(use, index=index)
    cache.add_many(SMALL_BANK)
    first = cache.save(tmp_path / "cache")
    cache.add("extra", "What is the remainder when 100 is divided by 7?")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    def full_disk_usearch(*args, **kwargs):
        raise RuntimeError("No space left on device")  # how usearch reports a failed write

    if index == "exact":
        monkeypatch.setattr(cache_module.np, "save", full_disk)
    else:
        monkeypatch.setattr(Index, "save", full_disk_usearch)
    with pytest.raises(CacheFileError, match="No space left"):
        cache.save(tmp_path / "cache")
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["CURRENT", first.name]
    assert len(SemanticCache.load(tmp_path / "cache", use)) == len(SMALL_BANK)


def test_old_generations_are_pruned_and_a_loaded_one_keeps_working(small, tmp_path):
    small.save(tmp_path / "cache")
    loaded = SemanticCache.load(tmp_path / "cache", small.embedder)
    for _ in range(4):
        small.save(tmp_path / "cache")
    generations = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("gen-")]
    assert len(generations) == cache_module._KEEP_GENERATIONS
    assert not loaded.loaded_from.exists()  # pruned, but its memory map is still readable
    key = loaded._key_of["rectangle"]
    assert loaded._index.search(loaded._index.get([key])[0], 1)[0][0] == key
    assert loaded.lookup(SMALL_BANK[3][1]).entry_id == "rectangle"


# --------------------------------------------------------------------------------------------------
# Following the database: apply, reconcile, fingerprints, load_or_build
# --------------------------------------------------------------------------------------------------


def test_fingerprints_name_every_text_and_survive_a_save(small, tmp_path):
    expected = {entry_id: text_fingerprint(text) for entry_id, text in SMALL_BANK}
    assert small.fingerprints() == expected
    small.save(tmp_path / "cache")
    assert SemanticCache.load(tmp_path / "cache", small.embedder).fingerprints() == expected


def test_apply_takes_net_changes_and_corrections(small):
    with pytest.raises(ValueError, match="both added and removed"):
        small.apply(added=[("cage", "x")], removed=["cage"])
    question = "Please tell me: a train goes 240 km in 3 hours, how fast is it?"
    report = small.apply(
        added=[("ages", ""), ("cage", SMALL_BANK[0][1])],  # "ages" became unusable
        aliases=[(question, "train"), ("x" * 5000, "train")],
        blocks=[(SMALL_BANK[2][1], "percent")],
        feed_position=17,
    )
    assert (report.skipped, report.removed, report.unchanged) == (1, 1, 1)
    assert (report.corrections, report.refused) == (2, 1) and report.changed
    assert "ages" not in small and small.feed_position == 17
    assert small.lookup(question).entry_id == "train"
    assert not small.lookup(SMALL_BANK[2][1]).hit  # blocked
    report = small.apply(removed_aliases=[question], removed_blocks=[(SMALL_BANK[2][1], "percent")])
    assert report.corrections == 2
    assert small.lookup(SMALL_BANK[2][1]).entry_id == "percent"
    assert not small.apply(added=[("cage", SMALL_BANK[0][1])]).changed


def test_load_or_build_brings_a_saved_cache_up_to_date(use, tmp_path):
    counting = Counting(use.inner)
    store = VectorStore(tmp_path / "v.sqlite")
    folder = tmp_path / "cache"
    cache, report = SemanticCache.load_or_build(
        folder, counting, SMALL_BANK, aliases=[], blocks=[], feed_position=3, store=store
    )
    assert not report.loaded and "no saved cache" in report.reason and report.should_save
    assert (report.sync.added, report.sync.embedded) == (5, 5)
    cache.save(folder)

    bank = dict(SMALL_BANK)
    del bank["percent"]
    bank["train"] = "A train travels 250 km in 5 hours. What is its average speed?"
    bank["new"] = "What is the remainder when 100 is divided by 7?"
    wording = "一个长方形，长是12厘米，宽是5厘米，面积是多少平方厘米？"
    counting.texts.clear()
    cache, report = SemanticCache.load_or_build(
        folder,
        counting,
        bank.items(),
        aliases=[(wording, "rectangle")],
        blocks=[],
        feed_position=9,
        store=store,
    )
    assert report.loaded and report.reason is None and report.should_save
    sync = report.sync
    assert (sync.added, sync.replaced, sync.removed, sync.unchanged) == (1, 1, 1, 3)
    assert sync.embedded == 2 == len(counting.texts) and sync.corrections == 1
    assert cache.feed_position == 9
    assert cache.lookup(wording).entry_id == "rectangle"
    assert (
        cache.lookup(bank["train"]).entry_id == "train" and not cache.lookup(SMALL_BANK[1][1]).hit
    )
    cache.save(folder)

    counting.texts.clear()
    cache, report = SemanticCache.load_or_build(
        folder, counting, bank.items(), aliases=[(wording, "rectangle")], blocks=[], store=store
    )
    assert report.loaded and not report.should_save and counting.texts == []
    assert cache.feed_position == 9 and len(cache) == 5

    flip_byte(cache.loaded_from / "entries.json")
    cache, report = SemanticCache.load_or_build(folder, counting, bank.items(), store=store)
    assert not report.loaded and "damaged" in report.reason and len(cache) == 5
    assert counting.texts == []  # rebuilt from the store's vectors


@pytest.mark.parametrize("module", ["solver.normalize", "solver.lexicon"])
def test_an_edited_normalizer_or_lexicon_makes_saved_caches_stale(monkeypatch, module):
    """Saved canonical texts and signature keys come from both files."""
    path = Path(sys.modules[module].__file__)
    before = cache_module.normalizer_version()
    original = Path.read_bytes

    def edited(self: Path) -> bytes:
        return original(self) + (b"\n# edited\n" if self == path else b"")

    monkeypatch.setattr(Path, "read_bytes", edited)
    cache_module.normalizer_version.cache_clear()
    try:
        assert cache_module.normalizer_version() != before
    finally:
        monkeypatch.undo()
        cache_module.normalizer_version.cache_clear()
    assert cache_module.normalizer_version() == before
