"""Security of the whole app as served: escaping of user/model text, the model allow-list, upload
and input limits, file access, and the hardened launch settings (CORS, monitoring, errors,
safetensors only, no remote code).

One server of the FULL app (app.build_app, queued and launched with app.launch_kwargs as
app.main does) on a free loopback port; the conftest points every task at its tiny model.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.conftest import launch_full_app

pytestmark = pytest.mark.slow

PAYLOAD = (
    "<script>alert(1)</script> <img src=x onerror=alert(2)> "
    '<a href="javascript:alert(3)">x</a> [y](javascript:alert(4)) {{7*7191}} ${7*7193}'
)
EVALUATED = (str(7 * 7191), str(7 * 7193))  # what a template engine would make of the payload
RAW_MARKUP = re.compile(r"<\s*/?\s*(script|img|a|svg|iframe)\b|<[^<>]*\b(href|src)\s*=\s*[\"']?\s*javascript:", re.I)
MD_LINK = re.compile(r"(?<!\\)\]\(\s*javascript:", re.I)  # a live markdown link (Markdown outputs only)
# Components whose value the browser shows as text (Svelte text nodes), never as markup.
TEXT_COMPONENTS = {"Textbox", "Label", "Dropdown", "Radio", "Number", "Slider", "Checkbox", "State", "Image", "File"}
BAD_MODELS = ["gpt2-xl", "/etc", "../../", "bert-large-uncased", "/tmp", "./app.py"]


@pytest.fixture(scope="module")
def server(tiny_settings):
    """(base url, api info) of the full app launched with the app's own hardened settings."""
    from gradio_client import Client

    demo, url = launch_full_app()
    client = Client(url, verbose=False)
    info = client.view_api(return_format="dict", print_info=False)
    client.close()
    yield url.rstrip("/"), info
    demo.close()


def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pics") / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return str(path)


# ---- every string from a user or a model that reaches HTML is escaped ----

def _strings(value):
    """Every string inside an output; plotly figures are parsed so their labels are checked."""
    if isinstance(value, dict) and value.get("type") == "plotly" and isinstance(value.get("plot"), str):
        yield from _strings(json.loads(value["plot"]))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def _check_outputs(info: dict, api: str, outputs) -> list[str]:
    """Assert no payload markup in markup-rendering outputs; returns those outputs' strings."""
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    returns = info["named_endpoints"][api]["returns"]
    assert len(returns) == len(outputs)
    checked = []
    for ret, out in zip(returns, outputs):
        strings = list(_strings(out))
        assert not any(e in s for s in strings for e in EVALUATED), f"{api} {ret['label']}: template evaluated"
        if ret["component"] in TEXT_COMPONENTS:
            continue
        for s in strings:
            m = RAW_MARKUP.search(s) or (MD_LINK.search(s) if ret["component"] == "Markdown" else None)
            assert m is None, f"{api} -> {ret['component']} {ret['label']!r} carries raw markup {m.group(0)!r}: {s[:200]}"
        checked += strings
    return checked


def _upload(picture):
    from gradio_client import handle_file

    return handle_file(picture)


# (main endpoint, its args, attribution endpoint, its args). Attribution reads the session's result.
TEXT_APIS = {
    "sentiment": ("/sentiment", lambda p: (PAYLOAD,), "/sentiment_attribution", ("predicted class", "integrated_gradients", 4)),
    "qa": ("/qa", lambda p: (f"What is {PAYLOAD}?", f"The answer is {PAYLOAD} and more."), "/qa_attribution", ("integrated_gradients", 4)),
    "generate": ("/generate", lambda p: (PAYLOAD, 6, False), "/generate_attribution", (None, "integrated_gradients", 4)),
    "translate": ("/translate", lambda p: (PAYLOAD,), "/translate_attribution", (0, "integrated_gradients", 4)),
    "clip_match": ("/clip_match", lambda p: (_upload(p), f"{PAYLOAD}\na cat"), "/clip_attribution", (0, "a cat", "integrated_gradients", 4)),
}


@pytest.mark.parametrize("task", list(TEXT_APIS))
def test_payloads_are_escaped_in_every_markup_output(server, picture, task):
    url, info = server
    api, make_args, attr_api, attr_args = TEXT_APIS[task]
    client = _client(url)
    try:
        checked = _check_outputs(info, api, client.predict(*make_args(picture), api_name=api))
        checked += _check_outputs(info, attr_api, client.predict(*attr_args, api_name=attr_api))
    finally:
        client.close()
    # not vacuous: the payload's characters did reach the markup outputs, escaped
    assert any("&lt;" in s for s in checked), f"{task}: payload never reached an HTML/Markdown/plot output"


