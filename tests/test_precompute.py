"""Batch precompute in the site: runs, the status rules, claims and leases, cancel and resume, the task
path through a real `db_worker`, and a worker killed with SIGKILL in the middle of a run (slow).

The status rules run on a scripted stand-in engine (the tiny random model never writes a final answer);
the same path runs on the tiny real OpenVINO model, inline, through the task queue and across a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction

from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import FakeManifest
from tests.test_batch import ScriptedEngine, boxed
from tutor.models import PrecomputeRun, Problem, RunItem, Solution
from tutor.services import precompute, runtime

ROOT = Path(__file__).resolve().parent.parent


class CyclingEngine(ScriptedEngine):
    """The scripted engine of test_batch, its outputs repeating (retries ask again)."""

    def submit(self, prompt, params):
        question = next(q for q in self.script if q in prompt)
        n = self.asked.get(question, 0)
        outputs = self.script[question]
        self.script[question] = outputs + [outputs[n % len(outputs)]]
        return super().submit(prompt, params)


@pytest.fixture
def scripted(db, settings):
    def install(script, seconds=None):
        engine = CyclingEngine(script, seconds)
        runtime.use_engine(engine, FakeManifest())
        return engine

    settings.SUANJING_PRECOMPUTE_BATCH = 6
    yield install
    runtime.use_engine(None, None)


@pytest.fixture
def tiny_site(db, settings, tiny_model, tiny_engine_process):
    """The tiny model behind EngineProcess, as a precompute worker runs it by default."""
    settings.SUANJING_MODELS = str(tiny_model.path.parent)
    settings.SUANJING_MODEL = "tiny-qwen2"
    runtime.use_engine(tiny_engine_process, tiny_model.manifest)
    yield tiny_model
    runtime.use_engine(None, None)


def problem(text: str, reference: str = "", **fields) -> Problem:
    return Problem.objects.create(text=text, reference_answer=reference, **fields)


def inline(*args: str) -> PrecomputeRun:
    call_command("precompute", "--inline", *args)
    return PrecomputeRun.objects.latest("id")


def test_a_run_checks_every_answer_and_stores_it_with_its_status(scripted):
    scripted(
        {
            "Q-ref": [boxed("5"), boxed("6"), "no idea"],
            "Q-wrong": [boxed("7"), boxed("7"), boxed("7")],
            "Q-majority": [boxed("7"), boxed("7"), boxed("8")],
            "Q-split": [boxed("1"), boxed("2"), boxed("3")],
            "Q-nothing": ["thinking and thinking", "still thinking", "hmm"],
        }
    )
    ref, wrong, majority, split, nothing = (
        problem("Q-ref", "5"),
        problem("Q-wrong", "5"),
        problem("Q-majority"),
        problem("Q-split"),
        problem("Q-nothing"),
    )
    run = inline("--samples", "3")
    assert run.status == "done" and run.total == 5
    expected = {
        ref: ("verified", "5", True),
        wrong: ("unverified", "7", False),
        majority: ("verified", "7", None),
        split: ("unverified", "1", None),
        nothing: ("failed", None, None),
    }
    for p, (status, final, matches) in expected.items():
        s = p.solutions.get()
        assert (s.status, s.final, s.source) == (status, final, "batch"), p.text
        assert s.evidence.get("matches_reference") is matches
        assert s.evidence["k"] == 3 and len(s.evidence["samples"]) == 3
        assert (s.manifest_id, s.prompt_version) == ("scripted0000", "r1-distill/1")
    # an answer that contradicts the reference is evidence for a teacher, never served; nor a failed one
    assert wrong.solutions.get().differs_from_reference
    assert wrong.best_solution() is None
    assert nothing.best_solution() is None
    item = RunItem.objects.get(problem=nothing)
    assert item.status == "set_aside" and item.attempts == 3 and "no final answer" in item.error
    figures = precompute.run_figures(run)
    assert figures["results"] == {"verified": 2, "unverified": 2, "failed": 1}
    assert figures["finished"] == 5 and figures["new_tokens"] == run.new_tokens > 0
    # the next run (default selection: no servable answer) tries the failed problem and the one whose
    # only answer contradicts its reference again, only those
    again = inline("--samples", "3")
    assert sorted(again.items.values_list("problem__text", flat=True)) == ["Q-nothing", "Q-wrong"]
    with pytest.raises(CommandError, match="No problem matches"):
        inline("--samples", "3", "--ids", str(ref.pk))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["a", "b", "c"]),  # no servable answer (d is answered)
        (("--topic", "geometry"), ["b"]),
        (("--tag", "speed"), ["a", "c"]),
        (("--ids", "ID_C,ID_D"), ["c"]),
        (("--ids", "ID_C,ID_D", "--all"), ["c", "d"]),
        (("--all", "--limit", "2"), ["a", "b"]),
        (("--stale",), ["d"]),  # d's answer came from another manifest
    ],
)
def test_the_selection_picks_the_asked_problems(scripted, args, expected):
    scripted({})
    made = {
        "a": problem("a", tags=["speed"]),
        "b": problem("b", topic="geometry"),
        "c": problem("c", tags=["speed", "x"]),
        "d": problem("d"),
    }
    Solution.objects.create(
        problem=made["d"], final="1", status="unverified", source="batch", manifest_id="old"
    )
    args = tuple(
        a.replace("ID_C", str(made["c"].pk)).replace("ID_D", str(made["d"].pk)) for a in args
    )
    call_command("precompute", *args)
    run = PrecomputeRun.objects.get()
    assert sorted(run.items.values_list("problem__text", flat=True)) == expected
    assert run.status == "queued" and run.waiting_tasks == 1


def test_claims_are_exclusive_and_lost_claims_come_back(scripted, settings):
    from solver.batch import MAX_ATTEMPTS

    scripted({})
    for i in range(6):
        problem(f"p{i}")
    run = precompute.create_run(selection=precompute.Selection(), enqueue=False)
    first = precompute.claim_items(run_id=run.pk, worker_id="w1", limit=4)
    second = precompute.claim_items(run_id=run.pk, worker_id="w2", limit=4)
    assert len(first) == 4 and len(second) == 2
    assert not {i.pk for i in first} & {i.pk for i in second}
    assert precompute.claim_items(run_id=run.pk, worker_id="w3") == []
    # w1 dies: its claims are not renewed; within the lease nothing moves, after it they are pending
    assert precompute.requeue_expired(run_id=run.pk) == 0
    RunItem.objects.filter(claimed_by="w1").update(
        claimed_at=precompute._lease_cutoff() - __import__("datetime").timedelta(seconds=1)
    )
    RunItem.objects.filter(pk=first[0].pk).update(attempts=MAX_ATTEMPTS)
    assert precompute.requeue_expired(run_id=run.pk) == 4
    states = dict(run.items.values_list("pk", "status"))
    assert states[first[0].pk] == "set_aside"
    assert [states[i.pk] for i in first[1:]] == ["pending"] * 3


def test_a_run_is_claimed_longest_problem_first(scripted):
    """Workers claim items in id order; a run's items are made longest problem first (UTF-8 bytes: a
    Chinese character counts about as one token), so the continuous batch starts with the long ones."""
    scripted({})
    texts = [
        "short",
        "a much longer problem text than the others",
        "medium text",
        "鸡兔同笼，共有35个头",
    ]
    for text in texts:
        problem(text)
    run = precompute.create_run(selection=precompute.Selection(), enqueue=False)
    claimed = precompute.claim_items(run_id=run.pk, worker_id="w1", limit=2)
    claimed += precompute.claim_items(run_id=run.pk, worker_id="w2", limit=2)
    assert [item.problem.text for item in claimed] == [
        "a much longer problem text than the others",
        "鸡兔同笼，共有35个头",
        "medium text",
        "short",
    ]


def test_an_item_stores_its_answer_at_most_once(scripted):
    from solver.batch import CheckedAnswer

    scripted({})
    p = problem("Q", "5")
    run = precompute.create_run(selection=precompute.Selection(), enqueue=False)
    (item,) = precompute.claim_items(run_id=run.pk, worker_id="w1")
    checked = CheckedAnswer(str(item.pk), "verified", "5", 1.0, [], "r", "\\boxed{5}", "5", 10, 0.5)
    kwargs = {"checked": checked, "manifest": FakeManifest(), "prompt_version": "v"}
    assert precompute.store_run_item(item_id=item.pk, retry_failed=True, **kwargs) == "stored"
    # a second worker that also finished it (its lease had expired) writes nothing
    assert precompute.store_run_item(item_id=item.pk, retry_failed=True, **kwargs) == "duplicate"
    assert p.solutions.count() == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        Solution.objects.create(problem=p, status="verified", source="batch", run_item=item)


@pytest.mark.django_db(transaction=True)
def test_cancelling_stops_a_run_within_seconds_and_resume_finishes_it(scripted, settings):
    settings.SUANJING_PRECOMPUTE_BATCH = 2
    script = {f"Q{i}": [boxed(str(i))] for i in range(16)}
    scripted(script, seconds={q: 0.4 for q in script})
    for q in script:
        problem(q)
    run = precompute.create_run(selection=precompute.Selection(), enqueue=False, greedy=True)
    worker = threading.Thread(target=lambda: precompute.work_on_run(run_id=run.pk, fan_out=False))
    worker.start()
    deadline = time.monotonic() + 20
    while not run.items.filter(status="done").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    precompute.cancel_run(run=run)
    worker.join(10)
    assert not worker.is_alive() and time.monotonic() - started < 5
    run.refresh_from_db()
    done_before = set(run.items.filter(status="done").values_list("pk", flat=True))
    assert run.status == "cancelled" and 0 < len(done_before) < 16
    assert not run.items.filter(status__in=("pending", "running")).exists()
    # resume: the rest is done, nothing twice
    assert precompute.resume_run(run=run, enqueue=False) == 16 - len(done_before)
    precompute.work_on_run(run_id=run.pk, fan_out=False)
    run.refresh_from_db()
    assert run.status == "done" and run.items.filter(status="done").count() == 16
    assert Solution.objects.count() == 16
    assert all(Problem.objects.get(text=q).solutions.count() == 1 for q in script)


def test_inline_on_the_tiny_model_stores_failed_answers_that_are_never_served(tiny_site):
    for i in range(3):
        problem(f"How many legs do {i} rabbits have?", str(4 * i))
    run = inline("--greedy", "--max-new-tokens", "12")
    assert run.status == "done" and run.new_tokens > 0 and run.cpu_s > 0
    for s in Solution.objects.all():
        assert s.status == "failed" and s.final is None and s.evidence["why"]
        assert s.manifest_id == tiny_site.manifest.manifest_id and 0 < s.new_tokens <= 12
    assert RunItem.objects.filter(status="done", attempts=1).count() == 3  # greedy: no retries
    assert all(p.best_solution() is None for p in Problem.objects.all())


@pytest.mark.django_db(transaction=True)
def test_a_queued_run_is_done_by_a_db_worker(tiny_site):
    for i in range(4):
        problem(f"What is {i} plus {i}?")
    call_command("precompute", "--greedy", "--max-new-tokens", "8")
    run = PrecomputeRun.objects.get()
    assert run.status == "queued" and run.items.filter(status="pending").count() == 4
    call_command("db_worker", "--batch", "--no-reload", "--no-startup-delay", verbosity=0)
    run.refresh_from_db()
    assert run.status == "done" and Solution.objects.count() == 4
    assert run.items.filter(status="done").count() == 4


# -- a worker killed with SIGKILL in the middle of a run ------------------------------------------


def _manage(env: dict, *args: str, **kwargs):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def _state(env: dict) -> dict:
    """The run as the workers left it, read straight from the SQLite file (no Django in the way)."""
    import sqlite3

    db = sqlite3.connect(Path(env["SUANJING_VAR"]) / "suanjing.sqlite3", timeout=30)
    try:
        (run,) = db.execute("SELECT status FROM tutor_precomputerun").fetchone()
        items = dict(db.execute("SELECT status, count(*) FROM tutor_runitem GROUP BY status"))
        (solutions,) = db.execute("SELECT count(*) FROM tutor_solution").fetchone()
        per_item = [
            n
            for (n,) in db.execute(
                "SELECT count(*) FROM tutor_solution WHERE run_item_id IS NOT NULL GROUP BY run_item_id"
            )
        ]
    finally:
        db.close()
    return {"run": run, "items": items, "solutions": solutions, "per_item": per_item}


def _running_tasks(env: dict) -> int:
    import sqlite3

    db = sqlite3.connect(Path(env["SUANJING_VAR"]) / "suanjing.sqlite3", timeout=30)
    try:
        return db.execute(
            "SELECT count(*) FROM django_tasks_database_dbtaskresult WHERE status = 'RUNNING'"
        ).fetchone()[0]
    finally:
        db.close()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["db_worker", "worker"])
def test_a_run_survives_a_worker_killed_with_sigkill(tmp_path, tiny_model, command):
    """Both the stock db_worker and ours finish the run; ours also settles a task row the killed
    worker left RUNNING (the stock one leaves it RUNNING for ever; tests/test_worker.py settles one
    that is certainly there)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tutor.settings",
        "DEBUG": "True",
        "SECRET_KEY": "crash-test",
        "SUANJING_VAR": str(tmp_path),
        "SUANJING_MODELS": str(tiny_model.path.parent),
        "SUANJING_MODEL": "tiny-qwen2",
        "SUANJING_THREADS": "1",
        "SUANJING_PRECOMPUTE_LEASE_S": "3",
        "SUANJING_PRECOMPUTE_BATCH": "2",
        "SUANJING_WORKER_LEASE_S": "6",  # ours: a killed worker is taken for dead after 6 s
        "LOG_LEVEL": "WARNING",
    }
    assert _manage(env, "migrate", "-v0").returncode == 0
    assert _manage(env, "createcachetable").returncode == 0  # the workers' heartbeats
    texts = "\n".join(f'{{"id": "crash-{i}", "text": "Count to {i} slowly."}}' for i in range(12))
    (tmp_path / "problems.jsonl").write_text(texts + "\n")
    assert _manage(env, "load_bank", str(tmp_path / "problems.jsonl")).returncode == 0
    queued = _manage(env, "precompute", "--greedy", "--max-new-tokens", "300")
    assert queued.returncode == 0, queued.stderr
    worker_args = [sys.executable, "manage.py", command, "--no-reload", "--interval", "0.2"]
    first = subprocess.Popen(
        worker_args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if _state(env)["items"].get("done", 0) >= 3:
                break
            time.sleep(0.3)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    killed_at = _state(env)
    assert 3 <= killed_at["items"].get("done", 0) < 12, killed_at
    second = subprocess.Popen(
        worker_args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            state = _state(env)
            if state["run"] == "done" and (command == "db_worker" or _running_tasks(env) == 0):
                break
            time.sleep(0.5)
    finally:
        second.terminate()
        try:
            second.wait(20)
        except subprocess.TimeoutExpired:
            second.kill()
    assert state["run"] == "done", state
    assert state["items"] == {"done": 12}
    assert state["solutions"] == 12 and set(state["per_item"]) == {1}
    if command == "worker":
        # The killed worker's task row (when the kill found one running: it may fall between two
        # tasks) was settled: nothing is stuck. The stock worker leaves such a row RUNNING for ever.
        assert _running_tasks(env) == 0
