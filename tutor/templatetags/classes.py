"""`{% assign_box problem %}`: the "assign as homework" form on a problem's page, for a teacher with
classes (issue 12), without the problem page's view having to know about classes."""

from __future__ import annotations

from django import template

from tutor import permissions
from tutor.models import Problem

register = template.Library()


@register.inclusion_tag("tutor/classes/_assign.html", takes_context=True)
def assign_box(context, problem: Problem) -> dict:
    request = context["request"]
    user = request.user
    if problem.source != Problem.Source.BANK or not permissions.is_teacher(user):
        return {"classes": []}
    # The teacher's own classes (an admin's too: assigning to someone else's class is the teacher's),
    # not archived ones (homework there reaches nobody).
    classes = list(
        permissions.classes_visible_to(user).filter(teacher=user, archived_at__isnull=True)
    )
    return {
        "classes": classes,
        "problem": problem,
        "next": request.get_full_path(),
        "assigned": problem.assignments.filter(classroom__in=classes).select_related("classroom"),
        "csrf_token": context.get("csrf_token"),
    }
