"""Fixtures for the tutor site's tests: the fixed cast of users, and stand-ins for unit tests.

Import with `from tests.site_fixtures import *` in a test module.

- `cast`: a teacher, two students (alice, bob), an admin — alice must never see bob's questions.
- `ExactCache`: a stand-in for solver.cache.SemanticCache that hits only on the same normalized text (or
  an alias), never on a block, and suggests what a test tells it to (`exact_cache.suggest[text] = [...]`).
  Unit tests only; tests/test_site_cache.py and tests/test_trust_loop_real.py run the same paths with the
  real cache and MiniLM.
- `ScriptedEngine`: a stand-in for solver.engine.Engine that "generates" given text piece by piece.
  Unit tests only; tests/test_site_live.py also runs live generation on the real tiny OpenVINO model.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

__all__ = [
    "ExactCache",
    "ScriptedEngine",
    "FakeManifest",
    "cast",
    "site",
    "exact_cache",
    "make_problem",
    "bearer",
]


@dataclass(frozen=True)
class _Suggestion:
    entry_id: str
    score: float


@dataclass(frozen=True)
class _Decision:
    hit: bool
    entry_id: str | None
    score: float
    reasons: tuple[str, ...]
    outcome: str = "miss"
    suggestions: tuple[_Suggestion, ...] = ()
    explanation: str = ""

    def to_dict(self) -> dict:
        return {
            "hit": self.hit,
            "entry_id": self.entry_id,
            "score": self.score,
            "reasons": list(self.reasons),
        }


class ExactCache:
    """Hits when the normalized text is the same as a banked problem's."""

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}
        self.aliases: dict[str, str] = {}
        self.blocks: set[tuple[str, str]] = set()
        self.suggest: dict[str, list[str]] = {}  # question key -> entry ids to suggest

    def _key(self, text: str) -> str:
        from tutor.services.text import question_key

        return question_key(text)

    def lookup(self, text: str) -> _Decision:
        key = self._key(text)
        if key in self.aliases and self.aliases[key] in self.entries:
            return _Decision(
                True,
                self.aliases[key],
                1.0,
                ("a teacher confirmed it",),
                outcome="hit",
                explanation="A teacher confirmed that this is a problem from the bank.",
            )
        for entry_id, entry_key in self.entries.items():
            if entry_key == key and (key, entry_id) not in self.blocks:
                return _Decision(
                    True,
                    entry_id,
                    1.0,
                    ("same question asked",),
                    outcome="hit",
                    explanation="This is a problem from the bank: it is the same text.",
                )
        offered = [
            _Suggestion(e, 0.7)
            for e in self.suggest.get(key, [])
            if e in self.entries and (key, e) not in self.blocks
        ]
        if offered:
            return _Decision(
                False,
                None,
                0.7,
                ("plausibly the same",),
                outcome="suggest",
                suggestions=tuple(offered[:3]),
                explanation="Your question looks like a problem in the bank.",
            )
        return _Decision(False, None, 0.0, ("no similar problem",), explanation="No match.")

    def add_alias(self, text: str, entry_id: str) -> None:
        key = self._key(text)
        self.aliases[key] = entry_id
        self.blocks.discard((key, entry_id))

    def remove_alias(self, text: str) -> bool:
        return self.aliases.pop(self._key(text), None) is not None

    def add_block(self, text: str, entry_id: str) -> None:
        key = self._key(text)
        self.blocks.add((key, entry_id))
        if self.aliases.get(key) == entry_id:
            del self.aliases[key]

    def remove_block(self, text: str, entry_id: str) -> bool:
        key = self._key(text)
        found = (key, entry_id) in self.blocks
        self.blocks.discard((key, entry_id))
        return found

    def add(self, entry_id: str, text: str) -> None:
        self.entries[entry_id] = self._key(text)

    def add_many(self, items) -> None:
        for entry_id, text in items:
            self.add(entry_id, text)

    def remove(self, entry_id: str) -> None:
        self.entries.pop(entry_id, None)


