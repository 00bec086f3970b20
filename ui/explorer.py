"""Encoder explorer tab: sentence similarity from mean-pooled embeddings, the attention of each
sentence, and the token embeddings of all sentences in one picture."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import gradio as gr
import pandas as pd

from ui import share, texts
from ui.common import AttentionView, EmbeddingView, guarded, help_note, plot_tab
from ui.explainer_tabs import ExplainerTabs
from ui.export import result_export
from ui.inputs import run_row, text_input
from ui.kit import answer_header, answer_queue, draw_views, result_state, tab_compute
from viz.explorer import sentence_similarity_heatmap

INTRO = (
    "An **encoder** reads a whole sentence at once and turns every token into a vector. This one "
    "(all-MiniLM-L6-v2, 6 layers of 12 heads) was trained so that sentences with the same meaning "
    "get similar vectors. Write a few sentences, one per line, and compare them."
)
SIMILARITY = (
    "**Sentence embedding**: the model's vectors for all tokens of a sentence (last layer) are "
    "averaged into one vector of 384 numbers (*mean pooling*). **Cosine similarity** compares the "
    "directions of two such vectors: 1 = same direction (same meaning), 0 = unrelated, below 0 = "
    "pointing apart. ★ marks each sentence's closest other sentence. Try paraphrases, and a word "
    "with two meanings (bank) in different sentences."
)
TOKEN_EMBEDDINGS = (
    texts.EMBEDDINGS + " Each colour is one sentence. The same word in two sentences starts close "
    "together at layer 0 (only its position differs) and moves apart as the layers mix in its context."
)
explorer = tab_compute(__name__)  # the compute functions, on the configured backend


def _sentence_choice(result: explorer.ExplorerResult) -> gr.Dropdown:
    choices = [(f"{i + 1}: {s[:60]}", i) for i, s in enumerate(result.sentences)]
    return gr.Dropdown(choices, value=result.shown, label="Sentence whose attention is shown")


def similarity_table(result: explorer.ExplorerResult) -> pd.DataFrame:
    """Rows 'i: sentence', then the cosine with every sentence (4 decimals); columns numbered."""
    rows = [
        [f"{i + 1}: {s}", *[round(float(v), 4) for v in row]]
        for i, (s, row) in enumerate(zip(result.sentences, result.similarity))
    ]
    return pd.DataFrame(rows, columns=["sentence", *[str(i + 1) for i in range(len(result.sentences))]])


def _summary(result: explorer.ExplorerResult) -> str:
    pair = result.most_similar()
    if pair is None:
        return "One sentence: add more lines to compare sentences."
    i, j, cos = pair
    return f"Most similar pair: sentences {i + 1} and {j + 1} (cosine {cos:.3f})."


@dataclass(frozen=True)
class _Tab:
    """The tab's components, from `_layout` (page order) for `_wire` (events)."""

    text: gr.Textbox
    run: gr.Button
    model: gr.Dropdown
    info: gr.Markdown
    table: gr.Dataframe
    summary: gr.Markdown
    notice: gr.Markdown
    state: gr.State
    sim_plot: gr.Plot
    sentence: gr.Dropdown
    attention: AttentionView
    embeddings: EmbeddingView
    explainers: ExplainerTabs


def build() -> None:
    """Build the tab's components and events inside the current `gr.Tab`."""
    _wire(_layout())


def _layout() -> _Tab:
    """The components in page order (the shared views attach their own redraws and exports)."""
    help_note(INTRO)
    with gr.Row():
        with gr.Column(scale=2):
            text = text_input(
                label="Sentences (one per line)",
                lines=4,
                max_length=5000,
                placeholder="A man is playing a guitar.\nSomeone is strumming a guitar.",
            )
            run, model, info = run_row(explorer.TASK, "Explore", explorer.EXAMPLES, [text])
        with gr.Column(scale=2):
            table = gr.Dataframe(
                label="Cosine similarity of the sentence embeddings",
                interactive=False,
                wrap=True,
                elem_classes=["xray-similarity"],
            )
            summary = gr.Markdown()
            notice = gr.Markdown()
    state = result_state()
    with gr.Tabs():
        views = _views()
        explainers = ExplainerTabs.build(explorer.TASK)
    result_export(state, explorer.TASK)
    return _Tab(
        text=text,
        run=run,
        model=model,
        info=info,
        table=table,
        summary=summary,
        notice=notice,
        state=state,
        **views,
        explainers=explainers,
    )


def _views() -> dict:
    """The tabs of the views (inside the current gr.Tabs): similarity, attention, token embeddings."""
    sim_plot = plot_tab("Sentence similarity", SIMILARITY)
    with gr.Tab("Attention"):
        sentence = gr.Dropdown([("1", 0)], value=0, label="Sentence whose attention is shown")
        attention = AttentionView.build(lambda r: r.attention[r.shown], "Self-attention", texts.ATTENTION)
        help_note(texts.HEADS)
    with gr.Tab("Token embeddings"):
        embeddings = EmbeddingView.build(lambda r: r.embeddings, "Token embeddings", TOKEN_EMBEDDINGS)
    return dict(sim_plot=sim_plot, sentence=sentence, attention=attention, embeddings=embeddings)


def _wire(c: _Tab) -> None:
    """The answer (button, Enter or link), its views, the sentence choice, the redraws."""

    @guarded
    def show_sentence(result, index):
        if result is None or index is None:
            return gr.skip()
        shown = replace(result, shown=min(int(index), len(result.sentences) - 1))
        return {c.state: shown, **c.attention.values(shown)}

    main = gr.on(
        [c.run.click, c.text.submit, share.go()],  # share.go(): a link runs the answer
        _answer(c),
        [c.text, c.model],
        [c.table, c.info, c.summary, c.notice, c.state, c.sentence, c.sim_plot],
        **answer_queue(explorer.TASK),
    )
    draw_views(main, c.state, explorer.TASK, c.attention, c.embeddings, c.explainers)
    c.sentence.input(show_sentence, [c.state, c.sentence], [c.state, *c.attention.outputs], api_visibility="private")
    c.attention.bind(c.state)
    c.embeddings.bind(c.state)
    c.explainers.bind(main, c.state)


def _answer(c: _Tab) -> Callable:
    """The answer's handler: the similarity table, summary and heatmap, the sentence choice, the result."""

    @guarded
    def explore(text_value: str, model_id: str):
        result = explorer.analyse(text_value or "", model_id)
        return {
            c.table: similarity_table(result),
            c.summary: _summary(result),
            c.state: result,
            c.sentence: _sentence_choice(result),
            c.sim_plot: sentence_similarity_heatmap(result.similarity, result.sentences),
            **answer_header(explorer.TASK, model_id, result.notice, c.info, c.notice),
        }

    return explore
