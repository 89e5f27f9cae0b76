"""Which background workers are alive, and what becomes of task rows whose worker is gone.

Owns: the heartbeat of each `manage.py worker` process (a key in the shared "throttle" cache: the
database's cache table, or Redis, so every machine that shares the queue sees it), and settling the
django-tasks-db rows that a worker left RUNNING when it died (issue 13: "task rows left running by a dead
worker are settled"). Does not own: the worker's loop, its retries or its threads
(tutor/management/commands/worker.py), nor the work the tasks do (tutor.tasks, the other services).

django-tasks-db records on each row the ids of the workers that claimed it (`worker_ids`, the last one
is the current claimant) but keeps no heartbeat, so a killed worker's row stays RUNNING for ever. Here a
RUNNING row is stale when its claimant has not beaten for LEASE_S seconds. Only `manage.py worker` beats:
a stock `db_worker` sharing the queue would be taken for dead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.utils import timezone
from django_tasks import TaskResultStatus
from django_tasks_db.models import DBTaskResult

log = logging.getLogger(__name__)

# SUANJING_WORKER_LEASE_S (default 90): a worker silent this long is gone. It beats six times per lease
# (every 15 s by default), however long its task runs, so a busy database may delay a beat by 10 s.
LEASE_S = float(settings.SUANJING_WORKER_LEASE_S)
HEARTBEAT_S = LEASE_S / 6
MAX_CLAIMS = (
    3  # a re-queued task whose workers died this many times is failed: it may be the killer
)

# Tasks that may run again from the start after their worker died, rather than be failed. process_run
# may: its items are claimed with leases, a dead worker's claims go back to pending when their lease
# runs out (precompute.requeue_expired), and Solution.run_item refuses a second answer for an item. It
# is re-queued, not failed, because a worker that died before the run fanned out its follow-up task
# (precompute._enqueue_run on the first claim) left nothing else that would bring the run back.
# generate_towards_answer is failed: it is not worth a retry, the next ask after GUIDED_EVERY_H
# queues it again.
REQUEUED_TASKS = frozenset({"tutor.tasks.process_run"})


class WorkerGone(Exception):
    """The worker running this task stopped (crashed or was killed) before the task finished."""


@dataclass(frozen=True)
class Settled:
    failed: int = 0
    requeued: int = 0


def _cache():
    return caches["throttle"]


def _key(worker_id: str) -> str:
    return f"worker-beat:{worker_id}"


def beat(*, worker_id: str) -> bool:
    """Record that this worker is alive for the next LEASE_S seconds; False when the beat could not be
    read back (Django's database cache drops a write it cannot make, e.g. on a locked database, without
    saying so). Raises what the cache raises when it cannot be read at all (a lost database, Redis down)."""
    _cache().set(_key(worker_id), timezone.now().isoformat(), timeout=LEASE_S)
    return _cache().get(_key(worker_id)) is not None


def forget(*, worker_id: str) -> None:
    """A worker that stops cleanly says so at once, rather than after LEASE_S."""
    _cache().delete(_key(worker_id))


def live_workers(worker_ids: list[str]) -> set[str]:
    """Those of `worker_ids` that beat within the last LEASE_S seconds."""
    found = _cache().get_many([_key(w) for w in worker_ids])
    return {w for w in worker_ids if _key(w) in found}


def settle_orphaned_tasks(*, worker_id: str, backend_name: str = "default") -> Settled:
    """Settle the RUNNING task rows of `backend_name` whose worker is gone: re-queue those of
    REQUEUED_TASKS claimed fewer than MAX_CLAIMS times, fail the others with WorkerGone.

    `worker_id` is the caller's own, which must have beaten: if its own heartbeat cannot be read, the
    heartbeats are not being kept (the cache table is missing, the cache lost them), every worker would
    look dead, and nothing is settled."""
    if not live_workers([worker_id]):
        log.warning("worker %s: own heartbeat unreadable; no task rows settled", worker_id)
        return Settled()
    rows = list(
        DBTaskResult.objects.running()
        .filter(backend_name=backend_name)
        .values("id", "task_path", "worker_ids", "started_at")
    )
    claimants = {row["id"]: (row["worker_ids"] or [""])[-1] for row in rows}
    alive = live_workers([c for c in set(claimants.values()) if c])
    failed = requeued = 0
    for row in rows:
        claimant = claimants[row["id"]]
        if claimant in alive:
            continue
        # Only the claim that was seen: a row another worker claimed (or finished) meanwhile is left.
        same_claim = DBTaskResult.objects.filter(
            id=row["id"], status=TaskResultStatus.RUNNING, started_at=row["started_at"]
        )
        if row["task_path"] in REQUEUED_TASKS and len(row["worker_ids"]) < MAX_CLAIMS:
            requeued += same_claim.update(status=TaskResultStatus.READY)
            log.warning(
                "task %s (%s): worker %s is gone; queued again",
                row["id"],
                row["task_path"],
                claimant,
            )
            continue
        failed += same_claim.update(
            status=TaskResultStatus.FAILED,
            finished_at=timezone.now(),
            exception_class_path=f"{WorkerGone.__module__}.{WorkerGone.__qualname__}",
            traceback=f"{WorkerGone.__qualname__}: worker {claimant or '?'} stopped (crashed or "
            f"was killed) before the task finished; found by worker {worker_id}\n",
        )
        log.warning(
            "task %s (%s): worker %s is gone; failed", row["id"], row["task_path"], claimant
        )
    return Settled(failed=failed, requeued=requeued)
