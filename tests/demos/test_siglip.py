"""The image-text matching task on a tiny random SigLIP (sigmoid per image-text pair, no class token, an
attention-pooling head, text pooled at its last position): the answer, the relevance maps, the text
attribution, the layer lens, attention step by step and a knockout, each against the model's own numbers
computed here from a fresh copy of the model (loaded with transformers' own classes, not by the app)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import transformers as T
from PIL import Image

from demos import clip
from demos.explain import interventions
from demos.explain import lens as lens_mod
from demos.explain.attention_steps import attention_steps
from demos.provision import tiny, tiny_corpus
from tests.demos.explain.family_models import IMAGE, ROOT, serving

IMAGES = [IMAGE, str(ROOT / "assets" / "images" / "rocket.jpg")]
TEXTS = ["a photo of a cat", "a rocket on a launch pad", "a cup of coffee"]
LIMIT = 64  # SigLIP's text positions: the zero-shot pipeline pads every text to 64 tokens
SCALE, BIAS = 2.5, -1.25  # logit_scale (log) and logit_bias: nonzero, so a missing bias would show


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    """A SiglipModel (2 layers, width 32, 32x32 images in 8x8 patches) with a SentencePiece SiglipTokenizer
    trained here and SigLIP's image processor, saved as a folder the app loads."""
    out = tmp_path_factory.mktemp("tiny-siglip")
    tiny._train_sentencepiece(tiny_corpus.english_sentences(), out / "spiece.model", 200)
    tok = T.SiglipTokenizer(vocab_file=str(out / "spiece.model"), model_max_length=LIMIT)
    tower = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    config = T.SiglipConfig(
        text_config=dict(tower, vocab_size=len(tok), max_position_embeddings=LIMIT, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=None),
        vision_config=dict(tower, image_size=32, patch_size=8))
    torch.manual_seed(0)
    model = T.SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(SCALE)
        model.logit_bias.fill_(BIAS)
    model.config.xray_tiny = True
    model.save_pretrained(out)
    T.SiglipProcessor(image_processor=T.SiglipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tok).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def app(folder):
    """The app serves the tiny SigLIP for the clip task (and loads it by default) within this module."""
    with serving("clip", folder):
        yield


@pytest.fixture(scope="module")
def result(app, folder):
    return clip.analyse(IMAGES, "\n".join(TEXTS), model_id=folder)


@pytest.fixture(scope="module")
def reference(folder):
    """A fresh copy (eager attention) and its processor; the inputs as the zero-shot pipeline builds them."""
    model = T.AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    proc = T.AutoProcessor.from_pretrained(folder)
    assert type(model).__name__ == "SiglipModel" and type(proc).__name__ == "SiglipProcessor"
    images = [Image.open(p).convert("RGB") for p in IMAGES]
    inputs = dict(proc(text=TEXTS, images=images, padding="max_length", max_length=LIMIT, truncation=True, return_tensors="pt"))
    return model, proc, inputs


def test_the_answer_is_a_sigmoid_of_the_models_own_logits_per_pair(result, reference):
    model, _, inputs = reference
    with torch.no_grad():
        out = model(**inputs)
    logits = out.logits_per_image.numpy()
    assert result.contrast == "sigmoid" and result.texts == TEXTS
    np.testing.assert_allclose(result.logits, logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.probs, torch.sigmoid(out.logits_per_image).numpy(), rtol=1e-4, atol=1e-6)
    assert not np.allclose(result.probs.sum(-1), 1.0, atol=1e-3)  # each pair on its own: no sum to 1
    assert result.text_probs(1) == pytest.approx(dict(zip(TEXTS, result.probs[1].tolist())))
    # logits = exp(logit_scale) x cosine + logit_bias, with the bias the result reports
    assert result.logit_scale == pytest.approx(math.exp(SCALE), rel=1e-6) and result.logit_bias == pytest.approx(BIAS)
    np.testing.assert_allclose(result.logits, result.logit_scale * result.cosine + result.logit_bias, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.text_ids, inputs["input_ids"].numpy())  # padded to the limit, as the pipeline
    assert result.vision_hidden.shape[2] == 16 and result.text_hidden.shape[2] == LIMIT  # 4x4 patches, no [CLS]


def test_the_answer_equals_the_zero_shot_pipeline(result, folder):
    classifier = T.pipeline("zero-shot-image-classification", model=folder)
    expected = {d["label"]: d["score"] for d in classifier(Image.open(IMAGES[0]), candidate_labels=TEXTS, hypothesis_template="{}")}
    assert result.text_probs(0) == pytest.approx(expected, abs=1e-5)


def test_the_ui_says_each_description_is_scored_on_its_own(result):
    from ui import clip as tab

    assert "no sum to 1" in tab.answer_label(result) and "SigLIP" in tab.PROBABILITIES
    assert tab.answer_label(clip.ClipResult(**{**result.__dict__, "contrast": "softmax"})) == tab.LABEL["softmax"]


def test_the_written_out_pooling_head_is_the_models(app, folder, reference):
    model, _, inputs = reference
    m = clip.load(folder)
    with torch.no_grad():
        out = model.vision_model(pixel_values=inputs["pixel_values"])
        pooled, weights = clip._attention_pool(m.model.vision_model.head, out.last_hidden_state)
    torch.testing.assert_close(pooled, out.pooler_output, rtol=1e-5, atol=1e-6)
    assert weights.shape == (2, 4, 16)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4))


