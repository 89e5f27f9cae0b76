"""Pages per role, the teacher's bank, math rendering, and the management commands."""

from __future__ import annotations

import html
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import bearer
from tutor.models import Problem, Question, Solution, Topic
from tutor.services import bank
from tutor.services.text import question_key
from tutor.templatetags.mathtext import render_math_text

TEACHER_GET = [
    "/bank",
    "/bank/new",
    "/bank/{p}",
    "/bank/{p}/edit",
    "/solutions/{s}/edit",
    "/missed",
]
TEACHER_POST = ["/bank/new", "/bank/{p}/edit", "/solutions/{s}/review", "/solutions/{s}/edit"]


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def banked(site, cast, make_problem):
    problem = make_problem(
        "鸡兔同笼，35个头，94只脚，兔几只？", reference="12", solutions=(("unverified", "12"),)
    )
    return problem, problem.solutions.get()


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_a_student_cannot_reach_teacher_pages(cast, banked, who):
    problem, solution = banked
    client = client_for(getattr(cast, who))
    for url in TEACHER_GET:
        assert client.get(url.format(p=problem.pk, s=solution.pk)).status_code == 403, url
    for url in TEACHER_POST:
        assert (
            client.post(url.format(p=problem.pk, s=solution.pk), {"status": "approved"}).status_code
            == 403
        ), url
    assert client.get("/admin/").status_code == 302  # the Django admin sends non-staff to its login
    solution.refresh_from_db()
    assert solution.status == "unverified"


def test_anonymous_visitors_are_sent_to_sign_in(banked):
    problem, _ = banked
    for url in ["/ask", "/bank", f"/bank/{problem.pk}", "/missed", "/questions/1"]:
        response = Client().get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url


@pytest.mark.parametrize("who", ["teacher", "admin"])
def test_teachers_and_admins_reach_the_bank(cast, banked, who):
    problem, solution = banked
    client = client_for(getattr(cast, who))
    for url in TEACHER_GET:
        assert client.get(url.format(p=problem.pk, s=solution.pk)).status_code == 200, url


def test_the_ask_page_shows_the_examples_and_only_my_history(cast, banked):
    problem, _ = banked
    Question.objects.create(user=cast.bob, text="bob's secret question", key="k", outcome="failed")
    Question.objects.create(user=cast.alice, text="alice's question", key="k2", outcome="failed")
    page = client_for(cast.alice).get("/ask").content.decode()
    for example in (
        "请证明：任意奇数的平方减1都能被8整除",
        "写一个Python函数判断回文字符串",
        "如果今天是星期三，100天后是星期几？",
        "鸡兔同笼",
    ):
        assert example in page
    assert "alice's question" in html.unescape(page) and "bob" not in page.split("My questions")[1]
    assert "4000" in page
    assert "/bank" not in page  # no teacher links for students


def test_the_ask_form_works_without_javascript(cast, banked):
    problem, _ = banked
    client = client_for(cast.alice)
    response = client.post("/ask/submit", {"question": problem.text})
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    # Plain words for students: where the answer came from and how far it is trusted, no internal ids.
    assert "From the bank" in page and f"#{problem.pk}" not in page
    assert "Not checked yet" in page and 'class="final final-unverified"' in page
    assert client.post("/ask/submit", {"question": "   "}).status_code == 400


def test_the_bank_searches_filters_and_pages(cast, site, make_problem):
    for i in range(55):
        make_problem(
            f"Problem {i}: what is {i} times 3?", lang="en", topic="arithmetic", difficulty=1
        )
    make_problem(
        "一个数的3倍是36，这个数是多少？",
        reference="12",
        topic="algebra",
        difficulty=3,
        solutions=(("verified", "12"),),
    )
    client = client_for(cast.teacher)
    first = client.get("/bank").content.decode()
    assert "56 problems" in first and "page 1 of 2" in first
    assert "Problem 49:" in first and "Problem 50:" not in first
    assert "Problem 50:" in client.get("/bank?page=2").content.decode()
    found = client.get("/bank", {"q": "3倍"}).content.decode()
    assert "1 problem 共1题" in found and "一个数的3倍" in found
    assert (
        "1 problem 共1题"
        in client.get("/bank", {"topic": "algebra", "status": "verified"}).content.decode()
    )
    assert "55 problems" in client.get("/bank", {"lang": "en", "difficulty": 1}).content.decode()


