"""Renaming, archiving and unarchiving a class (issue 12): only the class's teacher (or an admin) may;
another teacher gets a 404, a student a 403. An archived class keeps every record, leaves the teacher's
default list, admits no one with its code, takes no homework or imported students, and its homework
leaves its students' homework lists. The browser journey is in tests/test_teacher_browser.py.
"""

from __future__ import annotations

import html

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests import test_classes
from tests.site_fixtures import *  # noqa: F403
from tests.test_classes import client_for
from tutor import errors
from tutor.models import Assignment, Classroom, Membership, Question
from tutor.services import classes

# The class tests' fixtures: the teacher's class with alice in it, a second teacher, a banked problem.
klass, teacher2, problem = test_classes.klass, test_classes.teacher2, test_classes.problem


def page(response) -> str:
    return html.unescape(response.content.decode())


def notices(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# -- renaming --------------------------------------------------------------------------------------


def test_a_teacher_renames_their_class_and_its_students_see_the_new_name(cast, klass):
    teacher = client_for(cast.teacher)
    assert "Rename or archive this class 改名或归档" in page(teacher.get(f"/classes/{klass.pk}"))
    response = teacher.post(f"/classes/{klass.pk}/rename", {"name": "  六年级  二班 "}, follow=True)
    klass.refresh_from_db()
    assert klass.name == "六年级 二班"  # spaces tidied as when a class is made
    assert notices(response) == [
        "“五年级二班” is now called “六年级 二班”; its students see the new name. 班级已改名为“六年级 二班”。"
    ]
    assert "六年级 二班" in page(client_for(cast.alice).get("/homework"))


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_a_class_cannot_be_renamed_to_nothing_or_too_long(cast, klass, name):
    response = client_for(cast.teacher).post(f"/classes/{klass.pk}/rename", {"name": name})
    assert response.status_code == 400
    text = page(response)
    assert 'id="class-settings" open' in text and "errorlist" in text  # the error, unfolded
    klass.refresh_from_db()
    assert klass.name == "五年级二班"


# -- archiving -------------------------------------------------------------------------------------


def test_an_archived_class_leaves_the_default_list_and_keeps_its_records(cast, klass, problem):
    classes.assign_problems(classroom=klass, problems=[problem], due=None, teacher=cast.teacher)
    alice = client_for(cast.alice)
    alice.post("/ask/submit", {"question": problem.text})
    assert Question.objects.filter(user=cast.alice, problem=problem).exists()
    teacher = client_for(cast.teacher)
    response = teacher.post(f"/classes/{klass.pk}/archive", {"action": "archive"}, follow=True)
    [notice] = notices(response)
    assert notice.startswith("“五年级二班” is archived: it is off your class list")
    assert "已归档" in notice
    klass.refresh_from_db()
    assert klass.archived_at is not None
    # The class page still shows everything, says it is archived and offers to bring it back.
    text = page(response)
    assert "Archived on" in text and "Unarchive 恢复" in text
    assert "alice" in text and f"#{problem.pk}" in text
    assert 'id="join-code"' not in text and 'id="assign-form"' not in text
    assert 'id="roster-form"' not in text and 'id="archive-button"' not in text
    # Off the default list, behind "Show archived (1)".
    listing = page(teacher.get("/classes"))
    link = f'href="/classes/{klass.pk}"'
    assert link not in listing and "Show archived 显示已归档 (1)" in listing
    shown = page(teacher.get("/classes?archived=1"))
    assert "Archived classes 已归档的班级" in shown and link in shown
    assert "Hide archived 隐藏已归档" in shown
    # Nothing was deleted.
    assert Membership.objects.filter(classroom=klass).count() == 1
    assert Assignment.objects.filter(classroom=klass).count() == 1
    assert Question.objects.filter(user=cast.alice).count() == 1
    # Archiving twice keeps the first date.
    first = klass.archived_at
    teacher.post(f"/classes/{klass.pk}/archive", {"action": "archive"})
    klass.refresh_from_db()
    assert klass.archived_at == first


def test_the_code_of_an_archived_class_admits_no_one_and_says_why(cast, klass):
    classes.archive_classroom(classroom=klass)
    response = client_for(cast.bob).post("/homework", {"code": klass.join_code})
    assert response.status_code == 400
    text = page(response)
    assert "archived by its teacher and takes no new students" in text
    assert "这个班级已被老师归档" in text
    assert not Membership.objects.filter(student=cast.bob).exists()
    with pytest.raises(errors.BadJoinCode):
        classes.join_classroom(
            student=cast.alice, code=klass.join_code
        )  # already in: still refused
    # A wrong code still gets the usual message (the archived one is only for a right code).
    wrong = page(client_for(cast.bob).post("/homework", {"code": "ZZZZ2222"}))
    assert "No class has this code" in wrong


def test_an_archived_classes_homework_leaves_the_students_list(cast, klass, problem, make_problem):
    current = classes.create_classroom(teacher=cast.teacher, name="Maths club")
    classes.join_classroom(student=cast.alice, code=current.join_code)
    other = make_problem("小红有8支铅笔，又买了4支，一共有几支？", reference="12")
    classes.assign_problems(classroom=klass, problems=[problem], due=None, teacher=cast.teacher)
    classes.assign_problems(classroom=current, problems=[other], due=None, teacher=cast.teacher)
    alice = client_for(cast.alice)
    before = page(alice.get("/homework"))
    assert "鸡兔同笼" in before and "小红有8支铅笔" in before
    classes.archive_classroom(classroom=klass)
    after = page(alice.get("/homework"))
    assert "鸡兔同笼" not in after and "小红有8支铅笔" in after
    assert 'id="class-' + str(klass.pk) + '"' not in after
    assert "Finished classes 已结束的班级: 五年级二班" in after
    # Only archived classes: no "you are not in a class" either, the finished class is named.
    classes.archive_classroom(classroom=current)
    only = page(alice.get("/homework"))
    assert "You are not in a class yet" not in only and "Maths club" in only
    # The teacher's page of the student still lists it, marked archived.
    student_page = page(client_for(cast.teacher).get(f"/classes/students/{cast.alice.pk}"))
    assert "鸡兔同笼" in student_page and "archived 已归档" in student_page


def test_an_archived_class_takes_no_homework_and_no_imported_students(cast, klass, problem):
    classes.archive_classroom(classroom=klass)
    teacher = client_for(cast.teacher)
    response = teacher.post("/classes/assign", {"classroom": klass.pk, "problems": problem.pk})
    assert response.status_code == 400
    assert "one of your classes that is not archived" in page(response)
    upload = SimpleUploadedFile("class.csv", b"carol,Carol\n", content_type="text/csv")
    response = teacher.post(f"/classes/{klass.pk}/import", {"file": upload})
    assert response.status_code == 400
    assert "This class is archived: unarchive it before importing students" in page(response)
    assert (
        not Assignment.objects.exists() and Membership.objects.filter(classroom=klass).count() == 1
    )
    # A problem's page offers only classes that are not archived.
    problem_page = page(teacher.get(f"/bank/{problem.pk}"))
    assert 'id="assign-box"' not in problem_page


def test_unarchiving_brings_the_class_back_with_the_same_code(cast, klass, problem):
    code = klass.join_code
    classes.assign_problems(classroom=klass, problems=[problem], due=None, teacher=cast.teacher)
    classes.archive_classroom(classroom=klass)
    teacher = client_for(cast.teacher)
    response = teacher.post(f"/classes/{klass.pk}/archive", {"action": "unarchive"}, follow=True)
    [notice] = notices(response)
    assert f"its code {code} admits students again" in notice and "已恢复" in notice
    klass.refresh_from_db()
    assert klass.archived_at is None and klass.join_code == code
    assert f'href="/classes/{klass.pk}"' in page(teacher.get("/classes"))
    assert "鸡兔同笼" in page(client_for(cast.alice).get("/homework"))
    joined = client_for(cast.bob).post("/homework", {"code": code}, follow=True)
    assert notices(joined) == ["You joined 五年级二班. 你已加入五年级二班。"]


def test_archive_takes_archive_or_unarchive_and_nothing_else(cast, klass):
    teacher = client_for(cast.teacher)
    assert teacher.post(f"/classes/{klass.pk}/archive", {"action": "delete"}).status_code == 400
    assert teacher.post(f"/classes/{klass.pk}/archive").status_code == 400
    assert teacher.get(f"/classes/{klass.pk}/archive").status_code == 405
    assert teacher.get(f"/classes/{klass.pk}/rename").status_code == 405
    klass.refresh_from_db()
    assert klass.archived_at is None


# -- who may -------------------------------------------------------------------------------------


ACTIONS = [
    ("rename", {"name": "Taken over"}),
    ("archive", {"action": "archive"}),
    ("archive", {"action": "unarchive"}),
]


@pytest.mark.parametrize(("action", "data"), ACTIONS)
def test_another_teacher_gets_404_and_a_student_403(cast, klass, teacher2, action, data):
    if data.get("action") == "unarchive":
        classes.archive_classroom(classroom=klass)
    before = Classroom.objects.values("name", "archived_at").get(pk=klass.pk)
    url = f"/classes/{klass.pk}/{action}"
    assert client_for(teacher2).post(url, data).status_code == 404
    for student in (cast.alice, cast.bob):  # in the class and not
        assert client_for(student).post(url, data).status_code == 403
    assert Classroom.objects.values("name", "archived_at").get(pk=klass.pk) == before
    missing = f"/classes/{klass.pk + 1000}/{action}"
    assert client_for(cast.teacher).post(missing, data).status_code == 404
    # Another teacher's archived classes are not listed to them either.
    assert f'href="/classes/{klass.pk}"' not in page(
        client_for(teacher2).get("/classes?archived=1")
    )


def test_an_admin_may_rename_and_archive_any_class(cast, klass):
    admin = client_for(cast.admin)
    assert admin.post(f"/classes/{klass.pk}/rename", {"name": "Renamed"}).status_code == 302
    assert admin.post(f"/classes/{klass.pk}/archive", {"action": "archive"}).status_code == 302
    klass.refresh_from_db()
    assert klass.name == "Renamed" and klass.archived_at is not None


def test_anonymous_users_sign_in_first(cast, klass):
    from django.test import Client

    for url, data in (("rename", {"name": "x"}), ("archive", {"action": "archive"})):
        response = Client().post(f"/classes/{klass.pk}/{url}", data)
        assert response.status_code == 302 and "/accounts/login/" in response.url
