"""0011_fill_steps: answers stored before steps existed get their steps from the migration, not on a
student's first look (which wrote to the database on the cache-hit path)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("tutor", "0010_followups")]
AFTER = [("tutor", "0011_fill_steps")]


@pytest.mark.django_db(transaction=True)
def test_the_migration_splits_old_answers_into_steps_once():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    Problem = old.get_model("tutor", "Problem")
    Solution = old.get_model("tutor", "Solution")
    problem = Problem.objects.create(text="鸡兔同笼，共有35个头，94只脚，问鸡有多少只？")
    answer = "第一步：设鸡有x只。\n第二步：2x + 4(35 - x) = 94。\n第三步：x = 23。"
    old_row = Solution.objects.create(
        problem=problem, answer=answer, final="23", status="verified", source="precompute"
    )
    kept = Solution.objects.create(
        problem=problem,
        answer="x = 23",
        final="23",
        status="verified",
        source="precompute",
        steps=[{"kind": "answer", "text": "already split"}],
    )
    empty = Solution.objects.create(
        problem=problem, answer="", final=None, status="failed", source="precompute"
    )

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps.get_model("tutor", "Solution")
    steps = new.objects.get(pk=old_row.pk).steps
    assert [s["kind"] for s in steps] == ["answer"] * 3
    assert steps[2]["text"].endswith("x = 23。")
    assert new.objects.get(pk=kept.pk).steps == [{"kind": "answer", "text": "already split"}]
    assert new.objects.get(pk=empty.pk).steps == []
