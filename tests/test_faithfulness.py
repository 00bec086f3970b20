"""Faithfulness on every task: exact deletion end points, a deletion value recomputed by hand,
explanations on the same units as the result's own attention, and the rank agreement."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from core import registry
from demos.explain import catalog, faithfulness, subjects
from tests.explain_cases import reported_value, result_for


@pytest.fixture(scope="module")
def reports():
    return {}


def report(task, reports):
    if task not in reports:
        reports[task] = faithfulness.faithfulness(task, result_for(task), steps=16, points=5)
    return reports[task]


def test_faithfulness_applies_to_every_task():
    assert set(catalog.get("faithfulness").tasks) == set(registry.KEYS)


@pytest.mark.parametrize("task", registry.KEYS)
def test_deleting_nothing_and_everything_give_the_original_and_the_baseline(task, reports):
    f = report(task, reports)
    s = subjects.subject(task, result_for(task))
    n_curves = len(f.names) + 1
    assert f.deletion.shape == (n_curves, len(f.ks)) and f.ks[0] == 0 and f.ks[-1] == len(f.units)
    assert f.original == pytest.approx(reported_value(task), rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(f.deletion[:, 0], f.original, rtol=0, atol=1e-6)
    np.testing.assert_allclose(f.deletion[:, -1], f.baseline, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert f.baseline == pytest.approx(float(s.score_units(s.baseline)[0]), abs=1e-7)
    assert len(f.units) == int(s.units.deletable.sum()) and f.scores.shape == (len(f.names), len(f.units))


@pytest.mark.parametrize("task", registry.KEYS)
def test_rank_agreement_is_spearman_and_attention_is_the_results_own(task, reports):
    f = report(task, reports)
    assert "Integrated gradients" in f.names and "attention (last layer)" in f.names
    for i in range(len(f.names)):
        for j in range(len(f.names)):
            expected = spearmanr(f.scores[i], f.scores[j]).statistic
            assert f.spearman[i, j] == pytest.approx(expected, abs=1e-6, nan_ok=True)
    s = subjects.subject(task, result_for(task))
    att = np.asarray(s.attention())[s.units.deletable]
    np.testing.assert_allclose(f.scores[f.names.index("attention (last layer)")], att, rtol=1e-6)
    assert ("attention rollout" in f.names) != ("attention rollout" in f.skipped)


def test_sentiment_attention_row_and_one_deletion_value_by_hand(reports):
    result = result_for("sentiment")
    f = report("sentiment", reports)
    special = np.array([t in ("[CLS]", "[SEP]") for t in result.tokens])
    np.testing.assert_allclose(f.scores[0], result.attention.weights[-1].mean(0)[0][~special], rtol=1e-6)
    s = subjects.subject("sentiment", result)
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
