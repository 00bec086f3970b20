"""CLIP figures: the image x text similarity matrix and patch relevance laid over an image."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.tokens import figure_title, fit_title, plot_label

MAX_LABEL = 40


def shorten(text: str, max_chars: int = MAX_LABEL) -> str:
    """`text` cut to `max_chars` characters with an ellipsis (not escaped)."""
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def short_labels(labels: Sequence[str], max_chars: int = MAX_LABEL) -> list[str]:
    """Unique, escaped axis labels 'i: text' cut to `max_chars` (plotly merges equal categories)."""
    return [f"{i + 1}: {plot_label(shorten(label, max_chars))}" for i, label in enumerate(labels)]


def similarity_heatmap(
    matrix: np.ndarray,
    image_labels: Sequence[str],
    text_labels: Sequence[str],
    value_name: str = "cosine similarity",
    title: str = "Image × text similarity",
    zmin: float | None = None,
    zmax: float | None = None,
) -> go.Figure:
    """Heatmap of an (images, texts) matrix; each cell shows its value, the best text of each
    image (row maximum) is starred."""
    z = np.asarray(matrix, dtype=float)
    best = z.argmax(axis=1) if z.size else []
    text = [[f"{v:.3f}{' ★' if j == best[i] else ''}" for j, v in enumerate(row)] for i, row in enumerate(z)]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=short_labels(text_labels),
            y=short_labels(image_labels),
            text=text,
            texttemplate="%{text}" if z.size <= 400 else None,
            colorscale="Viridis",
            zmin=zmin,
            zmax=zmax,
            hovertemplate="%{y}<br>%{x}<br>" + plot_label(value_name) + " %{z:.4f}<extra></extra>",
            colorbar=dict(title=plot_label(value_name)),
        )
    )
    fig.update_layout(
        title=figure_title(title),
        xaxis=dict(title="candidate text", tickangle=-35, side="bottom"),
        yaxis=dict(title="image", autorange="reversed"),
        height=max(320, 140 + 48 * z.shape[0]),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig)


def _normalised(scores: np.ndarray) -> np.ndarray:
    lo, hi = float(scores.min()), float(scores.max())
    return np.zeros_like(scores) if hi <= lo else (scores - lo) / (hi - lo)


def relevance_overlay(pixels: np.ndarray, scores: np.ndarray, title: str, opacity: float = 0.55) -> go.Figure:
    """The image as the model saw it, and beside it the same image with patch relevance on top.

    pixels: (H, W, 3) uint8; scores: (gh, gw) relevance per patch (min-max scaled for colour).
    """
    pixels = np.asarray(pixels, dtype=np.uint8)
    rel = _normalised(np.asarray(scores, dtype=float))
    gh, gw = rel.shape
    ph, pw = pixels.shape[0] / gh, pixels.shape[1] / gw
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("what the model sees", "relevant patches"), horizontal_spacing=0.04
    )
    for col in (1, 2):
        fig.add_trace(go.Image(z=pixels, hoverinfo="skip"), row=1, col=col)
    fig.add_trace(
        go.Heatmap(
            z=rel,
            x0=pw / 2,
            dx=pw,
            y0=ph / 2,
            dy=ph,
            opacity=opacity,
            colorscale="Inferno",
            zmin=0,
            zmax=1,
            zsmooth="best",
            customdata=np.asarray(scores, dtype=float),
            hovertemplate="x %{x:.0f}, y %{y:.0f} px<br>relevance %{customdata:.3g}<extra></extra>",
            colorbar=dict(title="relevance", tickvals=[0, 1], ticktext=["low", "high"]),
        ),
        row=1,
        col=2,
    )
    for axis in ("xaxis", "xaxis2", "yaxis", "yaxis2"):
        fig.layout[axis].update(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(autorange="reversed", scaleanchor="x", row=1, col=1)
    fig.update_yaxes(autorange="reversed", scaleanchor="x2", row=1, col=2)
    fig.update_layout(title=figure_title(title), height=420, margin=dict(l=10, r=10, t=70, b=10))
    return fit_title(fig, 30)
