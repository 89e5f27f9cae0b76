"""Answer packs: round trip, idempotent writes, refusing damaged or foreign files, and the two commands
(`precompute` into a pack and resuming it, `pack-info`). The crash test really kills a precompute process.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from solver.batch import MAX_ATTEMPTS, CheckedAnswer
from solver.cli import main
from solver.packs import (
    SCHEMA_VERSION,
    PackError,
    PackManifest,
    PackProblem,
    PackSolution,
    PackVector,
    PackWriter,
    open_pack,
    pack_info,
    read_pack,
    solution_id,
)

REPO = Path(__file__).resolve().parents[1]
MANIFEST = PackManifest(
    "abc123",
    {
        "manifest_id": "abc123",
        "name": "tiny",
        "family": "r1-distill",
        "prompt_version": "r1-distill/1",
    },
)


def solution(problem_id: str, status: str, final: str | None, **changes) -> PackSolution:
    values = dict(
        id=solution_id(problem_id, MANIFEST.manifest_id, "r1-distill/1"),
        problem_id=problem_id,
        manifest_id=MANIFEST.manifest_id,
        prompt_version="r1-distill/1",
        status=status,
        final=final,
        reasoning="鸡兔同笼：设兔 x 只……",
        answer_text=f"\\boxed{{{final}}}" if final else "",
        evidence={
            "samples": [{"text": "…", "reasoning": "…", "answer": "", "final": final}],
            "agreement": 1.0,
        },
        new_tokens=321,
        elapsed_s=1.25,
        created="2026-01-02T03:04:05+00:00",
        attempts=1,
        error=None if final else "no final answer in 1 sample(s)",
        finish_reason="stop",
    )
    values.update(changes)
    return PackSolution(**values)


PROBLEMS = [
    PackProblem(
        "p1",
        "鸡兔同笼，共35个头，94只脚，兔有几只？",
        reference_answer="12",
        lang="zh",
        topic="鸡兔同笼",
        extra={"tags": ["classic"], "difficulty": 2},
    ),
    PackProblem("p2", "What is 2+3?", reference_answer=None, lang="en"),
    PackProblem("p3", "A train leaves at 3 pm …"),
]
SOLUTIONS = [
    solution("p1", "verified", "12"),
    solution("p2", "unverified", "5"),
    solution("p3", "failed", None),
]


def write_pack(path: Path) -> Path:
    with PackWriter(path) as writer, writer.transaction():
        writer.add_manifest(MANIFEST)
        for p in PROBLEMS:
            writer.add_problem(p)
        for s in SOLUTIONS:
            writer.add_solution(s)
        writer.add_vector(PackVector.from_values("p1", "minilm-l6", [0.5, -1.0, 0.25]))
    return path


def test_a_pack_reads_back_what_was_written(tmp_path):
    pack = read_pack(write_pack(tmp_path / "a.sqlite"))
    assert pack.meta.schema_version == SCHEMA_VERSION and pack.meta.tool == "suanjing"
    assert pack.manifests == [MANIFEST]
    assert pack.problems == PROBLEMS
    assert pack.solutions == SOLUTIONS
    assert [v.values() for v in pack.vectors] == [[0.5, -1.0, 0.25]]
    assert pack.manifests[0].name == "tiny" and pack.manifests[0].prompt_version == "r1-distill/1"


def test_writing_the_same_things_twice_changes_nothing(tmp_path):
    path = write_pack(tmp_path / "a.sqlite")
    before = read_pack(path)
    write_pack(path)
    assert read_pack(path) == before
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*-journal"))


def test_recording_a_retry_overwrites_the_row_and_counts_attempts(tmp_path):
    def checked(status: str, final: str | None) -> CheckedAnswer:
        return CheckedAnswer(
            "p3", status, final, 1.0 if final else 0.0, [], "r", "a" if final else "", None, 7, 0.5
        )

    path = write_pack(tmp_path / "a.sqlite")
    with PackWriter(path) as writer:
        first = writer.record(
            checked("failed", None), manifest_id="abc123", prompt_version="r1-distill/1"
        )
        second = writer.record(
            checked("unverified", "9"), manifest_id="abc123", prompt_version="r1-distill/1"
        )
        assert first.id == second.id == SOLUTIONS[2].id
        assert (first.attempts, second.attempts) == (2, 3)
        assert writer.solution_states("abc123", "r1-distill/1")["p3"] == ("unverified", 3)
    solutions = [s for s in read_pack(path).solutions if s.problem_id == "p3"]
    assert len(solutions) == 1 and solutions[0].final == "9"


def test_a_solved_problem_cannot_change_its_text(tmp_path):
    path = write_pack(tmp_path / "a.sqlite")
    with PackWriter(path) as writer:
        with pytest.raises(PackError, match="another text"):
            writer.add_problem(PackProblem("p1", "a different question", reference_answer="12"))
        with pytest.raises(PackError, match="another text"):
            writer.add_problem(PackProblem("p1", PROBLEMS[0].text, reference_answer="13"))
        writer.add_problem(PackProblem("p9", "new"))
        writer.add_problem(PackProblem("p9", "new, reworded"))  # no solution yet: fine
        writer.add_problem(
            PackProblem("p1", PROBLEMS[0].text, reference_answer="12", topic="renamed")
        )
    assert {p.id: p.text for p in read_pack(path).problems}["p9"] == "new, reworded"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (solution("p1", "great", "12"), "status 'great'"),
        (solution("p1", "verified", None), "no final answer"),
        (solution("p1", "failed", "12"), "failed but has a final"),
        (solution("p1", "verified", "12", new_tokens=-1), "new_tokens"),
        (solution("p1", "verified", "12", created="yesterday"), "ISO 8601"),
        (solution("p1", "verified", "x" * 501), "limit is 500"),
        (solution("nope", "verified", "12"), "add the problem"),
        (solution("p1", "verified", "12", evidence={"samples": "all"}), "samples must be a list"),
    ],
)
def test_the_writer_refuses_what_the_reader_would_refuse(tmp_path, bad, message):
    path = write_pack(tmp_path / "a.sqlite")
    with PackWriter(path) as writer, pytest.raises(PackError, match=message):
        writer.add_solution(bad)


def test_pack_info_counts_by_status(tmp_path, capsys):
    path = write_pack(tmp_path / "a.sqlite")
    info = pack_info(path)
    assert info["schema_version"] == 1 and info["problems"] == 3 and info["solutions"] == 3
    assert info["by_status"] == {"approved": 0, "verified": 1, "unverified": 1, "failed": 1}
    assert (
        info["manifests"][0]["manifest_id"] == "abc123" and info["manifests"][0]["solutions"] == 3
    )
    assert info["vectors"] == 1 and info["embedders"] == {"minilm-l6": 1}

    assert main(["pack-info", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    for key in ("schema_version", "manifests", "problems", "solutions", "by_status"):
        assert printed[key] == info[key]
    assert main(["pack-info", str(path)]) == 0
    human = capsys.readouterr().out
    assert (
        "schema version 1" in human
        and "1 verified, 1 unverified, 1 failed" in human
        and "abc123" in human
    )


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _truncated(path: Path) -> None:
    write_pack(path)
    with sqlite3.connect(path) as conn:  # make it several pages long
        conn.execute("UPDATE solutions SET reasoning = ?", ("step " * 20000,))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _sql(statement: str):
    def damage(path: Path) -> None:
        write_pack(path)
        conn = sqlite3.connect(path)
        conn.execute(statement)
        conn.commit()
        conn.close()

    return damage


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_random_bytes, "not a SQLite file"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\x00" * 20), "truncated"),
        (_truncated, "truncated"),
        (_sql("UPDATE meta SET value = '99' WHERE key = 'schema_version'"), "schema version 99"),
        (
            _sql("UPDATE meta SET value = 'one' WHERE key = 'schema_version'"),
            "no valid schema version",
        ),
        (
            _sql("UPDATE meta SET value = 'something-else' WHERE key = 'format'"),
            "not an answer pack",
        ),
        (_sql("DROP TABLE problems"), "no problems table"),
        (_sql("UPDATE solutions SET status = 'bogus' WHERE problem_id = 'p2'"), "status 'bogus'"),
        (
            _sql("UPDATE solutions SET evidence = '{not json' WHERE problem_id = 'p2'"),
            "not valid JSON",
        ),
        (_sql("UPDATE solutions SET evidence = '[1, 2]' WHERE problem_id = 'p2'"), "JSON object"),
        (_sql("UPDATE solutions SET new_tokens = 'many' WHERE problem_id = 'p2'"), "new_tokens"),
        (_sql("UPDATE problems SET text = X'00ff' WHERE id = 'p3'"), "must be text"),
        (_sql('UPDATE manifests SET json = \'{"manifest_id": "other"}\''), "says its id"),
        (_sql("DELETE FROM problems WHERE id = 'p3'"), "not in the pack"),
        (_sql("UPDATE vectors SET dim = 4"), "float32"),
    ],
)
def test_a_damaged_or_foreign_file_is_refused_with_a_clear_message(
    tmp_path, capsys, damage, message
):
    path = tmp_path / "bad.sqlite"
    damage(path)
    with pytest.raises(PackError, match=message):
        pack_info(path)
    with pytest.raises(PackError):
        read_pack(path)
    assert main(["pack-info", str(path), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_the_writer_refuses_to_add_to_a_damaged_pack(tmp_path):
    path = tmp_path / "bad.sqlite"
    _sql("UPDATE meta SET value = '99' WHERE key = 'schema_version'")(path)
    with pytest.raises(PackError, match="schema version 99"):
        PackWriter(path)
    _random_bytes(path)
    with pytest.raises(PackError, match="not a SQLite file"):
        PackWriter(path)


def test_a_pack_being_written_is_not_read_half_done(tmp_path):
    path = write_pack(tmp_path / "a.sqlite")
    (tmp_path / "a.sqlite-journal").write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + b"\x00" * 504)
    with pytest.raises(PackError, match="unfinished write"):
        pack_info(path)


def test_an_export_can_insist_on_a_new_file(tmp_path):
    path = write_pack(tmp_path / "a.sqlite")
    with pytest.raises(PackError, match="already exists"):
        PackWriter(path, exist_ok=False)
    PackWriter(tmp_path / "new.sqlite", exist_ok=False).close()
    assert pack_info(tmp_path / "new.sqlite")["problems"] == 0


def test_a_reader_walks_a_pack_lazily(tmp_path):
    with open_pack(write_pack(tmp_path / "a.sqlite")) as reader:
        assert [p.id for p in reader.problems()] == ["p1", "p2", "p3"]
        assert next(reader.solutions()).status == "verified"


# -- `python -m solver precompute` on the tiny real model --------------------------------------------------


def write_problems(path: Path, n: int, **extra) -> Path:
    lines = [
        json.dumps({"id": f"q{i}", "text": f"What is {i} + {i}?", "answer": 2 * i, **extra})
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def precompute_args(tiny_model, problems: Path, pack: Path, *more: str) -> list[str]:
    return [
        "precompute",
        "--in", str(problems),
        "--out", str(pack),
        "--store", str(tiny_model.path.parent),
        "--model", tiny_model.name,
        "--max-new-tokens", "16",
        "--batch-size", "4",
        *more,
    ]  # fmt: skip


def attempts_by_problem(pack: Path) -> dict[str, int]:
    solutions = read_pack(pack).solutions
    assert len({s.problem_id for s in solutions}) == len(solutions), "a problem has two solutions"
    return {s.problem_id: s.attempts for s in solutions}


def test_precompute_resumes_keeps_answers_and_retries_failures_three_times(
    tiny_model, tmp_path, capsys
):
    problems = write_problems(tmp_path / "in.jsonl", 5)
    pack = tmp_path / "pack.sqlite"
    manifest_id = tiny_model.manifest.manifest_id
    # q0 was answered in an earlier run (as if by a better day of this model)
    with PackWriter(pack) as writer:
        writer.add_manifest(PackManifest(manifest_id, tiny_model.manifest.to_dict()))
        writer.add_problem(PackProblem("q0", "What is 0 + 0?", reference_answer="0"))
        kept = writer.record(
            CheckedAnswer("q0", "verified", "0", 1.0, [], "0 plus 0", "\\boxed{0}", "0", 12, 0.3),
            manifest_id=manifest_id,
            prompt_version="r1-distill/1",
        )

    assert main(precompute_args(tiny_model, problems, pack, "--samples", "2")) == 0
    assert "4 problems answered" in capsys.readouterr().err
    solutions = {s.problem_id: s for s in read_pack(pack).solutions}
    assert solutions["q0"] == kept  # not redone
    assert {solutions[f"q{i}"].status for i in range(1, 5)} == {"failed"}
    assert all(len(solutions[f"q{i}"].evidence["samples"]) == 2 for i in range(1, 5))

    for _ in range(MAX_ATTEMPTS - 1):
        assert main(precompute_args(tiny_model, problems, pack)) == 0
    assert attempts_by_problem(pack) == {"q0": 1, **{f"q{i}": MAX_ATTEMPTS for i in range(1, 5)}}
    assert "set aside" in capsys.readouterr().err

    assert main(precompute_args(tiny_model, problems, pack)) == 0  # nothing left to do
    assert "already have a settled answer" in capsys.readouterr().err
    assert attempts_by_problem(pack)["q1"] == MAX_ATTEMPTS
    info = pack_info(pack)
    assert (
        info["problems"] == 5
        and info["by_status"]["failed"] == 4
        and info["by_status"]["verified"] == 1
    )


def test_precompute_limit_answers_only_some(tiny_model, tmp_path, capsys):
    problems = write_problems(tmp_path / "in.jsonl", 4)
    pack = tmp_path / "pack.sqlite"
    assert main(precompute_args(tiny_model, problems, pack, "--limit", "3")) == 0
    info = pack_info(pack)
    assert info["problems"] == 4 and info["solutions"] == 3


@pytest.mark.parametrize(
    ("more", "lines", "message"),
    [
        (["--samples", "0"], None, "--samples"),
        (["--samples", "3", "--greedy"], None, "sampling"),
        (["--limit", "0"], None, "--limit"),
        ([], ['{"id": "a", "text": "What?", "answer": {"x": 1}}'], "must be text or a number"),
        ([], ['{"id": "a", "text": "What?"}', '{"id": "a", "text": "Again?"}'], "duplicate id"),
        ([], ["not json"], "not valid JSON"),
    ],
)
def test_precompute_refuses_bad_input(tiny_model, tmp_path, capsys, more, lines, message):
    problems = tmp_path / "in.jsonl"
    if lines is None:
        write_problems(problems, 2)
    else:
        problems.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(precompute_args(tiny_model, problems, tmp_path / "p.sqlite", *more)) == 2
    assert message in capsys.readouterr().err


def test_precompute_refuses_a_damaged_pack_and_a_changed_problem(tiny_model, tmp_path, capsys):
    problems = write_problems(tmp_path / "in.jsonl", 2)
    bad = tmp_path / "bad.sqlite"
    _random_bytes(bad)
    assert main(precompute_args(tiny_model, problems, bad)) == 2
    assert "not a SQLite file" in capsys.readouterr().err

    pack = tmp_path / "pack.sqlite"
    assert main(precompute_args(tiny_model, problems, pack)) == 0
    write_problems(problems, 2, text="A changed question")
    assert main(precompute_args(tiny_model, problems, pack)) == 2
    assert "another text" in capsys.readouterr().err


# -- a real crash ----------------------------------------------------------------------------------------------


def solutions_so_far(pack: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{pack}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT count(*) FROM solutions").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def start_precompute(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "solver", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_solutions(process: subprocess.Popen, pack: Path, at_least: int) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, (
            f"precompute ended before it was stopped: {process.communicate()}"
        )
        if pack.exists() and (n := solutions_so_far(pack)) >= at_least:
            return n
        time.sleep(0.02)
    raise AssertionError("precompute made no progress")


@pytest.mark.slow
def test_precompute_survives_sigterm_and_sigkill_and_finishes_the_rest(tiny_model, tmp_path):
    n = 40
    problems = write_problems(tmp_path / "in.jsonl", n)
    pack = tmp_path / "pack.sqlite"
    args = precompute_args(tiny_model, problems, pack)

    # SIGTERM: a clean stop that keeps what finished
    process = start_precompute(args)
    wait_for_solutions(process, pack, 2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "stopped" in err and "Rerun the same command" in err
    after_term = attempts_by_problem(pack)
    assert 2 <= len(after_term) < n

    # SIGKILL in the middle: no cleanup at all
    process = start_precompute(args)
    wait_for_solutions(process, pack, len(after_term) + 3)
    process.kill()
    process.wait(timeout=30)
    after_kill = attempts_by_problem(pack)
    assert len(after_kill) < n

    # the same command finishes the rest: one solution per problem, nothing lost or doubled
    process = start_precompute(args)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    final = attempts_by_problem(pack)
    assert sorted(final) == sorted(f"q{i}" for i in range(n))
    # each run tried every problem not yet settled exactly once (all fail on the random model)
    assert all(after_kill[pid] >= attempts for pid, attempts in after_term.items())
    assert final == {pid: after_kill.get(pid, 0) + 1 for pid in final}
    assert not list(tmp_path.glob("*-journal")) and not list(tmp_path.glob("*.partial"))
