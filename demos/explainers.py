"""Explainers that are not a Captum attribution method: attention rollout, Chefer relevance, the
layer lens, attention step by step, interventions, contrastive and faithfulness views.

Each is written once and declares which tasks it applies to (like LIT's interpreters declaring
`is_compatible`); the UI offers every explainer registered for a task, and API endpoints are
named `<task api>_<explainer name>` (e.g. `sentiment_lens`).

An explainer's `run(task_key, result, **params)` takes the task's result (what the main event
returned and the session keeps) and returns a plain result dataclass (numpy arrays and strings).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Explainer:
    """name: short id used in API names; title: tab title; tasks: task keys it applies to
    (with the reason for any task it does not apply to in `not_for`); run(task, result, **params)."""

    name: str
    title: str
    tasks: tuple[str, ...]
    run: Callable[..., Any]
    not_for: dict[str, str] = field(default_factory=dict)

    def applies_to(self, task: str) -> bool:
        return task in self.tasks


_REGISTRY: dict[str, Explainer] = {}


def register(explainer: Explainer) -> Explainer:
    if explainer.name in _REGISTRY and _REGISTRY[explainer.name] is not explainer:
        raise ValueError(f"An explainer named {explainer.name!r} is registered already.")
    _REGISTRY[explainer.name] = explainer
    return explainer


def get(name: str) -> Explainer:
    return _REGISTRY[name]


def for_task(task: str) -> list[Explainer]:
    """Every registered explainer that applies to `task`, in registration order."""
    return [e for e in _REGISTRY.values() if e.applies_to(task)]


def all_explainers() -> list[Explainer]:
    return list(_REGISTRY.values())


# Modules that register explainers when imported (written once, each for every task it fits).
MODULES: tuple[str, ...] = ("demos.lens", "demos.interventions", "demos.contrast", "demos.faithfulness")  # layer lens + attention step by step


def load_all() -> None:
    """Import every explainer module so that its explainers are registered."""
    import importlib

    for module in MODULES:
        importlib.import_module(module)
