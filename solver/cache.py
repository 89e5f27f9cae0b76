"""The semantic answer cache: serve every rewording of a banked question, and never a different one.

This module owns the decision "is this question one we already answered?". A lookup
1. normalizes the question and computes its signature (`solver.normalize`);
2. embeds the canonical text and takes candidates from a vector search (`VectorIndex`), plus every
   bank entry whose signature is identical (an exact dictionary lookup, so that a translation the
   embedder cannot see still finds its twin);
3. accepts a candidate only when every gate agrees: same numbers (as a multiset), same units, same
   asked quantity, same polarity cues, same hard terms, similarity above the threshold, and, for two
   questions in the same language, no unexplained small edit ("35 heads and 94 legs" vs "... 96 legs"
   is caught by the numbers; "B is a knave" vs "B is a knight" by the wording check);
4. returns a `Decision` that says which gate decided, in sentences a student or a teacher can read.

Thresholds (cosine similarity of L2-normalized embeddings of canonical text), per embedder in
`RECOMMENDED_THRESHOLDS`, chosen on tests/data/cache_cases.jsonl:
- `threshold` applies to every candidate.
- `signature_threshold` (lower) applies when the signatures are equal *and specific* (two or more
  distinct numbers and a known asked quantity): then the exact gates already pin the problem down and
  the embedding only has to agree that it is about the same thing. This is what lets an English-only
  embedder serve some translations, whose cross-language similarity is low (0.3-0.6 for MiniLM).
On that set no question that must miss passes every exact gate and the wording check, except two
that are the same problem as a bank entry in the other language; the similarity threshold is the
margin for wordings the gates have not seen.

It does not know where answers live (the caller maps entry ids to answers) and does not embed by
itself (an `Embedder` from `solver.embed` is passed in; a `solver.vectors.VectorStore` keeps what it
embedded, so that a text is embedded once ever per embedder). Lookups may run concurrently with
`add`/`remove`/`apply`.

Saved caches (`save`/`load`; JSON, .npy and usearch files, never pickle). A save writes a new
*generation* folder `FOLDER/gen-<time>-<pid>/` (manifest.json with sizes and sha256 of every file,
entries.json with what indexing needs per entry: key, id, text, canonical text, signature key; then
vectors.npy for the exact index or index.usearch for HNSW), and only then points `FOLDER/CURRENT` at it
with one atomic rename: a process that loads while another saves sees the old cache or the new one,
never half of either. `load` does not normalize or read any entry: the vectors are memory-mapped
(`np.load(mmap_mode="r")`, `usearch Index.restore(view=True)`), so the processes of one machine share
one copy through the page cache, and an entry's full `Reading` is computed the first time a lookup
compares it (only a lookup's few candidates are ever read). A loaded index is read-only: entries added
after the load go to a small in-memory exact "delta" index searched together with it, removed ones
are remembered as tombstones, and the next `save` merges both into one file. A file that is damaged,
was built with another embedder or by another version of `solver.normalize` raises `CacheFileError`
at load (never an error at lookup time); the old format (version 1) is still read, slowly.

How a site process starts (`SemanticCache.load_or_build` does steps 2 and 3):
1. read the change feed's current position P, then the bank [(id, text)] and the accepted aliases and
   blocks from the database (in that order: a change after P is then applied again, which is harmless);
2. `load` FOLDER if a saved cache is there (a `CacheFileError` means: build a new one with `add_many`,
   which takes every vector it can from the vector store);
3. `reconcile(bank, aliases=..., blocks=..., feed_position=P)`: only the ids whose text differs from
   the file are normalized and embedded, ids no longer in the bank are removed;
4. if `StartReport.should_save`, `save(FOLDER)` (one process is enough; concurrent saves are safe).
The embedder's first call may load its weights (USE: seconds); embed one text while loading to warm it.
Then it follows the feed: every second or so it reads the changes after `cache.feed_position` and calls
`apply(added=[(id, current text)], removed=[ids], aliases=..., blocks=..., removed_aliases=...,
removed_blocks=..., feed_position=newest)` with the *net* change per id (an id is either in `added` or
in `removed`). A handful of changes costs a few milliseconds (one embedding each, or none when the
vector store has it: the process that stores a new problem should `apply` it with the store before it
publishes the change, so that the others find its vector there). Save now and then (e.g. when the
delta passes a few thousand entries) so that a restart loads the changes instead of applying them. `fingerprints()` gives {id: sha256 of the text} (`text_fingerprint`) for a
caller that wants to compare with the database itself.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
import types
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from solver.decision import (
    Comparison,
    DecisionModel,
    Reading,
    compare,
    load_model_for,
    read,
    with_margin,
)
from solver.embed import Embedder
from solver.normalize import (
    Signature,
    format_number,
    normalize,
    word_tokens,
)
from solver.prompts import MAX_QUESTION_CHARS  # the question-length limit, defined once
from solver.vectors import VectorStore

# (threshold, signature_threshold) per embedder, measured on tests/data/cache_cases.jsonl: cosine
# similarities are not comparable across models, so each one gets its own pair. Any other model starts
# from the conservative fallback; check it with `python -m solver match` before trusting it.
RECOMMENDED_THRESHOLDS = {
    "minilm": (0.75, 0.45),
    "use-multilingual": (0.65, 0.45),
}
FALLBACK_THRESHOLDS = (0.80, 0.55)
DEFAULT_CANDIDATES = 12
# A same-language candidate whose wording aligns with the question at least this much (difflib ratio
# of content tokens) is an *edit* of it: any change that normalization does not explain (synonym,
# typo, filler) makes it a different question. On the labelled set every one-word change that passed
# the other gates aligned at 0.88 or more, and true rewordings that align this well differ only by
# typos or synonyms. In questions shorter than SMALL_EDIT_MIN_TOKENS only a *replaced* word counts:
# there one added or dropped word is as often a paraphrase ("which number comes next") as not.
SMALL_EDIT_RATIO = 0.85
SMALL_EDIT_MIN_TOKENS = 10
# The exact index is the fastest choice up to tens of thousands of entries; past that, HNSW.
AUTO_HNSW_AT = 20_000
_MAX_SIGNATURE_CANDIDATES = 64
# Version 2: generation folders with entries.json (what indexing needs per entry) and memory-mapped
# vectors. Version 1 (entries.json of ids and texts + vectors.npy in the folder itself) is still read.
_FORMAT_VERSION = 2
_OLD_FORMAT_VERSION = 1
_KEEP_GENERATIONS = 2  # the newest ones; a process that is loading an older one retries
_GENERATION_RE = re.compile(r"gen-[0-9]{20}-[0-9]{1,10}")
_ABANDONED_AFTER_S = 3600  # temporary files of a save that crashed are removed after an hour


class CacheFileError(Exception):
    """A saved cache folder is missing, damaged, or was built with another embedder."""


# --------------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateCheck:
    """One bank entry that was considered, and what it was judged on."""

    entry_id: str
    score: float  # cosine similarity
    passed: bool  # plausible: not rejected by an exact rule, likely enough to suggest
    gate: (
        str | None
    )  # what rejected it ("numbers", "expression", "roles", "blocked", "unlikely", ...)
    reason: str
    probability: float | None = None  # the learned rule's probability that it is the same problem
    features: tuple[float, ...] = ()
    aligned: bool = False  # every given quantity aligned one to one (needed for a certain hit)
    certain: bool = False  # the same content words and facts: a hit whatever the learned rule says

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id,
            "score": round(self.score, 4),
            "probability": None if self.probability is None else round(self.probability, 4),
            "passed": self.passed,
            "gate": self.gate,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Suggestion:
    """A banked problem that may be the student's: "Is this your question?"."""

    entry_id: str
    score: float  # the probability that it is the same problem

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.entry_id, "score": round(self.score, 4)}


@dataclass(frozen=True)
class Decision:
    """hit (certain: serve it), suggest (plausible: ask the student) or miss, and why.

    `reasons` are for teachers (they name entries and similarities); `explanation` is one sentence
    for a student, with no ids or thresholds."""

    outcome: str  # "hit", "suggest" or "miss"
    entry_id: str | None  # the problem served on a hit
    score: float
    reasons: tuple[str, ...]
    candidates: tuple[CandidateCheck, ...] = field(default=())
    suggestions: tuple[Suggestion, ...] = field(default=())
    explanation: str = ""

    @property
    def hit(self) -> bool:
        return self.outcome == "hit"

    def to_dict(self) -> dict[str, Any]:
        return {
            "hit": self.hit,
            "outcome": self.outcome,
            "entry_id": self.entry_id,
            "score": round(self.score, 4),
            "reasons": list(self.reasons),
            "explanation": self.explanation,
            "suggestions": [s.to_dict() for s in self.suggestions],
            "candidates": [c.to_dict() for c in self.candidates],
        }


