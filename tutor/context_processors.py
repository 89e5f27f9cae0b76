"""Template context for every page: the signed-in user's role (for the navigation only; views check)."""

from tutor import permissions


def role(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"role": None, "is_teacher": False}
    return {"role": permissions.role_of(user), "is_teacher": permissions.is_teacher(user)}
