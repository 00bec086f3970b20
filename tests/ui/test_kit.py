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
    from demos.runtime import priority
    from ui import sentiment as sentiment_tab

    with gr.Blocks() as demo:
        sentiment_tab.build()
    views = next(f for f in demo.fns.values() if f.api_name == "sentiment_views")
    result = sentiment.analyse("A warm and lovely film.")
    gate = priority.AnswerFirst(max_wait=5.0)
    monkeypatch.setattr(priority, "answer_first", gate)
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
    monkeypatch.setattr(priority, "VIEWS_WAIT", 0.05)
    gate.running = 1  # an answer that never ends delays figures by VIEWS_WAIT only
    t0 = time.perf_counter()
    draw()
    assert time.perf_counter() - t0 < 5.0 and order[-1] == "figures"


def test_a_gathered_event_lets_in_a_running_pass_and_a_whole_batch_waiting(serve, monkeypatch):
    """Served through Gradio's queue with `answer_queue`'s room: while one pass runs, a whole batch
    waits for the next, so a burst of 12 users at batch size 4 goes in full passes of 4 after the
    first (with room for one batch only, the users inside the running pass keep their places and the
    next pass gets 3: passes of 1, 3, 1, 3, ...)."""
    import time

    import gradio as gr

    from demos.runtime import gather
    from ui.kit import answer_queue

    monkeypatch.setenv("XRAY_BATCH_SIZE", "4")

    def alone(text: str, model_id: str | None = None) -> str:
        time.sleep(0.6)
        return text.upper()

    def many(texts: list, model_id: str | None) -> list:
        time.sleep(0.6)
        return [t.upper() for t in texts]

    g = gather.Gather(alone, lambda: many)
    queue = {**answer_queue("sentiment"), "api_name": "shout"}

    def build():
        with gr.Blocks() as demo:
            text, out = gr.Textbox(), gr.Textbox()
            gr.Button().click(g, text, out, **queue)
        return demo

    client = serve(build)
    jobs = [client.submit(f"user {i}", api_name="/shout") for i in range(12)]
    assert [j.result(timeout=60) for j in jobs] == [f"USER {i}" for i in range(12)]
    sizes = list(g.sizes)
    assert sum(sizes) == 12 and sizes[1:3] == [4, 4], sizes
