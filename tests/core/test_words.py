"""Whole words from sub-word tokens (core.words): every tokenizer convention, totals kept."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.words import convention, sum_by_word, word_attention, word_groups, word_labels
from viz.attention import attention_heatmap

CASES = {
    # byte-level BPE as stored (GPT-2) and as the app shows it (core.tokens.byte_level_label)
    "gpt2 raw": (["The", "Ġfilm", "Ġwas", "Ġun", "believ", "able", "."], ["The", "film", "was", "unbelievable."]),
    "gpt2 shown": (["The", "␣film", "␣un", "believ", "able", "↵", "Next"], ["The", "film", "unbelievable", "↵", "Next"]),
    "whisper": (["<|startoftranscript|>", "␣The", "␣quick", "␣bro", "wn", "<|endoftext|>"],
                ["<|startoftranscript|>", "The", "quick", "brown", "<|endoftext|>"]),
    "wordpiece": (["[CLS]", "the", "play", "##ing", "children", "##s", "!", "[SEP]"],
                  ["[CLS]", "the", "playing", "childrens", "!", "[SEP]"]),
    "sentencepiece": (["▁Das", "▁Haus", "chen", "▁ist", "▁", "klein", ".", "</s>"], ["Das", "Hauschen", "ist", "klein.", "</s>"]),
    "clip": (["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "a</w>", "ca", "t</w>", "<|endoftext|>"],
             ["<|startoftext|>", "a", "photo", "of", "a", "cat", "<|endoftext|>"]),
    "clip shown": (["a␣", "ro", "cket␣", "launch␣"], ["a", "rocket", "launch"]),
    "no markers": (["0.00s", "0.20s", "0.40s"], ["0.00s", "0.20s", "0.40s"]),
}


@pytest.mark.parametrize("name", CASES)
def test_words_of_every_convention(name):
    tokens, words = CASES[name]
    groups = word_groups(tokens)
    assert word_labels(tokens, groups) == words
    assert [i for g in groups for i in g] == list(range(len(tokens)))  # consecutive, each token once


def test_conventions_are_detected():
    assert convention(CASES["wordpiece"][0]) == "wordpiece"
    assert convention(CASES["sentencepiece"][0]) == "sentencepiece"
    assert convention(CASES["gpt2 raw"][0]) == "start"
    assert convention(CASES["clip"][0]) == "end"
    assert convention(CASES["no markers"][0]) == "none"


@pytest.mark.parametrize("name", CASES)
def test_sum_of_word_scores_is_sum_of_token_scores(name):
    tokens, words = CASES[name]
    scores = np.linspace(-1, 2, len(tokens))
    labels, summed = sum_by_word(tokens, scores)
    assert labels == words
    assert summed.sum() == pytest.approx(scores.sum())


def test_a_word_score_is_the_sum_of_its_pieces():
    labels, summed = sum_by_word(["[CLS]", "play", "##ing", "[SEP]"], [0.5, 0.25, -0.75, 1.0])
    assert labels == ["[CLS]", "playing", "[SEP]"]
    assert summed.tolist() == [0.5, -0.5, 1.0]


PIECES = st.lists(st.sampled_from(["Ġa", "b", "##c", "▁d", "e</w>", "[SEP]", "↵", "x", "␣y"]), min_size=1, max_size=30)


@given(PIECES, st.data())
def test_any_tokens_keep_their_total(tokens, data):
    scores = np.array(data.draw(st.lists(st.floats(-5, 5), min_size=len(tokens), max_size=len(tokens))))
    labels, summed = sum_by_word(tokens, scores)
    assert len(labels) == len(summed) <= len(tokens)
    assert summed.sum() == pytest.approx(scores.sum(), abs=1e-9)


def test_word_attention_rows_still_add_up_to_one():
    tokens = ["[CLS]", "play", "##ing", "now", "[SEP]"]
    rng = np.random.default_rng(0)
    m = rng.random((5, 5))
    m /= m.sum(-1, keepdims=True)
    words, q, k = word_attention(m, tokens, tokens)
    assert q == k == ["[CLS]", "playing", "now", "[SEP]"]
    assert words.shape == (4, 4)
    np.testing.assert_allclose(words.sum(-1), 1.0, rtol=1e-6)
    # attention *to* "playing" is the sum of both pieces; *from* it the mean of their rows
    assert words[0, 1] == pytest.approx(m[0, 1] + m[0, 2], rel=1e-6)
    assert words[1, 0] == pytest.approx((m[1, 0] + m[2, 0]) / 2, rel=1e-6)


def test_cross_attention_groups_rows_and_columns_apart():
    rows, cols = ["▁Das", "▁Haus", "chen", "</s>"], ["The", "Ġhouse", "Ġis"]
    words, q, k = word_attention(np.full((4, 3), 1 / 3), rows, cols)
    assert q == ["Das", "Hauschen", "</s>"] and k == ["The", "house", "is"]
    assert words.shape == (3, 3)


def test_the_heatmap_title_says_whole_words():
    w = np.full((1, 1, 4, 4), 0.25, dtype=np.float32)
    tokens = ["[CLS]", "play", "##ing", "[SEP]"]
    fig = attention_heatmap(w, tokens, tokens, 0, "average", words=True)
    assert "whole words" in str(fig.layout.title.text)
    assert len(fig.data[0].y) == 3
    plain = attention_heatmap(w, tokens, tokens, 0, "average")
    assert "whole words" not in str(plain.layout.title.text) and len(plain.data[0].y) == 4
