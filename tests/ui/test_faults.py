"""Faults: a model that fails to load, running out of memory, and an unexpected exception. Each
gives its clear message in the tab, leaks no traceback or path, and the next request succeeds."""
from __future__ import annotations

import importlib
import logging
import shutil
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import gradio as gr
import pytest
import torch

from core import registry
from demos.explain import tasks
from demos.runtime import cache, loading, settings
from tests.cases import CASES
from tests.handlers import call
from ui.common import GENERIC_ERROR, OOM_ERROR

# tab module, api_name, task, demo module, inputs before the model (a fresh input per call `i`)
TABS = [(c.tab, c.api, key, c.demo, c.fresh_args) for key, c in CASES.items() if c.fresh_args]
IDS = [t[1] for t in TABS]


@pytest.fixture(scope="module")
def api():
    fns = {}
    for module, *_ in TABS:
        with gr.Blocks() as demo:
            importlib.import_module(module).build()
        fns.update({f.api_name: f for f in demo.fns.values() if f.api_name})
    return fns


def run(api, name: str, task: str, args: tuple):
    return call(api[name], *args, settings.current().choices(task)[0])


def error_of(api, name, task, args) -> str:
    with pytest.raises(gr.Error) as info:
        run(api, name, task, args)
    return info.value.message


@contextmanager
def model_folder(task: str, folder: Path):
    """Temporarily point `task` at `folder` (as XRAY_MODEL_<TASK> would); restore afterwards."""
    old = settings.current()
    settings.configure(replace(old, overrides={**old.overrides, task: str(folder)}))
    try:
        yield
    finally:
        settings.configure(old)
        cache.clear_all()


LOAD_CASES = [(*t, "empty") for t in TABS] + [(*t, "corrupt") for t in TABS if t[2] in ("sentiment", "image")]


@pytest.mark.parametrize("module, name, task, demo, make, kind", LOAD_CASES, ids=[f"{c[1]}-{c[-1]}" for c in LOAD_CASES])
def test_model_that_fails_to_load_is_named_and_not_cached(api, tiny_models, tmp_path, module, name, task, demo, make, kind):
    folder = tmp_path / f"broken-{task}"
    folder.mkdir()
    if kind == "corrupt":
        shutil.copytree(tiny_models[task], folder, dirs_exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"\0" * 100)
        (folder / "config.json").write_text("{ not json")
    with model_folder(task, folder):
        message = error_of(api, name, task, make(0))
        assert message == (
            f"Could not load the model for the {task} task ({folder.name}). "
            "The other tabs still work; the details are in the server log."
        )
        assert str(tmp_path) not in message and "Traceback" not in message
        assert (task, str(folder)) not in loading.resident()
        other = "sentiment" if task != "sentiment" else "qa"
        other_tab = next(t for t in TABS if t[2] == other)
        assert run(api, other_tab[1], other, other_tab[4](0))[0]  # another tab keeps working
        # the folder is repaired without a restart: the failure was not cached
        shutil.rmtree(folder)
        shutil.copytree(tiny_models[task], folder)
        assert run(api, name, task, make(0))[0] is not None
        assert (task, str(folder)) in loading.resident()


def _forward_raising(model: torch.nn.Module, exc: BaseException, request):
    """Make the next forward pass of `model` raise `exc` (a pre-hook: the forward signature, which
    `generate` inspects, stays as it is); later passes run normally."""
    calls = []

    def hook(module, args):
        calls.append(1)
        if len(calls) == 1:
            raise exc

    handle = model.register_forward_pre_hook(hook)
    request.addfinalizer(handle.remove)
    return calls


@pytest.mark.parametrize("module, name, task, demo, make", TABS, ids=IDS)
def test_out_of_memory_gives_the_oom_message_and_the_next_request_succeeds(api, request, module, name, task, demo, make):
    model = tasks.module(task).load().model
    calls = _forward_raising(model, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), request)
    assert error_of(api, name, task, make(1)) == OOM_ERROR
    assert calls
    assert run(api, name, task, make(1))[0] is not None  # same input again: nothing half-done was cached


