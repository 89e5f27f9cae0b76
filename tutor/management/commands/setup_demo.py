"""manage.py setup_demo: roles (groups with permissions) and, in development only, demo accounts."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

# Model permissions per group; the site's own checks are in tutor/permissions.py (group membership).
GROUP_PERMISSIONS = {
    "student": ["add_question", "view_question"],
    "teacher": [
        "add_question",
        "view_question",
        "view_problem",
        "add_problem",
        "change_problem",
        "view_solution",
        "add_solution",
        "change_solution",
    ],
}
DEMO_USERS = (("student", "student"), ("teacher", "teacher"), ("admin", "admin"))


def ensure_groups() -> None:
    for name, codenames in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(
            Permission.objects.filter(content_type__app_label="tutor", codename__in=codenames)
        )


class Command(BaseCommand):
    help = "Create the student and teacher groups; with DEBUG=True also demo accounts (new passwords printed)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--groups-only", action="store_true", help="only the groups (safe in production)"
        )

    @transaction.atomic
    def handle(self, *args, groups_only: bool = False, **options):
        ensure_groups()
        if groups_only:
            self.stdout.write("groups student and teacher are ready")
            return
        if not settings.DEBUG:
            raise CommandError(
                "Demo accounts are for development only (DEBUG=True). In production create users with "
                "`manage.py createsuperuser` and `manage.py api_token NAME --create --role teacher`; "
                "run `setup_demo --groups-only` for the groups."
            )
        for username, role in DEMO_USERS:
            password = self.demo_user(username, role)
            self.stdout.write(f"{role:8} username {username:8} password {password}")
        self.stdout.write(
            "demo accounts ready (development only); passwords change each time this runs"
        )

    def demo_user(self, username: str, role: str) -> str:
        user, _ = User.objects.get_or_create(username=username)
        password = secrets.token_urlsafe(9)
        user.set_password(password)
        user.is_staff = user.is_superuser = role == "admin"
        user.save()
        user.groups.set(Group.objects.filter(name=role))
        return password
