"""`manage.py worker`: django-tasks' `db_worker` that survives a locked or lost database, and settles
the task rows of workers that died.

The stock worker dies when SQLite's busy timeout runs out while another process holds the write lock
(an answer-pack import, a burst of asks; issue 13, finding 2): its `BEGIN EXCLUSIVE` to claim a task is
outside its own retry, and so is storing a finished task's result. It dies too when the database goes
away (PostgreSQL restarted, the SQLite file unreadable for a moment). This worker takes the same options
(`manage.py worker --help`), waits with backoff and carries on: claiming is tried again (after dropping
a broken connection), and a task's result is stored again until the database lets it (never lost,
never a dead worker).

A keeper thread beats for the worker (tutor.services.workers) and, at start and then every minute,
settles RUNNING task rows whose worker stopped beating: a killed worker's task is re-queued or failed
instead of showing "running" for ever.
Run it under a supervisor (README.md, "Supervising the worker"): that restarts it after anything else.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
)
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV, run_with_reloader
from django_tasks_db.management.commands import db_worker
from django_tasks_db.utils import is_locked_database_exception

from tutor.services import workers

log = logging.getLogger("tutor.worker")

BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)  # locked: then 10 s between tries, as long as the lock lasts
LOST_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0)  # lost: then 30 s, until the database is back
NEW_OUTAGE_S = 60.0  # a failure this long after the last one starts the backoff from the beginning
SETTLE_EVERY_S = min(60.0, workers.LEASE_S)
# A lost connection surfaces as either, depending on the driver and on when it broke (psycopg raises
# InterfaceError on a connection it already knows is closed). Other database errors are bugs: raised.
DATABASE_GONE = (OperationalError, InterfaceError)


def _pause(attempt: int, backoff: tuple[float, ...] = BACKOFF_S) -> None:
    delay = backoff[min(attempt, len(backoff) - 1)]
    time.sleep(delay * (0.75 + random.random() / 2))


def _is_locked(exc: DatabaseError) -> bool:
    return (
        isinstance(exc, OperationalError) and bool(exc.args) and is_locked_database_exception(exc)
    )


def _drop_connections() -> None:
    """Close this thread's database connections; the next query opens a new one. Closing a broken
    connection may itself raise: it is gone either way."""
    for connection in connections.all(initialized_only=True):
        with contextlib.suppress(DatabaseError):
            connection.close()


def _retrying(call: Callable[[], Any], what: str, *, going_on: Callable[[], bool]) -> Any:
    """`call()`, tried again with backoff while the database is locked or lost and `going_on()`."""
    attempt, failed_at = 0, float("-inf")
    while going_on():
        try:
            return call()
        except DATABASE_GONE as exc:
            if time.monotonic() - failed_at > NEW_OUTAGE_S:
                attempt = 0
            failed_at = time.monotonic()
            if _is_locked(exc):
                log.warning("database locked while %s; trying again", what)
                close_old_connections()
                _pause(attempt)
            else:
                log.warning("database lost while %s (%s); reconnecting", what, exc)
                _drop_connections()
                _pause(attempt, LOST_BACKOFF_S)
            attempt += 1
    return None


def _patient(store: Callable[..., Any], what: str) -> Callable[..., Any]:
    """Store a task's result, waiting out a locked or lost database (the task itself is not run again)."""

    @functools.wraps(store)
    def run(*args: Any, **kwargs: Any) -> Any:
        return _retrying(lambda: store(*args, **kwargs), f"storing {what}", going_on=lambda: True)

    return run


class _Keeper(threading.Thread):
    """Beats for a worker every HEARTBEAT_S and settles the task rows of dead workers every
    SETTLE_EVERY_S: a thread of its own, so that a task running for hours does not stop the beat."""

    def __init__(self, *, worker_id: str, backend_name: str) -> None:
        super().__init__(name=f"keeper-{worker_id}", daemon=True)
        self.worker_id, self.backend_name = worker_id, backend_name
        self.stopping = threading.Event()
        self.beating_since: float | None = None

    def beat_and_settle(self, *, settle: bool) -> None:
        """One beat, then (`settle`) one sweep. Never raises: housekeeping must not stop the worker."""
        try:
            if not workers.beat(worker_id=self.worker_id):
                raise DatabaseError("the heartbeat was not stored")
            if self.beating_since is None:
                self.beating_since = time.monotonic()
            if settle:
                workers.settle_orphaned_tasks(
                    worker_id=self.worker_id, backend_name=self.backend_name
                )
        except Exception:  # the cache or the database is down: the next beat tries again
            log.warning("worker %s: heartbeat or settling failed", self.worker_id, exc_info=True)
            self.beating_since = None
            _drop_connections()

    def run(self) -> None:
        settled_at = time.monotonic()
        try:
            while not self.stopping.wait(workers.HEARTBEAT_S):
                now = time.monotonic()
                # Other workers' beats failed too while the database was away: settle only once this
                # worker has beaten for a whole lease, when every live worker has had time to beat again.
                steady = (
                    self.beating_since is not None and now - self.beating_since >= workers.LEASE_S
                )
                settle = steady and now - settled_at >= SETTLE_EVERY_S
                self.beat_and_settle(settle=settle)
                settled_at = now if settle else settled_at
        finally:
            connections.close_all()  # this thread's own connections

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=workers.HEARTBEAT_S)
        with contextlib.suppress(Exception):  # its beat expires after LEASE_S anyway
            workers.forget(worker_id=self.worker_id)


class PatientWorker(db_worker.Worker):
    def run(self) -> None:
        keeper = _Keeper(worker_id=self.worker_id, backend_name=self.backend_name)
        # Settled at start, before this worker claims anything, then by the keeper thread.
        keeper.beat_and_settle(settle=True)
        keeper.start()
        try:
            return _retrying(super().run, "looking for a task", going_on=lambda: self.running)
        finally:
            keeper.stop()

    def run_task(self, db_task_result) -> None:
        db_task_result.set_successful = _patient(db_task_result.set_successful, "a result")
        db_task_result.set_failed = _patient(db_task_result.set_failed, "a failure")
        return super().run_task(db_task_result)


class Command(db_worker.Command):
    help = (
        "Run background tasks (django-tasks' db_worker), survive a locked or lost database, and "
        "settle the tasks of workers that died."
    )

    def handle(
        self,
        *,
        verbosity: int,
        queue_name: str,
        interval: float,
        batch: bool,
        backend_name: str,
        startup_delay: bool,
        reload: bool,
        max_tasks: int | None,
        worker_id: str,
        exclude_queues: str,
        **options: Any,
    ) -> None:
        self.configure_logging(verbosity)
        if reload and batch:
            reload = False
        queue_names = queue_name.split(",")
        excluded = exclude_queues.split(",") if exclude_queues else []
        if excluded and "*" not in queue_names:
            from django.core.management.base import CommandError

            raise CommandError("--exclude-queues can only be used with --queue-name=*")
        worker = PatientWorker(
            queue_names=queue_names,
            interval=interval,
            batch=batch,
            backend_name=backend_name,
            startup_delay=startup_delay,
            max_tasks=max_tasks,
            worker_id=worker_id,
            excluded_queue_names=excluded,
        )
        if reload:
            if os.environ.get(DJANGO_AUTORELOAD_ENV) == "true":
                worker.configure_signals()
            run_with_reloader(worker.run)
        else:
            worker.configure_signals()
            worker.run()
