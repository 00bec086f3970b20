"""Figures of the layer lens and of attention step by step (core.lens_types in, plotly out)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from core.lens_types import LENS_COLUMNS, AttentionSteps, HeadLens, LensGrid
from viz.tokens import (
    axis_labels,
    clean_token,
    figure_title,
    fit_title,
    plot_label,
    shorten,
    thinned_ticks,
    token_range,
)

MAX_COLUMNS = LENS_COLUMNS  # positions shown at once in the lens grid (a token range picks which)


def _next(token: str) -> str:
    """A column's next token on its axis label; "(none)" after the last token."""
    return plot_label(token) if token else "(none)"


def lens_grid_figure(grid: LensGrid, start: int | None = None, end: int | None = None) -> go.Figure:
    """Layers x positions: each cell's top-1 token written in it, shaded by its probability
    (0 to 1); hover gives the top 5."""
    n = len(grid.positions)
    cols = token_range(n, start, end)
    if cols.stop - cols.start > MAX_COLUMNS:
        cols = slice(cols.start, cols.start + MAX_COLUMNS)
    idx = list(range(n))[cols]
    # a cell holds a few characters at a size that shrinks with the columns (one long token must not
    # run over its neighbours or the layer names); hover gives the top 5 in full
    chars, size = (8, 12) if len(idx) <= 16 else (4, 10) if len(idx) <= 32 else (3, 9)
    text = [[plot_label(shorten(clean_token(grid.top_tokens[r][c]), chars)) for c in idx] for r in range(grid.n_layers)]
    hover = [
        [
            "<br>".join(f"{plot_label(t)}: {p:.4f}" for t, p in zip(grid.top5_tokens[r][c], grid.top5_probs[r, c]))
            for c in idx
        ]
        for r in range(grid.n_layers)
    ]
    xlab = [f"{grid.first + c}:{plot_label(grid.positions[c])}→{_next(grid.targets[c])}" for c in idx]
    fig = go.Figure(
        go.Heatmap(
            z=grid.top_probs[:, cols],
            x=xlab,
            y=grid.layer_labels,
            text=text,
            texttemplate="%{text}",
            textfont=dict(size=size),
            customdata=hover,
            zmin=0.0,
            zmax=1.0,
            colorscale="Blues",
            colorbar=dict(title="P(top-1)"),
            hovertemplate=(
                f"%{{y}} · %{{x}}<br>%{{customdata}}<br>(read through {plot_label(grid.head)})<extra></extra>"
            ),
        )
    )
    xv, xt = thinned_ticks(xlab)
    fig.update_layout(
        title=figure_title("Layer lens: the token each layer would predict next"),
        xaxis=dict(title="position: input → token chosen next", tickvals=xv, ticktext=xt, tickangle=-60),
        yaxis=dict(title="layer", autorange="reversed"),
        height=max(420, 200 + 56 * grid.n_layers),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig)


def commit_figure(grid: LensGrid, start: int | None = None, end: int | None = None) -> go.Figure:
    """Layers x positions: the probability each layer gives the token finally chosen there (0 to 1;
    blank where there is no next token). Where a column turns dark, the model has committed."""
    n = len(grid.positions)
    cols = token_range(n, start, end)
    if cols.stop - cols.start > MAX_COLUMNS:
        cols = slice(cols.start, cols.start + MAX_COLUMNS)
    idx = list(range(n))[cols]
    xlab = [f"{grid.first + c}:{_next(grid.targets[c])}" for c in idx]
    fig = go.Figure(
        go.Heatmap(
            z=grid.chosen_probs[:, cols],
            x=xlab,
            y=grid.layer_labels,
            zmin=0.0,
            zmax=1.0,
            colorscale="Greens",
            colorbar=dict(title="P(chosen)"),
            hovertemplate="%{y} · %{x}<br>P(chosen token) = %{z:.4f}<extra></extra>",
        )
    )
    xv, xt = thinned_ticks(xlab)
    fig.update_layout(
        title=figure_title("Where the model commits: the probability of the token finally chosen, layer by layer"),
        xaxis=dict(title="position: token chosen next", tickvals=xv, ticktext=xt, tickangle=-60),
        yaxis=dict(title="layer", autorange="reversed"),
        height=max(320, 160 + 40 * grid.n_layers),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig)


