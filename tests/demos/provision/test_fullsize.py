"""Full-size random models (demos.provision.fullsize) and `bench.run --size`.

The configurations are checked against the real checkpoints' figures (written out here, not read
from the builder) without building any full-size weights; the build machinery (atomic folder,
marker, cache) and the unreachable-id trick are exercised on small stand-ins so CI stays fast."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import run as bench_run
from bench.env import FULL_MODELS, default_models_dir
from demos.provision import fullsize

ROOT = Path(__file__).resolve().parents[3]

# The hub checkpoints' figures (config.json of each default model).
REAL = {
    "generation": {"n_embd": 768, "n_layer": 6, "n_head": 12, "n_positions": 1024, "vocab_size": 50257},
    "sentiment": {"dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072, "max_position_embeddings": 512,
                  "vocab_size": 30522},
    "qa": {"dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072, "max_position_embeddings": 512,
           "vocab_size": 28996},
    "translation": {"d_model": 512, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8,
                    "decoder_attention_heads": 8, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048,
                    "vocab_size": 58101, "activation_function": "swish", "max_position_embeddings": 512,
                    "scale_embedding": True},
    "image": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
              "image_size": 224, "patch_size": 16, "num_labels": 1000},
    "asr": {"d_model": 384, "encoder_layers": 4, "decoder_layers": 4, "encoder_attention_heads": 6,
            "decoder_attention_heads": 6, "encoder_ffn_dim": 1536, "decoder_ffn_dim": 1536, "vocab_size": 51865,
            "num_mel_bins": 80, "max_source_positions": 1500, "max_target_positions": 448},
}
CLIP_TEXT = {"hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8, "intermediate_size": 2048,
             "vocab_size": 49408, "max_position_embeddings": 77}
CLIP_VISION = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
               "image_size": 224, "patch_size": 32}


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    return {task: fullsize.plan(task, tmp_path_factory.mktemp(task)) for task in fullsize.TASKS}


@pytest.mark.parametrize("task", sorted(REAL))
def test_config_has_the_real_checkpoints_sizes(plans, task):
    config = plans[task].config
    assert {key: getattr(config, key) for key in REAL[task]} == REAL[task]


def test_clip_config_has_the_real_towers(plans):
    config = plans["clip"].config
    assert {k: getattr(config.text_config, k) for k in CLIP_TEXT} == CLIP_TEXT
    assert {k: getattr(config.vision_config, k) for k in CLIP_VISION} == CLIP_VISION
    assert config.projection_dim == 512


def test_whisper_window_is_thirty_seconds_of_80_mel_bins(tmp_path, plans):
    from transformers import WhisperProcessor

    plans["asr"].save_processor(tmp_path)
    extractor = WhisperProcessor.from_pretrained(tmp_path).feature_extractor
    assert (extractor.feature_size, extractor.chunk_length, extractor.nb_max_frames) == (80, 30, 3000)
    assert plans["asr"].config.max_source_positions == extractor.nb_max_frames // 2


def test_vision_processors_take_224_pixels(tmp_path, plans):
    import numpy as np
    from transformers import AutoImageProcessor, CLIPProcessor

    image = np.zeros((300, 400, 3), dtype=np.uint8)
    plans["image"].save_processor(tmp_path / "image")
    plans["clip"].save_processor(tmp_path / "clip")
    processors = [AutoImageProcessor.from_pretrained(tmp_path / "image"),
                  CLIPProcessor.from_pretrained(tmp_path / "clip").image_processor]
    for processor in processors:
        assert tuple(processor(images=image, return_tensors="pt")["pixel_values"].shape) == (1, 3, 224, 224)


def test_ids_past_the_tokenizer_are_unreachable():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    n_real = 200
    fullsize.forbid_ids(model.transformer.wte, model.transformer.ln_f, n_real)
    ids = torch.randint(0, n_real, (1, 12))
    with torch.no_grad():
        logits = model(ids).logits[0]  # (12, 300)
        hidden = model.transformer(ids).last_hidden_state[0]  # (12, 32)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # still tied
    assert torch.all(hidden[:, 0] == fullsize.UNREACHABLE_MARGIN)  # dimension 0 carries the constant
    assert torch.all(logits[:, n_real:] == -fullsize.UNREACHABLE_MARGIN)
    # the real ids' logits come from the other dimensions only, and sit far above the forbidden ones
    torch.testing.assert_close(logits[:, :n_real], hidden[:, 1:] @ model.transformer.wte.weight[:n_real, 1:].T)
    assert logits[:, :n_real].max(-1).values.min() > -fullsize.UNREACHABLE_MARGIN + 20
    out = model.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=0)
    assert int(out.max()) < n_real


def test_marian_bias_forbids_ids_past_the_tokenizer(tmp_path):
    from transformers import MarianConfig, MarianMTModel

    plan = fullsize.plan("translation", tmp_path)
    small = MarianConfig(**{**plan.config.to_dict(), "d_model": 16, "encoder_layers": 1, "decoder_layers": 1,
                            "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "encoder_attention_heads": 2,
                            "decoder_attention_heads": 2})
    model = MarianMTModel(small)
    plan.finish(model)
    n_real = plan.config.pad_token_id + 1  # the pad token is the tokenizer's last id
    assert torch.all(model.final_logits_bias[0, n_real:] == fullsize.MARIAN_UNREACHABLE_BIAS)
    assert torch.all(model.final_logits_bias[0, :n_real] == 0)
    assert model.generation_config.num_beams == 4 and model.generation_config.bad_words_ids == [[plan.config.pad_token_id]]


def test_build_is_atomic_marked_and_cached(tmp_path, monkeypatch):
    """The cache machinery on a small stand-in plan (a full-size build is ~2.2 GB: not in CI)."""
    from transformers import GPT2Config, GPT2Tokenizer

    def small_plan(work):
        plan = fullsize._gpt2_plan(work)
        plan.config = GPT2Config(**{**plan.config.to_dict(), "n_embd": 32, "n_layer": 1, "n_head": 4, "n_positions": 64})
        return plan

    monkeypatch.setitem(fullsize._PLANS, "generation", small_plan)
    folders = fullsize.ensure_full_models(tmp_path, ["generation"])
    folder = folders["generation"]
    assert fullsize.is_complete(folder, "generation") and not fullsize.is_complete(folder, "qa")
    assert (folder / "model.safetensors").is_file() and GPT2Tokenizer.from_pretrained(folder).eos_token_id is not None
    config = json.loads((folder / "config.json").read_text())
    assert config["xray_fullsize"] and config["xray_tiny"]  # the loader reports random weights
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    fullsize.ensure_full_models(tmp_path, ["generation"])
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == ["generation"]  # no staging folder left behind
    with pytest.raises(ValueError):
        fullsize.ensure_full_models(tmp_path, ["nope"])


def test_explorer_uses_the_packaged_real_model_when_installed(tmp_path):
    from demos.provision.offline import minilm_dir

    folders = fullsize.ensure_full_models(tmp_path, ["explorer"])
    assert folders.get("explorer") == minilm_dir()


def test_bench_size_flag():
    assert bench_run.parse_args([]).size == "tiny"
    args = bench_run.parse_args(["--size", "full", "--quick"])
    assert args.size == "full" and args.quick and args.sections == list(bench_run.FULL_QUICK_SECTIONS)
    assert bench_run.parse_args(["--size", "full"]).sections == list(bench_run.SECTIONS)
    assert bench_run.parse_args(["--quick"]).sections == list(bench_run.SECTIONS)
    assert bench_run.parse_args(["--size", "full", "--quick", "--sections", "memory"]).sections == ["memory"]
    assert default_models_dir("full") == FULL_MODELS and default_models_dir("tiny") != FULL_MODELS
    with pytest.raises(SystemExit):
        bench_run.parse_args(["--size", "huge"])


def test_bench_tabs_come_from_the_registry():
    from bench import tasks
    from core import registry

    assert tuple(t.demo for t in registry.TASKS) == tasks.TASKS
    assert tasks.key("speech") == "asr" and tasks.key("explorer") == "explorer"


@pytest.mark.slow  # a benchmark run in a subprocess: about 10 s
def test_bench_run_with_size_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--size", "tiny", "--quick", "--sections", "latency", "--tasks",
         "generation", "--threads", "1", "--models-dir", str(tmp_path / "models"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["meta"]["size"] == "tiny" and set(res["latency"]) == {"generation"}
    assert all(row["same_answer"] for row in res["latency"].values())
