"""Viz layer on synthetic arrays: figures carry the right data and user text is escaped."""
from __future__ import annotations

import numpy as np
import pytest

from viz.attention import AVERAGE, attention_heatmap, head_entropy, head_summary, select_heads
from viz.bars import attribution_bars, probability_lines, topk_heatmap
from viz.embedding import embedding_scatter, project_2d
from viz.tokens import axis_labels, highlight_html, span_html, thinned_ticks, token_range

RNG = np.random.default_rng(0)


def _attention(layers=2, heads=3, n=5):
    w = RNG.random((layers, heads, n, n))
    return w / w.sum(-1, keepdims=True)


def test_select_heads_average_and_single():
    w = _attention()
    np.testing.assert_allclose(select_heads(w, 1, AVERAGE), w[1].mean(0), rtol=1e-6)  # drawn in float32
    np.testing.assert_allclose(select_heads(w, 0, "2"), w[0, 2], rtol=1e-6)


def test_heatmap_uses_chosen_layer_head_and_range():
    w = _attention(n=6)
    tokens = list("abcdef")
    fig = attention_heatmap(w, tokens, tokens, layer=1, head=0, start=2, end=5)
    np.testing.assert_allclose(np.asarray(fig.data[0].z), w[1, 0, 2:5, 2:5])
    assert list(fig.data[0].y) == ["2:c", "3:d", "4:e"]


def test_duplicate_tokens_stay_distinct_on_axes():
    labels = axis_labels(["the", "cat", "the"])
    assert len(set(labels)) == 3


def test_token_range_is_clamped_and_never_empty():
    assert token_range(10, None, None) == slice(0, 10)
    assert token_range(10, 50, 60) == slice(9, 10)
    assert token_range(10, 3, 2) == slice(3, 4)


def test_ticks_thinned_for_long_inputs():
    vals, _ = thinned_ticks([str(i) for i in range(512)], max_ticks=48)
    assert 24 <= len(vals) <= 48


def test_head_entropy_bounds():
    n = 8
    uniform = np.full((1, 1, n, n), 1 / n)
    onehot = np.zeros((1, 1, n, n))
    onehot[..., 0] = 1
    assert head_entropy(uniform)[0, 0] == pytest.approx(np.log2(n))
    assert head_entropy(onehot)[0, 0] == pytest.approx(0, abs=1e-6)
    assert np.asarray(head_summary(_attention()).data[0].z).shape == (2, 3)


