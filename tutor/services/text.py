"""The rules for a question's text, in one place: validation, the length limit, the key and the language.

Owns, for the site: `validate_question` (what text may be asked or banked; `solver.prompts.clean_question`
does the checking, this turns its refusal into `BadQuestion`), `MAX_QUESTION_CHARS` and `length_error`
(what the ask form says about a long paste), `question_key` (identical questions share one key) and
`guess_lang`. Services, views, forms, the API, its OpenAPI schema and the admin all go through this module;
none of them imports the rules from `solver` or writes the limit down again.
Does not own: the rules themselves (`solver.prompts` defines the limit and the checks, so that the command
line and the cache apply the same ones), or matching a question to a problem (`solver.normalize` and
`solver.cache`, behind the cache).

The limit counts characters after stripping; the API's JSON schema can only bound the raw string, so the
API view refuses a raw string over the same limit before validating (one number, two honest readings).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

# solver.prompts is plain string work: importing it loads no model and no Django.
from solver.prompts import MAX_QUESTION_CHARS, InvalidQuestion, clean_question
from tutor.errors import BadQuestion
from tutor.models import Problem

__all__ = ["MAX_QUESTION_CHARS", "guess_lang", "length_error", "question_key", "validate_question"]


def validate_question(text: Any) -> str:
    """The text stripped, or BadQuestion (empty, too long, not text, control characters)."""
    try:
        return clean_question(text)
    except InvalidQuestion as exc:
        raise BadQuestion(str(exc)) from None


def length_error(text: str) -> str | None:
    """What the ask form tells a student whose question is over the limit (None when it is not)."""
    length = len(text.strip())
    if length <= MAX_QUESTION_CHARS:
        return None
    return (
        f"Your question is {length} characters long; the limit is "
        f"{MAX_QUESTION_CHARS}. Shorten it and ask again. "
        f"问题有{length}字，最多{MAX_QUESTION_CHARS}字，请缩短后再问。"
    )


def question_key(text: str) -> str:
    """Identical questions (same text after Unicode folding, case and spacing) share one key."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = re.sub(r"\s+", " ", folded).strip().rstrip("?？.。!！ ")
    return hashlib.sha256(folded.encode()).hexdigest()


def guess_lang(text: str) -> str:
    return Problem.Lang.ZH if re.search(r"[\u3400-\u9fff]", text) else Problem.Lang.EN
