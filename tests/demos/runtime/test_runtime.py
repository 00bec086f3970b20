"""Settings allow-list, model loading and its LRU bound, memo cache, rollout, error guard."""
from __future__ import annotations

import numpy as np
import pytest

from demos.explain.attribution import attention_rollout
from demos.runtime import cache, loading, settings
from ui.kit import model_line


def test_allow_list_refuses_unknown_models():
    s = settings.Settings()
    assert s.model_for("generation") == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the default: real weights offline
    assert s.model_for("generation", "gpt2") == "gpt2"  # an alternative a teacher picks
    for bad in ["evil/model", "/etc", "../../secret", "distilgpt2 ", "gpt2/../evil"]:
        with pytest.raises(PermissionError, match="not allowed"):
            s.model_for("generation", bad)


def test_env_and_models_dir_override(tmp_path, monkeypatch):
    (tmp_path / "qa").mkdir()
    monkeypatch.setenv("XRAY_MODEL_SENTIMENT", "my/sst2")
    monkeypatch.setenv("XRAY_MAX_MODELS", "2")
    s = settings.settings_from_env(models_dir=str(tmp_path), offline=False)
    assert s.choices("qa") == [str(tmp_path / "qa")]
    assert s.choices("sentiment") == ["my/sst2"]
    assert s.choices("asr") == ["openai/whisper-tiny", "openai/whisper-base", "openai/whisper-base.en",
                                "openai/whisper-small"]  # untouched: the default first, then the alternatives
    assert s.max_models == 2


def test_loader_caches_and_evicts_least_recently_used(tiny_models):

    old = settings.current()
    settings.configure(settings.Settings(overrides=dict(old.overrides), offline=True, max_models=2))
    loading.clear()
    try:
        a = loading.load("sentiment")
        assert loading.load("sentiment") is a
        assert a.model.config._attn_implementation == "eager" and not a.model.training
        assert not a.pretrained and "RANDOM" in model_line(loading.model_info("sentiment"))
        assert str(tiny_models["sentiment"]) not in model_line(loading.model_info("sentiment"))  # server paths are never shown
        assert f"local folder {tiny_models['sentiment'].name}" in model_line(loading.model_info("sentiment"))
        loading.load("qa")
        loading.load("generation")
        assert [t for t, _ in loading.resident()] == ["qa", "generation"]
    finally:
        settings.configure(old)
        loading.clear()


def test_offline_without_local_model_says_what_to_do():
    old = settings.current()
    settings.configure(settings.Settings(offline=True))
    try:
        with pytest.raises(RuntimeError, match="XRAY_MODEL_QA"):
            loading.resolve_source("qa", "distilbert-base-cased-distilled-squad")
    finally:
        settings.configure(old)


def test_memo_hits_and_bounds():
    calls = []

    @cache.memo(maxsize=2)
    def square(x, progress=None):
        calls.append(x)
        return x * x

    assert [square(2), square(2, progress=print), square(3), square(4), square(2)] == [4, 4, 9, 16, 4]
    assert calls == [2, 3, 4, 2]


def test_rollout_rows_sum_to_one_and_identity_for_self_attention_only():
    rng = np.random.default_rng(1)
    w = rng.random((4, 2, 6, 6))
    w /= w.sum(-1, keepdims=True)
    r = attention_rollout(w)
    np.testing.assert_allclose(r.sum(-1), 1.0, atol=1e-5)
    eye = np.broadcast_to(np.eye(6), (3, 2, 6, 6))
    np.testing.assert_allclose(attention_rollout(eye), np.eye(6), atol=1e-6)


def test_guard_turns_errors_into_messages(caplog):
    import gradio as gr

    from ui.common import GENERIC_ERROR, InputError, guarded

    @guarded
    def bad_input():
        raise InputError("Please enter some text.")

    @guarded
    def broken():
        raise KeyError("internal detail /secret/path")

    with pytest.raises(gr.Error, match="Please enter some text"):
        bad_input()
    with pytest.raises(gr.Error) as info:
        broken()
    assert info.value.message == GENERIC_ERROR and "/secret/path" not in info.value.message
    assert "unexpected error" in caplog.text


def test_markdown_escape_keeps_apostrophes_and_neutralises_markup():
    from ui.common import md_escape

    assert md_escape("don't") == "don't"
    assert "<" not in md_escape("<img src=x onerror=alert(1)>")
    assert md_escape("**bold**") == r"\*\*bold\*\*"


def test_memo_key_ignores_how_arguments_are_passed_and_computes_once_under_concurrency():
    import threading
    import time

    calls = []

    @cache.memo(maxsize=4)
    def slow(text, model_id=None, progress=None):
        calls.append(text)
        time.sleep(0.05)
        return text.upper()

    assert slow("a") == slow("a", None) == slow("a", model_id=None) == slow(text="a") == "A"
    assert calls == ["a"]
    threads = [threading.Thread(target=slow, args=("b",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["a", "b"]


def test_fused_attention_runs_sdpa_inside_and_gives_the_eager_model_back():
    import torch

    m = loading.load("sentiment")
    ids = torch.tensor([[101, 2023, 3185, 2001, 2307, 102]]) % m.model.config.vocab_size
    with torch.no_grad():
        eager = m.model(input_ids=ids, output_attentions=True)
        with loading.fused_attention(m.model):
            assert m.model.config._attn_implementation == "sdpa"
            fused = m.model(input_ids=ids).logits
        with pytest.raises(RuntimeError), loading.fused_attention(m.model):
            raise RuntimeError("an explanation failed")
        again = m.model(input_ids=ids, output_attentions=True)
    torch.testing.assert_close(fused, eager.logits, rtol=1e-5, atol=1e-6)  # the same maths
    assert m.model.config._attn_implementation == "eager" and again.attentions[0] is not None
    torch.testing.assert_close(again.attentions[0], eager.attentions[0], rtol=0, atol=0)
    plain = torch.nn.Linear(2, 2)  # no attention implementation to switch: left alone
    with loading.fused_attention(plain):
        assert not hasattr(plain, "config")
