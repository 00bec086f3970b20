"""Shared fixtures: tiny local models of every architecture (built once per session) and the
app configured to use them; a helper that serves tabs and returns a gradio_client Client."""
from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "xray-mpl"))
os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(tempfile.gettempdir(), "xray-gradio"))
# Offline, hub ids load from the Hugging Face cache when it has them (demos.provision.hubcache): tests must not
# depend on what a developer's own cache holds, so they see an empty one (tests/demos/provision/test_hubcache.py fills its own).
os.environ["HF_HUB_CACHE"] = os.path.join(tempfile.gettempdir(), "xray-empty-hf-cache")

import pytest

from demos.provision.tiny import TASKS, ensure_tiny_models
from demos.runtime import cache, loading, settings


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """task -> folder of a tiny random model of the real architecture: built in this session's
    temporary folder, or kept in XRAY_TEST_MODELS when set (built once, reused by later sessions:
    the mutation run starts one pytest session per mutant; see docs/TESTING.md)."""
    keep = os.environ.get("XRAY_TEST_MODELS")
    return ensure_tiny_models(keep if keep else tmp_path_factory.mktemp("tiny-models"), TASKS)


@pytest.fixture(scope="session", autouse=True)
def tiny_settings(tiny_models):
    """Point every task at its tiny model (as XRAY_MODEL_* would), offline."""
    overrides = {t: str(p) for t, p in tiny_models.items()}
    overrides["explorer"] = overrides["sentiment"]  # the explorer reads any encoder; DistilBERT will do
    settings.configure(settings.Settings(overrides=overrides, offline=True, max_models=16))
    cache.clear_all()
    loading.clear()
    yield settings.current()


@pytest.fixture(scope="session")
def serve():
    """serve(build_fn) -> gradio_client.Client for a Blocks app built by `build_fn()`.

    A single tab (`tab_app(module)`) is built and launched once per session for each model
    configuration and shared by the tests that serve it (each gets its own Client, so its own
    session): building and launching a tab costs seconds, a Client a fraction of one. Any other
    build is served anew. Servers started here are closed at the end of the session.
    """
    import gradio as gr
    from gradio_client import Client

    started = []
    shared: dict = {}

    def _serve(build_fn) -> Client:
        key = getattr(build_fn, "share_key", None)
        if key is not None:
            current = settings.current()
            key = (key, tuple(sorted(current.overrides.items())), current.offline)
            if key in shared:
                return Client(shared[key], verbose=False)
        demo = build_fn()
        if not isinstance(demo, gr.Blocks):
            raise TypeError("build_fn must return gr.Blocks")
        demo.queue(max_size=32, default_concurrency_limit=2)
        _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, ssr_mode=False, quiet=True)
        started.append(demo)
        if key is not None:
            shared[key] = url
        return Client(url, verbose=False)

    yield _serve
    for demo in started:
        demo.close()


def tab_app(module_name: str):
    """A Blocks holding one tab module's `build()` (for serving a single tab in tests)."""
    import importlib

    import gradio as gr

    def build():
        with gr.Blocks() as demo:
            importlib.import_module(module_name).build()
        return demo

    build.share_key = module_name  # the serve fixture launches each tab once (per model configuration)
    return build


@pytest.fixture(scope="session")
def browser():
    """One headless Debian Chromium for every browser test (Playwright allows one sync driver
    per process). Missing Chromium: a failure on CI, a skip elsewhere."""
    from playwright.sync_api import sync_playwright

    from tests.browser_support import CHROMIUM_ARGS, chromium_path

    executable = chromium_path()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def launch_full_app():
    """(app, url) of the whole app (every tab of app.TABS) as app.main starts it, on a free
    loopback port; the caller closes it."""
    import app
    from bench.serve import free_port

    for attempt in range(3):
        try:
            return app.start(app.parse_args(["--host", "127.0.0.1", "--port", str(free_port())]), block=False)
        except ValueError as exc:
            # Gradio's start-up probe gives up after one HEAD / slower than 3 s ("localhost is not
            # accessible"), which a 2-CPU machine running the whole suite can hit: start again.
            if "localhost is not accessible" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def pytest_collection_modifyitems(items):
    """The tab-parametrized tests of tests/test_browser.py tab by tab (each tab's tests in file order),
    so its fixture keeps one page open at a time: an open page of the app costs Chromium CPU even when
    idle (about 0.6-1 s of CPU every 10 s, measured 2026-12-06), and ten of them slowed every test."""
    module = [i for i, item in enumerate(items) if item.nodeid.startswith("tests/test_browser.py::")]
    by_tab = [items[i] for i in module if "title" in getattr(getattr(items[i], "callspec", None), "params", {})]
    if not by_tab:
        return
    order = list(dict.fromkeys(item.callspec.params["title"] for item in by_tab))
    ranked = [items[i] for i in module if items[i] not in by_tab]  # the others first
    ranked += sorted(by_tab, key=lambda item: order.index(item.callspec.params["title"]))
    for i, item in zip(module, ranked):
        items[i] = item
