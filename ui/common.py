"""Widgets shared by the tabs: attention / embedding / attribution views, and the error guard
that turns exceptions into clear messages in the tab (input widgets: `ui.inputs`).

A tab computes a result once (kept in a `gr.State`); the view controls re-render figures from
that state without running the model again.
"""
from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.results import AttentionMaps, Embeddings
from scale.backend import Busy
from ui import session
from ui.export import bind_export, export_button
from ui.links import tag
from viz.attention import AVERAGE, attention_heatmap, head_summary, select_heads, shown_part
from viz.embedding import PROJECTIONS, embedding_scatter, project_2d
from viz.export import matrix_csv, points_csv

log = logging.getLogger(__name__)

WORDS_LABEL = "Whole words (attention to a word: sum over its pieces; from a word: their mean)"
GENERIC_ERROR = "Something went wrong while running the model. The error was logged; please try again."


class InputError(ValueError):
    """A problem with the user's input; its message is shown in the tab as it is."""


def guarded(fn: Callable) -> Callable:
    """Run `fn`; user-fixable errors become `gr.Error(message)`, anything else a generic message.

    Text arguments are cleaned first (`clean_inputs`), a session's stored result reference is
    resolved to the result, and a result returned for a tab's result state is stored as
    `ui.session.keep` says (large ones as their recipe). Exceptions that carry a `user_message`
    (a model that failed to load) show it. Out-of-memory frees the cache so the next request can
    succeed. Tracebacks go to the log only.
    """

    name = getattr(fn, "__name__", "handler")

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            args, kwargs = clean_inputs(tuple(session.resolve(a) for a in args), kwargs)
            return session.keep_outputs(fn(*args, **kwargs))
        except gr.Error as exc:
            raise user_error(str(exc.message), name) from None
        except (
            ValueError,
            PermissionError,
            Busy,
        ) as exc:  # InputError, allow-list refusals, bad params, a full model tier
            raise user_error(str(exc), name) from None
        except Exception as exc:  # the edge of the app: log, answer generically
            if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower():
                _release_memory()
                raise user_error(OOM_ERROR, name) from None
            if isinstance(getattr(exc, "user_message", None), str):
                raise user_error(exc.user_message, name) from None  # its traceback was logged where it was raised
            log.exception("unexpected error in %s", name)
            raise gr.Error(GENERIC_ERROR, print_exception=False) from None

    return wrapper


def user_error(message: str, where: str = "input") -> gr.Error:
    """A message for the user's tab, with ONE line in the server log (Gradio would otherwise print
    a whole traceback for every refused input)."""
    log.info("refused in %s: %s", where, message.splitlines()[0][:200] if message else "")
    return gr.Error(message, print_exception=False)


OOM_ERROR = "The model ran out of memory on this input. Try a shorter input or fewer steps."
MAX_INPUT_CHARS = 100_000  # any one text argument; the text boxes stop far earlier (API calls do not)
# C0/C1 control characters except tab, newline and carriage return; bidirectional embeddings,
# overrides and isolates (they reorder how the rest of a line is displayed); byte-order marks,
# non-characters and lone surrogates (tokenizers cannot encode them).
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufeff\ufffe\uffff\ud800-\udfff]"
)


def clean_text(text: str) -> tuple[str, int]:
    """`text` without invisible control characters (NUL, terminal escapes, right-to-left
    overrides, lone surrogates) and how many were removed. Emoji, joiners, combining marks and
    right-to-left scripts are kept."""
    return _INVISIBLE.subn("", text)


