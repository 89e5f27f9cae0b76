"""The admin's pages speak both languages, as the rest of the site does (issue 12): the precompute run
pages (the history and the start form, a run's page) and the tools pages (engine and queue, answer
packs). Every heading, table heading, term and form label carries Chinese beside the English; a run's
status and an item's result are said in both; form errors too.
"""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import FakeManifest
from tutor.models import PrecomputeRun, Problem, RunItem
from tutor.services import precompute, runtime

HAN = re.compile(r"[\u4e00-\u9fff]")
# The labels of a page: headings, table headings, terms of a description list, form labels, buttons.
LABELS = re.compile(r"<(h1|h2|th|dt|label|button|legend|summary)\b[^>]*>(.*?)</\1>", re.S)
# Technical words that read the same in both languages here.
SAME_IN_BOTH = {"#", "Tokens", "CPU"}


@pytest.fixture
def engine_info(db):
    runtime.use_engine(object(), FakeManifest())  # current_model() reads the manifest only
    yield
    runtime.use_engine(None, None)


@pytest.fixture
def admin(site, cast, settings, tmp_path, engine_info) -> Client:
    settings.VAR_DIR = tmp_path / "var"
    settings.SUANJING_ENGINE_URL = ""
    client = Client()
    client.force_login(cast.admin)
    return client


@pytest.fixture
def run(db) -> PrecomputeRun:
    """A run of two problems: one answered (verified) in 3.5 s, one waiting."""
    for text in ("1+1=?", "2+2=?"):
        Problem.objects.create(text=text, topic="sums")
    created = precompute.create_run(
        selection=precompute.Selection(topic="sums", limit=5), enqueue=False
    )
    item = created.items.first()
    RunItem.objects.filter(pk=item.pk).update(
        status=RunItem.Status.DONE, outcome="verified", elapsed_s=3.5, new_tokens=40, attempts=1
    )
    return created


def english_only(page: str) -> list[str]:
    found = []
    for _, inner in LABELS.findall(page):
        text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inner)).split())
        if text and text not in SAME_IN_BOTH and not HAN.search(text):
            found.append(text)
    return found


@pytest.mark.parametrize("url", ["/runs", "/runs/RUN", "/tools", "/tools/packs"])
def test_every_label_of_the_admins_pages_is_in_both_languages(admin, run, url):
    response = admin.get(url.replace("RUN", str(run.pk)))
    assert response.status_code == 200
    page = response.content.decode()
    assert english_only(page) == []


def test_the_run_pages_say_status_selection_and_results_in_both_languages(admin, run):
    history = html.unescape(admin.get("/runs").content.decode())
    assert "waiting for a worker 等待后台进程" in history
    assert "Which problems 哪些题" in history
    assert "problems without a servable answer 没有可用答案的题" in history
    page = html.unescape(admin.get(f"/runs/{run.pk}").content.decode())
    assert (
        "problems without a servable answer 没有可用答案的题 · topic 主题 sums · at most 最多 5"
        in page
    )
    assert "verified 已核对" in page and "Slowest problems 最慢的题" in page
    assert 'data-w-running="running 运行中"' in page  # what run.js writes as the status changes
    # The JSON the page polls is unchanged (machine words).
    assert admin.get(f"/runs/{run.pk}/progress").json()["status"] == "queued"
    tools = html.unescape(admin.get("/tools").content.decode())
    assert "waiting for a worker 等待后台进程" in tools


def test_the_run_forms_errors_are_in_both_languages(admin, run):
    bad = admin.post("/runs", {"which": "unanswered", "samples": 1, "ids": "1, x"})
    assert bad.status_code == 400
    assert "Use problem numbers separated by commas. 请用逗号分隔题号。" in bad.content.decode()
    nothing = admin.post("/runs", {"which": "unanswered", "samples": 1, "topic": "none-such"})
    text = nothing.content.decode()
    assert nothing.status_code == 400 and "No problem matches" in text and "未能开始预生成" in text