def recommended_thresholds(embedder_name: str) -> tuple[float, float]:
    """(threshold, signature_threshold) measured for this embedder, or the conservative fallback."""
    return RECOMMENDED_THRESHOLDS.get(embedder_name.split(":")[0], FALLBACK_THRESHOLDS)


def _miss(*reasons: str) -> Decision:
    return Decision(
        outcome="miss",
        entry_id=None,
        score=0.0,
        reasons=tuple(reasons),
        explanation=f"No problem in the bank matches: {reasons[0]}." if reasons else "",
    )


# --------------------------------------------------------------------------------------------------
# Vector indexes
# --------------------------------------------------------------------------------------------------


class VectorIndex(Protocol):
    """Inner-product search over L2-normalized float32 vectors, keyed by non-negative int."""

    dim: int

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, key: int) -> None: ...

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]: ...

    def get(self, keys: list[int]) -> np.ndarray: ...

    def __len__(self) -> int: ...

    def memory_bytes(self) -> int: ...


class ExactIndex:
    """Brute force: one float32 matrix product per lookup. Exact, and fastest for small banks."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._keys = np.zeros(0, dtype=np.int64)
        self._size = 0
        self._row_of: dict[int, int] = {}

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: object) -> bool:
        return key in self._row_of

    def keys(self) -> list[int]:
        return self._keys[: self._size].tolist()

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        for key in keys.tolist():
            if key in self._row_of:
                self.remove(key)
        needed = self._size + len(keys)
        if needed > len(self._matrix):
            capacity = max(needed, 2 * len(self._matrix), 64)
            matrix = np.zeros((capacity, self.dim), dtype=np.float32)
            matrix[: self._size] = self._matrix[: self._size]
            key_array = np.full(capacity, -1, dtype=np.int64)
            key_array[: self._size] = self._keys[: self._size]
            self._matrix, self._keys = matrix, key_array
        self._matrix[self._size : needed] = vectors
        self._keys[self._size : needed] = keys
        for offset, key in enumerate(keys.tolist()):
            self._row_of[key] = self._size + offset
        self._size = needed

    def remove(self, key: int) -> None:
        row = self._row_of.pop(key, None)
        if row is None:
            return
        last = self._size - 1
        if row != last:  # move the last row into the hole
            self._matrix[row] = self._matrix[last]
            moved = int(self._keys[last])
            self._keys[row] = moved
            self._row_of[moved] = row
        self._keys[last] = -1
        self._size = last

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if self._size == 0 or k <= 0:
            return []
        scores = self._matrix[: self._size] @ np.asarray(vector, dtype=np.float32)
        k = min(k, self._size)
        top = np.argpartition(-scores, k - 1)[:k] if k < self._size else np.arange(self._size)
        top = top[np.argsort(-scores[top])]
        return [(int(self._keys[i]), float(scores[i])) for i in top]

    def get(self, keys: list[int]) -> np.ndarray:
        rows = [self._row_of[k] for k in keys]
        return self._matrix[rows].copy()

    def memory_bytes(self) -> int:
        return int(self._matrix.nbytes + self._keys.nbytes)


class HnswIndex:
    """Approximate search with a usearch HNSW graph: sub-millisecond at a million entries."""

    def __init__(
        self,
        dim: int,
        *,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
    ) -> None:
        from usearch.index import Index

        self.dim = dim
        self._index = Index(
            ndim=dim,
            metric="ip",
            dtype="f32",
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and key >= 0 and bool(self._index.contains(key))

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        for key in keys.tolist():
            if self._index.contains(key):
                self._index.remove(key)
        self._index.add(keys, vectors, threads=1)

    def remove(self, key: int) -> None:
        if self._index.contains(key):
            self._index.remove(key)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        return _usearch_search(self._index, vector, k)

    def get(self, keys: list[int]) -> np.ndarray:
        return _usearch_get(self._index, keys, self.dim)

    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)


def _usearch_search(index: Any, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
    if len(index) == 0 or k <= 0:
        return []
    matches = index.search(np.asarray(vector, dtype=np.float32), k, threads=1)
    # usearch's "ip" distance is 1 - dot product
    return [
        (int(key), 1.0 - float(dist))
        for key, dist in zip(matches.keys, matches.distances, strict=True)
    ]


def _usearch_get(index: Any, keys: list[int], dim: int) -> np.ndarray:
    if not keys:
        return np.zeros((0, dim), dtype=np.float32)
    vectors = index.get(np.asarray(keys, dtype=np.uint64), dtype=np.float32)
    if isinstance(vectors, tuple):
        vectors = np.stack(vectors)
    return np.asarray(vectors, dtype=np.float32).reshape(len(keys), dim)


class _MappedExactBase:
    """The exact index of a loaded cache: its vectors.npy memory-mapped read-only, row i for keys[i]."""

    kind = "exact"

    def __init__(self, matrix: np.ndarray, keys: list[int]) -> None:
        self.dim = int(matrix.shape[1])
        self._matrix = matrix
        self._keys = np.asarray(keys, dtype=np.int64)
        self._row_of = {key: row for row, key in enumerate(keys)}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._row_of

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        n = len(self._keys)
        if n == 0 or k <= 0:
            return []
        scores = self._matrix @ np.asarray(vector, dtype=np.float32)
        k = min(k, n)
        top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.argsort(-scores[top])]
        return [(int(self._keys[i]), float(scores[i])) for i in top]

    def get(self, keys: list[int]) -> np.ndarray:
        return np.array(self._matrix[[self._row_of[k] for k in keys]], dtype=np.float32)

    def memory_bytes(self) -> int:
        return int(self._matrix.nbytes + self._keys.nbytes)


class _ViewedHnswBase:
    """The HNSW index of a loaded cache: usearch's saved index viewed (memory-mapped), read-only.

    It has no `add` or `remove` on purpose: usearch crashes the whole process (a segmentation fault,
    not an exception) when a viewed index is added to."""

    kind = "hnsw"

    def __init__(self, index: Any) -> None:
        self.dim = int(index.ndim)
        self._index = index

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and key >= 0 and bool(self._index.contains(key))

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        return _usearch_search(self._index, vector, k)

    def get(self, keys: list[int]) -> np.ndarray:
        return _usearch_get(self._index, keys, self.dim)

    def mutable_copy(self) -> Any:
        """A usearch Index in memory with the same graph and vectors, which can be changed."""
        return self._index.copy()

    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)


class LayeredIndex:
    """A loaded cache's index: the read-only `base` from the file, an in-memory exact `delta` for
    the entries added since the load, and tombstones for the base entries removed since.

    A search asks both parts and merges their best; tombstoned keys are skipped by asking the base for
    a few more results than needed. `SemanticCache.save` writes the three back as one index."""

    def __init__(self, base: _MappedExactBase | _ViewedHnswBase) -> None:
        self.dim = base.dim
        self.base = base
        self.delta = ExactIndex(base.dim)
        self.removed: set[int] = set()

    def __len__(self) -> int:
        return len(self.base) - len(self.removed) + len(self.delta)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        for key in keys.tolist():
            if key in self.base:  # a base key given again: the delta's vector replaces it
                self.removed.add(key)
        self.delta.add(keys, vectors)

    def remove(self, key: int) -> None:
        if key in self.delta:
            self.delta.remove(key)
        elif key in self.base:
            self.removed.add(key)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if k <= 0:
            return []
        found = self.delta.search(vector, k)
        size = len(self.base)
        fetch = min(size, k + min(len(self.removed), 4 * k))
        while fetch > 0:
            hits = self.base.search(vector, fetch)
            alive = [(key, score) for key, score in hits if key not in self.removed]
            if len(alive) >= k or fetch >= size or len(hits) < fetch:
                found.extend(alive)
                break
            fetch = min(size, 2 * fetch)
        found.sort(key=lambda ks: -ks[1])
        return found[:k]

    def get(self, keys: list[int]) -> np.ndarray:
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        in_delta = [i for i, key in enumerate(keys) if key in self.delta]
        in_base = [i for i, key in enumerate(keys) if key not in self.delta]
        if in_delta:
            out[in_delta] = self.delta.get([keys[i] for i in in_delta])
        if in_base:
            out[in_base] = self.base.get([keys[i] for i in in_base])
        return out

    def memory_bytes(self) -> int:
        return self.base.memory_bytes() + self.delta.memory_bytes()


def make_index(kind: str, dim: int) -> VectorIndex:
    """ "exact" or "hnsw" ("auto" starts exact; the cache switches to HNSW as the bank grows)."""
    if kind in ("exact", "auto"):
        return ExactIndex(dim)
    if kind == "hnsw":
        return HnswIndex(dim)
    raise ValueError(f"index={kind!r}: use 'auto', 'exact' or 'hnsw'")


# --------------------------------------------------------------------------------------------------
# Gates
# --------------------------------------------------------------------------------------------------


def _numbers_text(numbers: tuple) -> str:
    return ", ".join(format_number(n) for n in numbers) if numbers else "no numbers"


def _list_text(items: tuple[str, ...], empty: str) -> str:
    return ", ".join(items) if items else empty


def check_signatures(
    question: Signature, entry: Signature, entry_label: str
) -> tuple[str | None, str]:
    """The first gate that differs ("numbers", "units", "target", "polarity", "terms"), with a reason."""
    if question.numbers != entry.numbers:
        return (
            "numbers",
            f"{entry_label} has numbers {_numbers_text(entry.numbers)}; you wrote {_numbers_text(question.numbers)}",
        )
    if question.units != entry.units:
        return (
            "units",
            f"{entry_label} uses units {_list_text(entry.units, 'none')}; you used {_list_text(question.units, 'none')}",
        )
    if question.target != entry.target:
        return (
            "target",
            f"{entry_label} asks for {_list_text(entry.target, 'something else')}; you asked for {_list_text(question.target, 'something else')}",
        )
    if question.polarity != entry.polarity:
        return (
            "polarity",
            f"{entry_label} has conditions {_list_text(entry.polarity, 'none')}; yours are {_list_text(question.polarity, 'none')}",
        )
    if question.hard_terms != entry.hard_terms:
        return (
            "terms",
            f"{entry_label} is about {_list_text(entry.hard_terms, 'nothing specific')}; yours is about {_list_text(question.hard_terms, 'nothing specific')}",
        )
    return (None, "")


def _edit_distance_at_most_one(a: str, b: str) -> bool:
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        # one transposition: "hte" / "the"
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]]
            and a[diffs[1]] == b[diffs[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def _is_typo(old: list[str], new: list[str]) -> bool:
    """One misspelt English word: 'rabits' for 'rabbits', 'probabilty' for 'probability'."""
    return (
        len(old) == 1
        and len(new) == 1
        and old[0].isascii()
        and old[0].isalpha()
        and new[0].isalpha()
        and min(len(old[0]), len(new[0])) >= 5
        and _edit_distance_at_most_one(old[0], new[0])
    )


def _number_roles(tokens: tuple[str, ...]) -> dict[str, list[set[str]]]:
    """For every number token, the words on either side of it."""
    roles: dict[str, list[set[str]]] = {}
    for i, tok in enumerate(tokens):
        if tok[:1].isdigit():
            around = {
                tokens[j]
                for j in (i - 1, i + 1)
                if 0 <= j < len(tokens) and not tokens[j][:1].isdigit()
            }
            roles.setdefault(tok, []).append(around)
    return roles


def check_wording(question: Reading, entry: Reading, entry_label: str) -> str | None:
    """Why a same-language candidate is a *small edit* of the question that changes it, or None.

    Normalization already turned numerals, full-width digits, synonyms and filler into the same tokens,
    so a close alignment with a leftover difference means a word was changed (rabbits -> chickens,
    knave -> knight, 注满 -> 放空): one-word differences are exactly what embeddings cannot see.
    """
    q_tokens, e_tokens = question.tokens, entry.tokens
    if q_tokens == e_tokens:
        return None
    if Counter(q_tokens) == Counter(e_tokens):
        # the same words in another order: fine, unless two numbers swapped places ("40 is what % of
        # 160" vs "160 is what % of 40"): a number whose neighbours match another number's, not its own
        q_roles, e_roles = (
            _number_roles(word_tokens(question.canonical)),
            _number_roles(word_tokens(entry.canonical)),
        )

        def takes_place_of(n: str, m: str) -> bool:
            """n's neighbours in the question are m's in the entry, and none of n's own."""
            mine, own, theirs = q_roles.get(n, []), e_roles.get(n, []), e_roles.get(m, [])
            return any(
                c and not any(c & o for o in own) and any(c & t for t in theirs) for c in mine
            )

        numbers = sorted(q_roles)
        for i, n in enumerate(numbers):
            for m in numbers[i + 1 :]:
                if takes_place_of(n, m) and takes_place_of(m, n):
                    return (
                        f"{entry_label} uses the same words in another order, "
                        f"but {n} and {m} swapped places"
                    )
        return None
    short = max(len(q_tokens), len(e_tokens)) < SMALL_EDIT_MIN_TOKENS
    matcher = difflib.SequenceMatcher(None, q_tokens, e_tokens, autojunk=False)
    opcodes = matcher.get_opcodes()
    if short:
        # a short question is an edit when the rest is unchanged around at most two replaced words
        replaced = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in opcodes if tag == "replace")
        if not 0 < replaced <= 2:
            return None
    elif matcher.ratio() < SMALL_EDIT_RATIO:
        return None  # a rewording, not an edit: the gates and the similarity decide
    changes = []
    for tag, i1, i2, j1, j2 in opcodes:
        if tag == "equal" or (short and tag != "replace"):
            continue  # in a short question only a replaced word counts (vowels -> consonants)
        old, new = list(e_tokens[j1:j2]), list(q_tokens[i1:i2])
        if _is_typo(old, new):
            continue
        if Counter(old) == Counter(new):
            continue  # a local reordering
        changes.append((" ".join(old) or "nothing", " ".join(new) or "nothing"))
    if not changes:
        return None
    old, new = changes[0]
    return f"{entry_label} differs in wording: it says '{old}' where you wrote '{new}'"


