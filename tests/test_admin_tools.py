"""The admin's own pages (issue 12): answer packs from the site (export to a download; upload, a dry-run
report, import) and the engine and queue status page. Students and teachers cannot reach them; a pack
round-trips through the pages; a bad upload is refused with the command's message and changes nothing;
the status page answers quickly with the engine down, and never starts one."""

from __future__ import annotations

import datetime as dt
import io
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from django.test import Client
from django.utils import timezone

from solver import packs as pack_format
from tests import test_browser
from tests.site_fixtures import *  # noqa: F403
from tests.test_browser import sign_in
from tutor.models import LiveGeneration, PrecomputeRun, Problem, Solution
from tutor.services import packs, status, workers

pytestmark = pytest.mark.django_db(transaction=True)
browser = test_browser.browser  # the fixture: headless Chromium

CHICKENS = "鸡兔同笼，共有35个头，94只脚，问兔有多少只？"
PAGES = [
    ("get", "/tools"),
    ("get", "/tools/packs"),
    ("post", "/tools/packs/export"),
    ("post", "/tools/packs/upload"),
    ("post", "/tools/packs/import"),
]


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def var(settings, tmp_path):
    """A SUANJING_VAR of the test's own (uploads, the local engine service's record), no engine URL."""
    settings.VAR_DIR = tmp_path / "var"
    settings.SUANJING_ENGINE_URL = ""
    return settings.VAR_DIR


@pytest.fixture
def admin(site, cast, var) -> Client:
    return client_for(cast.admin)


@pytest.fixture
def bank_of_two(make_problem):
    first = make_problem(CHICKENS, reference="12", topic="algebra", solutions=(("verified", "12"),))
    second = make_problem("三角形内角和是多少度？", reference="180", topic="geometry")
    Solution.objects.create(
        problem=second, final="180", answer="\\boxed{180}", status="unverified", source="batch"
    )
    return first, second


def bank_state() -> list[tuple]:
    return sorted(
        (p.text, p.reference_answer, p.topic, sorted(s.final for s in p.solutions.all()))
        for p in Problem.objects.all()
    )


def export(admin: Client, **data) -> bytes:
    response = admin.post("/tools/packs/export", {"statuses": list(packs.EXPORT_STATUSES), **data})
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Disposition"].startswith("attachment;")
    return b"".join(response.streaming_content)


def upload(admin: Client, data: bytes, name: str = "pack.sqlite"):
    file = io.BytesIO(data)
    file.name = name
    return admin.post("/tools/packs/upload", {"pack": file})


def token_of(page: str) -> str:
    return page.split('name="token" value="', 1)[1].split('"', 1)[0]


def uploads_left(var) -> list:
    folder = var / "pack-uploads"
    return list(folder.iterdir()) if folder.exists() else []


# -- who may -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "teacher"])
@pytest.mark.parametrize(("method", "url"), PAGES)
def test_students_and_teachers_get_403_on_every_admin_tool(site, cast, var, who, method, url):
    client = client_for(getattr(cast, who))
    client.raise_request_exception = False
    response = getattr(client, method)(url)
    assert response.status_code == 403


@pytest.mark.parametrize(("method", "url"), PAGES)
def test_signed_out_visitors_are_sent_to_sign_in(site, var, method, url):
    response = getattr(Client(), method)(url)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_admin_sees_the_tools_in_the_menu_and_others_do_not(site, cast, var):
    assert 'href="/tools"' in client_for(cast.admin).get("/").content.decode()
    assert 'href="/tools"' not in client_for(cast.teacher).get("/").content.decode()


# -- answer packs --------------------------------------------------------------------------------------


