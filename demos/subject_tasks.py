"""One `Subject` builder per task (see demos.subjects): what each task's answer is, over which units.

generation: P(token at a step | prefix), teacher forced over result.ids; sentiment / image: P(class);
qa: P(start) * P(end) of the answer span among every valid span; translation / asr: P(token at a
step), teacher forced over the output ids (asr with the encoder's input features); clip: P(text |
image) among the candidates, over image patches; explorer: cosine of two sentences' mean-pooled
vectors, over the first sentence's tokens.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from core import registry
from demos.explain import attention_rollout
from demos.subjects import (
    Subject,
    builder,
    embed_units,
    frame_units,
    patch_units,
    resolve_outcome,
    token_units,
    top_other,
)
from demos.text_common import model_max_length


def _load(task: str, model_id: str):
    return registry.get(task).compute().load(model_id)


def _special_mask(tok: Any, ids: list[int]) -> np.ndarray:
    specials = set(tok.all_special_ids)
    return np.array([i not in specials for i in ids], dtype=bool)


def _probs0(s: Subject) -> torch.Tensor:
    with torch.no_grad():
        return s.outcome_probs(s.run(s.batch(1)))[0]


def _finish(s: Subject, contrast: Any, lookup, n: int, allow_contrast: bool = True) -> Subject:
    """Resolve the contrast outcome B (default: the most probable other outcome)."""
    if not allow_contrast:
        if contrast is not None:
            raise ValueError(f"'Why A and not B' does not apply to the {s.task} task.")
        return s
    s.contrast = top_other(_probs0(s), s.answer) if contrast is None else resolve_outcome(contrast, s.outcome_label, n, lookup)
    if s.contrast == s.answer:
        raise ValueError("A and B must be different outcomes.")
    return s


def _vocab_lookup(tok: Any):
    """A token given as the tokenizer writes it ("Ġthe") or as text (" the", one token)."""
    def lookup(text: str) -> int | None:
        i = tok.convert_tokens_to_ids(text)
        if isinstance(i, int) and i != tok.unk_token_id:
            return i
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return ids[0] if len(ids) == 1 else None

    return lookup


def _last_logits_probs(out: Any) -> torch.Tensor:
    return torch.softmax(out.logits[:, -1].float(), dim=-1)


def _step(target: Any, n: int) -> int:
    step = 0 if target is None else int(target)
    if not 0 <= step < n:
        raise ValueError(f"Step {step} does not exist; choose 0 to {n - 1}.")
    return step


@builder("generation")
def generation(result: Any, target: Any = None, contrast: Any = None) -> Subject:
    mod = registry.get("generation").compute()
    m = mod.load(result.model_id)
    step = _step(target, result.steps)
    pos = result.n_prompt + step
    ids = torch.tensor([result.ids[:pos]], device=m.device)  # (1, pos)
    tok = m.processor
    w = result.attention.weights[:, :, :pos, :pos]  # causal: the prefix's own attention
    s = Subject(
        task="generation", model=m.model, inputs={"input_ids": ids}, unit_key="input_ids",
        units=token_units(result.tokens[:pos], _special_mask(tok, list(result.ids[:pos])), "the end-of-text token"),
        replacement=torch.full_like(ids, mod.pad_id(m)),
        run=lambda kw: m.model(input_ids=kw["input_ids"]),
        outcome_probs=_last_logits_probs,
        outcome_label=lambda i: tok.decode([i]),
        answer=int(result.ids[pos]),
        embedding_layer=m.model.get_input_embeddings(),
        attention=lambda: w[-1].mean(0)[pos - 1],
        rollout=lambda: attention_rollout(w)[pos - 1],
    )
    return _finish(s, contrast, _vocab_lookup(tok), m.model.config.vocab_size)


def _classifier(task: str, result: Any, target: Any, contrast: Any) -> tuple[Any, Subject, dict]:
    """Shared by sentiment (text) and image: P(class) with id2label lookups."""
    m = _load(task, result.model_id)
    id2label = {int(k): v for k, v in m.model.config.id2label.items()}
    label2id = {v: k for k, v in id2label.items()}
    answer = label2id[result.predicted] if target is None else resolve_outcome(target, id2label.get, len(id2label), label2id.get)
    return m, answer, label2id


@builder("sentiment")
def sentiment(result: Any, target: Any = None, contrast: Any = None) -> Subject:
    from demos.text_common import encode

    m, answer, label2id = _classifier("sentiment", result, target, contrast)
    enc = encode(m.processor, m.model, result.text)
    w = result.attention.weights
    s = Subject(
        task="sentiment", model=m.model, inputs={"input_ids": enc.ids, "attention_mask": enc.mask}, unit_key="input_ids",
        units=token_units(enc.tokens, _special_mask(m.processor, enc.ids[0].tolist()), "the padding token"),
        replacement=torch.full_like(enc.ids, m.processor.pad_token_id),
        run=lambda kw: m.model(input_ids=kw["input_ids"], attention_mask=kw["attention_mask"]),
        outcome_probs=lambda out: torch.softmax(out.logits.float(), dim=-1),
        outcome_label=lambda i: m.model.config.id2label[i],
        answer=answer,
        embedding_layer=m.model.get_input_embeddings(),
        attention=lambda: w[-1].mean(0)[0],
        rollout=lambda: attention_rollout(w)[0],
    )
    return _finish(s, contrast, label2id.get, len(label2id))


@builder("qa")
def qa(result: Any, target: Any = None, contrast: Any = None) -> Subject:
    mod = registry.get("qa").compute()
    m = mod.load(result.model_id)
    enc = mod.encode_result(m, result)
    n = enc.ids.shape[1]
    allowed = enc.context_mask
    s_idx, e_idx = np.nonzero(np.triu(np.ones((n, n), dtype=bool)) & ~np.triu(np.ones((n, n), dtype=bool), mod.MAX_ANSWER_TOKENS)
                              & allowed[:, None] & allowed[None, :])
    spans = list(zip(s_idx.tolist(), e_idx.tolist()))
    starts, ends = torch.as_tensor(s_idx, device=m.device), torch.as_tensor(e_idx, device=m.device)
    keep = torch.as_tensor(enc.candidates, device=m.device)
    names = list(enc.extra)

    def probs(out: Any) -> torch.Tensor:  # (b, spans): P(start = s) * P(end = e), masked softmaxes as qa.answer
        def soft(logits: torch.Tensor) -> torch.Tensor:
            return torch.softmax(torch.where(keep, logits.float(), torch.full_like(logits.float(), mod.MASKED)), dim=-1)

        return soft(out.start_logits)[:, starts] * soft(out.end_logits)[:, ends]

    def label(i: int) -> str:
        a, b = spans[i]
        return result.context[int(enc.offsets[a, 0]): int(enc.offsets[b, 1])]

    w = result.attention.weights
    rows = slice(result.start_index, result.end_index + 1)
    s = Subject(
        task="qa", model=m.model, inputs={"input_ids": enc.ids, "attention_mask": enc.mask, **enc.extra}, unit_key="input_ids",
        units=token_units(enc.tokens, _special_mask(m.processor, enc.ids[0].tolist()), "the padding token"),
        replacement=torch.full_like(enc.ids, m.processor.pad_token_id),
        run=lambda kw: m.model(input_ids=kw["input_ids"], attention_mask=kw["attention_mask"], **{k: kw[k] for k in names}),
        outcome_probs=probs,
        outcome_label=label,
        answer=spans.index((result.start_index, result.end_index)),
        embedding_layer=m.model.get_input_embeddings(),
        attention=lambda: w[-1].mean(0)[rows].mean(0),
        rollout=lambda: attention_rollout(w)[rows].mean(0),
    )
    return _finish(s, contrast, lambda text: None, len(spans), allow_contrast=False)


def _scaled_source_embeds(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """(1, S) -> (1, S, d) the encoder's input embeddings as it computes them from ids."""
    encoder = model.get_encoder()
    with torch.no_grad():
        return encoder.embed_tokens(ids) * getattr(encoder, "embed_scale", 1.0)


