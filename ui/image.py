"""Image classification tab (ViT): top-5 classes, attention rollout over the picture, class-token
attention per layer and head as a patch grid, Captum pixel attributions, patch embeddings.

Overlays of smooth maps (rollout, pixel attributions) are returned as images for gr.Image: the
blend is done per pixel at picture resolution, the file is a small PNG the user can save or zoom,
and no base64 picture plus a dense heatmap travels as plotly JSON. The per-patch class-token
attention is a plotly figure instead: one cell per patch, where hovering gives the exact weight.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from ui import share, texts
from ui.common import AttentionView, EmbeddingView, Renderer, guarded, help_note
from ui.explainer_tabs import ExplainerTabs
from ui.export import attribution_export, result_export
from ui.inputs import image_input, run_row
from ui.kit import answer_header, answer_queue, attribution_summary, draw_views, label_value, result_state, tab_compute
from viz.attention import AVERAGE
from viz.image import cls_attention_grid, heat_overlay, patch_grid_figure, signed_overlay

demo = tab_compute(__name__)  # the compute functions, on the configured backend
PREDICTED = "predicted class"

ROLLOUT = (
    "**Attention rollout** follows the attention of the class token (the summary the model "
    "classifies from) through all layers, counting the skip connections too. Bright, yellow areas "
    "are the image patches the answer draws on most; dark purple areas matter little."
)
CLS_ATTENTION = (
    "A Vision Transformer cuts the picture into square **patches** and treats each like a word. "
    "This grid shows, for one layer and one head (or the average of the heads), how much the "
    "class token looked at each patch. Hover over a cell to read its weight; the weights of a row "
    "of attention add up to 1 (together with the class token itself)."
)
PIXEL_ATTRIBUTION = (
    "**Pixel attribution** (Captum integrated gradients) fades the picture in from a *baseline* "
    "(a black image, a blurred copy, or random noise) and adds up how each pixel changed the "
    "probability of the chosen class. Green pixels push toward the class, red ones away. The "
    "attributions add up to P(image) − P(baseline); the *convergence delta* says how far off that "
    "is (more steps = smaller). *SmoothGrad* averages over noisy copies of the picture for a "
    "calmer map (slower: one run per copy)."
)
PATCH_EMBEDDINGS = (
    "**Patch embeddings**: the vector the model holds for every patch (labelled like r3c5 for "
    "row 3, column 5) and for the class token, squashed to 2-D. Colours group patches by row. At layer 0 patches that "
    "look alike sit together; in later layers the patches of one object tend to gather."
)


def _target_choices(result) -> gr.Dropdown:
    """Every class, most probable first, with its probability in the label."""
    choices = [(PREDICTED, PREDICTED)] + [(f"{name} · {p:.1%}", name) for name, p in result.ranked()]
    return gr.Dropdown(choices, value=PREDICTED, label="Explain the probability of")


def _pixel_overlay(result, attr, alpha):
    return signed_overlay(result.image, attr.scores, alpha=min(1.0, float(alpha) + 0.3))


class ClassTokenGrid(Renderer):
    """AttentionView renderer: the class token's attention of one layer/head as a patch grid over
    the picture (hover: the exact weight); the CSV export holds the whole map."""

    def draw(self, result, maps, title: str, layer: int, head):
        values = cls_attention_grid(maps.weights, layer, head, result.grid, result.n_special)
        head_name = "mean of heads" if head in (AVERAGE, None, "") else f"head {head}"
        return patch_grid_figure(result.image, values, f"{title} · layer {layer} · {head_name}")


@dataclass
class PixelPanel:
    """Captum pixel attribution: class, baseline, steps, SmoothGrad copies, batch size; the signed
    overlay and the CSV export. Runs on request only (integrated gradients over every pixel)."""

    target: gr.Dropdown
    controls: list  # baseline, steps, SmoothGrad copies, batch size (API input order)
    button: gr.Button
    summary: gr.Markdown
    image: gr.Image
    attr: gr.State

    @classmethod
    def build(cls) -> PixelPanel:
        help_note(PIXEL_ATTRIBUTION)
        with gr.Row():
            target = gr.Dropdown([PREDICTED], value=PREDICTED, label="Explain the probability of")
            baseline = gr.Radio(list(demo.BASELINES), value="black", label="Baseline")
        with gr.Row():
            steps = gr.Slider(4, 128, value=32, step=4, label="Integration steps (more = more exact, slower)")
            smooth = gr.Slider(0, 16, value=0, step=1, label="SmoothGrad copies (0 = off)")
            batch = gr.Slider(1, 64, value=8, step=1, label="Batch size (lower = less memory)")
        button = gr.Button("Explain the pixels")
        summary = gr.Markdown()
        image = gr.Image(label="Pixel attribution", type="numpy", format="png", interactive=False)
        return cls(target, [baseline, steps, smooth, batch], button, summary, image, attribution_export())

    @property
    def outputs(self) -> list:
        return [self.attr, self.target, self.summary, self.image]

    def values(self, result) -> dict:
        """A fresh result: the class choices, and no attribution yet."""
        return {self.attr: None, self.target: _target_choices(result), self.summary: "", self.image: None}

    def bind(self, state: gr.State, opacity: gr.Slider) -> None:
        @guarded
        def explain_pixels(result, target_value, baseline, steps, smooth, batch, alpha, progress=gr.Progress()):
            if result is None:
                raise gr.Error("Classify an image first.")
            attr = demo.attribute(
                result, None if target_value in (None, PREDICTED) else target_value, baseline, int(steps),
                int(smooth), int(batch), progress=lambda frac, msg: progress(frac, desc=msg),
            )
            return {
                self.summary: attribution_summary(attr) + f" · baseline: {baseline}",
                self.attr: attr,
                self.image: _pixel_overlay(result, attr, alpha),
            }

        # "image_attribution", not api(demo.TASK, "attribution"): the documented public name stays
        self.button.click(
            explain_pixels, [state, self.target, *self.controls, opacity], [self.summary, self.attr, self.image],
            api_name="image_attribution", concurrency_limit=1,
        )


@dataclass(frozen=True)
class _Tab:
    """The tab's components, from `_layout` (page order) for `_wire` (events)."""

    picture: gr.Image
    run: gr.Button
    model: gr.Dropdown
    info: gr.Markdown
    label: gr.Label
    notice: gr.Markdown
    state: gr.State
    opacity: gr.Slider
    rollout_image: gr.Image
    cls_view: AttentionView
    pixels: PixelPanel
    embeddings: EmbeddingView
    explainers: ExplainerTabs