def test_a_pack_round_trips_through_the_pages_and_twice_changes_nothing(
    admin, var, bank_of_two, tmp_path
):
    before = bank_state()
    data = export(admin, site="Example School")
    assert data.startswith(pack_format.SQLITE_HEADER)
    (tmp_path / "out.sqlite").write_bytes(data)
    info = pack_format.pack_info(tmp_path / "out.sqlite")
    assert (info["problems"], info["solutions"], info["site"]) == (2, 2, "Example School")

    # A fresh bank: the upload is checked (a dry run changes nothing), then imported.
    Problem.objects.all().delete()
    checked = upload(admin, data, name="学校 pack.sqlite")
    page = checked.content.decode()
    assert checked.status_code == 200 and "What importing would change" in page
    assert "Problems added 新增题目</th><td>2" in page and Problem.objects.count() == 0
    imported = admin.post("/tools/packs/import", {"token": token_of(page), "action": "import"})
    page = imported.content.decode()
    assert imported.status_code == 200 and "The pack was imported. 答案包已导入。" in page
    assert bank_state() == before
    solution = Solution.objects.get(final="12")
    assert solution.source == "import" and solution.from_pack["file"] == "学校_pack.sqlite"
    assert solution.from_pack["site"] == "Example School"
    assert uploads_left(var) == []

    # The same pack again: nothing added, everything already here, nothing changed.
    again = upload(admin, data)
    page = again.content.decode()
    assert "Problems added 新增题目</th><td>0" in page and "Problems already here" in page
    assert "Nothing would change" in page
    rows = list(Solution.objects.order_by("id").values_list("id", "status", "final"))
    done = admin.post("/tools/packs/import", {"token": token_of(page), "action": "import"})
    assert "Nothing changed" in done.content.decode()
    assert bank_state() == before
    assert list(Solution.objects.order_by("id").values_list("id", "status", "final")) == rows


def test_the_export_takes_the_commands_choices(admin, bank_of_two, tmp_path):
    data = export(admin, topic="geometry", statuses=["verified", "unverified"])
    (tmp_path / "geometry.sqlite").write_bytes(data)
    info = pack_format.pack_info(tmp_path / "geometry.sqlite")
    assert info["problems"] == 1 and info["solutions"] == info["by_status"]["unverified"] == 1
    refused = admin.post("/tools/packs/export", {"statuses": ["great"]})
    assert refused.status_code == 400 and Problem.objects.count() == 2


def test_an_imported_approval_stays_a_claim(admin, var, make_problem, tmp_path):
    from tests.test_provenance import forged_pack

    data = open(forged_pack(tmp_path / "forged.sqlite"), "rb").read()
    page = upload(admin, data, name="forged.sqlite").content.decode()
    admin.post("/tools/packs/import", {"token": token_of(page), "action": "import"})
    imported = Solution.objects.get()
    assert imported.status == "verified" and not imported.approved_here
    assert "edited_by_teacher" not in imported.evidence


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garbage(data: bytes) -> bytes:
    return b"<html>this is not a database at all</html>" * 50


def _wrong_version(data: bytes) -> bytes:
    import sqlite3
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/p.sqlite"
        open(path, "wb").write(data)
        db = sqlite3.connect(path)
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        db.commit()
        db.close()
        return open(path, "rb").read()


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_truncated, "truncated"),
        (_garbage, "not an answer pack"),
        (_wrong_version, "99"),
    ],
)
def test_a_malformed_upload_is_refused_with_the_reason_and_nothing_changes(
    admin, var, bank_of_two, spoil, message
):
    data = export(admin)
    before = bank_state()
    response = upload(admin, spoil(data), name="broken.sqlite")
    page = response.content.decode()
    assert response.status_code == 400
    assert "Refused, nothing imported 已拒绝，未导入任何内容" in page and message in page
    assert str(var) not in page  # the server's folders are not shown
    assert bank_state() == before and uploads_left(var) == []


def test_an_empty_upload_is_refused(admin, var, bank_of_two):
    before = bank_state()
    response = upload(admin, b"")
    assert (
        response.status_code == 400
        and "The file is empty, not an answer pack" in response.content.decode()
    )
    assert bank_state() == before and uploads_left(var) == []


