"""Generation tab (GPT-2 family): continuation, next-token choices, attributions, attention, embeddings."""
from __future__ import annotations

import time
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
    EXPLANATION_QUEUE,
    METHODS,
    AttributionPanel,
    answer_header,
    answer_queue,
    api,
    draw_views,
    result_state,
    tab_compute,
    tolerance,
)
from ui.links import tag
from viz.bars import attribution_matrix
from viz.generation import choices_figure, continuation_html
from viz.tokens import clean_token

CONTINUATION_HELP = (
    "A language model writes **one token at a time**: it reads everything so far, gives every "
    "token of its vocabulary a probability to come next, picks one, appends it and repeats. "
    "The darker a generated piece, the surer the model was of it."
)
CHOICES_HELP = (
    "**Next-token choices.** Each row is one step of the generation; the cells are the candidates "
    "the model found most likely at that step, best first, with their probability. The outlined "
    "cell is the token that was actually written. *Greedy* always takes rank 1. *Sampling* draws "
    "at random: temperature sharpens (< 1) or flattens (> 1) the odds, top-k keeps only the k best "
    "tokens and top-p the smallest set whose probabilities add up to p. The probabilities shown "
    "are those of the distribution the token was drawn from, after these settings."
)
ATTRIBUTION_HELP = (
    "Pick a generated token: **which earlier words made the model choose it?** We explain the "
    "model's own probability of that token given everything before it (before temperature, top-k "
    "or top-p). " + texts.ATTRIBUTION
)
ALL_HELP = (
    "**Every generated token at once:** one row per generated token, one column per earlier token: which words "
    "made the model choose each token in turn. Same method and steps as above, one batched pass for all the rows "
    "(each row equals that token's own attribution above). Cells right of a row's own position stay empty: the "
    "token could not see those yet."
)
ATTENTION_HELP = (
    texts.ATTENTION + " GPT-2 reads left to right, so a token can only look back: everything above "
    "the diagonal is zero. This is one pass over the whole text, prompt and continuation together."
)
EMBEDDINGS_HELP = texts.EMBEDDINGS + " Colours separate the prompt's tokens from the generated ones."
COMPARE_HELP = (
    "Change a word of the prompt and watch the continuation and the model's confidence change. "
    "Both prompts are continued greedily with the same number of new tokens; the charts show "
    "the probability of each generated token."
)
SAMPLING_LABELS = ("Temperature", "Top-k (0 = off)", "Top-p", "Seed")
MAX_NEW_DEFAULT = 20
SAMPLING_DEFAULTS = (1.0, 50, 1.0, 0)  # temperature, top-k, top-p, seed: what the controls start with
SAMPLED = (30, True, 0.8, 40, 0.95, 7)  # the sampling example: max new tokens, sample, temperature, top-k, top-p, seed
generation = tab_compute(__name__)  # the compute functions, on the configured backend


def _sampling_controls(interactive: bool) -> list:
    temperature, top_k, top_p, seed = SAMPLING_DEFAULTS
    return [
        gr.Slider(0.05, 2.0, value=temperature, step=0.05, label=SAMPLING_LABELS[0], interactive=interactive),
        gr.Slider(0, 200, value=top_k, step=1, label=SAMPLING_LABELS[1], interactive=interactive),
        gr.Slider(0.05, 1.0, value=top_p, step=0.05, label=SAMPLING_LABELS[2], interactive=interactive),
        gr.Number(value=seed, precision=0, minimum=0, label=SAMPLING_LABELS[3], interactive=interactive),
    ]


def example_rows() -> tuple[list[list], list[str], list[list], list[str]]:
    """(greedy rows, their labels, sampling rows, their labels) for the example lists. Every row sets
    EVERY control a run depends on (prompt, max new tokens, sample, temperature, top-k, top-p,
    seed): a plain example clicked after the sampling one is greedy again, not still sampled."""
    greedy = [[prompt, MAX_NEW_DEFAULT, False, *SAMPLING_DEFAULTS] for prompt in generation.EXAMPLES]
    sampled = [[generation.EXAMPLES[1], *SAMPLED]]
    n, _, temperature, top_k, top_p, seed = SAMPLED
    return (greedy, list(generation.EXAMPLES),
            sampled, [f"Sample {n} tokens: temperature {temperature}, top-k {top_k}, top-p {top_p}, seed {seed}"])


def _positions(result: generation.GenerationResult) -> gr.Dropdown:
    """Dropdown of the generated positions (value = position in the sequence), first one selected."""
    choices = [
        (
            f"step {s + 1}: {clean_token(result.tokens[result.n_prompt + s])} (position {result.n_prompt + s})",
            result.n_prompt + s,
        )
        for s in range(result.steps)
    ]
    return gr.Dropdown(choices, value=result.n_prompt, label="Explain the generated token")


def _choices_line(result: generation.GenerationResult) -> str:
    beyond = int((result.chosen_rank > generation.TOP_SHOWN).sum())
    line = f"Decoding: **{result.decoding}**. {result.steps} tokens generated."
    if beyond:
        line += (
            f" At {beyond} of the {result.steps} steps the drawn token ranked below the {generation.TOP_SHOWN} shown"
            " (sampling can pick any token the settings keep)."
        )
    return line


