"""Why A and not B on every task where it applies: P(A) - P(B) attributed with completeness, and the
generation branch explorer against transformers' own greedy generation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core import registry
from demos.explain import catalog, contrast, subjects
from tests.explain_cases import result_for

# Tasks where "why A and not B" does not apply, with the reason the app gives.
EXCLUDED = {"qa", "explorer"}


def test_every_task_is_covered_or_excluded_with_a_reason():
    explainer = catalog.get("contrast")
    assert set(explainer.tasks) | set(explainer.not_for) == set(registry.KEYS)
    assert set(explainer.not_for) == EXCLUDED and all(explainer.not_for.values())


@pytest.mark.parametrize("task", registry.KEYS)
def test_contrastive_attribution_is_complete(task):
    result = result_for(task)
    if task in EXCLUDED:
        with pytest.raises(ValueError):
            contrast.why_not(task, result, contrast=0)
        return
    got = contrast.why_not(task, result, steps=64)
    s = subjects.subject(task, result)
    attr = got.attribution
    assert got.a == s.answer_label and got.b == s.contrast_label and got.a != got.b
    assert len(attr.scores) == len(attr.tokens) == len(s.units)
    assert attr.output_value == pytest.approx(got.p_a - got.p_b, abs=1e-6)
    with torch.no_grad():
        probs = s.outcome_probs(s.run(s.batch(1)))[0]
        at_base = s.outcome_probs(s.run(s.batch(1, **{s.unit_key: s.baseline})))[0]
    assert got.p_a == pytest.approx(float(probs[s.answer]), abs=1e-6)
    assert attr.baseline_value == pytest.approx(float(at_base[s.answer] - at_base[s.contrast]), abs=1e-6)
    gap = attr.output_value - attr.baseline_value
    assert abs(float(attr.scores.sum()) - gap) <= attr.delta + 1e-6  # completeness up to Captum's delta
    assert attr.delta < 0.05 * abs(gap) + 1e-5


@pytest.mark.parametrize("task", sorted(set(registry.KEYS) - EXCLUDED))
def test_swapping_a_and_b_flips_the_sign(task):
    result = result_for(task)
    ab = subjects.subject(task, result)
    ba = subjects.subject(task, result)
    ba.answer, ba.contrast = ab.contrast, ab.answer
    x = contrast.attribute_units(ab, "contrast_prob_diff", "gradient_x_input")
    y = contrast.attribute_units(ba, "contrast_prob_diff", "gradient_x_input")
    np.testing.assert_allclose(x.scores, -y.scores, atol=1e-6)
    assert x.delta is None and x.output_value == pytest.approx(-y.output_value, abs=1e-7)


@pytest.mark.parametrize("task", ["sentiment", "image", "clip"])
def test_a_and_b_are_chosen_by_label(task):
    result = result_for(task)
    s = subjects.subject(task, result)
    b = s.outcome_label(s.contrast)
    got = contrast.why_not(task, result, target=b, contrast=s.answer_label, method="gradient_x_input")
    assert (got.a, got.b) == (b, s.answer_label)


def test_same_outcome_for_a_and_b_is_refused():
    result = result_for("sentiment")
    with pytest.raises(ValueError):
        contrast.why_not("sentiment", result, target=result.predicted, contrast=result.predicted)


def test_branch_continues_greedily_from_the_forced_token():
    result = result_for("generation")
    m = registry.get("generation").compute().load(result.model_id)
    step = 1
    s = subjects.subject("generation", result, step)
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
