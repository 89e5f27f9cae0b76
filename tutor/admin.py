"""The Django admin for site administrators: the managed topic list, the bank, answers with their
provenance, students' questions, and the aliases and blocks that steer the answer cache; and, to look
at, precompute runs and their items, live generations, classes and model manifests.

Writes go through `tutor.services`, as the site's own pages do, so the answer cache and the trust rules
follow an admin's edit: a problem's new text reaches the cache, a status change is a review, a deleted
alias or block leaves the cache. Provenance (who or what produced an answer, with which model and
prompt, and why it has its status) is read-only, and the only status changes offered are a review in
the admin's own name (approve, reject, flag): nothing here marks an answer verified, approved without a
reviewer, or teacher-edited. Students' questions, runs, live generations and classes are read-only
records here (classes are managed on /classes, runs on /runs; a run is cancelled through the service).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce

from tutor import errors
from tutor.forms import NotEmptySolution
from tutor.models import (
    ApiToken,
    Assignment,
    Classroom,
    FollowUp,
    LiveGeneration,
    MatchBlock,
    Membership,
    ModelManifest,
    PrecomputeRun,
    Problem,
    ProblemAlias,
    Question,
    RunItem,
    Solution,
    Topic,
)
from tutor.services import bank, precompute, text, tokens


def short(text: str, limit: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- topics ------------------------------------------------------------------------------------------


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    list_display = ("name", "problem_count")
    search_fields = ("name",)
    actions = None  # a topic in use cannot be deleted; one at a time says which

    def get_queryset(self, request):
        used = (
            Problem.objects.filter(topic=OuterRef("name"))
            .values("topic")
            .annotate(n=Count("id"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(n_problems=Coalesce(Subquery(used, output_field=IntegerField()), 0))
        )

    @admin.display(description="problems", ordering="n_problems")
    def problem_count(self, topic: Topic) -> int:
        return topic.n_problems

    def save_model(self, request, obj: Topic, form, change: bool) -> None:
        if change:
            bank.rename_topic(topic=Topic.objects.get(pk=obj.pk), name=form.cleaned_data["name"])
        else:
            bank.register_topic(form.cleaned_data["name"])

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)

        class TopicForm(form):
            def clean_name(self) -> str:
                from tutor.models import normalize_topic

                name = normalize_topic(self.cleaned_data["name"])
                taken = Topic.objects.filter(name=name).exclude(pk=self.instance.pk)
                if not name:
                    raise forms.ValidationError("A topic needs a name.")
                if taken.exists():
                    raise forms.ValidationError(f"The topic “{name}” is already on the list.")
                return name

        return TopicForm

    def has_delete_permission(self, request, obj: Topic | None = None) -> bool:
        if obj is not None and Problem.objects.filter(topic=obj.name).exists():
            return False  # its problems need another topic first
        return super().has_delete_permission(request, obj)

    def delete_model(self, request, obj: Topic) -> None:
        bank.delete_topic(topic=obj)


# -- the bank ----------------------------------------------------------------------------------------


class SolutionInline(admin.TabularInline):
    model = Solution
    fields = ("status", "final", "source", "contradicts_reference", "model_name", "created")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # teachers add worked solutions on the problem's page


class ProblemAdminForm(forms.ModelForm):
    topic = forms.ChoiceField(required=False, help_text="from the managed list of topics")

    class Meta:
        model = Problem
        fields = ("text", "lang", "topic", "tags", "difficulty", "reference_answer")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = list(Topic.objects.values_list("name", flat=True))
        if self.instance.topic and self.instance.topic not in names:
            names.append(self.instance.topic)
        self.fields["topic"].choices = [("", "—"), *((n, n) for n in names)]

    def clean_text(self) -> str:
        try:
            return text.validate_question(self.cleaned_data["text"])
        except errors.BadQuestion as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(Problem)
class ProblemAdmin(admin.ModelAdmin):
    form = ProblemAdminForm
    list_display = (
        "id",
        "short_text",
        "topic",
        "reference_answer",
        "source",
        "origin",
        "lang",
        "difficulty",
        "created",
    )
    list_display_links = ("id", "short_text")
    list_filter = ("source", "origin", "lang", "topic", "difficulty")
    search_fields = ("text", "reference_answer", "topic", "fixture_id", "external_id")
    readonly_fields = (
        "origin",
        "source",
        "fixture_id",
        "external_id",
        "added_by",
        "guided_at",
        "created",
        "updated",
    )
    inlines = (SolutionInline,)
    list_per_page = 50

    @admin.display(description="text")
    def short_text(self, problem: Problem) -> str:
        return short(problem.text)

    def save_model(self, request, obj: Problem, form, change: bool) -> None:
        data = form.cleaned_data
        if change:
            changes = {f: data[f] for f in form.changed_data if f in bank.PROBLEM_FIELDS}
            if changes:
                bank.update_problem(problem=Problem.objects.get(pk=obj.pk), **changes)
            return
        created = bank.create_problem(
            text=data["text"],
            lang=data["lang"],
            topic=data.get("topic") or "",
            tags=data.get("tags") or [],
            difficulty=data.get("difficulty"),
            reference_answer=data.get("reference_answer") or "",
            added_by=request.user,
        )
        obj.pk = created.pk  # the admin's "saved" message and redirect use it

    def delete_model(self, request, obj: Problem) -> None:
        bank.delete_problem(problem=obj)

    def delete_queryset(self, request, queryset) -> None:
        for problem in queryset:
            bank.delete_problem(problem=problem)


class SolutionAdminForm(NotEmptySolution, forms.ModelForm):
    status = forms.ChoiceField(
        help_text="approving or rejecting here is a teacher's review; 'rejected' takes it out of "
        "service at once"
    )

    class Meta:
        model = Solution
        fields = ("status", "reasoning", "answer", "final")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        allowed = {Solution.Status.APPROVED, Solution.Status.REJECTED, Solution.Status.FLAGGED}
        allowed.add(self.instance.status)
        self.fields["status"].choices = [c for c in Solution.Status.choices if c[0] in allowed]


@admin.register(Solution)
class SolutionAdmin(admin.ModelAdmin):
    form = SolutionAdminForm
    list_display = (
        "id",
        "problem_link",
        "status",
        "trust_shown",
        "final",
        "contradicts_reference",
        "source",
        "model_name",
        "created",
    )
    list_filter = ("status", "source", "contradicts_reference", "model_name", "finish_reason")
    search_fields = ("final", "answer", "problem__text", "manifest_id")
    list_select_related = ("problem",)
    readonly_fields = (
        "problem",
        "source",
        "contradicts_reference",
        "model_name",
        "manifest_id",
        "prompt_version",
        "new_tokens",
        "generation_s",
        "finish_reason",
        "evidence",
        "created_by",
        "reviewed_by",
        "reviewed_at",
        "run_item",
        "pack_solution_id",
        "trust_shown",
        "created",
    )
    list_per_page = 50

    @admin.display(description="problem", ordering="problem_id")
    def problem_link(self, solution: Solution) -> str:
        return f"#{solution.problem_id} {short(solution.problem.text, 40)}"

    @admin.display(description="shown to students as")
    def trust_shown(self, solution: Solution) -> str:
        """What a student is told, and on whose word: a pack's "approved" is only a claim."""
        label = solution.trust
        if solution.approved_here and solution.approver_name:
            label += f" by {solution.approver_name}"
        pack = solution.from_pack
        if pack:
            claimed = pack.get("claimed_status")
            label += f" · from pack {pack.get('file', '?')}"
            label += f" (claimed {claimed})" if claimed else ""
        return label

    def has_add_permission(self, request) -> bool:
        return False  # answers come from the model, packs or a teacher's page, with provenance

    def save_model(self, request, obj: Solution, form, change: bool) -> None:
        solution = Solution.objects.get(pk=obj.pk)
        data = form.cleaned_data
        if {"reasoning", "answer", "final"} & set(form.changed_data):
            bank.edit_solution(
                solution=solution,
                editor=request.user,
                reasoning=data["reasoning"],
                answer=data["answer"],
                final=data["final"] or "",
            )
        elif "status" in form.changed_data:
            bank.review_solution(solution=solution, reviewer=request.user, status=data["status"])


