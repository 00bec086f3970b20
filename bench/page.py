"""What the student's page itself costs: `python -m bench.page [--repeats 3]`.

The whole app (`app.start`, as `python app.py` serves it) on the tiny models, opened in headless Debian Chromium
(Playwright), driven the way the browser tests drive it (their rows: `tests/browser_support.py`, the run button and
the answer of each tab). Per repeat, a fresh page: the time to load it (until no status tracker is busy); then
Sentiment's example run twice; then one run of every other task tab's example (the page now holds their results);
then Sentiment twice again. A run is timed from the click until its answer and every chained event (views,
attributions, explainers shown with the answer) have settled. The models are tiny, so what is measured is the
page's own work (Gradio's front end: its bookkeeping of every component and event), which grows with what the page
holds, not the models'.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

SKIP = ("ui.guide", "ui.lessons", "ui.sentiment")


def _run(watched, title: str, module: str) -> float:
    from tests.browser_support import row_for

    row = row_for(module)
    panel = watched.open_tab(title)
    if row.example:
        watched.click_example(panel)
    t0 = time.monotonic()
    watched.run(panel, row)
    if not watched.wait_answer(panel, row):
        raise RuntimeError(f"{title}: no answer")
    return time.monotonic() - t0


def one_page(browser, url: str) -> dict:
    import app
    from tests.browser_support import VIEWPORT, Watched

    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.set_default_timeout(60_000)
    watched = Watched(page)
    t0 = time.monotonic()
    page.goto(url)
    page.get_by_role("tab").first.wait_for()
    watched.settle(page.locator("body"), timeout=60)
    out = {"load_s": time.monotonic() - t0}
    out["sentiment_first_s"] = [_run(watched, "Sentiment", "ui.sentiment") for _ in range(2)]
    out["other_tabs_s"] = {title: _run(watched, title, module) for title, module in app.TABS if module not in SKIP}
    out["sentiment_after_s"] = [_run(watched, "Sentiment", "ui.sentiment") for _ in range(2)]
    page.context.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from bench.env import begin_local_run

    load_avg, _ = begin_local_run("tiny", 2)
    import subprocess

    from playwright.sync_api import sync_playwright

    import app
    from bench.serve import free_port
    from tests.browser_support import CHROMIUM_ARGS, chromium_path

    demo, url = app.start(app.parse_args(["--host", "127.0.0.1", "--port", str(free_port())]), block=False)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
            runs = [one_page(browser, url) for _ in range(args.repeats)]
            browser.close()
    finally:
        demo.close()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()

    def med(key: str, i: int) -> float:
        return statistics.median(r[key][i] for r in runs)

    summary = {
        "commit": commit, "load_average_at_start": load_avg, "repeats": args.repeats,
        "page_load_s": statistics.median(r["load_s"] for r in runs),
        "sentiment_fresh_page_s": [med("sentiment_first_s", 0), med("sentiment_first_s", 1)],
        "sentiment_after_every_tab_s": [med("sentiment_after_s", 0), med("sentiment_after_s", 1)],
        "runs": runs,
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
