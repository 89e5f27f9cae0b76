"""Step by step (issue 12): solutions split into steps when stored; hint → next step → whole solution;
"check my answer" without the solution; what a class's students needed; Copy on answers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.test import Client

from solver.steps import split_steps
from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import bearer
from tutor.models import Solution, StepProgress
from tutor.services import asking, bank, steps, tokens

# -- solver.steps: splitting text ------------------------------------------------------------------

SPLITS = [
    # paragraphs
    (
        "设鸡有x只。\n\n由头数得 $x+y=35$。\n\n所以 $y=12$。",
        ["设鸡有x只。", "由头数得 $x+y=35$。", "所以 $y=12$。"],
    ),
    # "Step N" lines (bold too), with the text of a step running on to the next line
    (
        "**Step 1:** Let $x$ be the chickens.\nThen the rabbits are $35-x$.\n**Step 2:** Solve.",
        [
            "**Step 1:** Let $x$ be the chickens.\nThen the rabbits are $35-x$.",
            "**Step 2:** Solve.",
        ],
    ),
    # 第N步 with a heading alone before it
    (
        "解：\n第一步 设鸡x只\n第二步 列方程\n第三步 解得 $$x = 23$$",
        ["解：\n第一步 设鸡x只", "第二步 列方程", "第三步 解得 $$x = 23$$"],
    ),
    # numbered lines: 1. 2) (3) ① 一、 — but not "12 apples"
    (
        "1. heads: 35\n2) legs: 94\n(3) rabbits: 12",
        ["1. heads: 35", "2) legs: 94", "(3) rabbits: 12"],
    ),
    ("①先算头\n②再算脚", ["①先算头", "②再算脚"]),
    ("一、审题\n二、列式", ["一、审题", "二、列式"]),
    ("12 apples\n1.5 kg each", ["12 apples", "1.5 kg each"]),  # lines, not numbered items
    # one line of Chinese prose: at 。 before 首先/然后/所以
    (
        "首先，设鸡有x只。然后列方程 $2x+4(35-x)=94$。所以兔有12只。",
        ["首先，设鸡有x只。", "然后列方程 $2x+4(35-x)=94$。", "所以兔有12只。"],
    ),
    # English connectives at line starts
    (
        "First, count heads.\nThen, count legs.\nSo there are 12.",
        ["First, count heads.", "Then, count legs.", "So there are 12."],
    ),
    # never inside display math or a code block, even across blank lines
    ("Compute:\n\n$$\na+b\n\n= c\n$$\n\nDone.", ["Compute:\n$$\na+b\n\n= c\n$$", "Done."]),
    (
        "Code:\n\n```python\ndef f():\n\n    return 1\n```\n\nThat is all.",
        ["Code:\n```python\ndef f():\n\n    return 1\n```", "That is all."],
    ),
    ("\\[\nx = 1\n\n2. y\n\\]\n\nend", ["\\[\nx = 1\n\n2. y\n\\]", "end"]),
    # $…$ with a step-like word inside is one piece
    ("We have $1. 2) so$ here.", ["We have $1. 2) so$ here."]),
    # one step, and nothing
    ("所以答案是 \\boxed{12}", ["所以答案是 \\boxed{12}"]),
    ("", []),
    ("  \n\n ", []),
]


@pytest.mark.parametrize(("text", "expected"), SPLITS)
def test_split_steps(text, expected):
    assert split_steps(text) == expected


def test_a_long_chain_of_thought_is_at_most_max_steps_in_order():
    text = "\n\n".join(f"paragraph {i}" for i in range(40))
    found = split_steps(text, max_steps=12)
    assert len(found) == 12
    assert "\n\n".join(found) == text  # merged neighbours, nothing lost or reordered


def test_steps_keep_every_math_span_whole():
    text = "A $x\n$ b\n\nC $$y$$ d\n\n$z$"
    assert "".join(split_steps(text)).count("$") == text.count("$")


def test_solver_steps_does_not_import_django():
    code = "import solver.steps, sys; assert 'django' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- stored with the solution ----------------------------------------------------------------------

WORKED = "设兔有 $y$ 只。\n\n$4y + 2(35-y) = 94$\n\n所以 $y = 12$，答案是 \\boxed{12}"


@pytest.fixture
def worked(site, cast, make_problem):
    """A banked problem with a three-step answer, and alice's question that hit it."""
    problem = make_problem("鸡兔同笼，35个头，94只脚，兔几只？", reference="12")
    solution = Solution.objects.create(
        problem=problem,
        reasoning="先想一想。",
        answer=WORKED,
        final="12",
        status="approved",
        source="teacher",
    )
    question = asking.answer_question(user=cast.alice, text=problem.text)
    assert question.outcome == "hit"
    return problem, solution, question


