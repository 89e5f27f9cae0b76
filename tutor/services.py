"""The tutor's use cases, and the one module that calls `solver`.

Owns: answering a student's question (cache lookup -> stored answer, or a live generation job), the
process-wide engine and answer cache, the live-generation job manager, storing solutions with their
provenance, teachers' bank edits and reviews, feedback, API tokens and loading the fixture bank.
Does not own: HTTP (views), who may do what (`tutor.permissions`), or the data rules (`tutor.models`).

One engine per deployment: the site runs as ONE process (`manage.py runserver`, or
`gunicorn -k gthread --workers 1 --threads 16 tutor.wsgi`); the engine and the live jobs live in it.
Writes are small functions with keyword-only arguments under `@transaction.atomic`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tutor.models import ApiToken, Problem, Question, Solution

log = logging.getLogger(__name__)

RETRY_AFTER_S = 15  # what a busy student is told; a live answer takes tens of seconds on 2 cores


class BadQuestion(Exception):
    """The question text cannot be used."""


class EngineUnavailable(Exception):
    """No model is prepared or the engine would not load."""


class BadFixture(Exception):
    """A line of the problem-bank fixture is not a usable problem."""


# -- the process-wide engine and cache -----------------------------------------------------------


@dataclass
class _Runtime:
    engine: Any = None  # solver.engine.Engine, or a stand-in with the same stream() in unit tests
    manifest: Any = None  # solver.modelstore.Manifest
    cache: Any = None  # solver.cache.SemanticCache
    lock: threading.Lock = field(default_factory=threading.Lock)
    cache_lock: threading.RLock = field(default_factory=threading.RLock)


_runtime = _Runtime()


def get_engine() -> tuple[Any, Any]:
    """(engine, manifest), loading the configured model on first use."""
    with _runtime.lock:
        if _runtime.engine is None:
            from solver.engine import Engine, EngineError, EngineSettings
            from solver.modelstore import ModelError, ModelStore

            try:
                prepared = ModelStore(settings.SUANJING_MODELS).default(
                    settings.SUANJING_MODEL or None
                )
                engine = Engine(
                    prepared.path,
                    EngineSettings(
                        threads=settings.SUANJING_THREADS or None,
                        kv_cache_gb=settings.SUANJING_KV_CACHE_GB,
                    ),
                )
            except (ModelError, EngineError) as exc:
                raise EngineUnavailable(str(exc)) from exc
            _runtime.engine, _runtime.manifest = engine, prepared.manifest
        return _runtime.engine, _runtime.manifest


def use_engine(engine: Any, manifest: Any) -> None:
    """Share an engine built elsewhere (tests, benchmarks) instead of loading one from settings."""
    with _runtime.lock:
        _runtime.engine, _runtime.manifest = engine, manifest


def model_info() -> dict[str, Any] | None:
    """The loaded model's name and whether it is weak at math, without loading it."""
    manifest = _runtime.manifest
    if manifest is None:
        return None
    return {"name": manifest.name, "weak_at_math": bool(getattr(manifest, "weak_at_math", False))}


def get_cache() -> Any:
    """The answer cache over every banked problem, built on first use."""
    with _runtime.cache_lock:
        if _runtime.cache is None:
            from solver.cache import SemanticCache

            from solver.embed import load_embedder

            kwargs = {}
            if settings.SUANJING_CACHE_THRESHOLD:
                kwargs["threshold"] = settings.SUANJING_CACHE_THRESHOLD
            cache = SemanticCache(load_embedder(settings.SUANJING_EMBEDDER), **kwargs)
            started = time.perf_counter()
            entries = [(str(pk), text) for pk, text in Problem.objects.values_list("pk", "text")]
            if entries:
                cache.add_many(entries)
            log.info(
                "answer cache: %d problems in %.1f s", len(entries), time.perf_counter() - started
            )
            _runtime.cache = cache
        return _runtime.cache


def use_cache(cache: Any) -> None:
    """Install a cache built elsewhere (tests, benchmarks); None drops it so the next use rebuilds."""
    with _runtime.cache_lock:
        _runtime.cache = cache


def _cache_put(problem_id: int, text: str) -> None:
    """Add or replace one problem in the cache, if the cache is loaded (else it is built from the DB)."""
    with _runtime.cache_lock:
        if _runtime.cache is not None:
            _runtime.cache.remove(str(problem_id))
            _runtime.cache.add(str(problem_id), text)


def _cache_drop(problem_id: int) -> None:
    with _runtime.cache_lock:
        if _runtime.cache is not None:
            _runtime.cache.remove(str(problem_id))


