"""Every explainer of the app, in the order the UI offers them (the objects themselves, each
written once in its module and declared with `demos.explain.protocol.Explainer`)."""
from __future__ import annotations

from demos.explain import contrast, faithfulness, interventions, lens, patching
from demos.explain.protocol import Explainer

EXPLAINERS: tuple[Explainer, ...] = (
    lens.LENS, lens.ATTENTION_STEPS, interventions.ABLATE, interventions.HEAD_MAP,
    contrast.CONTRAST, contrast.BRANCH, faithfulness.FAITHFULNESS, patching.PATCH, patching.STEER,
)
_BY_NAME = {e.name: e for e in EXPLAINERS}


def get(name: str) -> Explainer:
    return _BY_NAME[name]


def for_task(task: str) -> list[Explainer]:
    """Every explainer that applies to `task`, in catalog order."""
    return [e for e in EXPLAINERS if e.applies_to(task)]


def all_explainers() -> list[Explainer]:
    return list(EXPLAINERS)
