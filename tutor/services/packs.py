"""Answer packs on the site: which rows go into a pack, and how a pack's answers meet the stored ones.

Owns: `export_pack`, `import_pack` (one transaction; a dry run changes nothing) and their rules.
Does not own: the pack format and its validation (`solver.packs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from tutor.errors import BadQuestion, RunRefused
from tutor.models import ModelManifest, Problem, Solution
from tutor.services import runtime
from tutor.services.bank import register_topic
from tutor.services.text import guess_lang, validate_question

# The pack format and its validation are `solver.packs`; here: which site rows go into a pack, and how a
# pack's answers meet the stored ones. Import rules (issue 5): one transaction (a bad pack imports
# nothing); problems matched by fixture id, pack id, then exact text; a solution already imported is not
# imported again; against a stored answer of the same model and prompt the higher status wins (approved >
# verified > unverified), and an answer a teacher wrote, edited, approved or rejected is never changed.

EXPORT_STATUSES = ("approved", "verified", "unverified")
TEACHER_MANIFEST = "teacher"  # the pack's manifest id for answers written by teachers


def _pack_evidence(evidence: dict) -> dict:
    """Site evidence in the pack's shape (samples a list, agreement a number in [0, 1])."""
    out = dict(evidence)
    agreement = out.get("agreement")
    if isinstance(agreement, bool) or not isinstance(agreement, (int, float, type(None))):
        out.pop("agreement")
        if isinstance(agreement, bool):
            out.setdefault("matches_reference", agreement)
    if not isinstance(out.get("samples", []), list):
        out.pop("samples")
    if out.get("reference") is not None and not isinstance(out["reference"], str):
        out["reference"] = str(out["reference"])[:500]
    return out


def problem_pack_id(problem: Problem) -> str:
    """A problem's id in packs: its bundled-bank id when it has one (the same at every school), the id a
    pack gave it, or this site's number."""
    return problem.fixture_id or problem.external_id or f"site-{problem.pk}"


def export_pack(
    *, path: str, topic: str = "", statuses: tuple[str, ...] = EXPORT_STATUSES, site: str = ""
) -> dict:
    """Write the selected problems and their answers to a new pack; returns its counts. `site`: this
    school's name, written into the pack (a school importing it sees it next to the answers)."""
    from solver import packs

    bad = set(statuses) - set(packs.STATUSES)
    if bad:
        raise RunRefused(
            f"cannot export status {sorted(bad)} (choose from {', '.join(packs.STATUSES)})"
        )
    problems = Problem.objects.order_by("id")
    if topic:
        problems = problems.filter(topic=topic)
    solutions = (
        Solution.objects.filter(problem__in=problems, status__in=statuses)
        .select_related("problem")
        .order_by("problem_id", "id")
    )
    manifests = {m.manifest_id: m for m in ModelManifest.objects.all()}
    existed = Path(path).exists()
    try:
        return _write_pack(packs, path, problems, solutions, manifests, site)
    except packs.PackError:
        if not existed:
            Path(path).unlink(missing_ok=True)  # no half-written pack left behind
        raise


def _write_pack(packs, path, problems, solutions, manifests, site: str = "") -> dict:
    with packs.PackWriter(path, exist_ok=False, site=site) as writer, writer.transaction():
        written: set[str] = set()
        for problem in problems.iterator():
            writer.add_problem(
                packs.PackProblem(
                    id=problem_pack_id(problem),
                    text=problem.text,
                    reference_answer=problem.reference_answer or None,
                    lang=problem.lang,
                    topic=problem.topic or None,
                    extra={"tags": problem.tags, "difficulty": problem.difficulty},
                )
            )
        for s in solutions.iterator():
            if s.status != "failed" and not (s.final or "").strip():
                continue  # a pack's answer has a final answer (a teacher's worked text may not)
            manifest_id = s.manifest_id or TEACHER_MANIFEST
            if manifest_id not in written:
                known = manifests.get(manifest_id)
                data = dict(known.data) if known else {"name": s.model_name or manifest_id}
                data["manifest_id"] = manifest_id
                writer.add_manifest(packs.PackManifest(manifest_id, data))
                written.add(manifest_id)
            writer.add_solution(
                packs.PackSolution(
                    id=s.pack_solution_id or f"site-{s.pk}",
                    problem_id=problem_pack_id(s.problem),
                    manifest_id=manifest_id,
                    prompt_version=s.prompt_version or TEACHER_MANIFEST,
                    status=s.status,
                    final=s.final if s.status != "failed" else None,
                    reasoning=s.reasoning,
                    answer_text=s.answer,
                    finish_reason=s.finish_reason,
                    evidence=_pack_evidence(s.evidence),
                    new_tokens=s.new_tokens or 0,
                    elapsed_s=s.generation_s or 0.0,
                    created=s.created.isoformat(),
                )
            )
        counts = writer.counts()
    return counts


@dataclass
class ImportReport:
    problems_created: int = 0
    problems_matched: int = 0
    problems_skipped: int = 0
    solutions_created: int = 0
    solutions_upgraded: int = 0
    solutions_kept: int = 0  # the stored answer won, or was already there
    manifests_created: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"problems: {self.problems_created} new, {self.problems_matched} matched, "
            f"{self.problems_skipped} skipped; answers: {self.solutions_created} new, "
            f"{self.solutions_upgraded} upgraded, {self.solutions_kept} kept as stored; "
            f"{self.manifests_created} new model manifests"
        )


class _DryRun(Exception):
    """Raised to roll back a dry-run import."""


