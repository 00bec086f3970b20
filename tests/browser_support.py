"""Helpers for the browser tests: one row per app tab (how to run it, what must render), the
headless Chromium launch, and small waits on Gradio's DOM.

Adding a tab to `app.TABS` means adding its `Row` to `ROWS` (keyed by the tab's ui module).
Locators use roles, labels and visible text, plus Gradio's own `data-testid`s and the app's
`xray-*` classes for the views.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
# README pictures only on request (XRAY_SCREENSHOTS=1); ordinary runs leave the tracked PNGs alone.
SCREENSHOTS = ROOT / "docs" / "screenshots" if os.environ.get("XRAY_SCREENSHOTS") else Path(tempfile.gettempdir()) / "xray-screenshots"
VIEWPORT = {"width": 1600, "height": 900}  # every tab in the tab strip (no "⋯" overflow menu)
MAX_PNG_BYTES = 300_000
# No host name resolves but localhost (a page that reaches for the network fails at once, here and on
# CI); `Watched` records every off-loopback request the page makes.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
PAYLOADS = [
    "javascript:window.__xss=1",
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=1</script>",
    "{{7*7}}${7*7}",
]
# All payloads in one input, one per line (one run per textbox keeps the module fast; tabs that
# split lines into items, like CLIP's candidates, then show each payload as its own item).
PAYLOAD_TEXT = "\n".join(PAYLOADS)
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}
# Console messages of type "error" that are understood and harmless. Each entry: (substring, why).
# None is needed on Chromium 156 + Gradio 6.31 (plotly's "Method not implemented." lines are of
# type "warning" and are not collected).
HARMLESS_CONSOLE: list[tuple[str, str]] = []


# --------------------------------------------------------------------------------------------
# The table: one row per tab
# --------------------------------------------------------------------------------------------

Answer = Callable[["object"], str]  # panel locator -> the answer's text ("" while empty)


def label_answer(panel) -> str:
    """Text of the tab's first gr.Label (top class and confidences)."""
    value = panel.locator("[data-testid=label-output-value]").first
    return value.inner_text() if value.count() else ""


def textbox_answer(label: str) -> Answer:
    def read(panel) -> str:
        return panel.get_by_label(label, exact=True).first.input_value()

    return read


def lesson_head(page) -> str:
    """The heading of the lesson panel ("Lesson: ... · step 2 of 5 · ..."; "" while it is hidden)."""
    head = page.locator(".prose.xray-lesson-head:visible")
    return head.first.inner_text() if head.count() else ""


def table_answer(panel) -> str:
    """Text of the first body cell of the tab's first gr.Dataframe ("" while it has no rows)."""
    cell = panel.locator("[role=grid] [data-testid=cell-0-0]").first
    return cell.inner_text() if cell.count() else ""


def markdown_answer(contains: str) -> Answer:
    """Text of the first markdown in the tab containing `contains` (e.g. a model line)."""

    def read(panel) -> str:
        found = panel.locator("[data-testid=markdown]", has_text=contains)
        return found.first.inner_text() if found.count() else ""

    return read


@dataclass(frozen=True)
class View:
    """What one inner tab (or the tab's top area, inner tab None) must show after a run."""

    plots: int = 0  # plotly figures with SVG content
    html: str | None = None  # CSS selector of an app HTML view (e.g. ".xray-highlight")
    images: int = 0  # rendered output images (gr.Image with a value)
    table: bool = False  # a gr.Dataframe with at least one row
    bertviz: bool = False  # the bertviz accordion renders its (sandboxed, offline) iframe on "Render"
    click: str | None = None  # a button in the view to press first (views that run on demand)


@dataclass(frozen=True)
class Extra:
    """A second text input of a tab with its own button, inside an inner tab (e.g. "compare")."""

    inner: str  # inner tab title
    textbox: str  # its label
    run: str  # its button
    echo: str | None = None  # CSS selector showing the text literally


