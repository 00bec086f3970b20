"""Memory per session: memos bounded by bytes, large attention stored float16, one copy shared by
the memo and every session with the same input, and session state deleted by Gradio's TTL."""
from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
import torch

from core.results import COMPACT_FROM_BYTES, AttentionMaps, Embeddings
from demos import qa, sentiment
from demos.runtime import cache, heap, loading

MIB = 2**20


@pytest.fixture
def empty_memos():
    cache.clear_all()
    yield
    cache.clear_all()


def test_nbytes_counts_arrays_once_and_views_by_their_owner():
    a = np.zeros(1000, np.float32)  # 4000 bytes
    b = np.zeros((10, 10), np.float64)  # 800 bytes
    maps = AttentionMaps(np.zeros((1, 1, 4, 4), np.float32), ["x"] * 4, ["x"] * 4)  # 64 bytes
    value = {"a": a, "again": [a, (a, a[:10])], "b": b, "maps": maps, "text": "not an array", "n": 3}
    assert cache.nbytes(value) == 4000 + 800 + 64
    assert cache.nbytes(a[::100]) == 4000  # a view keeps its whole base alive
    assert cache.nbytes(Embeddings(b, ["p"] * 10)) == 800
    assert cache.nbytes(None) == cache.nbytes("text") == 0


