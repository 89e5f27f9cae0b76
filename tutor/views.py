"""Thin views: permission -> form -> service -> response. The JSON API is in `tutor.api`."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from tutor import errors, permissions
from tutor.forms import AskForm, BankFilterForm, ProblemForm, SignupForm, SolutionEditForm
from tutor.models import Problem, ProblemAlias, Question, Solution, Topic
from tutor.services import asking, live, runtime, text
from tutor.services import bank as bank_service

PAGE_SIZE = 50

EXAMPLES = [
    "请证明：任意奇数的平方减1都能被8整除",
    "写一个Python函数判断回文字符串",
    "如果今天是星期三，100天后是星期几？",
    "鸡兔同笼，共有35个头，94只脚，问鸡和兔各有多少只？",
]


def render_form(request: HttpRequest, template: str, form, **context) -> HttpResponse:
    """A page with a form: 400 when the form came back with errors (so clients and tests see the refusal),
    200 otherwise."""
    return render(request, template, {"form": form, **context}, status=400 if form.errors else 200)


def require_teacher(request: HttpRequest) -> None:
    if not request.user.is_authenticated:
        raise PermissionDenied  # login_required runs first on every teacher page; this is a backstop
    if not permissions.can_manage_bank(request.user):
        raise PermissionDenied


def visible_question(request: HttpRequest, question_id: int) -> Question:
    question = get_object_or_404(
        Question.objects.select_related("problem", "solution"), pk=question_id
    )
    if not permissions.can_view_question(request.user, question):
        raise Http404("No such question")
    return question


def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "tutor/home.html",
        {"role": permissions.role_of(request.user) if request.user.is_authenticated else None},
    )


def _ask_page(request: HttpRequest, form: AskForm, status: int = 200) -> HttpResponse:
    history = Question.objects.filter(user=request.user).select_related("problem")[:20]
    return render(
        request,
        "tutor/ask.html",
        {
            "form": form,
            "examples": EXAMPLES,
            "history": history,
            "model": runtime.model_info(),
            "max_chars": text.MAX_QUESTION_CHARS,
        },
        status=status,
    )


@require_GET
@login_required
def ask(request: HttpRequest) -> HttpResponse:
    return _ask_page(request, AskForm())


@require_POST
@login_required
def ask_submit(request: HttpRequest) -> HttpResponse:
    """The ask form without JavaScript: ask, then show the question's page (which streams if generating)."""
    form = AskForm(request.POST)
    if not form.is_valid():
        return _ask_page(request, form, status=400)
    try:
        question = asking.answer_question(user=request.user, text=form.cleaned_data["question"])
    except errors.BadQuestion as exc:
        form.add_error("question", str(exc))
        return _ask_page(request, form, status=400)
    except errors.OneAtATime as exc:
        form.add_error("question", str(exc))
        return _ask_page(request, form, status=429)
    return redirect("question", question_id=question.pk)


@login_required
def question_page(request: HttpRequest, question_id: int) -> HttpResponse:
    question = visible_question(request, question_id)
    job = live.live_jobs.for_question(question.pk)
    if job is not None:
        job.touch()  # a page reloaded without JavaScript still counts as waiting for the answer
    return render(request, "tutor/question.html", _question_context(request, question))


@login_required
def question_answer(request: HttpRequest, question_id: int) -> HttpResponse:
    """The server-rendered answer of a question (the ask page fetches it when a stream ends)."""
    question = visible_question(request, question_id)
    return render(request, "tutor/_answer.html", _question_context(request, question))


def _question_context(request: HttpRequest, question: Question) -> dict:
    served = question.served_solution()
    return {
        "question": question,
        "served": served,
        "answer_key": question.answer_key() if served is None else None,
        "suggested": question.suggested_problems()
        if question.outcome == Question.Outcome.SUGGESTED
        else [],
        "is_asker": permissions.is_asker(request.user, question),
        "can_feedback": permissions.can_give_feedback(request.user, question),
        "is_teacher": permissions.is_teacher(request.user),
        "pending_aliases": ProblemAlias.objects.filter(key=question.key).select_related("problem")
        if permissions.is_teacher(request.user)
        else [],
    }


def asked_question(request: HttpRequest, question_id: int) -> Question:
    """The question, for an action only its asker may take (404 for others who may not see it)."""
    question = visible_question(request, question_id)
    if not permissions.is_asker(request.user, question):
        raise PermissionDenied
    return question


@require_POST
@login_required
def question_feedback(request: HttpRequest, question_id: int) -> HttpResponse:
    question = asked_question(request, question_id)
    asking.record_feedback(question=question)
    messages.info(
        request,
        "Thank you: a teacher will look at it, and this problem will not be offered for this "
        "question again. 谢谢，老师会查看。",
    )
    return redirect("question", question_id=question.pk)