@dataclass
class FakeManifest:
    name: str = "scripted"
    family: str = "r1-distill"
    prompt_version: str = "r1-distill/1"
    manifest_id: str = "scripted0000"
    weak_at_math: bool = False


class _ScriptedGeneration:
    def __init__(
        self, pieces: list[str], gate: threading.Event | None, finish_reason: str, gate_at: int = 1
    ):
        self.pieces = pieces
        self.gate = gate
        self.gate_at = gate_at
        self.finish_reason = finish_reason
        self.cancelled = threading.Event()
        self._done = threading.Event()
        self.text = ""

    def __iter__(self):
        for i, piece in enumerate(self.pieces):
            if self.gate is not None and i == self.gate_at:
                # Hold the generation before piece `gate_at` until the test opens the gate (or cancels).
                while not self.gate.wait(0.02):
                    if self.cancelled.is_set():
                        break
            if self.cancelled.is_set():
                break
            self.text += piece
            yield piece
            time.sleep(0.001)
        self._done.set()

    def cancel(self) -> None:
        self.cancelled.set()

    def result(self, timeout: float | None = None):
        self._done.wait(timeout)
        reason = "cancelled" if self.cancelled.is_set() else self.finish_reason
        return SimpleNamespace(
            text=self.text,
            prompt_tokens=10,
            new_tokens=len(self.text),
            finish_reason=reason,
            ttft_ms=1.0,
            tokens_per_s=100.0,
            elapsed_s=0.01,
            error=None,
        )


@dataclass
class ScriptedEngine:
    """engine.stream(prompt, params) -> a generation that yields `pieces` (split at a gate if given)."""

    pieces: list[str]
    finish_reason: str = "stop"
    gate: threading.Event | None = None
    gate_at: int = 1
    prompts: list[str] = field(default_factory=list)
    params: list = field(default_factory=list)
    generations: list[_ScriptedGeneration] = field(default_factory=list)

    def stream(self, prompt: str, params=None) -> _ScriptedGeneration:
        self.prompts.append(prompt)
        self.params.append(params)
        generation = _ScriptedGeneration(
            list(self.pieces), self.gate, self.finish_reason, self.gate_at
        )
        self.generations.append(generation)
        return generation


@pytest.fixture
def cast(db):
    """teacher, alice and bob (students), admin — as a namespace of users."""
    from django.contrib.auth.models import Group, User

    from tutor.management.commands.setup_demo import ensure_groups

    ensure_groups()
    users = {}
    for name, group in (
        ("teacher", "teacher"),
        ("alice", "student"),
        ("bob", "student"),
        ("admin", None),
    ):
        user = User.objects.create_user(name, password="pw-" + name, is_staff=name == "admin")
        if group:
            user.groups.add(Group.objects.get(name=group))
        users[name] = user
    return SimpleNamespace(**users)


@pytest.fixture
def exact_cache():
    return ExactCache()


@pytest.fixture
def site(exact_cache, settings):
    """A clean process-wide runtime for each test: the exact-text cache and no engine (so a miss is
    refused as no_model unless the test installs one with runtime.install / use_engine)."""
    from tutor.services import live, runtime

    settings.SUANJING_MODELS = "/nonexistent-suanjing-models"
    runtime.reset()
    runtime.install(cache=exact_cache)
    yield runtime
    assert live.live_jobs.wait_idle(30), "a live job was still running at the end of the test"
    runtime.reset()


@pytest.fixture
def make_problem(db):
    from tutor.models import Problem, Solution

    def make(
        text: str, *, reference: str = "", solutions: tuple[tuple[str, str], ...] = (), **fields
    ) -> Problem:
        problem = Problem.objects.create(
            text=text, reference_answer=reference, lang=fields.pop("lang", "zh"), **fields
        )
        for status, final in solutions:
            Solution.objects.create(
                problem=problem,
                answer=f"所以答案是 \\boxed{{{final}}}",
                final=final,
                status=status,
                source="batch",
            )
        from tutor.services import runtime

        runtime.put_problem(problem.pk, problem.text)
        return problem

    return make


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
