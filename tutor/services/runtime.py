"""The process runtime: the engine, the answer cache, the SQLite writer lock and the task queue's address.

Owns: this process's client of the engine service and the model manifest (connected on first use), the
one engine service of this machine when no URL is configured (started by whichever process needs it
first, found by the others), the one answer cache (built from the database on first use, kept in step
with the bank's edits), `one_writer` (the lock that queues this process's threads for small SQLite
writes) and `enqueue` (a background task, by name).
The public seam for tests and benchmarks: `install(engine=..., manifest=..., cache=...)` puts parts built
elsewhere in place, `reset()` drops them all (the next use loads from settings again), `loaded_engine()`
and `loaded_manifest()` read what is there without loading anything.
Does not own: what is done with the engine or the cache (the other services modules), the engine service
itself (`solver.serve`) or its client (`solver.remote.RemoteEngine`).

The engine is a service reached by URL, always: SUANJING_ENGINE_URL (any OpenAI-compatible server), or
else one `python -m solver serve` on 127.0.0.1:SUANJING_ENGINE_PORT for the configured model, shared by
every web process and db_worker of this SUANJING_VAR. A lock file in SUANJING_VAR makes one process start
it while the others wait and then find it; the health check must show Suanjing's service serving the
configured model (a foreign program on the port is refused with a sentence naming the setting). The
service stops when the process that started it ends (`--exit-with-parent`); a dead or stopped service
is seen by the next `get_engine()` (its client no longer reports `alive`), which starts a new one.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from tutor.errors import EngineUnavailable
from tutor.models import MatchBlock, ProblemAlias

log = logging.getLogger(__name__)


@dataclass
class _Runtime:
    engine: Any = None  # solver.remote.RemoteEngine (tests and benchmarks may install their own)
    manifest: Any = None  # solver.modelstore.Manifest
    service: Any = None  # subprocess.Popen: the local engine service this process started, if any
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
    """(engine, manifest): a client of the engine service, connected (and the local service started)
    on first use, for the configured model or `model` (by name). A client whose service stopped
    answering is replaced. One model per process: asking for another model than the connected one
    raises EngineUnavailable, as does any reason the engine cannot be had (in one sentence)."""
    with _runtime.lock:
        if _runtime.engine is not None and not getattr(_runtime.engine, "alive", True):
            # Not closed: a generation still streaming from a slow but living service keeps going.
            log.error("the engine service stopped answering; connecting again")
            _runtime.engine = None
        if _runtime.engine is not None and model and _runtime.manifest.name != model:
            raise EngineUnavailable(
                f"this process runs the model {_runtime.manifest.name!r}, not {model!r}; "
                f"start a worker with SUANJING_MODEL={model}"
            )
        if _runtime.engine is None:
            if settings.SUANJING_ENGINE_URL:
                engine, manifest = _engine_by_url(settings.SUANJING_ENGINE_URL, model)
            else:
                engine, manifest = _local_engine(model)
            _runtime.engine, _runtime.manifest = engine, manifest
        return _runtime.engine, _runtime.manifest


def configured_manifest(model: str = "") -> Any:
    """The manifest of the model the engine runs (or would run), without starting a local service: the
    connected one, else for a URL the served model's (asking the service), else the prepared model's
    from the store. Raises EngineUnavailable."""
    manifest = _runtime.manifest
    if manifest is not None and (not model or manifest.name == model):
        return manifest
    if settings.SUANJING_ENGINE_URL:
        return get_engine(model or None)[1]
    return _prepared(model or None).manifest


def _prepared(model: str | None) -> Any:
    from solver.modelstore import ModelError, ModelStore

    try:
        return ModelStore(settings.SUANJING_MODELS).default(
            model or settings.SUANJING_MODEL or None
        )
    except ModelError as exc:
        raise EngineUnavailable(str(exc)) from exc


# -- an engine service elsewhere (SUANJING_ENGINE_URL) ------------------------------------------------

# A model name from a service is text from outside: stored with every answer and shown to teachers.
_SERVED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}")


def _engine_by_url(url: str, model: str | None) -> tuple[Any, Any]:
    from solver.remote import EngineUnavailable as ServiceDown
    from solver.remote import RemoteEngine

    wanted = model or settings.SUANJING_MODEL or None
    try:
        engine = RemoteEngine(url, api_key=settings.SUANJING_ENGINE_API_KEY or None)
        names = engine.models()
    except ServiceDown as exc:
        raise EngineUnavailable(f"{exc} (SUANJING_ENGINE_URL)") from exc
    if wanted and wanted not in names:
        engine.close()
        raise EngineUnavailable(
            f"the engine service at {url} serves {', '.join(map(repr, names[:5]))}, not {wanted!r} "
            "(SUANJING_MODEL)"
        )
    engine.model = wanted or names[0]
    if not _SERVED_NAME.fullmatch(engine.model):
        engine.close()
        raise EngineUnavailable(
            f"the engine service at {url} names its model {engine.model[:60]!r}: use a plain name "
            "(letters, digits and . _ - : / @ +, at most 100 characters)"
        )
    return engine, _served_manifest(engine.model)


def _served_manifest(name: str) -> Any:
    """The prepared model's manifest when the served model is one of ours (by name), else a manifest of
    the served model: its prompt family from SUANJING_ENGINE_FAMILY or its name; answers are keyed on an
    id of that name and family."""
    from solver.modelstore import KNOWN_MODELS, Manifest, ModelStore
    from solver.prompts import UnknownPromptFamily, detect_family, get_family

    for prepared in ModelStore(settings.SUANJING_MODELS).list():
        if prepared.name == name:
            return prepared.manifest
    lowered = name.lower()
    known = next(
        (
            spec
            for spec in KNOWN_MODELS.values()
            if lowered in (spec.name, (spec.modelscope_id or "").lower())
        ),
        None,
    )
    family_name = (
        settings.SUANJING_ENGINE_FAMILY
        or (known.family if known else None)
        or detect_family(model_type="", name_or_path=name, chat_template=None)
    )
    if not family_name:
        raise EngineUnavailable(
            f"the engine service's model {name!r} is not one Suanjing knows, so its prompt format is "
            "unknown: set SUANJING_ENGINE_FAMILY to r1-distill (DeepSeek-R1 distills) or chatml"
        )
    try:
        family = get_family(family_name)
    except UnknownPromptFamily as exc:
        raise EngineUnavailable(f"SUANJING_ENGINE_FAMILY: {exc}") from exc
    manifest = Manifest(
        name=name,
        family=family.name,
        prompt_version=family.version,
        source={"served_model": name},
        quantization={},
        tools={},
        files={},
        created="",
        weak_at_math=known.weak_at_math if known else family.weak_at_math,
        extra={"served_by": "an engine service (SUANJING_ENGINE_URL)"},
    )
    return replace(manifest, manifest_id=manifest.compute_id())


# -- the engine service on this machine (no SUANJING_ENGINE_URL) ---------------------------------------

SERVICE_HOST = "127.0.0.1"
SERVICE_START_TIMEOUT_S = 600.0
_LOG_KEEP_BYTES = 5_000_000


def _service_file(suffix: str) -> Path:
    return Path(settings.VAR_DIR) / f"engine-service{suffix}"


def local_service() -> dict | None:
    """What the last process that started this machine's engine service wrote down (pid, url, model,
    manifest_id, started_by, started), or None. The service itself may have stopped since."""
    try:
        return json.loads(_service_file(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def stop_local_service() -> bool:
    """Stop the local engine service if this process started it (tests, shutdown); drop the engine.
    False when this process started none that still runs."""
    with _runtime.lock:
        return _stop_service()


def _stop_service() -> bool:
    import subprocess

    process, _runtime.service = _runtime.service, None
    _runtime.engine = _runtime.manifest = None
    if process is None or process.poll() is not None:
        return False
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    return True


def _local_engine(model: str | None) -> tuple[Any, Any]:
    from solver.remote import EngineUnavailable as ServiceDown
    from solver.remote import RemoteEngine

    prepared = _prepared(model)
    port = settings.SUANJING_ENGINE_PORT
    url = f"http://{SERVICE_HOST}:{port}/v1"
    state, served = _probe(port)
    if not (state == "ok" and served == prepared.name):
        with _file_lock(_service_file(".lock"), SERVICE_START_TIMEOUT_S + 60):
            _ensure_service(prepared, port)
    try:
        engine = RemoteEngine(url, model=prepared.name)
    except ServiceDown as exc:
        raise EngineUnavailable(str(exc)) from exc
    return engine, prepared.manifest


def _ensure_service(prepared: Any, port: int) -> None:
    """With the lock file held: make sure our service for `prepared` is ready on `port`, starting it
    if nothing listens there."""
    deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
    started = False
    while True:
        state, served = _probe(port)
        if state != "absent" and served != prepared.name:
            if _mine_on(port):  # this process started it for another model (settings changed)
                log.warning("stopping the engine service for %s to serve %s", served, prepared.name)
                _stop_service()
                continue
            raise EngineUnavailable(
                f"the engine service on {SERVICE_HOST}:{port} serves the model {served!r}, not "
                f"{prepared.name!r}: stop it, set SUANJING_MODEL={served}, or give this site another "
                "SUANJING_ENGINE_PORT"
            )
        if state == "ok":
            return
        if state == "absent":
            if started:
                raise EngineUnavailable(
                    f"the engine service stopped right after it started; see {_service_file('.log')}"
                )
            _start_service(prepared, port)
            started = True
            continue
        # Loading (or failed and about to exit): started by hand, or by a site with another SUANJING_VAR.
        if time.monotonic() > deadline:
            raise EngineUnavailable(
                f"the engine service on {SERVICE_HOST}:{port} was not ready within "
                f"{SERVICE_START_TIMEOUT_S:.0f} s"
            )
        time.sleep(0.5)


def _mine_on(port: int) -> bool:
    process = _runtime.service
    info = local_service() or {}
    return (
        process is not None
        and process.poll() is None
        and info.get("pid") == process.pid
        and info.get("url", "").endswith(f":{port}/v1")
    )


def _probe(port: int) -> tuple[str, str | None]:
    """("absent", None) when nothing listens on the port; ("ok" | "loading" | "failed", model) for
    Suanjing's engine service; EngineUnavailable naming SUANJING_ENGINE_PORT for anything else."""
    import httpx

    def foreign(why: str) -> EngineUnavailable:
        return EngineUnavailable(
            f"{SERVICE_HOST}:{port} is taken by another program ({why}), not Suanjing's engine "
            "service: set SUANJING_ENGINE_PORT to a free port, or stop that program"
        )

    try:
        response = httpx.get(
            f"http://{SERVICE_HOST}:{port}/health", timeout=httpx.Timeout(10.0, connect=3.0)
        )
    except httpx.ConnectError:
        return "absent", None
    except httpx.HTTPError as exc:
        raise foreign(f"it does not answer HTTP: {type(exc).__name__}") from None
    server = response.headers.get("server", "")
    if not server.startswith("suanjing"):
        raise foreign(f"it answers as {server[:40]!r}" if server else "it does not say what it is")
    try:
        body = response.json()
        state, model = str(body["status"]), str(body["model"])
    except (ValueError, KeyError, TypeError):
        raise foreign("its /health is not Suanjing's") from None
    return ("ok" if state == "ok" else "failed" if state == "failed" else "loading"), model


