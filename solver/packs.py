"""Answer packs: checked answers in one portable SQLite file, written with sqlite-utils.

Owns: the pack format (tables below, `SCHEMA_VERSION`), writing a pack item by item so that a crash loses
at most the item being written (`PackWriter`), and reading one back with every value checked, because a
pack comes from another machine and is untrusted (`open_pack`, `read_pack`, `pack_info`). Nothing is ever
unpickled; vectors are raw little-endian float32.
Does not own: producing answers (`solver.batch`), deciding which stored answer wins on import, or any
database other than the pack (the site's `import_pack` / `export_pack` commands do that with these
dataclasses).

Tables (schema version 1):
- meta(key pk, value): format, schema_version, created, tool, tool_version, and optionally site (the
  school or site that wrote the pack, as it says: shown with its answers, never trusted for anything)
- manifests(manifest_id pk, json): the model manifest(s) that produced the solutions
- problems(id pk, text, lang, topic, reference_answer, extra json)
- solutions(id pk, problem_id, manifest_id, prompt_version, status, final, reasoning, answer_text,
  finish_reason, evidence json, new_tokens, elapsed_s, created, attempts, error)
- vectors(problem_id, embedder, dim, vector blob), primary key (problem_id, embedder): optional
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import sqlite3
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

SCHEMA_VERSION = 1
FORMAT = "suanjing-answer-pack"
STATUSES = ("approved", "verified", "unverified", "failed")
# When an imported answer meets a stored one, the higher rank wins (a teacher's edit is the site's call).
STATUS_RANK = {"approved": 3, "verified": 2, "unverified": 1, "failed": 0}

# Limits for untrusted values: the site's columns are no wider (final and reference 500, topic 64).
MAX_ID = 200
MAX_PROBLEM_TEXT = 20_000
MAX_SHORT = 500
MAX_TOPIC = 64
MAX_LANG = 8
MAX_LONG_TEXT = 2_000_000  # a reasoning of 32k tokens is ~130k characters
MAX_JSON = 16_000_000  # evidence keeps every sample's text
MAX_SMALL_JSON = 1_000_000
MAX_DIM = 8192
MAX_ATTEMPTS_STORED = 1000

SQLITE_HEADER = b"SQLite format 3\x00"

COLUMNS: dict[str, dict[str, type]] = {
    "meta": {"key": str, "value": str},
    "manifests": {"manifest_id": str, "json": str},
    "problems": {
        "id": str,
        "text": str,
        "lang": str,
        "topic": str,
        "reference_answer": str,
        "extra": str,
    },
    "solutions": {
        "id": str,
        "problem_id": str,
        "manifest_id": str,
        "prompt_version": str,
        "status": str,
        "final": str,
        "reasoning": str,
        "answer_text": str,
        "finish_reason": str,
        "evidence": str,
        "new_tokens": int,
        "elapsed_s": float,
        "created": str,
        "attempts": int,
        "error": str,
    },
    "vectors": {"problem_id": str, "embedder": str, "dim": int, "vector": bytes},
}
PKS = {
    "meta": "key",
    "manifests": "manifest_id",
    "problems": "id",
    "solutions": "id",
    "vectors": ("problem_id", "embedder"),
}
NOT_NULL = {
    "meta": {"key", "value"},
    "manifests": {"manifest_id", "json"},
    "problems": {"id", "text", "extra"},
    "solutions": {
        "id",
        "problem_id",
        "manifest_id",
        "prompt_version",
        "status",
        "evidence",
        "created",
    },
    "vectors": {"problem_id", "embedder", "dim", "vector"},
}


class PackError(Exception):
    """The file is not a usable answer pack; the message says why."""


@dataclass(frozen=True)
class PackManifest:
    manifest_id: str
    data: dict  # `solver.modelstore.Manifest.to_dict()`, or whatever the exporting site recorded

    @property
    def name(self) -> str | None:
        return _opt_str(self.data.get("name"))

    @property
    def family(self) -> str | None:
        return _opt_str(self.data.get("family"))

    @property
    def prompt_version(self) -> str | None:
        return _opt_str(self.data.get("prompt_version"))


@dataclass(frozen=True)
class PackProblem:
    id: str
    text: str
    reference_answer: str | None = None
    lang: str | None = None
    topic: str | None = None
    extra: dict = field(default_factory=dict)  # tags, difficulty, ... (JSON values only)


@dataclass(frozen=True)
class PackSolution:
    id: str
    problem_id: str
    manifest_id: str
    prompt_version: str
    status: str  # one of STATUSES
    final: str | None
    reasoning: str
    answer_text: str
    evidence: dict  # {"samples": [...], "k", "agreement", "reference", "chosen"}
    new_tokens: int
    elapsed_s: float
    created: str  # ISO 8601, UTC
    attempts: int = 1
    error: str | None = None
    finish_reason: str = ""


@dataclass(frozen=True)
class PackVector:
    problem_id: str
    embedder: str
    dim: int
    data: bytes  # little-endian float32 x dim

    def values(self) -> list[float]:
        floats = array("f")
        floats.frombytes(self.data)
        if sys.byteorder == "big":
            floats.byteswap()
        return floats.tolist()

    @classmethod
    def from_values(cls, problem_id: str, embedder: str, values) -> PackVector:
        floats = array("f", (float(v) for v in values))
        if sys.byteorder == "big":
            floats.byteswap()
        return cls(problem_id, embedder, len(floats), floats.tobytes())


@dataclass(frozen=True)
class PackMeta:
    schema_version: int
    created: str
    tool: str
    tool_version: str
    site: str = ""  # the school or site the pack says wrote it ("" when it does not say)


@dataclass(frozen=True)
class Pack:
    """A whole pack in memory (use `open_pack` and its iterators for big ones)."""

    meta: PackMeta
    manifests: list[PackManifest]
    problems: list[PackProblem]
    solutions: list[PackSolution]
    vectors: list[PackVector]


def solution_id(problem_id: str, manifest_id: str, prompt_version: str) -> str:
    """The id precompute gives the solution of one problem by one model and prompt: rerunning writes the
    same row again instead of a second one."""
    payload = json.dumps([problem_id, manifest_id, prompt_version], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------
# Validation of single values and rows (used on write and on read, so a written pack always reads back)


def _opt_str(value) -> str | None:
    return value if isinstance(value, str) else None


def _check_str(
    value, what: str, max_len: int, *, optional: bool = False, identifier: bool = False
) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise PackError(f"{what} must be text, not {type(value).__name__}")
    if len(value) > max_len:
        raise PackError(f"{what} is {len(value)} characters long (the limit is {max_len})")
    if identifier:
        if not value:
            raise PackError(f"{what} is empty")
        if any(ord(ch) < 32 or ord(ch) == 0x7F for ch in value):
            raise PackError(f"{what} contains a control character")
    elif "\x00" in value:
        raise PackError(f"{what} contains a NUL character")
    return value


def _check_int(value, what: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise PackError(f"{what} must be a whole number between 0 and {maximum}, not {value!r}")
    return value


def _check_float(value, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise PackError(f"{what} must be a non-negative number, not {value!r}")
    return float(value)


def _check_time(value, what: str) -> str:
    _check_str(value, what, 64)
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        raise PackError(f"{what} is not an ISO 8601 time: {value!r}") from None
    return value


def _load_json(text, what: str, max_len: int) -> dict:
    _check_str(text, what, max_len)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise PackError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise PackError(f"{what} must be a JSON object")
    return value


def _dump_json(value: dict, what: str, max_len: int) -> str:
    if not isinstance(value, dict):
        raise PackError(f"{what} must be a dict")
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PackError(f"{what} cannot be stored as JSON ({exc})") from None
    if len(text) > max_len:
        raise PackError(f"{what} is {len(text)} characters of JSON (the limit is {max_len})")
    return text


def _check_evidence(evidence: dict, what: str) -> dict:
    samples = evidence.get("samples", [])
    if not isinstance(samples, list) or not all(isinstance(s, dict) for s in samples):
        raise PackError(f"{what}: samples must be a list of objects")
    for i, sample in enumerate(samples):
        for key in ("text", "reasoning", "answer"):
            _check_str(sample.get(key, ""), f"{what}: sample {i} {key}", MAX_LONG_TEXT)
        _check_str(sample.get("final"), f"{what}: sample {i} final", MAX_SHORT, optional=True)
    agreement = evidence.get("agreement")
    if agreement is not None and (
        isinstance(agreement, bool)
        or not isinstance(agreement, (int, float))
        or not 0 <= agreement <= 1
    ):
        raise PackError(f"{what}: agreement must be a number between 0 and 1")
    _check_str(evidence.get("reference"), f"{what}: reference", MAX_SHORT, optional=True)
    return evidence


def _check_manifest(m: PackManifest) -> PackManifest:
    _check_str(m.manifest_id, "manifest id", MAX_ID, identifier=True)
    if not isinstance(m.data, dict):
        raise PackError(f"manifest {m.manifest_id!r} must be a JSON object")
    inner = m.data.get("manifest_id")
    if inner is not None and inner != m.manifest_id:
        raise PackError(f"manifest {m.manifest_id!r} says its id is {inner!r}")
    return m


def _check_problem(p: PackProblem) -> PackProblem:
    _check_str(p.id, "problem id", MAX_ID, identifier=True)
    what = f"problem {p.id!r}"
    _check_str(p.text, f"{what} text", MAX_PROBLEM_TEXT)
    if not p.text.strip():
        raise PackError(f"{what} has an empty text")
    _check_str(p.reference_answer, f"{what} reference answer", MAX_SHORT, optional=True)
    _check_str(p.lang, f"{what} lang", MAX_LANG, optional=True)
    _check_str(p.topic, f"{what} topic", MAX_TOPIC, optional=True)
    if not isinstance(p.extra, dict):
        raise PackError(f"{what} extra must be a JSON object")
    return p


def _check_solution(s: PackSolution) -> PackSolution:
    _check_str(s.id, "solution id", MAX_ID, identifier=True)
    what = f"solution {s.id!r}"
    _check_str(s.problem_id, f"{what} problem id", MAX_ID, identifier=True)
    _check_str(s.manifest_id, f"{what} manifest id", MAX_ID, identifier=True)
    _check_str(s.prompt_version, f"{what} prompt version", MAX_ID, identifier=True)
    if s.status not in STATUSES:
        raise PackError(f"{what} has status {s.status!r} (expected one of {', '.join(STATUSES)})")
    _check_str(s.final, f"{what} final answer", MAX_SHORT, optional=True)
    if s.status == "failed" and s.final is not None:
        raise PackError(f"{what} is failed but has a final answer")
    if s.status != "failed" and (s.final is None or not s.final.strip()):
        raise PackError(f"{what} is {s.status} but has no final answer")
    _check_str(s.reasoning, f"{what} reasoning", MAX_LONG_TEXT)
    _check_str(s.answer_text, f"{what} answer text", MAX_LONG_TEXT)
    _check_str(s.finish_reason, f"{what} finish reason", 32)
    if not isinstance(s.evidence, dict):
        raise PackError(f"{what} evidence must be a JSON object")
    _check_evidence(s.evidence, f"{what} evidence")
    _check_int(s.new_tokens, f"{what} new_tokens", 10**9)
    _check_float(s.elapsed_s, f"{what} elapsed_s")
    _check_time(s.created, f"{what} created")
    _check_int(s.attempts, f"{what} attempts", MAX_ATTEMPTS_STORED)
    _check_str(s.error, f"{what} error", 2000, optional=True)
    return s


def _check_vector(v: PackVector) -> PackVector:
    _check_str(v.problem_id, "vector problem id", MAX_ID, identifier=True)
    _check_str(v.embedder, f"vector of {v.problem_id!r} embedder", MAX_ID, identifier=True)
    if isinstance(v.dim, bool) or not isinstance(v.dim, int) or not 1 <= v.dim <= MAX_DIM:
        raise PackError(f"vector of {v.problem_id!r} has dimension {v.dim!r} (1..{MAX_DIM})")
    if not isinstance(v.data, bytes) or len(v.data) != 4 * v.dim:
        raise PackError(f"vector of {v.problem_id!r} is not {v.dim} float32 values")
    if not all(math.isfinite(x) for x in v.values()):
        raise PackError(f"vector of {v.problem_id!r} holds NaN or infinity")
    return v


# ---------------------------------------------------------------------------------------------------
# Rows <-> dataclasses


def _problem_row(p: PackProblem) -> dict:
    return {
        "id": p.id,
        "text": p.text,
        "lang": p.lang,
        "topic": p.topic,
        "reference_answer": p.reference_answer,
        "extra": _dump_json(p.extra, f"problem {p.id!r} extra", MAX_SMALL_JSON),
    }


def _solution_row(s: PackSolution) -> dict:
    return {
        "id": s.id,
        "problem_id": s.problem_id,
        "manifest_id": s.manifest_id,
        "prompt_version": s.prompt_version,
        "status": s.status,
        "final": s.final,
        "reasoning": s.reasoning,
        "answer_text": s.answer_text,
        "finish_reason": s.finish_reason,
        "evidence": _dump_json(s.evidence, f"solution {s.id!r} evidence", MAX_JSON),
        "new_tokens": s.new_tokens,
        "elapsed_s": s.elapsed_s,
        "created": s.created,
        "attempts": s.attempts,
        "error": s.error,
    }


def _problem_from(row: dict) -> PackProblem:
    what = f"problem {row.get('id')!r}"
    return _check_problem(
        PackProblem(
            id=row["id"],
            text=row["text"],
            reference_answer=row["reference_answer"],
            lang=row["lang"],
            topic=row["topic"],
            extra=_load_json(row["extra"], f"{what} extra", MAX_SMALL_JSON),
        )
    )


def _solution_from(row: dict) -> PackSolution:
    what = f"solution {row.get('id')!r}"
    elapsed = row["elapsed_s"]
    return _check_solution(
        PackSolution(
            id=row["id"],
            problem_id=row["problem_id"],
            manifest_id=row["manifest_id"],
            prompt_version=row["prompt_version"],
            status=row["status"],
            final=row["final"],
            reasoning=row["reasoning"] if row["reasoning"] is not None else "",
            answer_text=row["answer_text"] if row["answer_text"] is not None else "",
            finish_reason=row["finish_reason"] if row["finish_reason"] is not None else "",
            evidence=_load_json(row["evidence"], f"{what} evidence", MAX_JSON),
            new_tokens=row["new_tokens"] if row["new_tokens"] is not None else 0,
            # SQLite hands back a REAL column holding 3 as the integer 3
            elapsed_s=float(elapsed)
            if isinstance(elapsed, int) and not isinstance(elapsed, bool)
            else elapsed,
            created=row["created"],
            attempts=row["attempts"] if row["attempts"] is not None else 1,
            error=row["error"],
        )
    )


def _vector_from(row: dict) -> PackVector:
    return _check_vector(PackVector(row["problem_id"], row["embedder"], row["dim"], row["vector"]))


def _manifest_from(row: dict) -> PackManifest:
    manifest_id = _check_str(row["manifest_id"], "manifest id", MAX_ID, identifier=True)
    return _check_manifest(
        PackManifest(
            manifest_id, _load_json(row["json"], f"manifest {manifest_id!r}", MAX_SMALL_JSON)
        )
    )


# ---------------------------------------------------------------------------------------------------
# Opening a file


def _check_file(path: Path, *, recovering: bool = False) -> None:
    """Refuse what is plainly not a whole SQLite file before SQLite sees it. `recovering`: the caller
    opens read-write, so SQLite itself rolls back a write that a crash left unfinished."""
    if not path.is_file():
        raise PackError(f"{path} does not exist or is not a file")
    journal = path.with_name(path.name + "-journal")
    if not recovering and journal.exists() and journal.stat().st_size > 0:
        raise PackError(
            f"{path} has an unfinished write (a -journal file lies beside it): wait for the precompute "
            "writing it, or run the same precompute command again to recover it"
        )
    size = path.stat().st_size
    if size == 0:
        raise PackError(f"{path} is empty, not an answer pack")
    with open(path, "rb") as fh:
        header = fh.read(100)
    if not header.startswith(SQLITE_HEADER):
        raise PackError(f"{path} is not an answer pack (not a SQLite file)")
    if len(header) < 100:
        raise PackError(f"{path} is truncated (shorter than a SQLite header)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The in-header page count is valid when the "version-valid-for" number matches the change counter.
    if not recovering and header[92:96] == header[24:28] and pages and size < pages * page_size:
        raise PackError(f"{path} is truncated ({size} bytes; its header says {pages * page_size})")


def _connect_readonly(path: Path) -> sqlite3.Connection:
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        # A pack is untrusted: no functions from its schema (views, triggers) may run, nothing is written.
        conn.execute("PRAGMA trusted_schema=OFF")
        conn.execute("PRAGMA query_only=ON")
    except sqlite3.Error as exc:
        raise PackError(f"{path} cannot be opened as an answer pack ({exc})") from None
    return conn


def _check_schema(db, path: Path) -> PackMeta:
    """Tables, columns and meta of an opened pack; raises PackError. Returns the meta."""
    try:
        result = db.execute("PRAGMA quick_check").fetchall()
        if [tuple(r) for r in result] != [("ok",)]:
            raise PackError(f"{path} is damaged ({str(result[0][0])[:100]})")
        kinds = {
            name: kind
            for name, kind in db.execute(
                "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view')"
            )
        }
    except sqlite3.Error as exc:
        message = str(exc)
        if "readonly" in message or "read-only" in message:
            message = (
                "it has an unfinished write; run the same precompute command again to recover it"
            )
        raise PackError(f"{path} cannot be read as an answer pack ({message})") from None
    for table in ("meta", "manifests", "problems", "solutions"):
        if kinds.get(table) != "table":
            raise PackError(f"{path} is not an answer pack (no {table} table)")
    if "vectors" in kinds and kinds["vectors"] != "table":
        raise PackError(f"{path} is not an answer pack (vectors is not a table)")
    for table in COLUMNS:
        if table not in kinds:
            continue
        present = {row[1] for row in db.execute(f"PRAGMA table_info([{table}])")}
        missing = set(COLUMNS[table]) - present
        if missing:
            raise PackError(f"{path}: table {table} lacks column(s) {', '.join(sorted(missing))}")
    meta = {}
    for key, value in db.execute("SELECT key, value FROM meta"):
        if isinstance(key, str):
            meta[key] = value
    if meta.get("format") != FORMAT:
        raise PackError(f"{path} is not an answer pack (meta.format is {meta.get('format')!r})")
    raw_version = meta.get("schema_version")
    if not isinstance(raw_version, str) or not raw_version.isdigit() or len(raw_version) > 6:
        raise PackError(f"{path} has no valid schema version ({raw_version!r})")
    version = int(raw_version)
    if version != SCHEMA_VERSION:
        raise PackError(
            f"{path} has pack schema version {version}; this Suanjing reads version {SCHEMA_VERSION}"
            + (" (upgrade Suanjing to import it)" if version > SCHEMA_VERSION else "")
        )
    return PackMeta(
        schema_version=version,
        created=_check_time(meta.get("created"), "pack creation time"),
        tool=_check_str(meta.get("tool", ""), "pack tool", MAX_ID) or "",
        tool_version=_check_str(meta.get("tool_version", ""), "pack tool version", MAX_ID) or "",
        site=_check_str(meta.get("site", ""), "pack site", MAX_ID) or "",
    )


def _check_relations(db, path: Path) -> None:
    """Keys are unique and not null, and every solution and vector names a problem (and a manifest)."""
    checks = [
        (
            "SELECT 1 FROM manifests GROUP BY manifest_id HAVING count(*) > 1 OR manifest_id IS NULL LIMIT 1",
            "duplicate manifest ids",
        ),
        (
            "SELECT 1 FROM problems GROUP BY id HAVING count(*) > 1 OR id IS NULL LIMIT 1",
            "duplicate problem ids",
        ),
        (
            "SELECT 1 FROM solutions GROUP BY id HAVING count(*) > 1 OR id IS NULL LIMIT 1",
            "duplicate solution ids",
        ),
        (
            "SELECT 1 FROM solutions WHERE problem_id NOT IN (SELECT id FROM problems) LIMIT 1",
            "a solution of a problem that is not in the pack",
        ),
        (
            "SELECT 1 FROM solutions WHERE manifest_id NOT IN (SELECT manifest_id FROM manifests) LIMIT 1",
            "a solution whose model manifest is not in the pack",
        ),
    ]
    if _has_table(db, "vectors"):
        checks += [
            (
                "SELECT 1 FROM vectors GROUP BY problem_id, embedder HAVING count(*) > 1 LIMIT 1",
                "duplicate vectors",
            ),
            (
                "SELECT 1 FROM vectors WHERE problem_id NOT IN (SELECT id FROM problems) LIMIT 1",
                "a vector of a problem that is not in the pack",
            ),
        ]
    try:
        for sql, problem in checks:
            if db.execute(sql).fetchone() is not None:
                raise PackError(f"{path} is inconsistent: {problem}")
    except sqlite3.Error as exc:
        raise PackError(f"{path} cannot be read as an answer pack ({exc})") from None


def _has_table(db, name: str) -> bool:
    return (
        db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        is not None
    )


class PackReader:
    """An opened pack, read-only. Opening checks the file, the schema version, the tables and the keys;
    the iterators check every row as they yield it (a bad row raises PackError). Use as a context manager.

    The site's import should run `validate()` (or iterate everything) inside its transaction and roll back
    on PackError, so that a bad pack imports nothing."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        _check_file(self.path)
        self._conn = _connect_readonly(self.path)
        try:
            self.meta = _check_schema(self._conn, self.path)
            _check_relations(self._conn, self.path)
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> PackReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _rows(self, table: str, order: str) -> Iterator[dict]:
        columns = ", ".join(f"[{c}]" for c in COLUMNS[table])
        try:
            cursor = self._conn.execute(f"SELECT {columns} FROM [{table}] ORDER BY {order}")
            names = list(COLUMNS[table])
            for values in cursor:
                yield dict(zip(names, values, strict=True))
        except sqlite3.Error as exc:
            raise PackError(f"{self.path} cannot be read ({exc})") from None

    def manifests(self) -> list[PackManifest]:
        return [_manifest_from(row) for row in self._rows("manifests", "manifest_id")]

    def problems(self) -> Iterator[PackProblem]:
        for row in self._rows("problems", "rowid"):
            yield _problem_from(row)

    def solutions(self) -> Iterator[PackSolution]:
        for row in self._rows("solutions", "rowid"):
            yield _solution_from(row)

    def vectors(self) -> Iterator[PackVector]:
        if not _has_table(self._conn, "vectors"):
            return
        for row in self._rows("vectors", "rowid"):
            yield _vector_from(row)

    def validate(self) -> dict:
        """Check every row; returns the counts that `info()` reports."""
        manifests = self.manifests()
        problems = sum(1 for _ in self.problems())
        by_status = dict.fromkeys(STATUSES, 0)
        per_manifest: dict[str, int] = {}
        for s in self.solutions():
            by_status[s.status] += 1
            per_manifest[s.manifest_id] = per_manifest.get(s.manifest_id, 0) + 1
        embedders: dict[str, int] = {}
        for v in self.vectors():
            embedders[v.embedder] = embedders.get(v.embedder, 0) + 1
        return {
            "schema_version": self.meta.schema_version,
            "created": self.meta.created,
            "tool": self.meta.tool,
            "tool_version": self.meta.tool_version,
            "site": self.meta.site,
            "manifests": [
                {
                    "manifest_id": m.manifest_id,
                    "name": m.name,
                    "family": m.family,
                    "prompt_version": m.prompt_version,
                    "weak_at_math": bool(m.data.get("weak_at_math", False)),
                    "solutions": per_manifest.get(m.manifest_id, 0),
                }
                for m in manifests
            ],
            "problems": problems,
            "solutions": sum(by_status.values()),
            "by_status": by_status,
            "vectors": sum(embedders.values()),
            "embedders": embedders,
        }