def test_a_teacher_adds_a_problem_with_a_reference_and_students_hit_it(
    cast, site, exact_cache, django_capture_on_commit_callbacks
):
    teacher = client_for(cast.teacher)
    with django_capture_on_commit_callbacks(execute=True):
        response = teacher.post(
            "/bank/new",
            {
                "text": "小明有5个苹果，吃了2个，还剩几个？",
                "lang": "zh",
                "new_topic": "Arithmetic ",  # a new topic joins the managed list, in lower case
                "tags": "apples, 减法",
                "difficulty": "1",
                "reference_answer": "3",
                "solution": "5-2=3，所以还剩 \\boxed{3} 个。",
            },
        )
    assert response.status_code == 302
    problem = Problem.objects.get()
    assert (
        problem.tags == ["apples", "减法"]
        and problem.added_by == cast.teacher
        and problem.origin == "teacher"
        and problem.topic == "arithmetic"
    )
    assert list(Topic.objects.values_list("name", flat=True)) == ["arithmetic"]
    solution = problem.solutions.get()
    assert (solution.status, solution.source, solution.final) == ("approved", "teacher", "3")
    data = (
        client_for(cast.alice)
        .post(
            "/api/ask", data=json.dumps({"question": problem.text}), content_type="application/json"
        )
        .json()
    )
    assert data["status"] == "hit" and data["answer"]["final"] == "3"


def test_a_teacher_approves_rejects_and_edits_answers(cast, banked):
    problem, solution = banked
    teacher = client_for(cast.teacher)
    assert (
        teacher.post(f"/solutions/{solution.pk}/review", {"status": "approved"}).status_code == 302
    )
    solution.refresh_from_db()
    assert solution.status == "approved" and solution.reviewed_by == cast.teacher
    assert (
        teacher.post(f"/solutions/{solution.pk}/review", {"status": "deleted"}).status_code == 400
    )
    teacher.post(f"/solutions/{solution.pk}/review", {"status": "rejected"})
    assert Problem.objects.get(pk=problem.pk).best_solution() is None
    teacher.post(
        f"/solutions/{solution.pk}/edit",
        {"reasoning": "", "answer": "兔 \\boxed{12} 只", "final": "12"},
    )
    solution.refresh_from_db()
    assert solution.status == "approved" and solution.evidence["edited_by_teacher"] is True
    page = teacher.get(f"/bank/{problem.pk}").content.decode()
    assert "approved" in page and "reviewed by teacher" in page


def test_a_teacher_edits_a_problem(cast, banked):
    problem, _ = banked
    teacher = client_for(cast.teacher)
    response = teacher.post(
        f"/bank/{problem.pk}/edit",
        {
            "text": problem.text,
            "lang": "zh",
            "new_topic": "Linear_Systems",
            "tags": "",
            "difficulty": "9",
            "reference_answer": "12",
        },
    )
    assert response.status_code == 400  # difficulty is 1 to 5
    teacher.post(
        f"/bank/{problem.pk}/edit",
        {
            "text": problem.text,
            "lang": "zh",
            "new_topic": "Linear_Systems",
            "tags": "",
            "difficulty": "2",
            "reference_answer": "12只",
        },
    )
    problem.refresh_from_db()
    assert (problem.topic, problem.difficulty, problem.reference_answer) == (
        "linear_systems",
        2,
        "12只",
    )


def test_missed_questions_are_grouped_and_ranked(cast, site):
    for user, text in [
        (cast.alice, "What is 7 squared?"),
        (cast.bob, "what is 7 squared"),
        (cast.alice, "Rare one?"),
    ]:
        Question.objects.create(
            user=user, text=text, key=question_key(text), outcome="refused", refusal="busy"
        )
    Question.objects.create(user=cast.alice, text="banked", key="b", outcome="hit", bank_hit=True)
    groups = bank.missed_groups()
    assert [(g["count"], g["text"].lower().rstrip("?")) for g in groups] == [
        (2, "what is 7 squared"),
        (1, "rare one"),
    ]
    page = client_for(cast.teacher).get("/missed").content.decode()
    assert "what is 7 squared" in page.lower() and "banked" not in page
    add = (
        client_for(cast.teacher)
        .get(f"/bank/new?from_question={groups[0]['example_id']}")
        .content.decode()
    )
    assert "What is 7 squared?" in add or "what is 7 squared" in add