@builder("translation")
def translation(result: Any, target: Any = None, contrast: Any = None) -> Subject:
    from demos.text_common import encode

    m = _load("translation", result.model_id)
    tok = m.processor
    enc = encode(tok, m.model, result.text)
    step = _step(target, len(result.target_tokens))
    prefix = torch.tensor([result.generated[: step + 1]], device=m.device)
    cross = result.cross_attention.weights
    s = Subject(
        task="translation", model=m.model,
        inputs={"inputs_embeds": _scaled_source_embeds(m.model, enc.ids), "attention_mask": enc.mask, "decoder_input_ids": prefix},
        unit_key="inputs_embeds",
        units=embed_units(enc.tokens, _special_mask(tok, enc.ids[0].tolist()), "the padding token"),
        replacement=_scaled_source_embeds(m.model, torch.full_like(enc.ids, tok.pad_token_id)),
        run=lambda kw: m.model(**kw),
        outcome_probs=_last_logits_probs,
        outcome_label=lambda i: tok.convert_ids_to_tokens(i),
        answer=int(result.target_ids[step]),
        attention=lambda: cross[-1].mean(0)[step],
        not_applicable={"attention rollout": "rollout multiplies self-attention through one stack; an "
                        "encoder-decoder's answer reaches the source through cross-attention"},
    )
    return _finish(s, contrast, _vocab_lookup(tok), m.model.config.vocab_size)


