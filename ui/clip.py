"""Image-text matching tab (CLIP, SigLIP): probabilities of candidate descriptions, image x text
similarity matrix, patch relevance and token attributions for a chosen text, shared embeddings."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr

from ui import share
from ui.common import guarded, help_note
from ui.explainer_tabs import ExplainerTabs
from ui.export import result_export
from ui.inputs import image_input, model_picker, text_input
from ui.kit import (
    AttributionPanel,
    Figures,
    answer_header,
    answer_queue,
    draw_views,
    label_value,
    result_state,
    tab_compute,
)
from ui.links import tag
from viz.clip import relevance_overlay, shorten, similarity_heatmap
from viz.embedding import PROJECTIONS, embedding_scatter, project_2d

IMAGES_DIR = Path(__file__).resolve().parent.parent / "assets" / "images"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif"}
# Descriptions of the example photos by file stem; other files get "a photo of a <stem>".
DESCRIPTIONS = {
    "astronaut": "a photo of an astronaut",
    "cat": "a photo of a cat",
    "chelsea": "a photo of a cat",
    "coffee": "a cup of coffee",
    "rocket": "a rocket on a launch pad",
    "motorcycle": "a photo of a motorcycle",
}
DISTRACTORS = ["a photo of a dog", "a city street at night"]

PROBABILITIES = (
    "CLIP turns the image and every description into a vector in the same space and compares "
    "them. The probabilities come from a softmax over the candidates: they add up to 1, so they "
    "only say which description fits *best among those you gave*, not whether any fits well. "
    "**SigLIP** models (e.g. google/siglip-base-patch16-224) answer a different question: a sigmoid "
    "of each image-text score says *how likely that description matches*, each on its own. They do "
    "not add up to 1: all can be low (nothing fits) or several high."
)
LABEL = {"softmax": "Which description fits the image best",
         "sigmoid": "How likely each description matches (SigLIP: each on its own, no sum to 1)"}
MATRIX = (
    "**Similarity matrix**: every image (row) against every description (column). *Cosine "
    "similarity* is the angle between the two vectors (1 = same direction). CLIP multiplies it by "
    "a learned temperature to get *logits*; a softmax over each row gives the *probabilities*. "
    "SigLIP adds a learned bias to the logits and takes a sigmoid of each cell on its own. "
    "★ marks the best description for each image. Add more images above to compare them."
)
RELEVANCE = (
    "**Where the model looks**: CLIP cuts the image into square patches. *Gradient-weighted "
    "rollout* (Chefer et al., 2021) follows the attention of the vision transformer from layer to "
    "layer, keeping only the parts whose gradient raises the similarity with the chosen text: "
    "bright patches are the ones that made this description match. *Attention rollout* uses the "
    "attention alone, so it is the same whichever text you pick. SigLIP has no class token: an "
    "attention-pooling head lets a learned probe look over the patches, and both methods start from "
    "that probe's attention (weighted by its gradient for Chefer) instead of the class token's."
)
TEXT_ATTRIBUTION = (
    "**Which words matter** (Captum integrated gradients on the text encoder): how much each token "
    "raised (green) or lowered (red) the cosine similarity between the chosen text and the chosen "
    "image, compared with a text made of padding tokens. Integrated gradients blends the text in "
    "from that baseline and adds up the gradients on the way, so the scores add up to the change "
    "in similarity; the *convergence delta* says how far off that sum is (more steps, smaller delta). "
    "SigLIP reads every text padded to its full length; the padding is the same in the text and the "
    "baseline, so its scores are zero and it is not shown."
)
EMBEDDINGS = (
    "**Shared space**: images and descriptions as points after squashing the model's joint space to "
    "2-D. A description close to an image matches it well. Images and texts often form two "
    "separate clouds (the 'modality gap'); what counts is which text lies nearest to which image."
)
METRICS = {"cosine similarity": "cosine", "logit (scaled cosine)": "logits",
           "probability (CLIP: softmax per image; SigLIP: sigmoid per pair)": "probs"}
clip = tab_compute(__name__)  # the compute functions, on the configured backend


def _describe(stem: str) -> str:
    words = stem.lower().replace("-", "_").split("_")
    known = [DESCRIPTIONS[w] for w in words if w in DESCRIPTIONS]
    return known[-1] if known else f"a photo of a {' '.join(words)}"


def example_rows() -> list[list[str]]:
    """[image path, candidate texts] for every photo in assets/images (none if the folder is empty)."""
    files = sorted(p for p in IMAGES_DIR.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if IMAGES_DIR.is_dir() else []
    if not files:
        return []
    descriptions = [_describe(p.stem) for p in files]
    candidates = "\n".join(dict.fromkeys([*descriptions, *DISTRACTORS]))
    return [[str(p), candidates] for p in files]


def answer_label(result: clip.ClipResult) -> str:
    """The caption of the answer: CLIP's probabilities compare the texts, SigLIP's score each one on its own."""
    return LABEL.get(result.contrast, LABEL["softmax"])


def matrix_figure(result: clip.ClipResult, metric: str):
    key = METRICS.get(metric, "cosine")
    bounds = (0.0, 1.0) if key == "probs" else (None, None)
    return similarity_heatmap(
        getattr(result, key), result.image_names, result.texts, metric, "Image × text " + metric, *bounds
    )


def relevance_figure(result: clip.ClipResult, image_index: int, text: str, method: str):
    rel = clip.relevance(result, int(image_index or 0), text, method)
    title = f"Image {int(image_index or 0) + 1} and “{text}” · {clip.RELEVANCE_METHODS[method]}"
    return relevance_overlay(rel.pixels, rel.scores, title)


def embedding_figure(result: clip.ClipResult, method: str):
    emb = result.embeddings()
    points = project_2d(emb.layer(0), method or "pca")
    return embedding_scatter(
        points,
        [shorten(label) for label in emb.labels],
        emb.groups,
        title=f"Images and texts in the shared space · {method or 'pca'}",
    )


@dataclass(frozen=True)
class _Tab:
    """The tab's components, from `_layout` (page order) for `_wire` (events)."""

    image_box: gr.Image
    texts_box: gr.Textbox
    more: gr.File
    run: gr.Button
    model_box: gr.Dropdown
    info: gr.Markdown
    label: gr.Label
    notice: gr.Markdown
    state: gr.State
    extra: gr.State
    image_choice: gr.Dropdown
    text_choice: gr.Dropdown
    metric: gr.Radio
    matrix_plot: gr.Plot
    rel_method: gr.Radio
    rel_plot: gr.Plot
    attribution: AttributionPanel
    projection: gr.Radio
    emb_plot: gr.Plot
    explainers: ExplainerTabs


