"""Transcription tab (Whisper): transcript, spectrogram, token-over-time alignment, word timing,
token probabilities and encoder self-attention."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from ui import share, texts
from ui.common import AttentionView, Heatmap, Renderer, guarded, help_note, plot_tab
from ui.explainer_tabs import ExplainerTabs
from ui.export import result_export
from ui.inputs import audio_input, run_row
from ui.kit import answer_header, answer_queue, draw_views, result_state, tab_compute
from viz.audio import alignment_figure, spectrogram_figure, token_probability_bars, word_timeline

SPECTROGRAM = (
    "**What the model hears.** Whisper does not get the raw wave: it gets a *log-mel spectrogram*, "
    "how loud each pitch band (bottom = low, top = high) is every 10 ms. Speech shows up as bright "
    "stripes and bands; pauses are dark. The shaded spans are the words, timed as shown in *Words*."
)
ALIGNMENT = (
    "**Where each token listened.** While writing each output token (row), the decoder's "
    "*cross-attention* looks back at the audio (columns, in seconds; one encoder frame = 20 ms for "
    "Whisper). Each row adds up to 1 over the clip. A bright diagonal means the model read the audio "
    "from left to right as it wrote. Pick a layer and a head, or their average. The red line is the "
    "best left-to-right path through the attention found by *dynamic time warping* (DTW): it gives "
    "the word timings."
)
WORDS = (
    "**When was each word spoken?** As Whisper's own word timestamps do: take the cross-attention of "
    "the alignment heads, standardise it, smooth it with a median filter, average the heads, and let "
    "dynamic time warping find the best monotone path from the first token at the start to the last "
    "token at the end. A word starts where the path reaches its first token; pieces of a word "
    "(sub-word tokens) are merged. Colour = how sure the model was of the word."
)
PROBABILITIES = (
    "**How sure was the model?** For every token it wrote, the probability the model gave that token "
    "(green = confident, red = unsure). Beam search can pick a less likely token when it makes the whole "
    "sentence more likely."
)
ENCODER = (
    "**How the encoder listens to itself.** Each moment of the audio looks at other moments to understand "
    "its context. To keep it readable the clip is cut into at most 100 time bins (labels are the bin "
    "start times); rows still add up to 1."
)
speech = tab_compute(__name__)  # the compute functions, on the configured backend


def _md_code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def word_rows(result: speech.SpeechResult) -> list[list]:
    """Rows of the words table: word, start s, end s, mean token probability."""
    return [[w.word, round(w.start, 2), round(w.end, 2), round(w.probability, 3)] for w in result.words]


def _notice(result: speech.SpeechResult) -> str:
    lines = [result.notice] if result.notice else []
    lines.append(f"Heard {result.duration:.2f} s · decoder prompt {' '.join(_md_code(t) for t in result.prompt)}")
    if not result.text:
        lines.append("The model wrote no words for this clip.")
    return "\n\n".join(lines)


class Alignment(Renderer):
    """AttentionView renderer: the decoder's cross-attention over the audio's seconds, with the DTW
    path of the word timings (a checkbox); the CSV export holds tokens x encoder frames."""

    def controls(self) -> list:
        return [gr.Checkbox(value=True, label="Show DTW path")]

    def draw(self, result, maps, title: str, layer: int, head, path_on: bool = True):
        return alignment_figure(
            maps.weights, result.tokens, result.frame_step, layer, head, result.path if path_on else None
        )


@dataclass(frozen=True)
class _Tab:
    """The tab's components, from `_layout` (page order) for `_wire` (events)."""

    audio: gr.Audio
    run: gr.Button
    model: gr.Dropdown
    info: gr.Markdown
    transcript: gr.Textbox
    notice: gr.Markdown
    state: gr.State
    spectrogram: gr.Plot
    alignment: AttentionView
    words_table: gr.Dataframe
    timeline: gr.Plot
    probs_plot: gr.Plot
    encoder: AttentionView
    explainers: ExplainerTabs


def build() -> None:
    """Build the tab's components and events inside the current `gr.Tab`."""
    _wire(_layout())


def _layout() -> _Tab:
    """The components in page order (the shared views attach their own redraws and exports)."""
    with gr.Row():
        with gr.Column(scale=2):
            audio = audio_input(sources=["upload", "microphone"], label="Speech (upload or record)")
            run, model, info = run_row(
                speech.TASK, "Transcribe", speech.EXAMPLES, [audio], label="Example clips (espeak-ng)"
            )
        with gr.Column(scale=2):
            transcript = gr.Textbox(label="Transcript", lines=3, interactive=False)
            notice = gr.Markdown()
    state = result_state()
    with gr.Tabs():
        views = _views()
        explainers = ExplainerTabs.build(speech.TASK)
    result_export(state, "speech")
    return _Tab(
        audio=audio,
        run=run,
        model=model,
        info=info,
        transcript=transcript,
        notice=notice,
        state=state,
        **views,
        explainers=explainers,
    )


def _views() -> dict:
    """The tabs of the views (inside the current gr.Tabs): spectrogram, alignment, words, tokens, encoder."""
    spectrogram = plot_tab("Spectrogram", SPECTROGRAM, "Log-mel spectrogram")
    with gr.Tab("Alignment"):
        alignment = AttentionView.build(
            lambda r: r.cross, "Cross-attention alignment", ALIGNMENT, Alignment(), "Decoder layer"
        )
    with gr.Tab("Words"):
        help_note(WORDS)
        words_table = gr.Dataframe(
            headers=["word", "start (s)", "end (s)", "probability"], interactive=False, wrap=True
        )
        timeline = gr.Plot(label="Word timeline")
    with gr.Tab("Token probabilities"):
        help_note(PROBABILITIES)
        probs_plot = gr.Plot(label="Token probabilities")
    with gr.Tab("Encoder attention"):
        # time bins, not words
        encoder = AttentionView.build(lambda r: r.encoder, "Encoder self-attention", ENCODER, Heatmap(words=False))
        help_note(texts.HEADS)
    return dict(
        spectrogram=spectrogram,
        alignment=alignment,
        words_table=words_table,
        timeline=timeline,
        probs_plot=probs_plot,
        encoder=encoder,
    )


def _wire(c: _Tab) -> None:
    """The answer (button, end of a recording or link), its views, the redraws."""
    main = gr.on(
        [c.run.click, c.audio.stop_recording, share.go()],  # share.go(): a link runs the answer
        _answer(c),
        [c.audio, c.model],
        [c.transcript, c.notice, c.info, c.state, c.spectrogram, c.words_table, c.timeline, c.probs_plot],
        **answer_queue(speech.TASK),
    )
    draw_views(main, c.state, speech.TASK, c.alignment, c.encoder, c.explainers)

    c.alignment.bind(c.state)
    c.encoder.bind(c.state)
    c.explainers.bind(main, c.state)


def _answer(c: _Tab) -> Callable:
    """The answer's handler: the transcript, spectrogram, word table and timeline, token probabilities."""

    @guarded
    def transcribe(audio_value, model_id: str):
        result = speech.transcribe(audio_value, model_id)
        words = [(w.word, w.start, w.end, w.probability) for w in result.words]
        return {
            c.transcript: result.text,
            c.state: result,
            c.spectrogram: spectrogram_figure(result.mel, result.mel_step, words),
            c.words_table: word_rows(result),
            c.timeline: word_timeline(words, result.duration),
            c.probs_plot: token_probability_bars(result.tokens, result.token_probs),
            **answer_header(speech.TASK, model_id, _notice(result), c.info, c.notice),
        }

    return transcribe
