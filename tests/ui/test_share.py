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
    And the page tracks a status for every progress target of every event run so far (the outputs, unless
    `show_progress_on` names fewer) and re-applies all of them on each status change of any later event: these
    events track one component, not their hundreds of outputs."""
    wide = [fn for fn in demo.fns.values() if len(fn.outputs) > 100]
    assert {fn.name for fn in wide} >= {"on_load", "move"}, "the load and the lesson steps set the whole page"
    shown = [fn.name for fn in wide if fn.show_progress != "hidden"]
    assert not shown, f"spinners on every output of {shown}"
    config = {d["id"]: d for d in demo.get_config_file()["dependencies"]}
    targets = {fn.name: config[fn._id]["show_progress_on"] or config[fn._id]["outputs"] for fn in wide}
    assert all(len(t) == 1 for t in targets.values()), {name: len(t) for name, t in targets.items()}
