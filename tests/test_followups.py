"""Issue 12: a follow-up question on an answer ("why is step 2 true?"). It runs as a live generation with
the problem and the answer (as much of it as the student has seen) in the prompt, queued like any live
answer (the ask rate, one live answer per student, the slot limit), streams with Stop, is rendered as
safely as a live answer, and offers Try again / Another answer; it never becomes a problem, an answer or
a missed question, and it is kept under its question in the student's history.

The scripted engine stands in for the model in the unit tests; the same path runs on the real tiny
OpenVINO model at the end, and on the real SmolLM2 in tests/test_followups_browser.py."""

from __future__ import annotations

import json
import threading

import pytest
from django.test import Client

from solver.prompts import get_family, render_follow_up
from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import FakeManifest, ScriptedEngine, bearer
from tutor.models import (
    BankChange,
    FollowUp,
    LiveGeneration,
    Problem,
    Question,
    Solution,
    StepProgress,
)
from tutor.services import asking, live, runtime, steps, tokens

pytestmark = pytest.mark.django_db(transaction=True)

PROBLEM = "鸡兔同笼，35个头，94只脚，兔几只？"
WORKED = "设兔有 $y$ 只。\n\n$4y + 2(35-y) = 94$\n\n所以 $y = 12$，答案是 \\boxed{12}"
REPLY = [
    "<think>\n",
    "The student asks about the second step.",
    "</think>\n\n",
    "Each rabbit has 4 legs and each chicken 2, ",
    "so $4y + 2(35-y)$ counts all the legs.",
]
GOOD = [
    "<think>\n",
    "35 heads, 94 legs: ",
    "rabbits = (94-70)/2 = 12",
    "</think>\n\n",
    "So there are ",
    "\\boxed{12}",
    " rabbits.",
]


def post_json(client: Client, path: str, body: dict, **extra):
    return client.post(path, json.dumps(body), content_type="application/json", **extra)


def stream(client: Client, path: str) -> list[dict]:
    response = client.get(path)
    body = b"".join(response.streaming_content).decode()
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


@pytest.fixture
def alice(cast):
    client = Client()
    client.force_login(cast.alice)
    return client


@pytest.fixture
def banked(site, cast, make_problem):
    """A banked problem with a three-step approved answer, and alice's question that hit it (shown to
    her step by step)."""
    problem = make_problem(PROBLEM, reference="12")
    Solution.objects.create(
        problem=problem, answer=WORKED, final="12", status="approved", source="teacher"
    )
    question = asking.answer_question(user=cast.alice, text=problem.text)
    assert question.outcome == "hit"
    return problem, question


def counts() -> tuple[int, int, int, int]:
    return (
        Problem.objects.count(),
        Solution.objects.count(),
        Question.objects.count(),
        BankChange.objects.count(),
    )


# -- the prompt, in both languages --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("follow_up", "words", "not_words"),
    [
        (
            "为什么第2步成立？",
            ["学生的问题：\n为什么第2步成立？", "请用中文"],
            ["Answer the student"],
        ),
        (
            "Why is step 2 true?",
            ["The student's question:\nWhy is step 2 true?", "in English"],
            ["请用中文"],
        ),
    ],
)
def test_the_follow_up_prompt_speaks_the_students_language(follow_up, words, not_words):
    prompt = render_follow_up(get_family("chatml"), PROBLEM, WORKED, follow_up)
    assert PROBLEM in prompt and "4y + 2(35-y) = 94" in prompt
    for word in words:
        assert word in prompt
    for word in not_words:
        assert word not in prompt


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_partial_answer_is_quoted_as_the_steps_seen_and_the_rest_is_kept(lang):
    prompt = render_follow_up(
        get_family("r1-distill"), PROBLEM, "设兔有 $y$ 只。", "why?", lang=lang, partial=True
    )
    assert ("学生已经看到的步骤" if lang == "zh" else "The steps the student has seen") in prompt
    assert ("不要说出后面的步骤" if lang == "zh" else "Do not give away the later steps") in prompt


def test_a_follow_up_as_long_as_a_question_reaches_the_model_whole():
    long = "为" * 4000
    assert long in render_follow_up(get_family("chatml"), PROBLEM, WORKED, long)


# -- a follow-up on a banked answer ---------------------------------------------------------------------


