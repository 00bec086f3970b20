"""The explanation protocol: one table of Captum-backed methods, one attribution path for every
task (table-driven: a task with an attribution function and every method = one test), and the
adaptive stopping rule of integrated gradients."""
from __future__ import annotations

import numpy as np
import pytest

from core import registry
from demos.explain import attribution, tasks
from tests import reference

TEXT = "A warm, funny and beautifully acted film."


def _attribute(spec: registry.TaskSpec, method: str, steps: int, **kwargs):
    """Call a task's attribution function on its first example (one row per task); with it, the
    plain reference of what it explains (tests/reference.py) and the outcome column explained."""
    module = tasks.module(spec.key)
    fn = getattr(module, spec.attribute)
    example = registry.examples(spec.key)[0] if spec.examples else None
    if spec.key == "sentiment":
        return fn(TEXT, None, method, steps, **kwargs), reference.sentiment(module.analyse(TEXT)), None
    if spec.key == "qa":
        question, context = example
        return fn(question, context, "start", method, steps, **kwargs), reference.qa(module.answer(question, context)), 1
    if spec.key == "generation":
        result = module.generate(example, 3)
        return fn(result.ids, result.n_prompt, method, steps, **kwargs), reference.generation(result), None
    if spec.key == "translation":
        return fn(example, 0, method, steps, **kwargs), reference.translation(module.analyse(example)), None
    if spec.key == "clip":
        cat = registry.examples("image")[0]
        folder = module.load().model_id
        return fn(cat, "a photo of a cat", method, steps, **kwargs), reference.clip_text(folder, cat, "a photo of a cat"), None
    if spec.key == "image":
        result = module.analyse(example)
        return fn(example, None, "black", steps, **kwargs), reference.image(result, baseline="black"), None
    raise AssertionError(f"task {spec.key} has an attribution function but no row in this test")


WITH_ATTRIBUTION = [t for t in registry.TASKS if t.attribute]


def test_every_task_is_either_attributed_or_says_why_not():
    without = {t.key for t in registry.TASKS if not t.attribute}
    assert without == {"asr", "explorer"}, "a new task without attribution must be listed here with its reason"
    # asr: transcription explanations are cross-attention alignments and the lens; explorer: no output to attribution.


@pytest.mark.parametrize("name", sorted(attribution.METHODS))
def test_methods_are_captum_classes_that_answer_for_themselves(name):
    import captum.attr

    m = attribution.METHODS[name]
    for cls_name in (m.layer_class, m.input_class):
        assert issubclass(getattr(captum.attr, cls_name), captum.attr.Attribution)
    layer_cls = getattr(captum.attr, m.layer_class)
    assert m.integrates == (name == "integrated_gradients")
    assert layer_cls.has_convergence_delta(layer_cls.__new__(layer_cls)) == m.integrates


# The image tab offers integrated gradients only (with its baselines and SmoothGrad).
ROWS = [(t, m) for t in WITH_ATTRIBUTION for m in sorted(attribution.METHODS) if t.key != "image" or m == "integrated_gradients"]


@pytest.mark.parametrize("spec,method", ROWS, ids=[f"{t.key}-{m}" for t, m in ROWS])
def test_one_path_gives_completeness_for_every_task(spec, method):
    attr, ref, column = _attribute(spec, method, 16)
    scores = np.asarray(attr.scores, dtype=np.float64)
    assert np.isfinite(scores).all() and scores.size > 0
    f_x, f_b = ref.value(k=column), ref.value(ref.baseline, k=column)  # plain forward passes, here
    assert attr.output_value == pytest.approx(f_x, rel=1e-4, abs=1e-7)
    assert attr.baseline_value == pytest.approx(f_b, rel=1e-4, abs=1e-7)
    if attribution.METHODS[method].integrates:
        assert attr.delta is not None
        reference.complete(float(scores.sum()), f_x - f_b)  # completeness against the plain gap
    else:
        assert attr.delta is None and attr.steps == 1