def build() -> None:
    """Build the tab's components and events inside the current `gr.Tab`."""
    _wire(_layout())


def _layout() -> _Tab:
    """The components in page order (the shared views attach their own redraws and exports)."""
    with gr.Row():
        with gr.Column(scale=2):
            inputs = _inputs()
        with gr.Column(scale=1):
            label = gr.Label(label=LABEL["softmax"])
            help_note(PROBABILITIES)
            notice = gr.Markdown()
    state = result_state()
    extra = gr.State([])
    with gr.Row():
        image_choice = gr.Dropdown([("image 1", 0)], value=0, label="Image to explain")
        text_choice = gr.Dropdown([], label="Description to explain")
    with gr.Tabs():
        views = _views()
        explainers = ExplainerTabs.build(clip.TASK)
    result_export(state, clip.TASK)
    return _Tab(
        **inputs,
        label=label,
        notice=notice,
        state=state,
        extra=extra,
        image_choice=image_choice,
        text_choice=text_choice,
        **views,
        explainers=explainers,
    )


def _inputs() -> dict:
    """The image, the candidate descriptions, more images, the button and model picker, the examples."""
    image_box = image_input(label="Image", height=300)
    texts_box = text_input(
        label="Candidate descriptions (one per line, or separated by commas)",
        lines=4,
        value=clip.EXAMPLE_TEXTS,
        max_length=10000,
    )
    tag(image_box, "image"), tag(texts_box, "texts")  # what a link carries (ui.links)
    more = gr.File(
        file_count="multiple",
        file_types=["image"],
        type="filepath",
        label="More images for the similarity matrix (optional)",
    )
    with gr.Row():
        run = gr.Button("Match", variant="primary")
        model_box, info = model_picker(clip.TASK)
    info.render()
    rows = example_rows()
    if rows:
        gr.Examples(rows, inputs=[image_box, texts_box])
    return dict(image_box=image_box, texts_box=texts_box, more=more, run=run, model_box=model_box, info=info)


