"""The tutor's use cases, and the one module that calls `solver`.

Owns: answering a student's question (cache lookup -> stored answer, or a live generation job), the
process-wide engine and answer cache, the live-generation job manager, storing solutions with their
provenance, teachers' bank edits and reviews, feedback, API tokens and loading the fixture bank.
Does not own: HTTP (views), who may do what (`tutor.permissions`), or the data rules (`tutor.models`).

One engine per deployment: the site runs as ONE web process (`manage.py runserver`, or
`gunicorn -k gthread --workers 1 --threads 16 tutor.wsgi`); the live jobs live in it, and the engine in a
child process it starts (`solver.engine_process`, unless SUANJING_ENGINE_PROCESS is off).
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from solver.prompts import (
    MAX_QUESTION_CHARS,
)  # a constant: importing solver.prompts loads nothing heavy
from tutor.models import (
    ApiToken,
    MatchBlock,
    ModelManifest,
    PrecomputeRun,
    Problem,
    ProblemAlias,
    Question,
    RunItem,
    Solution,
    Topic,
    normalize_topic,
)

log = logging.getLogger(__name__)

__all__ = ["MAX_QUESTION_CHARS"]

RETRY_AFTER_S = 15  # what a busy student is told; a live answer takes tens of seconds on 2 cores
GUIDED_EVERY_H = 1  # a worked solution towards a problem's answer key is queued at most this often
LIVE_PER_STUDENT = 1  # live generations one student may have running at a time
REMEMBER_FAILURES_H = 24  # a failed question asked again within this many hours shows the failure


class BadQuestion(Exception):
    """The question text cannot be used."""


class OneAtATime(Exception):
    """You already have a question being answered: wait for it (or stop it) before asking another."""

    retry_after = RETRY_AFTER_S


class EngineUnavailable(Exception):
    """No model is prepared or the engine would not load."""


class BadFixture(Exception):
    """A line of the problem-bank fixture is not a usable problem."""


# -- the process-wide engine and cache -----------------------------------------------------------


@dataclass
class _Runtime:
    engine: Any = None  # solver.engine.Engine or EngineProcess (unit tests may install their own)
    manifest: Any = None  # solver.modelstore.Manifest
    cache: Any = None  # solver.cache.SemanticCache
    lock: threading.Lock = field(default_factory=threading.Lock)
    cache_lock: threading.RLock = field(default_factory=threading.RLock)


_runtime = _Runtime()


def get_engine(model: str | None = None) -> tuple[Any, Any]:
    """(engine, manifest), loading the configured model (or `model`, by name) on first use. One engine per
    process: asking for another model than the loaded one raises EngineUnavailable."""
    with _runtime.lock:
        if _runtime.engine is not None and not getattr(_runtime.engine, "alive", True):
            log.error("the engine process stopped; starting a new one")
            _runtime.engine = None
        if _runtime.engine is not None and model and _runtime.manifest.name != model:
            raise EngineUnavailable(
                f"this process runs the model {_runtime.manifest.name!r}, not {model!r}; "
                f"start a worker with SUANJING_MODEL={model}"
            )
        if _runtime.engine is None:
            from solver.engine import Engine, EngineError, EngineSettings
            from solver.modelstore import ModelError, ModelStore

            try:
                prepared = ModelStore(settings.SUANJING_MODELS).default(
                    model or settings.SUANJING_MODEL or None
                )
                engine_settings = EngineSettings(
                    threads=settings.SUANJING_THREADS or None,
                    kv_cache_gb=settings.SUANJING_KV_CACHE_GB,
                )
                if settings.SUANJING_ENGINE_PROCESS:
                    from solver.engine_process import EngineProcess

                    engine = EngineProcess(prepared.path, engine_settings)
                else:
                    engine = Engine(prepared.path, engine_settings)
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
            embedder = load_embedder(
                settings.SUANJING_EMBEDDER,
                backend=settings.SUANJING_EMBEDDER_BACKEND,
                cache_dir=settings.VAR_DIR / "embedders",
            )
            cache = SemanticCache(embedder, **kwargs)
            started = time.perf_counter()
            entries = [(str(pk), text) for pk, text in Problem.objects.values_list("pk", "text")]
            if entries:
                cache.add_many(entries)
            _feed_corrections(cache)
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


def _feed_corrections(cache: Any) -> None:
    """Teachers' accepted aliases and students' blocks, from the database into a newly built cache."""
    for text, problem_id in ProblemAlias.objects.filter(
        status=ProblemAlias.Status.ACCEPTED
    ).values_list("text", "problem_id"):
        _cache_call(cache, "add_alias", text, str(problem_id))
    for text, problem_id in MatchBlock.objects.values_list("text", "problem_id"):
        _cache_call(cache, "add_block", text, str(problem_id))


def _cache_call(cache: Any, method: str, *args: str) -> None:
    try:
        getattr(cache, method)(*args)
    except (
        ValueError
    ):  # a wording the cache cannot read (too long, no words): it cannot match anyway
        log.warning("answer cache: %s%r refused", method, args, exc_info=True)


def _cache_correct(method: str, *args: str) -> None:
    """An alias or block change, into the loaded cache (a cache built later reads the database)."""
    with _runtime.cache_lock:
        if _runtime.cache is not None:
            _cache_call(_runtime.cache, method, *args)


def _cache_drop(problem_id: int) -> None:
    with _runtime.cache_lock:
        if _runtime.cache is not None:
            _runtime.cache.remove(str(problem_id))


def _lookup(text: str) -> Any | None:
    """The cache's decision, or None when the cache cannot be used (then every question is a miss)."""
    try:
        # SemanticCache is safe for concurrent lookups; cache_lock only guards building/swapping it.
        return get_cache().lookup(text)
    except Exception:  # a broken embedder must not stop students asking; generation still works
        log.error("answer cache unavailable", exc_info=True)
        return None


