"""The bank: problems, topics, teachers' reviews, aliases and blocks, missed questions, the fixture bank.

Owns: searching the bank (`search_problems`), teachers' writes to the curated bank (add, edit, promote, merge, delete problems; the managed topic
list; approve, reject and edit answers, one at a time or in bulk), the answers waiting for review and how
many students were served each (`answers_to_review`, `with_seen_by`), the wordings people confirmed
(aliases) or refused (blocks) and their effect on the loaded cache, `near_duplicates`, `missed_groups`,
and loading fixtures/problems.jsonl.
Does not own: the cache itself (`runtime`), the text rules (`text`), answering students (`asking`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import (
    Case,
    Count,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from tutor.errors import BadFixture, BadQuestion, Conflict, TopicInUse
from tutor.models import (
    MatchBlock,
    Problem,
    ProblemAlias,
    Question,
    Solution,
    Topic,
    UsageCount,
    normalize_topic,
)
from tutor.permissions import TEACHER
from tutor.services import bankcache, runtime
from tutor.services.text import guess_lang, question_key, validate_question

# -- problems and topics -----------------------------------------------------------------------------

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
    bankcache.record(bankcache.Kind.PUT, problem_id=problem.pk, text=problem.text)
    transaction.on_commit(lambda: runtime.put_problem(problem.pk, problem.text))
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
        bankcache.record(bankcache.Kind.PUT, problem_id=problem.pk, text=problem.text)
        transaction.on_commit(lambda: runtime.put_problem(problem.pk, problem.text))
    return problem


def register_topic(name: str) -> str:
    """The topic folded to the managed list's form (lower case), added to the list if new."""
    name = normalize_topic(name)
    if name:
        Topic.objects.get_or_create(name=name)
    return name


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
    bankcache.record(bankcache.Kind.UNBLOCK, problem_id=int(problem_id), text=text)
    transaction.on_commit(lambda: runtime.remove_block(text, problem_id))


def near_duplicates(*, text: str, exclude: Problem | None = None) -> list[Problem]:
    """Banked problems the cache says are (or may be) the same as `text`: a teacher adding or promoting
    a problem is warned about them. Students' questions are left out (they are not the bank)."""
    decision = runtime.lookup(text)
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
    """Delete a problem; its aliases and blocks go with it (in the cache too, through the feed)."""
    problem_id = problem.pk
    gone = [
        (bankcache.Kind.UNALIAS, problem_id, text)
        for text in problem.aliases.filter(status=ProblemAlias.Status.ACCEPTED).values_list(
            "text", flat=True
        )
    ]
    gone += [
        (bankcache.Kind.UNBLOCK, problem_id, text)
        for text in problem.blocks.values_list("text", flat=True)
    ]
    problem.delete()
    bankcache.record_many([(bankcache.Kind.DROP, problem_id, ""), *gone])
    transaction.on_commit(lambda: runtime.drop_problem(problem_id))


# -- reviewing answers -------------------------------------------------------------------------------

REVIEW_STATUSES = (Solution.Status.APPROVED, Solution.Status.REJECTED, Solution.Status.FLAGGED)
# What "waiting for review" lists: answers no teacher has approved or rejected that have a final answer.
WAITING_STATUSES = (Solution.Status.UNVERIFIED, Solution.Status.VERIFIED, Solution.Status.FLAGGED)
# Answers one bulk approve or reject may touch (a review page shows 50).
BULK_REVIEW_MAX = 100


def approval_refusal(solution: Solution) -> str | None:
    """Why this answer may not be approved (in both languages), or None. A final answer that contradicts
    the problem's reference answer is never served (`Solution.objects.servable`), so "approved" would be
    a label on an answer no student gets: the teacher corrects the answer (Edit) or the reference first."""
    if solution.check_reference():
        return (
            f"its final answer {solution.final} contradicts the reference answer "
            f"{solution.problem.reference_answer}: edit the answer or correct the reference answer "
            "first. 最终答案与参考答案矛盾：请先修改答案或更正参考答案。"
        )
    return None


