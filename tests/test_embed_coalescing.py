"""CoalescingEmbedder: concurrent callers share model calls and each gets its own rows."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from solver.embed import CoalescingEmbedder


class CountingEmbedder:
    """A stand-in model (unit test only): row i is a one-hot of len(text), slow enough to queue callers."""

    name = "counting"
    dim = 64

    def __init__(self, fail_on: str | None = None):
        self.calls: list[int] = []
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            self.calls.append(len(texts))
            time.sleep(0.02)
            if self.fail_on in texts:
                raise RuntimeError("model broke")
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
            for i, t in enumerate(texts):
                out[i, len(t) % self.dim] = 1.0
            return out


def test_concurrent_callers_get_their_own_rows_from_fewer_model_calls():
    inner = CountingEmbedder()
    embedder = CoalescingEmbedder(inner, max_batch=64)
    texts = ["x" * n for n in range(1, 41)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda t: embedder.embed([t]), texts))
    for text, rows in zip(texts, results, strict=True):
        assert rows.shape == (1, 64) and rows[0, len(text)] == 1.0
    assert sum(inner.calls) == 40
    assert len(inner.calls) < 40  # batched


def test_a_call_larger_than_max_batch_still_completes():
    inner = CountingEmbedder()
    embedder = CoalescingEmbedder(inner, max_batch=4)
    rows = embedder.embed(["a", "bb", "ccc", "dddd", "eeeee", "ffffff"])
    assert rows.shape == (6, 64)


def test_a_model_error_reaches_every_caller_in_the_batch_and_nobody_hangs():
    embedder = CoalescingEmbedder(CountingEmbedder(fail_on="boom"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(embedder.embed, ["boom"]) for _ in range(4)]
        for f in futures:
            with pytest.raises(RuntimeError):
                f.result(timeout=10)
    assert embedder.embed(["fine"]).shape == (1, 64)


@pytest.mark.slow
def test_with_the_real_minilm_the_vectors_equal_the_unwrapped_model():
    from solver.embed import SentenceTransformerEmbedder

    inner = SentenceTransformerEmbedder()
    wrapped = CoalescingEmbedder(inner)
    texts = ["鸡兔同笼，35个头94只脚", "How many rabbits are there?", "星期三之后100天"]
    with ThreadPoolExecutor(max_workers=3) as pool:
        rows = list(pool.map(lambda t: wrapped.embed([t])[0], texts))
    np.testing.assert_allclose(np.stack(rows), inner.embed(texts), atol=1e-5)
