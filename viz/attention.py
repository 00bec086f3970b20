"""Attention figures: one head or the head average as a heatmap, and a layers x heads summary."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from core.words import word_attention
from viz.tokens import axis_labels, figure_title, fit_title, thinned_ticks, token_range

AVERAGE = "average"


def select_heads(weights: np.ndarray, layer: int, head: int | str) -> np.ndarray:
    """(layers, heads, q, k) -> (q, k) float32 for one head, or the mean over heads when head ==
    'average' (large maps are stored float16; float32 keeps plotly's compact binary arrays)."""
    layer_w = weights[int(layer)]
    if head in (AVERAGE, None, ""):
        return layer_w.mean(axis=0, dtype=np.float32)
    return layer_w[int(head)].astype(np.float32)


def shown_part(shape: tuple[int, int], start: int | None, end: int | None, self_attention: bool) -> tuple[slice, slice]:
    """(rows, cols) of a (q, k) attention map shown for a token range: the range picks the
    query rows; in self-attention the keys follow it (a 512-token map stays readable), in
    cross-attention every key (source token) stays."""
    rows = token_range(shape[0], start, end)
    cols = rows if self_attention and shape[0] == shape[1] else slice(0, shape[1])
    return rows, cols


def attention_heatmap(
    weights: np.ndarray,
    query_tokens: Sequence[str],
    key_tokens: Sequence[str],
    layer: int = 0,
    head: int | str = AVERAGE,
    start: int | None = None,
    end: int | None = None,
    title: str = "Attention",
    colorscale: str = "Blues",
    self_attention: bool = True,
    words: bool = False,
) -> go.Figure:
    """Heatmap of one layer's attention (rows = queries attending, columns = keys attended to).

    weights: (layers, heads, q, k). start/end pick a query-token range (see `shown_part`).
    words: whole words instead of sub-word tokens (attention to a word is the sum over its pieces,
    from a word the mean over its pieces: core.words); the range then counts words.
    """
    matrix = select_heads(weights, layer, head)
    if words:
        matrix, query_tokens, key_tokens = word_attention(matrix, query_tokens, key_tokens)
    rows, cols = shown_part(matrix.shape, start, end, self_attention)
    ylab = axis_labels(query_tokens)[rows]
    xlab = axis_labels(key_tokens)[cols]
    fig = go.Figure(
        go.Heatmap(
            z=matrix[rows, cols],
            x=xlab,
            y=ylab,
            colorscale=colorscale,
            zmin=0.0,
            hovertemplate="%{y} → %{x}<br>weight %{z:.4f}<extra></extra>",
            colorbar=dict(title="weight"),
        )
    )
    head_name = ("mean of heads" if head in (AVERAGE, None, "") else f"head {head}") + (
        " · whole words" if words else ""
    )
    xv, xt = thinned_ticks(xlab)
    yv, yt = thinned_ticks(ylab)
    fig.update_layout(
        title=figure_title(f"{title} · layer {layer} · {head_name}"),
        xaxis=dict(title="attended to (key)", tickvals=xv, ticktext=xt, tickangle=-60),
        yaxis=dict(title="attending (query)", tickvals=yv, ticktext=yt, autorange="reversed"),
        height=max(360, min(900, 160 + 14 * len(ylab))),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig)


def head_entropy(weights: np.ndarray) -> np.ndarray:
    """(layers, heads, q, k) -> (layers, heads) mean entropy in bits of each head's rows.

    Low entropy = a focused head (attends to few tokens); high = a broad, averaging head.
    """
    p = np.clip(weights.astype(np.float64), 1e-12, 1.0)
    return (-(p * np.log2(p)).sum(axis=-1)).mean(axis=-1)


# Low entropy (a focused head) is drawn dark, high entropy (attention spread evenly) bright: the
# caption in ui/texts.HEADS says the same, and tests/viz/test_viz.py checks both agree.
ENTROPY_COLORSCALE = "Viridis"


def head_summary(weights: np.ndarray, title: str = "Attention heads") -> go.Figure:
    """Layers x heads grid of mean attention entropy: which heads focus, which spread out.

    The colour range is the possible one, 0 bits (every row on one key) to log2(keys) bits (every
    row uniform), so heads that differ only in noise look alike instead of spanning the scale."""
    ent = head_entropy(weights)
    top = float(np.log2(max(2, weights.shape[-1])))
    fig = go.Figure(
        go.Heatmap(
            z=ent,
            x=[f"head {h}" for h in range(ent.shape[1])],
            y=[f"layer {i}" for i in range(ent.shape[0])],
            colorscale=ENTROPY_COLORSCALE,
            zmin=0.0,
            zmax=top,
            hovertemplate="%{y}, %{x}<br>entropy %{z:.4f} bits<extra></extra>",
            colorbar=dict(title="bits"),
        )
    )
    fig.update_layout(
        title=figure_title(
            f"{title}: focus of each head (dark = focused, 0 bits; bright = spread evenly, {top:.2f} bits)"
        ),
        yaxis=dict(autorange="reversed"),
        height=max(260, 60 + 28 * ent.shape[0]),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig)
