"""Issue 10: a worked solution generated *towards* the answer key, and a retry that tells the model which
answer a teacher rejected.

A student served a problem's reference answer as the answer key queues one background task (django-tasks,
run here by a real `db_worker --batch`); its result is checked with solver.answers before it is stored as
verified, else stored as failed for teachers. The scripted engine checks the prompts and the storage
rules; the real tiny OpenVINO model runs the same task end to end.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import FakeManifest, ScriptedEngine
from tutor.models import Problem, Solution
from tutor.services import bank, live, runtime

pytestmark = pytest.mark.django_db(transaction=True)

CHICKENS = "鸡兔同笼，共有35个头，94只脚，问兔有多少只？"
STEPS = ["<think>\n", "rabbits = (94-70)/2 = 12", "</think>\n\n", "So there are ", "\\boxed{12}"]
GUIDED_TASK = "tutor.tasks.generate_towards_answer"


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def ask(client: Client, text: str) -> dict:
    response = client.post(
        "/api/ask", data=json.dumps({"question": text}), content_type="application/json"
    )
    assert response.status_code in (200, 202), response.content[:300]
    return response.json()


def finish(client: Client, question_id: int) -> dict:
    body = b"".join(client.get(f"/api/questions/{question_id}/stream").streaming_content).decode()
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")][-1]


def queued() -> int:
    return DBTaskResult.objects.filter(task_path=GUIDED_TASK).count()


def run_worker() -> None:
    call_command("db_worker", "--batch", "--no-reload", "--no-startup-delay", verbosity=0)


# -- 1. a worked solution towards the answer key ------------------------------------------------------


def test_the_answer_key_queues_one_worked_solution_and_the_next_student_gets_it(
    site, cast, make_problem
):
    problem = make_problem(CHICKENS, reference="12")
    engine = ScriptedEngine(STEPS)
    runtime.use_engine(engine, FakeManifest())
    alice, bob = client_for(cast.alice), client_for(cast.bob)
    first = ask(alice, CHICKENS)
    assert first["answer"]["status"] == "answer_key" and first["answer"]["final"] == "12"
    assert engine.prompts == []  # nothing generated on the request path
    ask(bob, CHICKENS)
    ask(alice, CHICKENS)
    assert queued() == 1  # once per problem, not once per ask
    run_worker()
    # The model was given the problem and its known answer, and asked for the steps.
    assert len(engine.prompts) == 1
    assert CHICKENS in engine.prompts[0] and "The correct final answer is: 12" in engine.prompts[0]
    solution = problem.solutions.get()
    assert (solution.status, solution.source, solution.final) == ("verified", "guided", "12")
    assert solution.evidence["guided"] == "generated towards the reference answer"
    assert solution.evidence["matches_reference"] is True
    assert solution.prompt_version == "r1-distill/1+towards-answer"
    # The next student asking gets the worked solution, labelled as checked against the answer key.
    again = ask(bob, CHICKENS)
    assert again["answer"]["status"] == "verified" and again["answer"]["solution_id"] == solution.pk
    page = bob.get(f"/questions/{again['id']}").content.decode()
    assert "matches the answer key" in page and "Hint 提示" in page  # two steps: hints first
    bob.post(f"/questions/{again['id']}/steps", {"step": "whole"})
    page = bob.get(f"/questions/{again['id']}").content.decode()
    assert "rabbits = (94-70)/2 = 12" in page and "matches the answer key" in page
    # The first student's question shows it too (its answer key was a stand-in).
    assert ask(alice, CHICKENS)["answer"]["status"] == "verified"
    assert queued() == 1


def test_a_worked_solution_that_misses_the_answer_key_is_kept_for_teachers_never_served(
    site, cast, make_problem
):
    problem = make_problem(CHICKENS, reference="15")
    runtime.use_engine(ScriptedEngine(STEPS), FakeManifest())  # the model still writes 12
    alice = client_for(cast.alice)
    ask(alice, CHICKENS)
    run_worker()
    failed = problem.solutions.get()
    assert (failed.status, failed.source, failed.contradicts_reference) == (
        "failed",
        "guided",
        True,
    )
    assert failed.evidence["matches_reference"] is False
    assert "'12' is not the reference answer" in failed.evidence["why"]
    data = ask(alice, CHICKENS)
    assert data["answer"]["status"] == "answer_key" and data["answer"]["final"] == "15"
    assert "rabbits = (94-70)/2" not in alice.get(f"/questions/{data['id']}").content.decode()
    assert queued() == 1  # tried within the hour: not queued again
    teacher_page = client_for(cast.teacher).get(f"/bank/{problem.pk}").content.decode()
    assert "worked towards the reference answer" in teacher_page
    assert "never shown to students" in teacher_page
    # An hour later the next ask tries again.
    Problem.objects.filter(pk=problem.pk).update(guided_at=timezone.now() - dt.timedelta(hours=2))
    ask(alice, CHICKENS)
    assert queued() == 2


@pytest.mark.parametrize(
    ("pieces", "finish_reason", "why"),
    [
        (["<think>\n", "still thinking"], "length", "truncated inside the reasoning"),
        (["<think>\nhmm</think>", "I am not sure."], "stop", "no final answer"),
        (["<think>\n", "15. 15. 15."], "loop", "the model repeated itself"),
    ],
)
def test_a_worked_solution_without_a_final_answer_is_stored_failed(
    site, cast, make_problem, pieces, finish_reason, why
):
    problem = make_problem(CHICKENS, reference="12")
    runtime.use_engine(ScriptedEngine(pieces, finish_reason=finish_reason), FakeManifest())
    ask(client_for(cast.alice), CHICKENS)
    run_worker()
    failed = problem.solutions.get()
    assert failed.status == "failed" and failed.evidence["why"].startswith(why)
    assert problem.best_solution() is None


def test_no_worked_solution_is_queued_when_one_is_servable_or_there_is_no_answer_key(
    site, cast, make_problem
):
    make_problem(CHICKENS, reference="12", solutions=(("approved", "12"),))
    make_problem("What is 2 + 2?", lang="en", solutions=(("rejected", "5"),))
    runtime.use_engine(ScriptedEngine(STEPS), FakeManifest())
    alice = client_for(cast.alice)
    assert ask(alice, CHICKENS)["answer"]["status"] == "approved"
    finish(alice, ask(alice, "What is 2 + 2?")["id"])  # no reference: a live generation instead
    assert queued() == 0


def test_a_queued_worked_solution_is_skipped_when_a_teacher_answered_meanwhile(
    site, cast, make_problem
):
    problem = make_problem(CHICKENS, reference="12")
    engine = ScriptedEngine(STEPS)
    runtime.use_engine(engine, FakeManifest())
    ask(client_for(cast.alice), CHICKENS)
    bank.add_teacher_solution(problem=problem, author=cast.teacher, text="答案是 \\boxed{12}")
    run_worker()
    assert engine.prompts == [] and problem.solutions.count() == 1
    assert DBTaskResult.objects.get().return_value == {"outcome": "not_needed"}


def test_without_a_model_the_task_ends_calmly_and_the_answer_key_stays(site, cast, make_problem):
    problem = make_problem(CHICKENS, reference="12")  # the site fixture has no model prepared
    ask(client_for(cast.alice), CHICKENS)
    run_worker()
    assert DBTaskResult.objects.get().return_value == {"outcome": "no_model"}
    assert problem.solutions.count() == 0


def test_a_worked_solution_on_the_real_tiny_model_is_checked_before_it_is_stored(
    site, cast, make_problem, any_tiny_engine, tiny_model, settings
):
    """The random tiny model cannot reach the answer key in 12 tokens: stored failed, never served."""
    settings.SUANJING_MAX_NEW_TOKENS = 12
    runtime.use_engine(any_tiny_engine, tiny_model.manifest)
    problem = make_problem(CHICKENS, reference="12")
    alice = client_for(cast.alice)
    ask(alice, CHICKENS)
    run_worker()
    solution = problem.solutions.get()
    assert (solution.status, solution.source) == ("failed", "guided")
    assert 0 < solution.new_tokens <= 12 and solution.model_name == "tiny-qwen2"
    assert solution.manifest_id == tiny_model.manifest.manifest_id
    assert ask(alice, CHICKENS)["answer"]["status"] == "answer_key"


# -- 2. a retry after a rejection tells the model -----------------------------------------------------


def test_the_generation_after_a_rejection_is_told_the_rejected_answer(site, cast, make_problem):
    problem = make_problem("What is 7 times 8?", lang="en")
    engine = ScriptedEngine(["<think>\n7*8</think>\n\n", "\\boxed{54}"])
    runtime.use_engine(engine, FakeManifest())
    alice, bob = client_for(cast.alice), client_for(cast.bob)
    assert finish(alice, ask(alice, problem.text)["id"])["status"] == "answered"
    assert "marked wrong" not in engine.prompts[0]
    wrong = Solution.objects.get()
    client_for(cast.teacher).post(f"/solutions/{wrong.pk}/review", {"status": "rejected"})
    wrong.refresh_from_db()
    assert wrong.status == "rejected"
    engine.pieces = ["<think>\n7*8=56</think>\n\n", "\\boxed{56}"]
    assert finish(bob, ask(bob, problem.text)["id"])["status"] == "answered"
    retry = engine.prompts[1]
    assert "A previous answer, 54, was marked wrong by a teacher" in retry
    assert problem.text in retry and engine.params[1].seed is not None
    latest = Solution.objects.latest("id")
    assert latest.status == "unverified" and latest.evidence["retry_after_rejected"] == "54"


def test_a_rejected_answer_with_no_final_still_tells_the_model_it_was_wrong(
    site, cast, make_problem
):
    problem = make_problem("What is 7 times 8?", lang="en")
    Solution.objects.create(
        problem=problem, answer="no idea", final=None, status="rejected", source="live"
    )
    engine = ScriptedEngine(["<think>\n7*8=56</think>\n\n", "\\boxed{56}"])
    runtime.use_engine(engine, FakeManifest())
    alice = client_for(cast.alice)
    finish(alice, ask(alice, problem.text)["id"])
    assert "A previous answer was marked wrong by a teacher" in engine.prompts[0]


# -- 3. a cap on attempts that keep missing, and students told what is coming -------------------------


def an_hour_later(problem: Problem) -> None:
    Problem.objects.filter(pk=problem.pk).update(guided_at=timezone.now() - dt.timedelta(hours=2))


def test_after_three_missed_attempts_the_model_stops_and_the_teacher_is_told(
    site, cast, make_problem
):
    problem = make_problem(CHICKENS, reference="15")
    engine = ScriptedEngine(STEPS)  # the model writes 12, every time
    runtime.use_engine(engine, FakeManifest())
    alice, teacher = client_for(cast.alice), client_for(cast.teacher)
    for attempt in range(1, live.GUIDED_MAX_FAILED + 1):
        ask(alice, CHICKENS)
        run_worker()
        assert problem.solutions.filter(source="guided", status="failed").count() == attempt
        an_hour_later(problem)
        page = teacher.get(f"/bank/{problem.pk}").content.decode()
        assert ('id="guided-given-up"' in page) == (attempt == live.GUIDED_MAX_FAILED)
    # Given up: asking again queues nothing; students still get the answer key.
    data = ask(alice, CHICKENS)
    assert data["answer"]["status"] == "answer_key" and queued() == live.GUIDED_MAX_FAILED
    assert len(engine.prompts) == live.GUIDED_MAX_FAILED
    page = teacher.get(f"/bank/{problem.pk}").content.decode()
    assert "missed it every time, so it will not try again" in page and "不再重试" in page
    # The bank's to-do filter finds it; once a teacher writes the steps, it leaves the list.
    assert f'href="/bank/{problem.pk}"' in teacher.get("/bank?status=given_up").content.decode()
    bank.add_teacher_solution(problem=problem, author=cast.teacher, text="兔 \\boxed{15}")
    assert f'href="/bank/{problem.pk}"' not in teacher.get("/bank?status=given_up").content.decode()


def test_correcting_the_reference_answer_lets_the_model_try_again(site, cast, make_problem):
    problem = make_problem(CHICKENS, reference="15")
    runtime.use_engine(ScriptedEngine(STEPS), FakeManifest())
    alice = client_for(cast.alice)
    for _ in range(live.GUIDED_MAX_FAILED):
        ask(alice, CHICKENS)
        run_worker()
        an_hour_later(problem)
    assert live.is_guided_given_up(problem=problem)
    problem.reference_answer = "12"  # 15 was the chickens' count, not the rabbits'
    problem.save()
    assert live.guided_failures(problem=problem) == 0  # attempts towards 15 do not count for 12
    ask(alice, CHICKENS)
    run_worker()
    assert ask(alice, CHICKENS)["answer"]["status"] == "verified"


@pytest.mark.parametrize(
    ("finish_reason", "counts"),
    [("length", True), ("loop", True), ("stop", True), ("error", False), ("cancelled", False)],
)
def test_only_attempts_the_model_finished_count_towards_the_cap(
    site, make_problem, finish_reason, counts
):
    problem = make_problem(CHICKENS, reference="15")
    Solution.objects.create(
        problem=problem,
        status="failed",
        source="guided",
        evidence={"reference": "15", "finish_reason": finish_reason},
    )
    assert live.guided_failures(problem=problem) == int(counts)


def test_a_task_still_waiting_for_a_worker_is_not_queued_twice(site, cast, make_problem):
    problem = make_problem(CHICKENS, reference="12")
    alice = client_for(cast.alice)
    ask(alice, CHICKENS)
    an_hour_later(problem)  # no worker took it within the hour
    ask(alice, CHICKENS)
    assert queued() == 1


def test_students_shown_the_answer_key_are_told_a_worked_solution_is_on_its_way(
    site, cast, make_problem
):
    problem = make_problem(CHICKENS, reference="15")
    runtime.use_engine(ScriptedEngine(STEPS), FakeManifest())  # it will miss: 12
    alice, teacher = client_for(cast.alice), client_for(cast.teacher)
    data = ask(alice, CHICKENS)
    page = alice.get(f"/questions/{data['id']}").content.decode()
    assert "A worked solution is on its way" in page and "解题过程正在生成" in page
    assert "being written" in teacher.get(f"/bank/{problem.pk}").content.decode()
    run_worker()  # it missed: nothing is on its way any more, and the page does not say so
    page = alice.get(f"/questions/{data['id']}").content.decode()
    assert "Answer key" in page and "on its way" not in page
    assert "being written" not in teacher.get(f"/bank/{problem.pk}").content.decode()