@pytest.mark.parametrize("module, name, task, demo, make", TABS, ids=IDS)
def test_unexpected_error_is_generic_logged_and_the_next_request_succeeds(api, request, caplog, module, name, task, demo, make):
    model = tasks.module(task).load().model
    _forward_raising(model, KeyError("/srv/secret/weights.bin missing key 'h.0.attn'"), request)
    with caplog.at_level(logging.ERROR, logger="ui.common"):
        message = error_of(api, name, task, make(2))
    assert message == GENERIC_ERROR
    assert "/srv/secret" not in message and "Traceback" not in message and "KeyError" not in message
    record = next(r for r in caplog.records if r.name == "ui.common")
    assert "unexpected error" in record.getMessage() and record.exc_info and record.exc_info[0] is KeyError
    assert run(api, name, task, make(2))[0] is not None


def test_offline_without_a_local_model_says_what_to_set(api):
    old = settings.current()
    settings.configure(settings.Settings(offline=True))
    hooks = dict(loading._local_fallbacks)
    loading._local_fallbacks.clear()
    try:
        message = error_of(api, "qa", "qa", ("Where?", "In Paris."))
        assert message.startswith("Could not load the model for the qa task (distilbert-base-cased-distilled-squad).")
        assert "set XRAY_MODEL_QA to a folder" in message
    finally:
        loading._local_fallbacks.update(hooks)
        settings.configure(old)
        cache.clear_all()


@pytest.mark.slow
def test_broken_model_through_the_server_leaves_other_tabs_working(serve, tmp_path):
    from gradio_client.exceptions import AppError

    broken = tmp_path / "empty-sentiment"
    broken.mkdir()
    with model_folder("sentiment", broken):
        def build():
            with gr.Blocks() as demo:
                for module in ("ui.sentiment", "ui.qa"):
                    with gr.Tab(module):
                        importlib.import_module(module).build()
            return demo

        client = serve(build)
        with pytest.raises(AppError) as info:
            client.predict("A fine film.", api_name="/sentiment")
        assert str(info.value) == (
            "Could not load the model for the sentiment task (empty-sentiment). "
            "The other tabs still work; the details are in the server log."
        )
        assert client.predict("Where is it?", "It is in Paris.", api_name="/qa")[0]


@pytest.mark.parametrize("module", [spec.tab for spec in registry.TASKS] + ["ui.guide"])
def test_steps_chained_after_an_event_run_only_when_it_succeeded(module):
    """A failed main step shows one error, not a second one from the explanation chained after it."""
    with gr.Blocks() as demo:
        importlib.import_module(module).build()
    fns = list(demo.fns.values())
    chained = [f for f in fns if f.trigger_after is not None]
    for f in chained:
        assert f.trigger_only_on_success, f"{module}: {f.name} runs even after the step before it failed"
    spec = next((s for s in registry.TASKS if s.tab == module), None)
    attribution = next((f for f in fns if spec and f.api_name == spec.api_name("attribution")), None)
    if attribution is not None and spec.key != "image":  # pixel attributions run on request only
        main = next(f for f in fns if f.api_name == spec.api_name())
        by_id = {f._id: f for f in fns}
        step = attribution  # back along the chain (the instant first view sits between them)
        while step.trigger_after is not None and step._id != main._id:
            assert step.trigger_only_on_success
            step = by_id[step.trigger_after]
        assert step is main
        # explanations and the views' figures queue on their own, answers do not wait behind them
        from demos.runtime.gather import batch_size
        from ui.kit import EXPLANATION_QUEUE, VIEWS_QUEUE, attribution_queue

        queue = attribution_queue(spec.key)  # attributions that gather across students meet in a group of their own
        assert (queue == EXPLANATION_QUEUE) == (not spec.attribute_batch)
        assert attribution.concurrency_id == queue["concurrency_id"] != main.concurrency_id
        if spec.attribute_batch:  # a pass running and a whole batch waiting (ui.kit.gathering_room)
            assert attribution.concurrency_limit == 2 * batch_size() > 2
        if spec.batch:
            assert main.concurrency_limit == 2 * batch_size() > 2
        own = {EXPLANATION_QUEUE["concurrency_id"], VIEWS_QUEUE["concurrency_id"], queue["concurrency_id"]}
        assert main.concurrency_id not in own
        assert all(f.concurrency_id in own for f in fns if f.trigger_after == main._id)
        assert any(f.api_name == spec.api_name("views") and f.concurrency_id == VIEWS_QUEUE["concurrency_id"] for f in fns)