@builder("image")
def image(result: Any, target: Any = None, contrast: Any = None) -> Subject:
    m, answer, label2id = _classifier("image", result, target, contrast)
    pv = torch.from_numpy(result.pixel_values).to(m.device, m.dtype)
    patch = m.model.config.patch_size
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    grid, k = result.grid, result.n_special
    w = result.attention.weights
    s = Subject(
        task="image", model=m.model, inputs={"pixel_values": pv}, unit_key="pixel_values",
        units=patch_units(result.attention.key_tokens[k:], grid, patch, tuple(pv.shape[-2:])),
        replacement=_mean_patch(pv, grid, patch),
        run=lambda kw: m.model(pixel_values=kw["pixel_values"]),
        outcome_probs=lambda out: torch.softmax(out.logits.float(), dim=-1),
        outcome_label=lambda i: m.model.config.id2label[i],
        answer=answer,
        attention=lambda: w[-1].mean(0)[0, k:],
        rollout=lambda: result.rollout[0, k:],
    )
    return _finish(s, contrast, label2id.get, len(label2id))


def _mean_patch(pv: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """(1, 3, H, W): the image's average patch tiled over the grid (its mean colour elsewhere)."""
    rows, cols = grid
    out = pv.mean(dim=(2, 3), keepdim=True).expand_as(pv).clone()
    inner = pv[:, :, : rows * patch, : cols * patch].reshape(1, -1, rows, patch, cols, patch)
    out[:, :, : rows * patch, : cols * patch] = inner.mean(dim=(2, 4), keepdim=True).expand_as(inner).reshape(1, -1, rows * patch, cols * patch)
    return out


@builder("asr")
def asr(result: Any, target: Any = None, contrast: Any = None) -> Subject:
    m = _load("asr", result.model_id)
    fe, tok = m.processor.feature_extractor, m.processor.tokenizer
    feats = torch.from_numpy(result.input_features).to(m.device, m.dtype)
    step = _step(target, len(result.token_ids))
    prompt = tok.convert_tokens_to_ids(result.prompt)
    decoder_in = torch.tensor([prompt + list(result.token_ids[:step])], device=m.device)
    silence = fe(np.zeros(fe.n_samples, dtype=np.float32), sampling_rate=fe.sampling_rate, return_tensors="pt")["input_features"]
    cross = result.cross.weights  # (L, H, T, F) over the audio's encoder frames
    ratio = feats.shape[-1] // m.model.config.max_source_positions
    s = Subject(
        task="asr", model=m.model, inputs={"input_features": feats, "decoder_input_ids": decoder_in}, unit_key="input_features",
        units=frame_units(result.cross.key_tokens, ratio, feats.shape[-1]),
        replacement=silence.to(m.device, m.dtype),
        run=lambda kw: m.model(input_features=kw["input_features"], decoder_input_ids=kw["decoder_input_ids"]),
        outcome_probs=_last_logits_probs,
        outcome_label=lambda i: tok.convert_ids_to_tokens(i),
        answer=int(result.token_ids[step]),
        attention=lambda: cross[-1].mean(0)[step],
        not_applicable={"attention rollout": "rollout multiplies self-attention through one stack; the "
                        "transcript reaches the audio through cross-attention"},
    )
    return _finish(s, contrast, _vocab_lookup(tok), m.model.config.vocab_size)


@builder("clip")
def clip(result: Any, target: Any = None, contrast: Any = None) -> Subject:
    from demos.imageio import load_image

    m = _load("clip", result.model_id)
    proc = m.processor
    pv = proc.image_processor(images=[load_image(result.sources[0])], return_tensors="pt")["pixel_values"].to(m.device, m.dtype)
    limit = int(getattr(m.model.config.text_config, "max_position_embeddings", 77))
    text = proc.tokenizer(list(result.texts), padding=True, truncation=True, max_length=limit, return_tensors="pt").to(m.device)
    texts = list(result.texts)
    index = {t: i for i, t in enumerate(texts)}
    answer = int(np.argmax(result.logits[0])) if target is None else resolve_outcome(target, texts.__getitem__, len(texts), index.get)
    patch = int(m.model.config.vision_config.patch_size)
    grid = (pv.shape[-2] // patch, pv.shape[-1] // patch)

    def attention() -> np.ndarray:
        with torch.no_grad():
            att = m.model.vision_model(pixel_values=pv, output_attentions=True).attentions[-1]
        return att[0].float().mean(0)[0, 1:].cpu().numpy()

    s = Subject(
        task="clip", model=m.model, inputs={"pixel_values": pv}, unit_key="pixel_values",
        units=patch_units([f"r{r}c{c}" for r in range(grid[0]) for c in range(grid[1])], grid, patch, tuple(pv.shape[-2:])),
        replacement=_mean_patch(pv, grid, patch),
        run=lambda kw: m.model(pixel_values=kw["pixel_values"], **text),
        outcome_probs=lambda out: torch.softmax(out.logits_per_image.float(), dim=-1),
        outcome_label=texts.__getitem__,
        answer=answer,
        towers_batched=lambda tower: tower != "text",  # the text tower runs on the candidates, not per row
        attention=attention,
        rollout=lambda: result.rollout[0].reshape(-1),
    )
    if len(texts) < 2:
        return _finish(s, None, index.get, len(texts), allow_contrast=False)
    return _finish(s, contrast, index.get, len(texts))


@builder("explorer")
def explorer(result: Any, target: Any = None, contrast: Any = None) -> Subject:
    mod = registry.get("explorer").compute()
    m = mod.load(result.model_id)
    tok = m.processor
    other = 1 if target is None else int(target)
    if len(result.sentences) < 2 or not 1 <= other < len(result.sentences):
        raise ValueError("Enter at least two sentences: the first is compared with another one (index 1 or more).")
    limit = model_max_length(tok, m.model)
    a, b = (tok(result.sentences[i], truncation=True, max_length=limit, return_tensors="pt").to(m.device) for i in (0, other))
    embed = m.model.get_input_embeddings()

    def run(kw: dict) -> torch.Tensor:  # (b, 1) cosine of the mean-pooled last hidden states
        n = kw["inputs_embeds"].shape[0]
        ha = m.model(inputs_embeds=kw["inputs_embeds"], attention_mask=kw["attention_mask"]).last_hidden_state
        hb = m.model(input_ids=b["input_ids"].expand(n, -1), attention_mask=b["attention_mask"].expand(n, -1)).last_hidden_state
        va, vb = mod.mean_pool(ha.float(), kw["attention_mask"]), mod.mean_pool(hb.float(), b["attention_mask"].expand(n, -1))
        return torch.nn.functional.cosine_similarity(va, vb, dim=-1)[:, None]

    with torch.no_grad():
        x, pad = embed(a["input_ids"]), embed(torch.full_like(a["input_ids"], tok.pad_token_id))
    w = result.attention[0].weights
    s = Subject(
        task="explorer", model=m.model, inputs={"inputs_embeds": x, "attention_mask": a["attention_mask"]}, unit_key="inputs_embeds",
        units=embed_units(tok.convert_ids_to_tokens(a["input_ids"][0].tolist()), _special_mask(tok, a["input_ids"][0].tolist()),
                          "the padding token"),
        replacement=pad, run=run, outcome_probs=lambda out: out,
        outcome_label=lambda i: f"cosine(sentence 1, sentence {other + 1})",
        answer=0, default_score="cosine_similarity", value_name="cosine similarity",
        attention=lambda: w[-1].mean(0).mean(0),  # every query row: the sentence vector pools them all
        rollout=lambda: attention_rollout(w).mean(0),
    )
    return _finish(s, contrast, lambda text: None, 1, allow_contrast=False)
