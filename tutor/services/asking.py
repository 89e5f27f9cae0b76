"""A student's question: answered from the bank, "is this your question?", or a live generation.

Owns: `answer_question` (cache lookup -> a stored answer, suggestions, or a live generation), serving a
matched problem, the student's choice among suggestions, "try again" (a failed live answer) and "another
answer" (a finished one), follow-up questions on an answer (`ask_follow_up`, `retry_follow_up`: a live
generation each, never a problem of the bank), and feedback; fair use (issue 13):
`check_ask_rate` (SUANJING_ASKS_PER_MINUTE per student, a sliding minute over their stored questions and
follow-ups, so it holds across processes), refusals raised as `Refused` (429 + Retry-After, or 503) and counted per
student and day in UsageCount ("refused:<reason>") instead of being stored as questions, and asks that
wait out a busy SQLite writer (`database is locked`: retried with backoff, never a 500).
The one-at-a-time rule for live generations is `live`'s (counted there in the database).
Does not own: the live generation itself (`live`), the cache (`runtime`), the text rules (`text`),
aliases and blocks (`bank`).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from tutor import permissions
from tutor.errors import RETRY_AFTER_S, BadQuestion, OneAtATime, Refused
from tutor.models import FollowUp, Problem, ProblemAlias, Question, Solution, UsageCount
from tutor.services import bank, live, runtime, steps
from tutor.services.text import question_key, validate_question

REMEMBER_FAILURES_H = 24  # a failed question asked again within this many hours shows the failure
# An ask whose write meets "database is locked" (SQLite's busy_timeout ran out: an import or a worker held
# the write lock) is run again after these pauses (jittered); then refused "db_busy" (503), never a 500.
LOCKED_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
DB_BUSY_RETRY_S = 5

log = logging.getLogger(__name__)


# -- fair use ----------------------------------------------------------------------------------------


def count_usage(user, kind: str) -> None:
    """Add one to the student's counter `kind` for today (one row per user, day and kind; safe across
    processes: an UPDATE ... count + 1, or the row's first INSERT, re-tried when another made it)."""
    day = timezone.localdate()
    try:
        with runtime.one_writer():
            for _ in range(3):
                if UsageCount.objects.filter(user=user, day=day, kind=kind).update(
                    count=F("count") + 1
                ):
                    return
                try:
                    with transaction.atomic():
                        UsageCount.objects.create(user=user, day=day, kind=kind, count=1)
                    return
                except IntegrityError:
                    continue  # another process made today's row a moment ago: add to it
    except OperationalError:
        log.warning("could not count %s for user %s (database busy)", kind, user.pk, exc_info=True)


def check_ask_rate(user) -> None:
    """Refuse ("rate", 429) a student's ask beyond SUANJING_ASKS_PER_MINUTE in the last 60 s. The window
    is their stored questions' and follow-ups' `created`, so every process sees the same count;
    refusals are not stored, so being refused does not prolong the wait. Teachers and admins are not
    limited."""
    limit = settings.SUANJING_ASKS_PER_MINUTE
    if limit <= 0 or permissions.is_teacher(user):
        return
    now = timezone.now()
    since = now - dt.timedelta(seconds=60)
    recent = sorted(
        (
            created
            for model in (Question, FollowUp)
            for created in model.objects.filter(user=user, created__gt=since)
            .order_by("-created")
            .values_list("created", flat=True)[:limit]
        ),
        reverse=True,
    )[:limit]
    if len(recent) < limit:
        return
    wait = max(1, math.ceil((recent[-1] + dt.timedelta(seconds=60) - now).total_seconds()))
    raise Refused(
        f"You asked {limit} questions in the last minute. Wait {wait} s, then ask again. "
        f"一分钟内最多问{limit}个问题，请{wait}秒后再问。",
        refusal="rate",
        retry_after=wait,
    )