_sqlite_writer = threading.Lock()


@contextmanager
def _one_writer() -> Iterator[None]:
    """Queue this process's threads for a small autocommit write when the database is SQLite.

    SQLite lets one connection write at a time; the others get SQLITE_BUSY and sleep in its busy handler
    (1, 2, 5 ... 100 ms) before retrying. Under many concurrent cache hits that sleep, not the 0.1 ms
    insert, set the p99: threads of one process now wait on this lock instead. Other processes (a
    db_worker) still meet the busy handler, rarely. PostgreSQL needs nothing."""
    if connection.vendor != "sqlite":
        yield
        return
    with _sqlite_writer:
        yield


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


def _outcome(decision: Any) -> str:
    """hit | suggest | miss (a stand-in cache without `outcome` says hit or miss)."""
    outcome = getattr(decision, "outcome", None)
    if outcome in ("hit", "suggest", "miss"):
        return outcome
    return "hit" if decision.hit else "miss"


def answer_question(*, user, text: str) -> Question:
    """A student's question: a stored answer at once, "is this your question?", or a live generation.

    Raises BadQuestion and OneAtATime (nothing stored). A question that cannot be generated for is
    stored as refused: `refusal` says why ("busy": the live queue is full, try again in
    `question.retry_after` seconds; "no_model": no model is prepared)."""
    text = validate_question(text)
    started = time.perf_counter()
    decision = _lookup(text)
    outcome = _outcome(decision) if decision is not None else "miss"
    match = {
        "bank_hit": False,
        "problem": None,
        "match_score": None,
        "match_reasons": list(decision.reasons) if decision is not None else ["cache unavailable"],
        "explanation": getattr(decision, "explanation", "") if decision is not None else "",
    }
    if outcome == "hit" and decision.entry_id is not None:
        problem = Problem.objects.filter(pk=int(decision.entry_id)).first()
        if problem is not None:
            match.update(bank_hit=True, problem=problem, match_score=float(decision.score))
            return serve_problem(user=user, text=text, match=match, started=started)
    if outcome == "suggest":
        offered = [
            {"problem_id": int(s.entry_id), "score": round(float(s.score), 4)}
            for s in getattr(decision, "suggestions", ())[:3]
        ]
        known = set(
            Problem.objects.filter(pk__in=[o["problem_id"] for o in offered]).values_list(
                "pk", flat=True
            )
        )
        offered = [o for o in offered if o["problem_id"] in known]
        if offered:
            with _one_writer():
                return Question.objects.create(
                    user=user,
                    text=text,
                    key=question_key(text),
                    outcome=Question.Outcome.SUGGESTED,
                    suggestions=offered,
                    latency_ms=(time.perf_counter() - started) * 1000.0,
                    **{k: v for k, v in match.items() if k != "problem"},
                )
    return _generate(user=user, text=text, match=match, started=started)


