"""Fair use (issue 13, findings 3 and 9): asks per minute per student, refusals counted (not stored as
questions) with 429 + Retry-After and a bilingual message, the missed page ranked by students, and asks
that wait out a locked SQLite database instead of failing with a 500.

The per-minute window is the student's stored questions' `created` (the database every process shares);
the one-at-a-time rule for live generations is tests/test_site_live.py's."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time

import pytest
from django.db import connection
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tutor.models import Question, UsageCount
from tutor.services import asking
from tutor.services.text import question_key

pytestmark = pytest.mark.django_db(transaction=True)

SQUARE = "What is 7 squared?"


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def ask(client: Client, text: str):
    return client.post(
        "/api/ask", data=json.dumps({"question": text}), content_type="application/json"
    )


def refusals(user, reason: str) -> int:
    row = UsageCount.objects.filter(user=user, kind=f"refused:{reason}").first()
    return row.count if row else 0


@pytest.fixture
def banked(site, make_problem):
    return make_problem(SQUARE, lang="en", solutions=(("approved", "49"),))


def test_a_student_over_the_limit_per_minute_is_refused_counted_and_not_stored(
    cast, banked, settings
):
    settings.SUANJING_ASKS_PER_MINUTE = 3
    alice = client_for(cast.alice)
    assert [ask(alice, SQUARE).status_code for _ in range(3)] == [200, 200, 200]
    refused = ask(alice, SQUARE)
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    data = refused.json()
    assert data["status"] == "refused" and data["refusal"] == "rate"
    assert "last minute" in data["error"] and "一分钟内" in data["error"]
    assert Question.objects.filter(user=cast.alice).count() == 3  # the refusal is not a question
    assert refusals(cast.alice, "rate") == 1
    # The ask page says the same, with the same status.
    page = alice.post("/ask/submit", {"question": SQUARE})
    assert page.status_code == 429 and "一分钟内" in page.content.decode()
    assert refusals(cast.alice, "rate") == 2
    # Per student: bob is not limited by alice's asks, nor a teacher by anyone's.
    assert ask(client_for(cast.bob), SQUARE).status_code == 200
    teacher = client_for(cast.teacher)
    assert [ask(teacher, SQUARE).status_code for _ in range(4)] == [200] * 4
    # The window slides: once her asks are a minute old, alice may ask again.
    Question.objects.filter(user=cast.alice).update(
        created=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=61)
    )
    assert ask(alice, SQUARE).status_code == 200


def test_the_window_counts_questions_stored_by_any_process(cast, banked, settings):
    """Another web process's asks are rows in the same table: they count at once."""
    settings.SUANJING_ASKS_PER_MINUTE = 2
    Question.objects.bulk_create(
        [Question(user=cast.alice, text=SQUARE, key=question_key(SQUARE), outcome="hit")] * 2
    )
    response = ask(client_for(cast.alice), SQUARE)
    assert response.status_code == 429 and response.json()["refusal"] == "rate"


def test_a_full_live_queue_is_refused_counted_and_not_stored(cast, site, settings):
    settings.SUANJING_MAX_LIVE_JOBS = 0
    alice = client_for(cast.alice)
    response = ask(alice, "a question the bank does not hold")
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    data = response.json()
    assert (
        data["refusal"] == "busy" and "Try again" in data["error"] and "现在太忙" in data["error"]
    )
    assert not Question.objects.exists()
    assert refusals(cast.alice, "busy") == 1
    page = alice.post("/ask/submit", {"question": "another one the bank does not hold"})
    assert page.status_code == 429 and "现在太忙" in page.content.decode()
    assert not Question.objects.exists() and refusals(cast.alice, "busy") == 2


def test_no_model_is_refused_with_503_counted_and_not_stored(cast, site, settings, tmp_path):
    settings.SUANJING_MODELS = tmp_path  # the real ModelStore, empty
    response = ask(client_for(cast.alice), "a question the bank does not hold")
    assert response.status_code == 503
    assert response.json()["refusal"] == "no_model" and "prepare" in response.json()["error"]
    assert not Question.objects.exists() and refusals(cast.bob, "no_model") == 0
    assert refusals(cast.alice, "no_model") == 1


def test_the_missed_page_ranks_by_students_and_shows_refusals(cast, site, settings):
    spam, real = "spam spam spam?", "How many legs do 3 ducks have?"
    Question.objects.bulk_create(
        [Question(user=cast.alice, text=spam, key=question_key(spam), outcome="failed")] * 300
        + [
            Question(user=u, text=real, key=question_key(real), outcome="failed")
            for u in (cast.alice, cast.bob)
        ]
    )
    groups = asking.bank.missed_groups(limit=2)
    assert [(g["text"], g["students"], g["count"]) for g in groups] == [
        (real, 2, 2),
        (spam, 1, 300),
    ]
    settings.SUANJING_MAX_LIVE_JOBS = 0
    ask(client_for(cast.bob), "a question the bank does not hold")
    page = client_for(cast.teacher).get("/missed").content.decode()
    assert "asked by 2 students (2 times)" in page and "asked by 1 student (300 times)" in page
    assert page.index("How many legs") < page.index("spam spam")
    footer = page[page.index('id="refusals"') :]
    assert "busy" in footer and "1 (by 1 student 1名学生)" in footer


# -- a locked database: waited out, never a 500 --------------------------------------------------------


def hold_write_lock(seconds: float) -> threading.Thread:
    """Another process's long write (an import, a worker): BEGIN IMMEDIATE on the same SQLite file."""
    held = threading.Event()

    def hold():
        other = sqlite3.connect(connection.settings_dict["NAME"], timeout=30)
        other.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        other.rollback()
        other.close()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    return thread


@pytest.fixture
def short_busy_timeout(site):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write lock")
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout=100")  # SQLite's own wait, 10 s on the site, short here
    yield
    connection.close()  # the next test's connection runs the settings' PRAGMAs again


def test_an_ask_meeting_a_locked_database_is_retried_and_answered(cast, banked, short_busy_timeout):
    alice = client_for(cast.alice)
    holder = hold_write_lock(1.0)
    started = time.monotonic()
    response = ask(alice, SQUARE)
    holder.join()
    assert response.status_code == 200, response.content[:300]
    assert response.json()["answer"]["final"] == "49"
    assert time.monotonic() - started >= 0.5  # it did wait for the lock
    assert Question.objects.filter(user=cast.alice).count() == 1


def test_an_ask_the_lock_outlasts_is_refused_with_503_not_a_500(cast, banked, short_busy_timeout):
    alice = client_for(cast.alice)  # signed in before the lock (a session is a write)
    holder = hold_write_lock(8.0)
    response = ask(alice, SQUARE)
    holder.join()
    assert response.status_code == 503 and response.json()["refusal"] == "db_busy"
    assert int(response["Retry-After"]) > 0 and "系统正忙" in response.json()["error"]
    assert not Question.objects.exists()
