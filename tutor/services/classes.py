"""Classes and homework (issue 12): a teacher's class with its join code, students joining or imported
from a CSV file, bank problems assigned with an optional due date, and what the class's students did
with them (read from their questions: asked, answered, flagged, missed).

Owns: creating, renaming, archiving and unarchiving classes and rotating codes, joining, importing a class list (accounts with generated
initial passwords that Django's password validators accept), assigning and unassigning, and the reports
the class page, a student's page and the homework list show. Does not own: who may see a class
(`tutor.permissions`), asking a question (`tutor.services.asking`), hints and steps, or where the
generated passwords wait until the teacher downloads them (the view keeps them in the teacher's session).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import secrets
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.db.models.functions import Lower
from django.utils import timezone

from tutor.errors import BadJoinCode, BadRoster
from tutor.models import Assignment, Classroom, Membership, Problem, Question
from tutor.permissions import STUDENT

# Join codes and passwords avoid characters that look alike on a board or a phone (0/O, 1/I/l).
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
PASSWORD_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
ROSTER_MAX_ROWS = 200
ROSTER_MAX_BYTES = 100_000
ARCHIVED_JOIN = (
    "This class has been archived by its teacher and takes no new students: ask your teacher for "
    "the code of your current class. 这个班级已被老师归档，不再接收新学生，请向老师要现在班级的代码。"
)
ARCHIVED_IMPORT = "This class is archived: unarchive it before importing students. 班级已归档：请先恢复班级再导入学生。"
# What a question that reached a problem did for the student: they were served an answer.
SERVED = (Question.Outcome.HIT, Question.Outcome.GENERATED)
# Asked, but no answer came: the model failed, the problem waits for a teacher, or it was refused.
UNANSWERED = (Question.Outcome.FAILED, Question.Outcome.HELD, Question.Outcome.REFUSED)


def display_name(user: User) -> str:
    return user.get_full_name() or user.get_username()


# -- classes and codes -----------------------------------------------------------------------------


def new_join_code() -> str:
    """Eight characters from 32: about 10^12 codes, so guessing one (joining is throttled) is hopeless."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_join_code(code: str) -> str:
    """What a student typed, as stored: upper case, spaces and dashes dropped ("abcd-2345" works)."""
    return "".join(c for c in (code or "").upper() if c.isalnum())[:16]


def _unused_code() -> str:
    while True:
        code = new_join_code()
        if not Classroom.objects.filter(join_code=code).exists():
            return code


@transaction.atomic
def create_classroom(*, teacher: User, name: str) -> Classroom:
    return Classroom.objects.create(name=name, teacher=teacher, join_code=_unused_code())


@transaction.atomic
def rename_classroom(*, classroom: Classroom, name: str) -> Classroom:
    """A new name (`tutor.forms.ClassroomForm` tidies and checks it); students see it at once."""
    classroom.name = name
    classroom.save(update_fields=["name"])
    return classroom


@transaction.atomic
def archive_classroom(*, classroom: Classroom) -> Classroom:
    """The class is over (the school year ended): it leaves the teacher's default list, its code admits
    no one and its homework leaves its students' lists, but every record stays (members, homework,
    questions, hints). Archiving an archived class keeps its first date."""
    if classroom.archived_at is None:
        classroom.archived_at = timezone.now()
        classroom.save(update_fields=["archived_at"])
    return classroom


@transaction.atomic
def unarchive_classroom(*, classroom: Classroom) -> Classroom:
    """Back in use, as it was: the same code admits students again."""
    if classroom.archived_at is not None:
        classroom.archived_at = None
        classroom.save(update_fields=["archived_at"])
    return classroom


@transaction.atomic
def rotate_join_code(*, classroom: Classroom) -> str:
    """A new code (the old one stops working at once); students already in the class stay."""
    classroom.join_code = _unused_code()
    classroom.save(update_fields=["join_code"])
    return classroom.join_code


