"""Pages for admins: batch precompute — the history of runs, starting one, a run's live progress (a small
JSON endpoint the page polls), cancel and resume. Thin: permission -> form -> service -> response.
Labels in English and Chinese side by side, as on the rest of the site."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from tutor import errors, permissions
from tutor.models import PrecomputeRun
from tutor.services import precompute
from tutor.views.teacher import render_form

MAX_ID = 2**63 - 1  # the database's largest id; a larger number would overflow the query


# A run's status and an item's result in the site's two languages (the models' labels are English).
STATUS_WORDS = {
    PrecomputeRun.Status.QUEUED: "waiting for a worker 等待后台进程",
    PrecomputeRun.Status.RUNNING: "running 运行中",
    PrecomputeRun.Status.CANCELLING: "cancelling 正在取消",
    PrecomputeRun.Status.CANCELLED: "cancelled 已取消",
    PrecomputeRun.Status.DONE: "finished 已完成",
}
OUTCOME_WORDS = {
    "verified": "verified 已核对",
    "unverified": "not checked 未核对",
    "failed": "failed 失败",
}
WHICH_CHOICES = [
    ("unanswered", "problems without a servable answer 没有可用答案的题"),
    ("stale", "answers from an older model or prompt 旧模型或旧提示词的答案"),
    ("all", "every selected problem 所有选中的题"),
]


class RunForm(forms.Form):
    which = forms.ChoiceField(
        label="Which problems 哪些题", choices=WHICH_CHOICES, initial="unanswered"
    )
    topic = forms.CharField(
        label="Topic 主题",
        max_length=64,
        required=False,
        help_text="empty: every topic 留空：所有主题",
    )
    tag = forms.CharField(label="Tag 标签", max_length=64, required=False)
    ids = forms.CharField(
        label="Problem numbers 题号",
        max_length=5000,
        required=False,
        help_text="e.g. 1,2,3; empty: the whole bank 例如 1,2,3；留空：整个题库",
    )
    samples = forms.IntegerField(
        label="Samples per problem 每题采样次数",
        min_value=1,
        max_value=precompute.MAX_RUN_SAMPLES,
        initial=1,
        help_text="several answers per problem, compared with each other 每题生成多个答案互相比较",
    )
    max_new_tokens = forms.IntegerField(
        label="Longest answer (tokens) 最长答案（token数）",
        min_value=1,
        max_value=32768,
        required=False,
        help_text="empty: the site's setting 留空：使用网站设置",
    )
    limit = forms.IntegerField(
        label="At most this many problems 最多题数", min_value=1, required=False
    )
    greedy = forms.BooleanField(
        label="Greedy decoding 贪心解码",
        required=False,
        help_text="the same answer on every run; one sample only 每次结果相同；只能采样一次",
    )

    def clean_ids(self) -> tuple[int, ...]:
        raw = self.cleaned_data["ids"]
        try:
            ids = tuple(int(p) for p in raw.replace(" ", "").split(",") if p)
        except ValueError:
            raise forms.ValidationError(
                "Use problem numbers separated by commas. 请用逗号分隔题号。"
            ) from None
        if any(i <= 0 for i in ids):
            raise forms.ValidationError("Problem numbers are positive. 题号必须是正数。")
        if any(i > MAX_ID for i in ids):
            raise forms.ValidationError("No problem has a number that large. 没有这么大的题号。")
        return ids

    def selection(self) -> precompute.Selection:
        d = self.cleaned_data
        return precompute.Selection(
            topic=d["topic"], tag=d["tag"], ids=d["ids"], which=d["which"], limit=d["limit"]
        )


@login_required
def runs(request: HttpRequest) -> HttpResponse:
    permissions.require_admin(request.user)
    form = RunForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            run = precompute.create_run(
                selection=form.selection(),
                samples=d["samples"],
                max_new_tokens=d["max_new_tokens"],
                greedy=d["greedy"],
                user=request.user,
            )
        except (errors.RunRefused, errors.EngineUnavailable) as exc:
            form.add_error(None, f"{exc} 未能开始预生成。")
        else:
            messages.success(
                request, f"Run {run.pk} queued: {run.total} problems. 已排队{run.total}题。"
            )
            return redirect("run", run_id=run.pk)
    history = [(run, run.counts()) for run in PrecomputeRun.objects.all()[:100]]
    for run, _ in history:
        run.status_words = STATUS_WORDS.get(run.status, run.status)
    return render_form(request, "tutor/runs.html", form, history=history)


def describe_selection(selection: dict) -> str:
    """A run's selection as the page says it, e.g. "problems without a servable answer 没有可用答案的题 ·
    topic 主题 sums · at most 最多 20"."""
    words = dict(WHICH_CHOICES)
    parts = [words.get(selection.get("which"), str(selection.get("which", "")))]
    if selection.get("topic"):
        parts.append(f"topic 主题 {selection['topic']}")
    if selection.get("tag"):
        parts.append(f"tag 标签 {selection['tag']}")
    ids = selection.get("ids") or []
    if ids:
        shown = ", ".join(f"#{i}" for i in ids[:10])
        parts.append(f"problems 题号 {shown}" + (f" … ({len(ids)})" if len(ids) > 10 else ""))
    if selection.get("limit"):
        parts.append(f"at most 最多 {selection['limit']}")
    return " · ".join(parts)


@require_GET
@login_required
def run_page(request: HttpRequest, run_id: int) -> HttpResponse:
    run = permissions.run_for(request.user, run_id)
    figures = precompute.run_figures(run)
    for item in figures["slowest"]:
        item["outcome_words"] = OUTCOME_WORDS.get(item["outcome"], item["outcome"] or "—")
    return render(
        request,
        "tutor/run.html",
        {
            "run": run,
            "figures": figures,
            "status_words": STATUS_WORDS.get(run.status, run.status),
            "all_status_words": STATUS_WORDS,  # for run.js, which updates the status as it changes
            "selection": describe_selection(run.selection or {}),
        },
    )


@require_GET
@login_required
def run_progress(request: HttpRequest, run_id: int) -> JsonResponse:
    run = permissions.run_for(request.user, run_id)
    return JsonResponse(precompute.run_figures(run))


@require_POST
@login_required
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = permissions.run_for(request.user, run_id)
    try:
        precompute.cancel_run(run=run)
    except errors.RunRefused as exc:
        messages.error(request, f"{exc} 无法取消。")
    else:
        messages.success(
            request, f"Run {run.pk} is being cancelled; workers stop within seconds. 正在取消。"
        )
    return redirect("run", run_id=run.pk)


@require_POST
@login_required
def run_resume(request: HttpRequest, run_id: int) -> HttpResponse:
    run = permissions.run_for(request.user, run_id)
    todo = precompute.resume_run(run=run)
    messages.success(request, f"Run {run.pk}: {todo} problems queued again. 已重新排队{todo}题。")
    return redirect("run", run_id=run.pk)