def test_relevance_maps_start_from_the_pooling_probe(result, reference):
    model, _, inputs = reference
    with torch.no_grad():
        out = model.vision_model(pixel_values=inputs["pixel_values"][1:], output_attentions=True)
        _, probe = clip._attention_pool(model.vision_model.head, out.last_hidden_state)
    attn = torch.stack(out.attentions)[:, 0].double()  # (layers, heads, n, n)
    rollout = torch.eye(16, dtype=torch.float64)
    for layer in attn:
        a = 0.5 * torch.eye(16, dtype=torch.float64) + 0.5 * layer.mean(0)
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    expected = (probe[0].double().mean(0) @ rollout).reshape(4, 4).numpy()
    rel = clip.relevance(result, 1, TEXTS[0], "rollout")
    np.testing.assert_allclose(rel.scores, expected, rtol=1e-4, atol=1e-6)
    assert rel.scores.sum() == pytest.approx(1.0, abs=1e-5)
    maps = [clip.relevance(result, 0, t, "chefer").scores for t in TEXTS[:2]]
    for scores in maps:
        assert scores.shape == (4, 4) and np.isfinite(scores).all() and (scores >= 0).all() and scores.sum() > 0
    assert not np.allclose(maps[0], maps[1])  # gradient-weighted: depends on the text


def test_text_attribution_explains_the_answers_cosine(result, reference):
    _, proc, _ = reference
    attr = clip.attribute_text(IMAGES[1], TEXTS[1], "integrated_gradients", 32, model_id=result.model_id)
    real = proc.tokenizer(TEXTS[1])["input_ids"]  # the real tokens (the padding is cut from the view)
    assert attr.tokens == proc.tokenizer.convert_ids_to_tokens(real) and len(attr.scores) == len(real)
    assert attr.output_value == pytest.approx(float(result.cosine[1, 1]), abs=1e-5)  # f(x) is the matrix cell
    assert abs(attr.scores.sum() - (attr.output_value - attr.baseline_value)) <= abs(attr.delta) + 1e-5


def test_the_lens_ends_at_the_answer(result):
    for item in (0, 1):
        got = lens_mod.lens("clip", result, item=item)
        assert got.classes == TEXTS and "sigmoid" in got.head and "head" in got.head
        np.testing.assert_allclose(got.class_probs[-1], result.probs[item], rtol=1e-4, atol=1e-6)
        assert got.final_label == TEXTS[int(np.argmax(result.logits[item]))]


@pytest.mark.parametrize(("kind", "item", "layer", "head", "query"), [("vision self", 1, 1, 3, 5), ("text self", 2, 0, 1, 2)])
def test_attention_step_by_step_equals_the_models_attention(result, reference, kind, item, layer, head, query):
    model, _, inputs = reference
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    tower = out.vision_model_output if kind == "vision self" else out.text_model_output
    row = tower.attentions[layer][item, head, query].numpy()
    s = attention_steps("clip", result, layer, head, query, kind, item=item)
    n = len(s.tokens)
    assert n == (16 if kind == "vision self" else int(inputs["attention_mask"][item].sum()))
    assert "[CLS]" not in s.tokens
    np.testing.assert_allclose(row[n:], 0.0, atol=0)  # only padding keys are cut (weight exactly 0)
    np.testing.assert_allclose(s.softmax, row[:n], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.model_row, row[:n], rtol=1e-5, atol=1e-6)


def test_a_knockout_changes_the_sigmoid_as_zeroing_the_head_does(result, reference):
    model, _, inputs = reference
    answer = int(np.argmax(result.logits[0]))

    def zero_head(_m, args):
        x = args[0].clone()
        x[..., 8:16] = 0  # head 1 of 4 (d = 8)
        return (x,)

    first = {k: v[:1] if k == "pixel_values" else v for k, v in inputs.items()}
    hook = model.vision_model.encoder.layers[1].self_attn.out_proj.register_forward_pre_hook(zero_head)
    try:
        with torch.no_grad():
            expected = torch.sigmoid(model(**first).logits_per_image[0, answer]).item()
    finally:
        hook.remove()
    got = interventions.ablate("clip", result, [("vision", 1, 1)])
    assert got.score_before == pytest.approx(float(result.probs[0, answer]), rel=1e-4, abs=1e-6)
    assert got.score_after == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert got.score_after != pytest.approx(got.score_before, rel=1e-6, abs=0)


def test_patching_measures_the_answers_own_logit_and_is_exact(result, reference):
    """The patching metric is the logit the answer shows for (image 1, text): the texts padded to the limit as the
    answer reads them, logit_bias included; patching nothing is the corrupted run, the whole residual stream at the
    first layer the clean one."""
    from demos.explain import patch_tasks, patching
    from demos.explain.patching import Edit

    model, _, inputs = reference
    with torch.no_grad():
        out = model(**inputs)
    pair = patch_tasks.PAIRS["clip"](result, "a photo of a dog", TEXTS[0])
    with torch.no_grad():
        clean, bad = pair.run(pair.clean).float(), pair.run(pair.batch(1)).float()
    assert float(clean[0, 0]) == pytest.approx(float(out.logits_per_image[0, 0]), rel=1e-4, abs=1e-5)
    n = len(pair.corrupted_units)
    assert n == len(pair.clean_units) == LIMIT and not torch.equal(clean, bad)
    assert torch.equal(patching.patched_logits(pair, [[]]), bad)
    whole = patching.patched_logits(pair, [[Edit("residual", 0, j, j) for j in range(n)]])
    torch.testing.assert_close(whole, clean, rtol=0, atol=1e-6)
