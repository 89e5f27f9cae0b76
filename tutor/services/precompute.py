"""Batch precompute: runs over the bank, shared by any number of workers, resumable, checked.

Owns: selecting problems, creating, claiming, storing, settling, cancelling and resuming runs, and the
figures the run pages show. Does not own: batching and checking answers (`solver.batch`), the engine
(`runtime`), the task entry points (`tutor.tasks`, which call `work_on_run`).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tutor.errors import EngineUnavailable, RunRefused
from tutor.models import ModelManifest, PrecomputeRun, Problem, RunItem, Solution, normalize_topic
from tutor.services import runtime

log = logging.getLogger(__name__)

# A run is a list of RunItems (one per problem), the work queue that workers share. A worker (a
# `tutor.tasks.process_run` task in `manage.py db_worker`, or `manage.py precompute --inline`) claims a few
# pending items at a time with one UPDATE, feeds them to `solver.batch.run_batch` as the engine has room,
# stores each answer with its item in one transaction, renews its claims while it works, and enqueues one
# follow-up task while pending items remain, so every idle worker joins in. A claim nobody renews for
# SUANJING_PRECOMPUTE_LEASE_S seconds (the worker died) goes back to pending; the database's one-to-one
# Solution.run_item refuses a second answer for an item.

CLAIM_CHUNK = 4  # items claimed per UPDATE: small, so that several workers share a run evenly
POLL_S = 1.0  # how often a worker reads the run's status (cancel) while it works
MAX_RUN_SAMPLES = 16


@dataclass(frozen=True)
class Selection:
    """Which problems a run answers. `which`: "unanswered" (no servable answer), "stale" (the best answer
    came from another model manifest or prompt version than the current model's) or "all"."""

    topic: str = ""
    tag: str = ""
    ids: tuple[int, ...] = ()
    which: str = "unanswered"
    limit: int | None = None

    def describe(self) -> dict[str, Any]:
        data: dict[str, Any] = {"which": self.which}
        for name in ("topic", "tag", "limit"):
            if getattr(self, name):
                data[name] = getattr(self, name)
        if self.ids:
            data["ids"] = list(self.ids)
        return data


def current_model(model: str = "") -> tuple[Any, str]:
    """(manifest, prompt version) of the model workers use, without loading it (a service elsewhere is
    asked what it serves)."""
    from solver.prompts import UnknownPromptFamily, get_family

    manifest = runtime.configured_manifest(model)
    try:
        return manifest, get_family(manifest.family).version
    except UnknownPromptFamily as exc:
        raise EngineUnavailable(str(exc)) from exc


def select_problems(*, selection: Selection, manifest_id: str, prompt_version: str) -> list[int]:
    """Problem ids of a selection, in bank order."""
    if selection.which not in ("unanswered", "stale", "all"):
        raise RunRefused(f"unknown selection {selection.which!r}")
    # The bank, or exactly the problems asked for (a teacher may precompute a student's question).
    problems = Problem.objects.all() if selection.ids else Problem.objects.in_bank()
    if selection.topic:
        problems = problems.filter(topic=normalize_topic(selection.topic))
    if selection.ids:
        problems = problems.filter(pk__in=selection.ids)
    if selection.which == "unanswered":
        problems = problems.with_status("none")
    rows = problems.order_by("id").values_list("id", "tags")
    # Tags are a JSON list; containment lookups on JSON are not portable to SQLite, so filter here.
    ids = [pid for pid, tags in rows if not selection.tag or selection.tag in (tags or [])]
    if selection.which == "stale":
        best: dict[int, tuple[str, str, str]] = {}
        for pid, status, mid, version in (
            Solution.objects.filter(problem_id__in=ids)
            .servable()
            .best_first()
            .values_list("problem_id", "status", "manifest_id", "prompt_version")
        ):
            best.setdefault(pid, (status, mid, version))
        ids = [
            pid
            for pid in ids
            if pid in best
            and best[pid][0] != Solution.Status.APPROVED  # a teacher's answer is never "stale"
            and (best[pid][1], best[pid][2]) != (manifest_id, prompt_version)
        ]
    if selection.limit:
        ids = ids[: selection.limit]
    return ids


def create_run(
    *,
    selection: Selection,
    samples: int = 1,
    max_new_tokens: int | None = None,
    greedy: bool = False,
    model: str = "",
    user=None,
    enqueue: bool = True,
) -> PrecomputeRun:
    """A new run over the selected problems; with `enqueue`, a task for the workers (returns at once).

    Raises RunRefused (bad parameters, nothing selected) or EngineUnavailable (no model prepared)."""
    if not 1 <= samples <= MAX_RUN_SAMPLES:
        raise RunRefused(f"samples must be between 1 and {MAX_RUN_SAMPLES}")
    if greedy and samples > 1:
        raise RunRefused(
            "several samples need sampling: with greedy decoding they would be the same"
        )
    max_new_tokens = max_new_tokens or settings.SUANJING_MAX_NEW_TOKENS
    if not 1 <= max_new_tokens <= 32768:
        raise RunRefused("max_new_tokens must be between 1 and 32768")
    manifest, prompt_version = current_model(model)
    ids = select_problems(
        selection=selection, manifest_id=manifest.manifest_id, prompt_version=prompt_version
    )
    if not ids:
        raise RunRefused("No problem matches this selection: nothing to precompute.")
    with transaction.atomic():
        run = PrecomputeRun.objects.create(
            selection=selection.describe(),
            samples=samples,
            max_new_tokens=max_new_tokens,
            greedy=greedy,
            model_name=model,
            manifest_id=manifest.manifest_id,
            prompt_version=prompt_version,
            total=len(ids),
            created_by=user if user is not None and user.is_authenticated else None,
        )
        # Workers claim items in id order (`claim_items`), so the ids are given longest problem first.
        RunItem.objects.bulk_create(
            [RunItem(run=run, problem_id=pid) for pid in longest_first(ids)], 500
        )
        if enqueue:
            _enqueue_run(run.pk, force=True)
    return run


def longest_first(problem_ids: list[int]) -> list[int]:
    """The problems in the order a run should start them: longest text first, similar lengths together
    (`solver.engine.longest_first_order` says why), ties in bank order."""
    from solver.engine import longest_first_order

    texts: dict[int, str] = {}
    for start in range(0, len(problem_ids), 500):  # SQLite limits the parameters of one query
        chunk = problem_ids[start : start + 500]
        texts.update(Problem.objects.filter(pk__in=chunk).values_list("id", "text"))
    return [problem_ids[i] for i in longest_first_order([texts[pid] for pid in problem_ids])]


def _enqueue_run(run_id: int, *, force: bool = False, run_after=None) -> bool:
    """Enqueue a `process_run` task. Unless `force`, only when none of this run's tasks is waiting (so a
    busy run keeps exactly one task in the queue for the next idle worker). In the caller's transaction:
    the queue is this database."""
    from django.db.models import F

    runs = PrecomputeRun.objects.filter(pk=run_id)
    if force:
        runs.update(waiting_tasks=F("waiting_tasks") + 1)
    elif not runs.filter(waiting_tasks=0).update(waiting_tasks=1):
        return False
    runtime.enqueue("process_run", run_id, run_after=run_after)
    return True


def _lease_cutoff():
    import datetime as dt

    return timezone.now() - dt.timedelta(seconds=settings.SUANJING_PRECOMPUTE_LEASE_S)


@transaction.atomic
def requeue_expired(*, run_id: int, everything: bool = False) -> int:
    """Claims not renewed within the lease (their worker died) go back to pending, or are set aside when
    the item has used its attempts. `everything`: every running item (an admin knows no worker runs)."""
    from solver.batch import MAX_ATTEMPTS

    stuck = RunItem.objects.filter(run_id=run_id, status=RunItem.Status.RUNNING)
    if not everything:
        stuck = stuck.filter(claimed_at__lt=_lease_cutoff())
    set_aside = stuck.filter(attempts__gte=MAX_ATTEMPTS).update(
        status=RunItem.Status.SET_ASIDE,
        error=f"its worker stopped (crashed or killed) during {MAX_ATTEMPTS} attempts",
        claimed_by="",
        finished_at=timezone.now(),
    )
    back = stuck.update(status=RunItem.Status.PENDING, claimed_by="")
    if set_aside or back:
        log.warning("run %s: %d lost items requeued, %d set aside", run_id, back, set_aside)
    return back + set_aside


def claim_items(*, run_id: int, worker_id: str, limit: int = CLAIM_CHUNK) -> list[RunItem]:
    """Take up to `limit` pending items of a run for this worker: one UPDATE, so two workers never take the
    same item (PostgreSQL: SKIP LOCKED rows; SQLite: the write transaction is exclusive)."""
    from django.db.models import F

    now = timezone.now()
    with transaction.atomic():
        pending = RunItem.objects.filter(run_id=run_id, status=RunItem.Status.PENDING).order_by(
            "id"
        )
        if connection.features.has_select_for_update_skip_locked:
            pending = pending.select_for_update(skip_locked=True)
        ids = list(pending.values_list("id", flat=True)[:limit])
        if not ids:
            return []
        RunItem.objects.filter(pk__in=ids, status=RunItem.Status.PENDING).update(
            status=RunItem.Status.RUNNING,
            claimed_by=worker_id,
            claimed_at=now,
            attempts=F("attempts") + 1,
        )
    return list(
        RunItem.objects.filter(
            pk__in=ids, status=RunItem.Status.RUNNING, claimed_by=worker_id, claimed_at=now
        )
        .select_related("problem")
        .order_by("id")
    )


def record_manifest(manifest: Any) -> None:
    """Keep the manifest of a model whose answers are stored (once per manifest id)."""
    data = manifest.to_dict() if hasattr(manifest, "to_dict") else dict(vars(manifest))
    ModelManifest.objects.get_or_create(
        manifest_id=manifest.manifest_id, defaults={"name": manifest.name[:100], "data": data}
    )


def _solution_status(batch_status: str) -> str:
    return {
        "verified": Solution.Status.VERIFIED,
        "unverified": Solution.Status.UNVERIFIED,
        "failed": Solution.Status.FAILED,
    }[batch_status]


def store_run_item(
    *, item_id: int, checked: Any, manifest: Any, prompt_version: str, retry_failed: bool
) -> str:
    """Store one finished item (a `solver.batch.CheckedAnswer`) and its answer in one transaction.

    Returns what happened: "stored", "retry" (failed, will be tried again with other seeds),
    "set_aside" (failed MAX_ATTEMPTS times: the failed answer is kept for teachers, never served) or
    "duplicate" (another worker already stored this item: nothing written)."""
    from django.db.models import F

    from solver.batch import FAILED, MAX_ATTEMPTS, VERIFIED

    with transaction.atomic():
        item = RunItem.objects.select_for_update().select_related("problem", "run").get(pk=item_id)
        if item.status in (RunItem.Status.DONE, RunItem.Status.SET_ASIDE) or _has_solution(item):
            return "duplicate"
        PrecomputeRun.objects.filter(pk=item.run_id).update(
            new_tokens=F("new_tokens") + checked.new_tokens
        )
        failed = checked.status == FAILED
        if failed and retry_failed and item.attempts < MAX_ATTEMPTS:
            item.status, item.claimed_by = RunItem.Status.PENDING, ""
            item.error = (checked.error or "no final answer")[:2000]
            item.new_tokens += checked.new_tokens
            item.save(update_fields=["status", "claimed_by", "error", "new_tokens"])
            return "retry"
        evidence = {**checked.evidence(), "run": item.run_id, "attempt": item.attempts}
        if checked.reference and not failed:
            evidence["matches_reference"] = checked.status == VERIFIED
        if failed:
            evidence["why"] = checked.error or "no final answer"
        Solution.objects.create(
            problem=item.problem,
            run_item=item,
            reasoning=checked.reasoning,
            answer=checked.answer_text,
            final=checked.final[:500] if checked.final else None,
            status=_solution_status(checked.status),
            source=Solution.Source.BATCH,
            model_name=manifest.name[:100],
            manifest_id=manifest.manifest_id,
            prompt_version=prompt_version,
            new_tokens=checked.new_tokens,
            generation_s=round(checked.elapsed_s, 3),
            finish_reason=checked.finish_reason[:16],
            evidence=evidence,
        )
        set_aside = failed and retry_failed and item.attempts >= MAX_ATTEMPTS
        item.status = RunItem.Status.SET_ASIDE if set_aside else RunItem.Status.DONE
        item.outcome = checked.status
        item.new_tokens += checked.new_tokens
        item.elapsed_s = round(checked.elapsed_s, 3)
        item.error = (checked.error or "")[:2000]
        item.finished_at = timezone.now()
        item.claimed_by = ""
        item.save(
            update_fields=[
                "status",
                "outcome",
                "new_tokens",
                "elapsed_s",
                "error",
                "finished_at",
                "claimed_by",
            ]
        )
    return "set_aside" if set_aside else "stored"


def _has_solution(item: RunItem) -> bool:
    return Solution.objects.filter(run_item=item).exists()


@transaction.atomic
def fail_run_item(*, item_id: int, error: str) -> None:
    """Storing an item raised: count it as a failed attempt (set aside after MAX_ATTEMPTS)."""
    from solver.batch import MAX_ATTEMPTS

    item = RunItem.objects.select_for_update().get(pk=item_id)
    if item.status != RunItem.Status.RUNNING:
        return
    item.error = error[:2000]
    item.claimed_by = ""
    if item.attempts >= MAX_ATTEMPTS:
        item.status, item.finished_at = RunItem.Status.SET_ASIDE, timezone.now()
    else:
        item.status = RunItem.Status.PENDING
    item.save(update_fields=["error", "claimed_by", "status", "finished_at"])


class _Claimer:
    """The lazy item source `run_batch` pulls from: claims CLAIM_CHUNK items when its buffer is empty."""

    def __init__(self, run_id: int, worker_id: str, on_first_claim):
        self.run_id = run_id
        self.worker_id = worker_id
        self.on_first_claim = on_first_claim
        self.buffer: list[RunItem] = []
        self.claimed = 0

    def __iter__(self) -> _Claimer:
        return self

    def __next__(self):
        from solver.batch import BatchItem

        if not self.buffer:
            requeue_expired(run_id=self.run_id)
            self.buffer = claim_items(run_id=self.run_id, worker_id=self.worker_id)
            if not self.buffer:
                raise StopIteration
            if self.claimed == 0:
                self.on_first_claim()
            self.claimed += len(self.buffer)
        item = self.buffer.pop(0)
        reference = item.problem.reference_answer.strip() or None
        return BatchItem(str(item.pk), item.problem.text, reference, attempt=item.attempts)


def new_worker_id() -> str:
    import os
    import socket

    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(3)}"


