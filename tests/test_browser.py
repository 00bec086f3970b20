"""End-to-end tests of the whole app in headless Chromium (Playwright), offline.

One row per tab in tests/browser_support.py drives every test: run the tab's example and see
its views render, feed script-like text to every textbox, upload good and bad files, send an
empty input. Every request that is not to the loopback server is aborted and reported, and any
console error fails the test. Screenshots of each tab go to a temporary folder, or to
docs/screenshots/ with XRAY_SCREENSHOTS=1 (how the README's pictures are made).

Run: python -m pytest -q -m browser tests/test_browser.py
"""
from __future__ import annotations

import pytest

import app
from tests.browser_support import (
    ASSETS,
    EXPLAINER_VIEWS,
    MAX_PNG_BYTES,
    PAYLOAD_TEXT,
    PAYLOADS,
    ROWS,
    VIEWPORT,
    Row,
    Watched,
    make_png,
    row_for,
    save_screenshot,
    slug,
    textbox_labels,
    view_problems,
)
from tests.conftest import launch_full_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TAB_PARAMS = [pytest.param(title, module, id=slug(title)) for title, module in app.TABS]
UPLOAD_TABS = [p for p in TAB_PARAMS if p.values[1] in ROWS and ROWS[p.values[1]].upload]
TEXT_TABS = [p for p in TAB_PARAMS if p.values[1] in ROWS and ROWS[p.values[1]].text_inputs]


@pytest.fixture(scope="module")
def app_url(tiny_settings):
    """The full app (every tab of app.TABS) served on loopback with the tiny models (stopped after this module:
    an idle page keeps its renderer busy, and the rest of the suite needs the CPUs)."""
    demo, url = launch_full_app()
    yield url
    demo.close()


def _new_page(browser, app_url) -> Watched:
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.set_default_timeout(30_000)
    w = Watched(page)
    page.goto(app_url)
    page.get_by_role("tab").first.wait_for()
    return w


def _assert_clean(w: Watched) -> None:
    assert not w.errors, "console errors:\n" + "\n".join(w.errors)
    assert not w.blocked, "the page tried to reach the network:\n" + "\n".join(w.blocked)


@pytest.fixture(scope="module")
def _pages(browser, app_url):
    """The page of the tab under test, shared by that tab's tests (a page load costs seconds)."""
    pages: dict[str, Watched] = {}
    yield pages
    for w in pages.values():
        w.page.context.close()


@pytest.fixture
def tab_page(_pages, browser, app_url, request):
    """The shared page of this test's tab; no console error and no off-loopback request meanwhile.
    One page open at a time: the tests run tab by tab (tests/conftest.py), so another tab's page is done."""
    title = request.node.callspec.params["title"]
    if title not in _pages:
        for other in list(_pages):
            _pages.pop(other).page.context.close()
        _pages[title] = _new_page(browser, app_url)
    w = _pages[title]
    w.reset()
    yield w
    _assert_clean(w)


@pytest.fixture
def fresh_page(browser, app_url):
    """A page of its own (for tests that need the inputs and outputs empty)."""
    w = _new_page(browser, app_url)
    yield w
    w.page.context.close()
    _assert_clean(w)


def test_the_watch_records_a_request_off_loopback(browser):
    """What the fixtures assert after every page (`blocked` empty) can fail: an image on another host is
    recorded, and the browser never reaches it (no host name but localhost resolves)."""
    context = browser.new_context()
    w = Watched(context.new_page())
    failed = []
    w.page.on("requestfailed", lambda req: failed.append(req.url))
    w.page.set_content('<img src="https://cdn.example.org/x.png"><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">')
    w.page.wait_for_timeout(500)
    context.close()
    assert w.blocked == ["https://cdn.example.org/x.png"]
    assert failed == ["https://cdn.example.org/x.png"]


def test_rows_match_tabs():
    """Every tab of the app has a row (so every test below covers it)."""
    for _, module in app.TABS:
        row_for(module)


@pytest.mark.parametrize(("title", "module"), TAB_PARAMS)
def test_tab_runs_and_renders(tab_page, title, module):
    """Empty input: the tab's clear message. Then its example: an answer, every view, a screenshot."""
    watched = tab_page
    row = row_for(module)
    panel = watched.open_tab(title)
    if row.empty_message:
        for label in textbox_labels(panel):
            panel.get_by_label(label, exact=True).first.fill("")
        watched.run(panel, row)
        messages = watched.wait_message(panel)
        assert row.empty_message in messages, f"{title}: empty input gave {messages}"
        assert not row.answer(panel), f"{title}: an answer appeared for an empty input"
        if watched.toasts():
            watched.close_toasts()
    if row.example:
        watched.click_example(panel)
    watched.run(panel, row)
    assert not watched.toasts(), f"{title}: error shown for its own example: {watched.toasts()}"
    assert watched.wait_answer(panel, row)
    problems = view_problems(watched, panel, row)
    assert not problems, f"{title}: " + "; ".join(problems)
    first_inner = next((k for k in row.views if k is not None), None)
    if first_inner:
        watched.inner_tab(panel, first_inner)
    shot = save_screenshot(watched.page, slug(title))
    assert 0 < shot.stat().st_size < MAX_PNG_BYTES


