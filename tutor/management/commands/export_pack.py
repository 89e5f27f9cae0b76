"""manage.py export_pack PATH: write the bank's problems and checked answers to an answer pack."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from tutor import errors
from tutor.services import packs


class Command(BaseCommand):
    help = (
        "Export problems and their answers to a new answer pack (a SQLite file) for another site."
    )

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--topic", default="", help="only problems of this topic")
        parser.add_argument(
            "--status",
            action="append",
            choices=["approved", "verified", "unverified", "failed"],
            help="answer statuses to export (repeatable; default: approved, verified, unverified)",
        )

    def handle(self, *args, path: str, topic: str, status: list[str] | None, **options):
        from solver.packs import PackError

        try:
            counts = packs.export_pack(
                path=path, topic=topic, statuses=tuple(status or packs.EXPORT_STATUSES)
            )
        except (PackError, errors.RunRefused) as exc:
            raise CommandError(str(exc)) from None
        by_status = ", ".join(f"{n} {s}" for s, n in sorted(counts["by_status"].items()))
        self.stdout.write(
            f"{path}: {counts['problems']} problems, {counts['solutions']} answers ({by_status or 'none'})"
        )
