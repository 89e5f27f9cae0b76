"""The chat prompt each model family expects, with a version string that stored answers are keyed on.

Owns: turning a student's question into the exact raw text the model is fed (the chat template is applied
here, once; the engine feeds token ids, so openvino-genai never applies a template a second time), the
family's recommended sampling settings, and whether the output starts inside an implicit `<think>`. Besides
the plain question (`PromptFamily.render`): a solution towards a known answer (`render_towards_answer`),
another try after a teacher rejected an answer (`render_retry`), and a student's follow-up question on a
solution (`render_follow_up`).
Also owns the rules for a question's text, once for the whole project: `MAX_QUESTION_CHARS` (the one
definition of the length limit) and `clean_question` (what text may be asked or banked). `solver.cache`,
the command line and the site (through `tutor.services.text`) all take them from here.
Does not own: tokenization, generation, or parsing the output (see `solver.answers`).

Text from students (and from the model, quoted back to it) is data: every prompt is plain string
assembly, each such text is capped in length and has the chat template's control markers taken out, so
that it cannot close its turn and speak as the system or the assistant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


class UnknownPromptFamily(Exception):
    """This prompt family is not known to Suanjing."""


@dataclass(frozen=True)
class PromptFamily:
    name: str
    version: str
    # The output begins after a `<think>` the prompt already opened (R1 distill), so text with no
    # `</think>` is all reasoning.
    implicit_think: bool
    temperature: float
    top_p: float
    weak_at_math: bool
    note: str

    def render(self, question: str) -> str:
        """The raw model input for one student question (single turn)."""
        return self._turn(f"{as_data(question)}\n{BOXED_INSTRUCTION}")

    def _turn(self, user: str) -> str:
        """One user turn in this family's chat template, the assistant's turn opened after it."""
        if self.name == "r1-distill":
            # DeepSeek-R1 authors' advice: no system prompt, the instruction in the user turn, and the
            # assistant turn opened with "<think>\n" so the model always reasons first.
            return f"<｜begin▁of▁sentence｜><｜User｜>{user}<｜Assistant｜><think>\n"
        if self.name == "chatml":
            # SmolLM2's own template (ChatML) with the system line it was trained with.
            return (
                "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
                "trained by Hugging Face<|im_end|>\n"
                f"<|im_start|>user\n{user}<|im_end|>\n"
                "<|im_start|>assistant\n"
            )
        raise UnknownPromptFamily(self.name)


FAMILIES: dict[str, PromptFamily] = {
    "r1-distill": PromptFamily(
        name="r1-distill",
        version="r1-distill/1",
        implicit_think=True,
        temperature=0.6,
        top_p=0.95,
        weak_at_math=False,
        note="DeepSeek-R1 distills: no system prompt, \\boxed{} instruction, temperature 0.6.",
    ),
    "chatml": PromptFamily(
        name="chatml",
        version="chatml/1",
        implicit_think=False,
        temperature=0.2,
        top_p=0.9,
        weak_at_math=True,
        note="ChatML (SmolLM2). Small instruction models: fluent, but often wrong at math.",
    ),
}


def get_family(name: str) -> PromptFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise UnknownPromptFamily(f"unknown prompt family {name!r} (known: {known})") from None


def detect_family(*, model_type: str, name_or_path: str, chat_template: str | None) -> str | None:
    """Guess the prompt family of a Hugging Face model folder, or None when unsure."""
    template = chat_template or ""
    lowered = name_or_path.lower()
    if "<｜Assistant｜>" in template or "deepseek-r1" in lowered or "r1-distill" in lowered:
        return "r1-distill"
    if "<|im_start|>" in template:
        return "chatml"
    if model_type == "qwen2" and not template:
        return "r1-distill"
    return None


# The longest question, in characters after stripping: the only place the limit is written down (the
# cache, the prompts, the site's forms, API and OpenAPI schema read it; tests/test_text_rules.py checks).
MAX_QUESTION_CHARS = 4000


class InvalidQuestion(ValueError):
    """The question text cannot be used (empty, too long, binary)."""


def clean_question(text: str) -> str:
    """Validate a question from a student or a file and return it stripped.

    Refuses empty text, more than MAX_QUESTION_CHARS characters, and control characters other than
    newlines and tabs (binary pasted by accident). Emoji and mixed scripts are fine."""
    if not isinstance(text, str):
        raise InvalidQuestion("the question must be text")
    stripped = text.strip()
    if not stripped:
        raise InvalidQuestion("the question is empty")
    if len(stripped) > MAX_QUESTION_CHARS:
        raise InvalidQuestion(
            f"the question is {len(stripped)} characters long; the limit is {MAX_QUESTION_CHARS}"
        )
    for ch in stripped:
        code = ord(ch)
        if (code < 32 and ch not in "\n\t\r") or 0x7F <= code < 0xA0 or ch == "\ufffd":
            raise InvalidQuestion(
                f"the question contains a control character (U+{code:04X}); paste plain text"
            )
    return stripped


# -- prompts beyond the plain question --------------------------------------------------------------

MAX_ANSWER_CHARS = 200  # a reference answer or a rejected final answer, quoted in one line
MAX_SOLUTION_CHARS = 6000  # a solution quoted back for a follow-up question (its answer part)
# A follow-up is held to the same limit as a question (and told so in the same words): all of it
# reaches the model, never a silently shortened one.
MAX_FOLLOW_UP_CHARS = MAX_QUESTION_CHARS

# Chat-template markers of the families above and their relatives (<|im_start|>, <｜User｜>, <|endoftext|>),
# and reasoning tags: none may come from quoted text.
_MARKER = re.compile(r"<\s*[|｜][^<>\n]{0,40}?[|｜]\s*>|</?\s*think\s*>", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")


def as_data(text: str, *, limit: int = MAX_QUESTION_CHARS) -> str:
    """Text from outside (a student, a teacher, the model) made safe to quote in a prompt: chat-template
    markers and control characters taken out, surrounding whitespace stripped, at most `limit` characters
    (cut with "…"). It stays the same text for everything a person would write."""
    text = _CONTROL.sub("", _MARKER.sub("", str(text))).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def one_line(text: str, *, limit: int = MAX_ANSWER_CHARS) -> str:
    """`as_data` on one line: a short answer quoted inside a sentence."""
    return as_data(" ".join(str(text).split()), limit=limit)


def render_towards_answer(family: PromptFamily, question: str, answer: str) -> str:
    """The raw model input for a worked solution of `question` that reaches its known `answer` (a
    teacher's reference answer, shown as the answer key while this generates).

    The R1 distill's advice holds: no system prompt, the boxed instruction in the user turn; the known
    answer is stated as the answer to reach and to box. Raises InvalidQuestion on an empty answer."""
    known = one_line(answer)
    if not known:
        raise InvalidQuestion("the reference answer is empty")
    return family._turn(
        f"{as_data(question)}\n\n"
        f"The correct final answer is: {known}\n"
        "Show the step-by-step solution that arrives at this answer, and end with "
        f"\\boxed{{{known}}}.\n{BOXED_INSTRUCTION}"
    )


def render_retry(family: PromptFamily, question: str, rejected: str | None) -> str:
    """The raw model input for another try at `question` after a teacher marked an answer wrong:
    `rejected` is that answer's final answer (None or empty when it had none), quoted in one line and
    cut at MAX_ANSWER_CHARS. Use a new seed with it, or sampling repeats the old text up to the hint."""
    wrong = one_line(rejected or "")
    hint = (
        f"A previous answer, {wrong}, was marked wrong by a teacher; solve it again carefully."
        if wrong
        else "A previous answer was marked wrong by a teacher; solve it again carefully."
    )
    return family._turn(f"{as_data(question)}\n\n{hint}\n{BOXED_INSTRUCTION}")


_CJK = re.compile(r"[\u3400-\u9fff]")


def render_follow_up(
    family: PromptFamily,
    question: str,
    solution: str,
    follow_up: str,
    *,
    lang: str | None = None,
    partial: bool = False,
) -> str:
    """The raw model input for a student's `follow_up` question about `solution`, a worked solution of
    `question`. Pass the solution's answer part, not its reasoning (the R1 distill's chat template drops
    earlier reasoning too); it is cut at MAX_SOLUTION_CHARS, the follow-up at MAX_FOLLOW_UP_CHARS.
    `lang` "zh" or "en" is the language the instructions are written in and the reply is asked for
    (None: Chinese when the follow-up has Chinese characters in it, else English). `partial`: the
    student has seen only these first steps of a step-by-step answer, and the model is asked not to give
    the rest away. Raises InvalidQuestion when the follow-up is empty."""
    asked = as_data(follow_up, limit=MAX_FOLLOW_UP_CHARS)
    if not asked:
        raise InvalidQuestion("the follow-up question is empty")
    if lang is None:
        lang = "zh" if _CJK.search(asked) else "en"
    problem, shown = as_data(question), as_data(solution, limit=MAX_SOLUTION_CHARS)
    if lang == "zh":
        if partial:
            intro = "一个学生正在一步一步地学习下面这道题的解答，已经看了前面几步，对这些步骤提出了一个问题。"
            heading = "学生已经看到的步骤："
            keep = "不要说出后面的步骤和最终答案。"
        else:
            intro = "一个学生看了下面这道题的解答，对解答提出了一个问题。"
            heading, keep = "解答：", ""
        return family._turn(
            f"{intro}\n\n题目：\n{problem}\n\n{heading}\n{shown}\n\n学生的问题：\n{asked}\n\n"
            f"请用中文清楚地、一步一步地回答学生的问题。{keep}"
            "如果回答的最后是一个数值，请把它写在 \\boxed{} 里。"
        )
    if partial:
        intro = (
            "A student is working through the solution of this problem step by step, has seen its "
            "first steps, and asks a question about them."
        )
        heading = "The steps the student has seen:"
        keep = " Do not give away the later steps or the final answer."
    else:
        intro = "A student solved this problem with the worked solution below, and asks a question about it."
        heading, keep = "Solution:", ""
    return family._turn(
        f"{intro}\n\nProblem:\n{problem}\n\n{heading}\n{shown}\n\n"
        f"The student's question:\n{asked}\n\n"
        f"Answer the student's question clearly, step by step, in English.{keep} If the reply ends in "
        "a value, put it within \\boxed{}."
    )
