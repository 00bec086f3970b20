"""Links, lessons and presenter mode in headless Chromium (Playwright), offline, on the tiny models.

* Every tab: run it, open an inner view, "Copy link to this view", open the copied link in a fresh
  browser context: the same tab, view, inputs and model, and the answer runs again.
* A link that sets controls (layer, head, whole words) reopens with them; bad links get their message.
* Every lesson of lessons/ walked to its end, guessing where a step asks for a guess; the teacher's
  view shows the counts behind the code.
* Presenter mode from a link and from its switch.

Screenshots: docs/screenshots/lessons-*.png and presenter-*.png with XRAY_SCREENSHOTS=1.
Run: python -m pytest -q -m browser tests/test_browser_lessons.py
"""
from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest

import app
from tests.browser_support import (
    VIEWPORT,
    Watched,
    lesson_head,
    plots_ok,
    row_for,
    save_screenshot,
    slug,
    textbox_labels,
)
from tests.conftest import launch_full_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TAB_PARAMS = [pytest.param(title, module, id=slug(title)) for title, module in app.TABS]
OPEN = "() => [...document.querySelectorAll('.tabitem')].filter(e => e.id.startsWith('xray-tab-') && e.checkVisibility()).map(e => e.id)"
LESSON = ".xray-lesson"


@pytest.fixture(scope="module")
def app_url(tiny_settings):
    demo, url = launch_full_app()
    yield url
    demo.close()


def _page(browser, url: str, clipboard: bool = False) -> Watched:
    """A page in a browser context of its own (nothing shared with the page that made a link)."""
    context = browser.new_context(viewport=VIEWPORT)
    if clipboard:
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=f"{urlsplit(url).scheme}://{urlsplit(url).netloc}")
    page = context.new_page()
    page.set_default_timeout(60_000)
    watched = Watched(page)
    page.goto(url)
    page.get_by_role("tab").first.wait_for()
    return watched


def _close(watched: Watched) -> None:
    watched.page.context.close()
    assert not watched.errors, "console errors:\n" + "\n".join(watched.errors)
    assert not watched.blocked, "the page tried to reach the network:\n" + "\n".join(watched.blocked)


