"""Figures of the generation tab: the continuation coloured by probability, and the top-k
candidates per step with the emitted token marked."""
from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from viz.bars import topk_heatmap
from viz.tokens import CHIPS_WRAP, axis_labels


def continuation_html(prompt: str, pieces: Sequence[str], probs: Sequence[float], title: str = "") -> str:
    """The prompt in grey, then each generated piece shaded by its probability (escaped HTML).

    pieces: (steps,) decoded text of each generated token; probs: (steps,) values in [0, 1].
    """
    values = np.clip(np.asarray(probs, dtype=float), 0.0, 1.0)
    spans = [
        f'<span class="xray-tok" style="background:rgba(234,88,12,{0.08 + 0.77 * p:.3f})" '
        f'title="{html.escape(f"step {i + 1}: {piece!r} p = {p:.1%}", quote=True)}">{html.escape(piece)}</span>'
        for i, (piece, p) in enumerate(zip(pieces, values))
    ]
    head = f"<div class='xray-caption'>{html.escape(title)}</div>" if title else ""
    return (
        f"<div class='xray-highlight'>{head}<div class='xray-tokens' style='white-space:pre-wrap;{CHIPS_WRAP}'>"
        f"<span style='opacity:.6'>{html.escape(prompt)}</span>{''.join(spans)}</div>"
        "<div class='xray-legend'><span style='background:rgba(234,88,12,.85)'>sure</span> "
        "<span style='background:rgba(234,88,12,.15)'>unsure</span> (hover a token for its probability)</div></div>"
    )


def choices_figure(
    chosen: Sequence[str], candidates: Sequence[Sequence[str]], probs: np.ndarray, ranks: Sequence[int], title: str
) -> go.Figure:
    """`topk_heatmap` with a black outline on the emitted token's cell when it is among the shown ranks.

    chosen: (steps,) emitted tokens; candidates / probs: (steps, k); ranks: (steps,) 1-based rank of
    the emitted token (rows whose token ranks beyond k get no outline).
    """
    fig = topk_heatmap(chosen, candidates, probs, title)
    k = np.asarray(probs).shape[1] if np.asarray(probs).ndim == 2 else 0
    labels = axis_labels(chosen)
    shown = [(f"#{int(r)}", labels[i]) for i, r in enumerate(ranks) if 1 <= int(r) <= k]
    if shown:
        fig.add_trace(
            go.Scatter(
                x=[x for x, _ in shown],
                y=[y for _, y in shown],
                mode="markers",
                marker=dict(symbol="square-open", size=30, color="black", line=dict(width=2)),
                name="emitted token",
                hoverinfo="skip",
                showlegend=False,
            )
        )
    # keep the heatmap's own extent (a scatter trace would pad the category axes)
    fig.update_xaxes(range=[-0.5, k - 0.5], autorange=False)
    fig.update_yaxes(range=[len(labels) - 0.5, -0.5], autorange=False)
    return fig