def test_a_solution_is_split_when_stored_and_when_edited(worked, cast):
    _, solution, _ = worked
    solution.refresh_from_db()
    assert [s["kind"] for s in solution.steps] == ["reasoning", "answer", "answer", "answer"]
    assert solution.walkthrough() == split_steps(WORKED)  # the answer's steps: at least two
    bank.edit_solution(
        solution=solution, editor=cast.teacher, reasoning="", answer="1. a\n2. b", final="12"
    )
    solution.refresh_from_db()
    assert solution.steps == [
        {"kind": "answer", "text": "1. a"},
        {"kind": "answer", "text": "2. b"},
    ]


def test_an_old_row_is_split_when_first_shown(worked):
    _, solution, _ = worked
    Solution.objects.filter(pk=solution.pk).update(steps=[])  # stored before steps existed
    old = Solution.objects.get(pk=solution.pk)
    assert len(old.walkthrough()) == 3
    assert len(Solution.objects.get(pk=solution.pk).steps) == 4  # saved once


def test_an_imported_pack_splits_its_answers(db, site, tmp_path):
    from solver import packs
    from tutor.services import packs as pack_service

    path = tmp_path / "p.sqlite"
    with packs.PackWriter(path) as w:
        w.add_manifest(packs.PackManifest("m", {"name": "r1", "family": "r1-distill"}))
        w.add_problem(packs.PackProblem("p1", "1+1=?", "2", "en", "arithmetic"))
        w.add_solution(
            packs.PackSolution(
                id="s1",
                problem_id="p1",
                manifest_id="m",
                prompt_version="r1-distill/1",
                status="verified",
                final="2",
                reasoning="",
                answer_text="1. one and one\n2. is \\boxed{2}",
                evidence={"samples": [], "k": 1, "agreement": 1.0, "reference": None},
                new_tokens=10,
                elapsed_s=0.1,
                created=packs.now_iso(),
            )
        )
    pack_service.import_pack(path=str(path))
    solution = Solution.objects.get(problem__text="1+1=?")
    assert [s["text"] for s in solution.steps] == ["1. one and one", "2. is \\boxed{2}"]


# -- the use cases ---------------------------------------------------------------------------------


def test_hint_then_next_then_the_last_step_is_the_whole_solution(worked, cast):
    problem, _, question = worked
    state = steps.reveal(student=cast.alice, question=question, action="hint")
    assert (state.shown, state.total, state.whole) == (1, 3, False)
    assert state.steps == ["设兔有 $y$ 只。"]
    state = steps.reveal(student=cast.alice, question=question, action="next")
    assert state.shown == 2 and not state.whole
    state = steps.reveal(student=cast.alice, question=question, action="next")
    assert state.shown == 3 and state.whole
    progress = StepProgress.objects.get(student=cast.alice, problem=problem)
    assert (progress.most_shown, progress.whole, progress.needed_hints) == (3, True, True)


def test_check_my_answer_compares_like_the_bank(worked, cast):
    problem, _, question = worked
    state = steps.check_answer(student=cast.alice, question=question, answer=" 13 ")
    assert state.last_right is False and state.last_check == "13" and state.steps == []
    state = steps.check_answer(student=cast.alice, question=question, answer="十二只")
    assert state.last_right is True and state.checks == 2
    progress = StepProgress.objects.get(student=cast.alice, problem=problem)
    assert progress.checked_right and not progress.needed_hints  # checking is not a hint


def test_a_new_best_solution_starts_the_walk_again(worked, cast):
    problem, solution, question = worked
    steps.reveal(student=cast.alice, question=question, action="whole")
    bank.review_solution(solution=solution, reviewer=cast.teacher, status="rejected")
    Solution.objects.create(
        problem=problem,
        answer="1. a\n2. b \\boxed{12}",
        final="12",
        status="approved",
        source="teacher",
    )
    question.refresh_from_db()
    state = steps.state_of(student=cast.alice, question=question, served=question.served_solution())
    assert (state.shown, state.whole) == (0, False)


# -- the pages -------------------------------------------------------------------------------------


def page_of(client, question) -> str:
    response = client.get(f"/questions/{question.pk}")
    assert response.status_code == 200
    return response.content.decode()


