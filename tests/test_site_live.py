"""Live generation: a miss streams, is stored with provenance and becomes a hit; generations are shared,
bounded and cancelled when nobody waits; their state is in the database, so that any process streams
them (numbered events, Last-Event-ID) and takes over one whose owner died. Scripted engine for the
storage rules and the shared state, the real tiny OpenVINO model for the same path end to end; the
same paths across real processes are in tests/test_live_multiprocess.py."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import subprocess
import threading
import time

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from solver.prompts import get_family
from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import FakeManifest, ScriptedEngine
from tutor.models import LiveEvent, LiveGeneration, Problem, Question, Solution
from tutor.services import live, runtime
from tutor.services.live import _merge, _StreamSplitter
from tutor.services.text import question_key

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = [
    "<think>\n",
    "35 heads, 94 legs: ",
    "rabbits = (94-70)/2 = 12",
    "</think>\n\n",
    "So there are ",
    "\\boxed{12}",
    " rabbits.",
]


def ask(client: Client, text: str):
    return client.post(
        "/api/ask", data=json.dumps({"question": text}), content_type="application/json"
    )


def stream_events(client: Client, qid: int) -> list[dict]:
    return [event for _, event in stream_numbered(client, qid)]


def stream_numbered(
    client: Client, qid: int, path: str = "", **headers
) -> list[tuple[int | None, dict]]:
    """The stream's events with their SSE ids (None for the done event)."""
    response = client.get(f"/api/questions/{qid}/stream{path}", **headers)
    body = b"".join(response.streaming_content).decode()
    out, seq = [], None
    for line in body.splitlines():
        if line.startswith("id: "):
            seq = int(line[4:])
        elif line.startswith("data: "):
            out.append((seq, json.loads(line[6:])))
            seq = None
    return out


@pytest.fixture
def alice(cast):
    client = Client()
    client.force_login(cast.alice)
    return client


@pytest.mark.parametrize(
    ("implicit", "pieces", "expected"),
    [
        (True, ["abc", "</th", "ink>ans"], [("reasoning", "abc"), ("answer", "ans")]),
        (True, ["a<", "/think", ">", "b"], [("reasoning", "a"), ("answer", "b")]),
        (False, ["<thi", "nk>r</think>a"], [("reasoning", "r"), ("answer", "a")]),
        (False, ["The answer", " is 4"], [("answer", "The answer"), ("answer", " is 4")]),
        (
            True,
            ["only reasoning, cut off <"],
            [("reasoning", "only reasoning, cut off "), ("reasoning", "<")],
        ),
    ],
)
def test_the_stream_is_split_into_reasoning_and_answer(implicit, pieces, expected):
    splitter = _StreamSplitter(implicit_think=implicit)
    events = [e for p in pieces for e in splitter.feed(p)] + splitter.flush()
    merged = [(e["type"], e["text"]) for e in events]
    assert "".join(t for k, t in merged if k == "reasoning") == "".join(
        t for k, t in expected if k == "reasoning"
    )
    assert "".join(t for k, t in merged if k == "answer") == "".join(
        t for k, t in expected if k == "answer"
    )


def test_a_miss_streams_then_is_stored_and_the_next_ask_is_a_hit(site, cast, alice):
    engine = ScriptedEngine(GOOD)
    runtime.use_engine(engine, FakeManifest())
    text = "A cage holds 35 heads and 94 legs. How many rabbits?"
    response = ask(alice, text)
    assert response.status_code == 202
    data = response.json()
    assert (
        data["status"] == "generating" and data["stream"] == f"/api/questions/{data['id']}/stream"
    )
    events = stream_events(alice, data["id"])
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "done" and "reasoning" in kinds and "answer" in kinds
    assert (
        "".join(e["text"] for e in events if e["type"] == "reasoning")
        .strip()
        .startswith("35 heads")
    )
    done = events[-1]
    assert (
        done["status"] == "answered"
        and done["answer"]["final"] == "12"
        and done["answer"]["status"] == "unverified"
    )
    solution = Solution.objects.get(pk=done["answer"]["solution_id"])
    assert (
        solution.source,
        solution.model_name,
        solution.manifest_id,
        solution.prompt_version,
    ) == ("live", "scripted", "scripted0000", "r1-distill/1")
    problem = solution.problem
    assert problem.origin == "live" and problem.text == text and problem.added_by == cast.alice
    assert "<｜User｜>" + text in engine.prompts[0]
    # The next student gets it at once, from the bank.
    bob = Client()
    bob.force_login(cast.bob)
    again = ask(bob, text).json()
    assert again["status"] == "hit" and again["match"]["problem_id"] == problem.pk
    assert len(engine.prompts) == 1