def serve_problem(
    *, user, text: str, match: dict, started: float, question: Question | None = None
) -> Question:
    """Serve a matched problem: its best servable answer; else its reference answer as the answer key;
    else, when its answers keep being rejected, "your teacher is checking"; else a live generation."""
    problem = match["problem"]
    best = problem.best_solution()
    if best is not None or problem.reference_answer:
        outcome = Question.Outcome.HIT
    elif problem.is_waiting_for_teacher():
        outcome = Question.Outcome.HELD
    else:
        return _generate(user=user, text=text, match=match, started=started, question=question)
    fields = {
        **match,
        "outcome": outcome,
        "solution": best,
        "latency_ms": (time.perf_counter() - started) * 1000.0,
    }
    with _one_writer():
        if best is None and outcome == Question.Outcome.HIT:
            queue_guided_solution(problem=problem)  # the answer key now; a worked solution later
        if question is None:
            return Question.objects.create(user=user, text=text, key=question_key(text), **fields)
        for name, value in fields.items():
            setattr(question, name, value)
        question.save(update_fields=list(fields))
        return question


def _generate(
    *,
    user,
    text: str,
    match: dict,
    started: float,
    question: Question | None = None,
    retry: bool = False,
) -> Question:
    """A live generation, unless this question failed lately (then the earlier failure is shown with
    "try again" and "ask your teacher") or the problem waits for a teacher."""
    key = question_key(text)
    if not retry:
        earlier = Question.objects.recent_failure(key, hours=REMEMBER_FAILURES_H)
        if earlier is not None and (question is None or earlier.pk != question.pk):
            fields = {
                **{k: v for k, v in match.items() if k != "problem"},
                "problem": match["problem"] or earlier.problem,
                "outcome": Question.Outcome.FAILED,
                "error": earlier.error or "The model did not reach a final answer.",
                "earlier": earlier.earlier or earlier,
                "solution": None,
            }
            with _one_writer():
                if question is None:
                    return Question.objects.create(user=user, text=text, key=key, **fields)
                for name, value in fields.items():
                    setattr(question, name, value)
                question.save(update_fields=list(fields))
                return question
    problem = match["problem"]
    seed = None
    rejected = (
        None  # the final answer a teacher rejected last ("" when it had none), for the prompt
    )
    if problem is not None:
        last = (
            problem.solutions.filter(status=Solution.Status.REJECTED)
            .order_by("-reviewed_at", "-id")
            .only("final")
            .first()
        )
        rejected = None if last is None else (last.final or "")
    if (
        retry
        or rejected is not None
        or (
            problem is not None and problem.solutions.filter(status=Solution.Status.FAILED).exists()
        )
    ):
        # Generation with a fixed seed repeats itself: a retry, or a problem whose answer was
        # rejected or failed, gets a new seed so that it does not write the same text again.
        seed = secrets.randbelow(2**31 - 2) + 1
    return live_jobs.start_or_join(
        user=user,
        text=text,
        match=match,
        started=started,
        question=question,
        seed=seed,
        rejected=rejected,
    )


@transaction.atomic
def choose_suggestion(*, question: Question, problem: Problem | None) -> Question:
    """The student's answer to "Is this your question?": yes (`problem`) -> that problem is served and a
    pending alias waits for a teacher; no (None) -> a live generation."""
    if question.outcome != Question.Outcome.SUGGESTED:
        return question
    offered = {s["problem_id"] for s in question.suggestions}
    started = time.perf_counter()
    match = {
        "bank_hit": problem is not None,
        "problem": problem,
        "match_score": None,
        "match_reasons": [*question.match_reasons, f"the student chose #{problem.pk}"]
        if problem is not None
        else [*question.match_reasons, "the student said none of the suggestions"],
        "explanation": "You said this is your question." if problem is not None else "",
    }
    if problem is None:
        return _generate(
            user=question.user, text=question.text, match=match, started=started, question=question
        )
    if problem.pk not in offered:
        raise BadQuestion("that problem was not offered")
    match["match_score"] = next(
        s["score"] for s in question.suggestions if s["problem_id"] == problem.pk
    )
    ProblemAlias.objects.get_or_create(
        key=question.key,
        problem=problem,
        defaults={
            "text": question.text,
            "status": ProblemAlias.Status.PENDING,
            "question": question,
            "created_by": question.user,
        },
    )
    return serve_problem(
        user=question.user, text=question.text, match=match, started=started, question=question
    )


