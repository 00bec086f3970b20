"""Load on the full app over loopback: thirty users at once across the tabs, each answered with
the answer to ITS input (or told the queue is full), none lost; the server survives; memory stays
flat over hundreds of requests. Users run in a child process (bench.load) so that they share
neither the GIL nor the resident memory of the server, which runs in this test process."""
from __future__ import annotations

import gc
from pathlib import Path

import pytest

from bench import load

pytestmark = pytest.mark.slow


def _launch(build, max_size: int):
    import app

    demo = build()
    demo.queue(max_size=max_size, default_concurrency_limit=2)
    kwargs = app.launch_kwargs(app.parse_args(["--host", "127.0.0.1", "--port", str(_free_port())]))
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **kwargs)
    return demo, url


def _free_port() -> int:
    from bench.serve import free_port

    return free_port()


@pytest.fixture(scope="module")
def full_app(tiny_models):
    """(url, tiny models folder) of the whole app queued as app.main does (max_size=64)."""
    import app

    demo, url = _launch(app.build_app, 64)
    yield url, str(Path(tiny_models["sentiment"]).parent)
    demo.close()


def _final_request_succeeds(url: str) -> None:
    from gradio_client import Client

    from demos import sentiment

    client = Client(url, verbose=False)
    try:
        out = client.predict("The server is still alive after the crowd.", api_name="/sentiment")
    finally:
        client.close()
    want = sentiment.analyse("The server is still alive after the crowd.")
    assert out[0]["label"] == want.predicted


LOAD_TABS = load.TABS


def test_thirty_users_across_tabs_each_get_their_own_answer(full_app):
    url, models = full_app
    clients, per_client = 30, 2
    r = load.run_child(url, clients, per_client, LOAD_TABS, models, timeout=90)
    total = clients * per_client
    assert r["errors"] == []
    assert r["failures"] == 0 and r["mixed"] == 0 and r["wrong"] == 0
    assert r["ok"] + r["busy"] == total  # nothing lost
    assert r["busy"] == 0  # 30 users, one pending request each, fit the queue of 64
    _final_request_succeeds(url)


def test_small_queue_answers_busy_clearly_and_recovers(tiny_models, monkeypatch):
    """Queue of 2 against 30 simultaneous users: some are told it is busy, none gets an error or
    someone else's answer, and the server answers normally afterwards. Each answer is made to
    take 0.3 s longer (as a real model would), so that the queue really fills."""
    import functools
    import time

    from demos import sentiment
    from tests.conftest import tab_app

    analyse = sentiment.analyse

    @functools.wraps(analyse)  # keeps __module__: the backend serves only the task module's own functions
    def slow_analyse(*args, **kwargs):
        time.sleep(0.3)
        return analyse(*args, **kwargs)

    monkeypatch.setattr(sentiment, "analyse", slow_analyse)
    demo, url = _launch(tab_app("ui.sentiment"), max_size=2)
    try:
        r = load.run_child(url, 30, 1, ("sentiment",), str(Path(tiny_models["sentiment"]).parent), timeout=90)
        assert r["failures"] == 0 and r["mixed"] == 0 and r["wrong"] == 0, r["errors"]
        assert r["ok"] + r["busy"] == 30
        assert r["busy"] > 0 and r["ok"] > 0
        _final_request_succeeds(url)
    finally:
        demo.close()


# Growth bound over the measured requests, after a warm-up that loaded every model, ran every
# tab and filled the memo caches. What may legitimately stay: Gradio keeps the gr.State of a
# closed session for an hour, and each run of bench.load opens 4 new sessions (measured: about
# 2.5 MB per session with the tiny models, 10-12 MB per run of 160 requests); the memo caches are
# bounded (8-32 results per function). A leak of each response (70-240 kB of JSON) or of each
# result (~0.5 MB of arrays) would add 11-80 MB more over 160 requests; 40 MB catches the larger
# leaks without flagging session state or allocator noise.
MEMORY_REQUESTS = (4, 40)
MAX_GROWTH_MB = 40.0


def test_memory_stays_flat_over_hundreds_of_requests(full_app):
    url, _ = full_app
    warm = load.run_child(url, 4, 10, load.TABS, None, timeout=90, expect="none")
    assert warm["failures"] == 0, warm["errors"]
    gc.collect()
    before = load.rss_mb()
    r = load.run_child(url, *MEMORY_REQUESTS, load.TABS, None, timeout=90, expect="none")
    gc.collect()
    after = load.rss_mb()
    print(f"server RSS {before:.0f} MB -> {after:.0f} MB over {r['ok']} requests")
    assert r["failures"] == 0 and r["ok"] == MEMORY_REQUESTS[0] * MEMORY_REQUESTS[1], r["errors"]
    assert after - before < MAX_GROWTH_MB, f"RSS grew {after - before:.0f} MB over {r['ok']} requests"


def test_clip_analyse_is_thread_safe(tmp_path):
    import threading

    from demos import clip

    image = load._image(tmp_path, 0, 0)
    errors: list[str] = []

    def worker(k: int) -> None:
        for i in range(150):
            if errors:
                return
            try:
                clip.analyse([image], f"a photo {k} {i}\na much longer drawing of request {i} with many more words in it {k}")
            except ValueError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all("Unable to create tensor" in e for e in errors), errors  # only the known race
    assert errors == [], f"{len(errors)} concurrent calls failed: {errors[0][:120]}"
