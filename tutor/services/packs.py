"""Answer packs on the site: which rows go into a pack, and how a pack's answers meet the stored ones.

Owns: `export_pack`, `import_pack` (all or nothing in short batches and one short switch, see "import"
below; a dry run changes nothing) and their rules, and the provenance an imported answer keeps.
Does not own: the pack format and its validation (`solver.packs`).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tutor.errors import BadQuestion, RunRefused
from tutor.models import ModelManifest, Problem, Solution, normalize_topic
from tutor.services import bankcache, runtime
from tutor.services.bank import register_topic
from tutor.services.text import guess_lang, validate_question

# The pack format and its validation are `solver.packs`; here: which site rows go into a pack, and how a
# pack's answers meet the stored ones. Import rules (issue 5): all or nothing (a bad pack imports
# nothing); problems matched by fixture id, pack id, then exact text; a solution already imported is not
# imported again; against a stored answer of the same model and prompt the higher status wins (approved >
# verified > unverified), and an answer a teacher wrote, edited, approved or rejected is never changed.
# Provenance (issue 13): a pack's "approved" or "verified" is a claim from another machine: stored as
# "verified" only when its final answer matches the problem's reference answer here, else "unverified"
# (never "approved"), with evidence["pack"] = {file, site, created, imported, claimed_status}; only a
# teacher of this site approves (Solution.approved_here), and serving ranks the school's own first.

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


# -- import: plan outside any transaction, stage in short batches, switch on in one short transaction --
#
# A pack of 20,000 problems written in one transaction held SQLite's write lock for minutes: students'
# asks failed with "database is locked" and the db_worker died (issue 13, finding 2). The import now:
#  1. checks every row of the pack (`pack_info`) and plans the whole import by reading only: which pack
#     problems match stored ones (fixture id, pack id, exact text, looked up 500 at a time), which are
#     new (their text validated), and what becomes of every answer (no transaction, no write lock);
#  2. stages the new problems and their answers in batches of BATCH rows, each its own short
#     transaction: a staged problem has `source = "staged"`, so it is in neither the bank nor the
#     students' list, and no cache hears of it (no BankChange row is written for it yet);
#  3. switches the import on in one short transaction: the manifests and topics, the staged problems'
#     source set to "bank", the answers for problems already stored (re-checked against what a teacher
#     may have done meanwhile), and one BankChange "put" row per imported problem, which every
#     process's answer cache follows (services.bankcache), so the problems are hits in a running site.
# All or nothing: a failure before or during the switch deletes the staged batches (their answers go
# with them); a process killed mid-import leaves staged rows nobody sees, deleted by the next import
# once a day old. A dry run stops after the plan: nothing is written.

BATCH = 500
STAGED = "staged"  # Problem.source of a problem an import has staged but not switched on yet


@dataclass
class _NewProblem:
    pack_id: str
    fields: dict
    topic: str
    pk: int | None = None
    solutions: dict = field(default_factory=dict)  # (manifest, prompt) -> fields of the best answer


@dataclass
class _Plan:
    manifests: list = field(default_factory=list)
    new: list = field(default_factory=list)  # _NewProblem
    matched: list = field(default_factory=list)  # (Problem, solution fields) for stored problems


def import_pack(*, path: str, dry_run: bool = False) -> ImportReport:
    """Import a pack, all or nothing, without holding the database's write lock for longer than one
    batch of BATCH rows (see above). Raises solver.packs.PackError (nothing imported) when the pack
    is corrupt, truncated or of another schema version. `dry_run`: report what would change, change nothing."""
    from solver import packs

    info = packs.pack_info(path)  # checks every row before anything is written
    report = ImportReport()
    plan = _plan(packs, path, report, _provenance(path, info))
    if info["vectors"]:
        report.notes.append("cache vectors in the pack are not used: the site embeds problem texts")
    if dry_run:
        report.notes.append("dry run: nothing was imported")
        return report
    _purge_stale_staging()
    try:
        _stage(plan)
        _switch(plan, report)
    except BaseException:
        _unstage([n.pk for n in plan.new if n.pk is not None])
        raise
    return report


def _plan(packs, path: str, report: ImportReport, provenance: dict) -> _Plan:
    """Read the pack and the stored problems it matches; decide everything; write nothing."""
    plan = _Plan()
    with packs.open_pack(path) as reader:
        plan.manifests = list(reader.manifests())
        report.manifests_created = len(
            {m.manifest_id for m in plan.manifests}
            - set(
                ModelManifest.objects.filter(
                    manifest_id__in=[m.manifest_id for m in plan.manifests]
                ).values_list("manifest_id", flat=True)
            )
        )
        names = {m.manifest_id: (m.name or m.manifest_id) for m in plan.manifests}
        local: dict[str, Problem | _NewProblem] = {}
        new_by_text: dict[str, _NewProblem] = {}
        batch: list = []

        def resolve(batch: list) -> None:
            ids = [p.id for p in batch]
            by_fixture = Problem.objects.filter(fixture_id__in=ids).in_bulk(field_name="fixture_id")
            by_external = Problem.objects.filter(external_id__in=ids).exclude(source=STAGED)
            by_external = {x.external_id: x for x in by_external}
            by_text: dict[str, Problem] = {}
            for x in (
                Problem.objects.filter(text__in=[p.text for p in batch])
                .exclude(source=STAGED)
                .order_by("-id")
            ):
                by_text[x.text] = x  # the oldest of the same text wins (ordered newest first)
            for p in batch:
                found = by_fixture.get(p.id) or by_external.get(p.id) or by_text.get(p.text)
                found = found or new_by_text.get(p.text)
                if found is not None:
                    report.problems_matched += 1
                    local[p.id] = found
                    continue
                new = _new_problem(p, report)
                if new is not None:
                    plan.new.append(new)
                    new_by_text[p.text] = new
                    local[p.id] = new

        for p in reader.problems():
            batch.append(p)
            if len(batch) >= BATCH:
                resolve(batch)
                batch = []
        if batch:
            resolve(batch)
        for s in reader.solutions():
            target = local.get(s.problem_id)
            if target is None:
                continue
            if isinstance(target, _NewProblem):
                _plan_new_solution(s, target, names.get(s.manifest_id, ""), report, provenance)
            else:
                plan.matched.append(
                    (target, _solution_fields(s, target.reference_answer, names, provenance))
                )
    report.problems_created = len(plan.new)
    return plan


def _new_problem(p, report: ImportReport) -> _NewProblem | None:
    try:
        text = validate_question(p.text)
    except BadQuestion as exc:
        report.problems_skipped += 1
        report.notes.append(f"problem {p.id!r} skipped: {exc}")
        return None
    extra = p.extra if isinstance(p.extra, dict) else {}
    tags = extra.get("tags")
    difficulty = extra.get("difficulty")
    topic = normalize_topic(p.topic or "")
    return _NewProblem(
        pack_id=p.id,
        topic=topic,
        fields={
            "text": text,
            "lang": p.lang if p.lang in Problem.Lang.values else guess_lang(text),
            "topic": topic,
            "tags": [str(t)[:64] for t in tags][:32] if isinstance(tags, list) else [],
            "difficulty": difficulty
            if isinstance(difficulty, int) and 1 <= difficulty <= 5
            else None,
            "reference_answer": (p.reference_answer or "")[:500],
            "origin": Problem.Origin.IMPORT,
            "source": STAGED,
            "external_id": p.id,
        },
    )


def _solution_fields(s, reference: str, names: dict, provenance: dict) -> dict:
    manifest_id = "" if s.manifest_id == TEACHER_MANIFEST else s.manifest_id
    prompt_version = "" if s.prompt_version == TEACHER_MANIFEST else s.prompt_version
    evidence = {k: v for k, v in s.evidence.items() if k not in _SITE_EVIDENCE}
    evidence["pack"] = {**provenance, "claimed_status": s.status}
    evidence["imported_from_pack"] = s.id
    model_name = names.get(s.manifest_id, "")
    status, contradicts = _checked(s.status, s.final, reference)
    return {
        "_contradicts": contradicts,  # taken out before the row is written
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


def _plan_new_solution(s, new: _NewProblem, model_name, report, provenance) -> None:
    """An answer for a problem this import creates: one per model and prompt, the higher status wins;
    a failure only where there is no answer."""
    fields = _solution_fields(
        s, new.fields["reference_answer"], {s.manifest_id: model_name}, provenance
    )
    source = (fields["manifest_id"], fields["prompt_version"])
    if any(f["pack_solution_id"] == s.id for f in new.solutions.values()):
        report.solutions_kept += 1
        return
    if s.status == "failed" and new.solutions:
        report.solutions_kept += 1
        return
    old = new.solutions.get(source)
    if old is not None:
        if Solution.RANK.get(old["status"], -1) >= Solution.RANK[fields["status"]]:
            report.solutions_kept += 1
            return
        report.solutions_created -= 1  # replaced before it was ever stored
        report.solutions_upgraded += 1
    new.solutions[source] = fields
    report.solutions_created += 1


def _purge_stale_staging() -> None:
    """Staged problems of an import that was killed (a day old: no import takes that long)."""
    stale = Problem.objects.filter(
        source=STAGED, created__lt=timezone.now() - dt.timedelta(days=1)
    ).values_list("pk", flat=True)
    _unstage(list(stale))


def _stage(plan: _Plan) -> None:
    """The new problems, then their answers, BATCH rows per short transaction, hidden (source staged)."""
    for start in range(0, len(plan.new), BATCH):
        chunk = plan.new[start : start + BATCH]
        with runtime.one_writer(), transaction.atomic():
            made = Problem.objects.bulk_create([Problem(**n.fields) for n in chunk])
        for n, problem in zip(chunk, made, strict=True):
            n.pk = problem.pk
    rows: list[Solution] = []
    for n in plan.new:
        for fields in n.solutions.values():
            fields = dict(fields)
            contradicts = fields.pop("_contradicts")
            solution = Solution(problem_id=n.pk, source=Solution.Source.IMPORT, **fields)
            solution.contradicts_reference = contradicts  # bulk_create does not call `save`
            solution.fill_steps()  # nor does it split the steps
            rows.append(solution)
            if len(rows) >= BATCH:
                _write_solutions(rows)
                rows = []
    if rows:
        _write_solutions(rows)


def _write_solutions(rows: list[Solution]) -> None:
    with runtime.one_writer(), transaction.atomic():
        Solution.objects.bulk_create(rows)


def _switch(plan: _Plan, report: ImportReport) -> None:
    """One short transaction: the import becomes visible, and every cache hears of its problems."""
    with runtime.one_writer(), transaction.atomic():
        for m in plan.manifests:
            ModelManifest.objects.get_or_create(
                manifest_id=m.manifest_id,
                defaults={"name": (m.name or "")[:100], "data": m.data},
            )
        for topic in sorted({n.topic for n in plan.new if n.topic}):
            register_topic(topic)
        ids = [n.pk for n in plan.new]
        for start in range(0, len(ids), BATCH):
            Problem.objects.filter(pk__in=ids[start : start + BATCH], source=STAGED).update(
                source=Problem.Source.BANK
            )
        for problem, fields in plan.matched:
            _import_solution(problem, fields, report)
        bankcache.record_many((bankcache.Kind.PUT, n.pk, n.fields["text"]) for n in plan.new)


def _unstage(ids: list[int]) -> None:
    """Delete staged problems (and their answers), BATCH per short transaction."""
    for start in range(0, len(ids), BATCH):
        with runtime.one_writer(), transaction.atomic():
            Problem.objects.filter(pk__in=ids[start : start + BATCH], source=STAGED).delete()


def _provenance(path: str, info: dict) -> dict:
    """What an imported answer says about where it came from (shown as "From an answer pack (...)")."""
    return {
        "file": Path(path).name[:200],
        "site": str(info.get("site") or "")[:200],
        "created": str(info.get("created") or "")[:40],
        "imported": timezone.now().date().isoformat(),
    }


def _checked(claimed: str, final: str | None, reference: str) -> tuple[str, bool]:
    """The status an imported answer is stored with, and whether its final answer contradicts the
    problem's reference answer (one comparison for both). A pack's "approved" or "verified" is a claim
    from another machine: it becomes "verified" only when its final answer matches this problem's
    reference answer here, else "unverified"; never "approved" (only a teacher here approves)."""
    reference, final_text = (reference or "").strip(), (final or "").strip()
    matches = None
    if reference and final_text:
        from solver.answers import answers_equivalent

        matches = answers_equivalent(final_text, reference)
    contradicts = matches is False
    if claimed not in ("approved", "verified"):
        return claimed, contradicts  # unverified, failed
    return (Solution.Status.VERIFIED if matches else Solution.Status.UNVERIFIED), contradicts


# Evidence keys only this site writes: a pack cannot claim a teacher here edited its answer.
_SITE_EVIDENCE = ("edited_by_teacher", "pack", "imported_from_pack")


def _import_solution(problem: Problem, fields: dict, report: ImportReport) -> None:
    """An answer for a problem already stored, decided in the switch's transaction against the rows as
    they are now (a teacher may have approved or edited one since the plan was read)."""
    fields = {k: v for k, v in fields.items() if k != "_contradicts"}  # `save` checks it again
    if problem.solutions.filter(pack_solution_id=fields["pack_solution_id"]).exists():
        report.solutions_kept += 1
        return
    status = fields["status"]
    same_source = list(
        problem.solutions.filter(
            manifest_id=fields["manifest_id"], prompt_version=fields["prompt_version"]
        )
    )
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
    if status == "failed" and problem.solutions.exists():
        report.solutions_kept += 1  # a failure adds nothing where an answer exists
        return
    Solution.objects.create(problem=problem, source=Solution.Source.IMPORT, **fields)
    report.solutions_created += 1


# -- packs through the site: download an export, upload a pack to check and import (issue 12) ----------
#
# The admin's pages use the same export and import as the commands. An uploaded file is untrusted: it is
# written, at most UPLOAD_MAX_BYTES of it, into a folder of its own under SUANJING_VAR/pack-uploads
# (the folder's name is a random token; the file keeps its own name, which the imported answers' provenance
# shows), checked and reported by a dry run, imported on the admin's confirmation, and deleted after the
# import, after a refusal, on "cancel", or by the next upload once UPLOAD_KEEP_S old. It is imported in
# the request (no background task imports packs): larger packs go through `manage.py import_pack`.

UPLOAD_MAX_BYTES = 32 * 1024 * 1024
UPLOAD_KEEP_S = 3600
_TOKEN = re.compile(r"[0-9a-f]{32}")


def export_pack_file(
    *, topic: str = "", statuses: tuple[str, ...] = EXPORT_STATUSES, site: str = ""
) -> tuple[BinaryIO, dict]:
    """`export_pack` into a temporary file; returns it open for reading (its name already removed, so
    nothing is left behind however the download ends) and the pack's counts."""
    folder = Path(tempfile.mkdtemp(prefix="suanjing-export-"))
    try:
        path = folder / "pack.sqlite"
        counts = export_pack(path=str(path), topic=topic, statuses=statuses, site=site)
        handle = open(path, "rb")  # noqa: SIM115 - returned open; the response closes it
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return handle, counts


