"""README.md stays true: its settings table lists exactly the variables the settings file reads."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def settings_variables() -> set[str]:
    source = (REPO / "tutor" / "settings.py").read_text()
    names = set(re.findall(r'(?:os\.getenv|env(?:bool|int|float))\(\s*"([A-Z_]+)"', source))
    return names


def readme_variables() -> set[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.M))


def test_every_setting_is_documented_in_the_readme():
    assert settings_variables() - readme_variables() == set()


def test_the_readme_documents_no_setting_that_does_not_exist():
    assert readme_variables() - settings_variables() == set()


def test_the_readme_gives_the_two_commands_that_exist():
    readme = (REPO / "README.md").read_text()
    assert "./setup.sh" in readme and "./test.sh" in readme
    assert (REPO / "setup.sh").stat().st_mode & 0o111
    assert (REPO / "test.sh").stat().st_mode & 0o111
    ci = (REPO / ".ci" / "run").read_text()
    assert "./test.sh" in ci
