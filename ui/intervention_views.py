"""Views of the causal explainers (demos.interventions, demos.contrast, demos.faithfulness): knock
out heads, the head-importance map, "why A and not B", the branch explorer, and the faithfulness
check. Each is written once and appears on every task its explainer declares; each runs on
demand (a button), on the configured backend, as `<task api>_<explainer name>`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from demos.explainers import Explainer
from scale import backend
from ui.common import explain, guarded
from ui.explainers import ExplainerView, view
from ui.export import bind_export, export_button
from ui.kit import EXPLAIN, AttributionView, api
from viz.export import result_json
from viz.interventions import (
    ablation_figure,
    ablation_summary,
    agreement_figure,
    branch_html,
    deletion_figure,
    faithfulness_rows,
    faithfulness_summary,
    head_map_figure,
)

TARGET_HELP = (
    "**A** (what is explained): the position of an output token for generation, translation and "
    "transcription (0 = the first one produced), a class for sentiment and image, a description for CLIP, "
    "a sentence number for the explorer. Empty = the model's own answer."
)
ABLATE_HELP = (
    "**Knock out heads and run again.** Attention maps show where a head looks, not whether it matters. "
    "Switch heads off (their output is replaced by zero before the layer mixes the heads) and see how the "
    "answer changes. Write heads as `L2H3` (layer 2, head 3), a whole layer as `L4`, and for models with "
    "several stacks put the stack first: `decoder cross-attention L1H0`, `vision L3H5`. Separate with commas. "
    "Only your request runs with the knockout; the shared model is never changed."
)
MAP_HELP = (
    "**Head importance**: every head knocked out alone, one after the other (several at once in one "
    "batched pass where the model allows). Red: the answer's score drops without that head; blue: it rises. "
    "Most heads barely matter for one answer; a few matter a lot."
)
CONTRAST_HELP = (
    "**Why A and not B?** A plain attribution explains why the model gave A. Here each input part is "
    "credited for how much it pushed toward A *rather than* B: the score explained is P(A) − P(B). "
    "Green pushes toward A, red toward B. " + TARGET_HELP
)
BRANCH_HELP = (
    "**Branch explorer**: force a different token at one step of the generated text (e.g. the runner-up "
    "from the next-token choices) and let the model continue greedily. Where do the two texts part, "
    "and do they ever come back together?"
)
FAITHFUL_HELP = (
    "**Which explanation can you trust?** Attention, attention rollout and the attribution methods are "
    "put side by side on the same input units. The *deletion check* removes the units each explanation "
    "ranks highest and watches the answer's score: a faithful explanation finds the units whose removal "
    "hurts most, so its curve falls fastest; random removal is the yardstick."
)


def _value(text: Any) -> Any:
    """A user's A/B choice: '' -> None (the default), digits -> a position, else the text."""
    text = "" if text is None else str(text).strip()
    if not text:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


@dataclass
class _OnDemand:
    """Shared wiring: a button runs the explainer on the result in `state`; the plain result is
    kept for export; `render(result) -> {component: value}` fills the view."""

    task: str
    name: str
    button: gr.Button
    keep: gr.State
    export: tuple = ()

    def add_export(self) -> "_OnDemand":
        """The export, placed under the view's outputs."""
        self.export = export_button("Export this explanation (JSON)")
        return self

    def wire(self, state: gr.State, controls: list, call: Callable[..., dict], render: Callable[[Any], dict],
             shown: list) -> None:
        @guarded
        def run(result, *values, progress=gr.Progress()):
            if result is None:
                raise gr.Error("Run the model first.")
            params = call(*values)
            params["progress"] = lambda frac, msg: progress(frac, desc=msg)
            if "progress" not in _accepts(self.task, self.name):
                params.pop("progress")
            out = backend.call(self.task, self.name, result, **params)
            return {self.keep: out, **render(out)}

        self.button.click(run, [state, *controls], [self.keep, *shown], api_name=api(self.task, self.name), **EXPLAIN)
        bind_export(*self.export, [self.keep], lambda r: (result_json(r), f"{self.task}-{self.name}", ".json"))


def _accepts(task: str, name: str) -> set[str]:
    import inspect

    from demos import explainers

    return set(inspect.signature(explainers.get(name).run).parameters)


def _on_demand(task: str, explainer: Explainer, label: str) -> _OnDemand:
    button = gr.Button(label, variant="primary")
    return _OnDemand(task, explainer.name, button, gr.State())


@view("ablate")
@dataclass
class AblateView(ExplainerView):
    HELP = ABLATE_HELP
    base: _OnDemand
    heads: gr.Textbox
    target: gr.Textbox
    summary: gr.Markdown
    plot: gr.Plot

    @classmethod
    def build(cls, task: str, explainer: Explainer) -> "AblateView":
        explain(ABLATE_HELP)
        with gr.Row():
            heads = gr.Textbox(label="Heads or layers to knock out", value="L0H0", max_lines=1)
            target = gr.Textbox(label="A: what is explained (empty = the answer)", max_lines=1)
        base = _on_demand(task, explainer, "Knock out and run again")
        summary, plot = gr.Markdown(), gr.Plot(label="Before and after")
        return cls(base.add_export(), heads, target, summary, plot)

    def bind(self, main: Any, state: gr.State) -> None:
        self.base.wire(
            state, [self.heads, self.target],
            lambda heads, target: {"heads": str(heads or ""), "target": _value(target)},
            lambda r: {self.summary: ablation_summary(r), self.plot: ablation_figure(r)},
            [self.summary, self.plot],
        )


