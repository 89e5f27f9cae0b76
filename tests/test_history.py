"""The student's "My questions" on the ask page: grouped by problem (a problem asked five times is one
row with a count and the latest date), dated in both languages, a page at a time, and only the
student's own questions."""

from __future__ import annotations

import datetime as dt
import html

import pytest
from django.test import Client
from django.utils import timezone

from tests.site_fixtures import *  # noqa: F403
from tutor.models import Question
from tutor.services.text import question_key
from tutor.views.student import HISTORY_PAGE_SIZE, HistoryRow


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def ask(user, text: str, *, problem=None, outcome: str = "hit", when: dt.datetime | None = None):
    question = Question.objects.create(
        user=user, text=text, key=question_key(text), outcome=outcome, problem=problem
    )
    if when is not None:
        Question.objects.filter(pk=question.pk).update(created=when)  # auto_now_add on create
    return question


def history_of(page: str) -> str:
    return html.unescape(page.split('id="history"')[1])


def test_repeated_asks_of_a_problem_are_one_row_with_a_count_and_the_latest_date(
    cast, site, make_problem
):
    problem = make_problem("鸡兔同笼，共有35个头，94只脚，问兔有多少只？")
    now = timezone.now()
    for days in (9, 5, 2):
        ask(cast.alice, "鸡兔同笼 35个头", problem=problem, when=now - dt.timedelta(days=days))
    # A rewording that reached the same problem joins the row; its text is the one shown.
    latest = ask(cast.alice, "鸡和兔一共35个头", problem=problem, when=now - dt.timedelta(days=1))
    ask(cast.alice, "另一个问题", outcome="failed", when=now - dt.timedelta(days=3))
    ask(cast.bob, "bob's secret question", problem=problem)

    page = history_of(client_for(cast.alice).get("/ask").content.decode())
    assert page.count("<li>") == 2
    assert "asked 4 times 问了4次" in page
    assert f'href="/questions/{latest.pk}"' in page and "鸡兔同笼 35个头" not in page
    assert "yesterday" in page and "昨天" in page
    assert page.index("鸡和兔一共35个头") < page.index("另一个问题")  # the latest ask first
    assert "bob" not in page


def test_asks_that_reached_no_problem_are_grouped_by_their_wording(cast, site):
    for _ in range(3):
        ask(cast.alice, "什么是质数?", outcome="refused")  # half-width ? normalizes to ？
    ask(cast.alice, "什么是质数？", outcome="failed")  # the same normalized wording
    ask(cast.alice, "什么是合数？", outcome="failed")
    page = history_of(client_for(cast.alice).get("/ask").content.decode())
    assert page.count("<li>") == 2 and "asked 4 times" in page


def test_the_history_is_paged_newest_first(cast, site):
    now = timezone.now()
    total = HISTORY_PAGE_SIZE + 5
    for i in range(total):
        ask(cast.alice, f"question number {i}", outcome="failed", when=now - dt.timedelta(hours=i))
    client = client_for(cast.alice)
    first = history_of(client.get("/ask").content.decode())
    assert first.count("<li>") == HISTORY_PAGE_SIZE
    assert "question number 0<" in first and f"question number {total - 1}<" not in first
    assert "page 1 of 2" in first and "?page=2" in first
    second = history_of(client.get("/ask", {"page": 2}).content.decode())
    assert second.count("<li>") == 5 and f"question number {total - 1}<" in second
    assert client.get("/ask", {"page": "junk"}).status_code == 200  # the first page


def test_an_empty_history_says_so_in_both_languages(cast, site):
    page = history_of(client_for(cast.alice).get("/ask").content.decode())
    assert "None yet. 还没有提问。" in page and "page 1" not in page


@pytest.mark.parametrize(
    "ago, expected",
    [
        (dt.timedelta(minutes=1), "today"),
        (dt.timedelta(days=1), "yesterday"),
        (dt.timedelta(days=40), "年"),
    ],
)
def test_dates_are_in_the_sites_time_zone_and_both_languages(ago, expected, settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    # Noon local time, so "today" and "yesterday" do not depend on when the test runs.
    noon = timezone.localtime().replace(hour=12, minute=0, second=0, microsecond=0)
    when = HistoryRow(question=None, count=1, first=noon - ago, last=noon - ago)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timezone, "localdate", lambda *a, **k: noon.date())
        text = when.when
    assert expected in text
    if expected == "年":
        local = noon - ago
        assert (
            text
            == f"{local:%b} {local.day}, {local.year} · {local.year}年{local.month}月{local.day}日"
        )
