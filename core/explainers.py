"""What every explanation is, as data: the Captum attribution methods and the explainers of
"Inside the model" (name, title, the tasks each applies to and why not the others, declared
parameters with types and defaults, what it returns). Pure data like `core.registry` (no torch,
transformers or captum), so a front without models (`--backend ray`) builds every tab from it.

The computations are bound to these descriptions in `demos.explain` (`protocol.Explainer`, which
checks that the function declares exactly these parameters, and `attribution.method`); every one of them, the tabs'
attributions (`ATTRIBUTION`) included, runs under one runtime policy (`demos.runtime.compute.explanation_policy`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core import registry


@dataclass(frozen=True)
class Param:
    """One declared parameter: name, type (as written in the function's annotation), default."""

    name: str
    type: str
    default: Any = None


@dataclass(frozen=True)
class MethodSpec:
    """A Captum attribution method: its label, Captum's class for attributing to a layer's output
    and to an input tensor, and whether it integrates over steps (checked against Captum's own
    `attribute` signature in the tests)."""

    label: str
    layer_class: str
    input_class: str
    integrates: bool


# How the head map is made: every knockout run, or their first-order estimate from one gradient.
HEAD_MAP_METHODS: dict[str, str] = {
    "knockout": "Exact: run every knockout",
    "gradient": "Quick estimate: one gradient",
}

# The attribution methods offered everywhere: adding one = adding a row.
METHODS: dict[str, MethodSpec] = {
    "integrated_gradients": MethodSpec("Integrated gradients", "LayerIntegratedGradients", "IntegratedGradients", True),
    "gradient_x_input": MethodSpec("Gradient × input", "LayerGradientXActivation", "InputXGradient", False),
}


@dataclass(frozen=True)
class ExplainerSpec:
    """name: short id used in API names (`<task api>_<name>`); title: tab title; tasks: task keys
    it applies to (the reason for each other task in `not_for`); params: declared parameters;
    progress: it reports progress; returns: the result type's name; gpu_seconds: its GPU slice; explains: what its
    function takes before the parameters: "result" (`fn(task, result, ...)`, the task's answer) or "inputs" (the
    inputs the answer took, in the task's own order: a tab's attribution, `attribute(text, target, ...)`)."""

    name: str
    title: str
    tasks: tuple[str, ...]
    params: tuple[Param, ...]
    returns: str
    not_for: dict[str, str] = field(default_factory=dict)
    progress: bool = False
    gpu_seconds: int = 30
    explains: str = "result"

    def applies_to(self, task: str) -> bool:
        return task in self.tasks


def _tasks(where) -> tuple[str, ...]:
    return tuple(spec.key for spec in registry.TASKS if where(spec))


def _not_for(explainer: str, tasks: tuple[str, ...], default: str = "") -> dict[str, str]:
    reasons = {spec.key: spec.why_not(explainer) or default for spec in registry.TASKS if spec.key not in tasks}
    return {key: why for key, why in reasons.items() if why}


_TARGET = Param("target", "Any")
_LENS_TASKS = _tasks(lambda s: s.lens)
_CONTRAST_TASKS = _tasks(lambda s: not s.why_not("contrast"))
_BRANCH_TASKS = _tasks(lambda s: s.branches)
_ALL = _tasks(lambda s: True)

LENS = ExplainerSpec(
    "lens", "Layer lens", _LENS_TASKS,
    (Param("model_id", "str | None"), Param("item", "int", 0), Param("start", "int | None")),
    "LensGrid | HeadLens", _not_for("lens", _LENS_TASKS))
ATTENTION_STEPS = ExplainerSpec(
    "attention_steps", "Attention step by step", _tasks(lambda s: s.attention_kinds),
    (Param("layer", "int", 0), Param("head", "int", 0), Param("query", "int", -1), Param("kind", "str", "self"),
     Param("model_id", "str | None"), Param("item", "int | None")), "AttentionSteps", gpu_seconds=20)
ABLATE = ExplainerSpec(
    "ablate", "Knock out heads", _ALL, (Param("heads", "Sequence | str", ()), _TARGET, Param("top_k", "int", 5)),
    "AblationResult")
HEAD_MAP = ExplainerSpec(
    "head_map", "Head importance", _ALL, (_TARGET, Param("method", "str", next(iter(HEAD_MAP_METHODS)))),
    "HeadImportance", progress=True)
CONTRAST = ExplainerSpec(
    "contrast", "Why A and not B", _CONTRAST_TASKS,
    (_TARGET, Param("contrast", "Any"), Param("method", "str", "integrated_gradients"), Param("steps", "int", 32)),
    "ContrastResult", _not_for("contrast", _CONTRAST_TASKS), progress=True)
BRANCH = ExplainerSpec(
    "branch", "Branch explorer", _BRANCH_TASKS, (Param("step", "int", 0), Param("token", "Any")), "Branch",
    _not_for("branch", _BRANCH_TASKS, "only generation continues its own output"))
FAITHFULNESS = ExplainerSpec(
    "faithfulness", "Which explanation is faithful?", _ALL,
    (_TARGET, Param("steps", "int", 32), Param("points", "int", 10), Param("seed", "int", 0)), "Faithfulness",
    progress=True)

PATCH = ExplainerSpec(
    "patch", "Patching", ("generation", "sentiment", "translation", "image", "clip"),
    (Param("corrupted", "str", ""), _TARGET, Param("grids", "Sequence | str", ("residual", "attention", "mlp"))),
    "PatchingResult",
    {"qa": "an answer is a span: two position choices (start, end) over the context, not one outcome whose logit "
           "a patch could bring back; and another question or context moves every position",
     "asr": "two recordings never line up frame by frame (a different word shifts every later frame), so there is no "
            "corrupted twin of a recording to copy activations between",
     "explorer": "the encoder explorer gives no answer to restore: it compares sentence vectors"},
    progress=True, gpu_seconds=60)
STEER = ExplainerSpec(
    "steer", "Steering", ("generation",),
    (Param("toward", "str", "Love"), Param("away", "str", "Hate"), Param("layer", "int | None"),
     Param("strength", "float", 0.5), Param("max_new_tokens", "int | None")),
    "SteerResult", _not_for("steer", ("generation",), "only generation writes text that a push on its residual "
                                                     "stream can steer"))

# Captum's attribution of each tab: called with the answer's own inputs, then these options (the fields of
# demos.runtime.compute.How); the image tab's pixel attribution takes its own.
_ATTRIBUTION_TASKS = _tasks(lambda s: bool(s.attribute))
ATTRIBUTION = ExplainerSpec(
    "attribution", "Attributions", tuple(t for t in _ATTRIBUTION_TASKS if t != "image"),
    (Param("method", "str", "integrated_gradients"), Param("steps", "int", 32), Param("model_id", "str | None"),
     Param("tolerance", "float | None")),
    "Attribution", _not_for("attribution", _ATTRIBUTION_TASKS, "it shows no token attributions"), progress=True,
    gpu_seconds=15, explains="inputs")
IMAGE_ATTRIBUTION = ExplainerSpec(
    "attribution", "Attributions", ("image",),
    (Param("baseline", "str", "black"), Param("steps", "int", 32), Param("smoothgrad_samples", "int", 0),
     Param("internal_batch_size", "int", 8), Param("model_id", "str | None")),
    "Attribution", progress=True, gpu_seconds=15, explains="inputs")


def attribution(task: str) -> ExplainerSpec:
    """The description of task `task`'s attribution function (KeyError: the task has none)."""
    for spec in (ATTRIBUTION, IMAGE_ATTRIBUTION):
        if spec.applies_to(task):
            return spec
    raise KeyError(f"The {task} task has no attribution function.")


EXPLAINERS: tuple[ExplainerSpec, ...] = (LENS, ATTENTION_STEPS, ABLATE, HEAD_MAP, CONTRAST, BRANCH, FAITHFULNESS,
                                         PATCH, STEER)
_BY_NAME = {e.name: e for e in EXPLAINERS}


def get(name: str) -> ExplainerSpec:
    return _BY_NAME[name]


def for_task(task: str) -> list[ExplainerSpec]:
    """Every explainer that applies to `task`, in the order the UI offers them."""
    return [e for e in EXPLAINERS if e.applies_to(task)]