@pytest.mark.parametrize("enabled", [True, False])
def test_student_sign_up_can_be_turned_off(db, settings, enabled):
    settings.SUANJING_SIGNUP = enabled
    client = Client()
    response = client.post(
        "/signup",
        {"username": "carol", "password1": "a-long-pass-123", "password2": "a-long-pass-123"},
    )
    if enabled:
        assert response.status_code == 302
        from django.contrib.auth.models import User

        carol = User.objects.get(username="carol")
        assert (
            list(carol.groups.values_list("name", flat=True)) == ["student"] and not carol.is_staff
        )
        assert client.get("/bank").status_code == 403
    else:
        assert response.status_code == 404


# -- math and untrusted text --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "present", "absent"),
    [
        ("<script>alert(1)</script>", ["&lt;script&gt;"], ["<script"]),
        ("所以答案是 \\boxed{\\frac{1}{2}}", ["<menclose", "<mfrac>"], ["\\boxed"]),
        ("inline $x^2$ math", ["<msup>", "inline "], ["$x"]),
        ("display \\[a+b\\]", ['display="block"'], ["\\["]),
        ("$\\text{<img src=x onerror=alert(1)>}$", ["<math"], ["<img", "onerror"]),
        ("costs $5 and $6", ["costs $5 and $6"], ["<math"]),
        ("broken \\boxed{", ["broken \\boxed{"], ["<math"]),
        ("a & b\n\nnew paragraph", ["a &amp; b</p><p>new paragraph"], []),
    ],
)
def test_math_renders_as_mathml_and_everything_else_is_escaped(text, present, absent):
    html = render_math_text(text)
    for piece in present:
        assert piece in html
    for piece in absent:
        assert piece not in html


# -- commands -------------------------------------------------------------------------------------------


def test_load_bank_is_idempotent(db, settings):
    out = io.StringIO()
    call_command("load_bank", stdout=out)
    total = Problem.objects.count()
    assert total >= 300 and "0 bad lines" in out.getvalue()
    solutions = Solution.objects.count()
    assert solutions >= 100 and not Solution.objects.exclude(status="approved").exists()
    assert Problem.objects.filter(lang="en").exists() and Problem.objects.filter(lang="zh").exists()
    out = io.StringIO()
    call_command("load_bank", stdout=out)
    assert f"0 problems added, {total} already in the bank" in out.getvalue()
    assert (Problem.objects.count(), Solution.objects.count()) == (total, solutions)


def test_load_bank_reports_bad_lines(db, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"id": "a", "text": "1+1=?", "reference_answer": "2"}\nnot json\n{"id": "b", "text": ""}\n[1]\n',
        encoding="utf-8",
    )
    out, err = io.StringIO(), io.StringIO()
    call_command("load_bank", str(path), stdout=out, stderr=err)
    assert "1 problems added" in out.getvalue() and "3 bad lines" in out.getvalue()
    assert "line 2" in err.getvalue() and "line 3" in err.getvalue()
    with pytest.raises(CommandError):
        call_command("load_bank", str(tmp_path / "missing.jsonl"))


def test_setup_demo_makes_roles_and_refuses_production(db, settings):
    settings.DEBUG = True  # pytest-django runs tests with DEBUG off
    out = io.StringIO()
    call_command("setup_demo", stdout=out)
    from django.contrib.auth import authenticate

    for line in out.getvalue().splitlines()[:3]:
        role, _, username, _, password = line.split()
        user = authenticate(username=username, password=password)
        assert user is not None
        assert (role == "admin") == user.is_staff
    settings.DEBUG = False
    with pytest.raises(CommandError, match="development only"):
        call_command("setup_demo")
    call_command("setup_demo", "--groups-only", stdout=io.StringIO())


def test_api_token_prints_a_working_token(db, site):
    out = io.StringIO()
    call_command("api_token", "mrs_li", "--create", "--role", "teacher", stdout=out)
    token = out.getvalue().strip()
    assert Client().get("/api/problems", **bearer(token)).status_code == 200
    with pytest.raises(CommandError):
        call_command("api_token", "nobody")


# -- the bank's search: Chinese by characters in order with small gaps, English by words ----------

