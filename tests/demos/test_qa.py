"""Question answering on a tiny DistilBERT: the answer equals a brute-force best span over the
model's own logits, probabilities and attention are distributions, attributions are complete."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from demos import qa
from tests import reference as by_hand

PAIRS = [
    *qa.EXAMPLES,
    ("Who wrote the book?", "The book was written by Mary Shelley. It tells the story of a young scientist."),
    ("Where is it?", "It is in the old house near the river, behind the tall trees and the garden wall."),
]
Q, C = qa.EXAMPLES[0]


@pytest.fixture(scope="module")
def reference(tiny_models):
    """The tiny model and tokenizer loaded independently of the app (eager attention, float32)."""
    folder = tiny_models["qa"]
    model = AutoModelForQuestionAnswering.from_pretrained(folder, attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(folder)


def brute_force(reference, question: str, context: str, max_len: int = qa.MAX_ANSWER_TOKENS):
    """Best span by looping over every s <= e among context tokens; score as the old pipeline."""
    model, tok = reference
    enc = tok(question, context, truncation="only_second", max_length=512, return_offsets_mapping=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    start, end = out.start_logits[0].double().numpy(), out.end_logits[0].double().numpy()
    seq = enc.sequence_ids(0)
    ctx = [i for i, s in enumerate(seq) if s == 1]
    best, span = -np.inf, None
    for s in ctx:
        for e in ctx:
            if s <= e < s + max_len and start[s] + end[e] > best:
                best, span = start[s] + end[e], (s, e)
    keep = np.array([s == 1 for s in seq])
    keep[0] = True  # [CLS] stays in the softmax, as the pipeline did
    p_start = np.exp(np.where(keep, start, -1e4) - start[keep].max())
    p_end = np.exp(np.where(keep, end, -1e4) - end[keep].max())
    p_start, p_end = p_start / p_start.sum(), p_end / p_end.sum()
    offsets = enc["offset_mapping"][0].tolist()
    s, e = span
    return span, context[offsets[s][0]:offsets[e][1]], p_start[s] * p_end[e]


@pytest.mark.parametrize("question,context", PAIRS)
def test_answer_equals_brute_force_best_span(reference, question, context):
    result = qa.answer(question, context)
    span, text, score = brute_force(reference, question, context)
    assert (result.start_index, result.end_index) == span
    assert result.answer == text and result.answer
    assert result.score == pytest.approx(score, rel=1e-4)
    assert result.context[result.char_start:result.char_end] == result.answer
    assert result.context == context  # examples carry no outer spaces, so offsets refer to the input too
    assert result.segment[result.start_index] == 1 and result.segment[result.end_index] == 1


@hsettings(max_examples=60, deadline=None)
@given(st.integers(2, 40), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_best_span_matches_exhaustive_search(n, max_len, seed):
    rng = np.random.default_rng(seed)
    start, end = rng.normal(size=n), rng.normal(size=n)
    allowed = rng.random(n) < 0.7
    allowed[rng.integers(n)] = True
    s, e = qa.best_span(start, end, allowed, max_len)
    pairs = [(a, b) for a in range(n) for b in range(a, min(n, a + max_len)) if allowed[a] and allowed[b]]
    assert (s, e) in pairs
    assert start[s] + end[e] == pytest.approx(max(start[a] + end[b] for a, b in pairs))


def test_probabilities_and_attention_are_distributions():
    result = qa.answer(Q, C)
    n = len(result.tokens)
    for probs in (result.start_probs, result.end_probs):
        assert probs.shape == (n,) and probs.sum() == pytest.approx(1.0, abs=1e-6)
        assert np.all(probs[result.segment == 0] < 1e-12)  # question tokens are never candidates
    w = result.attention.weights
    assert w.shape[2:] == (n, n)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-4)
    assert result.embeddings.vectors.shape[:2] == (w.shape[0] + 1, n)
    groups = result.embeddings.groups
    assert len(groups) == n and {"question", "context", "answer", "special"} == set(groups)
    assert groups[result.start_index] == groups[result.end_index] == "answer"


@pytest.mark.parametrize("which", qa.ENDS)
def test_integrated_gradients_completeness(which):
    attr = qa.attribute(Q, C, which, "integrated_gradients", 48)
    result = qa.answer(Q, C)
    assert len(attr.scores) == len(attr.tokens) == len(result.tokens)
    probs = result.start_probs if which == "start" else result.end_probs
    index = result.start_index if which == "start" else result.end_index
    assert attr.output_value == pytest.approx(probs[index], rel=1e-4)
    ref = by_hand.qa(result)  # [CLS] PAD... [SEP] PAD... [SEP], masked softmaxes by hand
    column = 1 if which == "start" else 2
    f_x, f_b = ref.value(k=column), ref.value(ref.baseline, k=column)
    assert attr.baseline_value == pytest.approx(f_b, rel=1e-4)
    by_hand.complete(float(attr.scores.sum()), f_x - f_b)


def test_very_long_context_says_which_window_answered():
    long_context = C + " " + "The tower is painted every few years. " * 400
    result = qa.answer(Q, long_context)
    assert "overlapping windows" in result.notice and f"window {result.window + 1}" in result.notice
    assert len(result.tokens) <= 512
    assert result.context[result.char_start:result.char_end] == result.answer
    assert qa.answer(Q, C).notice == ""


def test_bad_inputs_get_clear_messages():
    with pytest.raises(ValueError, match="Please enter a question"):
        qa.answer("  ", C)
    with pytest.raises(ValueError, match="Please enter a context"):
        qa.answer(Q, "")
    with pytest.raises(ValueError, match="question is too long"):
        qa.answer("Why is that so? " * 200, C)
    with pytest.raises(ValueError, match="Unknown answer end"):
        qa.attribute(Q, C, "middle")


@pytest.mark.slow
def test_api_round_trip_and_empty_input(serve):
    from tests.conftest import tab_app

    client = serve(tab_app("ui.qa"))
    out = client.predict(Q, C, api_name="/qa")
    expected = qa.answer(Q, C)
    assert out[0] == expected.answer
    assert out[1] == float(f"{expected.score:.4g}") and out[1] > 0  # 4 significant digits: readable, never "0"
    assert "xray-answer" in out[2]
    hostile = client.predict("Who?", "<img src=x onerror=alert(1)> Ada <b>Lovelace</b> wrote it.", api_name="/qa")
    assert "<img" not in hostile[2] and "&lt;img" in hostile[2] and "<b>" not in hostile[2]
    with pytest.raises(ValueError, match="Please enter a context"):
        client.predict(Q, "   ", api_name="/qa")
    with pytest.raises(ValueError, match="Please enter a question"):
        client.predict("", C, api_name="/qa")


@pytest.mark.parametrize(("sentences", "windows"), [(90, 3), (25, 2)], ids=["three-or-more-windows", "two-windows"])
def test_long_context_is_read_whole_in_overlapping_windows(sentences, windows):
    """A context longer than the model reads at once is read in overlapping windows; the answer
    is the best span over ALL windows (checked window by window against the model itself), and the
    views and attributions come from that window: its attention maps equal the model's own on that window
    alone (two windows: read from one batched pass over both, padding cut)."""
    m = qa.load()
    filler = " ".join(f"Sentence number {i} talks about the weather in town {i % 7}." for i in range(sentences))
    context = filler + " The treasure was hidden under the old oak tree behind the mill."
    question = "Where was the treasure hidden?"
    batch, limit = qa._windows(m, question, context)
    n_windows = batch["input_ids"].shape[0]
    assert n_windows == windows if windows == 2 else n_windows >= windows  # 512 tokens at a time
    best = []
    for w in range(n_windows):  # brute force: each window on its own
        enc = qa.encode(m, question, context, w)
        with torch.inference_mode():
            out = m.model(input_ids=enc.ids, attention_mask=enc.mask, **enc.extra, output_attentions=True)
        start, end = out.start_logits[0].float().numpy(), out.end_logits[0].float().numpy()
        s, e = qa.best_span(start, end, enc.context_mask)
        score = qa.masked_probs(start, enc.candidates)[s] * qa.masked_probs(end, enc.candidates)[e]
        maps = torch.stack([a[0] for a in out.attentions]).float().numpy()
        best.append((score, w, context[int(enc.offsets[s, 0]):int(enc.offsets[e, 1])], maps))
    score, window, text, maps = max(best, key=lambda b: b[0])
    result = qa.answer(question, context)
    np.testing.assert_allclose(result.attention.weights.astype(np.float64), maps, rtol=0, atol=2e-3 * maps.max())
    assert (result.window, result.n_windows, result.answer) == (window, n_windows, text)
    assert result.score == pytest.approx(score, rel=1e-5)
    a, b = result.window_chars
    assert a <= result.char_start < result.char_end <= b and context[result.char_start:result.char_end] == text
    assert f"{n_windows} overlapping windows" in result.notice and f"window {window + 1}" in result.notice
    assert b == len(context) or window < n_windows - 1  # the last window reaches the end of the text
    last = qa.encode(m, question, context, n_windows - 1)
    assert int(last.offsets[last.context_mask][-1, 1]) == len(context)  # nothing is cut off
    assert len(result.tokens) <= limit
    attr = qa.attribute(question, context, "start", "gradient_x_input")
    assert attr.tokens == result.tokens  # the attribution explains the same window


def test_the_shown_score_is_never_rounded_to_zero():
    """Issue #27: a small score was shown as "0"; it keeps 4 significant digits instead."""
    from ui.qa import shown_score

    assert shown_score(0.00008142035893823375) == pytest.approx(8.142e-5, rel=0, abs=1e-12)
    assert shown_score(3.3e-12) == pytest.approx(3.3e-12) and shown_score(3.3e-12) > 0
    assert shown_score(0.912345) == 0.9123
