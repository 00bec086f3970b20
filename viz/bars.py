"""Bar and line charts: attributions per token, probabilities per class or per position."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from viz.tokens import axis_labels, figure_title, fit_title, plot_label, shorten, thinned_ticks


def attribution_bars(tokens: Sequence[str], scores: Sequence[float], title: str) -> go.Figure:
    """One bar per token (green toward the target, red away); scores: (n,)."""
    values = np.asarray(scores, dtype=float)
    labels = axis_labels(tokens)
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=values,
            marker_color=["#16a34a" if v >= 0 else "#dc2626" for v in values],
            hovertemplate="%{x}<br>%{y:+.4f}<extra></extra>",
        )
    )
    tv, tt = thinned_ticks(labels)
    fig.update_layout(
        title=figure_title(title),
        xaxis=dict(tickvals=tv, ticktext=tt, tickangle=-60),
        yaxis=dict(title="attribution"),
        height=360,
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig)


def probability_lines(tokens: Sequence[str], series: dict[str, Sequence[float]], title: str) -> go.Figure:
    """Several probability curves over the same tokens (e.g. QA start and end); each (n,)."""
    labels = axis_labels(tokens)
    fig = go.Figure()
    for name, values in series.items():
        fig.add_trace(go.Scatter(x=labels, y=np.asarray(values, float), mode="lines+markers", name=name))
    tv, tt = thinned_ticks(labels)
    fig.update_layout(
        title=figure_title(title),
        xaxis=dict(tickvals=tv, ticktext=tt, tickangle=-60),
        yaxis=dict(title="probability", range=[0, 1]),
        height=360,
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig)


CELL_CHARS = 6  # characters of a candidate written in a top-k cell (ten cells share a half-width figure)


def topk_heatmap(
    step_labels: Sequence[str], candidates: Sequence[Sequence[str]], probs: np.ndarray, title: str
) -> go.Figure:
    """Top-k alternatives at each generated step.

    step_labels: (steps,) the token chosen at each step; candidates: (steps, k); probs: (steps, k).
    Rows are steps, columns rank 1..k; each cell shows the candidate and its probability.
    """
    probs = np.asarray(probs, float)
    k = probs.shape[1] if probs.ndim == 2 else 0
    # cells show at most CELL_CHARS of a candidate at a fixed size: plotly otherwise shrinks every
    # cell's text to fit the longest one (microscopic text for one long token); hover has it whole
    text = [
        [f"{plot_label(shorten(c, CELL_CHARS))}<br>{p:.1%}" for c, p in zip(row, prow)]
        for row, prow in zip(candidates, probs)
    ]
    full = [[f"{plot_label(c)}: {p:.2%}" for c, p in zip(row, prow)] for row, prow in zip(candidates, probs)]
    fig = go.Figure(
        go.Heatmap(
            z=probs,
            x=[f"#{r + 1}" for r in range(k)],
            y=axis_labels(step_labels),
            text=text,
            texttemplate="%{text}",
            textfont=dict(size=10),
            customdata=full,
            colorscale="Oranges",
            zmin=0,
            zmax=1,
            hovertemplate="step %{y}, rank %{x}<br>%{customdata}<extra></extra>",
            colorbar=dict(title="p"),
        )
    )
    fig.update_layout(
        title=figure_title(title),
        xaxis=dict(title="rank of candidate", side="top"),
        yaxis=dict(title="generated token (step)", autorange="reversed"),
        height=max(300, 80 + 34 * len(step_labels)),
        margin=dict(l=10, r=10, t=70, b=10),
    )
    return fit_title(fig, 56)


def attribution_matrix(
    targets: Sequence[str], first: int, tokens: Sequence[str], scores: Sequence[Sequence[float]], title: str
) -> go.Figure:
    """Every generated token's attribution to the tokens before it: one row per generated token (top to bottom,
    labelled with its position, `first` + k), one column per token of the text; row k holds scores[k] (its first
    len(scores[k]) columns; the rest, tokens the generated token could not see, stay empty). Green toward the
    token, red away, one scale for all rows."""
    n = len(tokens)
    z = np.full((len(targets), n), np.nan)
    for k, row in enumerate(scores):
        z[k, : len(row)] = np.asarray(row, dtype=float)
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    cols, rows = axis_labels(tokens), [f"{first + k}:{plot_label(t)}" for k, t in enumerate(targets)]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=cols,
            y=rows,
            colorscale=[[0.0, "#dc2626"], [0.5, "#f8fafc"], [1.0, "#16a34a"]],
            zmin=-bound or -1.0,
            zmax=bound or 1.0,
            hovertemplate="generated %{y}<br>earlier token %{x}<br>%{z:+.4f}<extra></extra>",
            colorbar=dict(title="attribution"),
        )
    )
    tv, tt = thinned_ticks(cols)
    fig.update_layout(
        title=figure_title(title),
        xaxis=dict(title="earlier token", tickvals=tv, ticktext=tt, tickangle=-60),
        yaxis=dict(title="generated token", autorange="reversed"),
        height=max(320, 120 + 28 * len(targets)),
        margin=dict(l=10, r=10, t=60, b=10),
    )
    return fit_title(fig)
