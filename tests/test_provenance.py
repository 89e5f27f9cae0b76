"""Teacher data that cannot break the site, and provenance that cannot be forged (issue 13).

- An all-empty answer edit (no reasoning, no answer, no final; or only spaces) is refused with a form
  error on the teacher's page and in the admin, and never stored or served as an empty approved answer.
- A problem whose text is empty or only spaces is refused with a form error.
"""

from __future__ import annotations

import pytest
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tutor.errors import BadQuestion
from tutor.models import Problem, Solution
from tutor.services import bank


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def banked(site, cast, make_problem):
    problem = make_problem(
        "鸡兔同笼，35个头，94只脚，兔几只？", reference="12", solutions=(("unverified", "12"),)
    )
    return problem, problem.solutions.get()


# -- teacher data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("blank", ["", "   ", "\n\t  "])
def test_an_all_empty_answer_edit_is_refused_and_not_stored(cast, banked, blank):
    problem, solution = banked
    teacher = client_for(cast.teacher)
    response = teacher.post(
        f"/solutions/{solution.pk}/edit", {"reasoning": blank, "answer": blank, "final": blank}
    )
    assert response.status_code == 400
    assert "答案不能为空" in response.content.decode()
    solution.refresh_from_db()
    assert (solution.status, solution.final) == ("unverified", "12")
    assert "edited_by_teacher" not in solution.evidence
    # One field is enough: a final answer alone is an answer.
    response = teacher.post(
        f"/solutions/{solution.pk}/edit", {"reasoning": "", "answer": "", "final": " 12 "}
    )
    assert response.status_code == 302
    solution.refresh_from_db()
    assert (solution.status, solution.final) == ("approved", "12")


def test_the_admin_refuses_an_all_empty_answer_but_still_rejects(cast, banked):
    problem, solution = banked
    admin = client_for(cast.admin)
    cast.admin.is_superuser = True
    cast.admin.save()
    url = f"/admin/tutor/solution/{solution.pk}/change/"
    response = admin.post(url, {"status": "approved", "reasoning": "", "answer": " ", "final": ""})
    assert response.status_code == 200 and "答案不能为空" in response.content.decode()
    solution.refresh_from_db()
    assert (solution.status, solution.final) == ("unverified", "12")


def test_the_services_refuse_empty_answers_too(cast, banked):
    problem, solution = banked
    with pytest.raises(BadQuestion):
        bank.edit_solution(solution=solution, editor=cast.teacher, reasoning=" ", answer="", final="")
    with pytest.raises(BadQuestion):
        bank.add_teacher_solution(problem=problem, author=cast.teacher, text="  \n ")
    solution.refresh_from_db()
    assert solution.status == "unverified" and problem.solutions.count() == 1


@pytest.mark.parametrize("blank", ["", "    ", "\n\n"])
def test_a_problem_with_empty_text_is_refused(cast, site, blank):
    teacher = client_for(cast.teacher)
    before = Problem.objects.count()
    response = teacher.post(
        "/bank/new", {"text": blank, "lang": "en", "tags": "", "solution": "  "}
    )
    assert response.status_code == 400
    assert Problem.objects.count() == before and Solution.objects.count() == 0


def test_a_new_problem_with_a_blank_solution_gets_no_empty_answer(cast, site):
    teacher = client_for(cast.teacher)
    response = teacher.post(
        "/bank/new",
        {"text": "What is 2 + 3?", "lang": "en", "tags": "", "solution": "   \n  "},
    )
    assert response.status_code == 302
    problem = Problem.objects.get(text="What is 2 + 3?")
    assert problem.solutions.count() == 0
