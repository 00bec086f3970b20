"""Tiny random models of the seven architectures Transformer X-Ray shows by default.

Each builder saves an ordinary Hugging Face model folder (safetensors weights, config, generation
config, tokenizer or processor) that loads with ``from_pretrained(folder)`` and, where the task
still has one, with ``transformers.pipeline(task, model=folder)``. The weights are random (the
config carries ``"xray_tiny": true``) and the tokenizers are trained in-process on the small
corpus of :mod:`demos.provision.tiny_corpus`, so the whole set builds offline in a few seconds and takes a
few MB. They serve the app's offline mode and the tests.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import string
import tempfile
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from core import registry
from demos.provision import tiny_corpus

# One tiny build per distinct `TaskSpec.tiny_key` of the registry (the explorer borrows DistilBERT).
TASKS: tuple[str, ...] = tuple(dict.fromkeys(spec.tiny_key for spec in registry.TASKS))

MARKER_NAME = ".xray-tiny-complete"
"""File written last into a folder built by :func:`ensure_tiny_models`."""

BUILD_VERSION = 1
"""Bump when the builders change so that cached folders are rebuilt."""

HIDDEN = 32
HEADS = 4
LAYERS = 2
FFN = 64

IMAGENET_LABELS: dict[int, str] = {
    0: "tabby cat",
    1: "golden retriever",
    2: "space shuttle",
    3: "goldfish",
    4: "coffee mug",
    5: "espresso",
    6: "pizza",
    7: "mountain bike",
    8: "sports car",
    9: "teapot",
}
SENTIMENT_LABELS: dict[int, str] = {0: "NEGATIVE", 1: "POSITIVE"}

GPT2_EOS = "<|endoftext|>"
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
MARIAN_EOS, MARIAN_UNK, MARIAN_PAD = "</s>", "<unk>", "<pad>"
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

WHISPER_CHUNK_SECONDS = 5
WHISPER_MAX_TARGET_POSITIONS = 64
WHISPER_MAX_LENGTH = 32

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- tokenizer training


# `tokenizers` breaks ties between equally frequent pairs by token id. With a word prefix or suffix
# ("##", "</w>") those ids follow hash-map order, so its WordPiece and CLIP trainers give a
# different vocabulary on every run. A plain BPE over a sorted alphabet is deterministic, so the
# word boundary is spelled with a marker character instead and rewritten afterwards.
_MARK = "\u2581"
# Characters every WordPiece vocab covers even if the corpus lacks them (no [UNK] for "xylophone").
_COMMON_CHARACTERS = string.ascii_letters + string.digits + string.punctuation + "ÄÖÜäöüßàáâçèéêíñóôú€£°"


def _pretokenized_words(backend: Any, texts: Iterable[str]) -> list[str]:
    """Normalize and pre-tokenize ``texts`` the way ``backend`` (a ``tokenizers.Tokenizer``) does."""
    words: list[str] = []
    for text in texts:
        if backend.normalizer is not None:
            text = backend.normalizer.normalize_str(text)
        words += [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
    return words


def _train_bpe(
    words: list[str], vocab_size: int, alphabet: list[str]
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a plain BPE (no prefix or suffix) on pre-split words; return vocab and merges."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, show_progress=False, initial_alphabet=alphabet
    )
    backend.train_from_iterator(words, trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def _append_tokens(vocab: dict[str, int], tokens: Iterable[str]) -> dict[str, int]:
    """Return a copy of ``vocab`` with the missing ``tokens`` appended at the end."""
    extended = dict(vocab)
    for token in tokens:
        extended.setdefault(token, len(extended))
    return extended


def _byte_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def _train_gpt2_style(tokenizer_cls: type, vocab_size: int, specials: list[str]) -> tuple[dict, list]:
    """Train a GPT-2 style byte-level BPE (as used by GPT-2 and Whisper); specials go last."""
    words = _pretokenized_words(tokenizer_cls().backend_tokenizer, tiny_corpus.english_sentences())
    vocab, merges = _train_bpe(words, vocab_size - len(specials), _byte_alphabet())
    return _append_tokens(vocab, specials), merges


def _train_clip_bpe(backend: Any, vocab_size: int) -> tuple[dict, list]:
    """Train CLIP's byte-level BPE whose word-final symbols end in ``</w>`` (every byte covered)."""
    words = [word + _MARK for word in _pretokenized_words(backend, tiny_corpus.english_sentences())]
    vocab, merges = _train_bpe(words, vocab_size, [*_byte_alphabet(), _MARK])
    tokens = sorted(vocab, key=vocab.get)
    base = [*_byte_alphabet(), *(f"{char}</w>" for char in _byte_alphabet())]
    learned = [token.replace(_MARK, "</w>") for token in tokens if token not in _byte_alphabet()]
    clip_vocab = _append_tokens({}, [*base, *(t for t in learned if t != "</w>")])
    clip_merges = [(a, b.replace(_MARK, "</w>")) for a, b in merges if b != _MARK]
    return clip_vocab, clip_merges