@dataclass(frozen=True)
class Row:
    """How to drive one tab of the app in a browser."""

    run: str  # name of the button that runs the tab
    answer: Answer  # where the plain answer appears
    views: dict[str | None, View] = field(default_factory=dict)  # inner tab title (None = top) -> View
    example: bool = True  # click the first gr.Examples sample before running
    upload: str | None = None  # "image" or "audio": the tab takes a file
    empty_message: str | None = None  # the message for a run with empty inputs (None: no error by design)
    echo: dict[str, str] = field(default_factory=dict)  # textbox label -> CSS selector showing it literally
    text_inputs: bool = True  # the tab has editable textboxes (every one gets the XSS payloads)
    extras: tuple[Extra, ...] = ()  # text inputs run by another button
    skip_textboxes: tuple[str, ...] = ()  # textbox labels not used for XSS (none so far)


ATTENTION = View(plots=2)  # heatmap + heads overview (ui.common.AttentionView)
ATTENTION_BERTVIZ = View(plots=2, bertviz=True)  # the same with ui.bertviz.BertvizView below it
BERTVIZ_ACCORDION = "bertviz (head view / model view)"
EMBEDDINGS = View(plots=1)  # scatter (ui.common.EmbeddingView)
HIGHLIGHT = ".xray-highlight"

# The explainer views (ui.explainer_tabs), inside every task tab's "Inside the model" tab: one row per
# registered explainer (tests/test_browser.py fails for an explainer without one).
EXPLAINER_VIEWS: dict[str, View] = {
    "lens": View(plots=1),
    "attention_steps": View(plots=2, table=True),
    "ablate": View(plots=1, click="Knock out and run again"),
    "head_map": View(plots=1, click="Map every head"),
    "contrast": View(plots=1, html=HIGHLIGHT, click="Why A and not B?"),
    "branch": View(html=".xray-branch", click="Branch and continue"),
    "faithfulness": View(plots=2, table=True, click="Compare the explanations"),
    "patch": View(),  # needs a corrupted input typed by the user (or a preset, whose labels differ per task)
    "steer": View(plots=1, html=".xray-steer", click="Generate with and without steering"),
}

ROWS: dict[str, Row] = {
    "ui.guide": Row(
        run="Run the sentiment model",
        answer=markdown_answer("Model:"),
        example=False,
        views={None: View(plots=1, html=".xray-illustration")},  # illustrations are static SVG, drawn with the page
        echo={},
    ),
    "ui.lessons": Row(
        run="Start this lesson",
        answer=lambda panel: lesson_head(panel.page),  # the lesson panel (a sidebar) opens on step 1
        example=False,
        text_inputs=False,  # its one textbox is the teacher's code
    ),
    "ui.sentiment": Row(
        run="Classify",
        answer=label_answer,
        views={"Attributions": View(plots=1, html=HIGHLIGHT), "Attention": ATTENTION_BERTVIZ, "Embeddings": EMBEDDINGS},
        empty_message="Please enter some text.",
        extras=(Extra("Compare two texts", "Text B", "Compare with text A"),),
    ),
    "ui.qa": Row(
        run="Find the answer",
        answer=textbox_answer("Answer"),
        views={
            None: View(html=".xray-context"),
            "Start & end": View(plots=1),
            "Attributions": View(plots=2, html=HIGHLIGHT),
            "Attention": ATTENTION_BERTVIZ,
            "Embeddings": EMBEDDINGS,
        },
        empty_message="Please enter a question.",
        echo={"Context": ".xray-context"},
    ),
    "ui.translation": Row(
        run="Translate",
        answer=textbox_answer("German translation"),
        views={
            None: View(plots=1),
            "Alignment (cross-attention)": ATTENTION,
            "Attributions": View(plots=1, html=HIGHLIGHT),
            "Encoder attention": ATTENTION,
            "Decoder attention": ATTENTION_BERTVIZ,
            "Embeddings": EMBEDDINGS,
        },
        empty_message="Please enter some text.",
    ),
    "ui.clip": Row(
        run="Match",
        answer=label_answer,
        views={
            "Similarity matrix": View(plots=1),
            "Where the model looks": View(plots=1),
            "Which words matter": View(plots=1, html=HIGHLIGHT),
            "Shared embedding space": View(plots=1),
        },
        upload="image",
        empty_message="Please upload an image.",
        # each candidate description (one per line) becomes a class of the label
        echo={"Candidate descriptions (one per line, or separated by commas)": "[data-testid=label]"},
    ),
    "ui.generation": Row(
        run="Generate",
        answer=textbox_answer("Prompt + continuation"),
        views={
            None: View(html=HIGHLIGHT),
            "Next-token choices": View(plots=1),
            "Attributions": View(plots=1, html=HIGHLIGHT),
            "Attention": ATTENTION_BERTVIZ,
            "Embeddings": EMBEDDINGS,
        },
        empty_message="Please enter some text to continue.",
        echo={"Prompt": HIGHLIGHT},
        extras=(Extra("Compare two prompts", "Prompt B", "Compare with the prompt above", echo=HIGHLIGHT),),
    ),
    "ui.image": Row(
        run="Classify",
        answer=label_answer,
        views={
            "Attention rollout": View(images=1),
            "Class-token attention": View(plots=2),
            "Patch embeddings": EMBEDDINGS,
        },
        upload="image",
        text_inputs=False,
        empty_message="Please upload an image.",
    ),
    "ui.speech": Row(
        run="Transcribe",
        answer=markdown_answer("Heard"),  # a tiny random Whisper may write no words; the notice always comes
        views={
            "Spectrogram": View(plots=1),
            "Alignment": View(plots=2),
            "Words": View(plots=1),
            "Token probabilities": View(plots=1),
            "Encoder attention": ATTENTION,
        },
        upload="audio",
        text_inputs=False,
        empty_message="Please record or upload some audio.",
    ),
    "ui.explorer": Row(
        run="Explore",
        answer=table_answer,
        views={
            None: View(table=True),
            "Sentence similarity": View(plots=1),
            "Attention": ATTENTION,
            "Token embeddings": EMBEDDINGS,
        },
        empty_message="Please enter at least one sentence (one per line).",
        echo={"Sentences (one per line)": "[role=grid]"},
    ),
}


