"""Image views: heatmaps upsampled and alpha-blended over a picture, signed attribution overlays,
and a patch grid (one value per ViT patch) drawn over the picture as an interactive plotly figure.

Pure numpy/PIL in, uint8 arrays or plotly figures out.
"""
from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from viz.attention import AVERAGE
from viz.tokens import figure_title, fit_title, plot_label

# Anchor colours of the "inferno" colormap (dark purple -> orange -> pale yellow), 0..1.
_INFERNO = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99],
     [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]],
    dtype=np.float64,
)
TOWARD = np.array([22, 163, 74], dtype=np.float64)  # green, as the text highlights
AWAY = np.array([220, 38, 38], dtype=np.float64)  # red


def upsample(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) map -> (H, W) float32 by bilinear interpolation (size = (H, W))."""
    img = Image.fromarray(np.asarray(values, dtype=np.float32), mode="F")
    return np.asarray(img.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR), dtype=np.float32)


def normalise(values: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1] by min and max (a constant map becomes all zeros)."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = float(v.min()), float(v.max())
    return np.zeros_like(v) if hi <= lo else (v - lo) / (hi - lo)


def colorize(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 colours of the inferno colormap."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * (len(_INFERNO) - 1)
    lo = np.floor(v).astype(int)
    hi = np.minimum(lo + 1, len(_INFERNO) - 1)
    frac = (v - lo)[..., None]
    return (_INFERNO[lo] * (1 - frac) + _INFERNO[hi] * frac).round().astype(np.uint8)


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend a non-negative map over a picture.

    image: (H, W, 3) uint8; heat: (h, w), e.g. one value per patch, upsampled to (H, W) and
    rescaled to [0, 1]; alpha: weight of the colours. Returns (H, W, 3) uint8.
    """
    image = np.asarray(image, dtype=np.float64)
    colours = colorize(normalise(upsample(heat, image.shape[:2]))).astype(np.float64)
    a = float(np.clip(alpha, 0.0, 1.0))
    return ((1 - a) * image + a * colours).round().astype(np.uint8)


def signed_scale(scores: np.ndarray, percentile: float = 99.0) -> float:
    """Magnitude at which colours saturate: a high percentile of |scores|, so a few extreme
    pixels do not wash out the rest (0 when all scores are 0)."""
    mags = np.abs(np.asarray(scores, dtype=np.float64))
    return float(np.percentile(mags, percentile)) if mags.size and mags.max() > 0 else 0.0


def signed_overlay(image: np.ndarray, scores: np.ndarray, alpha: float = 0.85, percentile: float = 99.0) -> np.ndarray:
    """Green where scores push toward the target, red where they push away, over the picture.

    image: (H, W, 3) uint8; scores: (h, w) signed, upsampled to (H, W). The colour's opacity grows
    with |score| up to `alpha` at the `percentile` magnitude; the picture is dimmed a little so
    colours stand out. Returns (H, W, 3) uint8.
    """
    image = np.asarray(image, dtype=np.float64)
    s = upsample(scores, image.shape[:2]).astype(np.float64)
    scale = signed_scale(scores, percentile)
    strength = np.zeros_like(s) if scale == 0 else np.clip(np.abs(s) / scale, 0.0, 1.0)
    a = (float(np.clip(alpha, 0.0, 1.0)) * strength)[..., None]
    colours = np.where((s >= 0)[..., None], TOWARD, AWAY)
    base = 0.35 * 255 + 0.65 * image  # faded picture under the colours
    return ((1 - a) * base + a * colours).round().astype(np.uint8)


def cls_attention_grid(
    weights: np.ndarray, layer: int, head: int | str, grid: tuple[int, int], n_special: int = 1
) -> np.ndarray:
    """Class-token attention over the patches of one layer.

    weights: (layers, heads, n, n) with n = n_special + rows * cols; head: an index or 'average'.
    Returns (rows, cols): row 0 of the layer's (head-averaged) attention, patch keys only.
    """
    layer_w = weights[int(layer)]
    matrix = layer_w.mean(axis=0) if head in (AVERAGE, None, "") else layer_w[int(head)]
    return np.asarray(matrix[0, n_special:], dtype=np.float64).reshape(grid)


def _data_uri(image: np.ndarray, max_side: int = 384) -> tuple[str, int, int]:
    """(H, W, 3) uint8 -> (JPEG data URI, height, width) no larger than max_side (keeps the
    figure JSON small)."""
    img = Image.fromarray(np.asarray(image, dtype=np.uint8))
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), img.height, img.width


def patch_grid_figure(
    image: np.ndarray,
    values: np.ndarray,
    title: str,
    value_name: str = "attention",
    opacity: float = 0.6,
    colorscale: str = "Inferno",
) -> go.Figure:
    """One coloured cell per patch over the picture, hover giving row, column and value.

    image: (H, W, 3) uint8; values: (rows, cols), cell (r, c) covering the matching part of the
    picture (the processor resizes the whole picture onto the patch grid).
    """
    h, w = np.asarray(image).shape[:2]
    rows, cols = values.shape
    xs = (np.arange(cols) + 0.5) * w / cols
    ys = (np.arange(rows) + 0.5) * h / rows
    name = plot_label(value_name)
    cells = [[f"row {r}, col {c}" for c in range(cols)] for r in range(rows)]
    fig = go.Figure()
    uri, th, tw = _data_uri(image)
    # The thumbnail is stretched back to (h, w) picture coordinates, in which the cells are placed.
    fig.add_trace(go.Image(source=uri, x0=0.5 * w / tw, y0=0.5 * h / th, dx=w / tw, dy=h / th, hoverinfo="skip"))
    fig.add_trace(
        go.Heatmap(
            z=values, x=xs, y=ys, text=cells, opacity=opacity, colorscale=colorscale,
            zmin=0.0, zmax=max(float(np.max(values)), 1e-12),  # from 0: plotly ignores zmin without zmax
            colorbar=dict(title=name),
            hovertemplate="%{text}<br>" + name + " %{z:.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=figure_title(title),
        xaxis=dict(visible=False, range=[0, w], constrain="domain"),
        yaxis=dict(visible=False, range=[h, 0], scaleanchor="x"),
        height=max(320, min(560, int(480 * h / max(w, 1)) + 80)),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fit_title(fig)