def _train_wordpiece(backend: Any, vocab_size: int = 800) -> dict[str, int]:
    """Train a WordPiece vocab (``[PAD] [UNK] [CLS] [SEP] [MASK]`` first) for ``backend``'s text."""
    words = [_MARK + word for word in _pretokenized_words(backend, tiny_corpus.english_sentences())]
    common = backend.normalizer.normalize_str(_COMMON_CHARACTERS)
    characters = sorted((set("".join(words)) | set(common)) - {_MARK, " "})
    vocab, _ = _train_bpe(words, vocab_size - len(BERT_SPECIALS), [_MARK, *characters])
    pieces = [token.removeprefix(_MARK) if token.startswith(_MARK) else f"##{token}"
              for token in sorted(vocab, key=vocab.get) if token != _MARK]
    coverage = [*characters, *(f"##{char}" for char in characters)]
    return _append_tokens({}, [*BERT_SPECIALS, *coverage, *pieces])


def _train_sentencepiece(texts: list[str], path: pathlib.Path, vocab_size: int) -> None:
    """Train a unigram SentencePiece model (``<unk>``=0, ``<s>``=1, ``</s>``=2) into ``path``."""
    import sentencepiece

    with path.open("wb") as model_file:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model_file,
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=1.0,
            normalization_rule_name="identity",
            hard_vocab_limit=False,
            num_threads=1,
            minloglevel=2,
        )


# --------------------------------------------------------------------------- saving helpers


def _save_model(model: Any, out_dir: pathlib.Path) -> None:
    """Mark the config as random tiny weights and save the model with safetensors."""
    from transformers.utils import logging as hf_logging

    model.config.xray_tiny = True
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a one-shard "Writing model shards" bar is only noise
    try:
        model.save_pretrained(out_dir)
    finally:
        if bars_were_enabled:
            hf_logging.enable_progress_bar()


def _seeded(seed: int) -> None:
    """Seed torch right before a model is created, so its random weights depend on ``seed`` only."""
    import torch

    torch.manual_seed(seed)


# --------------------------------------------------------------------------- builders


def _build_gpt2(out_dir: pathlib.Path, seed: int) -> None:
    """GPT-2 LM head model with a byte-level BPE tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    vocab, merges = _train_gpt2_style(GPT2Tokenizer, 800, [GPT2_EOS])
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, model_max_length=256)
    eos_id = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=256, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
        n_inner=FFN, bos_token_id=eos_id, eos_token_id=eos_id,
    )
    _seeded(seed)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = eos_id
    _save_model(model, out_dir)
    tokenizer.save_pretrained(out_dir)


def _distilbert_config(vocab_size: int, **kwargs: Any) -> Any:
    from transformers import DistilBertConfig

    return DistilBertConfig(
        vocab_size=vocab_size, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
        max_position_embeddings=512, pad_token_id=0, **kwargs,
    )


def _distilbert_tokenizer(lowercase: bool) -> Any:
    """DistilBERT's WordPiece tokenizer (uncased like distilbert-base-uncased, or cased)."""
    from transformers import DistilBertTokenizer

    vocab = _train_wordpiece(DistilBertTokenizer(do_lower_case=lowercase).backend_tokenizer)
    return DistilBertTokenizer(vocab=vocab, do_lower_case=lowercase, model_max_length=512)


