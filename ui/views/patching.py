"""Views of activation patching and steering (demos.explain.patching): each an on-demand button on the
tab's result, `<task api>_patch` / `generate_steer`, with presets that teach. A preset runs its own clean
input (the tab's own input stays as it is); each summary names the clean input it explains."""
from __future__ import annotations

from typing import Any

import gradio as gr

from core import registry
from core.explainers import get as explainer_spec
from scale import backend
from ui.common import guarded
from ui.kit import EXPLANATION_QUEUE
from ui.views.interventions import OnDemandView, _value
from viz.patching import not_computed_figure, patch_figure, patch_summary, steer_html, steer_lens_figure, steer_summary

PATCH_HELP = (
    "**Cause, not correlation: activation patching.** Attention maps and attributions show what the model "
    "*looks at*; patching tests what it *needs*. The model runs on the **clean** input (your input above) "
    "and on a **corrupted** twin (one word swapped, a region blurred), which gives another answer. Then it "
    "runs on the corrupted input again and again, each time with **one** activation copied over from the "
    "clean run. If that single copy brings the clean answer back, the answer flows through there. "
    "**1** = fully back, **0** = no effect. Three grids: the *residual stream* (the running state after a "
    "layer, at one position), each *attention head* (its output, at every position) and each *MLP* (its "
    "output at one position). Change as little as you can between the two inputs."
)
STEER_HELP = (
    "**Steering: push the model and watch the text change.** Two short texts (e.g. *Love* and *Hate*) give "
    "a direction: the average state after one layer for the first minus that for the second. While the "
    "model writes, a push along that direction is added to its residual stream after that layer, at every "
    "position; strength 1 makes the push as long as a typical state there (around 0.5 changes the text, 2 "
    "usually breaks it). Both continuations are greedy; strength 0 gives the plain text exactly. The figure "
    "reads every layer's state after the prompt with the model's own last part (the logit lens)."
)
_ASSET = str(registry.ROOT / "assets" / "images" / "chelsea_cat.jpg")
# task -> (label of the corrupted input, label of A, the corrupted box's starting value)
_PATCH_LABELS = {
    "generation": (
        "Corrupted prompt (the clean prompt with a word changed)",
        "A: the clean answer token (empty = the top next token)",
        "",
    ),
    "sentiment": (
        "Corrupted text (the clean text with a word changed)",
        "A: the class (empty = the clean prediction)",
        "",
    ),
    "translation": (
        "Corrupted source (the clean sentence with a word swapped)",
        "Target token position (0 = the first)",
        "",
    ),
    "image": (
        "Region to blur: centre, all, top, bottom, left, right, or patches r1-2 c0-3",
        "A: the class (empty = the clean prediction)",
        "centre",
    ),
    "clip": (
        "Corrupted description (the clean one with a word changed)",
        "Clean description (empty = the best match)",
        "",
    ),
}
# task -> presets: (button label, arguments of the task's answer for the clean input, the explainer's parameters)
PATCH_PRESETS: dict[str, list[tuple[str, tuple, dict]]] = {
    "generation": [
        ("Eiffel Tower → Colosseum", ("The Eiffel Tower is in", 1), {"corrupted": "The Colosseum is in"}),
        (
            "Mary and John: who gets the drink?",
            ("When Mary and John went to the store, John gave a drink to", 1),
            {"corrupted": "When Mary and John went to the store, Mary gave a drink to"},
        ),
    ],
    "sentiment": [
        (
            "One word flipped: great → awful",
            ("I thought this movie was great, and the ending was perfect.",),
            {"corrupted": "I thought this movie was awful, and the ending was perfect."},
        )
    ],
    "translation": [
        (
            "One word swapped: small → big",
            ("The house is small, but the garden is beautiful.",),
            {"corrupted": "The house is big, but the garden is beautiful.", "target": 3},
        )
    ],
    "image": [
        ("Blur the centre (the cat's face)", (_ASSET,), {"corrupted": "centre"}),
        ("Blur the top half", (_ASSET,), {"corrupted": "top"}),
    ],
    "clip": [
        (
            "cat → dog",
            (_ASSET, "a photo of a cat\na photo of a dog"),
            {"corrupted": "a photo of a dog", "target": "a photo of a cat"},
        )
    ],
}
STEER_PRESETS = {
    "generation": [
        (
            "Love − Hate on “I think my neighbour is”",
            ("I think my neighbour is", 20),
            {"toward": "Love", "away": "Hate", "strength": 0.5},
        ),
        (
            "Weddings on “I went up to my friend and said”",
            ("I went up to my friend and said", 20),
            {
                "toward": "I talk about weddings constantly",
                "away": "I do not talk about weddings constantly",
                "strength": 0.5,
            },
        ),
    ]
}
_GRIDS = [("Residual stream", "residual"), ("Attention heads", "attention"), ("MLP", "mlp")]
_FIRST_GRIDS = {"image": ["residual"]}  # a ViT-base cell is a whole image pass: start with one grid