def test_clip_attribution_escapes_the_chosen_description(server, picture):
    url, info = server
    client = _client(url)
    try:
        client.predict(_upload(picture), f"{PAYLOAD}\na cat", api_name="/clip_match")
        _check_outputs(info, "/clip_attribution", client.predict(0, PAYLOAD, "integrated_gradients", 4, api_name="/clip_attribution"))
    finally:
        client.close()


@pytest.mark.parametrize("api,args", [
    ("/sentiment_compare", (PAYLOAD, PAYLOAD + " again")),
    ("/generate_compare", (PAYLOAD, PAYLOAD + " again", 4)),
])
def test_payloads_are_escaped_in_compare_views(server, api, args):
    url, info = server
    client = _client(url)
    try:
        checked = _check_outputs(info, api, client.predict(*args, api_name=api))
    finally:
        client.close()
    assert any("&lt;" in s for s in checked)


def test_uploaded_file_name_cannot_carry_markup(server, tmp_path):
    """A file named like a tag: the name reaches the CLIP axis labels and image picker escaped."""
    url, info = server
    evil = tmp_path / "<img src=x onerror=alert(5)>.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(evil)
    client = _client(url)
    try:
        _check_outputs(info, "/clip_match", client.predict(_upload(str(evil)), "a cat\na dog", api_name="/clip_match"))
    finally:
        client.close()


# ---- only allow-listed models can be loaded ----

MODEL_APIS = {
    "sentiment": ("/sentiment", lambda p: ("fine",)),
    "qa": ("/qa", lambda p: ("Who?", "Ada wrote it.")),
    "generation": ("/generate", lambda p: ("Once", 2, False, 1.0, 50, 1.0, 0)),
    "translation": ("/translate", lambda p: ("Hello.",)),
    "image": ("/classify_image", lambda p: (_upload(p),)),
    "clip": ("/clip_match", lambda p: (_upload(p), "a cat\na dog")),
}


@pytest.mark.parametrize("task", list(MODEL_APIS))
def test_api_refuses_models_not_on_the_allow_list(server, picture, task):
    from demos.runtime import loading, settings

    url, _ = server
    api, make_args = MODEL_APIS[task]
    before = loading.resident()
    client = _client(url)
    try:
        for bad in BAD_MODELS:
            with pytest.raises(Exception):  # noqa: B017 - gradio_client: HTTP 400 from the join (validation)
                client.predict(*make_args(picture), bad, api_name=api)
            with pytest.raises(PermissionError):
                settings.current().model_for(task, bad)
    finally:
        client.close()
    if task not in ("image", "clip"):  # raw call says why (the image endpoints need an upload first)
        raw = _call(url, api.lstrip("/"), [*make_args(picture), BAD_MODELS[0]])
        assert "not in the list of choices" in raw or "not allowed" in raw, raw[:300]
    assert loading.resident() == before, "a refused model id was loaded"


def test_loader_refuses_ids_off_the_list_before_touching_disk(tiny_models):

    from demos.runtime import loading

    before = loading.resident()
    for bad in [*BAD_MODELS, str(tiny_models["qa"])]:  # a real model folder, but another task's
        with pytest.raises(PermissionError):
            loading.load("sentiment", bad)
    assert loading.resident() == before


# ---- uploads and inputs are bounded ----

def test_upload_larger_than_max_file_size_is_rejected(server):
    url, _ = server
    big = b"\0" * (25 * 1024 * 1024 + 1)  # app.launch_kwargs: max_file_size="25mb"
    r = requests.post(f"{url}/gradio_api/upload", files={"files": ("big.png", big)}, timeout=60)
    assert r.status_code == 413, r.text[:200]
    small = requests.post(f"{url}/gradio_api/upload", files={"files": ("small.png", b"\0" * 1000)}, timeout=60)
    assert small.status_code == 200