def _refused(question: Question, *, created: bool) -> Refused:
    """live's refusal (stored on the question) as a `Refused` raised instead: a question it made is
    deleted again, one the caller passed is rolled back by the caller's transaction."""
    reason = question.refusal or "busy"
    if created and question.pk is not None:
        with runtime.one_writer():
            Question.objects.filter(pk=question.pk).delete()
    return _refusal(reason, question.error, getattr(question, "retry_after", None))


def _refusal(reason: str, error: str, retry_after: int | None = None) -> Refused:
    """A live generation refused ("busy", or no model), in the words a student reads."""
    if reason == "busy":
        wait = retry_after or RETRY_AFTER_S
        return Refused(
            f"Busy: every live answer is taken. Try again in {wait} s. "
            f"现在太忙，请{wait}秒后再问。",
            refusal="busy",
            retry_after=wait,
        )
    return Refused(
        f"{error or 'No model is prepared.'} 暂时不能生成新答案，请稍后再问或问老师。",
        refusal=reason,
        status=503,
    )


def _locked(exc: OperationalError) -> bool:
    message = str(exc).lower()
    return "database is locked" in message or "database table is locked" in message


def _fair(*, atomic: bool = False) -> Callable:
    """An ask as one unit: refusals counted per student ("refused:<reason>", outside any transaction
    that the refusal rolls back), and a write that meets "database is locked" run again with backoff.
    `atomic`: the ask runs in its own transaction (choose, retry), so a refusal or a lock changes
    nothing. Inside a caller's transaction a lock cannot be retried: it is refused "db_busy"."""

    def decorate(func: Callable[..., Question]) -> Callable[..., Question]:
        @functools.wraps(func)
        def run(**kwargs: Any) -> Question:
            asked = kwargs.get("question") or kwargs.get("follow_up")
            user = kwargs["user"] if "user" in kwargs else asked.user
            for delay in (*LOCKED_BACKOFF_S, None):
                try:
                    if atomic:
                        with transaction.atomic():
                            return func(**kwargs)
                    return func(**kwargs)
                except Refused as exc:
                    count_usage(user, f"refused:{exc.refusal}"[:32])
                    raise
                except OneAtATime:
                    count_usage(user, "refused:one_at_a_time")
                    raise
                except OperationalError as exc:
                    if not _locked(exc):
                        raise
                    if delay is None or connection.in_atomic_block:
                        log.warning("ask refused: the database stayed locked", exc_info=True)
                        count_usage(user, "refused:db_busy")
                        raise Refused(
                            f"The site is busy saving other work. Try again in {DB_BUSY_RETRY_S} s. "
                            f"系统正忙，请{DB_BUSY_RETRY_S}秒后再试。",
                            refusal="db_busy",
                            retry_after=DB_BUSY_RETRY_S,
                            status=503,
                        ) from None
                    log.info("ask met a locked database; again in %.1f s", delay)
                    time.sleep(delay * (1 + random.random() / 2))
            raise AssertionError("unreachable")

        return run

    return decorate


def _outcome(decision: Any) -> str:
    """hit | suggest | miss (a stand-in cache without `outcome` says hit or miss)."""
    outcome = getattr(decision, "outcome", None)
    if outcome in ("hit", "suggest", "miss"):
        return outcome
    return "hit" if decision.hit else "miss"


@_fair()
def answer_question(*, user, text: str) -> Question:
    """A student's question: a stored answer at once, "is this your question?", or a live generation.

    Raises BadQuestion, OneAtATime and Refused (nothing stored): "rate" (too many this minute), "busy"
    (every live slot taken; Retry-After), "no_model" (503), "db_busy" (the database stayed locked)."""
    text = validate_question(text)
    check_ask_rate(user)
    started = time.perf_counter()
    decision = runtime.lookup(text)
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
            with runtime.one_writer():
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
    with runtime.one_writer():
        if best is None and outcome == Question.Outcome.HIT:
            live.queue_guided_solution(
                problem=problem
            )  # the answer key now; a worked solution later
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
                "error": earlier.error or live.NO_FINAL,
                "earlier": earlier.earlier or earlier,
                "solution": None,
            }
            with runtime.one_writer():
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
    answered = live.live_jobs.start_or_join(
        user=user,
        text=text,
        match=match,
        started=started,
        question=question,
        seed=seed,
        rejected=rejected,
    )
    if answered.outcome == Question.Outcome.REFUSED:
        raise _refused(answered, created=question is None)
    return answered