# --------------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------------


def decide(checks: list[CandidateCheck], *, hit_at: float, suggest_at: float) -> Decision:
    """Hit, suggest or miss from judged candidates (best similarity first) and the two thresholds."""
    candidates = tuple(checks)
    plausible = sorted(
        (
            c
            for c in checks
            if c.passed and c.probability is not None and c.probability >= suggest_at
        ),
        key=lambda c: -(c.probability or 0.0),
    )
    if not checks:
        return _miss("no bank entry is close to this question")
    certain = [c for c in plausible if c.aligned and (c.probability or 0.0) >= hit_at]
    # Two banked problems that both look certain (a dense bank of same-template problems) are not
    # certain at all: the student chooses.
    if len(certain) == 1:
        best = certain[0]
        return Decision(
            "hit",
            best.entry_id,
            best.probability or 0.0,
            (f"#{best.entry_id}: {best.reason} (similarity {best.score:.2f})",),
            candidates,
            explanation=f"This is the same problem as one in the bank: {best.reason}.",
        )
    if plausible:
        shown = tuple(Suggestion(c.entry_id, c.probability or 0.0) for c in plausible[:3])
        return Decision(
            "suggest",
            None,
            plausible[0].probability or 0.0,
            tuple(f"#{c.entry_id} may be the same problem: {c.reason}" for c in plausible[:3]),
            candidates,
            suggestions=shown,
            explanation="Your question looks like a problem in the bank, but it may not be "
            "the same: compare them and choose.",
        )
    closest = checks[0]
    return Decision(
        "miss",
        None,
        closest.probability or 0.0,
        (f"closest #{closest.entry_id}: {closest.reason}",),
        candidates,
        explanation=f"No problem in the bank is the same as yours (the closest one differs: "
        f"{closest.reason}).",
    )


