"""Pages for teachers: the problem bank, a problem and its answers, adding and editing problems,
reviewing and correcting answers (one at a time, or ticked on the review list and approved or rejected
together), missed questions, students' questions, aliases.
Thin: permission -> form -> service -> response. Every page is a 403 for students
(`permissions.require_teacher` and the `*_for` fetchers, which also give 404 for what does not exist).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from tutor import errors, permissions
from tutor.forms import (
    BankPageFilterForm,
    BulkReviewForm,
    ProblemForm,
    ReviewFilterForm,
    SolutionEditForm,
)
from tutor.models import Problem, ProblemAlias, Question, Solution, Topic
from tutor.services import bank as bank_service
from tutor.services import live, precompute, text

PAGE_SIZE = 50
# A review's notice in the site's two languages.
STATUS_WORDS = {
    Solution.Status.APPROVED: "approved 已通过",
    Solution.Status.REJECTED: "rejected 已驳回",
    Solution.Status.FLAGGED: "flagged for a teacher's look 已标记",
}
# A status as the review list and the problem page label it.
STATUS_LABELS = {
    Solution.Status.APPROVED: "approved 已通过",
    Solution.Status.VERIFIED: "verified 已核对",
    Solution.Status.UNVERIFIED: "not checked 未核对",
    Solution.Status.FLAGGED: "flagged 需要查看",
    Solution.Status.REJECTED: "rejected 已驳回",
    Solution.Status.FAILED: "failed 失败",
}
# A bulk review's message lists at most this many answers by number, then "and N more".
LIST_AT_MOST = 20


def seen_words(n: int) -> str:
    """ "seen by 3 students 已有3名学生看过" (a count, never names)."""
    if not n:
        return "not seen by any student yet 还没有学生看过"
    return f"seen by {n} student{'s' if n != 1 else ''} 已有{n}名学生看过"


def numbers(solutions, *, seen: dict[int, int] | None = None) -> str:
    """ "#3, #7 (seen by 2 students 已有2名学生看过), … and 5 more 等" for a notice."""
    parts = []
    for s in solutions[:LIST_AT_MOST]:
        n = (seen or {}).get(s.pk, 0)
        parts.append(f"#{s.pk} ({seen_words(n)})" if n else f"#{s.pk}")
    more = len(solutions) - LIST_AT_MOST
    return ", ".join(parts) + (f" and {more} more 等{more}个" if more > 0 else "")


def render_form(request: HttpRequest, template: str, form, **context) -> HttpResponse:
    """A page with a form: 400 when the form came back with errors (so clients and tests see the refusal),
    200 otherwise."""
    return render(request, template, {"form": form, **context}, status=400 if form.errors else 200)


@require_POST
@login_required
def question_link(request: HttpRequest, question_id: int) -> HttpResponse:
    """A teacher's "same as #N": the question's wording becomes an accepted alias of problem N."""
    question = permissions.question_for(request.user, question_id, action="link")
    raw = request.POST.get("problem", "").strip().lstrip("#")
    if not raw.isdigit():
        messages.error(
            request,
            "Give the number of a problem in the bank, e.g. 12. 请填写题库里的题号，例如 12。",
        )
        return redirect(request.POST.get("next") or "missed")
    problem = get_object_or_404(Problem, pk=int(raw))
    bank_service.link_question(question=question, problem=problem, teacher=request.user)
    messages.success(
        request,
        f"Linked: students asking “{question.text[:60]}” now get problem #{problem.pk}. "
        f"已关联：以后这样提问的学生会得到第{problem.pk}题。",
    )
    return redirect(request.POST.get("next") or "missed")


@require_POST
@login_required
def alias_review(request: HttpRequest, alias_id: int) -> HttpResponse:
    """Accept or dismiss a wording a student confirmed as a problem."""
    alias = permissions.alias_for(request.user, alias_id)
    if request.POST.get("action") == "accept":
        bank_service.accept_alias(text=alias.text, problem=alias.problem, user=request.user)
        messages.success(
            request,
            f"Accepted: this wording is problem #{alias.problem_id} now. 已接受：这个说法现在对应第{alias.problem_id}题。",
        )
    elif request.POST.get("action") == "dismiss":
        bank_service.dismiss_alias(alias=alias)
        messages.success(request, "Dismissed. 已忽略。")
    else:
        return HttpResponse("action must be accept or dismiss", status=400)
    return redirect("missed")


@require_GET
@login_required
def bank(request: HttpRequest) -> HttpResponse:
    permissions.require_teacher(request.user)
    form = BankPageFilterForm(request.GET)
    problems = Problem.objects.in_bank()
    order = ["id"]
    if form.is_valid():
        problems = form.filter(problems)
        if form.cleaned_data.get("q"):
            order = ["search_rank", "id"]  # terms found as typed before the looser matches
    page = Paginator(problems.order_by(*order), PAGE_SIZE).get_page(request.GET.get("page"))
    best = Solution.objects.best_status_by_problem([p.pk for p in page.object_list])
    rows = [(p, best.get(p.pk)) for p in page.object_list]
    topics = Topic.objects.values_list("name", flat=True)
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "tutor/bank.html",
        {
            "form": form,
            "page": page,
            "rows": rows,
            "topics": list(topics),
            "query": query.urlencode(),
            "waiting": bank_service.waiting_count(),
        },
    )


@login_required
def problem_page(request: HttpRequest, problem_id: int) -> HttpResponse:
    problem = permissions.problem_for(request.user, problem_id)
    solutions = bank_service.with_seen_by(
        problem.solutions.select_related("reviewed_by", "created_by")
    ).order_by("-created", "-id")
    best = problem.best_solution()
    # Students get only the answer key: are worked steps towards it being written, or given up?
    answer_key_only = best is None and bool(problem.reference_answer)
    failures = live.guided_failures(problem=problem) if answer_key_only else 0
    return render(
        request,
        "tutor/problem.html",
        {
            "problem": problem,
            "solutions": solutions,
            "best": best,
            "waiting": best is None and problem.is_waiting_for_teacher(),
            "guided_on_its_way": answer_key_only and live.is_guided_on_its_way(problem=problem),
            "guided_failures": failures,
            "guided_given_up": failures >= live.GUIDED_MAX_FAILED,
            "guided_max": live.GUIDED_MAX_FAILED,
        },
    )


@require_POST
@login_required
def problem_generate(request: HttpRequest, problem_id: int) -> HttpResponse:
    """ "Generate an answer now" (or again): a precompute run of this one problem, queued for the
    background workers; its answer is checked and stored like any other and shows on this page."""
    problem = permissions.problem_for(request.user, problem_id)
    try:
        run = precompute.create_run(
            selection=precompute.Selection(ids=(problem.pk,), which="all"), user=request.user
        )
    except (errors.RunRefused, errors.EngineUnavailable) as exc:
        messages.error(request, f"{exc} 无法生成。")
    else:
        messages.success(
            request,
            f"A new answer is being generated (run {run.pk}); reload this page in a minute or two. "
            "正在生成新答案，请一两分钟后刷新本页。",
        )
    return redirect("problem", problem_id=problem.pk)


@login_required
def problem_add(request: HttpRequest) -> HttpResponse:
    permissions.require_teacher(request.user)
    initial = {}
    from_question = request.GET.get("from_question")
    if from_question and from_question.isdigit():
        source = Question.objects.filter(pk=int(from_question)).first()
        if source is not None:
            initial = {"text": source.text, "lang": text.guess_lang(source.text)}
    form = ProblemForm(request.POST or None, initial=initial)
    duplicates: list[Problem] = []
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        duplicates = bank_service.near_duplicates(text=data["text"])
        if duplicates and not request.POST.get("confirm_duplicate"):
            return render(
                request,
                "tutor/problem_form.html",
                {"form": form, "problem": None, "duplicates": duplicates},
                status=409,
            )
        try:
            with transaction.atomic():
                problem = bank_service.create_problem(
                    text=data["text"],
                    lang=data["lang"],
                    topic=data["topic"],
                    tags=data["tags"],
                    difficulty=data["difficulty"],
                    reference_answer=data["reference_answer"],
                    added_by=request.user,
                )
                if data.get("solution"):
                    bank_service.add_teacher_solution(
                        problem=problem, author=request.user, text=data["solution"]
                    )
        except errors.BadQuestion as exc:
            form.add_error("text", str(exc))  # render_form: a 400, BadQuestion's status
        else:
            messages.success(
                request,
                f"Problem #{problem.pk} added; students asking it get it now. 已添加第{problem.pk}题。",
            )
            return redirect("problem", problem_id=problem.pk)
    return render_form(request, "tutor/problem_form.html", form, problem=None)


@login_required
def problem_edit(request: HttpRequest, problem_id: int) -> HttpResponse:
    problem = permissions.problem_for(request.user, problem_id)
    form = ProblemForm(request.POST or None, instance=Problem.objects.get(pk=problem.pk))
    if request.method == "POST" and form.is_valid():
        changes = {name: form.cleaned_data[name] for name in bank_service.PROBLEM_FIELDS}
        try:
            bank_service.update_problem(problem=problem, **changes)
        except errors.BadQuestion as exc:
            form.add_error("text", str(exc))  # render_form: a 400, BadQuestion's status
        else:
            messages.success(request, "Saved. 已保存。")
            return redirect("problem", problem_id=problem.pk)
    return render_form(request, "tutor/problem_form.html", form, problem=problem)


@require_POST
@login_required
def solution_review(request: HttpRequest, solution_id: int) -> HttpResponse:
    solution = permissions.solution_for(request.user, solution_id)
    status = request.POST.get("status", "")
    if status not in (Solution.Status.APPROVED, Solution.Status.REJECTED, Solution.Status.FLAGGED):
        return HttpResponse("status must be approved, rejected or flagged", status=400)
    try:
        bank_service.review_solution(solution=solution, reviewer=request.user, status=status)
    except errors.Conflict as exc:
        messages.error(request, str(exc))
        return redirect("problem", problem_id=solution.problem_id)
    notice = f"Answer {solution.pk}: {STATUS_WORDS.get(status, status)}."
    seen = bank_service.seen_by([solution.pk])[solution.pk]
    if status == Solution.Status.REJECTED and seen:
        notice += (
            f" {seen} student{'s' if seen != 1 else ''} had seen it 已有{seen}名学生看过; their "
            "question pages no longer show it. 他们的提问页面不再显示这个答案。"
        )
    messages.success(request, notice)
    return redirect("problem", problem_id=solution.problem_id)


@require_GET
@login_required
def review_list(request: HttpRequest) -> HttpResponse:
    """Answers to review, most students served first: tick several and approve or reject them."""
    permissions.require_teacher(request.user)
    form = ReviewFilterForm(request.GET)
    options = form.options()
    solutions = bank_service.answers_to_review(**options)
    page = Paginator(solutions, PAGE_SIZE).get_page(request.GET.get("page"))
    for solution in page.object_list:
        solution.label = STATUS_LABELS.get(solution.status, solution.status)
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "tutor/review.html",
        {
            "form": form,
            "options": options,
            "page": page,
            "topics": list(Topic.objects.values_list("name", flat=True)),
            "query": query.urlencode(),
            "bulk_max": bank_service.BULK_REVIEW_MAX,
        },
    )


@require_POST
@login_required
def review_bulk(request: HttpRequest) -> HttpResponse:
    """Approve or reject the ticked answers, each by the rules of one review, in one transaction;
    the notices say what was done, what was already so, and what was refused and why."""
    permissions.require_teacher(request.user)
    back = request.POST.get("next", "")
    if not back.startswith("/") or not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}
    ):
        back = reverse("review")
    form = BulkReviewForm(request.POST)
    if not form.is_valid():
        for problems in form.errors.values():
            for problem in problems:
                messages.error(request, problem)
        return redirect(back)
    report = bank_service.review_solutions(
        ids=form.cleaned_data["solutions"], reviewer=request.user, status=form.status
    )
    approving = form.status == Solution.Status.APPROVED
    if report.done:
        n = len(report.done)
        if approving:
            messages.success(
                request,
                f"Approved {n} answer{'s' if n != 1 else ''} 已通过{n}个答案: "
                f"{numbers(report.done)}. Approved answers are served to students before any "
                "other. 已通过的答案优先提供给学生。",
            )
        else:
            note = (
                " The students who had seen them no longer find them on their question pages. "
                "看过的学生在提问页面上不会再看到这些答案。"
                if any(report.seen_by.values())
                else ""
            )
            messages.success(
                request,
                f"Rejected {n} answer{'s' if n != 1 else ''} 已驳回{n}个答案: "
                f"{numbers(report.done, seen=report.seen_by)}.{note}",
            )
    if report.unchanged:
        word = "approved 已是通过状态" if approving else "rejected 已是驳回状态"
        messages.info(
            request, f"Already {word}, left as they were 未改动: {numbers(report.unchanged)}."
        )
    for solution, why in report.refused[:LIST_AT_MOST]:
        messages.error(
            request,
            f"Not approved 未通过: answer #{solution.pk} (problem #{solution.problem_id}): {why}",
        )
    if len(report.refused) > LIST_AT_MOST:
        more = len(report.refused) - LIST_AT_MOST
        messages.error(request, f"… and {more} more not approved for the same kind of reason.")
    if report.missing:
        listed = ", ".join(f"#{pk}" for pk in report.missing[:LIST_AT_MOST])
        messages.error(
            request,
            f"No such answer (deleted since the page was loaded?) 没有这些答案: {listed}.",
        )
    return redirect(back)


@login_required
def solution_edit(request: HttpRequest, solution_id: int) -> HttpResponse:
    solution = permissions.solution_for(request.user, solution_id)
    form = SolutionEditForm(request.POST or None, instance=Solution.objects.get(pk=solution.pk))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        bank_service.edit_solution(
            solution=solution,
            editor=request.user,
            reasoning=data["reasoning"],
            answer=data["answer"],
            final=data["final"] or "",
        )
        messages.success(
            request, f"Answer {solution.pk} corrected and approved. 答案已修改并通过审核。"
        )
        return redirect("problem", problem_id=solution.problem_id)
    return render_form(request, "tutor/solution_form.html", form, solution=solution)


@require_GET
@login_required
def missed(request: HttpRequest) -> HttpResponse:
    permissions.require_teacher(request.user)
    flagged = request.GET.get("flagged") == "1"
    return render(
        request,
        "tutor/missed.html",
        {
            "groups": bank_service.missed_groups(flagged_only=flagged),
            "refusals": bank_service.refusal_counts(),
            "flagged": flagged,
            "pending": ProblemAlias.objects.filter(
                status=ProblemAlias.Status.PENDING
            ).select_related("problem", "created_by")[:200],
        },
    )


@require_GET
@login_required
def student_questions(request: HttpRequest) -> HttpResponse:
    """Students' questions answered live: kept out of the bank until a teacher promotes them."""
    permissions.require_teacher(request.user)
    problems = Problem.objects.from_students().order_by("-created", "-id")
    page = Paginator(problems, PAGE_SIZE).get_page(request.GET.get("page"))
    best = Solution.objects.best_status_by_problem([p.pk for p in page.object_list])
    return render(
        request,
        "tutor/student_questions.html",
        {"page": page, "rows": [(p, best.get(p.pk)) for p in page.object_list]},
    )