@_fair(atomic=True)
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


# What "try again" (failed) and "another answer" (a finished live answer) act on: live answers only; a
# banked answer has its hints, "not my question" and the teacher instead.
RETRY_OUTCOMES = (Question.Outcome.FAILED, Question.Outcome.GENERATED)


@_fair(atomic=True)
def retry_question(*, question: Question) -> Question:
    """ "Try again" on a failed question, "another answer" on a finished live answer: a new live
    generation with a new seed, under the same limits as an ask (one live answer per student, the slot
    limit). Its result is checked as any live answer is: a final answer a teacher rejected is stored
    rejected and never served, and the prompt names the last rejected one. Should it come to nothing,
    the answer the student had stays on their page (`live.store_live_result`)."""
    if question.outcome not in RETRY_OUTCOMES:
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


# -- follow-up questions on an answer ---------------------------------------------------------------


@_fair(atomic=True)
def ask_follow_up(*, user, question: Question, text: str) -> FollowUp:
    """A student's question about the answer they were shown ("why is step 2 true?"): a live generation
    with the problem and that answer (as much of it as they have seen) in the prompt, queued like any
    live answer — the ask rate, one live answer per student, the slot limit. Never a problem of the
    bank, never cached, never missed: it is kept under `question`. Raises BadQuestion (the question
    rules and their words), Conflict (no answer shown yet), OneAtATime and Refused (nothing stored)."""
    text = validate_question(text)
    check_ask_rate(user)
    shown = steps.shown_answer(user=user, question=question)
    follow_up = FollowUp.objects.create(
        question=question,
        user=user,
        text=text,
        solution=shown.solution,
        steps_shown=shown.steps_shown,
    )
    return _start_follow_up(follow_up, shown, seed=None)


@_fair(atomic=True)
def retry_follow_up(*, follow_up: FollowUp) -> FollowUp:
    """ "Try again" on a failed follow-up (written again in its place), "another answer" on an answered
    one (a new follow-up with the same words, so the first reply stays): a new generation with a new
    seed, under the limits of `ask_follow_up`. Returns the follow-up now being written."""
    if follow_up.outcome == FollowUp.Outcome.GENERATING:
        return follow_up
    shown = steps.shown_answer(user=follow_up.user, question=follow_up.question)
    seed = secrets.randbelow(2**31 - 2) + 1  # a fixed seed would write the same reply again
    if follow_up.outcome == FollowUp.Outcome.ANSWERED:
        check_ask_rate(follow_up.user)
        follow_up = FollowUp.objects.create(
            question=follow_up.question, user=follow_up.user, text=follow_up.text
        )
    follow_up.solution, follow_up.steps_shown = shown.solution, shown.steps_shown
    follow_up.reasoning = follow_up.reply = follow_up.finish_reason = ""
    follow_up.save(update_fields=["solution", "steps_shown", "reasoning", "reply", "finish_reason"])
    return _start_follow_up(follow_up, shown, seed=seed)


def _start_follow_up(
    follow_up: FollowUp, shown: steps.ShownAnswer, *, seed: int | None
) -> FollowUp:
    question = follow_up.question
    problem = question.problem.text if question.problem_id else question.text
    refusal = live.live_jobs.start_follow_up(
        follow_up=follow_up, problem=problem, shown=shown.text, partial=shown.partial, seed=seed
    )
    if refusal is not None:
        raise _refusal(refusal, follow_up.error)
    return follow_up


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
        bank.block_match(text=question.text, problem=question.problem, user=question.user)
    return question
