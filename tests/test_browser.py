"""End-to-end tests of the whole app in headless Chromium (Playwright), offline.

One row per tab in tests/browser_support.py drives every test: run the tab's example and see
its views render, feed script-like text to every textbox, upload good and bad files, send an
empty input. Every request that is not to the loopback server is aborted and reported, and any
console error fails the test. Screenshots of each tab go to docs/screenshots/.

Run: python -m pytest -q -m browser tests/test_browser.py
"""
from __future__ import annotations

import socket

import pytest

import app
from tests.browser_support import (
    ASSETS,
    CHROMIUM_ARGS,
    ROWS,
    MAX_PNG_BYTES,
    PAYLOADS,
    VIEWPORT,
    Watched,
    chromium_path,
    make_png,
    row_for,
    save_screenshot,
    slug,
    textbox_labels,
    view_problems,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TAB_PARAMS = [pytest.param(title, module, id=slug(title)) for title, module in app.TABS]
UPLOAD_TABS = [p for p in TAB_PARAMS if p.values[1] in ROWS and ROWS[p.values[1]].upload]
TEXT_TABS = [p for p in TAB_PARAMS if p.values[1] in ROWS and ROWS[p.values[1]].text_inputs]
EMPTY_TABS = [p for p in TAB_PARAMS if p.values[1] in ROWS and ROWS[p.values[1]].empty_message]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_url(tiny_settings):
    """The full app (every tab of app.TABS) served on loopback with the tiny models."""
    demo = app.build_app()
    demo.queue(max_size=64, default_concurrency_limit=2)
    kwargs = app.launch_kwargs(app.parse_args(["--host", "127.0.0.1", "--port", str(_free_port())]))
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **kwargs)
    yield url
    demo.close()


@pytest.fixture(scope="session")
def browser():
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def watched(browser, app_url):
    """A fresh page on the app; at the end no console error and no off-loopback request."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    w = Watched(page)
    page.goto(app_url)
    page.get_by_role("tab").first.wait_for()
    yield w
    context.close()
    assert not w.errors, "console errors:\n" + "\n".join(w.errors)
    assert not w.blocked, "the page tried to reach the network:\n" + "\n".join(w.blocked)


def test_rows_match_tabs():
    """Every tab of the app has a row (and so is covered by every test below)."""
    for _, module in app.TABS:
        row_for(module)


@pytest.mark.parametrize(("title", "module"), TAB_PARAMS)
def test_tab_runs_and_renders(watched, title, module):
    row = row_for(module)
    panel = watched.open_tab(title)
    if row.example:
        watched.click_example(panel)
    watched.run(panel, row)
    assert not watched.toasts(), f"{title}: error shown for its own example: {watched.toasts()}"
    answer = watched.wait_answer(panel, row)
    assert answer
    problems = view_problems(watched, panel, row)
    assert not problems, f"{title}: " + "; ".join(problems)
    first_inner = next((k for k in row.views if k is not None), None)
    if first_inner:
        watched.inner_tab(panel, first_inner)
    shot = save_screenshot(watched.page, slug(title))
    assert 0 < shot.stat().st_size < MAX_PNG_BYTES


@pytest.mark.parametrize(("title", "module"), TEXT_TABS)
def test_script_like_text_stays_text(watched, title, module):
    row = row_for(module)
    panel = watched.open_tab(title)
    labels = [label for label in textbox_labels(panel) if label not in row.skip_textboxes]
    assert labels, f"{title}: no editable textbox found"
    for label in labels:
        if row.example:
            watched.click_example(panel)  # the other inputs valid, this one replaced
        for payload in PAYLOADS:
            panel.get_by_label(label, exact=True).first.fill(payload)
            watched.run(panel, row)
            assert not watched.toasts(), f"{title} / {label} / {payload!r}: {watched.toasts()}"
            assert not watched.xss_fired(), f"{title} / {label}: {payload!r} ran in {watched.xss_fired()}"
            if label in row.echo:
                shown = panel.locator(row.echo[label]).first
                shown.wait_for()
                assert payload in shown.inner_text(), f"{title}: {payload!r} not shown literally in {row.echo[label]}"
    assert watched.page.evaluate("typeof window.__xss") == "undefined"


def _file_input(panel, kind: str):
    scope = panel.locator("[data-testid=image]").first if kind == "image" else panel
    return scope.locator("input[type=file]").first


@pytest.mark.parametrize(("title", "module"), UPLOAD_TABS)
def test_uploads(watched, title, module, tmp_path):
    row = row_for(module)
    panel = watched.open_tab(title)
    if row.upload == "audio":
        good = sorted((ASSETS / "audio").glob("*.wav"))[0]
        _file_input(panel, "audio").set_input_files(str(good))
        panel.locator("audio, [data-testid=waveform-Speech], .waveform-container").first.wait_for(state="attached")
        watched.run(panel, row)
        assert not watched.toasts(), watched.toasts()
        assert watched.wait_answer(panel, row)
        return
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is a text file, not a picture\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for bad, words in ((not_image, "image"), (empty, "empty")):
        _file_input(panel, "image").set_input_files(str(bad))
        watched.run(panel, row)
        messages = watched.wait_toast()
        assert any(words in m.lower() for m in messages), f"{title}: unclear message for {bad.name}: {messages}"
        watched.close_toasts()
        assert not row.answer(panel), f"{title}: an answer appeared for {bad.name}"
    good = make_png(tmp_path / "gradient.png") if module == "ui.clip" else sorted((ASSETS / "images").glob("*.jpg"))[0]
    _file_input(panel, "image").set_input_files(str(good))
    watched.run(panel, row)
    assert not watched.toasts(), f"{title}: good image after bad ones: {watched.toasts()}"
    assert watched.wait_answer(panel, row)


@pytest.mark.parametrize(("title", "module"), EMPTY_TABS)
def test_empty_input_message_then_recovery(watched, title, module):
    row = row_for(module)
    panel = watched.open_tab(title)
    for label in textbox_labels(panel):
        panel.get_by_label(label, exact=True).first.fill("")
    watched.run(panel, row)
    messages = watched.wait_toast()
    assert row.empty_message in messages, f"{title}: {messages}"
    watched.close_toasts()
    watched.click_example(panel)
    watched.run(panel, row)
    assert not watched.toasts(), watched.toasts()
    assert watched.wait_answer(panel, row)
