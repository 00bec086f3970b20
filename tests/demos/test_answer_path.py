"""The answer paths' shortcuts give what the straightforward computation gives.

Generation takes attention, hidden states and P(token | prefix) from generate's own steps (plus one
cached step for the last token) instead of a second pass over the whole sequence: they must equal
that pass. Speech generates with the ASR pipeline's defaults where the checkpoint sets none: the
transcript must equal the pipeline's also for a Whisper whose generation config sets no length."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import GenerationConfig

from demos import generation, speech
from demos.inputs import audio
from demos.runtime import cache

PROMPT = "Once upon a time, in a small village by the sea,"


@pytest.mark.parametrize("sampling", [False, True])
def test_generation_views_equal_one_forward_pass_over_the_sequence(sampling):
    result = generation.generate(PROMPT, 9, sampling, 1.3, 0, 1.0, 5)
    m = generation.load()
    with torch.inference_mode():
        fwd = m.model(input_ids=torch.tensor([result.ids]), output_attentions=True, output_hidden_states=True)
    n = len(result.ids)
    attention = torch.stack([a[0] for a in fwd.attentions]).numpy()  # (layers, heads, n, n)
    hidden = torch.stack([h[0] for h in fwd.hidden_states]).numpy()  # (layers + 1, n, d)
    assert result.attention.weights.shape == attention.shape and attention.shape[-1] == n
    np.testing.assert_allclose(result.attention.weights, attention, atol=1e-5)
    np.testing.assert_allclose(result.embeddings.vectors, hidden, atol=1e-4)
    logp = torch.log_softmax(fwd.logits[0, result.n_prompt - 1 : -1], dim=-1)
    expected = logp.gather(1, torch.tensor(result.ids[result.n_prompt :])[:, None]).exp()[:, 0].numpy()
    np.testing.assert_allclose(result.model_prob, expected, rtol=1e-4, atol=1e-7)


def test_pipeline_defaults_only_where_the_checkpoint_sets_none():
    kwargs = speech.pipeline_generate_kwargs
    assert kwargs(GenerationConfig(), 7) == {"num_beams": 5, "max_new_tokens": 256, "pad_token_id": 7}
    assert kwargs(GenerationConfig(max_length=448, num_beams=3, pad_token_id=1), 7) == {}
    assert kwargs(GenerationConfig(max_new_tokens=40), None) == {"num_beams": 5}


@pytest.fixture
def whisper_without_length(tmp_path, monkeypatch):
    """A tiny Whisper with room for 256 new tokens whose generation config sets no length."""
    import json

    from demos.provision import tiny
    from demos.runtime import loading, settings

    monkeypatch.setattr(tiny, "WHISPER_MAX_TARGET_POSITIONS", 300)
    folder = tiny.build_tiny_model("asr", tmp_path / "asr")
    config_file = folder / "generation_config.json"
    config = json.loads(config_file.read_text())
    config.pop("max_length")
    config_file.write_text(json.dumps(config))
    monkeypatch.setitem(settings.current().overrides, "asr", str(folder))
    loading.clear()
    cache.clear_all()
    yield folder
    loading.clear()
    cache.clear_all()


def test_transcript_equals_the_pipeline_when_the_checkpoint_sets_no_length(whisper_without_length):
    from transformers import pipeline

    samples, rate = sf.read(speech.EXAMPLES[0], dtype="int16")
    result = speech.transcribe((rate, samples))
    pipe = pipeline("automatic-speech-recognition", model=str(whisper_without_length))
    assert "max_length" not in pipe.model.generation_config.to_diff_dict()
    assert result.text == pipe(audio.normalise((rate, samples)).samples.copy())["text"].strip()
    assert len(result.token_ids) > 20  # not cut at generate's default length of 20


def test_image_rollout_equals_the_rollout_of_every_head():
    from demos import image
    from demos.explain.attribution import attention_rollout

    result = image.analyse(image.EXAMPLES[0])
    np.testing.assert_allclose(result.rollout, attention_rollout(result.attention.weights), atol=1e-6)


@pytest.mark.parametrize("beams", [1, 4])
def test_translation_views_equal_one_teacher_forced_pass(beams):
    from demos import translation

    text = "The house is small, but the garden is beautiful."
    m = translation.load()
    saved = m.model.generation_config.num_beams
    m.model.generation_config.num_beams = beams
    try:
        cache.clear_all()
        result = translation.analyse(text)
        plain = m.model.generate(**m.processor(text, return_tensors="pt"))
    finally:
        m.model.generation_config.num_beams = saved
        cache.clear_all()
    assert list(result.generated) == plain[0].tolist()
    batch = m.processor(text, return_tensors="pt")
    with torch.inference_mode():
        out = m.model(**batch, decoder_input_ids=plain[:, :-1], output_attentions=True, output_hidden_states=True)
    probs = torch.softmax(out.logits[0], dim=-1).gather(1, plain[0, 1:, None])[:, 0].numpy()
    np.testing.assert_allclose(result.target_probs, probs, rtol=1e-4, atol=1e-7)
    for mine, theirs in ((result.encoder_attention, out.encoder_attentions), (result.decoder_attention, out.decoder_attentions),
                         (result.cross_attention, out.cross_attentions)):
        np.testing.assert_allclose(mine.weights, torch.stack([a[0] for a in theirs]).numpy(), atol=1e-5)
