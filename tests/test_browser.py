"""A real browser (Debian's headless Chromium, driven by Playwright) against the running site, with the
real parts: the answer cache is the real one (MiniLM) over problems from the bundled bank, and the live
answer comes from the real embedded SmolLM2-135M INT8 engine.

A student asks a banked question reworded (instant answer, "why?" in plain words), asks a new one (the
model's text streams in, with no broken characters, then the answer, labelled unchecked), asks it again
(instant hit); a teacher approves that answer, and the student is then served it as approved; a question
the model loops on is stopped by the loop guard within seconds. Then issue 10's journeys (the trust
loop; each of its eight findings is named where it is met), on the stand-in cache and a scripted engine:
a wrong precomputed answer is never shown (the answer key is, with a worked solution on its way), a
missed question a teacher links is a hit for the next student, a rejected answer is never served again,
a suggestion is answered, students' questions stay out of the bank and a flagged one is found with the
labelled filters, code shows as code, a loop and a Stop end calmly, the length limit is stated and
enforced, and the page works without JavaScript. Screenshots go to docs/screenshots/ at desktop and
390 px widths (two are in the README).

The live generation is decoded greedily (the site samples at the prompt family's temperature), so that
the run is reproducible: SmolLM2 answers NEW with a final answer under greedy decoding — a wrong one
(it is weak at math, and the page says so), which is fine: the flow only needs an extracted final answer,
stored unverified and servable.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.site_fixtures import *  # noqa: F403
from tutor.models import Problem, Solution
from tutor.services import bank as bank_service
from tutor.services import live as live_service
from tutor.services import runtime
from tutor.services.text import question_key

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Topics of the bundled bank shown in the teacher's screenshots (none of them holds NEW).
BANK_TOPICS = ("linear_systems", "geometry", "percentages")
# "A farmer keeps chickens and rabbits. Together they have 35 heads and 94 legs. How many rabbits ...?"
BANKED_ID = "en-linear-001"
REWORDED = (
    "There are 35 heads and 94 legs in a cage of chickens and rabbits. How many rabbits are there?"
)
# Which short questions greedy SmolLM2 answers and which it loops on depends on the machine's CPU kernels
# (the same prompt gave an answer on one machine and "1. 2. 3. … 72." on another). So the test asks the
# engine first, with the site's prompt and budget, and takes the first candidate that ends with a final
# answer as NEW and the first that the loop guard stops as LOOPS (`pick_questions`).
NEW_CANDIDATES = (
    "小红有8支铅笔，又买了4支，一共有几支？",
    "小明有12个苹果，吃了5个，还剩几个？",
    "一个长方形长6米，宽4米，面积是多少平方米？",
    "Tom has 7 marbles and buys 5 more. How many marbles does he have now?",
    "A shop sells pens at 3 yuan each. How much do 9 pens cost?",
    "What is 15 + 27?",
)
LOOP_CANDIDATES = (
    "小明有12个苹果，吃了5个，还剩几个？",
    "小红有8支铅笔，又买了4支，一共有几支？",
    "一根绳子长20米，剪去一半后又剪去3米，还剩多少米？",
    "小华每天存5元钱，存了多少天才能存够60元？",
    "今天是星期三，100天后是星期几？",
)
NEW = NEW_CANDIDATES[0]  # replaced by pick_questions
LOOPS = LOOP_CANDIDATES[0]


def pick_questions(engine, manifest, max_new_tokens: int) -> tuple[str, str]:
    """(NEW, LOOPS): the first candidate greedy SmolLM2 answers with a final answer within the budget, and
    the first one the loop guard stops, each generated as the site generates a live answer."""
    from solver.answers import parse_output
    from solver.engine import GenerationParams
    from solver.prompts import get_family

    family = get_family(manifest.family)
    params = GenerationParams(max_new_tokens=max_new_tokens, greedy=True)
    results: dict[str, tuple[str, str | None]] = {}

    def outcome(question: str) -> tuple[str, str | None]:
        if question not in results:
            result = engine.engine.generate(family.render(question), params)
            final = parse_output(result.text, finish_reason=result.finish_reason).final
            results[question] = (result.finish_reason, final)
        return results[question]

    new = next((q for q in NEW_CANDIDATES if outcome(q)[0] == "stop" and outcome(q)[1]), None)
    loops = next((q for q in LOOP_CANDIDATES if q != new and outcome(q)[0] == "loop"), None)
    assert new and loops, f"no candidate fits on this machine: {results}"
    return new, loops


class GreedyEngine:
    """The real engine, decoding every request greedily (the same answer on every run)."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def stream(self, prompt: str, params):
        return self.engine.stream(prompt, dataclasses.replace(params, greedy=True))


