"""How many students saw an answer, and approving or rejecting answers in bulk (issue 12).

- Each answer on a problem's page says how many students were served it (distinct students, from the
  answer their question recorded; teachers' own tries do not count), and a rejection says so.
- The review list (/bank/review) lists answers most-seen first; teachers tick several and approve or
  reject them by the rules of one review (an answer contradicting the reference answer is never
  approved), in one transaction, with a notice of what was done, left alone and refused, and why.
- Counts only: no page names the students who saw an answer.
The browser journey (desktop and 390 px) is in tests/test_teacher_browser.py.
"""

from __future__ import annotations

import html

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tutor.models import BankChange, Problem, Question, Solution
from tutor.services import bank
from tutor.services.text import question_key

CHICKENS = "鸡兔同笼，共有35个头，94只脚，问兔有多少只？"
PENCILS = "小红有8支铅笔，又买了4支，一共有几支？"


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page(response) -> str:
    return html.unescape(response.content.decode())


def notices(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def served(user, solution: Solution, *, feedback: str = "") -> Question:
    """A question of `user` that was served `solution` (as the asking service records it)."""
    text = solution.problem.text
    return Question.objects.create(
        user=user,
        text=text,
        key=question_key(text),
        outcome=Question.Outcome.HIT,
        bank_hit=True,
        problem=solution.problem,
        solution=solution,
        feedback=feedback,
    )


@pytest.fixture
def teacher2(cast):
    user = User.objects.create_user("teacher2", password="pw-teacher2")
    user.groups.add(Group.objects.get(name="teacher"))
    return user


@pytest.fixture
def chickens(site, make_problem):
    """A problem with reference 12: a verified answer (12) and one that contradicts it (26)."""
    problem = make_problem(
        CHICKENS, reference="12", solutions=(("verified", "12"), ("unverified", "26"))
    )
    right = problem.solutions.get(final="12")
    wrong = problem.solutions.get(final="26")
    assert wrong.contradicts_reference and not right.contradicts_reference
    return problem, right, wrong


# -- how many students saw an answer -----------------------------------------------------------------


def test_an_answer_served_through_the_site_counts_each_student_once(cast, chickens):
    problem, right, wrong = chickens
    for user in (cast.alice, cast.alice, cast.bob, cast.teacher, cast.admin):
        client_for(user).post("/ask/submit", {"question": CHICKENS})
    asked = Question.objects.filter(problem=problem)
    assert asked.count() == 5 and set(asked.values_list("solution", flat=True)) == {right.pk}
    assert bank.seen_by([right.pk, wrong.pk]) == {right.pk: 2, wrong.pk: 0}
    text = page(client_for(cast.teacher).get(f"/bank/{problem.pk}"))
    assert "seen by 2 students 已有2名学生看过" in text
    assert "not seen by any student yet 还没有学生看过" in text  # the wrong one
    assert "alice" not in text and "bob" not in text  # a count, never who


def test_rejecting_an_answer_students_saw_says_how_many(cast, chickens):
    problem, right, _ = chickens
    served(cast.alice, right)
    question = served(cast.bob, right)
    teacher = client_for(cast.teacher)
    response = teacher.post(f"/solutions/{right.pk}/review", {"status": "rejected"}, follow=True)
    assert notices(response) == [
        f"Answer {right.pk}: rejected 已驳回. 2 students had seen it 已有2名学生看过; their question "
        "pages no longer show it. 他们的提问页面不再显示这个答案。"
    ]
    question.refresh_from_db()
    assert (
        question.served_solution() is None
    )  # bob's page: the answer key now, not the rejected one
    # No one saw it: the notice is the plain one (as approving is).
    other = Solution.objects.create(
        problem=problem, final="12", answer="\\boxed{12}", status="verified", source="batch"
    )
    response = teacher.post(f"/solutions/{other.pk}/review", {"status": "rejected"}, follow=True)
    assert notices(response) == [f"Answer {other.pk}: rejected 已驳回."]


def test_one_student_is_one_even_after_many_asks(cast, chickens):
    _, right, _ = chickens
    for _ in range(3):
        served(cast.alice, right)
    served(cast.bob, right, feedback=Question.Feedback.NOT_MY_QUESTION)
    [row] = bank.with_seen_by(Solution.objects.filter(pk=right.pk))
    assert (row.seen_by, row.flagged_by) == (2, 1)


# -- one answer: a contradicting one is never approved -----------------------------------------------


def test_an_answer_that_contradicts_the_reference_cannot_be_approved(cast, chickens):
    problem, _, wrong = chickens
    teacher = client_for(cast.teacher)
    text = page(teacher.get(f"/bank/{problem.pk}"))
    assert "Cannot be approved while it contradicts the reference answer" in text
    response = teacher.post(f"/solutions/{wrong.pk}/review", {"status": "approved"}, follow=True)
    [notice] = notices(response)
    assert notice.startswith(f"Answer {wrong.pk} was not approved: its final answer 26 contradicts")
    assert "最终答案与参考答案矛盾" in notice
    wrong.refresh_from_db()
    assert wrong.status == "unverified" and wrong.reviewed_by is None
    # Rejecting it is fine; and once the reference says 26, it can be approved.
    rejected = teacher.post(f"/solutions/{wrong.pk}/review", {"status": "rejected"}, follow=True)
    assert notices(rejected) == [f"Answer {wrong.pk}: rejected 已驳回."]
    problem.reference_answer = "26"
    problem.save()
    response = teacher.post(f"/solutions/{wrong.pk}/review", {"status": "approved"}, follow=True)
    assert notices(response) == [f"Answer {wrong.pk}: approved 已通过."]


def test_the_admin_cannot_approve_a_contradicting_answer_either(cast, chickens):
    _, _, wrong = chickens
    cast.admin.is_superuser = True  # the admin's permissions to change answers
    cast.admin.save(update_fields=["is_superuser"])
    admin = client_for(cast.admin)
    url = f"/admin/tutor/solution/{wrong.pk}/change/"
    form = {"status": "approved", "reasoning": "", "answer": wrong.answer, "final": wrong.final}
    response = admin.post(url, form)
    assert response.status_code == 200  # the form again, with the reason
    assert "contradicts the reference answer 12" in page(response)
    wrong.refresh_from_db()
    assert wrong.status == "unverified" and wrong.reviewed_by is None
    assert admin.post(url, {**form, "status": "rejected"}).status_code == 302
    wrong.refresh_from_db()
    assert wrong.status == "rejected" and wrong.reviewed_by == cast.admin


# -- the review list -----------------------------------------------------------------------------------


def test_the_review_list_puts_the_most_seen_answers_first(cast, chickens, make_problem):
    problem, right, wrong = chickens
    pencils = make_problem(PENCILS, reference="12", solutions=(("unverified", "12"),))
    pencil = pencils.solutions.get()
    served(cast.alice, pencil)
    served(cast.bob, pencil)
    served(cast.alice, right)
    approved = Solution.objects.create(
        problem=problem, final="12", answer="\\boxed{12}", status="approved", source="teacher"
    )
    response = client_for(cast.teacher).get("/bank/review")
    assert response.status_code == 200
    listed = [s.pk for s in response.context["page"].object_list]
    assert listed == [pencil.pk, right.pk, wrong.pk]  # waiting only: most seen first
    text = page(response)
    assert "seen by 2 students 已有2名学生看过" in text and "not seen yet 还没有学生看过" in text
    assert "contradicts the reference: cannot be approved" in text
    assert "Approve selected 批量通过" in text and "Reject selected 批量驳回" in text
    assert "alice" not in text and "bob" not in text
    # Newest first, one status, every answer; a search and a topic narrow it.
    client = client_for(cast.teacher)
    newest = client.get("/bank/review?order=new").context["page"].object_list
    assert [s.pk for s in newest] == sorted([pencil.pk, right.pk, wrong.pk], reverse=True)
    everything = client.get("/bank/review?show=all").context["page"].object_list
    assert approved.pk in [s.pk for s in everything]
    only = client.get("/bank/review?show=approved").context["page"].object_list
    assert [s.pk for s in only] == [approved.pk]
    pencils_only = client.get("/bank/review?q=铅笔").context["page"].object_list
    assert [s.pk for s in pencils_only] == [pencil.pk]
    Problem.objects.filter(pk=pencils.pk).update(topic="arithmetic")
    by_topic = client.get("/bank/review?topic=arithmetic").context["page"].object_list
    assert [s.pk for s in by_topic] == [pencil.pk]
    # Junk in the filters falls back to the defaults.
    assert client.get("/bank/review?show=nonsense&order=x").status_code == 200
    # The bank links to it with the number waiting.
    assert "Review answers 审核答案 (3)" in page(client.get("/bank"))


def test_needs_a_teachers_look_lists_flagged_answers_and_those_students_flagged(
    cast, chickens, make_problem
):
    problem, right, wrong = chickens
    served(cast.alice, right, feedback=Question.Feedback.ASK_TEACHER)
    flagged = Solution.objects.create(
        problem=problem, final="12", answer="\\boxed{12}", status="flagged", source="batch"
    )
    response = client_for(cast.teacher).get("/bank/review?show=flagged")
    assert {s.pk for s in response.context["page"].object_list} == {right.pk, flagged.pk}
    assert "flagged by 1 已有1名学生标记" in page(response)
    missed = page(client_for(cast.teacher).get("/missed"))
    assert "/bank/review?show=flagged" in missed
    bank_page = page(client_for(cast.teacher).get("/bank?status=flagged"))
    assert "Review answers that need a look" in bank_page


def test_only_teachers_see_the_review_list(cast, chickens):
    for student in (cast.alice, cast.bob):
        assert client_for(student).get("/bank/review").status_code == 403
    response = Client().get("/bank/review")
    assert response.status_code == 302 and "/accounts/login/" in response.url
    assert client_for(cast.admin).get("/bank/review").status_code == 200


# -- bulk approve and reject -----------------------------------------------------------------------


def bulk(client: Client, action: str, ids, **extra):
    return client.post(
        "/bank/review/bulk",
        {"action": action, "solutions": [str(i) for i in ids], **extra},
        follow=True,
    )


def test_bulk_approve_does_what_it_may_and_says_what_it_refused_and_why(
    cast, chickens, make_problem
):
    problem, right, wrong = chickens
    pencils = make_problem(PENCILS, reference="12", solutions=(("unverified", "12"),))
    pencil = pencils.solutions.get()
    done_before = Solution.objects.create(
        problem=pencils, final="12", answer="\\boxed{12}", status="approved", source="teacher"
    )
    response = bulk(
        client_for(cast.teacher), "approve", [right.pk, wrong.pk, pencil.pk, done_before.pk, 99999]
    )
    assert response.redirect_chain[-1][0] == "/bank/review"
    assert notices(response) == [
        f"Approved 2 answers 已通过2个答案: #{right.pk}, #{pencil.pk}. Approved answers are "
        "served to students before any other. 已通过的答案优先提供给学生。",
        f"Already approved 已是通过状态, left as they were 未改动: #{done_before.pk}.",
        f"Not approved 未通过: answer #{wrong.pk} (problem #{problem.pk}): its final answer 26 "
        "contradicts the reference answer 12: edit the answer or correct the reference answer "
        "first. 最终答案与参考答案矛盾：请先修改答案或更正参考答案。",
        "No such answer (deleted since the page was loaded?) 没有这些答案: #99999.",
    ]
    for solution in (right, pencil):
        solution.refresh_from_db()
        assert solution.status == "approved" and solution.reviewed_by == cast.teacher
        assert solution.reviewed_at is not None and solution.approved_here
    wrong.refresh_from_db()
    assert wrong.status == "unverified" and wrong.reviewed_by is None
    done_before.refresh_from_db()
    assert done_before.reviewed_by is None  # left alone, not re-signed
    assert problem.best_solution() == right


def test_bulk_reject_says_how_many_students_had_seen_them(cast, chickens):
    problem, right, wrong = chickens
    served(cast.alice, right)
    served(cast.bob, right)
    served(cast.teacher, right)  # a teacher's try is not a student's
    question = served(cast.alice, wrong)
    response = bulk(client_for(cast.teacher), "reject", [right.pk, wrong.pk])
    assert notices(response) == [
        f"Rejected 2 answers 已驳回2个答案: #{right.pk} (seen by 2 students 已有2名学生看过), "
        f"#{wrong.pk} (seen by 1 student 已有1名学生看过). The students who had seen them no "
        "longer find them on their question pages. 看过的学生在提问页面上不会再看到这些答案。"
    ]
    assert set(Solution.objects.values_list("status", flat=True)) == {"rejected"}
    assert problem.best_solution() is None and question.served_solution() is None


def test_bulk_review_follows_exactly_the_rules_of_one_review(tmp_path, cast, site, make_problem):
    """Twin answers, one reviewed on its page and one in bulk, end the same: status, reviewer,
    provenance, the reference check, the steps, the change feed (a review changes no cached text)."""
    fields = ("status", "reviewed_by_id", "source", "contradicts_reference", "steps", "evidence")

    def twin(text: str) -> Solution:
        problem = make_problem(text, reference="12")
        return Solution.objects.create(
            problem=problem,
            final="12",
            answer="兔 \\boxed{12} 只",
            status="unverified",
            source="import",
            evidence={"pack": {"file": "other.sqlite", "claimed_status": "approved"}},
        )

    one, many = twin(CHICKENS), twin(PENCILS)
    feed = BankChange.objects.count()
    teacher = client_for(cast.teacher)
    for status, action in (("approved", "approve"), ("rejected", "reject")):
        teacher.post(f"/solutions/{one.pk}/review", {"status": status})
        bulk(teacher, action, [many.pk])
        one.refresh_from_db()
        many.refresh_from_db()
        assert [getattr(one, f) for f in fields] == [getattr(many, f) for f in fields]
        assert many.status == status and many.reviewed_at is not None
    assert many.from_pack == {"file": "other.sqlite", "claimed_status": "approved"}
    assert BankChange.objects.count() == feed


def test_bulk_review_is_one_transaction(cast, chickens, make_problem, monkeypatch):
    """An unexpected error on the second answer leaves the first unchanged too."""
    _, right, _ = chickens
    pencil = make_problem(PENCILS, reference="12", solutions=(("unverified", "12"),))
    second = pencil.solutions.get()
    real = bank.review_solution

    def failing(*, solution, reviewer, status):
        if solution.pk == second.pk:
            raise RuntimeError("the disk is full")
        return real(solution=solution, reviewer=reviewer, status=status)

    monkeypatch.setattr(bank, "review_solution", failing)
    with pytest.raises(RuntimeError):
        bank.review_solutions(ids=[right.pk, second.pk], reviewer=cast.teacher, status="approved")
    right.refresh_from_db()
    second.refresh_from_db()
    assert (right.status, second.status) == ("verified", "unverified")
    assert right.reviewed_by is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"action": "approve"},
            "Tick the answers to approve or reject first. 请先勾选要审核的答案。",
        ),
        ({"solutions": ["1"]}, "Choose approve or reject. 请选择通过或驳回。"),
        ({"action": "delete", "solutions": ["1"]}, "Choose approve or reject. 请选择通过或驳回。"),
        (
            {"action": "approve", "solutions": ["1", "x"]},
            "“x” is not an answer number. 不是答案编号。",
        ),
        (
            {"action": "reject", "solutions": [str(i) for i in range(1, 102)]},
            "At most 100 answers at a time (you ticked 101); nothing was changed. "
            "一次最多100个答案，未做任何改动。",
        ),
    ],
)
def test_a_bad_bulk_request_changes_nothing_and_says_why(cast, chickens, data, message):
    _, right, wrong = chickens
    response = client_for(cast.teacher).post("/bank/review/bulk", data, follow=True)
    assert notices(response) == [message]
    assert set(Solution.objects.values_list("status", flat=True)) == {"verified", "unverified"}


