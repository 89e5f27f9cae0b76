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
        bank.edit_solution(
            solution=solution, editor=cast.teacher, reasoning=" ", answer="", final=""
        )
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


# -- provenance that cannot be forged (issue 13, finding 5) ------------------------------------------

CHICKENS = "鸡兔同笼，共有35个头，94只脚，问兔有多少只？"


def forged_pack(path, *, final="12", status="approved", site_name="Another School") -> str:
    """A pack from another machine that claims its answer is approved, and that a teacher edited it."""
    from solver import packs

    with packs.PackWriter(path, site=site_name) as w:
        w.add_manifest(packs.PackManifest("other-model", {"name": "other"}))
        w.add_problem(packs.PackProblem("p1", CHICKENS, "12", "zh", "algebra"))
        w.add_solution(
            packs.PackSolution(
                id="s1",
                problem_id="p1",
                manifest_id="other-model",
                prompt_version="x/1",
                status=status,
                final=final,
                reasoning="",
                answer_text=f"forged \\boxed{{{final}}}",
                evidence={"edited_by_teacher": True, "pack": {"file": "official.sqlite"}},
                new_tokens=10,
                elapsed_s=1.0,
                created=packs.now_iso(),
            )
        )
    return str(path)


def ask_page(client: Client, text: str) -> str:
    response = client.post("/ask/submit", {"question": text})
    assert response.status_code == 302, response.content[:300]
    return client.get(response["Location"]).content.decode()


def reinstall(site, exact_cache, *problems):
    """An import resets the process's cache; the tests' exact-text cache is put back."""
    site.install(cache=exact_cache)
    for problem in problems:
        site.put_problem(problem.pk, problem.text)


def test_a_pack_claiming_approval_cannot_override_a_teachers_answer(
    tmp_path, site, exact_cache, cast, make_problem
):
    from tutor.services.packs import import_pack

    problem = make_problem(CHICKENS, reference="12")
    mine = bank.add_teacher_solution(problem=problem, author=cast.teacher, text="兔 \\boxed{12} 只")
    import_pack(path=forged_pack(tmp_path / "a.sqlite"))
    imported = problem.solutions.get(source="import")
    # Stored as checked here (the final matches the reference): verified, never approved.
    assert imported.status == "verified" and imported.reviewed_by is None
    assert imported.evidence["pack"]["file"] == "a.sqlite"  # the pack's own "pack" key is not kept
    assert imported.evidence["pack"]["site"] == "Another School"
    assert imported.evidence["pack"]["claimed_status"] == "approved"
    assert "edited_by_teacher" not in imported.evidence and not imported.is_teacher_touched
    assert not imported.approved_here and imported.trust == "verified"
    # The teacher's answer is untouched and still served first, though the import is newer.
    mine.refresh_from_db()
    assert (mine.status, mine.answer) == ("approved", "兔 \\boxed{12} 只")
    assert problem.best_solution() == mine
    assert Solution.objects.filter(problem=problem).servable().best_first().first() == mine
    reinstall(site, exact_cache, problem)
    page = ask_page(client_for(cast.alice), CHICKENS)
    assert "Approved by a teacher 已由老师审核 (teacher)" in page
    assert "forged" not in page and "From an answer pack" not in page


def test_an_imported_answer_says_where_it_came_from_and_never_shows_the_teacher_label(
    tmp_path, site, exact_cache, cast
):
    from tutor.services.packs import import_pack

    import_pack(path=forged_pack(tmp_path / "from-them.sqlite"))
    problem = Problem.objects.get(text=CHICKENS)
    reinstall(site, exact_cache, problem)
    page = ask_page(client_for(cast.alice), CHICKENS)
    assert "Approved by a teacher" not in page and "已由老师审核" not in page
    today = problem.solutions.get().evidence["pack"]["imported"]
    assert f"From an answer pack (from-them.sqlite, Another School, {today})" in page
    # A pack's "approved" whose final does not match the reference is not even verified here.
    Solution.objects.all().delete()
    Problem.objects.all().delete()
    import_pack(path=forged_pack(tmp_path / "wrong.sqlite", final="11"))
    assert Solution.objects.get().status == "unverified"


def test_a_teacher_here_approving_an_imported_answer_is_named(tmp_path, site, cast):
    from tutor.services.packs import import_pack

    import_pack(path=forged_pack(tmp_path / "a.sqlite"))
    imported = Solution.objects.get()
    bank.review_solution(solution=imported, reviewer=cast.teacher, status="approved")
    imported.refresh_from_db()
    assert imported.approved_here and imported.approver_name == "teacher"
    assert imported.from_pack["file"] == "a.sqlite"  # still says where it came from


def test_an_older_import_stored_as_approved_ranks_below_the_schools_own(site, cast, make_problem):
    """Rows imported before this rule may say "approved" with no teacher here: they are neither shown
    as approved nor served before the school's own checked answers."""
    problem = make_problem(CHICKENS, reference="12", solutions=(("verified", "12"),))
    own = problem.solutions.get()
    legacy = Solution.objects.create(
        problem=problem, final="12", answer="\\boxed{12}", status="approved", source="import"
    )
    assert legacy.trust == "unverified" and not legacy.approved_here
    assert problem.best_solution() == own
    assert Solution.objects.filter(problem=problem).servable().best_first().first() == own