def test_a_refused_input_logs_one_line_and_no_traceback(serve, capfd, caplog):
    """A user's mistake (empty text, a model off the allow-list) answers with a clear message and
    leaves one line in the server log, not a traceback (Gradio prints one for every gr.Error)."""
    import logging

    from tests.conftest import tab_app

    client = serve(tab_app("ui.sentiment"))
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="ui.common"):
        for args in (("",), ("hello", "evil/model")):
            with pytest.raises(Exception) as info:  # gradio_client's AppError
                client.predict(*args, api_name="/sentiment")
            assert "Please enter some text" in str(info.value) or "not allowed" in str(info.value)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    refused = [r for r in caplog.records if r.getMessage().startswith("refused in")]
    assert len(refused) == 2 and all("\n" not in r.getMessage() for r in refused)
    assert "evil/model" not in str(info.value) and "/tmp" not in str(info.value)


def test_a_repeated_click_does_not_run_the_model_again(serve):
    """Two identical requests while the first still runs (a double click, or a click during the
    chained attribution) compute once: the second waits for the first's result (single flight in
    the memo) instead of queueing another full run; both get the same answer."""
    from demos import sentiment
    from demos.runtime import cache
    from tests.conftest import tab_app

    client = serve(tab_app("ui.sentiment"))
    client.predict("A film so warm and funny that it lingers.", api_name="/sentiment")
    cache.clear_all()
    args = ("predicted class", "integrated_gradients", 64, False)
    jobs = [client.submit(*args, api_name="/sentiment_attribution") for _ in range(2)]
    answers = [job.result(timeout=120) for job in jobs]
    # computed once: the second request took the first one's value (in flight, or from the memo after it)
    assert sentiment.attribute.misses == 1
    assert answers[0][0] == answers[1][0]  # the same summary line (same numbers)


@pytest.mark.parametrize("copy", ["1", "0"])
def test_an_answer_does_not_wait_for_an_explanation_of_its_task(monkeypatch, copy):
    """Explanations run on their own copy of the model under their own lock: while one holds its
    lock, an answer of the same task still computes (with XRAY_EXPLAIN_COPY=0 it must wait)."""
    import threading

    import torch

    from demos import sentiment
    from demos.runtime import cache, loading

    monkeypatch.setenv("XRAY_EXPLAIN_COPY", copy)
    cache.clear_all()
    held, release = threading.Event(), threading.Event()

    @loading.in_explain_lane
    def explanation():
        with torch.inference_mode():
            m = loading.load(sentiment.TASK)
            enc = m.processor("A calm film.", return_tensors="pt")
            logits = m.model(**enc).logits

        @loading.one_at_a_time(sentiment.TASK)
        def hold():
            held.set()
            release.wait(30)

        hold()
        return m, logits

    out = {}
    worker = threading.Thread(target=lambda: out.update(result=explanation()))
    worker.start()
    assert held.wait(30)
    answered = threading.Event()
    threading.Thread(target=lambda: (sentiment.analyse("An answer while an explanation runs."), answered.set()),
                     daemon=True).start()
    try:
        if copy == "1":
            assert answered.wait(30), "the answer waited for the explanation's lock"
        else:
            assert not answered.wait(1.0), "with one shared model the answer must wait"
    finally:
        release.set()
        worker.join(30)
    assert answered.wait(30)
    m_explain, logits = out["result"]
    m_answer = loading.load(sentiment.TASK)
    assert (m_explain is m_answer) == (copy == "0")
    with torch.inference_mode():
        enc = m_answer.processor("A calm film.", return_tensors="pt")
        assert torch.equal(m_answer.model(**enc).logits, logits)  # the copy computes the same numbers
