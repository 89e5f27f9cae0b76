"""The tutor's data: the problem bank, solutions with their provenance, students' questions, API tokens,
batch precompute runs (a run and its items: the work queue workers share) and model manifests.

Fat models: status rules (which solution a student is served) live here as QuerySet methods, so views,
services and the API agree. Writes go through `tutor.services`. The two calls into `solver` from here are
pure functions, imported when first needed, in `Solution.save`: `solver.answers.answers_equivalent` keeps
`contradicts_reference` true to the problem's reference answer on every write path (live, batch, packs,
teachers, the admin), so that the servable rule below needs no Python at query time; and
`solver.steps.split_steps` keeps a solution's `steps` (the hints students reveal) true to its text.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from django.conf import settings
from django.db import models
from django.db.models import Q


class ProblemQuerySet(models.QuerySet):
    def search(self, q: str) -> ProblemQuerySet:
        """Full-text-ish search: every whitespace-separated term must appear in the text, topic or tags.

        A substring match (not a tokenizing full-text index) because Chinese has no spaces between words;
        it works the same on SQLite and PostgreSQL and is fast enough for banks of tens of thousands."""
        qs = self
        for term in q.split()[:8]:
            qs = qs.filter(
                Q(text__icontains=term) | Q(topic__icontains=term) | Q(reference_answer=term)
            )
        return qs

    def with_status(self, status: str) -> ProblemQuerySet:
        """Problems that have at least one solution in `status`; "none" means no servable solution."""
        if status == "none":
            return self.exclude(pk__in=Solution.objects.servable().values("problem_id"))
        if status == Solution.Status.FLAGGED:
            # "Needs a teacher's look": an answer flagged for review, or a student's question about the
            # problem that a student flagged ("not my question", "ask my teacher").
            return self.filter(
                Q(solutions__status=status)
                | Q(pk__in=Question.objects.flagged().values("problem_id"))
            ).distinct()
        return self.filter(solutions__status=status).distinct()

    def in_bank(self) -> ProblemQuerySet:
        """The curated bank (teachers', bundled and imported problems), without students' questions."""
        return self.filter(source=Problem.Source.BANK)

    def from_students(self) -> ProblemQuerySet:
        return self.filter(source=Problem.Source.STUDENT)


def normalize_topic(name: str) -> str:
    """Topics compare case- and width-insensitively: "Geometry", "geometry " and "ＧＥＯＭＥＴＲＹ" are one."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", name or "")).strip().casefold()[:64]


class Topic(models.Model):
    """The managed list of topics a problem may have (stored normalized: lower case, single spaces)."""

    name = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        self.name = normalize_topic(self.name)
        super().save(*args, **kwargs)


