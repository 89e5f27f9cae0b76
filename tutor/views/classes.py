"""Pages for classes and homework (issue 12). Teachers: their classes (archived ones on request), a class
page (join code, homework with who asked what, students, the class list import and its passwords,
renaming and archiving), a student's page. Students: their homework and joining a class with a code.
An archived class keeps every record; it admits no one and its homework leaves its students' lists.

Thin: permission -> form -> service -> response. A teacher's page is a 403 for a student and another
teacher's class or student is a 404 (`permissions.classroom_for` and its siblings). The initial passwords
of an import wait in the teacher's own session until downloaded, once; they are stored nowhere else.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from tutor import errors, permissions, throttle
from tutor.forms import AssignForm, ClassroomForm, JoinForm, RenameForm, RosterForm
from tutor.models import Classroom, Question
from tutor.services import classes as classes_service
from tutor.services import steps as steps_service

PAGE_SIZE = 50
# Joining is throttled per student: a join code must not be guessable by trying many.
JOIN_LIMIT = 20
JOIN_WINDOW_S = 3600
PASSWORDS_KEY = "class_passwords"  # session: {class id: [[username, name, password], ...]}


def _pending_passwords(request: HttpRequest, classroom: Classroom) -> list[list[str]]:
    return request.session.get(PASSWORDS_KEY, {}).get(str(classroom.pk), [])


def _assignable(request: HttpRequest):
    """The classes this teacher may give homework to: theirs (an admin's: any), not archived."""
    return permissions.classes_visible_to(request.user).filter(archived_at__isnull=True)


# -- teachers --------------------------------------------------------------------------------------


@login_required
def class_list(request: HttpRequest) -> HttpResponse:
    permissions.require_teacher(
        request.user, "teachers only: your classes are on your homework page"
    )
    form = ClassroomForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        classroom = classes_service.create_classroom(
            teacher=request.user, name=form.cleaned_data["name"]
        )
        messages.success(
            request,
            f"Class “{classroom.name}” made. Students join with the code {classroom.join_code}. "
            f"班级已创建，学生用代码 {classroom.join_code} 加入。",
        )
        return redirect("classroom", classroom_id=classroom.pk)
    visible = permissions.classes_visible_to(request.user)
    show_archived = request.GET.get("archived") == "1"
    classes = visible.filter(archived_at__isnull=True).select_related("teacher").with_counts()
    archived = visible.filter(archived_at__isnull=False)
    return render(
        request,
        "tutor/classes/list.html",
        {
            "classes": classes,
            "archived": (
                archived.select_related("teacher").with_counts().order_by("-archived_at", "id")
                if show_archived
                else None
            ),
            "archived_count": archived.count(),
            "form": form,
        },
        status=400 if form.errors else 200,
    )


def _class_page(
    request: HttpRequest,
    classroom: Classroom,
    *,
    assign_form: AssignForm | None = None,
    roster_form: RosterForm | None = None,
    roster_problems: list[str] | None = None,
    rename_form: RenameForm | None = None,
    status: int = 200,
) -> HttpResponse:
    classes = _assignable(request)
    reports = classes_service.class_report(classroom=classroom)
    members = classes_service.class_members(classroom=classroom)
    # Who took hints or checked an answer on each homework problem (tutor.services.steps).
    needed = steps_service.needed_by(
        problem_ids=[r.assignment.problem_id for r in reports],
        student_ids=[m.student_id for m in members],
    )
    for r in reports:
        r.hints = needed.get(r.assignment.problem_id, [])
    return render(
        request,
        "tutor/classes/classroom.html",
        {
            "classroom": classroom,
            "reports": reports,
            "members": members,
            "missed": classes_service.missed_or_flagged(classroom=classroom),
            "assign_form": assign_form
            or AssignForm(classes=classes, initial={"classroom": classroom}),
            "roster_form": roster_form or RosterForm(),
            "roster_problems": roster_problems or [],
            "rename_form": rename_form or RenameForm(initial={"name": classroom.name}),
            "pending_passwords": len(_pending_passwords(request, classroom)),
            "today": timezone.localdate(),
        },
        status=status,
    )


@require_GET
@login_required
def classroom_page(request: HttpRequest, classroom_id: int) -> HttpResponse:
    return _class_page(request, permissions.classroom_for(request.user, classroom_id))


@require_POST
@login_required
def classroom_code(request: HttpRequest, classroom_id: int) -> HttpResponse:
    """A new join code: the old one stops working (students already in the class stay)."""
    classroom = permissions.classroom_for(request.user, classroom_id)
    code = classes_service.rotate_join_code(classroom=classroom)
    messages.success(
        request, f"New class code: {code}. The old one no longer works. 新代码已生效。"
    )
    return redirect("classroom", classroom_id=classroom.pk)


@require_POST
@login_required
def classroom_rename(request: HttpRequest, classroom_id: int) -> HttpResponse:
    classroom = permissions.classroom_for(request.user, classroom_id)
    form = RenameForm(request.POST)
    if not form.is_valid():
        return _class_page(request, classroom, rename_form=form, status=400)
    old = classroom.name
    classes_service.rename_classroom(classroom=classroom, name=form.cleaned_data["name"])
    messages.success(
        request,
        f"“{old}” is now called “{classroom.name}”; its students see the new name. "
        f"班级已改名为“{classroom.name}”。",
    )
    return redirect("classroom", classroom_id=classroom.pk)


@require_POST
@login_required
def classroom_archive(request: HttpRequest, classroom_id: int) -> HttpResponse:
    """Archive (`action=archive`) or bring back (`action=unarchive`) a class; nothing is deleted."""
    classroom = permissions.classroom_for(request.user, classroom_id)
    action = request.POST.get("action")
    if action == "archive":
        classes_service.archive_classroom(classroom=classroom)
        messages.success(
            request,
            f"“{classroom.name}” is archived: it is off your class list (under “Show archived”), "
            "its code admits no one, and its homework is off its students' lists. Everything it "
            "holds is kept; “Unarchive” on this page brings it back. "
            f"“{classroom.name}”已归档：不在班级列表中（见“显示已归档”），代码不能再加入，学生的作业列表不再显示它的作业。"
            "所有记录都保留；在本页点“恢复”即可恢复。",
        )
    elif action == "unarchive":
        classes_service.unarchive_classroom(classroom=classroom)
        messages.success(
            request,
            f"“{classroom.name}” is back: its code {classroom.join_code} admits students again and "
            f"its homework is on their lists. “{classroom.name}”已恢复：代码可以再次加入，作业重新显示。",
        )
    else:
        return HttpResponse("action must be archive or unarchive", status=400)
    return redirect("classroom", classroom_id=classroom.pk)


@require_POST
@login_required
def assign(request: HttpRequest) -> HttpResponse:
    """Homework for one of the teacher's classes, from the class page or a problem's page (`next`)."""
    permissions.require_teacher(request.user)
    form = AssignForm(request.POST, classes=_assignable(request))
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = ""
    if not form.is_valid():
        classroom_id = request.POST.get("classroom", "")
        if back or not classroom_id.isdigit():
            for problems in form.errors.values():
                for problem in problems:
                    messages.error(request, problem)
            return redirect(back or "classes")
        classroom = permissions.classroom_for(request.user, int(classroom_id))
        return _class_page(request, classroom, assign_form=form, status=400)
    classroom = form.cleaned_data["classroom"]
    made = classes_service.assign_problems(
        classroom=classroom,
        problems=form.cleaned_data["problems"],
        due=form.cleaned_data["due"],
        teacher=request.user,
    )
    numbers = ", ".join(f"#{a.problem_id}" for a in made)
    messages.success(
        request, f"Homework for {classroom.name}: {numbers}. 已布置给{classroom.name}：{numbers}"
    )
    return redirect(back or reverse("classroom", args=[classroom.pk]))


@require_POST
@login_required
def unassign(request: HttpRequest, assignment_id: int) -> HttpResponse:
    assignment = permissions.assignment_for(request.user, assignment_id)
    classes_service.unassign(assignment=assignment)
    messages.success(request, f"Problem #{assignment.problem_id} is no longer homework. 已取消。")
    return redirect("classroom", classroom_id=assignment.classroom_id)


@require_POST
@login_required
def remove_member(request: HttpRequest, membership_id: int) -> HttpResponse:
    membership = permissions.membership_for(request.user, membership_id)
    classes_service.remove_member(membership=membership)
    name = classes_service.display_name(membership.student)
    messages.success(
        request, f"{name} left {membership.classroom.name} (the account stays). 已移出班级。"
    )
    return redirect("classroom", classroom_id=membership.classroom_id)


@require_POST
@login_required
def roster_import(request: HttpRequest, classroom_id: int) -> HttpResponse:
    """Accounts for a class list; their initial passwords wait in this teacher's session."""
    classroom = permissions.classroom_for(request.user, classroom_id)
    form = RosterForm(request.POST, request.FILES)
    if not form.is_valid():
        return _class_page(request, classroom, roster_form=form, status=400)
    upload = form.cleaned_data["file"]
    try:
        accounts = classes_service.import_roster(
            classroom=classroom, data=upload.read(classes_service.ROSTER_MAX_BYTES + 1)
        )
    except errors.BadRoster as exc:
        form.add_error("file", str(exc))
        return _class_page(
            request, classroom, roster_form=form, roster_problems=exc.problems, status=400
        )
    pending = request.session.get(PASSWORDS_KEY, {})
    pending.setdefault(str(classroom.pk), []).extend(
        [a.username, a.name, a.password] for a in accounts
    )
    request.session[PASSWORDS_KEY] = pending
    messages.success(
        request,
        f"{len(accounts)} student accounts made and added to the class. Download their passwords "
        f"now: they are shown once. 已创建{len(accounts)}个学生账号，请立即下载密码（只能下载一次）。",
    )
    return redirect("classroom", classroom_id=classroom.pk)


@require_POST
@login_required
def roster_passwords(request: HttpRequest, classroom_id: int) -> HttpResponse:
    """The initial passwords of the class's imported students, as CSV, once (then they are gone).
    A POST: a page that has been downloaded must not be fetched again by a prefetch or a reload."""
    classroom = permissions.classroom_for(request.user, classroom_id)
    pending = request.session.get(PASSWORDS_KEY, {})
    rows = pending.pop(str(classroom.pk), None)
    if not rows:
        raise errors.NotFound("no passwords are waiting: they were downloaded already")
    request.session[PASSWORDS_KEY] = pending
    accounts = [classes_service.RosterAccount(*row) for row in rows]
    response = HttpResponse(
        classes_service.passwords_csv(accounts), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="class-{classroom.pk}-passwords.csv"'
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@login_required
def reset_password(request: HttpRequest, student_id: int) -> HttpResponse:
    """A new password for a student of the teacher's classes, shown on this response only."""
    student = permissions.password_student_for(request.user, student_id)
    password = classes_service.reset_password(student=student)
    response = render(
        request,
        "tutor/classes/password.html",
        {"student": student, "name": classes_service.display_name(student), "password": password},
    )
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@login_required
def class_student(request: HttpRequest, student_id: int) -> HttpResponse:
    """One student of the teacher's classes: their homework there and their questions."""
    student = permissions.class_student_for(request.user, student_id)
    questions = Question.objects.filter(user=student).select_related("problem")
    page = Paginator(questions, PAGE_SIZE).get_page(request.GET.get("page"))
    classes = list(permissions.classes_visible_to(request.user))
    return render(
        request,
        "tutor/classes/student.html",
        {
            "student": student,
            "name": classes_service.display_name(student),
            "homework": classes_service.student_report(
                student=student, classes=classes, today=timezone.localdate()
            ),
            "counts": classes_service.question_counts(student=student),
            "page": page,
        },
    )


# -- students --------------------------------------------------------------------------------------


@login_required
def homework(request: HttpRequest) -> HttpResponse:
    """A student's classes and their homework (GET), or joining a class with its code (POST)."""
    if not permissions.can_join_class(request.user):
        return redirect("classes")  # teachers and admins: their classes
    form = JoinForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        if throttle.hit("join", str(request.user.pk), limit=JOIN_LIMIT, window_s=JOIN_WINDOW_S):
            form.add_error("code", "Too many tries: wait an hour. 尝试次数太多，请一小时后再试。")
            status = 429
        else:
            try:
                classroom, new = classes_service.join_classroom(
                    student=request.user, code=form.cleaned_data["code"]
                )
            except errors.BadJoinCode as exc:
                form.add_error("code", str(exc))
            else:
                if new:
                    messages.success(
                        request, f"You joined {classroom.name}. 你已加入{classroom.name}。"
                    )
                else:
                    messages.info(
                        request, f"You are in {classroom.name} already. 你已在{classroom.name}。"
                    )
                return redirect("homework")
    if form.errors and status == 200:
        status = 400
    joined = permissions.classes_visible_to(request.user).select_related("teacher")
    # An archived class's homework is last year's: not on the to-do list (the student's questions
    # about it stay in their history); its name is listed so that the class does not just vanish.
    classes = list(joined.filter(archived_at__isnull=True))
    return render(
        request,
        "tutor/classes/homework.html",
        {
            "form": form,
            "homework": classes_service.homework_for(
                student=request.user, classes=classes, today=timezone.localdate()
            ),
            "archived": list(joined.filter(archived_at__isnull=False)),
        },
        status=status,
    )