def _uploads() -> Path:
    return Path(settings.VAR_DIR) / "pack-uploads"


def _upload_name(name: str) -> str:
    """The uploaded file's own name, safe as a file name here (letters of any script, digits, . _ -)."""
    stem = re.sub(r"[^\w.-]+", "_", Path(name or "").name).strip("._")[:100]
    return stem or "pack.sqlite"


def receive_upload(*, chunks: Iterable[bytes], name: str) -> str:
    """Keep an uploaded pack for `check_upload` and `import_upload`; returns its token. Raises
    PackError (nothing kept) when it is larger than UPLOAD_MAX_BYTES."""
    from solver.packs import PackError

    purge_uploads()
    token = secrets.token_hex(16)
    folder = _uploads() / token
    folder.mkdir(parents=True, mode=0o700)
    size = 0
    try:
        with open(folder / _upload_name(name), "xb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > UPLOAD_MAX_BYTES:
                    raise PackError(
                        f"the file is larger than {UPLOAD_MAX_BYTES // (1024 * 1024)} MB: import it "
                        "with `manage.py import_pack`"
                    )
                out.write(chunk)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return token


def _upload_path(token: str) -> Path:
    from solver.packs import PackError

    folder = _uploads() / token if _TOKEN.fullmatch(token or "") else None
    files = sorted(folder.iterdir()) if folder is not None and folder.is_dir() else []
    if len(files) != 1:
        raise PackError(
            "this upload is no longer here (imported, cancelled or too old): upload again"
        )
    return files[0]


def _named(exc: Exception, path: Path) -> Exception:
    """The pack's error with the upload's folder left out: the admin knows the file by its name."""
    from solver.packs import PackError

    message = str(exc)
    for long in (str(path.resolve()), str(path)):
        message = message.replace(long, path.name)
    return PackError(message)


def check_upload(*, token: str) -> ImportReport:
    """A dry run of an uploaded pack: what importing it would change. A pack that is refused is
    deleted and PackError raised, with the command's message."""
    from solver.packs import PackError

    path = _upload_path(token)
    try:
        return import_pack(path=str(path), dry_run=True)
    except PackError as exc:
        discard_upload(token=token)
        raise _named(exc, path) from None


def import_upload(*, token: str) -> ImportReport:
    """Import an uploaded pack (all or nothing, as `import_pack`), then delete it either way."""
    from solver.packs import PackError

    path = _upload_path(token)
    try:
        return import_pack(path=str(path))
    except PackError as exc:
        raise _named(exc, path) from None
    finally:
        discard_upload(token=token)


def upload_name(*, token: str) -> str:
    return _upload_path(token).name


def discard_upload(*, token: str) -> None:
    if _TOKEN.fullmatch(token or ""):
        shutil.rmtree(_uploads() / token, ignore_errors=True)


def purge_uploads(*, older_than_s: float = UPLOAD_KEEP_S) -> int:
    """Delete uploads nobody imported or cancelled (a closed tab); returns how many."""
    root, removed = _uploads(), 0
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    for folder in root.iterdir():
        try:
            if _TOKEN.fullmatch(folder.name) and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except FileNotFoundError:
            continue  # another process removed it meanwhile
    return removed