def test_image_pixel_and_byte_limits_give_clear_messages(server, tmp_path):
    from demos.inputs import images

    url, _ = server
    huge = tmp_path / "huge.png"  # 42 Mpx of one colour: a small file that would decode to 126 MB
    Image.new("RGB", (7000, 6000), (10, 20, 30)).save(huge)
    heavy = tmp_path / "heavy.bmp"  # under the 25 MB upload limit, over the 20 MB image limit
    Image.fromarray(np.zeros((2700, 2700, 3), np.uint8)).save(heavy)
    assert images.MAX_BYTES < heavy.stat().st_size < 25 * 1024 * 1024
    client = _client(url)
    try:
        for api, extra in (("/classify_image", ()), ("/clip_match", ("a cat\na dog",))):
            with pytest.raises(Exception, match="megapixels"):
                client.predict(_upload(str(huge)), *extra, api_name=api)
            with pytest.raises(Exception, match=r"limit is 20 MB"):
                client.predict(_upload(str(heavy)), *extra, api_name=api)
    finally:
        client.close()


def _max_length_cases():
    return [
        ("/sentiment", 0, lambda n: ("a" * n,)),
        ("/qa", 1, lambda n: ("Who?", "a " * (n // 2 + 1))),
        ("/generate", 0, lambda n: ("a" * n, 2, False)),
        ("/translate", 0, lambda n: ("a" * n,)),
        ("/clip_match", 1, None),
    ]


@pytest.mark.parametrize("api,index,make", _max_length_cases())
def test_text_over_max_length_is_refused_by_the_api(server, picture, api, index, make):
    url, _ = server
    limit = _textbox_limit(url, api, index)
    args = make(limit + 1) if make else (_upload(picture), "a " * (limit // 2 + 1))
    client = _client(url)
    try:
        with pytest.raises(Exception, match=r"(?i)limit|too long|characters"):
            client.predict(*args, api_name=api)
    finally:
        client.close()


def _textbox_limit(url: str, api: str, index: int) -> int:
    """max_length of the `index`-th input of `api`, from the served config."""
    config = requests.get(f"{url}/config", timeout=30).json()
    dep = next(d for d in config["dependencies"] if d.get("api_name") == api.lstrip("/"))
    comp = next(c for c in config["components"] if c["id"] == dep["inputs"][index])
    assert comp["type"] == "textbox" and comp["props"].get("max_length"), comp
    return int(comp["props"]["max_length"])


# ---- no file outside the allowed folders can be read ----

def test_files_outside_allowed_folders_are_not_served(server, tiny_models):
    import app

    url, _ = server
    model_file = next(Path(tiny_models["sentiment"]).glob("*.json"))
    forbidden = [
        "/etc/passwd",
        "../../etc/passwd",
        "..%2F..%2Fetc%2Fpasswd",
        str(app.ASSETS) + "/../app.py",
        str(app.ASSETS) + "/%2e%2e/app.py",
        str(app.ROOT / "app.py"),
        "app.py",
        str(app.ROOT / "demos" / "settings.py"),
        str(model_file),
        "/proc/self/environ",
        "/proc/self/cmdline",
    ]
    for path in forbidden:
        r = requests.get(f"{url}/gradio_api/file={path}", timeout=30)
        assert r.status_code in (403, 404), f"{path}: {r.status_code}"
        assert "root:" not in r.text and "import" not in r.text
    example = next((app.ASSETS / "images").glob("*.jpg"))  # the allowed folder is served
    assert requests.get(f"{url}/gradio_api/file={example}", timeout=30).status_code == 200


def _call(url: str, api: str, data: list) -> str:
    """Raw REST call (no gradio_client: it would upload a local path itself); returns the SSE text."""
    r = requests.post(f"{url}/gradio_api/call/{api}", json={"data": data}, timeout=30)
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {r.text}"
    event = r.json()["event_id"]
    return requests.get(f"{url}/gradio_api/call/{api}/{event}", timeout=60).text


def test_server_paths_in_place_of_uploads_are_refused(server, tmp_path):
    import gradio.utils

    url, _ = server
    secret = tmp_path / "secret.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(secret)
    upload_dir = gradio.utils.get_upload_folder()
    paths = ["/etc/passwd", str(secret), f"{upload_dir}/../../etc/passwd", f"{upload_dir}/../{secret.name}"]
    for path in paths:
        fd = {"path": path, "meta": {"_type": "gradio.FileData"}}
        for api, data in (("classify_image", [fd]), ("clip_match", [fd, "a cat\na dog"])):
            text = _call(url, api, data)
            assert "event: error" in text or text.startswith("HTTP 4"), f"{api} accepted {path}: {text[:300]}"
            assert "event: complete" not in text
            assert "root:" not in text


# ---- hardened launch settings ----

def test_cors_is_strict(server):
    url, _ = server
    evil = "http://evil.example"
    for r in (
        requests.get(f"{url}/config", headers={"Origin": evil}, timeout=30),
        requests.options(f"{url}/gradio_api/queue/join", headers={"Origin": evil, "Access-Control-Request-Method": "POST"}, timeout=30),
        requests.post(f"{url}/gradio_api/call/sentiment", json={"data": ["hi"]}, headers={"Origin": evil}, timeout=30),
    ):
        assert r.headers.get("access-control-allow-origin") not in (evil, "*"), dict(r.headers)


def test_no_monitoring_endpoint(server):
    url, _ = server
    for path in ("/monitoring", "/gradio_api/monitoring"):
        r = requests.get(f"{url}{path}", timeout=30)
        assert r.status_code in (403, 404), f"{path}: {r.status_code}"
        assert "/monitoring/" not in r.text  # no link to a dashboard with a token


def test_unexpected_errors_give_the_generic_message(server, monkeypatch):
    from demos import sentiment
    from ui.common import GENERIC_ERROR

    url, _ = server

    def boom(*args, **kwargs):
        raise RuntimeError("secret detail at /work/main/demos/private.py line 7")

    monkeypatch.setattr(sentiment, "analyse", boom)
    client = _client(url)
    try:
        with pytest.raises(Exception) as excinfo:
            client.predict("hello", api_name="/sentiment")
    finally:
        client.close()
    assert str(excinfo.value) == GENERIC_ERROR
    from demos.runtime import settings

    raw = _call(url, "sentiment", ["hello", settings.current().choices("sentiment")[0]])
    assert GENERIC_ERROR in raw and "secret" not in raw and "Traceback" not in raw and ".py" not in raw


def test_api_info_is_still_served(server):
    url, info = server
    names = set(info["named_endpoints"])
    assert {"/sentiment", "/qa", "/generate", "/translate", "/classify_image", "/clip_match"} <= names
    assert requests.get(f"{url}/gradio_api/info", timeout=30).status_code == 200


# ---- safetensors only, no remote code ----

@pytest.fixture
def sentiment_from(monkeypatch, tiny_settings):
    """Point the sentiment task at another folder for one test (allow-list and caches restored)."""
    from demos.runtime import cache, settings

    def point(folder: Path) -> str:
        cfg = settings.Settings(overrides={**tiny_settings.overrides, "sentiment": str(folder)}, offline=True, max_models=16)
        monkeypatch.setattr(settings, "_current", cfg)
        return str(folder)

    yield point
    cache.clear_all()


def test_pickle_weights_are_refused(tiny_models, tmp_path, sentiment_from):
    """A folder holding only pytorch_model.bin (a pickle) does not load: use_safetensors=True."""
    import torch
    import transformers

    from demos.runtime import loading

    folder = tmp_path / "pickle-only"
    shutil.copytree(tiny_models["sentiment"], folder)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    model_id = sentiment_from(folder)
    before = loading.resident()
    with pytest.raises(Exception) as excinfo:
        loading.load("sentiment", model_id)
    assert any("safetensors" in str(e) for e in _chain(excinfo.value)), _chain(excinfo.value)
    assert loading.resident() == before
    # the folder itself is a valid model: only the refusal of pickles stops it
    assert transformers.AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=False) is not None


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes (the loader wraps errors in ModelLoadError)."""
    out = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def test_remote_code_is_never_run(tiny_models, tmp_path, sentiment_from):
    """A folder whose config asks for its own Python code: refused, and the code never runs."""

    from demos.runtime import loading

    folder = tmp_path / "remote-code"
    shutil.copytree(tiny_models["sentiment"], folder)
    marker = tmp_path / "code-ran"
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig, PreTrainedModel\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'xray_evil'\n"
        "class EvilModel(PreTrainedModel):\n    config_class = EvilConfig\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="xray_evil", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    model_id = sentiment_from(folder)
    before = loading.resident()
    with pytest.raises(Exception) as excinfo:
        loading.load("sentiment", model_id)
    assert any(re.search(r"(?i)trust_remote_code|custom code", str(e)) for e in _chain(excinfo.value))
    assert not marker.exists(), "the folder's Python code was executed"
    assert loading.resident() == before
