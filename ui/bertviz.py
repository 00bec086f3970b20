"""bertviz head view / model view as an extra, on-demand view for any text tab.

Usage inside a tab's `build()` (after its `state = gr.State()`):

    view = BertvizView.build(lambda r: {"self": r.attention})
    # encoder-decoder: lambda r: {"encoder": r.encoder, "decoder": r.decoder, "cross": r.cross}
    view.bind(state)

Rendering reads the tab's stored result; the model is not run again. The view is an iframe with
the three JavaScript libraries inlined (works offline; app.py needs no static paths).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ui.common import InputError, guarded, help_note

HEAD, MODEL = "head view", "model view"

HELP = f"""**How to read bertviz.** Both views draw the same attention weights as lines: a line from a
token on the left to a token on the right means "while working on the left token, the model looked
at the right token"; the stronger the line, the more it looked.

- **{HEAD.capitalize()}**: one layer at a time (choose it in *Layer*). Each colour is one attention
  head; the coloured squares on top switch heads on and off (click one; double-click to show that
  head alone). Hover over a token to see only its lines.
- **{MODEL.capitalize()}**: every layer (rows) and every head (columns) at once, as small pictures.
  Click a picture to enlarge it with its tokens; click again to close. Look for patterns: lines
  to the previous or next token, everything pointing to one special token such as `[CLS]`/`[SEP]`
  (a "resting" head), or lines linking words that belong together.
- Encoder-decoder models add a selector *Attention*: **Encoder** (source reads source), **Decoder**
  (output reads the output so far), **Cross** (each output token reads the source).

Long inputs are cut to their first tokens and large models show fewer layers, so the view stays
responsive; a note above the picture says so."""


@dataclass
class BertvizView:
    """Accordion with a view choice, a Render button and the bertviz frame.

    `pick(result)` returns {"self": AttentionMaps[, "sentence_b_start": int]} or
    {"encoder": AttentionMaps | None, "decoder": ..., "cross": ...}.
    """

    pick: Callable[[Any], dict]
    view: gr.Radio
    render: gr.Button
    html: gr.HTML
    shown: gr.State  # True while the frame shows a view of the current result

    @classmethod
    def build(cls, pick: Callable[[Any], dict]) -> BertvizView:
        with gr.Accordion("bertviz (head view / model view)", open=False):
            help_note(HELP)
            with gr.Row():
                view = gr.Radio([HEAD, MODEL], value=HEAD, label="View", scale=3)
                render = gr.Button("Render", scale=1)
            html = gr.HTML(elem_classes=["xray-bertviz-frame"])
        return cls(pick, view, render, html, gr.State(False))

    def html_for(self, result: Any, view: str) -> str:
        """The escaped iframe HTML of `view` for a stored result (no model call)."""
        from viz.bertviz_html import view_html

        if result is None:
            raise InputError("Run the model first, then render the bertviz view.")
        return view_html("model" if view == MODEL else "head", self.pick(result))

    def bind(self, state: gr.State) -> None:
        """Render from `state` on click; switching the view re-renders what is shown; a new result clears it."""

        @guarded
        def on_click(result, view):
            return self.html_for(result, view), True

        @guarded
        def on_switch(result, view, shown):
            if result is None or not shown:
                return gr.skip(), shown
            return self.html_for(result, view), True

        outputs = [self.html, self.shown]
        self.render.click(on_click, [state, self.view], outputs, api_visibility="private")
        self.view.change(on_switch, [state, self.view, self.shown], outputs, api_visibility="private")
        state.change(lambda: ("", False), None, outputs, api_visibility="private", queue=False)
