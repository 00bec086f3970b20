"""Why A and not B on every task where it applies: P(A) - P(B) attributed with completeness, and the
generation branch explorer against transformers' own greedy generation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core import registry
from demos.explain import catalog, contrast, tasks
from tests import reference
from tests.cases import result_for

# Tasks where "why A and not B" does not apply, with the reason the app gives.
EXCLUDED = {"qa", "explorer"}


def test_every_task_is_covered_or_excluded_with_a_reason():
    explainer = catalog.get("contrast")
    assert set(explainer.tasks) | set(explainer.not_for) == set(registry.KEYS)
    assert set(explainer.not_for) == EXCLUDED and all(explainer.not_for.values())


STEPS = 16


@pytest.mark.parametrize("task", registry.KEYS)
def test_contrastive_attribution_equals_ig_of_a_minus_ig_of_b(task):
    """Against tests/reference.py (the model's folder in float64, the baseline built by hand,
    Captum called directly): B is the most probable other outcome by a plain forward pass; the
    scores, unit by unit in the order shown, are IG(P(A)) - IG(P(B)) computed separately; P(A),
    P(B) and both end points are plain forward passes; the scores add up to the plain gap."""
    result = result_for(task)
    if task in EXCLUDED:
        with pytest.raises(ValueError):
            contrast.why_not(task, result, contrast=0)
        return
    got = contrast.why_not(task, result, steps=STEPS)
    ref = reference.plain(task, result)
    a, b = ref.answer, ref.top_other()
    attr = got.attribution
    s = tasks.subject(task, result)
    assert (got.a, got.b) == (s.outcome_label(a), s.outcome_label(b)) and got.a != got.b
    if ref.layer is not None:
        assert attr.tokens == ref.tokens  # the units, in order
    assert len(attr.scores) == len(attr.tokens) == len(ref.tokens)
    assert got.p_a == pytest.approx(ref.value(k=a), rel=1e-5, abs=1e-8)
    assert got.p_b == pytest.approx(ref.value(k=b), rel=1e-5, abs=1e-8)
    diff_x = ref.value(k=a) - ref.value(k=b)
    diff_b = ref.value(ref.baseline, k=a) - ref.value(ref.baseline, k=b)
    # differences of two float32 probabilities: a difference near 0 agrees to float32's rounding of either
    # probability (1.2e-7), not to a relative 1e-5 of itself
    assert attr.output_value == pytest.approx(diff_x, rel=1e-5, abs=1.2e-7)
    assert attr.baseline_value == pytest.approx(diff_b, rel=1e-5, abs=1.2e-7)
    reference.close(attr.scores, ref.ig(a, STEPS) - ref.ig(b, STEPS))
    reference.complete(float(attr.scores.sum()), diff_x - diff_b)


@pytest.mark.parametrize("task", sorted(set(registry.KEYS) - EXCLUDED))
def test_swapping_a_and_b_flips_the_sign(task):
    result = result_for(task)
    ab = tasks.subject(task, result)
    ba = tasks.subject(task, result)
    ba.answer, ba.contrast = ab.contrast, ab.answer
    x = contrast.attribute_units(ab, "contrast_prob_diff", "gradient_x_input")
    y = contrast.attribute_units(ba, "contrast_prob_diff", "gradient_x_input")
    np.testing.assert_allclose(x.scores, -y.scores, atol=1e-6)
    assert x.delta is None and x.output_value == pytest.approx(-y.output_value, abs=1e-7)


@pytest.mark.parametrize("task", ["sentiment", "image", "clip"])
def test_a_and_b_are_chosen_by_label(task):
    result = result_for(task)
    s = tasks.subject(task, result)
    b = s.outcome_label(s.contrast)
    got = contrast.why_not(task, result, target=b, contrast=s.answer_label, method="gradient_x_input")
    assert (got.a, got.b) == (b, s.answer_label)


def test_same_outcome_for_a_and_b_is_refused():
    result = result_for("sentiment")
    with pytest.raises(ValueError):
        contrast.why_not("sentiment", result, target=result.predicted, contrast=result.predicted)


def test_branch_continues_greedily_from_the_forced_token():
    result = result_for("generation")
    m = tasks.module("generation").load(result.model_id)
    step = 1
    s = tasks.subject("generation", result, step)
    got = contrast.branch(result, step, s.contrast)
    assert got.original == [m.processor.decode([i]) for i in result.ids[result.n_prompt:]]
    assert got.branch[:step] == got.original[:step] and got.branch[step] == s.contrast_label
    assert got.diverge_at == step and len(got.branch) == len(got.original)
    prefix = torch.tensor([[*result.ids[: result.n_prompt + step], s.contrast]])
    with torch.no_grad():
        expected = m.model.generate(input_ids=prefix, attention_mask=torch.ones_like(prefix), do_sample=False,
                                    max_new_tokens=result.steps - step - 1, pad_token_id=m.processor.eos_token_id)
    assert got.branch == [m.processor.decode([i]) for i in expected[0, result.n_prompt:].tolist()]
    assert got.forced == s.contrast_label
    if got.rejoin_at is not None:
        assert got.branch[got.rejoin_at:] == got.original[got.rejoin_at:]


def test_the_contrast_title_shows_readable_tokens():
    """Issue #27: the title read 'P(ĠThe) − P(Ġthe)': tokens now carry the app's visible space."""
    result = result_for("generation")
    s = tasks.subject("generation", result)
    tok = tasks.module("generation").load(result.model_id).processor
    spaced = sorted(t for t in tok.get_vocab() if t.startswith("Ġ") and t[1:].isalpha())[:2]  # e.g. 'Ġthe', 'Ġa'
    assert len(spaced) == 2
    s.answer, s.contrast = tok.convert_tokens_to_ids(spaced)
    attr = contrast.attribute_units(s, "contrast_prob_diff", "gradient_x_input")
    assert attr.target == f"P(␣{spaced[0][1:]}) − P(␣{spaced[1][1:]})" and "Ġ" not in attr.target


