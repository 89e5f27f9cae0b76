"""manage.py load_bank [PATH]: load the bilingual problem bank (fixtures/problems.jsonl) into the site."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from tutor import errors
from tutor.services import bank


class Command(BaseCommand):
    help = "Load problems (JSON lines) into the bank. Keyed on each line's id: loading twice changes nothing."

    def add_arguments(self, parser):
        parser.add_argument(
            "path", nargs="?", default=str(settings.BASE_DIR / "fixtures" / "problems.jsonl")
        )

    def handle(self, *args, path: str, **options):
        source = Path(path)
        if not source.is_file():
            raise CommandError(f"{source} does not exist")
        created = existing = bad = 0
        with source.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                outcome = self.load_line(line, number)
                created += outcome == "created"
                existing += outcome == "existing"
                bad += outcome == "bad"
        self.stdout.write(
            f"{source}: {created} problems added, {existing} already in the bank, {bad} bad lines"
        )
        if bad and not created and not existing:
            raise CommandError("no usable problem in the file")

    def load_line(self, line: str, number: int) -> str:
        try:
            item = json.loads(line)
            if not isinstance(item, dict):
                raise errors.BadFixture("not a JSON object")
            _, was_created = bank.import_fixture_problem(item=item)
        except (ValueError, errors.BadFixture) as exc:
            self.stderr.write(f"line {number}: {exc}")
            return "bad"
        return "created" if was_created else "existing"