def build() -> None:
    """Build the tab's components and events inside the current `gr.Tab`."""
    _wire(_layout())


def _layout() -> _Tab:
    """The components in page order (the shared views attach their own redraws and exports)."""
    with gr.Row():
        with gr.Column(scale=2):
            picture = image_input(label="Image", height=320)
            run, model, info = run_row(demo.TASK, "Classify", demo.EXAMPLES, [picture])
        with gr.Column(scale=1):
            label = gr.Label(label="Top 5 classes", num_top_classes=demo.TOP_K)
            help_note(texts.PROBABILITIES + " Only the five most probable classes are shown.")
            notice = gr.Markdown()
    state = result_state()
    opacity = gr.Slider(0.1, 0.95, value=0.55, step=0.05, label="Overlay strength")
    with gr.Tabs():
        views = _views()
        explainers = ExplainerTabs.build(demo.TASK)
    result_export(state, demo.TASK)
    return _Tab(
        picture=picture,
        run=run,
        model=model,
        info=info,
        label=label,
        notice=notice,
        state=state,
        opacity=opacity,
        **views,
        explainers=explainers,
    )


def _views() -> dict:
    """The tabs of the views (inside the current gr.Tabs): rollout, class-token attention, pixels, patches."""
    with gr.Tab("Attention rollout"):
        help_note(ROLLOUT)
        rollout_image = gr.Image(
            label="Attention rollout of the class token", type="numpy", format="png", interactive=False
        )
    with gr.Tab("Class-token attention"):
        cls_view = AttentionView.build(lambda r: r.attention, "Class-token attention", CLS_ATTENTION, ClassTokenGrid())
        help_note(texts.HEADS)
    with gr.Tab("Pixel attribution"):
        pixels = PixelPanel.build()
    with gr.Tab("Patch embeddings"):
        embeddings = EmbeddingView.build(lambda r: r.embeddings, "Patch embeddings", PATCH_EMBEDDINGS)
    return dict(rollout_image=rollout_image, cls_view=cls_view, pixels=pixels, embeddings=embeddings)


def _wire(c: _Tab) -> None:
    """The answer (button or link), its views and overlays, the pixel attribution, the redraws."""

    @guarded
    def redraw_overlays(result, attr, alpha):
        if result is None:
            return gr.skip()
        return {
            c.rollout_image: heat_overlay(result.image, result.cls_rollout(), float(alpha)),
            c.pixels.image: gr.skip() if attr is None else _pixel_overlay(result, attr, alpha),
        }

    main = gr.on(
        [c.run.click, share.go()],  # share.go(): a link runs the answer
        _answer(c),
        [c.picture, c.model],
        [c.label, c.info, c.notice, c.state, c.rollout_image, *c.pixels.outputs],
        **answer_queue(demo.TASK),
    )
    draw_views(main, c.state, demo.TASK, c.cls_view, c.embeddings, c.explainers)
    # the overlay strength is not an API input (the API is classify_image(image, model)): apply it after
    overlays = [c.state, c.pixels.attr, c.opacity], [c.rollout_image, c.pixels.image]
    main.success(redraw_overlays, *overlays, api_visibility="private")
    c.opacity.release(redraw_overlays, *overlays, api_visibility="private")
    c.pixels.bind(c.state, c.opacity)
    c.cls_view.bind(c.state)
    c.embeddings.bind(c.state)
    c.explainers.bind(main, c.state)


def _answer(c: _Tab) -> Callable:
    """The answer's handler: the top classes, the rollout overlay, the result, a fresh pixel panel."""

    @guarded
    def classify(path, model_id: str):
        result = demo.analyse(path, model_id)
        return {
            c.label: label_value(result.labels, result.probs, demo.TOP_K),
            c.state: result,
            c.rollout_image: heat_overlay(result.image, result.cls_rollout(), 0.55),
            **answer_header(demo.TASK, model_id, "", c.info, c.notice),
            **c.pixels.values(result),
        }

    return classify
