"""bench.adaptive, bench.explainers, bench.class_load and bench.gathered: argument parsing, the tables, and tiny-model
smoke runs (real models of the real classes, 2 layers). Timings are not asserted."""
from __future__ import annotations

import math

import pytest

from bench import adaptive, class_load, explainers, gathered


def test_adaptive_arguments_and_table():
    args = adaptive.parse_args([])
    assert (args.tolerance, args.ceiling, args.fixed, args.repeats) == (0.01, 256, 32, 3)
    assert "sentiment_long" in args.tabs
    row = {"tab": "sentiment", "units": 17, "ratio": 2.5, "cpu_ratio": 2.4,
           "captum": {"steps": 50, "s": 1.0, "delta": 1e-4}, "adaptive": {"steps": 8, "s": 0.4, "delta": 3e-3},
           "fixed": {"steps": 32, "s": 0.9, "delta": 1e-4}}
    table = adaptive.markdown([row])
    assert "| sentiment | 17 | 50, 1.00 s, 1.0e-04 | 8, 400 ms, 3.0e-03 |" in table and "2.50× (2.40×) ✓" in table


def test_adaptive_tiny_smoke(tmp_path):
    rows = adaptive.main(["--quick", "--tabs", "sentiment", "--out", str(tmp_path / "a.json")])
    (row,) = rows
    assert row["captum"]["steps"] == adaptive.CAPTUM_STEPS and row["fixed"]["steps"] == 32
    assert row["adaptive"]["steps"] in (8, 16, 32, 64, 128, 256)
    assert row["adaptive"]["delta"] <= 0.01 or row["adaptive"]["steps"] == 256  # the stopping rule
    assert math.isfinite(row["ratio"]) and row["ratio"] > 0
    assert (tmp_path / "a.md").read_text().startswith("| tab |")


def test_gathered_tiny_smoke():
    """Six students at once share passes, and each gets the scores of their own run (to float rounding)."""
    texts = gathered.sentences(6)
    assert len(set(texts)) == 6
    row = gathered.main(["--students", "6", "--repeats", "1"])
    assert row["students"] == 6 and row["same_targets"]
    # warm-up and one repeat of each side: 6 passes of one, one after the other, and gathered passes at once
    assert sum(row["passes"]) == 4 * 6 and max(row["passes"]) > 1
    assert row["largest_relative_difference"] < 1e-4
    assert row["one_at_a_time_s"] > 0 and row["at_once_s"] > 0


def test_explainers_arguments_and_tiny_smoke(tmp_path):
    assert explainers.parse_args([]).budget == 90.0
    rows = explainers.main(["--quick", "--tabs", "sentiment", "--out", str(tmp_path / "e.json")])
    names = {r["explainer"] for r in rows}
    assert {"lens", "attention_steps", "ablate"} <= names
    assert all(r["s"] > 0 and r["forward_s"] > 0 for r in rows)


def test_explainers_stop_and_extrapolate():
    """A cell over budget is stopped at its first progress report and extrapolated."""

    def run(task, result, progress=None):
        import time

        time.sleep(0.05)
        progress(0.1, "batch 1")
        raise AssertionError("not stopped")

    fake = type("E", (), {"run": staticmethod(run), "takes_progress": True})()
    got = explainers.time_explainer(fake, "sentiment", None, {}, repeats=3, budget=0.1)
    assert got["estimate"] and got["s"] >= 0.45 and got["fraction_run"] == 0.1


def test_class_load_texts_unique_and_summary():
    plan = class_load.texts(30, 2)
    flat = [t for mine in plan for t in mine]
    assert len(flat) == len(set(flat)) == 60
    out = {"answers": [1.0, 2.0, 3.0], "views": [0.5, 0.7], "views_failed": 1, "attributions": [5.0], "ok": 3, "busy": 1, "failed": 0, "mixed": 0, "wrong": 0,
           "attr_ok": 1, "attr_busy": 0, "attr_failed": 2, "errors": []}
    s = class_load.summary(out, 2, 3)
    assert s["lost"] == 2 and s["answer_p50_s"] == 2.0 and s["answer_p95_s"] == 3.0 and s["attr_p95_s"] == 5.0
    assert s["views_p95_s"] == 0.7 and s["views_failed"] == 1


