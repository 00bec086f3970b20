"""Export buttons: the numbers behind a view (CSV) or a whole result (JSON) as a download."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import gradio as gr

from ui import session
from viz.export import attributions_csv, result_json

_EXPORT_DIR = os.path.join(tempfile.gettempdir(), "xray-exports")


def write_export(text: str, stem: str, suffix: str) -> str:
    """Write `text` to a fresh file in the export folder; returns its path (served by gr.File)."""
    os.makedirs(_EXPORT_DIR, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f"{stem}-", suffix=suffix, dir=_EXPORT_DIR)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return path


def export_button(label: str = "Export numbers (CSV)") -> tuple[gr.Button, gr.File]:
    """A small button and the file it produces, inside a closed accordion."""
    with gr.Accordion(label, open=False):  # named by what it exports: several sit under one view
        gr.Markdown("PNG: use the camera icon on the figure. Numbers: the button below.", elem_classes=["xray-help"])
        button = gr.Button(label, size="sm")
        file = gr.File(label="Download", interactive=False)
    return button, file


def bind_export(button: gr.Button, file: gr.File, inputs: list, make: Callable[..., tuple[str, str, str]]) -> None:
    """On click, `make(*inputs) -> (text, stem, suffix)` is written and offered as a download."""

    def run(*values: Any):
        values = tuple(session.resolve(v) for v in values)
        if values and values[0] is None:
            raise gr.Error("Run the model first; there is nothing to export yet.")
        text, stem, suffix = make(*values)
        return write_export(text, stem, suffix)

    button.click(run, inputs, file, api_visibility="private")


def result_export(state: gr.State, stem: str) -> None:
    """'Export the whole result (JSON)' for a tab: answer, attentions, embeddings, as computed."""
    button, file = export_button("Export the whole result (JSON)")
    bind_export(button, file, [state], lambda result: (result_json(result), stem, ".json"))


def attribution_export(state: gr.State | None = None) -> gr.State:
    """'Export the attribution (CSV)' under an attribution view. Returns the gr.State (a new one
    unless given) that the tab's attribution event fills with its `Attribution` (or a list)."""
    state = state if state is not None else gr.State()
    button, file = export_button("Export the attribution (CSV)")

    def make(attr):
        attrs = attr if isinstance(attr, (list, tuple)) else [attr]
        return attributions_csv(attrs), "attribution", ".csv"

    bind_export(button, file, [state], make)
    return state