class _Entry:
    """A bank entry: what indexing needs (id, text, canonical text, signature key), and its full
    `Reading`, read the first time a lookup compares the entry. A loaded cache reads only the few
    candidates of its lookups; a built one reads every entry as it adds it."""

    __slots__ = ("entry_id", "text", "canonical", "signature_key", "_reading")

    def __init__(
        self,
        entry_id: str,
        text: str,
        canonical: str,
        signature_key: str,
        reading: Reading | None = None,
    ) -> None:
        self.entry_id = entry_id
        self.text = text
        self.canonical = canonical
        self.signature_key = signature_key
        self._reading = reading

    @classmethod
    def from_text(cls, entry_id: str, text: str) -> _Entry:
        canonical = normalize(text)
        reading = read(canonical, text)
        return cls(entry_id, text, canonical, reading.signature.key(), reading)

    @property
    def reading(self) -> Reading:
        reading = self._reading
        if reading is None:
            # `read` is a pure function of the entry's text and a Reading is immutable: two threads
            # that race here compute equal readings and either one is kept, so no lock is needed.
            reading = read(self.canonical, self.text)
            self._reading = reading
        return reading

    @property
    def is_read(self) -> bool:
        return self._reading is not None


def text_fingerprint(text: str) -> str:
    """The sha256 (hex) of a bank text as given, as `SemanticCache.fingerprints` reports it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class SyncReport:
    """What `apply` or `reconcile` changed."""

    added: int = 0  # ids the cache did not hold
    replaced: int = 0  # ids whose text changed
    unchanged: int = 0  # ids given again with the same text (nothing done)
    removed: int = 0
    skipped: int = 0  # texts the cache can never match (empty, too long): not held
    embedded: int = 0  # texts embedded; the others' vectors came from the vector store
    corrections: int = 0  # aliases and blocks added or removed
    refused: int = 0  # aliases or blocks whose wording cannot be read (too long, no words)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed or self.corrections)


@dataclass(frozen=True)
class StartReport:
    """How `SemanticCache.load_or_build` started a cache."""

    loaded: bool  # from the saved folder; False: built from the bank
    reason: str | None  # why the saved folder was not used
    sync: SyncReport
    seconds: float

    @property
    def should_save(self) -> bool:
        """The saved folder is missing, unusable or behind the bank: save the cache now."""
        return not self.loaded or self.sync.changed


@functools.cache
def normalizer_version() -> str:
    """A digest of the source of `solver.normalize` and of every solver module it takes names from
    (`solver.lexicon`): saved canonical texts and signature keys are valid only for the normalizer
    that made them."""
    import solver.normalize

    seen: dict[str, Path] = {}
    pending = [solver.normalize]
    while pending:
        module = pending.pop()
        if module.__name__ in seen or not getattr(module, "__file__", None):
            continue
        seen[module.__name__] = Path(module.__file__)
        for value in vars(module).values():
            name = value.__name__ if isinstance(value, types.ModuleType) else None
            name = name or getattr(value, "__module__", None)
            if isinstance(name, str) and name.startswith("solver.") and name not in seen:
                if name in sys.modules:
                    pending.append(sys.modules[name])
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(name.encode() + b"\0" + seen[name].read_bytes())
    return digest.hexdigest()[:16]


# Words whose presence never changes a problem: articles, "there is", politeness, sentence particles.
# Deliberately short: "only", "not", "more", "less", 多/少 and the prepositions all change problems.
_FILLER_WORDS = frozenset(
    "a an the there here is are was were be do does did please pls plz kindly".split()
    + list("的了呢吗啊呀吧哦嘛请")
)


def _without_fillers(canonical: str) -> tuple[str, ...]:
    return tuple(t for t in word_tokens(canonical) if t not in _FILLER_WORDS)


def _problem_with(text: object, max_chars: int) -> str | None:
    """Why a text cannot be matched at all, or None."""
    if not isinstance(text, str):
        return "the question is not text"
    if not text.strip():
        return "the question is empty"
    if len(text) > max_chars:
        return f"the question is {len(text)} characters long; the cache matches questions of up to {max_chars}"
    return None


def _has_words(canonical: str) -> bool:
    letters = sum(1 for ch in canonical if ch.isalpha())
    return letters >= 2


def _discard(buckets: dict[str, set[int]], name: str, key: int) -> None:
    """Take `key` out of `buckets[name]`, dropping the bucket when it empties."""
    bucket = buckets.get(name)
    if bucket is not None:
        bucket.discard(key)
        if not bucket:
            del buckets[name]


class SemanticCache:
    """Bank entries (id, question text) searchable by meaning, guarded by exact gates."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        threshold: float | None = None,
        signature_threshold: float | None = None,
        candidates: int = DEFAULT_CANDIDATES,
        index: str = "auto",
        max_chars: int = MAX_QUESTION_CHARS,
        model: DecisionModel | None | str = "default",
        store: VectorStore | None = None,
    ) -> None:
        default_threshold, default_signature = recommended_thresholds(embedder.name)
        threshold = default_threshold if threshold is None else threshold
        signature_threshold = (
            default_signature if signature_threshold is None else signature_threshold
        )
        if not 0.0 < threshold <= 1.0 or not 0.0 < signature_threshold <= 1.0:
            raise ValueError("thresholds are cosine similarities in (0, 1]")
        self.embedder = embedder
        self.threshold = threshold
        self.signature_threshold = min(signature_threshold, threshold)
        self.candidates = max(1, candidates)
        self.max_chars = max_chars
        self._index_kind = index
        self._index: VectorIndex = make_index(index, embedder.dim)
        self._entries: dict[int, _Entry] = {}
        self._key_of: dict[str, int] = {}
        self._by_signature: dict[str, set[int]] = {}
        # Entries by their canonical text: a question that normalises to a banked text word for word is
        # decided without the embedder (see `_exact_hit`).
        self._by_canonical: dict[str, set[int]] = {}
        self._next_key = 0
        self._lock = threading.RLock()
        # canonical text -> entry id confirmed by a person; (canonical text, entry id) never to match
        self._aliases: dict[str, str] = {}
        self._blocks: set[tuple[str, str]] = set()
        # the learned rule fitted for this embedder ("default"), one given, or None for version 1's gates
        self.model = load_model_for(embedder.name) if model == "default" else model
        # where vectors are taken from before embedding, and written to after (None: embed everything)
        self.store = store
        # the change feed's position this cache is up to date with (the caller's number; saved with it)
        self.feed_position: int | None = None
        # the generation folder this cache was loaded from, if any
        self.loaded_from: Path | None = None

    # -- size and contents ---------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        with self._lock:
            return entry_id in self._key_of

    @property
    def index_kind(self) -> str:
        return type(self._index).__name__

    def memory_bytes(self) -> int:
        with self._lock:
            return self._index.memory_bytes()

    # -- adding and removing -------------------------------------------------------------------------

    def add(self, entry_id: str, text: str) -> None:
        """Add (or replace) one bank entry; it is served by the next lookup. ValueError if unusable."""
        self.add_many([(entry_id, text)], strict=True)

    def add_many(
        self,
        items: Iterable[tuple[str, str]],
        *,
        batch_size: int = 64,
        strict: bool = False,
        store: VectorStore | None = None,
    ) -> int:
        """Add (or replace) many entries, embedding them in batches; returns how many were added.

        An entry that can never be matched (empty text, longer than `max_chars`) is skipped, so that one
        odd problem cannot keep a whole bank out of the cache; with `strict=True` it raises ValueError.
        Vectors are taken from `store` (or the cache's own `store`) where it has them; only the other
        texts are embedded, and written back to it.
        """
        return self._add_items(items, batch_size=batch_size, strict=strict, store=store)[0]

    def _add_items(
        self,
        items: Iterable[tuple[str, str]],
        *,
        batch_size: int = 64,
        strict: bool = False,
        store: VectorStore | None = None,
    ) -> tuple[int, int]:
        """`add_many`, returning (added, embedded)."""
        store = store if store is not None else self.store
        batch: list[tuple[str, str]] = []
        added = embedded = 0
        for entry_id, text in items:
            if not isinstance(entry_id, str) or not entry_id:
                raise ValueError("a bank entry needs a non-empty string id")
            problem = _problem_with(text, self.max_chars)
            if problem:
                if strict:
                    raise ValueError(f"bank entry {entry_id!r}: {problem}")
                continue
            batch.append((entry_id, text))
            if len(batch) >= batch_size:
                counts = self._add_batch(batch, store)
                added, embedded = added + counts[0], embedded + counts[1]
                batch = []
        if batch:
            counts = self._add_batch(batch, store)
            added, embedded = added + counts[0], embedded + counts[1]
        return added, embedded

    def _add_batch(
        self, batch: list[tuple[str, str]], store: VectorStore | None
    ) -> tuple[int, int]:
        entries = [_Entry.from_text(entry_id, text) for entry_id, text in batch]
        canonicals = [entry.canonical for entry in entries]
        if store is None:
            vectors, embedded = self.embedder.embed(canonicals), len(canonicals)
        else:
            vectors, embedded = store.embed(self.embedder, canonicals)
        self._insert(entries, vectors)
        return len(entries), embedded

    def _insert(self, entries: list[_Entry], vectors: np.ndarray) -> None:
        with self._lock:
            keys = []
            for entry in entries:
                if entry.entry_id in self._key_of:
                    self._remove_locked(entry.entry_id)
                key = self._next_key
                self._next_key += 1
                self._index_entry(key, entry)
                keys.append(key)
            self._index.add(np.asarray(keys, dtype=np.int64), vectors)
            self._maybe_switch_index()

    def _index_entry(self, key: int, entry: _Entry) -> None:
        self._entries[key] = entry
        self._key_of[entry.entry_id] = key
        self._by_signature.setdefault(entry.signature_key, set()).add(key)
        self._by_canonical.setdefault(entry.canonical, set()).add(key)

    def _maybe_switch_index(self) -> None:
        if (
            self._index_kind == "auto"
            and isinstance(self._index, ExactIndex)
            and len(self._index) > AUTO_HNSW_AT
        ):
            self._rebuild_index(HnswIndex(self.embedder.dim))

    def _rebuild_index(self, index: VectorIndex) -> None:
        keys = list(self._entries)
        if keys:
            index.add(np.asarray(keys, dtype=np.int64), self._index.get(keys))
        self._index = index

    def use_index(self, kind: str) -> None:
        """Move the vectors to another index: "exact", "hnsw", or "auto" (exact until AUTO_HNSW_AT)."""
        with self._lock:
            self._index_kind = kind
            if kind == "auto":
                if not isinstance(self._index, ExactIndex):
                    self._rebuild_index(ExactIndex(self.embedder.dim))
                self._maybe_switch_index()
            else:
                self._rebuild_index(make_index(kind, self.embedder.dim))

    def remove(self, entry_id: str) -> bool:
        """Remove an entry; True if it was there."""
        with self._lock:
            return self._remove_locked(entry_id)

    def _remove_locked(self, entry_id: str) -> bool:
        key = self._key_of.pop(entry_id, None)
        if key is None:
            return False
        entry = self._entries.pop(key)
        _discard(self._by_signature, entry.signature_key, key)
        _discard(self._by_canonical, entry.canonical, key)
        self._index.remove(key)
        return True

    # -- following a change feed ---------------------------------------------------------------------

    def fingerprints(self) -> dict[str, str]:
        """{entry id: sha256 of its text as given} (`text_fingerprint`), for reconciling with a database."""
        with self._lock:
            held = [(entry.entry_id, entry.text) for entry in self._entries.values()]
        return {entry_id: text_fingerprint(text) for entry_id, text in held}

    def apply(
        self,
        *,
        added: Iterable[tuple[str, str]] = (),
        removed: Iterable[str] = (),
        aliases: Iterable[tuple[str, str]] = (),
        blocks: Iterable[tuple[str, str]] = (),
        removed_aliases: Iterable[str] = (),
        removed_blocks: Iterable[tuple[str, str]] = (),
        store: VectorStore | None = None,
        feed_position: int | None = None,
    ) -> SyncReport:
        """Net changes from a change feed: `added` holds the current (id, text) of every problem that
        was added or changed, `removed` the ids deleted (an id is in one list or the other);
        `aliases`/`blocks` are (wording, id) pairs to add, `removed_aliases` wordings and
        `removed_blocks` (wording, id) pairs to take out. An id given again with the same text costs
        nothing; a changed one is normalized and embedded (or its vector taken from the store). A
        wording that cannot be read (too long, no words) is counted as refused, not raised.
        `feed_position`, when given, is recorded as `self.feed_position` once the changes are in."""
        added = list(added)
        removed = list(removed)
        both = {entry_id for entry_id, _ in added} & set(removed)
        if both:
            raise ValueError(f"ids both added and removed: {sorted(both)[:5]}")
        report = SyncReport()
        for entry_id in removed:
            report.removed += int(self.remove(entry_id))
        with self._lock:
            held = {
                entry_id: self._entries[self._key_of[entry_id]].text
                for entry_id, _ in added
                if entry_id in self._key_of
            }
        latest = dict(added)  # an id given twice: its last text
        changed = []
        for entry_id, text in latest.items():
            if held.get(entry_id) == text:
                report.unchanged += 1
            elif _problem_with(text, self.max_chars):
                # a text that can never be matched: the old text of this id must not be served either
                report.skipped += 1
                report.removed += int(self.remove(entry_id))
            else:
                changed.append((entry_id, text))
                if entry_id in held:
                    report.replaced += 1
                else:
                    report.added += 1
        report.embedded = self._add_items(changed, store=store)[1]
        for add, pairs in ((self.add_alias, aliases), (self.add_block, blocks)):
            for text, entry_id in pairs:
                try:
                    add(text, entry_id)
                    report.corrections += 1
                except ValueError:
                    report.refused += 1
        for text in removed_aliases:
            report.corrections += int(self.remove_alias(text))
        for text, entry_id in removed_blocks:
            report.corrections += int(self.remove_block(text, entry_id))
        if feed_position is not None:
            self.feed_position = feed_position
        return report

    def reconcile(
        self,
        bank: Iterable[tuple[str, str]],
        *,
        aliases: Iterable[tuple[str, str]] | None = None,
        blocks: Iterable[tuple[str, str]] | None = None,
        store: VectorStore | None = None,
        feed_position: int | None = None,
    ) -> SyncReport:
        """Make the cache hold exactly `bank` (every (id, text) of the database): ids whose text differs
        are added again, ids not in `bank` are removed, the rest costs nothing. `aliases` and `blocks`,
        when given, replace the cache's own (they are small; every wording is normalized again)."""
        wanted = dict(bank)
        with self._lock:
            gone = [entry_id for entry_id in self._key_of if entry_id not in wanted]
        report = self.apply(
            added=wanted.items(), removed=gone, store=store, feed_position=feed_position
        )
        if aliases is not None or blocks is not None:
            corrections, refused = self._replace_corrections(aliases, blocks)
            report.corrections += corrections
            report.refused += refused
        return report

    def _replace_corrections(
        self,
        aliases: Iterable[tuple[str, str]] | None,
        blocks: Iterable[tuple[str, str]] | None,
    ) -> tuple[int, int]:
        """Set the aliases and/or blocks to exactly these; returns (how many differ, refused)."""
        refused = 0
        given_aliases: dict[str, str] = {}
        given_blocks: set[tuple[str, str]] = set()
        for text, entry_id in aliases or ():
            try:
                given_aliases[self._canonical_or_error(text)] = entry_id
            except ValueError:
                refused += 1
        for text, entry_id in blocks or ():
            try:
                given_blocks.add((self._canonical_or_error(text), entry_id))
            except ValueError:
                refused += 1
        with self._lock:
            final_blocks = self._blocks if blocks is None else given_blocks
            final_aliases = self._aliases if aliases is None else given_aliases
            # a block wins over an alias of the same wording and problem, as in add_block
            final_aliases = {c: e for c, e in final_aliases.items() if (c, e) not in final_blocks}
            differ = len(set(self._aliases.items()) ^ set(final_aliases.items()))
            differ += len(self._blocks ^ final_blocks)
            self._aliases, self._blocks = final_aliases, set(final_blocks)
        return differ, refused

    # -- lookup --------------------------------------------------------------------------------------

    def lookup(self, text: object) -> Decision:
        """Hit with the matching entry, or miss; never raises on bad input."""
        return self.lookup_many([text])[0]

    def lookup_many(self, texts: list[object], *, batch_size: int = 64) -> list[Decision]:
        """`lookup` for many questions, embedding them in batches; one Decision per text, in order."""
        decisions: list[Decision | None] = [None] * len(texts)
        pending: list[tuple[int, Reading]] = []
        for i, text in enumerate(texts):
            problem = _problem_with(text, self.max_chars)
            if problem:
                decisions[i] = _miss(problem)
                continue
            canonical = normalize(text)  # type: ignore[arg-type]
            if not _has_words(canonical):
                decisions[i] = _miss(
                    "the question has no words to match (only numbers, symbols or emoji)"
                )
                continue
            question = read(canonical, text)  # type: ignore[arg-type]
            decisions[i] = self._exact_hit(question)
            if decisions[i] is None:
                pending.append((i, question))
        for start in range(0, len(pending), batch_size):
            chunk = pending[start : start + batch_size]
            vectors = self.embedder.embed([a.canonical for _, a in chunk])
            for (i, question), vector in zip(chunk, vectors, strict=True):
                decisions[i] = self._lookup_vector(question, vector)
        return [d for d in decisions if d is not None]

    def _exact_hit(self, question: Reading) -> Decision | None:
        """The decision for a question that a person confirmed as a banked problem (an alias), or whose
        canonical text (numerals, width, case and spacing folded by `normalize`) is a banked entry's;
        None otherwise. Students paste the same homework text again and again, so this is the common
        case on a busy day, and it needs no embedder call."""
        with self._lock:
            aliased = self._aliases.get(question.canonical)
            if aliased is not None and aliased in self._key_of:
                entry = self._entries[self._key_of[aliased]]
                why = "a teacher confirmed that this question is this banked problem"
            else:
                twins = [
                    k
                    for k in self._by_canonical.get(question.canonical, ())
                    if (question.canonical, self._entries[k].entry_id) not in self._blocks
                ]
                if not twins:
                    return None
                entry = self._entries[min(twins)]  # the oldest, when the bank holds the text twice
                why = "it is the same text as a banked problem"
        check = CandidateCheck(entry.entry_id, 1.0, True, None, why, probability=1.0, aligned=True)
        numbers = ", ".join(format_number(q.value) for q in entry.reading.quantities)
        return Decision(
            "hit",
            entry.entry_id,
            1.0,
            (f"#{entry.entry_id}: {why}" + (f" (numbers {numbers})" if numbers else ""),),
            (check,),
            explanation=f"This is a problem from the bank: {why}.",
        )

    def _lookup_vector(self, question: Reading, vector: np.ndarray) -> Decision:
        with self._lock:
            if not self._entries:
                return _miss("the bank is empty")
            scored = dict(self._index.search(vector, self.candidates))
            bucket = self._by_signature.get(question.signature.key(), ())
            twins = [
                k
                for k in islice(bucket, _MAX_SIGNATURE_CANDIDATES + len(scored))
                if k not in scored
            ][:_MAX_SIGNATURE_CANDIDATES]
            if twins:
                twin_scores = self._index.get(twins) @ vector
                scored.update(
                    {k: float(s) for k, s in zip(twins, twin_scores.tolist(), strict=True)}
                )
            ranked = sorted(
                ((self._entries[k], s) for k, s in scored.items() if k in self._entries),
                key=lambda es: -es[1],
            )
            blocked = {
                entry.entry_id
                for entry, _ in ranked
                if (question.canonical, entry.entry_id) in self._blocks
            }
        # Entries are immutable: judge them without holding the lock, so that concurrent lookups
        # (and the exact tier) do not queue behind this one's comparisons.
        label = "the banked problem"  # reasons are read by students: no ids
        compared = []
        for entry, score in ranked:
            if entry.entry_id in blocked:
                compared.append((entry, score, None, None))
                continue
            edit = (
                check_wording(question, entry.reading, label)
                if question.language == entry.reading.language
                else None
            )
            comparison = compare(
                question, entry.reading, similarity=score, margin=0.0, wording_edit=edit
            )
            compared.append((entry, score, comparison, edit))
        # The margin is taken over the candidates the exact rules let through: in a bank of
        # same-template problems the siblings with other numbers are close in meaning but can never
        # be confused with the question, so they must not make its own problem look uncertain.
        survivors = [(entry.entry_id, score) for entry, score, c, _ in compared if c and not c.rule]
        checks = []
        for entry, score, comparison, edit in compared:
            if comparison is None:
                checks.append(
                    CandidateCheck(
                        entry.entry_id,
                        score,
                        False,
                        "blocked",
                        "someone said it is a different problem",
                    )
                )
                continue
            if not comparison.rule:
                others = [s for e, s in survivors if e != entry.entry_id]
                comparison = with_margin(comparison, score - (max(others) if others else 0.0))
            checks.append(self._judge(question, entry, score, comparison, edit))
        return self._decide(checks)

    def _judge(
        self,
        question: Reading,
        entry: _Entry,
        score: float,
        comparison: Comparison,
        edit: str | None,
    ) -> CandidateCheck:
        if comparison.rule:
            return CandidateCheck(entry.entry_id, score, False, comparison.rule, comparison.reason)
        if (
            comparison.aligned
            and question.language == entry.reading.language
            and _without_fillers(question.canonical) == _without_fillers(entry.reading.canonical)
            and question.signature.key() == entry.reading.signature.key()
        ):
            # the same words in the same order, every fact equal: what differs is only punctuation,
            # spacing, hyphens or words that carry nothing ("3-digit", "are there", "。" for "？")
            probability, gate, why, certain = 1.0, None, "", True
        elif self.model is not None:
            certain = False
            probability = self.model.probability(comparison.features)
            gate = None if probability >= self.model.suggest_at else "unlikely"
            why = edit or "it reads as a different problem"
        else:
            certain = False
            probability, gate, why = self._fallback_probability(question, entry, score, edit)
        passed = gate is None
        reason = comparison.reason if passed else why
        return CandidateCheck(
            entry.entry_id,
            score,
            passed,
            gate,
            reason,
            probability=probability,
            features=comparison.features,
            aligned=comparison.aligned,
            certain=certain,
        )

    def _fallback_probability(
        self, question: Reading, entry: _Entry, score: float, edit: str | None
    ) -> tuple[float, str | None, str]:
        """Without a fitted model (an embedder nobody calibrated): the exact gates of version 1 and the
        similarity thresholds; a pair that passes everything but the similarity is only suggested.
        Returns (probability, the gate that rejected it or None, why)."""
        gate, why = check_signatures(
            question.signature, entry.reading.signature, "the banked problem"
        )
        if gate or edit:
            return 0.0, gate or "wording", why or edit or ""
        needed = self.signature_threshold if question.signature.is_specific else self.threshold
        if score >= needed:
            return 1.0, None, ""
        if score >= needed - 0.15:
            return 0.5, None, ""
        return 0.0, "similarity", f"it is only loosely like the banked problem ({score:.2f})"

    @property
    def hit_at(self) -> float:
        return self.model.hit_at if self.model is not None else 1.0

    @property
    def suggest_at(self) -> float:
        return self.model.suggest_at if self.model is not None else 0.5

    def _decide(self, checks: list[CandidateCheck]) -> Decision:
        return decide(checks, hit_at=self.hit_at, suggest_at=self.suggest_at)

    # -- aliases and blocks --------------------------------------------------------------------------

    def add_alias(self, text: str, entry_id: str) -> None:
        """A wording a person confirmed as the problem `entry_id`: from now on it is an exact hit."""
        canonical = self._canonical_or_error(text)
        with self._lock:
            self._aliases[canonical] = entry_id
            self._blocks.discard((canonical, entry_id))

    def remove_alias(self, text: str) -> bool:
        canonical = normalize(text) if isinstance(text, str) else ""
        with self._lock:
            return self._aliases.pop(canonical, None) is not None

    def add_block(self, text: str, entry_id: str) -> None:
        """A wording that must never be matched with `entry_id` again ("not my question")."""
        canonical = self._canonical_or_error(text)
        with self._lock:
            self._blocks.add((canonical, entry_id))
            if self._aliases.get(canonical) == entry_id:
                del self._aliases[canonical]

    def remove_block(self, text: str, entry_id: str) -> bool:
        canonical = normalize(text) if isinstance(text, str) else ""
        with self._lock:
            if (canonical, entry_id) in self._blocks:
                self._blocks.discard((canonical, entry_id))
                return True
            return False

    def _canonical_or_error(self, text: str) -> str:
        problem = _problem_with(text, self.max_chars)
        if problem:
            raise ValueError(problem)
        return normalize(text)

    # -- persistence ---------------------------------------------------------------------------------

    def save(self, folder: str | Path, *, feed_position: int | None = None) -> Path:
        """Write the cache as a new generation of `folder` and point `folder/CURRENT` at it (one atomic
        rename: a concurrent `load` sees the old cache or this one). Returns the generation folder.

        The vectors of a loaded cache are merged first: its read-only index, the entries added since
        (the delta) and the tombstones become one index. `feed_position` (default: this cache's) is
        saved with it. Lookups wait only while the entries and vectors are copied, not while they are
        written. Raises CacheFileError when the folder cannot be written."""
        root = Path(folder)
        with self._lock:
            keys = sorted(self._entries)
            entries = [self._entries[k] for k in keys]
            aliases = sorted(self._aliases.items())
            blocks = sorted(self._blocks)
            position = self.feed_position if feed_position is None else feed_position
            write_vectors = self._vector_writer(keys)
        columns = {
            "keys": keys,
            "ids": [e.entry_id for e in entries],
            "texts": [e.text for e in entries],
            "canonicals": [e.canonical for e in entries],
            "signatures": [e.signature_key for e in entries],
            "aliases": [list(pair) for pair in aliases],
            "blocks": [list(pair) for pair in blocks],
        }
        tmp = root / f".tmp-{uuid.uuid4().hex}"
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            data = json.dumps(columns, ensure_ascii=False).encode("utf-8")
            (tmp / "entries.json").write_bytes(data)
            kind, vectors_name = write_vectors(tmp)
            files = {name: _file_record(tmp / name) for name in ("entries.json", vectors_name)}
            manifest = {
                "format": _FORMAT_VERSION,
                "embedder": self.embedder.name,
                "dim": self.embedder.dim,
                "index": kind,
                "count": len(keys),
                "normalizer": normalizer_version(),
                "feed_position": position,
                "saved_at": time.time(),
                "files": files,
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            for name in (*files, "manifest.json"):
                _fsync_file(tmp / name)
            generation = f"gen-{time.time_ns():020d}-{os.getpid()}"
            os.rename(tmp, root / generation)
            _fsync_dir(root)
            pointer = root / f".CURRENT-{uuid.uuid4().hex}"
            pointer.write_text(generation + "\n", encoding="utf-8")
            _fsync_file(pointer)
            os.replace(pointer, root / "CURRENT")
            _fsync_dir(root)
        except (OSError, RuntimeError) as exc:  # usearch reports a failed write as RuntimeError
            shutil.rmtree(tmp, ignore_errors=True)
            raise CacheFileError(f"Cannot save the cache in {root}: {exc}") from exc
        _prune_generations(root, keep=generation)
        return root / generation

    def _vector_writer(self, keys: list[int]) -> Any:
        """Copy what the vectors file needs (called with the lock held) and return a function that
        writes it into a folder outside the lock, returning (index kind, file name)."""
        index = self._index
        hnsw_base = isinstance(index, LayeredIndex) and isinstance(index.base, _ViewedHnswBase)
        if isinstance(index, HnswIndex) or hnsw_base:
            if isinstance(index, HnswIndex):
                graph, removed, delta_keys = index._index.copy(), [], []
                delta_vectors = np.zeros((0, self.embedder.dim), dtype=np.float32)
            else:
                graph, removed = index.base.mutable_copy(), sorted(index.removed)
                delta_keys = index.delta.keys()
                delta_vectors = index.delta.get(delta_keys)

            def write_hnsw(folder: Path) -> tuple[str, str]:
                for key in removed:
                    graph.remove(key)
                if delta_keys:
                    graph.add(np.asarray(delta_keys, dtype=np.uint64), delta_vectors, threads=1)
                graph.save(str(folder / "index.usearch"))
                return "hnsw", "index.usearch"

            return write_hnsw
        vectors = (
            np.asarray(index.get(keys), dtype=np.float32)
            if keys
            else np.zeros((0, self.embedder.dim), dtype=np.float32)
        )

        def write_exact(folder: Path) -> tuple[str, str]:
            np.save(folder / "vectors.npy", np.ascontiguousarray(vectors), allow_pickle=False)
            return "exact", "vectors.npy"

        return write_exact

    @classmethod
    def load(
        cls, folder: str | Path, embedder: Embedder, *, verify: bool = True, **settings: Any
    ) -> SemanticCache:
        """A cache read back from `save`; the embedder must be the one that built it.

        Nothing is normalized or embedded: the vectors are memory-mapped and every entry is read when a
        lookup first compares it. `verify=True` checks every file's sha256 against the manifest (about
        0.2 s per 100 MB; it also brings the files into the page cache, where lookups need them).
        `settings` are SemanticCache's keyword arguments; an `index` other than "auto" that differs
        from the saved one is rebuilt in memory. Raises CacheFileError with a readable reason."""
        root = Path(folder)
        if (root / "CURRENT").is_file():
            for _ in range(3):
                generation = _current_generation(root)
                try:
                    return cls._load_generation(root / generation, embedder, verify, settings)
                except FileNotFoundError as exc:
                    missing = Path(exc.filename or generation).name
                # A save prunes only generations that CURRENT no longer names: when it still names
                # this one, the file was not removed by a concurrent save.
                if _current_generation(root) == generation:
                    raise CacheFileError(
                        f"The cache in {root} is damaged: {generation}/{missing} is missing."
                    )
            raise CacheFileError(f"The cache in {root} keeps changing while it is read; try again.")
        if (root / "entries.json").is_file():
            return cls._load_version_1(root, embedder, settings)
        raise CacheFileError(f"There is no saved cache in {root}.")

    @classmethod
    def _load_generation(
        cls, path: Path, embedder: Embedder, verify: bool, settings: dict[str, Any]
    ) -> SemanticCache:
        try:
            manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise CacheFileError(f"Cannot read the cache in {path}: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT_VERSION:
            found = manifest.get("format") if isinstance(manifest, dict) else None
            raise CacheFileError(
                f"{path / 'manifest.json'} is not a cache file this version can read "
                f"(format {found!r}; this version reads {_FORMAT_VERSION} and {_OLD_FORMAT_VERSION})."
            )
        if manifest.get("embedder") != embedder.name or manifest.get("dim") != embedder.dim:
            raise CacheFileError(
                f"The cache in {path} was built with {manifest.get('embedder')!r}; re-embed the bank for {embedder.name!r}."
            )
        if manifest.get("normalizer") != normalizer_version():
            raise CacheFileError(
                f"The cache in {path} was saved by another version of solver/normalize.py; build it "
                "again from the bank (a vector store keeps the embeddings, so only the texts are read)."
            )
        kind, count = manifest.get("index"), manifest.get("count")
        vectors_name = {"exact": "vectors.npy", "hnsw": "index.usearch"}.get(kind)  # type: ignore[arg-type]
        files = manifest.get("files")
        if (
            vectors_name is None
            or not isinstance(count, int)
            or not isinstance(files, dict)
            or set(files) != {"entries.json", vectors_name}
        ):
            raise CacheFileError(f"The cache in {path} is damaged: its manifest is incomplete.")
        for name, record in files.items():
            _check_file(path / name, record, verify)
        try:
            columns = json.loads((path / "entries.json").read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise CacheFileError(f"Cannot read the cache in {path}: {exc}") from exc
        keys, ids, texts, canonicals, signatures = _entry_columns(columns, count, path)
        if kind == "exact":
            base: _MappedExactBase | _ViewedHnswBase = _MappedExactBase(
                _mapped_matrix(path / vectors_name, count, embedder.dim), keys
            )
        else:
            base = _ViewedHnswBase(_viewed_usearch(path / vectors_name, keys, embedder.dim))
        cache = cls(embedder, **settings)
        for key, entry_id, text, canonical, signature in zip(
            keys, ids, texts, canonicals, signatures, strict=True
        ):
            cache._index_entry(key, _Entry(entry_id, text, canonical, signature))
        cache._next_key = max(keys) + 1 if keys else 0
        cache._index = LayeredIndex(base)
        cache._aliases, cache._blocks = _corrections_from(columns, path)
        position = manifest.get("feed_position")
        cache.feed_position = position if isinstance(position, int) else None
        cache.loaded_from = path
        wanted = settings.get("index", "auto")
        if wanted != "auto" and wanted != kind:
            cache.use_index(wanted)
        return cache

    @classmethod
    def _load_version_1(
        cls, path: Path, embedder: Embedder, settings: dict[str, Any]
    ) -> SemanticCache:
        """The format of version 1 (ids and texts; every entry is normalized and read again)."""
        try:
            meta = json.loads((path / "entries.json").read_text(encoding="utf-8"))
            vectors = np.load(path / "vectors.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CacheFileError(f"Cannot read the cache in {path}: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != _OLD_FORMAT_VERSION:
            raise CacheFileError(
                f"{path / 'entries.json'} is not a cache file this version can read."
            )
        if meta.get("embedder") != embedder.name or meta.get("dim") != embedder.dim:
            raise CacheFileError(
                f"The cache in {path} was built with {meta.get('embedder')!r}; re-embed the bank for {embedder.name!r}."
            )
        items = meta.get("entries")
        if (
            not isinstance(items, list)
            or vectors.dtype != np.float32
            or vectors.shape != (len(items), embedder.dim)
        ):
            raise CacheFileError(
                f"The cache in {path} is damaged: entries and vectors do not match."
            )
        cache = cls(embedder, **settings)
        entries = []
        for item in items:
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("id"), str)
                or not isinstance(item.get("text"), str)
            ):
                raise CacheFileError(
                    f"The cache in {path} is damaged: an entry is not an id and a text."
                )
            entries.append(_Entry.from_text(item["id"], item["text"]))
        if entries:
            cache._insert(entries, vectors)
        cache._aliases, cache._blocks = _corrections_from(meta, path)
        return cache

    @classmethod
    def load_or_build(
        cls,
        folder: str | Path,
        embedder: Embedder,
        bank: Iterable[tuple[str, str]],
        *,
        aliases: Iterable[tuple[str, str]] | None = None,
        blocks: Iterable[tuple[str, str]] | None = None,
        feed_position: int | None = None,
        verify: bool = True,
        **settings: Any,
    ) -> tuple[SemanticCache, StartReport]:
        """A cache that holds exactly `bank` (and these aliases and blocks): the saved one in `folder`
        brought up to date, or, when there is none or it cannot be used (the reason is reported), a new
        one built from `bank` (with `settings["store"]`, only the texts it lacks are embedded). The
        caller saves it when `report.should_save`."""
        started = time.perf_counter()
        reason = None
        try:
            cache = cls.load(folder, embedder, verify=verify, **settings)
        except CacheFileError as exc:
            reason = str(exc)
            cache = cls(embedder, **settings)
        sync = cache.reconcile(bank, aliases=aliases, blocks=blocks, feed_position=feed_position)
        return cache, StartReport(reason is None, reason, sync, time.perf_counter() - started)


# --------------------------------------------------------------------------------------------------
# Saved files
# --------------------------------------------------------------------------------------------------


def _file_record(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"bytes": path.stat().st_size, "sha256": digest}


def _check_file(path: Path, record: object, verify: bool) -> None:
    """The file has the size (and, with `verify`, the sha256) the manifest recorded."""
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("bytes"), int)
        or not isinstance(record.get("sha256"), str)
    ):
        raise CacheFileError(f"The cache in {path.parent} is damaged: its manifest is incomplete.")
    size = (
        path.stat().st_size
    )  # FileNotFoundError: the caller tells a pruned folder from a damaged one
    if size != record["bytes"]:
        raise CacheFileError(
            f"The cache in {path.parent} is damaged: {path.name} has {size} bytes, "
            f"its manifest says {record['bytes']}."
        )
    if verify and _file_record(path)["sha256"] != record["sha256"]:
        raise CacheFileError(
            f"The cache in {path.parent} is damaged: {path.name} is not the file that was saved."
        )


