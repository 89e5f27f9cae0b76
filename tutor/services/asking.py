"""A student's question: answered from the bank, "is this your question?", or a live generation.

Owns: `answer_question` (cache lookup -> a stored answer, suggestions, or a live generation), serving a
matched problem, the student's choice among suggestions, "try again" and feedback.
Does not own: the live generation itself (`live`), the cache (`runtime`), the text rules (`text`),
aliases and blocks (`bank`).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from django.db import transaction
from django.utils import timezone

from tutor.errors import BadQuestion
from tutor.models import Problem, ProblemAlias, Question, Solution
from tutor.services import bank, live, runtime
from tutor.services.text import question_key, validate_question

REMEMBER_FAILURES_H = 24  # a failed question asked again within this many hours shows the failure


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
                "error": earlier.error or "The model did not reach a final answer.",
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
    return live.live_jobs.start_or_join(
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
        bank.block_match(text=question.text, problem=question.problem, user=question.user)
    return question
