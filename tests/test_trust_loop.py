"""Issue 10, the trust loop, through the site's real HTTP views with the fixed cast of users: what
students are served, "is this your question?", teachers' corrections reaching every student, a bank kept
apart from students' questions, plain words, and misses that end well.

The exact-text stand-in cache and the scripted engine (tests/site_fixtures.py) stand in for MiniLM and the
model; tests/test_trust_loop_real.py runs the correction paths on the real SemanticCache.
"""

from __future__ import annotations

import json
import threading

import pytest
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import FakeManifest, ScriptedEngine
from tutor.models import MatchBlock, Problem, ProblemAlias, Question, Solution, Topic
from tutor.services import live, runtime
from tutor.services.text import MAX_QUESTION_CHARS, question_key

pytestmark = pytest.mark.django_db(transaction=True)

CHICKENS = "鸡兔同笼，共有35个头，94只脚，问兔有多少只？"
GOOD = ["<think>\n", "rabbits = (94-70)/2 = 12", "</think>\n\n", "So there are ", "\\boxed{12}"]
NO_ANSWER = ["<think>\nhmm</think>", "I am not sure."]


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def ask(client: Client, text: str):
    return client.post(
        "/api/ask", data=json.dumps({"question": text}), content_type="application/json"
    )


def ask_page(client: Client, text: str) -> tuple[Question, str]:
    """The ask form without JavaScript: the question and the page it leads to."""
    response = client.post("/ask/submit", {"question": text})
    assert response.status_code == 302, response.content[:500]
    question = Question.objects.latest("id")
    return question, client.get(response["Location"]).content.decode()


def finish(client: Client, question_id: int) -> dict:
    """Follow a live generation to its end; the stream's "done" event."""
    body = b"".join(client.get(f"/api/questions/{question_id}/stream").streaming_content).decode()
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    return events[-1]


# -- 1. what students are served ---------------------------------------------------------------------


def test_an_answer_that_contradicts_the_reference_is_never_served(site, cast, make_problem):
    """Finding 1: precompute stored 26 where the reference is 15; the student gets the answer key."""
    problem = make_problem(CHICKENS, reference="15", solutions=(("unverified", "26"),))
    wrong = problem.solutions.get()
    assert wrong.contradicts_reference and problem.best_solution() is None
    alice = client_for(cast.alice)
    data = ask(alice, CHICKENS).json()
    assert data["status"] == "hit"
    assert data["answer"]["status"] == "answer_key" and data["answer"]["final"] == "15"
    page = alice.get(f"/questions/{data['id']}").content.decode()
    assert "Answer key 答案" in page and "26" not in page
    # The teacher sees the wrong answer, marked as never shown to students.
    teacher_page = client_for(cast.teacher).get(f"/bank/{problem.pk}").content.decode()
    assert "never shown to students" in teacher_page
    # A teacher who corrects the reference answer to 26 makes that answer agree (and servable) again.
    client_for(cast.teacher).post(
        f"/bank/{problem.pk}/edit",
        {"text": problem.text, "lang": "zh", "reference_answer": "26", "difficulty": ""},
    )
    wrong.refresh_from_db()
    assert not wrong.contradicts_reference and Problem.objects.get().best_solution() == wrong


@pytest.mark.parametrize("status", ["rejected", "failed", "flagged"])
def test_a_rejected_failed_or_flagged_answer_is_never_served(site, cast, make_problem, status):
    make_problem(CHICKENS, solutions=((status, "12"),))
    data = ask(client_for(cast.alice), CHICKENS).json()
    assert "answer" not in data


@pytest.mark.parametrize(
    ("status", "label", "css"),
    [
        ("approved", "Approved by a teacher", "final-approved"),
        ("verified", "matches the answer key", "final-verified"),
        ("unverified", "Not checked yet", "final-unverified"),
    ],
)
def test_approved_verified_and_unverified_answers_look_different(
    site, cast, make_problem, status, label, css
):
    make_problem(
        CHICKENS, reference="12" if status == "verified" else "", solutions=((status, "12"),)
    )
    _, page = ask_page(client_for(cast.alice), CHICKENS)
    assert label in page and f'class="final {css}"' in page
    others = {"final-approved", "final-verified", "final-unverified"} - {css}
    assert not any(other in page for other in others)


