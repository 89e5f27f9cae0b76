"""Pages for admins beside the Django admin: the engine and queue status page, and answer packs from the
site (export to a download; upload, a dry-run report, then import). Thin: permission -> form -> service
-> response. The packs go through `tutor.services.packs`, the same export and import as the commands.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_POST

from tutor import errors, permissions
from tutor.models import Problem, Topic
from tutor.services import packs, status
from tutor.views.runs import STATUS_WORDS

SESSION_KEY = "pack_uploads"  # the tokens of this admin's uploads waiting to be imported
KEEP_TOKENS = 5
# A multipart body is a little larger than the file in it.
MAX_BODY = packs.UPLOAD_MAX_BYTES + 64 * 1024
MAX_MB = packs.UPLOAD_MAX_BYTES // (1024 * 1024)
STATUS_LABELS = {
    "approved": "approved by a teacher 老师已审核",
    "verified": "verified 已核对",
    "unverified": "not yet checked 未核对",
    "failed": "failed (no final answer) 失败",
}


class ExportForm(forms.Form):
    topic = forms.ChoiceField(required=False, label="Topic 主题")
    statuses = forms.MultipleChoiceField(
        choices=[(s, STATUS_LABELS[s]) for s in STATUS_LABELS],
        initial=list(packs.EXPORT_STATUSES),
        widget=forms.CheckboxSelectMultiple,
        label="Answers 答案",
    )
    site = forms.CharField(
        max_length=200,
        required=False,
        label="Your school 学校名称",
        help_text="written into the pack: a school importing it sees it beside the answers "
        "写入答案包：导入的学校会在答案旁看到它",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = set(Topic.objects.values_list("name", flat=True))
        names |= set(Problem.objects.exclude(topic="").values_list("topic", flat=True).distinct())
        self.fields["topic"].choices = [("", "every topic 全部"), *((n, n) for n in sorted(names))]


class UploadForm(forms.Form):
    pack = forms.FileField(
        label="Answer pack 答案包",
        help_text=f"a .sqlite file from `export_pack` or a precompute; at most {MAX_MB} MB "
        f"由 export_pack 或预生成得到的 .sqlite 文件，最大 {MAX_MB} MB",
        error_messages={
            "required": "Choose a pack file. 请选择答案包文件。",
            "empty": "The file is empty, not an answer pack. 文件是空的，不是答案包。",
            "invalid": "No file was sent. 没有收到文件。",
        },
    )


def _tools(request: HttpRequest, template: str, context: dict, status_code: int = 200):
    return render(request, f"tutor/admin_tools/{template}", context, status=status_code)


# -- the engine and the queue --------------------------------------------------------------------------


@require_GET
@login_required
def status_page(request: HttpRequest) -> HttpResponse:
    permissions.require_admin(request.user)
    snapshot = status.snapshot()
    for run, _ in snapshot.runs:
        run.status_words = STATUS_WORDS.get(run.status, run.status)
    return _tools(request, "status.html", {"s": snapshot})


# -- answer packs ------------------------------------------------------------------------------------


def _packs_page(
    request, *, export=None, upload=None, refused: str = "", notice: str = "", status_code=200
):
    return _tools(
        request,
        "packs.html",
        {
            "export_form": export or ExportForm(),
            "upload_form": upload or UploadForm(),
            "refused": refused,
            "notice": notice,
            "max_mb": MAX_MB,
        },
        status_code,
    )


@require_GET
@login_required
def packs_page(request: HttpRequest) -> HttpResponse:
    permissions.require_admin(request.user)
    return _packs_page(request)


@require_POST
@login_required
def pack_export(request: HttpRequest) -> HttpResponse:
    permissions.require_admin(request.user)
    form = ExportForm(request.POST)
    if not form.is_valid():
        return _packs_page(request, export=form, status_code=400)
    from solver.packs import PackError

    d = form.cleaned_data
    try:
        handle, counts = packs.export_pack_file(
            topic=d["topic"], statuses=tuple(d["statuses"]), site=d["site"].strip()
        )
    except (PackError, errors.RunRefused) as exc:
        form.add_error(None, str(exc))
        return _packs_page(request, export=form, status_code=400)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    topic = f"-{d['topic']}" if d["topic"] else ""
    response = FileResponse(
        handle,
        as_attachment=True,
        filename=f"suanjing-pack{topic}-{stamp}.sqlite",
        content_type="application/vnd.sqlite3",
    )
    response["X-Pack-Problems"] = str(counts["problems"])
    response["X-Pack-Answers"] = str(counts["solutions"])
    return response


@csrf_exempt  # checked below, once the body is known to be of an acceptable size
@login_required
def pack_upload(request: HttpRequest) -> HttpResponse:
    """Receive a pack and show what importing it would change (a dry run). A body larger than the limit
    is refused before it is read (the CSRF check would otherwise parse it first)."""
    permissions.require_admin(request.user)
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "POST"})
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY:
        refused = (
            f"The file is larger than {MAX_MB} MB: import it with `manage.py import_pack`. "
            f"文件大于 {MAX_MB} MB，请用 manage.py import_pack 导入。"
        )
        return _packs_page(request, refused=refused, status_code=413)
    return _pack_upload(request)


@csrf_protect
def _pack_upload(request: HttpRequest) -> HttpResponse:
    from solver.packs import PackError

    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _packs_page(request, upload=form, status_code=400)
    upload = form.cleaned_data["pack"]
    try:
        token = packs.receive_upload(chunks=upload.chunks(), name=upload.name)
        report = packs.check_upload(token=token)
    except PackError as exc:
        return _packs_page(request, upload=form, refused=str(exc), status_code=400)
    tokens = [t for t in request.session.get(SESSION_KEY, []) if t != token]
    for stale in tokens[: -(KEEP_TOKENS - 1)]:
        packs.discard_upload(token=stale)
    request.session[SESSION_KEY] = [*tokens[-(KEEP_TOKENS - 1) :], token]
    return _report(request, report, token=token, name=packs.upload_name(token=token))


@require_POST
@login_required
def pack_import(request: HttpRequest) -> HttpResponse:
    """Import (or cancel) an upload this admin checked."""
    from solver.packs import PackError

    permissions.require_admin(request.user)
    token = request.POST.get("token", "")
    mine = request.session.get(SESSION_KEY, [])
    if token not in mine:
        raise errors.NotFound(
            "no such upload: upload the pack again 没有这个上传，请重新上传答案包"
        )
    request.session[SESSION_KEY] = [t for t in mine if t != token]
    if request.POST.get("action") == "cancel":
        packs.discard_upload(token=token)
        return _packs_page(
            request, notice="Cancelled: nothing was imported. 已取消，未导入任何内容。"
        )
    try:
        name = packs.upload_name(token=token)
        report = packs.import_upload(token=token)
    except PackError as exc:
        return _packs_page(request, refused=str(exc), status_code=400)
    return _report(request, report, name=name)


def _report(request, report: packs.ImportReport, *, name: str, token: str = "") -> HttpResponse:
    """The dry run (with `token`: the pack waits for "Import") or the import's result."""
    rows = [
        ("added", "Problems added", "新增题目", report.problems_created),
        ("present", "Problems already here", "已有题目", report.problems_matched),
        ("skipped", "Problems skipped", "跳过的题目", report.problems_skipped),
        ("added", "Answers added", "新增答案", report.solutions_created),
        ("added", "Answers upgraded", "升级的答案", report.solutions_upgraded),
        ("present", "Answers already here or kept", "已有或保留的答案", report.solutions_kept),
        ("added", "New model manifests", "新模型清单", report.manifests_created),
    ]
    changes = report.problems_created + report.solutions_created + report.solutions_upgraded
    return _tools(
        request,
        "pack_report.html",
        {
            "rows": rows,
            "notes": [n for n in report.notes if not n.startswith("dry run:")],
            "summary": report.summary(),
            "name": name,
            "token": token,
            "changes": changes,
        },
    )