def test_the_cap_counts_distinct_answers(cast, chickens):
    _, right, _ = chickens
    response = bulk(client_for(cast.teacher), "approve", [right.pk] * 150)
    assert notices(response)[0].startswith("Approved 1 answer 已通过1个答案")


def test_bulk_review_is_for_teachers_with_a_csrf_token(cast, chickens):
    _, right, _ = chickens
    for student in (cast.alice, cast.bob):
        assert bulk(client_for(student), "approve", [right.pk]).status_code == 403
    anonymous = Client().post("/bank/review/bulk", {"action": "approve", "solutions": [right.pk]})
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous.url
    assert client_for(cast.teacher).get("/bank/review/bulk").status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(cast.teacher)
    refused = strict.post("/bank/review/bulk", {"action": "approve", "solutions": [right.pk]})
    assert refused.status_code == 403
    right.refresh_from_db()
    assert right.status == "verified"


def test_bulk_review_returns_to_the_list_it_came_from_and_nowhere_else(cast, chickens):
    _, right, _ = chickens
    teacher = client_for(cast.teacher)
    back = "/bank/review?show=all&order=new&page=1"
    response = bulk(teacher, "approve", [right.pk], next=back)
    assert response.redirect_chain[-1][0] == back
    for elsewhere in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        response = bulk(teacher, "reject", [right.pk], next=elsewhere)
        assert response.redirect_chain[-1][0] == "/bank/review"


def test_another_teacher_sees_counts_but_no_names(cast, chickens, teacher2):
    """Counts come from every class's students; the page shows the number only."""
    _, right, _ = chickens
    served(cast.alice, right)
    text = page(client_for(teacher2).get("/bank/review"))
    assert "seen by 1 student 已有1名学生看过" in text
    assert "alice" not in text
