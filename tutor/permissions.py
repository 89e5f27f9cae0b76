"""Who may see and do what. Every view and API endpoint asks these functions; nothing else decides.

Roles are Django groups ("student", "teacher") plus staff for admins. Admins can do everything a teacher
can. A student sees only their own questions: another student's question is a 404 (they may not even
know it exists); a teacher's page is a 403 (they know the bank exists, they may not use it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tutor.models import Question

STUDENT = "student"
TEACHER = "teacher"
ROLES = ("student", "teacher", "admin")


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
