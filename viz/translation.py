"""Translation figures: the cross-attention (alignment) heatmap, whose token range picks rows only."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from viz.attention import AVERAGE, attention_heatmap
from viz.tokens import axis_labels, thinned_ticks, token_range


def alignment_heatmap(
    weights: np.ndarray,
    target_tokens: Sequence[str],
    source_tokens: Sequence[str],
    layer: int = 0,
    head: int | str = AVERAGE,
    start: int | None = None,
    end: int | None = None,
    title: str = "Cross-attention",
) -> go.Figure:
    """Target tokens (rows) x source tokens (columns) for one layer and head (or the head mean).

    weights: (layers, heads, T, S). start/end select target rows only; all source columns stay,
    even when T == S (where the generic heatmap would treat the map as square self-attention).
    Row labels keep their original indices.
    """
    rows = token_range(weights.shape[2], start, end)
    fig = attention_heatmap(
        weights[:, :, rows, :], list(target_tokens)[rows], source_tokens, layer, head, None, None, title, "Purples"
    )
    ylab = axis_labels(target_tokens)[rows]
    yv, yt = thinned_ticks(ylab)
    fig.update_traces(y=ylab)
    fig.update_layout(
        xaxis_title="source token (encoder)",
        yaxis=dict(title="target token being predicted", tickvals=yv, ticktext=yt, autorange="reversed"),
    )
    return fig