@transaction.atomic
def review_solution(*, solution: Solution, reviewer, status: str) -> Solution:
    """Approve or reject (or flag) an answer; a rejection takes it out of service at once (students'
    question pages show the next best answer or the answer key). Raises Conflict when an approval is
    refused (`approval_refusal`)."""
    if status not in REVIEW_STATUSES:
        raise ValueError(f"status must be one of {REVIEW_STATUSES}")
    if status == Solution.Status.APPROVED:
        refusal = approval_refusal(solution)
        if refusal:
            raise Conflict(f"Answer {solution.pk} was not approved: {refusal}")
    solution.status = status
    solution.reviewed_by = reviewer
    solution.reviewed_at = timezone.now()
    solution.save(update_fields=["status", "reviewed_by", "reviewed_at"])
    return solution


@dataclass
class BulkReview:
    """What one bulk approve or reject did, answer by answer, in the order the teacher ticked them."""

    status: str
    done: list[Solution] = field(default_factory=list)  # now in `status`
    unchanged: list[Solution] = field(default_factory=list)  # were in it already
    refused: list[tuple[Solution, str]] = field(default_factory=list)  # could not be, and why
    missing: list[int] = field(default_factory=list)  # no answer has this number (deleted since)
    seen_by: dict[int, int] = field(default_factory=dict)  # students served each answer done


@transaction.atomic
def review_solutions(*, ids: list[int], reviewer, status: str) -> BulkReview:
    """Approve or reject many answers at once: each through `review_solution` (the same rules, the same
    reviewer and time, the same provenance as one at a time), all in this one transaction. An answer
    refused (an approval that contradicts its reference answer) is reported, and the others go ahead;
    an unexpected error rolls every one back. At most BULK_REVIEW_MAX (`tutor.forms` says so first)."""
    if status not in (Solution.Status.APPROVED, Solution.Status.REJECTED):
        raise ValueError("a bulk review approves or rejects")
    ids = list(dict.fromkeys(ids))
    if len(ids) > BULK_REVIEW_MAX:
        raise ValueError(f"at most {BULK_REVIEW_MAX} answers at a time")
    found = Solution.objects.select_for_update(of=("self",)).select_related("problem").in_bulk(ids)
    report = BulkReview(status=status)
    for pk in ids:
        solution = found.get(pk)
        if solution is None:
            report.missing.append(pk)
        elif solution.status == status:
            report.unchanged.append(solution)
        else:
            try:
                with transaction.atomic():  # a refusal leaves nothing of this answer behind
                    review_solution(solution=solution, reviewer=reviewer, status=status)
            except Conflict:
                report.refused.append((solution, approval_refusal(solution) or ""))
            else:
                report.done.append(solution)
    report.seen_by = seen_by([s.pk for s in report.done])
    return report


def _not_students() -> QuerySet:
    """Teachers and admins: their own tries at a question are not a student being served an answer."""
    return User.objects.filter(
        Q(groups__name=TEACHER) | Q(is_staff=True) | Q(is_superuser=True)
    ).values("pk")


