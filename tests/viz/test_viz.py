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


def test_every_csv_export_reads_back_with_numeric_columns_and_guarded_text():
    """Issue #27: negative numbers were guarded like formulas ('-0.0091 as text). Every CSV export
    read back by pandas: number columns are numeric (negatives included), text cells starting with
    = + - @ keep their guard."""
    import io

    import pandas as pd

    from core.results import Attribution
    from viz.export import attributions_csv, matrix_csv, points_csv, scores_csv

    evil = ["=cmd()", "+1", "-x", "@SUM(1)", "ok"]
    values = np.array([-0.0091103, 0.5, -1e-12, -3.0, 2.25])
    m = np.array([[-0.25, 0.5], [1.0, -0.0091103]])
    exports = {
        "scores": (scores_csv(evil, values), ["index", "attribution"], ["token"]),
        "matrix": (matrix_csv(m, ["=a", "-b"], ["+c", "d"], slice(0, 2), slice(0, 2)), ["0:+c", "1:d"], ["query \\ key"]),
        "points": (points_csv(np.c_[values, -values], evil, ["-g"] * 5), ["index", "x", "y"], ["label", "group"]),
        "attribution": (attributions_csv([Attribution(evil, values, "-neg", "integrated_gradients", 8)]), ["index", "score"], ["unit", "target"]),
    }
    for name, (text, numeric, textual) in exports.items():
        frame = pd.read_csv(io.StringIO(text))
        for column in numeric:
            assert pd.api.types.is_numeric_dtype(frame[column]), (name, column, frame[column].tolist())
        for column in textual:
            for cell in frame[column].astype(str):
                assert cell[:1] not in "=+-@", (name, column, cell)
    frame = pd.read_csv(io.StringIO(exports["scores"][0]))
    assert frame["attribution"].tolist() == pytest.approx(values.tolist())
    assert frame["token"].tolist() == ["'=cmd()", "'+1", "'-x", "'@SUM(1)", "ok"]


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


# --------------------------------------------------------------------------- issue #27: what a teacher sees


def test_long_titles_wrap_and_stay_escaped():
    import html

    import plotly.graph_objects as go

    from viz.tokens import TITLE_CHARS, TITLE_LINE_PX, figure_title, fit_title

    title = "Layer lens: the answer each layer would give (final answer: “a photo of a city street at night, <b>raining</b>”)"
    t = figure_title(title)
    lines = t["text"].split("<br>")
    assert len(lines) >= 2
    one = fit_title(go.Figure(layout=dict(title=figure_title("short"), height=400)))
    two = fit_title(go.Figure(layout=dict(title=t, height=400)))
    above = fit_title(go.Figure(layout=dict(title=t, height=400)), 30)
    assert two.layout.margin.t - one.layout.margin.t == TITLE_LINE_PX * (len(lines) - 1)  # room for every line
    assert above.layout.margin.t - two.layout.margin.t == 30  # and for a top axis or a legend row under it

    assert all(len(html.unescape(line)) <= TITLE_CHARS for line in lines)
    assert "<b>" not in t["text"] and "&lt;b&gt;" in t["text"]
    assert " ".join(html.unescape(line) for line in lines) == title


def test_token_chips_may_wrap_anywhere():
    """Issue #27: a run of pieces without spaces (emoji, right-to-left text) ran past the page edge."""
    from core.intervention_types import Branch
    from viz.generation import continuation_html
    from viz.interventions import branch_html
    from viz.tokens import CHIPS_WRAP

    assert "overflow-wrap:anywhere" in CHIPS_WRAP
    pieces = ["👩‍👩‍👧‍👦"] * 30 + ["שלום"] * 10
    for out in (continuation_html("x", pieces, np.full(len(pieces), 0.5)), highlight_html(pieces, np.ones(len(pieces))),
                branch_html(Branch("x", 0, "a", pieces, pieces, 0, None))):
        assert CHIPS_WRAP in out


def test_topk_cells_are_short_and_of_one_size():
    """Issue #27: one long candidate made plotly shrink every cell's text to a microscopic size."""
    from viz.bars import CELL_CHARS

    candidates = [["a" * 40, "b"], ["c", "‹E2 80›‹E2 80›‹E2 80›"]]
    fig = topk_heatmap(["x", "y"], candidates, np.array([[0.5, 0.1], [0.3, 0.2]]), "t")
    trace = fig.data[0]
    assert trace.textfont.size == 10
    assert all(len(cell.split("<br>")[0]) <= CELL_CHARS for row in trace.text for cell in row)
    assert "a" * 40 in trace.customdata[0][0]  # whole in the hover


def _lens_types():
    from core.lens_types import HeadLens, LensGrid

    return HeadLens, LensGrid


