"""Issue 10's corrections on the real SemanticCache (MiniLM), through the site's HTTP API: a teacher's
"same as #N" makes that wording a hit on N, a student's "not my question" stops that match, both survive a
rebuilt cache (they are read from the database), and a hit's explanation carries no ids or numbers.

Slow: loading MiniLM takes ~10 s once per module (tests/test_trust_loop.py is the fast stand-in run).
"""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tutor.services import runtime

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHICKENS = "鸡兔同笼，共有35个头，94只脚，问兔有多少只？"
# A wording the cache cannot be sure of alone: an English paraphrase with other words.
WORDING = "Farm puzzle: count the bunnies when heads total 35 and feet total 94."


@pytest.fixture(scope="module")
def minilm():
    from solver.embed import load_embedder

    return load_embedder("minilm")


@pytest.fixture
def real_cache(site, minilm, monkeypatch, settings):
    import solver.embed

    monkeypatch.setattr(solver.embed, "load_embedder", lambda name, **kwargs: minilm)
    settings.SUANJING_EMBEDDER = "minilm"
    settings.SUANJING_CACHE_THRESHOLD = ""
    runtime.use_cache(None)
    return runtime


def ask(user, text: str) -> dict:
    client = Client()
    client.force_login(user)
    return client.post(
        "/api/ask", data=json.dumps({"question": text}), content_type="application/json"
    ).json()


def test_a_link_and_a_block_reach_the_real_cache_and_survive_a_rebuild(
    real_cache, cast, make_problem
):
    banked = make_problem(CHICKENS, solutions=(("approved", "12"),))
    other = make_problem(
        "正方形的边长是3厘米，面积是多少平方厘米？", solutions=(("approved", "9"),)
    )
    runtime.get_cache()  # built from the database, with the real SemanticCache
    before = ask(cast.alice, WORDING)
    assert before.get("match", {}).get("problem_id") != banked.pk or before["status"] != "hit"
    if "id" not in before:  # refused (no engine here): refusals are counted, not stored
        from tutor.models import Question
        from tutor.services.text import question_key

        before["id"] = Question.objects.create(
            user=cast.alice,
            text=WORDING,
            key=question_key(WORDING),
            outcome=Question.Outcome.FAILED,
            error="no answer",
        ).pk
    teacher = Client()
    teacher.force_login(cast.teacher)
    assert (
        teacher.post(f"/questions/{before['id']}/link", {"problem": banked.pk}).status_code == 302
    )
    linked = ask(cast.bob, WORDING)
    assert linked["status"] == "hit" and linked["match"]["problem_id"] == banked.pk
    explanation = linked["explanation"]
    assert explanation and "#" not in explanation and not re.search(r"\d\.\d", explanation)
    # A student says an exact hit is not their question: the next ask of that text is not a hit on it.
    hit = ask(cast.alice, CHICKENS)
    assert hit["status"] == "hit" and hit["match"]["problem_id"] == banked.pk
    alice = Client()
    alice.force_login(cast.alice)
    alice.post(f"/questions/{hit['id']}/feedback")
    assert ask(cast.bob, CHICKENS).get("match", {}).get("problem_id") != banked.pk
    # Another process (or a restart) builds its cache from the database: both corrections hold.
    runtime.use_cache(None)
    assert ask(cast.bob, WORDING)["match"]["problem_id"] == banked.pk
    assert ask(cast.bob, CHICKENS).get("match", {}).get("problem_id") != banked.pk
    assert other.pk  # the bank held more than one problem throughout
