"""Explainer tabs: every explainer registered for a task (demos.explain.catalog) gets a tab built by
the one view written for it, so a new explainer is written once and appears on every task it
declares. `VIEWS` names the view of each explainer (ui/views/).

A view has: `build(task, explainer)` (inside its gr.Tab), `outputs` (components refreshed when a
new result arrives), `values(result) -> {component: value}`, and `bind(main, state)` (its own
events, named `<task api>_<explainer name>` in the API).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from core import explainers as catalog
from ui.views.base import GROUP_TITLE, ExplainerView  # GROUP_TITLE: the tabs' and tests' name for the group
from ui.views.interventions import AblateView, BranchView, ContrastView, FaithfulnessView, HeadMapView
from ui.views.lens import LensView, StepsView
from ui.views.patching import PatchView, SteerView

VIEWS: dict[str, type[ExplainerView]] = {
    "lens": LensView, "attention_steps": StepsView, "ablate": AblateView, "head_map": HeadMapView,
    "contrast": ContrastView, "branch": BranchView, "faithfulness": FaithfulnessView,
    "patch": PatchView, "steer": SteerView,
}


def views() -> dict[str, type[ExplainerView]]:
    """The view class of every explainer, by explainer name."""
    return dict(VIEWS)


@dataclass
class ExplainerTabs:
    """One gr.Tab per explainer of `task`, in registration order."""

    task: str
    items: list[Any]

    @classmethod
    def build(cls, task: str) -> ExplainerTabs:
        known = views()
        items = []
        chosen = catalog.for_task(task)
        for explainer in chosen:
            if explainer.name not in known:
                raise LookupError(f"Explainer {explainer.name!r} has no view: add one to ui.explainer_tabs.VIEWS.")
        if not chosen:
            return cls(task, items)
        # One tab holding the explainers' own tabs: the tab strip stays short enough to show whole.
        with gr.Tab(GROUP_TITLE), gr.Tabs():
            for explainer in chosen:
                with gr.Tab(explainer.title):
                    items.append(known[explainer.name].build(task, explainer))
        return cls(task, items)

    @property
    def outputs(self) -> list:
        return [c for item in self.items for c in item.outputs]

    def values(self, result: Any) -> dict:
        out: dict = {}
        for item in self.items:
            out.update(item.values(result))
        return out

    def bind(self, main: Any, state: gr.State) -> None:
        for item in self.items:
            item.bind(main, state)


def guide_sections() -> list[tuple[str, str, list[str]]]:
    """(title, help text, where) of every explainer: the guide's sections, written once with the
    views (each view's HELP), saying which tabs offer it and why the others do not."""
    from core import registry

    known = views()
    out = []
    for explainer in catalog.EXPLAINERS:
        where = [registry.get(t).title for t in explainer.tasks]
        where += [f"not {registry.get(t).title} ({why})" for t, why in explainer.not_for.items() if t in registry.KEYS]
        out.append((explainer.title, known[explainer.name].HELP, where))
    return out