def test_a_pack_larger_than_the_limit_is_refused_before_it_is_read(admin, var, monkeypatch):
    from tutor.views import admin_tools

    monkeypatch.setattr(admin_tools, "MAX_BODY", 1000)
    response = upload(admin, b"SQLite format 3\x00" + b"x" * 5000)
    assert response.status_code == 413 and "larger than" in response.content.decode()
    assert uploads_left(var) == []
    # The service keeps the limit too, whatever calls it.
    monkeypatch.setattr(packs, "UPLOAD_MAX_BYTES", 10)
    with pytest.raises(pack_format.PackError, match="larger than"):
        packs.receive_upload(chunks=[b"x" * 8, b"x" * 8], name="big.sqlite")
    assert uploads_left(var) == []


def test_an_upload_is_only_imported_by_the_admin_who_checked_it_and_only_once(
    admin, cast, var, bank_of_two
):
    data = export(admin)
    Problem.objects.all().delete()
    token = token_of(upload(admin, data).content.decode())
    other = client_for(cast.admin)  # another session of an admin: not its upload
    other.raise_request_exception = False
    assert (
        other.post("/tools/packs/import", {"token": token, "action": "import"}).status_code == 404
    )
    cancelled = admin.post("/tools/packs/import", {"token": token, "action": "cancel"})
    assert "Cancelled: nothing was imported" in cancelled.content.decode()
    assert Problem.objects.count() == 0 and uploads_left(var) == []
    admin.raise_request_exception = False
    assert (
        admin.post("/tools/packs/import", {"token": token, "action": "import"}).status_code == 404
    )


def test_an_upload_without_the_csrf_token_is_refused(site, cast, var):
    client = Client(enforce_csrf_checks=True)
    client.force_login(cast.admin)
    file = io.BytesIO(b"SQLite format 3\x00")
    file.name = "a.sqlite"
    assert client.post("/tools/packs/upload", {"pack": file}).status_code == 403
    assert uploads_left(var) == []


def test_forgotten_uploads_are_purged(admin, var):
    token = packs.receive_upload(chunks=[b"abc"], name="a.sqlite")
    folder = var / "pack-uploads" / token
    old = time.time() - packs.UPLOAD_KEEP_S - 10
    import os

    os.utime(folder, (old, old))
    assert packs.purge_uploads() == 1 and uploads_left(var) == []


# -- the engine and the queue --------------------------------------------------------------------------


def test_with_no_engine_configured_the_page_says_so_and_starts_none(admin, site, var):
    started = time.monotonic()
    response = admin.get("/tools")
    page = response.content.decode()
    assert response.status_code == 200 and time.monotonic() - started < 5
    assert "not started 未启动" in page and "no SUANJING_ENGINE_URL" in page
    assert site.loaded_engine() is None and not (var / "engine-service.json").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_engine_that_is_down_is_reported_at_once(admin, settings):
    settings.SUANJING_ENGINE_URL = f"http://127.0.0.1:{_free_port()}/v1"
    started = time.monotonic()
    page = admin.get("/tools").content.decode()
    assert time.monotonic() - started < 5
    assert "not answering 无响应" in page and "does not answer" in page


def test_an_engine_that_never_answers_costs_the_page_at_most_its_timeout(admin, settings):
    with socket.socket() as listener:  # accepts connections (the backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        settings.SUANJING_ENGINE_URL = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        started = time.monotonic()
        page = admin.get("/tools").content.decode()
        took = time.monotonic() - started
    assert took < status.ENGINE_TIMEOUT_S + 3
    assert "not answering 无响应" in page and "ReadTimeout" in page


