"""Classes and homework (issue 12): join codes, importing a class list, homework, the class page and a
student's page, and who may see what (a second teacher gets 404s, a student 403s on teacher pages).

The asks go through the real site path (`/ask/submit`, the asking service) on the stand-in exact-text
cache; the browser journey is in tests/test_browser.py.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tutor import errors
from tutor.forms import AssignForm
from tutor.models import Assignment, Classroom, Membership, Problem, Question
from tutor.services import classes


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def teacher2(cast):
    from django.contrib.auth.models import Group

    user = User.objects.create_user("teacher2", password="pw-teacher2")
    user.groups.add(Group.objects.get(name="teacher"))
    return user


@pytest.fixture
def klass(cast):
    """The teacher's class with alice in it (bob is in no class)."""
    classroom = classes.create_classroom(teacher=cast.teacher, name="五年级二班")
    classes.join_classroom(student=cast.alice, code=classroom.join_code)
    return classroom


@pytest.fixture
def problem(site, make_problem):
    return make_problem(
        "鸡兔同笼，共有35个头，94只脚，问兔有多少只？",
        reference="12",
        solutions=(("approved", "12"),),
    )


# -- services --------------------------------------------------------------------------------------


def test_a_class_gets_a_readable_code_that_a_new_one_replaces(cast):
    classroom = classes.create_classroom(teacher=cast.teacher, name="Class 5B")
    code = classroom.join_code
    assert len(code) == 8 and set(code) <= set(classes.CODE_ALPHABET)
    assert not set(code) & set("01OIl")  # nothing that reads two ways on a board
    new = classes.rotate_join_code(classroom=classroom)
    assert new != code and Classroom.objects.get(pk=classroom.pk).join_code == new
    with pytest.raises(errors.BadJoinCode):
        classes.join_classroom(student=cast.alice, code=code)  # the old code no longer works
    # What a student types: lower case, spaces, a dash in the middle.
    typed = f" {new[:4].lower()}-{new[4:].lower()} "
    assert classes.join_classroom(student=cast.alice, code=typed) == (classroom, True)
    assert classes.join_classroom(student=cast.alice, code=new) == (classroom, False)
    assert Membership.objects.filter(classroom=classroom, student=cast.alice).count() == 1


def roster(*rows: str, encoding: str = "utf-8") -> bytes:
    return "\n".join(rows).encode(encoding)


@pytest.mark.parametrize(
    "data, expected",
    [
        (
            roster("username,name", "liming,李明", "wangfang,王芳"),
            [("liming", "李明"), ("wangfang", "王芳")],
        ),
        (roster("用户名,姓名", "liming,李明"), [("liming", "李明")]),
        (roster("liming,李明", "", "  ,  ", "zhang.wei"), [("liming", "李明"), ("zhang.wei", "")]),
        ("\ufeffliming,李明\r\n".encode(), [("liming", "李明")]),  # Excel's UTF-8 with a BOM
        (roster("liming,李明", encoding="gbk"), [("liming", "李明")]),  # Excel on Chinese Windows
        (roster('"liming"," 李明 "'), [("liming", "李明")]),
    ],
)
def test_a_class_list_is_read_from_the_csv_files_teachers_have(db, data, expected):
    assert classes.read_roster(data) == expected


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", "no students"),
        (roster("username,name"), "no students"),
        (roster("li ming,李明"), "row 1: “li ming” is not a username"),
        (roster("liming,李明", "LiMing,李明"), "row 2: “LiMing” is also on row 1"),
        (roster("alice,Alice"), "row 1: the username “alice” is taken"),
        (roster("ALICE,Alice"), "row 1: the username “ALICE” is taken"),
        (roster("x" * 151), "is not a username"),
        (roster(*[f"s{i}," for i in range(classes.ROSTER_MAX_ROWS + 1)]), "At most 200"),
        (b"\xff\xfe\x00\x00" * 10 + b"\x81", "not text"),
    ],
)
def test_a_bad_class_list_says_what_to_fix_and_imports_nothing(cast, data, problem):
    klass = classes.create_classroom(teacher=cast.teacher, name="5B")
    before = User.objects.count()
    with pytest.raises(errors.BadRoster) as caught:
        classes.import_roster(classroom=klass, data=data)
    said = " ".join([str(caught.value), *caught.value.problems])
    assert problem in said
    assert User.objects.count() == before


