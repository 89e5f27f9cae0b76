"""Issue 12: Stop, Retry and Copy on every live answer. A finished live answer offers "Another answer
换一个答案": a new live generation with a new seed, under the limits of any ask (one live answer per
student, the slot limit), checked as any live answer is (a final answer a teacher rejected is stored
rejected and never served); should it come to nothing, the answer the student had stays. All of it works
as plain forms (no JavaScript), and in the JSON API.

The scripted engine stands in for the model; the real tiny OpenVINO model runs the same path at the end
(and SmolLM2 in tests/test_followups_browser.py)."""

from __future__ import annotations

import json
import threading

import pytest
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import FakeManifest, ScriptedEngine, bearer
from tutor.models import Problem, Question, Solution
from tutor.services import asking, bank, live, runtime, tokens

pytestmark = pytest.mark.django_db(transaction=True)

TEXT = "How many rabbits are in the cage of 35 heads and 94 legs?"


def answer(final: str) -> list[str]:
    return [
        "<think>\n",
        "35 heads, 94 legs: ",
        "rabbits = (94-70)/2",
        "</think>\n\n",
        "So there are ",
        f"\\boxed{{{final}}}",
        " rabbits.",
    ]


NO_FINAL = ["<think>\n", "hmm", "</think>\n\n", "I am not sure."]


def post_json(client: Client, path: str, body: dict | None = None, **extra):
    return client.post(path, json.dumps(body or {}), content_type="application/json", **extra)


def finish(client: Client, qid: int) -> dict:
    response = client.get(f"/api/questions/{qid}/stream")
    body = b"".join(response.streaming_content).decode()
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")][-1]


@pytest.fixture
def alice(cast):
    client = Client()
    client.force_login(cast.alice)
    return client


@pytest.fixture
def answered(site, cast, alice):
    """alice's question, answered live: the scripted engine wrote 12."""
    engine = ScriptedEngine(answer("12"))
    runtime.use_engine(engine, FakeManifest())
    data = post_json(alice, "/api/ask", {"question": TEXT}).json()
    assert finish(alice, data["id"])["status"] == "answered"
    return Question.objects.get(pk=data["id"]), engine


def test_a_finished_live_answer_offers_copy_and_another_answer_with_a_new_seed(answered, alice):
    question, engine = answered
    first = question.solution
    page = alice.get(f"/questions/{question.pk}").content.decode()
    assert "Copy 复制" in page and "Another answer 换一个答案" in page
    assert f'action="/questions/{question.pk}/retry"' in page
    assert "Select it all, then copy" in page  # Copy without JavaScript: the text in a box
    engine.pieces = answer("13")
    # A plain form post (no JavaScript): the page then streams the new answer (or reloads without JS).
    response = alice.post(f"/questions/{question.pk}/retry")
    assert response.status_code == 302 and response["Location"] == f"/questions/{question.pk}"
    done = finish(alice, question.pk)
    assert done["status"] == "answered" and done["answer"]["final"] == "13"
    question.refresh_from_db()
    assert question.solution != first and question.solution.problem_id == first.problem_id
    assert Problem.objects.count() == 1 and Solution.objects.count() == 2
    assert engine.params[0].seed is None and engine.params[1].seed is not None
    assert "<｜User｜>" + TEXT in engine.prompts[1]


def test_the_page_of_an_answer_being_rewritten_has_stop_and_reloads_without_javascript(
    answered, alice
):
    question, engine = answered
    gate = threading.Event()
    engine.gate = gate
    assert alice.post(f"/questions/{question.pk}/retry").status_code == 302
    page = alice.get(f"/questions/{question.pk}").content.decode()
    assert 'http-equiv="refresh"' in page and 'id="stop-button"' in page
    assert f'action="/questions/{question.pk}/stop"' in page
    # Stop (the plain form): the answer the student had is shown again, with what happened.
    assert alice.post(f"/questions/{question.pk}/stop").status_code == 302
    gate.set()
    assert live.live_jobs.wait_idle(10)
    question.refresh_from_db()
    assert question.outcome == "failed" and question.served_solution().final == "12"
    page = alice.get(f"/questions/{question.pk}").content.decode()
    assert "A new answer was not written: You stopped this answer." in page
    assert "<strong>12</strong>" in page and "Another answer 换一个答案" in page


def test_another_answer_that_comes_to_nothing_keeps_the_answer_the_student_had(answered, alice):
    question, engine = answered
    engine.pieces = NO_FINAL
    assert alice.post(f"/questions/{question.pk}/retry").status_code == 302
    done = finish(alice, question.pk)
    assert done["status"] == "failed" and done["answer"]["final"] == "12"
    assert "did not reach a final answer" in done["error"]
    assert Solution.objects.filter(status="failed").count() == 1  # stored for teachers all the same
    page = alice.get(f"/questions/{question.pk}").content.decode()
    assert "A new answer was not written" in page and "<strong>12</strong>" in page


