"""Links wired into the built app (ui.share): every view of ui.links exists on its tab with the
controls a link may set, every inner tab has a link key, and a link's updates select, fill and run."""
from __future__ import annotations

import gradio as gr
import pytest

from core import registry
from ui import links, share


@pytest.fixture(scope="module")
def demo():
    import app

    return app.build_app()


@pytest.fixture(scope="module")
def wiring(demo):
    found = [fn for fn in demo.fns.values() if fn.name == "on_load"]
    assert len(found) == 1, "the page has one load event (links and lessons)"
    return demo._xray_wiring


def test_every_view_of_a_link_exists_on_its_tab(wiring):
    for tab in links.tabs():
        built = set(wiring.tabs[tab].views)
        assert built == set(links.views(tab)), f"{tab}: built {sorted(built)} vs links {sorted(links.views(tab))}"


def test_every_control_of_a_link_has_its_component(wiring):
    for tab in registry.KEYS:
        parts = wiring.tabs[tab]
        assert {f.name for f in links.INPUTS[tab]} == set(parts.inputs), tab
        assert parts.model is not None and parts.go is not None and parts.pending is not None, tab
        for view in links.views(tab):
            wanted = set(links.controls(tab, view))
            assert wanted <= set(parts.views[view].controls), f"{tab}/{view}: missing {wanted - set(parts.views[view].controls)}"


def test_text_limits_are_the_boxes_limits(wiring):
    for tab in registry.KEYS:
        for field in links.INPUTS[tab]:
            comp = wiring.tabs[tab].inputs[field.name]
            if field.kind == "text":
                assert comp.max_length == field.limit, (tab, field.name)


def test_on_demand_views_have_a_trigger(wiring):
    from core import explainers

    for tab in registry.KEYS:
        for e in explainers.for_task(tab):
            view = wiring.tabs[tab].views[e.name]
            if e.name not in ("lens", "attention_steps"):  # these run with the answer
                assert view.run is not None, (tab, e.name)


def test_a_link_selects_fills_and_runs(wiring):
    link = links.parse({"tab": "sentiment", "text": "Hi there", "view": "lens"}, share.model_choices)
    out = wiring.updates(link)
    parts = wiring.tabs["sentiment"]
    assert out[wiring.top].constructor_args["selected"] == "sentiment"
    selected = [out[tabs].constructor_args["selected"] for tabs, _ in parts.views["lens"].path]
    assert selected == [links.GROUP, "lens"]
    assert out[parts.inputs["text"]] == "Hi there"
    assert out[parts.go]  # a fresh value: the answer runs
    steps = wiring.updates(links.parse({"tab": "generation", "text": "Once", "view": "attention", "layer": "1", "head": "2"},
                                       share.model_choices))
    pending = steps[wiring.tabs["generation"].pending]
    assert sorted(map(str, pending["set"].values())) == ["1", "2"]  # layer and head: set once the views are drawn
    no_input = wiring.updates(links.parse({"tab": "image"}, share.model_choices))
    assert wiring.tabs["image"].go not in no_input  # nothing to run without an input


def test_where_the_page_is(wiring):
    assert share._where("xray-tab-sentiment,xray-tab-sentiment--inside,xray-tab-sentiment--lens", wiring) == ("sentiment", "lens")
    assert share._where("xray-tab-qa", wiring) == ("qa", "")
    with pytest.raises(gr.Error):
        share._where("somewhere-else", wiring)


def test_events_that_set_a_whole_page_show_no_spinner_on_it(demo):
    """The page load (a link) and the lesson steps set hundreds of components. Gradio's page finds each output by
    a search of the whole component tree for every status update, so a spinner on each of them cost 1.5-2 s of
    every page load (docs/TESTING.md); they run without one (their own model runs show progress where they run).
    And the page tracks a status for every progress target of every event run so far and re-applies all of them
    on each status change of any later event: these events track one always-shown button."""
    wide = [fn for fn in demo.fns.values() if len(fn.outputs) > 100]
    assert {fn.name for fn in wide} >= {"on_load", "move"}, "the load and the lesson steps set the whole page"
    shown = [fn.name for fn in wide if fn.show_progress != "hidden"]
    assert not shown, f"spinners on every output of {shown}"
    config = {d["id"]: d for d in demo.get_config_file()["dependencies"]}
    assert all(len(config[fn._id]["show_progress_on"] or ()) == 1 for fn in wide), "a page-wide event tracks many"


def test_a_links_layer_and_head_are_drawn_by_the_views_event(demo, wiring, tiny_models):
    """A link's layer and head are set on the controls after the answer's views are drawn, and the same event draws
    the figure for them: it is not left to the controls' change events, whose redraw could land before the views'
    own figure (every head's mean) and be overwritten by it. The figure's cells are layer 0, head 1 of the tiny
    model's own attention (transformers, `output_attentions`, in this test)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from demos import sentiment

    text = "The children were playing happily."
    link = links.parse({"tab": "sentiment", "text": text, "view": "attention", "layer": "0", "head": "1"},
                       share.model_choices)
    parts = wiring.tabs["sentiment"]
    pending = wiring.updates(link)[parts.pending]
    views = next(f for f in demo.fns.values() if f.api_name == "sentiment_views")
    out = views.fn(sentiment.analyse(text), pending)
    titles = {c: v.layout.title.text for c, v in out.items() if isinstance(c, gr.Plot) and hasattr(v, "layout")}
    linked = [c for c, t in titles.items() if t and "layer 0" in t and "head 1" in t]
    assert len(linked) == 1, titles
    folder = tiny_models["sentiment"]
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        weights = model(**tok(text, return_tensors="pt"), output_attentions=True).attentions[0][0, 1].numpy()
    drawn = out[linked[0]].data[0].z
    assert drawn.shape == weights.shape
    assert abs(drawn - weights).max() < 1e-5
