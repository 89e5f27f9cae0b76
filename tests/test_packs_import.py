"""Answer packs in the site: export, import, the same pack twice, conflicts, and refused packs.

The pack format's own checks are tested in tests/test_packs.py; here the site's side: one transaction,
matching problems, the higher status winning, teachers' answers untouched, bad packs importing nothing."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from solver import packs
from tests.site_fixtures import *  # noqa: F403
from tutor.models import ModelManifest, Problem, Solution
from tutor.services import bank


def counts() -> tuple[int, int, int]:
    return Problem.objects.count(), Solution.objects.count(), ModelManifest.objects.count()


def snapshot() -> list[tuple]:
    return list(
        Solution.objects.order_by("id").values_list("id", "problem_id", "status", "final", "answer")
    )


def write_pack(path, *, manifest_id="other-model", solutions=(), problems=None) -> str:
    """A pack from another school: problems (id, text, reference) and solutions (pid, status, final)."""
    problems = problems or [
        ("p1", "鸡兔同笼，35个头94只脚，兔有几只？", "12"),
        ("p2", "1+1=?", None),
    ]
    with packs.PackWriter(path) as w:
        w.add_manifest(
            packs.PackManifest(
                manifest_id, {"name": "deepseek-r1-distill-qwen-1.5b", "family": "r1-distill"}
            )
        )
        for pid, text, ref in problems:
            w.add_problem(packs.PackProblem(pid, text, ref, "zh", "algebra"))
        for i, (pid, status, final) in enumerate(solutions):
            w.add_solution(
                packs.PackSolution(
                    id=f"s{i}-{pid}",
                    problem_id=pid,
                    manifest_id=manifest_id,
                    prompt_version="r1-distill/1",
                    status=status,
                    final=final,
                    reasoning="think",
                    answer_text=f"\\boxed{{{final}}}" if final else "",
                    evidence={"samples": [], "k": 3, "agreement": 1.0, "reference": None},
                    new_tokens=100,
                    elapsed_s=1.5,
                    created=packs.now_iso(),
                )
            )
    return str(path)


@pytest.mark.django_db
def test_importing_the_same_pack_twice_changes_nothing(tmp_path):
    path = write_pack(
        tmp_path / "a.sqlite", solutions=[("p1", "verified", "12"), ("p2", "unverified", "2")]
    )
    call_command("import_pack", path)
    assert counts() == (2, 2, 1)
    first = snapshot()
    call_command("import_pack", path)
    assert counts() == (2, 2, 1) and snapshot() == first
    s = Solution.objects.get(final="12")
    assert (s.source, s.status, s.manifest_id, s.model_name) == (
        "import",
        "verified",
        "other-model",
        "deepseek-r1-distill-qwen-1.5b",
    )
    # a pack from another model keeps its manifest
    assert ModelManifest.objects.get().data["name"] == "deepseek-r1-distill-qwen-1.5b"
    assert Problem.objects.get(external_id="p1").origin == "import"


@pytest.mark.django_db
def test_a_dry_run_imports_nothing(tmp_path):
    path = write_pack(tmp_path / "a.sqlite", solutions=[("p1", "verified", "12")])
    out = __import__("io").StringIO()
    call_command("import_pack", path, "--dry-run", stdout=out)
    assert counts() == (0, 0, 0) and "1 new" in out.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("stored", "imported", "status_after", "final_after"),
    [
        ("unverified", "verified", "verified", "12"),  # higher status wins
        ("verified", "unverified", "verified", "11"),  # lower status loses
        ("verified", "verified", "verified", "11"),  # a tie keeps what is stored
        ("approved", "verified", "approved", "11"),  # a teacher's approval is never overwritten
        ("rejected", "verified", "rejected", "11"),  # nor a rejection
    ],
)
def test_a_conflict_is_won_by_the_higher_status(
    tmp_path, make_problem, stored, imported, status_after, final_after
):
    problem = make_problem("鸡兔同笼，35个头94只脚，兔有几只？", reference="12")
    Solution.objects.filter(problem=problem).delete()
    Solution.objects.create(
        problem=problem,
        final="11",
        answer="\\boxed{11}",
        status=stored,
        source="batch",
        manifest_id="other-model",
        prompt_version="r1-distill/1",
    )
    path = write_pack(tmp_path / "a.sqlite", solutions=[("p1", imported, "12")])
    call_command("import_pack", path)
    s = problem.solutions.get()  # matched by text: no second problem, no second answer
    assert (s.status, s.final) == (status_after, final_after)
    assert Problem.objects.filter(text=problem.text).count() == 1
    before = snapshot()
    call_command("import_pack", path)
    assert snapshot() == before


@pytest.mark.django_db
def test_a_teachers_edit_is_never_overwritten(tmp_path, make_problem, cast):
    problem = make_problem("1+1=?")
    s = Solution.objects.create(
        problem=problem,
        final="3",
        status="unverified",
        source="batch",
        manifest_id="other-model",
        prompt_version="r1-distill/1",
    )
    bank.edit_solution(solution=s, editor=cast.teacher, reasoning="", answer="2", final="2")
    call_command(
        "import_pack", write_pack(tmp_path / "a.sqlite", solutions=[("p2", "verified", "5")])
    )
    s.refresh_from_db()
    assert (s.status, s.final, s.answer) == ("approved", "2", "2")
    assert problem.solutions.count() == 1


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _wrong_version(path):
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()


def _bad_row(path):
    db = sqlite3.connect(path)
    db.execute("UPDATE solutions SET status = 'great' WHERE rowid = 2")
    db.commit()
    db.close()


def _garbage(path):
    open(path, "wb").write(b"this is not a database at all" * 100)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_truncate, ""),
        (_wrong_version, "99"),
        (_bad_row, "great"),
        (_garbage, ""),
    ],
)
def test_a_bad_pack_is_refused_and_imports_nothing(tmp_path, spoil, message):
    path = write_pack(
        tmp_path / "a.sqlite", solutions=[("p1", "verified", "12"), ("p2", "unverified", "2")]
    )
    spoil(path)
    with pytest.raises(CommandError, match="not imported") as refused:
        call_command("import_pack", path)
    assert message in str(refused.value)
    assert counts() == (0, 0, 0)


@pytest.mark.django_db
def test_an_exported_pack_round_trips_into_another_site(tmp_path, make_problem, cast):
    geometry = make_problem("三角形内角和是多少度？", reference="180", topic="geometry")
    make_problem("2+2=?", topic="algebra", solutions=(("verified", "4"),))
    Solution.objects.create(
        problem=geometry,
        final="180",
        answer="\\boxed{180}",
        status="verified",
        source="batch",
        manifest_id="m1",
        prompt_version="r1-distill/1",
        evidence={"agreement": True},
    )
    Solution.objects.create(problem=geometry, final=None, status="failed", source="batch")
    ModelManifest.objects.create(manifest_id="m1", name="tiny", data={"name": "tiny"})
    path = str(tmp_path / "out.sqlite")
    call_command("export_pack", path, "--topic", "geometry")
    info = packs.pack_info(path)
    assert info["problems"] == 1 and info["by_status"]["verified"] == 1
    assert info["solutions"] == 1  # failed answers are not exported unless asked
    assert [m["name"] for m in info["manifests"]] == ["tiny"]
    with pytest.raises(CommandError, match="exists"):
        call_command("export_pack", path)
    # "another site": empty the bank, import, and the answer is back and served
    Problem.objects.all().delete()
    ModelManifest.objects.all().delete()
    call_command("import_pack", path)
    back = Problem.objects.get()
    assert back.text == geometry.text and back.reference_answer == "180"
    assert back.best_solution().final == "180" and back.external_id == f"site-{geometry.pk}"
    copy = tmp_path / "copy.sqlite"
    shutil.copy(path, copy)
    call_command("import_pack", str(copy))
    assert Solution.objects.count() == 1