def test_the_ask_page_no_longer_claims_bank_answers_are_checked(site, cast):
    runtime.use_engine(None, FakeManifest(weak_at_math=True))
    page = client_for(cast.alice).get("/ask").content.decode()
    assert "small and often wrong at math" in page
    assert "Answers from the bank are checked" not in page


# -- 2. "Is this your question?" ------------------------------------------------------------------------


def test_a_suggestion_confirmed_serves_that_problem_and_a_teacher_accepts_the_alias(
    site, cast, make_problem, exact_cache
):
    first = make_problem(CHICKENS, solutions=(("approved", "12"),))
    second = make_problem(
        "鸡兔同笼，共有20个头，50只脚，问兔有多少只？", solutions=(("approved", "5"),)
    )
    wording = "笼子里鸡兔三十五个头九十四只脚，兔几只"
    exact_cache.suggest[question_key(wording)] = [str(first.pk), str(second.pk)]
    alice = client_for(cast.alice)
    question, page = ask_page(alice, wording)
    assert question.outcome == "suggested"
    assert "Is this your question? 这是你的问题吗？" in page
    assert first.text in page and second.text in page and "No, ask the tutor" in page
    response = alice.post(f"/questions/{question.pk}/choose", {"problem": first.pk})
    assert response.status_code == 302
    question.refresh_from_db()
    assert question.outcome == "hit" and question.problem == first
    assert question.served_solution().final == "12"
    alias = ProblemAlias.objects.get()
    assert (alias.status, alias.problem, alias.created_by) == ("pending", first, cast.alice)
    # Pending: bob asking the same wording is still only offered the suggestion...
    bob = client_for(cast.bob)
    assert ask(bob, wording).json()["status"] == "suggest"
    # ...until a teacher accepts it on the missed page: then it is a hit.
    teacher = client_for(cast.teacher)
    assert "Accept 接受" in teacher.get("/missed").content.decode()
    teacher.post(f"/aliases/{alias.pk}/review", {"action": "accept"})
    again = ask(bob, wording).json()
    assert again["status"] == "hit" and again["match"]["problem_id"] == first.pk


def test_a_suggestion_declined_asks_the_tutor_and_the_api_says_suggest(
    site, cast, make_problem, exact_cache
):
    banked = make_problem(CHICKENS, solutions=(("approved", "12"),))
    wording = "A cage with 35 heads and 94 legs: how many rabbits?"
    exact_cache.suggest[question_key(wording)] = [str(banked.pk)]
    runtime.use_engine(ScriptedEngine(GOOD), FakeManifest())
    alice = client_for(cast.alice)
    data = ask(alice, wording).json()
    assert data["status"] == "suggest" and "answer" not in data
    assert data["suggestions"] == [{"problem_id": banked.pk, "text": CHICKENS, "score": 0.7}]
    declined = alice.post(
        data["choose"], data=json.dumps({"problem_id": None}), content_type="application/json"
    )
    assert declined.status_code == 202 and declined.json()["status"] == "generating"
    assert finish(alice, data["id"])["status"] == "answered"
    assert not ProblemAlias.objects.exists()
    # Only the asker chooses.
    assert (
        client_for(cast.bob)
        .post(f"/questions/{data['id']}/choose", {"problem": "none"})
        .status_code
        == 404
    )


# -- 3. corrections propagate ------------------------------------------------------------------------


