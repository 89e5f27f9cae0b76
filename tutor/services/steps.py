"""Step by step (issue 12): a student reveals a banked answer one step at a time — hint, next step,
whole solution — and checks their own final answer without seeing the solution.

Owns: when a question is shown step by step, where each student is on each problem (`StepProgress`:
steps revealed, whole solution asked for, answers checked and whether one was right), checking a typed
answer with `solver.answers.answers_equivalent`, what of an answer a student has been shown
(`shown_answer`: what a follow-up question may quote, what the JSON API may hand out), and what a
class's students needed (the class page).
Does not own: splitting a solution into steps (`solver.steps`, called by `Solution.save`), who may see a
question (`tutor.permissions`), or which solution is served (`Question.served_solution`).

Step by step applies to the student who asked, on an answer from the bank (a hit): a live answer has
already streamed in front of them, and teachers see every answer whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction

from tutor import permissions
from tutor.errors import Conflict
from tutor.models import Problem, Question, Solution, StepProgress

ACTIONS = ("hint", "next", "whole")
MIN_STEPS = 2
MAX_CHECK_CHARS = 200


@dataclass(frozen=True)
class StepState:
    """What the answer block shows: the steps revealed so far, how many there are, whether the whole
    solution is open, and the last check of the student's own answer."""

    steps: list[str]
    total: int
    whole: bool
    checks: int
    last_check: str
    last_right: bool | None

    @property
    def shown(self) -> int:
        return len(self.steps)

    @property
    def has_more(self) -> bool:
        return self.shown < self.total

    def to_dict(self) -> dict:
        return {
            "steps": self.steps,
            "shown": self.shown,
            "total": self.total,
            "whole": self.whole,
            "checks": self.checks,
            "last_check": self.last_check or None,
            "last_right": self.last_right,
        }


def applies(*, user: User, question: Question, served: Solution | None) -> bool:
    """Is this question shown step by step to this user? The asker (not a teacher), a hit, an answer
    of at least MIN_STEPS steps (a one-step answer would be its own hint: it is shown whole)."""
    return (
        served is not None
        and question.outcome == Question.Outcome.HIT
        and question.problem_id is not None
        and permissions.is_asker(user, question)
        and not permissions.is_teacher(user)
        and len(served.walkthrough()) >= MIN_STEPS
    )


def _progress(*, student: User, problem: Problem, solution: Solution) -> StepProgress:
    """The student's row for this problem, locked; a new served solution starts the walk again."""
    progress, _ = StepProgress.objects.select_for_update().get_or_create(
        student=student, problem=problem, defaults={"solution": solution}
    )
    if progress.solution_id != solution.pk:
        progress.solution = solution
        progress.shown = 0
        progress.whole = False
    return progress


def state_of(*, student: User, question: Question, served: Solution) -> StepState:
    """Where the student is on this question's problem (nothing revealed when they have not begun)."""
    steps = served.walkthrough()
    progress = StepProgress.objects.filter(student=student, problem_id=question.problem_id).first()
    if progress is None:
        return StepState([], len(steps), False, 0, "", None)
    same = progress.solution_id == served.pk
    shown = min(progress.shown, len(steps)) if same else 0
    return StepState(
        steps[:shown],
        len(steps),
        progress.whole and same,
        progress.checks,
        progress.last_check,
        progress.last_right,
    )


