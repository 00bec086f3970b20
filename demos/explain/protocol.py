"""The one explainer protocol: an `Explainer` binds a computation to its description
(`core.explainers.ExplainerSpec`: name, title, tasks, declared parameters, what it returns) and
runs it under the one runtime policy of every explanation
(`demos.runtime.compute.explanation_compute`: memo, GPU slice, the explanations' lane and the
task's lock, heap trim, progress).

The function is written `fn(task, result, <the declared parameters, with their defaults>
[, progress=None])` and returns a plain result dataclass (numpy arrays and strings); binding
checks that it declares exactly the described parameters. `Explainer.run(task, result,
progress=None, **params)` rejects a parameter the explainer does not declare.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.explainers import ExplainerSpec
from demos.explain.subjects import result_key
from demos.runtime.compute import explanation_compute

_FIXED = ("task", "result", "progress")


@dataclass(frozen=True)
class Explainer:
    """spec: what it is (core.explainers); fn(task, result, **params): how it is computed."""

    spec: ExplainerSpec
    fn: Callable[..., Any]

    def __post_init__(self) -> None:
        signature = inspect.signature(self.fn)
        if list(signature.parameters)[:2] != ["task", "result"]:
            raise TypeError(f"Explainer {self.name!r}: its function must start with (task, result).")
        declared = [(p.name, p.default) for p in signature.parameters.values() if p.name not in _FIXED]
        described = [(p.name, p.default) for p in self.spec.params]
        if declared != described:
            raise TypeError(f"Explainer {self.name!r} declares {declared}, its description says {described}.")
        if ("progress" in signature.parameters) != self.spec.progress:
            raise TypeError(f"Explainer {self.name!r}: progress is {'not ' * (not self.spec.progress)}described.")
        call = explanation_compute(self.fn, self.spec.gpu_seconds, 16, result_key)
        object.__setattr__(self, "_call", call)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.spec.tasks

    @property
    def not_for(self) -> dict[str, str]:
        return self.spec.not_for

    @property
    def takes_progress(self) -> bool:
        return self.spec.progress

    def applies_to(self, task: str) -> bool:
        return self.spec.applies_to(task)

    def run(self, task: str, result: Any, progress: Callable[..., Any] | None = None, **params: Any) -> Any:
        """The explanation of `result` (task `task`'s result) with `params`; TypeError for a
        parameter the explainer does not declare, ValueError for a task it does not apply to."""
        declared = {p.name for p in self.spec.params}
        unknown = sorted(set(params) - declared)
        if unknown:
            raise TypeError(f"{self.title} takes no parameter {', '.join(map(repr, unknown))}; "
                            f"it takes: {', '.join(sorted(declared)) or 'none'}.")
        if not self.applies_to(task):
            raise ValueError(self.not_for.get(task) or f"{self.title} does not apply to the {task} task.")
        return self._call(task, result, progress=progress, **params)  # type: ignore[attr-defined]