class Problem(models.Model):
    class Lang(models.TextChoices):
        ZH = "zh", "中文"
        EN = "en", "English"

    class Origin(models.TextChoices):
        FIXTURE = "fixture", "bundled bank"
        TEACHER = "teacher", "added by a teacher"
        LIVE = "live", "a student's question"
        IMPORT = "import", "answer pack"

    text = models.TextField()
    lang = models.CharField(max_length=8, choices=Lang.choices, default=Lang.ZH)
    topic = models.CharField(max_length=64, blank=True, db_index=True)
    tags = models.JSONField(default=list, blank=True)
    difficulty = models.PositiveSmallIntegerField(null=True, blank=True)  # 1 (easy) .. 5 (hard)
    reference_answer = models.CharField(max_length=500, blank=True)

    class Source(models.TextChoices):
        BANK = "bank", "the curated bank"
        STUDENT = "student", "a student's question"

    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.TEACHER)
    # Where it lives: the curated bank, or the students' questions that a live generation answered
    # (cached and served like the bank, listed apart for teachers to promote, merge or delete).
    source = models.CharField(
        max_length=16, choices=Source.choices, default=Source.BANK, db_index=True
    )
    fixture_id = models.CharField(max_length=64, unique=True, null=True, blank=True)
    # When a worked solution towards the reference answer was last queued or started for this problem
    # (students were served the answer key): at most one an hour (`tutor.services.queue_guided_solution`).
    guided_at = models.DateTimeField(null=True, blank=True)
    # The id an answer pack gave this problem (when it was created by an import): matched on re-import.
    external_id = models.CharField(max_length=200, unique=True, null=True, blank=True)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = ProblemQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.text[:40]}"

    def save(self, *args, **kwargs) -> None:
        self.topic = normalize_topic(self.topic)
        super().save(*args, **kwargs)
        update_fields = kwargs.get("update_fields")
        if self.pk and (update_fields is None or "reference_answer" in update_fields):
            # The reference answer may have changed: recheck every answer of this problem against it.
            for solution in self.solutions.all():
                solution.problem = self
                before = solution.contradicts_reference
                if solution.check_reference() != before:
                    solution.save(update_fields=["contradicts_reference"])

    def best_solution(self) -> Solution | None:
        """The answer a student is served: approved on this site, then verified (and approvals an answer
        pack claimed), then unverified; the school's own before an imported one; newest first.

        The order of `Solution.objects.filter(problem=...).servable().best_first()`, in one raw statement:
        every cache hit asks this, and building that ORM query cost a third of a hit's time."""
        statuses = Solution.servable_statuses()
        placeholders = ", ".join(["%s"] * len(statuses))
        imported = "(source = %s AND reviewed_by_id IS NULL)"
        sql = (
            f"SELECT * FROM {Solution._meta.db_table} WHERE problem_id = %s "
            f"AND status IN ({placeholders}) AND contradicts_reference = %s "
            f"ORDER BY CASE WHEN status = %s AND NOT {imported} THEN 0 "
            f"WHEN status IN (%s, %s) THEN 1 ELSE 2 END, "
            f"CASE WHEN {imported} THEN 1 ELSE 0 END, created DESC, id DESC LIMIT 1"
        )
        imp = Solution.Source.IMPORT
        params = [self.pk, *statuses, False, "approved", imp, "approved", "verified", imp]
        found = list(Solution.objects.raw(sql, params))
        return found[0] if found else None

    @property
    def best_status(self) -> str | None:
        best = self.best_solution()
        return best.status if best else None

    # A problem whose answers were rejected this many times is not generated for again until a teacher
    # has looked: students are told their teacher is checking it.
    HOLD_AFTER_REJECTIONS = 2

    def rejected_count(self) -> int:
        return self.solutions.filter(status=Solution.Status.REJECTED).count()

    def is_waiting_for_teacher(self) -> bool:
        """Answers were rejected HOLD_AFTER_REJECTIONS times and no servable one is left."""
        return self.rejected_count() >= self.HOLD_AFTER_REJECTIONS and self.best_solution() is None


class SolutionQuerySet(models.QuerySet):
    def servable(self) -> SolutionQuerySet:
        """What a student may be served: never rejected, failed or flagged, never a final answer that
        contradicts the problem's reference answer; unverified only while SUANJING_SERVE_UNVERIFIED is on.
        `Problem.best_solution` is the same rule in one raw statement."""
        return self.filter(status__in=Solution.servable_statuses(), contradicts_reference=False)

    def best_first(self) -> SolutionQuerySet:
        """Approved on this site first, then verified (and approvals only an answer pack claimed), then
        the rest; at each rank the school's own answers before imported ones; newest first. An answer
        pack can never outrank an answer a teacher here approved (issue 13, finding 5)."""
        imported = Q(source=Solution.Source.IMPORT, reviewed_by__isnull=True)
        rank = models.Case(
            models.When(Q(status=Solution.Status.APPROVED) & ~imported, then=0),
            models.When(status__in=Solution.RANKED_FIRST, then=1),
            default=2,
            output_field=models.IntegerField(),
        )
        from_pack = models.Case(
            models.When(imported, then=1), default=0, output_field=models.IntegerField()
        )
        return self.annotate(rank=rank, pack_rank=from_pack).order_by(
            "rank", "pack_rank", "-created", "-id"
        )

    def best_status_by_problem(self, problem_ids: list[int]) -> dict[int, str]:
        """problem id -> status of its best servable solution, in one query."""
        best: dict[int, str] = {}
        for pid, status in (
            self.filter(problem_id__in=problem_ids)
            .servable()
            .best_first()
            .values_list("problem_id", "status")
        ):
            best.setdefault(pid, status)
        return best


