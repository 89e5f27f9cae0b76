"""The loop guard's line rule: a generation that writes the same line again and again with only a counter
changing ("第一步：鸡有15只。第二步：鸡有15只。…", "Check 12: 23 chickens and 12 rabbits, right. Let us
check again.").

The token rules of `solver.engine.LoopDetector` miss these when the counter changes the token count (第九步
→ 第十步 → 第十一步 in a byte-level vocabulary, 9 → 10) or the repeated line is longer than their period.
This rule reads text instead: the generation is cut into lines and sentences, each line's first number
(the counter: digits or Chinese numerals) is masked, and the rule fires when the last lines repeat with a
period of at most `max_period` lines, `min_lines` lines in a row. Lists and tables whose other numbers
change (guess-and-check rows, a calendar, the multiples of 3) never repeat this way; a list of ten or more
identical lines but for their number ("第1天：存10元。第2天：存10元。…") does, and is ended: say it once.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping

# A line ends at a newline or a sentence's end (Chinese full stops always; an English period before a
# space and not after a digit, so "3.5", "x.y" and a list's "2. " stay whole).
_LINE_END = re.compile(rb"\n|\xe3\x80\x82|\xef\xbc\x81|\xef\xbc\x9f|(?<![0-9])[.!?](?= )")
_COUNTER = re.compile(r"[0-9]+|[零〇一二两三四五六七八九十百千]+")
# Letters or CJK characters: a line without enough of them is a table rule, a bare number or punctuation.
_WORDY = re.compile(r"[A-Za-z\u4e00-\u9fff]")
_MIN_WORDY = 4
_MAX_LINE_BYTES = 2000


def token_bytes(vocab: Mapping[bytes | str, int]) -> dict[int, bytes]:
    """Token id -> the bytes it writes, from the tokenizer's text -> id map (openvino-genai gives byte
    strings for byte-level vocabularies; a SentencePiece piece's '▁' is a space)."""
    out: dict[int, bytes] = {}
    for piece, token in vocab.items():
        if isinstance(piece, str):
            out[int(token)] = piece.replace("\u2581", " ").encode("utf-8", "surrogatepass")
        else:
            out[int(token)] = bytes(piece)
    return out


def line_template(line: str) -> str | None:
    """The line with its first number masked, or None for a line that says too little to count."""
    line = line.strip()
    if len(_WORDY.findall(line)) < _MIN_WORDY:
        return None
    return _COUNTER.sub("#", line, count=1)


class LineRepeats:
    """Feed the bytes of each new token; True once the last lines repeat (and from then on)."""

    def __init__(self, min_lines: int = 10, max_period: int = 3) -> None:
        self.min_lines = min_lines
        self.max_period = max_period
        self._pending = bytearray()
        self._lines: deque[str] = deque(maxlen=max(min_lines, 4 * max_period))
        self.fired = False

    def feed(self, data: bytes) -> bool:
        if self.fired:
            return True
        if not data:
            return False
        self._pending += data
        if not _LINE_END.search(self._pending, max(0, len(self._pending) - len(data) - 3)):
            if len(self._pending) > _MAX_LINE_BYTES:
                del self._pending[: len(self._pending) - _MAX_LINE_BYTES]
            return False
        parts = _LINE_END.split(bytes(self._pending))
        self._pending = bytearray(parts.pop())  # the unfinished line
        for part in parts:
            template = line_template(part.decode("utf-8", "ignore"))
            if template is not None:
                self._lines.append(template)
        self.fired = self._repeating()
        return self.fired

    def _repeating(self) -> bool:
        lines = list(self._lines)
        for period in range(1, self.max_period + 1):
            span = max(self.min_lines, 4 * period)  # at least four rounds of a longer cycle
            if len(lines) < span:
                continue
            tail = lines[-span:]
            if all(tail[i] == tail[i + period] for i in range(span - period)):
                return True
        return False
