"""Figures of activation patching and steering (core.patching_types in, plotly / escaped HTML and
Markdown out). Every user or model string is escaped."""
from __future__ import annotations

import html
import re

import numpy as np
import plotly.graph_objects as go

from core.patching_types import GRID_TITLES, PatchGrid, PatchingResult, SteerResult
from viz.tokens import clean_token, figure_title, plot_label

# Blue: the patch brings the clean answer back (1 = all of it); white: no effect; red: it pushes further
# toward the corrupted answer. Values past ±1 keep the end colours.
_SCALE = "RdBu"
_X_TITLES = {"attention": "head (its output at every position copied)",
             "residual": "position · token (clean→corrupted where they differ)",
             "mlp": "position · token (clean→corrupted where they differ)"}


def _md(text: object) -> str:
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~<>])", r"\\\1", html.escape(str(text), quote=False))


def _quoted(token: str) -> str:
    """A token or class for Markdown: readable, spaces visible ('␣in'), quoted, escaped."""
    text = clean_token(str(token))
    text = ("␣" * (len(text) - len(text.lstrip(" ")))) + text.strip(" ") + "␣" * (len(text) - len(text.rstrip(" ")))
    return f"“{_md(text)}”"


def _cell(value: float) -> str:
    """Cell text: two decimals, never '-0.00'; empty where nothing was patched."""
    if np.isnan(value):
        return ""
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def _tick(label: str, changed: bool) -> str:
    index, _, token = label.partition(" · ")
    text = f"{index} · {plot_label(token)}" if token else plot_label(label)
    return f"<b>{text}</b>" if changed else text


