"""The whole app as `python app.py` serves it: every tab's public api_name answers through
gradio_client with its plain answer first, and the hardened settings are in place."""
from __future__ import annotations

import pytest

from demos import clip, explorer, generation, qa, sentiment, speech, translation
from tests.conftest import launch_full_app

pytestmark = pytest.mark.slow

IMAGE = "assets/images/chelsea_cat.jpg"
AUDIO = "assets/audio/quick_brown_fox.wav"


@pytest.fixture(scope="module")
def client():
    from gradio_client import Client

    demo, url = launch_full_app()
    c = Client(url, verbose=False)
    yield c
    c.close()
    demo.close()


def test_public_api_names_are_the_documented_ones(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    for name in ("/generate", "/sentiment", "/qa", "/translate", "/classify_image", "/transcribe", "/clip_match", "/explore"):
        assert name in names


def test_every_tab_answers_with_its_plain_answer_first(client):
    from gradio_client import handle_file

    text = "Ada Lovelace wrote the first program."
    assert client.predict("Once upon a time", 5, api_name="/generate")[0] == generation.generate("Once upon a time", 5).text
    assert client.predict(text, api_name="/sentiment")[0]["label"] == sentiment.analyse(text).predicted
    assert client.predict("Who wrote it?", text, api_name="/qa")[0] == qa.answer("Who wrote it?", text).answer
    assert client.predict(text, api_name="/translate")[0] == translation.analyse(text).translation
    label = client.predict(handle_file(IMAGE), api_name="/classify_image")[0]
    assert len(label["confidences"]) == 5 and label["label"] == label["confidences"][0]["label"]
    assert client.predict(handle_file(AUDIO), api_name="/transcribe")[0] == speech.transcribe(AUDIO).text
    probs = client.predict(handle_file(IMAGE), "a cat, a dog", api_name="/clip_match")[0]
    assert {c["label"] for c in probs["confidences"]} == {"a cat", "a dog"}
    want = clip.analyse(IMAGE, "a cat, a dog").text_probs()
    assert {c["label"]: c["confidence"] for c in probs["confidences"]} == pytest.approx(want, abs=1e-6)
    table = client.predict("A cat sat.\nA dog ran.", api_name="/explore")[0]
    assert len(table["data"]) == 2 and table["data"][0][1] == pytest.approx(1.0, abs=1e-3)
    assert explorer.analyse("A cat sat.\nA dog ran.").similarity.shape == (2, 2)


def test_every_tab_draws_its_views_after_the_answer(client):
    from core import registry

    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    missing = [spec.key for spec in registry.TASKS if f"/{spec.api_name('views')}" not in names]
    assert not missing, f"tabs without a <api>_views event: {missing}"


def test_views_event_draws_the_sessions_own_result(client):
    """The answer event returns the answer alone; `/sentiment_views` then draws the maps from the
    session's result: the attention heatmap shown is the model's last layer, heads averaged."""
    import numpy as np
    import plotly.io as pio

    from viz.attention import AVERAGE, select_heads

    text = "The views arrive after the answer."
    answer = client.predict(text, api_name="/sentiment")
    assert answer[0]["label"] == sentiment.analyse(text).predicted
    assert not any(isinstance(v, dict) and "plot" in v for v in answer)  # no figure in the answer itself
    views = client.predict(api_name="/sentiment_views")
    figures = [pio.from_json(v["plot"]) for v in views if isinstance(v, dict) and v.get("plot")]
    heatmaps = [_array(t.z) for f in figures for t in f.data if t.type == "heatmap"]
    maps = sentiment.analyse(text).attention
    want = select_heads(maps.weights, maps.n_layers - 1, AVERAGE)
    assert any(h.shape == want.shape and np.allclose(h, want, atol=1e-6) for h in heatmaps)


def _array(z):
    """A plotly trace's z as numpy: plain lists, or plotly's typed array {dtype, bdata, shape}."""
    import base64

    import numpy as np

    if isinstance(z, dict) and "bdata" in z:
        flat = np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"]))
        shape = z.get("shape")
        shape = tuple(int(n) for n in shape.split(",")) if isinstance(shape, str) else tuple(shape or (-1,))
        return flat.reshape(shape).astype(np.float32)
    return np.asarray(z, dtype=np.float32)