def _entry_columns(
    columns: object, count: int, path: Path
) -> tuple[list[int], list[str], list[str], list[str], list[str]]:
    """keys, ids, texts, canonical texts and signature keys from entries.json, checked."""
    names = ("keys", "ids", "texts", "canonicals", "signatures")
    damaged = CacheFileError(f"The cache in {path} is damaged: entries.json is not what was saved.")
    if not isinstance(columns, dict):
        raise damaged
    lists = [columns.get(name) for name in names]
    if not all(isinstance(c, list) and len(c) == count for c in lists):
        raise damaged
    keys, ids, *strings = lists
    if not all(type(k) is int and 0 <= k < 2**63 for k in keys) or len(set(keys)) != count:
        raise damaged
    if not all(isinstance(i, str) and i for i in ids) or len(set(ids)) != count:
        raise damaged
    if not all(isinstance(t, str) for column in strings for t in column):
        raise damaged
    return keys, ids, strings[0], strings[1], strings[2]


def _corrections_from(
    meta: dict[str, Any], path: Path
) -> tuple[dict[str, str], set[tuple[str, str]]]:
    try:
        aliases = {str(c): str(e) for c, e in meta.get("aliases", [])}
        blocks = {(str(c), str(e)) for c, e in meta.get("blocks", [])}
    except (TypeError, ValueError) as exc:
        raise CacheFileError(f"The cache in {path} is damaged: bad aliases or blocks.") from exc
    return aliases, blocks