def row_for(module: str) -> Row:
    if module not in ROWS:
        pytest.fail(f"app.TABS has {module!r} but tests/browser_support.py ROWS has no row for it: add one")
    return ROWS[module]


# --------------------------------------------------------------------------------------------
# Browser and page
# --------------------------------------------------------------------------------------------


def chromium_path() -> str:
    """Debian's Chromium; missing: a failure on CI, a skip elsewhere."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    reason = "chromium is not installed (apt-get install -y chromium); browser tests need it"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return (parts.hostname or "") in LOOPBACK


class Watched:
    """A page whose console errors, page errors and off-loopback requests are recorded.

    Requests are watched, not intercepted: `page.route` would send every request of the page (about 130
    per load) through this process and turn off the browser's cache (measured 2026-12-06: a page load
    about 0.7 s slower, a Sentiment run about 0.5 s); `CHROMIUM_ARGS` keep the page off the network."""

    def __init__(self, page):
        self.page = page
        self.loaded = False
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.allowed: list[tuple[str, str]] = list(HARMLESS_CONSOLE)  # (substring, why); a test may add
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("request", self._request)

    def _console(self, msg) -> None:
        if msg.type != "error":
            return
        text = f"{msg.text} @ {msg.location.get('url', '')}"
        if not any(s in text for s, _why in self.allowed):
            self.errors.append(f"console.error: {text}")

    def _request(self, request) -> None:
        if not is_loopback(request.url):
            self.blocked.append(request.url)

    def reset(self) -> None:
        """Forget what earlier tests saw on this page."""
        self.errors.clear()
        self.blocked.clear()
        self.allowed[:] = list(HARMLESS_CONSOLE)

    # ---- tabs ------------------------------------------------------------------------------
    def open_tab(self, title: str):
        """Click the app's tab `title`; the visible top-level tab panel."""
        self.page.get_by_role("tab", name=title, exact=True).first.click()
        panel = self.page.locator(".tabitem:visible").first
        panel.wait_for()
        return panel

    def inner_tab(self, panel, title: str) -> None:
        panel.get_by_role("tab", name=title, exact=True).first.click()

    # ---- waiting ---------------------------------------------------------------------------
    def toasts(self) -> list[str]:
        """Texts of the error toasts (gr.Error raised by a handler)."""
        return [t.inner_text() for t in self.page.locator("[data-testid=toast-text]").all()]

    def messages(self, panel) -> list[str]:
        """Error toasts and the validation messages Gradio shows under an input (event `validator=`)."""
        shown = [v.inner_text() for v in panel.locator(".validation-error:visible").all()]
        return self.toasts() + shown

    def close_toasts(self) -> None:
        for button in self.page.locator("[data-testid=toast-close]").all():
            with contextlib.suppress(Exception):  # a toast may vanish on its own meanwhile
                button.click(timeout=1000)
        self.page.wait_for_function("() => !document.querySelector('[data-testid=toast-body]')", timeout=5000)

    def settle(self, panel, timeout: float = 90.0) -> None:
        """Wait until no status tracker in `panel` is busy for a moment (chained events included)."""
        # a tracker is shown while its event is pending or running, and after an error ("Error") or a
        # validator rejection (its message) until the next run: only the first two are busy
        busy = "e => e.querySelectorAll('[data-testid=status-tracker]:not(.hide):not(:has(.error, .validation-error))').length"
        deadline, quiet = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            if self.toasts():
                return
            quiet = quiet + 1 if panel.evaluate(busy) == 0 else 0
            if quiet >= 4:
                return
            time.sleep(0.2)
        raise AssertionError("the tab stayed busy")

    def run(self, panel, row: Row) -> None:
        panel.get_by_role("button", name=row.run, exact=True).first.click()
        time.sleep(0.3)
        self.settle(panel)

    def wait_answer(self, panel, row: Row, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = row.answer(panel).strip()
            if text:
                return text
            if self.toasts():
                raise AssertionError(f"error instead of an answer: {self.toasts()}")
            time.sleep(0.2)
        raise AssertionError("no answer appeared")

    def wait_message(self, panel, timeout: float = 30.0) -> list[str]:
        """Wait for an error toast or a validation message; all texts shown."""
        panel.page.locator("[data-testid=toast-text]").or_(panel.locator(".validation-error:visible")).first.wait_for(
            timeout=timeout * 1000
        )
        return self.messages(panel)

    def click_example(self, panel) -> None:
        """Click the first sample of the tab's first gr.Examples and let it fill the inputs."""
        panel.locator(".gallery-item, [data-testid=dataset-cell-0-0]").first.click()  # gallery or table layout
        self.settle(panel, timeout=20)

    # ---- content checks --------------------------------------------------------------------
    def xss_fired(self) -> list[str]:
        """Frames (URL) in which the payload set window.__xss or left live markup behind."""
        probe = """() => (typeof window.__xss !== 'undefined')
            || !!document.querySelector('img[src="x"], a[href^="javascript:"]')
            || [...document.scripts].some(s => s.textContent.includes('__xss'))"""
        hits = []
        for frame in self.page.frames:
            try:
                if frame.evaluate(probe):
                    hits.append(frame.url or "(srcdoc frame)")
            except Exception as exc:  # a frame may be detached while we look
                if "detached" not in str(exc).lower():
                    raise
        return hits


def textbox_labels(panel) -> list[str]:
    """Labels of the editable text inputs (gr.Textbox) of a tab, in page order."""
    boxes = panel.locator("label:has([data-testid=textbox]:enabled)")
    labels = []
    for box in boxes.all():
        if not box.is_visible():
            continue
        # the label's own text, without a validation message Gradio may have put inside it
        name = box.locator("[data-testid=block-info]").first.evaluate(
            "e => [...e.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim()"
        )
        labels.append(name)
    return labels


def plots_ok(scope, expected: int) -> str | None:
    """None when at least `expected` visible plotly figures with drawn SVG are in `scope`."""
    if expected == 0:
        return None
    selector = ".js-plotly-plot:visible"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        figures = scope.locator(selector).all()
        drawn = [f for f in figures if f.locator("svg.main-svg").count() and f.locator(".plot-container").count()]
        drawn = [f for f in drawn if f.evaluate("e => e.querySelectorAll('svg.main-svg *').length") > 20]
        if len(drawn) >= expected:
            return None
        time.sleep(0.25)
    return f"expected {expected} drawn plotly figures, found {len(drawn)} of {len(figures)}"


def view_problems(watched: Watched, panel, row: Row) -> list[str]:
    """Visit every inner tab named in the row and list what did not render."""
    problems = []
    for inner, view in row.views.items():
        if inner is not None:
            for title in inner.split(" / "):  # nested tabs: "Inside the model / Layer lens"
                watched.inner_tab(panel, title)
        where = inner or "top"
        scope = panel.locator(".tabitem:visible").last if inner is not None else panel
        if view.click:
            scope.get_by_role("button", name=view.click, exact=True).first.click()
            watched.settle(panel)
        if (p := plots_ok(scope if inner is not None else panel, view.plots)) is not None:
            problems.append(f"{where}: {p}")
        if view.html:
            target = (scope if inner is not None else panel).locator(f"{view.html}:visible").first
            try:
                target.wait_for(timeout=15000)
                if not target.inner_text().strip():
                    problems.append(f"{where}: {view.html} is empty")
            except Exception:  # reported as a problem below
                problems.append(f"{where}: no visible {view.html}")
        if view.bertviz and (p := bertviz_problem(scope)):
            problems.append(f"{where}: {p}")
        if view.table:
            cells = (scope if inner is not None else panel).locator("[role=grid] [role=gridcell]:visible")
            if not cells.count():
                problems.append(f"{where}: no table rows")
        if view.images:
            img = (scope if inner is not None else panel).locator(".image-frame img:visible").first
            try:
                img.wait_for(timeout=15000)
                img.scroll_into_view_if_needed()  # Gradio loads output images lazily
                img.evaluate("e => e.decode()")  # rejects when the picture cannot be decoded
                ok = img.evaluate("e => e.complete && e.naturalWidth > 0")
            except Exception:
                ok = False
            if not ok:
                problems.append(f"{where}: no rendered output image")
    return problems


def bertviz_problem(scope) -> str | None:
    """Open the bertviz accordion in `scope`, click Render: None when the frame draws tokens."""
    scope.get_by_text(BERTVIZ_ACCORDION, exact=True).first.click()
    scope.get_by_role("button", name="Render", exact=True).first.click()
    frame_el = scope.locator(".xray-bertviz-frame iframe").first
    try:
        frame_el.wait_for(timeout=20000)
        if frame_el.get_attribute("sandbox") != "allow-scripts":
            return f"bertviz iframe sandbox is {frame_el.get_attribute('sandbox')!r}, not 'allow-scripts'"
        frame = frame_el.element_handle().content_frame()
        frame.wait_for_selector("svg text", timeout=20000)  # d3 draws one text per token
    except Exception as exc:  # reported as a problem
        return f"bertviz view did not render: {str(exc).splitlines()[0]}"
    return None


def save_screenshot(page, name: str, anchor=None) -> Path:
    """Viewport screenshot of the tab (top of page, or from the element `anchor` down) into
    docs/screenshots/<name>.png, < 300 KB."""
    from PIL import Image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if anchor is not None:  # e.g. an inner tab strip: the view below it fills the picture
        anchor.evaluate("e => window.scrollTo(0, e.getBoundingClientRect().top + window.scrollY - 8)")
    else:  # the app's tab bar at the top of the picture, the tab's inputs and answer below it
        page.evaluate(
            "() => { const bar = document.querySelector('[role=tablist]');"
            " window.scrollTo(0, bar ? bar.getBoundingClientRect().top + window.scrollY - 8 : 0); }"
        )
    page.screenshot(path=str(path))
    if path.stat().st_size > MAX_PNG_BYTES:
        with Image.open(path) as im:
            im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-").replace("--", "-")


def make_png(path: Path, size: tuple[int, int] = (96, 64)) -> Path:
    """A real PNG (colour gradient with a square) written with PIL."""
    import numpy as np
    from PIL import Image

    h, w = size[1], size[0]
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 128)], axis=-1).astype("uint8")
    rgb[h // 4 : h // 2, w // 4 : w // 2] = (240, 240, 20)
    Image.fromarray(rgb).save(path)
    return path
