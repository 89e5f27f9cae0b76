"""A worked solution's text → its steps, for hints: "hint" shows the first, "next step" the one after.

Owns splitting one text (a model's reasoning, or the answer written after it, or a teacher's solution)
into steps a student can read one at a time, in Chinese and English:
- a line that starts a step: "Step 2", "步骤2", 第2步, "1." / "2)" / "(3)" / ① / 一、; in a text without
  those, a line that starts with a connective (首先 其次 然后 接着 最后 所以 因此 / First, Next, Then,
  Finally, So, Therefore);
- else paragraphs (blank lines); a single paragraph of several lines, line by line; one long line of
  Chinese prose, at 。 before 首先/然后/所以 …;
- never inside a fenced code block, `$…$`, `$$…$$`, `\\(…\\)` or `\\[…\\]` (math and code stay whole);
- a heading alone ("解：", "Solution:", "Step 1:") or a short line ending in a colon joins the step
  after it; at most `max_steps` steps
  (neighbours merged evenly), so a long chain of thought is still a handful of hints.

Does not own: what is stored, which steps a student has seen, or extracting the final answer
(`solver.answers`). Strings in, a list of strings out; joining the steps with blank lines gives back the
text's content.
"""

from __future__ import annotations

import re

__all__ = ["MAX_STEPS", "split_steps"]

MAX_STEPS = 12

# Spans that are never split: fenced code, display math, inline math (no newline inside $…$).
_PROTECTED = re.compile(
    r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|\$\$.*?\$\$|\\\[.*?\\\]|\\\(.*?\\\)|(?<![\\$])\$[^$\n]+?\$",
    re.DOTALL,
)
_HOLE = "\x00{}\x00"
_HOLE_AT = re.compile(r"\x00(\d+)\x00")

_CN_DIGITS = "一二三四五六七八九十"
# A line that starts a step. Numbered items need their punctuation ("1." but not "12 apples").
_STEP_START = re.compile(
    rf"""^\s*(?:
        (?:\*\*|\#{{1,6}}\s*)?(?:step|步骤)\s*\d+            # Step 2, **Step 2**, ### Step 2, 步骤2
      | (?:\*\*)?第\s*[\d{_CN_DIGITS}]+\s*步                  # 第2步, 第二步
      | \d{{1,2}}[.)、．）](?!\d)                            # 1.  2)  3、
      | [(（]\d{{1,2}}[)）]                                   # (1) （2）
      | [①②③④⑤⑥⑦⑧⑨⑩]
      | [{_CN_DIGITS}]{{1,2}}、                              # 一、
    )""",
    re.IGNORECASE | re.VERBOSE,
)
# A line that starts a new move, when the text has no numbered steps.
_CONNECTIVE_START = re.compile(
    r"^\s*(?:首先|其次|然后|接着|再者|最后|所以|因此|于是|综上"
    r"|(?:first(?:ly)?|second(?:ly)?|next|then|finally|so|therefore|thus|hence)\b[,:]?\s)",
    re.IGNORECASE,
)
# Inside one long line of Chinese: a sentence end followed by a connective starts a new step.
_INLINE_CONNECTIVE = re.compile(
    r"(?<=[。；;！？])\s*(?=首先|其次|然后|接着|最后|所以|因此|于是|综上)"
)
# A line that is only a heading: it belongs to the step that follows it.
_HEADING_ONLY = re.compile(
    r"^\s*(?:\*\*|#{1,6}\s*)?(?:解|答|解答|分析|证明|solution|answer|proof|step\s*\d+|第\s*[\d"
    + _CN_DIGITS
    + r"]+\s*步)\s*[:：.]?\s*(?:\*\*)?\s*$",
    re.IGNORECASE,
)


def split_steps(text: str, *, max_steps: int = MAX_STEPS) -> list[str]:
    """The steps of `text`, in order, each stripped; [] for empty text."""
    if not text or not text.strip():
        return []
    held: list[str] = []

    def hold(m: re.Match[str]) -> str:
        held.append(m.group(0))
        return _HOLE.format(len(held) - 1)

    masked = _PROTECTED.sub(hold, text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    steps = _by_markers(masked) or _by_paragraphs(masked)
    if len(steps) == 1:
        steps = _by_lines(steps[0]) or _by_connectives(steps[0]) or steps
    steps = _join_headings(steps)
    steps = _merge_to(steps, max_steps)
    return [_HOLE_AT.sub(lambda m: held[int(m.group(1))], s) for s in steps]


def _by_markers(text: str) -> list[str]:
    """Split before every line that starts a numbered step, else before every line that starts with a
    connective; [] when fewer than two lines do."""
    lines = text.split("\n")
    for start in (_STEP_START, _CONNECTIVE_START):
        starts = [i for i, line in enumerate(lines) if start.match(line)]
        if len(starts) >= 2:
            break
    else:
        return []
    cuts = sorted({0, *starts})
    pieces = [
        "\n".join(lines[a:b]).strip() for a, b in zip(cuts, [*cuts[1:], len(lines)], strict=True)
    ]
    return [p for p in pieces if p]


def _by_paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _by_lines(text: str) -> list[str]:
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    return lines if len(lines) > 1 else []


def _by_connectives(text: str) -> list[str]:
    pieces = [p.strip() for p in _INLINE_CONNECTIVE.split(text) if p.strip()]
    return pieces if len(pieces) > 1 else []


def _join_headings(steps: list[str]) -> list[str]:
    out: list[str] = []
    carry = ""
    for step in steps:
        if _HEADING_ONLY.match(step) or (len(step) < 80 and step.endswith((":", "："))):
            carry = f"{carry}\n{step}".strip()
            continue
        out.append(f"{carry}\n{step}".strip() if carry else step)
        carry = ""
    if carry:
        if out:
            out[-1] = f"{out[-1]}\n{carry}"
        else:
            out.append(carry)
    return out


def _merge_to(steps: list[str], limit: int) -> list[str]:
    """At most `limit` steps: neighbours merged into groups of (nearly) equal counts, in order."""
    if limit < 1 or len(steps) <= limit:
        return steps
    size, extra = divmod(len(steps), limit)
    out, i = [], 0
    for k in range(limit):
        n = size + (1 if k < extra else 0)
        out.append("\n\n".join(steps[i : i + n]))
        i += n
    return out