def _mapped_matrix(path: Path, count: int, dim: int) -> np.ndarray:
    """vectors.npy memory-mapped read-only, checked to be (count, dim) float32 in C order."""
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise CacheFileError(
            f"Cannot read the vectors of the cache in {path.parent}: {exc}"
        ) from exc
    if (
        matrix.dtype != np.dtype("<f4")
        or matrix.shape != (count, dim)
        or not matrix.flags.c_contiguous
    ):
        raise CacheFileError(
            f"The cache in {path.parent} is damaged: vectors.npy holds {matrix.dtype} {matrix.shape}, "
            f"not float32 ({count}, {dim})."
        )
    return np.asarray(matrix)


def _viewed_usearch(path: Path, keys: list[int], dim: int) -> Any:
    """index.usearch viewed (memory-mapped, read-only), checked to hold exactly `keys`."""
    from usearch.index import Index, MetricKind, ScalarKind

    if not path.is_file():
        raise FileNotFoundError(path)
    damaged = f"The cache in {path.parent} is damaged: index.usearch"
    try:
        meta = Index.metadata(str(path))
    except (RuntimeError, ValueError) as exc:
        raise CacheFileError(f"{damaged} cannot be read ({exc}).") from exc
    if (
        not meta
        or meta.get("dimensions") != dim
        or meta.get("kind_metric") != MetricKind.IP
        or meta.get("kind_scalar") != ScalarKind.F32
        or meta.get("count_present") != len(keys)
    ):
        raise CacheFileError(f"{damaged} is not the index of these entries.")
    try:
        index = Index.restore(str(path), view=True, expansion_search=64)
    except (RuntimeError, ValueError) as exc:
        raise CacheFileError(f"{damaged} cannot be read ({exc}).") from exc
    if index is None or len(index) != len(keys):
        raise CacheFileError(f"{damaged} is not the index of these entries.")
    if keys and not bool(np.all(index.contains(np.asarray(keys, dtype=np.uint64)))):
        raise CacheFileError(f"{damaged} does not hold every entry.")
    return index


