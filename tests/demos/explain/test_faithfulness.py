"""Faithfulness on every task: deletion end points, the integrated-gradients row and deletion
values against tests/reference.py (plain forward passes and Captum called directly on the model's
folder, the baseline built by hand), explanations on the same units as the result's own
attention, and the rank agreement."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from core import registry
from demos.explain import catalog, faithfulness, tasks
from tests import reference
from tests.cases import reported_value, result_for


@pytest.fixture(scope="module")
def reports():
    return {}


STEPS = 16


def report(task, reports):
    if task not in reports:
        reports[task] = faithfulness.faithfulness(task, result_for(task), steps=STEPS, points=5)
    return reports[task]


def test_faithfulness_applies_to_every_task():
    assert set(catalog.get("faithfulness").tasks) == set(registry.KEYS)


@pytest.mark.parametrize("task", registry.KEYS)
def test_deleting_nothing_and_everything_give_the_original_and_the_baseline(task, reports):
    f = report(task, reports)
    ref = reference.plain(task, result_for(task))
    n_curves = len(f.names) + 1
    assert f.deletion.shape == (n_curves, len(f.ks)) and f.ks[0] == 0 and f.ks[-1] == len(f.units)
    assert f.original == pytest.approx(reported_value(task), rel=1e-4, abs=1e-6)
    # both end points by a plain forward pass on the input and on the baseline built by hand
    assert f.original == pytest.approx(ref.value(), rel=1e-5, abs=1e-8)
    assert f.baseline == pytest.approx(ref.value(ref.baseline), rel=1e-5, abs=1e-8)
    np.testing.assert_allclose(f.deletion[:, 0], ref.value(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(f.deletion[:, -1], ref.value(ref.baseline), rtol=1e-5, atol=1e-8)
    assert len(f.units) == int(ref.deletable.sum()) and f.scores.shape == (len(f.names), len(f.units))


@pytest.mark.parametrize("task", registry.KEYS)
def test_ig_row_and_its_deletion_curve_equal_the_reference(task, reports):
    """The integrated-gradients row over the removable units, in unit order, is Captum's own
    (called directly on the hand-built input and baseline); its deletion curve at every k is the
    plain model's score with the top-k units (by that row) set to the baseline."""
    f = report(task, reports)
    ref = reference.plain(task, result_for(task))
    units = np.flatnonzero(ref.deletable)
    if ref.layer is not None:
        assert f.units == [ref.tokens[i] for i in units]
    row = f.names.index("Integrated gradients")
    reference.close(f.scores[row], ref.ig(steps=STEPS)[units])
    order = units[np.argsort(-f.scores[row], kind="stable")]
    for j, k in enumerate(f.ks):
        with torch.no_grad():
            want = ref.value(ref.remove(ref.x, order[:k]))
        assert f.deletion[row, j] == pytest.approx(want, rel=1e-5, abs=1e-8), f"k = {k}"
    random = np.random.default_rng(f.seed).permutation(units)
    k = f.ks[len(f.ks) // 2]
    assert f.deletion[-1, len(f.ks) // 2] == pytest.approx(ref.value(ref.remove(ref.x, random[:k])), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("task", registry.KEYS)
def test_rank_agreement_is_spearman_and_attention_is_the_results_own(task, reports):
    f = report(task, reports)
    assert "Integrated gradients" in f.names and "attention (last layer)" in f.names
    for i in range(len(f.names)):
        for j in range(len(f.names)):
            expected = spearmanr(f.scores[i], f.scores[j]).statistic
            assert f.spearman[i, j] == pytest.approx(expected, abs=1e-6, nan_ok=True)
    s = tasks.subject(task, result_for(task))
    att = np.asarray(s.attention())[s.units.deletable]
    np.testing.assert_allclose(f.scores[f.names.index("attention (last layer)")], att, rtol=1e-6)
    assert ("attention rollout" in f.names) != ("attention rollout" in f.skipped)


def test_sentiment_attention_row_and_one_deletion_value_by_hand(reports):
    result = result_for("sentiment")
    f = report("sentiment", reports)
    special = np.array([t in ("[CLS]", "[SEP]") for t in result.tokens])
    np.testing.assert_allclose(f.scores[0], result.attention.weights[-1].mean(0)[0][~special], rtol=1e-6)
    s = tasks.subject("sentiment", result)
    units = np.flatnonzero(~special)
    j = 2  # remove the top ks[j] units by attention: replace them by [PAD] and run the model by hand
    top = units[np.argsort(-f.scores[0], kind="stable")][: f.ks[j]]
    ids = s.inputs["input_ids"].clone()
    ids[0, top] = s.model.config.pad_token_id
    with torch.no_grad():
        logits = s.model(input_ids=ids, attention_mask=s.inputs["attention_mask"]).logits
    assert f.deletion[0, j] == pytest.approx(float(torch.softmax(logits, -1)[0, s.answer]), abs=1e-6)


def test_random_deletion_is_seeded():
    result = result_for("image")
    a = faithfulness.faithfulness("image", result, methods=(), points=4, seed=3)
    b = faithfulness.faithfulness("image", result, methods=(), points=4, seed=3)
    np.testing.assert_array_equal(a.deletion[-1], b.deletion[-1])
    assert a.curve_names[-1] == "random (seed 3)"