def _build_distilbert_classifier(out_dir: pathlib.Path, seed: int) -> None:
    """DistilBERT sequence classifier (NEGATIVE/POSITIVE) with an uncased WordPiece tokenizer."""
    from transformers import DistilBertForSequenceClassification

    tokenizer = _distilbert_tokenizer(lowercase=True)
    config = _distilbert_config(
        len(tokenizer), id2label=dict(SENTIMENT_LABELS),
        label2id={label: index for index, label in SENTIMENT_LABELS.items()},
    )
    _seeded(seed)
    _save_model(DistilBertForSequenceClassification(config), out_dir)
    tokenizer.save_pretrained(out_dir)


def _build_distilbert_qa(out_dir: pathlib.Path, seed: int) -> None:
    """DistilBERT extractive question answering with a cased WordPiece (fast) tokenizer."""
    from transformers import DistilBertForQuestionAnswering

    tokenizer = _distilbert_tokenizer(lowercase=False)
    _seeded(seed)
    _save_model(DistilBertForQuestionAnswering(_distilbert_config(len(tokenizer))), out_dir)
    tokenizer.save_pretrained(out_dir)


def _marian_vocab(spm_paths: list[pathlib.Path]) -> dict[str, int]:
    """Joint Marian vocab like opus-mt: ``</s>``=0, ``<unk>``=1, the pieces, ``<pad>`` last."""
    import sentencepiece

    vocab = {MARIAN_EOS: 0, MARIAN_UNK: 1}
    for path in spm_paths:
        processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
        pieces = (processor.id_to_piece(index) for index in range(processor.get_piece_size()))
        vocab = _append_tokens(vocab, (piece for piece in pieces if piece not in ("<s>", "<unk>", "</s>")))
    return _append_tokens(vocab, [MARIAN_PAD])