@pytest.fixture
def smollm2(embedded_model):
    """The real SmolLM2 in a child process, as the site runs its engine."""
    from solver.engine import EngineSettings
    from solver.engine_process import EngineProcess

    engine = EngineProcess(embedded_model.path, EngineSettings(threads=2, kv_cache_gb=0.5))
    yield GreedyEngine(engine), embedded_model.manifest
    engine.close()


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


def load_bank() -> dict[str, Problem]:
    """Problems of a few topics from fixtures/problems.jsonl, through the site's real loader."""
    items = map(json.loads, (REPO / "fixtures" / "problems.jsonl").read_text().splitlines())
    return {
        item["id"]: bank_service.import_fixture_problem(item=item)[0]
        for item in items
        if item.get("topic") in BANK_TOPICS
    }


def sign_in(browser, live_server, username: str, *, javascript: bool = True):
    # bypass_csp: Playwright's wait_for_function evaluates in the page, which the site's policy
    # (script-src 'self') forbids; the policy itself is tested in tests/test_security.py
    page = browser.new_context(
        viewport={"width": 1100, "height": 900},
        locale="zh-CN",
        bypass_csp=True,
        java_script_enabled=javascript,
    ).new_page()
    page.goto(live_server.url + "/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "pw-" + username)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/$"))
    return page