def test_importing_makes_student_accounts_without_email_with_valid_passwords(cast, klass):
    accounts = classes.import_roster(
        classroom=klass, data=roster("username,name", "liming,李明", "wangfang,=王芳")
    )
    assert [a.username for a in accounts] == ["liming", "wangfang"]
    for account in accounts:
        user = User.objects.get(username=account.username)
        assert user.email == "" and user.first_name == account.name
        assert user.groups.filter(name="student").exists()
        assert user.check_password(account.password)
        validate_password(account.password, user)  # the site's validators accept it
        assert Membership.objects.filter(classroom=klass, student=user).exists()
    assert len({a.password for a in accounts}) == 2
    rows = list(csv.reader(io.StringIO(classes.passwords_csv(accounts))))
    assert rows[0] == ["\ufeffusername", "name", "password"]  # a BOM: Excel reads the Chinese
    assert rows[1] == ["liming", "李明", accounts[0].password]
    assert rows[2][1] == "'=王芳"  # a spreadsheet never runs a cell as a formula


def test_assign_form_takes_bank_problem_numbers_only(cast, klass, problem, make_problem):
    classes_of = Classroom.objects.taught_by(cast.teacher)
    other = make_problem("另一道题", source=Problem.Source.STUDENT)
    form = AssignForm(
        {"classroom": klass.pk, "problems": f"#{problem.pk}，{problem.pk}"}, classes=classes_of
    )
    assert form.is_valid(), form.errors
    assert form.cleaned_data["problems"] == [problem] and form.cleaned_data["due"] is None
    for raw, said in [
        (f"{other.pk}", "Not in the bank"),
        ("99999", "Not in the bank: #99999"),
        ("twelve", "is not a problem number"),
    ]:
        form = AssignForm({"classroom": klass.pk, "problems": raw}, classes=classes_of)
        assert not form.is_valid() and said in str(form.errors["problems"])


def test_assigning_again_moves_the_due_date(cast, klass, problem):
    due = dt.date(2030, 5, 1)
    [first] = classes.assign_problems(
        classroom=klass, problems=[problem], due=None, teacher=cast.teacher
    )
    [again] = classes.assign_problems(
        classroom=klass, problems=[problem], due=due, teacher=cast.teacher
    )
    assert first.pk == again.pk and Assignment.objects.get(pk=first.pk).due == due


def ask(user, text: str) -> Question:
    response = client_for(user).post("/ask/submit", {"question": text})
    assert response.status_code == 302, response.content[:300]
    return Question.objects.filter(user=user).first()


def test_the_class_report_shows_who_asked_got_an_answer_or_flagged(
    cast, klass, problem, make_problem
):
    cast.bob.memberships.create(classroom=klass)
    held = make_problem(
        "一个数的3倍是36，这个数是多少？"
    )  # no answer yet: asking it is refused (no model)
    classes.assign_problems(
        classroom=klass, problems=[problem, held], due=None, teacher=cast.teacher
    )
    hit = ask(cast.alice, problem.text)
    assert hit.outcome == "hit" and hit.problem_id == problem.pk
    flagged = ask(cast.bob, problem.text)
    client_for(cast.bob).post(f"/questions/{flagged.pk}/feedback")
    report = {r.assignment.problem_id: r for r in classes.class_report(classroom=klass)}
    mine = report[problem.pk]
    assert mine.asked == 2 and mine.not_asked == 0 and mine.students == 2
    assert [w.student for w in mine.flagged] == [cast.bob]
    assert all(w.served for w in mine.work)
    assert report[held.pk].asked == 0 and report[held.pk].not_asked == 2
    assert flagged.pk in [q.pk for q in classes.missed_or_flagged(classroom=klass)]
    assert hit.pk not in [q.pk for q in classes.missed_or_flagged(classroom=klass)]


def test_the_homework_list_says_asked_answered_and_overdue(cast, klass, problem, make_problem):
    later = make_problem("长方形长12厘米、宽8厘米，面积是多少？", solutions=(("approved", "96"),))
    today = dt.date(2030, 5, 10)
    classes.assign_problems(
        classroom=klass, problems=[problem], due=dt.date(2030, 5, 9), teacher=cast.teacher
    )
    classes.assign_problems(classroom=klass, problems=[later], due=None, teacher=cast.teacher)
    [(classroom, items)] = classes.homework_for(student=cast.alice, classes=[klass], today=today)
    assert classroom == klass and [h.assignment.problem for h in items] == [problem, later]
    assert items[0].overdue and not items[0].asked
    ask(cast.alice, problem.text)
    [(_, items)] = classes.homework_for(student=cast.alice, classes=[klass], today=today)
    assert items[0].asked and items[0].served and not items[0].overdue