def _marian_tokenizer(work_dir: pathlib.Path) -> Any:
    """Train source/target SentencePiece models and wrap them as a ``MarianTokenizer``."""
    from transformers import MarianTokenizer

    source, target = work_dir / "source.spm", work_dir / "target.spm"
    _train_sentencepiece(tiny_corpus.english_sentences(), source, vocab_size=400)
    _train_sentencepiece(tiny_corpus.german_sentences(), target, vocab_size=400)
    vocab_path = work_dir / "vocab.json"
    vocab_path.write_text(json.dumps(_marian_vocab([source, target]), ensure_ascii=False), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
        return MarianTokenizer(source_spm=str(source), target_spm=str(target), vocab=str(vocab_path),
                               source_lang="en", target_lang="de", model_max_length=512)


def _build_marian(out_dir: pathlib.Path, seed: int) -> None:
    """Marian English to German seq2seq model with SentencePiece tokenizers."""
    from transformers import MarianConfig, MarianMTModel

    with tempfile.TemporaryDirectory(prefix="xray-marian-") as work_dir:
        tokenizer = _marian_tokenizer(pathlib.Path(work_dir))
        tokenizer.save_pretrained(out_dir)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = MarianConfig(
        vocab_size=tokenizer.vocab_size, d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=LAYERS,
        encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
        decoder_ffn_dim=FFN, max_position_embeddings=512, pad_token_id=pad_id, eos_token_id=eos_id,
        decoder_start_token_id=pad_id, forced_eos_token_id=eos_id, scale_embedding=True,
    )
    _seeded(seed)
    model = MarianMTModel(config)
    generation = model.generation_config
    generation.bad_words_ids = [[pad_id]]
    generation.max_length = 32
    generation.num_beams = 1
    _save_model(model, out_dir)


def _build_vit(out_dir: pathlib.Path, seed: int) -> None:
    """ViT image classifier (64x64 input, 16x16 patches) over ten ImageNet class names."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    config = ViTConfig(
        image_size=64, patch_size=16, num_channels=3, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=FFN, id2label=dict(IMAGENET_LABELS),
        label2id={label: index for index, label in IMAGENET_LABELS.items()},
    )
    _seeded(seed)
    _save_model(ViTForImageClassification(config), out_dir)
    ViTImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(out_dir)


def _whisper_specials() -> list[str]:
    """Whisper's special tokens in the order of the real vocab (no timestamp tokens)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    languages = [f"<|{code}|>" for code in LANGUAGES]
    return [GPT2_EOS, "<|startoftranscript|>", *languages, "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]


def _whisper_processor() -> Any:
    """Feature extractor (short chunks) and Whisper tokenizer, as a ``WhisperProcessor``."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    specials = _whisper_specials()
    vocab, merges = _train_gpt2_style(WhisperTokenizer, 800, specials)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges, extra_special_tokens=specials[1:],
                                 model_max_length=WHISPER_MAX_TARGET_POSITIONS)
    extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=WHISPER_CHUNK_SECONDS)
    return WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer)


def _suppress_tokens(tokenizer: Any) -> list[int]:
    """Every Whisper special token but end of text, so that random weights still emit text."""
    special_ids = tokenizer.convert_tokens_to_ids(_whisper_specials())
    return [token_id for token_id in special_ids if token_id != tokenizer.eos_token_id]


def _begin_suppress_tokens(tokenizer: Any) -> list[int]:
    """Like real Whisper: no lone space (``Ġ``) and no end of text as the first generated token."""
    return [tokenizer.convert_tokens_to_ids("Ġ"), tokenizer.eos_token_id]


def _whisper_generation_setup(model: Any, tokenizer: Any) -> None:
    """Fill the generation config the way real multilingual Whisper checkpoints do."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    ids = tokenizer.convert_tokens_to_ids
    generation = model.generation_config
    generation.lang_to_id = {f"<|{code}|>": ids(f"<|{code}|>") for code in LANGUAGES}
    generation.task_to_id = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
    generation.no_timestamps_token_id = ids("<|notimestamps|>")
    generation.prev_sot_token_id = ids("<|startofprev|>")
    generation.is_multilingual = True
    generation.decoder_start_token_id = ids("<|startoftranscript|>")
    generation.suppress_tokens = _suppress_tokens(tokenizer)
    generation.begin_suppress_tokens = _begin_suppress_tokens(tokenizer)
    generation.max_length = WHISPER_MAX_LENGTH
    generation._from_model_config = False


def _build_whisper(out_dir: pathlib.Path, seed: int) -> None:
    """Whisper speech recognition with a short-chunk feature extractor."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    processor = _whisper_processor()
    tokenizer, extractor = processor.tokenizer, processor.feature_extractor
    eos_id = tokenizer.eos_token_id
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=extractor.feature_size, d_model=HIDDEN,
        encoder_layers=LAYERS, decoder_layers=LAYERS, encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN,
        max_source_positions=extractor.nb_max_frames // 2,
        max_target_positions=WHISPER_MAX_TARGET_POSITIONS,
        pad_token_id=eos_id, bos_token_id=eos_id, eos_token_id=eos_id,
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
        suppress_tokens=_suppress_tokens(tokenizer), begin_suppress_tokens=_begin_suppress_tokens(tokenizer),
    )
    _seeded(seed)
    model = WhisperForConditionalGeneration(config)
    _whisper_generation_setup(model, tokenizer)
    _save_model(model, out_dir)
    processor.save_pretrained(out_dir)


def _clip_tokenizer() -> Any:
    """CLIP's lower-cased byte-level BPE with ``</w>`` word ends and its two special tokens."""
    from transformers import CLIPTokenizer

    vocab, merges = _train_clip_bpe(CLIPTokenizer().backend_tokenizer, 1000)
    vocab = _append_tokens(vocab, [CLIP_BOS, CLIP_EOS])
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _build_clip(out_dir: pathlib.Path, seed: int) -> None:
    """CLIP dual encoder (32x32 images, 8x8 patches) with its processor."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    tokenizer = _clip_tokenizer()
    tower = {"hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": LAYERS,
             "num_attention_heads": HEADS}
    text_config = {**tower, "vocab_size": len(tokenizer), "max_position_embeddings": 77,
                   "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id}
    vision_config = {**tower, "image_size": 32, "patch_size": 8, "num_channels": 3}
    config = CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=HIDDEN)
    _seeded(seed)
    _save_model(CLIPModel(config), out_dir)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)


# Builders by architecture; each task names its own (`TaskSpec.build`).
BUILDERS_BY_BUILD: dict[str, Callable[[pathlib.Path, int], None]] = {
    "gpt2": _build_gpt2,
    "distilbert_classifier": _build_distilbert_classifier,
    "distilbert_qa": _build_distilbert_qa,
    "marian": _build_marian,
    "vit": _build_vit,
    "whisper": _build_whisper,
    "clip": _build_clip,
}
_BUILDERS: dict[str, Callable[[pathlib.Path, int], None]] = {
    spec.key: BUILDERS_BY_BUILD[spec.build] for spec in registry.TASKS if spec.build
}


# --------------------------------------------------------------------------- public API


def build_tiny_model(task: str, out_dir: str | os.PathLike, seed: int = 0) -> pathlib.Path:
    """Build one tiny model + its tokenizer/processor into out_dir (created); return out_dir."""
    if task not in _BUILDERS:
        raise ValueError(f"unknown tiny model task {task!r}; expected one of {TASKS}")
    folder = pathlib.Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    _BUILDERS[task](folder, seed)
    return folder


def _marker_text(task: str) -> str:
    return json.dumps({"task": task, "version": BUILD_VERSION})


def is_complete(folder: str | os.PathLike, task: str) -> bool:
    """Whether ``folder`` holds a finished build of ``task`` by this version of the builder."""
    return marked(folder, MARKER_NAME, _marker_text(task))


def marked(folder: str | os.PathLike, marker_name: str, text: str) -> bool:
    """Whether ``folder``'s marker file (written last by a build) reads ``text``."""
    try:
        return (pathlib.Path(folder) / marker_name).read_text(encoding="utf-8") == text
    except OSError:
        return False


def _build_atomically(task: str, folder: pathlib.Path, build: Callable[..., Any], marker_name: str, text: str) -> None:
    """Build into a temporary sibling, write the marker last, then move it into place."""
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{task}-", dir=folder.parent))
    try:
        build(task, staging)
        (staging / marker_name).write_text(text, encoding="utf-8")
        if folder.exists() and not marked(folder, marker_name, text):
            shutil.rmtree(folder)
        try:
            staging.rename(folder)
        except OSError:
            if not marked(folder, marker_name, text):  # not a concurrent builder that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_once(
    cache_dir: str | os.PathLike,
    tasks: Iterable[str],
    build: Callable[[str, pathlib.Path], Any],
    marker_name: str,
    marker_text: Callable[[str], str],
    what: str,
    progress: Progress | None = None,
) -> dict[str, pathlib.Path]:
    """`build(task, folder)` each task into cache_dir/<task> once, atomically (kept while its
    marker reads `marker_text(task)`); returns task -> folder. `what` names the kind in messages."""
    root = pathlib.Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    folders: dict[str, pathlib.Path] = {}
    for task in tasks:
        folder, text = root / task, marker_text(task)
        if marked(folder, marker_name, text):
            _report(progress, f"{what} {task} model: cached in {folder}")
        else:
            _report(progress, f"{what} {task} model: building in {folder}")
            _build_atomically(task, folder, build, marker_name, text)
        folders[task] = folder
    return folders


def ensure_tiny_models(
    cache_dir: str | os.PathLike,
    tasks: Iterable[str] = TASKS,
    progress: Progress | None = None,
) -> dict[str, pathlib.Path]:
    """Build each task's model into cache_dir/<task> once (skipped when its marker is present).

    Returns a mapping task -> folder. ``progress``, when given, receives one short message per
    task.
    """
    tasks = tuple(tasks)
    unknown = sorted(set(tasks) - set(_BUILDERS))
    if unknown:
        raise ValueError(f"unknown tiny model tasks {unknown}; expected some of {TASKS}")
    return build_once(cache_dir, tasks, build_tiny_model, MARKER_NAME, _marker_text, "tiny", progress)


def _report(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