@require_POST
@login_required
def question_ask_teacher(request: HttpRequest, question_id: int) -> HttpResponse:
    question = asked_question(request, question_id)
    asking.record_feedback(question=question, kind=Question.Feedback.ASK_TEACHER)
    messages.info(request, "Your teacher will see this question. 老师会看到这个问题。")
    return redirect("question", question_id=question.pk)


@require_POST
@login_required
def question_choose(request: HttpRequest, question_id: int) -> HttpResponse:
    """The answer to "Is this your question?": problem=<id> (yes) or problem=none (ask the tutor)."""
    question = asked_question(request, question_id)
    choice = request.POST.get("problem", "")
    problem = None
    if choice != "none":
        if not choice.isdigit():
            return HttpResponse("problem must be a suggested problem's id or none", status=400)
        problem = get_object_or_404(Problem, pk=int(choice))
    try:
        asking.choose_suggestion(question=question, problem=problem)
    except errors.BadQuestion as exc:
        return HttpResponse(str(exc), status=400)
    except errors.OneAtATime as exc:
        messages.error(request, str(exc))
    return redirect("question", question_id=question.pk)


@require_POST
@login_required
def question_stop(request: HttpRequest, question_id: int) -> HttpResponse:
    question = asked_question(request, question_id)
    live.live_jobs.stop(question=question)
    return redirect("question", question_id=question.pk)


@require_POST
@login_required
def question_retry(request: HttpRequest, question_id: int) -> HttpResponse:
    question = asked_question(request, question_id)
    try:
        asking.retry_question(question=question)
    except errors.OneAtATime as exc:
        messages.error(request, str(exc))
    return redirect("question", question_id=question.pk)


@require_POST
@login_required
def question_link(request: HttpRequest, question_id: int) -> HttpResponse:
    """A teacher's "same as #N": the question's wording becomes an accepted alias of problem N."""
    require_teacher(request)
    question = visible_question(request, question_id)
    raw = request.POST.get("problem", "").strip().lstrip("#")
    if not raw.isdigit():
        messages.error(request, "Give the number of a problem in the bank, e.g. 12.")
        return redirect(request.POST.get("next") or "missed")
    problem = get_object_or_404(Problem, pk=int(raw))
    bank_service.link_question(question=question, problem=problem, teacher=request.user)
    messages.success(
        request, f"Linked: students asking “{question.text[:60]}” now get problem #{problem.pk}."
    )
    return redirect(request.POST.get("next") or "missed")


@require_POST
@login_required
def alias_review(request: HttpRequest, alias_id: int) -> HttpResponse:
    """Accept or dismiss a wording a student confirmed as a problem."""
    require_teacher(request)
    alias = get_object_or_404(ProblemAlias.objects.select_related("problem"), pk=alias_id)
    if request.POST.get("action") == "accept":
        bank_service.accept_alias(text=alias.text, problem=alias.problem, user=request.user)
        messages.success(request, f"Accepted: this wording is problem #{alias.problem_id} now.")
    elif request.POST.get("action") == "dismiss":
        bank_service.dismiss_alias(alias=alias)
        messages.success(request, "Dismissed.")
    else:
        return HttpResponse("action must be accept or dismiss", status=400)
    return redirect("missed")


def signup(request: HttpRequest) -> HttpResponse:
    if not settings.SUANJING_SIGNUP:
        raise Http404("Sign-up is turned off; ask your teacher for an account.")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = form.save()
            group, _ = Group.objects.get_or_create(name=permissions.STUDENT)
            user.groups.add(group)
        login(request, user)
        return redirect("ask")
    return render(request, "tutor/signup.html", {"form": form})


# -- teachers ------------------------------------------------------------------------------------


@require_GET
@login_required
def bank(request: HttpRequest) -> HttpResponse:
    require_teacher(request)
    form = BankFilterForm(request.GET)
    problems = Problem.objects.in_bank()
    if form.is_valid():
        problems = form.filter(problems)
    page = Paginator(problems.order_by("id"), PAGE_SIZE).get_page(request.GET.get("page"))
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
        },
    )


@login_required
def problem_page(request: HttpRequest, problem_id: int) -> HttpResponse:
    require_teacher(request)
    problem = get_object_or_404(Problem, pk=problem_id)
    solutions = problem.solutions.select_related("reviewed_by", "created_by").order_by(
        "-created", "-id"
    )
    best = problem.best_solution()
    return render(
        request,
        "tutor/problem.html",
        {
            "problem": problem,
            "solutions": solutions,
            "best": best,
            "waiting": best is None and problem.is_waiting_for_teacher(),
        },
    )