def _lookup(text: str) -> Any | None:
    """The cache's decision, or None when the cache cannot be used (then every question is a miss)."""
    try:
        cache = get_cache()
        with _runtime.cache_lock:
            return cache.lookup(text)
    except Exception:  # a broken embedder must not stop students asking; generation still works
        log.error("answer cache unavailable", exc_info=True)
        return None


# -- asking ----------------------------------------------------------------------------------------


def question_key(text: str) -> str:
    """Identical questions (same text after Unicode folding, case and spacing) share one key."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = re.sub(r"\s+", " ", folded).strip().rstrip("?？.。!！ ")
    return hashlib.sha256(folded.encode()).hexdigest()


def guess_lang(text: str) -> str:
    return Problem.Lang.ZH if re.search(r"[\u3400-\u9fff]", text) else Problem.Lang.EN


def validate_question(text: Any) -> str:
    from solver.prompts import InvalidQuestion, clean_question

    try:
        return clean_question(text)
    except InvalidQuestion as exc:
        raise BadQuestion(str(exc)) from None


def answer_question(*, user, text: str) -> Question:
    """A student's question: a stored answer at once, or a live generation job (outcome "generating").

    Raises BadQuestion (nothing stored). A question that cannot be generated for is stored as refused:
    `refusal` says why ("busy": the live queue is full, try again in `question.retry_after` seconds;
    "no_model": no model is prepared)."""
    text = validate_question(text)
    started = time.perf_counter()
    decision = _lookup(text)
    problem = None
    if decision is not None and decision.hit and decision.entry_id is not None:
        problem = Problem.objects.filter(pk=int(decision.entry_id)).first()
    match = {
        "bank_hit": problem is not None,
        "problem": problem,
        "match_score": float(decision.score)
        if decision is not None and problem is not None
        else None,
        "match_reasons": list(decision.reasons) if decision is not None else ["cache unavailable"],
    }
    if problem is not None:
        best = problem.best_solution()
        if best is not None:
            return Question.objects.create(
                user=user,
                text=text,
                key=question_key(text),
                outcome=Question.Outcome.HIT,
                solution=best,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                **match,
            )
    return live_jobs.start_or_join(user=user, text=text, match=match, started=started)


@transaction.atomic
def record_feedback(*, question: Question) -> Question:
    """The student says the answer does not answer their question: the match goes to the missed page."""
    question.feedback = Question.Feedback.NOT_MY_QUESTION
    question.feedback_at = timezone.now()
    question.save(update_fields=["feedback", "feedback_at"])
    return question


# -- live generation -------------------------------------------------------------------------------


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

    def __init__(self, *, key: str, text: str, problem_id: int | None, asker_id: int):
        self.key = key
        self.text = text
        self.problem_id = problem_id
        self.asker_id = asker_id
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

    def start_or_join(self, *, user, text: str, match: dict, started: float) -> Question:
        problem = match["problem"]
        key = f"problem:{problem.pk}" if problem is not None else f"text:{question_key(text)}"
        common = {"user": user, "text": text, "key": question_key(text), **match}
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                if len(self._jobs) >= settings.SUANJING_MAX_LIVE_JOBS:
                    question = Question.objects.create(
                        outcome=Question.Outcome.REFUSED,
                        refusal="busy",
                        error=f"Busy: every live generation slot is taken. Try again in {RETRY_AFTER_S} s.",
                        **common,
                    )
                    question.retry_after = RETRY_AFTER_S
                    return question
                try:
                    engine, manifest = get_engine()
                except EngineUnavailable as exc:
                    log.error("live generation unavailable", exc_info=True)
                    return Question.objects.create(
                        outcome=Question.Outcome.REFUSED,
                        refusal="no_model",
                        error=str(exc)[:300],
                        **common,
                    )
                job = LiveJob(
                    key=key, text=text, problem_id=problem.pk if problem else None, asker_id=user.pk
                )
                self._jobs[key] = job
                self._start(job, engine, manifest)
            question = Question.objects.create(outcome=Question.Outcome.GENERATING, **common)
            job.question_ids.append(question.pk)
            self._by_question[question.pk] = job
            job.touch()
        return question

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
        from solver.prompts import get_family

        result = None
        error = ""
        try:
            family = get_family(manifest.family)
            params = GenerationParams(
                max_new_tokens=settings.SUANJING_MAX_NEW_TOKENS,
                temperature=family.temperature,
                top_p=family.top_p,
            )
            job.generation = engine.stream(family.render(job.text), params)
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

    No final answer, or a run truncated inside its reasoning -> a failed solution (never served).
    A final answer is verified when it agrees with the problem's reference answer, flagged for a teacher
    when it disagrees, and unverified when there is no reference. A question that matched no banked
    problem becomes a new problem, in the cache at once."""
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
            added_by_id=job.asker_id,
        )
    evidence: dict[str, Any] = {"finish_reason": result.finish_reason}
    if parsed.final is None or parsed.truncated:
        status = Solution.Status.FAILED
        evidence["why"] = (
            "truncated inside the reasoning" if parsed.truncated else "no final answer"
        )
    elif problem.reference_answer:
        agrees = answers_equivalent(parsed.final, problem.reference_answer)
        evidence.update(reference=problem.reference_answer, agreement=agrees)
        status = Solution.Status.VERIFIED if agrees else Solution.Status.FLAGGED
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
    served = status in (Solution.Status.VERIFIED, Solution.Status.UNVERIFIED)
    now = timezone.now()
    for question in Question.objects.filter(
        pk__in=question_ids, outcome=Question.Outcome.GENERATING
    ):
        question.problem = problem
        question.solution = solution
        question.latency_ms = (now - question.created).total_seconds() * 1000.0
        if served:
            question.outcome = Question.Outcome.GENERATED
        else:
            question.outcome = Question.Outcome.FAILED
            question.error = {
                Solution.Status.FAILED: "The model did not reach a final answer.",
                Solution.Status.FLAGGED: "The model's answer disagrees with the reference answer; a teacher will look at it.",
            }[status]
        question.save(update_fields=["problem", "solution", "latency_ms", "outcome", "error"])
    if created:
        problem_id, text = problem.pk, problem.text
        transaction.on_commit(lambda: _cache_put(problem_id, text))
    return solution


