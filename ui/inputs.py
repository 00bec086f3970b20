"""Input widgets and validators shared by the tabs: allow-listed model picker, image and audio
uploads that leave decoding to our own code, and `validator=` rules that refuse bad input before
the queue (the handlers repeat the same checks for direct and API calls)."""
from __future__ import annotations

from typing import Any, Callable

import gradio as gr

from demos import settings
from ui.common import clean_text


def input_validator(*rules: Callable[[Any], str] | None) -> Callable[..., list]:
    """A Gradio `validator=` for an event: `rules[i]` checks input i (None = no check) and returns
    an error message or "". Runs before the queue, without the model; the handler repeats the
    same checks (with the same messages) for direct and API calls."""

    def validate(*values: Any) -> list:
        results = []
        for i, value in enumerate(values):
            rule = rules[i] if i < len(rules) else None
            message = rule(value) if rule else ""
            results.append(gr.validate(not message, message))
        return results

    return validate


def blank_text(message: str) -> Callable[[Any], str]:
    """Rule: `message` when the text is missing, blank, or only invisible control characters."""
    return lambda value: message if value is None or not clean_text(str(value))[0].strip() else ""


def missing(message: str) -> Callable[[Any], str]:
    """Rule: `message` when nothing was given (no upload / no recording)."""
    return lambda value: message if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0) else ""


def image_input(**kwargs) -> gr.Image:
    """An image upload whose handler receives the uploaded file's path unopened.

    gr.Image(type="filepath") still opens the file with PIL before the handler runs, so a file PIL
    cannot identify fails inside Gradio with a generic error. This one skips that step: all
    decoding (size limits, bombs, modes) happens in `demos.imageio.load_image`, with its clear
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
    .wav): `demos.audio` then reads it with soundfile or refuses it with a clear message, instead
    of Gradio failing the request before the handler runs."""
    component = gr.Audio(type="numpy", **kwargs)
    original = component.preprocess

    def preprocess(payload):
        try:
            return original(payload)
        except Exception:  # noqa: BLE001 - decoding failed; the handler reports it clearly
            return str(payload.path) if payload is not None and payload.path else None

    component.preprocess = preprocess
    return component


def model_picker(task: str) -> tuple[gr.Dropdown, gr.Markdown]:
    """Dropdown of the allow-listed models of `task` and a line saying which model runs."""
    choices = settings.current().choices(task)
    dropdown = gr.Dropdown(choices=choices, value=choices[0], label="Model", interactive=len(choices) > 1)
    info = gr.Markdown(f"Model: `{choices[0]}` (loads on first use)", elem_classes=["xray-model-info"])
    return dropdown, info
