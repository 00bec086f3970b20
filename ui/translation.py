"""Translation tab (English -> German): translation, alignment (cross-attention), encoder and
decoder self-attention, source-token attributions of a chosen target token, joint embeddings."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from ui import share, texts
from ui.bertviz import BertvizView
from ui.common import AttentionView, EmbeddingView, guarded, help_note, require_text
from ui.explainer_tabs import ExplainerTabs
from ui.export import result_export
from ui.inputs import run_row, text_input
from ui.kit import AttributionPanel, answer_header, answer_queue, draw_views, result_state, tab_compute
from viz.bars import probability_lines
from viz.tokens import clean_token

TRANSLATION = (
    "A **translation model** has two halves. The *encoder* reads the whole English sentence; the "
    "*decoder* writes German one token at a time, each time looking back at what it already wrote "
    "and at the encoder's reading of the English. The curve shows how sure the model was of each "
    "German token it wrote."
)
ALIGNMENT = (
    "**Cross-attention** is where the decoder looks at the English sentence. Each row is the German "
    "token being predicted, each column an English token; a row adds up to 1. Bright cells often "
    "line up words with their translations (an *alignment*), though heads and layers differ. The "
    "token range picks rows (German tokens); all English tokens stay visible."
)
ENCODER = (
    "**Encoder self-attention**: how each English token looks at the other English tokens while "
    "the model reads the sentence. Everyone may look everywhere, before and after."
)
DECODER = (
    "**Decoder self-attention**: while predicting each German token (row) the decoder looks back at "
    "the German tokens it has already written (columns, starting with the start token). It cannot "
    "look ahead, so the upper right triangle is empty."
)
ATTRIBUTION = (
    "Pick one German token: the attributions say how much each **English** token raised (green) or "
    "lowered (red) the probability of writing exactly that token, given the English sentence and "
    "the German written before it."
)
EMBEDDINGS = (
    "English (encoder) and German (decoder) token vectors in one picture. Layer 0 is the raw token "
    "embeddings; higher layers mix in context, and words that translate each other may move together."
)


TARGET_LABEL, TARGET_INFO = "German token to explain", "index: token (probability)"
translation = tab_compute(__name__)  # the compute functions, on the configured backend


def _target_choices(result: translation.TranslationResult) -> list[tuple[str, int]]:
    """Dropdown choices (label, step index) of the target tokens, with their probabilities."""
    pairs = zip(result.target_tokens, result.target_probs)
    return [(f"{i}: {clean_token(tok)}  (p={p:.1%})", i) for i, (tok, p) in enumerate(pairs)]


@dataclass(frozen=True)
class _Tab:
    """The tab's components, from `_layout` (page order) for `_wire` (events)."""

    text: gr.Textbox
    run: gr.Button
    model: gr.Dropdown
    info: gr.Markdown
    output: gr.Textbox
    notice: gr.Markdown
    confidence: gr.Plot
    state: gr.State
    cross: AttentionView
    target: gr.Dropdown
    attribution: AttributionPanel
    encoder: AttentionView
    decoder: AttentionView
    bertviz: BertvizView
    embeddings: EmbeddingView
    explainers: ExplainerTabs


def build() -> None:
    """Build the tab's components and events inside the current `gr.Tab`."""
    _wire(_layout())


def _layout() -> _Tab:
    """The components in page order (the shared views attach their own redraws and exports)."""
    with gr.Row():
        with gr.Column(scale=2):
            text = text_input(label="English text", lines=3, placeholder="Type an English sentence…", max_length=5000)
            run, model, info = run_row(translation.TASK, "Translate", translation.EXAMPLES, [text])
        with gr.Column(scale=2):
            output = gr.Textbox(label="German translation", lines=3, interactive=False)
            notice = gr.Markdown()
            help_note(TRANSLATION)
            confidence = gr.Plot(label="Probability of each German token")
    state = result_state()
    with gr.Tabs():
        views = _views()
        explainers = ExplainerTabs.build(translation.TASK)
    result_export(state, translation.TASK)
    return _Tab(
        text=text,
        run=run,
        model=model,
        info=info,
        output=output,
        notice=notice,
        confidence=confidence,
        state=state,
        **views,
        explainers=explainers,
    )


def _views() -> dict:
    """The tabs of the views (inside the current gr.Tabs): alignment, attributions, attention, embeddings."""
    with gr.Tab("Alignment (cross-attention)"):
        cross = AttentionView.build(lambda r: r.cross_attention, "Cross-attention", ALIGNMENT)
    with gr.Tab("Attributions"):
        help_note(ATTRIBUTION)
        target = gr.Dropdown([], label=TARGET_LABEL, info=TARGET_INFO)
        attribution = AttributionPanel.build(
            texts.ATTRIBUTION, button="Explain this token", plot_label="Attribution per English token"
        )
    with gr.Tab("Encoder attention"):
        encoder = AttentionView.build(lambda r: r.encoder_attention, "Encoder self-attention", ENCODER)
        help_note(texts.HEADS)
    with gr.Tab("Decoder attention"):
        decoder = AttentionView.build(lambda r: r.decoder_attention, "Decoder self-attention", DECODER)
        bertviz = BertvizView.build(
            lambda r: {"encoder": r.encoder_attention, "decoder": r.decoder_attention, "cross": r.cross_attention}
        )
    with gr.Tab("Embeddings"):
        embeddings = EmbeddingView.build(
            lambda r: r.embeddings, "English and German token embeddings", f"{EMBEDDINGS}\n\n{texts.EMBEDDINGS}"
        )
    return dict(
        cross=cross,
        target=target,
        attribution=attribution,
        encoder=encoder,
        decoder=decoder,
        bertviz=bertviz,
        embeddings=embeddings,
    )


def _wire(c: _Tab) -> None:
    """The answer (button, Enter or link), its views, the explanations, the redraws."""
    views = (c.cross, c.encoder, c.decoder, c.embeddings)
    main = gr.on(
        [c.run.click, c.text.submit, share.go()],  # share.go(): a link runs the answer
        _answer(c),
        [c.text, c.model],
        [c.output, c.info, c.notice, c.state, c.target, c.confidence],
        **answer_queue(translation.TASK),
    )
    draw_views(main, c.state, translation.TASK, *views, c.explainers)
    c.attribution.bind(
        main,
        c.state,
        [c.target],
        attribute,
        translation.TASK,
        "Translate a text first.",
        rerun=(c.target.input,),
    )
    for view in views:
        view.bind(c.state)
    c.bertviz.bind(c.state)
    c.explainers.bind(main, c.state)


def _answer(c: _Tab) -> Callable:
    """The answer's handler: the translation, its confidence curve, the target-token choices, the result."""

    @guarded
    def translate(text_value: str, model_id: str):
        result = translation.analyse(require_text(text_value), model_id)
        choices = _target_choices(result)
        series = {"P(token | English, German so far)": result.target_probs}
        out = {
            c.output: result.translation,
            c.state: result,
            c.target: gr.Dropdown(choices, value=choices[0][1], label=TARGET_LABEL, info=TARGET_INFO),
            c.confidence: probability_lines(result.target_tokens, series, "Confidence per German token"),
            **answer_header(translation.TASK, model_id, result.notice, c.info, c.notice),
        }
        return out

    return translate


def attribute(result, step, method, steps, tolerance, progress):
    return [
        translation.attribute(
            result.text, int(step or 0), method, steps, result.model_id, progress=progress, tolerance=tolerance
        )
    ]