def test_a_banked_problem_without_an_answer_is_generated_and_checked(
    site, cast, alice, make_problem
):
    """No reference answer: generated live for the problem, stored unverified and labelled."""
    problem = make_problem("鸡兔同笼，35个头94只脚，兔有几只？")
    runtime.use_engine(ScriptedEngine(GOOD), FakeManifest())
    data = ask(alice, problem.text).json()
    assert data["status"] == "generating"
    done = stream_events(alice, data["id"])[-1]
    assert done["status"] == "answered" and done["problem_id"] == problem.pk
    solution = problem.solutions.get()
    assert solution.status == "unverified" and done["answer"]["status"] == "unverified"
    assert Problem.objects.count() == 1
    assert problem.best_solution() == solution


def test_a_banked_problem_with_only_a_reference_serves_the_answer_key_at_once(
    site, cast, alice, make_problem
):
    """Issue 10: with a reference answer and no servable worked answer the student gets the answer key,
    at once; nothing is generated for that ask (so nothing that contradicts the key can be served)."""
    problem = make_problem("鸡兔同笼，35个头94只脚，兔有几只？", reference="12")
    engine = ScriptedEngine(GOOD)
    runtime.use_engine(engine, FakeManifest())
    data = ask(alice, problem.text).json()
    assert data["status"] == "hit" and data["answer"]["status"] == "answer_key"
    assert data["answer"]["final"] == "12" and engine.prompts == []
    page = alice.get(f"/questions/{data['id']}").content.decode()
    assert "Answer key 答案" in page and "final-answer-key" in page


@pytest.mark.parametrize(
    ("pieces", "finish_reason", "why"),
    [
        (["<think>\n", "still thinking about it"], "length", "truncated inside the reasoning"),
        (["<think>\nhmm</think>", "I am not sure."], "stop", "no final answer"),
    ],
)
def test_a_run_with_no_final_answer_is_stored_failed_and_never_served(
    site, cast, alice, pieces, finish_reason, why
):
    runtime.use_engine(ScriptedEngine(pieces, finish_reason=finish_reason), FakeManifest())
    data = ask(alice, "What is the meaning of it all?").json()
    done = stream_events(alice, data["id"])[-1]
    assert done["status"] == "failed" and "answer" not in done
    solution = Solution.objects.get()
    assert solution.status == "failed" and solution.evidence["why"] == why
    assert solution.problem.best_solution() is None


def test_identical_questions_share_one_generation(site, cast, alice):
    gate = threading.Event()
    engine = ScriptedEngine(GOOD, gate=gate)
    runtime.use_engine(engine, FakeManifest())
    bob = Client()
    bob.force_login(cast.bob)
    first = ask(alice, "How many rabbits are in the cage?").json()
    second = ask(
        bob, "how many rabbits are in the cage"
    ).json()  # same after folding case and punctuation
    assert first["status"] == second["status"] == "generating"
    gate.set()
    assert stream_events(bob, second["id"])[-1]["status"] == "answered"
    assert stream_events(alice, first["id"])[-1]["status"] == "answered"
    assert len(engine.prompts) == 1
    a, b = Question.objects.get(pk=first["id"]), Question.objects.get(pk=second["id"])
    assert a.solution_id == b.solution_id is not None


