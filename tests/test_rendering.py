"""`|mathtext`: untrusted Markdown with math rendered to safe HTML (tutor/templatetags/mathtext.py).

Cases as tables; a seeded fuzz run of hostile strings and a hypothesis run check that rendering never
raises and that its output holds only allowed elements and attributes; a renderer that raises is shown
as escaped text (fail closed), and the crash string of issue 13 renders on the real pages; a real
Chromium at a phone's width checks that code, tables and formulas stay inside the answer's box.
"""

from __future__ import annotations

import random
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.site_fixtures import *  # noqa: F403
from tutor.models import Question
from tutor.services.text import question_key
from tutor.templatetags import mathtext as mathtext_module
from tutor.templatetags.mathtext import latex_to_mathml, mathfinal, mathtext, render_math_text

PALINDROME_ANSWER = """判断回文字符串，只需比较字符串与它的反转：

```python
def is_palindrome(s):
    return s == s[::-1]
```

例如 `is_palindrome("level")` 返回 `True`。"""

MARKDOWN_TAGS = frozenset(
    "p br em strong code pre a ul ol li blockquote hr h1 h2 h3 h4 h5 h6 "
    "table thead tbody tr th td div".split()
)
MATHML_TAGS = frozenset(
    "math mrow mi mn mo ms mtext mspace mfrac msqrt mroot msub msup msubsup munder mover munderover "
    "mtable mtr mtd mstyle mpadded mphantom menclose merror mfenced semantics annotation "
    "mmultiscripts mprescripts none".split()
)
SAFE_SCHEMES = ("http:", "https:", "mailto:")