def _choices_figure(result: generation.GenerationResult, title: str):
    c = result.choices
    return choices_figure(c.chosen, c.tokens, c.probs, result.chosen_rank, title)


def _shaded(result: generation.GenerationResult, title: str) -> str:
    return continuation_html(result.prompt, result.pieces, result.choices.chosen_prob, title)


@dataclass(frozen=True)
class _Tab:
    """The tab's components, from `_layout` (page order) for `_wire` (events)."""

    prompt: gr.Textbox
    max_new: gr.Slider
    do_sample: gr.Checkbox
    sampling: list  # temperature, top-k, top-p, seed
    run: gr.Button
    model: gr.Dropdown
    info: gr.Markdown
    output: gr.Textbox
    notice: gr.Markdown
    shaded: gr.HTML
    state: gr.State
    choices_md: gr.Markdown
    choices_plot: gr.Plot
    position: gr.Dropdown
    attribution: AttributionPanel
    all_button: gr.Button
    all_summary: gr.Markdown
    all_plot: gr.Plot
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
            inputs = _inputs()
        with gr.Column(scale=2):
            output = gr.Textbox(label="Prompt + continuation", lines=5, interactive=False)
            notice = gr.Markdown()
            shaded = gr.HTML()
            help_note(CONTINUATION_HELP)
    state = result_state()
    with gr.Tabs():
        views = _views()
        explainers = ExplainerTabs.build(generation.TASK)
        with gr.Tab("Compare two prompts"):
            _build_compare(inputs["prompt"], inputs["max_new"], inputs["model"])
    result_export(state, generation.TASK)
    return _Tab(**inputs, output=output, notice=notice, shaded=shaded, state=state, **views, explainers=explainers)


def _inputs() -> dict:
    """The prompt, length and sampling controls, the button and model picker, the examples."""
    prompt = text_input(label="Prompt", lines=3, placeholder="Type the beginning of a text…", max_length=5000)
    with gr.Row():
        max_new = tag(
            gr.Slider(1, generation.MAX_NEW_TOKENS, value=MAX_NEW_DEFAULT, step=1, label="Max new tokens"),
            "tokens",
        )
        do_sample = gr.Checkbox(value=False, label="Sample (instead of greedy)")
    with gr.Accordion("Sampling settings (used when sampling)", open=False), gr.Row():
        sampling = _sampling_controls(False)
    controls = [prompt, max_new, do_sample, *sampling]  # what every example sets, all of it
    greedy, greedy_labels, sampled, sampled_labels = example_rows()
    run, model, info = run_row(generation.TASK, "Generate", greedy, controls, example_labels=greedy_labels)
    gr.Examples(sampled, inputs=controls, label="Sampling example", example_labels=sampled_labels)
    return dict(prompt=prompt, max_new=max_new, do_sample=do_sample, sampling=sampling, run=run, model=model, info=info)


def _views() -> dict:
    """The tabs of the views (inside the current gr.Tabs): choices, attributions, attention, embeddings."""
    with gr.Tab("Next-token choices"):
        help_note(CHOICES_HELP)
        choices_md = gr.Markdown()
        choices_plot = gr.Plot(label="Top candidates per step")
    with gr.Tab("Attributions"):
        position = gr.Dropdown([], label="Explain the generated token")
        attribution = AttributionPanel.build(
            ATTRIBUTION_HELP, button="Explain this token", plot_label="Attribution per earlier token"
        )
        with gr.Accordion("Every generated token at once", open=False):
            help_note(ALL_HELP)
            all_button = gr.Button("Explain every generated token")
            all_summary = gr.Markdown()
            all_plot = gr.Plot(label="Attribution of each generated token to the tokens before it")
    with gr.Tab("Attention"):
        attention = AttentionView.build(lambda r: r.attention, "Causal self-attention", ATTENTION_HELP)
        bertviz = BertvizView.build(lambda r: {"self": r.attention})
        help_note(texts.HEADS)
    with gr.Tab("Embeddings"):
        embeddings = EmbeddingView.build(lambda r: r.embeddings, "Token embeddings", EMBEDDINGS_HELP)
    return dict(
        choices_md=choices_md,
        choices_plot=choices_plot,
        position=position,
        attribution=attribution,
        all_button=all_button,
        all_summary=all_summary,
        all_plot=all_plot,
        attention=attention,
        bertviz=bertviz,
        embeddings=embeddings,
    )