# -- students' questions and the cache's corrections ---------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records of what happened: looked at, never edited here."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Question)
class QuestionAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "user",
        "short_text",
        "outcome",
        "bank_hit",
        "problem_id",
        "feedback",
        "latency_ms",
        "created",
    )
    list_filter = ("outcome", "bank_hit", "feedback", "refusal", "created")
    search_fields = ("text", "user__username", "error")
    list_select_related = ("user",)
    list_per_page = 50

    @admin.display(description="question")
    def short_text(self, question: Question) -> str:
        return short(question.text)


@admin.action(description="Accept: the wording is a hit on its problem")
def accept_aliases(modeladmin, request, queryset) -> None:
    for alias in queryset.select_related("problem"):
        bank.accept_alias(
            text=alias.text, problem=alias.problem, user=request.user, question=alias.question
        )
    modeladmin.message_user(request, f"{queryset.count()} aliases accepted.", messages.SUCCESS)


@admin.register(ProblemAlias)
class ProblemAliasAdmin(ReadOnlyAdmin):
    list_display = ("id", "short_text", "problem_id", "status", "created_by", "created")
    list_filter = ("status", "created")
    search_fields = ("text", "problem__text")
    list_select_related = ("created_by",)
    actions = (accept_aliases,)

    @admin.display(description="wording")
    def short_text(self, alias: ProblemAlias) -> str:
        return short(alias.text)

    def delete_model(self, request, obj: ProblemAlias) -> None:
        bank.dismiss_alias(alias=obj)

    def delete_queryset(self, request, queryset) -> None:
        for alias in queryset:
            bank.dismiss_alias(alias=alias)


