"""`python -m solver solve / generate / models` as a user runs them (subprocesses, real tiny model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def solver_cmd(
    *args: str, store: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "solver", *args]
    if store is not None:
        cmd += ["--store", str(store)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def store(tiny_model) -> Path:
    return tiny_model.path.parent


def test_solve_json_has_the_documented_fields(store):
    proc = solver_cmd(
        "solve",
        "一个笼子里有鸡和兔子共35只，脚共94只，问各有多少只？",
        "--json",
        "--max-new-tokens",
        "16",
        store=store,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for key in (
        "reasoning",
        "answer",
        "final",
        "finish_reason",
        "new_tokens",
        "ttft_ms",
        "tokens_per_s",
        "model",
    ):
        assert key in data
    assert data["model"] == "tiny-qwen2"
    assert data["new_tokens"] <= 16
    # A random model never closes </think>: running out of tokens inside the reasoning is no answer.
    if data["finish_reason"] == "length" and "</think>" not in data["reasoning"]:
        assert data["final"] is None and data["truncated"] is True


def test_solve_streams_reasoning_apart_from_the_answer(store):
    proc = solver_cmd("solve", "What is 2 + 3?", "--max-new-tokens", "12", store=store)
    assert proc.returncode == 0, proc.stderr
    assert "── reasoning" in proc.stdout
    assert "final answer:" in proc.stdout
    assert "tokens/s" in proc.stderr


@pytest.mark.parametrize(
    "question, message",
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("x" * 100_000, "limit is 4000"),
        ("35 heads\x07 94 legs", "control character"),
    ],
)
def test_solve_refuses_bad_questions_with_exit_code_2(store, question, message):
    proc = solver_cmd("solve", question, store=store)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_solve_without_a_model_says_how_to_prepare_one(tmp_path):
    proc = solver_cmd("solve", "1+1?", store=tmp_path)
    assert proc.returncode == 1
    assert "python -m solver prepare --embedded" in proc.stderr


def test_generate_answers_a_file_in_order_of_completion_and_resumes(store, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "text": f"问题 {i}: {i}+{i}=?"}) + "\n" for i in range(6)
        )
    )
    out = tmp_path / "out.jsonl"
    # pretend an earlier run finished p0 and died while writing a line
    out.write_text(json.dumps({"id": "p0", "final": None}) + "\n" + '{"id": "p1", "fin')
    proc = solver_cmd(
        "generate", "--in", str(inp), "--out", str(out), "--max-new-tokens", "8", store=store
    )
    assert proc.returncode == 0, proc.stderr
    ids = []
    for line in out.read_text().splitlines():
        try:
            ids.append(json.loads(line)["id"])
        except ValueError:
            continue
    assert sorted(ids) == [f"p{i}" for i in range(6)]  # p0 kept, p1-p5 done once each
    proc = solver_cmd("generate", "--in", str(inp), "--out", str(out), store=store)
    assert proc.returncode == 0 and "already answered" in proc.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json\n", ":1: not valid JSON"),
        ('{"id": 1, "text": "ok"}\n[1, 2]\n', ":2: expected an object"),
        ('{"id": 1, "text": ""}\n', ":1: the question is empty"),
        ('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', "duplicate id"),
        ("", "has no problems"),
    ],
)
def test_generate_refuses_bad_files_before_doing_any_work(store, tmp_path, content, message):
    inp = tmp_path / "in.jsonl"
    inp.write_text(content)
    out = tmp_path / "out.jsonl"
    proc = solver_cmd("generate", "--in", str(inp), "--out", str(out), store=store)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not out.exists()


def test_generate_stops_cleanly_on_sigint_and_keeps_finished_work(store, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "text": f"long {i}"}) + "\n" for i in range(200)))
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "solver",
            "generate",
            "--in",
            str(inp),
            "--out",
            str(out),
            "--max-new-tokens",
            "200",
            "--greedy",
            "--store",
            str(store),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 90
    while time.time() < deadline and not (out.exists() and out.read_text().count("\n") >= 1):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = out.read_text().splitlines()
    assert 1 <= len(lines) < 200
    assert all(json.loads(line)["finish_reason"] != "cancelled" for line in lines)
    assert "rerun to continue" in err


def test_models_lists_the_prepared_model(store):
    proc = solver_cmd("models", "--json", store=store)
    assert proc.returncode == 0
    assert [m["name"] for m in json.loads(proc.stdout)] == ["tiny-qwen2"]


def test_importing_solver_does_not_import_django_or_heavy_libraries():
    code = (
        "import sys, solver, solver.engine, solver.prompts, solver.modelstore, solver.answers, solver.cli\n"
        "heavy = [m for m in ('django', 'torch', 'openvino', 'openvino_genai', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=dict(os.environ)
    )
    assert proc.returncode == 0, proc.stderr
