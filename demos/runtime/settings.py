"""Run-time settings of the app: where each task's model comes from, device, limits.

Decided once at start-up (from flags and environment) and read by the loader; nothing here
imports torch or transformers, so the start-up path stays light.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core import registry

# The command that fills the Hugging Face cache while online (README, "Offline use"): every
# message of the app that tells people how to get the real models quotes it exactly.
PREPARE_COMMAND = ".venv/bin/python -m scripts.prepare_models"


def display_name(model_id: str) -> str:
    """How a model is named in the UI: hub ids as they are, local folders as 'local folder NAME'
    (never the server path)."""
    path = Path(model_id).expanduser()
    if not (path.is_absolute() or path.is_dir()):
        return model_id
    from demos.provision.hubcache import cached_repo_id  # a snapshot of the Hugging Face cache: its hub id

    repo = cached_repo_id(path)
    return f"{repo} (Hugging Face cache)" if repo else f"local folder {path.name}"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class Settings:
    """Where models come from and how many stay loaded.

    `overrides` maps task -> model id or folder chosen by the operator (env var or --models);
    `offline` means never contact the Hub; `max_models` bounds resident models (LRU).
    """

    overrides: dict[str, str] = field(default_factory=dict)
    offline: bool = False
    cache_dir: Path = Path(os.environ.get("XRAY_CACHE", Path.home() / ".cache" / "transformer-xray"))
    device: str | None = None
    max_models: int = len(registry.TASKS)  # one per tab; lower it on small machines

    def choices(self, task: str) -> list[str]:
        """Model ids the UI/API may load for `task`: the configured one first, then alternatives.

        This is the allow-list: nothing else can be loaded through the app.
        """
        spec = registry.get(task)
        first = self.overrides.get(task, spec.default_model)
        # Offline, alternatives are offered only when the Hugging Face cache holds them (any other
        # hub id would resolve to the same local stand-in).
        extra = [] if task in self.overrides else [m for m in spec.alternatives if m != first]
        if self.offline:
            from demos.provision.hubcache import find_snapshot

            extra = [m for m in extra if find_snapshot(m, task)]
        return [first, *extra]

    def unavailable(self, task: str) -> tuple[list[str], str]:
        """(alternatives of `task` the model picker cannot offer, why in one sentence) - ([], '')
        when every alternative is offered. Says what to run to have them when that helps."""
        spec = registry.get(task)
        first = self.overrides.get(task, spec.default_model)
        wanted = [m for m in spec.alternatives if m != first]
        if not wanted:
            return [], ""
        if task in self.overrides:
            return wanted, ("This tab's model was chosen by whoever started the app (a local folder, "
                            f"--models or {spec.env}), so no alternatives are offered.")
        offered = set(self.choices(task))
        missing = [m for m in wanted if m not in offered]
        if not missing:
            return [], ""
        names = missing[0] if len(missing) == 1 else ", ".join(missing[:-1]) + " and " + missing[-1]
        return missing, (f"Offline: {names} {'is' if len(missing) == 1 else 'are'} not in this machine's "
                         f"Hugging Face cache. To have {'it' if len(missing) == 1 else 'them'}, run "
                         f"{PREPARE_COMMAND} --all once while online, then restart the app.")

    def model_for(self, task: str, requested: str | None = None) -> str:
        """The model id to load; `requested` must be on the allow-list."""
        allowed = self.choices(task)
        if requested in (None, ""):
            return allowed[0]
        if requested not in allowed:
            raise PermissionError(f"Model {requested!r} is not allowed for {task}; choose one of {allowed}.")
        return requested


def settings_from_env(models_dir: str | None = None, offline: bool | None = None) -> Settings:
    """Build settings from XRAY_* / HF_HUB_OFFLINE variables and optional --models folder."""
    overrides: dict[str, str] = {}
    if models_dir:
        root = Path(models_dir).expanduser().resolve()
        for task in registry.KEYS:
            if (root / task).is_dir():
                overrides[task] = str(root / task)
    for spec in registry.TASKS:
        if os.environ.get(spec.env):
            overrides[spec.key] = os.environ[spec.env]
    if offline is None:
        offline = _env_flag("HF_HUB_OFFLINE") or _env_flag("XRAY_OFFLINE")
    return Settings(
        overrides=overrides,
        offline=offline,
        device=os.environ.get("XRAY_DEVICE") or None,
        max_models=max(1, int(os.environ.get("XRAY_MAX_MODELS", str(len(registry.TASKS))))),
    )


_current = settings_from_env()


def current() -> Settings:
    return _current


def configure(settings: Settings) -> None:
    """Install the settings the app runs with (called once by app.py, and by tests)."""
    global _current
    _current = settings