def test_a_generation_nobody_waits_for_is_cancelled(site, cast, alice, settings):
    settings.SUANJING_LIVE_ORPHAN_S = 0
    engine = ScriptedEngine(GOOD, gate=threading.Event())  # never opened: only a cancel ends it
    runtime.use_engine(engine, FakeManifest())
    data = ask(alice, "Nobody will wait for this one?").json()
    started = time.monotonic()
    assert live.live_jobs.wait_idle(20)
    assert time.monotonic() - started >= live.ORPHAN_FLOOR_S - 1  # a follower between marks is safe
    assert engine.generations[0].cancelled.is_set()
    question = Question.objects.get(pk=data["id"])
    assert question.outcome == "failed" and "cancelled" in question.error
    assert Solution.objects.count() == 0


def test_the_queue_is_bounded(site, cast, alice, settings):
    settings.SUANJING_MAX_LIVE_JOBS = 1
    gate = threading.Event()
    runtime.use_engine(ScriptedEngine(GOOD, gate=gate), FakeManifest())
    assert ask(alice, "first new question?").status_code == 202
    busy = ask(alice, "second new question?")
    assert busy.status_code == 429 and busy["Retry-After"]
    assert (
        ask(alice, "First new question").status_code == 202
    )  # joining a running job needs no slot
    gate.set()


# -- the shared state: any process streams, takes over, stops -------------------------------------

ELSEWHERE = "another-host:4242:dead"  # the owner token of a process that is not this one


def left_by_a_dead_owner(user, text: str, pieces: list[str], *, lease_s: float = -1.0):
    """The rows a process that streamed `pieces` and was then killed leaves behind (its lease ran out
    `-lease_s` seconds ago; lease_s > 0: a live owner elsewhere), with `user`'s question waiting."""
    splitter = _StreamSplitter(implicit_think=True)
    events = _merge([e for p in pieces for e in splitter.feed(p)])
    now = timezone.now()
    gen = LiveGeneration.objects.create(
        key=f"text:{text}",
        text=text,
        asker=user,
        seed=7,
        prompt=get_family("r1-distill").render(text),
        owner=ELSEWHERE,
        lease_until=now + dt.timedelta(seconds=lease_s),
        watched_at=now,
        events=len(events),
        generated="".join(pieces),
        tokens=len(pieces),
    )
    for seq, event in enumerate(events, start=1):
        LiveEvent.objects.create(generation=gen, seq=seq, kind=event["type"], text=event["text"])
    question = Question.objects.create(
        user=user, text=text, key=text, outcome=Question.Outcome.GENERATING, live=gen
    )
    return gen, question


def test_the_owner_writes_numbered_batches_and_the_raw_text(site, cast, alice):
    engine = ScriptedEngine(GOOD)
    runtime.use_engine(engine, FakeManifest())
    data = ask(alice, "A cage holds 35 heads and 94 legs. How many rabbits?").json()
    numbered = stream_numbered(alice, data["id"])
    assert numbered[-1][0] is None and numbered[-1][1]["type"] == "done"
    seqs = [seq for seq, _ in numbered[:-1]]
    assert seqs == list(range(1, len(seqs) + 1))  # every event once, in order
    gen = LiveGeneration.objects.get()
    assert gen.status == "done" and gen.events == len(seqs) and gen.generated == "".join(GOOD)
    rows = list(LiveEvent.objects.filter(generation=gen).values_list("kind", "text"))
    assert rows == [(e["type"], e["text"]) for _, e in numbered[:-1]]
    # Batched: the 7 pieces stream within one flush, written as one row per kind, not one per piece.
    assert [k for k, _ in rows] == ["reasoning", "answer"]
    assert Question.objects.get(pk=data["id"]).live_id == gen.pk


