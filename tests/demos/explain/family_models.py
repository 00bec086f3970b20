"""Tiny random models of every family of the architecture table, served through the app's own tasks, and the
references the family tests check the explainers against, written here from the transformers sources
(independently of demos.adapters): which module is each family's final norm + head, which module is the
attention output projection, and what a plain forward pass of the model gives.

Each family is built with 2 layers, width 32 (Llama 48 for 6 query heads sharing 2 key/value heads), eager
attention, its tokenizer or image processor copied from the session's tiny model of the same task, and saved
to a folder the app loads like any local model (settings allow it for the test's duration: `serving`).
The session's seven tiny models stand for GPT-2, DistilBERT (classifier and QA), Marian, ViT, Whisper and CLIP.
"""
from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import transformers as T

from core import registry
from demos.explain import tasks
from demos.runtime import settings

ROOT = registry.ROOT
IMAGE = str(ROOT / "assets" / "images" / "chelsea_cat.jpg")
AUDIO = str(ROOT / "assets" / "audio" / "quick_brown_fox.wav")
PROMPT = "The quick brown fox"
REVIEW = "The plot made no sense and the dialogue was painfully dull."
QA_PAIR = ("When was the tower completed?", "The tower was designed by Gustave Eiffel. It was completed in March 1889.")
SOURCE = "The house is small, but the garden is beautiful."
CLIP_TEXTS = "a photo of a cat\na rocket on a launch pad\na cup of coffee"
LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
EAGER = {"attn_implementation": "eager"}
WIDTH = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


@dataclass(frozen=True)
class Family:
    """name; the app task that serves it; build(tokenizer or None) -> model (None: the session's tiny model);
    head(model, h): the model's final norm + head on a hidden state (b, n, d) of any layer but the last;
    out_proj(model, where, layer): the attention output projection, `where` one of "self" (the only stack),
    "encoder", "decoder", "cross", "vision", "text"."""

    name: str
    task: str
    build: Callable[[Any], torch.nn.Module] | None
    head: Callable[[Any, torch.Tensor], torch.Tensor]
    out_proj: Callable[[Any, str, int], torch.nn.Module]


def _llama_like(cls: type, config: type, **kw: Any) -> Callable[[Any], torch.nn.Module]:
    def build(tok: Any) -> torch.nn.Module:
        return cls(config(num_hidden_layers=2, intermediate_size=64, vocab_size=len(tok), max_position_embeddings=256,
                          bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, **kw, **EAGER))
    return build


def _bertish(cls: type, config: type, labels: bool = True, **kw: Any) -> Callable[[Any], torch.nn.Module]:
    def build(tok: Any) -> torch.nn.Module:
        extra = dict(id2label=dict(LABELS), label2id={v: k for k, v in LABELS.items()}) if labels else {}
        return cls(config(**WIDTH, vocab_size=len(tok), max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                          **extra, **kw, **EAGER))
    return build


def _seq2seq(cls: type, config: type) -> Callable[[Any], torch.nn.Module]:
    """BART / M2M100 (init_std 0.2: with the default 0.02 an encoder head's share of a tiny random model's
    answer is below float32 resolution)."""
    def build(tok: Any) -> torch.nn.Module:
        return cls(config(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                          decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=tok.vocab_size,
                          max_position_embeddings=512, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                          bos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
                          forced_eos_token_id=tok.eos_token_id, init_std=0.2, **EAGER))
    return build


def _t5(tok: Any) -> torch.nn.Module:
    return T.T5ForConditionalGeneration(T.T5Config(
        d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, vocab_size=tok.vocab_size, relative_attention_num_buckets=8,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id, **EAGER))


def _vision(cls: type, config: type, **kw: Any) -> Callable[[Any], torch.nn.Module]:
    def build(_proc: Any) -> torch.nn.Module:
        return cls(config(**WIDTH, image_size=64, patch_size=16, num_channels=3,
                          id2label={i: f"class {i}" for i in range(6)}, **kw, **EAGER))
    return build