def test_a_student_gets_hits_and_a_live_answer_and_a_teacher_approves_it(
    browser, live_server, site, cast, settings, smollm2
):
    settings.SUANJING_LIVE_ORPHAN_S = 60
    settings.SUANJING_MAX_NEW_TOKENS = 384  # SmolLM2 answers NEW in ~220 tokens
    settings.SUANJING_CACHE_THRESHOLD = ""
    runtime.use_cache(None)  # the real cache (MiniLM), built from the bank below on first use
    bank = load_bank()
    banked = bank[BANKED_ID]
    cache = runtime.get_cache()
    assert type(cache).__name__ == "SemanticCache" and len(cache) == len(bank)
    runtime.use_engine(*smollm2)
    global NEW, LOOPS
    NEW, LOOPS = pick_questions(*smollm2, settings.SUANJING_MAX_NEW_TOKENS)
    SHOTS.mkdir(parents=True, exist_ok=True)

    student = sign_in(browser, live_server, "alice")
    student.goto(live_server.url + "/ask")
    # The page says that the model on this computer is small and weak at math.
    assert "smollm2" in student.inner_text("main").lower()
    # 1. A banked question, reworded: the answer is there at once, with the match and why.
    student.fill("#question", REWORDED)
    student.click("#ask-button")
    block = student.wait_for_selector(".answer-block[data-outcome=hit]", timeout=20_000)
    text = block.inner_text()
    assert "From the bank" in text and f"#{banked.pk}" not in text  # no internal ids for students
    student.click("details.why summary")  # why, in one plain sentence behind a toggle
    assert student.locator("details.why p").inner_text().strip()
    assert "Approved by a teacher" in text  # the bundled bank's worked solution
    # Its two steps come as hints first (tests/test_steps.py); the student asks for the whole solution.
    assert student.locator(".answer-text").count() == 0
    student.click("#whole-button")
    student.wait_for_selector(".answer-text")
    assert student.locator(".answer-text math menclose").count() == 1  # \boxed{12} as MathML
    shoot(student, "ask-hit")

    # 2. A new question: the model's text streams in as it is generated, then the answer.
    student.fill("#question", NEW)
    student.click("#ask-button")
    student.wait_for_function(
        "document.getElementById('answer-stream').textContent.length > 40"
        " && !document.querySelector('.answer-block')",
        timeout=60_000,
    )
    student.screenshot(path=str(SHOTS / "ask-streaming.png"), full_page=True)
    streamed = student.inner_text("#answer-stream") + student.inner_text("#reasoning")
    block = student.wait_for_selector(".answer-block[data-outcome=generated]", timeout=120_000)
    assert live_service.live_jobs.wait_idle(10)
    live = Problem.objects.get(text=NEW)
    assert live.origin == Problem.Origin.LIVE and live.pk not in {p.pk for p in bank.values()}
    answer = live.solutions.get()
    assert answer.source == "live" and answer.status == Solution.Status.UNVERIFIED
    assert answer.final and answer.model_name == "smollm2-135m-instruct"
    assert answer.prompt_version == "chatml/1" and answer.new_tokens > 0
    text = block.inner_text()
    assert "stored as problem" not in text and "Not checked yet" in text
    # Finding 7: the Chinese streamed and stored has no broken characters (U+FFFD).
    assert "\ufffd" not in streamed + text and "\ufffd" not in answer.answer + answer.reasoning
    assert live.source == Problem.Source.STUDENT  # kept apart from the curated bank
    assert (
        student.locator(".answer-block .final.final-unverified").count() == 1
    )  # not the green box
    assert student.evaluate("document.getElementById('reasoning-box').open") is False  # folded away
    shoot(student, "ask-answered")  # in the README

    # 3. Asked again: an instant hit on the problem the live answer created.
    student.fill("#question", NEW)
    student.click("#ask-button")
    block = student.wait_for_selector(".answer-block[data-outcome=hit]", timeout=20_000)
    assert "Not checked yet" in block.inner_text()

    # 4. A teacher approves that answer; the student is served it as approved.
    teacher = sign_in(browser, live_server, "teacher")
    teacher.goto(f"{live_server.url}/bank/{live.pk}")
    teacher.click(".solution button.approve")  # not "Promote to bank"
    teacher.wait_for_selector(".solution .tag-approved")
    answer.refresh_from_db()
    assert answer.status == Solution.Status.APPROVED and answer.reviewed_by == cast.teacher
    shoot(teacher, "teacher-problem")  # in the README
    teacher.goto(live_server.url + "/bank")
    assert "鸡" in teacher.inner_text("main")  # Chinese problems from the bundled bank are listed
    teacher.screenshot(path=str(SHOTS / "teacher-bank.png"))  # the first screenful
    student.reload()
    student.fill("#question", NEW)
    student.click("#ask-button")
    block = student.wait_for_selector(".answer-block[data-outcome=hit]", timeout=20_000)
    assert "Approved by a teacher" in block.inner_text()

    # 5. Finding 4: a question greedy SmolLM2 loops on is stopped by the loop guard within seconds (a
    #    few hundred tokens, not the whole budget), with a clear message and what to do next; asked
    #    again, the failure is remembered instead of rerun.
    settings.SUANJING_MAX_NEW_TOKENS = 2048  # the guard, not the budget, must end it
    started = time.monotonic()
    block = ask_in(student, live_server, LOOPS, "failed", timeout=120_000)
    took = time.monotonic() - started
    assert live_service.live_jobs.wait_idle(10)
    assert "kept repeating itself" in block.inner_text(), block.inner_text()
    looped = Solution.objects.filter(problem__text=LOOPS).get()
    assert looped.finish_reason == "loop" and looped.new_tokens < 400, looped.new_tokens
    print(f"loop stopped after {looped.new_tokens} tokens, {took:.1f} s in the browser")
    # The guard's bound is in tokens (above); the seconds depend on how busy the machine is (66 s was
    # seen while a benchmark ran beside the tests), so only a run near the whole budget fails here.
    assert took < 120, f"the loop ran {took:.0f} s"
    assert student.locator("#retry-button").count() == 1
    block = ask_in(student, live_server, LOOPS, "failed")
    assert "tried before" in block.inner_text()


def test_chromium_is_the_debian_package():
    assert shutil.which("chromium") == CHROMIUM or Path(CHROMIUM).exists()


# -- issue 10: the trust loop, as people meet it ---------------------------------------------------

CHICKENS = "鸡兔同笼，共有35个头，94只脚，问兔有多少只？"
GOOD = ["<think>\n", "rabbits = (94-70)/2 = 12", "</think>\n\n", "So there are ", "\\boxed{12}"]
NO_ANSWER = ["<think>\nhmm</think>", "I am not sure."]