def test_a_follow_up_streams_is_answered_and_is_never_a_problem_or_a_missed_question(
    banked, cast, alice
):
    problem, question = banked
    engine = ScriptedEngine(REPLY)
    runtime.use_engine(engine, FakeManifest())
    steps.reveal(student=cast.alice, question=question, action="whole")
    before = counts()
    response = post_json(
        alice, f"/api/questions/{question.pk}/followup", {"question": "为什么第2步成立？"}
    )
    assert response.status_code == 202, response.content
    data = response.json()
    assert data["status"] == "generating" and data["question_id"] == question.pk
    assert data["stream"] == f"/api/followups/{data['id']}/stream"
    events = stream(alice, data["stream"])
    assert [e["type"] for e in events][-1] == "done"
    assert "".join(e["text"] for e in events if e["type"] == "answer").strip().startswith("Each")
    done = events[-1]
    assert done["status"] == "answered" and done["reply"]["text"].startswith("Each rabbit has 4")
    assert done["reply"]["reasoning"] == "The student asks about the second step."
    # The prompt: the problem, the whole worked answer (shown), the student's words; Chinese.
    prompt = engine.prompts[0]
    assert (
        problem.text in prompt and "4y + 2(35-y) = 94" in prompt and "为什么第2步成立？" in prompt
    )
    assert "请用中文" in prompt and "学生已经看到的步骤" not in prompt
    # Nothing of the bank moved: no problem, answer, question or cache change; not a missed question.
    assert counts() == before
    assert LiveGeneration.objects.get().problem_id is None
    follow_up = FollowUp.objects.get()
    assert (follow_up.user, follow_up.question, follow_up.outcome) == (
        cast.alice,
        question,
        "answered",
    )
    teacher = Client()
    teacher.force_login(cast.teacher)
    assert "为什么第2步成立" not in teacher.get("/missed").content.decode()
    assert "为什么第2步成立" not in teacher.get("/bank/students").content.decode()
    # Kept under the question: its page, the API's question, the history row.
    page = alice.get(f"/questions/{question.pk}").content.decode()
    assert "为什么第2步成立？" in page and "Each rabbit has 4 legs" in page
    assert "Another answer 换一个答案" in page and "Ask about this answer 追问" in page
    assert alice.get(f"/api/questions/{question.pk}").json()["follow_ups"][0]["id"] == data["id"]
    assert "1 follow-up 追问1次" in alice.get("/ask").content.decode()
    assert alice.get(f"/api/followups/{data['id']}").json()["status"] == "answered"


def test_a_follow_up_on_a_step_by_step_answer_quotes_only_the_steps_seen(banked, cast, alice):
    _, question = banked
    engine = ScriptedEngine(REPLY)
    runtime.use_engine(engine, FakeManifest())
    # Nothing seen yet: no form, and the API says what to do first.
    assert "Ask about this answer" not in alice.get(f"/questions/{question.pk}").content.decode()
    response = post_json(alice, f"/api/questions/{question.pk}/followup", {"question": "why?"})
    assert response.status_code == 409 and "take a hint first" in response.json()["error"]
    assert FollowUp.objects.count() == 0
    steps.reveal(student=cast.alice, question=question, action="hint")
    page = alice.get(f"/questions/{question.pk}").content.decode()
    assert "Ask about this answer" in page and "from the steps you have seen" in page
    response = alice.post(f"/questions/{question.pk}/followup", {"question": "Why y?"})
    follow_up = FollowUp.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/questions/{question.pk}#followup-{follow_up.pk}"
    assert live.live_jobs.wait_idle(10)
    prompt = engine.prompts[0]
    assert (
        "设兔有 $y$ 只。" in prompt and "4y + 2(35-y)" not in prompt and "\\boxed{12}" not in prompt
    )
    assert "Do not give away the later steps" in prompt
    assert follow_up.steps_shown == 1
    # Asking did not reveal more: the student is still at step 1 of 3.
    assert StepProgress.objects.get().shown == 1 and not StepProgress.objects.get().whole