class PresetView(OnDemandView):
    """An on-demand view with presets that teach (`PRESETS[task]`: label, the arguments of the task's
    answer for the preset's own clean input, the explainer's parameters). A preset fills the controls,
    runs its clean input (memoised) and explains it; the view's button explains the tab's last result.
    A subclass gives `own_controls()`, `panels()` and `render`; the summary names the clean input."""

    PRESETS: dict[str, list[tuple[str, tuple, dict]]] = {}

    def controls(self) -> dict:
        presets = self.PRESETS.get(self.task, [])
        with gr.Column(scale=1, min_width=220, visible=bool(presets)):
            gr.Markdown("**Presets that teach** (each runs its own clean input)")
            self.preset_buttons = [gr.Button(label, size="sm") for label, _, _ in presets]
        return self.own_controls()

    def bind(self, main: Any, state: gr.State) -> None:
        super().bind(main, state)
        controls = [component for component, _ in self.params.values()]
        for button, preset in zip(self.preset_buttons, self.PRESETS.get(self.task, [])):
            button.click(self._fill(preset), None, controls, api_visibility="private", queue=False).success(
                self._run(preset), controls, [self.keep, *self.shown], api_visibility="private", **EXPLANATION_QUEUE
            )

    def _fill(self, preset: tuple[str, tuple, dict]):
        def fill() -> dict:
            values = {component: gr.skip() for component, _ in self.params.values()}
            for name, value in preset[2].items():
                component = self.params[name][0]
                values[component] = str(value) if isinstance(component, gr.Textbox) else value
            return values

        return fill

    def _run(self, preset: tuple[str, tuple, dict]):
        names, takes_progress = list(self.params), explainer_spec(self.name).progress

        @guarded
        def run(*values, progress=gr.Progress()):
            result = backend.call(self.task, "answer", *preset[1])  # the preset's clean input (memoised)
            params = {name: self.params[name][1](value) for name, value in zip(names, values)}
            if takes_progress:
                params["progress"] = lambda frac, msg: progress(frac, desc=msg)
            out = backend.call(self.task, self.name, result, **params)
            return {self.keep: out, **self.render(out)}

        return run


class PatchView(PresetView):
    HELP, BUTTON, PRESETS = PATCH_HELP, "Patch, one activation at a time", PATCH_PRESETS

    def own_controls(self) -> dict:
        corrupted_label, target_label, start = _PATCH_LABELS[self.task]
        example = PATCH_PRESETS.get(self.task, [("", (), {"corrupted": ""})])[0][2]["corrupted"]
        corrupted = gr.Textbox(label=corrupted_label, value=start, max_lines=2, scale=3, placeholder=f"e.g. {example}")
        target = gr.Textbox(label=target_label, max_lines=1, scale=2)
        grids = gr.CheckboxGroup(
            _GRIDS,
            value=_FIRST_GRIDS.get(self.task, [v for _, v in _GRIDS]),
            scale=2,
            label="Grids (each cell is one run of the model)",
        )
        return {
            "corrupted": (corrupted, lambda text: str(text or "")),
            "target": (target, _value),
            "grids": (grids, lambda chosen: tuple(chosen or ())),
        }

    def panels(self) -> list:
        self.summary = gr.Markdown()
        self.picture = gr.Image(label="The corrupted image", visible=False, height=240, interactive=False)
        self.plots = {kind: gr.Plot(label=label) for label, kind in _GRIDS}
        return [self.summary, self.picture, *self.plots.values()]

    def render(self, r) -> dict:
        names = {kind: label for label, kind in _GRIDS}
        plots = {
            plot: patch_figure(r, kind) if r.grid(kind) else not_computed_figure(kind, names[kind])
            for kind, plot in self.plots.items()
        }
        picture = gr.Image(r.picture, visible=r.picture is not None)
        return {self.summary: patch_summary(r), self.picture: picture, **plots}


def _layer(value: Any) -> int | None:
    """The layer box: -1 (or empty) = the middle layer (None)."""
    return None if value in (None, "") or int(value) < 0 else int(value)


class SteerView(PresetView):
    HELP, BUTTON, PRESETS = STEER_HELP, "Generate with and without steering", STEER_PRESETS

    def own_controls(self) -> dict:
        toward = gr.Textbox(label="Toward", value="Love", max_lines=1)
        away = gr.Textbox(label="Away from", value="Hate", max_lines=1)
        layer = gr.Number(value=-1, precision=0, minimum=-1, label="Layer (−1 = the middle one)")
        strength = gr.Slider(-2, 2, value=0.5, step=0.05, label="Strength (× a typical state; 0 = no push)")
        tokens = gr.Slider(1, 100, value=20, step=1, label="New tokens")
        return {
            "toward": (toward, str),
            "away": (away, str),
            "layer": (layer, _layer),
            "strength": (strength, float),
            "max_new_tokens": (tokens, int),
        }

    def panels(self) -> list:
        self.summary, self.html = gr.Markdown(), gr.HTML()
        self.lens = gr.Plot(label="Logit lens after the prompt, without and with steering")
        return [self.summary, self.html, self.lens]

    def render(self, r) -> dict:
        return {self.summary: steer_summary(r), self.html: steer_html(r), self.lens: steer_lens_figure(r)}
