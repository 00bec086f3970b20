"""Speech figures: log-mel spectrogram, token-over-time alignment, word timeline and token
probabilities. Pure functions: numpy arrays and strings in, plotly figures out; time in seconds.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from viz.attention import AVERAGE, select_heads
from viz.tokens import axis_labels, figure_title, fit_title, plot_label, thinned_ticks

MAX_COLUMNS = 1500  # wider time axes are averaged down so the figure stays light in the browser
Word = tuple[str, float, float, float]  # (word, start s, end s, probability)


def _margins(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title=figure_title(title), height=height, margin=dict(l=10, r=10, t=50, b=10))
    return fit_title(fig)


def downsample_time(matrix: np.ndarray, step: float, max_columns: int = MAX_COLUMNS) -> tuple[np.ndarray, float]:
    """(rows, frames) -> (rows, <= max_columns) by averaging neighbouring frames; returns the new step."""
    factor = int(np.ceil(matrix.shape[1] / max_columns))
    if factor <= 1:
        return matrix, step
    pad = (-matrix.shape[1]) % factor
    padded = np.pad(matrix, ((0, 0), (0, pad)), mode="edge")
    return padded.reshape(matrix.shape[0], -1, factor).mean(axis=2), step * factor


def _word_marks(fig: go.Figure, words: Sequence[Word], y: float) -> None:
    """Shaded span and label for each word above a time axis."""
    for i, (word, start, end, _) in enumerate(words):
        fig.add_vrect(x0=start, x1=end, fillcolor="#f59e0b" if i % 2 else "#38bdf8", opacity=0.12, line_width=0)
        fig.add_annotation(
            x=(start + end) / 2, y=y, text=plot_label(word), showarrow=False, yanchor="bottom", font=dict(size=11)
        )


def spectrogram_figure(
    mel: np.ndarray, step: float, words: Sequence[Word] = (), title: str = "Log-mel spectrogram"
) -> go.Figure:
    """Heatmap of the model's input features. mel: (mel_bins, frames); step: seconds per frame.

    Words (optional) are drawn as shaded time spans with their text above the top mel bin."""
    z, dx = downsample_time(np.asarray(mel, float), step)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x0=dx / 2,
            dx=dx,
            colorscale="Magma",
            hovertemplate="%{x:.2f} s · mel bin %{y}<br>log-mel %{z:.2f}<extra></extra>",
            colorbar=dict(title="log-mel"),
        )
    )
    _word_marks(fig, words, z.shape[0] - 0.5)
    fig.update_xaxes(title="time (s)", range=[0, z.shape[1] * dx])
    fig.update_yaxes(title="mel frequency bin (low → high)")
    return _margins(fig, title, 380)


def alignment_figure(
    weights: np.ndarray,
    tokens: Sequence[str],
    step: float,
    layer: int = 0,
    head: int | str = AVERAGE,
    path: np.ndarray | None = None,
    title: str = "Cross-attention: output tokens over audio time",
) -> go.Figure:
    """Heatmap (tokens x time) of one layer/head (or the head mean) of cross-attention.

    weights: (layers, heads, tokens, frames); step: seconds per encoder frame; path: optional
    (steps, 2) DTW path of (token, frame) drawn on top."""
    matrix = select_heads(np.asarray(weights), layer, head)
    labels = axis_labels(tokens)
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x0=step / 2,
            dx=step,
            y=labels,
            colorscale="Blues",
            zmin=0.0,
            hovertemplate="%{y} @ %{x:.2f} s<br>weight %{z:.3f}<extra></extra>",
            colorbar=dict(title="weight"),
        )
    )
    if path is not None and len(path):
        fig.add_trace(
            go.Scatter(
                x=(path[:, 1] + 0.5) * step,
                y=[labels[i] for i in path[:, 0]],
                mode="lines",
                line=dict(color="#dc2626", width=2),
                name="DTW path (word timing)",
                hovertemplate="%{y} @ %{x:.2f} s<extra>DTW</extra>",
            )
        )
    head_name = "mean of heads" if head in (AVERAGE, None, "") else f"head {head}"
    tv, tt = thinned_ticks(labels)
    fig.update_layout(
        legend=dict(orientation="h", y=-0.12), xaxis=dict(title="audio time (s)", range=[0, matrix.shape[1] * step])
    )
    fig.update_yaxes(title="output token", tickvals=tv, ticktext=tt, autorange="reversed", type="category")
    return _margins(fig, f"{title} · layer {layer} · {head_name}", max(360, min(900, 160 + 16 * len(labels))))


def word_timeline(words: Sequence[Word], duration: float, title: str = "When each word was spoken (DTW)") -> go.Figure:
    """One bar per word from its start to its end on a time axis; colour = mean token probability."""
    names = axis_labels([w[0] if len(w[0]) <= 24 else w[0][:23] + "…" for w in words])
    starts = np.array([w[1] for w in words], float)
    ends = np.array([w[2] for w in words], float)
    probs = np.array([w[3] for w in words], float)
    fig = go.Figure(
        go.Bar(
            y=names,
            x=ends - starts,
            base=starts,
            orientation="h",
            marker=dict(color=probs, colorscale="Viridis", cmin=0, cmax=1, colorbar=dict(title="p")),
            customdata=np.stack([starts, ends, probs], axis=-1) if len(words) else None,
            hovertemplate="%{y}<br>%{customdata[0]:.2f}–%{customdata[1]:.2f} s · p %{customdata[2]:.2f}<extra></extra>",
        )
    )
    fig.update_xaxes(title="time (s)", range=[0, max(duration, float(ends.max()) if len(words) else 0.0)])
    fig.update_yaxes(autorange="reversed", type="category")
    return _margins(fig, title, max(260, min(900, 120 + 22 * len(words))))


def token_probability_bars(
    tokens: Sequence[str], probs: Sequence[float], title: str = "Probability of each output token"
) -> go.Figure:
    """One bar per output token: how sure the model was of the token it wrote. probs: (n,)."""
    labels = axis_labels(tokens)
    values = np.asarray(probs, float)
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=values,
            marker=dict(color=values, colorscale="RdYlGn", cmin=0, cmax=1),
            hovertemplate="%{x}<br>p = %{y:.3f}<extra></extra>",
        )
    )
    tv, tt = thinned_ticks(labels)
    fig.update_layout(
        xaxis=dict(tickvals=tv, ticktext=tt, tickangle=-60, type="category"),
        yaxis=dict(title="probability", range=[0, 1]),
    )
    return _margins(fig, title, 360)