def _views() -> dict:
    """The tabs of the views (inside the current gr.Tabs): matrix, patch relevance, words, embeddings."""
    with gr.Tab("Similarity matrix"):
        help_note(MATRIX)
        metric = gr.Radio(list(METRICS), value="cosine similarity", label="Show")
        matrix_plot = gr.Plot(label="Image × text similarity")
    with gr.Tab("Where the model looks"):
        help_note(RELEVANCE)
        rel_method = gr.Radio([(v, k) for k, v in clip.RELEVANCE_METHODS.items()], value="chefer", label="Method")
        rel_plot = gr.Plot(label="Patch relevance")
    with gr.Tab("Which words matter"):
        attribution = AttributionPanel.build(TEXT_ATTRIBUTION)
    with gr.Tab("Shared embedding space"):
        help_note(EMBEDDINGS)
        projection = gr.Radio(list(PROJECTIONS), value="pca", label="Projection")
        emb_plot = gr.Plot(label="Images and texts")
    return dict(
        metric=metric,
        matrix_plot=matrix_plot,
        rel_method=rel_method,
        rel_plot=rel_plot,
        attribution=attribution,
        projection=projection,
        emb_plot=emb_plot,
    )


def _wire(c: _Tab) -> None:
    """The answer (button or link), its caption and views, the explanations, the redraws."""
    main = gr.on(
        [c.run.click, share.go()],  # share.go(): a link runs the answer
        _answer(c),
        [c.image_box, c.texts_box, c.extra, c.model_box],
        [c.label, c.info, c.notice, c.state, c.image_choice, c.text_choice],
        **answer_queue(clip.TASK),
    )
    # the caption says what the numbers mean (softmax vs sigmoid); the API keeps the plain Label value
    main.success(
        lambda result: gr.skip() if result is None else gr.Label(label=answer_label(result)),
        c.state,
        c.label,
        api_visibility="private",
        queue=False,
    )
    draw_views(main, c.state, clip.TASK, _figures(c), c.explainers)
    # "clip_attribution", not api(clip.TASK, "attribution") = "clip_match_attribution": the documented public name stays
    c.attribution.bind(
        main, c.state, [c.image_choice, c.text_choice], attribute, clip.TASK, "Match an image first.",
        api_name="clip_attribution",
    )
    c.explainers.bind(main, c.state)
    c.more.change(lambda files: list(files or []), c.more, c.extra, api_visibility="private", queue=False)
    gr.on(
        [c.image_choice.input, c.text_choice.input, c.rel_method.input],
        rerender_relevance,
        [c.state, c.image_choice, c.text_choice, c.rel_method],
        c.rel_plot,
        api_visibility="private",
    )
    c.metric.input(rerender_matrix, [c.state, c.metric], c.matrix_plot, api_visibility="private", queue=False)
    c.projection.input(rerender_embeddings, [c.state, c.projection], c.emb_plot, api_visibility="private")


def _answer(c: _Tab) -> Callable:
    """The answer's handler: probabilities, the result, and the image and text choices it offers."""

    @guarded
    def match(image, texts, extra_images, model):
        if not image:
            raise gr.Error("Please upload an image.")
        result = clip.analyse([image, *(extra_images or [])], texts, model)
        best = result.best_text
        return {
            c.label: label_value(result.texts, result.probs[0]),
            c.state: result,
            c.image_choice: gr.Dropdown(
                [(f"image {i + 1}: {n}", i) for i, n in enumerate(result.image_names)],
                value=0,
                label="Image to explain",
            ),
            c.text_choice: gr.Dropdown(result.texts, value=best, label="Description to explain"),
            **answer_header(clip.TASK, model, result.notice, c.info, c.notice),
        }

    return match


def _figures(c: _Tab) -> Figures:
    """The tab's own figures, drawn with its views after each answer (the default settings)."""
    return Figures(
        [c.matrix_plot, c.rel_plot, c.emb_plot],
        lambda result: {
            c.matrix_plot: matrix_figure(result, "cosine similarity"),
            c.rel_plot: relevance_figure(result, 0, result.best_text, "chefer"),
            c.emb_plot: embedding_figure(result, "pca"),
        },
    )


def attribute(result, image, text, method, steps, tolerance, progress):
    i = int(image or 0)
    text = text or result.best_text
    attr = clip.attribute_text(
        result.sources[i], text, method, steps, result.model_id, progress=progress, tolerance=tolerance
    )
    return [replace(attr, target=f"cos(image {i + 1}, “{text}”)")]


@guarded
def rerender_relevance(result, image_index, text, method_value):
    return gr.skip() if result is None or not text else relevance_figure(result, image_index, text, method_value)


@guarded
def rerender_matrix(result, metric_value):
    return gr.skip() if result is None else matrix_figure(result, metric_value)


@guarded
def rerender_embeddings(result, method_value):
    return gr.skip() if result is None else embedding_figure(result, method_value)
