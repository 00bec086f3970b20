"""Tiny random models of the seven architectures: they build, reload and run like the real ones."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from demos.provision import tiny
from demos.provision.tiny import IMAGENET_LABELS, MARKER_NAME, SENTIMENT_LABELS, TASKS, ensure_tiny_models

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

LAYERS, HEADS = 2, 4
SAMPLE_RATE = 16_000


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict:
    """task -> folder, all seven built once for this module's tests."""
    return ensure_tiny_models(tmp_path_factory.mktemp("test-tiny"))


@pytest.fixture(scope="session")
def image() -> Image.Image:
    """A deterministic 80x100 RGB picture (colour gradients)."""
    y, x = np.mgrid[0:80, 0:100]
    pixels = np.stack([x * 2.5, y * 3.0, (x + y) * 1.4], axis=-1).clip(0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="session")
def sine() -> np.ndarray:
    """One second of a 440 Hz tone at 16 kHz."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def assert_attentions(attentions, query_len: int | None = None, key_len: int | None = None) -> None:
    """2 layers of [batch, 4 heads, q, k] probabilities whose rows sum to 1."""
    assert len(attentions) == LAYERS
    for layer in attentions:
        assert layer.dim() == 4 and layer.shape[1] == HEADS
        if query_len is not None:
            assert layer.shape[2] == query_len
        if key_len is not None:
            assert layer.shape[3] == key_len
        assert torch.all(layer >= 0)
        torch.testing.assert_close(layer.sum(-1), torch.ones(layer.shape[:-1]), atol=1e-4, rtol=0)


def load(auto_class, folder):
    model = auto_class.from_pretrained(folder, attn_implementation="eager")
    assert model.config.xray_tiny is True
    return model.eval()


def test_every_task_is_built_with_marker_and_safetensors(tiny_dirs):
    assert set(tiny_dirs) == set(TASKS)
    for task, folder in tiny_dirs.items():
        assert folder.name == task
        assert (folder / MARKER_NAME).is_file()
        assert (folder / "model.safetensors").is_file()
        assert json.loads((folder / "config.json").read_text())["xray_tiny"] is True
    total = sum(f.stat().st_size for folder in tiny_dirs.values() for f in folder.rglob("*"))
    assert total < 8 * 1024 * 1024


def test_generation_gpt2(tiny_dirs):
    folder = tiny_dirs["generation"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = load(transformers.AutoModelForCausalLM, folder)
    assert type(model).__name__ == "GPT2LMHeadModel" and type(tokenizer).__name__ == "GPT2Tokenizer"
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>"
    assert model.generation_config.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.tokenize("The movie was wonderful.") == ["The", "Ġmovie", "Ġwas", "Ġwonderful", "."]

    inputs = tokenizer("The movie was wonderful.", return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    n = inputs["input_ids"].shape[1]
    assert_attentions(out.attentions, n, n)
    assert torch.all(out.attentions[0][0, :, 0, 1:] == 0)  # causal

    result = transformers.pipeline("text-generation", model=str(folder))("Hello there", max_new_tokens=4)
    assert isinstance(result[0]["generated_text"], str)
    assert result[0]["generated_text"].startswith("Hello there")


def test_sentiment_distilbert(tiny_dirs):
    folder = tiny_dirs["sentiment"]
    model = load(transformers.AutoModelForSequenceClassification, folder)
    assert type(model).__name__ == "DistilBertForSequenceClassification"
    assert model.config.id2label == SENTIMENT_LABELS
    assert model.config.max_position_embeddings == 512

    classifier = transformers.pipeline("text-classification", model=str(folder))
    assert classifier.tokenizer.tokenize("I LOVED this movie") == ["i", "loved", "this", "movie"]
    inputs = classifier.tokenizer("I loved this movie!", return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    assert_attentions(out.attentions, inputs["input_ids"].shape[1], inputs["input_ids"].shape[1])

    scores = classifier("I loved this movie!", top_k=None)
    assert {item["label"] for item in scores} == set(SENTIMENT_LABELS.values())
    assert sum(item["score"] for item in scores) == pytest.approx(1.0, abs=1e-5)


def test_qa_distilbert_offsets_and_span(tiny_dirs):
    folder = tiny_dirs["qa"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = load(transformers.AutoModelForQuestionAnswering, folder)
    assert tokenizer.is_fast and type(model).__name__ == "DistilBertForQuestionAnswering"
    question, context = "Where is Paris?", "Paris is the capital of France."
    assert "Paris" in tokenizer.tokenize(context)  # cased

    enc = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    sequence_ids = enc.sequence_ids(0)
    assert sequence_ids[0] is None and 0 in sequence_ids and 1 in sequence_ids
    with torch.no_grad():
        out = model(**enc, output_attentions=True)
    n = enc["input_ids"].shape[1]
    assert out.start_logits.shape == out.end_logits.shape == (1, n)
    assert_attentions(out.attentions, n, n)

    in_context = [i for i, s in enumerate(sequence_ids) if s == 1]
    start = max(in_context, key=lambda i: out.start_logits[0, i])
    end = max((i for i in in_context if i >= start), key=lambda i: out.end_logits[0, i])
    answer = context[offsets[start][0] : offsets[end][1]]
    assert answer and answer in context


def test_translation_marian(tiny_dirs):
    folder = tiny_dirs["translation"]
    for name in ("source.spm", "target.spm", "vocab.json"):
        assert (folder / name).is_file()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = load(transformers.AutoModelForSeq2SeqLM, folder)
    assert type(tokenizer).__name__ == "MarianTokenizer" and type(model).__name__ == "MarianMTModel"
    assert model.config.decoder_start_token_id == tokenizer.pad_token_id
    assert model.config.vocab_size == tokenizer.vocab_size

    inputs = tokenizer("The cat is sleeping.", return_tensors="pt")
    assert inputs["input_ids"][0, -1] == tokenizer.eos_token_id
    labels = tokenizer(text_target="Die Katze schläft.", return_tensors="pt")["input_ids"]
    assert labels[0, -1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in labels[0].tolist()
    with torch.no_grad():
        out = model(**inputs, labels=labels, output_attentions=True)
    src, tgt = inputs["input_ids"].shape[1], labels.shape[1]
    assert_attentions(out.encoder_attentions, src, src)
    assert_attentions(out.decoder_attentions, tgt, tgt)
    assert_attentions(out.cross_attentions, tgt, src)

    generated = model.generate(**inputs)
    assert generated.shape[1] <= model.generation_config.max_length
    assert isinstance(tokenizer.decode(generated[0], skip_special_tokens=True), str)


def test_image_vit(tiny_dirs, image):
    folder = tiny_dirs["image"]
    model = load(transformers.AutoModelForImageClassification, folder)
    assert type(model).__name__ == "ViTForImageClassification"
    assert model.config.id2label == IMAGENET_LABELS
    classifier = transformers.pipeline("image-classification", model=str(folder))

    pixels = classifier.image_processor(image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 64, 64)
    with torch.no_grad():
        out = model(pixel_values=pixels, output_attentions=True)
    assert_attentions(out.attentions, 17, 17)  # 4x4 patches + CLS

    predictions = classifier(image, top_k=3)
    assert len(predictions) == 3
    assert all(p["label"] in IMAGENET_LABELS.values() for p in predictions)


def test_asr_whisper(tiny_dirs, sine):
    folder = tiny_dirs["asr"]
    processor = transformers.AutoProcessor.from_pretrained(folder)
    model = load(transformers.WhisperForConditionalGeneration, folder)
    extractor, tokenizer = processor.feature_extractor, processor.tokenizer
    assert type(processor).__name__ == "WhisperProcessor"
    assert model.config.max_source_positions * 2 == extractor.nb_max_frames
    assert not any(t.startswith("<|0.") for t in tokenizer.get_vocab())  # no timestamp tokens

    features = processor(sine, sampling_rate=SAMPLE_RATE, return_tensors="pt")["input_features"]
    assert features.shape == (1, model.config.num_mel_bins, extractor.nb_max_frames)
    prompt = torch.tensor([tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|en|>"])])
    with torch.no_grad():
        out = model(input_features=features, decoder_input_ids=prompt, output_attentions=True)
    frames = model.config.max_source_positions
    assert_attentions(out.encoder_attentions, frames, frames)
    assert_attentions(out.cross_attentions, 2, frames)

    generated = model.generate(features, language="de", return_dict_in_generate=True).sequences
    prompt_tokens = ["<|startoftranscript|>", "<|de|>", "<|transcribe|>", "<|notimestamps|>"]
    assert generated[0, :4].tolist() == tokenizer.convert_tokens_to_ids(prompt_tokens)
    assert 4 < generated.shape[1] <= 4 + model.generation_config.max_length
    text = processor.batch_decode(generated, skip_special_tokens=True)[0]
    assert isinstance(text, str) and text  # special tokens are suppressed: random weights give text

    result = transformers.pipeline("automatic-speech-recognition", model=str(folder))(sine)
    assert isinstance(result["text"], str)


def test_clip(tiny_dirs, image):
    folder = tiny_dirs["clip"]
    processor = transformers.AutoProcessor.from_pretrained(folder)
    model = load(transformers.CLIPModel, folder)
    assert type(processor).__name__ == "CLIPProcessor"
    tokens = processor.tokenizer.tokenize("A photo of a CAT")
    assert tokens[-1] == "cat</w>"

    inputs = processor(text=["a photo of a cat", "a dog"], images=image, return_tensors="pt", padding=True)
    size = model.config.vision_config.image_size
    assert inputs["pixel_values"].shape == (1, 3, size, size)
    ids = inputs["input_ids"]
    assert ids[0, 0] == processor.tokenizer.bos_token_id
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    patches = (size // model.config.vision_config.patch_size) ** 2 + 1
    assert_attentions(out.vision_model_output.attentions, patches, patches)
    assert_attentions(out.text_model_output.attentions, ids.shape[1], ids.shape[1])
    assert out.logits_per_image.shape == (1, 2)

    labels = ["a cat", "a dog", "a rocket"]
    scores = transformers.pipeline("zero-shot-image-classification", model=str(folder))(
        image, candidate_labels=labels
    )
    assert sorted(s["label"] for s in scores) == sorted(labels)
    assert sum(s["score"] for s in scores) == pytest.approx(1.0, abs=1e-5)


def test_ensure_skips_complete_builds_and_rebuilds_incomplete(tmp_path):
    messages: list[str] = []
    first = ensure_tiny_models(tmp_path, tasks=("image",), progress=messages.append)
    weights = first["image"] / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert len(messages) == 1 and "building" in messages[0]

    again = ensure_tiny_models(tmp_path, tasks=("image",), progress=messages.append)
    assert again == first and weights.stat().st_mtime_ns == stamp
    assert "cached" in messages[-1]

    (first["image"] / MARKER_NAME).unlink()  # as if a build had been interrupted
    ensure_tiny_models(tmp_path, tasks=("image",))
    assert (first["image"] / MARKER_NAME).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image"]  # no staging leftovers


def test_build_is_deterministic_and_rejects_unknown_tasks(tmp_path):
    from safetensors.torch import load_file

    a = tiny.build_tiny_model("sentiment", tmp_path / "a", seed=3)
    b = tiny.build_tiny_model("sentiment", tmp_path / "b", seed=3)
    c = tiny.build_tiny_model("sentiment", tmp_path / "c", seed=4)
    wa, wb, wc = (load_file(folder / "model.safetensors") for folder in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    with pytest.raises(ValueError):
        tiny.build_tiny_model("summarization", tmp_path / "d")
    with pytest.raises(ValueError):
        ensure_tiny_models(tmp_path, tasks=("nope",))
