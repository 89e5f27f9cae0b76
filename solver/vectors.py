"""Sentence vectors kept on disk, so that a text is embedded once per embedder, whichever process asks.

This module owns `VectorStore`: one SQLite file (WAL journal, so readers never wait for a writer) of
float32 vectors keyed by (embedder name, dimension, sha256 of the text that was embedded). For the
answer cache that text is the *canonical* text (`solver.normalize.normalize`), so two wordings that
normalize alike share one vector, and a change to the normalizer simply misses the old keys.

    store = VectorStore("var/vectors.sqlite")
    vectors, embedded = store.embed(embedder, canonical_texts)   # embeds only what the file lacks

Several processes (web workers, precompute workers, a rebuild) may read and write the same file at once:
every write is one short transaction of `INSERT OR IGNORE` (two processes that embed the same text
write the same row; the second insert is a no-op), and a process that finds the file locked waits up
to `timeout` seconds (SQLite's busy timeout) instead of failing. A row that is not `dim` finite float32
values of unit length (or zero) is treated as missing: it is embedded again and overwritten.

It does not normalize text, embed by itself (an `Embedder` from `solver.embed` is passed in), or know
which bank entry a vector belongs to (`solver.cache` does).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from solver.embed import Embedder

_SCHEMA_VERSION = "1"
# SQLite's limit on bound parameters is 32766 since 3.32; stay far below it and below old builds' 999.
_CHUNK = 500
# Embedders return unit rows (a zero row for an empty text); anything else is not one of their vectors.
_NORM_TOLERANCE = 1e-3


class VectorStoreError(Exception):
    """The vector store file cannot be opened, read or written."""


def text_key(text: str) -> bytes:
    """The key a text's vector is stored under: the sha256 of its UTF-8 bytes (32 bytes)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class VectorStore:
    """A SQLite file of float32 vectors keyed by (embedder, dim, sha256 of the text). Thread-safe."""

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        with self._lock:
            self._connection()

    # -- connection ----------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The connection of this process (a forked child opens its own: SQLite handles must not cross
        a fork). Called with the lock held."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS vectors ("
                " embedder TEXT NOT NULL, dim INTEGER NOT NULL, text_sha256 BLOB NOT NULL,"
                " vector BLOB NOT NULL, PRIMARY KEY (embedder, dim, text_sha256)) WITHOUT ROWID"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            conn.execute(
                "INSERT OR IGNORE INTO store_info (key, value) VALUES ('schema', ?)",
                (_SCHEMA_VERSION,),
            )
            (version,) = conn.execute(
                "SELECT value FROM store_info WHERE key = 'schema'"
            ).fetchone()
            columns = [row[1] for row in conn.execute("PRAGMA table_info(vectors)")]
        except (sqlite3.Error, OSError) as exc:
            raise VectorStoreError(f"Cannot open the vector store {self.path}: {exc}") from exc
        if version != _SCHEMA_VERSION or columns != ["embedder", "dim", "text_sha256", "vector"]:
            conn.close()
            raise VectorStoreError(
                f"{self.path} is not a vector store this version can use (schema {version!r}); "
                "delete it and it will be filled again."
            )
        self._conn, self._pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading and writing -------------------------------------------------------------------------

    def fetch(self, embedder: str, dim: int, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """The stored vectors among `keys` (from `text_key`), as float32 rows; bad rows are left out."""
        found = {}
        for key, blob in self._select(embedder, dim, keys).items():
            vector = _vector_from_blob(blob, dim)
            if vector is not None:
                found[key] = vector
        return found

    def _select(self, embedder: str, dim: int, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored blobs among `keys`, unchecked."""
        rows: dict[bytes, bytes] = {}
        wanted = list(dict.fromkeys(keys))
        with self._lock:
            conn = self._connection()
            try:
                for start in range(0, len(wanted), _CHUNK):
                    chunk = wanted[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for key, blob in conn.execute(
                        "SELECT text_sha256, vector FROM vectors"
                        f" WHERE embedder = ? AND dim = ? AND text_sha256 IN ({marks})",
                        (embedder, dim, *chunk),
                    ):
                        rows[bytes(key)] = blob
            except sqlite3.Error as exc:
                raise VectorStoreError(f"Cannot read the vector store {self.path}: {exc}") from exc
        return rows

    def put(
        self,
        embedder: str,
        dim: int,
        keys: Sequence[bytes],
        vectors: np.ndarray,
        *,
        replace: bool = False,
    ) -> int:
        """Store one row per key (`INSERT OR IGNORE`, or `OR REPLACE` to overwrite a bad row); returns
        how many rows were written."""
        rows = np.ascontiguousarray(vectors, dtype="<f4").reshape(-1, dim)
        if len(rows) != len(keys):
            raise ValueError(f"{len(keys)} keys for {len(rows)} vectors")
        verb = "REPLACE" if replace else "IGNORE"
        params = [(embedder, dim, bytes(k), rows[i].tobytes()) for i, k in enumerate(keys)]
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    before = conn.total_changes
                    conn.executemany(
                        f"INSERT OR {verb} INTO vectors (embedder, dim, text_sha256, vector)"
                        " VALUES (?, ?, ?, ?)",
                        params,
                    )
                    written = conn.total_changes - before
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise VectorStoreError(f"Cannot write the vector store {self.path}: {exc}") from exc
        return written

    def embed(
        self, embedder: Embedder, texts: Sequence[str], *, batch_size: int = 64
    ) -> tuple[np.ndarray, int]:
        """Vectors for `texts` in order, taken from the store where it has them; the others are embedded
        (each distinct text once, in batches) and written back. Returns (vectors, how many texts were
        embedded)."""
        keys = [text_key(t) for t in texts]
        stored = self._select(embedder.name, embedder.dim, keys)
        found: dict[bytes, np.ndarray] = {}
        for key, blob in stored.items():
            vector = _vector_from_blob(blob, embedder.dim)
            if vector is not None:
                found[key] = vector
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in found:
                missing.setdefault(key, text)
        if missing:
            # A key that is stored but was not a vector is a damaged row: overwrite it.
            damaged = {k for k in missing if k in stored}
            items = list(missing.items())
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                vectors = np.asarray(embedder.embed([t for _, t in chunk]), dtype=np.float32)
                chunk_keys = [k for k, _ in chunk]
                for key, vector in zip(chunk_keys, vectors, strict=True):
                    found[key] = vector
                fresh = [i for i, k in enumerate(chunk_keys) if k not in damaged]
                bad = [i for i, k in enumerate(chunk_keys) if k in damaged]
                if fresh:
                    self.put(
                        embedder.name, embedder.dim, [chunk_keys[i] for i in fresh], vectors[fresh]
                    )
                if bad:
                    self.put(
                        embedder.name,
                        embedder.dim,
                        [chunk_keys[i] for i in bad],
                        vectors[bad],
                        replace=True,
                    )
        out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
        for row, key in enumerate(keys):
            out[row] = found[key]
        return out, len(missing)

    def count(self, embedder: str | None = None, dim: int | None = None) -> int:
        """How many vectors the store holds (for one embedder, and one dimension, when given)."""
        query, params = "SELECT count(*) FROM vectors WHERE 1", []
        if embedder is not None:
            query, params = query + " AND embedder = ?", [*params, embedder]
        if dim is not None:
            query, params = query + " AND dim = ?", [*params, dim]
        with self._lock:
            conn = self._connection()
            try:
                return int(conn.execute(query, params).fetchone()[0])
            except sqlite3.Error as exc:
                raise VectorStoreError(f"Cannot read the vector store {self.path}: {exc}") from exc


def _vector_from_blob(blob: object, dim: int) -> np.ndarray | None:
    """A stored row as float32, or None when it is not a vector an embedder could have made."""
    if not isinstance(blob, bytes) or len(blob) != 4 * dim:
        return None
    vector = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all():
        return None
    norm = float(np.linalg.norm(vector))
    if norm != 0.0 and abs(norm - 1.0) > _NORM_TOLERANCE:
        return None
    return vector