def test_a_teacher_links_a_missed_question_and_the_next_student_hits_that_problem(
    site, cast, make_problem
):
    """Finding 2: the live miss had made its own problem; "same as #N" now wins over it."""
    banked = make_problem(CHICKENS, solutions=(("approved", "12"),))
    runtime.use_engine(ScriptedEngine(NO_ANSWER), FakeManifest())
    wording = "Chickens and rabbits: 35 heads, 94 legs. Rabbits?"
    alice = client_for(cast.alice)
    data = ask(alice, wording).json()
    assert finish(alice, data["id"])["status"] == "failed"
    teacher = client_for(cast.teacher)
    assert wording in teacher.get("/missed").content.decode()
    response = teacher.post(f"/questions/{data['id']}/link", {"problem": f"#{banked.pk}"})
    assert response.status_code == 302
    assert ProblemAlias.objects.get().status == "accepted"
    again = ask(client_for(cast.bob), wording).json()
    assert again["status"] == "hit" and again["match"]["problem_id"] == banked.pk
    assert again["answer"]["final"] == "12"
    # A cache built from scratch (another process, a restart) reads the alias from the database.
    runtime.use_cache(None)
    from tests.site_fixtures import ExactCache

    rebuilt = ExactCache()
    rebuilt.add_many([(str(p.pk), p.text) for p in Problem.objects.all()])
    runtime.feed_corrections(rebuilt)
    assert rebuilt.lookup(wording).entry_id == str(banked.pk)


def test_not_my_question_blocks_the_match_and_flags_it_for_a_teacher(site, cast, make_problem):
    banked = make_problem(CHICKENS, solutions=(("approved", "12"),))
    alice = client_for(cast.alice)
    data = ask(alice, CHICKENS).json()
    assert data["status"] == "hit"
    assert alice.post(f"/questions/{data['id']}/feedback").status_code == 302
    block = MatchBlock.objects.get()
    assert (block.problem, block.created_by) == (banked, cast.alice)
    # The next student asking that wording is not served #N again.
    again = ask(client_for(cast.bob), CHICKENS).json()
    assert again["status"] != "hit" and again.get("match") is None
    # "Needs a teacher's look" shows it, on the missed page and in the bank's status filter.
    teacher = client_for(cast.teacher)
    assert CHICKENS in teacher.get("/missed?flagged=1").content.decode()
    assert "1 problem 共1题" in teacher.get("/bank", {"status": "flagged"}).content.decode()
    # The teacher says it *is* #N after all: the block is lifted and the wording hits again.
    teacher.post(f"/questions/{data['id']}/link", {"problem": banked.pk})
    assert not MatchBlock.objects.exists()
    assert ask(client_for(cast.bob), CHICKENS).json()["status"] == "hit"


def test_a_rejected_answer_stays_out_and_repeated_rejections_wait_for_a_teacher(
    site, cast, make_problem
):
    """Finding 3: reject -> never served again; the next generation has a new seed; the same rejected
    answer again counts as rejected; after two rejections students are told the teacher is checking."""
    problem = make_problem(CHICKENS)
    engine = ScriptedEngine(GOOD)
    runtime.use_engine(engine, FakeManifest())
    alice = client_for(cast.alice)
    first = ask(alice, CHICKENS).json()
    done = finish(alice, first["id"])
    assert done["status"] == "answered" and done["answer"]["final"] == "12"
    assert engine.params[0].seed is None
    teacher = client_for(cast.teacher)
    solution = Solution.objects.get()
    assert (
        teacher.post(f"/solutions/{solution.pk}/review", {"status": "rejected"}).status_code == 302
    )
    assert "answer" not in alice.get(f"/api/questions/{first['id']}").json()
    bob = client_for(cast.bob)
    second = ask(bob, CHICKENS).json()
    assert second["status"] == "generating"
    assert finish(bob, second["id"])["status"] == "waiting_for_teacher"
    assert engine.params[1].seed is not None  # another seed than the first run's
    again = Solution.objects.latest("id")
    assert again.status == "rejected" and "rejected" in again.evidence["why"]
    # Now the problem waits for a teacher: no third generation, a plain message instead.
    _, page = ask_page(bob, CHICKENS)
    assert "Your teacher is checking this problem 老师正在检查这道题" in page
    assert len(engine.prompts) == 2
    assert 'id="waiting"' in teacher.get(f"/bank/{problem.pk}").content.decode()


