"""Which answer a student is served: approved, then verified, then unverified (newest first); never
rejected, failed or flagged. `Problem.best_solution` does it in one raw statement for the cache-hit path;
it must agree with the ORM's `servable().best_first()` on both databases."""

from __future__ import annotations

import itertools

import pytest

from tutor.models import Problem, Solution

pytestmark = pytest.mark.django_db

STATUSES = [s.value for s in Solution.Status]


def orm_best(problem: Problem) -> Solution | None:
    return Solution.objects.filter(problem=problem).servable().best_first().first()


@pytest.mark.parametrize("serve_unverified", [True, False])
def test_the_raw_best_solution_agrees_with_the_orm_order(settings, serve_unverified):
    settings.SUANJING_SERVE_UNVERIFIED = serve_unverified
    checked = 0
    for size in (0, 1, 2, 3):
        for statuses in itertools.product(STATUSES, repeat=size):
            problem = Problem.objects.create(text=f"problem {checked}")
            for status in statuses:
                Solution.objects.create(problem=problem, status=status, source="batch")
            best = problem.best_solution()
            assert best == orm_best(problem), statuses
            if best is not None:
                assert best.status in Solution.servable_statuses()
            checked += 1
    assert checked == 1 + 6 + 36 + 216


def test_a_newer_answer_of_the_same_status_wins_and_a_better_status_beats_newer(settings):
    settings.SUANJING_SERVE_UNVERIFIED = True
    problem = Problem.objects.create(text="x")
    old = Solution.objects.create(problem=problem, status="verified", source="batch")
    new = Solution.objects.create(problem=problem, status="verified", source="batch")
    assert problem.best_solution() == new
    Solution.objects.create(problem=problem, status="unverified", source="live")
    assert problem.best_solution() == new
    old.status = "approved"
    old.save()
    assert problem.best_solution() == old
    old.status = new.status = "rejected"
    old.save()
    new.save()
    assert problem.best_solution().status == "unverified"
    settings.SUANJING_SERVE_UNVERIFIED = False
    assert problem.best_solution() is None
