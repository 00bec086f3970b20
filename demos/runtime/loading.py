"""Model loading in one place: allow-list, device and dtype chosen once, eager attention,
safetensors only, no remote code, and a bounded least-recently-used cache of resident models.
"""
from __future__ import annotations

import contextvars
import functools
import gc
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from core import registry
from core.results import ModelInfo
from demos.runtime import settings as settings_mod
from demos.runtime import threads

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def device() -> torch.device:
    """CUDA when present, else CPU; `XRAY_DEVICE` (or settings.device) forces one."""
    from demos.runtime.gpu import zero_gpu

    forced = settings_mod.current().device
    if forced:
        return torch.device(forced)
    # On ZeroGPU, CUDA only appears inside @spaces.GPU calls; models are placed on it up front.
    return torch.device("cuda" if zero_gpu() or torch.cuda.is_available() else "cpu")


def dtype_for(task: str) -> torch.dtype:
    return torch.float16 if device().type == "cuda" and registry.get(task).half_safe else torch.float32


@dataclass
class Loaded:
    """A model ready to run, with its tokenizer or processor and where it came from."""

    task: str
    model_id: str  # the id the user chose (hub id or folder)
    source: str  # what was actually loaded (hub id or folder)
    model: Any
    processor: Any
    pretrained: bool  # False when the weights are random (tiny offline build)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype



# Hooks the offline layer installs: task -> folder holding a usable local model.
_local_fallbacks: dict[str, Callable[[], str]] = {}


def register_local_fallback(task: str, provider: Callable[[], str]) -> None:
    """Tell the loader how to get a local folder for `task` when the Hub cannot be used."""
    _local_fallbacks[task] = provider


def resolve_source(task: str, model_id: str) -> str:
    """Folder or hub id to load for `model_id`: local folders as given, hub ids unless offline."""
    if Path(model_id).expanduser().is_dir():
        return str(Path(model_id).expanduser().resolve())
    if settings_mod.current().offline:
        from demos.provision.hubcache import find_snapshot  # the real model, when the Hugging Face cache holds it

        if (cached := find_snapshot(model_id, task)) is not None:
            return str(cached)
        if task in _local_fallbacks:
            return _local_fallbacks[task]()
        raise OfflineError(f"Offline and no local model for {task}: set {registry.get(task).env} to a folder.")
    return model_id


_cache: OrderedDict[tuple[str, str], Loaded] = OrderedDict()  # the answers' models
_explain_cache: OrderedDict[tuple[str, str], Loaded] = OrderedDict()  # the explanations' copies
_loading_locks: dict[tuple[str, str, str], threading.Lock] = {}
_lock = threading.Lock()
# transformers builds a model under process-wide patches (meta-device init, skipped weight init);
# two from_pretrained calls at once can leave them in place, and every later load in the process
# then fails ("Cannot copy out of meta tensor"). Loads of different models therefore take turns;
# models already loaded keep answering meanwhile.
_build_lock = threading.Lock()

# Which lane a computation runs in. Explanations (attributions, knock-outs, the lens...) register
# hooks on the model and run for seconds; answers take milliseconds. With one model and one lock
# per task, every answer of a class waited behind every explanation. Explanations therefore run
# on their own copy of the task's model (same folder, same weights: the same numbers), under their
# own lock, so an answer never waits for an explanation and an explanation's hooks never touch an
# answer. XRAY_EXPLAIN_COPY=0 shares one model and one lock (half the memory; e.g. a small GPU).
_lane: contextvars.ContextVar[str] = contextvars.ContextVar("xray_lane", default="answer")


def explain_copy() -> bool:
    return os.environ.get("XRAY_EXPLAIN_COPY", "1").strip() not in ("0", "false", "no")


def lane() -> str:
    """'explain' inside an explanation (with XRAY_EXPLAIN_COPY on), else 'answer'."""
    return _lane.get()


