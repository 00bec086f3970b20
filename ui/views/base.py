"""What every explainer view shares.

A view has: `build(task, explainer)` (inside its gr.Tab), `outputs` (components refreshed when a
new result arrives), `values(result) -> {component: value}`, and `bind(main, state)` (its own
events, named `<task api>_<explainer name>` in the API).
"""
from __future__ import annotations

from typing import Any

GROUP_TITLE = "Inside the model"  # the tab that holds every explainer view of a task


class ExplainerView:
    """By default a view refreshes nothing when a new result arrives (it runs after the answer or
    on demand, through its own `bind`)."""

    HELP = ""

    @property
    def outputs(self) -> list:
        return []

    def values(self, result: Any) -> dict:
        return {}