class Solution(models.Model):
    class Status(models.TextChoices):
        UNVERIFIED = "unverified", "not yet checked"
        VERIFIED = "verified", "matches the reference answer"
        APPROVED = "approved", "approved by a teacher"
        REJECTED = "rejected", "rejected by a teacher"
        FAILED = "failed", "no final answer"
        FLAGGED = "flagged", "needs a teacher's look"

    # Ranks of the statuses an imported answer may replace (issue 5: approved > verified > unverified).
    RANK = {"approved": 3, "verified": 2, "unverified": 1, "failed": 0}
    # The order answers are served in: these first, in this order, then the rest (newest first).
    RANKED_FIRST = ("approved", "verified")

    class Source(models.TextChoices):
        TEACHER = "teacher", "teacher"
        BATCH = "batch", "batch precompute"
        LIVE = "live", "live generation"
        IMPORT = "import", "answer pack"
        GUIDED = "guided", "worked towards the reference answer"

    problem = models.ForeignKey(Problem, on_delete=models.CASCADE, related_name="solutions")
    reasoning = models.TextField(blank=True)
    answer = models.TextField(blank=True)
    final = models.CharField(max_length=500, null=True, blank=True)  # noqa: DJ001 - None: no final answer
    status = models.CharField(max_length=16, choices=Status.choices, db_index=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    model_name = models.CharField(max_length=100, blank=True)
    manifest_id = models.CharField(max_length=64, blank=True)
    prompt_version = models.CharField(max_length=64, blank=True)
    new_tokens = models.PositiveIntegerField(null=True, blank=True)
    generation_s = models.FloatField(null=True, blank=True)
    finish_reason = models.CharField(max_length=16, blank=True)
    # Why the status is what it is: {"reference": ..., "agreement": ..., "samples": [...]}.
    evidence = models.JSONField(default=dict, blank=True)
    # Its final answer is not the problem's reference answer (kept by `save`): evidence for a teacher,
    # never an answer for a student, whatever its status.
    contradicts_reference = models.BooleanField(default=False, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    # The precompute run item that produced it; one-to-one, so a resumed or doubly-claimed item can never
    # store its answer twice (the database refuses the second row).
    run_item = models.OneToOneField(
        "RunItem", null=True, blank=True, on_delete=models.SET_NULL, related_name="solution"
    )
    # The solution's id in the answer pack it was imported from: importing the same pack twice is a no-op.
    pack_solution_id = models.CharField(max_length=200, blank=True, db_index=True)
    # The solution split into steps when it is written (`save`, `fill_steps`; issue 12):
    # [{"kind": "reasoning" | "answer", "text": ...}], the reasoning's steps first. [] before it was split.
    steps = models.JSONField(default=list, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    objects = SolutionQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"solution {self.pk} of problem {self.problem_id} ({self.status})"

    def save(self, *args, **kwargs) -> None:
        self.check_reference()
        update_fields = kwargs.get("update_fields")
        if update_fields is None or {"reasoning", "answer"} & set(update_fields):
            self.fill_steps()
            if update_fields is not None and "steps" not in update_fields:
                update_fields = [*update_fields, "steps"]
        if update_fields is not None and "contradicts_reference" not in update_fields:
            update_fields = [*update_fields, "contradicts_reference"]
        if update_fields is not None:
            kwargs["update_fields"] = update_fields
        super().save(*args, **kwargs)

    def fill_steps(self) -> list[dict]:
        """Split the reasoning and the answer into `steps` (`solver.steps`, a pure function) and return
        them. `save` calls it on every write of either text; `bulk_create` callers call it themselves."""
        from solver.steps import split_steps

        self.steps = [
            {"kind": kind, "text": step}
            for kind, text in (("reasoning", self.reasoning), ("answer", self.answer))
            for step in split_steps(text or "")
        ]
        return self.steps

    def walkthrough(self) -> list[str]:
        """The steps a student reveals one by one: the answer section's when it has at least two (the
        tidy write-up), else the reasoning's and the answer's. Rows stored before steps existed are split
        here once and saved."""
        if not self.steps and (self.reasoning or self.answer):
            self.fill_steps()
            if self.pk:
                Solution.objects.filter(pk=self.pk).update(steps=self.steps)
        answer = [s["text"] for s in self.steps if s.get("kind") == "answer"]
        if len(answer) >= 2:
            return answer
        return [s["text"] for s in self.steps]

    def check_reference(self) -> bool:
        """Set (and return) `contradicts_reference` from the final answer and the problem's reference."""
        reference = (self.problem.reference_answer or "").strip() if self.problem_id else ""
        final = (self.final or "").strip()
        if not reference or not final:
            self.contradicts_reference = False  # nothing to compare: the status decides
        else:
            from solver.answers import answers_equivalent

            self.contradicts_reference = not answers_equivalent(final, reference)
        return self.contradicts_reference

    @staticmethod
    def servable_statuses() -> list[str]:
        """What students may be served, best first (unverified only while SUANJING_SERVE_UNVERIFIED)."""
        statuses = list(Solution.RANKED_FIRST)
        if settings.SUANJING_SERVE_UNVERIFIED:
            statuses.append(Solution.Status.UNVERIFIED)
        return statuses

    @property
    def is_servable(self) -> bool:
        return Solution.objects.servable().filter(pk=self.pk).exists()

    @property
    def is_teacher_touched(self) -> bool:
        """Written, edited, approved or rejected by a teacher: an import never overwrites it."""
        return (
            self.source == self.Source.TEACHER
            or self.reviewed_by_id is not None
            or self.status in (self.Status.APPROVED, self.Status.REJECTED)
            or bool(self.evidence.get("edited_by_teacher"))
        )

    @property
    def differs_from_reference(self) -> bool:
        """The model answered, but not what the problem's reference answer says (teachers see it)."""
        return self.contradicts_reference or self.evidence.get("matches_reference") is False

    @property
    def approved_here(self) -> bool:
        """Approved by a teacher of this site (written, edited or reviewed here), not a status an answer
        pack claimed: imports never store "approved" (services.packs), and older imported rows that did
        count only once a teacher here reviewed them."""
        if self.status != self.Status.APPROVED:
            return False
        return self.reviewed_by_id is not None or self.source != self.Source.IMPORT

    @property
    def approver(self):
        """The teacher of this site who approved it (reviewer, else author), or None (the bundled bank)."""
        if not self.approved_here:
            return None
        return self.reviewed_by or self.created_by

    @property
    def approver_name(self) -> str:
        user = self.approver
        if user is None:
            return ""
        return user.get_full_name() or user.get_username()

    @property
    def from_pack(self) -> dict | None:
        """Where an imported answer came from: {"file", "site", "imported"} (services.packs), or None."""
        pack = (self.evidence or {}).get("pack") if self.source == self.Source.IMPORT else None
        return pack if isinstance(pack, dict) else None

    @property
    def trust(self) -> str:
        """How a student sees it: "approved" (a teacher of this site), "verified" (matches the reference
        answer) or "unverified" (nobody has checked it): each has its own label and colour."""
        if self.approved_here:
            return "approved"
        if self.status == self.Status.VERIFIED:
            return "verified"
        return "unverified"


class QuestionQuerySet(models.QuerySet):
    def missed(self) -> QuestionQuerySet:
        """Questions the bank did not hold when asked, or that a student flagged for a teacher."""
        return self.filter(Q(bank_hit=False) | ~Q(feedback=Question.Feedback.NONE))

    def flagged(self) -> QuestionQuerySet:
        """A student said "this does not answer my question" or asked for their teacher."""
        return self.exclude(feedback=Question.Feedback.NONE)

    def recent_failure(self, key: str, *, hours: int = 24) -> Question | None:
        """The latest failed try at this question (same key) within `hours`, if the model failed it
        (not a refusal: busy or no model say nothing about the question)."""
        import datetime as dt

        from django.utils import timezone

        since = timezone.now() - dt.timedelta(hours=hours)
        return (
            self.filter(key=key, outcome=Question.Outcome.FAILED, created__gte=since)
            .order_by("-created", "-id")
            .first()
        )


class Question(models.Model):
    class Outcome(models.TextChoices):
        HIT = "hit", "answered from the bank"
        GENERATING = "generating", "generating"
        GENERATED = "generated", "answered by live generation"
        FAILED = "failed", "no answer"
        REFUSED = "refused", "refused"
        SUGGESTED = "suggested", "is this your question?"
        HELD = "held", "waiting for a teacher"

    class Feedback(models.TextChoices):
        NONE = "", "none"
        NOT_MY_QUESTION = "not_my_question", "does not answer my question"
        ASK_TEACHER = "ask_teacher", "asked for a teacher"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="questions"
    )
    text = models.TextField()
    key = models.CharField(
        max_length=64, db_index=True
    )  # sha256 of the normalized text: near-duplicates
    created = models.DateTimeField(auto_now_add=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, db_index=True)
    refusal = models.CharField(max_length=32, blank=True)  # "busy", "no_model", ...
    error = models.CharField(max_length=300, blank=True)
    bank_hit = models.BooleanField(default=False)  # the cache matched a banked problem when asked
    problem = models.ForeignKey(
        Problem, null=True, blank=True, on_delete=models.SET_NULL, related_name="questions"
    )
    solution = models.ForeignKey(
        Solution, null=True, blank=True, on_delete=models.SET_NULL, related_name="questions"
    )
    match_score = models.FloatField(null=True, blank=True)
    match_reasons = models.JSONField(default=list, blank=True)  # for teachers: ids, similarities
    explanation = models.TextField(blank=True)  # for the student: one plain sentence, no ids
    # "Is this your question?": [{"problem_id": N, "score": p}, ...] best first, while outcome is suggested
    suggestions = models.JSONField(default=list, blank=True)
    # The earlier failed try at the same question that this ask was shown instead of a rerun.
    earlier = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    latency_ms = models.FloatField(null=True, blank=True)
    feedback = models.CharField(max_length=32, choices=Feedback.choices, blank=True, default="")
    feedback_at = models.DateTimeField(null=True, blank=True)
    # the live generation this question waits for (or waited for); any web worker streams it from here
    live = models.ForeignKey(
        "LiveGeneration", null=True, blank=True, on_delete=models.SET_NULL, related_name="questions"
    )

    objects = QuestionQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"question {self.pk} ({self.outcome})"

    @property
    def api_status(self) -> str:
        """The API's word for the outcome: hit | suggest | generating | answered | failed | refused |
        waiting_for_teacher."""
        return {
            self.Outcome.GENERATED: "answered",
            self.Outcome.SUGGESTED: "suggest",
            self.Outcome.HELD: "waiting_for_teacher",
        }.get(self.outcome, self.outcome)

    @property
    def is_flagged(self) -> bool:
        return self.feedback != self.Feedback.NONE

    def served_solution(self) -> Solution | None:
        """What this question shows now: its solution unless it has since been taken out of service
        (rejected, or found to contradict the reference answer), in which case the problem's best
        remaining one (or nothing). The rule is `Solution.objects.servable()`'s."""
        if self.solution_id and Solution.objects.servable().filter(pk=self.solution_id).exists():
            return self.solution
        if self.outcome in (self.Outcome.HIT, self.Outcome.GENERATED) and self.problem_id:
            return self.problem.best_solution()
        return None

    def answer_key(self) -> str | None:
        """The problem's reference answer, served as the answer key when no worked answer is servable."""
        if (
            self.outcome in (self.Outcome.HIT, self.Outcome.GENERATED)
            and self.problem_id
            and self.problem.reference_answer
            and self.served_solution() is None
        ):
            return self.problem.reference_answer
        return None

    def suggested_problems(self) -> list[tuple[Problem, float]]:
        """The problems offered by "Is this your question?", best first (deleted ones left out)."""
        ids = [s["problem_id"] for s in self.suggestions]
        found = Problem.objects.in_bulk(ids)
        return [
            (found[s["problem_id"]], s["score"])
            for s in self.suggestions
            if s["problem_id"] in found
        ]

    def to_dict(self) -> dict:
        """The API's view of a question (POST /api/ask, GET /api/questions/<id>, the stream's "done")."""
        data: dict = {
            "id": self.pk,
            "status": self.api_status,
            "question": self.text,
            "created": self.created.isoformat(),
        }
        served = self.served_solution()
        key = self.answer_key() if served is None else None
        if served is not None:
            data["answer"] = {
                "text": served.answer,
                "final": served.final,
                "reasoning": served.reasoning,
                "solution_id": served.pk,
                "status": served.status,
            }
        elif key is not None:
            data["answer"] = {
                "text": key,
                "final": key,
                "reasoning": "",
                "solution_id": None,
                "status": "answer_key",
            }
        if self.explanation:
            data["explanation"] = self.explanation
        if self.outcome == self.Outcome.SUGGESTED:
            data["suggestions"] = [
                {"problem_id": p.pk, "text": p.text, "score": score}
                for p, score in self.suggested_problems()
            ]
            data["choose"] = f"/api/questions/{self.pk}/choose"
        if self.outcome == self.Outcome.HIT and self.problem_id:
            data["match"] = {
                "problem_id": self.problem_id,
                "score": self.match_score,
                "reasons": self.match_reasons,
            }
        elif self.problem_id:
            data["problem_id"] = self.problem_id
        if self.outcome == self.Outcome.GENERATING:
            data["stream"] = f"/api/questions/{self.pk}/stream"
        if self.outcome in (self.Outcome.FAILED, self.Outcome.REFUSED):
            data["error"] = self.error
            if self.refusal:
                data["refusal"] = self.refusal
        if self.feedback:
            data["feedback"] = self.feedback
        if self.earlier_id:
            data["earlier"] = self.earlier_id
        return data


class ProblemAlias(models.Model):
    """A wording a person said is problem N: a student's "yes, this is my question" (pending until a
    teacher accepts it) or a teacher's "same as #N" (accepted). Accepted aliases are exact cache hits."""

    class Status(models.TextChoices):
        PENDING = "pending", "waiting for a teacher"
        ACCEPTED = "accepted", "accepted"

    text = models.TextField()
    key = models.CharField(max_length=64, db_index=True)  # the wording's question key
    problem = models.ForeignKey(Problem, on_delete=models.CASCADE, related_name="aliases")
    status = models.CharField(max_length=16, choices=Status.choices, db_index=True)
    question = models.ForeignKey(
        Question, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["key", "problem"], name="one_alias_per_wording_and_problem"
            )
        ]

    def __str__(self) -> str:
        return f"alias of #{self.problem_id} ({self.status})"


class MatchBlock(models.Model):
    """A wording that must never be matched with problem N again (a student said "not my question")."""

    text = models.TextField()
    key = models.CharField(max_length=64, db_index=True)
    problem = models.ForeignKey(Problem, on_delete=models.CASCADE, related_name="blocks")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["key", "problem"], name="one_block_per_wording_and_problem"
            )
        ]

    def __str__(self) -> str:
        return f"block of #{self.problem_id}"