def test_the_page_hides_the_solution_until_asked_without_javascript(worked, cast):
    _, _, question = worked
    client = Client()
    client.force_login(cast.alice)
    page = page_of(client, question)
    assert "Hint 提示" in page and "Check my answer" in page
    assert "boxed" not in page and "<menclose" not in page and 'class="final' not in page
    assert "设兔有" not in page  # not even the first step: hints come on request

    response = client.post(f"/questions/{question.pk}/steps", {"step": "hint"})
    assert response.status_code == 302 and response["Location"].endswith(f"#steps-{question.pk}")
    page = page_of(client, question)
    assert "设兔有" in page and "Step 1 of 3" in page and "Next step" in page
    assert "所以" not in page and 'class="final' not in page

    client.post(f"/questions/{question.pk}/check", {"answer": "13"})
    page = page_of(client, question)
    assert "is not right yet" in page and 'class="final' not in page
    client.post(f"/questions/{question.pk}/check", {"answer": "12"})
    page = page_of(client, question)
    assert "Right! 答对了" in page and 'class="final' not in page  # right, and still not shown

    client.post(f"/questions/{question.pk}/steps", {"step": "whole"})
    page = page_of(client, question)
    assert 'class="final final-approved"' in page and "<menclose" in page
    assert 'class="secondary copy-button"' in page and "Next step" not in page


def test_empty_check_and_bad_action_are_refused(worked, cast):
    _, _, question = worked
    client = Client()
    client.force_login(cast.alice)
    assert client.post(f"/questions/{question.pk}/steps", {"step": "all"}).status_code == 400
    response = client.post(f"/questions/{question.pk}/check", {"answer": "  "}, follow=True)
    assert "type your answer first" in response.content.decode()
    assert not StepProgress.objects.exists()


def test_teachers_see_the_whole_solution_and_a_one_step_answer_is_shown_whole(
    worked, cast, make_problem
):
    _, _, question = worked
    client = Client()
    client.force_login(cast.teacher)
    page = page_of(client, question)
    assert 'class="final final-approved"' in page and "Hint 提示" not in page
    one = make_problem("1+1=?", reference="2", solutions=(("verified", "2"),))
    alice = Client()
    alice.force_login(cast.alice)
    q = asking.answer_question(user=cast.alice, text=one.text)
    page = page_of(alice, q)
    assert 'class="final final-verified"' in page and "Hint 提示" not in page
    assert "copy-button" in page


def test_a_student_cannot_see_or_move_another_students_steps(worked, cast):
    _, _, question = worked
    steps.reveal(student=cast.alice, question=question, action="hint")
    bob = Client()
    bob.force_login(cast.bob)
    assert bob.post(f"/questions/{question.pk}/steps", {"step": "next"}).status_code == 404
    assert bob.post(f"/questions/{question.pk}/check", {"answer": "12"}).status_code == 404
    teacher = Client()
    teacher.force_login(cast.teacher)
    assert teacher.post(f"/questions/{question.pk}/steps", {"step": "next"}).status_code == 403
    token = tokens.issue_api_token(user=cast.bob)
    assert Client().get(f"/api/questions/{question.pk}/steps", **bearer(token)).status_code == 404
    progress = StepProgress.objects.get()
    assert (progress.student, progress.shown, progress.checks) == (cast.alice, 1, 0)
    # bob asking the same problem has his own walk, from the start
    mine = asking.answer_question(user=cast.bob, text=question.text)
    assert steps.state_of(student=cast.bob, question=mine, served=mine.served_solution()).shown == 0


# -- the JSON API ----------------------------------------------------------------------------------


def api(token, method, path, body=None):
    client = Client()
    if method == "GET":
        return client.get(path, **bearer(token))
    return client.post(path, json.dumps(body), content_type="application/json", **bearer(token))


def test_the_api_walks_and_checks(worked, cast):
    _, _, question = worked
    token = tokens.issue_api_token(user=cast.alice)
    base = f"/api/questions/{question.pk}"
    data = api(token, "GET", f"{base}/steps").json()
    assert data == {
        "steps": [],
        "shown": 0,
        "total": 3,
        "whole": False,
        "checks": 0,
        "last_check": None,
        "last_right": None,
    }
    data = api(token, "POST", f"{base}/steps", {"action": "hint"}).json()
    assert data["steps"] == ["设兔有 $y$ 只。"]
    data = api(token, "POST", f"{base}/check", {"answer": "twelve"}).json()
    assert data["right"] is True and data["shown"] == 1 and "final" not in data
    assert api(token, "POST", f"{base}/check", {"answer": "a\x01"}).status_code == 400
    assert api(token, "POST", f"{base}/steps", {"action": "more"}).status_code == 400


