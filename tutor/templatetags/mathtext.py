"""`{{ text|mathtext }}`: untrusted text (a student's question, a model's answer) as safe HTML with math.

Everything is escaped; only math segments ($…$, $$…$$, \\(…\\), \\[…\\], \\boxed{…}) are turned into
MathML by latex2mathml, which browsers render natively (no CDN, no JavaScript). latex2mathml copies
some input into its output unescaped (e.g. `\\text{<script>}`), so its MathML is rebuilt through an
allow-list of MathML elements and attributes with every text node escaped.
"""

from __future__ import annotations

import html
import logging
import re
from html.parser import HTMLParser

from django import template
from django.utils.safestring import SafeString, mark_safe

register = template.Library()
log = logging.getLogger(__name__)

MAX_MATH_CHARS = 2000  # longer "formulas" are shown as text: they are rarely formulas

MATHML_TAGS = frozenset(
    "math mrow mi mn mo ms mtext mspace mfrac msqrt mroot msub msup msubsup munder mover munderover "
    "mtable mtr mtd mstyle mpadded mphantom menclose merror mfenced semantics annotation mmultiscripts "
    "mprescripts none".split()
)
MATHML_ATTRS = frozenset(
    "display notation mathvariant stretchy fence separator lspace rspace columnalign rowalign "
    "rowspacing columnspacing displaystyle scriptlevel minsize maxsize movablelimits accent accentunder "
    "width height depth linethickness open close separators form largeop symmetric columnlines rowlines "
    "frame framespacing equalrows equalcolumns align voffset mathsize".split()
)
VOID = frozenset({"mspace", "none", "mprescripts"})

_MATH = re.compile(
    r"\$\$(?P<dd>.+?)\$\$|\\\[(?P<br>.+?)\\\]|\\\((?P<pa>.+?)\\\)|(?<![\\$])\$(?P<d>[^\s$](?:[^$\n]*?[^\s$\\])?)\$(?!\d)|\\boxed\{",
    re.S,
)


class _MathMLCleaner(HTMLParser):
    """Re-emits allowed MathML only; anything else is dropped, its text kept and escaped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in MATHML_TAGS:
            return
        kept = "".join(
            f' {name}="{html.escape(value or "", quote=True)}"'
            for name, value in attrs
            if name in MATHML_ATTRS and not (value or "").lower().lstrip().startswith("javascript")
        )
        if tag == "math":
            kept = ' xmlns="http://www.w3.org/1998/Math/MathML"' + kept
        self.out.append(f"<{tag}{kept}>")

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag in MATHML_TAGS and tag not in VOID:
            self.out.append(f"</{tag}>")

    def handle_endtag(self, tag):
        if tag in MATHML_TAGS and tag not in VOID:
            self.out.append(f"</{tag}>")

    def handle_data(self, data):
        self.out.append(html.escape(data, quote=False))


def latex_to_mathml(latex: str, *, display: bool = False) -> str | None:
    """Safe MathML for one formula, or None when it is not one latex2mathml can read."""
    if not latex.strip() or len(latex) > MAX_MATH_CHARS:
        return None
    from latex2mathml.converter import convert

    try:
        raw = convert(latex, display="block" if display else "inline")
    except (
        Exception
    ):  # latex2mathml raises many types on bad input; the text is then shown as it is
        return None
    cleaner = _MathMLCleaner()
    cleaner.feed(raw)
    cleaner.close()
    return "".join(cleaner.out)


def _braced_end(text: str, start: int) -> int | None:
    """Index just past the '}' closing the '{' before `start`, or None."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{" and text[i - 1] != "\\":
            depth += 1
        elif text[i] == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def render_math_text(text: str) -> str:
    """Escaped text with math as MathML, blank-line paragraphs and line breaks."""
    out: list[str] = []
    pos = 0
    for m in _MATH.finditer(text or ""):
        if m.start() < pos:
            continue
        if m.group(0) == "\\boxed{":
            end = _braced_end(text, m.end())
            if end is None:
                continue
            latex, display, stop = text[m.start() : end], False, end
        else:
            latex = next(
                g
                for g in (m.group("dd"), m.group("br"), m.group("pa"), m.group("d"))
                if g is not None
            )
            display, stop = m.group("dd") is not None or m.group("br") is not None, m.end()
        mathml = latex_to_mathml(latex, display=display)
        if mathml is None:
            continue
        out.append(html.escape(text[pos : m.start()], quote=False))
        out.append(mathml)
        pos = stop
    out.append(html.escape((text or "")[pos:], quote=False))
    rendered = "".join(out).replace("\r\n", "\n")
    paragraphs = [
        p.strip("\n").replace("\n", "<br>") for p in re.split(r"\n{2,}", rendered) if p.strip()
    ]
    return "".join(f"<p>{p}</p>" for p in paragraphs)


@register.filter(name="mathtext")
def mathtext(value) -> SafeString:
    return mark_safe(render_math_text(str(value) if value is not None else ""))  # noqa: S308 - escaped above


@register.filter(name="mathfinal")
def mathfinal(value) -> SafeString:
    """A final answer: MathML when it is LaTeX (\\frac{1}{2}, x^2), else escaped text (23, 星期五)."""
    text = str(value) if value is not None else ""
    if re.search(r"[\\^_{}]", text):
        mathml = latex_to_mathml(text)
        if mathml is not None:
            return mark_safe(mathml)  # noqa: S308 - rebuilt from an allow-list
    return mark_safe(html.escape(text, quote=False))  # noqa: S308
