"""Views of the causal explainers (demos.explain.interventions, demos.explain.contrast, demos.explain.faithfulness):
knock out heads, the head-importance map, "why A and not B", the branch explorer, and the faithfulness
check. Each is written once and appears on every task its explainer declares; each runs on
demand (a button), on the configured backend, as `<task api>_<explainer name>`."""

from __future__ import annotations

from typing import Any

import gradio as gr

from core.explainers import HEAD_MAP_METHODS, METHODS
from core.explainers import ExplainerSpec as Explainer
from core.explainers import get as explainer_spec
from core.tokens import outcome_text
from scale import backend
from ui import share
from ui.common import guarded, help_note, md_escape
from ui.export import bind_export, export_button
from ui.kit import EXPLANATION_QUEUE, AttributionView, api
from ui.links import tag
from ui.views.base import ExplainerView
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
from viz.tokens import clean_token, number_text

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
    "Most heads barely matter for one answer; a few matter a lot. *Quick estimate* predicts every knockout "
    "from one gradient (attribution patching) in the time of about three forward passes. It is a straight-line "
    "guess: close where removing a head nudges the answer, wrong where removing it changes the answer a lot "
    "(on the real Whisper tiny.en it follows the decoder's heads but not the encoder's). Use it to find "
    "candidates on a big model, then check them exactly with *Knock out heads* or the exact map."
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


class OnDemandView(ExplainerView):
    """An explainer run by a button on the result in the session state, named
    `<task api>_<explainer name>`: the view's controls (in one row) are the explainer's named
    parameters, its panels show what `render(explanation) -> {component: value}` gives, and the
    plain explanation is kept for the JSON export. A subclass gives HELP, BUTTON, `controls()`
    -> {parameter: (component, convert)}, `panels()` -> [components] and `render`."""

    BUTTON = ""

    @classmethod
    def build(cls, task: str, explainer: Explainer) -> OnDemandView:
        self = cls()
        self.task, self.name = task, explainer.name
        help_note(cls.HELP)
        with gr.Row():
            self.params = self.controls()
        for name, (component, _) in self.params.items():
            tag(component, name)  # what a link sets (ui.links)
        self.go = share.run_trigger()  # a link or a lesson step runs the view on the fresh result
        self.button = gr.Button(cls.BUTTON, variant="primary")
        self.shown = self.panels()
        self.keep = gr.State()
        self.export = export_button("Export this explanation (JSON)")
        return self

    def bind(self, main: Any, state: gr.State) -> None:
        names = list(self.params)
        takes_progress = explainer_spec(self.name).progress

        @guarded
        def run(result, *values, progress=gr.Progress()):
            if result is None:
                raise gr.Error("Run the model first.")
            params = {name: self.params[name][1](value) for name, value in zip(names, values)}
            if takes_progress:
                params["progress"] = lambda frac, msg: progress(frac, desc=msg)
            out = backend.call(self.task, self.name, result, **params)
            return {self.keep: out, **self.render(out)}

        inputs = [state, *(component for component, _ in self.params.values())]
        gr.on(
            [self.button.click, self.go.change],
            run,
            inputs,
            [self.keep, *self.shown],
            api_name=api(self.task, self.name),
            **EXPLANATION_QUEUE,
        )
        bind_export(*self.export, [self.keep], lambda r: (result_json(r), f"{self.task}-{self.name}", ".json"))


def _target(label: str = "A: what is explained (empty = the answer)") -> tuple:
    return gr.Textbox(label=label, max_lines=1), _value


def _steps(low: int, high: int, value: int, label: str) -> tuple:
    return gr.Slider(low, high, value=value, step=4, label=label), int


class AblateView(OnDemandView):
    HELP, BUTTON = ABLATE_HELP, "Knock out and run again"

    def controls(self) -> dict:
        heads = gr.Textbox(label="Heads or layers to knock out", value="L0H0", max_lines=1)
        return {"heads": (heads, lambda text: str(text or "")), "target": _target()}

    def panels(self) -> list:
        self.summary, self.plot = gr.Markdown(), gr.Plot(label="Before and after")
        return [self.summary, self.plot]

    def render(self, r) -> dict:
        return {self.summary: ablation_summary(r), self.plot: ablation_figure(r)}


class HeadMapView(OnDemandView):
    HELP, BUTTON = MAP_HELP, "Map every head"

    def controls(self) -> dict:
        method = gr.Radio([(label, k) for k, label in HEAD_MAP_METHODS.items()], value="knockout", label="How")
        return {"target": _target(), "method": (method, str)}

    def panels(self) -> list:
        self.plot = gr.Plot(label="Head importance")
        return [self.plot]

    def render(self, r) -> dict:
        return {self.plot: head_map_figure(r)}


class ContrastView(OnDemandView):
    HELP, BUTTON = CONTRAST_HELP, "Why A and not B?"

    def controls(self) -> dict:
        method = gr.Radio([(m.label, k) for k, m in METHODS.items()], value="integrated_gradients", label="Method")
        return {
            "target": _target("A (empty = the answer)"),
            "contrast": _target("B (empty = the runner-up)"),
            "method": (method, str),
            "steps": _steps(4, 128, 32, "Integration steps"),
        }

    def panels(self) -> list:
        self.line, self.attribution = gr.Markdown(), AttributionView.build("Toward A (+) or B (−)")
        return [self.line, *self.attribution.outputs]

    def render(self, r) -> dict:
        a, b = (md_escape(clean_token(outcome_text(x))) for x in (r.a, r.b))  # '␣The', not the tokenizer's 'ĠThe'
        line = (
            f"A = **{a}**, B = **{b}**: P(A) = {number_text(r.p_a)}, P(B) = {number_text(r.p_b)}; "
            f"the attribution explains P(A) − P(B) = {number_text(r.p_a - r.p_b, '+')}."
        )
        return {self.line: line, **self.attribution.values(r.attribution)}


class BranchView(OnDemandView):
    HELP, BUTTON = BRANCH_HELP, "Branch and continue"

    def controls(self) -> dict:
        step = gr.Number(value=0, precision=0, minimum=0, label="Step (0 = the first generated token)")
        return {
            "step": (step, lambda value: int(value or 0)),
            "token": _target("Force this token instead (empty = the runner-up)"),
        }

    def panels(self) -> list:
        self.html = gr.HTML()
        return [self.html]

    def render(self, r) -> dict:
        return {self.html: branch_html(r)}


class FaithfulnessView(OnDemandView):
    HELP, BUTTON = FAITHFUL_HELP, "Compare the explanations"

    def controls(self) -> dict:
        return {"target": _target(), "steps": _steps(4, 64, 16, "Integration steps of the attributions")}

    def panels(self) -> list:
        self.summary, self.deletion, self.agreement = (
            gr.Markdown(),
            gr.Plot(label="Deletion check"),
            gr.Plot(label="Agreement"),
        )
        self.table = gr.Dataframe(label="Every explanation's score per unit", interactive=False, wrap=True)
        return [self.summary, self.deletion, self.agreement, self.table]

    def render(self, r) -> dict:
        table = gr.Dataframe(value=faithfulness_rows(r), headers=["unit", *r.names])
        return {
            self.summary: faithfulness_summary(r),
            self.deletion: deletion_figure(r),
            self.agreement: agreement_figure(r),
            self.table: table,
        }
