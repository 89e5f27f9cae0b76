"""Imports that do not stop the school (issue 13, finding 2): a 20,000-problem answer pack imported while
students ask. The import plans outside any transaction, stages in batches of a few hundred rows and
switches on in one short transaction (tutor/services/packs.py); an ask that meets the write lock waits
(SQLite's busy timeout, then services.asking's retries), so every ask gets its answer.

Runs on SQLite, and on PostgreSQL with DATABASE_URL (test.sh); prints the import's duration."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.db import connection
from django.test import Client

from solver import packs
from tests.site_fixtures import *  # noqa: F403
from tutor.models import BankChange, Problem, Question, Solution
from tutor.services.packs import STAGED, import_pack

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

N = 20_000
ASKS = 24


def build_pack(path, n: int = N) -> str:
    with packs.PackWriter(path, site="Lab School") as writer, writer.transaction():
        writer.add_manifest(packs.PackManifest("lab-pc", {"name": "deepseek-r1-distill-qwen-1.5b"}))
        for i in range(n):
            a, b = i // 100 + 2, i % 100 + 3
            writer.add_problem(
                packs.PackProblem(
                    f"lab-{i}", f"What is {a} times {b}? ({i})", str(a * b), "en", "arithmetic"
                )
            )
            writer.add_solution(
                packs.PackSolution(
                    id=f"s-lab-{i}",
                    problem_id=f"lab-{i}",
                    manifest_id="lab-pc",
                    prompt_version="r1-distill/1",
                    status="approved" if i % 2 else "unverified",
                    final=str(a * b),
                    reasoning="",
                    answer_text=f"{a} * {b} = \\boxed{{{a * b}}}",
                    evidence={"samples": [], "k": 1, "agreement": 1.0, "reference": str(a * b)},
                    new_tokens=20,
                    elapsed_s=0.5,
                    created=packs.now_iso(),
                )
            )
    return str(path)


def test_a_20000_problem_import_while_students_ask(tmp_path, site, cast, make_problem, settings):
    settings.SUANJING_ASKS_PER_MINUTE = 1000
    # force_login has no client address: django-axes records "unknown", which PostgreSQL's inet refuses.
    settings.AXES_ENABLED = False
    banked = make_problem("What is 7 squared?", lang="en", solutions=(("approved", "49"),))
    path = build_pack(tmp_path / "big.sqlite")
    outcome: dict = {}

    def run_import():
        started = time.monotonic()
        try:
            outcome["report"] = import_pack(path=path)
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc
        finally:
            outcome["seconds"] = time.monotonic() - started
            connection.close()

    clients = [Client(), Client()]
    clients[0].force_login(cast.alice)
    clients[1].force_login(cast.bob)
    importer = threading.Thread(target=run_import)
    importer.start()
    statuses, during, slowest = [], 0, 0.0
    for i in range(ASKS * 50):
        started = time.monotonic()
        response = clients[i % 2].post(
            "/api/ask",
            data=json.dumps({"question": "What is 7 squared?"}),
            content_type="application/json",
        )
        slowest = max(slowest, time.monotonic() - started)
        statuses.append(response.status_code)
        assert response.status_code == 200, response.content[:300]
        assert response.json()["answer"]["final"] == "49"
        during += importer.is_alive()
        if not importer.is_alive() and len(statuses) >= ASKS:
            break
        time.sleep(0.05)
    importer.join(600)
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    print(
        f"\n{connection.vendor}: imported {N} problems + {N} answers in {outcome['seconds']:.1f} s "
        f"while {len(statuses)} asks ran ({during} during the import, slowest {slowest:.2f} s)"
    )
    assert during >= 20, f"only {during} asks ran during the import"
    assert set(statuses) == {200}
    # Complete: every problem and answer, visible, announced to every cache, nothing left staged.
    assert (report.problems_created, report.solutions_created) == (N, N)
    assert Problem.objects.in_bank().filter(origin="import").count() == N
    assert not Problem.objects.filter(source=STAGED).exists()
    assert Solution.objects.filter(source="import").count() == N
    assert not Solution.objects.filter(source="import", status="approved").exists()
    assert Solution.objects.filter(source="import", status="verified").count() == N // 2
    assert BankChange.objects.filter(kind="put").exclude(problem_id=banked.pk).count() >= N
    assert Question.objects.filter(outcome="hit").count() == len(statuses)


def test_a_failed_import_leaves_nothing(tmp_path, site, cast, monkeypatch):
    """All or nothing: a failure at the switch deletes the staged batches."""
    from tutor.services import packs as service

    path = build_pack(tmp_path / "small.sqlite", n=1200)  # three batches

    def broken(plan, report):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(service, "_switch", broken)
    with pytest.raises(RuntimeError):
        import_pack(path=path)
    assert not Problem.objects.exists() and not Solution.objects.exists()
    assert not BankChange.objects.exists()
    monkeypatch.undo()
    report = import_pack(path=path)
    assert report.problems_created == 1200 and Problem.objects.in_bank().count() == 1200


def test_staged_problems_are_hidden_until_the_switch(tmp_path, site, cast, monkeypatch):
    from tutor.services import packs as service

    path = build_pack(tmp_path / "small.sqlite", n=600)
    seen = {}
    switch = service._switch

    def look_then_switch(plan, report):
        seen["bank"] = Problem.objects.in_bank().count()
        seen["students"] = Problem.objects.from_students().count()
        seen["staged"] = Problem.objects.filter(source=STAGED).count()
        seen["puts"] = BankChange.objects.count()
        switch(plan, report)

    monkeypatch.setattr(service, "_switch", look_then_switch)
    import_pack(path=path)
    assert seen == {"bank": 0, "students": 0, "staged": 600, "puts": 0}
    assert Problem.objects.in_bank().count() == 600 and BankChange.objects.count() == 600


# -- the background worker survives a locked database -------------------------------------------------


@pytest.fixture
def impatient_sqlite():
    """Every new connection of this process gives up on a lock after 100 ms (the site waits 10 s)."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write lock")
    options = connection.settings_dict["OPTIONS"]
    before = options["init_command"]
    options["init_command"] = before.replace("busy_timeout=10000", "busy_timeout=100")
    connection.close()
    yield
    options["init_command"] = before
    connection.close()