@transaction.atomic
def reveal(*, student: User, question: Question, action: str) -> StepState:
    """ "hint" (the first step, or the next when one is shown), "next", or "whole"."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    served = _served_for_steps(question)
    steps = served.walkthrough()
    progress = _progress(student=student, problem=question.problem, solution=served)
    if action == "whole":
        progress.whole = True
        progress.shown = len(steps)
    else:
        progress.shown = min(progress.shown + 1, len(steps))
        if progress.shown == len(steps):
            progress.whole = True  # the last step is the whole solution
    progress.most_shown = max(progress.most_shown, progress.shown)
    progress.save()
    return state_of(student=student, question=question, served=served)


@transaction.atomic
def check_answer(*, student: User, question: Question, answer: str) -> StepState:
    """Is the student's final answer right? Compared with the problem's answer key when it has one,
    else with the served solution's final answer; nothing of the solution is revealed."""
    from solver.answers import answers_equivalent

    # One line of printable text (a form may send control characters; PostgreSQL refuses NUL).
    answer = " ".join("".join(c for c in answer if c.isprintable() or c.isspace()).split())
    answer = answer[:MAX_CHECK_CHARS]
    if not answer:
        raise Conflict("type your answer first 请先写下你的答案")
    served = _served_for_steps(question)
    expected = (question.problem.reference_answer or "").strip() or (served.final or "").strip()
    if not expected:
        raise Conflict("this answer has no final answer to check against 这个解答没有最终答案")
    right = answers_equivalent(answer, expected)
    progress = _progress(student=student, problem=question.problem, solution=served)
    progress.checks += 1
    progress.checked_right = progress.checked_right or right
    progress.last_check = answer
    progress.last_right = right
    progress.save()
    return state_of(student=student, question=question, served=served)


def _served_for_steps(question: Question) -> Solution:
    served = question.served_solution()
    if served is None or question.outcome != Question.Outcome.HIT or not question.problem_id:
        raise Conflict("this question has no banked answer to show step by step")
    return served


@dataclass(frozen=True)
class StudentSteps:
    """What one student needed on one problem, for a teacher."""

    name: str
    shown: int
    whole: bool
    checks: int
    checked_right: bool


def needed_by(*, problem_ids: list[int], student_ids: list[int]) -> dict[int, list[StudentSteps]]:
    """problem id -> the students (of `student_ids`) who took hints or checked an answer on it."""
    found: dict[int, list[StudentSteps]] = {}
    rows = (
        StepProgress.objects.filter(problem_id__in=problem_ids, student_id__in=student_ids)
        .select_related("student")
        .order_by("student__username")
    )
    for p in rows:
        if not (p.needed_hints or p.checks):
            continue
        name = p.student.get_full_name() or p.student.get_username()
        found.setdefault(p.problem_id, []).append(
            StudentSteps(name, p.most_shown, p.whole, p.checks, p.checked_right)
        )
    return found


@dataclass(frozen=True)
class ShownAnswer:
    """What of a question's answer its asker has been shown: `text` (the answer as they read it),
    `partial` (only its first `steps_shown` steps so far; 0 when all of it)."""

    solution: Solution | None  # None: the answer key alone
    text: str
    partial: bool
    steps_shown: int


def shown_answer(*, user: User, question: Question) -> ShownAnswer:
    """What of `question`'s answer `user` has seen: the first steps of a step-by-step answer, the whole
    answer (its answer part: the write-up after the reasoning), or the answer key. Conflict when there
    is no answer yet, or when nothing of a step-by-step one has been shown."""
    if question.outcome == Question.Outcome.GENERATING:
        raise Conflict(
            "this answer is still being written: wait for it first 答案还在生成中，请稍候再追问"
        )
    served = question.served_solution()
    if served is None:
        key = question.answer_key()
        if key is None:
            raise Conflict(
                "this question has no answer to ask about yet 这个问题还没有可以追问的答案"
            )
        return ShownAnswer(None, f"\\boxed{{{key}}}", False, 0)
    if applies(user=user, question=question, served=served):
        state = state_of(student=user, question=question, served=served)
        if not state.whole:
            if not state.steps:
                raise Conflict(
                    "nothing of the answer is shown yet: take a hint first, then ask about it "
                    "还没有看到解答：先看一个提示，再追问"
                )
            return ShownAnswer(served, "\n\n".join(state.steps), True, state.shown)
    text = served.answer.strip() or (f"\\boxed{{{served.final}}}" if served.final else "")
    return ShownAnswer(served, text or served.reasoning.strip(), False, 0)