@pytest.mark.parametrize(
    ("path", "headers", "first"),
    [
        ("", {}, 1),
        ("", {"HTTP_LAST_EVENT_ID": "2"}, 3),
        ("?after=2", {}, 3),
        ("?after=1", {"HTTP_LAST_EVENT_ID": "2"}, 3),  # the later of the two
        ("", {"HTTP_LAST_EVENT_ID": "\uff12"}, 1),  # junk (a full-width digit): from the start
    ],
)
def test_a_reconnecting_client_gets_the_events_after_the_last_it_had(
    site, cast, alice, path, headers, first
):
    gen, question = left_by_a_dead_owner(cast.alice, "2 + 2?", [], lease_s=30)  # runs elsewhere
    for seq, (kind, text) in enumerate([("reasoning", "a"), ("answer", "b"), ("answer", "c")], 1):
        LiveEvent.objects.create(generation=gen, seq=seq, kind=kind, text=text)
    LiveGeneration.objects.filter(pk=gen.pk).update(events=3)

    def the_owner_finishes() -> None:  # what the process running it writes at the end
        LiveGeneration.objects.filter(pk=gen.pk).update(status="done")
        Question.objects.filter(pk=question.pk).update(outcome="failed", error="no final answer")
        connection.close()

    threading.Timer(0.5, the_owner_finishes).start()
    numbered = stream_numbered(alice, question.pk, path, **headers)
    assert [seq for seq, _ in numbered[:-1]] == list(range(first, 4))
    assert [e["text"] for _, e in numbered[:-1]] == ["a", "b", "c"][first - 1 :]
    assert numbered[-1][1]["type"] == "done" and numbered[-1][1]["status"] == "failed"


@pytest.mark.parametrize("after", ["-1", "99999999999", "two"])
def test_an_after_outside_what_the_schema_allows_is_a_clear_400(site, cast, alice, after):
    """`?after=` is the query form of Last-Event-ID, 0..999999999 as the OpenAPI schema says; the
    header stays lenient (a browser sends back what it was given), the query is checked."""
    gen, question = left_by_a_dead_owner(cast.alice, "3 + 3?", [], lease_s=30)
    response = alice.get(f"/api/questions/{question.pk}/stream?after={after}")
    assert response.status_code == 400 and "after" in response.json()["error"]


def test_two_takers_race_and_one_wins(site, cast):
    gen, question = left_by_a_dead_owner(cast.alice, "Race me?", ["<think>\n", "one "])
    engine = ScriptedEngine(["two ", "</think>", "\\boxed{2}"])
    runtime.use_engine(engine, FakeManifest())
    barrier = threading.Barrier(2)
    won: list[bool] = []

    def take() -> None:
        barrier.wait()
        try:
            won.append(live.live_jobs.take_over(gen.pk))
        finally:
            connection.close()

    takers = [threading.Thread(target=take) for _ in range(2)]
    for t in takers:
        t.start()
    for t in takers:
        t.join(20)
    assert sorted(won) == [False, True]
    assert live.live_jobs.wait_idle(10)
    assert len(engine.prompts) == 1  # continued once


def test_a_follower_takes_over_a_dead_owners_generation_and_continues_where_it_stopped(
    site, cast, alice
):
    before = ["<think>\n", "35 heads, 94 legs: "]
    gen, question = left_by_a_dead_owner(cast.alice, "How many rabbits?", before)
    engine = ScriptedEngine(["rabbits = 12", "</think>\n\n", "So ", "\\boxed{12}"])
    runtime.use_engine(engine, FakeManifest())
    numbered = stream_numbered(alice, question.pk, HTTP_LAST_EVENT_ID=str(gen.events))
    # The raw completion goes on from the text so far, with the same seed and what is left of the budget.
    assert engine.prompts == [gen.prompt + "".join(before)]
    assert engine.params[0].seed == 7 and engine.params[0].max_new_tokens == 2048 - len(before)
    seqs = [seq for seq, _ in numbered[:-1]]
    assert seqs == list(range(gen.events + 1, gen.events + 1 + len(seqs)))  # no gap, no repeat
    resumed = "".join(e["text"] for _, e in numbered[:-1] if e["type"] == "reasoning")
    assert resumed == "rabbits = 12"
    done = numbered[-1][1]
    assert done["status"] == "answered" and done["answer"]["final"] == "12"
    gen.refresh_from_db()
    assert gen.status == "done" and gen.owner != ELSEWHERE
    assert gen.generated == "".join(before) + "rabbits = 12</think>\n\nSo \\boxed{12}"
    solution = Solution.objects.get()  # stored once, with the whole reasoning
    assert solution.reasoning.strip() == "35 heads, 94 legs: rabbits = 12"
    assert solution.new_tokens == len(before) + len("".join(engine.pieces))


