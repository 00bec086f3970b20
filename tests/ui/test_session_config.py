"""A new Gradio session builds its components' configuration on demand (ui.session.LazyConfigs),
and holds then exactly what Gradio's own eager SessionState holds."""
from __future__ import annotations

import gradio as gr
from gradio import state_holder

from ui import session


def _demo(deep_link: bool = False) -> gr.Blocks:
    with gr.Blocks() as demo:
        if deep_link:
            gr.DeepLinkButton()
        text = gr.Textbox(value="hello", label="Text")
        label = gr.Label(label="Sentiment")
        with gr.Row():
            plot = gr.Plot(label="Attention")
            state = gr.State(time_to_live=60)
        gr.Markdown("**notes**")
        text.submit(lambda t: ({"pos": 0.9}, None, t), text, [label, plot, state])
    return demo


def _session_classes():
    assert session.lazy_session_config() is True
    lazy = state_holder.SessionState
    assert getattr(lazy, "xray_lazy", False)
    eager = lazy.__mro__[1]
    assert not getattr(eager, "xray_lazy", False)
    return eager, lazy


def test_lazy_session_holds_what_gradio_holds_on_a_page_with_deep_links():
    eager_cls, lazy_cls = _session_classes()
    demo = _demo(deep_link=True)
    eager, lazy = eager_cls(demo), lazy_cls(demo)
    assert set(vars(eager)) == set(vars(lazy)) - {"keeps_values"}  # Gradio's own __init__ ran: its attributes
    assert dict.__len__(lazy.config_values) == 0  # nothing built yet
    assert len(lazy.config_values) == len(eager.config_values) > 5
    # what an event does: an output's block stored, its value written into the configuration
    label_id = next(k for k, b in demo.blocks.items() if isinstance(b, gr.Label))
    for s in (eager, lazy):
        s[label_id] = demo.blocks[label_id]
        s._update_value_in_config(label_id, {"label": "pos"})
    assert dict.__len__(lazy.config_values) == 1  # only the output was built
    assert list(lazy.components) == list(eager.components)  # the deep link's view: equal, in page order
    assert [c["id"] for c in lazy.components] == [c["id"] for c in eager.components]
    assert lazy.config_values[label_id]["props"]["value"] == {"label": "pos"}


def test_without_deep_links_served_values_are_not_copied_into_the_session():
    eager_cls, lazy_cls = _session_classes()
    demo = _demo()
    eager, lazy = eager_cls(demo), lazy_cls(demo)
    label_id = next(k for k, b in demo.blocks.items() if isinstance(b, gr.Label))
    big = {"label": "pos", "confidences": [{"label": f"c{i}", "confidence": 0.001} for i in range(1000)]}
    for s in (eager, lazy):
        s[label_id] = demo.blocks[label_id]
        s._update_value_in_config(label_id, big)
    assert eager.config_values[label_id]["props"]["value"] == big  # Gradio's own keeps the copy
    assert lazy.config_values[label_id]["props"].get("value") != big  # the app's does not
    assert [c["id"] for c in lazy.components] == [c["id"] for c in eager.components]


def test_installing_twice_keeps_one_lazy_class():
    _, lazy = _session_classes()
    assert session.lazy_session_config() is True
    assert state_holder.SessionState is lazy  # not wrapped twice
