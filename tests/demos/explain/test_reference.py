"""Every text tab's attribution view against an independent reference (tests/reference.py: the
model's folder loaded here in float64, the baseline built by hand, Captum's
LayerIntegratedGradients / LayerGradientXActivation called directly with the same steps), in the
order the user sees it: the tab's real event handler runs, and the tokens of its shaded text and
the bars of its chart are read left to right. The summary line's f(input) - f(baseline) and the
exported f(input) / f(baseline) are checked against a plain forward pass.

(The speech tab shows no token attributions: its explanations are cross-attention, the lens and
the explainers, checked in test_contrast / test_faithfulness.)"""
from __future__ import annotations

import importlib
import re

import gradio as gr
import numpy as np
import pytest
import torch

from core import registry
from tests import reference
from tests.cases import CASES, CAT
from tests.handlers import call

STEPS = 16
METHODS = ["integrated_gradients", "gradient_x_input"]
TABS = [c.tab for c in CASES.values() if c.token_attribution]  # the tabs that show token attributions
SENTIMENT_TEXT = "A warm and funny film, with a dull end."
PROMPT = "The quick brown fox"
CLIP_TEXTS = "a photo of a cat\na cup of coffee"


@pytest.fixture(scope="module")
def api():
    """api_name -> BlockFunction of every text tab (the handler Gradio runs)."""
    fns = {}
    for module in TABS:
        with gr.Blocks() as demo:
            importlib.import_module(module).build()
        fns.update({f.api_name: f for f in demo.fns.values() if f.api_name})
    return fns


def run_view(api, name: str, result, *choices_method_steps) -> list:
    """The attribution handler's outputs ([summary, html, plot] per view, then the export), called
    with the result, the tab's choices, method and steps; every later switch (adaptive stopping,
    whole words) off."""
    fn = api[name]
    args = [result, *choices_method_steps]
    return call(fn, *args, *[False] * (len(fn.inputs) - len(args)))


def check_view(summary: str, html_value: str, figure, attr, ref: reference.Plain, want: np.ndarray, column: int | None,
               method: str) -> None:
    """One view against the reference: tokens and scores in the order shown, printed scores, the
    summary's gap and the exported end points."""
    tokens, bars, printed = reference.shown(html_value, figure)
    assert tokens == ref.tokens  # the tokens, left to right, as the tokenizer gives them
    reference.close(bars, want)
    assert printed == [f"{v:+.4f}" for v in bars]  # the shaded text and the chart show the same order
    np.testing.assert_array_equal(np.asarray(attr.scores, np.float64), bars)
    k = ref.answer if column is None else column
    f_x, f_b = ref.value(k=k), ref.value(ref.baseline, k=k)
    assert attr.output_value == pytest.approx(f_x, rel=1e-5, abs=1e-7)
    assert attr.baseline_value == pytest.approx(f_b, rel=1e-5, abs=1e-7)
    if method == "integrated_gradients":
        reference.complete(float(bars.sum()), f_x - f_b)
        shown_gap = float(re.search(r"f\(input\) − f\(baseline\) = ([-+0-9.e]+)", summary).group(1))
        assert shown_gap == pytest.approx(f_x - f_b, rel=0.05)  # 4 digits of a float32 difference
        assert f"{STEPS} steps" in summary
    else:
        assert attr.delta is None


def reference_scores(ref: reference.Plain, method: str, column: int | None = None) -> np.ndarray:
    k = ref.answer if column is None else column
    return ref.ig(k, STEPS) if method == "integrated_gradients" else ref.gxi(k)


@pytest.mark.parametrize("method", METHODS)
def test_sentiment_view_equals_captum_called_directly(api, method):
    from demos import sentiment

    result = sentiment.analyse(SENTIMENT_TEXT)
    ref = reference.sentiment(result)
    assert result.labels[ref.answer] == result.predicted
    summary, html_value, figure, attr = run_view(api, "sentiment_attribution", result, "predicted class", method, STEPS)
    check_view(summary, html_value, figure, attr, ref, reference_scores(ref, method), None, method)


def test_sentiment_view_of_the_other_class(api):
    from demos import sentiment

    result = sentiment.analyse(SENTIMENT_TEXT)
    other = next(label for label in result.labels if label != result.predicted)
    ref = reference.sentiment(result, target=result.labels.index(other))
    summary, html_value, figure, attr = run_view(api, "sentiment_attribution", result, other, "integrated_gradients", STEPS)
    check_view(summary, html_value, figure, attr, ref, ref.ig(steps=STEPS), None, "integrated_gradients")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("step", [0, 3])
