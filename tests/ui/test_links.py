"""Links to a view (ui.links): parsing and checking like any other input, and the way back."""
from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import explainers, registry
from ui import links
from ui.links import Link, LinkError, encode, parse

MODELS = {"sentiment": [("distilbert-base-uncased-finetuned-sst-2-english", "distilbert-base-uncased-finetuned-sst-2-english"),
                        ("local folder tiny", "/srv/models/tiny")]}


def models(task):
    return MODELS.get(task, [(registry.get(task).default_model, registry.get(task).default_model)])


def roundtrip(link: Link) -> Link:
    return parse(dict(parse_qsl(encode(link)[1:])), models)


def test_a_link_carries_tab_view_inputs_model_and_controls():
    link = parse({"tab": "sentiment", "text": "The film was not good.", "view": "attention", "layer": "2",
                  "head": "average", "words": "1", "model": "local folder tiny"}, models)
    assert (link.tab, link.view, link.input("text")) == ("sentiment", "attention", "The film was not good.")
    assert link.model == "/srv/models/tiny" and link.shown_model == "local folder tiny"
    assert dict(link.controls) == {"layer": 2, "head": "average", "words": True}
    assert roundtrip(link) == link
    assert "/srv" not in encode(link)  # never a server path


def test_links_stay_short_and_carry_no_result():
    query = encode(parse({"tab": "qa", "question": "Who?", "context": "Ada wrote it.", "view": "lens"}, models))
    assert query == "?tab=qa&view=lens&question=Who%3F&context=Ada%20wrote%20it."
    assert len(query) < 80


def test_every_tab_and_view_opens():
    for tab in links.tabs():
        assert parse({"tab": tab}, models).tab == tab
        for view in links.views(tab):
            assert parse({"tab": tab, "view": view}, models).view == view


def test_explainer_views_and_their_parameters_are_linkable():
    for task in registry.KEYS:
        for e in explainers.for_task(task):
            assert e.name in links.views(task)
    steps = parse({"tab": "generation", "view": "attention_steps", "layer": "1", "head": "2", "query": "-1"}, models)
    assert dict(steps.controls) == {"layer": 1, "head": 2, "query": -1}
    ablate = parse({"tab": "sentiment", "view": "ablate", "heads": "L1H0, L2"}, models)
    assert ablate.control("heads") == "L1H0, L2"


@pytest.mark.parametrize(("query", "words"), [
    ({"tab": "nowhere"}, ["unknown tab 'nowhere'", "sentiment"]),
    ({"tab": "sentiment", "view": "pixels"}, ["unknown view 'pixels'", "attention"]),
    ({"tab": "sentiment", "model": "gpt-5"}, ["not allowed for the sentiment task", "distilbert"]),
    ({"tab": "sentiment", "text": "x" * 5001}, ["5,001 characters long", "limit for this box is 5,000"]),
    ({"tab": "sentiment", "view": "attention", "layer": "two"}, ["layer should be a whole number"]),
    ({"tab": "sentiment", "view": "attention", "layer": "5000"}, ["between 0 and 999"]),
    ({"tab": "sentiment", "view": "embeddings", "layer": "1"}, ["does not take", "'layer'"]),
    ({"tab": "sentiment", "colour": "red"}, ["'colour'", "takes: tab, view, text"]),
    ({"tab": "image", "image": "../../etc/passwd"}, ["example files", "chelsea_cat.jpg"]),
    ({"tab": "sentiment", "view": "contrast", "method": "magic"}, ["method should be one of"]),
    ({"tab": "generation", "tokens": "0"}, ["tokens is 0"]),
    ({"text": "hello"}, ["no tab"]),
    ({"tab": "sentiment", "presenter": "maybe"}, ["presenter should be 1 or 0"]),
    ({"lesson": "nope"}, ["unknown lesson 'nope'"]),
    ({"lesson": "attention", "tab": "qa"}, ["carries only lesson"]),
])
def test_bad_links_get_clear_messages(query, words):
    with pytest.raises(LinkError) as info:
        parse(query, models, lessons=["attention"])
    for word in words:
        assert word in str(info.value)


def test_markup_in_a_link_stays_text_in_its_message():
    with pytest.raises(LinkError) as info:
        parse({"tab": "<img src=x onerror=alert(1)>"}, models)
    assert "<img" not in str(info.value) and "&lt;img" in str(info.value)


def test_an_overlong_link_is_refused_both_ways():
    with pytest.raises(LinkError, match="too long"):
        parse({"tab": "qa", "context": "x" * (links.LINK_MAX_CHARS + 1)}, models)
    long_context = Link(tab="qa", inputs=(("context", "word " * 1500),))
    with pytest.raises(LinkError, match="too long for a link"):
        encode(long_context)


def test_lesson_links():
    link = parse({"lesson": "attention", "lesson_step": "3", "presenter": "1"}, models, lessons=["attention"])
    assert (link.lesson, link.lesson_step, link.presenter) == ("attention", 3, True)
    assert encode(link) == "?lesson=attention&lesson_step=3&presenter=1"
    assert parse({"lesson": "attention"}, models, lessons=["attention"]).lesson_step == 1


def test_an_empty_link_opens_nothing():
    assert parse({}, models).empty
    assert encode(Link()) == ""
    assert parse({"presenter": "1"}, models).presenter is True


def test_examples_name_files_of_the_app_only():
    assert "chelsea_cat.jpg" in links.examples("image")
    assert "quick_brown_fox.wav" in links.examples("audio")
    link = parse({"tab": "asr", "audio": "quick_brown_fox.wav", "view": "lens"}, models)
    assert link.input("audio") == "quick_brown_fox.wav"


def test_input_limits_match_the_boxes():
    """The limits of a link's texts are those of the tab's boxes (read from the built components)."""
    import gradio as gr

    from ui import inputs

    for task, fields in links.INPUTS.items():
        for field in fields:
            if field.kind == "text":
                assert field.limit in (2000, 5000, 10000, 20000), (task, field)
    box = inputs.text_input(max_length=5000, render=False)
    assert isinstance(box, gr.Textbox) and box.max_length == links.INPUTS["sentiment"][0].limit


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)


@given(TEXT, st.integers(0, 999), st.sampled_from(["average", "0", "3"]), st.booleans())
def test_any_link_survives_the_round_trip(text, layer, head, words):
    query = {"tab": "translation", "view": "alignment", "text": text, "layer": str(layer), "head": head,
             "words": "1" if words else "0"}
    link = parse(query, models)
    assert roundtrip(link) == link
