"""Every page a student or a teacher opens fits a phone: loaded in a real browser (Debian's Chromium,
driven by Playwright as in tests/test_browser.py) at 390 px wide, the page must not scroll sideways
(`document.documentElement.scrollWidth <= 390`). The data is made to push: long formulas and unbroken
strings in problems, answers, questions and names, a paged bank and history, a class with homework.
The pages are those of tutor/urls.py that answer a GET for a student or a teacher (the admin's own
pages are tested in tests/test_admin_tools.py; the JSON API is not a page).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tutor.models import Membership, Problem, ProblemAlias, Question, Solution
from tutor.services import bank as bank_service
from tutor.services import classes as classes_service
from tutor.services.text import question_key

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 390, "height": 844}
LONG_MATH = (
    "解方程组 $\\begin{cases} 3x+4y-5z=123456789 \\\\ 7x-8y+9z=987654321 \\end{cases}$，"
    "并求 $\\frac{x^2+y^2+z^2}{\\sqrt{x^4+y^4+z^4+1234567890123456789}}$ 的值。"
)
UNBROKEN = "1234567890" * 12  # a number with no place to break a line
LONG_WORD = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 2
WORKED = (
    "设 $x$ 为鸡的只数。\n\n$$\\frac{123456789012345678901234567890}{987654321098765432109876543210}"
    "+\\sqrt{\\frac{a^2+b^2+c^2+d^2+e^2+f^2}{g^2+h^2}}=\\boxed{12}$$\n\n```python\n"
    "print(sum(range(1, 100000000000000000000000000000000000000000000000000, 7)))\n```\n\n"
    f"{UNBROKEN}\n\n所以答案是 \\boxed{{12}}"
)


# (who, path): the paths are filled in from the objects the fixture makes.
PAGES = [
    (None, "/"),
    (None, "/accounts/login/"),
    (None, "/signup"),
    ("alice", "/"),
    ("alice", "/ask"),
    ("alice", "/ask?page=2"),
    ("alice", "/questions/{question}"),
    ("alice", "/questions/{long_question}"),
    ("alice", "/questions/{missed}"),
    ("alice", "/homework"),
    ("teacher", "/"),
    ("teacher", "/ask"),
    ("teacher", "/bank"),
    ("teacher", "/bank?page=2"),
    ("teacher", "/bank?q=鸡兔&status=approved"),
    ("teacher", "/bank/new"),
    ("teacher", "/bank/students"),
    ("teacher", "/bank/{problem}"),
    ("teacher", "/bank/{problem}/edit"),
    ("teacher", "/bank/{student_problem}"),
    ("teacher", "/solutions/{solution}/edit"),
    ("teacher", "/questions/{question}"),
    ("teacher", "/questions/{missed}"),
    ("teacher", "/missed"),
    ("teacher", "/missed?flagged=1"),
    ("teacher", "/classes"),
    ("teacher", "/classes/{classroom}"),
    ("teacher", "/classes/students/{alice}"),
]


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API runs an event loop in this thread; Django's ORM then refuses to run in the
    # test's own thread unless told that this is fine (it is: nothing here is async).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    if not Path(CHROMIUM).exists():
        pytest.skip("apt-get install -y chromium fonts-wqy-microhei")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def pushy(cast, site, make_problem) -> dict[str, int]:
    """A bank, a class and a history with the longest things a page may have to show."""
    topic = "quadratic_equations_and_systems_of_linear_inequalities"
    problem = make_problem(
        f"{LONG_MATH} {UNBROKEN}",
        reference=UNBROKEN[:60],
        topic=topic,
        difficulty=5,
        tags=[LONG_WORD, "鸡兔同笼"],
        solutions=(("approved", "12"),),
    )
    Problem.objects.filter(pk=problem.pk).update(source=Problem.Source.BANK)
    solution = problem.solutions.get()
    Solution.objects.filter(pk=solution.pk).update(
        reasoning=WORKED, answer=WORKED, final=UNBROKEN[:40]
    )
    for i in range(55):
        make_problem(f"鸡兔同笼 {i}：{LONG_WORD} {UNBROKEN}", topic=topic, difficulty=i % 5 + 1)
    student_problem = make_problem(f"{LONG_WORD} {UNBROKEN}", lang="en")
    Problem.objects.filter(pk=student_problem.pk).update(source=Problem.Source.STUDENT)

    def ask(text: str, **fields) -> Question:
        fields.setdefault("outcome", Question.Outcome.HIT)
        return Question.objects.create(user=cast.alice, text=text, key=question_key(text), **fields)

    question = ask(problem.text, problem=problem, solution=solution, bank_hit=True)
    long_question = ask(f"{LONG_WORD} {UNBROKEN} {LONG_MATH}", outcome=Question.Outcome.FAILED)
    missed = ask(
        f"一个没有在题库里的问题 {UNBROKEN}",
        outcome=Question.Outcome.GENERATED,
        problem=student_problem,
        feedback=Question.Feedback.ASK_TEACHER,
    )
    for i in range(30):  # two pages of history
        ask(f"第{i}个问题 {LONG_WORD}", outcome=Question.Outcome.FAILED)
    ProblemAlias.objects.create(
        key=question_key(LONG_WORD),
        text=f"{LONG_WORD} {UNBROKEN}",
        problem=problem,
        status=ProblemAlias.Status.PENDING,
        created_by=cast.alice,
    )
    classroom = classes_service.create_classroom(
        teacher=cast.teacher, name=f"五年级二班 {LONG_WORD}"[:100]
    )
    Membership.objects.create(classroom=classroom, student=cast.alice)
    cast.alice.first_name = "张" + "三" * 40
    cast.alice.save(update_fields=["first_name"])
    classes_service.assign_problems(
        classroom=classroom,
        problems=[problem],
        due=dt.date.today() - dt.timedelta(days=1),
        teacher=cast.teacher,
    )
    bank_service.register_topic(topic)
    return {
        "problem": problem.pk,
        "solution": solution.pk,
        "student_problem": student_problem.pk,
        "question": question.pk,
        "long_question": long_question.pk,
        "missed": missed.pk,
        "classroom": classroom.pk,
        "alice": cast.alice.pk,
    }


def open_as(browser, live_server, user):
    context = browser.new_context(viewport=PHONE, locale="zh-CN")
    if user is not None:
        client = Client()
        client.force_login(user)
        cookie = client.cookies["sessionid"]
        context.add_cookies([{"name": "sessionid", "value": cookie.value, "url": live_server.url}])
    return context


@pytest.mark.parametrize("who, path", PAGES, ids=[f"{w or 'anon'}:{p}" for w, p in PAGES])
def test_the_page_fits_a_phone(browser, live_server, cast, settings, pushy, who, path):
    settings.SUANJING_SIGNUP = True
    context = open_as(browser, live_server, getattr(cast, who) if who else None)
    try:
        page = context.new_page()
        response = page.goto(live_server.url + path.format(**pushy))
        assert response.status == 200, f"{path}: {response.status}"
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        wide = page.evaluate(
            """() => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > 391)
                .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' +
                    Math.round(e.getBoundingClientRect().right))"""
        )
        if os.environ.get("SUANJING_PHONE_SHOTS"):  # for a person to look at: a directory
            name = f"{who or 'anon'}{path.format(**pushy)}".replace("/", "_").replace("?", "_")
            page.screenshot(path=f"{os.environ['SUANJING_PHONE_SHOTS']}/{name}.png", full_page=True)
        assert width <= PHONE["width"], f"{page.url} is {width} px wide: {wide}"
    finally:
        context.close()


def test_a_new_password_is_readable_on_a_phone(browser, live_server, cast, pushy):
    """The one page that a POST shows: a teacher gives a student a new password, on a phone."""
    context = open_as(browser, live_server, cast.teacher)
    try:
        page = context.new_page()
        page.goto(live_server.url + f"/classes/students/{pushy['alice']}")
        page.click("#reset-password button")
        page.wait_for_selector("#new-password")
        password = page.inner_text("#new-password code.join-code")
        cast.alice.refresh_from_db()
        assert cast.alice.check_password(password)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    finally:
        context.close()