def test_a_poll_or_an_ask_takes_over_too(site, cast, alice):
    gen, question = left_by_a_dead_owner(cast.alice, "Polled?", ["<think>\n", "x"])
    engine = ScriptedEngine(["</think>", "\\boxed{1}"])
    runtime.use_engine(engine, FakeManifest())
    assert alice.get(f"/api/questions/{question.pk}").json()["status"] == "generating"
    assert live.live_jobs.wait_idle(10) and len(engine.prompts) == 1
    assert Question.objects.get(pk=question.pk).outcome == "generated"
    # The ask path: any ask first takes over what a dead process left running.
    gen2, question2 = left_by_a_dead_owner(cast.bob, "Asked?", ["<think>\n", "y"])
    ask(alice, "Something else entirely?")
    assert live.live_jobs.wait_idle(10) and len(engine.prompts) == 3
    assert LiveGeneration.objects.get(pk=gen2.pk).status == "done"


def test_without_an_engine_a_dead_owners_questions_fail_with_a_retry(site, cast, alice):
    gen, question = left_by_a_dead_owner(cast.alice, "No engine now?", ["<think>\n", "x"])
    done = stream_events(alice, question.pk)[-1]  # site: no model prepared
    assert done["status"] == "failed"
    question.refresh_from_db()
    assert question.error == live.ENGINE_GONE
    assert LiveGeneration.objects.get(pk=gen.pk).status == "failed"
    page = alice.get(f"/questions/{question.pk}").content.decode()
    assert "Try again 再试一次" in page


@pytest.mark.parametrize("state", ["done", "cancelled", "none"])
def test_a_question_whose_generation_is_not_running_is_settled_by_whoever_reads_it(
    site, cast, alice, state
):
    gen, question = left_by_a_dead_owner(cast.alice, "Stranded?", ["<think>\n", "x"])
    if state == "none":
        Question.objects.filter(pk=question.pk).update(live=None)
    else:
        LiveGeneration.objects.filter(pk=gen.pk).update(status=state)
    data = alice.get(f"/api/questions/{question.pk}").json()
    assert data["status"] == "failed" and data["error"] == live.STRANDED
    assert stream_events(alice, question.pk)[-1]["status"] == "failed"


def test_a_running_generation_elsewhere_is_joined_and_counted(site, cast, alice, settings):
    engine = ScriptedEngine(GOOD)
    runtime.use_engine(engine, FakeManifest())
    gen, theirs = left_by_a_dead_owner(cast.bob, "Shared question?", ["<think>\n"], lease_s=30)
    LiveGeneration.objects.filter(pk=gen.pk).update(key="text:" + question_key("Shared question?"))
    joined = ask(alice, "shared question").json()  # the same question key
    assert joined["status"] == "generating" and engine.prompts == []
    assert Question.objects.get(pk=joined["id"]).live_id == gen.pk
    # One live answer per student, counted in the database: alice waits for the one elsewhere.
    again = ask(alice, "A different question?")
    assert again.status_code == 429 and again.json()["refusal"] == "one_at_a_time"
    # SUANJING_LIVE_PER_STUDENT raises the limit: the same ask is then started.
    settings.SUANJING_LIVE_PER_STUDENT = 2
    second = ask(alice, "A different question?")
    assert second.status_code == 202 and second.json()["status"] == "generating", second.json()
    settings.SUANJING_LIVE_PER_STUDENT = 1
    third = ask(alice, "A third different question?")
    assert third.status_code == 429 and third.json()["refusal"] == "one_at_a_time"
    # The slots are counted in the database too.
    settings.SUANJING_MAX_LIVE_JOBS = 1
    busy = ask(cast_client(cast.teacher), "A third question?")
    assert busy.status_code == 429 and busy.json()["refusal"] == "busy"


