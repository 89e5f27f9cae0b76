"""Pages for students (and anyone signed in): the home page, asking, a question's page and its actions
(hints, checks, Stop, Try again / another answer, follow-up questions on an answer and theirs), sign-up. Thin: permission -> form -> service -> response; a question the user may not see is a 404
(`permissions.question_for`), an action that is only the asker's is a 403.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.core.paginator import Page, Paginator
from django.db import transaction
from django.db.models import Case, Count, F, Max, Min, Value, When
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import formats, timezone, translation
from django.views.decorators.http import require_GET, require_POST

from tutor import errors, permissions, throttle
from tutor.forms import AskForm, SignupForm
from tutor.models import FollowUp, Problem, ProblemAlias, Question
from tutor.services import asking, live, runtime, steps, text

EXAMPLES = [
    "请证明：任意奇数的平方减1都能被8整除",
    "写一个Python函数判断回文字符串",
    "如果今天是星期三，100天后是星期几？",
    "鸡兔同笼，共有35个头，94只脚，问鸡和兔各有多少只？",
]


def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "tutor/home.html",
        {"role": permissions.role_of(request.user) if request.user.is_authenticated else None},
    )


HISTORY_PAGE_SIZE = 20


@dataclass(frozen=True)
class HistoryRow:
    """One row of "My questions": the latest ask of a problem (or, when no problem was reached, of a
    wording), how many times it was asked, and when first and last; and how many follow-up questions
    the student asked about its answers (kept under the problem: its page lists them)."""

    question: Question
    count: int
    first: dt.datetime
    last: dt.datetime
    follow_ups: int = 0

    @property
    def when(self) -> str:
        """The last ask in the site's time zone, in both languages: "today 14:05 今天", "yesterday 9:30
        昨天", or "Dec 7, 2026 · 2026年12月7日" (English month names whatever LANGUAGE_CODE is)."""
        local = timezone.localtime(self.last)
        days = (timezone.localdate() - local.date()).days
        clock = f"{local:%H:%M}"
        if days == 0:
            return f"today {clock} 今天"
        if days == 1:
            return f"yesterday {clock} 昨天"
        with translation.override("en"):
            english = formats.date_format(local, "M j, Y")
        return f"{english} · {local.year}年{local.month}月{local.day}日"


def _history_page(user, page_number: str | None) -> tuple[Page, list[HistoryRow]]:
    """The student's questions grouped by problem, newest first, a page at a time. Grouped in the
    database: asks that reached a problem by problem, the others (refused, no answer) by their
    normalized wording, so asking the same thing five times is one row "asked 5 times"."""
    wording = Case(When(problem__isnull=True, then=F("key")), default=Value(""))
    groups = (
        Question.objects.filter(user=user)
        .order_by()
        .annotate(wording=wording)
        .values("problem_id", "wording")
        .annotate(count=Count("id"), first=Min("created"), last=Max("created"), latest=Max("id"))
        .order_by("-last", "-latest")
    )
    page = Paginator(groups, HISTORY_PAGE_SIZE).get_page(page_number)
    latest = Question.objects.select_related("problem").in_bulk(
        [g["latest"] for g in page.object_list]
    )
    follow_ups = dict(
        FollowUp.objects.filter(
            user=user,
            question__problem_id__in=[g["problem_id"] for g in page.object_list if g["problem_id"]],
        )
        .order_by()
        .values_list("question__problem_id")
        .annotate(n=Count("id"))
    )
    rows = [
        HistoryRow(
            question=latest[g["latest"]],
            count=g["count"],
            first=g["first"],
            last=g["last"],
            follow_ups=follow_ups.get(g["problem_id"], 0) if g["problem_id"] else 0,
        )
        for g in page.object_list
        if g["latest"] in latest
    ]
    return page, rows


