"""ui.kit's shared lines and views."""
from __future__ import annotations

import numpy as np

from core.results import Attribution
from ui.kit import attribution_summary


def test_an_attribution_summary_shows_its_steps_and_cost():
    attr = Attribution(["a", "b"], np.array([0.25, 0.5], dtype=np.float32), "POSITIVE", "integrated_gradients", 8,
                       delta=0.004, output_value=0.9, baseline_value=0.15, seconds=2.149, together=5)
    line = attribution_summary(attr)
    assert "8 steps · 2.1 s (one pass for 5 requests at once)" in line
    assert "sum of attributions +0.75 vs f(input) − f(baseline) = +0.75" in line
    alone = Attribution(["a"], np.array([0.1]), "POSITIVE", "gradient_x_input", 1, seconds=0.04)
    assert attribution_summary(alone).endswith("· 0.0 s") and "requests" not in attribution_summary(alone)
    untimed = Attribution(["a"], np.array([0.1]), "POSITIVE", "gradient_x_input", 1)
    assert attribution_summary(untimed) == "**Gradient × input** toward **POSITIVE**"


def test_a_tabs_figures_are_drawn_once_no_answer_is_computing(monkeypatch):
    """Answers first: the views event of the Sentiment tab waits while another student's answer computes
    (bounded by VIEWS_WAIT) and draws as soon as it is done; with no answer computing it draws at once."""
    import threading
    import time

    import gradio as gr
    import plotly.graph_objects as go

    from demos import sentiment
    from demos.runtime import compute
    from ui import sentiment as sentiment_tab

    with gr.Blocks() as demo:
        sentiment_tab.build()
    views = next(f for f in demo.fns.values() if f.api_name == "sentiment_views")
    result = sentiment.analyse("A warm and lovely film.")
    gate = compute.AnswerFirst(max_wait=5.0)
    monkeypatch.setattr(compute, "answer_first", gate)
    order: list[str] = []

    def draw() -> None:
        try:
            drawn = views.fn(result, None).values()  # the drawn outputs (a link's, with no link pending, left as they are)
        except Exception as exc:  # shown in the assert
            order.append(repr(exc))
            return
        order.append("figures" if any(isinstance(v, go.Figure) for v in drawn) else "nothing drawn")

    draw()  # drawn at once with no answer computing (and the drawing's imports done)
    assert order == ["figures"]
    gate.running = 1  # a student's answer is computing
    drawing = threading.Thread(target=draw)
    drawing.start()
    time.sleep(0.5)
    assert order == ["figures"]  # the figures wait for it
    with gate.changed:
        gate.running = 0
        gate.changed.notify_all()
    drawing.join(10)
    assert order == ["figures", "figures"]
    monkeypatch.setattr(compute, "VIEWS_WAIT", 0.05)
    gate.running = 1  # an answer that never ends delays figures by VIEWS_WAIT only
    t0 = time.perf_counter()
    draw()
    assert time.perf_counter() - t0 < 5.0 and order[-1] == "figures"

