"""Attributions of students who ask at once (demos.runtime.gather under attribution_compute): the
requests that meet run in one batched Captum pass per method, and every student gets what a run of
their own gives, and what Captum's LayerIntegratedGradients / LayerGradientXActivation called directly
on that text alone give (tests/reference.py: the model in float64, the baseline built by hand)."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from demos import sentiment
from demos.runtime import cache, gather, loading
from tests import reference

STEPS = 8
TEXTS = [
    "A warm and funny film.",
    "The plot made no sense and the dialogue was painfully dull, from the first scene to the last.",
    "Fine.",
    "Not bad at all, though the ending dragged on.",
]


def _requests(labels: list[str]) -> list[tuple[str, str | None, str]]:
    """(text, target, method): texts of different lengths, the predicted class and both classes named,
    integrated gradients and gradient x input mixed (two groups in one gathered batch)."""
    return [
        (TEXTS[0], None, "integrated_gradients"),
        (TEXTS[1], None, "integrated_gradients"),
        (TEXTS[2], labels[0], "integrated_gradients"),
        (TEXTS[3], labels[1], "integrated_gradients"),
        (TEXTS[1], labels[0], "gradient_x_input"),
        (TEXTS[2], None, "gradient_x_input"),
    ]


def _while_the_task_is_busy(calls: list, progress: list) -> tuple[list, list[int]]:
    """Every call at once while another explanation of the task holds its lock: the first caller takes
    the lead alone, the rest queue and meet in the next pass. Returns the results and the pass sizes."""
    g = sentiment.attribute.gather
    busy, release = threading.Event(), threading.Event()

    @loading.in_explain_lane
    @loading.one_at_a_time(sentiment.TASK)
    def other_explanation() -> None:
        busy.set()
        release.wait(60)

    before = len(g.sizes)
    with ThreadPoolExecutor(len(calls) + 1) as pool:
        holder = pool.submit(other_explanation)
        assert busy.wait(10)
        futures = []
        for i, (text, target, method) in enumerate(calls):
            futures.append(pool.submit(sentiment.attribute, text, target, method, STEPS,
                                       progress=lambda f, m, i=i: progress[i].append(f)))
            if i == 0:
                while not g._busy:  # the first caller leads (alone): the others queue behind it
                    threading.Event().wait(0.005)
        while len(g._queue) < len(calls) - 1:
            threading.Event().wait(0.005)
        release.set()
        holder.result(10)
        return [f.result(120) for f in futures], list(g.sizes)[before:]


def test_attributions_of_students_who_meet_run_in_one_pass_and_equal_their_own_runs():
    assert isinstance(sentiment.attribute.gather, gather.Gather)
    cache.clear_all()
    labels = sentiment.analyse(TEXTS[0]).labels
    calls = _requests(labels)
    progress: list[list[float]] = [[] for _ in calls]
    got, sizes = _while_the_task_is_busy(calls, progress)
    assert sizes == [1, len(calls) - 1]  # the first alone, then everyone else in one gathered pass
    assert all(p and p[-1] == pytest.approx(1.0) for p in progress[1:3])  # each student's own bar filled
    for (text, target, method), batched in zip(calls, got):
        cache.clear_all()
        alone = sentiment.attribute(text, target, method, STEPS)  # a run of its own
        result = sentiment.analyse(text)
        want_target = result.predicted if target is None else target
        assert batched.tokens == alone.tokens == result.tokens and batched.target == alone.target == want_target
        assert batched.method == method and batched.steps == alone.steps
        assert alone.together == 1 and alone.seconds > 0 and batched.seconds > 0  # the cost the student sees
        scale = float(np.abs(alone.scores).max())
        np.testing.assert_allclose(batched.scores, alone.scores, rtol=0, atol=1e-5 * scale)
        assert batched.output_value == pytest.approx(alone.output_value, rel=1e-5)
        assert batched.baseline_value == pytest.approx(alone.baseline_value, rel=1e-5)
        # and Captum called directly on this text alone, the baseline built by hand
        ref = reference.sentiment(result, target=result.labels.index(want_target))
        want = ref.ig(steps=STEPS) if method == "integrated_gradients" else ref.gxi()
        reference.close(batched.scores, want)
        if method == "integrated_gradients":
            assert batched.delta == pytest.approx(alone.delta, abs=1e-6)
        else:
            assert batched.delta is None
    assert got[0].together == 1 and {b.together for b in got[1:]} - {1}  # the gathered ones say so
    cache.clear_all()


def test_a_bad_request_among_them_fails_alone():
    """One student names a class the model does not have: the gathered pass fails, its items run one
    by one, and only that student gets the error."""
    cache.clear_all()
    labels = sentiment.analyse(TEXTS[0]).labels
    calls = [(TEXTS[0], None, "integrated_gradients"), (TEXTS[1], "no such class", "integrated_gradients"),
             (TEXTS[2], labels[1], "integrated_gradients"), (TEXTS[3], None, "integrated_gradients")]
    g = sentiment.attribute.gather
    outcomes: list = []
    busy, release = threading.Event(), threading.Event()

    @loading.in_explain_lane
    @loading.one_at_a_time(sentiment.TASK)
    def other_explanation() -> None:
        busy.set()
        release.wait(60)

    def ask(text, target, method):
        try:
            return sentiment.attribute(text, target, method, STEPS)
        except ValueError as exc:
            return exc

    before = len(g.sizes)
    with ThreadPoolExecutor(len(calls) + 1) as pool:
        holder = pool.submit(other_explanation)
        assert busy.wait(10)
        futures = [pool.submit(ask, *calls[0])]
        while not g._busy:
            threading.Event().wait(0.005)
        futures += [pool.submit(ask, *c) for c in calls[1:]]
        while len(g._queue) < len(calls) - 1:
            threading.Event().wait(0.005)
        release.set()
        holder.result(10)
        outcomes = [f.result(120) for f in futures]
    assert list(g.sizes)[before:] == [1, 3]
    assert isinstance(outcomes[1], ValueError) and "Unknown class 'no such class'" in str(outcomes[1])
    assert [o.target for i, o in enumerate(outcomes) if i != 1] == [
        sentiment.analyse(TEXTS[0]).predicted, labels[1], sentiment.analyse(TEXTS[3]).predicted]
    cache.clear_all()