@transaction.atomic
def retry_question(*, question: Question) -> Question:
    """ "Try again" on a failed question: a new live generation with a new seed."""
    if question.outcome != Question.Outcome.FAILED:
        return question
    problem = question.problem  # the same problem (bank or student's): no second copy of it
    match = {
        "bank_hit": question.bank_hit,
        "problem": problem,
        "match_score": question.match_score,
        "match_reasons": question.match_reasons,
        "explanation": question.explanation,
    }
    question.error, question.earlier = "", None
    question.save(update_fields=["error", "earlier"])
    return _generate(
        user=question.user,
        text=question.text,
        match=match,
        started=time.perf_counter(),
        question=question,
        retry=True,
    )


@transaction.atomic
def record_feedback(
    *, question: Question, kind: str = Question.Feedback.NOT_MY_QUESTION
) -> Question:
    """The student flags the question for a teacher. "Not my question" on a match also blocks that
    match for this wording, so that the next student asking it is not served the same problem."""
    question.feedback = kind
    question.feedback_at = timezone.now()
    question.save(update_fields=["feedback", "feedback_at"])
    if (
        kind == Question.Feedback.NOT_MY_QUESTION
        and question.bank_hit
        and question.problem_id is not None
    ):
        block_match(text=question.text, problem=question.problem, user=question.user)
    return question


@transaction.atomic
def block_match(*, text: str, problem: Problem, user=None) -> MatchBlock:
    key = question_key(text)
    block, _ = MatchBlock.objects.get_or_create(
        key=key, problem=problem, defaults={"text": text, "created_by": user}
    )
    ProblemAlias.objects.filter(key=key, problem=problem).delete()
    problem_id = str(problem.pk)
    transaction.on_commit(lambda: _cache_correct("add_block", text, problem_id))
    return block


@transaction.atomic
def accept_alias(
    *, text: str, problem: Problem, user, question: Question | None = None
) -> ProblemAlias:
    """A teacher says this wording is problem N: from now on asking it (or, as the cache allows, a
    rewording close to it) is a hit on N. Replaces any other alias of the wording, lifts any block."""
    key = question_key(text)
    ProblemAlias.objects.filter(key=key, status=ProblemAlias.Status.ACCEPTED).exclude(
        problem=problem
    ).delete()
    alias, created = ProblemAlias.objects.get_or_create(
        key=key,
        problem=problem,
        defaults={
            "text": text,
            "status": ProblemAlias.Status.ACCEPTED,
            "question": question,
            "created_by": user,
        },
    )
    if not created and alias.status != ProblemAlias.Status.ACCEPTED:
        alias.status = ProblemAlias.Status.ACCEPTED
        alias.save(update_fields=["status"])
    blocked = list(
        MatchBlock.objects.filter(key=key, problem=problem).values_list("text", flat=True)
    )
    MatchBlock.objects.filter(key=key, problem=problem).delete()
    problem_id, alias_text = str(problem.pk), alias.text

    def correct() -> None:
        for old in blocked:
            with _runtime.cache_lock:
                if _runtime.cache is not None:
                    _runtime.cache.remove_block(old, problem_id)
        _cache_correct("add_alias", alias_text, problem_id)

    transaction.on_commit(correct)
    return alias


@transaction.atomic
def dismiss_alias(*, alias: ProblemAlias) -> None:
    text, accepted = alias.text, alias.status == ProblemAlias.Status.ACCEPTED
    alias.delete()
    if accepted:

        def drop() -> None:
            with _runtime.cache_lock:
                if _runtime.cache is not None:
                    _runtime.cache.remove_alias(text)

        transaction.on_commit(drop)


def link_question(*, question: Question, problem: Problem, teacher) -> ProblemAlias:
    """ "Same as #N" on a student's question: an accepted alias of its wording."""
    return accept_alias(text=question.text, problem=problem, user=teacher, question=question)


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
                    engine, manifest = get_engine()
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
        transaction.on_commit(lambda: _cache_put(problem_id, text))
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
        from tutor.tasks import generate_towards_answer

        generate_towards_answer.enqueue(problem.pk)
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
    engine, manifest = get_engine()
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
    topic = register_topic(topic)
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
    if "topic" in changes:
        changes["topic"] = register_topic(changes["topic"])
    text_changed = "text" in changes and changes["text"] != problem.text
    for name, value in changes.items():
        setattr(problem, name, value)
    problem.save(update_fields=[*changes, "updated"])
    if text_changed:
        transaction.on_commit(lambda: _cache_put(problem.pk, problem.text))
    return problem