class ApiToken(models.Model):
    """A bearer token for the JSON API; only its SHA-256 is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8)  # shown in the admin to tell tokens apart
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    # None: never expires (new tokens get SUANJING_TOKEN_DAYS)
    expires = models.DateTimeField(null=True, blank=True)
    # set in the admin: from then on the token is refused
    revoked = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"token {self.prefix}… of {self.user}"

    @staticmethod
    def digest_of(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class ModelManifest(models.Model):
    """What produced a stored answer: a model manifest (`solver.modelstore.Manifest.to_dict()`), kept so
    that answers imported from another school's model stay traceable."""

    manifest_id = models.CharField(max_length=200, unique=True)
    name = models.CharField(max_length=100, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"manifest {self.manifest_id} ({self.name})"


class PrecomputeRun(models.Model):
    """A batch precompute run: a selection of problems answered by background workers."""

    class Status(models.TextChoices):
        QUEUED = "queued", "waiting for a worker"
        RUNNING = "running", "running"
        CANCELLING = "cancelling", "cancelling"
        CANCELLED = "cancelled", "cancelled"
        DONE = "done", "finished"

    ACTIVE = (Status.QUEUED, Status.RUNNING, Status.CANCELLING)

    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    selection = models.JSONField(
        default=dict, blank=True
    )  # how the problems were chosen, for the page
    samples = models.PositiveSmallIntegerField(default=1)
    max_new_tokens = models.PositiveIntegerField(default=2048)
    greedy = models.BooleanField(default=False)
    model_name = models.CharField(
        max_length=100, blank=True
    )  # empty: the workers' configured model
    manifest_id = models.CharField(max_length=200, blank=True)
    prompt_version = models.CharField(max_length=64, blank=True)
    total = models.PositiveIntegerField(default=0)
    new_tokens = models.BigIntegerField(default=0)  # tokens of stored items
    cpu_s = models.FloatField(
        default=0.0
    )  # process CPU time of the workers while they ran this run
    busy_s = models.FloatField(default=0.0)  # wall time workers spent on this run (summed)
    # Tasks enqueued and not yet started: a worker enqueues a follow-up only when none is waiting.
    waiting_tasks = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    def counts(self) -> dict[str, int]:
        """Items by state, and stored answers by status (verified / unverified / failed)."""
        by_item = dict.fromkeys(RunItem.Status.values, 0)
        for status, n in self.items.values_list("status").annotate(n=models.Count("id")):
            by_item[status] = n
        by_outcome = {"verified": 0, "unverified": 0, "failed": 0}
        for outcome, n in (
            self.items.exclude(outcome="").values_list("outcome").annotate(n=models.Count("id"))
        ):
            by_outcome[outcome] = n
        return {**by_item, **by_outcome}


class RunItem(models.Model):
    """One problem of a run: the unit workers claim, with its lease and attempts."""

    class Status(models.TextChoices):
        PENDING = "pending", "waiting"
        RUNNING = "running", "being answered"
        DONE = "done", "done"
        SET_ASIDE = "set_aside", "set aside after repeated failures"
        CANCELLED = "cancelled", "cancelled"

    run = models.ForeignKey(PrecomputeRun, on_delete=models.CASCADE, related_name="items")
    problem = models.ForeignKey(Problem, on_delete=models.CASCADE, related_name="run_items")
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_by = models.CharField(max_length=100, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, blank=True)  # verified | unverified | failed
    new_tokens = models.PositiveIntegerField(default=0)
    elapsed_s = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "problem"], name="one_item_per_problem_per_run")
        ]
        indexes = [models.Index(fields=["run", "status"])]

    def __str__(self) -> str:
        return f"item {self.pk} of run {self.run_id} ({self.status})"


