"""Issue 12: the JSON API gives a banked answer as its page does — hint, next step, whole solution. To the
student who asked, `GET /api/questions/<id>` (and every question the API returns: the ask, the stream's
done event, a choice) withholds a step-by-step answer's text, final answer and reasoning and gives the
steps shown so far and how many there are; `?reveal=solution` opens the whole solution and records it
in StepProgress as the page's "Whole solution" button does. Teachers get every answer whole."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import bearer
from tutor import openapi
from tutor.models import Solution, StepProgress
from tutor.services import asking, steps, tokens

WORKED = "设兔有 $y$ 只。\n\n$4y + 2(35-y) = 94$\n\n所以 $y = 12$，答案是 \\boxed{12}"
PROBLEM = "鸡兔同笼，35个头，94只脚，兔几只？"


@pytest.fixture
def worked(site, cast, make_problem):
    problem = make_problem(PROBLEM, reference="12")
    solution = Solution.objects.create(
        problem=problem,
        reasoning="先想一想。",
        answer=WORKED,
        final="12",
        status="approved",
        source="teacher",
    )
    return problem, solution


@pytest.fixture
def alice_token(cast):
    return tokens.issue_api_token(user=cast.alice)


def get(token: str, path: str):
    return Client().get(path, **bearer(token))


def post(token: str, path: str, body: dict):
    return Client().post(path, json.dumps(body), content_type="application/json", **bearer(token))


def assert_withheld(data: dict, shown: int) -> None:
    text = json.dumps(data, ensure_ascii=False)
    assert data["answer"]["withheld"] is True
    assert data["answer"]["text"] is data["answer"]["final"] is data["answer"]["reasoning"] is None
    assert data["answer"]["status"] == "approved" and data["answer"]["solution_id"]
    assert data["steps"]["shown"] == shown and data["steps"]["total"] == 3
    assert data["steps"]["whole"] is False and len(data["steps"]["steps"]) == shown
    assert data["reveal"] == f"/api/questions/{data['id']}?reveal=solution"
    assert "先想一想" not in text and "\\\\boxed{12}" not in text  # nothing of the rest
    if shown < 2:
        assert "4y + 2(35-y) = 94" not in text


@pytest.mark.django_db
def test_a_hit_gives_the_steps_shown_so_far_and_not_the_whole_solution(worked, alice_token):
    asked = post(alice_token, "/api/ask", {"question": PROBLEM})
    assert asked.status_code == 200
    data = asked.json()
    assert data["status"] == "hit"
    assert_withheld(data, 0)
    qid = data["id"]
    assert_withheld(get(alice_token, f"/api/questions/{qid}").json(), 0)
    # A hint (the API's, or the page's button): the question now carries the first step.
    post(alice_token, f"/api/questions/{qid}/steps", {"action": "hint"})
    data = get(alice_token, f"/api/questions/{qid}").json()
    assert_withheld(data, 1)
    assert data["steps"]["steps"] == ["设兔有 $y$ 只。"]
    # Asked for explicitly: the whole solution, recorded as the page's "Whole solution" is.
    revealed = get(alice_token, f"/api/questions/{qid}?reveal=solution").json()
    assert revealed["answer"]["text"] == WORKED and revealed["answer"]["final"] == "12"
    assert revealed["answer"]["reasoning"] == "先想一想。" and "withheld" not in revealed["answer"]
    assert revealed["steps"]["whole"] is True and revealed["steps"]["shown"] == 3
    assert "reveal" not in revealed
    progress = StepProgress.objects.get()
    assert progress.whole and progress.shown == 3 and progress.most_shown == 3
    # From then on it stays open, here and on the page.
    assert get(alice_token, f"/api/questions/{qid}").json()["answer"]["text"] == WORKED
    client = Client()
    client.force_login(progress.student)
    assert "answer-text" in client.get(f"/questions/{qid}").content.decode()


@pytest.mark.django_db
def test_the_whole_solution_opened_on_the_page_is_whole_in_the_api(worked, cast, alice_token):
    question = asking.answer_question(user=cast.alice, text=PROBLEM)
    steps.reveal(student=cast.alice, question=question, action="whole")
    data = get(alice_token, f"/api/questions/{question.pk}").json()
    assert data["answer"]["final"] == "12" and data["steps"]["whole"] is True


@pytest.mark.django_db
def test_reveal_takes_only_solution(worked, cast, alice_token):
    question = asking.answer_question(user=cast.alice, text=PROBLEM)
    response = get(alice_token, f"/api/questions/{question.pk}?reveal=all")
    assert response.status_code == 400 and "solution" in response.json()["error"]
    assert not StepProgress.objects.exists()


@pytest.mark.django_db
def test_teachers_get_the_whole_answer_and_reveal_records_nothing_for_them(worked, cast):
    question = asking.answer_question(user=cast.alice, text=PROBLEM)
    teacher = tokens.issue_api_token(user=cast.teacher)
    for path in (f"/api/questions/{question.pk}", f"/api/questions/{question.pk}?reveal=solution"):
        data = get(teacher, path).json()
        assert data["answer"]["text"] == WORKED and "steps" not in data and "reveal" not in data
    assert not StepProgress.objects.exists()
    # Another student does not see it at all, revealing or not.
    bob = tokens.issue_api_token(user=cast.bob)
    assert get(bob, f"/api/questions/{question.pk}?reveal=solution").status_code == 404
    assert not StepProgress.objects.exists()


@pytest.mark.django_db
def test_a_one_step_answer_is_given_whole_as_on_the_page(site, cast, make_problem, alice_token):
    make_problem("6+6=?", solutions=(("approved", "12"),))
    data = post(alice_token, "/api/ask", {"question": "6+6=?"}).json()
    assert data["answer"]["final"] == "12" and "steps" not in data


@pytest.mark.django_db(transaction=True)
def test_the_stream_of_a_hit_withholds_it_too(worked, cast, alice_token):
    question = asking.answer_question(user=cast.alice, text=PROBLEM)
    response = get(alice_token, f"/api/questions/{question.pk}/stream")
    body = b"".join(response.streaming_content).decode()
    done = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")][-1]
    assert done["type"] == "done"
    assert_withheld(done, 0)


def test_the_schema_documents_withheld_answers_and_reveal():
    question = openapi.SCHEMA["components"]["schemas"]["Question"]
    answer = question["properties"]["answer"]
    assert answer["properties"]["withheld"]["type"] == "boolean"
    for key in ("text", "final", "reasoning"):
        assert "null" in answer["properties"][key]["type"]
    assert set(question["properties"]["steps"]["required"]) == set(
        steps.StepState([], 0, False, 0, "", None).to_dict()
    )
    detail = openapi.SCHEMA["paths"]["/api/questions/{id}"]["get"]
    reveal = next(p for p in detail["parameters"] if p["name"] == "reveal")
    assert reveal["schema"] == {"enum": ["solution"]} and "400" in detail["responses"]
