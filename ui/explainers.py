"""Explainer tabs: every explainer registered for a task (demos.explainers) gets a tab built by
the one view written for it, so a new explainer is written once and appears on every task it
declares. A view class registers itself here with `@view("name")`.

A view has: `build(task, explainer)` (inside its gr.Tab), `outputs` (components refreshed when a
new result arrives), `values(result) -> {component: value}`, and `bind(main, state)` (its own
events, named `<task api>_<explainer name>` in the API).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import gradio as gr

from demos import explainers

_VIEWS: dict[str, type] = {}
GROUP_TITLE = "Inside the model"  # the tab that holds every explainer view of a task
VIEW_MODULES: tuple[str, ...] = ("ui.lens_views", "ui.intervention_views")  # modules holding the explainer views


class ExplainerView:
    """What every explainer view shares: by default it refreshes nothing when a new result
    arrives (it runs after the answer or on demand, through its own `bind`)."""

    HELP = ""

    @property
    def outputs(self) -> list:
        return []

    def values(self, result: Any) -> dict:
        return {}


def view(name: str):
    """Class decorator: the view of the explainer called `name`."""

    def register(cls: type) -> type:
        _VIEWS[name] = cls
        return cls

    return register


def views() -> dict[str, type]:
    for module in VIEW_MODULES:
        importlib.import_module(module)
    return dict(_VIEWS)


@dataclass
class ExplainerTabs:
    """One gr.Tab per explainer of `task`, in registration order."""

    task: str
    items: list[Any]

    @classmethod
    def build(cls, task: str) -> "ExplainerTabs":
        explainers.load_all()
        known = views()
        items = []
        chosen = explainers.for_task(task)
        for explainer in chosen:
            if explainer.name not in known:
                raise LookupError(f"Explainer {explainer.name!r} has no view: add one to {VIEW_MODULES}.")
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

    explainers.load_all()
    known = views()
    out = []
    for explainer in explainers.all_explainers():
        where = [registry.get(t).title for t in explainer.tasks]
        where += [f"not {registry.get(t).title} ({why})" for t, why in explainer.not_for.items() if t in registry.KEYS]
        out.append((explainer.title, known[explainer.name].HELP, where))
    return out
