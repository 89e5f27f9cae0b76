"""One batch precompute run on the real embedded model (SmolLM2-135M INT8), through `manage.py precompute
--inline`: the model is loaded from the store by the site's own `runtime.get_engine`, as in production.

Three easy problems with reference answers, greedy decoding, 128 new tokens at most. SmolLM2 is weak at
math, so the test does not expect any particular answer: it checks that the run finishes, that every item
got the status the rules give its answer (failed: no final answer; verified: equivalent to the reference;
unverified: any other final answer), that nothing failed is served, and that what is servable (a verified
answer, if the model got one right) is served on the next ask through the real cache.
(On this machine: "What is 3 squared?" comes out verified, the sum unverified and "2 + 2" runs out of
tokens, i.e. failed.)
"""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import bearer
from tutor.models import PrecomputeRun, Problem, RunItem, Solution
from tutor.services import bank, precompute, runtime, tokens
from tutor.services.text import guess_lang

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

EASY = [
    ("What is 3 squared?", "9"),
    ("计算 9 + 6 等于多少？", "15"),
    ("What is 2 + 2?", "4"),
]


@pytest.fixture
def embedded_site(settings, embedded_model, tmp_path):
    """The site configured for the embedded model in its store; no engine loaded yet."""
    settings.SUANJING_MODELS = str(embedded_model.path.parent)
    settings.SUANJING_MODEL = embedded_model.manifest.name
    settings.SUANJING_THREADS = 2
    settings.SUANJING_KV_CACHE_GB = 0.5
    settings.SUANJING_SERVE_UNVERIFIED = True
    settings.SUANJING_CACHE_THRESHOLD = ""
    runtime.use_engine(None, None)
    runtime.use_cache(None)
    yield embedded_model
    if runtime.model_info() is not None:
        engine, _ = runtime.get_engine()
        engine.close()
    runtime.use_engine(None, None)
    runtime.use_cache(None)


def test_a_precompute_run_on_the_embedded_model_stores_checked_answers(
    embedded_site, cast, settings
):
    from solver.answers import answers_equivalent

    problems = [
        bank.create_problem(
            text=text, lang=guess_lang(text), topic="arithmetic", reference_answer=ref
        )
        for text, ref in EASY
    ]
    out = StringIO()
    call_command(
        "precompute",
        "--inline",
        "--greedy",
        "--max-new-tokens",
        "128",
        "--ids",
        ",".join(str(p.pk) for p in problems),
        stdout=out,
        stderr=StringIO(),
    )
    run = PrecomputeRun.objects.get()
    assert run.status == PrecomputeRun.Status.DONE, run.error
    assert run.total == 3 and run.new_tokens > 0 and run.greedy and run.max_new_tokens == 128
    assert run.manifest_id == embedded_site.manifest.manifest_id
    assert f"run {run.pk} done: 3/3 problems" in out.getvalue()

    figures = precompute.run_figures(run)
    assert sum(figures["results"].values()) == 3 and figures["items"]["done"] == 3
    for problem in problems:
        item = RunItem.objects.get(run=run, problem=problem)
        answer = Solution.objects.get(run_item=item)  # exactly one answer per item
        assert item.status == RunItem.Status.DONE and item.attempts == 1  # greedy: no retries
        assert item.outcome == answer.status and answer.source == Solution.Source.BATCH
        assert answer.model_name == embedded_site.manifest.name
        assert answer.prompt_version == "chatml/1" and 0 < answer.new_tokens <= 128
        # The status rules, re-derived from what was stored.
        if answer.final is None:
            assert answer.status == Solution.Status.FAILED and answer.evidence["why"]
        elif answers_equivalent(answer.final, problem.reference_answer):
            assert answer.status == Solution.Status.VERIFIED
            assert answer.evidence["matches_reference"] is True
        else:
            assert answer.status == Solution.Status.UNVERIFIED
            assert answer.evidence["matches_reference"] is False
        # an answer that contradicts the reference is evidence for a teacher, never served
        assert answer.is_servable == (answer.status == Solution.Status.VERIFIED)

    # The next ask of each problem, through the API and the real cache: a verified answer is served at
    # once; a failed or contradicting one never is: the student gets the reference as the answer key.
    engine, _ = runtime.get_engine()
    engine.close()
    runtime.use_engine(None, None)
    settings.SUANJING_MODELS = "/nonexistent-suanjing-models"
    auth = bearer(tokens.issue_api_token(user=cast.alice))
    for problem in problems:
        answer = Solution.objects.get(problem=problem)
        response = Client().post(
            "/api/ask",
            data=json.dumps({"question": problem.text}),
            content_type="application/json",
            **auth,
        )
        data = response.json()
        if answer.status != Solution.Status.VERIFIED:
            assert response.status_code == 200 and data["status"] == "hit", data
            assert data["answer"]["status"] == "answer_key"
            assert data["answer"]["final"] == problem.reference_answer
            assert Problem.objects.get(pk=problem.pk).best_solution() is None
        else:
            assert response.status_code == 200 and data["status"] == "hit"
            assert data["match"]["problem_id"] == problem.pk
            assert data["answer"]["solution_id"] == answer.pk
            assert data["answer"]["status"] == answer.status
