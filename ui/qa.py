"""Question answering tab: the answer span in its context, start/end probabilities, attributions
for the start and the end, attention and embeddings (question vs context)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from ui import share, texts
from ui.bertviz import BertvizView
from ui.common import AttentionView, EmbeddingView, guarded, help_note, plot_tab
from ui.explainer_tabs import ExplainerTabs
from ui.export import result_export
from ui.inputs import run_row, text_input
from ui.kit import AttributionPanel, answer_header, answer_queue, draw_views, result_state, tab_compute
from viz.bars import probability_lines
from viz.tokens import span_html

qa = tab_compute(__name__)  # the compute functions, on the configured backend

HOW = (
    "An extractive QA model does not write an answer: it **points** at one in the context. For every "
    f"context token it scores how likely the answer **starts** there and how likely it **ends** there; the "
    f"answer is the span (at most {qa.MAX_ANSWER_TOKENS} tokens) with the best start + end."
)
SCORE = (
    "**Score** = P(start) × P(end) of the chosen span. Close to 1: the model is sure. Low: it hesitates "
    "between several places, or the answer may not be in the text at all."
)
START_END = (
    "The two curves give, for every token, the probability that the answer starts (or ends) there. "
    "Question tokens and separators can never be part of the answer, so they get 0. The first token, "
    "[CLS], keeps a share: it is how the model says *there is no answer here* (never used as an answer). "
    "Each curve adds up to 1."
)
ATTRIBUTION_QA = (
    "Two attributions: which tokens made the model put the **start** of the answer where it did, and "
    "which made it put the **end** there. Useful question words and the words around the answer should "
    "light up."
)
EMBEDDINGS_QA = (
    "Colours: question tokens, context tokens, the answer span and special tokens. Watch whether the "
    "answer tokens separate from the rest of the context in the later layers."
)


def shown_score(score: float) -> float:
    """The score to 4 significant digits: a small one stays readable (8.142e-05), never '0'."""
    return float(f"{float(score):.4g}")


@dataclass(frozen=True)
class _Tab:
    """The tab's components, from `_layout` (page order) for `_wire` (events)."""

    question: gr.Textbox
    context: gr.Textbox
    run: gr.Button
    model: gr.Dropdown
    info: gr.Markdown
    answer: gr.Textbox
    score: gr.Number
    notice: gr.Markdown
    span: gr.HTML
    state: gr.State
    probs_plot: gr.Plot
    attribution: AttributionPanel
    attention: AttentionView
    bertviz: BertvizView
    embeddings: EmbeddingView
    explainers: ExplainerTabs


def build() -> None:
    """Build the tab's components and events inside the current `gr.Tab`."""
    _wire(_layout())


def _layout() -> _Tab:
    """The components in page order (the shared views attach their own redraws and exports)."""
    help_note(HOW)
    with gr.Row():
        with gr.Column(scale=2):
            question = text_input(
                label="Question", lines=1, placeholder="Ask a question about the context…", max_length=2000
            )
            context = text_input(
                label="Context", lines=7, placeholder="Paste the text that contains the answer…", max_length=20000
            )
            run, model, info = run_row(qa.TASK, "Find the answer", qa.EXAMPLES, [question, context])
        with gr.Column(scale=1):
            answer = gr.Textbox(label="Answer", interactive=False)
            # 4 significant digits (0.8142, 0.00008142, 8.142e-9), never rounded to "0" and never 0.00008142035893823375
            score = gr.Number(label="Score = P(start) × P(end)", interactive=False)
            help_note(SCORE)
            notice = gr.Markdown(label="Notice")
    gr.Markdown("**The answer in its context**")
    span = gr.HTML(label="Answer in the context")
    state = result_state()
    with gr.Tabs():
        views = _views()
        explainers = ExplainerTabs.build(qa.TASK)
    result_export(state, qa.TASK)
    return _Tab(
        question=question,
        context=context,
        run=run,
        model=model,
        info=info,
        answer=answer,
        score=score,
        notice=notice,
        span=span,
        state=state,
        **views,
        explainers=explainers,
    )


def _views() -> dict:
    """The tabs of the views (inside the current gr.Tabs): start & end, attributions, attention, embeddings."""
    probs_plot = plot_tab("Start & end", START_END, "Start and end probabilities")
    with gr.Tab("Attributions"):
        attribution = AttributionPanel.build(
            f"{texts.ATTRIBUTION}\n\n{ATTRIBUTION_QA}",
            headings=[f"Why the answer {which}s where it does" for which in qa.ENDS],
        )
    with gr.Tab("Attention"):
        attention = AttentionView.build(lambda r: r.attention, "Self-attention", texts.ATTENTION)
        bertviz = BertvizView.build(lambda r: {"self": r.attention})
        help_note(texts.HEADS)
    with gr.Tab("Embeddings"):
        embeddings = EmbeddingView.build(
            lambda r: r.embeddings, "Token embeddings", texts.EMBEDDINGS + "\n\n" + EMBEDDINGS_QA
        )
    return dict(
        probs_plot=probs_plot, attribution=attribution, attention=attention, bertviz=bertviz, embeddings=embeddings
    )


def _wire(c: _Tab) -> None:
    """The answer (button, Enter or link), its views, the explanations, the redraws."""
    main = gr.on(
        [c.run.click, c.question.submit, share.go()],  # share.go(): a link runs the answer
        _answer(c),
        [c.question, c.context, c.model],
        [c.answer, c.score, c.span, c.probs_plot, c.info, c.notice, c.state],
        **answer_queue(qa.TASK),
    )
    draw_views(main, c.state, qa.TASK, c.attention, c.embeddings, c.explainers)
    c.attribution.bind(main, c.state, [], attribute, qa.TASK, "Find an answer first.")
    c.attention.bind(c.state)
    c.bertviz.bind(c.state)
    c.embeddings.bind(c.state)
    c.explainers.bind(main, c.state)


def _answer(c: _Tab) -> Callable:
    """The answer's handler: the answer, its score and span, the start/end curves, the result."""

    @guarded
    def ask(question_value: str, context_value: str, model_id: str):
        result = qa.answer(question_value, context_value, model_id)  # clear ValueError when empty
        series = {"P(start)": result.start_probs, "P(end)": result.end_probs}
        return {
            c.answer: result.answer,
            c.score: shown_score(result.score),
            c.span: span_html(result.context, result.char_start, result.char_end),
            c.probs_plot: probability_lines(result.tokens, series, "Where does the answer start and end?"),
            c.state: result,
            **answer_header(qa.TASK, model_id, result.notice, c.info, c.notice),
        }

    return ask


def attribute(result, method, steps, tolerance, progress):
    """Both ends of the answer span: [toward P(start), toward P(end)]."""
    return [
        qa.attribute(
            result.question,
            result.context,
            which,
            method,
            steps,
            result.model_id,
            tolerance=tolerance,
            progress=lambda frac, msg, i=i, w=which: progress((i + frac) / len(qa.ENDS), f"{w}: {msg}"),
        )
        for i, which in enumerate(qa.ENDS)
    ]
