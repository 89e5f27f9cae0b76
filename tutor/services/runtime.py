"""The process runtime: the engine, the answer cache, the SQLite writer lock and the task queue's address.

Owns: the one engine and model manifest of this process (loaded on first use), the one answer cache
(built from the database on first use, kept in step with the bank's edits), `one_writer` (the lock that
queues this process's threads for small SQLite writes) and `enqueue` (a background task, by name).
The public seam for tests and benchmarks: `install(engine=..., manifest=..., cache=...)` puts parts built
elsewhere in place, `reset()` drops them all (the next use loads from settings again), `loaded_engine()`
and `loaded_manifest()` read what is there without loading anything.
Does not own: what is done with the engine or the cache (the other services modules).

One engine per deployment: the site runs as ONE web process (`manage.py runserver`, or
`gunicorn -k gthread --workers 1 --threads 16 tutor.wsgi`); the engine runs in a child process it starts
(`solver.engine_process`, unless SUANJING_ENGINE_PROCESS is off).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection

from tutor.errors import EngineUnavailable
from tutor.models import MatchBlock, Problem, ProblemAlias

log = logging.getLogger(__name__)


@dataclass
class _Runtime:
    engine: Any = None  # solver.engine.Engine or EngineProcess (unit tests may install their own)
    manifest: Any = None  # solver.modelstore.Manifest
    cache: Any = None  # solver.cache.SemanticCache
    lock: threading.Lock = field(default_factory=threading.Lock)
    cache_lock: threading.RLock = field(default_factory=threading.RLock)


_runtime = _Runtime()
_KEEP: Any = object()


def install(*, engine: Any = _KEEP, manifest: Any = _KEEP, cache: Any = _KEEP) -> None:
    """Put parts built elsewhere (tests, benchmarks) in place of the ones loaded from settings; a part
    not named is left as it is. `engine=None` drops the engine (the next use loads one); so does
    `cache=None` (the next use rebuilds it from the database)."""
    if engine is not _KEEP or manifest is not _KEEP:
        with _runtime.lock:
            if engine is not _KEEP:
                _runtime.engine = engine
            if manifest is not _KEEP:
                _runtime.manifest = manifest
    if cache is not _KEEP:
        with _runtime.cache_lock:
            _runtime.cache = cache


def reset() -> None:
    """No engine, manifest or cache: the next use loads them from settings (the engine is not closed)."""
    install(engine=None, manifest=None, cache=None)


def loaded_engine() -> Any:
    """The engine in place, or None; loads nothing."""
    return _runtime.engine


def loaded_manifest() -> Any:
    """The manifest of the engine in place (or installed alone), or None; loads nothing."""
    return _runtime.manifest


def get_engine(model: str | None = None) -> tuple[Any, Any]:
    """(engine, manifest), loading the configured model (or `model`, by name) on first use. One engine per
    process: asking for another model than the loaded one raises EngineUnavailable."""
    with _runtime.lock:
        if _runtime.engine is not None and not getattr(_runtime.engine, "alive", True):
            log.error("the engine process stopped; starting a new one")
            _runtime.engine = None
        if _runtime.engine is not None and model and _runtime.manifest.name != model:
            raise EngineUnavailable(
                f"this process runs the model {_runtime.manifest.name!r}, not {model!r}; "
                f"start a worker with SUANJING_MODEL={model}"
            )
        if _runtime.engine is None:
            from solver.engine import Engine, EngineError, EngineSettings
            from solver.modelstore import ModelError, ModelStore

            try:
                prepared = ModelStore(settings.SUANJING_MODELS).default(
                    model or settings.SUANJING_MODEL or None
                )
                engine_settings = EngineSettings(
                    threads=settings.SUANJING_THREADS or None,
                    kv_cache_gb=settings.SUANJING_KV_CACHE_GB,
                )
                if settings.SUANJING_ENGINE_PROCESS:
                    from solver.engine_process import EngineProcess

                    engine = EngineProcess(prepared.path, engine_settings)
                else:
                    engine = Engine(prepared.path, engine_settings)
            except (ModelError, EngineError) as exc:
                raise EngineUnavailable(str(exc)) from exc
            _runtime.engine, _runtime.manifest = engine, prepared.manifest
        return _runtime.engine, _runtime.manifest


def use_engine(engine: Any, manifest: Any) -> None:
    """Share an engine built elsewhere (tests, benchmarks) instead of loading one from settings."""
    install(engine=engine, manifest=manifest)


def model_info() -> dict[str, Any] | None:
    """The loaded model's name and whether it is weak at math, without loading it."""
    manifest = _runtime.manifest
    if manifest is None:
        return None
    return {"name": manifest.name, "weak_at_math": bool(getattr(manifest, "weak_at_math", False))}


# -- the answer cache ------------------------------------------------------------------------------


