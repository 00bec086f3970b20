"""The class's guesses in a lesson, for the teacher: one bar per offered answer of every step that
asks for a guess. Pure (counts and texts in, a plotly figure out)."""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from viz.tokens import figure_title, plot_label, shorten

PALETTE = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626")


def guesses_figure(steps: Sequence[tuple[str, Sequence[str], dict[str, int]]], title: str) -> go.Figure:
    """steps: (step label, offered choices, {choice: count}) in lesson order; every offered choice is
    drawn (0 when nobody picked it), one colour per step, most recent step at the bottom."""
    fig = go.Figure()
    for i, (label, choices, counts) in enumerate(steps):
        total = sum(counts.values()) or 1
        names = [f"{plot_label(shorten(label, 28))} · {plot_label(shorten(c, 40))}" for c in choices]
        values = [int(counts.get(c, 0)) for c in choices]
        fig.add_trace(go.Bar(
            x=values, y=names, orientation="h", name=plot_label(shorten(label, 40)),
            marker_color=PALETTE[i % len(PALETTE)], text=[f"{v} ({v / total:.0%})" for v in values],
            textposition="auto", hovertemplate="%{y}<br>%{x} guesses<extra></extra>",
        ))
    rows = sum(len(choices) for _, choices, _ in steps)
    fig.update_layout(
        title=figure_title(title), barmode="group", showlegend=False, bargap=0.25,
        xaxis=dict(title="guesses", rangemode="tozero", tickformat="d"),
        yaxis=dict(autorange="reversed", automargin=True),
        height=max(260, 90 + 34 * rows), margin=dict(l=10, r=10, t=60, b=10),
    )
    return fig
