"""Issue 13, finding 10: the JSON API's input edges each get a clear JSON 4xx (never a 500 or an HTML
page), and the OpenAPI schema says exactly what the API accepts (schemathesis checks it)."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import bearer
from tutor import openapi
from tutor.models import Question
from tutor.services import tokens


@pytest.fixture
def alice_token(cast):
    return tokens.issue_api_token(user=cast.alice)


def post(token: str, path: str, body: bytes | str):
    data = body if isinstance(body, bytes) else body.encode("utf-8")
    return Client().post(path, data, content_type="application/json", **bearer(token))


def assert_json_error(response, status: int, words: str) -> None:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    assert words in response.json()["error"], response.json()


@pytest.mark.django_db
def test_a_lone_surrogate_in_the_question_is_a_400(site, alice_token):
    response = post(alice_token, "/api/ask", '{"question": "what is \\ud800 plus 1?"}')
    assert_json_error(response, 400, "not valid Unicode")
    assert not Question.objects.exists()


@pytest.mark.django_db
def test_deeply_nested_json_is_a_400(site, alice_token):
    body = '{"question": ' + "[" * 10_000 + "]" * 10_000 + "}"
    assert_json_error(post(alice_token, "/api/ask", body), 400, "JSON object")
    assert_json_error(post(alice_token, "/api/ask", "[" * 100_000), 400, "JSON object")


@pytest.mark.django_db
def test_a_2_mb_body_is_a_json_413(site, alice_token):
    body = json.dumps({"question": "x" * (2 * 1024 * 1024)})
    assert_json_error(post(alice_token, "/api/ask", body), 413, "over 1024 KB")


@pytest.mark.django_db
def test_a_non_integer_or_huge_question_id_is_a_json_404(site, alice_token):
    for path in (
        "/api/questions/abc",
        "/api/questions/1.5/stream",
        "/api/questions/-1/stop",
        "/api/nothing-here",
    ):
        assert_json_error(Client().get(path, **bearer(alice_token)), 404, "no such")
    huge = "9" * 40
    for path in (f"/api/questions/{huge}", f"/api/questions/{huge}/stream"):
        assert_json_error(Client().get(path, **bearer(alice_token)), 404, "no such")
    assert_json_error(post(alice_token, f"/api/questions/{huge}/stop", "{}"), 404, "no such")


@pytest.mark.django_db
def test_choose_with_a_40_digit_problem_id_is_a_400(site, alice_token, cast):
    question = Question.objects.create(
        user=cast.alice, text="q", outcome=Question.Outcome.SUGGESTED
    )
    response = post(
        alice_token, f"/api/questions/{question.pk}/choose", '{"problem_id": ' + "9" * 40 + "}"
    )
    assert_json_error(response, 400, "not offered")


@pytest.mark.django_db
def test_a_40_digit_number_in_the_run_form_is_a_form_error(site, cast):
    cast.admin.is_superuser = True
    cast.admin.save()
    client = Client()
    client.force_login(cast.admin)
    response = client.post("/runs", {"which": "all", "ids": "1," + "9" * 40, "samples": "1"})
    assert response.status_code == 400
    assert "No problem has a number that large" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("question", ["", "   ", "\n\t", "a\x00b", "x" * 4001])
def test_the_schema_and_the_api_agree_on_questions(site, alice_token, question):
    """What the schema refuses, the API refuses (and an accepted question matches the schema)."""
    spec = openapi.SCHEMA["paths"]["/api/ask"]["post"]["requestBody"]["content"]
    schema = spec["application/json"]["schema"]["properties"]["question"]
    valid = (
        schema["minLength"] <= len(question) <= schema["maxLength"]
        and re.search(schema["pattern"], question) is not None
    )
    assert not valid
    response = post(alice_token, "/api/ask", json.dumps({"question": question}))
    assert response.status_code == 400 and "error" in response.json()


def test_the_schema_states_the_limits():
    problems = {
        p["name"]: p["schema"]
        for p in openapi.SCHEMA["paths"]["/api/problems"]["get"]["parameters"]
    }
    assert problems["difficulty"] == {"type": "integer", "minimum": 1, "maximum": 5}
    ask = openapi.SCHEMA["paths"]["/api/ask"]["post"]["requestBody"]["content"]
    body = ask["application/json"]["schema"]
    assert body["required"] == ["question"]
    assert body["properties"]["question"]["minLength"] == 1
    assert re.search(body["properties"]["question"]["pattern"], "鸡兔同笼 😀\n第二行")


# -- schemathesis against the running site -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_error_and_no_conformance_failure(
    live_server, site, cast, make_problem, tmp_path
):
    """Every check schemathesis has (server errors, status codes, content types, response schemas and
    headers, negative data refused, positive data accepted) over every operation, a bounded number of
    examples each, against the live site on the loopback address."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.site_fixtures import FakeManifest, ScriptedEngine
    from tests.test_browser import GOOD
    from tutor.services import runtime

    assert live_server.url.startswith("http://localhost") or "127.0.0.1" in live_server.url
    make_problem("一个数的3倍是36，这个数是多少？")
    runtime.use_engine(ScriptedEngine(GOOD), FakeManifest())
    token = tokens.issue_api_token(user=cast.teacher)
    st = Path(sys.executable).with_name("st")
    out = subprocess.run(
        [
            str(st),
            "run",
            f"{live_server.url}/api/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "15",
            "--seed",
            os.environ.get("SUANJING_ST_SEED", "13"),
            "--request-timeout",
            "20",
            "--generation-database",
            "none",
            "-H",
            f"Authorization: Bearer {token}",
        ],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
    )
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-6000:]  # st exits 1 on any failed check or server error
    assert "Server error" not in report and "FAILURES" not in report, report[-6000:]
