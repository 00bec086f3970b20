"""Sentiment tab: label with probabilities, token attributions, attention and embeddings."""
from __future__ import annotations

import gradio as gr

from demos import sentiment
from ui import texts
from ui.bertviz import BertvizView
from ui.export import attribution_export, result_export
from ui.common import AttentionView, EmbeddingView, attribution_controls, attribution_summary, explain, guarded, require_text
from ui.inputs import model_picker, text_input
from viz.bars import attribution_bars
from viz.tokens import highlight_html

COMPARE_HELP = (
    "Change one word and see what moves: both texts are explained **toward the same class** (the "
    "one predicted for text A), so the colours can be compared token by token."
)

PREDICTED = "predicted class"


def build() -> None:
    """Build the tab's components and events inside the current `gr.Tab`."""
    with gr.Row():
        with gr.Column(scale=2):
            text = text_input(label="Text", lines=3, placeholder="Type a sentence to classify…", max_length=5000)
            with gr.Row():
                run = gr.Button("Classify", variant="primary")
                model, info = model_picker(sentiment.TASK)
            gr.Examples([[e] for e in sentiment.EXAMPLES], inputs=[text])
        with gr.Column(scale=1):
            label = gr.Label(label="Sentiment", num_top_classes=5)
            explain(texts.PROBABILITIES)
            notice = gr.Markdown()
    state = gr.State()
    with gr.Tabs():
        with gr.Tab("Attributions"):
            explain(texts.ATTRIBUTION)
            with gr.Row():
                target = gr.Radio([PREDICTED], value=PREDICTED, label="Explain the probability of")
            method, steps = attribution_controls()
            explain_btn = gr.Button("Explain again")
            attr_summary = gr.Markdown()
            attr_html = gr.HTML()
            attr_plot = gr.Plot(label="Attribution per token")
            attr_state = attribution_export()
        with gr.Tab("Attention"):
            attention = AttentionView.build(lambda r: r.attention, "Self-attention", texts.ATTENTION)
            bertviz = BertvizView.build(lambda r: {"self": r.attention})
            explain(texts.HEADS)
        with gr.Tab("Embeddings"):
            embeddings = EmbeddingView.build(lambda r: r.embeddings, "Token embeddings", texts.EMBEDDINGS)
        with gr.Tab("Compare two texts"):
            _build_compare(text)
    result_export(state, "sentiment")

    @guarded
    def classify(text_value: str, model_id: str):
        result = sentiment.analyse(require_text(text_value), model_id)
        m = sentiment.load(model_id)
        targets = gr.Radio([PREDICTED, *result.labels], value=PREDICTED, label="Explain the probability of")
        return (
            result.label_value(),
            f"Model: {m.describe()}",
            result.notice,
            result,
            targets,
            *attention.updates(result),
            *embeddings.updates(result),
        )

    @guarded
    def explain_result(result, target_value: str, method_value: str, steps_value: int, progress=gr.Progress()):
        if result is None:
            raise gr.Error("Classify a text first.")
        attr = sentiment.attribute(
            result.text,
            None if target_value == PREDICTED else target_value,
            method_value,
            int(steps_value),
            result.model_id,
            progress=lambda frac, msg: progress(frac, desc=msg),
        )
        title = f"Attribution toward {attr.target}"
        return attribution_summary(attr), highlight_html(attr.tokens, attr.scores, title), attribution_bars(attr.tokens, attr.scores, title), attr

    main = gr.on(
        [run.click, text.submit],
        classify,
        [text, model],
        [label, info, notice, state, target, *attention.outputs, *embeddings.outputs],
        api_name="sentiment",
    )
    attr_inputs = [state, target, method, steps]
    attr_outputs = [attr_summary, attr_html, attr_plot, attr_state]
    main.then(explain_result, attr_inputs, attr_outputs, api_name="sentiment_attribution")
    explain_btn.click(explain_result, attr_inputs, attr_outputs, api_visibility="private")
    attention.bind(state)
    bertviz.bind(state)
    embeddings.bind(state)


def _build_compare(text_a: gr.Textbox) -> None:
    """Two inputs side by side: probabilities and attributions toward one shared class."""
    explain(COMPARE_HELP)
    with gr.Row():
        text_b = text_input(label="Text B", lines=2, value="This movie was an absolute bore: cold, dull and badly acted.", max_length=5000)
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
    def compare(a: str, b: str, progress=gr.Progress()):
        a, b = require_text(a, "text A"), require_text(b, "text B")
        ra, rb = sentiment.analyse(a), sentiment.analyse(b)
        target = ra.predicted
        attrs = [
            sentiment.attribute(t, target, progress=lambda f, m, i=i: progress((i + f) / 2, desc=m))
            for i, t in enumerate((a, b))
        ]
        change = rb.label_value()[target] - ra.label_value()[target]
        line = f"P({target}): A {ra.label_value()[target]:.1%} → B {rb.label_value()[target]:.1%} ({change:+.1%})"
        return (
            line,
            ra.label_value(),
            highlight_html(attrs[0].tokens, attrs[0].scores, f"A toward {target}"),
            rb.label_value(),
            highlight_html(attrs[1].tokens, attrs[1].scores, f"B toward {target}"),
        )

    run.click(
        compare, [text_a, text_b], [summary, label_a, html_a, label_b, html_b], api_name="sentiment_compare",
    )