def test_a_follow_up_on_a_live_answer_and_on_the_answer_key(site, cast, alice, make_problem):
    engine = ScriptedEngine(GOOD)
    runtime.use_engine(engine, FakeManifest())
    asked = post_json(alice, "/api/ask", {"question": "How many rabbits are in the cage?"}).json()
    stream(alice, asked["stream"])
    engine.pieces = REPLY
    response = post_json(alice, f"/api/questions/{asked['id']}/followup", {"question": "Why 70?"})
    assert response.status_code == 202
    stream(alice, response.json()["stream"])
    assert "So there are \\boxed{12} rabbits." in engine.prompts[-1]  # the live answer's write-up
    # The answer key alone (no worked answer yet): it is what the student saw, and what is quoted.
    keyed = make_problem("一个数的3倍是36，这个数是多少？", reference="12")
    hit = asking.answer_question(user=cast.alice, text=keyed.text)
    assert hit.answer_key() == "12"
    assert (
        post_json(alice, f"/api/questions/{hit.pk}/followup", {"question": "为什么？"}).status_code
        == 202
    )
    assert live.live_jobs.wait_idle(10)
    assert "\\boxed{12}" in engine.prompts[-1] and keyed.text in engine.prompts[-1]


def test_one_live_answer_per_student_counts_follow_ups_and_questions_alike(banked, cast, alice):
    _, question = banked
    steps.reveal(student=cast.alice, question=question, action="whole")
    gate = threading.Event()
    runtime.use_engine(ScriptedEngine(REPLY, gate=gate), FakeManifest())
    first = post_json(alice, f"/api/questions/{question.pk}/followup", {"question": "why 2?"})
    assert first.status_code == 202
    # A second follow-up, or a new question, while the first reply is written: one at a time.
    second = post_json(alice, f"/api/questions/{question.pk}/followup", {"question": "why 4?"})
    assert second.status_code == 429 and second.json()["refusal"] == "one_at_a_time"
    ask = post_json(alice, "/api/ask", {"question": "What is the answer to it all?"})
    assert ask.status_code == 429 and ask.json()["refusal"] == "one_at_a_time"
    # The page keeps the words typed and says why.
    page = alice.post(f"/questions/{question.pk}/followup", {"question": "why 4?"})
    assert page.status_code == 429 and "why 4?</textarea>" in page.content.decode()
    assert "You already have a question being answered" in page.content.decode()
    assert FollowUp.objects.count() == 1
    gate.set()
    assert live.live_jobs.wait_idle(10)
    # ...and a follow-up waits for a question being answered too.
    gate.clear()
    asked = post_json(alice, "/api/ask", {"question": "What is the answer to it all?"})
    assert asked.status_code == 202
    refused = post_json(alice, f"/api/questions/{question.pk}/followup", {"question": "why 4?"})
    assert refused.status_code == 429 and refused.json()["refusal"] == "one_at_a_time"
    gate.set()


def test_a_full_queue_refuses_a_follow_up_and_stores_nothing(banked, cast, alice, settings):
    _, question = banked
    steps.reveal(student=cast.alice, question=question, action="whole")
    gate = threading.Event()
    runtime.use_engine(ScriptedEngine(GOOD, gate=gate), FakeManifest())
    settings.SUANJING_MAX_LIVE_JOBS = 1
    bob = Client()
    bob.force_login(cast.bob)
    assert post_json(bob, "/api/ask", {"question": "bob's long question?"}).status_code == 202
    response = post_json(alice, f"/api/questions/{question.pk}/followup", {"question": "why?"})
    assert response.status_code == 429 and response.json()["refusal"] == "busy"
    assert response["Retry-After"] and FollowUp.objects.count() == 0
    gate.set()


def test_without_a_model_a_follow_up_is_refused_with_a_503(banked, cast, alice):
    _, question = banked
    steps.reveal(student=cast.alice, question=question, action="whole")
    response = post_json(alice, f"/api/questions/{question.pk}/followup", {"question": "why?"})
    assert response.status_code == 503 and response.json()["refusal"] == "no_model"
    assert FollowUp.objects.count() == 0


@pytest.mark.parametrize("text", ["", "   ", "a\x00b", "x" * 4001])
def test_a_follow_up_has_the_question_rules_and_their_words(banked, cast, alice, text):
    _, question = banked
    steps.reveal(student=cast.alice, question=question, action="whole")
    runtime.use_engine(ScriptedEngine(REPLY), FakeManifest())
    api = post_json(alice, f"/api/questions/{question.pk}/followup", {"question": text})
    assert api.status_code == 400
    page = alice.post(f"/questions/{question.pk}/followup", {"question": text})
    assert page.status_code == 400
    if len(text) > 4000:
        # The ask form's words, in both languages, and the text kept to be shortened.
        assert "Your question is 4001 characters long; the limit is 4000" in page.content.decode()
        assert "问题有4001字，最多4000字" in page.content.decode()
        assert "x" * 4001 in page.content.decode()
    assert FollowUp.objects.count() == 0


