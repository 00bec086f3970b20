"""Figures of interventions, contrastive explanations and the faithfulness check
(core.intervention_types in, plotly / escaped HTML out)."""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.intervention_types import AblationResult, Branch, Faithfulness, HeadImportance
from core.tokens import outcome_text
from viz.tokens import (
    CHIPS_WRAP,
    clean_token,
    distinct_texts,
    figure_title,
    fit_title,
    number_text,
    plot_label,
    shorten,
)


def _from_zero(*values) -> dict:
    """A value axis from 0 to a little above the largest value when none is negative (small
    probabilities stay visible and bars keep their true proportions), else plotly's own range."""
    flat = np.concatenate([np.ravel(np.asarray(v, dtype=float)) for v in values]) if values else np.zeros(0)
    if flat.size == 0 or np.nanmin(flat) < 0:
        return {}
    return {"range": [0, max(1.1 * float(np.nanmax(flat)), 1e-12)]}


def ablation_figure(r: AblationResult) -> go.Figure:
    """The answer's outcomes before and after the knockout, side by side."""
    # short tick labels (a QA span can be a whole sentence), whole in the hover; the legend above the
    # plot, where rotated tick labels can never run into it
    labels = [f"{i + 1}. {plot_label(shorten(outcome_text(x), LABEL_CHARS))}" for i, x in enumerate(r.labels)]
    full = [plot_label(x) for x in r.labels]
    fig = go.Figure([
        go.Bar(x=labels, y=r.before, name="before (nothing knocked out)", marker_color="#60a5fa", customdata=full,
               hovertemplate="%{customdata}<br>before %{y:.4f}<extra></extra>"),
        go.Bar(x=labels, y=r.after, name="after the knockout", marker_color="#f59e0b", customdata=full,
               hovertemplate="%{customdata}<br>after %{y:.4f}<extra></extra>"),
    ])
    fig.update_layout(
        barmode="group", title=figure_title(f"Knocked out: {', '.join(r.knocked_out) or 'nothing'}"),
        yaxis=dict(title=r.value_name, **_from_zero(r.before, r.after)), xaxis=dict(tickangle=-40, automargin=True),
        legend=dict(orientation="h", x=0, xanchor="left", y=1.0, yanchor="bottom"), height=440,
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig, 30)


LABEL_CHARS = 24  # an outcome (token, class, span) as a tick label; the hover has it whole


def ablation_summary(r: AblationResult) -> str:
    """Markdown: the explained answer's score before and after, and whether the top answer changed."""
    change = r.score_after - r.score_before
    answer, first, then = (_md(clean_token(outcome_text(x))) for x in (r.answer, r.top_before, r.top_after))
    if len(r.labels) == 1:  # one outcome only (e.g. the explorer's similarity): no "first choice" to speak of
        top = ""
    elif r.top_before == r.answer:  # the answer shown was the model's own first choice
        top = (f"**{answer}** stays the model's first choice." if r.top_after == r.answer
               else f"**{answer}** is no longer the model's first choice: **{then}** is.")
    else:  # sampled, or chosen by beam search: say so rather than speak of another token as "the answer"
        top = (f"**{answer}** was not the model's first choice here (it was sampled, or picked by beam search); "
               f"the most likely was **{first}**" + (", and still is." if r.top_after == r.top_before
                                                     else f", and after the knockout it is **{then}**."))
    return (f"{_md(r.value_name)} of **{answer}**: {number_text(r.score_before)} → {number_text(r.score_after)} "
            f"({number_text(change, '+')}). {top}").rstrip()



def head_map_figure(h: HeadImportance) -> go.Figure:
    """One layers x heads map per stack: how much knocking out that head alone changes the
    answer's score (red: the score drops, blue: it rises; white: no effect)."""
    n = len(h.maps)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[t.name for t in h.towers], horizontal_spacing=0.08)
    bound = max((float(np.abs(m).max()) for m in h.maps), default=0.0) or 1e-9
    for i, (tower, m) in enumerate(zip(h.towers, h.maps), start=1):
        fig.add_trace(go.Heatmap(
            z=m, x=[f"H{j}" for j in range(m.shape[1])], y=[f"L{k}" for k in range(m.shape[0])],
            zmid=0.0, zmin=-bound, zmax=bound, colorscale="RdBu", showscale=i == n,
            colorbar=dict(title="Δ score" if h.method == "knockout" else "Δ score (est.)"),
            hovertemplate=f"{tower.name} %{{y}} %{{x}}<br>change %{{z:+.5f}}<extra></extra>",
        ), row=1, col=i)
        fig.update_yaxes(autorange="reversed", row=1, col=i)
    how = "Knock out one head at a time"
    if h.method == "gradient":
        how = "Each head knocked out, estimated from one gradient"
    fig.update_layout(
        title=figure_title(
            f"{how}: change of {h.value_name} of "
            f"{shorten(clean_token(outcome_text(h.answer)), 40)} (was {number_text(h.score)})"
        ),
        height=max(320, 80 + 30 * max(m.shape[0] for m in h.maps)),
        margin=dict(l=10, r=10, t=70, b=10),
    )
    return fit_title(fig, 30)


