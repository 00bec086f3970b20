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
