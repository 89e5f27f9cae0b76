"""`{{ text|mathtext }}`: untrusted text (a student's question, a model's answer) as safe HTML —
Markdown with math.

This module owns turning one string into HTML that is safe to insert as-is: CommonMark (plus tables)
rendered by markdown-it-py with raw HTML disabled, links kept only for http/https/mailto, no images,
and math as MathML, which browsers render natively (no CDN, no JavaScript). It knows nothing about
where the HTML goes: the boxes it sits in (scrolling code, wrapping long lines) are site.css's.

Math is found only in `$…$`, `$$…$$`, `\\(…\\)`, `\\[…\\]` and `\\boxed{…}` (a bare `\\boxed{}` counts),
never inside code spans or code blocks. Math segments are taken by markdown-it rules of our own that run
before Markdown's escapes and emphasis, so `_`, `*` and `\\\\` inside a formula reach latex2mathml as
written. latex2mathml keeps the formula's own text unescaped in its tree (e.g. `\\text{<script>}`), so
its MathML is rebuilt from that tree through an allow-list of MathML elements and attributes, with
markup-looking text dropped and every text node escaped. A segment that cannot be converted or rebuilt,
for whatever reason, is shown as the escaped text it was written as; and should anything else in the
renderer raise, the whole text is shown escaped, with its line breaks (fail closed): rendering never
raises, so no stored text can take a page down (issue 13, finding 4).
Formulas are memoized per process (a pure function of the LaTeX; nothing that processes must share).
"""

from __future__ import annotations

import functools
import html
import logging
import re

from django import template
from django.utils.html import escape, linebreaks
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml

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
LINK_SCHEMES = re.compile(r"(?i)(?:https?|mailto):")

# `$x$`: no space just inside the dollars, one line, and not followed by a digit ("costs $5 and $6").
_INLINE_DOLLAR = re.compile(r"\$(?P<d>[^\s$](?:[^$\n]*?[^\s$\\])?)\$(?!\d)")
_BETWEEN_TAGS = re.compile(r">\n+(?=<)")


# latex2mathml keeps what the formula said in text nodes as it was written (`\\text{<b>}` holds "<b>")
# beside the character references it writes itself ("&#x0003D;"). Markup-looking text is dropped,
# as the HTML parser this replaced did; the rest is unescaped once and escaped again.
_TAGLIKE = re.compile(r"<[A-Za-z/!?][^<>]*>?")


def _text(raw: str) -> str:
    return html.escape(html.unescape(_TAGLIKE.sub("", raw)), quote=False)


def _emit_mathml(element, out: list[str]) -> None:
    """Allowed MathML elements and attributes of latex2mathml's tree; other elements are dropped, their
    content kept."""
    tag = element.tag if element.tag in MATHML_TAGS else None
    if tag is not None:
        kept = "".join(
            f' {name}="{html.escape(str(value), quote=True)}"'
            for name, value in element.attrib.items()
            if name in MATHML_ATTRS and not str(value).lower().lstrip().startswith("javascript")
        )
        if tag == "math":
            kept = ' xmlns="http://www.w3.org/1998/Math/MathML"' + kept
        # Always an end tag: MathML in HTML has no void elements, a bare <mspace> would hold the rest.
        out.append(f"<{tag}{kept}>")
    if element.text:
        out.append(_text(element.text))
    for child in element:
        _emit_mathml(child, out)
        if child.tail:
            out.append(_text(child.tail))
    if tag is not None:
        out.append(f"</{tag}>")


@functools.lru_cache(maxsize=4096)
def latex_to_mathml(latex: str, *, display: bool = False) -> str | None:
    """Safe MathML for one formula, or None when it is not one we can show as math.

    Memoized: answers repeat their formulas, and latex2mathml is most of the cost of a page of them.
    """
    if not latex.strip() or len(latex) > MAX_MATH_CHARS:
        return None
    from latex2mathml.converter import convert_to_element

    try:
        tree = convert_to_element(latex, display="block" if display else "inline")
    except Exception:
        # latex2mathml raises many types on bad input, which models write all the time.
        log.debug("latex2mathml cannot read %r; shown as text", latex[:80], exc_info=True)
        return None
    try:
        out: list[str] = []
        _emit_mathml(tree, out)
    except Exception:  # e.g. RecursionError on a deeply nested formula
        log.warning("MathML for %r could not be rebuilt; shown as text", latex[:80], exc_info=True)
        return None
    return "".join(out)


_BRACE = re.compile(r"\\.|[{}]", re.S)  # an escaped character, or a brace


