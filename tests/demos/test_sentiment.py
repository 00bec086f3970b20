"""Sentiment demo on a tiny DistilBERT: answers equal the pipeline's, attention and attributions are sound."""
from __future__ import annotations

import numpy as np
import pytest
from transformers import pipeline

from demos import sentiment
from tests import reference
from tests.conftest import tab_app

TEXT = "This movie was an absolute delight, warm and funny."


def test_probabilities_equal_the_text_classification_pipeline(tiny_models):
    result = sentiment.analyse(TEXT)
    expected = pipeline("text-classification", model=str(tiny_models["sentiment"]), top_k=None)(TEXT)
    expected = {d["label"]: d["score"] for d in (expected[0] if isinstance(expected[0], list) else expected)}
    assert set(result.class_probs()) == set(expected)
    for label, p in expected.items():
        assert result.class_probs()[label] == pytest.approx(p, abs=1e-5)
    assert result.probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_attention_rows_sum_to_one_and_match_tokens():
    result = sentiment.analyse(TEXT)
    w = result.attention.weights
    n = len(result.tokens)
    assert w.shape[2:] == (n, n) and w.shape[0] >= 1 and w.shape[1] >= 1
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-4)
    assert result.tokens[0] == "[CLS]" and result.tokens[-1] == "[SEP]"
    assert result.embeddings.vectors.shape[:2] == (w.shape[0] + 1, n)


@pytest.mark.parametrize("target", [None, "POSITIVE", "NEGATIVE"])
def test_integrated_gradients_completeness(target):
    attr = sentiment.attribute(TEXT, target, "integrated_gradients", 64)
    result = sentiment.analyse(TEXT)
    assert len(attr.scores) == len(result.tokens) == len(attr.tokens)
    # f(x) and f([CLS] PAD... [SEP]) by a plain forward pass here (tests/reference.py), not the app's own
    ref = reference.sentiment(result, None if target is None else result.labels.index(target))
    f_x, f_b = ref.value(), ref.value(ref.baseline)
    assert attr.output_value == pytest.approx(f_x, rel=1e-5) and attr.baseline_value == pytest.approx(f_b, rel=1e-5)
    reference.complete(float(attr.scores.sum()), f_x - f_b)
    assert attr.target == (target or sentiment.analyse(TEXT).predicted)


def test_targets_are_complementary():
    """P(POS) + P(NEG) = 1, so their attributions are opposite token by token."""
    pos = sentiment.attribute(TEXT, "POSITIVE", "integrated_gradients", 64)
    neg = sentiment.attribute(TEXT, "NEGATIVE", "integrated_gradients", 64)
    np.testing.assert_allclose(pos.scores, -neg.scores, atol=1e-6)


def test_unknown_target_and_method_are_refused():
    with pytest.raises(ValueError, match="Unknown class"):
        sentiment.attribute(TEXT, "MAYBE")
    with pytest.raises(ValueError, match="Unknown attribution method"):
        sentiment.attribute(TEXT, None, "magic")


def test_long_text_is_truncated_with_notice():
    long_text = "good " * 2000
    result = sentiment.analyse(long_text)
    assert "only the first" in result.notice
    assert len(result.tokens) <= 512


@pytest.mark.slow
def test_api_answers_and_rejects_empty_text(serve):
    client = serve(tab_app("ui.sentiment"))
    label = client.predict(TEXT, api_name="/sentiment")[0]
    assert label["label"] == sentiment.analyse(TEXT).predicted
    assert {c["label"] for c in label["confidences"]} == {"POSITIVE", "NEGATIVE"}
    with pytest.raises(ValueError, match="Please enter some text"):
        client.predict("   ", api_name="/sentiment")


@pytest.mark.slow
def test_compare_explains_both_texts_toward_text_a_class(serve):
    client = serve(tab_app("ui.sentiment"))
    b = "A dull and badly acted film."
    line, label_a, html_a, label_b, html_b = client.predict(TEXT, b, api_name="/sentiment_compare")
    target = sentiment.analyse(TEXT).predicted
    pa, pb = (sentiment.analyse(t).class_probs()[target] for t in (TEXT, b))
    assert line.startswith(f"P({target}): A {pa:.1%} → B {pb:.1%}")
    assert f"A toward {target}" in html_a and f"B toward {target}" in html_b
    assert html_b.count('class="xray-tok"') == len(sentiment.attribute(b, target).tokens)
