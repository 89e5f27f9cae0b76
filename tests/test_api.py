"""The JSON API: ask, question status, problems, authentication, bad input, busy and no-model refusals."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import bearer
from tutor.models import Question, Solution
from tutor.services import bank, tokens

CHICKENS = "一个笼子里有鸡和兔子共35只，脚共94只，问鸡和兔各有多少只？"


def post_json(client: Client, url: str, body, **extra):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json", **extra)


@pytest.fixture
def alice_client(cast):
    client = Client()
    client.force_login(cast.alice)
    return client


def test_it_serves_a_banked_question_at_once(site, cast, make_problem, alice_client):
    problem = make_problem(CHICKENS, reference="23, 12", solutions=(("approved", "23, 12"),))
    response = post_json(alice_client, "/api/ask", {"question": "  " + CHICKENS + " "})
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "hit"
    assert data["answer"]["final"] == "23, 12"
    assert data["answer"]["status"] == "approved"
    assert data["match"] == {
        "problem_id": problem.pk,
        "score": 1.0,
        "reasons": ["same question asked"],
    }
    question = Question.objects.get(pk=data["id"])
    assert question.user == cast.alice and question.bank_hit and question.latency_ms is not None
    assert alice_client.get(f"/api/questions/{data['id']}").json()["answer"] == data["answer"]


@pytest.mark.parametrize(
    ("statuses", "served"),
    [
        (("unverified", "verified", "approved"), "approved"),
        (("unverified", "verified"), "verified"),
        (("unverified",), "unverified"),
        (("rejected", "failed", "flagged"), None),
        (("rejected", "unverified"), "unverified"),
    ],
)
def test_it_serves_the_best_answer_and_never_a_rejected_one(
    site, cast, make_problem, statuses, served
):
    problem = make_problem("1+1=?", solutions=tuple((s, "2") for s in statuses))
    best = problem.best_solution()
    assert (best.status if best else None) == served


def test_unverified_answers_are_not_served_when_the_setting_is_off(
    site, cast, make_problem, settings
):
    settings.SUANJING_SERVE_UNVERIFIED = False
    problem = make_problem("1+2=?", solutions=(("unverified", "3"),))
    assert problem.best_solution() is None


def test_a_rejection_takes_an_answer_out_of_service_at_once(site, cast, make_problem, alice_client):
    problem = make_problem(CHICKENS, solutions=(("verified", "23, 12"), ("unverified", "22, 13")))
    first = post_json(alice_client, "/api/ask", {"question": CHICKENS}).json()
    assert first["answer"]["status"] == "verified"
    verified = Solution.objects.get(problem=problem, status="verified")
    bank.review_solution(solution=verified, reviewer=cast.teacher, status="rejected")
    # The question already asked now shows the next best answer, and so does a new ask.
    again = alice_client.get(f"/api/questions/{first['id']}").json()
    assert again["answer"]["status"] == "unverified" and again["answer"]["final"] == "22, 13"
    assert (
        post_json(alice_client, "/api/ask", {"question": CHICKENS}).json()["answer"]["final"]
        == "22, 13"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"question": ""}, "empty"),
        ({"question": "   \n\t "}, "empty"),
        ({"question": "x" * 100_000}, "over 4000 characters"),
        ({"question": "abc\x00\x01def"}, "control character"),
        ({"question": 42}, "must be a string"),
        ({"text": "1+1"}, "must be a string"),
        (["1+1"], "JSON object"),
        ("not json at all", "JSON object"),
        (b"\xff\xfe\x00binary\x9c", "JSON object"),
    ],
)
def test_bad_questions_get_a_clear_400_and_nothing_is_stored(
    site, cast, alice_client, body, message
):
    response = post_json(alice_client, "/api/ask", body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert Question.objects.count() == 0


def test_script_in_a_question_is_stored_as_text_and_never_rendered_as_html(
    site, cast, make_problem, alice_client
):
    text = "<script>alert('x')</script> 1+1=?"
    make_problem(text, solutions=(("approved", "2"),))
    data = post_json(alice_client, "/api/ask", {"question": text}).json()
    assert data["question"] == text
    page = alice_client.get(f"/questions/{data['id']}").content.decode()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert" in page


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"HTTP_AUTHORIZATION": "Bearer sj_wrong"}, 401),
        ({"HTTP_AUTHORIZATION": "Basic YWxpY2U6cHc="}, 401),
        ({"HTTP_AUTHORIZATION": "Bearer "}, 401),
    ],
)
def test_the_api_refuses_missing_or_wrong_credentials(site, cast, headers, status):
    response = post_json(Client(), "/api/ask", {"question": "1+1"}, **headers)
    assert response.status_code == status
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert Question.objects.count() == 0


def test_a_bearer_token_works_without_csrf_and_a_session_needs_it(site, cast, make_problem):
    make_problem("2+2=?", solutions=(("approved", "4"),))
    token = tokens.issue_api_token(user=cast.alice)
    strict = Client(enforce_csrf_checks=True)
    assert post_json(strict, "/api/ask", {"question": "2+2=?"}, **bearer(token)).status_code == 200
    strict.force_login(cast.alice)
    assert post_json(strict, "/api/ask", {"question": "2+2=?"}).status_code == 403
    strict.get("/ask")  # sets the CSRF cookie
    csrf = strict.cookies["csrftoken"].value
    assert (
        post_json(strict, "/api/ask", {"question": "2+2=?"}, HTTP_X_CSRFTOKEN=csrf).status_code
        == 200
    )


def test_a_disabled_users_token_stops_working(site, cast):
    token = tokens.issue_api_token(user=cast.alice)
    cast.alice.is_active = False
    cast.alice.save()
    assert Client().get("/api/problems", **bearer(token)).status_code == 401


def test_a_student_cannot_see_another_students_question(site, cast, make_problem, alice_client):
    make_problem("3+3=?", solutions=(("approved", "6"),))
    bobs = Client()
    bobs.force_login(cast.bob)
    qid = post_json(bobs, "/api/ask", {"question": "3+3=?"}).json()["id"]
    for url in (
        f"/api/questions/{qid}",
        f"/api/questions/{qid}/stream",
        f"/questions/{qid}",
        f"/questions/{qid}/answer",
    ):
        assert alice_client.get(url).status_code == 404, url
    assert post_json(alice_client, f"/api/questions/{qid}/feedback", {}).status_code == 404
    assert alice_client.get("/api/questions/999999").status_code == 404
    teacher = Client()
    teacher.force_login(cast.teacher)
    assert teacher.get(f"/api/questions/{qid}").status_code == 200


def test_feedback_flags_the_match_for_teachers(site, cast, make_problem, alice_client):
    make_problem("4+4=?", solutions=(("approved", "8"),))
    qid = post_json(alice_client, "/api/ask", {"question": "4+4=?"}).json()["id"]
    response = post_json(alice_client, f"/api/questions/{qid}/feedback", {})
    assert response.status_code == 200 and response.json()["feedback"] == "not_my_question"
    assert Question.objects.missed().filter(pk=qid).exists()
    teacher = Client()
    teacher.force_login(cast.teacher)
    assert post_json(teacher, f"/api/questions/{qid}/feedback", {}).status_code == 403


def test_the_stream_of_a_finished_question_is_just_done(site, cast, make_problem, alice_client):
    make_problem("5+5=?", solutions=(("approved", "10"),))
    qid = post_json(alice_client, "/api/ask", {"question": "5+5=?"}).json()["id"]
    response = alice_client.get(f"/api/questions/{qid}/stream")
    assert response["Content-Type"].startswith("text/event-stream")
    body = b"".join(response.streaming_content).decode()
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["done"]
    assert events[0]["status"] == "hit" and events[0]["answer"]["final"] == "10"


def test_a_full_live_queue_says_busy_with_retry_after(site, cast, alice_client, settings):
    settings.SUANJING_MAX_LIVE_JOBS = 0
    response = post_json(
        alice_client, "/api/ask", {"question": "a question the bank does not hold"}
    )
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    data = response.json()
    assert (
        data["status"] == "refused" and data["refusal"] == "busy" and "Try again" in data["error"]
    )


def test_with_no_prepared_model_a_miss_is_refused_with_advice(
    site, cast, alice_client, tmp_path, settings
):
    settings.SUANJING_MODELS = tmp_path  # the real ModelStore path, empty
    response = post_json(
        alice_client, "/api/ask", {"question": "a question the bank does not hold"}
    )
    assert response.status_code == 503
    data = response.json()
    assert data["status"] == "refused" and data["refusal"] == "no_model"
    assert "prepare" in data["error"].lower()


def test_wrong_methods_get_405(site, cast, alice_client):
    assert alice_client.get("/api/ask").status_code == 405
    assert post_json(alice_client, "/api/problems", {}).status_code == 405


# -- /api/problems -----------------------------------------------------------------------------------


def test_problems_are_for_teachers_only(site, cast, alice_client):
    assert alice_client.get("/api/problems").status_code == 403
    token = tokens.issue_api_token(user=cast.bob)
    assert Client().get("/api/problems", **bearer(token)).status_code == 403


def test_problems_search_filter_and_pages_of_50(site, cast, make_problem):
    for i in range(60):
        make_problem(
            f"Problem number {i}: what is {i}+1?",
            lang="en",
            topic="arithmetic",
            difficulty=1 + i % 5,
        )
    make_problem(
        CHICKENS, reference="23, 12", topic="linear_systems", solutions=(("verified", "23, 12"),)
    )
    token = tokens.issue_api_token(user=cast.teacher)
    client = Client()
    first = client.get("/api/problems", **bearer(token)).json()
    assert first["total"] == 61 and first["page"] == 1 and len(first["items"]) == 50
    second = client.get("/api/problems?page=2", **bearer(token)).json()
    assert len(second["items"]) == 11
    found = client.get("/api/problems", {"q": "鸡和兔"}, **bearer(token)).json()
    assert [item["text"] for item in found["items"]] == [CHICKENS]
    assert (
        found["items"][0]["best_status"] == "verified"
        and found["items"][0]["reference_answer"] == "23, 12"
    )
    assert (
        client.get(
            "/api/problems", {"topic": "arithmetic", "difficulty": 2}, **bearer(token)
        ).json()["total"]
        == 12
    )
    assert client.get("/api/problems", {"lang": "zh"}, **bearer(token)).json()["total"] == 1
    assert client.get("/api/problems", {"status": "none"}, **bearer(token)).json()["total"] == 60
    assert client.get("/api/problems?page=9", **bearer(token)).status_code == 404
    assert client.get("/api/problems?page=x", **bearer(token)).status_code == 400


# -- the schema --------------------------------------------------------------------------------------


def test_the_openapi_schema_describes_the_routed_endpoints(site, cast, make_problem, alice_client):
    from django.urls import resolve

    schema = Client().get("/api/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    for path in schema["paths"]:
        resolve(
            path.replace("{id}", "1")
        )  # raises Resolver404 when a documented path is not routed
    make_problem("6+6=?", solutions=(("approved", "12"),))
    hit = post_json(alice_client, "/api/ask", {"question": "6+6=?"}).json()
    question_schema = schema["components"]["schemas"]["Question"]
    assert set(question_schema["required"]) <= set(hit)
    assert set(question_schema["properties"]["answer"]["required"]) == set(hit["answer"])
    assert set(question_schema["properties"]["match"]["required"]) == set(hit["match"])
    assert hit["status"] in question_schema["properties"]["status"]["enum"]