def head_lens_figure(hl: HeadLens) -> go.Figure:
    """The task's head read at every layer: one line per class (few classes), else the final
    answer's probability with each layer's top answer written beside its point."""
    fig = go.Figure()
    via = f"<br>(read through {plot_label(hl.head)})"  # the internals: in the hover and the caption, not the title
    if hl.class_probs is not None and hl.classes:
        for j, name in enumerate(hl.classes):
            fig.add_trace(
                go.Scatter(
                    x=hl.layer_labels,
                    y=hl.class_probs[:, j],
                    mode="lines+markers",
                    name=plot_label(shorten(clean_token(name), LEGEND_CHARS)),
                    hovertemplate=f"{plot_label(name)}<br>%{{x}}: P = %{{y:.4f}}{via}<extra></extra>",
                )
            )
    else:
        top = [plot_label(row[0]) if row else "" for row in hl.top_labels]
        fig.add_trace(
            go.Scatter(
                x=hl.layer_labels,
                y=hl.final_probs,
                mode="lines+markers+text",
                text=[plot_label(shorten(row[0], 24)) if row else "" for row in hl.top_labels],
                textposition=_text_positions(len(hl.layer_labels)),
                name=f"P({plot_label(shorten(clean_token(hl.final_label), LEGEND_CHARS))})",
                customdata=top,
                hovertemplate=f"%{{x}}: P(final answer) = %{{y:.4f}}<br>top here: %{{customdata}}{via}<extra></extra>",
            )
        )
    fig.update_layout(
        title=figure_title(
            f"Layer lens: the answer each layer would give (final answer: “{shorten(clean_token(hl.final_label), 40)}”)"
        ),
        xaxis=dict(title="layer"),
        yaxis=dict(title="probability", range=[0, 1.05]),
        height=400,
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig)


LEGEND_CHARS = 32  # a class name or CLIP description in the legend (whole in the hover)


def _text_positions(n: int) -> list[str]:
    """Where each point's label goes: the first to its right and the last to its left (centred
    there they would run off the plot's edges), the others centred above their point."""
    return [
        "top center" if n == 1 else "top right" if i == 0 else "top left" if i == n - 1 else "top center"
        for i in range(n)
    ]


def lens_rows(lens: LensGrid | HeadLens) -> list[list]:
    """Table rows: layer, top answer(s) with probabilities."""
    if isinstance(lens, LensGrid):
        return [
            [lens.layer_labels[r], " ".join(clean_token(t) for t in lens.top_tokens[r][-8:])]
            for r in range(lens.n_layers)
        ]
    return [
        [
            lens.layer_labels[r],
            ", ".join(f"{clean_token(t)} {p:.3f}" for t, p in zip(lens.top_labels[r], lens.top_probs[r])),
        ]
        for r in range(lens.n_layers)
    ]