def _start_service(prepared: Any, port: int) -> None:
    from solver.engine import EngineError
    from solver.remote import start_local_service

    args = ["--kv-cache-gb", str(settings.SUANJING_KV_CACHE_GB)]
    if settings.SUANJING_THREADS:
        args += ["--threads", str(settings.SUANJING_THREADS)]
    log_path = _service_file(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if log_path.stat().st_size > _LOG_KEEP_BYTES:
            log_path.replace(log_path.with_suffix(".log.1"))
    except OSError:
        pass
    log.info("starting the engine service for %s on %s:%d", prepared.name, SERVICE_HOST, port)
    started = time.perf_counter()
    with open(log_path, "ab") as errors:
        try:
            process, url = start_local_service(
                prepared.path,
                port,
                host=SERVICE_HOST,
                extra_args=args,
                stderr=errors,
                timeout=SERVICE_START_TIMEOUT_S,
            )
        except EngineError as exc:
            _probe(port)  # a program that took the port meanwhile: its own sentence
            raise EngineUnavailable(f"{exc}; see {log_path}") from exc
    _runtime.service = process
    info = {
        "pid": process.pid,
        "url": url,
        "model": prepared.name,
        "manifest_id": prepared.manifest.manifest_id,
        "started_by": os.getpid(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    written = _service_file(".json.tmp")
    written.write_text(json.dumps(info), encoding="utf-8")
    written.replace(_service_file(".json"))
    log.info(
        "engine service ready at %s in %.1f s (pid %d)",
        url,
        time.perf_counter() - started,
        process.pid,
    )


@contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive lock on `path` between the processes of this machine (flock; released if the
    holder dies). EngineUnavailable after `timeout` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EngineUnavailable(
                        f"another process has been starting the engine service for {timeout:.0f} s "
                        f"(lock {path})"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    """The answer cache over every banked problem: one installed with `install`, or the one
    `tutor.services.bankcache` starts on first use (the saved cache brought up to date with the
    database) and keeps in step with the bank's change feed. Waits for its start."""
    from tutor.services import bankcache

    return bankcache.follow(_runtime)


def use_cache(cache: Any) -> None:
    """Install a cache built elsewhere (tests, benchmarks); None drops it so that the next use starts
    the cache again (from the saved one, brought up to date with the database)."""
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
        # An ask waits only a few seconds for a starting cache (None: a miss, answered live).
        from tutor.services import bankcache

        cache = bankcache.follow(_runtime, wait=bankcache.ASK_WAIT_S)
        return None if cache is None else cache.lookup(text)
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