class LiveGeneration(models.Model):
    """A live generation's shared state, so that any web worker can stream it and any can take it over.

    One row per generation; the partial unique constraint keeps one *running* generation per key
    ("problem:N" or "text:<question key>") across every process (single-flight). The process that runs
    it holds a lease (`owner`, `lease_until`) and appends the stream as `LiveEvent` rows; `generated`
    is the raw model text so far, from which a taker continues when the owner died."""

    class Status(models.TextChoices):
        RUNNING = "running", "running"
        DONE = "done", "done"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    key = models.CharField(max_length=100)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True
    )
    text = models.TextField()
    problem = models.ForeignKey(
        Problem, null=True, blank=True, on_delete=models.SET_NULL, related_name="live_generations"
    )
    asker = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    seed = models.BigIntegerField(null=True, blank=True)
    # a final answer a teacher rejected ("" when it had none), or None: not a retry after a rejection
    rejected = models.TextField(null=True, blank=True)  # noqa: DJ001 - None and "" mean different things
    prompt = models.TextField(blank=True)
    owner = models.CharField(max_length=120, blank=True)  # host:pid:nonce of the process running it
    lease_until = models.DateTimeField(null=True, blank=True, db_index=True)
    watched_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    events = models.PositiveIntegerField(default=0)  # the last event's seq
    generated = models.TextField(blank=True)
    # Pieces streamed so far (about one token each): what a taker still has of SUANJING_MAX_NEW_TOKENS.
    tokens = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["key"],
                condition=models.Q(status="running"),
                name="one_running_generation_per_key",
            )
        ]

    def __str__(self) -> str:
        return f"live {self.pk} {self.key} ({self.status})"