def hold_write_lock(seconds: float) -> threading.Thread:
    import sqlite3

    held = threading.Event()

    def hold():
        other = sqlite3.connect(connection.settings_dict["NAME"], timeout=30)
        other.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        other.rollback()
        other.close()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    return thread


def worker(cls):
    return cls(
        queue_names=["default"],
        interval=0.1,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id="test-worker",
        excluded_queue_names=[],
    )


def test_the_stock_db_worker_dies_on_a_locked_database_and_ours_carries_on(impatient_sqlite):
    from django.db import OperationalError
    from django_tasks_db.management.commands.db_worker import Worker

    from tutor.management.commands.worker import PatientWorker

    holder = hold_write_lock(3.0)
    with pytest.raises(OperationalError, match="locked"):
        worker(Worker).run()  # what killed the school's worker during an import
    started = time.monotonic()
    worker(PatientWorker).run()  # waits the lock out, then (batch mode, no task) ends
    holder.join()
    assert time.monotonic() - started >= 1.0


def test_the_worker_command_runs_a_task_under_a_lock(impatient_sqlite, cast):
    """A real task queued, the database locked while the worker claims and stores it: done, once."""
    from django.core.management import call_command
    from django_tasks_db.models import DBTaskResult

    from tutor.services import runtime

    runtime.enqueue("generate_towards_answer", 999_999)  # no such problem: the task ends at once
    holder = hold_write_lock(2.0)
    call_command("worker", "--batch", "--no-startup-delay", "--interval", "0.1")
    holder.join()
    result = DBTaskResult.objects.get()
    assert result.status == "SUCCESSFUL", (result.status, result.exception_class_path)