def shoot(page, name: str) -> None:
    """A full-page screenshot at the desktop width and one at a phone's 390 px."""
    size = page.viewport_size
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(SHOTS / f"{name}-390.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, f"{name} overflows a phone"
    page.set_viewport_size(size)


def ask_in(page, live_server, text: str, outcome: str, timeout: int = 20_000):
    page.goto(live_server.url + "/ask")
    page.fill("#question", text)
    page.click("#ask-button")
    return page.wait_for_selector(f".answer-block[data-outcome={outcome}]", timeout=timeout)


def test_the_trust_loop_journeys(browser, live_server, site, cast, make_problem, exact_cache):
    from tests.site_fixtures import FakeManifest, ScriptedEngine

    SHOTS.mkdir(parents=True, exist_ok=True)
    student = sign_in(browser, live_server, "alice")
    teacher = sign_in(browser, live_server, "teacher")
    bob = sign_in(browser, live_server, "bob")

    # 1. Finding 1: precompute answered 26 where the reference says 15: the student gets the answer key,
    #    never 26.
    wrong = make_problem(CHICKENS, reference="15", solutions=(("unverified", "26"),))
    block = ask_in(student, live_server, CHICKENS, "hit")
    assert "Answer key 答案" in block.inner_text() and "26" not in block.inner_text()
    # A worked solution towards 15 is queued (no worker runs here): the student is told it is coming.
    assert "A worked solution is on its way" in block.inner_text()
    assert "解题过程正在生成" in block.inner_text()
    shoot(student, "trust-answer-key")
    teacher.goto(f"{live_server.url}/bank/{wrong.pk}")
    assert "never shown to students" in teacher.inner_text("main")

    # 2. Finding 2 (and 4): a missed question fails; the student is offered a retry or the teacher; the
    #    teacher links it to the bank problem, and the next student asking it gets that problem at once.
    runtime.use_engine(ScriptedEngine(NO_ANSWER), FakeManifest())
    wording = "Chickens and rabbits share a cage: 35 heads, 94 legs. How many rabbits?"
    ask_in(student, live_server, wording, "failed")
    assert live_service.live_jobs.wait_idle(10)
    assert student.locator("#retry-button").count() == 1
    assert student.locator("#ask-teacher-button").count() == 1
    shoot(student, "trust-failed")
    teacher.goto(live_server.url + "/missed")
    row = teacher.locator("#missed tr", has_text=wording)
    row.locator("input[name=problem]").fill(str(wrong.pk))
    row.locator("button", has_text="Link").click()
    teacher.wait_for_selector(".messages")
    shoot(teacher, "trust-missed-linked")
    block = ask_in(bob, live_server, wording, "hit")
    assert "Answer key 答案" in block.inner_text()

    # 3. Finding 3: a live answer a teacher rejects is never served again; when the model gives it again
    #    the problem waits for the teacher, and students are told so.
    fresh = make_problem("一个数的3倍是36，这个数是多少？")
    runtime.use_engine(ScriptedEngine(GOOD), FakeManifest())
    ask_in(student, live_server, fresh.text, "generated")
    assert live_service.live_jobs.wait_idle(10)
    teacher.goto(f"{live_server.url}/bank/{fresh.pk}")
    teacher.click("button.reject")
    teacher.wait_for_selector(".solution .tag-rejected")
    block = ask_in(bob, live_server, fresh.text, "held", timeout=30_000)
    assert "Your teacher is checking this problem" in block.inner_text()
    assert "12" not in block.inner_text()
    shoot(bob, "trust-teacher-checking")
    teacher.goto(f"{live_server.url}/bank/{fresh.pk}")
    assert teacher.locator("#waiting").count() == 1
    shoot(teacher, "trust-teacher-problem")

    # 4. "Is this your question?": the student picks the banked problem and is served it.
    approved = make_problem(
        "长方形长12厘米、宽8厘米，面积是多少？", solutions=(("approved", "96"),)
    )
    reworded = "一个长方形，长是12厘米，宽是8厘米，求面积"
    exact_cache.suggest[question_key(reworded)] = [str(approved.pk), str(fresh.pk)]
    ask_in(student, live_server, reworded, "suggested")
    assert "Is this your question?" in student.inner_text("main")
    shoot(student, "trust-suggest")
    student.locator(".suggestions li", has_text="长方形长12厘米").locator("button").click()
    student.wait_for_selector(".answer-block[data-outcome=hit]")
    assert "96" in student.inner_text(".answer-block")

    # 5. Finding 5: a live miss is a student's question, kept out of the bank; the student says the
    #    served answer is not their question, and the teacher finds it with the labelled status menu.
    runtime.use_engine(ScriptedEngine(GOOD), FakeManifest())
    asked_live = "一个数的4倍是48，这个数是多少？"
    ask_in(bob, live_server, asked_live, "generated")
    assert live_service.live_jobs.wait_idle(10)
    student.click("#feedback-button")
    student.wait_for_selector(".feedback-done")
    make_problem("Find $\\frac{3}{4}$ of $\\sqrt{64}$.", reference="6", lang="en")
    teacher.goto(live_server.url + "/bank")
    bank_table = teacher.inner_text("table.bank")
    assert asked_live not in bank_table and "$" not in bank_table and "\\frac" not in bank_table
    assert teacher.locator("table.bank math mfrac").count() == 1  # rendered, not raw $…$
    for menu in ("Topic 主题", "Difficulty 难度", "Language 语言", "Answer status 答案状态"):
        assert teacher.get_by_label(menu).is_visible()
    shoot(teacher, "trust-bank")
    teacher.get_by_label("Answer status 答案状态").select_option(
        label="needs a teacher's look 需要老师查看"
    )
    teacher.click("form.filters button[type=submit]")
    teacher.wait_for_url(re.compile(r".*status=flagged.*"))
    assert "长方形长12厘米" in teacher.inner_text("table.bank")
    teacher.goto(live_server.url + "/bank/students")
    assert asked_live in teacher.inner_text("#student-questions")

    # 6. Finding 6: code is rendered as code (the guide's own palindrome example), inside a phone's width.
    palindrome = make_problem("写一个Python函数判断回文字符串")
    Solution.objects.create(
        problem=palindrome,
        answer="```python\ndef is_palindrome(s):\n    return s == s[::-1]\n```",
        status="approved",
        source="teacher",
    )
    block = ask_in(student, live_server, palindrome.text, "hit")
    assert "def is_palindrome(s):" in block.query_selector(".answer-text pre code").inner_text()
    assert block.query_selector(".answer-text math") is None
    shoot(student, "trust-code")

    # 7. Finding 4: a question the model loops on ends as a failure with a clear message, and a long
    #    one can be stopped with the Stop button.
    runtime.use_engine(
        ScriptedEngine(["<think>\n", "15. 15. 15. 15."], finish_reason="loop"), FakeManifest()
    )
    block = ask_in(student, live_server, "鸡兔同笼，头比脚少多少？", "failed")
    assert live_service.live_jobs.wait_idle(10)
    assert "kept repeating itself" in block.inner_text()
    gate = threading.Event()  # never opened: it runs until the student stops it
    runtime.use_engine(ScriptedEngine(GOOD, gate=gate), FakeManifest())
    student.goto(live_server.url + "/ask")
    student.fill("#question", "Write a very long proof that there are infinitely many primes.")
    student.click("#ask-button")
    student.click("#stop-button")
    block = student.wait_for_selector(".answer-block[data-outcome=failed]")
    assert live_service.live_jobs.wait_idle(10)
    assert "You stopped this answer" in block.inner_text()

    # 8. Finding 8: the length limit is stated before typing and a longer paste is refused with a
    #    message, never cut; without JavaScript a new question's page reloads until the answer is there.
    student.goto(live_server.url + "/ask")
    assert "Up to 4000 characters" in student.inner_text("#question-limit")
    student.fill("#question", "长" * 5000)
    assert "too long" in student.inner_text("#char-count")
    student.click("#ask-button")
    refusal = student.wait_for_selector("#live-status.error").inner_text()
    assert "4000" in refusal and student.input_value("#question") == "长" * 5000
    plain = sign_in(browser, live_server, "bob", javascript=False)
    runtime.use_engine(ScriptedEngine(GOOD, gate=gate), FakeManifest())
    plain.goto(live_server.url + "/ask")
    plain.fill("#question", "一个数的5倍是60，这个数是多少？")
    plain.click("#ask-button")
    assert "this page reloads every few seconds" in plain.inner_text("main")
    gate.set()
    block = plain.wait_for_selector(".answer-block[data-outcome=generated]", timeout=20_000)
    assert "12" in block.inner_text()
