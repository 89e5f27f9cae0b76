"""The teacher's side of issue 12 in a real browser (Debian's Chromium driven by Playwright, with
tests/test_browser.py's fixtures): reviewing answers in bulk on the review list, with how many students
saw each, and renaming, archiving and unarchiving a class — at a desktop width and at a phone's 390 px.
Screenshots go to docs/screenshots/ (`shoot` fails if a page is wider than a phone).
"""

from __future__ import annotations

import pytest

from tests import test_browser
from tests.site_fixtures import *  # noqa: F403
from tests.test_browser import SHOTS, shoot, sign_in
from tutor.models import Classroom, Membership, Question, Solution
from tutor.services import classes
from tutor.services.text import question_key

browser = test_browser.browser  # the fixture: headless Chromium

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
PROBLEMS = [
    ("鸡兔同笼，共有35个头，94只脚，问兔有多少只？", "12", ("verified", "12")),
    ("计算 $\\frac{1}{2}+\\frac{1}{3}$ 的值。", "5/6", ("unverified", "5/6")),
    (
        "A jacket costs $80 and is 25% off. What is its sale price in dollars?",
        "60",
        ("unverified", "48"),
    ),
    ("小红有8支铅笔，又买了4支，一共有几支？", "12", ("unverified", "12")),
]


def serve(user, solution: Solution) -> None:
    text = solution.problem.text
    Question.objects.create(
        user=user,
        text=text,
        key=question_key(text),
        outcome=Question.Outcome.HIT,
        bank_hit=True,
        problem=solution.problem,
        solution=solution,
    )


def messages_of(page) -> str:
    return page.inner_text(".messages")


def test_a_teacher_reviews_answers_in_bulk(browser, live_server, site, cast, make_problem):
    SHOTS.mkdir(parents=True, exist_ok=True)
    answers = []
    for text, reference, solution in PROBLEMS:
        problem = make_problem(text, reference=reference, solutions=(solution,), topic="review")
        answers.append(problem.solutions.get())
    chickens, fractions, jacket, pencils = answers
    assert jacket.contradicts_reference  # 48 where the reference says 60
    for student in (cast.alice, cast.bob):
        serve(student, jacket)
    serve(cast.alice, chickens)

    teacher = sign_in(browser, live_server, "teacher")
    teacher.click("nav >> text=Bank 题库")
    teacher.click("#review-link")
    rows = teacher.locator("#review-list tbody tr")
    assert rows.count() == 4
    # Most seen first: the jacket's wrong answer, seen by two students, marked as not approvable.
    first = rows.first.inner_text()
    assert "seen by 2 students 已有2名学生看过" in first and "cannot be approved" in first
    assert "seen by 1 student" in rows.nth(1).inner_text()
    assert "alice" not in teacher.inner_text("main") and "bob" not in teacher.inner_text("main")
    shoot(teacher, "review-list")

    # 1. "All on this page", then approve: three approved, the contradicting one refused with why.
    teacher.check("#select-all")
    assert teacher.inner_text("#picked-count") == "4 selected 已选4个"
    teacher.click("#bulk-approve")
    teacher.wait_for_selector(".messages")
    notices = messages_of(teacher)
    assert "Approved 3 answers 已通过3个答案" in notices
    assert f"Not approved 未通过: answer #{jacket.pk}" in notices
    assert "contradicts the reference answer 60" in notices
    for solution in (chickens, fractions, pencils):
        solution.refresh_from_db()
        assert solution.status == "approved" and solution.reviewed_by == cast.teacher
    shoot(teacher, "review-approved")

    # 2. At a phone's width: the one left (still waiting), ticked and rejected; the notice says how
    #    many students had seen it.
    teacher.set_viewport_size(PHONE)
    teacher.goto(live_server.url + "/bank/review")
    assert teacher.locator("#review-list tbody tr").count() == 1
    assert teacher.evaluate("document.documentElement.scrollWidth") <= 390
    teacher.check(f"#review-{jacket.pk} input.pick")
    teacher.click("#bulk-reject")
    teacher.wait_for_selector(".messages")
    notices = messages_of(teacher)
    assert f"Rejected 1 answer 已驳回1个答案: #{jacket.pk} (seen by 2 students" in notices
    jacket.refresh_from_db()
    assert jacket.status == "rejected"
    assert teacher.evaluate("document.documentElement.scrollWidth") <= 390
    teacher.screenshot(path=str(SHOTS / "review-rejected-390.png"), full_page=True)

    # 3. The problem's page says the same count beside the answer.
    teacher.goto(f"{live_server.url}/bank/{jacket.problem_id}")
    assert "seen by 2 students 已有2名学生看过" in teacher.inner_text(f"#solution-{jacket.pk}")
    assert teacher.evaluate("document.documentElement.scrollWidth") <= 390


