"""First tab: "How to read these views", each view explained with the app's own figures.

The small illustrations are drawn by the same viz functions the tabs use, from example patterns
built here (labelled as illustrations); a button runs the sentiment model on a sentence so the
same views appear with real numbers.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import numpy as np

from scale import backend
from ui import texts
from ui.common import guarded, help_note
from ui.explainer_tabs import guide_sections
from ui.inputs import text_input
from ui.kit import answer_header
from viz.attention import attention_heatmap
from viz.illustrations import bars_svg, heatmap_svg, scatter_svg
from viz.tokens import highlight_html

TOKENS = ["[CLS]", "the", "film", "was", "not", "good", "[SEP]"]

INTRO = """
## How to read these views
Every tab runs a real model and shows **the answer** and, beside it, **how the model got there**.
Three kinds of view appear throughout:

1. **Attention**: who looks at whom inside the model.
2. **Attributions**: which parts of the input pushed the answer, and in which direction.
3. **Embeddings**: the model's internal vectors, squashed to a 2-D map.

The small figures below are *illustrations* drawn from example patterns so that each shape is
easy to recognise (static pictures: they appear with the page). Press **Run the sentiment model** to see the same \
views computed by the
sentiment model for a sentence of your choice. Each tab says which model runs and whether its
weights are pretrained or random; a model with random weights (an offline stand-in) is flagged
beside its answer: its views show the mechanics, not linguistic meaning.
"""


def _pattern_heads() -> np.ndarray:
    """(1, 3, n, n) attention patterns often seen in trained models: previous token, [CLS]/[SEP]
    sink, and a broad averaging head. Rows sum to 1."""
    n = len(TOKENS)
    previous = np.eye(n, k=-1)
    previous[0, 0] = 1.0
    sink = np.zeros((n, n))
    sink[:, [0, n - 1]] = 0.5
    broad = np.full((n, n), 1.0 / n)
    heads = np.stack([previous, sink, broad])[None]
    return heads / heads.sum(-1, keepdims=True)


@dataclass(frozen=True)
class _Tab:
    """The live part's components, from `_layout` (page order) for `_wire` (events)."""

    text: gr.Textbox
    run: gr.Button
    info: gr.Markdown
    notice: gr.Markdown
    attention_plot: gr.Plot
    attribution_html: gr.HTML


def build() -> None:
    """Build the tab's components and events inside the current `gr.Tab`."""
    _illustrations()
    _wire(_layout())


def _illustrations() -> None:
    """The static part: the three kinds of view drawn from example patterns, then every explainer's section."""
    gr.Markdown(INTRO)
    heads = _pattern_heads()
    with gr.Row():
        with gr.Column():
            gr.Markdown("### 1 · Attention")
            help_note(texts.ATTENTION)
            gr.HTML(heatmap_svg(heads[0, 0], TOKENS, TOKENS, "Illustration: a previous-token head"))
            gr.HTML(heatmap_svg(heads[0, 1], TOKENS, TOKENS, "Illustration: a head resting on [CLS]/[SEP]"))
        with gr.Column():
            gr.Markdown("### 2 · Attributions")
            help_note(texts.ATTRIBUTION)
            scores = np.array([0.0, 0.02, 0.05, 0.01, -0.6, 0.35, 0.0])
            gr.HTML(highlight_html(TOKENS, scores, "Illustration: toward POSITIVE"))
            gr.HTML(bars_svg(TOKENS, scores, "Illustration: 'not' pulls away from POSITIVE"))
            gr.Markdown("### 3 · Embeddings")
            help_note(texts.EMBEDDINGS)
            angles = np.linspace(0, 2 * np.pi, len(TOKENS), endpoint=False)
            points = np.c_[np.cos(angles), np.sin(angles)] * np.array([1, 0.6])
            groups = ["special", "word", "word", "word", "word", "word", "special"]
            gr.HTML(scatter_svg(points, TOKENS, groups, "Illustration: tokens as points"))
    gr.Markdown("## Inside the model: the views on every tab")
    for number, (title, help_text, where) in enumerate(guide_sections(), start=4):
        with gr.Accordion(f"{number} · {title}", open=False):
            gr.Markdown(help_text)
            gr.Markdown(f"Where: {'; '.join(where)}.", elem_classes=["xray-help"])


def _layout() -> _Tab:
    """The live part: a sentence, the button, the model line, attention and attribution."""
    gr.Markdown("### Now with the sentiment model")
    with gr.Row():
        text = text_input(value="The film was not good.", label="Sentence", scale=3, max_length=2000)
        run = gr.Button("Run the sentiment model", variant="primary", scale=1)
    info = gr.Markdown()
    notice = gr.Markdown()
    with gr.Row():
        attention_plot = gr.Plot(label="Attention (last layer, mean of heads)")
        attribution_html = gr.HTML()
    return _Tab(
        text=text,
        run=run,
        info=info,
        notice=notice,
        attention_plot=attention_plot,
        attribution_html=attribution_html,
    )


def _wire(c: _Tab) -> None:
    """The button runs the sentiment model on the sentence."""
    outputs = [c.info, c.notice, c.attention_plot, c.attribution_html]
    c.run.click(_answer(c), [c.text], outputs, api_visibility="private")


def _answer(c: _Tab) -> Callable:
    """The button's handler: the model line, the last layer's attention, the attribution."""

    @guarded
    def show(sentence: str):
        result = backend.call("sentiment", "answer", sentence.strip() or "The film was not good.")
        attr = backend.call("sentiment", "attribution", result.text)
        maps = result.attention
        figure = attention_heatmap(
            maps.weights, maps.query_tokens, maps.key_tokens, maps.n_layers - 1, "average", title="Attention"
        )
        title = f"Attribution toward {attr.target} ({max(result.probs):.0%})"
        return {
            c.attention_plot: figure,
            c.attribution_html: highlight_html(attr.tokens, attr.scores, title),
            **answer_header("sentiment", None, result.notice, c.info, c.notice),
        }

    return show