def work_on_run(
    *,
    run_id: int,
    worker_id: str | None = None,
    fan_out: bool = True,
    on_progress=None,
    stop_requested=None,
) -> Any:
    """Process a run's pending items in this process until none remain, the run is cancelled, or
    `stop_requested()` is true (then the run is cancelled: resumable). Returns the session's
    `solver.batch.BatchProgress`, or None when there was nothing to do.

    `fan_out`: enqueue follow-up tasks so other workers join (off for `precompute --inline`)."""
    from django.db.models import F
    from django.db.models.functions import Greatest

    from solver.batch import BatchProgress, run_batch
    from solver.engine import GenerationParams
    from solver.prompts import get_family

    worker_id = worker_id or new_worker_id()
    PrecomputeRun.objects.filter(pk=run_id).update(
        waiting_tasks=Greatest(F("waiting_tasks") - 1, 0)
    )
    run = PrecomputeRun.objects.filter(pk=run_id).first()
    if run is None:
        return None
    if run.status not in (PrecomputeRun.Status.QUEUED, PrecomputeRun.Status.RUNNING):
        settle_run(run_id=run_id, fan_out=False)
        return None
    try:
        engine, manifest = runtime.get_engine(run.model_name or None)
        family = get_family(manifest.family)
    except Exception as exc:
        PrecomputeRun.objects.filter(pk=run_id).update(error=f"worker {worker_id}: {exc}"[:2000])
        raise
    record_manifest(manifest)
    PrecomputeRun.objects.filter(pk=run_id, status=PrecomputeRun.Status.QUEUED).update(
        status=PrecomputeRun.Status.RUNNING, started=timezone.now()
    )
    params = GenerationParams(
        max_new_tokens=run.max_new_tokens,
        temperature=family.temperature,
        top_p=family.top_p,
        greedy=run.greedy,
    )
    finished_before = run.items.filter(
        status__in=(RunItem.Status.DONE, RunItem.Status.SET_ASIDE)
    ).count()
    progress = BatchProgress(total=run.total, initial=finished_before)
    lease_s = settings.SUANJING_PRECOMPUTE_LEASE_S
    state = {"polled": 0.0, "beat": time.monotonic(), "cpu": time.process_time(), "stop": False}

    def account() -> None:
        """Renew this worker's claims and add its CPU and wall time to the run."""
        now_cpu, now = time.process_time(), time.monotonic()
        RunItem.objects.filter(
            run_id=run_id, status=RunItem.Status.RUNNING, claimed_by=worker_id
        ).update(claimed_at=timezone.now())
        PrecomputeRun.objects.filter(pk=run_id).update(
            cpu_s=F("cpu_s") + (now_cpu - state["cpu"]),
            busy_s=F("busy_s") + (now - state["beat"]),
        )
        state["cpu"], state["beat"] = now_cpu, now

    def should_stop() -> bool:
        now = time.monotonic()
        if stop_requested is not None and stop_requested():
            state["stop"] = True
        elif now - state["polled"] >= POLL_S:
            state["polled"] = now
            status = (
                PrecomputeRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
            )
            state["stop"] = status != PrecomputeRun.Status.RUNNING
            if now - state["beat"] >= lease_s / 5:
                account()
        return state["stop"]

    def on_item(checked) -> None:
        item_id = int(checked.problem_id)
        outcome = "error"
        try:
            outcome = store_run_item(
                item_id=item_id,
                checked=checked,
                manifest=manifest,
                prompt_version=family.version,
                retry_failed=not run.greedy,
            )
        except Exception as exc:  # one item's storage failure must not end the night's run
            log.error("run %s: storing item %s failed", run_id, item_id, exc_info=True)
            fail_run_item(item_id=item_id, error=f"storing the answer failed: {exc}")
        if outcome in ("retry", "error"):
            # run_batch counts this item as done right after on_item; it is not (it goes round again).
            with progress._lock:
                progress.done -= 1
                progress.by_status[checked.status] -= 1
        elif on_progress is not None:
            on_progress(progress)

    claimed_any = False
    try:
        while not state["stop"]:
            # Each pass takes items until none are pending; retried failures come back as pending,
            # so another pass picks them up.
            claimer = _Claimer(
                run_id, worker_id, (lambda: _enqueue_run(run_id)) if fan_out else (lambda: None)
            )
            run_batch(
                engine,
                family,
                claimer,
                samples=run.samples,
                params=params,
                on_item=on_item,
                should_stop=should_stop,
                batch_size=settings.SUANJING_PRECOMPUTE_BATCH,
                min_agreement=settings.SUANJING_MIN_AGREEMENT,
                progress=progress,
            )
            claimed_any = claimed_any or claimer.claimed > 0
            if claimer.claimed == 0 or progress.stopped:
                break
    finally:
        release = RunItem.objects.filter(
            run_id=run_id, status=RunItem.Status.RUNNING, claimed_by=worker_id
        )
        # Items this worker claimed and did not finish (stopped or crashed in Python): their attempt
        # does not count against them.
        release.update(
            status=RunItem.Status.PENDING, claimed_by="", attempts=Greatest(F("attempts") - 1, 0)
        )
        if state["stop"] and stop_requested is not None and stop_requested():
            PrecomputeRun.objects.filter(pk=run_id, status__in=PrecomputeRun.ACTIVE).update(
                status=PrecomputeRun.Status.CANCELLING,
                error="stopped from the command line; resume with `manage.py precompute --resume`",
            )
        account()
        settle_run(run_id=run_id, fan_out=fan_out)
    return progress if claimed_any else None