def test_a_teacher_renames_archives_and_unarchives_a_class(
    browser, live_server, site, cast, make_problem
):
    SHOTS.mkdir(parents=True, exist_ok=True)
    klass = classes.create_classroom(teacher=cast.teacher, name="五年级二班")
    classes.join_classroom(student=cast.alice, code=klass.join_code)
    problem = make_problem("鸡兔同笼，共有35个头，94只脚，问兔有多少只？", reference="12")
    classes.assign_problems(classroom=klass, problems=[problem], due=None, teacher=cast.teacher)
    teacher = sign_in(browser, live_server, "teacher")
    student = sign_in(browser, live_server, "bob")

    # 1. Rename, at a desktop width.
    teacher.click("nav >> text=Classes 班级")
    teacher.click("text=五年级二班")
    teacher.click("#class-settings summary")
    teacher.fill("#rename_name", "六年级二班")
    shoot(teacher, "class-settings")
    teacher.click("#rename-button")
    teacher.wait_for_selector(".messages")
    assert teacher.inner_text("h1").strip() == "六年级二班"
    assert "is now called “六年级二班”" in messages_of(teacher)

    # 2. Archive, at a phone's width.
    teacher.set_viewport_size(PHONE)
    teacher.click("#class-settings summary")
    teacher.click("#archive-button")
    teacher.wait_for_selector("#archived-box")
    assert "archived 已归档" in teacher.inner_text("h1")
    assert teacher.locator("#join-code").count() == 0
    assert "alice" in teacher.inner_text("#students")  # the records stay
    assert teacher.evaluate("document.documentElement.scrollWidth") <= 390
    teacher.screenshot(path=str(SHOTS / "class-archived-390.png"), full_page=True)

    # 3. Off the class list, behind "Show archived".
    teacher.click("nav >> text=Classes 班级")
    assert "六年级二班" not in teacher.inner_text("#classes")
    teacher.click("#show-archived")
    assert "六年级二班" in teacher.inner_text("#archived-classes")
    assert teacher.evaluate("document.documentElement.scrollWidth") <= 390

    # 4. Its code admits no one, and says why; alice's homework list no longer has its problem.
    student.click("nav >> text=Homework 作业")
    student.fill("#id_code", klass.join_code)
    student.click("#join-button")
    assert "archived by its teacher" in student.inner_text("#join-form")
    assert not Membership.objects.filter(student=cast.bob).exists()
    alice = sign_in(browser, live_server, "alice")
    alice.goto(live_server.url + "/homework")
    assert alice.locator("article.homework-item").count() == 0
    assert "六年级二班" in alice.inner_text("#archived-classes")
    shoot(alice, "homework-archived")

    # 5. Unarchive: back on the list, the same code works again.
    teacher.click("#archived-classes >> text=六年级二班")
    teacher.click("#unarchive-button")
    teacher.wait_for_selector("#join-code")
    assert Classroom.objects.get(pk=klass.pk).archived_at is None
    student.fill("#id_code", klass.join_code)
    student.click("#join-button")
    assert "You joined 六年级二班" in messages_of(student)