# -- pages -----------------------------------------------------------------------------------------


def test_a_teacher_makes_a_class_and_a_student_joins_it_on_their_pages(cast):
    teacher = client_for(cast.teacher)
    response = teacher.post("/classes", {"name": "  五年级  二班 "})
    klass = Classroom.objects.get(teacher=cast.teacher)
    assert response.status_code == 302 and response.url == f"/classes/{klass.pk}"
    assert klass.name == "五年级 二班"
    page = teacher.get(f"/classes/{klass.pk}").content.decode()
    assert klass.join_code in page and "Class code 班级代码" in page
    assert teacher.post("/classes", {"name": "   "}).status_code == 400

    student = client_for(cast.alice)
    assert "You are not in a class yet" in student.get("/homework").content.decode()
    wrong = student.post("/homework", {"code": "NOPE2345"})
    assert wrong.status_code == 400 and "No class has this code" in wrong.content.decode()
    assert student.post("/homework", {"code": klass.join_code.lower()}).status_code == 302
    assert "五年级 二班" in student.get("/homework").content.decode()
    assert "alice" in teacher.get(f"/classes/{klass.pk}").content.decode()
    # the navigation: teachers have Classes, students Homework
    assert "Classes 班级" in teacher.get("/ask").content.decode()
    assert "Homework 作业" in student.get("/ask").content.decode()
    assert teacher.get("/homework").url == "/classes"


def test_guessing_join_codes_is_throttled(cast, klass, monkeypatch):
    from tutor.views import classes as views

    monkeypatch.setattr(views, "JOIN_LIMIT", 3)
    bob = client_for(cast.bob)
    for _ in range(3):
        assert bob.post("/homework", {"code": "WRONG234"}).status_code == 400
    assert bob.post("/homework", {"code": klass.join_code}).status_code == 429
    assert not Membership.objects.filter(student=cast.bob).exists()


def test_homework_assigned_on_the_class_page_is_asked_from_the_homework_list(
    cast, klass, problem, make_problem
):
    fractions = make_problem("计算 $\\frac{1}{2}+\\frac{1}{3}$ 的值。")
    teacher = client_for(cast.teacher)
    response = teacher.post(
        "/classes/assign",
        {"classroom": klass.pk, "problems": f"{problem.pk}, {fractions.pk}", "due": "2030-05-01"},
    )
    assert response.status_code == 302 and response.url == f"/classes/{klass.pk}"
    assert Assignment.objects.get(classroom=klass, problem=problem).due == dt.date(2030, 5, 1)
    bad = teacher.post("/classes/assign", {"classroom": klass.pk, "problems": "99999"})
    assert bad.status_code == 400 and "Not in the bank: #99999" in bad.content.decode()

    student = client_for(cast.alice)
    page = student.get("/homework").content.decode()
    assert "Due 截止 2030-05-01" in page and "Not asked yet 未提问" in page
    # the problem's text through the mathtext filter (the hidden "Ask this" field keeps the raw text)
    shown = page.split(f'id="homework-{fractions.assignments.get().pk}"')[1].split("<form")[0]
    assert "<mfrac>" in shown and "$" not in shown
    assert f'name="question" value="{problem.text}"' in page  # "Ask this" asks the problem itself
    question = ask(cast.alice, problem.text)
    page = student.get("/homework").content.decode()
    assert "Answered 已解答" in page and f"/questions/{question.pk}" in page

    page = teacher.get(f"/classes/{klass.pk}").content.decode()
    assert "asked by 1 of 1" in page and f"/questions/{question.pk}" in page


def test_a_problem_page_assigns_it_to_one_of_the_teachers_classes(cast, klass, problem, teacher2):
    theirs = classes.create_classroom(teacher=teacher2, name="Their class")
    teacher = client_for(cast.teacher)
    page = teacher.get(f"/bank/{problem.pk}").content.decode()
    assert 'id="assign-box"' in page and klass.name in page and "Their class" not in page
    response = teacher.post(
        "/classes/assign",
        {"classroom": klass.pk, "problems": str(problem.pk), "next": f"/bank/{problem.pk}"},
    )
    assert response.status_code == 302 and response.url == f"/bank/{problem.pk}"
    assert 'id="assigned-in"' in teacher.get(f"/bank/{problem.pk}").content.decode()
    # Another teacher's class is not a choice (and nothing is assigned to it).
    teacher.post(
        "/classes/assign",
        {"classroom": theirs.pk, "problems": str(problem.pk), "next": f"/bank/{problem.pk}"},
    )
    assert not theirs.assignments.exists()
    # an off-site `next` is ignored
    response = teacher.post(
        "/classes/assign",
        {"classroom": klass.pk, "problems": str(problem.pk), "next": "https://evil.example/"},
    )
    assert response.url == f"/classes/{klass.pk}"