def _wire(c: _Tab) -> None:
    """The answer (button, Enter or link), its views, the explanations, the sampling switch, the redraws."""
    main = gr.on(
        [c.run.click, c.prompt.submit, share.go()],  # share.go(): a link runs the answer
        _answer(c),
        [c.prompt, c.max_new, c.do_sample, *c.sampling, c.model],
        [c.output, c.info, c.notice, c.shaded, c.choices_md, c.choices_plot, c.state, c.position],
        **answer_queue(generation.TASK),
    )
    draw_views(main, c.state, generation.TASK, c.attention, c.embeddings, c.explainers)
    c.attribution.bind(
        main, c.state, [c.position], attribute, generation.TASK, "Generate a text first."
    )
    panel = c.attribution
    c.all_button.click(
        attribute_all,
        [c.state, panel.method, panel.steps, panel.adaptive],
        [c.all_summary, c.all_plot],
        api_name=api(generation.TASK, "attribution_all"),
        **EXPLANATION_QUEUE,
    )
    c.do_sample.change(
        lambda on: [gr.update(interactive=bool(on))] * len(c.sampling),
        c.do_sample,
        c.sampling,
        api_visibility="private",
        queue=False,
    )
    c.attention.bind(c.state)
    c.bertviz.bind(c.state)
    c.embeddings.bind(c.state)
    c.explainers.bind(main, c.state)


def _answer(c: _Tab) -> Callable:
    """The answer's handler: the continuation (plain and shaded), its next-token choices, the result."""

    @guarded
    def run_generation(prompt_value, max_value, sample_value, temp_value, k_value, p_value, seed_value, model_id):
        require_text(prompt_value, "text to continue")
        result = generation.generate(
            prompt_value,
            int(max_value),
            bool(sample_value),
            float(temp_value),
            int(k_value),
            float(p_value),
            int(seed_value or 0),
            model_id,
        )
        top = result.choices.probs.shape[1]
        title = f"Top {top} next-token candidates per step ({'after sampling settings' if sample_value else 'greedy'})"
        return {
            c.output: result.text,
            c.shaded: _shaded(result, "Generated tokens shaded by probability"),
            c.choices_md: _choices_line(result),
            c.choices_plot: _choices_figure(result, title),
            c.state: result,
            c.position: _positions(result),
            **answer_header(generation.TASK, model_id, result.notice, c.info, c.notice),
        }

    return run_generation


def attribute(result, position_value, method, steps, tolerance, progress):
    pos = result.n_prompt if position_value in (None, "") else int(position_value)
    return [
        generation.attribute(result.ids, pos, method, steps, result.model_id, progress=progress, tolerance=tolerance)
    ]


@guarded
def attribute_all(result, method, steps, adaptive, progress=gr.Progress()):
    """Every generated token's attribution to the tokens before it, in one batched pass: summary and matrix."""
    if result is None:
        raise gr.Error("Generate a text first.")
    started = time.perf_counter()
    attrs = generation.attribute_all(
        result.ids,
        result.n_prompt,
        method,
        int(steps),
        result.model_id,
        progress=lambda frac, msg: progress(frac, desc=msg),
        tolerance=tolerance(adaptive),
    )
    seconds = time.perf_counter() - started
    label = METHODS[method].label if method in METHODS else method
    line = f"**{md_escape(label)}** · {len(attrs)} generated tokens in one batched pass · {seconds:.1f} s"
    if attrs[0].delta is not None:
        worst = max(float(a.delta) for a in attrs)
        line += f" · {attrs[0].steps} steps · largest convergence delta {worst:.2e}"
    targets = [result.tokens[result.n_prompt + k] for k in range(len(attrs))]
    title = "Which earlier tokens made the model choose each generated token"
    figure = attribution_matrix(targets, result.n_prompt, attrs[-1].tokens, [a.scores for a in attrs], title)
    return line, figure


def _build_compare(prompt_a: gr.Textbox, max_new: gr.Slider, model: gr.Dropdown) -> None:
    """Two prompts side by side: greedy continuations shaded by probability, and their next-token
    choices, both from the model chosen in the picker above."""
    help_note(COMPARE_HELP)
    with gr.Row():
        prompt_b = text_input(
            label="Prompt B", lines=2, value="Once upon a time, in a big city by the river,", max_length=5000
        )
        run = gr.Button("Compare with the prompt above", variant="primary")
    with gr.Row():
        with gr.Column():
            html_a = gr.HTML()
            plot_a = gr.Plot(label="Prompt A: next-token choices")
        with gr.Column():
            html_b = gr.HTML()
            plot_b = gr.Plot(label="Prompt B: next-token choices")

    @guarded
    def compare(a: str, b: str, n: int, model_id: str | None = None):
        for name, text in (("A", a), ("B", b)):
            require_text(text, f"text for prompt {name}")  # both checked before either runs
        out = {}
        for name, text, html_out, plot_out in (("A", a, html_a, plot_a), ("B", b, html_b, plot_b)):
            r = generation.generate(text, int(n), model_id=model_id)  # the prompt as typed: a trailing space is a token
            out[html_out] = _shaded(r, f"Prompt {name}: continuation shaded by probability")
            out[plot_out] = _choices_figure(r, f"Prompt {name}: top candidates per step")
        return out

    run.click(
        compare,
        [prompt_a, prompt_b, max_new, model],
        [html_a, html_b, plot_a, plot_b],
        api_name=api(generation.TASK, "compare"),
    )
