"""One padded forward pass for many users gives each user exactly the single-run result."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from demos import explorer, sentiment
from demos.inputs.text import pad_right

TEXTS = [
    "Short.",
    "This movie was an absolute delight: warm, funny and beautifully acted, with a score to remember.",
    "The plot made no sense.",
    "Not bad at all, though the ending dragged on a little too long and the middle sagged.",
]
ATOL = 1e-5


def _same_sentiment(got: sentiment.SentimentResult, want: sentiment.SentimentResult) -> None:
    assert got.text == want.text and got.model_id == want.model_id
    assert got.labels == want.labels and got.notice == want.notice
    assert got.tokens == want.tokens
    np.testing.assert_allclose(got.probs, want.probs, atol=ATOL)
    assert got.attention.weights.shape == want.attention.weights.shape  # padding removed per item
    np.testing.assert_allclose(got.attention.weights, want.attention.weights, atol=ATOL)
    np.testing.assert_allclose(got.embeddings.vectors, want.embeddings.vectors, atol=1e-4)
    assert got.embeddings.labels == want.embeddings.labels


def test_pad_right_shapes():
    ids, mask, lengths = pad_right([torch.tensor([[5, 6, 7]]), torch.tensor([[8]])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert lengths == [3, 1]


def test_sentiment_batch_equals_single_runs():
    many = sentiment.analyse_many(TEXTS)
    lengths = {len(r.tokens) for r in many}
    assert len(lengths) == len(TEXTS)  # inputs of different lengths: padding really happened
    for text, got in zip(TEXTS, many):
        _same_sentiment(got, sentiment.analyse(text))


def test_sentiment_batch_matches_transformers_pipeline_probs(tiny_models):
    """Independent check: the batch's probabilities are the classifier's own softmax."""
    import transformers

    clf = transformers.pipeline("text-classification", model=str(tiny_models["sentiment"]), top_k=None)
    for text, got in zip(TEXTS, sentiment.analyse_many(TEXTS)):
        out = clf(text)
        rows = out[0] if out and isinstance(out[0], list) else out
        scores = {d["label"]: d["score"] for d in rows}
        assert {k: pytest.approx(v, abs=1e-5) for k, v in scores.items()} == got.class_probs()


def test_sentiment_truncated_item_in_batch():
    long = "word " * 2000
    got = sentiment.analyse_many([long, "Fine."])
    _same_sentiment(got[0], sentiment.analyse(long))
    _same_sentiment(got[1], sentiment.analyse("Fine."))
    assert got[0].notice


def test_explorer_batch_equals_single_runs():
    texts = ["A man plays a guitar.\nSomeone strums on stage for a long long while.", "The cat sits.", "One.\nTwo three.\nFour five six seven."]
    for text, got in zip(texts, explorer.explore_many(texts)):
        want = explorer.analyse(text)
        assert got.sentences == want.sentences and got.notice == want.notice
        assert [a.query_tokens for a in got.attention] == [a.query_tokens for a in want.attention]
        for a, b in zip(got.attention, want.attention):
            np.testing.assert_allclose(a.weights, b.weights, atol=ATOL)
        np.testing.assert_allclose(got.embeddings.vectors, want.embeddings.vectors, atol=1e-4)
        assert got.embeddings.groups == want.embeddings.groups
        np.testing.assert_allclose(got.sentence_vectors, want.sentence_vectors, atol=1e-5)
        np.testing.assert_allclose(got.similarity, want.similarity, atol=1e-5)


def test_explorer_batch_rejects_bad_item_like_single_run():
    with pytest.raises(ValueError):
        explorer.explore_many(["fine", "   "])