@pytest.mark.parametrize("payload", ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", '"><svg onload=x>'])
def test_html_escapes_user_text(payload):
    out = highlight_html([payload, "ok"], [0.5, -0.2], title=payload)
    assert "<script>" not in out and "<img" not in out and "<svg" not in out
    assert "&lt;" in out
    span = span_html(f"before {payload} after", 7, 7 + len(payload))
    assert "<script>" not in span and "<img" not in span and "<mark" in span


def test_plot_labels_escape_markup():
    fig = attribution_bars(["<b>bold</b>", "x"], [1.0, -1.0], "t")
    assert all("<b>" not in x for x in fig.data[0].x)
    assert list(fig.data[0].marker.color) == ["#16a34a", "#dc2626"]


def test_probability_lines_and_topk():
    fig = probability_lines(list("abc"), {"start": [0.2, 0.5, 0.3], "end": [0.1, 0.1, 0.8]}, "t")
    assert [t.name for t in fig.data] == ["start", "end"]
    fig = topk_heatmap(["a", "b"], [["a", "x"], ["b", "y"]], np.array([[0.6, 0.3], [0.9, 0.05]]), "t")
    assert np.asarray(fig.data[0].z).shape == (2, 2)


def test_projection_shapes_and_degenerate_inputs():
    x = RNG.normal(size=(20, 16))
    assert project_2d(x).shape == (20, 2)
    assert project_2d(x, "tsne").shape == (20, 2)
    assert np.isfinite(project_2d(np.ones((4, 3)))).all()
    assert project_2d(x[:2]).shape == (2, 2)
    with pytest.raises(ValueError):
        project_2d(x, "umap-ish")


def test_scatter_groups():
    pts = RNG.normal(size=(4, 2))
    fig = embedding_scatter(pts, ["a", "b", "c", "d"], ["src", "src", "tgt", "tgt"])
    assert [t.name for t in fig.data] == ["src", "tgt"]
    assert sum(len(t.x) for t in fig.data) == 4


def test_exports_are_bounded_and_safe():
    from dataclasses import dataclass

    from viz.export import MAX_JSON_ARRAY, matrix_csv, points_csv, result_json, scores_csv

    @dataclass
    class R:
        small: np.ndarray
        big: np.ndarray
        name: str

    import json

    out = json.loads(result_json(R(np.eye(2), np.zeros(MAX_JSON_ARRAY + 1), "x")))
    assert out["small"] == [[1.0, 0.0], [0.0, 1.0]] and out["name"] == "x"
    assert out["big"]["shape"] == [MAX_JSON_ARRAY + 1] and "omitted" in out["big"]
    csv_text = scores_csv(["=HYPERLINK(1)", "ok"], [0.5, -0.25])
    assert "'=HYPERLINK(1)" in csv_text and "-0.25" in csv_text
    m = np.arange(12, dtype=float).reshape(3, 4)
    lines = matrix_csv(m, list("abc"), list("wxyz"), slice(1, 3), slice(0, 4)).strip().splitlines()
    assert lines[0].split(",")[1:] == ["0:w", "1:x", "2:y", "3:z"] and lines[1].split(",")[0] == "1:b"
    assert lines[2].split(",")[-1] == "11"
    assert points_csv(np.zeros((2, 2)), ["a", "b"], ["g", "h"]).count("\n") == 3


def test_attribution_csv_lists_every_token_or_pixel():
    from core.results import Attribution
    from viz.export import attributions_csv

    tokens = Attribution(["[CLS]", "good", "[SEP]"], np.array([0.0, 0.5, -0.1]), "POSITIVE", "integrated_gradients", 8)
    pixels = Attribution([], np.arange(6, dtype=float).reshape(2, 3), "tabby cat", "integrated_gradients", 8)
    lines = attributions_csv([tokens, pixels]).strip().splitlines()
    assert lines[0] == "target,method,index,unit,score"
    assert len(lines) == 1 + 3 + 6
    assert lines[2] == "POSITIVE,integrated_gradients,1,good,0.5"
    assert lines[-1] == "tabby cat,integrated_gradients,5,row 1 col 2,5"


def _luminance(colour: str) -> float:
    import plotly.colors as pc

    r, g, b = pc.unlabel_rgb(pc.convert_colors_to_same_type(colour, "rgb")[0][0])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_heads_overview_caption_agrees_with_its_colours_and_range():
    import plotly.colors as pc

    from ui import texts

    weights = _attention()
    heat = head_summary(weights).data[0]
    scale = pc.get_colorscale(heat.colorscale) if isinstance(heat.colorscale, str) else heat.colorscale
    low, high = scale[0][1], scale[-1][1]
    assert "dark = looks at a few" in texts.HEADS and "bright = spreads" in texts.HEADS
    assert _luminance(low) < _luminance(high)  # low entropy (focused) is the dark end
    assert heat.zmin == 0.0 and heat.zmax == pytest.approx(np.log2(weights.shape[-1]))
    assert ".4f" in heat.hovertemplate


def test_noise_between_heads_is_not_stretched_over_the_scale():
    rng = np.random.default_rng(0)
    uniform = np.full((2, 3, 8, 8), 1 / 8) + rng.normal(0, 1e-6, (2, 3, 8, 8))
    uniform /= uniform.sum(-1, keepdims=True)
    heat = head_summary(uniform).data[0]
    z = np.asarray(heat.z)
    assert np.ptp(z) < 1e-4 and (z.min() - heat.zmin) / (heat.zmax - heat.zmin) > 0.99  # all near the top


def test_attention_heatmap_starts_at_zero():
    heat = attention_heatmap(_attention(), list("abcd"), list("abcd"), 0, AVERAGE).data[0]
    assert heat.zmin == 0.0 and ".4f" in heat.hovertemplate


def test_guide_illustrations_are_static_svg_with_escaped_labels():
    from viz.illustrations import _blue, bars_svg, heatmap_svg, scatter_svg

    evil = ["<img src=x onerror=alert(1)>", "b"]
    pictures = [
        heatmap_svg(np.array([[0.2, 0.8], [1.0, 0.0]]), evil, evil, "t<script>"),
        bars_svg(evil, [0.5, -0.25], "t"),
        scatter_svg(np.array([[0.0, 1.0], [1.0, 0.0]]), evil, ["g", "h"], "t"),
    ]
    for svg in pictures:
        assert "<svg" in svg and "<script" not in svg and "<img" not in svg and "&lt;img" in svg
    assert _blue(0.0) == "rgb(255,255,255)" and _blue(1.0) == "rgb(8,48,107)"  # 0 white, 1 dark: from 0
    heat = pictures[0]
    assert heat.count("<rect") == 4 and ": 0.800" in heat
    assert "#dc2626" in pictures[1] and "#16a34a" in pictures[1]  # negative red, positive green


def test_maps_stored_float16_are_drawn_from_float32():
    """Large attention maps are kept float16; figures get float32 (plotly's compact binary arrays,
    a float16 array would travel as a JSON list twice the size)."""
    w = _attention().astype(np.float16)
    assert select_heads(w, 0, AVERAGE).dtype == np.float32 and select_heads(w, 1, 0).dtype == np.float32
    fig = attention_heatmap(w, list("abcde"), list("abcde"), 0, AVERAGE)
    assert "bdata" in str(fig.to_plotly_json()["data"][0]["z"]) or np.asarray(fig.data[0].z).dtype == np.float32


def test_patch_grid_colours_start_at_zero_and_end_at_the_largest_weight():
    """A near-uniform grid must look near-uniform: plotly ignores zmin without zmax."""
    from viz.image import patch_grid_figure

    values = np.full((4, 4), 0.058) + np.linspace(0, 0.001, 16).reshape(4, 4)
    fig = patch_grid_figure(np.zeros((32, 32, 3), np.uint8), values, "t")
    heat = next(t for t in fig.data if t.type == "heatmap")
    assert heat.zmin == 0.0 and heat.zmax == pytest.approx(values.max())


def test_value_axis_from_zero_keeps_small_values_visible():
    from viz.interventions import _from_zero

    assert _from_zero([0.0001, 0.002], [0.0003, 0.001]) == {"range": [0, pytest.approx(0.0022)]}
    assert _from_zero([0.5, -0.2]) == {}  # a negative value (a cosine): plotly's own range
