"""Live generation: a student's question answered by the model while they watch, and worked solutions
towards a problem's answer key.

Owns: `LiveJobs` (the bounded set of generations in flight, shared by identical questions, stoppable,
cancelled when nobody waits), `_StreamSplitter` (reasoning and answer events as text streams in),
`store_live_result` (parse, check, store with provenance, settle the waiting questions), and the guided
solutions (`queue_guided_solution`, `work_on_guided`, `store_guided_result`).
Does not own: deciding that a question needs a live answer (`asking`), the engine (`runtime`).
The live jobs live in this process (the site runs as one web process: see `runtime`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tutor.errors import RETRY_AFTER_S, EngineUnavailable, OneAtATime
from tutor.models import Problem, Question, Solution
from tutor.services import runtime
from tutor.services.text import guess_lang, question_key

log = logging.getLogger(__name__)

GUIDED_EVERY_H = 1  # a worked solution towards a problem's answer key is queued at most this often
LIVE_PER_STUDENT = 1  # live generations one student may have running at a time


class _StreamSplitter:
    """Splits streamed model text into reasoning and answer events at `</think>` as it arrives.

    Display only: what is stored comes from `solver.answers.parse_output` on the whole text."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self, *, implicit_think: bool):
        self.buf = ""
        self.mode = "start"  # until we know whether the text opens with its own "<think>"
        self.implicit_think = implicit_think

    def feed(self, piece: str) -> list[dict[str, str]]:
        self.buf += piece
        out: list[dict[str, str]] = []
        while True:
            if self.mode == "start":
                head = self.buf.lstrip()
                if head.startswith(self.OPEN):
                    self.buf, self.mode = head[len(self.OPEN) :], "reasoning"
                    continue
                if self.OPEN.startswith(head):
                    return out  # could still become "<think>"
                self.mode = "reasoning" if self.implicit_think else "answer"
                continue
            if self.mode == "reasoning":
                end = self.buf.find(self.CLOSE)
                if end >= 0:
                    self._emit(out, "reasoning", self.buf[:end])
                    self.buf, self.mode = self.buf[end + len(self.CLOSE) :], "answer"
                    continue
                keep = next(
                    (
                        n
                        for n in range(min(len(self.CLOSE) - 1, len(self.buf)), 0, -1)
                        if self.CLOSE.startswith(self.buf[-n:])
                    ),
                    0,
                )
                self._emit(out, "reasoning", self.buf[: len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep :]
                return out
            self._emit(out, "answer", self.buf)
            self.buf = ""
            return out

    def flush(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        self._emit(out, "reasoning" if self.mode == "reasoning" else "answer", self.buf)
        self.buf = ""
        return out

    @staticmethod
    def _emit(out: list[dict[str, str]], kind: str, text: str) -> None:
        if text:
            out.append({"type": kind, "text": text})


class LiveJob:
    """One generation in flight, shared by every question with the same key while it runs."""

    def __init__(
        self,
        *,
        key: str,
        text: str,
        problem_id: int | None,
        asker_id: int,
        seed: int | None = None,
        rejected: str | None = None,
    ):
        self.key = key
        self.text = text
        self.problem_id = problem_id
        self.asker_id = asker_id
        self.asker_ids: set[int] = {asker_id}
        self.seed = seed
        # Not None: a teacher rejected an answer of this problem, whose final answer this is ("" when
        # it had none); the prompt tells the model (`solver.prompts.render_retry`).
        self.rejected = rejected
        self.question_ids: list[int] = []
        self.events: list[dict[str, str]] = []
        self.finished = threading.Event()
        self.cond = threading.Condition()
        self.listeners = 0
        self.last_seen = time.monotonic()
        self.generation: Any = None
        self.cancelled = False
        self.started = time.monotonic()

    def publish(self, events: list[dict[str, str]]) -> None:
        if events:
            with self.cond:
                self.events.extend(events)
                self.cond.notify_all()

    def finish(self) -> None:
        with self.cond:
            self.finished.set()
            self.cond.notify_all()

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def cancel(self) -> None:
        self.cancelled = True
        if self.generation is not None:
            self.generation.cancel()

    def follow(self, *, keepalive_s: float = 15.0) -> Iterator[dict[str, str] | None]:
        """Every event from the first, blocking for new ones; None now and then as a keep-alive.
        Counts as a listener while iterated; closing the iterator (client gone) stops counting."""
        with self.cond:
            self.listeners += 1
        self.touch()
        sent = 0
        try:
            while True:
                with self.cond:
                    if sent >= len(self.events) and not self.finished.is_set():
                        self.cond.wait(keepalive_s)
                    batch = self.events[sent:]
                    finished = self.finished.is_set()
                sent += len(batch)
                if not batch and not finished:
                    yield None
                yield from batch
                if finished and sent >= len(self.events):
                    return
        finally:
            with self.cond:
                self.listeners -= 1
            self.touch()


class LiveJobs:
    """The bounded set of running live generations, keyed by question (or by banked problem)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, LiveJob] = {}
        self._by_question: dict[int, LiveJob] = {}

    def for_question(self, question_id: int) -> LiveJob | None:
        with self._lock:
            return self._by_question.get(question_id)

    def running(self) -> int:
        with self._lock:
            return len(self._jobs)

    def start_or_join(
        self,
        *,
        user,
        text: str,
        match: dict,
        started: float,
        question: Question | None = None,
        seed: int | None = None,
        rejected: str | None = None,
    ) -> Question:
        """Start a generation for this question (or join the one running for the same text or problem).
        `question`: an existing question (a suggestion declined, a retry) to update instead of a new one.
        `rejected`: the final answer a teacher rejected ("" when it had none): the prompt says so.
        Raises OneAtATime when this user already waits for another generation (nothing is stored)."""
        problem = match["problem"]
        key = f"problem:{problem.pk}" if problem is not None else f"text:{question_key(text)}"
        common = {"text": text, "key": question_key(text), **match}

        def settle(**fields) -> Question:
            if question is None:
                return Question.objects.create(user=user, **common, **fields)
            fields = {**common, **fields}
            for name, value in fields.items():
                setattr(question, name, value)
            question.save(update_fields=list(fields))
            return question

        with self._lock:
            job = self._jobs.get(key)
            mine = [k for k, j in self._jobs.items() if k != key and user.pk in j.asker_ids]
            if len(mine) >= LIVE_PER_STUDENT:
                raise OneAtATime(
                    "You already have a question being answered. Wait for it or stop it, then ask "
                    "again. 你已有一个问题正在解答，请等待或停止后再问。"
                )
            if job is None:
                if len(self._jobs) >= settings.SUANJING_MAX_LIVE_JOBS:
                    refused = settle(
                        outcome=Question.Outcome.REFUSED,
                        refusal="busy",
                        error=f"Busy: every live generation slot is taken. Try again in {RETRY_AFTER_S} s.",
                    )
                    refused.retry_after = RETRY_AFTER_S
                    return refused
                try:
                    engine, manifest = runtime.get_engine()
                except EngineUnavailable as exc:
                    log.error("live generation unavailable", exc_info=True)
                    return settle(
                        outcome=Question.Outcome.REFUSED, refusal="no_model", error=str(exc)[:300]
                    )
                job = LiveJob(
                    key=key,
                    text=text,
                    problem_id=problem.pk if problem else None,
                    asker_id=user.pk,
                    seed=seed,
                    rejected=rejected,
                )
                self._jobs[key] = job
                self._start(job, engine, manifest)
            question = settle(outcome=Question.Outcome.GENERATING, refusal="", error="")
            job.question_ids.append(question.pk)
            job.asker_ids.add(user.pk)
            self._by_question[question.pk] = job
            job.touch()
        return question

    def stop(self, *, question: Question) -> bool:
        """The student's Stop: this question stops waiting; the generation is cancelled when nobody
        else waits for it. False when it is not running (any more)."""
        with self._lock:
            job = self._by_question.pop(question.pk, None)
            if job is None:
                return False
            if question.pk in job.question_ids:
                job.question_ids.remove(question.pk)
            job.asker_ids = {
                q.user_id for q in Question.objects.filter(pk__in=job.question_ids).only("user_id")
            }
            nobody_left = not job.question_ids
        Question.objects.filter(pk=question.pk, outcome=Question.Outcome.GENERATING).update(
            outcome=Question.Outcome.FAILED, error="You stopped this answer. 你停止了这个回答。"
        )
        if nobody_left:
            job.cancel()
        return True

    def _start(self, job: LiveJob, engine: Any, manifest: Any) -> None:
        threading.Thread(
            target=self._run, args=(job, engine, manifest), name=f"live-{job.key[:20]}", daemon=True
        ).start()
        threading.Thread(target=self._watch, args=(job,), name="live-watch", daemon=True).start()

    def _watch(self, job: LiveJob) -> None:
        """Cancel a generation nobody is waiting for any more."""
        while not job.finished.wait(1.0):
            idle = time.monotonic() - job.last_seen
            if job.listeners == 0 and idle > settings.SUANJING_LIVE_ORPHAN_S:
                log.info("cancelling live job %s: nobody is waiting", job.key)
                job.cancel()
                return

    def _run(self, job: LiveJob, engine: Any, manifest: Any) -> None:
        from solver.engine import GenerationParams
        from solver.prompts import get_family, render_retry

        result = None
        error = ""
        try:
            family = get_family(manifest.family)
            params = GenerationParams(
                max_new_tokens=settings.SUANJING_MAX_NEW_TOKENS,
                temperature=family.temperature,
                top_p=family.top_p,
                seed=job.seed,
            )
            prompt = (
                family.render(job.text)
                if job.rejected is None
                else render_retry(family, job.text, job.rejected)
            )
            job.generation = engine.stream(prompt, params)
            if job.cancelled:
                job.generation.cancel()
            splitter = _StreamSplitter(implicit_think=family.implicit_think)
            for piece in job.generation:
                job.publish(splitter.feed(piece))
            job.publish(splitter.flush())
            result = job.generation.result()
        except (
            Exception
        ) as exc:  # the edge of the job: log it, fail the questions, keep the site up
            log.error("live job %s failed", job.key, exc_info=True)
            error = f"generation failed: {type(exc).__name__}"
        with self._lock:
            self._jobs.pop(job.key, None)
            question_ids = list(job.question_ids)
        try:
            if result is not None:
                store_live_result(
                    job=job,
                    question_ids=question_ids,
                    result=result,
                    manifest=manifest,
                    family=family,
                )
            else:
                fail_questions(question_ids=question_ids, error=error)
        except Exception:
            log.error("storing live job %s failed", job.key, exc_info=True)
            fail_questions(question_ids=question_ids, error="the answer could not be stored")
        finally:
            job.finish()
            with self._lock:
                for qid in question_ids:
                    self._by_question.pop(qid, None)
            connection.close()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Tests and shutdown: wait until no job runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._jobs and not self._by_question:
                    return True
            time.sleep(0.05)
        return False


live_jobs = LiveJobs()


@transaction.atomic
def fail_questions(*, question_ids: list[int], error: str) -> None:
    Question.objects.filter(pk__in=question_ids, outcome=Question.Outcome.GENERATING).update(
        outcome=Question.Outcome.FAILED, error=error[:300]
    )


@transaction.atomic
def store_live_result(
    *, job: LiveJob, question_ids: list[int], result: Any, manifest: Any, family: Any
) -> Solution | None:
    """Parse a finished live generation, store it with its provenance and settle the waiting questions.

    No final answer, or a run truncated inside its reasoning (or ended by the loop guard) -> a failed
    solution (never served). A final answer is verified when it agrees with the problem's reference
    answer; one that contradicts it is stored for teachers and never served (the student gets the answer
    key); with no reference it is unverified, and labelled so. A final answer a teacher already rejected
    for this problem is stored as rejected again. A question that matched no banked problem becomes a
    *student's question* (Problem.source "student"): cached and served, listed apart from the bank."""
    from solver.answers import answers_equivalent, parse_output

    if result.finish_reason in ("cancelled", "error"):
        fail_questions(
            question_ids=question_ids,
            error="the generation was cancelled"
            if result.finish_reason == "cancelled"
            else (result.error or "engine error"),
        )
        return None
    parsed = parse_output(
        result.text, finish_reason=result.finish_reason, implicit_think=family.implicit_think
    )
    problem = Problem.objects.filter(pk=job.problem_id).first() if job.problem_id else None
    created = problem is None
    if created:
        problem = Problem.objects.create(
            text=job.text,
            lang=guess_lang(job.text),
            origin=Problem.Origin.LIVE,
            source=Problem.Source.STUDENT,
            added_by_id=job.asker_id,
        )
    evidence: dict[str, Any] = {"finish_reason": result.finish_reason}
    if job.seed is not None:
        evidence["seed"] = job.seed
    if job.rejected is not None:
        evidence["retry_after_rejected"] = job.rejected  # the prompt said this answer was wrong
    rejected = [
        s
        for s in problem.solutions.filter(status=Solution.Status.REJECTED).exclude(final=None)
        if parsed.final and answers_equivalent(parsed.final, s.final)
    ]
    if parsed.final is None or parsed.truncated or result.finish_reason == "loop":
        status = Solution.Status.FAILED
        evidence["why"] = (
            "the model repeated itself (stopped by the loop guard)"
            if result.finish_reason == "loop"
            else "truncated inside the reasoning"
            if parsed.truncated
            else "no final answer"
        )
    elif rejected:
        status = Solution.Status.REJECTED
        evidence["why"] = (
            f"the same final answer as answer {rejected[0].pk}, which a teacher rejected"
        )
    elif problem.reference_answer:
        agrees = answers_equivalent(parsed.final, problem.reference_answer)
        evidence.update(reference=problem.reference_answer, matches_reference=agrees)
        status = Solution.Status.VERIFIED if agrees else Solution.Status.UNVERIFIED
    else:
        status = Solution.Status.UNVERIFIED
    solution = Solution.objects.create(
        problem=problem,
        reasoning=parsed.reasoning,
        answer=parsed.answer,
        final=parsed.final[:500] if parsed.final else None,
        status=status,
        source=Solution.Source.LIVE,
        model_name=manifest.name,
        manifest_id=manifest.manifest_id,
        prompt_version=getattr(family, "version", "") or manifest.prompt_version,
        new_tokens=result.new_tokens,
        generation_s=round(result.elapsed_s, 3),
        finish_reason=result.finish_reason,
        evidence=evidence,
    )
    answered = status in (Solution.Status.VERIFIED, Solution.Status.UNVERIFIED)
    held = not answered and problem.is_waiting_for_teacher()
    now = timezone.now()
    for question in Question.objects.filter(
        pk__in=question_ids, outcome=Question.Outcome.GENERATING
    ):
        question.problem = problem
        question.solution = solution
        question.latency_ms = (now - question.created).total_seconds() * 1000.0
        if answered:
            question.outcome = Question.Outcome.GENERATED
        elif held:
            question.outcome = Question.Outcome.HELD
        else:
            question.outcome = Question.Outcome.FAILED
            question.error = (
                "The model kept repeating itself and was stopped."
                if result.finish_reason == "loop"
                else "The model gave an answer a teacher has rejected."
                if rejected
                else "The model did not reach a final answer."
            )
        question.save(update_fields=["problem", "solution", "latency_ms", "outcome", "error"])
    if created:
        problem_id, text = problem.pk, problem.text
        transaction.on_commit(lambda: runtime.put_problem(problem_id, text))
    return solution


# -- worked solutions towards the answer key ------------------------------------------------------
#
# A student served a problem's reference answer as the answer key (no servable worked answer) queues a
# `tutor.tasks.generate_towards_answer` task for a db_worker: the model is given the problem and its
# known answer and asked for the steps (`solver.prompts.render_towards_answer`). The result is checked
# like any other answer (its final must be the reference) before it is stored as verified; otherwise it
# is stored as failed, evidence for a teacher, never served. Queued at most once per GUIDED_EVERY_H per
# problem (`Problem.guided_at`), however many students ask meanwhile.


def _guided_due() -> Any:
    import datetime as dt

    return timezone.now() - dt.timedelta(hours=GUIDED_EVERY_H)


def queue_guided_solution(*, problem: Problem) -> bool:
    """Queue a worked solution towards `problem`'s reference answer, unless one was queued, started or
    tried within GUIDED_EVERY_H. True when this call queued it."""
    from django.db.models import Q

    if not problem.reference_answer:
        return False
    due = _guided_due()
    if problem.guided_at is not None and problem.guided_at >= due:
        return False  # read first: most answer-key hits then write nothing
    now = timezone.now()
    with transaction.atomic():
        claimed = (
            Problem.objects.filter(pk=problem.pk)
            .filter(Q(guided_at__isnull=True) | Q(guided_at__lt=due))
            .update(guided_at=now)
        )
        if not claimed:
            return False  # another request queued it a moment ago
        runtime.enqueue("generate_towards_answer", problem.pk)
    problem.guided_at = now
    return True


def work_on_guided(*, problem_id: int) -> str:
    """Generate and store a worked solution towards problem `problem_id`'s reference answer (the task's
    work, in a db_worker). Returns "verified", "failed", or "not_needed" (the problem is gone, has no
    reference answer, or has a servable answer by now). Raises EngineUnavailable."""
    from solver.engine import GenerationParams
    from solver.prompts import get_family, render_towards_answer

    problem = Problem.objects.filter(pk=problem_id).first()
    if problem is None or not problem.reference_answer or problem.best_solution() is not None:
        return "not_needed"
    # Started: a long generation keeps the next ask from queueing another one for the same problem.
    Problem.objects.filter(pk=problem_id).update(guided_at=timezone.now())
    engine, manifest = runtime.get_engine()
    family = get_family(manifest.family)
    reference = problem.reference_answer
    params = GenerationParams(
        max_new_tokens=settings.SUANJING_MAX_NEW_TOKENS,
        temperature=family.temperature,
        top_p=family.top_p,
    )
    generation = engine.stream(render_towards_answer(family, problem.text, reference), params)
    for _ in generation:
        pass  # nobody watches this one: only the result matters
    solution = store_guided_result(
        problem_id=problem_id,
        reference=reference,
        result=generation.result(),
        manifest=manifest,
        family=family,
    )
    return solution.status if solution is not None else "not_needed"


@transaction.atomic
def store_guided_result(
    *, problem_id: int, reference: str, result: Any, manifest: Any, family: Any
) -> Solution | None:
    """Check a generation towards `reference` and store it: verified when its final answer is the
    reference, else failed (with why) — never served. None when the problem was deleted meanwhile."""
    from solver.answers import answers_equivalent, parse_output

    problem = Problem.objects.filter(pk=problem_id).first()
    if problem is None:
        return None
    parsed = parse_output(
        result.text, finish_reason=result.finish_reason, implicit_think=family.implicit_think
    )
    evidence: dict[str, Any] = {
        "guided": "generated towards the reference answer",
        "reference": reference,
        "finish_reason": result.finish_reason,
    }
    final = parsed.final
    if result.finish_reason in ("cancelled", "error"):
        why = result.error or f"the generation ended: {result.finish_reason}"
    elif result.finish_reason == "loop":
        why = "the model repeated itself (stopped by the loop guard)"
    elif parsed.truncated:
        why = "truncated inside the reasoning"
    elif final is None:
        why = "no final answer"
    elif not answers_equivalent(final, reference):
        why = f"its final answer {final[:200]!r} is not the reference answer"
        evidence["matches_reference"] = False
    else:
        why = ""
        evidence["matches_reference"] = True
    if why:
        evidence["why"] = why
    return Solution.objects.create(
        problem=problem,
        reasoning=parsed.reasoning,
        answer=parsed.answer,
        final=final[:500] if final else None,
        status=Solution.Status.FAILED if why else Solution.Status.VERIFIED,
        source=Solution.Source.GUIDED,
        model_name=manifest.name[:100],
        manifest_id=manifest.manifest_id,
        prompt_version=f"{getattr(family, 'version', '') or manifest.prompt_version}+towards-answer",
        new_tokens=result.new_tokens,
        generation_s=round(result.elapsed_s, 3),
        finish_reason=(result.finish_reason or "")[:16],
        evidence=evidence,
    )