def register_topic(name: str) -> str:
    """The topic folded to the managed list's form (lower case), added to the list if new."""
    name = normalize_topic(name)
    if name:
        Topic.objects.get_or_create(name=name)
    return name


class TopicInUse(Exception):
    """Problems still have this topic: give them another one first."""


@transaction.atomic
def rename_topic(*, topic: Topic, name: str) -> Topic:
    """Rename a topic of the managed list; its problems follow. Raises BadQuestion on an empty name
    or one that is already on the list."""
    old, new = topic.name, normalize_topic(name)
    if not new:
        raise BadQuestion("a topic needs a name")
    if new != old and Topic.objects.filter(name=new).exists():
        raise BadQuestion(f"the topic {new!r} is already on the list")
    topic.name = new
    topic.save(update_fields=["name"])
    Problem.objects.filter(topic=old).update(topic=new, updated=timezone.now())
    return topic


@transaction.atomic
def delete_topic(*, topic: Topic) -> None:
    """Take a topic off the list; raises TopicInUse while problems have it."""
    if Problem.objects.filter(topic=topic.name).exists():
        raise TopicInUse(f"problems still have the topic {topic.name!r}")
    topic.delete()


@transaction.atomic
def lift_block(*, block: MatchBlock) -> None:
    """A student's "not my question" undone: that wording may match that problem again."""
    text, problem_id = block.text, str(block.problem_id)
    block.delete()

    def lift() -> None:
        with _runtime.cache_lock:
            if _runtime.cache is not None:
                _runtime.cache.remove_block(text, problem_id)

    transaction.on_commit(lift)


def near_duplicates(*, text: str, exclude: Problem | None = None) -> list[Problem]:
    """Banked problems the cache says are (or may be) the same as `text`: a teacher adding or promoting
    a problem is warned about them. Students' questions are left out (they are not the bank)."""
    decision = _lookup(text)
    if decision is None:
        return []
    ids: list[str] = []
    if decision.hit and decision.entry_id is not None:
        ids.append(decision.entry_id)
    ids += [s.entry_id for s in getattr(decision, "suggestions", ())]
    ids += [c.entry_id for c in getattr(decision, "candidates", ()) if c.passed]
    if exclude is not None:
        # The cache finds the problem itself first (same text): the suggestions the student was shown
        # when they asked it are the next best evidence.
        for question in exclude.questions.exclude(suggestions=[]):
            ids += [str(s["problem_id"]) for s in question.suggestions]
    wanted = list(dict.fromkeys(int(i) for i in ids if str(i).isdigit()))
    found = Problem.objects.in_bank().in_bulk(wanted)
    return [found[i] for i in wanted if i in found and (exclude is None or i != exclude.pk)]


@transaction.atomic
def promote_problem(*, problem: Problem, topic: str = "") -> Problem:
    """A student's question joins the curated bank."""
    problem.source = Problem.Source.BANK
    fields = ["source", "updated"]
    if topic:
        problem.topic = register_topic(topic)
        fields.append("topic")
    problem.save(update_fields=fields)
    return problem


@transaction.atomic
def merge_problem(*, problem: Problem, into: Problem, teacher) -> int:
    """A student's question is the banked problem `into`: every wording asked of it becomes an accepted
    alias of `into`, its questions point at `into`, and it is deleted. Returns the aliases made."""
    if problem.pk == into.pk:
        raise BadQuestion("a problem cannot be merged into itself")
    texts = {question_key(problem.text): problem.text}
    for text in problem.questions.values_list("text", flat=True):
        texts.setdefault(question_key(text), text)
    for text in texts.values():
        accept_alias(text=text, problem=into, user=teacher)
    problem.questions.update(problem=into, solution=None)
    delete_problem(problem=problem)
    return len(texts)


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


def missed_groups(*, limit: int = 200, flagged_only: bool = False) -> list[dict[str, Any]]:
    """Missed and flagged questions grouped by near-duplicate (same normalized text), most asked first;
    `flagged_only`: those a student flagged for a teacher ("needs a teacher's look")."""
    groups: dict[str, dict[str, Any]] = {}
    missed = Question.objects.missed()
    if flagged_only:
        missed = missed.flagged()
    for q in missed.only("pk", "text", "key", "created", "problem_id", "feedback", "outcome")[
        :5000
    ]:
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
        group["feedback"] += q.feedback != Question.Feedback.NONE
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
        "topic": register_topic(str(item.get("topic") or "")),
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
        with _one_writer():
            ApiToken.objects.filter(pk=found.pk).update(last_used=now)
    return found.user