# -- the bank (teachers) ---------------------------------------------------------------------------

PROBLEM_FIELDS = ("text", "lang", "topic", "tags", "difficulty", "reference_answer")


@transaction.atomic
def create_problem(
    *,
    text: str,
    lang: str,
    topic: str = "",
    tags: list[str] | None = None,
    difficulty: int | None = None,
    reference_answer: str = "",
    added_by=None,
    origin: str = Problem.Origin.TEACHER,
    fixture_id: str | None = None,
) -> Problem:
    problem = Problem.objects.create(
        text=validate_question(text),
        lang=lang,
        topic=topic,
        tags=tags or [],
        difficulty=difficulty,
        reference_answer=reference_answer.strip(),
        added_by=added_by,
        origin=origin,
        fixture_id=fixture_id,
    )
    transaction.on_commit(lambda: _cache_put(problem.pk, problem.text))
    return problem


@transaction.atomic
def update_problem(*, problem: Problem, **changes: Any) -> Problem:
    unknown = set(changes) - set(PROBLEM_FIELDS)
    if unknown:
        raise TypeError(f"cannot change {sorted(unknown)}")
    if "text" in changes:
        changes["text"] = validate_question(changes["text"])
    text_changed = "text" in changes and changes["text"] != problem.text
    for name, value in changes.items():
        setattr(problem, name, value)
    problem.save(update_fields=[*changes, "updated"])
    if text_changed:
        transaction.on_commit(lambda: _cache_put(problem.pk, problem.text))
    return problem


@transaction.atomic
def delete_problem(*, problem: Problem) -> None:
    problem_id = problem.pk
    problem.delete()
    transaction.on_commit(lambda: _cache_drop(problem_id))


@transaction.atomic
def review_solution(*, solution: Solution, reviewer, status: str) -> Solution:
    """Approve or reject (or flag) an answer; a rejection takes it out of service at once."""
    allowed = (Solution.Status.APPROVED, Solution.Status.REJECTED, Solution.Status.FLAGGED)
    if status not in allowed:
        raise ValueError(f"status must be one of {allowed}")
    solution.status = status
    solution.reviewed_by = reviewer
    solution.reviewed_at = timezone.now()
    solution.save(update_fields=["status", "reviewed_by", "reviewed_at"])
    return solution


@transaction.atomic
def edit_solution(
    *, solution: Solution, editor, reasoning: str, answer: str, final: str
) -> Solution:
    """A teacher corrects an answer; the corrected answer is theirs, so it is approved."""
    solution.reasoning = reasoning
    solution.answer = answer
    solution.final = final.strip()[:500] or None
    solution.status = Solution.Status.APPROVED
    solution.reviewed_by = editor
    solution.reviewed_at = timezone.now()
    solution.evidence = {**solution.evidence, "edited_by_teacher": True}
    solution.save(
        update_fields=[
            "reasoning",
            "answer",
            "final",
            "status",
            "reviewed_by",
            "reviewed_at",
            "evidence",
        ]
    )
    return solution