class LiveEvent(models.Model):
    """One piece of a live generation's stream: {"type": kind, "text": text}, numbered from 1."""

    generation = models.ForeignKey(
        LiveGeneration, on_delete=models.CASCADE, related_name="event_rows"
    )
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=16)
    text = models.TextField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["generation", "seq"], name="one_event_per_seq")
        ]
        ordering = ["generation", "seq"]

    def __str__(self) -> str:
        return f"event {self.seq} of live {self.generation_id}"


class BankChange(models.Model):
    """The change feed every process's answer cache follows: appended in the transaction that changes
    the bank (a problem put or dropped, an alias or a block added or lifted), read by id."""

    class Kind(models.TextChoices):
        PUT = "put", "put"
        DROP = "drop", "drop"
        ALIAS = "alias", "alias"
        UNALIAS = "unalias", "unalias"
        BLOCK = "block", "block"
        UNBLOCK = "unblock", "unblock"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    problem_id = models.BigIntegerField()  # not a foreign key: a drop outlives its problem
    text = models.TextField(blank=True)  # the problem's text (put) or the wording (alias/block)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.kind} {self.problem_id}"


class UsageCount(models.Model):
    """Per-student counters for fair use (asks, live generations, refusals), one row per user, day and
    kind: refusals are counted here instead of being stored as questions."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_counts"
    )
    day = models.DateField()
    kind = models.CharField(max_length=32)  # "ask", "live", "refused:busy", "refused:rate", ...
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "day", "kind"], name="one_count_per_user_day_kind"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.count} on {self.day}"


# -- Classes and homework (issue 12) ---------------------------------------------------------------


class ClassroomQuerySet(models.QuerySet):
    def taught_by(self, user) -> ClassroomQuerySet:
        return self.filter(teacher=user)

    def joined_by(self, user) -> ClassroomQuerySet:
        return self.filter(memberships__student=user)

    def with_counts(self) -> ClassroomQuerySet:
        """Each class with `students` and `homework` (assigned problems) counted."""
        return self.annotate(
            students=models.Count("memberships", distinct=True),
            homework=models.Count("assignments", distinct=True),
        )


class Classroom(models.Model):
    """A teacher's class: students join with its code (or are imported by the teacher from a CSV)."""

    name = models.CharField(max_length=100)
    teacher = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="classes_taught"
    )
    # What the teacher writes on the board: upper-case letters and digits without look-alikes
    # (tutor.services.classes.new_join_code); a new one replaces it when it leaked.
    join_code = models.CharField(max_length=16, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    # An archived class (the school year ended) keeps its records but leaves the teacher's list
    # and no longer takes new students.
    archived_at = models.DateTimeField(null=True, blank=True)

    objects = ClassroomQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A student in a class."""

    classroom = models.ForeignKey(Classroom, on_delete=models.CASCADE, related_name="memberships")
    student = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    joined = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["student__username", "id"]
        constraints = [
            models.UniqueConstraint(fields=["classroom", "student"], name="one_membership")
        ]

    def __str__(self) -> str:
        return f"{self.student_id} in {self.classroom_id}"


class Assignment(models.Model):
    """A bank problem given to a class as homework, with an optional due date."""

    classroom = models.ForeignKey(Classroom, on_delete=models.CASCADE, related_name="assignments")
    problem = models.ForeignKey(Problem, on_delete=models.CASCADE, related_name="assignments")
    due = models.DateField(null=True, blank=True)
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        # Soonest due first; homework without a due date after it, oldest first.
        ordering = [models.F("due").asc(nulls_last=True), "created", "id"]
        constraints = [
            models.UniqueConstraint(fields=["classroom", "problem"], name="one_assignment")
        ]

    def __str__(self) -> str:
        return f"problem {self.problem_id} for class {self.classroom_id}"


class StepProgress(models.Model):
    """How far one student has walked through one problem's solution, and what they checked: the
    question page's hint → next step → whole solution, and "check my answer" (tutor.services.steps)."""

    student = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="step_progress"
    )
    problem = models.ForeignKey(Problem, on_delete=models.CASCADE, related_name="step_progress")
    # The solution whose steps were shown; a new best solution starts the walk again.
    solution = models.ForeignKey(
        Solution, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    shown = models.PositiveSmallIntegerField(default=0)  # steps revealed so far
    most_shown = models.PositiveSmallIntegerField(default=0)  # the most steps ever revealed
    whole = models.BooleanField(default=False)  # asked for the whole solution
    checks = models.PositiveSmallIntegerField(default=0)  # "check my answer" attempts
    checked_right = models.BooleanField(default=False)  # one of them was right
    last_check = models.CharField(max_length=200, blank=True)
    last_right = models.BooleanField(null=True, blank=True)  # None: nothing checked yet
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["student", "problem"], name="one_progress")]

    def __str__(self) -> str:
        return f"{self.student_id} on {self.problem_id}: {self.shown} steps"

    @property
    def needed_hints(self) -> bool:
        return self.most_shown > 0 or self.whole