@require_POST
@login_required
def problem_promote(request: HttpRequest, problem_id: int) -> HttpResponse:
    problem = permissions.problem_for(request.user, problem_id, students_only=True)
    duplicates = bank_service.near_duplicates(text=problem.text, exclude=problem)
    if duplicates and not request.POST.get("confirm_duplicate"):
        return render(
            request,
            "tutor/promote.html",
            {"problem": problem, "duplicates": duplicates},
            status=409,
        )
    bank_service.promote_problem(problem=problem, topic=request.POST.get("topic", ""))
    messages.success(
        request, f"Problem #{problem.pk} is in the bank now. 第{problem.pk}题已加入题库。"
    )
    return redirect("problem", problem_id=problem.pk)


@require_POST
@login_required
def problem_merge(request: HttpRequest, problem_id: int) -> HttpResponse:
    problem = permissions.problem_for(request.user, problem_id, students_only=True)
    raw = request.POST.get("into", "").strip().lstrip("#")
    into = Problem.objects.filter(pk=int(raw)).first() if raw.isdigit() else None
    if into is None or into.pk == problem.pk:
        messages.error(
            request, "Give the number of another problem in the bank. 请填写题库里另一道题的题号。"
        )
        return redirect("student_questions")
    made = bank_service.merge_problem(problem=problem, into=into, teacher=request.user)
    messages.success(
        request,
        f"Merged into #{into.pk}: {made} wording(s) now get problem #{into.pk}. "
        f"已合并到第{into.pk}题。",
    )
    return redirect("student_questions")


@require_POST
@login_required
def problem_delete(request: HttpRequest, problem_id: int) -> HttpResponse:
    problem = permissions.problem_for(request.user, problem_id, students_only=True)
    bank_service.delete_problem(problem=problem)
    messages.success(request, "Deleted. 已删除。")
    return redirect("student_questions")
