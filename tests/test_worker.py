"""`manage.py worker` (tutor/management/commands/worker.py) survives a lost database, and task rows left
running by a dead worker are settled (tutor/services/workers.py) — issue 13, findings 2 and "crash
recovery". The worker under a held SQLite lock is tested in tests/test_import_under_load.py.

A lost connection is simulated where the worker meets it: the method it claims tasks with
(`DBTaskResultQuerySet.get_locked`) and the save that stores a result raise PostgreSQL's error for a
server that went away; the database itself stays real.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from django.core.management import call_command
from django.db import OperationalError, connections
from django.utils import timezone
from django_tasks_db.models import DBTaskResult, DBTaskResultQuerySet

from tutor import tasks
from tutor.management.commands import worker as worker_command
from tutor.services import workers

pytestmark = pytest.mark.django_db(transaction=True)

LOST = "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally"
NO_SUCH_PROBLEM = 999_999  # generate_towards_answer ends at once with "not_needed"


@pytest.fixture
def quick_backoff(monkeypatch):
    monkeypatch.setattr(worker_command, "LOST_BACKOFF_S", (0.01,))
    monkeypatch.setattr(worker_command, "BACKOFF_S", (0.01,))


def run_worker_command() -> None:
    call_command("worker", "--batch", "--no-startup-delay", "--interval", "0.05")


def new_worker(cls, **options):
    defaults = dict(
        queue_names=["default"],
        interval=0.05,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id=f"test-{uuid.uuid4().hex[:12]}",
        excluded_queue_names=[],
    )
    return cls(**(defaults | options))


def fail_first(monkeypatch, owner, name: str, times: int, *, when=lambda *a, **k: True) -> list:
    """Make `owner.name` raise the lost-connection error on its first `times` matching calls."""
    real, calls = getattr(owner, name), []

    def flaky(*args, **kwargs):
        if when(*args, **kwargs) and len(calls) < times:
            calls.append(name)
            raise OperationalError(LOST)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, flaky)
    return calls


# -- a lost database -----------------------------------------------------------------------------------


def test_the_stock_worker_dies_when_the_database_is_lost(monkeypatch):
    """What the school's worker did; the test below is the same, with ours."""
    from django_tasks_db.management.commands.db_worker import Worker

    tasks.generate_towards_answer.enqueue(NO_SUCH_PROBLEM)
    fail_first(monkeypatch, DBTaskResultQuerySet, "get_locked", 1)
    with pytest.raises(OperationalError, match="server closed"):
        new_worker(Worker).run()


def test_the_worker_reconnects_after_losing_the_database_and_runs_the_queued_task(
    monkeypatch, quick_backoff, caplog
):
    result = tasks.generate_towards_answer.enqueue(NO_SUCH_PROBLEM)
    failed = fail_first(monkeypatch, DBTaskResultQuerySet, "get_locked", 3)
    dropped = []
    drop = worker_command._drop_connections
    monkeypatch.setattr(worker_command, "_drop_connections", lambda: dropped.append(1) or drop())
    with caplog.at_level(logging.WARNING, logger="tutor.worker"):
        run_worker_command()
    row = DBTaskResult.objects.get(pk=result.id)
    assert row.status == "SUCCESSFUL", (row.status, row.traceback)
    assert row.return_value == {"outcome": "not_needed"}
    assert len(failed) == 3 and len(dropped) >= 3  # each broken connection was closed, then retried
    lost = [r for r in caplog.records if "database lost while looking for a task" in r.message]
    assert len(lost) == 3 and all(r.levelname == "WARNING" for r in lost)


def test_a_result_is_stored_once_the_database_is_back_and_the_task_runs_once(
    monkeypatch, quick_backoff
):
    from tutor.services import live

    ran = []
    real_work = live.work_on_guided
    monkeypatch.setattr(live, "work_on_guided", lambda **kw: ran.append(kw) or real_work(**kw))
    result = tasks.generate_towards_answer.enqueue(NO_SUCH_PROBLEM)
    # Five failures: django-tasks-db's own retry (three tries) gives up, ours waits for the database.
    failed = fail_first(
        monkeypatch,
        DBTaskResult,
        "save",
        5,
        when=lambda self, *a, **kw: "return_value" in (kw.get("update_fields") or ()),
    )
    run_worker_command()
    row = DBTaskResult.objects.get(pk=result.id)
    assert (row.status, row.return_value) == ("SUCCESSFUL", {"outcome": "not_needed"})
    assert len(failed) == 5 and ran == [{"problem_id": NO_SUCH_PROBLEM}]


