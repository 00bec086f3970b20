"""Encoder explorer figures: the sentence x sentence cosine similarity heatmap."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from viz.clip import short_labels
from viz.tokens import figure_title, fit_title


def nearest_other(matrix: np.ndarray) -> np.ndarray:
    """(S,) index of the most similar OTHER sentence for each row (itself when S == 1)."""
    z = np.array(matrix, dtype=float)
    if len(z) > 1:
        np.fill_diagonal(z, -np.inf)
    return z.argmax(axis=1)


def sentence_similarity_heatmap(
    matrix: np.ndarray, sentences: Sequence[str], title: str = "Sentence similarity (cosine)"
) -> go.Figure:
    """Heatmap of an (S, S) cosine matrix, cells printed, each row's nearest other sentence starred.

    The colour scale is fixed to [-1, 1] (0 = unrelated directions) so figures compare."""
    z = np.asarray(matrix, dtype=float)
    best = nearest_other(z)
    text = [[f"{v:.3f}{' ★' if j == best[i] and i != j else ''}" for j, v in enumerate(row)] for i, row in enumerate(z)]
    labels = short_labels(sentences)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=labels,
            y=labels,
            text=text,
            texttemplate="%{text}" if z.size <= 225 else None,
            colorscale="RdBu",
            reversescale=True,
            zmin=-1.0,
            zmax=1.0,
            hovertemplate="%{y}<br>%{x}<br>cosine %{z:.4f}<extra></extra>",
            colorbar=dict(title="cosine"),
        )
    )
    fig.update_layout(
        title=figure_title(title),
        xaxis=dict(tickangle=-35, side="bottom"),
        yaxis=dict(autorange="reversed"),
        height=max(340, 160 + 44 * z.shape[0]),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig)