def in_explain_lane(fn: Callable) -> Callable:
    """Decorator: `fn` (an explanation) runs on the explanations' model copy and lock."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not explain_copy():
            return fn(*args, **kwargs)
        token = _lane.set("explain")
        try:
            return fn(*args, **kwargs)
        finally:
            _lane.reset(token)

    return run


def load(task: str, requested: str | None = None) -> Loaded:
    """Load (or fetch from the cache) the model for `task`.

    The model and processor classes are the registry's (`core.registry`). The model is put
    in eval mode, on `device()`, in `dtype_for(task)`, with eager attention so attention weights
    can be returned. At most `settings.max_models` models stay resident (LRU eviction).
    """
    cfg = settings_mod.current()
    model_id = cfg.model_for(task, requested)
    key, which = (task, model_id), lane()
    cache = _explain_cache if which == "explain" else _cache
    with _lock:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        key_lock = _loading_locks.setdefault((*key, which), threading.Lock())
    # Load outside the cache lock: other tabs keep serving while this model loads; two requests
    # for the same model wait for one load.
    with key_lock:
        with _lock:
            if key in cache:
                return cache[key]
        try:
            loaded = _load_uncached(task, model_id)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # nothing is cached: the next request tries again
            log.exception("could not load the %s model %s", task, model_id)
            raise ModelLoadError(task, model_id, exc) from exc
        with _lock:
            cache[key] = loaded
            evicted = []
            while len(cache) > cfg.max_models:
                evicted.append(cache.popitem(last=False)[0])
        for old_key in evicted:
            log.info("evicted %s model %s (XRAY_MAX_MODELS=%d)", *old_key, cfg.max_models)
        if evicted:
            _free_memory()
        return loaded


_task_locks: dict[tuple[str, str], threading.RLock] = {}


def one_at_a_time(task: str) -> Callable[[Callable], Callable]:
    """Decorator: calls for `task` run one at a time.

    A task's model and tokenizer are shared by every user; fast tokenizers keep padding and
    truncation settings as state while they encode, so two concurrent calls with different
    settings corrupt each other ("Unable to create tensor"). On 2 CPU cores running them one
    after the other costs no throughput. Re-entrant, so a computation may call another of its task.
    Each call runs on the torch threads that fit beside what else the CPUs run (`threads.fitted`).
    """
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with _task_locks.setdefault((task, lane()), threading.RLock()), threads.fitted():  # one lock per lane
                return fn(*args, **kwargs)

        return locked

    return decorate


def _load_uncached(task: str, model_id: str) -> Loaded:
    spec = registry.get(task)
    import transformers

    model_cls = getattr(transformers, spec.model_class)
    processor_cls = getattr(transformers, spec.processor_class)
    source = resolve_source(task, model_id)
    log.info("loading %s model from %s", task, source)
    with _build_lock:
        model = model_cls.from_pretrained(
            source,
            attn_implementation="eager",
            use_safetensors=True,
            trust_remote_code=False,
            dtype=dtype_for(task),
        )
        model.to(device()).eval()
        processor = processor_cls.from_pretrained(source, trust_remote_code=False)
    pretrained = not getattr(model.config, "xray_tiny", False)
    return Loaded(task, model_id, source, model, processor, pretrained)


@contextmanager
def fused_attention(model: torch.nn.Module) -> Iterator[None]:
    """Inside: `model`'s attention runs torch's fused scaled_dot_product_attention instead of the eager path
    the app loads it with (eager returns the attention weights the views draw). For computations that never
    ask for those weights (attributions, knockouts, deletion checks): the same maths, without materialising
    every query-key weight and its gradient; Whisper's 1,500 audio positions run forward and backward in
    about 0.6x the time. Models without an SDPA path (DeBERTa-v2, Gemma-2) stay eager. Call it inside the
    task's lock (`one_at_a_time`): the switch is the model's own (`set_attn_implementation`), undone on exit."""
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    switch = before == "eager" and getattr(model, "_supports_sdpa", False) and model._can_set_attn_implementation()
    if switch:
        model.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(before)


def model_info(task: str, requested: str | None = None) -> ModelInfo:
    """The plain description of the model that serves `task` (loads it on first use)."""
    m = load(task, requested)
    return ModelInfo(task, m.model_id, m.source, m.pretrained, m.device.type, str(m.dtype).replace("torch.", ""))


class ModelLoadError(RuntimeError):
    """The model of a task could not be loaded. `user_message` names the task and the model
    (a folder by its last part only, never a full path) and is safe to show in the UI; the
    cause is chained and logged."""

    def __init__(self, task: str, model_id: str, cause: BaseException) -> None:
        self.task, self.model_id = task, model_id
        local = Path(model_id).expanduser()
        name = local.name if local.is_absolute() or local.exists() else model_id  # hub ids stay whole
        hint = f" {cause}" if isinstance(cause, OfflineError) else ""
        self.user_message = (
            f"Could not load the model for the {task} task ({name}).{hint} "
            "The other tabs still work; the details are in the server log."
        )
        super().__init__(self.user_message)


class OfflineError(RuntimeError):
    """Offline and no local model for a task (the message says which variable to set)."""


def resident() -> list[tuple[str, str]]:
    """(task, model id) of the models currently loaded, least recently used first."""
    with _lock:
        return list(_cache)


def clear() -> None:
    with _lock:
        _cache.clear()
        _explain_cache.clear()
    _free_memory()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def hub_offline_env() -> None:
    """Make transformers itself stay off the network (used once offline mode is decided)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