@transaction.atomic
def join_classroom(*, student: User, code: str) -> tuple[Classroom, bool]:
    """The class with this code, and whether the student was not in it yet."""
    classroom = Classroom.objects.filter(join_code=normalize_join_code(code)).first()
    if classroom is None:
        raise BadJoinCode(
            "No class has this code: check it with your teacher. 没有这个班级代码，请向老师核对。"
        )
    if classroom.archived_at is not None:
        # Said plainly (the code was right): the student asks for this year's class code, not retypes.
        raise BadJoinCode(ARCHIVED_JOIN)
    _, created = Membership.objects.get_or_create(classroom=classroom, student=student)
    return classroom, created


@transaction.atomic
def reset_password(*, student: User) -> str:
    """A new password for a student who forgot theirs (school children often have no e-mail for
    Django's reset link): returned to be shown once, stored only hashed. The student's open sessions
    end, as with any password change. Who may do it: `permissions.password_student_for`."""
    password = new_password(student)
    student.set_password(password)
    student.save(update_fields=["password"])
    return password


@transaction.atomic
def remove_member(*, membership: Membership) -> None:
    """The student leaves the class; their account and questions stay."""
    membership.delete()


# -- homework --------------------------------------------------------------------------------------


@transaction.atomic
def assign_problems(
    *, classroom: Classroom, problems: list[Problem], due: dt.date | None, teacher: User
) -> list[Assignment]:
    """Give these problems (of the bank: `tutor.forms.AssignForm` checks) to the class; a problem
    already assigned gets the new due date."""
    assignments = []
    for problem in problems:
        assignment, created = Assignment.objects.get_or_create(
            classroom=classroom,
            problem=problem,
            defaults={"due": due, "assigned_by": teacher},
        )
        if not created and assignment.due != due:
            assignment.due = due
            assignment.save(update_fields=["due"])
        assignments.append(assignment)
    return assignments


@transaction.atomic
def unassign(*, assignment: Assignment) -> None:
    assignment.delete()


# -- importing a class list ------------------------------------------------------------------------


@dataclass(frozen=True)
class RosterAccount:
    """A student account the import made, with the initial password the teacher hands out."""

    username: str
    name: str
    password: str


def _decode(data: bytes) -> str:
    # Excel on a Chinese Windows saves CSV in GBK (GB18030 is its superset); elsewhere UTF-8, with or
    # without a byte-order mark.
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise BadRoster("The file is not text in UTF-8 or GBK. 文件不是UTF-8或GBK编码的文本。")


HEADER_WORDS = {"username", "user", "login", "用户名", "账号", "帐号", "学号"}


def read_roster(data: bytes) -> list[tuple[str, str]]:
    """(username, display name) rows of a CSV file; a header row is skipped, blank rows ignored.
    Every problem is collected, so the teacher fixes the file once."""
    if len(data) > ROSTER_MAX_BYTES:
        raise BadRoster(f"The file is larger than {ROSTER_MAX_BYTES // 1000} KB. 文件太大。")
    text = _decode(data)
    rows: list[tuple[int, str, str]] = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if not rows and cells[0].casefold() in HEADER_WORDS:
            continue
        rows.append((number, cells[0], cells[1] if len(cells) > 1 else ""))
    if not rows:
        raise BadRoster("The file has no students. 文件里没有学生。")
    if len(rows) > ROSTER_MAX_ROWS:
        raise BadRoster(
            f"At most {ROSTER_MAX_ROWS} students at a time. 一次最多{ROSTER_MAX_ROWS}名。"
        )
    problems = []
    seen: dict[str, int] = {}
    for number, username, name in rows:
        try:
            User.username_validator(username)
            if not username or len(username) > 150:
                raise ValidationError("bad length")
        except ValidationError:
            problems.append(
                f"row {number}: “{username[:40]}” is not a username (letters, digits and @.+-_ only, "
                "at most 150) 用户名只能包含字母、数字和@.+-_"
            )
            continue
        if len(name) > 150:
            problems.append(f"row {number}: the name is longer than 150 characters 名字太长")
        key = username.lower()
        if key in seen:
            problems.append(f"row {number}: “{username}” is also on row {seen[key]} 用户名重复")
        seen.setdefault(key, number)
    # Usernames that differ only in case would be two accounts that students mix up: taken too.
    taken = set(
        User.objects.annotate(folded=Lower("username"))
        .filter(folded__in=[u.lower() for _, u, _ in rows])
        .values_list("folded", flat=True)
    )
    for number, username, _ in rows:
        if username.lower() in taken:
            problems.append(
                f"row {number}: the username “{username}” is taken (a student who has an account "
                "joins with the class code) 用户名已被使用"
            )
    if problems:
        raise BadRoster("Nothing was imported: fix these rows. 未导入，请修改：", problems=problems)
    return [(username, name) for _, username, name in rows]