def cast_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_unique_running_key_makes_a_second_start_join(site, cast, alice, monkeypatch):
    """Two processes start the same question at once: the second insert meets the constraint and
    joins the first (simulated: the lookup misses the row another process inserted a moment ago)."""
    engine = ScriptedEngine(GOOD)
    runtime.use_engine(engine, FakeManifest())
    gen, _ = left_by_a_dead_owner(cast.bob, "Same time?", ["<think>\n"], lease_s=30)
    LiveGeneration.objects.filter(pk=gen.pk).update(key="text:" + question_key("Same time?"))
    real_filter = LiveGeneration.objects.filter
    misses = iter([True])

    def filter_missing_it_once(*args, **kwargs):
        found = real_filter(*args, **kwargs)
        if kwargs.get("key") and next(misses, False):
            return found.none()
        return found

    monkeypatch.setattr(LiveGeneration.objects, "filter", filter_missing_it_once)
    data = ask(alice, "Same time?").json()
    monkeypatch.undo()
    assert data["status"] == "generating" and engine.prompts == []
    assert Question.objects.get(pk=data["id"]).live_id == gen.pk
    assert LiveGeneration.objects.count() == 1


def test_stop_reaches_a_generation_another_process_runs(site, cast, alice):
    gen, question = left_by_a_dead_owner(cast.alice, "Stop me?", ["<think>\n"], lease_s=30)
    assert alice.post(f"/api/questions/{question.pk}/stop").json()["status"] == "failed"
    gen.refresh_from_db()
    assert gen.cancel_requested and gen.status == "running"  # its owner cancels at its next flush
    question.refresh_from_db()
    assert question.error == live.STOPPED


def test_try_again_right_after_stop_starts_afresh(site, cast, alice):
    """The stopped generation (its owner elsewhere has not ended it yet) is not joined: it is ended and
    a new one starts for the retry."""
    engine = ScriptedEngine(GOOD)
    runtime.use_engine(engine, FakeManifest())
    text = "Stop and retry?"
    gen, question = left_by_a_dead_owner(cast.alice, text, ["<think>\n"], lease_s=30)
    LiveGeneration.objects.filter(pk=gen.pk).update(key="text:" + question_key(text))
    alice.post(f"/api/questions/{question.pk}/stop")
    assert alice.post(f"/questions/{question.pk}/retry").status_code == 302
    assert stream_events(alice, question.pk)[-1]["status"] == "answered"
    assert len(engine.prompts) == 1
    assert LiveGeneration.objects.get(pk=gen.pk).status == "cancelled"
    assert Question.objects.get(pk=question.pk).live_id != gen.pk


def test_the_owner_cancels_when_stop_comes_through_the_database(site, cast, alice):
    engine = ScriptedEngine(GOOD, gate=threading.Event())  # never opened: only a cancel ends it
    runtime.use_engine(engine, FakeManifest())
    data = ask(alice, "Stopped elsewhere?").json()
    Question.objects.filter(pk=data["id"]).update(outcome="failed", error=live.STOPPED)
    LiveGeneration.objects.update(cancel_requested=True)  # what Stop in another process writes
    assert live.live_jobs.wait_idle(10) and engine.generations[0].cancelled.is_set()
    assert LiveGeneration.objects.get().status == "cancelled"


def test_an_owner_that_lost_its_lease_stops_and_stores_nothing(site, cast, alice):
    gate = threading.Event()
    engine = ScriptedEngine(GOOD, gate=gate)
    runtime.use_engine(engine, FakeManifest())
    ask(alice, "Taken from me?")
    LiveGeneration.objects.update(owner=ELSEWHERE)  # a process that thought this one dead took it
    assert live.live_jobs.wait_idle(10) and engine.generations[0].cancelled.is_set()
    gen = LiveGeneration.objects.get()
    assert gen.status == "running" and gen.owner == ELSEWHERE
    assert Solution.objects.count() == 0


@pytest.fixture
def redis_url():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.kill()
        server.wait(10)