def test_an_imported_class_list_gives_passwords_once_that_sign_students_in(cast, klass):
    teacher = client_for(cast.teacher)
    upload = SimpleUploadedFile(
        "5b.csv", roster("username,name", "liming,李明", "wangfang,王芳"), "text/csv"
    )
    response = teacher.post(f"/classes/{klass.pk}/import", {"file": upload})
    assert response.status_code == 302
    page = teacher.get(f"/classes/{klass.pk}").content.decode()
    assert 'id="download-passwords"' in page and "李明" in page
    assert teacher.get(f"/classes/{klass.pk}/passwords").status_code == 405  # a POST only
    download = teacher.post(f"/classes/{klass.pk}/passwords")
    assert download.status_code == 200 and download["Content-Type"].startswith("text/csv")
    assert "attachment" in download["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(download.content.decode("utf-8-sig"))))
    assert [r[0] for r in rows] == ["username", "liming", "wangfang"]
    assert teacher.post(f"/classes/{klass.pk}/passwords").status_code == 404  # once
    assert 'id="download-passwords"' not in teacher.get(f"/classes/{klass.pk}").content.decode()
    # The password signs the student in (through the real login form and its throttling backend).
    signed_in = Client().post("/accounts/login/", {"username": "liming", "password": rows[1][2]})
    assert signed_in.status_code == 302
    # A bad file: every row to fix is listed, nothing imported.
    upload = SimpleUploadedFile("bad.csv", roster("li ming,x", "alice,y"), "text/csv")
    response = teacher.post(f"/classes/{klass.pk}/import", {"file": upload})
    page = response.content.decode()
    assert response.status_code == 400 and "row 1" in page and "row 2" in page
    assert not User.objects.filter(username="li ming").exists()


def test_a_students_page_lists_their_questions_and_homework(cast, klass, problem):
    classes.assign_problems(classroom=klass, problems=[problem], due=None, teacher=cast.teacher)
    question = ask(cast.alice, problem.text)
    page = client_for(cast.teacher).get(f"/classes/students/{cast.alice.pk}").content.decode()
    assert f"/questions/{question.pk}" in page and "answered 已解答" in page
    assert "1 question 个提问" in page


def test_a_teacher_removes_homework_and_a_student(cast, klass, problem):
    [assignment] = classes.assign_problems(
        classroom=klass, problems=[problem], due=None, teacher=cast.teacher
    )
    teacher = client_for(cast.teacher)
    assert teacher.post(f"/classes/homework/{assignment.pk}/remove").status_code == 302
    assert not Assignment.objects.exists()
    membership = Membership.objects.get(classroom=klass, student=cast.alice)
    assert teacher.post(f"/classes/members/{membership.pk}/remove").status_code == 302
    assert not Membership.objects.exists() and User.objects.filter(pk=cast.alice.pk).exists()


# -- who may see what ------------------------------------------------------------------------------


def teacher_urls(klass: Classroom, assignment: Assignment, membership: Membership, student: User):
    return {
        "get": [
            f"/classes/{klass.pk}",
            f"/classes/students/{student.pk}",
        ],
        "post": [
            f"/classes/{klass.pk}/code",
            f"/classes/{klass.pk}/import",
            f"/classes/{klass.pk}/passwords",
            f"/classes/homework/{assignment.pk}/remove",
            f"/classes/members/{membership.pk}/remove",
        ],
    }


@pytest.fixture
def everything(cast, klass, problem):
    [assignment] = classes.assign_problems(
        classroom=klass, problems=[problem], due=None, teacher=cast.teacher
    )
    membership = Membership.objects.get(classroom=klass, student=cast.alice)
    return teacher_urls(klass, assignment, membership, cast.alice)


def test_another_teacher_cannot_know_the_class_exists(cast, klass, problem, teacher2, everything):
    other = client_for(teacher2)
    for url in everything["get"]:
        assert other.get(url).status_code == 404, url
    for url in everything["post"]:
        assert other.post(url).status_code == 404, url
    code = klass.join_code
    assert code not in other.get("/classes").content.decode()
    response = other.post("/classes/assign", {"classroom": klass.pk, "problems": str(problem.pk)})
    assert response.status_code == 404
    klass.refresh_from_db()
    assert klass.join_code == code and Membership.objects.filter(classroom=klass).count() == 1
    assert Assignment.objects.filter(classroom=klass).count() == 1
    # A student of the other teacher's class is not theirs to see either.
    assert other.get(f"/classes/students/{cast.bob.pk}").status_code == 404


def test_a_student_gets_403_on_every_teacher_page(cast, klass, problem, everything):
    for who in (cast.alice, cast.bob):  # in the class and not
        student = client_for(who)
        assert student.get("/classes").status_code == 403
        assert student.post("/classes", {"name": "mine"}).status_code == 403
        for url in everything["get"]:
            assert student.get(url).status_code == 403, url
        for url in everything["post"]:
            assert student.post(url).status_code == 403, url
        assigned = student.post("/classes/assign", {"classroom": klass.pk, "problems": problem.pk})
        assert assigned.status_code == 403
    assert not Classroom.objects.filter(name="mine").exists()
    assert Assignment.objects.count() == 1 and Membership.objects.count() == 1


def test_a_student_sees_only_their_own_classes(cast, klass, problem, teacher2):
    theirs = classes.create_classroom(teacher=teacher2, name="Class 5C")
    classes.join_classroom(student=cast.bob, code=theirs.join_code)
    classes.assign_problems(classroom=theirs, problems=[problem], due=None, teacher=teacher2)
    alice = client_for(cast.alice).get("/homework").content.decode()
    assert klass.name in alice and "Class 5C" not in alice and "鸡兔同笼" not in alice
    bob = client_for(cast.bob).get("/homework").content.decode()
    assert "Class 5C" in bob and klass.name not in bob and "鸡兔同笼" in bob


def test_an_admin_sees_every_class_and_anonymous_users_sign_in_first(cast, klass, teacher2):
    theirs = classes.create_classroom(teacher=teacher2, name="Their class")
    admin = client_for(cast.admin)
    listing = admin.get("/classes").content.decode()
    assert klass.name in listing and "Their class" in listing
    assert admin.get(f"/classes/{theirs.pk}").status_code == 200
    anonymous = Client()
    for url in ("/classes", f"/classes/{klass.pk}", "/homework"):
        response = anonymous.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response.url


# -- a teacher resets a student's password ---------------------------------------------------------


def test_a_teacher_resets_a_class_students_password_shown_once(cast, klass):
    teacher = client_for(cast.teacher)
    page = teacher.get(f"/classes/students/{cast.alice.pk}").content.decode()
    assert f'action="/classes/students/{cast.alice.pk}/password"' in page
    response = teacher.post(f"/classes/students/{cast.alice.pk}/password")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    password = response.context["password"]
    assert password in response.content.decode() and "只显示这一次" in response.content.decode()
    validate_password(password, cast.alice)  # the site's validators accept it
    cast.alice.refresh_from_db()
    assert cast.alice.check_password(password)
    again = teacher.post(f"/classes/students/{cast.alice.pk}/password").context["password"]
    cast.alice.refresh_from_db()
    assert again != password and not cast.alice.check_password(password)
    assert teacher.get(f"/classes/students/{cast.alice.pk}/password").status_code == 405


def test_a_password_reset_ends_the_students_sessions(cast, klass):
    alice = client_for(cast.alice)
    assert alice.get("/ask").status_code == 200
    client_for(cast.teacher).post(f"/classes/students/{cast.alice.pk}/password")
    assert alice.get("/ask").status_code == 302  # signed out: to the login page


@pytest.mark.parametrize(
    "who, target, status",
    [
        ("teacher", "bob", 404),  # in no class of the teacher's
        ("teacher2", "alice", 404),  # another teacher's student
        ("alice", "bob", 403),  # students reset nobody's
        ("alice", "alice", 403),
        ("teacher", "teacher2", 404),  # a teacher who sits in the class
        ("teacher", "admin", 404),  # an admin who sits in the class
        ("admin", "teacher2", 404),  # not even an admin, through this page
    ],
)
def test_only_a_class_students_password_can_be_reset(cast, klass, teacher2, who, target, status):
    users = {"teacher2": teacher2, **vars(cast)}
    for sitting in (teacher2, cast.admin):
        Membership.objects.create(classroom=klass, student=sitting)
    before = User.objects.get(pk=users[target].pk).password
    response = client_for(users[who]).post(f"/classes/students/{users[target].pk}/password")
    assert response.status_code == status
    assert User.objects.get(pk=users[target].pk).password == before
