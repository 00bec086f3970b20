"""CLIP demo on a tiny CLIPModel: probabilities equal the zero-shot pipeline's, the similarity
matrix is the cosine of the model's own embeddings, relevance and attributions are sound."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, CLIPModel, pipeline

from demos import clip
from tests.conftest import tab_app
from viz.clip import relevance_overlay, similarity_heatmap

LABELS = ["a photo of a cat", "a rocket on a launch pad", "a cup of coffee"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    """Two real PNG files: a colour gradient (64x48) and a checkerboard (40x72, grey)."""
    folder = tmp_path_factory.mktemp("clip-images")
    y, x = np.mgrid[0:48, 0:64]
    gradient = np.stack([x * 4, y * 5, 255 - x * 2], axis=-1).astype(np.uint8)
    checker = (((np.indices((40, 72)).sum(0) // 8) % 2) * 255).astype(np.uint8)
    paths = [folder / "gradient.png", folder / "checker.png"]
    Image.fromarray(gradient).save(paths[0])
    Image.fromarray(checker, mode="L").save(paths[1])
    return [str(p) for p in paths]


def test_probabilities_equal_the_zero_shot_pipeline(tiny_models, images):
    result = clip.analyse(images[0], "\n".join(LABELS))
    classifier = pipeline("zero-shot-image-classification", model=str(tiny_models["clip"]))
    expected = classifier(Image.open(images[0]), candidate_labels=LABELS, hypothesis_template="{}")
    expected = {d["label"]: d["score"] for d in expected}
    assert list(result.text_probs()) == LABELS
    for label, p in expected.items():
        assert result.text_probs()[label] == pytest.approx(p, abs=1e-5)
    assert sum(result.text_probs().values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "texts, expected",
    [
        ("a cat\na dog", ["a cat", "a dog"]),
        ("a cat, a dog,a bird", ["a cat", "a dog", "a bird"]),
        ("  a cat  \n\n , \r\n a dog ,\n", ["a cat", "a dog"]),
        ("a cat\na dog\na cat, a dog , a bird", ["a cat", "a dog", "a bird"]),
        (["x", " y ", "", "x"], ["x", "y"]),
        ("\n".join(f"thing {i}" for i in range(clip.MAX_CANDIDATES)), [f"thing {i}" for i in range(clip.MAX_CANDIDATES)]),
    ],
)
def test_parse_candidates(texts, expected):
    assert clip.parse_candidates(texts) == expected


@pytest.mark.parametrize("texts", [None, "", "   ", " ,\n, ,\n"])
def test_zero_candidates_give_a_clear_error(texts):
    with pytest.raises(ValueError, match="at least one candidate"):
        clip.parse_candidates(texts)


def test_too_many_candidates_give_a_clear_error():
    texts = ", ".join(f"thing {i}" for i in range(clip.MAX_CANDIDATES + 1))
    with pytest.raises(ValueError, match=f"limit is {clip.MAX_CANDIDATES}"):
        clip.parse_candidates(texts)


def test_similarity_matrix_is_cosine_of_the_model_embeddings(tiny_models, images):
    result = clip.analyse(images, LABELS)
    assert result.cosine.shape == result.logits.shape == (2, 3)
    folder = str(tiny_models["clip"])
    model, processor = CLIPModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    with torch.inference_mode():
        pixels = processor(images=[Image.open(p) for p in images], return_tensors="pt")["pixel_values"]
        img = model.get_image_features(pixel_values=pixels).pooler_output
        txt = model.get_text_features(**processor.tokenizer(LABELS, padding=True, return_tensors="pt")).pooler_output
    img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    np.testing.assert_allclose(result.cosine, (img @ txt.T).numpy(), atol=1e-5)
    np.testing.assert_allclose(result.logits, result.logit_scale * result.cosine, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.probs.sum(-1), 1.0, atol=1e-5)
    emb = result.embeddings()
    assert emb.vectors.shape == (1, 5, img.shape[1])
    assert emb.groups == ["images"] * 2 + ["texts"] * 3


def test_text_attribution_has_one_score_per_token_and_is_complete(images):
    result = clip.analyse(images, LABELS)
    attr = clip.attribute_text(images[1], LABELS[1], "integrated_gradients", 64)
    n_tokens = len(clip.load().processor.tokenizer(LABELS[1])["input_ids"])
    assert len(attr.scores) == len(attr.tokens) == n_tokens
    assert attr.output_value == pytest.approx(float(result.cosine[1, 1]), abs=1e-5)  # f(x) is the matrix cell
    gap = attr.output_value - attr.baseline_value
    assert abs(attr.scores.sum() - gap) <= abs(attr.delta) + 1e-5
    assert attr.target == LABELS[1]


def test_relevance_map_covers_the_patch_grid(images):
    result = clip.analyse(images, LABELS)
    vision = clip.load().model.config.vision_config
    grid = (vision.image_size // vision.patch_size,) * 2
    maps = {text: clip.relevance(result, 0, text, "chefer") for text in LABELS[:2]}
    for rel in maps.values():
        assert rel.scores.shape == grid and np.isfinite(rel.scores).all() and (rel.scores >= 0).all()
        assert rel.pixels.shape == (vision.image_size, vision.image_size, 3)
    assert not np.allclose(maps[LABELS[0]].scores, maps[LABELS[1]].scores)  # gradient-weighted: depends on the text
    rollout = clip.relevance(result, 1, LABELS[0], "rollout")
    assert rollout.scores.shape == grid
    np.testing.assert_array_equal(rollout.scores, clip.relevance(result, 1, LABELS[1], "rollout").scores)
    with pytest.raises(ValueError, match="Unknown relevance method"):
        clip.relevance(result, 0, LABELS[0], "magic")


def test_figures_escape_user_text():
    fig = similarity_heatmap(np.array([[0.1, 0.3]]), ["image 1: <b>x</b>.png"], ["<img src=x onerror=alert(1)>", "ok"])
    assert "<img" not in "".join(fig.data[0].x) and "&lt;img" in fig.data[0].x[0]
    assert fig.data[0].text[0][1].endswith("★")
    overlay = relevance_overlay(np.zeros((32, 32, 3), np.uint8), np.arange(16.0).reshape(4, 4), "<script>")
    assert overlay.data[-1].z.shape == (4, 4) and "<script>" not in overlay.layout.title.text


@pytest.mark.slow
def test_api_matches_a_png_and_rejects_zero_candidates(serve, images):
    from gradio_client import handle_file
    client = serve(tab_app("ui.clip"))
    label = client.predict(handle_file(images[0]), ", ".join(LABELS), api_name="/clip_match")[0]
    expected = clip.analyse(images[0], LABELS).text_probs()
    assert label["label"] == max(expected, key=expected.get)
    got = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert got == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="at least one candidate"):
        client.predict(handle_file(images[0]), " ,\n ", api_name="/clip_match")
