"""Two processes that load one saved cache share one copy of its index in memory: the vectors
(exact index) and the HNSW graph are memory-mapped read-only, so the page cache holds them once and each
process maps the same pages (Linux /proc/PID/smaps: Shared_Clean, no private copy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from solver.cache import SemanticCache

REPO = Path(__file__).resolve().parents[1]
PROBLEMS = 3000

CHILD = """
import sys
from solver.cache import SemanticCache
from solver.embed import load_embedder

cache = SemanticCache.load(sys.argv[1], load_embedder("use-multilingual"))
# Reworded, so that each lookup embeds and searches the index (a word-for-word question would be
# answered from the exact tier without touching it).
for n in (7, 1500, 2999):
    decision = cache.lookup(f"At 3 yuan a pen, what do {n} pens from the shop cost in all?")
    assert decision.candidates, decision.to_dict()
print("ready", flush=True)
sys.stdin.readline()
"""


def mapping_of(pid: int, suffix: str) -> dict[str, int]:
    """The smaps fields (kB) of the process's mapping of the file whose name ends with `suffix`."""
    fields: dict[str, int] = {}
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            inside = line.rstrip().endswith(suffix)
            continue
        if inside and len(head) == 3 and head[2] == "kB":
            fields[head[0].rstrip(":")] = fields.get(head[0].rstrip(":"), 0) + int(head[1])
    return fields


class Remembering:
    """The real embedder, remembering each text's vector, so that the bank is embedded once for both
    index kinds."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self._memo: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if missing:
            self._memo.update(zip(missing, self.inner.embed(missing), strict=True))
        return np.stack([self._memo[t] for t in texts]) if texts else self.inner.embed([])


@pytest.fixture(scope="module")
def use():
    from solver.embed import load_embedder

    return Remembering(load_embedder("use-multilingual"))


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc smaps")
@pytest.mark.parametrize(("index", "suffix"), [("exact", "vectors.npy"), ("hnsw", "index.usearch")])
def test_two_processes_share_one_copy_of_the_loaded_index(use, tmp_path, index, suffix):
    cache = SemanticCache(use, index=index)
    cache.add_many(
        [
            (f"p{n}", f"A shop sells {n} pens at 3 yuan each. How much are all the pens?")
            for n in range(PROBLEMS)
        ],
        strict=True,
    )
    saved = cache.save(tmp_path / "cache")
    size_kb = (saved / suffix).stat().st_size // 1024
    assert size_kb > 1000  # several hundred pages: sharing is measurable

    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path / "cache")],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            line = child.stdout.readline().strip()
            assert line == "ready", child.stderr.read() if child.poll() is not None else line
        for child in children:
            fields = mapping_of(child.pid, suffix)
            assert fields, f"{suffix} is not mapped into process {child.pid}"
            # The file is mapped, not read into the heap: no private copy of its pages ...
            assert fields.get("Private_Dirty", 0) == 0
            # ... and what each process has resident of it, it shares with the other.
            assert fields["Rss"] > 0
            assert fields.get("Shared_Clean", 0) >= 0.9 * fields["Rss"], fields
    finally:
        for child in children:
            if child.poll() is None:
                child.stdin.write("\n")
                child.stdin.flush()
            child.wait(timeout=60)