def test_outcome_text_is_readable_only_where_a_tokenizer_marked_it():
    from core.tokens import outcome_text

    assert [outcome_text(t) for t in ("ĠThe", " The", "▁Haus", "Ġcaf" + "Ã©", "POSITIVE", "a photo of a cat", "café")] == [
        "␣The", "␣The", "␣Haus", "␣café", "POSITIVE", "a photo of a cat", "café"]


def test_a_transcripts_outcomes_read_as_text_not_as_the_tokenizers_bytes():
    """Whisper's tokens are byte-level: a head map, knockout or contrast of the transcript names its outcome
    '␣The' for 'ĠThe', and a token holding one byte of a character by its hex, never the raw 'Ĭ' that showed."""
    result = result_for("asr")
    s = tasks.subject("asr", result)
    tok = tasks.module("asr").load(result.model_id).processor.tokenizer
    vocab = tok.get_vocab()
    spaced = sorted(t for t in vocab if t.startswith("Ġ") and t[1:].isalpha())[0]
    byte_of = {ch: b for b, ch in _gpt2_byte_chars().items()}
    lone = sorted(t for t in vocab if len(t) == 1 and t in byte_of and byte_of[t] >= 0x80)[0]  # half of a character
    assert s.outcome_label(vocab[spaced]) == "␣" + spaced[1:]
    assert s.outcome_label(vocab[lone]) == f"‹{byte_of[lone]:02X}›"


def _gpt2_byte_chars() -> dict[int, str]:
    """GPT-2's byte-level alphabet (also Whisper's): printable bytes stand for themselves, the others for 256 + n."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in kept]
    return {**{b: chr(b) for b in kept}, **{b: chr(256 + n) for n, b in enumerate(others)}}