@transaction.atomic
def settle_run(*, run_id: int, fan_out: bool = True) -> PrecomputeRun:
    """Close a run whose work is over (done, or cancelled once no item is running); otherwise make sure
    a task will come back for items whose worker may have died."""
    import datetime as dt

    from django.db.models import Min

    run = PrecomputeRun.objects.select_for_update().get(pk=run_id)
    items = run.items
    pending = items.filter(status=RunItem.Status.PENDING).count()
    running = items.filter(status=RunItem.Status.RUNNING)
    if run.status == PrecomputeRun.Status.CANCELLING:
        if not running.exists():
            items.filter(status=RunItem.Status.PENDING).update(status=RunItem.Status.CANCELLED)
            run.status, run.finished = PrecomputeRun.Status.CANCELLED, timezone.now()
            run.save(update_fields=["status", "finished"])
    elif run.status in (PrecomputeRun.Status.QUEUED, PrecomputeRun.Status.RUNNING):
        if not pending and not running.exists():
            run.status, run.finished = PrecomputeRun.Status.DONE, timezone.now()
            run.save(update_fields=["status", "finished"])
        elif fan_out and pending:
            _enqueue_run(run_id)
        elif fan_out:
            # Only items claimed by other workers are left: come back when their claims would expire,
            # in case those workers died.
            oldest = running.aggregate(oldest=Min("claimed_at"))["oldest"] or timezone.now()
            when = oldest + dt.timedelta(seconds=settings.SUANJING_PRECOMPUTE_LEASE_S + 1)
            _enqueue_run(run_id, run_after=max(when, timezone.now()))
    return run


