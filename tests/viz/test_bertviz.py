"""bertviz views: offline (libraries inlined, no CDN), sandboxed, escaped, capped; rendered in Chromium."""
from __future__ import annotations

import html
import json
import os
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from core.results import AttentionMaps
from demos import sentiment
from viz import bertviz_html as bv
from viz.tokens import clean_token

XSS = "</script><script>alert(1)</script>"
RNG = np.random.default_rng(0)


def _maps(layers=2, heads=3, q=5, k=None, kind="self", tokens=None) -> AttentionMaps:
    k = q if k is None else k
    w = RNG.random((layers, heads, q, k)).astype(np.float32)
    w /= w.sum(-1, keepdims=True)
    qt = tokens or [f"q{i}" for i in range(q)]
    kt = qt if (k == q and kind != "cross") else [f"k{i}" for i in range(k)]
    return AttentionMaps(w, qt, kt, kind)


def _doc(outer: str) -> str:
    """The iframe's inner document (srcdoc unescaped, as the browser sees it)."""
    return html.unescape(re.search(r'srcdoc="([^"]*)"', outer).group(1))


def _params(outer: str) -> dict:
    """bertviz's parameters as the frame's script holds them."""
    return json.loads(re.search(r"const params = (\{.*?\}); //", _doc(outer), re.S).group(1))


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self.srcs, self._in = [], [], False

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._in = True
            self.scripts.append("")
            self.srcs += [v for a, v in attrs if a == "src"]

    def handle_endtag(self, tag):
        self._in = self._in and tag != "script"

    def handle_data(self, data):
        if self._in:
            self.scripts[-1] += data


@pytest.mark.parametrize("render", [bv.head_view_html, bv.model_view_html])
def test_offline_and_sandboxed(render):
    outer = render(_maps())
    doc = _doc(outer)
    parser = _Scripts()
    parser.feed(doc)
    assert "cdnjs" not in outer and "cdnjs" not in doc and parser.srcs == []  # nothing fetched
    assert len(parser.scripts) == 5  # d3, jQuery, require.js, AMD shim, bertviz
    assert 'sandbox="allow-scripts"' in outer and "allow-same-origin" not in outer
    assert re.search(r'<iframe [^>]*title="bertviz [^"]+"', outer)
    assert set(re.findall(r"<(\w+)", outer)) <= {"div", "p", "iframe"}  # all else is inside srcdoc
    assert bv.static_paths() == []


def test_script_breaking_token_stays_text():
    tokens = ["[CLS]", XSS, "<img src=x onerror=alert(2)>", "a&b", "[SEP]"]
    outer = bv.head_view_html(_maps(tokens=tokens))
    assert "<script" not in outer and "<img" not in outer
    parser = _Scripts()
    parser.feed(_doc(outer))
    assert len(parser.scripts) == 5 and not any("alert(" in s and "\\u003c" not in s for s in parser.scripts)
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)" in parser.scripts[-1]
    assert _params(outer)["attention"][0]["left_text"] == tokens  # decodes back to the exact text


def test_values_tokens_and_layers_reach_bertviz():
    maps = _maps(layers=3, heads=2, q=4, tokens=["Ġthe", "▁Haus", "cat", "."])
    data = _params(bv.head_view_html(maps))
    d = data["attention"][0]
    assert d["left_text"] == [clean_token(t) for t in maps.query_tokens] == ["␣the", "␣Haus", "cat", "."]
    np.testing.assert_allclose(np.asarray(d["attn"]), maps.weights, atol=6e-4)
    assert data["include_layers"] == [0, 1, 2]


def test_token_cap_with_notice():
    outer = bv.head_view_html(_maps(layers=1, heads=2, q=150), max_tokens=100)
    d = _params(outer)["attention"][0]
    assert len(d["left_text"]) == len(d["right_text"]) == 100
    assert np.asarray(d["attn"]).shape == (1, 2, 100, 100)
    assert "first 100 x 100 of 150 x 150 tokens" in outer


def test_model_view_caps_layers_and_heads():
    outer = bv.model_view_html(_maps(layers=24, heads=16, q=6), max_layers=12, max_heads=12)
    data = _params(outer)
    assert len(data["include_layers"]) == 12 and data["include_layers"][0] == 0 and data["include_layers"][-1] == 23
    assert np.asarray(data["attention"][0]["attn"]).shape == (12, 12, 6, 6) and data["total_heads"] == 12
    assert "Showing layers" in outer and "heads 0, " in outer
    data = _params(bv.model_view_html(_maps(layers=12, heads=12, q=80)))  # default budgets
    n = len(data["attention"][0]["left_text"])
    assert n == bv.MODEL_MAX_TOKENS and np.asarray(data["attention"][0]["attn"]).size <= bv.MODEL_MAX_VALUES