# -- 4. a clean bank ---------------------------------------------------------------------------------


def test_live_misses_are_students_questions_kept_apart_from_the_bank(site, cast, make_problem):
    """Finding 5: a live miss is cached and served, but listed apart; a teacher promotes, merges or
    deletes it."""
    banked = make_problem(CHICKENS, solutions=(("approved", "12"),))
    runtime.use_engine(ScriptedEngine(GOOD), FakeManifest())
    alice = client_for(cast.alice)
    texts = ["<script>alert(1)</script> 2+2=?", "How many legs do 3 ducks have?", "A new one: 7*6?"]
    for text in texts:
        finish(alice, ask(alice, text).json()["id"])
    students = Problem.objects.from_students()
    assert students.count() == 3 and all(p.origin == "live" for p in students)
    teacher = client_for(cast.teacher)
    bank_page = teacher.get("/bank").content.decode()
    assert "1 problem 共1题" in bank_page and "ducks" not in bank_page
    listing = teacher.get("/bank/students").content.decode()
    assert "ducks" in listing and "&lt;script&gt;" in listing and "<script>alert" not in listing
    # Still served to the next student who asks, with its status.
    again = ask(client_for(cast.bob), texts[1]).json()
    # (Its two steps come one at a time: the API withholds the answer as the page does, not its status.)
    assert again["status"] == "hit" and again["answer"]["status"] == "unverified"
    assert again["steps"]["total"] == 2 and again["answer"]["withheld"]
    script, ducks, new = (Problem.objects.get(text=t) for t in texts)
    assert teacher.post(f"/bank/{script.pk}/delete").status_code == 302
    teacher.post(f"/bank/{ducks.pk}/merge", {"into": banked.pk})
    assert not Problem.objects.filter(pk__in=[script.pk, ducks.pk]).exists()
    merged = ask(client_for(cast.bob), texts[1]).json()
    assert merged["status"] == "hit" and merged["match"]["problem_id"] == banked.pk
    teacher.post(f"/bank/{new.pk}/promote")
    assert Problem.objects.get(pk=new.pk).source == "bank"
    assert "2 problems" in teacher.get("/bank").content.decode()


def test_adding_a_near_duplicate_warns_and_topics_are_one_managed_list(site, cast, make_problem):
    make_problem(CHICKENS, solutions=(("approved", "12"),))
    teacher = client_for(cast.teacher)
    form = {"text": CHICKENS, "lang": "zh", "new_topic": "Linear Systems", "difficulty": ""}
    warned = teacher.post("/bank/new", form)
    assert warned.status_code == 409 and "may already hold this problem" in warned.content.decode()
    assert Problem.objects.count() == 1
    assert teacher.post("/bank/new", {**form, "confirm_duplicate": "1"}).status_code == 302
    assert Problem.objects.count() == 2
    other = {
        "text": "正方形边长3，面积？",
        "lang": "zh",
        "new_topic": "LINEAR  systems",
        "difficulty": "",
    }
    teacher.post("/bank/new", other)
    assert list(Topic.objects.values_list("name", flat=True)) == ["linear systems"]
    assert set(Problem.objects.exclude(topic="").values_list("topic", flat=True)) == {
        "linear systems"
    }
    # The bank's filter offers the managed list.
    assert '<option value="linear systems"' in teacher.get("/bank").content.decode()


# -- 5. plain words ------------------------------------------------------------------------------


def test_a_hit_says_why_in_plain_words_without_internals(site, cast, make_problem):
    problem = make_problem(CHICKENS, solutions=(("approved", "12"),))
    _, page = ask_page(client_for(cast.alice), CHICKENS)
    assert '<details class="why"><summary>why? 为什么？</summary>' in page
    assert "it is the same text" in page
    for internal in ("similarity", f"#{problem.pk}", "same question asked", "stored as problem"):
        assert internal not in page