def test_adaptive_steps_stop_at_the_first_rung_within_tolerance():
    """The ladder 8, 16, 32, ... as documented: the next rung, or the one after it while |delta| is more than
    4 x the tolerance; it stops at the first rung it runs that is within the tolerance."""
    from demos import sentiment

    ladder = attribution.STEP_LADDER[:5]
    fixed = {s: sentiment.attribute(TEXT, None, "integrated_gradients", s) for s in ladder}
    deltas = {s: a.delta for s, a in fixed.items()}
    tolerance = sorted(deltas.values())[len(deltas) // 2]  # a tolerance some rungs meet and some do not
    i = 0
    while deltas[ladder[i]] > tolerance:
        i = min(i + (2 if deltas[ladder[i]] > 4 * tolerance else 1), len(ladder) - 1)
    expected = ladder[i]
    adaptive = sentiment.attribute(TEXT, None, "integrated_gradients", 128, tolerance=tolerance)
    assert adaptive.steps == expected and adaptive.delta <= tolerance
    np.testing.assert_allclose(adaptive.scores, fixed[expected].scores, rtol=1e-5, atol=1e-7)
    # a tolerance nobody meets runs up to the ceiling and reports it
    ceiling = sentiment.attribute(TEXT, None, "integrated_gradients", 24, tolerance=0.0)
    assert ceiling.steps == 24 or ceiling.delta == 0.0


def test_our_convergence_delta_is_captums():
    """run_attribution takes f(input) and f(baseline) from its own batched pass and computes the
    delta from them; Captum's own return_convergence_delta on the same call must agree."""
    import torch
    from captum.attr import LayerIntegratedGradients

    from demos import sentiment
    from demos.inputs.text import encode, pad_baseline

    m = sentiment.load()
    enc = encode(m.processor, m.model, TEXT)
    base = pad_baseline(enc.ids, m.processor)

    def prob(ids, mask):
        return torch.softmax(m.model(input_ids=ids, attention_mask=mask.expand(ids.shape[0], -1)).logits.float(), -1)[:, 1]

    ours = attribution.run_attribution(prob, enc.ids, base, "integrated_gradients", 16, layer=m.model.get_input_embeddings(),
                                   extra=(enc.mask,), batch=16)
    attrs, delta = LayerIntegratedGradients(prob, m.model.get_input_embeddings()).attribute(
        enc.ids, baselines=base, additional_forward_args=(enc.mask,), n_steps=16, internal_batch_size=16,
        return_convergence_delta=True,
    )
    torch.testing.assert_close(ours.attrs, attrs.detach(), rtol=1e-5, atol=1e-7)
    assert ours.delta == pytest.approx(float(delta.abs().max()), abs=1e-6)
    with torch.no_grad():
        assert ours.output_value == pytest.approx(float(prob(enc.ids, enc.mask)[0]), abs=1e-6)


def test_an_attribution_waits_between_batches_while_an_answer_computes():
    """Answers first: while an answer is computing, an attribution does not start its next batch
    (bounded), and it goes on as soon as the answer is done."""
    import threading
    import time

    from demos.runtime.priority import AnswerFirst

    gate = AnswerFirst(max_wait=5.0)
    started, release, order = threading.Event(), threading.Event(), []

    @gate.answer
    def answer():
        started.set()
        release.wait(5)
        order.append("answer done")

    worker = threading.Thread(target=answer)
    worker.start()
    started.wait(5)
    waiter = threading.Thread(target=lambda: (gate.yield_to_answers(), order.append("attribution batch")))
    waiter.start()
    time.sleep(0.2)
    assert order == []  # the batch waits for the answer
    release.set()
    worker.join(5)
    waiter.join(5)
    assert order == ["answer done", "attribution batch"] and gate.running == 0
    quick = AnswerFirst(max_wait=0.05)
    quick.running = 1  # an answer that never ends cannot starve explanations
    t0 = time.perf_counter()
    quick.yield_to_answers()
    assert time.perf_counter() - t0 < 1.0
