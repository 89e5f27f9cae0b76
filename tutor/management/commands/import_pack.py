"""manage.py import_pack PATH: bring an answer pack's problems and answers into the bank."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from tutor.services import packs


class Command(BaseCommand):
    help = (
        "Import an answer pack. The whole pack is checked first and imported in one transaction: a "
        "corrupt, truncated or wrong-version pack imports nothing. Importing the same pack twice "
        "changes nothing; a teacher's answers are never overwritten."
    )

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--dry-run", action="store_true", help="report, change nothing")

    def handle(self, *args, path: str, dry_run: bool, **options):
        from solver.packs import PackError

        try:
            report = packs.import_pack(path=path, dry_run=dry_run)
        except PackError as exc:
            raise CommandError(f"not imported: {exc}") from None
        for note in report.notes:
            self.stderr.write(note)
        self.stdout.write(f"{path}: {report.summary()}")
