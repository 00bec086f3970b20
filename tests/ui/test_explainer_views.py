"""Every explainer view of every task, through its API endpoint `<task api>_<explainer>` on the
served tab: the view runs on the session's result and returns what its compute function returns
(the numbers themselves are checked in test_lens / test_attention_steps / test_interventions /
test_contrast / test_faithfulness). Table-driven from the two registries: a task or an explainer
without a row fails."""
from __future__ import annotations

import json

import pytest

from core import registry
from demos.explain import catalog
from tests.cases import CASES
from tests.conftest import tab_app

pytestmark = pytest.mark.slow

# How to get a result in each task's tab (arguments of its main endpoint).
MAIN_ARGS = {key: c.served_args for key, c in CASES.items()}
# Each explainer's endpoint arguments (after the session's result, which the tab keeps).
VIEW_ARGS = {
    "lens": (1,),  # which image (CLIP), counted from 1 as people count
    "attention_steps": (None, 0, 0, -1),
    "ablate": ("L0H0", ""),
    "head_map": ("", "gradient"),
    "contrast": ("", "", "gradient_x_input", 8),
    "branch": (0, ""),
    "faithfulness": ("", 4),
    "patch": ("The cat sleeps on the mat.", "", ["residual", "attention", "mlp"]),  # image: a region to blur instead
    "steer": ("Love", "Hate", None, 1.5, 3),
}
ROWS = [(spec, e) for spec in registry.TASKS for e in catalog.for_task(spec.key)]


def test_every_task_and_explainer_has_a_row():
    assert set(MAIN_ARGS) == set(registry.KEYS)
    assert {e.name for e in catalog.all_explainers()} == set(VIEW_ARGS)
    for e in catalog.all_explainers():
        for task in registry.KEYS:
            assert e.applies_to(task) or task in e.not_for, f"{e.name} neither applies to {task} nor says why not"


@pytest.fixture(scope="module")
def clients(serve):
    made = {}

    def get(spec):
        if spec.key not in made:
            client = serve(tab_app(spec.tab))
            client.predict(*MAIN_ARGS[spec.key](), api_name=f"/{spec.api}")
            made[spec.key] = client
        return made[spec.key]

    return get


def _plots(outputs) -> list[dict]:
    found = []
    for value in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
        if isinstance(value, dict) and value.get("type") == "plotly":
            found.append(json.loads(value["plot"]))
    return found


@pytest.mark.parametrize("spec,explainer", ROWS, ids=[f"{s.key}-{e.name}" for s, e in ROWS])
def test_view_endpoint_runs_on_the_sessions_result(clients, spec, explainer):
    client = clients(spec)
    args = list(VIEW_ARGS[explainer.name])
    if explainer.name == "attention_steps":
        from demos.explain.attention_steps import attention_kinds

        args[0] = attention_kinds(spec.key)[0]
    if explainer.name == "patch" and spec.key == "image":
        args[0] = "centre"
    outputs = client.predict(*args, api_name=f"/{spec.api_name(explainer.name)}")
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    plots = _plots(outputs)
    if explainer.name == "branch":
        assert any(isinstance(v, str) and "Forced" in v for v in outputs)
    else:
        assert plots and all(p["data"] for p in plots), f"{explainer.name} drew no figure"

