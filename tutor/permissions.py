"""Who may see and do what. Every view and API endpoint asks these functions; nothing else decides.

Roles are Django groups ("student", "teacher") plus staff for admins. Admins can do everything a teacher
can. A student sees only their own questions: another student's question is a 404 (they may not even
know it exists); a teacher's page is a 403 (they know the bank exists, they may not use it).

The `*_for` functions fetch and check in one call, as healthchecks' `_get_check_for_user`: they return
the object, or raise `tutor.errors.NotFound` (404: no such object, or one the user may not know of) or
`tutor.errors.Forbidden` (403: a known object, an action that is not the user's). Pages show Django's
404/403 pages for them, the JSON API its JSON error body.
"""

from __future__ import annotations

from django.contrib.auth.models import User

from tutor.errors import Forbidden, NotFound
from tutor.models import (
    Assignment,
    Classroom,
    ClassroomQuerySet,
    FollowUp,
    Membership,
    PrecomputeRun,
    Problem,
    ProblemAlias,
    Question,
    QuestionQuerySet,
    Solution,
)

STUDENT = "student"
TEACHER = "teacher"
ROLES = ("student", "teacher", "admin")

# Actions on a question only the student who asked may take, with what anyone else is told.
ASKER_ACTIONS = {
    "feedback": "only the student who asked can say this",
    "ask_teacher": "only the student who asked can say this",
    "choose": "only the student who asked can answer this",
    "stop": "only the student who asked can stop it",
    "retry": "only the student who asked can try again",
    "steps": "only the student who asked can take hints on it",
    "check": "only the student who asked can check an answer to it",
    "followup": "only the student who asked can ask about this answer",
}
# Actions on a follow-up question (on an answer) only the student who asked it may take.
FOLLOW_UP_ACTIONS = {
    "stop": "only the student who asked can stop it",
    "retry": "only the student who asked can try again",
}


def is_admin(user) -> bool:
    return bool(user.is_authenticated and user.is_active and (user.is_staff or user.is_superuser))


def is_teacher(user) -> bool:
    """Teachers and admins."""
    if not (user.is_authenticated and user.is_active):
        return False
    if is_admin(user):
        return True
    # Cached on the user object: a page asks several times.
    cached = getattr(user, "_suanjing_is_teacher", None)
    if cached is None:
        cached = user.groups.filter(name=TEACHER).exists()
        user._suanjing_is_teacher = cached
    return cached


def can_ask(user) -> bool:
    """Any signed-in, active user may ask (teachers try questions too)."""
    return bool(user.is_authenticated and user.is_active)


def can_view_question(user, question: Question) -> bool:
    return bool(user.is_authenticated and user.is_active) and (
        question.user_id == user.pk or is_teacher(user)
    )


def can_give_feedback(user, question: Question) -> bool:
    """Only the student who asked says "this does not answer my question"."""
    return is_asker(user, question)


def is_asker(user, question: Question) -> bool:
    """The one who asked: only they answer "is this your question?", stop, retry or call a teacher."""
    return bool(user.is_authenticated and user.is_active and question.user_id == user.pk)


def can_link_question(user) -> bool:
    """Say a student's question is a banked problem ("same as #N"), accept or dismiss aliases."""
    return is_teacher(user)


def can_manage_bank(user) -> bool:
    """Browse, search, add and edit problems; approve, reject and edit solutions; see missed questions."""
    return is_teacher(user)


def role_of(user) -> str:
    if is_admin(user):
        return "admin"
    if is_teacher(user):
        return "teacher"
    return "student"


def questions_visible_to(user) -> QuestionQuerySet:
    """Every question for a teacher; a student's own otherwise."""
    if is_teacher(user):
        return Question.objects.all()
    return Question.objects.filter(user=user)


# -- fetch and check -------------------------------------------------------------------------------


def require_teacher(user, message: str = "teachers only") -> None:
    if not can_manage_bank(user):
        raise Forbidden(message)


def require_admin(user, message: str = "admins only") -> None:
    if not is_admin(user):
        raise Forbidden(message)


def require_asker_role(user, message: str = "you may not ask questions") -> None:
    if not can_ask(user):
        raise Forbidden(message)


def question_for(user, question_id: int, *, action: str = "view") -> Question:
    """The question, for `action`: "view" (its asker and teachers), one of ASKER_ACTIONS (its asker
    only: 403 for a teacher, 404 for another student), or "link" (teachers: 403 first for others)."""
    if action == "link" and not can_link_question(user):
        raise Forbidden("teachers only")
    question = Question.objects.select_related("problem", "solution").filter(pk=question_id).first()
    if question is None or not can_view_question(user, question):
        raise NotFound("no such question")
    if action in ASKER_ACTIONS and not is_asker(user, question):
        raise Forbidden(ASKER_ACTIONS[action])
    if action not in ASKER_ACTIONS and action not in ("view", "link"):
        raise ValueError(f"unknown action {action!r}")
    return question