def test_generation_view_equals_captum_called_directly(api, method, step):
    from demos import generation

    result = generation.generate(PROMPT, 5)
    ref = reference.generation(result, step)
    summary, html_value, figure, attr = run_view(api, "generate_attribution", result, result.n_prompt + step, method, STEPS)
    check_view(summary, html_value, figure, attr, ref, reference_scores(ref, method), None, method)


@pytest.mark.parametrize("method", METHODS)
def test_every_generated_token_at_once_equals_captum_called_directly_per_token(api, method):
    """The matrix of "Every generated token at once" (one batched pass): row k, read from the figure, equals
    Captum's LayerIntegratedGradients / LayerGradientXActivation run on that token's own prefix alone; the cells
    after the prefix are empty; the summary gives the largest delta."""
    from demos import generation

    result = generation.generate(PROMPT, 5)
    summary, figure = run_view(api, "generate_attribution_all", result, method, STEPS, False)
    z = np.asarray(figure.data[0].z, dtype=np.float64)
    assert z.shape == (result.steps, len(result.ids) - 1)
    for step in range(result.steps):
        ref = reference.generation(result, step)
        pos = result.n_prompt + step
        reference.close(z[step, :pos], reference_scores(ref, method))
        assert np.isnan(z[step, pos:]).all()
        assert figure.data[0].y[step].startswith(f"{pos}:")  # the row names the generated token's position
        if method == "integrated_gradients":
            reference.complete(float(z[step, :pos].sum()), ref.value() - ref.value(ref.baseline))
    assert f"{result.steps} generated tokens in one batched pass" in summary
    assert ("largest convergence delta" in summary) == (method == "integrated_gradients")


@pytest.mark.parametrize("method", METHODS)
def test_qa_start_and_end_views_equal_captum_called_directly(api, method):
    from demos import qa

    question, context = registry.examples("qa")[0]
    result = qa.answer(question, context)
    ref = reference.qa(result)
    assert ref.span == (result.start_index, result.end_index)  # the answer the tab shows is the best span
    out = run_view(api, "qa_attribution", result, method, STEPS)
    start, end = out[:3], out[3:6]
    starts, ends = out[6]
    check_view(*start, starts, ref, reference_scores(ref, method, 1), 1, method)
    check_view(*end, ends, ref, reference_scores(ref, method, 2), 2, method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("step", [0, 2])
def test_translation_view_equals_captum_called_directly(api, method, step):
    from demos import translation

    result = translation.analyse(registry.examples("translation")[0])
    ref = reference.translation(result, step)
    summary, html_value, figure, attr = run_view(api, "translate_attribution", result, step, method, STEPS)
    check_view(summary, html_value, figure, attr, ref, reference_scores(ref, method), None, method)


@pytest.mark.parametrize("method", METHODS)
def test_clip_text_view_equals_captum_called_directly(api, method):
    from demos import clip

    result = clip.analyse(CAT, CLIP_TEXTS)
    text = result.texts[1]  # not the best match: the view explains the one chosen
    ref = reference.clip_text(result.model_id, CAT, text)
    summary, html_value, figure, attr = run_view(api, "clip_attribution", result, 0, text, method, STEPS)
    check_view(summary, html_value, figure, attr, ref, reference_scores(ref, method), None, method)


def test_the_reference_tells_the_right_baseline_and_order_apart():
    """The tolerances above are meaningful: the reference in reversed order, from a zero baseline,
    or gradient x input instead of integrated gradients misses them by far."""
    from demos import sentiment

    ref = reference.sentiment(sentiment.analyse(SENTIMENT_TEXT))
    ig = ref.ig(steps=STEPS)
    with pytest.raises(AssertionError):
        reference.close(ig[::-1], ig)
    with pytest.raises(AssertionError):
        reference.close(ref.gxi(), ig)
    every_pad = torch.full_like(ref.baseline, int(ref.baseline[0, 1]))  # [CLS] and [SEP] padded too
    wrong_base = reference.integrated(ref.fn(ref.answer), ref.x, every_pad, ref.layer, STEPS, ref.reduce)
    with pytest.raises(AssertionError):
        reference.close(wrong_base, ig)
    gap = ref.value() - ref.value(ref.baseline)
    reference.complete(float(ig.sum()), gap)
    with pytest.raises(AssertionError):
        reference.complete(float(ref.gxi().sum()), gap)
    with pytest.raises(AssertionError):
        reference.complete(float(wrong_base.sum()), gap)