@admin.register(MatchBlock)
class MatchBlockAdmin(ReadOnlyAdmin):
    list_display = ("id", "short_text", "problem_id", "created_by", "created")
    list_filter = ("created",)
    search_fields = ("text", "problem__text")
    list_select_related = ("created_by",)

    @admin.display(description="wording")
    def short_text(self, block: MatchBlock) -> str:
        return short(block.text)

    def delete_model(self, request, obj: MatchBlock) -> None:
        bank.lift_block(block=obj)

    def delete_queryset(self, request, queryset) -> None:
        for block in queryset:
            bank.lift_block(block=block)


# -- precompute runs, live generations, model manifests -------------------------------------------------


@admin.action(description="Cancel selected runs (workers stop within seconds)")
def cancel_runs(modeladmin, request, queryset) -> None:
    cancelled = 0
    for run in queryset:
        if run.is_active:
            precompute.cancel_run(run=run)
            cancelled += 1
    modeladmin.message_user(request, f"{cancelled} runs cancelled.", messages.SUCCESS)


@admin.register(PrecomputeRun)
class PrecomputeRunAdmin(ReadOnlyAdmin):
    """Runs are started and resumed on /runs (or `manage.py precompute`); here they are looked up."""

    list_display = (
        "id",
        "status",
        "total",
        "model_name",
        "samples",
        "new_tokens",
        "created_by",
        "created",
        "started",
        "finished",
    )
    list_filter = ("status", "model_name", "greedy", "created")
    search_fields = ("=id", "model_name", "manifest_id", "error")
    list_select_related = ("created_by",)
    actions = (cancel_runs,)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time, and never a run workers are on
        return actions

    def has_delete_permission(self, request, obj: PrecomputeRun | None = None) -> bool:
        if obj is not None and obj.is_active:
            return False  # cancel it first
        return super().has_delete_permission(request, obj)


@admin.register(RunItem)
class RunItemAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "run_id",
        "problem_id",
        "status",
        "outcome",
        "attempts",
        "new_tokens",
        "elapsed_s",
        "claimed_by",
        "finished_at",
    )
    list_filter = ("status", "outcome", "run")
    search_fields = ("=run__id", "=problem__id", "error", "claimed_by")
    list_per_page = 100

    def has_delete_permission(self, request, obj: RunItem | None = None) -> bool:
        # Deleting a problem deletes its items (the admin asks this for each); not while a worker is on one.
        if obj is not None and obj.status == RunItem.Status.RUNNING:
            return False
        return super().has_delete_permission(request, obj)


