"""In-process micro-batches (demos.runtime.gather): every caller gets its own single-run answer; calls that
meet while a pass runs share the next one; one bad input fails only its caller."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from demos import sentiment
from demos.runtime import cache, gather


class Recorder:
    """A single and a batched function that record their calls; the first single run waits for
    `release`, so the calls arriving meanwhile queue up."""

    def __init__(self, fail_on: str = "") -> None:
        self.singles: list[str] = []
        self.batches: list[list[str]] = []
        self.started, self.release = threading.Event(), threading.Event()
        self.fail_on = fail_on

    def single(self, text: str, model_id: str | None = None) -> str:
        self.singles.append(text)
        if len(self.singles) == 1:
            self.started.set()
            self.release.wait(10)
        if text == self.fail_on:
            raise ValueError(f"bad input {text}")
        return f"{text}|{model_id}"

    def many(self, texts: list[str], model_id: str | None) -> list[str]:
        self.batches.append(list(texts))
        if self.fail_on in texts:
            raise ValueError("one item of the batch is bad")
        return [f"{t}|{model_id}" for t in texts]


def _burst(g: gather.Gather, rec: Recorder, texts: list[str], model_ids=None) -> list:
    """The first text alone, then the rest while it runs; every caller's outcome, in order."""
    model_ids = model_ids or [None] * len(texts)

    def one(i: int):
        try:
            return g(texts[i], model_ids[i])
        except ValueError as exc:
            return exc

    with ThreadPoolExecutor(len(texts)) as pool:
        first = pool.submit(one, 0)
        assert rec.started.wait(10)
        rest = [pool.submit(one, i) for i in range(1, len(texts))]
        while len(g._queue) < len(texts) - 1:  # every other caller is waiting in the queue
            threading.Event().wait(0.005)
        rec.release.set()
        return [first.result(10)] + [f.result(10) for f in rest]


def test_lone_call_is_the_single_run():
    rec = Recorder()
    rec.release.set()
    g = gather.Gather(rec.single, lambda: rec.many, max_size=8)
    assert g("alone", None) == "alone|None"
    assert rec.singles == ["alone"] and rec.batches == [] and list(g.sizes) == [1]


def test_calls_meeting_share_a_pass_and_each_gets_its_own():
    rec = Recorder()
    g = gather.Gather(rec.single, lambda: rec.many, max_size=4)
    texts = [f"t{i}" for i in range(10)]
    got = _burst(g, rec, texts)
    assert got == [f"{t}|None" for t in texts]
    assert list(g.sizes) == [1, 4, 4, 1]  # the first alone, then passes of at most max_size
    assert [len(b) for b in rec.batches] == [4, 4]
    assert not g._busy and not g._queue


def test_models_are_batched_apart():
    rec = Recorder()
    g = gather.Gather(rec.single, lambda: rec.many, max_size=8)
    got = _burst(g, rec, ["a", "b", "c", "d"], [None, "m1", "m2", "m1"])
    assert got == ["a|None", "b|m1", "c|m2", "d|m1"]
    assert sorted(map(sorted, rec.batches)) == [["b", "d"]]  # m2's lone item ran singly
    assert "c" in rec.singles


def test_a_bad_input_fails_only_its_caller():
    rec = Recorder(fail_on="bad")
    g = gather.Gather(rec.single, lambda: rec.many, max_size=8)
    got = _burst(g, rec, ["first", "x", "bad", "y"])
    assert got[0] == "first|None" and got[1] == "x|None" and got[3] == "y|None"
    assert isinstance(got[2], ValueError) and "bad input" in str(got[2])
    assert rec.batches == [["x", "bad", "y"]]  # the pass failed, so its items ran singly


def test_other_arguments_run_singly():
    rec = Recorder()
    rec.release.set()
    g = gather.Gather(rec.single, lambda: rec.many)
    assert g(["not", "text"], None) == "['not', 'text']|None" and list(g.sizes) == []
    assert gather.batch_item(g.signature, ("x",), {}) == ("x", None)
    assert gather.batch_item(g.signature, ("x", "m", "extra"), {}) is None


def test_batch_size_from_environment(monkeypatch):
    monkeypatch.setenv("XRAY_BATCH_SIZE", "3")
    assert gather.batch_size() == 3
    monkeypatch.setenv("XRAY_BATCH_SIZE", "many")
    assert gather.batch_size() == 8