def test_lens_titles_are_plain_words_and_the_internals_go_to_the_hover():
    from viz.lens import head_lens_figure, lens_grid_figure

    HeadLens, LensGrid = _lens_types()
    head = "post_layernorm + visual_projection on [CLS], cosine with each text × logit_scale, softmax"
    texts = ["a photo of a city street at night with many cars and lights", "a cat"]
    hl = HeadLens(task="clip", model_id="m", layer_labels=["embeddings", "layer 1 (output)"], head=head,
                  top_labels=[texts, texts], top_probs=np.array([[0.6, 0.4], [0.7, 0.3]], dtype=np.float32),
                  final_label=texts[0], final_probs=np.array([0.6, 0.7], dtype=np.float32), caption="",
                  classes=texts, class_probs=np.array([[0.6, 0.4], [0.7, 0.3]], dtype=np.float32))
    fig = head_lens_figure(hl)
    title = fig.layout.title.text
    assert "post_layernorm" not in title and "logit_scale" not in title and "Layer lens" in title
    assert "post_layernorm" in fig.data[0].hovertemplate
    n = 40
    grid = LensGrid(task="generation", model_id="m", layer_labels=["embeddings", "layer 1 (output)"],
                    positions=[f"tok{i}" for i in range(n)], targets=[f"t{i}" for i in range(n)],
                    top_tokens=[["Ġextraordinarily"] * n] * 2, top_probs=np.full((2, n), 0.5, np.float32),
                    top5_tokens=[[["a"] * 5] * n] * 2, top5_probs=np.full((2, n, 5), 0.1, np.float32),
                    chosen_probs=np.full((2, n), 0.5, np.float32), groups=["prompt"] * n, head="ln_f + lm_head", caption="")
    fig = lens_grid_figure(grid)
    assert "ln_f" not in fig.layout.title.text and "ln_f" in fig.data[0].hovertemplate
    grid.targets[-1], grid.first = "", 7  # a window from position 7; no token after the last one
    xs = list(lens_grid_figure(grid).data[0].x)
    assert xs[0].startswith("7:tok0→") and xs[-1] == f"{7 + n - 1}:tok{n - 1}→(none)"
    assert max(len(t) for row in fig.data[0].text for t in row) <= 3  # 40 columns: a few characters per cell


def test_knockout_summary_speaks_of_the_answer_on_the_screen():
    """Issue #27: after a sampled run the summary said "The top answer stays x" while the answer
    shown was another token."""
    from core.intervention_types import AblationResult
    from viz.interventions import ablation_figure, ablation_summary

    def result(answer, top_before, top_after):
        return AblationResult("generation", answer, "probability", ["layers L0 H0"], [answer, top_before],
                              np.array([0.1, 0.5]), np.array([0.1, 0.4]), 0.1, 0.1, top_before, top_after)

    sampled = ablation_summary(result("Ġdog", "Ġx", "Ġx"))
    assert "␣dog" in sampled and "not the model's first choice" in sampled and "The top answer" not in sampled
    assert "stays the model's first choice" in ablation_summary(result("Ġx", "Ġx", "Ġx"))
    assert "no longer the model's first choice" in ablation_summary(result("Ġx", "Ġx", "Ġy"))
    one = AblationResult("explorer", "sentences 1 and 2", "cosine similarity", ["layers L0 H0"], ["sentences 1 and 2"],
                         np.array([0.67]), np.array([0.68]), 0.67, 0.68, "sentences 1 and 2", "sentences 1 and 2")
    assert ablation_summary(one).startswith("cosine similarity of **sentences 1 and 2**") and "choice" not in ablation_summary(one)
    long = "the answer is a very long span of the context that goes on and on"
    fig = ablation_figure(result(long, "short", "short"))
    assert all(len(label) <= 24 + 3 for label in fig.data[0].x) and fig.data[0].customdata[0] == long
    assert fig.layout.legend.yanchor == "bottom" and fig.layout.legend.y == 1.0  # above the plot, away from the tick labels


def test_faithfulness_table_is_rounded_and_numeric():
    from core.intervention_types import Faithfulness
    from viz.interventions import faithfulness_rows

    f = Faithfulness(task="sentiment", answer="POSITIVE", value_name="probability", units=["Ġa", "b"], names=["x", "y"],
                     scores=np.array([[0.08453720062971115, -1.2413784133968875e-07], [1 / 3, 2 / 3]]),
                     spearman=np.eye(2), ks=np.array([0, 1, 2]), deletion=np.zeros((3, 3)), original=0.9, baseline=0.1,
                     seed=0, replacement="[PAD]")
    rows = faithfulness_rows(f)
    assert rows == [["␣a", 0.0845, 0.333], ["b", -1.24e-07, 0.667]]


def test_ranked_numbers_that_differ_never_print_alike():
    from viz.tokens import distinct_texts

    assert distinct_texts([0.5, 0.25, 0.5]) == ["0.5000", "0.2500", "0.5000"]  # 4 decimals when they suffice
    assert distinct_texts([0.00341, 0.003412, 0.00341]) == ["0.003410", "0.003412", "0.003410"]
    assert distinct_texts([4.1e-05, 4.12e-05]) == ["4.1e-05", "4.12e-05"]
    assert len(set(distinct_texts([0.25, 0.25 + 1e-12]))) == 1  # beyond 8 decimals: shown alike, not forever


def test_faithfulness_ranking_shows_the_digits_that_order_it():
    from core.intervention_types import Faithfulness
    from viz.interventions import faithfulness_summary

    # areas (row means) 0.003413, 0.003407, 0.003420: alike at 4 decimals
    deletion = np.array([[0.010239, 0.0, 0.0], [0.010221, 0.0, 0.0], [0.01026, 0.0, 0.0]])
    f = Faithfulness("sentiment", "POSITIVE", "P", ["a", "b"], ["Integrated gradients", "Gradient x input"],
                     np.zeros((2, 2)), np.eye(2), np.arange(3), deletion, 0.9, 0.0, 0, "[MASK]")
    lines = [line for line in faithfulness_summary(f).splitlines() if line[:2] in ("1.", "2.", "3.")]
    assert [line.split(":")[0] for line in lines][:2] == ["1. Gradient x input", "2. Integrated gradients"]
    assert lines[2].startswith("3. random")
    shown = [line.rsplit(": ", 1)[1] for line in lines]
    assert shown == sorted(shown, key=float) and len(set(shown)) == 3, lines
