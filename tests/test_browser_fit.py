"""What fits on the page (issue #27, "what a teacher sees"), measured in headless Chromium on the
tiny models: token chips wrap inside their box (emoji and right-to-left continuations included),
every plotly title stays inside its figure and clear of the plot, its tick labels, axis titles and
legend, no legend sits on tick labels, the cells of a heatmap keep one readable size and never
overlap, and the examples of Generation set every control (a plain example after the sampling
one is greedy again).

Screenshots of the views measured go to a temporary folder (tests/browser_support.SCREENSHOTS
when XRAY_SCREENSHOTS is not set); the README's pictures come from tests/test_browser.py.

Run: python -m pytest -q -m browser tests/test_browser_fit.py
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from tests.browser_support import ASSETS, ROWS, VIEWPORT, Watched
from tests.conftest import launch_full_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHOTS = Path(tempfile.gettempdir()) / "xray-fit-screenshots"
# A continuation without any space: emoji with joiners, Hebrew and Arabic, one long word.
PROMPT_B = ("Emoji 👩‍👩‍👧‍👦👩‍👩‍👧‍👦👩‍👩‍👧‍👦👩‍👩‍👧‍👦 and right-to-left שלוםעולםשלוםעולם مرحبابالعالممرحبا "
            "a_continuation_without_any_spaces_at_all_so_that_nothing_can_break_it_but_the_browser")
LONG_TEXT = "a photo of a city street at night, wet asphalt reflecting the neon signs of the shops"

# Per visible element: chip boxes whose content is wider than the box, that run past the page, or
# with a chip broken over two lines.
CHIPS = """scope => [...scope.querySelectorAll('.xray-tokens')].filter(e => e.offsetParent !== null).map(e => {
    const b = e.getBoundingClientRect();
    const split = [...e.querySelectorAll('.xray-tok')].filter(t => t.getClientRects().length > 1).length;
    return {text: e.innerText.slice(0, 60), scroll: e.scrollWidth, client: e.clientWidth,
            right: b.right, page: document.documentElement.clientWidth, split};
}).filter(c => c.scroll > c.client + 1 || c.right > c.page + 1 || c.split > 0)"""

# Per visible plotly figure: what of its title, legend and heatmap cell texts does not fit.
FIGURES = """scope => {
  const R = e => { const b = e.getBoundingClientRect(); return {l: b.left, r: b.right, t: b.top, b: b.bottom, w: b.width, h: b.height}; };
  const hit = (a, b) => a.w > 0 && b.w > 0 && a.l < b.r - 1 && b.l < a.r - 1 && a.t < b.b - 1 && b.t < a.b - 1;
  const out = [];
  for (const fig of scope.querySelectorAll('.js-plotly-plot')) {
    if (fig.offsetParent === null) continue;
    const box = R(fig), problems = [];
    const inside = x => x.l >= box.l - 1 && x.r <= box.r + 1 && x.t >= box.t - 1 && x.b <= box.b + 1;
    const title = fig.querySelector('.g-gtitle .gtitle');
    const legend = fig.querySelector('.legend');
    const labels = [...fig.querySelectorAll('.xtick text, .ytick text, .g-xtitle text, .g-ytitle text')].map(R);
    const plot = fig.querySelector('.nsewdrag');
    if (title && title.textContent.trim()) {
      const t = R(title);
      if (!inside(t)) problems.push('title leaves the figure');
      if (labels.some(x => hit(t, x))) problems.push('title on tick labels or an axis title');
      if (plot && hit(t, R(plot))) problems.push('title on the plot');
      if (legend && hit(t, R(legend))) problems.push('title on the legend');
      const badge = fig.closest('.block') && fig.closest('.block').querySelector('[data-testid=block-label]');
      if (badge && hit(t, R(badge))) problems.push("title under Gradio's label of the plot");
    }
    if (legend && labels.some(x => hit(R(legend), x))) problems.push('legend on tick labels');
    const cells = [...fig.querySelectorAll('.heatmap-label text')].filter(t => t.textContent.trim());
    const sizes = [...new Set(cells.map(t => getComputedStyle(t).fontSize))];
    const boxes = cells.map(R);
    let overlaps = 0;
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) if (hit(boxes[i], boxes[j])) overlaps++;
    const ticks = [...fig.querySelectorAll('.xtick text, .ytick text')].map(R);
    for (const c of boxes) for (const t of ticks) if (hit(c, t)) overlaps++;
    if (overlaps) problems.push(`${overlaps} overlapping cell labels (with each other or the axis labels)`);
    out.push({title: title ? title.textContent : '', problems, cell_sizes: sizes});
  }
  return out;
}"""


@pytest.fixture(scope="module")
def page(browser, tiny_settings):
    """One page of the full app served with the tiny models."""
    demo, url = launch_full_app()
    context = browser.new_context(viewport=VIEWPORT)
    p = context.new_page()
    p.set_default_timeout(180_000)  # a busy 2-core machine: the page may draw for a long while
    w = Watched(p)
    p.goto(url)
    p.get_by_role("tab").first.wait_for()
    time.sleep(8)  # whatever the page runs on load has answered
    if w.toasts():
        w.close_toasts()
    yield w
    context.close()
    demo.close()


def _open(w: Watched, title: str):
    """The app's tab `title`, with no toast left from before."""
    if w.toasts():
        w.close_toasts()
    panel = w.open_tab(title)
    time.sleep(1)
    return panel


