"""Small static figures as inline SVG (no JavaScript): the guide's illustrations appear with the
page instead of waiting for the plotting library to load. Every label is escaped."""
from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

_FONT = "font-family:system-ui,sans-serif;font-size:12px"


def _svg(width: int, height: int, body: str, title: str) -> str:
    return (
        "<figure class='xray-illustration' style='margin:0'>"
        f"<figcaption class='xray-caption'>{html.escape(title)}</figcaption>"
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' width='100%'"
        f" style='max-width:{width}px;{_FONT}'"
        f" role='img' aria-label='{html.escape(title, quote=True)}'>{body}</svg></figure>"
    )


def _blue(value: float) -> str:
    """0 -> white, 1 -> dark blue (the attention heatmaps' scale)."""
    v = float(np.clip(value, 0.0, 1.0))
    r, g, b = (int(255 - v * (255 - c)) for c in (8, 48, 107))
    return f"rgb({r},{g},{b})"


def heatmap_svg(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str) -> str:
    """(q, k) weights in [0, 1] as a grid of shaded cells, each with its value on hover."""
    cell, left, top = 34, 70, 70
    n, m = matrix.shape
    parts = []
    for j, name in enumerate(cols):
        x = left + j * cell + cell / 2
        parts.append(f"<text x='{x}' y='{top - 6}' transform='rotate(-45 {x} {top - 6})'>{html.escape(name)}</text>")
    for i, name in enumerate(rows):
        y = top + i * cell + cell / 2 + 4
        parts.append(f"<text x='{left - 6}' y='{y}' text-anchor='end'>{html.escape(name)}</text>")
        for j in range(m):
            v = float(matrix[i, j])
            parts.append(
                f"<rect x='{left + j * cell}' y='{top + i * cell}' width='{cell - 1}' height='{cell - 1}'"
                f" fill='{_blue(v)}'>"
                f"<title>{html.escape(name)} → {html.escape(cols[j])}: {v:.3f}</title></rect>"
            )
    return _svg(left + m * cell + 10, top + n * cell + 10, "".join(parts), title)


def bars_svg(labels: Sequence[str], values: Sequence[float], title: str) -> str:
    """Signed horizontal bars: green toward the answer, red away from it."""
    row, left, width = 22, 70, 220
    scale = max(1e-9, float(np.max(np.abs(values))))
    mid = left + width / 2
    parts = [f"<line x1='{mid}' y1='0' x2='{mid}' y2='{row * len(labels)}' stroke='#999'/>"]
    for i, (name, v) in enumerate(zip(labels, values)):
        w = abs(float(v)) / scale * (width / 2)
        x = mid if v >= 0 else mid - w
        colour = "#16a34a" if v >= 0 else "#dc2626"
        parts.append(f"<text x='{left - 6}' y='{i * row + 15}' text-anchor='end'>{html.escape(name)}</text>")
        parts.append(
            f"<rect x='{x}' y='{i * row + 4}' width='{w}' height='{row - 8}' fill='{colour}'>"
            f"<title>{html.escape(name)}: {float(v):+.3f}</title></rect>"
        )
    return _svg(left + width + 10, row * len(labels) + 4, "".join(parts), title)


def scatter_svg(points: np.ndarray, labels: Sequence[str], groups: Sequence[str], title: str) -> str:
    """2-D points with their labels, one colour per group."""
    palette = ["#2563eb", "#f59e0b", "#16a34a", "#dc2626", "#7c3aed"]
    colour = {g: palette[i % len(palette)] for i, g in enumerate(dict.fromkeys(groups))}
    size, pad = 260, 40
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    xy = pad + (points - lo) / span * (size - 2 * pad)
    parts = []
    for (x, y), name, group in zip(xy, labels, groups):
        y = size - y
        parts.append(
            f"<circle cx='{x:.1f}' cy='{y:.1f}' r='6' fill='{colour[group]}'>"
            f"<title>{html.escape(name)} ({html.escape(group)})</title></circle>"
        )
        parts.append(f"<text x='{x + 9:.1f}' y='{y + 4:.1f}'>{html.escape(name)}</text>")
    return _svg(size + 60, size, "".join(parts), title)
