"""The model tier on Ray Serve, proven on loopback: a local Ray cluster (2 CPUs) serves sentiment,
qa and image on the tiny models; every answer through `scale.backend` equals the in-process
answer, and concurrent sentiment requests are micro-batched yet each equals its single run."""
from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from demos.runtime import settings

ray = pytest.importorskip("ray", reason="ray[serve] is installed by scripts/setup.sh --scale")

pytestmark = pytest.mark.slow
TASKS = ("sentiment", "qa", "image")
CAT = str(Path(__file__).resolve().parents[2] / "assets" / "images" / "chelsea_cat.jpg")


def assert_same(got, want, path="result"):
    """Deep equality of plain results: dataclasses field by field (those in their equality: not the
    time a computation took), arrays allclose."""
    assert type(got) is type(want), f"{path}: {type(got).__name__} != {type(want).__name__}"
    if dataclasses.is_dataclass(want):
        for f in dataclasses.fields(want):
            if not f.compare:
                continue
            assert_same(getattr(got, f.name), getattr(want, f.name), f"{path}.{f.name}")
    elif isinstance(want, np.ndarray):
        assert got.shape == want.shape, f"{path}: shape {got.shape} != {want.shape}"
        if want.dtype.kind in "fc":
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=path)
        else:
            np.testing.assert_array_equal(got, want, err_msg=path)
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{path}[{i}]")
    elif isinstance(want, dict):
        assert got.keys() == want.keys(), path
        for k in want:
            assert_same(got[k], want[k], f"{path}[{k!r}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-5), path
    else:
        assert got == want, path


@pytest.fixture(scope="module")
def tier(tiny_settings):
    """A local Ray cluster with the tiny models' settings passed to the replicas explicitly."""
    from ray import serve

    from scale import backend, serve_app
    from scale.config import ServeConfig

    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    serve_app.local_cluster(num_cpus=2, env=env)
    try:
        config = ServeConfig(min_replicas=1, max_replicas=1, cpus=0.5, batch_size=8, batch_wait_s=0.2, max_ongoing=16)
        handles = serve_app.deploy(TASKS, dataclasses.asdict(settings.current()), config, env=env)
        backend.configure(backend.RayServe(address=None))
        yield handles
    finally:
        backend.configure(None)
        serve.shutdown()
        ray.shutdown()


def test_backend_defaults_to_inprocess(monkeypatch):
    from scale import backend
    from scale.config import backend_from_env

    assert backend_from_env({}) == ("inprocess", None)
    assert backend_from_env({"XRAY_BACKEND": "ray", "XRAY_RAY_ADDRESS": "ray://head:10001"}) == ("ray", "ray://head:10001")
    assert backend_from_env({"XRAY_BACKEND": "ray://head:10001"}) == ("ray", "ray://head:10001")
    with pytest.raises(ValueError):
        backend_from_env({"XRAY_BACKEND": "carrier-pigeon"})
    assert isinstance(backend.InProcess(), backend.InProcess)
    assert backend.InProcess().call("sentiment", "answer", "Fine.").probs.shape == (2,)


CASES = [
    ("sentiment", "answer", ("A warm and funny film.",), {}),
    ("sentiment", "analyse", ("The plot made no sense at all, and it dragged.",), {"model_id": None}),
    ("sentiment", "attribution", ("A warm and funny film.",), {"steps": 4}),
    ("qa", "answer", ("Who built the bridge?", "The bridge crosses a river. It was built by engineer Ada in 1901."), {}),
    ("qa", "attribution", ("Who built the bridge?", "It was built by engineer Ada in 1901."), {"which": "end", "steps": 4}),
    ("image", "answer", (CAT,), {}),
]


@pytest.mark.parametrize("task, fn, args, kwargs", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_answer_equals_inprocess(tier, task, fn, args, kwargs):
    from scale import backend

    remote = backend.call(task, fn, *args, **kwargs)
    local = backend.InProcess().call(task, fn, *args, **kwargs)
    assert_same(remote, local)


def test_progress_callback_is_dropped_on_the_wire(tier):
    from scale import backend

    calls = []
    remote = backend.call("sentiment", "attribution", "Quite good.", steps=4, progress=lambda *a, **k: calls.append(a))
    assert_same(remote, backend.InProcess().call("sentiment", "attribution", "Quite good.", steps=4))


def test_unknown_functions_are_refused(tier):
    from scale import backend

    with pytest.raises(backend.UnknownFunction):
        backend.call("sentiment", "load")
    with pytest.raises(backend.UnknownFunction):
        backend.call("asr", "attribution", "x")  # the registry says asr has no attribution


def test_concurrent_sentiment_requests_are_batched_and_each_equals_its_single_run(tier):
    from scale import backend

    texts = [f"User {i} thought the film was {'great ' * (i + 1)}but long." for i in range(8)]
    start = threading.Barrier(len(texts))

    def one(text):
        start.wait(timeout=30)
        return backend.call("sentiment", "answer", text)

    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        results = list(pool.map(one, texts))
    from demos import sentiment

    for text, got in zip(texts, results):
        assert got.text == text
        assert_same(got, sentiment.analyse(text))
    from scale.backend import outside_event_loop  # the browser tests leave an asyncio loop running here

    sizes = outside_event_loop(lambda: tier["sentiment"].stats.remote().result(timeout_s=60))["batch_sizes"]
    assert max(sizes) > 1, f"no request was batched: {sizes}"


def test_the_app_front_answers_through_the_tier_as_in_process(tier, serve, monkeypatch):
    """The real tab, with the Ray backend configured: its answer equals the in-process answer, and
    it cannot have come from this process (the local compute function is made to fail)."""
    from demos import sentiment
    from tests.conftest import tab_app

    text = "A warm and funny film."
    want = sentiment.analyse(text)
    client = serve(tab_app("ui.sentiment"))

    def not_here(*args, **kwargs):
        raise AssertionError("the front computed locally instead of calling the model tier")

    not_here.__module__ = sentiment.__name__  # looks like the task's own function to the front
    monkeypatch.setattr(sentiment, "analyse", not_here)
    label, model_line = client.predict(text, api_name="/sentiment")[:2]
    assert label["label"] == want.predicted
    got = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert got == pytest.approx(want.class_probs(), abs=1e-5)
    assert "RANDOM weights" in model_line


def test_an_explanation_sends_the_results_recipe_not_the_result_and_equals_in_process(tier, monkeypatch):
    """On Ray a result goes down to the tier as its recipe (a few hundred bytes), made again there from the
    answer's memo; the explanation equals the in-process one."""
    import pickle

    from scale import backend
    from ui import session

    text = "A warm and funny film, with a plot that never drags and a cast that clearly enjoys itself."
    result = session.remember(backend.call("sentiment", "answer", text), "sentiment", "answer", (text,), {})
    sent = []
    real = backend.RayServe._once

    def spy(self, task_key, fn_name, args, kwargs, deadline, used):
        sent.append(args)
        return real(self, task_key, fn_name, args, kwargs, deadline, used)

    monkeypatch.setattr(backend.RayServe, "_once", spy)
    remote = backend.call("sentiment", "ablate", result, heads="L0H0")
    (ref, *_), = sent
    assert isinstance(ref, backend.ResultRef) and (ref.task, ref.fn, ref.args) == ("sentiment", "answer", (text,))
    assert len(pickle.dumps(ref)) < 1_000 < len(pickle.dumps(result))
    assert_same(remote, backend.InProcess().call("sentiment", "ablate", result, heads="L0H0"))