def _inner(w: Watched, panel, *titles: str):
    for title in titles:
        w.inner_tab(panel, title)
    time.sleep(0.5)
    return panel.locator(".tabitem:visible").last


def _click(w: Watched, panel, scope, button: str) -> None:
    scope.get_by_role("button", name=button, exact=True).first.click()
    time.sleep(0.3)
    w.settle(panel)
    assert not w.toasts(), w.toasts()


def _figures(scope, expected: int) -> list[dict]:
    deadline = time.monotonic() + 20
    while True:
        figures = scope.evaluate(FIGURES)
        drawn = [f for f in figures if f["title"]]
        if len(drawn) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert len(drawn) >= expected, f"expected {expected} drawn figures, found {figures}"
    time.sleep(0.5)  # plotly's last relayout
    return scope.evaluate(FIGURES)


def _fits(scope, where: str, expected: int = 1) -> list[dict]:
    """Assert that chips and figures of `scope` fit; returns the figures' measurements."""
    chips = scope.evaluate(CHIPS)
    assert not chips, f"{where}: token chips overflow: {chips}"
    figures = _figures(scope, expected)
    problems = [f"{f['title'][:50]!r}: {', '.join(f['problems'])}" for f in figures if f["problems"]]
    assert not problems, f"{where}: " + "; ".join(problems)
    return figures