def _check_payload(watched, panel, where: str, echo: str | None) -> None:
    assert not watched.toasts(), f"{where}: error for script-like text: {watched.toasts()}"
    fired = watched.xss_fired()
    assert not fired, f"{where}: the payload ran or left live markup in {fired}"
    if echo:
        shown = panel.locator(f"{echo}:visible").first
        shown.wait_for()
        text = shown.inner_text()
        missing = [p for p in PAYLOADS if p not in text]
        assert not missing, f"{where}: not shown literally in {echo}: {missing}"


EXPLAINER_TABS = [p for p in TAB_PARAMS if p.values[1] not in ("ui.guide", "ui.lessons")]  # the task tabs


def test_every_explainer_has_a_browser_row():
    from demos.explain import catalog

    assert {e.name for e in catalog.all_explainers()} == set(EXPLAINER_VIEWS)


@pytest.mark.parametrize(("title", "module"), EXPLAINER_TABS)
def test_explainer_views_render(tab_page, title, module):
    """Every explainer view of the tab ("Inside the model"), on the result of its example run:
    automatic ones (lens, attention steps) after the answer, on-demand ones after their button."""
    from core import registry
    from demos.explain import catalog
    from ui.explainer_tabs import GROUP_TITLE

    watched = tab_page
    row = row_for(module)
    panel = watched.open_tab(title)
    if row.example:
        watched.click_example(panel)
    watched.run(panel, row)
    assert watched.wait_answer(panel, row)
    task = next(t.key for t in registry.TASKS if t.tab == module)
    views = {f"{GROUP_TITLE} / {e.title}": EXPLAINER_VIEWS[e.name] for e in catalog.for_task(task)}
    problems = view_problems(watched, panel, Row(run=row.run, answer=row.answer, views=views))
    assert not problems, f"{title}: " + "; ".join(problems)
    assert not watched.toasts(), f"{title}: {watched.toasts()}"
    first = catalog.for_task(task)[0].title  # the lens where there is one
    watched.inner_tab(panel, first)
    inner = panel.locator(".tabitem:visible").last
    save_screenshot(watched.page, f"{slug(title)}-inside", anchor=inner)


@pytest.mark.parametrize(("title", "module"), TEXT_TABS)
def test_script_like_text_stays_text(tab_page, title, module):
    """Every textbox gets the payloads (one run each); nothing executes, echoes stay literal."""
    watched = tab_page
    row = row_for(module)
    panel = watched.open_tab(title)
    extra_labels = {e.textbox for e in row.extras}
    labels = [label for label in textbox_labels(panel) if label not in row.skip_textboxes + tuple(extra_labels)]
    assert labels, f"{title}: no editable textbox found"
    if row.example:
        watched.click_example(panel)  # the other inputs valid; each textbox in turn replaced
    for label in labels:
        panel.get_by_label(label, exact=True).first.fill(PAYLOAD_TEXT)
        watched.run(panel, row)
        _check_payload(watched, panel, f"{title} / {label}", row.echo.get(label))
    for extra in row.extras:
        watched.inner_tab(panel, extra.inner)
        panel.get_by_label(extra.textbox, exact=True).first.fill(PAYLOAD_TEXT)
        panel.get_by_role("button", name=extra.run, exact=True).first.click()
        watched.settle(panel)
        _check_payload(watched, panel, f"{title} / {extra.inner} / {extra.textbox}", extra.echo)
    assert watched.page.evaluate("typeof window.__xss") == "undefined"


def _file_input(panel, kind: str):
    scope = panel.locator("[data-testid=image]").first if kind == "image" else panel
    return scope.locator("input[type=file]").first


@pytest.mark.parametrize(("title", "module"), UPLOAD_TABS)
def test_uploads(fresh_page, title, module, tmp_path):
    """Files through the real file input: a WAV is transcribed; a text file named .png and an
    empty .png get a clear message, and a good PNG afterwards gets its answer."""
    watched = fresh_page
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
        messages = watched.wait_message(panel)
        assert any(words in m.lower() for m in messages), f"{title}: unclear message for {bad.name}: {messages}"
        watched.close_toasts()
        assert not row.answer(panel), f"{title}: an answer appeared for {bad.name}"
    good = make_png(tmp_path / "gradient.png")  # a PNG here; the examples already cover the JPEGs
    _file_input(panel, "image").set_input_files(str(good))
    watched.run(panel, row)
    assert not watched.toasts(), f"{title}: good image after bad ones: {watched.toasts()}"
    assert watched.wait_answer(panel, row)