# ---- the model's own modules, named here from the transformers sources
def _layers_of(*path: str) -> Callable[[Any, str, int], Any]:
    """out_proj for a one-stack model: model.<path to the ModuleList>[layer].<path to the projection>."""
    *to_list, last = path

    def find(model: Any, where: str, layer: int) -> Any:
        obj = model
        for part in to_list:
            obj = getattr(obj, part)
        obj = obj[layer]
        for part in last.split("."):
            obj = getattr(obj, part)
        return obj
    return find


def _bart_out(model: Any, where: str, layer: int) -> Any:
    side = model.model.encoder if where == "encoder" else model.model.decoder
    block = side.layers[layer]
    return (block.encoder_attn if where == "cross" else block.self_attn).out_proj


def _t5_out(model: Any, where: str, layer: int) -> Any:
    block = (model.encoder if where == "encoder" else model.decoder).block[layer]
    return block.layer[1].EncDecAttention.o if where == "cross" else block.layer[0].SelfAttention.o


def _tower_out(model: Any, where: str, layer: int) -> Any:
    return (model.vision_model if where == "vision" else model.text_model).encoder.layers[layer].self_attn.out_proj


def _lm(norm: str) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    def head(model: Any, h: torch.Tensor) -> torch.Tensor:
        obj = model
        for part in norm.split("."):
            obj = getattr(obj, part)
        return model.lm_head(obj(h))
    return head


def _vit_head(base: str) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    return lambda m, h: m.classifier(getattr(m, base).layernorm(h)[:, 0])


def _deit_head(m: Any, h: torch.Tensor) -> torch.Tensor:
    x = m.deit.layernorm(h)
    return (m.cls_classifier(x[:, 0]) + m.distillation_classifier(x[:, 1])) / 2


