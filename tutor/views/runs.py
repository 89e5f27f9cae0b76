"""Pages for admins: batch precompute — the history of runs, starting one, a run's live progress (a small
JSON endpoint the page polls), cancel and resume. Thin: permission -> form -> service -> response."""

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


class RunForm(forms.Form):
    which = forms.ChoiceField(
        choices=[
            ("unanswered", "problems without a servable answer"),
            ("stale", "answers from an older model or prompt"),
            ("all", "every selected problem"),
        ],
        initial="unanswered",
    )
    topic = forms.CharField(max_length=64, required=False)
    tag = forms.CharField(max_length=64, required=False)
    ids = forms.CharField(max_length=5000, required=False, help_text="problem numbers, e.g. 1,2,3")
    samples = forms.IntegerField(min_value=1, max_value=precompute.MAX_RUN_SAMPLES, initial=1)
    max_new_tokens = forms.IntegerField(min_value=1, max_value=32768, required=False)
    limit = forms.IntegerField(min_value=1, required=False)
    greedy = forms.BooleanField(required=False)

    def clean_ids(self) -> tuple[int, ...]:
        raw = self.cleaned_data["ids"]
        try:
            ids = tuple(int(p) for p in raw.replace(" ", "").split(",") if p)
        except ValueError:
            raise forms.ValidationError("use problem numbers separated by commas") from None
        if any(i <= 0 for i in ids):
            raise forms.ValidationError("problem numbers are positive")
        if any(i > MAX_ID for i in ids):
            raise forms.ValidationError("no problem has a number that large")
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
            form.add_error(None, str(exc))
        else:
            messages.success(
                request, f"Run {run.pk} queued: {run.total} problems. 已排队{run.total}题。"
            )
            return redirect("run", run_id=run.pk)
    history = [(run, run.counts()) for run in PrecomputeRun.objects.all()[:100]]
    return render_form(request, "tutor/runs.html", form, history=history)


@require_GET
@login_required
def run_page(request: HttpRequest, run_id: int) -> HttpResponse:
    run = permissions.run_for(request.user, run_id)
    return render(request, "tutor/run.html", {"run": run, "figures": precompute.run_figures(run)})


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
        messages.error(request, str(exc))
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
