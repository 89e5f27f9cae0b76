"""`manage.py worker`: django-tasks' `db_worker` that survives "database is locked".

The stock worker dies when SQLite's busy timeout runs out while another process holds the write lock
(an answer-pack import, a burst of asks; issue 13, finding 2): its `BEGIN EXCLUSIVE` to claim a task is
outside its own retry, and so is storing a finished task's result. This worker takes the same options
(`manage.py worker --help`), waits with backoff and carries on: claiming is tried again, and a task's
result is stored again until the database lets it (never lost, never a dead worker).
Run it under a supervisor (README.md, "Supervising the worker"): that restarts it after anything else.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

from django.db import OperationalError, close_old_connections
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV, run_with_reloader
from django_tasks_db.management.commands import db_worker
from django_tasks_db.utils import is_locked_database_exception

log = logging.getLogger("tutor.worker")

BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)  # then 10 s between tries, for as long as the lock lasts


def _pause(attempt: int) -> None:
    delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
    time.sleep(delay * (0.75 + random.random() / 2))


def _patient(store: Callable[..., Any], what: str) -> Callable[..., Any]:
    """Store a task's result, waiting out a locked database (the task itself is not run again)."""

    @functools.wraps(store)
    def run(*args: Any, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                return store(*args, **kwargs)
            except OperationalError as exc:
                if not is_locked_database_exception(exc):
                    raise
                log.warning("database locked while storing %s; trying again", what)
                _pause(attempt)
                attempt += 1

    return run


class PatientWorker(db_worker.Worker):
    def run(self) -> None:
        attempt = 0
        while self.running:
            try:
                return super().run()
            except OperationalError as exc:
                if not is_locked_database_exception(exc):
                    raise
                log.warning("database locked while looking for a task; trying again")
                close_old_connections()
                _pause(attempt)
                attempt += 1
        return None

    def run_task(self, db_task_result) -> None:
        db_task_result.set_successful = _patient(db_task_result.set_successful, "a result")
        db_task_result.set_failed = _patient(db_task_result.set_failed, "a failure")
        return super().run_task(db_task_result)


class Command(db_worker.Command):
    help = "Run background tasks (django-tasks' db_worker) and survive a locked database."

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