class _Audit(HTMLParser):
    """Collects what an output would put in a page: its elements, their attributes, their nesting."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in MARKDOWN_TAGS | MATHML_TAGS:
            self.problems.append(f"element <{tag}>")
        if tag not in ("br", "hr"):
            self.open.append(tag)
        for name, value in attrs:
            value = (value or "").strip().lower()
            if name.startswith("on") or name in ("style", "src", "srcdoc", "formaction"):
                self.problems.append(f"attribute {name} on <{tag}>")
            if name == "href" and not value.startswith(SAFE_SCHEMES):
                self.problems.append(f"href={value!r}")

    def handle_startendtag(self, tag, attrs):
        self.problems.append(f"self-closed <{tag}/>")

    def handle_endtag(self, tag):
        # A stray end tag could close an element of the page around the answer.
        if not self.open or self.open.pop() != tag:
            self.problems.append(f"unbalanced </{tag}>")

    def unknown_decl(self, data):
        self.problems.append(f"declaration {data!r}")

    def close(self):
        super().close()
        if self.open:
            self.problems.append(f"unclosed {self.open}")


def audit(output: str) -> _Audit:
    found = _Audit()
    found.feed(output)
    found.close()
    return found


# -- what renders as what ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "present", "absent"),
    [
        # Code is code: the text exactly, escaped, and no math inside it.
        (
            PALINDROME_ANSWER,
            [
                '<pre><code class="language-python">def is_palindrome(s):\n'
                "    return s == s[::-1]\n</code></pre>",
                "<code>is_palindrome(&quot;level&quot;)</code>",
            ],
            ["<math", "<em>", "```"],
        ),
        ("    x = [i for i in range(3)]", ["<pre><code>x = [i for i in range(3)]\n</code>"], []),
        ("```\n$x_1$ <b>\n```", ["<pre><code>$x_1$ &lt;b&gt;\n</code></pre>"], ["<math"]),
        ("用 `$x*y$` 表示", ["<code>$x*y$</code>"], ["<math"]),
        # Math only inside delimiters, untouched by Markdown's emphasis and escapes.
        ("$x_1 * y_2$ 和 $a_2 * b_3$", ["<msub><mi>x</mi><mn>1</mn></msub><mo>*</mo>"], ["<em>"]),
        ("$$a_1 \\\\ b_2$$", ['display="block"', "<msub><mi>a</mi>"], ["<em>"]),
        ("\\(\\frac{a_1}{b_1}\\)", ["<mfrac>"], ["\\("]),
        ("所以答案是 \\boxed{26}。", ['<menclose notation="box">', "<mn>26</mn>"], ["\\boxed"]),
        ("$$\n\\frac{1}{2}\n- 3\n$$", ["<mfrac>", 'class="math-display"'], ["<ul>", "<li>"]),
        ("5 * 3 = 15, 2 * 4 = 8", ["5 * 3 = 15, 2 * 4 = 8"], ["<math", "<em>"]),
        # Markdown.
        ("**加粗** 和 *斜体*", ["<strong>加粗</strong>", "<em>斜体</em>"], []),
        ("- 第一步\n- 第二步", ["<ul><li>第一步</li><li>第二步</li></ul>"], []),
        ("1. 设 $x$\n2. 解得 $x=3$", ["<ol><li>设 <math", "</math></li><li>解得 <math"], []),
        ("| a | b |\n|--:|---|\n| 1 | 2 |", ['<th class="align-right">a</th>', "<td>2</td>"], []),
        ("第一步：$a=1$\n第二步：$b=2$", ["</math><br>\n第二步"], []),
        (
            "鸡兔同笼，共有35个头，94只脚。\n设兔有 $x$ 只，则 $4x + 2(35-x) = 94$，解得 $x = 12$。",
            ["鸡兔同笼，共有35个头，94只脚。<br>", "<mn>94</mn>", "解得 <math"],
            [],
        ),
        # Untrusted input stays text.
        ("<script>alert(1)</script>", ["&lt;script&gt;alert(1)&lt;/script&gt;"], ["<script"]),
        ("[x](javascript:alert(1))", ["[x](javascript:alert(1))"], ["<a"]),
        ("<javascript:alert(1)>", ["&lt;javascript:alert(1)&gt;"], ["<a"]),
        ("[x](/logout) [y](data:text/html,hi)", ["[x](/logout)"], ["<a"]),
        ("[x]() [y](<>)", ["<a>x</a>"], ["href"]),
        ("![x](https://example.com/t.png)", [], ["<img"]),
        (
            "[书](https://example.com/a?b=1)",
            ['<a href="https://example.com/a?b=1" rel="nofollow'],
            [],
        ),
        ("$\\text{<img src=x onerror=alert(1)>}$", ["<math"], ["<img", "onerror"]),
        ("$\\href{javascript:alert(1)}{x}$", ["<mi>x</mi>"], ["href", "javascript"]),
        # A segment that cannot be rendered is shown as it was written.
        ("$\\unicode{<![CDATA[_}$ 之后", ["</math> 之后"], ["CDATA"]),  # crashed html.parser
        ("$\\frac{1}{$ 之后", ["之后"], []),
    ],
)
def test_answers_render_as_markdown_with_math(text, present, absent):
    output = render_math_text(text)
    for piece in present:
        assert piece in output
    for piece in absent:
        assert piece not in output
    assert audit(output).problems == []


def test_the_filter_marks_its_output_safe_and_takes_none():
    assert str(mathtext(None)) == "" and hasattr(mathtext("**a**"), "__html__")
    assert str(mathtext("**a**")) == "<p><strong>a</strong></p>"


def test_a_mathml_space_is_closed_so_it_does_not_swallow_what_follows():
    # latex2mathml writes `<mspace />`; in HTML a bare `<mspace>` would hold the rest of the formula.
    assert "<mspace></mspace><mi>c</mi>" in latex_to_mathml("a \\\\ c")


def test_a_math_segment_that_fails_to_render_is_logged_and_shown_as_written(monkeypatch, caplog):
    def broken(element, out):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(mathtext_module, "_emit_mathml", broken)
    output = render_math_text("题目 $x_{9}^{<b>}$ 与 **粗**")  # a formula no other test has cached
    assert output == "<p>题目 $x_{9}^{&lt;b&gt;}$ 与 <strong>粗</strong></p>"
    assert [r.levelname for r in caplog.records if r.exc_info] == ["WARNING"]


# -- hostile input -------------------------------------------------------------------------------------

PIECES = [
    "$",
    "$$",
    "\\",
    "\\\\",
    "{",
    "}",
    "\\(",
    "\\)",
    "\\[",
    "\\]",
    "\\boxed{",
    "\\text{",
    "\\href{",
    "\\unicode{",
    "\\frac{",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "<!DOCTYPE x>",
    "<script>",
    "</script>",
    "<img src=x onerror=alert(1)>",
    "<a href='javascript:alert(1)'>",
    "<svg onload=alert(1)>",
    "<math>",
    "</math>",
    "<mi>",
    "<style>",
    "javascript:",
    "JaVaScRiPt:",
    "data:text/html,",
    "vbscript:",
    "`",
    "```",
    "\n```\n",
    "|",
    "\n|---|\n",
    "*",
    "**",
    "_",
    "__",
    "~",
    "#",
    "\n# ",
    "[x](",
    ")",
    "[",
    "](",
    "![i](",
    "<http://a>",
    "<javascript:a>",
    "&",
    "&lt;",
    "&#60;",
    "&#x3C;",
    '"',
    "'",
    "\n",
    "\n\n",
    "    ",
    "\t",
    "> ",
    "- ",
    "1. ",
    "x",
    "1",
    "答案",
    "\u200b",
    "\x00",
    "style=",
    "onmouseover=",
    "mailto:",
    "https://e.com/",
    "\\begin{aligned}",
    "&=",
    "\\end{aligned}",
]


def hostile_strings(count: int, seed: int = 20240607) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(PIECES, k=rng.randint(1, 40))) for _ in range(count)]


def test_hostile_input_never_raises_and_leaves_only_allowed_markup():
    strings = hostile_strings(3000)
    started = time.perf_counter()
    outputs = [render_math_text(s) for s in strings]
    elapsed = time.perf_counter() - started
    failures = {
        s: found.problems
        for s, o in zip(strings, outputs, strict=True)
        if (found := audit(o)).problems
    }
    assert failures == {}
    assert sum("<math" in o for o in outputs) > 100  # the run did reach the MathML path
    assert sum("<a " in o for o in outputs) > 10  # ... and live links
    assert elapsed < 30, f"{len(strings)} strings took {elapsed:.1f} s"


def test_the_audit_catches_what_it_is_meant_to():
    # The fuzz test is only as good as its checker.
    assert audit('<p onclick="x">').problems and audit('<a href="javascript:x">').problems
    assert audit("<script>").problems and audit('<mi style="x">').problems
    assert audit("<p><math></p></math>").problems and audit("<p>").problems
    assert audit('<p><a href="https://e.com/">x</a><br></p>').problems == []


# -- fail closed ---------------------------------------------------------------------------------------

# The MathML cleaner's html.parser raised on this and took three pages down (issue 13, finding 4).
CRASH_TEXT = "$\\unicode{<![CDATA[_}$"


class _BrokenMarkdown:
    def render(self, text):
        raise RecursionError("maximum recursion depth exceeded")


def test_the_filter_shows_escaped_text_when_the_renderer_raises(monkeypatch, caplog):
    # A fake renderer stands in for a bug not yet found; the real renderer is fuzzed below.
    monkeypatch.setattr(mathtext_module, "_MARKDOWN", _BrokenMarkdown())
    output = mathtext("<script>alert(1)</script> $x$\n第二行\n\n<b onclick=x>")
    assert str(output) == (
        "<p>&lt;script&gt;alert(1)&lt;/script&gt; $x$<br>第二行</p>\n\n<p>&lt;b onclick=x&gt;</p>"
    )
    assert audit(output).problems == []
    assert [r.levelname for r in caplog.records if r.exc_info] == ["WARNING"]


def test_a_final_answer_is_shown_as_text_when_its_formula_raises(monkeypatch, caplog):
    def broken(latex, *, display=False):
        raise ValueError("unreadable")

    monkeypatch.setattr(mathtext_module, "latex_to_mathml", broken)
    assert str(mathfinal("\\frac{<i>}{2}")) == "\\frac{&lt;i&gt;}{2}"
    assert [r.levelname for r in caplog.records if r.exc_info] == ["WARNING"]


def test_the_crash_string_renders_on_the_students_and_the_teachers_pages(cast, site, make_problem):
    """The real path, no fakes: the question page of the student who asked it (as her question, the
    problem it matched and that problem's answer) and the teacher's page of the problem."""
    problem = make_problem(CRASH_TEXT, reference=CRASH_TEXT, solutions=(("approved", CRASH_TEXT),))
    solution = problem.solutions.get()
    solution.answer = f"{CRASH_TEXT}\n\n$${CRASH_TEXT[1:-1]}$$"
    solution.reasoning = CRASH_TEXT
    solution.save(update_fields=["answer", "reasoning"])
    question = Question.objects.create(
        user=cast.alice,
        text=CRASH_TEXT,
        key=question_key(CRASH_TEXT),
        outcome=Question.Outcome.HIT,
        bank_hit=True,
        problem=problem,
        solution=solution,
    )
    pages = [(cast.alice, f"/questions/{question.pk}"), (cast.teacher, f"/bank/{problem.pk}")]
    for user, url in pages:
        client = Client()
        client.force_login(user)
        response = client.get(url)
        assert response.status_code == 200, url
        assert "<![CDATA[" not in response.content.decode(), url  # only ever escaped


# Random text built from what breaks renderers: math delimiters, backslashes, braces, CDATA, markup.
_HOSTILE_TEXT = st.lists(
    st.one_of(
        st.sampled_from(PIECES + [CRASH_TEXT, "\\unicode{", "<![CDATA[_}", "{{", "}}"]),
        st.text(max_size=8),
    ),
    max_size=30,
).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_HOSTILE_TEXT)
def test_fuzzed_text_never_raises_and_never_yields_script_or_handlers(text):
    for output in (str(mathtext(text)), str(mathfinal(text))):
        lowered = output.lower()
        assert "<script" not in lowered
        assert re.search(r"<[^>]*\son[a-z]+\s*=", lowered) is None, output
        assert audit(output).problems == [], output


# -- speed and layout ----------------------------------------------------------------------------------


def long_answer() -> str:
    step = (
        "第{n}步：设 $x_{n} = \\frac{{a_{n}}}{{b_{n}}}$，则 $x_{n}^2 + 2x_{n} + 1 = (x_{n}+1)^2$。\n"
        "**注意** 当 $b_{n} \\neq 0$ 时成立，见 `check({n})`。\n\n"
    )
    text = "".join(step.format(n=n) for n in range(1, 40))
    text += "```python\ndef f(x):\n    return x * x\n```\n\n所以答案是 \\boxed{26}。"
    return text[:4000]


def test_a_long_answer_is_rendered_once_per_formula_and_memoized():
    """Speed is bench's business; what makes a long answer cheap is checked here: each formula is
    converted once, and the same page again is served from the memo."""
    text = long_answer()
    assert len(text) >= 3900 and text.count("$") > 200  # about a hundred formulas, all different
    latex_to_mathml.cache_clear()
    first = render_math_text(text)
    after_first = latex_to_mathml.cache_info()
    assert after_first.misses > 90
    second = render_math_text(text)
    after_second = latex_to_mathml.cache_info()
    assert second == first
    assert after_second.misses == after_first.misses  # nothing converted twice
    assert after_second.hits - after_first.hits >= after_first.misses


WIDE_ANSWER = f"""{PALINDROME_ANSWER}

```python
cleaned = "".join(ch.lower() for ch in s if ch.isalnum())  # a long comment that goes on and on past the edge
```

长串：{"9" * 120}
链接：https://example.com/a/very/long/path/that/does/not/break/naturally/anywhere/at/all/ok
`a_really_long_inline_code_identifier_without_any_spaces_in_it_at_all()`
行内 $a_1+a_2+a_3+a_4+a_5+a_6+a_7+a_8+a_9+a_{{10}}+a_{{11}}+a_{{12}}+a_{{13}}+a_{{14}}+a_{{15}}$ 完

$$\\sum_{{k=1}}^{{100}} k = 1+2+3+4+5+6+7+8+9+10+11+12+13+14+15+16+17+18+19+20+21+22 = 5050$$

中间 \\[ x = \\frac{{-b \\pm \\sqrt{{b^2-4ac}}}}{{2a}} + 1+2+3+4+5+6+7+8+9+10+11+12+13+14+15 \\] 后

| 列一 | 列二 | 列三 | 列四 | 列五 | 列六 | 列七 |
|---|---|---|---|---|---|---|
| 1234567890 | 1234567890 | 1234567890 | 1234567890 | 1234567890 | 1234567890 | 1234567890 |

所以答案是 \\boxed{{26}}"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (.ci/run)")
def test_code_tables_and_formulas_stay_inside_the_answer_box_at_phone_width(tmp_path):
    from playwright.sync_api import sync_playwright

    css = (Path(__file__).resolve().parent.parent / "tutor/static/tutor/site.css").read_text()
    answer = render_math_text(WIDE_ANSWER)
    page_html = (
        '<!doctype html><html><head><meta name="viewport" content="width=device-width">'
        f"<style>{css}</style></head><body><main>"
        f'<div class="answer-block"><div class="answer-text">{answer}</div></div>'
        f'<dl class="meta"><dt>Reference answer</dt><dd>{answer}</dd></dl></main></body></html>'
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.set_content(page_html)
            page.screenshot(path=tmp_path / "phone.png", full_page=True)
            page_width = page.evaluate("document.documentElement.scrollWidth")
            sticking_out = page.evaluate(
                """() => [...document.querySelectorAll('.answer-text *, dd *')]
                    .filter(e => e.closest('pre, table, math') === e || !e.closest('pre, table, math'))
                    .filter(e => e.getBoundingClientRect().right > e.closest('.answer-text, dd').getBoundingClientRect().right + 0.5)
                    .map(e => e.tagName + ' ' + (e.textContent || '').slice(0, 30))"""
            )
            scrollers = page.evaluate(
                """() => [...document.querySelectorAll('.answer-text :is(pre, table, math)')]
                    .filter(e => e.scrollWidth > e.clientWidth).map(e => e.tagName)"""
            )
        finally:
            browser.close()
    assert page_width <= 390
    assert sticking_out == []
    # The long code line, the table and the three wide formulas scroll inside their own boxes.
    assert sorted(scrollers) == ["PRE", "TABLE", "math", "math", "math"]
