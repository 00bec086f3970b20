"""Views of the layer lens and of attention step by step, one each for every task they apply to
(registered with ui.explainer_tabs.view; the explainers themselves are in demos.explain.lens)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from core import registry
from core.explainers import ExplainerSpec as Explainer
from core.lens_types import LENS_READING, LensGrid
from scale import backend
from ui.common import guarded, help_note
from ui.export import bind_export, export_button
from ui.kit import EXPLANATION_QUEUE, api
from ui.links import tag
from ui.views.base import ExplainerView
from viz.export import result_json
from viz.lens import (
    MAX_COLUMNS,
    commit_figure,
    head_lens_figure,
    lens_grid_figure,
    qkv_figure,
    steps_figure,
    steps_summary,
)

# What to look for; how each row is read, and how far an early row can be trusted, comes with the figure
# (the result's own caption, `core.lens_types.LENS_CAPTION`), so the view does not say it twice.
LENS_HELP = (
    "**When does the model decide?** The *layer lens* shows, layer by layer, the answer the model would "
    "give if it stopped there: watch in which layer the final answer appears and how sure it is."
)
STEPS_HELP = (
    "**Attention(Q, K, V) = softmax(Q·Kᵀ / √d_k + mask) · V**, on your own input. Pick a layer, a head "
    "and the query token. The query vector **q** of that token is compared with the key vector **k** "
    "of every token (a dot product), the scores are scaled by 1/√d_k, masked where the token may not "
    "look (future tokens, padding), turned into weights by the softmax (they add up to 1), and the "
    "head's output is the weighted sum of the value vectors **v**. Circles: the weights computed here; "
    "dots: the weights the model itself returned. They coincide."
)


@dataclass
class LensView(ExplainerView):
    """The lens, computed after each answer (its own event, `<task>_lens`): no second forward pass."""

    HELP = f"{LENS_HELP} {LENS_READING}"  # the guide: no result, so no caption beside it

    task: str
    start: gr.Number
    item: gr.Number
    caption: gr.Markdown
    grid: gr.Plot
    commit: gr.Plot
    state: gr.State
    export: tuple

    @classmethod
    def build(cls, task: str, explainer: Explainer) -> LensView:
        help_note(LENS_HELP)
        with gr.Row():
            start = gr.Number(  # no bounds: a position past either end is clamped by the lens, not refused
                value=0, precision=0,
                label=f"First position shown ({MAX_COLUMNS} at most; at first, the answer's)",
            )
            items = registry.get(task).items  # e.g. "images": counted from 1, as the tab's own picker does
            item = gr.Number(
                value=1, precision=0, minimum=1, label=f"Which of the {items} (1 = the first)", visible=bool(items)
            )
        caption = gr.Markdown()
        grid = gr.Plot(label="Layer lens")
        commit = gr.Plot(label="Where the model commits")
        state = gr.State()
        export = export_button("Export the lens (JSON)")
        return cls(task, start, item, caption, grid, commit, state, export)

    def _figures(self, lens) -> dict:
        if isinstance(lens, LensGrid):  # a decoder: a window of positions x layers, and where it commits
            where = f" Positions {lens.first} to {lens.first + len(lens.positions) - 1} of 0 to {lens.total - 1}."
            return {
                self.caption: lens.caption + where,
                self.grid: lens_grid_figure(lens),
                self.commit: gr.Plot(commit_figure(lens), visible=True),
                self.start: gr.Number(value=lens.first, visible=True),  # the position clamped
            }
        # an encoder read by its task's head: one figure, no positions
        return {
            self.caption: lens.caption,
            self.grid: head_lens_figure(lens),
            self.commit: gr.Plot(visible=False),
            self.start: gr.Number(visible=False),
        }

    def bind(self, main: Any, state: gr.State) -> None:
        def compute(result, item, start):
            if result is None:
                raise gr.Error("Run the model first.")
            first = None if start is None else max(int(start), 0)
            lens = backend.call(  # people count the items from 1
                self.task, "lens", result, item=max(int(item or 1), 1) - 1, start=first
            )
            return {self.state: lens, **self._figures(lens)}

        @guarded
        def run(result, item):  # a new answer or item: the answer's window
            return compute(result, item, None)

        @guarded
        def window(result, item, start):  # another window of the same answer (only it is computed)
            return compute(result, item, start)

        outputs = [self.state, self.caption, self.grid, self.commit, self.start]
        main.success(run, [state, self.item], outputs, api_name=api(self.task, "lens"), **EXPLANATION_QUEUE)
        self.item.change(run, [state, self.item], outputs, api_visibility="private", **EXPLANATION_QUEUE)
        self.start.input(  # arrows clicked fast: only the last position asked for is computed
            window, [state, self.item, self.start], outputs, api_visibility="private", trigger_mode="always_last",
            **EXPLANATION_QUEUE,
        )
        bind_export(*self.export, [self.state], lambda lens: (result_json(lens), f"{self.task}-lens", ".json"))


@dataclass
class StepsView(ExplainerView):
    """One head, one query: the computation step by step (`<task>_attention_steps`)."""

    HELP = STEPS_HELP

    task: str
    kind: gr.Dropdown
    layer: gr.Number
    head: gr.Number
    query: gr.Number
    button: gr.Button
    summary: gr.Markdown
    figure: gr.Plot
    table: gr.Dataframe
    vectors: gr.Plot
    state: gr.State
    export: tuple

    @classmethod
    def build(cls, task: str, explainer: Explainer) -> StepsView:
        help_note(STEPS_HELP)
        kinds = list(registry.get(task).attention_kinds)
        with gr.Row():
            kind = gr.Dropdown(kinds, value=kinds[0], label="Attention", visible=len(kinds) > 1)
            layer = gr.Number(value=0, precision=0, minimum=0, label="Layer")
            head = gr.Number(value=0, precision=0, minimum=0, label="Head")
            query = gr.Number(value=-1, precision=0, label="Query token (position; −1 = the last)")
            button = gr.Button("Show the steps")
        for name, component in (("kind", kind), ("layer", layer), ("head", head), ("query", query)):
            tag(component, name)  # what a link sets (ui.links)
        summary = gr.Markdown()
        figure = gr.Plot(label="Scores, softmax and the model's own attention row")
        table = gr.Dataframe(
            headers=["key token", "q·k", "× scale", "masked", "softmax", "model's weight"],
            label="The steps for the most attended keys",
            interactive=False,
            wrap=True,
        )
        vectors = gr.Plot(label="q, K, V")
        state = gr.State()
        export = export_button("Export these steps (JSON)")
        return cls(task, kind, layer, head, query, button, summary, figure, table, vectors, state, export)

    def bind(self, main: Any, state: gr.State) -> None:
        @guarded
        def run(result, kind, layer, head, query):
            if result is None:
                raise gr.Error("Run the model first.")
            # by name: Explainer.run takes parameters by name
            steps = backend.call(
                self.task,
                "attention_steps",
                result,
                layer=int(layer or 0),
                head=int(head or 0),
                query=int(query or 0),
                kind=kind,
            )
            return {
                self.state: steps,
                self.summary: steps_summary(steps),
                self.figure: steps_figure(steps),
                # 4 significant digits: readable, and a tiny weight stays 3.1e-07 instead of rounding to 0
                self.table: [
                    [row[0], *[float(f"{v:.4g}") if isinstance(v, float) else v for v in row[1:]]]
                    for row in steps.rows(top=12)
                ],
                self.vectors: qkv_figure(steps),
            }

        inputs = [state, self.kind, self.layer, self.head, self.query]
        outputs = [self.state, self.summary, self.figure, self.table, self.vectors]
        main.success(run, inputs, outputs, api_name=api(self.task, "attention_steps"), **EXPLANATION_QUEUE)
        self.button.click(run, inputs, outputs, api_visibility="private", **EXPLANATION_QUEUE)
        bind_export(
            *self.export, [self.state], lambda steps: (result_json(steps), f"{self.task}-attention-steps", ".json")
        )
