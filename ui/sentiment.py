"""Sentiment tab: label with probabilities, token attributions, attention and embeddings."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from ui import share, texts
from ui.bertviz import BertvizView
from ui.common import AttentionView, EmbeddingView, guarded, help_note, md_escape, require_text
from ui.explainer_tabs import ExplainerTabs
from ui.export import result_export
from ui.inputs import run_row, text_input
from ui.kit import (
    AttributionPanel,
    answer_header,
    answer_queue,
    api,
    draw_views,
    label_value,
    result_state,
    tab_compute,
)
from viz.tokens import highlight_html

COMPARE_HELP = (
    "Change one word and see what moves: both texts are explained **toward the same class** (the "
    "one predicted for text A), so the colours can be compared token by token."
)

PREDICTED = "predicted class"
sentiment = tab_compute(__name__)  # the compute functions, on the configured backend


@dataclass(frozen=True)
class _Tab:
    """The tab's components, from `_layout` (page order) for `_wire` (events)."""

    text: gr.Textbox
    run: gr.Button
    model: gr.Dropdown
    info: gr.Markdown
    label: gr.Label
    notice: gr.Markdown
    state: gr.State
    target: gr.Radio
    attribution: AttributionPanel
    attention: AttentionView
    bertviz: BertvizView
    embeddings: EmbeddingView
    explainers: ExplainerTabs


def build() -> None:
    """Build the tab's components and events inside the current `gr.Tab`."""
    _wire(_layout())


def _layout() -> _Tab:
    """The components in page order (the shared views, and the comparison, attach their own events)."""
    with gr.Row():
        with gr.Column(scale=2):
            text = text_input(label="Text", lines=3, placeholder="Type a sentence to classify…", max_length=5000)
            run, model, info = run_row(sentiment.TASK, "Classify", sentiment.EXAMPLES, [text])
        with gr.Column(scale=1):
            label = gr.Label(label="Sentiment", num_top_classes=5)
            help_note(texts.PROBABILITIES)
            notice = gr.Markdown()
    state = result_state()
    with gr.Tabs():
        views = _views()
        explainers = ExplainerTabs.build(sentiment.TASK)
        with gr.Tab("Compare two texts"):
            _build_compare(text, model)
    result_export(state, sentiment.TASK)
    return _Tab(
        text=text,
        run=run,
        model=model,
        info=info,
        label=label,
        notice=notice,
        state=state,
        **views,
        explainers=explainers,
    )


def _views() -> dict:
    """The tabs of the views (inside the current gr.Tabs): attributions, attention, embeddings."""
    with gr.Tab("Attributions"):
        target = gr.Radio([PREDICTED], value=PREDICTED, label="Explain the probability of")
        attribution = AttributionPanel.build(texts.ATTRIBUTION)
    with gr.Tab("Attention"):
        attention = AttentionView.build(lambda r: r.attention, "Self-attention", texts.ATTENTION)
        bertviz = BertvizView.build(lambda r: {"self": r.attention})
        help_note(texts.HEADS)
    with gr.Tab("Embeddings"):
        embeddings = EmbeddingView.build(lambda r: r.embeddings, "Token embeddings", texts.EMBEDDINGS)
    return dict(target=target, attribution=attribution, attention=attention, bertviz=bertviz, embeddings=embeddings)


def _wire(c: _Tab) -> None:
    """The answer (button, Enter or link), its views, the explanations, the redraws."""
    main = gr.on(
        [c.run.click, c.text.submit, share.go()],  # share.go(): a link runs the answer
        _answer(c),
        [c.text, c.model],
        [c.label, c.info, c.notice, c.state, c.target],
        **answer_queue(sentiment.TASK),
    )
    draw_views(main, c.state, sentiment.TASK, c.attention, c.embeddings, c.explainers)
    c.attribution.bind(
        main, c.state, [c.target], attribute, sentiment.TASK, "Classify a text first."
    )
    c.attention.bind(c.state)
    c.bertviz.bind(c.state)
    c.embeddings.bind(c.state)
    c.explainers.bind(main, c.state)


def _answer(c: _Tab) -> Callable:
    """The answer's handler: the probabilities, the result, and the classes its attribution may explain."""

    @guarded
    def classify(text_value: str, model_id: str):
        result = sentiment.analyse(require_text(text_value), model_id)
        return {
            c.label: label_value(result.labels, result.probs),
            c.state: result,
            c.target: gr.Radio([PREDICTED, *result.labels], value=PREDICTED, label="Explain the probability of"),
            **answer_header(sentiment.TASK, model_id, result.notice, c.info, c.notice),
        }

    return classify


def attribute(result, target_value, method, steps, tolerance, progress):
    chosen = None if target_value == PREDICTED else target_value
    return [
        sentiment.attribute(result.text, chosen, method, steps, result.model_id, progress=progress, tolerance=tolerance)
    ]


def _build_compare(text_a: gr.Textbox, model: gr.Dropdown) -> None:
    """Two inputs side by side: probabilities and attributions toward one shared class."""
    help_note(COMPARE_HELP)
    with gr.Row():
        text_b = text_input(
            label="Text B",
            lines=2,
            value="This movie was an absolute bore: cold, dull and badly acted.",
            max_length=5000,
        )
        run = gr.Button("Compare with text A", variant="primary")
    summary = gr.Markdown()
    with gr.Row():
        with gr.Column():
            label_a = gr.Label(label="Text A")
            html_a = gr.HTML()
        with gr.Column():
            label_b = gr.Label(label="Text B")
            html_b = gr.HTML()

    @guarded
    def compare(a: str, b: str, model_id: str | None = None, progress=gr.Progress()):
        a, b = require_text(a, "text A"), require_text(b, "text B")
        ra, rb = sentiment.analyse(a, model_id), sentiment.analyse(b, model_id)
        target = ra.predicted
        attrs = [
            sentiment.attribute(t, target, model_id=model_id, progress=lambda f, m, i=i: progress((i + f) / 2, desc=m))
            for i, t in enumerate((a, b))
        ]
        pa, pb = (float(r.probs[r.labels.index(target)]) for r in (ra, rb))
        return {
            summary: f"P({md_escape(target)}): A {pa:.1%} → B {pb:.1%} ({pb - pa:+.1%})",
            label_a: label_value(ra.labels, ra.probs),
            html_a: highlight_html(attrs[0].tokens, attrs[0].scores, f"A toward {target}"),
            label_b: label_value(rb.labels, rb.probs),
            html_b: highlight_html(attrs[1].tokens, attrs[1].scores, f"B toward {target}"),
        }

    run.click(
        compare,
        [text_a, text_b, model],
        [summary, label_a, html_a, label_b, html_b],
        api_name=api(sentiment.TASK, "compare"),
    )