@transaction.atomic
def cancel_run(*, run: PrecomputeRun) -> PrecomputeRun:
    """Ask the run's workers to stop (they look every second); pending items will not be started."""
    if run.status not in PrecomputeRun.ACTIVE:
        raise RunRefused(f"run {run.pk} is {run.get_status_display()}: nothing to cancel")
    PrecomputeRun.objects.filter(pk=run.pk, status__in=PrecomputeRun.ACTIVE).update(
        status=PrecomputeRun.Status.CANCELLING
    )
    run.items.filter(status=RunItem.Status.PENDING).update(status=RunItem.Status.CANCELLED)
    return settle_run(run_id=run.pk, fan_out=False)


@transaction.atomic
def resume_run(*, run: PrecomputeRun, enqueue: bool = True, force: bool = False) -> int:
    """Bring a cancelled, crashed or stalled run back: cancelled items and claims whose lease expired
    (`force`: every running item) go back to pending, and a task is queued. Returns the items to do."""
    requeue_expired(run_id=run.pk, everything=force)
    run.items.filter(status=RunItem.Status.CANCELLED).update(status=RunItem.Status.PENDING)
    todo = run.items.filter(status=RunItem.Status.PENDING).count()
    if not todo and not run.items.filter(status=RunItem.Status.RUNNING).exists():
        settle_run(run_id=run.pk, fan_out=False)
        if run.status in (PrecomputeRun.Status.CANCELLED, PrecomputeRun.Status.CANCELLING):
            PrecomputeRun.objects.filter(pk=run.pk).update(
                status=PrecomputeRun.Status.DONE, finished=timezone.now()
            )
        return 0
    PrecomputeRun.objects.filter(pk=run.pk).update(
        status=PrecomputeRun.Status.RUNNING if run.started else PrecomputeRun.Status.QUEUED,
        finished=None,
        error="",
    )
    if enqueue:
        _enqueue_run(run.pk, force=True)
    return todo