class FollowUp(models.Model):
    """A student's question about an answer they were shown ("why is step 2 true?"), answered by a live
    generation with the problem and that answer in the prompt (tutor.services.asking.ask_follow_up).

    Not a bank problem: it never becomes a Problem, a Solution or a Question, so it never enters the
    bank, the answer cache or the teachers' missed list; it is kept under the question it was asked on
    (and so under that question's problem in the student's history). `outcome` moves from generating to
    answered or failed, as a live question's does, and the model's reply is stored here, as written."""

    class Outcome(models.TextChoices):
        GENERATING = "generating", "being written"
        ANSWERED = "answered", "answered"
        FAILED = "failed", "no reply"

    question = models.ForeignKey(Question, on_delete=models.CASCADE, related_name="follow_ups")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="follow_ups"
    )
    text = models.TextField()
    # The answer it asks about (None: the answer key alone); how much of it the student had been shown
    # when they asked (0: all of it; n: the first n steps of a step-by-step answer).
    solution = models.ForeignKey(
        Solution, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    steps_shown = models.PositiveSmallIntegerField(default=0)
    outcome = models.CharField(
        max_length=16, choices=Outcome.choices, default=Outcome.GENERATING, db_index=True
    )
    reasoning = models.TextField(blank=True)
    reply = models.TextField(blank=True)
    error = models.CharField(max_length=300, blank=True)
    live = models.ForeignKey(
        LiveGeneration, null=True, blank=True, on_delete=models.SET_NULL, related_name="follow_ups"
    )
    model_name = models.CharField(max_length=100, blank=True)
    finish_reason = models.CharField(max_length=16, blank=True)
    new_tokens = models.PositiveIntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return f"follow-up {self.pk} on question {self.question_id} ({self.outcome})"

    def to_dict(self) -> dict:
        """The API's view of a follow-up (POST /api/questions/<id>/followup, GET /api/followups/<id>,
        the stream's "done")."""
        data: dict = {
            "id": self.pk,
            "question_id": self.question_id,
            "status": self.outcome,
            "question": self.text,
            "created": self.created.isoformat(),
        }
        if self.outcome == self.Outcome.ANSWERED:
            data["reply"] = {
                "text": self.reply,
                "reasoning": self.reasoning,
                "cut_short": self.finish_reason == "length",
            }
        elif self.outcome == self.Outcome.GENERATING:
            data["stream"] = f"/api/followups/{self.pk}/stream"
        else:
            data["error"] = self.error
        return data
