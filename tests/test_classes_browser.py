"""Classes and homework in a real browser (issue 12; Debian's Chromium driven by Playwright, as in
tests/test_browser.py, whose fixtures it uses): a teacher creates a class, a student joins with its code,
the teacher assigns a bank problem, the student finds it in their homework and asks it, and the class
page shows that the student asked it. Screenshots of the homework list and the class page go to
docs/screenshots/ at desktop and 390 px widths (`shoot` fails if a page is wider than a phone).
"""

from __future__ import annotations

import pytest

from tests import test_browser
from tests.site_fixtures import *  # noqa: F403
from tests.test_browser import SHOTS, shoot, sign_in
from tutor.models import Classroom

browser = test_browser.browser  # the fixture: headless Chromium

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHICKENS = "鸡兔同笼，共有35个头，94只脚，问兔有多少只？"


def test_a_class_from_creation_to_homework_asked(browser, live_server, site, cast, make_problem):
    SHOTS.mkdir(parents=True, exist_ok=True)
    chickens = make_problem(CHICKENS, reference="12", solutions=(("approved", "12"),))
    fractions = make_problem(
        "计算 $\\frac{1}{2}+\\frac{1}{3}$ 的值。", reference="5/6", solutions=(("verified", "5/6"),)
    )
    teacher = sign_in(browser, live_server, "teacher")
    student = sign_in(browser, live_server, "alice")

    # 1. The teacher creates a class and reads its join code.
    teacher.click("nav >> text=Classes 班级")
    teacher.fill("#id_name", "五年级二班")
    teacher.click("#new-class button[type=submit]")
    code = teacher.inner_text("#join-code").strip()
    assert code == Classroom.objects.get().join_code

    # 2. The student joins with it, typed in lower case.
    student.click("nav >> text=Homework 作业")
    student.fill("#id_code", code.lower())
    student.click("#join-button")
    assert "You joined 五年级二班" in student.inner_text(".messages")

    # 3. The teacher assigns two bank problems with a due date.
    teacher.reload()
    assert "alice" in teacher.inner_text("#students")
    teacher.fill("#id_problems", f"{chickens.pk}, {fractions.pk}")
    teacher.fill("#id_due", "2030-05-01")
    teacher.click("#assign-form button[type=submit]")
    teacher.wait_for_selector(".messages")
    assert teacher.locator("article.assignment").count() == 2

    # 4. The student sees them in their homework (math rendered) and asks the first.
    student.goto(live_server.url + "/homework")
    items = student.locator("article.homework-item")
    assert items.count() == 2
    assert "Due 截止 2030-05-01" in items.first.inner_text()
    assert items.nth(1).locator("math mfrac").count() == 2
    shoot(student, "homework")
    items.first.locator("button.ask-this").click()
    block = student.wait_for_selector(".answer-block[data-outcome=hit]")
    assert "12" in block.inner_text()
    student.goto(live_server.url + "/homework")
    assert "Answered 已解答" in student.locator("article.homework-item").first.inner_text()

    # 5. The class page shows who asked it.
    teacher.reload()
    first = teacher.locator("article.assignment").first
    assert "asked by 1 of 1" in first.inner_text()
    assert "alice" in first.locator("ul.askers").inner_text()
    shoot(teacher, "class-page")

    # 6. The problem's page says where it is homework, and its assign box fits a phone.
    teacher.goto(f"{live_server.url}/bank/{chickens.pk}")
    assert "五年级二班" in teacher.inner_text("#assigned-in")
    teacher.set_viewport_size({"width": 390, "height": 844})
    assert teacher.locator("#assign-box").is_visible()
    assert teacher.evaluate("document.documentElement.scrollWidth") <= 390