FAMILIES: dict[str, Family] = {f.name: f for f in [
    # decoder language models (generation)
    Family("gpt2", "generation", None, _lm("transformer.ln_f"), _layers_of("transformer", "h", "attn.c_proj")),
    Family("llama", "generation", _llama_like(T.LlamaForCausalLM, T.LlamaConfig, hidden_size=48, num_attention_heads=6,
                                              num_key_value_heads=2),
           _lm("model.norm"), _layers_of("model", "layers", "self_attn.o_proj")),
    Family("qwen2", "generation", _llama_like(T.Qwen2ForCausalLM, T.Qwen2Config, hidden_size=32, num_attention_heads=4,
                                              num_key_value_heads=2),
           _lm("model.norm"), _layers_of("model", "layers", "self_attn.o_proj")),
    Family("gemma", "generation", _llama_like(T.GemmaForCausalLM, T.GemmaConfig, hidden_size=32, num_attention_heads=4,
                                              num_key_value_heads=1, head_dim=8),
           _lm("model.norm"), _layers_of("model", "layers", "self_attn.o_proj")),
    Family("gpt_neox", "generation", _llama_like(T.GPTNeoXForCausalLM, T.GPTNeoXConfig, hidden_size=32,
                                                 num_attention_heads=4, rotary_pct=0.25),
           _lm("gpt_neox.final_layer_norm"), _layers_of("gpt_neox", "layers", "attention.dense")),
    Family("opt", "generation", lambda tok: T.OPTForCausalLM(T.OPTConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, ffn_dim=64, vocab_size=len(tok),
        max_position_embeddings=256, word_embed_proj_dim=32, bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, **EAGER)),
           _lm("model.decoder.final_layer_norm"), _layers_of("model", "decoder", "layers", "self_attn.out_proj")),
    # encoders (sentiment, qa)
    Family("distilbert", "sentiment", None, lambda m, h: m.classifier(torch.relu(m.pre_classifier(h[:, 0]))),
           _layers_of("distilbert", "transformer", "layer", "attention.out_lin")),
    Family("distilbert-qa", "qa", None, lambda m, h: m.qa_outputs(h),
           _layers_of("distilbert", "transformer", "layer", "attention.out_lin")),
    Family("bert", "sentiment", _bertish(T.BertForSequenceClassification, T.BertConfig),
           lambda m, h: m.classifier(torch.tanh(m.bert.pooler.dense(h[:, 0]))),
           _layers_of("bert", "encoder", "layer", "attention.output.dense")),
    Family("roberta", "sentiment", _bertish(T.RobertaForSequenceClassification, T.RobertaConfig),
           lambda m, h: m.classifier.out_proj(torch.tanh(m.classifier.dense(h[:, 0]))),
           _layers_of("roberta", "encoder", "layer", "attention.output.dense")),
    Family("roberta-qa", "qa", _bertish(T.RobertaForQuestionAnswering, T.RobertaConfig, labels=False),
           lambda m, h: m.qa_outputs(h), _layers_of("roberta", "encoder", "layer", "attention.output.dense")),
    Family("electra", "sentiment", _bertish(T.ElectraForSequenceClassification, T.ElectraConfig, embedding_size=16),
           lambda m, h: m.classifier(h), _layers_of("electra", "encoder", "layer", "attention.output.dense")),
    Family("deberta-v2", "sentiment", _bertish(
        T.DebertaV2ForSequenceClassification, T.DebertaV2Config, relative_attention=True, pos_att_type=["p2c", "c2p"],
        position_buckets=8, max_relative_positions=64, position_biased_input=False, share_att_key=True,
        norm_rel_ebd="layer_norm"),
           lambda m, h: m.classifier(m.pooler(h)), _layers_of("deberta", "encoder", "layer", "attention.output.dense")),
    # encoder-decoders (translation, asr)
    Family("marian", "translation", None, lambda m, h: m.lm_head(h) + m.final_logits_bias, _bart_out),
    Family("bart", "translation", _seq2seq(T.BartForConditionalGeneration, T.BartConfig),
           lambda m, h: m.lm_head(h) + m.final_logits_bias, _bart_out),
    Family("m2m_100", "translation", _seq2seq(T.M2M100ForConditionalGeneration, T.M2M100Config),
           _lm("model.decoder.layer_norm"), _bart_out),
    Family("t5", "translation", _t5,
           lambda m, h: m.lm_head(m.decoder.final_layer_norm(h) * m.config.d_model ** -0.5), _t5_out),
    Family("whisper", "asr", None, lambda m, h: m.proj_out(m.model.decoder.layer_norm(h)), _bart_out),
    # vision (image, clip)
    Family("vit", "image", None, _vit_head("vit"), _layers_of("vit", "layers", "attention.o_proj")),
    Family("deit", "image", _vision(T.DeiTForImageClassificationWithTeacher, T.DeiTConfig), _deit_head,
           _layers_of("deit", "layers", "attention.o_proj")),
    Family("beit", "image", _vision(T.BeitForImageClassification, T.BeitConfig, use_relative_position_bias=True,
                                    use_mean_pooling=True, vocab_size=64),
           lambda m, h: m.classifier(m.beit.pooler(m.beit.layernorm(h))), _layers_of("beit", "layers", "attention.o_proj")),
    Family("clip", "clip", None, lambda m, h: m.visual_projection(m.vision_model.post_layernorm(h[:, 0])), _tower_out),
]}

# SigLIP is served by the clip task too (AutoModel); it needs a SentencePiece tokenizer and texts padded to its
# limit, so it is built and checked through the task in tests/demos/test_siglip.py (and at the model level in
# tests/demos/adapters and the knockout test).
# Which families store the last hidden state with the final norm applied (from the transformers sources).
NORMED_LAST = {"gpt2", "llama", "qwen2", "gemma", "gpt_neox", "opt", "m2m_100", "t5", "whisper"}


@contextmanager
def serving(task: str, folder: str) -> Iterator[None]:
    """The app allows (and by default loads) `folder` for `task` while inside."""
    before = settings.current()
    settings.configure(dataclasses.replace(before, overrides={**before.overrides, task: folder}))
    try:
        yield
    finally:
        settings.configure(before)


def _copy_processor(source: Path, folder: Path) -> None:
    for f in source.iterdir():
        if f.name not in ("config.json", "model.safetensors", "generation_config.json") and not f.name.startswith("."):
            shutil.copy(f, folder / f.name)