def test_the_length_limit_is_stated_and_a_longer_question_is_refused_not_cut(site, cast):
    alice = client_for(cast.alice)
    page = alice.get("/ask").content.decode()
    limit = MAX_QUESTION_CHARS
    assert f"Up to {limit} characters" in page and f"最多{limit}字" in page
    assert "maxlength" not in page.split('id="question"')[1].split(">")[0]  # a paste is never cut
    refused = alice.post("/ask/submit", {"question": "x" * (limit + 1000)})
    assert refused.status_code == 400
    assert f"the limit is {limit}" in refused.content.decode()
    assert not Question.objects.exists()


def test_a_miss_page_works_without_javascript(site, cast):
    gate = threading.Event()
    runtime.use_engine(ScriptedEngine(GOOD, gate=gate), FakeManifest())
    alice = client_for(cast.alice)
    question, page = ask_page(alice, "What is 6 times 7?")
    head = page.split("</head>")[0]
    refresh = f'<noscript><meta http-equiv="refresh" content="5; url=/questions/{question.pk}">'
    assert refresh in head
    assert "this page reloads every few seconds" in page
    gate.set()
    assert live.live_jobs.wait_idle(10)
    # The reload shows the answer, without any script.
    reloaded = alice.get(f"/questions/{question.pk}").content.decode()
    assert 'http-equiv="refresh"' not in reloaded and "12" in reloaded


# -- 6. misses that end well ---------------------------------------------------------------------


def test_a_student_stops_a_live_answer(site, cast):
    engine = ScriptedEngine(GOOD, gate=threading.Event())  # never opened: it runs until stopped
    runtime.use_engine(engine, FakeManifest())
    alice = client_for(cast.alice)
    question, page = ask_page(alice, "Write a very long proof?")
    assert 'id="stop-button"' in page
    assert client_for(cast.bob).post(f"/questions/{question.pk}/stop").status_code == 404
    assert alice.post(f"/questions/{question.pk}/stop").status_code == 302
    assert live.live_jobs.wait_idle(10) and engine.generations[0].cancelled.is_set()
    question.refresh_from_db()
    assert question.outcome == "failed" and "You stopped" in question.error
    page = alice.get(f"/questions/{question.pk}").content.decode()
    assert "Try again 再试一次" in page and "Ask your teacher 问老师" in page


def test_a_failed_question_is_remembered_and_offers_a_retry_or_the_teacher(site, cast):
    engine = ScriptedEngine(NO_ANSWER)
    runtime.use_engine(engine, FakeManifest())
    alice = client_for(cast.alice)
    text = "鸡兔同笼，头比脚少多少？"
    first = ask(alice, text).json()
    assert finish(alice, first["id"])["status"] == "failed"
    question, page = ask_page(alice, text)
    assert question.outcome == "failed" and question.earlier_id == first["id"]
    assert len(engine.prompts) == 1  # not a silent rerun
    assert "was tried before" in page and "Try again 再试一次" in page
    alice.post(f"/questions/{question.pk}/ask-teacher")
    question.refresh_from_db()
    assert question.feedback == "ask_teacher"
    assert text in client_for(cast.teacher).get("/missed?flagged=1").content.decode()
    alice.post(f"/questions/{question.pk}/retry")
    assert finish(alice, question.pk)["status"] == "failed"
    assert len(engine.prompts) == 2 and engine.params[1].seed is not None


def test_one_live_generation_per_student_at_a_time(site, cast):
    gate = threading.Event()
    runtime.use_engine(ScriptedEngine(GOOD, gate=gate), FakeManifest())
    alice = client_for(cast.alice)
    assert ask(alice, "first question?").status_code == 202
    stored = Question.objects.count()
    second = ask(alice, "second question?")
    assert second.status_code == 429 and second.json()["refusal"] == "one_at_a_time"
    assert second["Retry-After"] and "already have a question" in second.json()["error"]
    page = alice.post("/ask/submit", {"question": "second question?"})
    assert page.status_code == 429 and "already have a question" in page.content.decode()
    assert Question.objects.count() == stored  # no stored refusal per attempt
    assert ask(client_for(cast.bob), "second question?").status_code == 202  # others may ask
    gate.set()