@functools.lru_cache(maxsize=16)
def _brace_pairs(text: str) -> dict[int, int]:
    """For each '{' of `text` that is closed, the index just past its '}'.

    One pass per text (memoized for the inline rule's repeated calls on the same paragraph): scanning
    from each `\\boxed{` instead is quadratic on a paragraph of unclosed ones.
    """
    pairs, opened = {}, []
    for m in _BRACE.finditer(text):
        if m.group() == "{":
            opened.append(m.start())
        elif m.group() == "}" and opened:
            pairs[opened.pop()] = m.end()
    return pairs


def _delimited_end(text: str, start: int, stop: int, closer: str) -> int | None:
    """Index of `closer` after a non-empty formula starting at `start`, or None."""
    at = text.find(closer, start + 1, min(stop, start + MAX_MATH_CHARS + len(closer)))
    return None if at == -1 else at


def _scan_math(src: str, pos: int, stop: int) -> tuple[str, bool, int] | None:
    """(latex, display, end) for a math segment starting exactly at `pos`, or None."""
    if src.startswith("$$", pos):
        at = _delimited_end(src, pos + 2, stop, "$$")
        return None if at is None else (src[pos + 2 : at], True, at + 2)
    if src.startswith("$", pos):
        if pos > 0 and src[pos - 1] in "\\$":
            return None
        m = _INLINE_DOLLAR.match(src, pos, stop)
        return None if m is None else (m.group("d"), False, m.end())
    for opener, closer, display in (("\\(", "\\)", False), ("\\[", "\\]", True)):
        if src.startswith(opener, pos):
            at = _delimited_end(src, pos + 2, stop, closer)
            return None if at is None else (src[pos + 2 : at], display, at + 2)
    if src.startswith("\\boxed{", pos):
        end = _brace_pairs(src).get(pos + len("\\boxed"))
        if end is None or end > stop or end - pos > MAX_MATH_CHARS:
            return None
        return src[pos:end], False, end
    return None


def _math_inline_rule(state, silent: bool) -> bool:
    """Inline rule, run before Markdown's escapes: a math segment becomes one opaque token."""
    found = _scan_math(state.src, state.pos, state.posMax)
    if found is None:
        return False
    latex, display, end = found
    if not silent:
        token = state.push("math_inline", "math", 0)
        token.content = latex
        token.markup = state.src[state.pos : end]
        token.meta = {"display": display}
    state.pos = end
    return True


def _math_block_rule(state, start_line: int, end_line: int, silent: bool) -> bool:
    """Block rule: `$$…$$` or `\\[…\\]` starting a line and closing at the end of a line, before any
    blank line, so list markers or `#` on the formula's own lines are not read as Markdown."""
    if state.sCount[start_line] - state.blkIndent >= 4:
        return False  # indented code
    text = state.src[state.bMarks[start_line] + state.tShift[start_line] : state.eMarks[start_line]]
    opener = "$$" if text.startswith("$$") else "\\[" if text.startswith("\\[") else None
    if opener is None:
        return False
    closer = "$$" if opener == "$$" else "\\]"
    begin = state.bMarks[start_line] + state.tShift[start_line] + len(opener)
    if state.src.find(closer, begin, begin + MAX_MATH_CHARS) == -1:
        return False  # checked at C speed first: this rule is tried on every line of a paragraph
    text, parts, size, line = text[len(opener) :], [], 0, start_line
    while (at := text.find(closer)) == -1:
        parts.append(text)
        size += len(text) + 1
        line += 1
        if line >= end_line or state.isEmpty(line) or size > MAX_MATH_CHARS:
            return False
        text = state.src[state.bMarks[line] + state.tShift[line] : state.eMarks[line]]
    if text[at + len(closer) :].strip():
        return False  # `$$a$$ so …`: math inside a paragraph, the inline rule's
    parts.append(text[:at])
    latex = "\n".join(parts)
    if not latex.strip():
        return False
    if not silent:
        token = state.push("math_block", "math", 0)
        token.block = True
        token.content = latex
        token.markup = opener + latex + closer
        token.map = [start_line, line + 1]
    state.line = line + 1
    return True