def build_family(family: Family, tiny: dict[str, Path], root: Path) -> str:
    """A folder holding the family's tiny model (the session's own for the seven default architectures)."""
    if family.build is None:
        return str(tiny[family.task])
    folder = root / family.name
    if (folder / "model.safetensors").exists():
        return str(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = tiny[family.task]
    proc = (T.AutoImageProcessor if family.task == "image" else T.AutoTokenizer).from_pretrained(source)
    torch.manual_seed(0)
    model = family.build(proc).eval()
    with torch.no_grad():  # terms that start at zero would pass unchecked
        for key, t in [*model.named_parameters(), *model.named_buffers()]:
            if key.endswith(("relative_position_bias_table", "final_logits_bias")):
                t.normal_()
    if family.task == "translation":
        gen = model.generation_config
        gen.max_length, gen.num_beams, gen.bad_words_ids = 12, 1, [[proc.pad_token_id]]
    model.config.xray_tiny = True
    model.save_pretrained(folder)
    _copy_processor(source, folder)
    return str(folder)


def _audio() -> tuple[int, np.ndarray]:
    import soundfile as sf

    samples, rate = sf.read(AUDIO, dtype="int16")
    return rate, samples


def run_task(task: str, folder: str) -> Any:
    """The task's own result on the family's model."""
    compute = tasks.module(task)
    if task == "generation":
        return compute.generate(PROMPT, max_new_tokens=4, model_id=folder)
    if task == "sentiment":
        return compute.analyse(REVIEW, model_id=folder)
    if task == "qa":
        return compute.answer(*QA_PAIR, model_id=folder)
    if task == "translation":
        return compute.analyse(SOURCE, model_id=folder)
    if task == "image":
        return compute.analyse(IMAGE, model_id=folder)
    if task == "asr":
        return compute.transcribe(_audio(), model_id=folder)
    if task == "clip":
        return compute.analyse([IMAGE, str(ROOT / "assets" / "images" / "rocket.jpg")], CLIP_TEXTS, model_id=folder)
    raise AssertionError(task)


def reference_model(task: str, folder: str) -> tuple[Any, Any]:
    """A fresh copy of the model (eager attention) and its tokenizer / processor, loaded here, not by the app."""
    spec = registry.get(task)
    model = getattr(T, spec.model_class).from_pretrained(folder, **EAGER).eval()
    return model, getattr(T, spec.processor_class).from_pretrained(folder)


def model_inputs(task: str, r: Any, proc: Any) -> dict[str, torch.Tensor]:
    """The inputs of a plain forward pass over what the result shows (the whole generated sequence, the
    teacher-forced target...)."""
    if task == "generation":
        return {"input_ids": torch.tensor([r.ids])}
    if task == "sentiment":
        return dict(proc(r.text, return_tensors="pt"))
    if task == "qa":
        enc = proc(r.question, r.context, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if task == "translation":
        return {"input_ids": proc(r.text, return_tensors="pt")["input_ids"], "decoder_input_ids": torch.tensor([r.generated[:-1]])}
    if task == "image":
        return {"pixel_values": torch.from_numpy(r.pixel_values)}
    if task == "asr":
        ids = proc.tokenizer.convert_tokens_to_ids(r.prompt) + list(r.token_ids)
        return {"input_features": torch.from_numpy(r.input_features), "decoder_input_ids": torch.tensor([ids[:-1]])}
    if task == "clip":
        from PIL import Image

        images = [Image.open(s).convert("RGB") for s in r.sources]
        pv = proc.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return {"input_ids": torch.from_numpy(r.text_ids), "attention_mask": torch.from_numpy(r.text_mask), "pixel_values": pv}
    raise AssertionError(task)


_made: dict[str, SimpleNamespace] = {}


def made(name: str, tiny: dict[str, Path], root: Path) -> SimpleNamespace:
    """family, folder, the task's result, and a reference copy of the model with its processor (once per session)."""
    if name not in _made:
        family = FAMILIES[name]
        folder = build_family(family, tiny, root)
        with serving(family.task, folder):
            result = run_task(family.task, folder)
        model, proc = reference_model(family.task, folder)
        _made[name] = SimpleNamespace(family=family, task=family.task, folder=folder, result=result, model=model, proc=proc)
    return _made[name]