def _ask_page(request: HttpRequest, form: AskForm, status: int = 200) -> HttpResponse:
    history_page, history = _history_page(request.user, request.GET.get("page"))
    return render(
        request,
        "tutor/ask.html",
        {
            "form": form,
            "examples": EXAMPLES,
            "history": history,
            "history_page": history_page,
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
    except (errors.BadQuestion, errors.OneAtATime, errors.Refused) as exc:
        form.add_error("question", str(exc))
        response = _ask_page(request, form, status=exc.status)
        if exc.retry_after:
            response["Retry-After"] = str(exc.retry_after)
        return response
    return redirect("question", question_id=question.pk)


@login_required
def question_page(request: HttpRequest, question_id: int) -> HttpResponse:
    question = permissions.question_for(request.user, question_id)
    # A page reloaded without JavaScript counts as watching; a generation that stopped is settled.
    question = live.watch(question=question)
    return render(request, "tutor/question.html", _question_context(request, question))


def _question_page_again(
    request: HttpRequest, question: Question, form: AskForm, exc: errors.TutorError | None = None
) -> HttpResponse:
    """The question's page with the follow-up form as it was sent and what was wrong with it (the words
    the student typed are kept)."""
    if exc is not None:
        form.add_error("question", str(exc))
    context = _question_context(request, question)
    context["follow_up_form"] = form
    response = render(
        request, "tutor/question.html", context, status=exc.status if exc is not None else 400
    )
    if exc is not None and exc.retry_after:
        response["Retry-After"] = str(exc.retry_after)
    return response


@login_required
def question_answer(request: HttpRequest, question_id: int) -> HttpResponse:
    """The server-rendered answer of a question (the ask page fetches it when a stream ends)."""
    question = live.watch(question=permissions.question_for(request.user, question_id))
    return render(request, "tutor/_answer.html", _question_context(request, question))


def _question_context(request: HttpRequest, question: Question) -> dict:
    served = question.served_solution()
    answer_key = question.answer_key() if served is None else None
    step_context = _steps_context(request, question, served)
    return {
        "question": question,
        "served": served,
        "answer_key": answer_key,
        # Shown with the answer key: the worked solution that is being written towards it.
        "worked_on_its_way": answer_key is not None
        and live.is_guided_on_its_way(problem=question.problem),
        "suggested": question.suggested_problems()
        if question.outcome == Question.Outcome.SUGGESTED
        else [],
        "is_asker": permissions.is_asker(request.user, question),
        "can_feedback": permissions.can_give_feedback(request.user, question),
        "is_teacher": permissions.is_teacher(request.user),
        "pending_aliases": ProblemAlias.objects.filter(key=question.key).select_related("problem")
        if permissions.is_teacher(request.user)
        else [],
        # "Another answer": a finished live answer (or the one kept when another came to nothing).
        "can_retry": permissions.is_asker(request.user, question)
        and question.outcome in asking.RETRY_OUTCOMES,
        **step_context,
        **_follow_ups_context(request, question, served, answer_key, step_context),
    }


def _follow_ups_context(
    request: HttpRequest, question: Question, served, answer_key, step_context: dict
) -> dict:
    """The follow-up questions under an answer: the asker's on this problem (whichever of their asks of
    it they were made on), oldest first; and the form to ask one, once some of the answer is shown."""
    if question.outcome == Question.Outcome.GENERATING or not (served or answer_key):
        return {"follow_ups": [], "can_follow_up": False}
    mine = FollowUp.objects.filter(user_id=question.user_id).select_related("question")
    found = list(
        mine.filter(question__problem_id=question.problem_id)
        if question.problem_id
        else mine.filter(question=question)
    )
    # A follow-up whose generation stopped without it is settled here (as a question's page does).
    found = [
        live.watch(question=f) if f.outcome == FollowUp.Outcome.GENERATING else f for f in found
    ]
    state = step_context.get("step_state")
    seen_some = not step_context.get("step_mode") or bool(state and (state.whole or state.shown))
    return {
        "follow_ups": found,
        "can_follow_up": permissions.is_asker(request.user, question) and seen_some,
        "follow_up_form": AskForm(auto_id="follow-up-%s"),
        "follow_up_writing": any(f.outcome == FollowUp.Outcome.GENERATING for f in found),
        "served_id": served.pk if served is not None else None,
        "max_chars": text.MAX_QUESTION_CHARS,
    }


def _steps_context(request: HttpRequest, question: Question, served) -> dict:
    """Step by step (tutor.services.steps): the asker's hints on a banked answer, hidden until asked."""
    if not steps.applies(user=request.user, question=question, served=served):
        return {"step_mode": False}
    state = steps.state_of(student=request.user, question=question, served=served)
    return {"step_mode": True, "step_state": state}


@require_POST
@login_required
def question_steps(request: HttpRequest, question_id: int) -> HttpResponse:
    """Hint, next step or whole solution (step=hint|next|whole), then the question's page again."""
    question = permissions.question_for(request.user, question_id, action="steps")
    action = request.POST.get("step", "")
    if action not in steps.ACTIONS:
        return HttpResponse("step must be hint, next or whole", status=400)
    steps.reveal(student=request.user, question=question, action=action)  # Conflict: a 409
    return redirect(_at_steps(question))


@require_POST
@login_required
def question_check(request: HttpRequest, question_id: int) -> HttpResponse:
    """Check my answer: right or not, shown on the question's page; the solution stays hidden."""
    question = permissions.question_for(request.user, question_id, action="check")
    try:
        steps.check_answer(
            student=request.user, question=question, answer=request.POST.get("answer", "")
        )
    except errors.Conflict as exc:
        messages.error(request, str(exc))
    return redirect(_at_steps(question))


def _at_steps(question: Question) -> str:
    """The question's page, scrolled to its step-by-step box."""
    return reverse("question", kwargs={"question_id": question.pk}) + f"#steps-{question.pk}"


@require_POST
@login_required
def question_feedback(request: HttpRequest, question_id: int) -> HttpResponse:
    question = permissions.question_for(request.user, question_id, action="feedback")
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
    question = permissions.question_for(request.user, question_id, action="ask_teacher")
    asking.record_feedback(question=question, kind=Question.Feedback.ASK_TEACHER)
    messages.info(request, "Your teacher will see this question. 老师会看到这个问题。")
    return redirect("question", question_id=question.pk)


@require_POST
@login_required
def question_choose(request: HttpRequest, question_id: int) -> HttpResponse:
    """The answer to "Is this your question?": problem=<id> (yes) or problem=none (ask the tutor)."""
    question = permissions.question_for(request.user, question_id, action="choose")
    choice = request.POST.get("problem", "")
    problem = None
    if choice != "none":
        if not choice.isdigit():
            return HttpResponse("problem must be a suggested problem's id or none", status=400)
        problem = get_object_or_404(Problem, pk=int(choice))
    try:
        asking.choose_suggestion(question=question, problem=problem)  # BadQuestion: a 400 (errors)
    except (errors.OneAtATime, errors.Refused) as exc:
        messages.error(request, str(exc))
    return redirect("question", question_id=question.pk)


@require_POST
@login_required
def question_stop(request: HttpRequest, question_id: int) -> HttpResponse:
    question = permissions.question_for(request.user, question_id, action="stop")
    live.live_jobs.stop(question=question)
    return redirect("question", question_id=question.pk)


@require_POST
@login_required
def question_retry(request: HttpRequest, question_id: int) -> HttpResponse:
    """ "Try again" on a failed live answer, "another answer" on a finished one."""
    question = permissions.question_for(request.user, question_id, action="retry")
    try:
        asking.retry_question(question=question)
    except (errors.OneAtATime, errors.Refused) as exc:
        messages.error(request, str(exc))
    return redirect("question", question_id=question.pk)


# -- follow-up questions on an answer ---------------------------------------------------------------


def _at_follow_up(follow_up: FollowUp, question: Question | None = None) -> str:
    """The page of the question it is shown under, scrolled to it."""
    question_id = question.pk if question is not None else follow_up.question_id
    return reverse("question", kwargs={"question_id": question_id}) + f"#followup-{follow_up.pk}"


@require_POST
@login_required
def question_followup(request: HttpRequest, question_id: int) -> HttpResponse:
    """Ask about this answer: a live generation with the problem and the answer in the prompt; then the
    question's page, where it streams (or reloads every few seconds without JavaScript)."""
    question = permissions.question_for(request.user, question_id, action="followup")
    form = AskForm(request.POST, auto_id="follow-up-%s")
    if not form.is_valid():
        return _question_page_again(request, question, form)
    try:
        follow_up = asking.ask_follow_up(
            user=request.user, question=question, text=form.cleaned_data["question"]
        )
    except (errors.BadQuestion, errors.Conflict, errors.OneAtATime, errors.Refused) as exc:
        return _question_page_again(request, question, form, exc)
    return redirect(_at_follow_up(follow_up, question))


@require_GET
@login_required
def followup_fragment(request: HttpRequest, follow_up_id: int) -> HttpResponse:
    """One follow-up, server-rendered (the page fetches it when its stream ends)."""
    follow_up = live.watch(question=permissions.follow_up_for(request.user, follow_up_id))
    return render(
        request,
        "tutor/_followup.html",
        {"f": follow_up, "is_asker": follow_up.user_id == request.user.pk},
    )


@require_POST
@login_required
def followup_stop(request: HttpRequest, follow_up_id: int) -> HttpResponse:
    follow_up = permissions.follow_up_for(request.user, follow_up_id, action="stop")
    live.live_jobs.stop(question=follow_up)
    return redirect(_at_follow_up(follow_up))


@require_POST
@login_required
def followup_retry(request: HttpRequest, follow_up_id: int) -> HttpResponse:
    """ "Try again" on a failed follow-up, "another answer" on an answered one."""
    follow_up = permissions.follow_up_for(request.user, follow_up_id, action="retry")
    try:
        follow_up = asking.retry_follow_up(follow_up=follow_up)
    except (errors.Conflict, errors.OneAtATime, errors.Refused) as exc:
        messages.error(request, str(exc))
    return redirect(_at_follow_up(follow_up))


SIGNUP_LIMITED = (
    "Too many accounts were made from this computer in the last hour: try again later, or ask your "
    "teacher. 这台电脑在一小时内注册的账号太多，请稍后再试，或请老师帮忙。"
)


def signup(request: HttpRequest) -> HttpResponse:
    if not settings.SUANJING_SIGNUP:
        raise Http404("Sign-up is turned off; ask your teacher for an account.")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if not throttle.signup_allowed(request):
            form.add_error(None, SIGNUP_LIMITED)
            return render(request, "tutor/signup.html", {"form": form}, status=429)
        with transaction.atomic():
            user = form.save()
            group, _ = Group.objects.get_or_create(name=permissions.STUDENT)
            user.groups.add(group)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("ask")
    return render(request, "tutor/signup.html", {"form": form})