def _students_served(*, flagged: bool = False) -> Subquery:
    """For each answer (OuterRef pk): how many students' questions were served it (Question.solution,
    recorded when the answer was shown), distinct students; `flagged`: of those, the students who then
    flagged their question ("not my question", "ask my teacher")."""
    questions = Question.objects.filter(solution=OuterRef("pk")).exclude(user__in=_not_students())
    if flagged:
        questions = questions.flagged()
    counted = (
        questions.order_by().values("solution").annotate(n=Count("user", distinct=True)).values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def with_seen_by(solutions: QuerySet[Solution]) -> QuerySet[Solution]:
    """Each answer annotated with `seen_by` (how many students were served it) and `flagged_by` (how
    many of them flagged their question). Counts only: a teacher learns how many saw an answer, never
    who (another teacher's class list stays theirs)."""
    return solutions.annotate(seen_by=_students_served(), flagged_by=_students_served(flagged=True))


def seen_by(solution_ids: list[int]) -> dict[int, int]:
    """answer id -> how many students were served it (0 when none)."""
    counts = dict.fromkeys(solution_ids, 0)
    rows = with_seen_by(Solution.objects.filter(pk__in=solution_ids)).values_list("pk", "seen_by")
    counts.update(rows)
    return counts


REVIEW_SHOW = ("waiting", "flagged", *Solution.Status.values, "all")


def answers_to_review(
    *, show: str = "waiting", query: str = "", topic: str = "", order: str = "seen"
) -> QuerySet[Solution]:
    """The answers on the teachers' review list, with `seen_by` and `flagged_by`:
    `show` "waiting" (not yet approved or rejected, with a status that could be served: unverified,
    verified, flagged), "flagged" (needs a teacher's look: flagged, or served to a student who flagged
    their question), one status, or "all"; `query` searches the problems as the bank does, `topic` is
    one topic; `order` "seen" (most students served first: what to look at first) or "new"."""
    solutions = with_seen_by(Solution.objects.select_related("problem", "reviewed_by"))
    if show == "waiting":
        solutions = solutions.filter(status__in=WAITING_STATUSES)
    elif show == "flagged":
        flagged = Question.objects.flagged().filter(solution__isnull=False)
        solutions = solutions.filter(
            Q(status=Solution.Status.FLAGGED) | Q(pk__in=flagged.values("solution_id"))
        )
    elif show in Solution.Status.values:
        solutions = solutions.filter(status=show)
    elif show != "all":
        raise ValueError(f"show must be one of {REVIEW_SHOW}")
    if query:
        found = search_problems(Problem.objects.all(), query).values("pk")
        solutions = solutions.filter(problem__in=found)
    if topic:
        solutions = solutions.filter(problem__topic=topic)
    if order == "new":
        return solutions.order_by("-created", "-id")
    return solutions.order_by("-seen_by", "-created", "-id")


def waiting_count() -> int:
    """Answers waiting for a teacher's review (the bank page's link says how many)."""
    return Solution.objects.filter(status__in=WAITING_STATUSES).count()


@transaction.atomic
def edit_solution(
    *, solution: Solution, editor, reasoning: str, answer: str, final: str
) -> Solution:
    """A teacher corrects an answer; the corrected answer is theirs, so it is approved. Raises
    BadQuestion when reasoning, answer and final are all empty (the forms refuse it first)."""
    reasoning, answer = (reasoning or "").strip(), (answer or "").strip()
    if not (reasoning or answer or (final or "").strip()):
        raise BadQuestion("an answer needs a worked solution, an answer or a final answer")
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

    if not (text or "").strip():
        raise BadQuestion("a worked solution cannot be empty")
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
    """Missed and flagged questions grouped by near-duplicate (same normalized text), asked by the most
    students first (one student asking 300 times counts once: `students`; `count` is every ask), then
    the latest; `flagged_only`: those a student flagged for a teacher ("needs a teacher's look").
    Grouped in the database, so no number of asks pushes other groups out of the page."""
    missed = Question.objects.missed()
    if flagged_only:
        missed = missed.flagged()
    rows = list(
        missed.order_by()
        .values("key")
        .annotate(
            students=Count("user", distinct=True),
            count=Count("id"),
            last=Max("created"),
            feedback=Count("id", filter=~Q(feedback=Question.Feedback.NONE)),
            example_id=Max("id"),
            problem_id=Max("problem_id"),
        )
        .order_by("-students", "-last", "-example_id")[:limit]
    )
    texts = dict(
        Question.objects.filter(pk__in=[r["example_id"] for r in rows]).values_list("pk", "text")
    )
    return [{**r, "text": texts.get(r["example_id"], "")} for r in rows]


def refusal_counts(*, days: int = 7) -> list[dict[str, Any]]:
    """Asks refused in the last `days` days (not stored as questions: counted per student in
    UsageCount), by reason: [{"reason", "count", "students"}], most first. The missed page shows them."""
    since = timezone.localdate() - dt.timedelta(days=days - 1)
    rows = (
        UsageCount.objects.filter(kind__startswith="refused:", day__gte=since)
        .values("kind")
        .annotate(total=Sum("count"), students=Count("user", distinct=True))
        .order_by("-total")
    )
    return [
        {"reason": r["kind"].split(":", 1)[1], "count": r["total"], "students": r["students"]}
        for r in rows
    ]


# -- searching the bank ------------------------------------------------------------------------------

SEARCH_MAX_TERMS = 8
# Chinese has no spaces, and a teacher's short query is rarely the problem's exact phrasing: 鸡兔 should
# find 鸡和兔子. A run of Chinese characters in the query matches when its characters occur in order with
# at most this many other characters between two neighbours (鸡.{0,3}兔). Bounded gaps keep the match
# local: unbounded ones (every character anywhere, in order) let two common characters match most long
# problems. tests/test_site_pages.py has the table of what it finds and what it leaves out.
SEARCH_MAX_GAP = 3
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def search_parts(term: str) -> list[tuple[str, str]]:
    """One whitespace-separated query term cut into ("han", run of Chinese characters) and ("word",
    anything else: English words, numbers, symbols), e.g. "x的平方" -> [("word", "x"), ("han", "的平方")]."""
    parts: list[tuple[str, str]] = []
    at = 0
    for match in _HAN_RUN.finditer(term):
        if match.start() > at:
            parts.append(("word", term[at : match.start()]))
        parts.append(("han", match.group()))
        at = match.end()
    if at < len(term):
        parts.append(("word", term[at:]))
    return parts


def han_pattern(run: str) -> str:
    """The regular expression for a run of Chinese characters: in order, small gaps, across line breaks.
    `(?s)` is DOTALL in Python (SQLite's REGEXP) and the default newline handling in PostgreSQL's AREs."""
    return "(?s)" + f".{{0,{SEARCH_MAX_GAP}}}".join(re.escape(c) for c in run)


def _text_matches(term: str) -> Q:
    condition = Q()
    for kind, part in search_parts(term):
        if kind == "han" and len(part) > 1:
            condition &= Q(text__regex=han_pattern(part))
        else:
            condition &= Q(text__icontains=part)  # English: case-insensitive, as typed
    return condition


def search_problems(problems: QuerySet[Problem], query: str) -> QuerySet[Problem]:
    """Problems matching every whitespace-separated term of `query` (at most 8) in their text (Chinese
    runs with small gaps, see SEARCH_MAX_GAP; anything else as a case-insensitive substring), their
    topic, or exactly their reference answer. Annotated with `search_rank`: how many terms matched only
    loosely (0 = every term appears as typed), so callers can order the best matches first. Plain
    LIKE and regular-expression lookups: the same on SQLite and PostgreSQL, no index to maintain."""
    terms = query.split()[:SEARCH_MAX_TERMS]
    if not terms:
        return problems
    loose = []
    for term in terms:
        problems = problems.filter(
            _text_matches(term) | Q(topic__icontains=term) | Q(reference_answer=term)
        )
        loose.append(Case(When(text__icontains=term, then=Value(0)), default=Value(1)))
    rank = loose[0]
    for more in loose[1:]:
        rank = rank + more
    return problems.annotate(search_rank=rank)


# -- aliases and blocks ------------------------------------------------------------------------------


@transaction.atomic
def block_match(*, text: str, problem: Problem, user=None) -> MatchBlock:
    key = question_key(text)
    block, _ = MatchBlock.objects.get_or_create(
        key=key, problem=problem, defaults={"text": text, "created_by": user}
    )
    ProblemAlias.objects.filter(key=key, problem=problem).delete()
    problem_id = str(problem.pk)
    bankcache.record(bankcache.Kind.BLOCK, problem_id=problem.pk, text=text)
    transaction.on_commit(lambda: runtime.correct_cache("add_block", text, problem_id))
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
    bankcache.record_many(
        [
            *((bankcache.Kind.UNBLOCK, problem.pk, old) for old in blocked),
            (bankcache.Kind.ALIAS, problem.pk, alias_text),
        ]
    )

    def correct() -> None:
        for old in blocked:
            runtime.remove_block(old, problem_id)
        runtime.correct_cache("add_alias", alias_text, problem_id)

    transaction.on_commit(correct)
    return alias


@transaction.atomic
def dismiss_alias(*, alias: ProblemAlias) -> None:
    text, accepted = alias.text, alias.status == ProblemAlias.Status.ACCEPTED
    problem_id = alias.problem_id
    alias.delete()
    if accepted:
        bankcache.record(bankcache.Kind.UNALIAS, problem_id=problem_id, text=text)
        transaction.on_commit(lambda: runtime.remove_alias(text))


def link_question(*, question: Question, problem: Problem, teacher) -> ProblemAlias:
    """ "Same as #N" on a student's question: an accepted alias of its wording."""
    return accept_alias(text=question.text, problem=problem, user=teacher, question=question)


# -- fixture bank -----------------------------------------------------------------------------------


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
    bankcache.record(bankcache.Kind.PUT, problem_id=problem.pk, text=problem.text)
    transaction.on_commit(lambda: runtime.put_problem(problem.pk, problem.text))
    return problem, True


def _agree(a: str, b: str) -> bool:
    from solver.answers import answers_equivalent

    return answers_equivalent(a, b)