def test_the_ask_rate_counts_follow_ups(banked, cast, alice, settings):
    _, question = banked
    steps.reveal(student=cast.alice, question=question, action="whole")
    runtime.use_engine(ScriptedEngine(REPLY), FakeManifest())
    settings.SUANJING_ASKS_PER_MINUTE = 2  # alice's hit is one
    assert (
        post_json(alice, f"/api/questions/{question.pk}/followup", {"question": "a?"}).status_code
        == 202
    )
    assert live.live_jobs.wait_idle(10)
    response = post_json(alice, f"/api/questions/{question.pk}/followup", {"question": "b?"})
    assert response.status_code == 429 and response.json()["refusal"] == "rate"


# -- Stop, Try again, Another answer ------------------------------------------------------------------


def test_stop_then_try_again_then_another_answer(banked, cast, alice):
    _, question = banked
    steps.reveal(student=cast.alice, question=question, action="whole")
    gate = threading.Event()
    engine = ScriptedEngine(REPLY, gate=gate)
    runtime.use_engine(engine, FakeManifest())
    data = post_json(alice, f"/api/questions/{question.pk}/followup", {"question": "why?"}).json()
    page = alice.get(f"/questions/{question.pk}").content.decode()
    assert 'http-equiv="refresh"' in page and "Stop 停止" in page  # without JavaScript: reloads
    # Stop (the page's form): the reply is stopped and the generation cancelled.
    response = alice.post(f"/followups/{data['id']}/stop")
    assert response.status_code == 302 and response["Location"].endswith(f"#followup-{data['id']}")
    assert live.live_jobs.wait_idle(10)
    follow_up = FollowUp.objects.get()
    assert follow_up.outcome == "failed" and "stopped" in follow_up.error
    assert LiveGeneration.objects.get().status == "cancelled"
    assert "Try again 再试一次" in alice.get(f"/questions/{question.pk}").content.decode()
    # Try again: written again in its place, with a new seed.
    gate.set()
    retried = post_json(alice, f"/api/followups/{data['id']}/retry", {})
    assert retried.status_code == 202 and retried.json()["id"] == data["id"]
    assert stream(alice, retried.json()["stream"])[-1]["status"] == "answered"
    assert engine.params[-1].seed is not None
    # Another answer: a new follow-up with the same words; the first reply stays.
    response = alice.post(f"/followups/{data['id']}/retry")
    assert response.status_code == 302
    assert live.live_jobs.wait_idle(10)
    first, second = FollowUp.objects.order_by("id")
    assert (first.outcome, second.outcome, second.text) == ("answered", "answered", "why?")
    assert engine.params[-1].seed not in (None, engine.params[-2].seed)
    # The API stops too; a stopped follow-up says so.
    gate.clear()
    third = post_json(alice, f"/api/followups/{second.pk}/retry", {}).json()
    stopped = post_json(alice, f"/api/followups/{third['id']}/stop", {})
    assert stopped.status_code == 200 and stopped.json()["status"] == "failed"
    gate.set()


def test_a_reply_nobody_waits_for_is_cancelled(banked, cast, alice, settings):
    _, question = banked
    steps.reveal(student=cast.alice, question=question, action="whole")
    settings.SUANJING_LIVE_ORPHAN_S = 1  # (at least live.ORPHAN_FLOOR_S)
    gate = threading.Event()
    runtime.use_engine(ScriptedEngine(REPLY, gate=gate), FakeManifest())
    post_json(alice, f"/api/questions/{question.pk}/followup", {"question": "why?"})
    assert live.live_jobs.wait_idle(30)  # nobody follows its stream or looks at its page
    follow_up = FollowUp.objects.get()
    assert follow_up.outcome == "failed" and follow_up.error == live.NOBODY_WATCHED
    assert LiveGeneration.objects.get().status == "cancelled"
    gate.set()