def test_sentiment_answers_of_many_users_are_batched_and_equal_single_runs():
    """The app's own answer function (memo -> Gather -> model): 12 users at once get what a single
    run gives each of them, and at least one pass served several of them."""
    texts = [f"Student {i} found the film {'warm' if i % 2 else 'dull'} and the music {'bright' if i % 3 else 'slow'}." for i in range(12)]
    g = sentiment.analyse.fn.__wrapped__  # the memo's inner function, under the heap trim
    assert isinstance(g, gather.Gather)
    cache.clear_all()
    want = {t: sentiment.analyse(t) for t in texts}
    cache.clear_all()
    before = len(g.sizes)
    start = threading.Barrier(len(texts))

    def user(text: str):
        start.wait(10)
        return sentiment.analyse(text)

    with ThreadPoolExecutor(len(texts)) as pool:
        got = list(pool.map(user, texts))
    sizes = list(g.sizes)[before:]
    assert sum(sizes) == len(texts) and max(sizes) > 1
    for text, result in zip(texts, got):
        assert result.text == text and result.tokens == want[text].tokens
        np.testing.assert_allclose(result.probs, want[text].probs, atol=1e-5)
        np.testing.assert_allclose(result.attention.weights, want[text].attention.weights, atol=1e-5)
    cache.clear_all()


def test_a_lone_call_that_fails_runs_once():
    calls = []

    def single(text: str, model_id: str | None = None) -> str:
        calls.append(text)
        raise ValueError("no")

    g = gather.Gather(single, lambda: None, max_size=8)
    with pytest.raises(ValueError, match="no"):
        g("x", None)
    assert calls == ["x"] and not g._busy


def test_which_tasks_gather(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.delenv("XRAY_BATCH_SIZE", raising=False)
    assert gather.batches("sentiment") and gather.batches("explorer") and not gather.batches("qa")
    monkeypatch.setenv("XRAY_BATCH_SIZE", "1")
    assert not gather.batches("sentiment")
    monkeypatch.setenv("XRAY_BATCH_SIZE", "8")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")  # one GPU slice per call there
    assert not gather.batches("sentiment")


def test_long_texts_run_alone_short_ones_together():
    rec = Recorder()
    g = gather.Gather(rec.single, lambda: rec.many, max_size=8, max_chars=100)
    texts = ["first", "a" * 10, "b" * 10, "c" * 90, "d" * 10, "e" * 200, "f" * 10]
    got = _burst(g, rec, texts)
    assert got == [f"{t}|None" for t in texts]
    # passes: items x longest <= 100 characters; a text longer than that goes alone
    assert list(g.sizes) == [1, 2, 1, 1, 1, 1]
    assert rec.batches == [["a" * 10, "b" * 10]]


def test_calls_described_by_their_own_item_batch_by_group_and_run_alone_through_call_one():
    """Gather(item=, call_one=, size=): the payload and group come from `item`, a pass runs
    `many(payloads, group)` per group, a lone item runs `call_one(payload, group)`, and `size` is
    what the character budget counts (attributions use it: demos.runtime.compute.attribution_compute)."""
    started, release = threading.Event(), threading.Event()
    ones, passes = [], []

    def single(text: str, steps: int = 8) -> str:  # the first caller runs alone and holds the pass
        started.set()
        release.wait(10)
        return f"{text}/{steps}"

    def call_one(payload, group):
        ones.append((payload, group))
        return single(payload, group) if payload == "first" else f"{payload}/{group} alone"

    def many(payloads, group):
        passes.append((list(payloads), group))
        return [f"{p}/{group} together" for p in payloads]

    def item(args, kwargs):
        text, steps = (list(args) + [kwargs.get("steps", 8)])[:2]
        return None if text == "no" else (text, steps)

    g = gather.Gather(single, lambda: many, max_size=8, max_chars=24, item=item, call_one=call_one,
                      size=lambda p: 2 * len(p))
    calls = [("first",), ("a",), ("b",), ("c", 32), ("long-long",), ("d",)]
    with ThreadPoolExecutor(len(calls)) as pool:
        first = pool.submit(g, *calls[0])
        assert started.wait(10)
        rest = [pool.submit(g, *c) for c in calls[1:]]
        while len(g._queue) < len(calls) - 1:
            threading.Event().wait(0.005)
        release.set()
        got = [first.result(10)] + [f.result(10) for f in rest]
    assert got == ["first/8", "a/8 together", "b/8 together", "c/32 alone", "long-long/8 alone", "d/8 alone"]
    # budget 24 on size = 2 x length: a, b, c fit (3 x 2 = 6 <= 24); "long-long" (18) would make 4 x 18,
    # then d beside it 2 x 18: both alone; c's other step count is its own group, alone
    assert passes == [(["a", "b"], 8)] and list(g.sizes) == [1, 3, 1, 1]
    assert [p for p, _ in ones] == ["first", "c", "long-long", "d"]
    assert g("no") == "no/8" and list(g.sizes) == [1, 3, 1, 1]  # item None: the plain single call


def test_which_tasks_gather_attributions(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.delenv("XRAY_BATCH_SIZE", raising=False)
    assert gather.attributions_batch("sentiment") and not gather.attributions_batch("qa")
    monkeypatch.setenv("XRAY_BATCH_SIZE", "1")
    assert not gather.attributions_batch("sentiment")
    monkeypatch.setenv("XRAY_BATCH_SIZE", "8")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert not gather.attributions_batch("sentiment")