def clean_inputs(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Clean every text argument of a handler; refuse texts over MAX_INPUT_CHARS; say (as a
    warning toast) how many invisible characters were removed."""
    removed = 0

    def one(value: Any) -> Any:
        nonlocal removed
        if not isinstance(value, str):
            return value
        if len(value) > MAX_INPUT_CHARS:
            raise InputError(f"The text is {len(value):,} characters long; the limit is {MAX_INPUT_CHARS:,}.")
        value, n = clean_text(value)
        removed += n
        return value

    args, kwargs = tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}
    if removed:
        gr.Warning(
            f"{removed} invisible control character(s) (such as NUL, escape or right-to-left override) "
            "were removed from the input."
        )
    return args, kwargs


def _release_memory() -> None:
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")  # a front on the Ray tier never loads torch
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def require_text(text: str | None, what: str = "text") -> str:
    """The stripped text, or an InputError naming what is missing."""
    if text is None or not str(text).strip():
        raise InputError(f"Please enter some {what}.")
    return str(text).strip()


def help_note(text: str) -> gr.Markdown:
    """A short plain-language explanation placed beside a view."""
    return gr.Markdown(text, elem_classes=["xray-help"])


def plot_tab(title: str, help_text: str, label: str = "") -> gr.Plot:
    """A tab (inside the current gr.Tabs) holding a short explanation and one plot."""
    with gr.Tab(title):
        help_note(help_text)
        return gr.Plot(label=label or title)


class RedrawView:
    """What the result views share: fresh controls and figures for each new result (`values`), a
    redraw from the session state without a model call when a control moves (`bind`), and a CSV
    of what is shown. A subclass gives `controls`, `outputs`, `updates(result)`, `figure(result,
    *control values)` and `table(result, *control values) -> (csv, stem, suffix)`."""

    plot: gr.Plot
    export: tuple
    QUEUE = False  # a redraw is quick: it skips the queue

    def values(self, result: Any) -> dict:
        return dict(zip(self.outputs, self.updates(result)))

    def bind(self, state: gr.State) -> None:
        controls = self.controls

        @guarded
        def redraw(result, *values):
            return gr.skip() if result is None else self.figure(result, *values)

        gr.on(
            [c.change for c in controls],
            redraw,
            [state, *controls],
            self.plot,
            api_visibility="private",
            queue=self.QUEUE,
        )
        bind_export(*self.export, [state, *controls], self.table)


class Renderer:
    """How an `AttentionView` draws one layer/head of its maps: `draw(result, maps, title, layer,
    head, *its control values)`. Its own controls (none by default; their initial values are what a
    fresh result starts from) and the part of the map the CSV export holds (all by default)."""

    def controls(self) -> list:
        return []

    def draw(self, result: Any, maps: AttentionMaps, title: str, layer: int, head: Any, *extra: Any):
        raise NotImplementedError

    def shown(self, maps: AttentionMaps, *extra: Any) -> tuple[slice, slice]:
        return slice(None), slice(None)


class Heatmap(Renderer):
    """Draws one layer/head as queries x keys for a token range (self- or cross-attention); with
    `words` (text) an option sums the sub-word tokens into whole words (the CSV keeps the tokens)."""

    def __init__(self, words: bool = True) -> None:
        self.words = words

    def controls(self) -> list:
        shown = [
            gr.Number(value=0, precision=0, label="From token", minimum=0),
            gr.Number(value=0, precision=0, label="To token (0 = last)", minimum=0),
        ]
        return shown + ([tag(gr.Checkbox(value=False, label=WORDS_LABEL), "words")] if self.words else [])

    def draw(
        self,
        result: Any,
        maps: AttentionMaps,
        title: str,
        layer: int,
        head: Any,
        start: Any = None,
        end: Any = None,
        words: Any = False,
    ):
        return attention_heatmap(
            maps.weights,
            maps.query_tokens,
            maps.key_tokens,
            layer,
            head,
            start,
            end,
            title=title,
            self_attention=maps.kind != "cross",
            words=bool(words),
        )

    def shown(self, maps: AttentionMaps, start: Any = None, end: Any = None, words: Any = False) -> tuple[slice, slice]:
        return shown_part(maps.weights.shape[-2:], start, end, maps.kind != "cross")


@dataclass
class AttentionView(RedrawView):
    """Layer / head controls, one layer's attention drawn by a pluggable renderer (`Heatmap`, the
    image tab's class-token grid, the speech tab's alignment) with the renderer's own controls,
    the heads overview and the CSV of the map shown.

    `pick(result)` returns the `AttentionMaps` this view shows.
    """

    pick: Callable[[Any], AttentionMaps]
    title: str
    renderer: Renderer
    layer: gr.Slider
    head: gr.Dropdown
    extra: list  # the renderer's controls
    plot: gr.Plot
    summary: gr.Plot
    export: tuple
    layer_label: str = "Layer"

    @classmethod
    def build(
        cls,
        pick: Callable[[Any], AttentionMaps],
        title: str,
        help_text: str,
        renderer: Renderer | None = None,
        layer_label: str = "Layer",
    ) -> AttentionView:
        renderer = renderer or Heatmap()
        help_note(help_text)
        with gr.Row():
            # tag: what a link sets (ui.links)
            layer = tag(gr.Slider(0, 1, value=0, step=1, label=layer_label), "layer")
            head = tag(gr.Dropdown([AVERAGE], value=AVERAGE, label="Head"), "head")
            extra = renderer.controls()
        plot = gr.Plot(label=title)
        summary = gr.Plot(label=f"{title}: heads overview")
        export = export_button("Export the map shown (CSV)")
        return cls(pick, title, renderer, layer, head, extra, plot, summary, export, layer_label)

    @property
    def controls(self) -> list:
        return [self.layer, self.head, *self.extra]

    @property
    def outputs(self) -> list:
        return [*self.controls, self.plot, self.summary]

    def figure(self, result: Any, layer: Any, head: Any, *extra: Any):
        maps = self.pick(result)
        return self.renderer.draw(result, maps, self.title, min(int(layer or 0), maps.n_layers - 1), head, *extra)

    def updates(self, result: Any) -> list:
        """New controls and figures for a fresh result (last layer, head average)."""
        maps = self.pick(result)
        last = maps.n_layers - 1
        heads = [AVERAGE, *[str(h) for h in range(maps.n_heads)]]
        extra = [c.value for c in self.extra]  # the renderer's controls as they started
        return [
            gr.Slider(0, last, value=last, step=1, label=f"{self.layer_label} (0–{last})"),
            gr.Dropdown(heads, value=AVERAGE, label="Head"),
            *extra,
            self.figure(result, last, AVERAGE, *extra),
            head_summary(maps.weights, title=self.title),
        ]

    def table(self, result: Any, layer: Any, head: Any, *extra: Any):
        maps = self.pick(result)
        layer = min(int(layer or 0), maps.n_layers - 1)
        matrix = select_heads(maps.weights, layer, head)
        rows, cols = self.renderer.shown(maps, *extra)
        return (
            matrix_csv(matrix, maps.query_tokens, maps.key_tokens, rows, cols),
            f"attention-layer{layer}-head{head}",
            ".csv",
        )


@dataclass
class EmbeddingView(RedrawView):
    """Layer slider, projection method and the 2-D scatter of token (or patch) embeddings."""

    pick: Callable[[Any], Embeddings]
    title: str
    layer: gr.Slider
    method: gr.Radio
    plot: gr.Plot
    export: tuple
    QUEUE = True  # t-SNE / UMAP can take seconds: queued

    @classmethod
    def build(cls, pick: Callable[[Any], Embeddings], title: str, help_text: str) -> EmbeddingView:
        help_note(help_text)
        with gr.Row():
            layer = gr.Slider(0, 1, value=0, step=1, label="Layer (0 = input embeddings)")
            method = gr.Radio(list(PROJECTIONS), value="pca", label="Projection")
        plot = gr.Plot(label=title)
        return cls(pick, title, layer, method, plot, export_button("Export these points (CSV)"))

    @property
    def controls(self) -> list:
        return [self.layer, self.method]

    @property
    def outputs(self) -> list:
        return [self.layer, self.plot]

    def _points(self, result: Any, layer: Any, method: str):
        emb = self.pick(result)
        layer = min(int(layer or 0), emb.vectors.shape[0] - 1)
        return emb, layer, project_2d(emb.layer(layer), method or "pca")

    def figure(self, result: Any, layer: Any, method: str):
        emb, layer, points = self._points(result, layer, method)
        return embedding_scatter(
            points, emb.labels, emb.groups, title=f"{self.title} · layer {layer} · {method or 'pca'}"
        )

    def updates(self, result: Any) -> list:
        last = self.pick(result).vectors.shape[0] - 1
        return [
            gr.Slider(0, last, value=0, step=1, label=f"Layer (0 = input embeddings, {last} = last)"),
            self.figure(result, 0, "pca"),
        ]

    def table(self, result: Any, layer: Any, method: str):
        emb, _, points = self._points(result, layer, method)
        return points_csv(points, emb.labels, emb.groups), "embedding", ".csv"


def md_escape(text: str) -> str:
    """Escape markdown and HTML metacharacters of model/user text shown in gr.Markdown."""
    import html
    import re

    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~])", r"\\\1", html.escape(text, quote=False))
