"""Translation demo on a tiny Marian model: the translation equals generate + decode, attention
maps are distributions over the right tokens, and source attributions are complete."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, MarianMTModel

from demos import translation
from tests import reference as by_hand
from tests.conftest import tab_app

TEXT = "The house is small, but the garden is beautiful."
INPUTS = [TEXT, "I would like a cup of coffee.", "Tomorrow it will rain in Berlin.", "Yes."]


@pytest.fixture(scope="module")
def reference(tiny_models):
    """The tiny model and tokenizer loaded directly by transformers (not through the app)."""
    folder = str(tiny_models["translation"])
    model = MarianMTModel.from_pretrained(folder, attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("text", INPUTS)
def test_translation_equals_generate_and_decode(reference, text):
    model, tok = reference
    batch = tok(text, return_tensors="pt")
    with torch.inference_mode():
        generated = model.generate(**batch)
    result = translation.analyse(text)
    assert result.translation == tok.decode(generated[0], skip_special_tokens=True)
    assert result.generated == tuple(generated[0].tolist())
    assert result.source_tokens == tok.convert_ids_to_tokens(batch["input_ids"][0])


def test_attention_shapes_and_rows_sum_to_one():
    result = translation.analyse(TEXT)
    s, t = len(result.source_tokens), len(result.target_tokens)
    assert t == len(result.generated) - 1 == len(result.decoder_tokens) == len(result.target_probs)
    cross = result.cross_attention
    layers, heads = cross.n_layers, cross.n_heads
    assert cross.weights.shape == (layers, heads, t, s)
    assert (cross.query_tokens, cross.key_tokens) == (result.target_tokens, result.source_tokens)
    assert result.encoder_attention.weights.shape[1:] == (heads, s, s)
    assert result.decoder_attention.weights.shape[1:] == (heads, t, t)
    for maps in (cross, result.encoder_attention, result.decoder_attention):
        np.testing.assert_allclose(maps.weights.sum(-1), 1.0, atol=1e-4)
    # decoder self-attention is causal: step i sees decoder inputs 0..i only
    assert np.allclose(np.triu(result.decoder_attention.weights, k=1), 0.0, atol=1e-6)
    emb = result.embeddings
    assert emb.vectors.shape[:2] == (layers + 1, s + t)
    assert emb.groups == [translation.SOURCE_GROUP] * s + [translation.TARGET_GROUP] * t


def test_target_probabilities_equal_a_direct_forward_pass(reference):
    model, tok = reference
    result = translation.analyse(TEXT)
    ids = torch.tensor([result.generated])
    with torch.inference_mode():
        logits = model(**tok(TEXT, return_tensors="pt"), decoder_input_ids=ids[:, :-1]).logits[0]
    expected = torch.softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0].numpy()
    np.testing.assert_allclose(result.target_probs, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("step", [0, 2, -1])
def test_integrated_gradients_completeness(step):
    result = translation.analyse(TEXT)
    step = step % len(result.target_tokens)
    attr = translation.attribute(TEXT, step, "integrated_gradients", 64)
    assert attr.tokens == result.source_tokens and attr.scores.shape == (len(result.source_tokens),)
    # f(input) is the probability of the chosen token seen in the teacher-forced pass, so the
    # embeddings fed to Captum are exactly the encoder's own (embed_scale included).
    assert attr.output_value == pytest.approx(float(result.target_probs[step]), rel=1e-4)
    ref = by_hand.translation(result, step)  # source -> <pad>... </s>, teacher forced by hand
    f_x, f_b = ref.value(), ref.value(ref.baseline)
    assert attr.baseline_value == pytest.approx(f_b, rel=1e-4)
    by_hand.complete(float(attr.scores.sum()), f_x - f_b)
    assert result.target_tokens[step] in attr.target


def test_gradient_x_input_and_bad_requests():
    attr = translation.attribute(TEXT, 1, "gradient_x_input")
    assert attr.delta is None and attr.scores.shape == (len(translation.analyse(TEXT).source_tokens),)
    assert np.isfinite(attr.scores).all() and np.abs(attr.scores).sum() > 0
    with pytest.raises(ValueError, match="does not exist"):
        translation.attribute(TEXT, 10_000)
    with pytest.raises(ValueError, match="Unknown attribution method"):
        translation.attribute(TEXT, 0, "magic")


def test_long_text_is_truncated_with_notice():
    result = translation.analyse("the garden is green " * 400)
    assert "only the first" in result.notice
    assert len(result.source_tokens) <= 512 and result.source_tokens[-1] == "</s>"
    assert result.cross_attention.weights.shape[-1] == len(result.source_tokens)


def test_alignment_heatmap_range_selects_rows_only():
    from viz.attention import attention_heatmap

    w = np.random.default_rng(0).dirichlet(np.ones(5), size=(2, 3, 5))  # (2, 3, 5, 5): T == S
    fig = attention_heatmap(w, list("abcde"), list("vwxyz"), 1, "average", 2, 4, self_attention=False)
    z = np.asarray(fig.data[0].z)
    assert z.shape == (2, 5)
    np.testing.assert_allclose(z, w[1, :, 2:4].mean(0))
    assert list(fig.data[0].y) == ["2:c", "3:d"]


@pytest.mark.slow
def test_api_answers_and_rejects_empty_text(serve):
    client = serve(tab_app("ui.translation"))
    answer = client.predict(TEXT, api_name="/translate")[0]
    assert answer == translation.analyse(TEXT).translation
    with pytest.raises(ValueError, match="Please enter some text"):
        client.predict("   ", api_name="/translate")


def test_beam_search_from_the_generation_config_is_used(reference):
    """Pretrained opus-mt models ask for beam search in their generation config; the app follows it."""
    model, tok = reference
    app_model = translation.load().model
    saved = app_model.generation_config.num_beams, model.generation_config.num_beams
    text = "The students read the book before the lesson."
    try:
        app_model.generation_config.num_beams = model.generation_config.num_beams = 3
        with torch.inference_mode():
            expected = model.generate(**tok(text, return_tensors="pt"))
        result = translation.analyse.fn(text)  # bypass the memo: the config changed
    finally:
        app_model.generation_config.num_beams, model.generation_config.num_beams = saved
    assert result.generated == tuple(expected[0].tolist())
    assert result.translation == tok.decode(expected[0], skip_special_tokens=True)
