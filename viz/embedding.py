"""2-D projections of embeddings (PCA by default) as interactive scatter plots."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from viz.tokens import figure_title, fit_title, plot_label

PROJECTIONS = ("pca", "tsne")


def project_2d(vectors: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(n, d) -> (n, 2). PCA (deterministic) or t-SNE (perplexity fitted to small n).

    Fewer than 3 points or a constant set still give finite coordinates.
    """
    x = np.asarray(vectors, dtype=np.float64)
    n = x.shape[0]
    if n < 3 or np.allclose(x, x[0]):
        out = np.zeros((n, 2))
        out[:, 0] = np.arange(n, dtype=float)
        return out
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(
            n_components=2, perplexity=float(max(1, min(30, n - 1) // 3 or 1)), random_state=seed, init="pca"
        ).fit_transform(x)
    if method != "pca":
        raise ValueError(f"Unknown projection {method!r}; choose one of {PROJECTIONS}.")
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(x)


def embedding_scatter(
    points: np.ndarray,
    labels: Sequence[str],
    groups: Sequence[str] | None = None,
    title: str = "Embeddings",
) -> go.Figure:
    """Scatter of (n, 2) points, one colour per group, each point labelled with its token."""
    groups = list(groups) if groups else ["tokens"] * len(labels)
    fig = go.Figure()
    for group in dict.fromkeys(groups):
        idx = [i for i, g in enumerate(groups) if g == group]
        text = [plot_label(labels[i]) for i in idx]
        fig.add_trace(
            go.Scatter(
                x=points[idx, 0],
                y=points[idx, 1],
                mode="markers+text" if len(labels) <= 80 else "markers",
                text=text,
                textposition="top center",
                name=plot_label(str(group)),
                customdata=idx,
                hovertemplate="%{customdata}: %{text}<extra>" + plot_label(str(group)) + "</extra>",
            )
        )
    fig.update_layout(
        title=figure_title(title),
        xaxis=dict(title="component 1", zeroline=False),
        yaxis=dict(title="component 2", zeroline=False),
        height=460,
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig)
