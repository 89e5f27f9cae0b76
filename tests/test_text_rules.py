"""Issue 11, item 5: one owner for the question-text rules.

`solver.prompts` defines the length limit and the checks once; `tutor.services.text` is the site's front
door to them. The API's error, the forms, the OpenAPI schema and the cache all state the same limit, and
no other module under tutor/ or solver/ writes the number down again.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pytest
from django.test import Client

import solver.cache
import solver.prompts
from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import bearer
from tutor import forms, openapi
from tutor.models import Question
from tutor.services import text, tokens

ROOT = Path(__file__).resolve().parent.parent
LIMIT = solver.prompts.MAX_QUESTION_CHARS
OWNER = Path("solver/prompts.py")
# Files whose prose may repeat the number (path -> how many lines): none; messages read the constant.
KNOWN_PROSE: dict[Path, int] = {}


def test_the_site_takes_the_limit_and_the_check_from_solver():
    assert text.MAX_QUESTION_CHARS is LIMIT
    assert text.clean_question is solver.prompts.clean_question
    assert solver.cache.MAX_QUESTION_CHARS is LIMIT
    default = inspect.signature(solver.cache.SemanticCache).parameters["max_chars"].default
    assert default is LIMIT


def test_the_openapi_schema_states_the_limit():
    body = openapi.SCHEMA["paths"]["/api/ask"]["post"]["requestBody"]["content"]
    question = body["application/json"]["schema"]["properties"]["question"]
    assert question["maxLength"] is LIMIT
    assert f"at most {LIMIT} characters" in question["description"]
    refusals = openapi.SCHEMA["paths"]["/api/ask"]["post"]["responses"]["400"]["description"]
    assert f"over {LIMIT} characters" in refusals


@pytest.mark.django_db
def test_the_forms_state_the_limit(cast):
    assert forms.AskForm({"question": "x" * LIMIT}).is_valid()
    ask = forms.AskForm({"question": "x" * (LIMIT + 1)})
    assert not ask.is_valid()
    assert f"the limit is {LIMIT}" in ask.errors["question"][0]
    assert forms.ProblemForm().fields["text"].max_length is LIMIT


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("length", "accepted"), [(LIMIT, True), (LIMIT + 1, False)], ids=["at", "over"]
)
def test_the_api_refuses_exactly_what_is_over_the_limit(site, cast, make_problem, length, accepted):
    make_problem("x" * LIMIT, solutions=(("approved", "1"),))  # a question at the limit is a hit
    token = tokens.issue_api_token(user=cast.alice)
    body = json.dumps({"question": "x" * length})
    response = Client().post("/api/ask", body, content_type="application/json", **bearer(token))
    if accepted:
        assert response.status_code == 200, response.content[:300]
        assert response.json()["answer"]["final"] == "1"
    else:
        assert response.status_code == 400
        assert response.json()["error"] == f'"question" is over {LIMIT} characters'
        assert not Question.objects.exists()


def _sources() -> list[Path]:
    found = []
    for package in ("tutor", "solver"):
        for path in sorted((ROOT / package).rglob("*")):
            if path.suffix in (".py", ".html", ".js") and "migrations" not in path.parts:
                found.append(path.relative_to(ROOT))
    return found


def test_no_other_module_defines_the_limit():
    # The number as written in code or prose: 4000, 4_000 or 4,000 (not inside a longer number).
    spellings = "|".join(re.escape(s) for s in {f"{LIMIT}", f"{LIMIT:_}", f"{LIMIT:,}"})
    number = re.compile(rf"(?<![\d.,_])(?:{spellings})(?![\d_]|[.,]\d)")
    sources = _sources()
    assert OWNER in sources and Path("tutor/openapi.py") in sources  # the tree was found
    hits: dict[Path, list[str]] = {}
    for path in sources:
        lines = [line for line in (ROOT / path).read_text().splitlines() if number.search(line)]
        if lines:
            hits[path] = lines
    assert hits.pop(OWNER) == [f"MAX_QUESTION_CHARS = {LIMIT}"]
    for path, allowed in KNOWN_PROSE.items():
        if len(hits.get(path, [])) <= allowed:
            hits.pop(path, None)
    assert hits == {}


def test_only_solver_prompts_assigns_the_name():
    assigned = []
    for path in _sources():
        if path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse((ROOT / path).read_text(), str(path))):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign | ast.AugAssign)
                else []
            )
            if any(isinstance(t, ast.Name) and t.id == "MAX_QUESTION_CHARS" for t in targets):
                assigned.append(path)
    assert assigned == [OWNER]