def not_computed_figure(kind: str, name: str) -> go.Figure:
    """A small placeholder where a grid was not asked for."""
    fig = go.Figure()
    fig.add_annotation(text=html.escape(f"Not computed: tick “{name}” under Grids and patch again."), showarrow=False,
                       x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=figure_title(GRID_TITLES[kind], 90), height=150, xaxis_visible=False, yaxis_visible=False,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


CELLS_WITH_NUMBERS = 720  # cells written in the grid (30 layers x 24 positions); hover gives them beyond that


def patch_figure(r: PatchingResult, kind: str) -> go.Figure:
    """One grid as a heatmap: layers (rows, first block on top) x positions or heads; each cell the
    share of the clean answer a single copied activation brings back."""
    g = r.grid(kind)
    if g is None:
        raise KeyError(f"This result has no {kind} grid.")
    fig = go.Figure()
    if g.available:
        fig.add_annotation(text=html.escape(f"Not available: {g.available}"), showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
        fig.update_layout(title=figure_title(g.title, 90), height=200, xaxis_visible=False, yaxis_visible=False)
        return fig
    changed = g.changed if len(g.changed) == len(g.columns) else np.zeros(len(g.columns), dtype=bool)
    ticks = [_tick(c, bool(ch)) for c, ch in zip(g.columns, changed)]
    hover = np.array([[f"{g.layers[i]} · {ticks[j]}<br>restored {_fmt(g.restored[i, j])}"
                       f"<br>metric {_fmt(g.metric[i, j], '+.4f')}" for j in range(len(ticks))]
                      for i in range(len(g.layers))])
    fig.add_trace(go.Heatmap(
        z=g.restored, x=list(range(len(ticks))), y=g.layers, zmin=-1, zmax=1, zmid=0, colorscale=_SCALE,
        text=[[_cell(v) for v in row] for row in g.restored],
        texttemplate="%{text}" if g.restored.size <= CELLS_WITH_NUMBERS else None, customdata=hover,
        textfont=dict(size=11 if g.restored.size <= 300 else 9),
        hovertemplate="%{customdata}<extra></extra>", hoverongaps=False,
        colorbar=dict(title=dict(text="restored"), tickvals=[-1, 0, 1], ticktext=["−1", "0 corrupted", "1 clean"],
                      thickness=14),
    ))
    fig.update_xaxes(title=_X_TITLES[kind], tickmode="array", tickvals=list(range(len(ticks))), ticktext=ticks,
                     tickangle=0 if kind == "attention" or len(ticks) <= 8 else -45)
    fig.update_yaxes(title="layer (block output)" if kind == "residual" else "layer", autorange="reversed")
    fig.update_layout(title=figure_title(f"{g.title} — how much of the answer comes back?", 90),
                      height=max(300, 140 + 34 * len(g.layers)), margin=dict(l=10, r=10, t=80, b=10))
    return fig


def _fmt(value: float, spec: str = ".2f") -> str:
    return "not patched (no clean partner)" if np.isnan(value) else format(float(value), spec)


def _best(g: PatchGrid) -> str:
    if g.available or np.all(np.isnan(g.restored)):
        return ""
    i, j = np.unravel_index(np.nanargmax(g.restored), g.restored.shape)
    where = f"head {g.columns[j]}" if g.kind == "attention" else f"position {_md(clean_token(g.columns[j]))}"
    name = {"residual": "residual stream", "attention": "one attention head", "mlp": "one MLP"}[g.kind]
    if g.restored[i, j] < 0.1:
        return f"- {name}: no single copy brings much back (at most {_cell(g.restored[i, j])}, layer {i}, {where})"
    line = f"- {name}: layer {i}, {where} brings back **{_cell(g.restored[i, j])}**"
    changed = bool(g.changed[j]) if len(g.changed) == len(g.columns) else False
    if g.kind != "attention" and i == 0 and changed:
        line += " (the first layer at a changed token: mostly that token itself, read in; look at the later layers)"
    elif g.kind == "residual" and i == len(g.layers) - 1:
        line += " (the last layer where the answer is read: the whole answer is there; look at the earlier layers)"
    elif g.kind == "residual" and changed:
        line += " (the changed token's own state: it holds the answer until a later layer moves it on)"
    return line


def _handoff(r: PatchingResult) -> str:
    """Generation: the first layer from which one copy of the last position's state (where the next token is
    read) brings back at least half of the answer: where the answer has moved from the changed tokens."""
    g = r.grid("residual")
    if r.task != "generation" or g is None or g.available or not len(g.columns):
        return ""
    last = g.restored[:, -1]
    reached = np.flatnonzero(np.nan_to_num(last, nan=-np.inf) >= 0.5)
    where = f"the last position ({_md(clean_token(g.columns[-1]))})"
    if not len(reached):
        return f"- the answer never gathers at {where}: no single layer's state there brings back half of it"
    k = int(reached[0])
    return (f"- the answer reaches {where} at **layer {k}**: a copy of that one state brings back "
            f"{_cell(last[k])} there, and less than half at every layer before it")


def patch_summary(r: PatchingResult) -> str:
    """Markdown: the two inputs, their answers, the metric on each, how to read the grids, notes."""
    if r.metric_name.startswith("logit(A)"):
        role = "the corrupted run's runner-up" if r.b_runner_up else "the corrupted answer"
        answers = f"A = {_quoted(r.a)} (the clean answer), B = {_quoted(r.b)} ({role})"
    else:
        answers = "A = the clean text, B = the corrupted text"
    lines = [
        f"**Clean:** {_md(r.clean_input)}  \n**Corrupted:** {_md(r.corrupted_input)}",
        f"{answers}. Metric: {_md(r.metric_name)}: clean **{r.clean_metric:+.4g}**, corrupted "
        f"**{r.corrupted_metric:+.4g}**, so a patch can bring back **{r.gap:+.4g}**.",
        "Each cell is one run of the corrupted input with ONE activation copied from the clean run: "
        "(metric − corrupted) / (clean − corrupted). **1** = the clean answer is fully back, **0** = no effect. "
        "A cell near 1 is a place the answer *causally* flows through; bold columns are the positions that differ.",
    ]
    if abs(r.gap) < 0.01 * max(1.0, abs(r.clean_metric)):
        lines.append("⚠️ The corruption barely changes the metric, so every cell divides by a very small number: "
                     "the fractions below are mostly noise. Change the corrupted input more (another word, a larger "
                     "region), or try a trained model.")
    best = [b for b in (*(_best(g) for g in r.grids), _handoff(r)) if b]
    if best:
        lines.append("Where one copy brings most back:\n" + "\n".join(best))
    lines += [f"*{_md(note)}*" for note in r.notes]
    return "\n\n".join(lines)


def steer_html(s: SteerResult) -> str:
    """The continuation without and with steering, side by side (escaped)."""
    def column(title: str, pieces: list[str], colour: str) -> str:
        body = html.escape(s.prompt) + f"<span style='background:{colour}'>{html.escape(''.join(pieces))}</span>"
        return (f"<div style='flex:1;min-width:16em;padding:0.5em;border:1px solid #ddd;border-radius:6px'>"
                f"<b>{html.escape(title)}</b>"
                f"<div style='white-space:pre-wrap;overflow-wrap:anywhere'>{body}</div></div>")

    push = f"a push of {s.strength:+g} × a typical state along “{s.toward}” − “{s.away}” after layer {s.layer}"
    return (
        "<div class='xray-steer' style='display:flex;gap:1em;flex-wrap:wrap'>"
        + column("Without steering", s.plain, "#dbeafe")
        + column(f"With {push}", s.steered, "#fde68a")
        + "</div>"
    )


def steer_summary(s: SteerResult) -> str:
    same = s.plain == s.steered
    verdict = (
        "The two texts are the same: the push did not change any greedy choice."
        if same
        else "The two texts part ways where the push changed the model's greedy choice."
    )
    return (
        f"Prompt: **{_md(s.prompt)}**. Direction: the mean state after layer {s.layer} of **{_md(s.toward)}** "
        f"minus that of **{_md(s.away)}** "
        f"(length {s.norm:.3g}), scaled to {s.strength:+g} × the length of a typical state after that layer "
        f"({s.typical:.3g}) and added at every position while generating greedily. "
        f"{verdict}"
    )


def steer_lens_figure(s: SteerResult) -> go.Figure:
    """Logit lens of the last prompt position: the top next token read from each layer, without and
    with steering (colour: its probability)."""
    z = np.stack([s.lens_plain_probs, s.lens_steered_probs], axis=1)
    text = [[plot_label(a), plot_label(b)] for a, b in zip(s.lens_plain, s.lens_steered)]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=["without steering", "with steering"],
            y=s.lens_layers,
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            colorbar=dict(title="probability"),
            hovertemplate="%{y} · %{x}<br>top next token %{text}<br>probability %{z:.4f}<extra></extra>",
        )
    )
    fig.update_yaxes(title="layer", autorange="reversed")
    fig.update_xaxes(title="run")
    fig.update_layout(
        title=figure_title(
            "Which next token does each layer point to after the prompt? (each layer's "
            "state read by the final norm and the unembedding)",
            90,
        ),
        height=max(280, 120 + 34 * len(s.lens_layers)),
        margin=dict(l=10, r=10, t=70, b=10),
    )
    return fig