# -- task rows of dead workers ----------------------------------------------------------------------


def running_row(task, arg, *, claimed_by: list[str]) -> str:
    """A queued task as a worker that claimed it would have left it: RUNNING, with its worker ids."""
    task_id = task.enqueue(arg).id
    DBTaskResult.objects.filter(pk=task_id).update(
        status="RUNNING", worker_ids=claimed_by, started_at=timezone.now()
    )
    return task_id


def status_of(task_id: str) -> str:
    return DBTaskResult.objects.get(pk=task_id).status


def test_a_task_left_running_by_a_dead_worker_is_failed_when_a_worker_starts():
    live_id, dead_id = f"live-{uuid.uuid4().hex}", f"dead-{uuid.uuid4().hex}"
    assert workers.beat(worker_id=live_id)
    of_the_dead = running_row(tasks.generate_towards_answer, 1, claimed_by=[dead_id])
    of_the_live = running_row(tasks.generate_towards_answer, 2, claimed_by=[dead_id, live_id])
    run_worker_command()
    dead = DBTaskResult.objects.get(pk=of_the_dead)
    assert dead.status == "FAILED" and dead.finished_at is not None
    assert dead.exception_class_path == "tutor.services.workers.WorkerGone"
    assert dead_id in dead.traceback
    assert status_of(of_the_live) == "RUNNING"  # its worker still beats


@pytest.mark.parametrize(
    ("task_name", "claims", "settled"),
    [
        ("process_run", 1, "READY"),  # resumable (leases): queued again
        ("process_run", workers.MAX_CLAIMS - 1, "READY"),
        ("process_run", workers.MAX_CLAIMS, "FAILED"),  # its workers keep dying: it may be why
        ("generate_towards_answer", 1, "FAILED"),  # the next ask queues it again
    ],
)
def test_which_orphaned_tasks_are_queued_again_and_which_are_failed(task_name, claims, settled):
    me = f"me-{uuid.uuid4().hex}"
    dead = [f"dead-{uuid.uuid4().hex}" for _ in range(claims)]
    task_id = running_row(getattr(tasks, task_name), 7, claimed_by=dead)
    assert workers.beat(worker_id=me)
    report = workers.settle_orphaned_tasks(worker_id=me)
    assert status_of(task_id) == settled
    assert (report.requeued, report.failed) == ((1, 0) if settled == "READY" else (0, 1))


def test_nothing_is_settled_when_the_callers_own_heartbeat_is_not_kept():
    """A cache that keeps no heartbeats (its table missing, a cull) would make every worker look dead."""
    task_id = running_row(tasks.generate_towards_answer, 3, claimed_by=["someone"])
    assert workers.settle_orphaned_tasks(worker_id="never-beat") == workers.Settled()
    assert status_of(task_id) == "RUNNING"


def test_a_running_worker_settles_a_task_whose_worker_dies_later(monkeypatch):
    """The keeper thread: it beats while the worker waits or works, and sweeps every SETTLE_EVERY_S
    once its own beats have held for a lease."""
    monkeypatch.setattr(workers, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(workers, "LEASE_S", 1.0)
    monkeypatch.setattr(worker_command, "SETTLE_EVERY_S", 0.1)
    other = f"other-{uuid.uuid4().hex}"
    assert workers.beat(worker_id=other)
    task_id = running_row(tasks.generate_towards_answer, 4, claimed_by=[other])
    worker = new_worker(worker_command.PatientWorker, batch=False)

    def serve():
        try:
            worker.run()
        finally:
            connections.close_all()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        time.sleep(0.2)
        assert status_of(task_id) == "RUNNING"  # the other worker still beats (at start, it did)
        assert workers.live_workers([worker.worker_id]) == {worker.worker_id}
        # The other worker dies: its beat runs out; the running worker settles its task.
        deadline = time.monotonic() + 10
        while status_of(task_id) == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status_of(task_id) == "FAILED"
    finally:
        worker.running = False
        thread.join(10)
    assert not thread.is_alive()
    assert workers.live_workers([worker.worker_id]) == set()  # a clean stop forgets its beat
