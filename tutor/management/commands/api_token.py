"""manage.py api_token USERNAME [--create --role student|teacher|admin]: print a new API bearer token."""

from __future__ import annotations

import secrets

from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from tutor.management.commands.setup_demo import ensure_groups
from tutor.services import tokens


class Command(BaseCommand):
    help = (
        "Print a new API token for a user (only its hash is stored). --create makes the user first."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--create", action="store_true", help="create the user if it does not exist"
        )
        parser.add_argument("--role", choices=["student", "teacher", "admin"], default=None)

    @transaction.atomic
    def handle(self, *args, username: str, create: bool, role: str | None, **options):
        user = User.objects.filter(username=username).first()
        if user is None:
            if not create:
                raise CommandError(
                    f"no user {username!r}; add --create --role student|teacher|admin"
                )
            user = User(username=username)
            user.set_password(
                secrets.token_urlsafe(16)
            )  # sign in through the site after a password reset
            user.save()
            role = role or "student"
        if role is not None:
            ensure_groups()
            user.is_staff = user.is_superuser = role == "admin"
            user.save(update_fields=["is_staff", "is_superuser"])
            user.groups.set(Group.objects.filter(name=role if role != "admin" else "teacher"))
        self.stdout.write(tokens.issue_api_token(user=user))