def test_a_rejected_answer_is_never_served_again(answered, cast, alice):
    question, engine = answered
    bank.review_solution(solution=question.solution, reviewer=cast.teacher, status="rejected")
    page = alice.get(f"/questions/{question.pk}").content.decode()
    assert "<strong>12</strong>" not in page and "Try again 再试一次" in page
    # The model writes 12 again: stored rejected and never served (the prompt named the rejected
    # answer); rejected twice, the problem waits for a teacher, as any problem does.
    assert alice.post(f"/questions/{question.pk}/retry").status_code == 302
    done = finish(alice, question.pk)
    assert done["status"] == "waiting_for_teacher" and "answer" not in done
    assert "A previous answer, 12, was marked wrong by a teacher" in engine.prompts[-1]
    assert Solution.objects.filter(status="rejected").count() == 2
    page = alice.get(f"/questions/{question.pk}").content.decode()
    assert "<strong>12</strong>" not in page and "Your teacher is checking this problem" in page
    assert "Another answer" not in page and "Try again" not in page


def test_another_answer_after_a_rejection_is_served_when_it_is_another(answered, cast, alice):
    question, engine = answered
    bank.review_solution(solution=question.solution, reviewer=cast.teacher, status="rejected")
    engine.pieces = answer("13")
    assert alice.post(f"/questions/{question.pk}/retry").status_code == 302
    done = finish(alice, question.pk)
    assert done["status"] == "answered" and done["answer"]["final"] == "13"
    assert "A previous answer, 12, was marked wrong" in engine.prompts[-1]


def test_another_answer_waits_its_turn_like_any_live_answer(answered, cast, alice, settings):
    question, engine = answered
    gate = threading.Event()
    engine.gate = gate
    assert (
        post_json(alice, "/api/ask", {"question": "A different long question?"}).status_code == 202
    )
    response = alice.post(f"/questions/{question.pk}/retry", follow=True)
    assert "You already have a question being answered" in response.content.decode()
    question.refresh_from_db()
    assert question.outcome == "generated" and question.served_solution().final == "12"
    api = post_json(alice, f"/api/questions/{question.pk}/retry")
    assert api.status_code == 429 and api.json()["refusal"] == "one_at_a_time"
    gate.set()
    assert live.live_jobs.wait_idle(10)
    # Every slot taken by others: busy, and the answer stays.
    gate.clear()
    settings.SUANJING_MAX_LIVE_JOBS = 1
    bob = Client()
    bob.force_login(cast.bob)
    assert post_json(bob, "/api/ask", {"question": "bob asks something new?"}).status_code == 202
    busy = post_json(alice, f"/api/questions/{question.pk}/retry")
    assert busy.status_code == 429 and busy.json()["refusal"] == "busy" and busy["Retry-After"]
    question.refresh_from_db()
    assert question.outcome == "generated"
    gate.set()


def test_the_api_writes_another_answer(answered, cast):
    question, engine = answered
    engine.pieces = answer("13")
    token = tokens.issue_api_token(user=cast.alice)
    client = Client()
    response = post_json(client, f"/api/questions/{question.pk}/retry", **bearer(token))
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "generating" and response.json()["stream"]
    assert live.live_jobs.wait_idle(10)
    data = client.get(f"/api/questions/{question.pk}", **bearer(token)).json()
    assert data["status"] == "answered" and data["answer"]["final"] == "13"
    # Only the asker: a teacher is refused, another student does not see it.
    for user, status in ((cast.teacher, 403), (cast.bob, 404)):
        other = tokens.issue_api_token(user=user)
        assert (
            post_json(client, f"/api/questions/{question.pk}/retry", **bearer(other)).status_code
            == status
        )


def test_a_banked_answer_has_no_another_answer(site, cast, alice, make_problem):
    problem = make_problem("6+6=?", solutions=(("approved", "12"),))
    hit = asking.answer_question(user=cast.alice, text=problem.text)
    page = alice.get(f"/questions/{hit.pk}").content.decode()
    assert "Another answer" not in page and "Copy 复制" in page
    assert post_json(alice, f"/api/questions/{hit.pk}/retry").status_code == 409
    alice.post(f"/questions/{hit.pk}/retry")
    hit.refresh_from_db()
    assert hit.outcome == "hit" and Solution.objects.count() == 1


def test_another_answer_on_the_real_tiny_model(answered, alice, tiny_engine, tiny_model, settings):
    """The same path on a real engine: the random model writes 12 tokens of reasoning and no final
    answer, so the new answer comes to nothing and the student keeps the one they had."""
    question, _ = answered
    settings.SUANJING_MAX_NEW_TOKENS = 12
    runtime.use_engine(tiny_engine, tiny_model.manifest)
    assert alice.post(f"/questions/{question.pk}/retry").status_code == 302
    done = finish(alice, question.pk)
    assert done["status"] == "failed" and done["answer"]["final"] == "12"
    latest = Solution.objects.latest("id")
    assert latest.model_name == "tiny-qwen2" and latest.status == "failed"
    assert latest.evidence["seed"] > 0 and latest.new_tokens == 12
    assert "A new answer was not written" in alice.get(f"/questions/{question.pk}").content.decode()