@pytest.fixture
def engine_service():
    """solver.serve's real HTTP service; its engine a stand-in object (no model is loaded)."""
    from solver.serve import Service, ServiceSettings, make_server

    service = Service(ServiceSettings(model_name="tiny-qwen2"), lambda: None, "/nonexistent")
    server = make_server(service, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield service, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    service.close()


def test_the_engine_services_health_and_figures_are_shown(admin, settings, engine_service):
    service, url = engine_service
    settings.SUANJING_ENGINE_URL = url
    page = admin.get("/tools").content.decode()
    assert "loading the model 正在加载模型" in page and "tiny-qwen2" in page
    service.engine = SimpleNamespace(stats=SimpleNamespace(tokens=0), close=lambda: None)
    page = admin.get("/tools").content.decode()
    assert "healthy 正常" in page and "Tokens/s" in page
    assert '<dd id="engine-queue">0 of 共 64</dd>' in page


def test_the_local_service_is_asked_where_runtime_wrote_it_down(admin, var, engine_service):
    import json

    service, url = engine_service
    var.mkdir(parents=True, exist_ok=True)
    (var / "engine-service.json").write_text(json.dumps({"pid": 1, "url": url, "model": "m"}))
    page = admin.get("/tools").content.decode()
    assert "this machine's service" in page and "tiny-qwen2" in page


def test_live_answers_tasks_workers_and_runs_are_counted(admin, cast, bank_of_two):
    from django_tasks_db.models import DBTaskResult

    now = timezone.now()
    LiveGeneration.objects.create(
        key="text:a",
        text="<b>x</b> 1+1?",
        asker=cast.alice,
        lease_until=now + dt.timedelta(seconds=60),
    )
    LiveGeneration.objects.create(
        key="text:b", text="2+2?", asker=cast.bob, lease_until=now - dt.timedelta(seconds=5)
    )
    LiveGeneration.objects.create(key="text:c", text="3+3?", status="done")
    for state, worker in (("READY", []), ("READY", []), ("RUNNING", ["w-alive"])):
        DBTaskResult.objects.create(
            status=state,
            args_kwargs={"args": [1], "kwargs": {}},
            task_path="tutor.tasks.process_run",
            backend_name="default",
            run_after=now - dt.timedelta(seconds=1),
            started_at=now if state == "RUNNING" else None,
            worker_ids=worker,
        )
    workers.beat(worker_id="w-alive")
    workers.beat(worker_id="w-idle")  # beating, no task claimed yet: found in the cache table
    run = PrecomputeRun.objects.create(status="running", total=2)
    PrecomputeRun.objects.create(status="done", total=1)

    snap = status.snapshot()
    assert (snap.live_running, snap.live_stalled) == (2, 1)
    assert (snap.queue.waiting, snap.queue.running) == (2, 1)
    assert snap.queue.by_task == [{"task": "tutor.tasks.process_run", "waiting": 2, "running": 1}]
    assert snap.workers_alive == ["w-alive", "w-idle"]
    assert [r.pk for r, _ in snap.runs] == [run.pk]

    page = admin.get("/tools").content.decode()
    assert "2 running now 正在生成" in page and "waiting to be taken over" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page  # a question is text
    assert '<dd id="queue-waiting">2' in page and "2 alive 在线" in page
    assert f'href="/runs/{run.pk}"' in page
    workers.forget(worker_id="w-alive")
    workers.forget(worker_id="w-idle")
    page = admin.get("/tools").content.decode()
    assert "0 alive 在线" in page and "no worker is running" in page


# -- in a real browser, at a desktop's and a phone's width ---------------------------------------------


@pytest.mark.slow
def test_an_admin_imports_a_pack_through_the_pages_in_a_browser(
    browser, live_server, site, cast, var, bank_of_two, tmp_path
):
    """At a phone's width: every page of the journey fits 390 px."""
    before = bank_state()
    path = tmp_path / "from-another-school.sqlite"
    packs.export_pack(path=str(path), site="Another School")
    Problem.objects.all().delete()

    page = sign_in(browser, live_server, "admin")
    page.set_viewport_size({"width": 390, "height": 844})

    def fits() -> None:
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{page.url} is {width} px wide"

    page.click("text=Tools 工具")
    assert "Engine and queue 引擎与队列" in page.content()
    fits()
    page.click("#tools-nav >> text=Answer packs 答案包")
    fits()
    page.set_input_files("input[name=pack]", str(path))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#dry-run")
    fits()
    assert Problem.objects.count() == 0
    assert page.inner_text("#report tr:first-child td") == "2"
    page.click("#import-button")
    page.wait_for_selector("#imported")
    fits()
    assert "The pack was imported" in page.inner_text("#imported")
    assert bank_state() == before and uploads_left(var) == []
    assert Solution.objects.filter(source="import").count() == 2
