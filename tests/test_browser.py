"""A real browser (Debian's headless Chromium, driven by Playwright) against the running site.

A student asks a banked question reworded (instant answer), asks a new one (the reasoning streams in,
then the answer), asks it again (instant hit); a teacher approves that answer. Screenshots go to
docs/screenshots/. The answer cache is the real one (MiniLM); the live answer comes from a scripted
engine, because the tiny random test model never reaches a final answer (its failure path is tested
with the real model in test_site_live.py).
"""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import pytest

from tests.site_fixtures import *  # noqa: F403
from tests.site_fixtures import FakeManifest, ScriptedEngine
from tutor import services

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

BANKED = (
    "A cage holds chickens and rabbits: 35 heads and 94 legs in all. How many rabbits are there?"
)
REWORDED = (
    "There are 35 heads and 94 legs in a cage of chickens and rabbits. How many rabbits are there?"
)
NEW = "如果今天是星期三，100天后是星期几？"
LIVE = [
    "<think>\n",
    "100 ÷ 7 = 14 余 2。",
    "一周有7天，100天后相当于往后数2天。",
    "星期三往后数2天是星期五。\n",
    "</think>\n\n",
    "100 = 7 × 14 + 2，所以是星期三之后的第2天：",
    "\\boxed{星期五}",
]


@pytest.fixture(scope="module")
def real_cache_class():
    cache = pytest.importorskip("solver.cache", reason="solver/cache.py is not there yet")
    return cache.SemanticCache


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; Django's ORM then refuses to run in the
    # test's own thread unless told that this is fine (it is: nothing here is async).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not Path(CHROMIUM).exists():
        pytest.skip("apt-get install -y chromium fonts-wqy-microhei")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def sign_in(browser, live_server, username: str):
    page = browser.new_context(viewport={"width": 1100, "height": 900}, locale="zh-CN").new_page()
    page.goto(live_server.url + "/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "pw-" + username)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/$"))
    return page


def test_a_student_gets_hits_and_a_live_answer_and_a_teacher_approves_it(
    browser, live_server, cast, make_problem, settings, real_cache_class
):
    settings.SUANJING_LIVE_ORPHAN_S = 60
    services.use_cache(None)  # the real cache, built from the bank on first use
    banked = make_problem(
        BANKED, reference="12", lang="en", topic="linear_systems", solutions=(("approved", "12"),)
    )
    services.get_cache()
    gate = threading.Event()
    services.use_engine(
        ScriptedEngine(LIVE, gate=gate, gate_at=4),
        FakeManifest(name="deepseek-r1-distill-qwen-1.5b"),
    )
    SHOTS.mkdir(parents=True, exist_ok=True)

    student = sign_in(browser, live_server, "alice")
    student.goto(live_server.url + "/ask")
    # 1. A banked question, reworded: the answer is there at once, with the match and why.
    student.fill("#question", REWORDED)
    student.click("#ask-button")
    block = student.wait_for_selector(".answer-block[data-outcome=hit]", timeout=20_000)
    assert f"matched problem #{banked.pk}" in block.inner_text()
    assert student.locator(".answer-text math menclose").count() == 1  # \boxed{12} as MathML
    student.screenshot(path=str(SHOTS / "ask-hit.png"), full_page=True)

    # 2. A new question: the reasoning streams in, then the answer.
    student.fill("#question", NEW)
    student.click("#ask-button")
    student.wait_for_function(
        "document.getElementById('reasoning').textContent.includes('100 ÷ 7')"
    )
    student.screenshot(path=str(SHOTS / "ask-streaming.png"), full_page=True)
    gate.set()
    block = student.wait_for_selector(".answer-block[data-outcome=generated]", timeout=20_000)
    assert "星期五" in block.inner_text()
    assert student.evaluate("document.getElementById('reasoning-box').open") is False  # folded away
    student.screenshot(path=str(SHOTS / "ask-answered.png"), full_page=True)
    assert services.live_jobs.wait_idle(10)

    # 3. Asked again: an instant hit on the problem the live answer created.
    student.fill("#question", NEW)
    student.click("#ask-button")
    block = student.wait_for_selector(".answer-block[data-outcome=hit]", timeout=20_000)
    problem_id = int(re.search(r"matched problem #(\d+)", block.inner_text()).group(1))
    assert problem_id != banked.pk
    assert "Not yet checked" in block.inner_text()

    # 4. A teacher approves that answer.
    teacher = sign_in(browser, live_server, "teacher")
    teacher.goto(f"{live_server.url}/bank/{problem_id}")
    teacher.click("button.approve")
    teacher.wait_for_selector(".solution .tag-approved")
    teacher.screenshot(path=str(SHOTS / "teacher-problem.png"), full_page=True)
    teacher.goto(live_server.url + "/bank")
    teacher.screenshot(path=str(SHOTS / "teacher-bank.png"), full_page=True)
    student.reload()
    student.fill("#question", NEW)
    student.click("#ask-button")
    block = student.wait_for_selector(".answer-block[data-outcome=hit]", timeout=20_000)
    assert "Approved by a teacher" in block.inner_text()


def test_chromium_is_the_debian_package():
    assert shutil.which("chromium") == CHROMIUM or Path(CHROMIUM).exists()
