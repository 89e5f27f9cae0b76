"""Split the answers stored before steps existed (0008) into their steps once, here, so that a student's
first look at one of them no longer writes to the database on the cache-hit path
(Solution.walkthrough keeps its fallback for a row written around this migration)."""

from django.db import migrations

BATCH = 500


def fill_steps(apps, schema_editor):
    from solver.steps import split_steps

    Solution = apps.get_model("tutor", "Solution")
    todo = []
    rows = Solution.objects.only("id", "reasoning", "answer", "steps").order_by("id")
    for solution in rows.iterator(chunk_size=BATCH):
        if solution.steps or not (solution.reasoning or solution.answer):
            continue
        solution.steps = [
            {"kind": kind, "text": step}
            for kind, text in (("reasoning", solution.reasoning), ("answer", solution.answer))
            for step in split_steps(text or "")
        ]
        todo.append(solution)
        if len(todo) >= BATCH:
            Solution.objects.bulk_update(todo, ["steps"])
            todo = []
    if todo:
        Solution.objects.bulk_update(todo, ["steps"])


class Migration(migrations.Migration):
    dependencies = [
        ("tutor", "0010_followups"),
    ]

    operations = [
        migrations.RunPython(fill_steps, migrations.RunPython.noop),
    ]