def _current_generation(root: Path) -> str:
    try:
        name = (root / "CURRENT").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CacheFileError(f"Cannot read {root / 'CURRENT'}: {exc}") from exc
    if not _GENERATION_RE.fullmatch(name):
        raise CacheFileError(f"{root / 'CURRENT'} does not name a saved cache.")
    return name


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune_generations(root: Path, *, keep: str) -> None:
    """Remove all but the newest generations (and the current one and `keep`), what a crashed save
    left behind, and the files of format 1. A process still using a removed generation keeps its
    memory maps (the files disappear only when it closes them)."""
    try:
        current = _current_generation(root)
    except CacheFileError:
        current = keep
    generations = sorted(p.name for p in root.iterdir() if _GENERATION_RE.fullmatch(p.name))
    kept = set(generations[-_KEEP_GENERATIONS:]) | {current, keep}
    now = time.time()
    for child in root.iterdir():
        name = child.name
        try:
            if _GENERATION_RE.fullmatch(name) and name not in kept:
                shutil.rmtree(child, ignore_errors=True)
            elif name.startswith((".tmp-", ".CURRENT-")):
                if now - child.stat().st_mtime > _ABANDONED_AFTER_S:
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink()
            elif name in ("entries.json", "vectors.npy"):
                child.unlink()
        except OSError:  # pruning is tidying: a file another process removed first is fine
            continue
