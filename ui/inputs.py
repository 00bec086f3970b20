"""Input widgets shared by the tabs: the allow-listed model picker, text boxes whose length limit
also holds for API calls, and image/audio uploads that leave decoding to our own code.

Bad input is refused by the guarded handlers, not by event `validator=`s: in Gradio 6.31 a
validator runs between the queue's size check and the join, so a burst of requests with
validators overflows `queue(max_size=...)` (tests/bench/test_load.py shows it)."""
from __future__ import annotations

from collections.abc import Sequence

import gradio as gr

from demos.runtime import settings
from ui.common import user_error
from ui.links import INPUTS, tag, tag_of


def image_input(**kwargs) -> gr.Image:
    """An image upload whose handler receives the uploaded file's path unopened.

    gr.Image(type="filepath") still opens the file with PIL before the handler runs, so a file PIL
    cannot identify fails inside Gradio with a generic error. This one skips that step: all
    decoding (size limits, bombs, modes) happens in `demos.inputs.images.load_image`, with its clear
    messages. (An instance override, not a subclass: a gr.Image subclass makes Gradio write a
    .pyi stub next to this module at import time.) Uploads are already in Gradio's cache here.
    """
    component = gr.Image(type="filepath", image_mode=None, **kwargs)
    original = component.preprocess

    def preprocess(payload):
        if payload is None or payload.path is None or (payload.url or "").startswith("data:"):
            return original(payload)
        return str(payload.path)

    component.preprocess = preprocess
    return component


def audio_input(**kwargs) -> gr.Audio:
    """A gr.Audio(type="numpy") whose handler gets `(rate, samples)` when Gradio can decode the
    upload, and the file's path when it cannot (no ffmpeg, float or damaged WAV, a text file named
    .wav): `demos.inputs.audio` then reads it with soundfile or refuses it with a clear message, instead
    of Gradio failing the request before the handler runs."""
    component = gr.Audio(type="numpy", **kwargs)
    original = component.preprocess

    def preprocess(payload):
        try:
            return original(payload)
        except Exception:  # decoding failed; the handler reports it clearly
            return str(payload.path) if payload is not None and payload.path else None

    component.preprocess = preprocess
    return component


def model_picker(task: str) -> tuple[gr.Dropdown, gr.Markdown]:
    """Dropdown of the allow-listed models of `task` and a line saying which model runs."""
    choices = settings.current().choices(task)
    named = [(settings.display_name(c), c) for c in choices]
    _, why = settings.current().unavailable(task)  # a greyed-out picker says why, and what to run
    dropdown = gr.Dropdown(choices=named, value=choices[0], label="Model", interactive=len(choices) > 1,
                           info=why or None, min_width=340, scale=2)
    original = dropdown.preprocess

    def preprocess(payload):
        if payload not in (None, "") and payload not in choices:  # the API can send anything
            allowed = ", ".join(name for name, _ in named)
            raise user_error(f"That model is not allowed for the {task} task; choose one of: {allowed}.")
        return original(payload)

    dropdown.preprocess = preprocess
    tag(dropdown, "model")  # a link names the model (ui.links)
    # the model line goes under the row (`info.render()`): beside the picker it would be squeezed
    info = gr.Markdown(f"Model: `{named[0][0]}` (loads on first use)", elem_classes=["xray-model-info"], render=False)
    return dropdown, info


def run_row(task: str, button: str, examples: Sequence = (), inputs: Sequence = (), **options) -> tuple:
    """The run button beside the model picker, then `examples` for `inputs` (one input: each example
    fills it; several: each example is a row). Returns (button, model dropdown, model line)."""
    with gr.Row():
        run = gr.Button(button, variant="primary")
        model, info = model_picker(task)
    info.render()
    for field, component in zip(INPUTS.get(task, ()), inputs):
        if not tag_of(component):
            tag(component, field.name)  # a link carries this input (ui.links)
    if inputs:
        gr.Examples([list(e) if len(inputs) > 1 else [e] for e in examples], inputs=list(inputs), **options)
    return run, model, info


def text_input(**kwargs) -> gr.Textbox:
    """A gr.Textbox whose `max_length` also holds for API calls (the browser enforces it only in
    the page): longer text is refused with a clear message before any tokenizer runs."""
    component = gr.Textbox(**kwargs)
    limit = kwargs.get("max_length")
    original = component.preprocess

    def preprocess(payload):
        if limit and isinstance(payload, str) and len(payload) > limit:
            raise user_error(
                f"The text is {len(payload):,} characters long; the limit for this box is {limit:,} characters."
            )
        return original(payload)

    component.preprocess = preprocess
    return component