def follow_up_for(user, follow_up_id: int, *, action: str = "view") -> FollowUp:
    """A follow-up question on an answer, for `action`: "view" (its asker, and teachers, who see the
    question it was asked on) or one of FOLLOW_UP_ACTIONS (its asker only: 403 for a teacher, 404 for
    another student)."""
    if action != "view" and action not in FOLLOW_UP_ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    follow_up = (
        FollowUp.objects.select_related("question", "question__problem")
        .filter(pk=follow_up_id)
        .first()
    )
    if follow_up is None or not (
        user.is_authenticated
        and user.is_active
        and (follow_up.user_id == user.pk or is_teacher(user))
    ):
        raise NotFound("no such follow-up question")
    if action in FOLLOW_UP_ACTIONS and follow_up.user_id != user.pk:
        raise Forbidden(FOLLOW_UP_ACTIONS[action])
    return follow_up


def problem_for(user, problem_id: int, *, students_only: bool = False) -> Problem:
    """A problem of the bank (or, `students_only`, a student's question kept out of it), for a teacher."""
    require_teacher(user)
    problems = (
        Problem.objects.filter(source=Problem.Source.STUDENT) if students_only else Problem.objects
    )
    problem = problems.filter(pk=problem_id).first()
    if problem is None:
        raise NotFound("no such problem")
    return problem


def solution_for(user, solution_id: int) -> Solution:
    require_teacher(user)
    solution = Solution.objects.filter(pk=solution_id).first()
    if solution is None:
        raise NotFound("no such answer")
    return solution


def alias_for(user, alias_id: int) -> ProblemAlias:
    if not can_link_question(user):
        raise Forbidden("teachers only")
    alias = ProblemAlias.objects.select_related("problem").filter(pk=alias_id).first()
    if alias is None:
        raise NotFound("no such wording")
    return alias


def run_for(user, run_id: int) -> PrecomputeRun:
    require_admin(user)
    run = PrecomputeRun.objects.filter(pk=run_id).first()
    if run is None:
        raise NotFound("no such run")
    return run


# -- classes (issue 12) ----------------------------------------------------------------------------
# A teacher sees the classes they teach and those classes' students, no other teacher's (404: they may
# not know it exists); admins see every class. A student sees the classes they joined, and every
# teacher's page is a 403 for them (they know classes exist; managing one is not theirs to do).


def classes_visible_to(user) -> ClassroomQuerySet:
    """Every class for an admin, a teacher's own, the ones a student joined."""
    if is_admin(user):
        return Classroom.objects.all()
    if is_teacher(user):
        return Classroom.objects.taught_by(user)
    if not (user.is_authenticated and user.is_active):
        return Classroom.objects.none()
    return Classroom.objects.joined_by(user)


def can_join_class(user) -> bool:
    """Students join classes with a code; teachers and admins teach them."""
    return bool(user.is_authenticated and user.is_active) and not is_teacher(user)


def classroom_for(user, classroom_id: int) -> Classroom:
    """A class, for the teacher who teaches it (or an admin): 403 for students, 404 for other teachers."""
    require_teacher(user, "teachers only: students see their classes on their homework page")
    classroom = classes_visible_to(user).filter(pk=classroom_id).first()
    if classroom is None:
        raise NotFound("no such class")
    return classroom


def _in_my_classes(user, objects, pk: int, missing: str):
    """A row of `objects` (Assignment or Membership, with their class) in one of the teacher's classes
    (an admin: any class): 403 for students, 404 otherwise."""
    require_teacher(user)
    row = objects.filter(pk=pk, classroom__in=classes_visible_to(user)).first()
    if row is None:
        raise NotFound(missing)
    return row


def assignment_for(user, assignment_id: int) -> Assignment:
    return _in_my_classes(
        user,
        Assignment.objects.select_related("classroom", "problem"),
        assignment_id,
        "no such homework",
    )


def membership_for(user, membership_id: int) -> Membership:
    return _in_my_classes(
        user,
        Membership.objects.select_related("classroom", "student"),
        membership_id,
        "no such student in your classes",
    )


def class_student_for(user, student_id: int) -> User:
    """A student of one of the teacher's classes (an admin: of any class), else a 404."""
    require_teacher(user)
    student = (
        User.objects.filter(pk=student_id, memberships__classroom__in=classes_visible_to(user))
        .distinct()
        .first()
    )
    if student is None:
        raise NotFound("no such student in your classes")
    return student


def password_student_for(user, student_id: int) -> User:
    """A student of the teacher's classes whose password the teacher may reset, else a 404: never a
    teacher's or an admin's (their passwords are their own, even if they sit in a class)."""
    student = class_student_for(user, student_id)
    if is_teacher(student) or not student.is_active:
        raise NotFound("no such student in your classes")
    return student