def new_password(user: User) -> str:
    """Three groups of four easy characters, e.g. "k7pm-x2ra-9fte": checked with the site's password
    validators (AUTH_PASSWORD_VALIDATORS), which a random one of this length passes."""
    while True:
        password = "-".join(
            "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(4)) for _ in range(3)
        )
        try:
            validate_password(password, user)
        except ValidationError:
            continue
        return password


def import_roster(*, classroom: Classroom, data: bytes) -> list[RosterAccount]:
    """Make an account (no e-mail, in the student group) for each row of the CSV file and put it in the
    class; return the initial passwords, which are stored nowhere else. All rows or none. An archived
    class takes no new students (BadRoster)."""
    if classroom.archived_at is not None:
        raise BadRoster(ARCHIVED_IMPORT)
    rows = read_roster(data)
    accounts = []
    for username, name in rows:
        user = User(username=username, first_name=name)
        accounts.append(RosterAccount(username=username, name=name, password=new_password(user)))
    # Hashing is the slow part (PBKDF2: ~0.5 s a password on a small PC). It runs before the transaction
    # so the database is not held, and in threads: hashlib releases the GIL while it hashes.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        hashes = list(pool.map(make_password, [a.password for a in accounts]))
    try:
        _create_accounts(classroom=classroom, accounts=accounts, hashes=hashes)
    except IntegrityError:
        # Someone took one of the usernames between the check and the write.
        raise BadRoster(
            "A username in the file was taken just now: import it again. 用户名刚被占用，请重新导入。"
        ) from None
    return accounts


@transaction.atomic
def _create_accounts(
    *, classroom: Classroom, accounts: list[RosterAccount], hashes: list[str]
) -> None:
    group, _ = Group.objects.get_or_create(name=STUDENT)
    for account, hashed in zip(accounts, hashes, strict=True):
        user = User.objects.create(
            username=account.username, first_name=account.name, email="", password=hashed
        )
        user.groups.add(group)
        Membership.objects.create(classroom=classroom, student=user)


def passwords_csv(accounts: list[RosterAccount]) -> str:
    """The CSV the teacher downloads: username, name, password; a byte-order mark so that Excel reads
    the Chinese names, and no cell a spreadsheet would run as a formula."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(["username", "name", "password"])
    for a in accounts:
        writer.writerow([_cell(a.username), _cell(a.name), a.password])
    return out.getvalue()


def _cell(value: str) -> str:
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


# -- what the class did ----------------------------------------------------------------------------


@dataclass
class StudentWork:
    """One student's questions on one problem."""

    student: User
    questions: list[Question] = field(default_factory=list)

    @property
    def served(self) -> bool:
        return any(q.outcome in SERVED for q in self.questions)

    @property
    def flagged(self) -> bool:
        return any(q.is_flagged for q in self.questions)

    @property
    def unanswered(self) -> bool:
        return not self.served and any(q.outcome in UNANSWERED for q in self.questions)

    @property
    def last(self) -> Question:
        return self.questions[0]


@dataclass
class AssignmentReport:
    """An assigned problem on the class page: who asked it and how it went."""

    assignment: Assignment
    work: list[StudentWork]
    students: int

    @property
    def asked(self) -> int:
        return len(self.work)

    @property
    def flagged(self) -> list[StudentWork]:
        return [w for w in self.work if w.flagged]

    @property
    def unanswered(self) -> list[StudentWork]:
        return [w for w in self.work if w.unanswered]

    @property
    def not_asked(self) -> int:
        return self.students - self.asked