def _open_panels(watched: Watched, wait_for: str | None = None, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        panels = watched.page.evaluate(OPEN)
        if wait_for is None or wait_for in panels or time.monotonic() > deadline:
            return panels
        time.sleep(0.3)


def _values(panel) -> dict[str, str]:
    return {label: panel.get_by_label(label, exact=True).first.input_value() for label in textbox_labels(panel)}


def _copy_link(watched: Watched) -> str:
    """Press "Copy link to this view"; the link shown (and, where the browser allows, on the clipboard)."""
    page = watched.page
    page.get_by_role("button", name="Copy link to this view").click()
    box = page.locator(".xray-link textarea, .xray-link input").first
    box.wait_for()
    deadline = time.monotonic() + 30
    while not box.input_value().startswith("http") and time.monotonic() < deadline:
        time.sleep(0.2)
    return box.input_value()


@pytest.mark.parametrize(("title", "module"), TAB_PARAMS)
def test_a_copied_link_reopens_the_same_view(browser, app_url, title, module):
    """Run the tab, open its first inner view, copy the link; a fresh context sees the same tab, view
    and inputs, and the answer again."""
    row = row_for(module)
    watched = _page(browser, app_url, clipboard=True)
    panel = watched.open_tab(title)
    if row.example:
        watched.click_example(panel)
    if module not in ("ui.guide", "ui.lessons"):
        watched.run(panel, row)
        assert watched.wait_answer(panel, row)
    inner = next((k for k in row.views if k is not None), None)
    if inner:
        watched.inner_tab(panel, inner.split(" / ")[0])
    panels, values = _open_panels(watched), _values(panel)
    link = _copy_link(watched)
    assert link.startswith(app_url) and "tab=" in link, link
    assert len(link) < 1500, f"links stay short: {len(link)} characters"
    assert watched.page.evaluate("navigator.clipboard.readText()") == link
    _close(watched)

    again = _page(browser, link)
    assert _open_panels(again, panels[-1]) == panels, f"{title}: opened {_open_panels(again)} instead of {panels}"
    reopened = again.page.locator(".tabitem:visible").first
    assert _values(reopened) == values
    if module not in ("ui.guide", "ui.lessons"):
        assert again.wait_answer(reopened, row, timeout=120), f"{title}: the link did not run the answer"
        if row.upload:
            assert again.page.locator(f"#{panels[0]} img, #{panels[0]} audio").count(), f"{title}: no example file"
    _close(again)


def test_a_link_sets_layer_head_and_whole_words(browser, app_url):
    text = "The children were playing happily."
    watched = _page(browser, f"{app_url}?tab=sentiment&text={text.replace(' ', '%20')}&view=attention&layer=0&head=1&words=1")
    try:
        panel = watched.page.locator(".tabitem:visible").last
        # The answer's views are drawn first (every head's mean), then the link's layer and head are
        # set: wait for the drawing they give (a link that drops the head never shows it).
        heatmap = panel.locator(".js-plotly-plot .gtitle", has_text=re.compile(r"\bhead 1\b.*whole words"))
        heatmap.first.wait_for(timeout=120_000)
        title = heatmap.first.text_content()
        assert "layer 0" in title, title
        assert panel.locator("input[type=checkbox]:checked").count() >= 1
        save_screenshot(watched.page, "links-sentiment-attention-words", anchor=panel)
        link = _copy_link(watched)
        for part in ("tab=sentiment", "view=attention", "layer=0", "head=1", "words=1"):
            assert part in link, (part, link)
    finally:
        _close(watched)


@pytest.mark.parametrize(("query", "message"), [
    ("?tab=nowhere", "unknown tab 'nowhere'"),
    ("?tab=sentiment&model=gpt-5", "That model is not allowed for the sentiment task"),
    ("?tab=sentiment&text=" + "x" * 5001, "the limit for this box is 5,000 characters"),
    ("?tab=sentiment&view=lens&layer=2", "does not take"),
    ("?lesson=no-such-lesson", "unknown lesson 'no-such-lesson'"),
    ("?tab=%3Cimg%20src%3Dx%20onerror%3D%22window.__xss%3D1%22%3E", "unknown tab '<img src=x"),
])
def test_a_bad_link_gets_the_usual_message(browser, app_url, query, message):
    watched = _page(browser, app_url + query)
    try:
        toast = watched.page.locator("[data-testid=toast-text]", has_text=message)
        toast.first.wait_for(timeout=60_000)
        assert watched.page.evaluate("typeof window.__xss") == "undefined"
    finally:
        watched.page.context.close()


def _lessons():
    from ui.lesson_files import load_lessons

    return [pytest.param(lesson, id=lesson.id) for lesson in load_lessons()[0]]


def _wait_reveal(bar, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    reveal = bar.locator(".prose.xray-lesson-reveal")
    while time.monotonic() < deadline:
        text = reveal.first.inner_text() if reveal.count() else ""
        if text.strip() and "Working out" not in text:
            return text
        time.sleep(0.5)
    raise AssertionError("the lesson never said how the guess compares")


@pytest.mark.parametrize("lesson", _lessons())
def test_a_lesson_walks_to_its_end(browser, app_url, lesson, monkeypatch):
    """Every step opens its view (guessing first where the step asks); the end returns to the Lessons
    tab; the teacher sees the class's guesses behind the code."""
    watched = _page(browser, f"{app_url}?lesson={lesson.id}")
    page = watched.page
    bar = page.locator(LESSON).first
    guessed = 0
    try:
        for number, step in enumerate(lesson.steps, start=1):
            head = page.locator(".prose.xray-lesson-head", has_text=f"step {number} of {len(lesson.steps)}")
            head.first.wait_for(timeout=60_000)
            assert step.title in lesson_head(page)
            if step.predict:
                assert bar.get_by_role("button", name="Lock in my guess and open the view").is_visible()
                bar.get_by_label(step.predict.choices[0], exact=True).check()
                if guessed == 0:
                    save_screenshot(page, f"lessons-{lesson.id}-guess", anchor=bar)
                bar.get_by_role("button", name="Lock in my guess and open the view").click()
                reveal = _wait_reveal(bar)
                assert "Your guess" in reveal and not watched.toasts(), (reveal, watched.toasts())
                guessed += 1
            view = f"xray-tab-{step.link.tab}" + (f"--{step.link.view}" if step.link.view else "")
            assert view in _open_panels(watched, view), f"step {number}: {view} did not open"
            if step.link.inputs:
                assert watched.wait_answer(page.locator(".tabitem:visible").first, row_for(_module(step.link.tab)), timeout=180)
            if step.predict and guessed == 1:
                view_panel = page.locator(".tabitem:visible").last
                # the figures are drawn by the events chained after the answer: the view is there, not only its caption
                assert (problem := plots_ok(view_panel, 1)) is None, f"step {number}: {problem}"
                save_screenshot(page, f"lessons-{lesson.id}-reveal", anchor=view_panel)
            page.get_by_role("button", name="Finish the lesson" if number == len(lesson.steps) else "Next step →").click()
        page.locator("[data-testid=markdown]", has_text="You finished the lesson").first.wait_for(timeout=60_000)
        assert not bar.is_visible()
        assert not watched.toasts(), watched.toasts()
        if guessed:
            _teacher_view(watched, lesson, monkeypatch)
    finally:
        _close(watched)


def _module(tab: str) -> str:
    return next(m for _, m in app.TABS if app.tab_key(m) == tab)


def _teacher_view(watched: Watched, lesson, monkeypatch) -> None:
    page = watched.page
    panel = watched.open_tab("Lessons")
    panel.get_by_label("Lesson", exact=True).first.click()
    page.get_by_role("option", name=lesson.title, exact=True).first.click()
    panel.get_by_text("Teacher view: the class's guesses").first.click()
    monkeypatch.delenv("XRAY_TEACHER_CODE", raising=False)
    panel.get_by_role("button", name="Show the class's guesses").click()
    panel.locator("[data-testid=markdown]", has_text="The teacher view is off").first.wait_for()
    monkeypatch.setenv("XRAY_TEACHER_CODE", "blue-heron-42")
    panel.get_by_label("Teacher code").fill("wrong")
    panel.get_by_role("button", name="Show the class's guesses").click()
    panel.locator("[data-testid=markdown]", has_text="That is not the teacher code").first.wait_for()
    panel.get_by_label("Teacher code").fill("blue-heron-42")
    panel.get_by_role("button", name="Show the class's guesses").click()
    panel.locator("[data-testid=markdown]", has_text="guesses so far").first.wait_for()
    plot = panel.locator(".js-plotly-plot").first
    plot.wait_for()
    save_screenshot(page, f"lessons-{lesson.id}-teacher", anchor=panel.get_by_text("Teacher view: the class's guesses").first)


def test_the_lessons_tab_lists_the_lessons(browser, app_url):
    from ui.lesson_files import load_lessons

    watched = _page(browser, f"{app_url}?tab=lessons")
    try:
        panel = watched.page.locator(".tabitem:visible").first
        panel.get_by_text("Start this lesson").first.wait_for()
        first = load_lessons()[0][0]
        assert first.title in panel.inner_text()
        save_screenshot(watched.page, "lessons-tab")
    finally:
        _close(watched)


def test_presenter_mode(browser, app_url):
    """presenter=1 in a link: large type and strong colours; the switch turns it off again."""
    text = "The film was not good."
    watched = _page(browser, f"{app_url}?tab=sentiment&text={text.replace(' ', '%20')}&view=attention&presenter=1")
    page = watched.page
    try:
        page.wait_for_function("document.body.classList.contains('xray-presenter')", timeout=60_000)
        panel = page.locator(".tabitem:visible").first
        assert watched.wait_answer(panel, row_for("ui.sentiment"), timeout=120)
        page.locator(".tabitem:visible .js-plotly-plot .gtitle").first.wait_for(timeout=120_000)
        size = page.evaluate("parseFloat(getComputedStyle(document.querySelector('.tabitem:not([style*=none]) .prose p, .prose p')).fontSize)")
        assert size >= 20, f"presenter mode text is {size}px"
        save_screenshot(page, "presenter-sentiment")
        save_screenshot(page, "presenter-sentiment-attention", anchor=page.locator(".tabitem:visible").last)
        page.get_by_label("Presenter mode (large type, strong colours)").uncheck()
        page.wait_for_function("!document.body.classList.contains('xray-presenter')")
    finally:
        _close(watched)