@admin.register(FollowUp)
class FollowUpAdmin(ReadOnlyAdmin):
    """Students' follow-up questions on an answer and the model's replies: kept apart from the bank."""

    list_display = ("id", "user", "short_text", "question", "outcome", "finish_reason", "created")
    list_filter = ("outcome", "created")
    search_fields = ("text", "user__username")
    list_select_related = ("user", "question")
    fields = (
        "question",
        "user",
        "text",
        "solution",
        "steps_shown",
        "outcome",
        "reply",
        "error",
        "model_name",
        "finish_reason",
        "new_tokens",
        "created",
        "finished",
    )
    readonly_fields = fields

    @admin.display(description="follow-up")
    def short_text(self, obj: FollowUp) -> str:
        return short(obj.text)


@admin.register(LiveGeneration)
class LiveGenerationAdmin(ReadOnlyAdmin):
    """Live answers, running and finished. The prompt and the generated text can be long: shown cut."""

    list_display = (
        "id",
        "status",
        "short_text",
        "tokens",
        "asker",
        "owner",
        "lease_until",
        "created",
        "finished",
    )
    list_filter = ("status", "cancel_requested", "created")
    search_fields = ("text", "key", "asker__username", "error")
    list_select_related = ("asker",)
    fields = (
        "key",
        "status",
        "text",
        "problem",
        "asker",
        "owner",
        "lease_until",
        "watched_at",
        "cancel_requested",
        "events",
        "tokens",
        "generated_start",
        "error",
        "created",
        "finished",
    )
    readonly_fields = fields
    list_per_page = 50

    @admin.display(description="question")
    def short_text(self, generation: LiveGeneration) -> str:
        return short(generation.text)

    @admin.display(description="generated (first 2,000 characters)")
    def generated_start(self, generation: LiveGeneration) -> str:
        return short(generation.generated, 2000)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a running one is being streamed; finished ones are records


@admin.register(ModelManifest)
class ModelManifestAdmin(ReadOnlyAdmin):
    list_display = ("manifest_id", "name", "created")
    search_fields = ("manifest_id", "name")
    fields = ("manifest_id", "name", "data", "created")
    readonly_fields = fields

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # stored answers name it


# -- classes (managed by their teachers on /classes) ------------------------------------------------------


class MembershipInline(admin.TabularInline):
    model = Membership
    fields = ("student", "joined")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class AssignmentInline(admin.TabularInline):
    model = Assignment
    fields = ("problem", "due", "assigned_by", "created")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Classroom)
class ClassroomAdmin(ReadOnlyAdmin):
    list_display = ("name", "teacher", "student_count", "homework_count", "created", "archived_at")
    list_filter = ("created", "archived_at")
    search_fields = ("name", "teacher__username", "memberships__student__username")
    list_select_related = ("teacher",)
    fields = ("name", "teacher", "created", "archived_at")
    readonly_fields = fields
    inlines = (MembershipInline, AssignmentInline)

    def get_queryset(self, request):
        return super().get_queryset(request).with_counts()

    @admin.display(description="students", ordering="students")
    def student_count(self, classroom: Classroom) -> int:
        return classroom.students

    @admin.display(description="homework", ordering="homework")
    def homework_count(self, classroom: Classroom) -> int:
        return classroom.homework

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a class is its teacher's: removed on /classes


# -- API tokens --------------------------------------------------------------------------------------


@admin.action(description="Revoke selected tokens", permissions=("revoke",))
def revoke_tokens(modeladmin, request, queryset) -> None:
    n = tokens.revoke_tokens(queryset)
    modeladmin.message_user(request, f"{n} tokens revoked.", messages.SUCCESS)


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    """Tokens are issued by `manage.py api_token` (shown once, only the hash is kept); here they are
    listed and revoked."""

    list_display = ("prefix", "user", "created", "last_used", "expires", "revoked")
    list_filter = ("revoked", "expires", "created")
    search_fields = ("prefix", "user__username")
    list_select_related = ("user",)
    fields = ("prefix", "user", "created", "last_used", "expires", "revoked")
    readonly_fields = fields
    actions = (revoke_tokens,)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # revoking keeps the record of who had which token
        return actions

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_revoke_permission(self, request) -> bool:
        return request.user.has_perm("tutor.change_apitoken")