@pytest.mark.slow
def test_served_session_memory_runs_a_class_and_sweeps_it(tmp_path):
    """`bench.session_memory --serve` on the tiny models: every request of the class is answered,
    then the idle sessions and the memos' entries are gone (the sweeper ran)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.session_memory", "--serve", "--size", "tiny", "--sessions", "2", "--tokens", "64",
         "--ttl", "2", "--models-dir", str(tmp_path / "models"), "--json", str(out)],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["ok"] == 2 * 4 and res["failed"] == 0, res["errors"]
    assert res["sessions_after_ttl"] == 0 and res["memo_after_mb"] == 0
    assert res["rss_peak_mb"] >= res["rss_start_mb"] > 0


@pytest.mark.slow
def test_served_class_load_speaks_the_browser_protocol(tmp_path):
    """`bench.class_load --serve` on the tiny models: its browser-protocol students get their own
    answers (checked against sentiment.analyse), views and attributions, and the CPU of both sides
    is reported."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "class.json"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "bench.class_load", "--serve", "--clients", "3", "--rounds", "2", "--json", str(out)],
                   cwd=root, check=True, capture_output=True, timeout=600)
    res = json.loads(out.read_text())
    assert res["answer_ok"] == 6 and res["mixed"] == res["wrong"] == res["lost"] == res["answer_failed"] == 0
    assert res["attr_ok"] == 6 and res["views_failed"] == 0 and not res["errors"]
    assert res["server_cpu_s"] > 0 and res["students_cpu_s"] > 0


def test_class_load_plans_several_tabs_in_either_order_and_reports_each():
    same = class_load.plan_of(4, 2, ["sentiment", "qa"], 512, "same")
    rotate = class_load.plan_of(4, 2, ["sentiment", "qa"], 512, "rotate")
    assert [[t for t, _ in mine] for mine in same] == [["sentiment", "qa", "sentiment", "qa"]] * 4
    assert [mine[0][0] for mine in rotate] == ["sentiment", "qa", "sentiment", "qa"]
    requests = [class_load.key(t, a) for mine in same for t, a in mine]
    assert len(set(requests)) == 16  # every request its own input
    text = same[0][0][1][0]
    assert text.startswith("Client 0 request 0:") and 380 <= len(text.split()) <= 420  # about 512 word pieces
    question, context = same[0][1][1]
    assert "built by engineer 0" in " ".join(context.split()[:30])  # the answer stays in the model's first window
    out = {"answers": [1.0, 2.0, 4.0], "views": [], "views_failed": 0, "attributions": [], "ok": 3, "busy": 0,
           "failed": 0, "mixed": 0, "wrong": 0, "attr_ok": 0, "attr_busy": 0, "attr_failed": 0, "errors": [],
           "tabs": {"sentiment": [1.0, 4.0], "qa": [2.0]}}
    s = class_load.summary(out, 1, 2, 2)
    assert s["lost"] == 1 and s["tabs"]["sentiment"]["p95_s"] == 4.0 and s["tabs"]["qa"]["p50_s"] == 2.0


def test_class_load_fills_inputs_to_the_models_own_token_count():
    """With the model's counter, the most filler whose count stays within the budget (a QA pair: one window)."""
    def count(tab, args):  # a stand-in tokenizer: 2 tokens a word, 3 specials
        return 2 * sum(len(a.split()) for a in args) + 3

    for tab in ("sentiment", "qa"):
        args = class_load.inputs(tab, 1, 0, 512, count)
        assert 510 <= count(tab, args) <= 512
        more = class_load.inputs(tab, 1, 0, 600, count)
        assert count(tab, more) > 512