def test_the_api_says_409_for_a_question_without_a_banked_answer(site, cast):
    from tutor.models import Question

    question = Question.objects.create(user=cast.alice, text="q", key="k", outcome="failed")
    token = tokens.issue_api_token(user=cast.alice)
    response = api(token, "POST", f"/api/questions/{question.pk}/steps", {"action": "hint"})
    assert response.status_code == 409 and "no banked answer" in response.json()["error"]


# -- the class page --------------------------------------------------------------------------------


def test_the_class_page_shows_who_needed_hints_and_checked(worked, cast):
    from tutor.services import classes

    problem, _, question = worked
    classroom = classes.create_classroom(teacher=cast.teacher, name="7A")
    classes.join_classroom(student=cast.alice, code=classroom.join_code)
    classes.assign_problems(classroom=classroom, problems=[problem], due=None, teacher=cast.teacher)
    steps.reveal(student=cast.alice, question=question, action="hint")
    steps.check_answer(student=cast.alice, question=question, answer="12")
    # bob took hints too, but he is not in the class: not shown
    mine = asking.answer_question(user=cast.bob, text=problem.text)
    steps.reveal(student=cast.bob, question=mine, action="whole")
    client = Client()
    client.force_login(cast.teacher)
    page = client.get(f"/classes/{classroom.pk}").content.decode()
    assert "alice: 1 step 看了1步, checked 1× right 答对了" in page
    assert "bob" not in page.split("Hints and checks")[1].split("</p>")[0]


# -- in a real browser -----------------------------------------------------------------------------


@pytest.fixture
def strict_browser(monkeypatch):
    """Headless Chromium (tests/test_browser.py's), its pages under the site's real CSP."""
    from pathlib import Path

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not Path(CHROMIUM).exists():
        pytest.skip("apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_student_walks_a_banked_answer_step_by_step_in_a_browser(
    strict_browser, live_server, site, cast, make_problem
):
    """Hint → next step → a wrong then a right answer checked → whole solution, with JavaScript and the
    site's Content-Security-Policy enforced (no violation), on the ask page; then Copy; at 390 px."""
    from tests.test_browser import SHOTS, shoot

    problem = make_problem("鸡兔同笼，35个头，94只脚，兔几只？", reference="12")
    Solution.objects.create(
        problem=problem, answer=WORKED, final="12", status="approved", source="teacher"
    )
    context = strict_browser.new_context(viewport={"width": 1100, "height": 900}, locale="zh-CN")
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    violations = []
    page.on(
        "console", lambda m: violations.append(m.text) if "Content Security" in m.text else None
    )
    page.goto(live_server.url + "/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "pw-alice")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")

    page.goto(live_server.url + "/ask")
    page.fill("#question", problem.text)
    page.click("#ask-button")
    block = page.wait_for_selector(".answer-block[data-outcome=hit]")
    assert "Try it yourself first" in block.inner_text()
    assert page.locator(".answer-block .final").count() == 0  # nothing of the solution yet
    assert page.locator(".step-list .step").count() == 0

    page.click("#hint-button")
    page.wait_for_selector(".step-list .step")
    assert (
        "设兔有" in page.inner_text(".step-list") and page.locator(".step-list math").count() == 1
    )
    assert page.url.endswith("/ask")  # replaced in place: no page load
    page.click("#next-step-button")
    page.wait_for_selector(".step-list .step:nth-child(2)")
    assert "Step 2 of 3" in page.inner_text(".steps")

    page.fill("input[name=answer]", "13")
    page.click("#check-button")
    page.wait_for_selector(".check-result.check-wrong")
    assert "13 is not right yet" in page.inner_text(".check-result")
    page.fill("input[name=answer]", "十二")
    page.click("#check-button")
    page.wait_for_selector(".check-result.check-right")
    assert page.locator(".answer-block .final").count() == 0  # right, and the solution still hidden
    SHOTS.mkdir(parents=True, exist_ok=True)
    shoot(page, "steps")

    page.click("#whole-button")
    page.wait_for_selector(".answer-block .final")
    assert "12" in page.inner_text(".answer-block .final")
    assert page.locator(".answer-text math menclose").count() == 1  # \boxed{12}
    page.click(".answer-block .copy-button")
    page.wait_for_selector(".copy-button:has-text('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == WORKED
    progress = StepProgress.objects.get()
    assert (progress.most_shown, progress.whole, progress.checks) == (3, True, 2)
    assert progress.checked_right and progress.last_check == "十二"
    assert violations == []

    # Reloaded later, the question's page remembers: the whole solution, the checks.
    question = progress.student.questions.get()
    page.goto(f"{live_server.url}/questions/{question.pk}")
    assert page.locator(".answer-block .final").count() == 1
    assert "Right! 答对了" in page.inner_text(".steps")
    context.close()