def open_pack(path: str | os.PathLike) -> PackReader:
    return PackReader(path)


def read_pack(path: str | os.PathLike) -> Pack:
    """The whole pack in memory, every value checked."""
    with open_pack(path) as reader:
        return Pack(
            meta=reader.meta,
            manifests=reader.manifests(),
            problems=list(reader.problems()),
            solutions=list(reader.solutions()),
            vectors=list(reader.vectors()),
        )


def pack_info(path: str | os.PathLike) -> dict:
    """What `pack-info` shows: schema_version, created, tool, manifests, problems, solutions, by_status,
    vectors. Every row is checked, so a pack that describes cleanly also imports cleanly."""
    with open_pack(path) as reader:
        info = reader.validate()
    return {"path": str(path), **info}


# ---------------------------------------------------------------------------------------------------
# Writing


class PackWriter:
    """Creates a pack, or opens an existing one to add to it (`exist_ok=False`: only create). Every `add_*` / `record` is its own
    transaction (a crash loses at most the write in progress); wrap many writes in `transaction()` to
    commit them together (an export). Upserts are idempotent: writing the same thing twice changes nothing.

    Not thread-safe: use it from the thread that created it."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        exist_ok: bool = True,
        tool_version: str | None = None,
        site: str = "",
    ):
        import sqlite_utils

        from solver import __version__

        self.path = Path(path)
        self.tool_version = tool_version or __version__
        self.site = _check_str(site or "", "pack site", MAX_ID) or ""
        if self.path.exists() and not exist_ok:
            raise PackError(f"{self.path} already exists; choose another file or remove it first")
        if not self.path.exists():
            self._create()
        _check_file(self.path, recovering=True)
        try:
            self._conn = sqlite3.connect(str(self.path))
            self._conn.execute("PRAGMA trusted_schema=OFF")
            # A pack stays one file: the rollback journal is deleted after every commit (no WAL files).
            self._conn.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error as exc:
            raise PackError(f"{self.path} cannot be opened as an answer pack ({exc})") from None
        try:
            self.db = sqlite_utils.Database(self._conn)
            self.meta = _check_schema(self._conn, self.path)
            _check_relations(self._conn, self.path)
            if not _has_table(self._conn, "vectors"):
                self._create_vectors(self.db)
        except BaseException:
            self._conn.close()
            raise

    def _create(self) -> None:
        """Build the empty schema in a side file and rename it into place, so a crash never leaves a
        half-made pack under the real name."""
        import sqlite_utils

        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.unlink(missing_ok=True)
        db = sqlite_utils.Database(partial)
        try:
            db.execute("PRAGMA journal_mode=DELETE")
            with db.atomic():
                for table in ("meta", "manifests", "problems", "solutions"):
                    db[table].create(COLUMNS[table], pk=PKS[table], not_null=NOT_NULL[table])
                db["solutions"].create_index(["problem_id"])
                db["solutions"].create_index(["manifest_id", "prompt_version"])
                self._create_vectors(db)
                db["meta"].insert_all(
                    [
                        {"key": "format", "value": FORMAT},
                        {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                        {"key": "created", "value": now_iso()},
                        {"key": "tool", "value": "suanjing"},
                        {"key": "tool_version", "value": self.tool_version},
                        *([{"key": "site", "value": self.site}] if self.site else []),
                    ]
                )
        finally:
            db.close()
        os.replace(partial, self.path)

    @staticmethod
    def _create_vectors(db) -> None:
        with db.atomic():
            db["vectors"].create(
                COLUMNS["vectors"], pk=PKS["vectors"], not_null=NOT_NULL["vectors"]
            )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PackWriter]:
        """Group writes into one commit (all or nothing)."""
        with self.db.atomic():
            yield self

    # -- writes --------------------------------------------------------------------------------

    def add_manifest(self, manifest: PackManifest) -> None:
        _check_manifest(manifest)
        text = _dump_json(manifest.data, f"manifest {manifest.manifest_id!r}", MAX_SMALL_JSON)
        with self.db.atomic():
            self.db["manifests"].upsert(
                {"manifest_id": manifest.manifest_id, "json": text}, pk="manifest_id"
            )

    def add_problem(self, problem: PackProblem) -> None:
        """Insert or update a problem. Refused (PackError) when the pack already has solutions of a problem
        with that id but another text or reference answer: they were checked against the old one."""
        _check_problem(problem)
        row = _problem_row(problem)
        with self.db.atomic():
            old = self._conn.execute(
                "SELECT text, reference_answer FROM problems WHERE id = ?", (problem.id,)
            ).fetchone()
            if old is not None and tuple(old) != (problem.text, problem.reference_answer):
                solved = self._conn.execute(
                    "SELECT 1 FROM solutions WHERE problem_id = ? LIMIT 1", (problem.id,)
                ).fetchone()
                if solved is not None:
                    raise PackError(
                        f"problem {problem.id!r} is already in {self.path} with another text or reference "
                        "answer; give the changed problem a new id, or write a new pack"
                    )
            self.db["problems"].upsert(row, pk="id")

    def add_solution(self, solution: PackSolution) -> None:
        _check_solution(solution)
        row = _solution_row(solution)
        with self.db.atomic():
            for table, key, value in (
                ("problems", "id", solution.problem_id),
                ("manifests", "manifest_id", solution.manifest_id),
            ):
                if (
                    self._conn.execute(
                        f"SELECT 1 FROM {table} WHERE {key} = ?", (value,)
                    ).fetchone()
                    is None
                ):
                    raise PackError(f"add the {table[:-1]} {value!r} before its solution")
            self.db["solutions"].upsert(row, pk="id")

    def add_vector(self, vector: PackVector) -> None:
        _check_vector(vector)
        with self.db.atomic():
            if (
                self._conn.execute(
                    "SELECT 1 FROM problems WHERE id = ?", (vector.problem_id,)
                ).fetchone()
                is None
            ):
                raise PackError(f"add the problem {vector.problem_id!r} before its vector")
            self.db["vectors"].upsert(
                {
                    "problem_id": vector.problem_id,
                    "embedder": vector.embedder,
                    "dim": vector.dim,
                    "vector": vector.data,
                },
                pk=("problem_id", "embedder"),
            )

    def record(self, checked, *, manifest_id: str, prompt_version: str) -> PackSolution:
        """Store one `solver.batch.CheckedAnswer` as the solution of (problem, model, prompt), counting the
        attempt: a retried failure overwrites its row with attempts + 1, never adds a second row."""
        sid = solution_id(checked.problem_id, manifest_id, prompt_version)
        with self.db.atomic():
            row = self._conn.execute(
                "SELECT attempts FROM solutions WHERE id = ?", (sid,)
            ).fetchone()
            attempts = (row[0] if row and isinstance(row[0], int) else 0) + 1
            solution = PackSolution(
                id=sid,
                problem_id=checked.problem_id,
                manifest_id=manifest_id,
                prompt_version=prompt_version,
                status=checked.status,
                final=checked.final,
                reasoning=checked.reasoning,
                answer_text=checked.answer_text,
                finish_reason=checked.finish_reason,
                evidence=checked.evidence(),
                new_tokens=checked.new_tokens,
                elapsed_s=round(checked.elapsed_s, 3),
                created=now_iso(),
                attempts=min(attempts, MAX_ATTEMPTS_STORED),
                error=checked.error[:2000] if checked.error else None,
            )
            self.add_solution(solution)
        return solution

    # -- reads for resuming --------------------------------------------------------------------

    def solution_states(self, manifest_id: str, prompt_version: str) -> dict[str, tuple[str, int]]:
        """{problem_id: (status, attempts)} of the solutions this model and prompt already wrote."""
        rows = self._conn.execute(
            "SELECT problem_id, status, attempts FROM solutions WHERE manifest_id = ? AND prompt_version = ?",
            (manifest_id, prompt_version),
        )
        return {pid: (status, attempts or 1) for pid, status, attempts in rows}

    def counts(self) -> dict:
        problems = self._conn.execute("SELECT count(*) FROM problems").fetchone()[0]
        by_status = dict(
            self._conn.execute("SELECT status, count(*) FROM solutions GROUP BY status").fetchall()
        )
        return {"problems": problems, "solutions": sum(by_status.values()), "by_status": by_status}
