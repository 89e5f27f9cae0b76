"""What the site is doing now, for the admin's status page: the engine service, the live answers, the
background queue, its workers and the precompute runs in progress.

Owns: `snapshot()` and its parts, each read-only. The engine service is asked by URL with short
timeouts (ENGINE_TIMEOUT_S) and never started here: with no SUANJING_ENGINE_URL and no local service
written down, the page says so (the site starts the local service with the first live answer).
Does not own: starting or stopping the engine (`tutor.services.runtime`), workers' heartbeats
(`tutor.services.workers`), a run's figures (`tutor.services.precompute`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.db import DatabaseError, connections, router, transaction
from django.db.models import Count, Min
from django.utils import timezone
from django_tasks import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from tutor.models import LiveGeneration, PrecomputeRun
from tutor.services import runtime, workers

log = logging.getLogger(__name__)

# The engine service answers /health in milliseconds when its engine runs in a child process (the
# default; solver/serve.py measured 1.8 ms under 16 streams): a service that takes longer than this
# is reported as not answering rather than holding the admin's page.
ENGINE_TIMEOUT_S = 2.0
ENGINE_CONNECT_TIMEOUT_S = 1.0
RECENT = dt.timedelta(hours=24)  # finished tasks counted, and workers looked for, over this window
MAX_LISTED = 20  # rows listed per table on the page


@dataclass(frozen=True)
class EngineStatus:
    """`where`: "url" (SUANJING_ENGINE_URL), "local" (the service this machine started) or "none".
    `state`: "ok", "loading", "failed", "down" (does not answer) or "not started"."""

    where: str
    url: str = ""
    state: str = "not started"
    model: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    checked_ms: float = 0.0

    @property
    def is_healthy(self) -> bool:
        return self.state == "ok"


@dataclass(frozen=True)
class QueueStatus:
    waiting: int  # ready to run now
    scheduled: int  # queued to run later (run_after in the future)
    running: int
    failed_recently: int
    done_recently: int
    oldest_waiting: dt.datetime | None
    by_task: list[dict[str, Any]]  # {"task", "waiting", "running"}, most waiting first


@dataclass(frozen=True)
class Snapshot:
    engine: EngineStatus
    live: list[LiveGeneration]
    live_running: int
    live_stalled: int  # running, but their process's lease ran out: another process takes them over
    max_live_jobs: int
    queue: QueueStatus
    workers_alive: list[str] | None  # None: the heartbeats cannot be read
    runs: list[tuple[PrecomputeRun, dict[str, int]]]
    taken: dt.datetime


def snapshot() -> Snapshot:
    """Everything the status page shows, read now. Never starts an engine; a down engine costs at most
    ENGINE_TIMEOUT_S."""
    now = timezone.now()
    running = LiveGeneration.objects.filter(status=LiveGeneration.Status.RUNNING)
    return Snapshot(
        engine=engine_status(),
        live=list(running.order_by("created")[:MAX_LISTED]),
        live_running=running.count(),
        live_stalled=running.filter(lease_until__lt=now).count(),
        max_live_jobs=settings.SUANJING_MAX_LIVE_JOBS,
        queue=queue_status(now=now),
        workers_alive=_sorted_or_none(alive_workers, now=now),
        runs=[
            (run, run.counts())
            for run in PrecomputeRun.objects.filter(status__in=PrecomputeRun.ACTIVE)[:MAX_LISTED]
        ],
        taken=now,
    )


def _sorted_or_none(find, **kwargs) -> list[str] | None:
    """None when the heartbeats cannot be read (the cache table missing, Redis down): unknown, not 0."""
    try:
        return sorted(find(**kwargs))
    except DatabaseError:
        log.warning("the workers' heartbeats cannot be read", exc_info=True)
        return None


# -- the engine service --------------------------------------------------------------------------------


def engine_status() -> EngineStatus:
    """The configured engine service (SUANJING_ENGINE_URL), else the local one this machine started
    (as written down by `runtime`), asked for /health and /metrics; never started from here."""
    if settings.SUANJING_ENGINE_URL:
        return probe_engine(settings.SUANJING_ENGINE_URL, where="url")
    info = runtime.local_service()
    if not info or not info.get("url"):
        return EngineStatus(
            where="none",
            model=settings.SUANJING_MODEL or "",
            error="no SUANJING_ENGINE_URL, and no engine service has been started on this machine "
            "yet: the site starts one with the first live answer or precompute run",
        )
    return probe_engine(str(info["url"]), where="local")


def probe_engine(url: str, *, where: str) -> EngineStatus:
    """GET /health and /metrics beside the OpenAI base URL (`.../v1`), ENGINE_TIMEOUT_S each. A service
    without /metrics (vLLM's is Prometheus text, OVMS has none) is reported without figures."""
    import httpx

    root = url.rstrip("/")
    root = root[: -len("/v1")] if root.endswith("/v1") else root
    headers = (
        {"Authorization": f"Bearer {settings.SUANJING_ENGINE_API_KEY}"}
        if settings.SUANJING_ENGINE_API_KEY
        else {}
    )
    timeout = httpx.Timeout(ENGINE_TIMEOUT_S, connect=ENGINE_CONNECT_TIMEOUT_S)
    started = time.perf_counter()

    def elapsed_ms() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    with httpx.Client(headers=headers, timeout=timeout) as client:
        try:
            health = client.get(f"{root}/health")
        except httpx.HTTPError as exc:
            return EngineStatus(
                where=where,
                url=url,
                state="down",
                error=f"{root} does not answer ({type(exc).__name__})",
                checked_ms=elapsed_ms(),
            )
        body = _json_dict(health)
        state = str(body.get("status") or ("ok" if health.status_code == 200 else "failed"))
        if state not in ("ok", "loading", "failed"):
            state = "ok" if health.status_code == 200 else "failed"
        metrics: dict[str, Any] = {}
        try:
            metrics = _json_dict(client.get(f"{root}/metrics"))
        except httpx.HTTPError:
            pass  # the service answered /health: its state is known without figures
    return EngineStatus(
        where=where,
        url=url,
        state=state,
        model=str(body.get("model") or metrics.get("model") or "")[:100],
        metrics=metrics,
        error=str(body.get("error") or "")[:300],
        checked_ms=elapsed_ms(),
    )


def _json_dict(response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# -- the background queue and its workers -----------------------------------------------------------------


def queue_status(*, now: dt.datetime) -> QueueStatus:
    """django-tasks-db's rows: waiting, scheduled, running; finished in the last RECENT."""
    rows = DBTaskResult.objects.all()
    ready = rows.filter(status=TaskResultStatus.READY)
    waiting = rows.ready()
    recent = rows.filter(finished_at__gte=now - RECENT)
    by_task: dict[str, dict[str, Any]] = {}
    for status, name in (
        (TaskResultStatus.READY, "waiting"),
        (TaskResultStatus.RUNNING, "running"),
    ):
        for row in rows.filter(status=status).values("task_path").annotate(n=Count("id")):
            entry = by_task.setdefault(
                row["task_path"], {"task": row["task_path"], "waiting": 0, "running": 0}
            )
            entry[name] = row["n"]
    n_waiting = waiting.count()
    return QueueStatus(
        waiting=n_waiting,
        scheduled=ready.count() - n_waiting,
        running=rows.running().count(),
        failed_recently=recent.failed().count(),
        done_recently=recent.successful().count(),
        oldest_waiting=waiting.aggregate(oldest=Min("enqueued_at"))["oldest"],
        by_task=sorted(by_task.values(), key=lambda e: (-e["waiting"], -e["running"], e["task"])),
    )


def alive_workers(*, now: dt.datetime) -> set[str]:
    """Workers (`manage.py worker`) whose heartbeat is current: those found in the heartbeat store
    (the database's cache table or Redis), and those that claimed a task in the last RECENT."""
    candidates = _beating_ids()
    for ids in (
        DBTaskResult.objects.filter(started_at__gte=now - RECENT)
        .values_list("worker_ids", flat=True)
        .order_by()[:1000]
    ):
        candidates.update(i for i in ids or [] if isinstance(i, str))
    candidates.discard("")
    return workers.live_workers(sorted(candidates)) if candidates else set()


def _beating_ids() -> set[str]:
    """Worker ids that have a heartbeat key in the shared cache (expired ones too: `live_workers`
    checks). Django's cache API cannot list keys, so this reads the store behind it."""
    from django.core.cache.backends.db import DatabaseCache
    from django.core.cache.backends.redis import RedisCache

    cache = caches["throttle"]
    prefix = cache.make_key(workers._key(""))
    found: list[str] = []
    if isinstance(cache, DatabaseCache):
        alias = router.db_for_read(cache.cache_model_class)
        connection = connections[alias]
        table = connection.ops.quote_name(cache._table)
        try:
            with transaction.atomic(using=alias), connection.cursor() as cursor:
                cursor.execute(
                    # "_" in a prefix matches any character here: the startswith below decides.
                    f"SELECT cache_key FROM {table} WHERE cache_key LIKE %s",
                    [prefix + "%"],
                )
                found = [row[0] for row in cursor.fetchmany(1000)]
        except DatabaseError:
            log.warning("the heartbeat table cannot be read", exc_info=True)
    elif isinstance(cache, RedisCache):
        from redis.exceptions import RedisError

        try:
            client = cache._cache.get_client(write=False)
            for key in client.scan_iter(match=prefix + "*", count=200):
                found.append(key.decode() if isinstance(key, bytes) else str(key))
                if len(found) >= 1000:
                    break
        except RedisError:
            log.warning("the heartbeats in Redis cannot be read", exc_info=True)
    return {key[len(prefix) :] for key in found if key.startswith(prefix)}