SEARCH_BANK = {
    "rabbits": "笼子里有若干只鸡和兔子，共有35个头，94只脚。",
    "cage": "鸡兔同笼，头35，脚94，问鸡兔各几只？",
    "far": "鸡蛋每个2元，买了5个；另有一本书叫《小白兔》，多少钱？",
    "rect": "一个长方形的面积是24平方厘米，长是6厘米，宽是多少？",
    "square": "What is the area of a Square with side 5?",
    "squares": "The sum of two squares is 25; find them.",
}
SEARCH_CASES = [
    # (query, the problems found, in order)
    ("鸡兔", ["cage", "rabbits"]),  # the exact phrasing ranks first; 鸡和兔 is a gap of one
    ("鸡和兔子", ["rabbits"]),
    ("兔鸡", []),  # in order only
    ("鸡 兔", ["rabbits", "cage", "far"]),  # two terms: each anywhere, both as typed
    ("长方形面积", ["rect"]),  # 长方形的面积
    ("面积", ["rect"]),
    ("鸡书", []),  # 鸡 and 书 are 17 characters apart: too far
    ("square", ["square", "squares"]),  # case-insensitive
    ("AREA square", ["square"]),
    ("the 面积", []),
    ("", ["rabbits", "cage", "far", "rect", "square", "squares"]),
]


@pytest.mark.parametrize("query, expected", SEARCH_CASES)
def test_the_bank_search_finds_chinese_inside_longer_phrasings(make_problem, query, expected):
    ids = {name: make_problem(text).pk for name, text in SEARCH_BANK.items()}
    names = {pk: name for name, pk in ids.items()}
    found = bank.search_problems(Problem.objects.all(), query)
    ordered = found.order_by("search_rank", "id") if query.strip() else found.order_by("id")
    assert [names[p.pk] for p in ordered] == expected


def test_the_bank_page_lists_the_best_matches_first(cast, site, make_problem):
    loose = make_problem("笼子里有若干只鸡和兔子，共有35个头，94只脚。")
    exact = make_problem("鸡兔同笼，头35，脚94，问鸡兔各几只？")
    page = client_for(cast.teacher).get("/bank", {"q": "鸡兔"}).content.decode()
    assert "2 problems" in page
    assert page.index(f"/bank/{exact.pk}") < page.index(f"/bank/{loose.pk}")
    api = client_for(cast.teacher).get("/api/problems", {"q": "鸡兔"}).json()
    assert sorted(item["id"] for item in api["items"]) == sorted([loose.pk, exact.pk])


# -- notices in both languages ---------------------------------------------------------------------

SIGNUP_ERRORS = [
    # (password1, password2, the English and the Chinese the page shows)
    ("123", "123", ["Too short: at least 8 characters.", "密码太短：至少8个字符。"]),
    ("12345678901", "12345678901", ["Not only digits", "密码不能全是数字"]),
    ("password123", "password123", ["Too common", "密码太常见"]),
    ("quiet-river-93", "quiet-river-94", ["didn’t match", "输入的两个密码不一致"]),
]


@pytest.mark.parametrize("password1, password2, expected", SIGNUP_ERRORS)
def test_signup_errors_are_in_both_languages(settings, db, password1, password2, expected):
    settings.SUANJING_SIGNUP = True
    response = Client().post(
        "/signup", {"username": "carol", "password1": password1, "password2": password2}
    )
    page = html.unescape(response.content.decode())
    assert response.status_code == 200
    for text in expected:
        assert text in page, text


def test_the_signup_and_login_pages_speak_both_languages(cast, settings):
    settings.SUANJING_SIGNUP = True
    signup = html.unescape(Client().get("/signup").content.decode())
    for text in ("Username 用户名", "Password 密码", "Password again 再次输入密码", "创建账号"):
        assert text in signup
    taken = Client().post(
        "/signup",
        {"username": "alice", "password1": "quiet-river-93", "password2": "quiet-river-93"},
    )
    assert "already exists" in taken.content.decode() and "已存在" in taken.content.decode()
    wrong = Client().post("/accounts/login/", {"username": "alice", "password": "nope"})
    page = html.unescape(wrong.content.decode())
    assert "Wrong username or password" in page and "用户名或密码不正确" in page
    assert "No account? Sign up as a student 没有账号？学生注册" in page


def test_teachers_notices_are_in_both_languages(cast, banked):
    problem, solution = banked
    client = client_for(cast.teacher)
    response = client.post(f"/solutions/{solution.pk}/review", {"status": "approved"}, follow=True)
    notices = [str(m) for m in response.context["messages"]]
    assert notices == [f"Answer {solution.pk}: approved 已通过."]