def branch_html(b: Branch) -> str:
    """The original and the forced continuation, token by token; the steps where they differ are
    marked (escaped: model text never becomes markup)."""

    def row(pieces: list[str], name: str) -> str:
        cells = []
        for i, piece in enumerate(pieces):
            differs = i >= b.diverge_at and (b.rejoin_at is None or i < b.rejoin_at)
            style = "background:#fde68a" if differs else ""
            cells.append(f"<span class='xray-tok' style='{style}'>{html.escape(piece)}</span>")
        return f"<div><b>{html.escape(name)}</b> {html.escape(b.prompt)}{''.join(cells)}</div>"

    rejoin = "and never come back together" if b.rejoin_at is None else f"and come back together at step {b.rejoin_at}"
    return (
        f"<div class='xray-tokens xray-branch' style='{CHIPS_WRAP}'>"
        + row(b.original, "Original:")
        + row(b.branch, f"Forced “{b.forced}” at step {b.step}:")
        + f"<div class='xray-help'>They part at step {b.diverge_at} {html.escape(rejoin)}.</div></div>"
    )


def deletion_figure(f: Faithfulness) -> go.Figure:
    """The answer's score as the top-k units of each explanation are removed (the faster it
    falls, the more faithful the explanation), against removing random units."""
    fig = go.Figure()
    for name, curve in zip(f.curve_names, f.deletion):
        dash = "dot" if name.startswith("random") else None
        fig.add_trace(
            go.Scatter(
                x=f.ks,
                y=curve,
                mode="lines+markers",
                name=plot_label(name),
                line=dict(dash=dash),
                hovertemplate=f"{plot_label(name)}<br>%{{x}} removed: %{{y:.4f}}<extra></extra>",
            )
        )
    fig.update_layout(
        title=figure_title(
            f"Deletion check: remove the top units ({f.replacement}) and watch {f.value_name} of "
            f"{shorten(clean_token(outcome_text(f.answer)), 40)}"
        ),
        xaxis=dict(title="units removed"),
        yaxis=dict(title=f.value_name),
        legend=dict(orientation="h", x=0, xanchor="left", y=1.0, yanchor="bottom"),
        height=440,
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig, 52)  # a legend of five entries: two rows on a narrow screen


def agreement_figure(f: Faithfulness) -> go.Figure:
    """Spearman rank agreement between the explanations (1: same order, 0: unrelated, −1: reversed)."""
    names = [plot_label(n) for n in f.names]
    fig = go.Figure(
        go.Heatmap(
            z=f.spearman,
            x=names,
            y=names,
            zmin=-1,
            zmax=1,
            zmid=0,
            colorscale="RdBu",
            text=np.round(f.spearman, 2),
            texttemplate="%{text}",
            hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=figure_title("Do the explanations agree? (Spearman rank correlation)"),
        yaxis=dict(autorange="reversed"),
        height=380,
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig)


def faithfulness_summary(f: Faithfulness) -> str:
    """Markdown: which explanation's deletion curve falls fastest (smallest area), and what was skipped."""
    area = f.area()
    order = np.argsort(area)
    lines = [
        f"Area under each deletion curve (smaller = the answer falls faster = more faithful); "
        f"{f.value_name} of **{_md(clean_token(outcome_text(f.answer)))}** "
        f"with nothing removed: {number_text(f.original)}, with everything removed: {number_text(f.baseline)}."
    ]
    shown = distinct_texts(area)
    lines += [f"{rank}. {_md(f.curve_names[i])}: {shown[i]}" for rank, i in enumerate(order, start=1)]
    lines += [f"- *{_md(name)}* not shown: {_md(why)}" for name, why in f.skipped.items()]
    return "\n".join(lines)


def faithfulness_rows(f: Faithfulness) -> list[list]:
    """Table: each unit with every explanation's score (the same units side by side), to 3
    significant digits (a table of 17-digit floats is unreadable; the JSON export has them whole)."""
    return [[clean_token(u), *[_sig(v) for v in f.scores[:, i]]] for i, u in enumerate(f.units)]


def _sig(value: float, digits: int = 3) -> float:
    """`value` rounded to `digits` significant digits (still a number: the table sorts it as one)."""
    return float(f"{float(value):.{digits}g}")


def _md(text: str) -> str:
    import re

    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~<>])", r"\\\1", html.escape(str(text), quote=False))
