"""The chat prompt each model family expects, with a version string that stored answers are keyed on.

Owns: turning a student's question into the exact raw text the model is fed (the chat template is applied
here, once; the engine feeds token ids, so openvino-genai never applies a template a second time), the
family's recommended sampling settings, and whether the output starts inside an implicit `<think>`.
Does not own: tokenization, generation, or parsing the output (see `solver.answers`).
"""

from __future__ import annotations

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
        question = question.strip()
        if self.name == "r1-distill":
            # DeepSeek-R1 authors' advice: no system prompt, the instruction in the user turn, and the
            # assistant turn opened with "<think>\n" so the model always reasons first.
            return (
                "<｜begin▁of▁sentence｜><｜User｜>"
                f"{question}\n{BOXED_INSTRUCTION}"
                "<｜Assistant｜><think>\n"
            )
        if self.name == "chatml":
            # SmolLM2's own template (ChatML) with the system line it was trained with.
            return (
                "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
                "trained by Hugging Face<|im_end|>\n"
                f"<|im_start|>user\n{question}\n{BOXED_INSTRUCTION}<|im_end|>\n"
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
