"""Image classification on a tiny ViT: answers equal the pipeline's, attention and rollout are
sound, pixel attributions are complete, overlays have the picture's shape, bad files are refused."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from transformers import pipeline

from demos import image
from tests import reference
from tests.conftest import tab_app
from viz.image import cls_attention_grid, heat_overlay, patch_grid_figure, signed_overlay, upsample

CAT = image.ASSETS / "chelsea_cat.jpg"


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    with Image.open(CAT) as img:
        return img.convert("RGB")


def test_top5_equals_the_image_classification_pipeline(tiny_models, cat):
    result = image.analyse(cat)
    expected = pipeline("image-classification", model=str(tiny_models["image"]))(cat)
    assert len(expected) == 5
    got = dict(result.ranked()[:image.TOP_K])
    assert list(got) == [d["label"] for d in expected]
    for d in expected:
        assert got[d["label"]] == pytest.approx(d["score"], abs=1e-5)
    assert result.probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert image.analyse(str(CAT)).digest == result.digest  # a path decodes to the same picture


def test_rollout_attention_and_embeddings_shapes(cat):
    result = image.analyse(cat)
    rows, cols = result.grid
    n = rows * cols + 1  # patches + class token
    assert (rows, cols) == (result.input_size[0] // 16, result.input_size[1] // 16)
    assert result.rollout.shape == (n, n)
    np.testing.assert_allclose(result.rollout.sum(-1), 1.0, atol=1e-5)
    w = result.attention.weights
    assert w.shape[2:] == (n, n)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-4)
    tokens = result.attention.query_tokens
    assert tokens[:2] == ["[CLS]", "r0c0"] and tokens[-1] == f"r{rows - 1}c{cols - 1}"
    assert result.embeddings.vectors.shape[:2] == (w.shape[0] + 1, n)
    assert result.cls_rollout().shape == (rows, cols)


def test_cls_attention_grid_is_the_class_token_row(cat):
    result = image.analyse(cat)
    w = result.attention.weights
    for layer in range(w.shape[0]):
        grid = cls_attention_grid(w, layer, 1, result.grid)
        assert grid.shape == result.grid
        np.testing.assert_allclose(grid.ravel(), w[layer, 1, 0, 1:], rtol=1e-6)
        # with the class token's attention to itself, each head's row adds up to 1
        assert grid.sum() + w[layer, 1, 0, 0] == pytest.approx(1.0, abs=1e-5)
    avg = cls_attention_grid(w, 0, "average", result.grid)
    np.testing.assert_allclose(avg.ravel(), w[0, :, 0, 1:].mean(0), rtol=1e-6)


@pytest.mark.parametrize("baseline", image.BASELINES)
def test_integrated_gradients_completeness(cat, baseline):
    result = image.analyse(cat)
    attr = image.attribute(cat, None, baseline, 32)
    assert attr.scores.shape == result.input_size  # (H, W) after summing the channels
    assert attr.target == result.predicted
    # the baseline as the tab describes it, built here, and both end points by a plain forward pass
    ref = reference.image(result, result.labels.index(result.predicted), baseline=baseline)
    f_x, f_b = ref.value(), ref.value(ref.baseline)
    assert attr.output_value == pytest.approx(f_x, rel=1e-4) and attr.baseline_value == pytest.approx(f_b, rel=1e-4)
    reference.complete(float(attr.scores.sum()), f_x - f_b)
    assert abs(attr.delta) < 1e-3


def test_smoothgrad_and_progress(cat):
    seen = []
    attr = image.attribute(cat, "teapot", "blurred", 8, 3, 4, progress=lambda frac, msg: seen.append(frac))
    assert attr.scores.shape == image.analyse(cat).input_size and attr.target == "teapot"
    assert "SmoothGrad" in attr.method and attr.output_value is None and attr.delta is not None
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    with pytest.raises(ValueError, match="Unknown class"):
        image.attribute(cat, "unicorn")
    with pytest.raises(ValueError, match="Unknown baseline"):
        image.attribute(cat, None, "grey")


def test_overlays_have_the_picture_shape():
    picture = np.full((30, 50, 3), 200, dtype=np.uint8)
    heat = np.zeros((4, 4))
    heat[0, 0] = 1.0
    out = heat_overlay(picture, heat, 0.5)
    assert out.shape == picture.shape and out.dtype == np.uint8
    assert out[0, 0].tolist() != out[-1, -1].tolist()  # hot corner differs from a cold one
    scores = np.zeros((8, 8))
    scores[:, :4], scores[:, 4:] = 1.0, -1.0
    signed = signed_overlay(picture, scores)
    assert signed.shape == picture.shape
    assert signed[15, 2, 1] > signed[15, 2, 0] and signed[15, 47, 0] > signed[15, 47, 1]  # green left, red right
    assert upsample(np.ones((2, 3)), (7, 9)).shape == (7, 9)


def test_patch_grid_figure_escapes_and_places_cells():
    fig = patch_grid_figure(np.zeros((40, 80, 3), np.uint8), np.arange(8.0).reshape(2, 4), "<b>x</b>")
    heat = fig.data[1]
    assert list(heat.x) == [10, 30, 50, 70] and list(heat.y) == [10, 30]
    assert "<b>" not in fig.layout.title.text


def test_unreadable_and_missing_images_are_refused(tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="Could not read the image"):
        image.analyse(str(bad))
    with pytest.raises(ValueError, match="Please upload an image"):
        image.analyse(None)


@pytest.mark.slow
def test_api_classifies_a_png_and_rejects_a_bad_file(serve, tmp_path, cat):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    png = tmp_path / "cat.png"
    cat.save(png, format="PNG")
    client = serve(tab_app("ui.image"))
    out = client.predict(handle_file(str(png)), api_name="/classify_image")
    expected = dict(image.analyse(str(png)).ranked()[:image.TOP_K])
    assert out[0]["label"] == next(iter(expected))
    assert {c["label"]: pytest.approx(c["confidence"], abs=1e-5) for c in out[0]["confidences"]} == expected
    summary = client.predict("predicted class", "black", 8, 0, 8, 0.55,
                             api_name="/image_attribution")[0]
    assert "convergence delta" in summary and "baseline: black" in summary
    for name, data in [("broken.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 10), ("cut.png", png.read_bytes()[:2000])]:
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(AppError, match="Could not read the image"):
            client.predict(handle_file(str(bad)), api_name="/classify_image")