@login_required
def problem_add(request: HttpRequest) -> HttpResponse:
    require_teacher(request)
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
            form.add_error("text", str(exc))
        else:
            messages.success(
                request, f"Problem #{problem.pk} added; students asking it get it now."
            )
            return redirect("problem", problem_id=problem.pk)
    return render_form(request, "tutor/problem_form.html", form, problem=None)


@login_required
def problem_edit(request: HttpRequest, problem_id: int) -> HttpResponse:
    require_teacher(request)
    problem = get_object_or_404(Problem, pk=problem_id)
    form = ProblemForm(request.POST or None, instance=Problem.objects.get(pk=problem.pk))
    if request.method == "POST" and form.is_valid():
        changes = {name: form.cleaned_data[name] for name in bank_service.PROBLEM_FIELDS}
        try:
            bank_service.update_problem(problem=problem, **changes)
        except errors.BadQuestion as exc:
            form.add_error("text", str(exc))
        else:
            messages.success(request, "Saved.")
            return redirect("problem", problem_id=problem.pk)
    return render_form(request, "tutor/problem_form.html", form, problem=problem)


@require_POST
@login_required
def solution_review(request: HttpRequest, solution_id: int) -> HttpResponse:
    require_teacher(request)
    solution = get_object_or_404(Solution, pk=solution_id)
    status = request.POST.get("status", "")
    if status not in (Solution.Status.APPROVED, Solution.Status.REJECTED, Solution.Status.FLAGGED):
        return HttpResponse("status must be approved, rejected or flagged", status=400)
    bank_service.review_solution(solution=solution, reviewer=request.user, status=status)
    messages.success(request, f"Answer {solution.pk} {status}.")
    return redirect("problem", problem_id=solution.problem_id)


@login_required
def solution_edit(request: HttpRequest, solution_id: int) -> HttpResponse:
    require_teacher(request)
    solution = get_object_or_404(Solution, pk=solution_id)
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
        messages.success(request, f"Answer {solution.pk} corrected and approved.")
        return redirect("problem", problem_id=solution.problem_id)
    return render_form(request, "tutor/solution_form.html", form, solution=solution)


@require_GET
@login_required
def missed(request: HttpRequest) -> HttpResponse:
    require_teacher(request)
    flagged = request.GET.get("flagged") == "1"
    return render(
        request,
        "tutor/missed.html",
        {
            "groups": bank_service.missed_groups(flagged_only=flagged),
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
    require_teacher(request)
    problems = Problem.objects.from_students().order_by("-created", "-id")
    page = Paginator(problems, PAGE_SIZE).get_page(request.GET.get("page"))
    best = Solution.objects.best_status_by_problem([p.pk for p in page.object_list])
    return render(
        request,
        "tutor/student_questions.html",
        {"page": page, "rows": [(p, best.get(p.pk)) for p in page.object_list]},
    )


def _student_problem(problem_id: int) -> Problem:
    return get_object_or_404(Problem, pk=problem_id, source=Problem.Source.STUDENT)


@require_POST
@login_required
def problem_promote(request: HttpRequest, problem_id: int) -> HttpResponse:
    require_teacher(request)
    problem = _student_problem(problem_id)
    duplicates = bank_service.near_duplicates(text=problem.text, exclude=problem)
    if duplicates and not request.POST.get("confirm_duplicate"):
        return render(
            request,
            "tutor/promote.html",
            {"problem": problem, "duplicates": duplicates},
            status=409,
        )
    bank_service.promote_problem(problem=problem, topic=request.POST.get("topic", ""))
    messages.success(request, f"Problem #{problem.pk} is in the bank now.")
    return redirect("problem", problem_id=problem.pk)


@require_POST
@login_required
def problem_merge(request: HttpRequest, problem_id: int) -> HttpResponse:
    require_teacher(request)
    problem = _student_problem(problem_id)
    raw = request.POST.get("into", "").strip().lstrip("#")
    into = Problem.objects.filter(pk=int(raw)).first() if raw.isdigit() else None
    if into is None or into.pk == problem.pk:
        messages.error(request, "Give the number of another problem in the bank.")
        return redirect("student_questions")
    made = bank_service.merge_problem(problem=problem, into=into, teacher=request.user)
    messages.success(
        request, f"Merged into #{into.pk}: {made} wording(s) now get problem #{into.pk}."
    )
    return redirect("student_questions")


@require_POST
@login_required
def problem_delete(request: HttpRequest, problem_id: int) -> HttpResponse:
    require_teacher(request)
    problem = _student_problem(problem_id)
    bank_service.delete_problem(problem=problem)
    messages.success(request, "Deleted.")
    return redirect("student_questions")