def test_memo_evicts_least_recently_used_by_bytes_across_memos(empty_memos, monkeypatch):
    monkeypatch.setenv("XRAY_CACHE_MB", "1")  # 1,048,576 bytes for all memos together
    size = 400_000  # 100,000 float32
    calls: list[tuple[str, int]] = []

    @cache.memo(maxsize=10)
    def first(i: int) -> np.ndarray:
        calls.append(("first", i))
        return np.full(size // 4, i, np.float32)

    @cache.memo(maxsize=10)
    def second(i: int) -> dict:
        calls.append(("second", i))
        return {"x": np.full(size // 4, i, np.float32)}

    first(1), first(2)
    assert cache.held_bytes() == 2 * size
    first(1)  # 1 is now more recent than 2
    second(3)  # 1,200,000 > budget: the least recently used entry of any memo (first(2)) goes
    assert cache.held_bytes() == 2 * size
    assert set(first.data) == {(("i", 1),)} and set(second.data) == {(("i", 3),)}
    calls.clear()
    first(1), second(3)
    assert calls == []  # still cached
    first(2)  # evicted: computed again, which evicts first(1), now the oldest
    assert calls == [("first", 2)] and cache.held_bytes() == 2 * size
    assert set(first.data) == {(("i", 2),)}

    @cache.memo(maxsize=10)
    def huge(i: int) -> np.ndarray:
        calls.append(("huge", i))
        return np.zeros(2 * MIB // 8, np.float64)  # 2 MiB: more than the whole budget

    calls.clear()
    assert huge(1).nbytes == 2 * MIB and huge(1).nbytes == 2 * MIB
    assert calls == [("huge", 1), ("huge", 1)]  # returned, never kept
    assert cache.held_bytes() == 2 * size  # and nothing else was evicted for it


def test_count_bound_still_applies_and_accounting_follows_it(empty_memos, monkeypatch):
    monkeypatch.setenv("XRAY_CACHE_MB", "64")

    @cache.memo(maxsize=2)
    def make(i: int) -> np.ndarray:
        return np.zeros(1000, np.uint8)

    for i in range(5):
        make(i)
    assert len(make.data) == 2 and cache.held_bytes() == 2000
    make.cache_clear()
    assert cache.held_bytes() == 0


def test_concurrent_calls_of_a_value_too_large_to_keep_compute_once(empty_memos, monkeypatch):
    monkeypatch.setenv("XRAY_CACHE_MB", "0")
    calls = []

    @cache.memo(maxsize=4)
    def slow(x: int) -> np.ndarray:
        calls.append(x)
        time.sleep(0.2)
        return np.ones(10)

    got = []
    threads = [threading.Thread(target=lambda: got.append(slow(7))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [7] and len(got) == 4 and all(g is got[0] for g in got)


def test_large_attention_is_stored_float16_small_stays_exact():
    rng = np.random.default_rng(0)
    small = rng.random((2, 4, 20, 20), dtype=np.float32)
    assert AttentionMaps(small, [], []).weights is small  # untouched: exact
    n = int(np.ceil(np.sqrt(COMPACT_FROM_BYTES / (4 * 2 * 4)))) + 1
    large = rng.dirichlet(np.ones(n), size=(2, 4, n)).astype(np.float32)
    maps = AttentionMaps(large, [], [])
    assert maps.weights.dtype == np.float16 and maps.weights.nbytes == large.nbytes // 2
    np.testing.assert_allclose(maps.weights, large, rtol=2**-11, atol=2**-25)  # float16's rounding
    hidden = rng.random((3, n, 64), dtype=np.float32)
    assert Embeddings(hidden, []).vectors is hidden  # hidden states stay float32


def test_512_token_result_matches_the_model_at_the_stored_precision(empty_memos):
    text = "the film was long but the ending was good " * 80  # > 512 tokens: truncated to 512
    result = sentiment.analyse(text)
    m = loading.load(sentiment.TASK)
    enc = m.processor(text, truncation=True, max_length=512, return_tensors="pt")
    with torch.inference_mode():
        out = m.model(**enc, output_attentions=True, output_hidden_states=True)
    want = torch.stack(out.attentions, 1)[0].numpy()  # (layers, heads, 512, 512)
    assert want.nbytes > COMPACT_FROM_BYTES and result.attention.weights.shape == want.shape
    assert result.attention.weights.dtype == np.float16
    np.testing.assert_allclose(result.attention.weights, want, rtol=2**-11, atol=2**-25)
    hidden = torch.stack(out.hidden_states, 1)[0].numpy()
    assert result.embeddings.vectors.dtype == np.float32
    np.testing.assert_allclose(result.embeddings.vectors, hidden, atol=1e-5)
    assert cache.nbytes(result) < want.nbytes // 2 + hidden.nbytes + 64 * 1024


# --- served tabs: Gradio's own State, TTL and sessions -------------------------------------------

def _served(*modules: str):
    import importlib

    import gradio as gr
    from gradio_client import Client

    with gr.Blocks() as demo:
        for name in modules:
            with gr.Tab(name):
                importlib.import_module(name).build()
    demo.queue(max_size=64, default_concurrency_limit=2)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, ssr_mode=False, quiet=True)
    return demo, (lambda: Client(url, verbose=False))


def _held_results(demo, clients, kinds=(sentiment.SentimentResult, qa.QAResult)) -> list:
    """The result objects held in these clients' server-side session state."""
    sessions = demo.state_holder.session_data
    return [v for c in clients if c.session_hash in sessions
            for v in list(sessions[c.session_hash].state_data.values()) if isinstance(v, kinds)]


def _wait_until(predicate, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.25)
    return predicate()


@pytest.mark.slow
def test_sessions_share_the_memo_copy_and_gradio_deletes_it_after_the_ttl(empty_memos, monkeypatch):
    monkeypatch.setenv("XRAY_STATE_TTL_S", "2")
    demo, connect = _served("ui.sentiment")
    try:
        a, b, c = connect(), connect(), connect()
        text = "A long and quiet film with a warm ending."
        a.predict(text, api_name="/sentiment")
        b.predict(text, api_name="/sentiment")
        c.predict("Another text entirely.", api_name="/sentiment")
        (ra,), (rb,), (rc,) = (_held_results(demo, [x]) for x in (a, b, c))
        memo_values = list(sentiment.analyse.data.values())
        assert ra is rb and any(ra is v for v in memo_values)  # one server-side copy for one input
        assert rc is not ra and rc.text != ra.text  # a session only ever holds its own input's result
        assert demo.blocks[next(k for k, v in demo.state_holder.session_data[a.session_hash].state_data.items()
                                if v is ra)].time_to_live == 2
        assert _wait_until(lambda: not _held_results(demo, [a, b, c]), 30), "state outlived its TTL"
        sentiment.analyse.cache_clear()
        gc.collect()
        assert all(r.text for r in (ra, rb, rc))  # our own references still work: nothing was mutated
        for client in (a, b, c):
            client.close()
    finally:
        demo.close()


def _live_result_bytes(kinds=(sentiment.SentimentResult, qa.QAResult)) -> int:
    """Bytes of the numpy arrays of every result object alive in this process (sessions, memos,
    anywhere), each buffer counted once: a copy held anywhere would count again."""
    gc.collect()
    return cache.nbytes([o for o in gc.get_objects() if isinstance(o, kinds)])


def _stored(demo, clients) -> list:
    """What these clients' sessions store in their result states."""
    sessions = demo.state_holder.session_data
    return [v for c in clients if c.session_hash in sessions for v in list(sessions[c.session_hash].state_data.values())]


def _shown_heatmap(views) -> np.ndarray:
    """The attention heatmap among a `<task>_views` call's outputs (the first heatmap trace)."""
    import plotly.io as pio

    from tests.test_app import _array

    for value in views:
        if isinstance(value, dict) and value.get("plot"):
            for trace in pio.from_json(value["plot"]).data:
                if trace.type == "heatmap":
                    return _array(trace.z)
    raise AssertionError("no heatmap among the views")


@pytest.mark.slow
def test_a_loopback_class_holds_recipes_the_memo_bounds_it_and_idle_sessions_end(empty_memos, monkeypatch):
    """8 students, each running two tabs on its own 512-token inputs. Sessions store each large
    result's recipe, so the server holds at most the memos' budget of results; a student whose
    result left the memo still gets the same views (computed again); idle sessions then end."""
    from ui import session
    from viz.attention import AVERAGE, select_heads

    n_students, budget_mb, ttl = 8, 8, 5.0
    monkeypatch.setenv("XRAY_CACHE_MB", str(budget_mb))
    monkeypatch.setenv("XRAY_SESSION_REF_MB", "1")  # the tiny models' 512-token results are 1.8-4.4 MB
    # the background sweeper must not end sessions while the (slow, on a busy machine) class runs:
    # this test sweeps itself, with `ttl`, once the class is done
    monkeypatch.setenv("XRAY_STATE_TTL_S", "3600")
    texts = [(f"student {i} wrote that the film was long and slow but the ending was good " * 60).strip() for i in range(n_students)]
    question = "What did the student write?"
    one_pair = cache.nbytes(sentiment.analyse(texts[0])) + cache.nbytes(qa.answer(question, texts[0]))
    cache.clear_all()
    class_bytes = n_students * one_pair
    assert class_bytes > 4 * budget_mb * MIB  # without recipes the class would hold four budgets and more

    demo, connect = _served("ui.sentiment", "ui.qa")
    clients = [connect() for _ in range(n_students)]
    before = _live_result_bytes()
    try:
        for client, text in zip(clients, texts):
            client.predict(text, api_name="/sentiment")
            client.predict(question, text, api_name="/qa")
        stored = _stored(demo, clients)
        refs = [v for v in stored if isinstance(v, session.ResultRef)]
        assert len(refs) == 2 * n_students and not _held_results(demo, clients)
        assert {r.args[0] for r in refs if r.task == "sentiment"} == set(texts)  # each its own input
        assert cache.held_bytes() <= budget_mb * MIB
        assert _live_result_bytes() - before <= budget_mb * MIB  # results alive: the memo's share only

        # the first student's result was evicted long ago: its views are computed again, the same
        assert not any(dict(k)["text"] == texts[0] for k in sentiment.analyse.data)
        shown = _shown_heatmap(clients[0].predict(api_name="/sentiment_views"))
        maps = sentiment.analyse(texts[0]).attention
        np.testing.assert_allclose(shown, select_heads(maps.weights, maps.n_layers - 1, AVERAGE), atol=1e-6)

        time.sleep(ttl + 0.5)
        late = connect()  # a student who is still active is not swept
        late.predict("Still here.", api_name="/sentiment")
        dropped = session.sweep(demo, ttl)
        sessions = demo.state_holder.session_data
        assert dropped >= n_students and not any(c.session_hash in sessions for c in clients)
        assert late.session_hash in sessions
        after = _live_result_bytes()
        assert after - before <= 0.1 * class_bytes, (before, after, class_bytes)
        late.close()
    finally:
        for client in clients:
            client.close()
        demo.close()


def test_malloc_tuning_is_applied_unless_switched_off(monkeypatch):
    import platform

    monkeypatch.setenv("XRAY_MALLOC_TUNE", "0")
    assert heap.tune() is False
    off = heap.Trimmer(interval=0.0)
    off.soon()
    assert off._thread is None and off.done == 0  # no trims either
    monkeypatch.setenv("XRAY_MALLOC_TUNE", "1")
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert heap.tune() is True  # mallopt accepted both settings


_HOLES = """
import numpy as np
from demos.runtime import heap
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"): return int(line.split()[1]) // 1024
assert heap.tune()
blocks = [np.ones(2**19, dtype=np.float32) for _ in range(64)]  # 64 x 2 MiB: under the mmap threshold
del blocks[::2]  # 32 free holes of 2 MiB between live blocks: glibc keeps them
before = rss(); assert heap.trim(); print(before - rss())
"""


@pytest.mark.skipif(not heap.available(), reason="malloc_trim is glibc's")
def test_trim_returns_freed_heap_blocks_to_the_os():
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _HOLES], capture_output=True, text=True, check=True)
    assert int(run.stdout.strip()) >= 48  # of the 64 MiB freed inside the heap (MiB of RSS)


def test_a_computed_call_asks_for_a_trim_and_a_memo_hit_does_not(monkeypatch, empty_memos):
    asked = []
    monkeypatch.setattr(heap.trimmer, "soon", lambda: asked.append(1))
    sentiment.analyse("a heap trim after this answer")
    assert len(asked) == 1
    sentiment.analyse("a heap trim after this answer")  # the memo's copy: nothing computed, nothing freed
    assert len(asked) == 1

    def fails():
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        heap.trimmed(fails)()
    assert len(asked) == 2  # what the failed call allocated is given back too


@pytest.mark.skipif(not heap.available(), reason="malloc_trim is glibc's")
def test_the_trimmer_trims_in_its_own_thread_at_most_once_per_interval():
    trimmer = heap.Trimmer(interval=0.5)
    trimmer.soon()
    deadline = time.monotonic() + 5
    while trimmer.done < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert trimmer.done == 1
    for _ in range(20):  # a burst within the interval: one more trim, after it
        trimmer.soon()
    time.sleep(0.2)
    assert trimmer.done == 1
    deadline = time.monotonic() + 5
    while trimmer.done < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.7)
    assert trimmer.done == 2