def _render_math_inline(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    mathml = latex_to_mathml(token.content, display=token.meta["display"])
    return mathml if mathml is not None else escapeHtml(token.markup)


def _render_math_block(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    mathml = latex_to_mathml(token.content, display=True)
    if mathml is None:
        return "<p>" + escapeHtml(token.markup).replace("\n", "<br>\n") + "</p>\n"
    return f'<div class="math-display">{mathml}</div>\n'


def _render_link_open(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    if LINK_SCHEMES.match(str(token.attrGet("href") or "")):
        token.attrSet("rel", "nofollow noopener noreferrer")
    else:
        token.attrs = {}  # `[x]()` skips validateLink: an <a> without href is plain text
    return self.renderToken(tokens, idx, options, env)


def _render_cell_open(self, tokens, idx, options, env) -> str:
    # The table rule writes alignment as a style attribute; the allow-list has no style, so a class.
    token = tokens[idx]
    style = token.attrs.pop("style", None)
    if isinstance(style, str) and style.startswith("text-align:"):
        token.attrSet("class", "align-" + style.removeprefix("text-align:"))
    return self.renderToken(tokens, idx, options, env)


def _build_markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": True, "xhtmlOut": False})
    md.enable("table")
    md.disable("image")  # a model's answer has no business loading pictures from elsewhere
    md.validateLink = lambda url: LINK_SCHEMES.match(url) is not None  # refused: shown as text
    md.block.ruler.before(
        "table",
        "math_block",
        _math_block_rule,
        {"alt": ["paragraph", "reference", "blockquote", "list"]},
    )
    md.inline.ruler.before("escape", "math_inline", _math_inline_rule)
    md.add_render_rule("math_inline", _render_math_inline)
    md.add_render_rule("math_block", _render_math_block)
    md.add_render_rule("link_open", _render_link_open)
    md.add_render_rule("th_open", _render_cell_open)
    md.add_render_rule("td_open", _render_cell_open)
    return md


# Configuration only (parsing state lives in per-call objects), so one instance serves every request.
_MARKDOWN = _build_markdown()


def render_math_text(text: str) -> str:
    """Markdown with math as HTML safe to insert; single newlines are line breaks. Never raises: if the
    renderer fails, the text comes back escaped in paragraphs and line breaks (what a page would show
    without Markdown), and a warning is logged."""
    try:
        rendered = _MARKDOWN.render(text or "")
    except Exception:  # a bug of markdown-it or of our rules must not take a page down
        log.warning("text rendering failed; shown as escaped text", exc_info=True)
        return linebreaks(escape(text or ""))
    # markdown-it puts a newline after each block tag; dropping them keeps `</p><p>` as it always was.
    # Code text is escaped, so `>\n<` only ever occurs between two real tags.
    return _BETWEEN_TAGS.sub(">", rendered).rstrip("\n")


@register.filter(name="mathtext")
def mathtext(value) -> SafeString:
    return mark_safe(render_math_text(str(value) if value is not None else ""))  # noqa: S308 - see above


@register.filter(name="mathfinal")
def mathfinal(value) -> SafeString:
    """A final answer: MathML when it is LaTeX (\\frac{1}{2}, x^2), else escaped text (23, 星期五)."""
    text = str(value) if value is not None else ""
    if re.search(r"[\\^_{}]", text):
        try:
            mathml = latex_to_mathml(text)
        except Exception:  # fail closed, as render_math_text does
            log.warning("final answer rendering failed; shown as text", exc_info=True)
            mathml = None
        if mathml is not None:
            return mark_safe(mathml)  # noqa: S308 - rebuilt from an allow-list
    return mark_safe(html.escape(text, quote=False))  # noqa: S308


def _snippet_source(text: str, limit: int) -> str:
    """The first `limit` characters of `text` on one line, never cut inside a math segment: a formula
    that does not fit is left out whole (with "…"), so a list never shows half a `$…$` as raw LaTeX."""
    flat = re.sub(r"\s+", " ", text).strip().replace("$$", "$")
    if len(flat) <= limit:
        return flat
    pos, out = 0, []
    while pos < len(flat):
        found = _scan_math(flat, pos, len(flat))
        end = found[2] if found is not None else pos + 1
        if end > limit:
            break
        out.append(flat[pos:end])
        pos = end
    return "".join(out).rstrip() + "…"


def render_math_snippet(text: str, limit: int = 90) -> str:
    """One line of a list (the bank, missed questions, history): inline Markdown and math, at most
    `limit` characters of source, safe HTML that never raises (escaped text if anything fails)."""
    source = _snippet_source(text or "", max(1, limit))
    try:
        return _MARKDOWN.renderInline(source)
    except Exception:  # the renderer must never take a list page down
        log.warning("snippet rendering failed; shown as text", exc_info=True)
        return html.escape(source, quote=False)


@register.filter(name="mathsnippet")
def mathsnippet(value, limit=90) -> SafeString:
    """`{{ text|mathsnippet:90 }}`: a one-line preview with its math rendered (see render_math_snippet)."""
    try:
        limit = int(limit)
    except (TypeError, ValueError):
        limit = 90
    return mark_safe(render_math_snippet(str(value) if value is not None else "", limit))  # noqa: S308