def import_pack(*, path: str, dry_run: bool = False) -> ImportReport:
    """Import a pack in one transaction. Raises solver.packs.PackError (nothing imported) when the pack
    is corrupt, truncated or of another schema version. `dry_run`: report what would change, change nothing."""
    from solver import packs

    info = packs.pack_info(path)  # checks every row before anything is written
    report = ImportReport()
    try:
        with transaction.atomic():
            _import_rows(packs, path, report, _provenance(path, info))
            if dry_run:
                raise _DryRun
    except _DryRun:
        report.notes.append("dry run: nothing was imported")
    if info["vectors"]:
        report.notes.append("cache vectors in the pack are not used: the site embeds problem texts")
    if not dry_run and report.problems_created:
        runtime.use_cache(None)  # rebuilt with the new problems on next use
    return report


def _provenance(path: str, info: dict) -> dict:
    """What an imported answer says about where it came from (shown as "From an answer pack (...)")."""
    return {
        "file": Path(path).name[:200],
        "site": str(info.get("site") or "")[:200],
        "created": str(info.get("created") or "")[:40],
        "imported": timezone.now().date().isoformat(),
    }


def _checked_status(claimed: str, final: str | None, problem: Problem) -> str:
    """The status an imported answer is stored with: a pack's "approved" or "verified" is a claim from
    another machine, so it becomes "verified" only when its final answer matches this problem's
    reference answer here, else "unverified"; never "approved" (only a teacher here approves)."""
    if claimed not in ("approved", "verified"):
        return claimed  # unverified, failed
    reference = (problem.reference_answer or "").strip()
    if final and reference:
        from solver.answers import answers_equivalent

        if answers_equivalent(final, reference):
            return Solution.Status.VERIFIED
    return Solution.Status.UNVERIFIED


# Evidence keys only this site writes: a pack cannot claim a teacher here edited its answer.
_SITE_EVIDENCE = ("edited_by_teacher", "pack", "imported_from_pack")


def _import_rows(packs, path: str, report: ImportReport, provenance: dict) -> None:
    with packs.open_pack(path) as reader:
        for m in reader.manifests():
            _, created = ModelManifest.objects.get_or_create(
                manifest_id=m.manifest_id,
                defaults={"name": (m.name or "")[:100], "data": m.data},
            )
            report.manifests_created += created
        names = {m.manifest_id: (m.name or m.manifest_id) for m in reader.manifests()}
        local: dict[str, Problem] = {}
        for p in reader.problems():
            problem = _match_problem(p, report)
            if problem is not None:
                local[p.id] = problem
        for s in reader.solutions():
            problem = local.get(s.problem_id)
            if problem is None:
                continue
            _import_solution(s, problem, names.get(s.manifest_id, ""), report, provenance)


def _match_problem(p, report: ImportReport) -> Problem | None:
    found = (
        Problem.objects.filter(fixture_id=p.id).first()
        or Problem.objects.filter(external_id=p.id).first()
        or Problem.objects.filter(text=p.text).order_by("id").first()
    )
    if found is not None:
        report.problems_matched += 1
        return found
    try:
        text = validate_question(p.text)
    except BadQuestion as exc:
        report.problems_skipped += 1
        report.notes.append(f"problem {p.id!r} skipped: {exc}")
        return None
    extra = p.extra if isinstance(p.extra, dict) else {}
    tags = extra.get("tags")
    difficulty = extra.get("difficulty")
    problem = Problem.objects.create(
        text=text,
        lang=p.lang if p.lang in Problem.Lang.values else guess_lang(text),
        topic=register_topic(p.topic or ""),
        tags=[str(t)[:64] for t in tags][:32] if isinstance(tags, list) else [],
        difficulty=difficulty if isinstance(difficulty, int) and 1 <= difficulty <= 5 else None,
        reference_answer=(p.reference_answer or "")[:500],
        origin=Problem.Origin.IMPORT,
        external_id=p.id,
    )
    report.problems_created += 1
    return problem


def _import_solution(
    s, problem: Problem, model_name: str, report: ImportReport, provenance: dict
) -> None:
    if problem.solutions.filter(pack_solution_id=s.id).exists():
        report.solutions_kept += 1
        return
    manifest_id = "" if s.manifest_id == TEACHER_MANIFEST else s.manifest_id
    prompt_version = "" if s.prompt_version == TEACHER_MANIFEST else s.prompt_version
    same_source = list(
        problem.solutions.filter(manifest_id=manifest_id, prompt_version=prompt_version)
    )
    status = _checked_status(s.status, s.final, problem)
    evidence = {k: v for k, v in s.evidence.items() if k not in _SITE_EVIDENCE}
    evidence["pack"] = {**provenance, "claimed_status": s.status}
    evidence["imported_from_pack"] = s.id
    fields = {
        "reasoning": s.reasoning,
        "answer": s.answer_text,
        "final": s.final,
        "status": status,
        "model_name": model_name[:100] if manifest_id else "",
        "manifest_id": manifest_id,
        "prompt_version": prompt_version,
        "new_tokens": s.new_tokens,
        "generation_s": s.elapsed_s,
        "finish_reason": s.finish_reason[:16],
        "evidence": evidence,
        "pack_solution_id": s.id,
    }
    if same_source:
        # The same model and prompt answered here too: one answer per source, the higher status wins.
        if any(x.is_teacher_touched for x in same_source) or any(
            Solution.RANK.get(x.status, -1) >= Solution.RANK[status] for x in same_source
        ):
            report.solutions_kept += 1
            return
        target = max(same_source, key=lambda x: (Solution.RANK.get(x.status, -1), x.pk))
        for name, value in fields.items():
            setattr(target, name, value)
        target.save(update_fields=list(fields))
        report.solutions_upgraded += 1
        return
    if s.status == "failed" and problem.solutions.exists():
        report.solutions_kept += 1  # a failure adds nothing where an answer exists
        return
    Solution.objects.create(problem=problem, source=Solution.Source.IMPORT, **fields)
    report.solutions_created += 1
