"""manage.py api_token USERNAME [--create --role student|teacher|admin] [--days N]: print a new API bearer
token (it expires after --days, default SUANJING_TOKEN_DAYS). `--revoke`: revoke all of the user's tokens."""

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
        parser.add_argument(
            "--days", type=int, default=None, help="valid for N days (default SUANJING_TOKEN_DAYS)"
        )
        parser.add_argument(
            "--revoke", action="store_true", help="revoke every token of the user instead"
        )

    @transaction.atomic
    def handle(
        self, *args, username: str, create: bool, role: str | None, days, revoke: bool, **options
    ):
        user = User.objects.filter(username=username).first()
        if revoke:
            if user is None:
                raise CommandError(f"no user {username!r}")
            n = tokens.revoke_tokens(user.api_tokens.all())
            self.stdout.write(f"{n} tokens of {username} revoked")
            return
        if days is not None and days < 0:
            raise CommandError("--days must be 0 (no expiry) or more")
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
        self.stdout.write(tokens.issue_api_token(user=user, days=days))