def _shot(w: Watched, scope, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    scope.evaluate("e => window.scrollTo(0, e.getBoundingClientRect().top + window.scrollY - 8)")
    time.sleep(0.3)
    w.page.screenshot(path=str(SHOTS / f"{name}.png"))


def test_generation_examples_chips_and_figures_fit(page):
    w = page
    panel = _open(w, "Generation")
    sample = panel.get_by_label("Sample (instead of greedy)", exact=True).first
    panel.get_by_text("Sample 30 tokens", exact=False).first.click()  # the sampling example...
    w.settle(panel, timeout=60)
    assert sample.is_checked()
    panel.locator(".gallery-item, [data-testid=dataset-cell-0-0]").first.click()  # ...then a plain one
    w.settle(panel, timeout=60)
    assert panel.get_by_label("Prompt", exact=True).first.input_value() == "The quick brown fox"
    assert not sample.is_checked(), "the plain example must be greedy again"
    w.run(panel, ROWS["ui.generation"])
    assert w.wait_answer(panel, ROWS["ui.generation"])
    assert "greedy" in panel.locator("[data-testid=markdown]", has_text="Decoding").first.inner_text()
    _fits(panel, "Generation answer", 1)

    compare = _inner(w, panel, "Compare two prompts")
    compare.get_by_label("Prompt B", exact=True).first.fill(PROMPT_B)
    _click(w, panel, compare, "Compare with the prompt above")
    figures = _fits(compare, "Compare two prompts", 2)
    sizes = [f["cell_sizes"] for f in figures if f["cell_sizes"]]
    assert len(sizes) == 2 and sizes[0] == sizes[1] and len(sizes[0]) == 1, f"prompt A and B cells differ: {sizes}"
    assert float(sizes[0][0].rstrip("px")) >= 9, sizes
    _shot(w, compare, "generation-compare")

    lens = _inner(w, panel, "Inside the model", "Layer lens")
    _fits(lens, "Generation lens", 2)
    _shot(w, lens, "generation-lens")
    knock = _inner(w, panel, "Knock out heads")
    _click(w, panel, knock, "Knock out and run again")
    _fits(knock, "Generation knockout", 1)
    assert "The top answer" not in knock.inner_text()
    faithful = _inner(w, panel, "Which explanation is faithful?")
    _click(w, panel, faithful, "Compare the explanations")
    _fits(faithful, "Generation faithfulness", 2)
    _shot(w, faithful, "generation-faithfulness")


def test_question_answering_lens_and_knockout_fit(page):
    w = page
    panel = _open(w, "Question answering")
    w.click_example(panel)
    w.run(panel, ROWS["ui.qa"])
    assert w.wait_answer(panel, ROWS["ui.qa"])
    score = float(panel.get_by_label("Score = P(start) × P(end)", exact=True).first.input_value())
    assert score > 0, "a score is never shown as 0"
    _fits(panel, "QA answer", 0)
    lens = _inner(w, panel, "Inside the model", "Layer lens")
    _fits(lens, "QA lens", 1)
    _shot(w, lens, "question-answering-lens")
    knock = _inner(w, panel, "Knock out heads")
    knock.get_by_label("Heads or layers to knock out", exact=True).first.fill("L0, L1")
    _click(w, panel, knock, "Knock out and run again")
    _fits(knock, "QA knockout", 1)
    _shot(w, knock, "question-answering-knockout")


def test_image_text_matching_lens_title_fits_and_counts_images_from_one(page):
    w = page
    panel = _open(w, "Image-text matching")
    w.click_example(panel)
    box = panel.get_by_label("Candidate descriptions (one per line, or separated by commas)", exact=True).first
    box.fill(f"{LONG_TEXT}\na photo of a cat\na cup of coffee")
    w.run(panel, ROWS["ui.clip"])
    assert w.wait_answer(panel, ROWS["ui.clip"])
    lens = _inner(w, panel, "Inside the model", "Layer lens")
    item = lens.get_by_label("Which of the images (1 = the first)", exact=True).first
    assert item.input_value() == "1"
    _fits(lens, "CLIP lens", 1)
    title = lens.evaluate("e => e.querySelector('.js-plotly-plot .gtitle').textContent")
    assert "post_layernorm" not in title and "logit_scale" not in title, title
    _shot(w, lens, "image-text-matching-lens")


def test_transcription_views_fit(page):
    w = page
    panel = _open(w, "Transcription")
    panel.locator("input[type=file]").first.set_input_files(str(sorted((ASSETS / "audio").glob("*.wav"))[0]))
    panel.locator("audio, .waveform-container").first.wait_for(state="attached")
    w.run(panel, ROWS["ui.speech"])
    assert w.wait_answer(panel, ROWS["ui.speech"])
    words = _inner(w, panel, "Words")
    _fits(words, "Transcription words", 1)
    lens = _inner(w, panel, "Inside the model", "Layer lens")
    _fits(lens, "Transcription lens", 2)
