"""Requests that arrive at the same moment: threads released together by one barrier (answers,
attributions and explainers of the same task and of different tasks, which share loaded models,
explain-lane copies, hooks and memo caches) each get exactly what the same request gives alone."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from core import registry
from demos import generation, qa, sentiment
from demos.explain import contrast
from demos.runtime import cache
from tests.cases import result_for

TEXTS = ["A warm and funny film.", "The plot made no sense at all.", "Not bad, though the end dragged."]


def _requests() -> dict:
    """name -> a call; results must not depend on what else runs."""
    gen = result_for("generation")
    question, context = registry.examples("qa")[0]
    senti = result_for("sentiment")
    calls = {f"attribute {t}": (lambda t=t: sentiment.attribute(t, None, "integrated_gradients", 8)) for t in TEXTS}
    calls.update({f"analyse {t}": (lambda t=t: sentiment.analyse(t)) for t in TEXTS})
    calls.update({
        "sentiment contrast": lambda: contrast.why_not("sentiment", senti, steps=8),
        "generation attribute": lambda: generation.attribute(gen.ids, gen.n_prompt + 1, "integrated_gradients", 8),
        "generation contrast": lambda: contrast.why_not("generation", gen, steps=8),
        "qa attribute": lambda: qa.attribute(question, context, "end", "integrated_gradients", 8),
    })
    return calls


def _numbers(value) -> list[np.ndarray]:
    """The arrays a result shows (whatever its type), to compare two runs."""
    out = []
    for name in ("scores", "probs", "deletion", "spearman"):
        if getattr(value, name, None) is not None:
            out.append(np.asarray(getattr(value, name), np.float64))
    for name in ("output_value", "baseline_value", "p_a", "p_b", "original", "baseline"):
        if isinstance(getattr(value, name, None), float):
            out.append(np.array([getattr(value, name)]))
    if getattr(value, "attribution", None) is not None:
        out += _numbers(value.attribution)
    if getattr(value, "attention", None) is not None and hasattr(value.attention, "weights"):
        out.append(np.asarray(value.attention.weights, np.float64))
    assert out, f"nothing to compare in {type(value).__name__}"
    return out


@pytest.mark.slow  # about 30 s: eleven requests of every kind, each run twice
def test_requests_released_together_each_equal_their_single_run():
    calls = _requests()
    cache.clear_all()
    alone = {name: _numbers(fn()) for name, fn in calls.items()}
    cache.clear_all()  # every concurrent request computes again
    start = threading.Barrier(len(calls))
    running, most = [0], [0]
    lock = threading.Lock()

    def request(name: str):
        start.wait(30)
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return name, _numbers(calls[name]())
        finally:
            with lock:
                running[0] -= 1

    with ThreadPoolExecutor(len(calls)) as pool:
        together = dict(pool.map(request, list(calls)))
    assert most[0] > 1  # they really overlapped
    for name, want in alone.items():
        got = together[name]
        assert len(got) == len(want), name
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7, err_msg=name)
    cache.clear_all()


def test_cold_models_loaded_by_users_at_once_all_load_and_later_loads_still_work():
    """Users of different tabs arriving at a cold server together: each tab's model loads with real
    weights, and a load afterwards works too. transformers builds a model under process-wide
    patches (meta-device init) that concurrent from_pretrained calls can leave in place for good;
    without one loading lock every later load in the process then fails with "Cannot copy out of
    meta tensor"."""
    from demos.runtime import loading

    tasks = [spec.key for spec in registry.TASKS] * 2
    loading.clear()
    start = threading.Barrier(len(tasks))

    def cold_load(task: str):
        start.wait(30)
        return loading.load(task)

    try:
        with ThreadPoolExecutor(len(tasks)) as pool:
            loaded = list(pool.map(cold_load, tasks))
        for m in loaded:
            meta = [name for name, p in m.model.named_parameters() if p.is_meta]
            assert not meta, f"{m.task}: parameters left on the meta device: {meta[:3]}"
        loading.clear()
        for task in dict.fromkeys(tasks):  # one at a time, after the crowd
            assert not any(p.is_meta for p in loading.load(task).model.parameters()), task
    finally:
        loading.clear()