@transaction.atomic
def add_teacher_solution(*, problem: Problem, author, text: str) -> Solution:
    """A worked solution written by a teacher (final answer in \\boxed{} or 'the answer is ...')."""
    from solver.answers import extract_final_answer

    final = extract_final_answer(text)
    return Solution.objects.create(
        problem=problem,
        answer=text.strip(),
        final=final[:500] if final else None,
        status=Solution.Status.APPROVED,
        source=Solution.Source.TEACHER,
        created_by=author,
        reviewed_by=author,
        reviewed_at=timezone.now(),
        evidence={"reference": problem.reference_answer} if problem.reference_answer else {},
    )


def missed_groups(*, limit: int = 200) -> list[dict[str, Any]]:
    """Missed questions grouped by near-duplicate (same normalized text), most asked first."""
    groups: dict[str, dict[str, Any]] = {}
    for q in Question.objects.missed().only(
        "pk", "text", "key", "created", "problem_id", "feedback", "outcome"
    )[:5000]:
        group = groups.setdefault(
            q.key,
            {
                "key": q.key,
                "text": q.text,
                "count": 0,
                "last": q.created,
                "problem_id": None,
                "feedback": 0,
                "example_id": q.pk,
            },
        )
        group["count"] += 1
        group["feedback"] += q.feedback == Question.Feedback.NOT_MY_QUESTION
        group["problem_id"] = group["problem_id"] or q.problem_id
        group["last"] = max(group["last"], q.created)
    ranked = sorted(groups.values(), key=lambda g: (-g["count"], -g["last"].timestamp()))
    return ranked[:limit]


# -- fixture bank ------------------------------------------------------------------------------------


@transaction.atomic
def import_fixture_problem(*, item: dict[str, Any]) -> tuple[Problem, bool]:
    """One line of fixtures/problems.jsonl, keyed on its id: (problem, created). Loading twice changes nothing."""
    from solver.answers import extract_final_answer

    try:
        fixture_id = str(item["id"])
        text = validate_question(item["text"])
    except (KeyError, TypeError, BadQuestion) as exc:
        raise BadFixture(
            f"bad problem {item.get('id', '?') if isinstance(item, dict) else '?'}: {exc}"
        ) from None
    fields = {
        "text": text,
        "lang": item.get("lang") if item.get("lang") in Problem.Lang.values else guess_lang(text),
        "topic": str(item.get("topic") or "")[:64],
        "tags": [str(t) for t in item.get("tags") or []],
        "difficulty": item.get("difficulty") if isinstance(item.get("difficulty"), int) else None,
        "reference_answer": str(item.get("reference_answer") or "")[:500],
        "origin": Problem.Origin.FIXTURE,
    }
    problem, created = Problem.objects.get_or_create(fixture_id=fixture_id, defaults=fields)
    if not created:
        return problem, False
    worked = item.get("solution")
    if worked:
        final = extract_final_answer(worked)
        ref = fields["reference_answer"]
        Solution.objects.create(
            problem=problem,
            answer=str(worked),
            final=final[:500] if final else None,
            # Written by the team: approved, with the check against the reference kept as evidence.
            status=Solution.Status.APPROVED,
            source=Solution.Source.TEACHER,
            evidence={"reference": ref, "agreement": bool(final and ref and _agree(final, ref))},
        )
    transaction.on_commit(lambda: _cache_put(problem.pk, problem.text))
    return problem, True


def _agree(a: str, b: str) -> bool:
    from solver.answers import answers_equivalent

    return answers_equivalent(a, b)


# -- API tokens -------------------------------------------------------------------------------------


@transaction.atomic
def issue_api_token(*, user) -> str:
    """A new bearer token for `user`; only its hash is stored, so this is the one time it is shown."""
    token = "sj_" + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, digest=ApiToken.digest_of(token), prefix=token[3:9])
    return token


def user_for_token(token: str):
    """The active user a bearer token belongs to, or None."""
    if not token or len(token) > 200:
        return None
    found = ApiToken.objects.select_related("user").filter(digest=ApiToken.digest_of(token)).first()
    if found is None or not found.user.is_active:
        return None
    now = timezone.now()
    if found.last_used is None or (now - found.last_used).total_seconds() > 60:
        ApiToken.objects.filter(pk=found.pk).update(last_used=now)
    return found.user