def test_model_output_in_a_reply_is_rendered_as_text(banked, cast, alice):
    _, question = banked
    steps.reveal(student=cast.alice, question=question, action="whole")
    hostile = ["<script>alert(1)</script> <img src=x onerror=alert(2)> [a](javascript:alert(3))"]
    runtime.use_engine(ScriptedEngine(hostile), FakeManifest(family="chatml"))
    data = post_json(
        alice, f"/api/questions/{question.pk}/followup", {"question": "<b>why</b>?"}
    ).json()
    stream(alice, data["stream"])
    assert FollowUp.objects.get().reply.startswith("<script>")
    for path in (f"/questions/{question.pk}", f"/followups/{data['id']}"):
        page = alice.get(path).content.decode()
        assert "<script>alert" not in page and "<img" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<b>why</b>" not in page
        assert 'href="javascript' not in page


# -- who may see and do what --------------------------------------------------------------------------


def test_only_the_asker_asks_stops_and_retries_and_others_cannot_see(banked, cast, alice):
    _, question = banked
    steps.reveal(student=cast.alice, question=question, action="whole")
    runtime.use_engine(ScriptedEngine(REPLY), FakeManifest())
    data = post_json(alice, f"/api/questions/{question.pk}/followup", {"question": "why?"}).json()
    assert live.live_jobs.wait_idle(10)
    bob_token, teacher_token = (
        tokens.issue_api_token(user=cast.bob),
        tokens.issue_api_token(user=cast.teacher),
    )
    client = Client()
    # Another student: none of it exists.
    for method, path in (
        ("get", f"/api/followups/{data['id']}"),
        ("get", f"/api/followups/{data['id']}/stream"),
        ("post", f"/api/followups/{data['id']}/stop"),
        ("post", f"/api/followups/{data['id']}/retry"),
        ("post", f"/api/questions/{question.pk}/followup"),
    ):
        response = getattr(client, method)(path, **bearer(bob_token))
        assert response.status_code == 404, path
    bob = Client()
    bob.force_login(cast.bob)
    assert bob.get(f"/followups/{data['id']}").status_code == 404
    assert bob.post(f"/followups/{data['id']}/stop").status_code == 404
    # A teacher sees it (under the student's question) but does not act for the student.
    assert client.get(f"/api/followups/{data['id']}", **bearer(teacher_token)).status_code == 200
    for path in (
        f"/api/followups/{data['id']}/stop",
        f"/api/followups/{data['id']}/retry",
        f"/api/questions/{question.pk}/followup",
    ):
        response = post_json(client, path, {"question": "x"}, **bearer(teacher_token))
        assert response.status_code == 403, path
    teacher = Client()
    teacher.force_login(cast.teacher)
    page = teacher.get(f"/questions/{question.pk}").content.decode()
    assert "why?" in page and "Ask about this answer" not in page and "followup_retry" not in page
    assert "Another answer 换一个答案" not in page


def test_an_unknown_follow_up_is_a_404_and_bad_after_a_400(site, cast, alice):
    assert alice.get("/api/followups/999").status_code == 404
    assert alice.get("/api/followups/1/stream?after=x").status_code == 400


# -- the real tiny OpenVINO model ---------------------------------------------------------------------


def test_a_follow_up_runs_on_the_real_tiny_model(
    banked, cast, alice, tiny_engine, tiny_model, settings
):
    """The same path end to end on a real engine: it streams, and the random model's reply, which never
    leaves its reasoning within 12 tokens, is stored failed with Try again; nothing enters the bank."""
    settings.SUANJING_MAX_NEW_TOKENS = 12
    runtime.use_engine(tiny_engine, tiny_model.manifest)
    _, question = banked
    steps.reveal(student=cast.alice, question=question, action="whole")
    before = counts()
    data = post_json(
        alice, f"/api/questions/{question.pk}/followup", {"question": "为什么？"}
    ).json()
    events = stream(alice, data["stream"])
    pieces = [e for e in events if e["type"] in ("reasoning", "answer")]
    assert pieces, "the tiny model streamed nothing"
    done = events[-1]
    follow_up = FollowUp.objects.get()
    assert done["status"] == follow_up.outcome == "failed" and follow_up.error == live.NO_REPLY
    assert follow_up.new_tokens == 12 and follow_up.model_name == "tiny-qwen2"
    assert follow_up.reasoning.strip() == "".join(e["text"] for e in pieces).strip()
    assert counts() == before
    assert "Try again 再试一次" in alice.get(f"/questions/{question.pk}").content.decode()