def test_with_redis_a_follower_in_another_process_is_woken_at_once(redis_url, settings):
    settings.REDIS_URL = redis_url
    publisher, subscriber = live._Wakeups(), live._Wakeups()  # as two processes would have
    subscriber._listen()
    deadline = time.monotonic() + 10
    while not subscriber.listening and time.monotonic() < deadline:
        time.sleep(0.02)
    assert subscriber.listening
    seen = subscriber.version(42)
    threading.Timer(0.2, publisher.notify, args=(42,)).start()
    started = time.monotonic()
    subscriber.wait(42, seen)
    waited = time.monotonic() - started
    assert subscriber.version(42) != seen and waited < live.NOTIFIED_POLL_S * 0.8


def test_with_redis_down_followers_poll(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    wakeups = live._Wakeups()
    wakeups.notify(1)  # logged, not raised
    started = time.monotonic()
    wakeups.wait(1, wakeups.version(1))
    assert time.monotonic() - started < 1.5 and not wakeups.listening


# -- the real tiny OpenVINO model --------------------------------------------------------------------


@pytest.fixture
def real_engine(any_tiny_engine, tiny_model, settings):
    settings.SUANJING_MAX_NEW_TOKENS = 12
    runtime.use_engine(any_tiny_engine, tiny_model.manifest)
    return any_tiny_engine


def test_a_real_generation_streams_and_its_unfinished_reasoning_is_stored_failed(
    site, cast, alice, real_engine, tiny_model
):
    text = "鸡兔同笼，共有35个头，94只脚，问兔有多少只？"
    response = ask(alice, text)
    assert response.status_code == 202
    events = stream_events(alice, response.json()["id"])
    pieces = [e for e in events if e["type"] in ("reasoning", "answer")]
    assert pieces, "the tiny model streamed nothing"
    done = events[-1]
    # The random model never writes </think> and \boxed{} within 12 tokens: truncated in its reasoning.
    assert done["type"] == "done" and done["status"] == "failed"
    solution = Solution.objects.get()
    assert (
        solution.status == "failed"
        and solution.finish_reason == "length"
        and solution.new_tokens == 12
    )
    assert (
        solution.manifest_id == tiny_model.manifest.manifest_id
        and solution.model_name == "tiny-qwen2"
    )
    assert solution.reasoning.strip() == "".join(e["text"] for e in pieces).strip()
    # Asked again (issue 10: the failure is remembered): the earlier failure is shown, not rerun...
    again = ask(alice, text).json()
    assert again["status"] == "failed" and again["earlier"] == response.json()["id"]
    assert Solution.objects.count() == 1
    # ...until the student says "Try again": generated again, for the same problem, with a new seed.
    assert alice.post(f"/questions/{again['id']}/retry").status_code == 302
    assert stream_events(alice, again["id"])[-1]["problem_id"] == solution.problem_id
    assert Problem.objects.count() == 1 and Solution.objects.filter(status="failed").count() == 2
    assert Solution.objects.latest("id").evidence["seed"] > 0


def test_a_real_generation_is_cancelled_when_its_student_leaves(
    site, cast, alice, any_tiny_engine, tiny_model, settings
):
    settings.SUANJING_MAX_NEW_TOKENS = 4000
    settings.SUANJING_LIVE_ORPHAN_S = 1

    class WritesOn:
        """The real tiny engine, kept writing past its end-of-sequence token and its loops: a random
        model may end or repeat within a second, before the generation could be called orphaned."""

        def __getattr__(self, name):
            return getattr(any_tiny_engine, name)

        def stream(self, prompt, params):
            from dataclasses import replace

            return any_tiny_engine.stream(prompt, replace(params, ignore_eos=True, loop_guard=None))

    runtime.use_engine(WritesOn(), tiny_model.manifest)
    data = ask(alice, "Write a very long story about numbers?").json()
    response = alice.get(f"/api/questions/{data['id']}/stream")
    stream = iter(response.streaming_content)
    next(stream)  # connected
    next(stream)  # some text arrived
    response.close()  # the student closes the page
    started = time.monotonic()
    assert live.live_jobs.wait_idle(30)
    assert time.monotonic() - started < 30
    question = Question.objects.get(pk=data["id"])
    assert question.outcome == "failed" and "cancelled" in question.error