# -- batch precompute --------------------------------------------------------------------------------
#
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


class RunRefused(Exception):
    """The run cannot be started, resumed or cancelled as asked."""


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
    """(manifest, prompt version) of the model workers use, read from the store without loading it."""
    from solver.modelstore import ModelError, ModelStore
    from solver.prompts import UnknownPromptFamily, get_family

    manifest = _runtime.manifest
    if manifest is None or (model and manifest.name != model):
        try:
            manifest = (
                ModelStore(settings.SUANJING_MODELS)
                .default(model or settings.SUANJING_MODEL or None)
                .manifest
            )
        except ModelError as exc:
            raise EngineUnavailable(str(exc)) from exc
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
        RunItem.objects.bulk_create([RunItem(run=run, problem_id=pid) for pid in ids], 500)
        if enqueue:
            _enqueue_run(run.pk, force=True)
    return run


def _enqueue_run(run_id: int, *, force: bool = False, run_after=None) -> bool:
    """Enqueue a `process_run` task. Unless `force`, only when none of this run's tasks is waiting (so a
    busy run keeps exactly one task in the queue for the next idle worker). In the caller's transaction:
    the queue is this database."""
    from django.db.models import F

    from tutor.tasks import process_run

    runs = PrecomputeRun.objects.filter(pk=run_id)
    if force:
        runs.update(waiting_tasks=F("waiting_tasks") + 1)
    elif not runs.filter(waiting_tasks=0).update(waiting_tasks=1):
        return False
    task = process_run.using(run_after=run_after) if run_after is not None else process_run
    task.enqueue(run_id)
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
        engine, manifest = get_engine(run.model_name or None)
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


# -- answer packs ------------------------------------------------------------------------------------
#
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


def export_pack(*, path: str, topic: str = "", statuses: tuple[str, ...] = EXPORT_STATUSES) -> dict:
    """Write the selected problems and their answers to a new pack; returns its counts."""
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
        return _write_pack(packs, path, problems, solutions, manifests)
    except packs.PackError:
        if not existed:
            Path(path).unlink(missing_ok=True)  # no half-written pack left behind
        raise


def _write_pack(packs, path, problems, solutions, manifests) -> dict:
    with packs.PackWriter(path, exist_ok=False) as writer, writer.transaction():
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
            _import_rows(packs, path, report)
            if dry_run:
                raise _DryRun
    except _DryRun:
        report.notes.append("dry run: nothing was imported")
    if info["vectors"]:
        report.notes.append("cache vectors in the pack are not used: the site embeds problem texts")
    if not dry_run and report.problems_created:
        use_cache(None)  # rebuilt with the new problems on next use
    return report


def _import_rows(packs, path: str, report: ImportReport) -> None:
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
            _import_solution(s, problem, names.get(s.manifest_id, ""), report)


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


def _import_solution(s, problem: Problem, model_name: str, report: ImportReport) -> None:
    if problem.solutions.filter(pack_solution_id=s.id).exists():
        report.solutions_kept += 1
        return
    manifest_id = "" if s.manifest_id == TEACHER_MANIFEST else s.manifest_id
    prompt_version = "" if s.prompt_version == TEACHER_MANIFEST else s.prompt_version
    same_source = list(
        problem.solutions.filter(manifest_id=manifest_id, prompt_version=prompt_version)
    )
    fields = {
        "reasoning": s.reasoning,
        "answer": s.answer_text,
        "final": s.final,
        "status": s.status,
        "model_name": model_name[:100] if manifest_id else "",
        "manifest_id": manifest_id,
        "prompt_version": prompt_version,
        "new_tokens": s.new_tokens,
        "generation_s": s.elapsed_s,
        "finish_reason": s.finish_reason[:16],
        "evidence": {**s.evidence, "imported_from_pack": s.id},
        "pack_solution_id": s.id,
    }
    if same_source:
        # The same model and prompt answered here too: one answer per source, the higher status wins.
        if any(x.is_teacher_touched for x in same_source) or any(
            Solution.RANK.get(x.status, -1) >= Solution.RANK[s.status] for x in same_source
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