@view("head_map")
@dataclass
class HeadMapView(ExplainerView):
    HELP = MAP_HELP
    base: _OnDemand
    target: gr.Textbox
    plot: gr.Plot

    @classmethod
    def build(cls, task: str, explainer: Explainer) -> "HeadMapView":
        explain(MAP_HELP)
        target = gr.Textbox(label="A: what is explained (empty = the answer)", max_lines=1)
        base = _on_demand(task, explainer, "Knock out every head, one at a time")
        plot = gr.Plot(label="Head importance")
        return cls(base.add_export(), target, plot)

    def bind(self, main: Any, state: gr.State) -> None:
        self.base.wire(state, [self.target], lambda target: {"target": _value(target)},
                       lambda r: {self.plot: head_map_figure(r)}, [self.plot])


@view("contrast")
@dataclass
class ContrastView(ExplainerView):
    HELP = CONTRAST_HELP
    base: _OnDemand
    target: gr.Textbox
    other: gr.Textbox
    method: gr.Radio
    steps: gr.Slider
    line: gr.Markdown
    attribution: AttributionView

    @classmethod
    def build(cls, task: str, explainer: Explainer) -> "ContrastView":
        from demos.explain import METHODS

        explain(CONTRAST_HELP)
        with gr.Row():
            target = gr.Textbox(label="A (empty = the answer)", max_lines=1)
            other = gr.Textbox(label="B (empty = the runner-up)", max_lines=1)
            method = gr.Radio([(m.label, k) for k, m in METHODS.items()], value="integrated_gradients", label="Method")
            steps = gr.Slider(4, 128, value=32, step=4, label="Integration steps")
        base = _on_demand(task, explainer, "Why A and not B?")
        line, view = gr.Markdown(), AttributionView.build("Toward A (+) or B (−)")
        return cls(base.add_export(), target, other, method, steps, line, view)

    def bind(self, main: Any, state: gr.State) -> None:
        def render(r) -> dict:
            line = f"P(A) = {r.p_a:.4f}, P(B) = {r.p_b:.4f}: the attribution explains P(A) − P(B) = {r.p_a - r.p_b:+.4f}."
            return {self.line: line, **self.attribution.values(r.attribution)}

        self.base.wire(
            state, [self.target, self.other, self.method, self.steps],
            lambda a, b, method, steps: {"target": _value(a), "contrast": _value(b), "method": method, "steps": int(steps)},
            render, [self.line, *self.attribution.outputs],
        )


@view("branch")
@dataclass
class BranchView(ExplainerView):
    HELP = BRANCH_HELP
    base: _OnDemand
    step: gr.Number
    token: gr.Textbox
    html: gr.HTML

    @classmethod
    def build(cls, task: str, explainer: Explainer) -> "BranchView":
        explain(BRANCH_HELP)
        with gr.Row():
            step = gr.Number(value=0, precision=0, minimum=0, label="Step (0 = the first generated token)")
            token = gr.Textbox(label="Force this token instead (empty = the runner-up)", max_lines=1)
        base = _on_demand(task, explainer, "Branch and continue")
        shown = gr.HTML()
        return cls(base.add_export(), step, token, shown)

    def bind(self, main: Any, state: gr.State) -> None:
        self.base.wire(state, [self.step, self.token],
                       lambda step, token: {"step": int(step or 0), "token": _value(token)},
                       lambda r: {self.html: branch_html(r)}, [self.html])


@view("faithfulness")
@dataclass
class FaithfulnessView(ExplainerView):
    HELP = FAITHFUL_HELP
    base: _OnDemand
    target: gr.Textbox
    steps: gr.Slider
    summary: gr.Markdown
    deletion: gr.Plot
    agreement: gr.Plot
    table: gr.Dataframe

    @classmethod
    def build(cls, task: str, explainer: Explainer) -> "FaithfulnessView":
        explain(FAITHFUL_HELP)
        with gr.Row():
            target = gr.Textbox(label="A: what is explained (empty = the answer)", max_lines=1)
            steps = gr.Slider(4, 64, value=16, step=4, label="Integration steps of the attributions")
        base = _on_demand(task, explainer, "Compare the explanations")
        summary, deletion, agreement = gr.Markdown(), gr.Plot(label="Deletion check"), gr.Plot(label="Agreement")
        table = gr.Dataframe(label="Every explanation's score per unit", interactive=False, wrap=True)
        return cls(base.add_export(), target, steps, summary, deletion, agreement, table)

    def bind(self, main: Any, state: gr.State) -> None:
        def render(r) -> dict:
            table = gr.Dataframe(value=faithfulness_rows(r), headers=["unit", *r.names])
            return {self.summary: faithfulness_summary(r), self.deletion: deletion_figure(r),
                    self.agreement: agreement_figure(r), self.table: table}

        self.base.wire(state, [self.target, self.steps], lambda target, steps: {"target": _value(target), "steps": int(steps)},
                       render, [self.summary, self.deletion, self.agreement, self.table])