def steps_figure(steps: AttentionSteps, top: int = 40) -> go.Figure:
    """Per key: the score the softmax is taken over (bars, left axis): q·k × scale, plus the position
    bias where the model adds one (T5, BEiT, DeBERTa; a tick then marks q·k × scale alone), and the
    softmax weight the head gives it, computed here and as the model returned it (right axis)."""
    order = np.argsort(-steps.softmax, kind="stable")[:top]
    order = np.sort(order)
    labels = axis_labels([steps.tokens[i] for i in order])
    masked = np.zeros(len(order), bool) if steps.mask is None else ~steps.mask[order]
    fig = go.Figure()
    bias = steps.bias is not None
    fig.add_trace(
        go.Bar(
            x=labels,
            y=np.where(masked, 0.0, steps.logits[order]),
            name=("q·k × scale + position bias" if bias else "q·k × scale") + " (masked keys: −∞)",
            marker_color=["#bbb" if m else "#60a5fa" for m in masked],
            yaxis="y",
            hovertemplate="%{x}<br>score before softmax %{y:.4f}<extra></extra>",
        )
    )
    if bias:  # the bar is what the softmax reads; the tick shows q·k × scale alone, the gap is the bias
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=np.where(masked, np.nan, steps.scaled[order]),
                name="q·k × scale alone (the gap to the bar: position bias)",
                mode="markers",
                marker=dict(symbol="line-ew-open", size=22, line=dict(width=3, color="#b45309")),
                yaxis="y",
                customdata=np.where(masked, np.nan, steps.bias[order]),
                hovertemplate="%{x}<br>q·k × scale %{y:.4f}<br>position bias %{customdata:.4f}<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=steps.softmax[order],
            name="softmax (computed here)",
            mode="markers",
            marker=dict(size=11, symbol="circle-open", color="#b91c1c"),
            yaxis="y2",
            hovertemplate="%{x}<br>softmax %{y:.6f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=steps.model_row[order],
            name="attention row the model returned",
            mode="markers",
            marker=dict(size=5, color="#111"),
            yaxis="y2",
            hovertemplate="%{x}<br>model %{y:.6f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=figure_title(f"{steps.block}, head {steps.head}: query {steps.query}:{clean_token(steps.query_token)}"),
        yaxis=dict(title="score before softmax" if bias else "scaled score"),
        yaxis2=dict(title="attention weight", overlaying="y", side="right", range=[0, 1.05]),
        xaxis=dict(tickangle=-60),
        legend=dict(orientation="h", y=-0.35),
        height=460,
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig)


def qkv_figure(steps: AttentionSteps, top: int = 24) -> go.Figure:
    """The head's q (top row), then K and V for the most attended keys: the vectors themselves."""
    order = np.sort(np.argsort(-steps.softmax, kind="stable")[:top])
    names = [f"{i}:{plot_label(steps.tokens[i])}" for i in order]
    z = np.vstack(
        [steps.q[None, :], steps.K[order], np.full((1, steps.d_k), np.nan), steps.V[order], steps.output[None, :]]
    )
    y = ["q (query)"] + [f"k {n}" for n in names] + [" "] + [f"v {n}" for n in names] + ["output = Σ softmax·v"]
    bound = float(np.nanmax(np.abs(z))) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            y=y,
            x=[str(d) for d in range(steps.d_k)],
            colorscale="RdBu",
            zmid=0.0,
            zmin=-bound,
            zmax=bound,
            hovertemplate="%{y}, dim %{x}: %{z:.4f}<extra></extra>",
            colorbar=dict(title="value"),
        )
    )
    fig.update_layout(
        title=figure_title(f"q, K and V of this head (d_k = {steps.d_k}; the {len(order)} most attended keys)"),
        xaxis=dict(title="dimension"),
        yaxis=dict(autorange="reversed"),
        height=max(360, 60 + 16 * len(y)),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig)


def steps_summary(steps: AttentionSteps) -> str:
    """Markdown: the formula, the scale, and how exactly the recomputation matches the model."""
    row_err = float(np.max(np.abs(steps.softmax - steps.model_row)))
    out_err = float(np.max(np.abs(steps.output - steps.model_output)))
    return (
        f"`{steps.formula}` · d_k = {steps.d_k} · scale = {steps.scale:.6g} "
        f"(1/sqrt(d_k) = {1 / np.sqrt(steps.d_k):.6g})\n\n"
        f"Check against the model: largest difference between our softmax and the model's attention row "
        f"**{row_err:.1e}**; between Σ softmax·v and the head's real output **{out_err:.1e}** "
        f"(float32 rounding; anything below 1e-4 means the same numbers)."
    )