def test_value_budget_keeps_fewer_layers():
    data = _params(bv.head_view_html(_maps(layers=12, heads=12, q=100), max_values=300_000))
    assert len(data["include_layers"]) == 300_000 // (12 * 100 * 100)


@pytest.mark.parametrize("render", [bv.encoder_decoder_head_view_html, bv.encoder_decoder_model_view_html])
def test_encoder_decoder_has_all_three_kinds(render):
    src, tgt = ["▁Das", "▁Haus", "</s>"], ["<pad>", "▁The", "▁house"]
    enc = _maps(2, 4, 3, kind="encoder self", tokens=src)
    dec = _maps(2, 4, 3, kind="decoder self", tokens=tgt)
    cross = AttentionMaps(_maps(2, 4, 3, 3).weights, tgt, src, "cross")
    outer = render(enc, dec, cross)
    kinds = {d["name"]: d for d in _params(outer)["attention"]}
    assert list(kinds) == ["Encoder", "Decoder", "Cross"]
    assert kinds["Cross"]["left_text"] == [clean_token(t) for t in tgt]
    assert kinds["Cross"]["right_text"] == [clean_token(t) for t in src]
    np.testing.assert_allclose(np.asarray(kinds["Cross"]["attn"]), cross.weights, atol=6e-4)
    assert '<option value="2">Cross</option>' in _doc(outer)


def test_bad_shapes_and_missing_attention_are_clear():
    bad = AttentionMaps(np.ones((1, 1, 3, 3)) / 3, ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="does not match"):
        bv.head_view_html(bad)
    with pytest.raises(ValueError, match="No attention"):
        bv.encoder_decoder_head_view_html()


def test_real_tiny_model_through_the_view():
    from ui.bertviz import MODEL, BertvizView
    from ui.common import InputError

    result = sentiment.analyse("A warm and funny film.")
    view = BertvizView(lambda r: {"self": r.attention}, None, None, None, None)
    data = _params(view.html_for(result, MODEL))
    assert data["attention"][0]["left_text"] == [clean_token(t) for t in result.attention.query_tokens]
    np.testing.assert_allclose(np.asarray(data["attention"][0]["attn"]).sum(-1), 1.0, atol=0.01)
    with pytest.raises(InputError, match="Run the model first"):
        view.html_for(None, MODEL)


@pytest.mark.slow
@pytest.mark.browser
def test_view_renders_offline_in_chromium(serve, browser):
    """Click Render in a served Blocks; the sandboxed frame draws the tokens with no network and no errors."""
    import gradio as gr

    from ui.bertviz import BertvizView

    tokens = ["[CLS]", "the", XSS, "cat", "[SEP]"]

    def build():
        with gr.Blocks() as demo:
            state = gr.State()
            compute = gr.Button("Compute")
            done = gr.Markdown()
            view = BertvizView.build(lambda r: {"self": r})
            view.bind(state)
            compute.click(lambda: (_maps(2, 3, tokens=tokens), "computed"), None, [state, done])
        return demo

    url = serve(build).src
    errors, outside, dialogs = [], [], []
    page = browser.new_page()
    try:
        page.route(re.compile(r"^(?!http://127\.0\.0\.1[:/]).*"), lambda r: (outside.append(r.request.url), r.abort()))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(url)
        page.get_by_role("button", name="Compute").click()
        page.get_by_text("computed").wait_for(timeout=60_000)
        page.get_by_text("bertviz (head view / model view)").click()
        page.get_by_role("button", name="Render").click()
        frame = page.frame_locator("iframe[title^='bertviz head view']")
        frame.locator("svg text").first.wait_for(timeout=60_000)
        shown = frame.locator("svg text").all_text_contents()
        assert shown == tokens + tokens  # left and right columns, XSS token as plain text
        page.get_by_text("model view", exact=True).click()
        model = page.frame_locator("iframe[title^='bertviz model view']")
        model.get_by_text("Heads").wait_for(timeout=60_000)
    except Exception:
        page.screenshot(path=os.path.join(os.environ.get("GRADIO_TEMP_DIR", "/tmp"), "bertviz-failure.png"))
        raise
    finally:
        page.close()
    assert errors == [] and dialogs == [] and outside == []