def run_figures(run: PrecomputeRun) -> dict[str, Any]:
    """What the run page and its JSON show: progress, results, rates, time left, slowest items."""
    counts = run.counts()
    finished = counts["done"] + counts["set_aside"]
    end = run.finished or timezone.now()
    elapsed = (end - run.started).total_seconds() if run.started else 0.0
    rate = finished / elapsed if elapsed > 0 else 0.0
    left = counts["pending"] + counts["running"]
    slowest = list(
        run.items.filter(elapsed_s__isnull=False)
        .order_by("-elapsed_s")
        .values("id", "problem_id", "elapsed_s", "new_tokens", "outcome", "attempts")[:5]
    )
    set_aside = list(
        run.items.filter(status=RunItem.Status.SET_ASIDE).values("problem_id", "error")[:20]
    )
    return {
        "id": run.pk,
        "status": run.status,
        "total": run.total,
        "finished": finished,
        "items": {k: counts[k] for k in RunItem.Status.values},
        "results": {k: counts[k] for k in ("verified", "unverified", "failed")},
        "new_tokens": run.new_tokens,
        "cpu_s": round(run.cpu_s, 1),
        "busy_s": round(run.busy_s, 1),
        "elapsed_s": round(elapsed, 1),
        "tokens_per_s": round(run.new_tokens / elapsed, 2) if elapsed > 0 else 0.0,
        "problems_per_hour": round(rate * 3600, 1),
        "eta_s": round(left / rate, 0) if rate > 0 and run.is_active else None,
        "slowest": slowest,
        "set_aside": set_aside,
        "error": run.error,
    }