def _work_by(students: list[User], problem_ids: list[int]) -> dict[tuple[int, int], list[Question]]:
    """(student id, problem id) -> their questions that reached the problem, newest first."""
    found: dict[tuple[int, int], list[Question]] = defaultdict(list)
    questions = Question.objects.filter(
        user__in=[s.pk for s in students], problem_id__in=problem_ids
    ).order_by("-created", "-id")
    for q in questions:
        found[(q.user_id, q.problem_id)].append(q)
    return found


def class_report(*, classroom: Classroom) -> list[AssignmentReport]:
    """Per assigned problem, each student of the class who asked it (a question that reached the
    problem: a hit, a suggestion they chose, a live answer for it) with what they got."""
    students = [m.student for m in class_members(classroom=classroom)]
    assignments = list(classroom.assignments.select_related("problem"))
    work = _work_by(students, [a.problem_id for a in assignments])
    reports = []
    for a in assignments:
        rows = [
            StudentWork(student=s, questions=work[(s.pk, a.problem_id)])
            for s in students
            if (s.pk, a.problem_id) in work
        ]
        reports.append(AssignmentReport(assignment=a, work=rows, students=len(students)))
    return reports


def class_members(*, classroom: Classroom) -> list[Membership]:
    """The class's memberships (students by username), each with how many questions the student
    asked (`asked`)."""
    return list(
        classroom.memberships.select_related("student").annotate(
            asked=Count("student__questions", distinct=True)
        )
    )


def missed_or_flagged(*, classroom: Classroom, limit: int = 30) -> list[Question]:
    """The class's students' latest questions that the bank did not hold or that they flagged."""
    return list(
        Question.objects.filter(user__memberships__classroom=classroom)
        .missed()
        .exclude(outcome=Question.Outcome.REFUSED)
        .select_related("user", "problem")
        .order_by("-created", "-id")[:limit]
    )


@dataclass
class Homework:
    """One assigned problem as a student sees it."""

    assignment: Assignment
    questions: list[Question]
    today: dt.date

    @property
    def asked(self) -> bool:
        return bool(self.questions)

    @property
    def served(self) -> bool:
        return any(q.outcome in SERVED for q in self.questions)

    @property
    def overdue(self) -> bool:
        due = self.assignment.due
        return due is not None and due < self.today and not self.served

    @property
    def last(self) -> Question | None:
        return self.questions[0] if self.questions else None


def homework_for(
    *, student: User, classes: list[Classroom], today: dt.date
) -> list[tuple[Classroom, list[Homework]]]:
    """Each of the student's classes (as given: the ones they may see) with its homework."""
    assignments = list(
        Assignment.objects.filter(classroom__in=classes).select_related("problem", "classroom")
    )
    work = _work_by([student], [a.problem_id for a in assignments])
    by_class: dict[int, list[Homework]] = defaultdict(list)
    for a in assignments:
        by_class[a.classroom_id].append(
            Homework(assignment=a, questions=work.get((student.pk, a.problem_id), []), today=today)
        )
    return [(c, by_class.get(c.pk, [])) for c in classes]


def student_report(
    *, student: User, classes: list[Classroom], today: dt.date
) -> list[tuple[Classroom, list[Homework]]]:
    """The student's homework in these classes (a teacher's classes the student is in)."""
    joined = [c for c in classes if c.memberships.filter(student=student).exists()]
    return homework_for(student=student, classes=joined, today=today)


def question_counts(*, student: User) -> dict[str, int]:
    """How the student's questions went: asked, answered, missed the bank, flagged."""
    return Question.objects.filter(user=student).aggregate(
        asked=Count("id"),
        answered=Count("id", filter=Q(outcome__in=SERVED)),
        missed=Count("id", filter=Q(bank_hit=False) & ~Q(outcome=Question.Outcome.REFUSED)),
        flagged=Count("id", filter=~Q(feedback=Question.Feedback.NONE)),
    )
