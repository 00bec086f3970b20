"""Question answering tab: the answer span in its context, start/end probabilities, attributions
for the start and the end, attention and embeddings (question vs context)."""
from __future__ import annotations

import gradio as gr

from ui import share, texts
from ui.bertviz import BertvizView
from ui.common import AttentionView, EmbeddingView, explain, guarded, plot_tab
from ui.explainers import ExplainerTabs
from ui.export import result_export
from ui.inputs import run_row, text_input
from ui.kit import AttributionPanel, answer_header, answer_queue, api, draw_views, result_state, tab_compute
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


def build() -> None:
    """Build the tab's components and events inside the current `gr.Tab`."""
    explain(HOW)
    with gr.Row():
        with gr.Column(scale=2):
            question = text_input(label="Question", lines=1, placeholder="Ask a question about the context…", max_length=2000)
            context = text_input(label="Context", lines=7, placeholder="Paste the text that contains the answer…", max_length=20000)
            run, model, info = run_row(qa.TASK, "Find the answer", qa.EXAMPLES, [question, context])
        with gr.Column(scale=1):
            answer = gr.Textbox(label="Answer", interactive=False)
            # 4 significant digits (0.8142, 0.00008142, 8.142e-9), never rounded to "0" and never 0.00008142035893823375
            score = gr.Number(label="Score = P(start) × P(end)", interactive=False)
            explain(SCORE)
            notice = gr.Markdown(label="Notice")
    gr.Markdown("**The answer in its context**")
    span = gr.HTML(label="Answer in the context")
    state = result_state()
    with gr.Tabs():
        probs_plot = plot_tab("Start & end", START_END, "Start and end probabilities")
        with gr.Tab("Attributions"):
            attribution = AttributionPanel.build(
                f"{texts.ATTRIBUTION}\n\n{ATTRIBUTION_QA}", headings=[f"Why the answer {which}s where it does" for which in qa.ENDS]
            )
        with gr.Tab("Attention"):
            attention = AttentionView.build(lambda r: r.attention, "Self-attention", texts.ATTENTION)
            bertviz = BertvizView.build(lambda r: {"self": r.attention})
            explain(texts.HEADS)
        with gr.Tab("Embeddings"):
            embeddings = EmbeddingView.build(lambda r: r.embeddings, "Token embeddings", texts.EMBEDDINGS + "\n\n" + EMBEDDINGS_QA)
        explainers = ExplainerTabs.build(qa.TASK)
    result_export(state, qa.TASK)

    @guarded
    def ask(question_value: str, context_value: str, model_id: str):
        result = qa.answer(question_value, context_value, model_id)  # clear ValueError when empty
        series = {"P(start)": result.start_probs, "P(end)": result.end_probs}
        return {
            answer: result.answer,
            score: shown_score(result.score),
            span: span_html(result.context, result.char_start, result.char_end),
            probs_plot: probability_lines(result.tokens, series, "Where does the answer start and end?"),
            state: result,
            **answer_header(qa.TASK, model_id, result.notice, info, notice),
        }

    def attribute(result, method, steps, tolerance, progress):
        """Both ends of the answer span: [toward P(start), toward P(end)]."""
        return [
            qa.attribute(
                result.question, result.context, which, method, steps, result.model_id, tolerance=tolerance,
                progress=lambda frac, msg, i=i, w=which: progress((i + frac) / len(qa.ENDS), f"{w}: {msg}"),
            )
            for i, which in enumerate(qa.ENDS)
        ]

    main = gr.on(
        [run.click, question.submit, share.go()],  # share.go(): a link runs the answer
        ask,
        [question, context, model],
        [answer, score, span, probs_plot, info, notice, state],
        **answer_queue(qa.TASK),
    )
    draw_views(main, state, qa.TASK, attention, embeddings, explainers)
    attribution.bind(main, state, [], attribute, api(qa.TASK, "attribution"), "Find an answer first.")
    attention.bind(state)
    bertviz.bind(state)
    embeddings.bind(state)
    explainers.bind(main, state)