def get_cache() -> Any:
    """The answer cache over every banked problem, built on first use."""
    with _runtime.cache_lock:
        if _runtime.cache is None:
            from solver.cache import SemanticCache
            from solver.embed import load_embedder

            kwargs = {}
            if settings.SUANJING_CACHE_THRESHOLD:
                kwargs["threshold"] = settings.SUANJING_CACHE_THRESHOLD
            embedder = load_embedder(
                settings.SUANJING_EMBEDDER,
                backend=settings.SUANJING_EMBEDDER_BACKEND,
                cache_dir=settings.VAR_DIR / "embedders",
            )
            cache = SemanticCache(embedder, **kwargs)
            started = time.perf_counter()
            entries = [(str(pk), text) for pk, text in Problem.objects.values_list("pk", "text")]
            if entries:
                cache.add_many(entries)
            feed_corrections(cache)
            log.info(
                "answer cache: %d problems in %.1f s", len(entries), time.perf_counter() - started
            )
            _runtime.cache = cache
        return _runtime.cache


def use_cache(cache: Any) -> None:
    """Install a cache built elsewhere (tests, benchmarks); None drops it so the next use rebuilds."""
    install(cache=cache)


def put_problem(problem_id: int, text: str) -> None:
    """Add or replace one problem in the cache, if the cache is loaded (else it is built from the DB)."""
    with _runtime.cache_lock:
        if _runtime.cache is not None:
            _runtime.cache.remove(str(problem_id))
            _runtime.cache.add(str(problem_id), text)


def drop_problem(problem_id: int) -> None:
    """Take one problem out of the loaded cache."""
    with _runtime.cache_lock:
        if _runtime.cache is not None:
            _runtime.cache.remove(str(problem_id))


def feed_corrections(cache: Any) -> None:
    """Teachers' accepted aliases and students' blocks, from the database into a newly built cache."""
    for text, problem_id in ProblemAlias.objects.filter(
        status=ProblemAlias.Status.ACCEPTED
    ).values_list("text", "problem_id"):
        _cache_call(cache, "add_alias", text, str(problem_id))
    for text, problem_id in MatchBlock.objects.values_list("text", "problem_id"):
        _cache_call(cache, "add_block", text, str(problem_id))


def _cache_call(cache: Any, method: str, *args: str) -> None:
    try:
        getattr(cache, method)(*args)
    except (
        ValueError
    ):  # a wording the cache cannot read (too long, no words): it cannot match anyway
        log.warning("answer cache: %s%r refused", method, args, exc_info=True)


def correct_cache(method: str, *args: str) -> None:
    """An alias or block change ("add_alias", "add_block"), into the loaded cache (a cache built later
    reads the database)."""
    with _runtime.cache_lock:
        if _runtime.cache is not None:
            _cache_call(_runtime.cache, method, *args)


def remove_block(text: str, problem_id: str) -> None:
    with _runtime.cache_lock:
        if _runtime.cache is not None:
            _runtime.cache.remove_block(text, problem_id)


def remove_alias(text: str) -> None:
    with _runtime.cache_lock:
        if _runtime.cache is not None:
            _runtime.cache.remove_alias(text)


def lookup(text: str) -> Any | None:
    """The cache's decision, or None when the cache cannot be used (then every question is a miss)."""
    try:
        # SemanticCache is safe for concurrent lookups; cache_lock only guards building/swapping it.
        return get_cache().lookup(text)
    except Exception:  # a broken embedder must not stop students asking; generation still works
        log.error("answer cache unavailable", exc_info=True)
        return None


# -- writes and background tasks ------------------------------------------------------------------

_sqlite_writer = threading.Lock()


@contextmanager
def one_writer() -> Iterator[None]:
    """Queue this process's threads for a small autocommit write when the database is SQLite.

    SQLite lets one connection write at a time; the others get SQLITE_BUSY and sleep in its busy handler
    (1, 2, 5 ... 100 ms) before retrying. Under many concurrent cache hits that sleep, not the 0.1 ms
    insert, set the p99: threads of one process now wait on this lock instead. Other processes (a
    db_worker) still meet the busy handler, rarely. PostgreSQL needs nothing."""
    if connection.vendor != "sqlite":
        yield
        return
    with _sqlite_writer:
        yield


def enqueue(task_name: str, *args: Any, run_after: Any = None) -> None:
    """Queue the background task `tutor.tasks.<task_name>` (in the caller's transaction: the queue is
    this database).

    By name, as a producer addresses a queue (zulip's `queue_json_publish`): the tasks call the
    services, so the services do not import the tasks and the import graph keeps one direction."""
    from django.utils.module_loading import import_string

    task = import_string(f"tutor.tasks.{task_name}")
    if run_after is not None:
        task = task.using(run_after=run_after)
    task.enqueue(*args)
