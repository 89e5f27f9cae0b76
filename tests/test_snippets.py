"""One-line previews in lists (the bank, students' questions, missed questions, history): math rendered,
never cut inside a formula, always safe, never raising."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.site_fixtures import *  # noqa: F403
from tutor.templatetags.mathtext import render_math_snippet


def test_a_formula_that_does_not_fit_is_left_out_whole():
    text = "Solve " + "word " * 14 + "$\\frac{1}{2}x^2 = 8$ and more"
    html = render_math_snippet(text, 80)
    assert "$" not in html and "\\frac" not in html
    assert html.endswith("…")


def test_a_formula_that_fits_is_rendered_as_mathml():
    html = render_math_snippet("Solve $x^2=4$ please", 90)
    assert "<math" in html and "<msup>" in html and "$" not in html


def test_snippets_are_one_line_and_escaped():
    html = render_math_snippet("<script>alert(1)</script>\n\n# Heading\n- item $\\text{<b>}$", 200)
    assert "<script" not in html and "<b>" not in html
    assert "&lt;script&gt;" in html
    assert "<h1" not in html and "<li" not in html and "<p" not in html


def test_the_crash_string_and_dollar_prices_stay_text():
    assert "CDATA" not in render_math_snippet("$\\unicode{<![CDATA[_}$ 之后", 60)
    assert render_math_snippet("costs $5 and $6", 60) == "costs $5 and $6"


@pytest.mark.parametrize("limit", [1, 5, 17, 90])
def test_the_limit_counts_source_characters(limit):
    text = "鸡兔同笼，共有 $35$ 个头，$94$ 只脚，问兔子有几只？" * 3
    html = render_math_snippet(text, limit)
    visible = html.replace("…", "")
    assert "$" not in visible


def test_the_bank_list_shows_math_not_raw_latex_and_labels_its_filters(site, cast, make_problem):
    make_problem("Find $\\sqrt{144}$ and add $3^2$.", reference="21", lang="en")
    client = Client()
    client.force_login(cast.teacher)
    page = client.get("/bank").content.decode()
    assert "\\sqrt" not in page and "<msqrt>" in page
    for label in ("Topic 主题", "Difficulty 难度", "Language 语言", "Answer status 答案状态"):
        assert label in page
