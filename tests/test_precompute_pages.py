"""The run pages: admins only, start a run, live progress JSON, cancel and resume, and the labels a
reference mismatch gets on the teacher's page and the student's answer."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import FakeManifest
from tutor.models import PrecomputeRun, Problem, Question, Solution
from tutor.services import asking, precompute, runtime


@pytest.fixture
def engine_info(db):
    runtime.use_engine(object(), FakeManifest())  # current_model() reads the manifest only
    yield
    runtime.use_engine(None, None)


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.parametrize("who", ["teacher", "alice"])
@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/runs"),
        ("post", "/runs"),
        ("get", "/runs/RUN"),
        ("get", "/runs/RUN/progress"),
        ("post", "/runs/RUN/cancel"),
        ("post", "/runs/RUN/resume"),
    ],
)
def test_only_admins_reach_the_run_pages(cast, engine_info, who, method, url):
    Problem.objects.create(text="1+1=?")
    run = precompute.create_run(selection=precompute.Selection(), enqueue=False)
    response = getattr(client_for(getattr(cast, who)), method)(url.replace("RUN", str(run.pk)))
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == "queued"
    anonymous = getattr(Client(), method)(url.replace("RUN", str(run.pk)))
    assert anonymous.status_code == 302 and "/accounts/login" in anonymous["Location"]


def test_an_admin_starts_watches_cancels_and_resumes_a_run(cast, engine_info):
    for text in ("1+1=?", "2+2=?", "3+3=?"):
        Problem.objects.create(text=text, topic="sums")
    Problem.objects.create(text="other", topic="geometry")
    admin = client_for(cast.admin)
    assert admin.get("/runs").status_code == 200
    bad = admin.post(
        "/runs", {"which": "unanswered", "samples": 2, "greedy": "on", "topic": "sums"}
    )
    assert bad.status_code == 400 and PrecomputeRun.objects.count() == 0
    started = admin.post("/runs", {"which": "unanswered", "samples": 1, "topic": "sums"})
    run = PrecomputeRun.objects.get()
    assert started.status_code == 302 and started["Location"] == f"/runs/{run.pk}"
    assert run.total == 3 and run.created_by == cast.admin and run.waiting_tasks == 1
    page = admin.get(f"/runs/{run.pk}")
    assert page.status_code == 200 and b"run-bar" in page.content
    # progress is polled by a static script (no inline script: the Content-Security-Policy), from a
    # relative URL the page gives it
    assert b"<script>" not in page.content and b"tutor/run.js" in page.content
    assert f'data-progress="/runs/{run.pk}/progress"'.encode() in page.content
    figures = admin.get(f"/runs/{run.pk}/progress").json()
    assert figures["status"] == "queued" and figures["items"]["pending"] == 3
    assert figures["results"] == {"verified": 0, "unverified": 0, "failed": 0}
    assert admin.post(f"/runs/{run.pk}/cancel").status_code == 302
    assert admin.get(f"/runs/{run.pk}/progress").json()["status"] == "cancelled"
    assert admin.post(f"/runs/{run.pk}/resume").status_code == 302
    figures = admin.get(f"/runs/{run.pk}/progress").json()
    assert figures["status"] == "queued" and figures["items"]["pending"] == 3
    assert f"#{run.pk}".encode() in admin.get("/runs").content
    nothing = admin.post("/runs", {"which": "unanswered", "samples": 1, "topic": "none-such"})
    assert nothing.status_code == 400 and b"No problem matches" in nothing.content


def test_a_reference_mismatch_is_labelled_for_teachers_and_students(cast, exact_cache):
    runtime.use_cache(exact_cache)
    try:
        problem = Problem.objects.create(text="鸡兔同笼，兔有几只？", reference_answer="12")
        runtime.put_problem(problem.pk, problem.text)
        solution = Solution.objects.create(
            problem=problem,
            final="13",
            answer="\\boxed{13}",
            status="unverified",
            source="batch",
            evidence={"reference": "12", "matches_reference": False},
        )
        page = client_for(cast.teacher).get(f"/bank/{problem.pk}")
        assert b"status-mismatch" in page.content
        # the student is never served the answer that contradicts the reference: the answer key instead
        question = asking.answer_question(user=cast.alice, text=problem.text)
        assert question.outcome == Question.Outcome.HIT and question.solution is None
        assert solution.pk not in [s.pk for s in problem.solutions.servable()]
        answer = client_for(cast.alice).get(f"/questions/{question.pk}")
        assert "答案".encode() in answer.content
        assert question.to_dict()["answer"]["status"] == "answer_key"
    finally:
        runtime.use_cache(None)


def test_a_teacher_generates_an_answer_for_one_problem_now(cast, engine_info):
    Problem.objects.create(text="2+2=?")
    problem = Problem.objects.create(text="1+1=?", reference_answer="2")
    teacher = client_for(cast.teacher)
    page = teacher.get(f"/bank/{problem.pk}").content.decode()
    assert 'id="generate"' in page and "Generate an answer now" in page
    response = teacher.post(f"/bank/{problem.pk}/generate", follow=True)
    assert response.status_code == 200
    assert "A new answer is being generated" in response.content.decode()
    run = PrecomputeRun.objects.get()
    assert run.total == 1 and list(run.items.values_list("problem_id", flat=True)) == [problem.pk]
    assert run.created_by == cast.teacher and run.status == "queued"
    # Again, with an answer already there: "all", so another one is generated.
    Solution.objects.create(problem=problem, answer="2", final="2", status="verified")
    assert "Generate another answer" in teacher.get(f"/bank/{problem.pk}").content.decode()
    teacher.post(f"/bank/{problem.pk}/generate")
    assert PrecomputeRun.objects.count() == 2


def test_students_cannot_generate_and_a_get_is_refused(cast, engine_info):
    problem = Problem.objects.create(text="1+1=?")
    assert client_for(cast.alice).post(f"/bank/{problem.pk}/generate").status_code == 403
    assert client_for(cast.teacher).get(f"/bank/{problem.pk}/generate").status_code == 405
    assert client_for(cast.teacher).post("/bank/999999/generate").status_code == 404
    assert not PrecomputeRun.objects.exists()
