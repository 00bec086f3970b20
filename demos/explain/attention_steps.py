"""Attention step by step: one head, one query, softmax(q K^T * scale + mask) V from the real layer input.

Where the input comes from (hidden_states[l] is the input of block l, stored in the task's result):
- generation (GPT-2, pre-LN): ln_1(hidden_states[l]) -> c_attn (Conv1D, fused q|k|v); causal mask.
- sentiment, qa (DistilBERT, post-LN): hidden_states[l] as is -> q_lin / k_lin / v_lin.
- explorer (MiniLM = BERT, or DistilBERT; post-LN): hidden_states[l] of the chosen sentence.
- image (ViT, pre-LN): layernorm_before(hidden_states[l]) -> q_proj / k_proj / v_proj.
- translation (Marian, post-LN): encoder self: encoder hidden_states[l]; decoder self (causal):
  decoder hidden_states[l]; cross: the query input is the decoder state after the self-attention
  sub-block, self_attn_layer_norm(h + self_attn(h)), which is not stored: that one sub-module is
  run here on the stored h; keys/values from the encoder output.
- asr (Whisper, pre-LN): encoder self: self_attn_layer_norm(encoder hidden_states[l]) over every
  position of the window; decoder self (causal): self_attn_layer_norm(decoder hidden_states[l]);
  cross: encoder_attn_layer_norm(h + self_attn(self_attn_layer_norm(h))) (that sub-module run
  here), keys/values from the encoder output (after its final layer norm).
- clip (pre-LN): vision: layer_norm1(vision hidden_states[l]) of image `item`; text (causal):
  layer_norm1(text hidden_states[l]) of text `item`, cut to its real tokens (the padding keys the
  model masked out have weight exactly 0).

The model's own attention module is then called once on that input (eager attention) to return
its attention row, with a forward pre-hook on its output projection capturing the per-head output
before the projection: cost = one attention sub-module of one layer, no full forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core import registry
from core.lens_types import AttentionSteps
from demos.runtime import loading

KINDS: dict[str, tuple[str, ...]] = {spec.key: spec.attention_kinds for spec in registry.TASKS if spec.attention_kinds}
ATTENTION_TASKS = tuple(KINDS)
CAPTION = (
    "One head, one query token: the query vector q is compared with every key vector by a dot product; "
    "the scores are scaled by 1/sqrt(d_k) so they do not grow with the head size, masked where the token "
    "may not look, and turned into weights that sum to 1 by the softmax. The head's output is the "
    "weighted sum of the value vectors. The softmax row equals the attention the model returned, and "
    "the weighted sum equals this head's slice of the model's attention output."
)


@dataclass
class _Site:
    """attn: module called as attn(x, attention_mask=..., [key_value_states=kv]) -> (out, weights);
    proj: module holding the q/k/v projections; out: output projection (pre-hook target).
    x: (1, n_q, d) the module's input; kv: (1, n_k, d) encoder states for cross-attention, else None;
    allowed: (n_q, n_k) bool or None."""

    attn: Any
    proj: Any
    out: Any
    x: torch.Tensor
    kv: torch.Tensor | None
    allowed: torch.Tensor | None
    query_tokens: list[str]
    key_tokens: list[str]
    kind: str
    block: str
    source: str


def attention_kinds(task_key: str) -> tuple[str, ...]:
    """The attention kinds `attention_steps` offers for a task (the first is the default)."""
    return KINDS[task_key]


def _resolve_kind(task: str, kind: str) -> str:
    kinds = KINDS[task]
    if kind in kinds:
        return kind
    if kind in ("self", "causal self"):
        return kinds[0]
    if kind == "cross" and "cross" in kinds:
        return kind
    raise ValueError(f"{task} has no {kind!r} attention; choose one of {kinds}.")


def _t(m: loading.Loaded, array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(m.device, m.dtype)[None]


def _causal(n: int, device) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def _check_layer(layer: int, layers) -> Any:
    if not 0 <= layer < len(layers):
        raise ValueError(f"Layer {layer} does not exist; choose 0 to {len(layers) - 1}.")
    return layers[layer]


def _qkv(proj: Any, x: torch.Tensor, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full projections (1, n, H*d_k) with the module's own weights."""
    if hasattr(proj, "c_attn"):  # GPT-2: one Conv1D gives q | k | v
        width = x.shape[-1]
        q, _, _ = proj.c_attn(x).split(width, dim=-1)
        _, k, v = proj.c_attn(kv).split(width, dim=-1)
        return q, k, v
    for names in (("q_lin", "k_lin", "v_lin"), ("query", "key", "value"), ("q_proj", "k_proj", "v_proj")):
        if hasattr(proj, names[0]):
            qm, km, vm = (getattr(proj, n) for n in names)
            return qm(x), km(kv), vm(kv)
    raise TypeError(f"Unknown attention module {type(proj).__name__}.")


def _head_dim(proj: Any, width: int) -> int:
    for name in ("head_dim", "attention_head_size"):
        if isinstance(getattr(proj, name, None), int):
            return int(getattr(proj, name))
    return width // int(getattr(proj, "n_heads", None) or proj.num_heads)


def _scale(proj: Any, d_k: int) -> float:
    for name in ("scaling", "scale"):
        if isinstance(getattr(proj, name, None), float):
            return float(getattr(proj, name))
    return d_k ** -0.5


def _site(task: str, kind: str, m: loading.Loaded, result: Any, layer: int, item: int) -> _Site:
    """The attention module and its input, by the model's architecture (see the module docstring)."""
    model, dev, arch = m.model, m.device, m.model.config.model_type
    if arch == "gpt2":
        block = _check_layer(layer, model.transformer.h)
        x = block.ln_1(_t(m, result.embeddings.vectors[layer]))
        n = x.shape[1]
        return _Site(block.attn, block.attn, block.attn.c_proj, x, None, _causal(n, dev), result.tokens, result.tokens,
                     "causal self", f"block {layer}", f"ln_1(hidden_states[{layer}])")
    if arch == "vit":
        block = _check_layer(layer, model.vit.layers)
        x = block.layernorm_before(_t(m, result.embeddings.vectors[layer]))
        names = list(result.embeddings.labels)
        return _Site(block.attention, block.attention, block.attention.o_proj, x, None, None, names, names,
                     "self", f"layer {layer}", f"layernorm_before(hidden_states[{layer}])")
    if hasattr(model, "vision_model") and hasattr(model, "text_model"):  # a dual encoder
        return _clip_site(kind, m, result, layer, item or 0)
    if model.config.is_encoder_decoder:
        return _seq2seq_site(kind, m, result, layer)
    return _encoder_site(m, result, layer, item, several=bool(registry.get(task).items))


def _encoder_site(m: loading.Loaded, result: Any, layer: int, item: int | None, several: bool) -> _Site:
    """A BERT-like text encoder (DistilBERT, BERT = MiniLM); `several`: the result holds several
    sentences one after the other (their attention maps in a list), `item` picks one."""
    states, tokens = result.embeddings.vectors, None if several else list(result.tokens)
    if several:
        item = result.shown if item is None else item
        if not 0 <= item < len(result.attention):
            raise ValueError(f"Sentence {item} does not exist; choose 0 to {len(result.attention) - 1}.")
        start = sum(a.weights.shape[-1] for a in result.attention[:item])
        tokens = list(result.attention[item].query_tokens)
        states = states[:, start : start + len(tokens)]
    base = m.model.base_model
    distil = hasattr(base, "transformer")  # DistilBERT, else BERT (MiniLM)
    block = _check_layer(layer, base.transformer.layer if distil else base.encoder.layer)
    x = _t(m, states[layer])
    if distil:
        attn = block.attention
        return _Site(attn, attn, attn.out_lin, x, None, None, tokens, tokens, "self", f"layer {layer}", f"hidden_states[{layer}]")
    return _Site(block.attention, block.attention.self, block.attention.output.dense, x, None, None, tokens, tokens,
                 "self", f"layer {layer}", f"hidden_states[{layer}]")


def _clip_site(kind: str, m: loading.Loaded, result: Any, layer: int, item: int) -> _Site:
    if getattr(result, "vision_hidden", None) is None:
        raise ValueError("This image-text result holds no hidden states; run the match again.")
    tower = m.model.vision_model if kind == "vision self" else m.model.text_model
    block = _check_layer(layer, tower.encoder.layers)
    if kind == "vision self":
        if not 0 <= item < result.vision_hidden.shape[1]:
            raise ValueError(f"Image {item} does not exist; choose 0 to {result.vision_hidden.shape[1] - 1}.")
        rows, cols = result.rollout.shape[1:]  # the patch grid
        names = ["[CLS]"] + [f"r{r}c{c}" for r in range(rows) for c in range(cols)]
        x = block.layer_norm1(_t(m, result.vision_hidden[layer, item]))
        allowed, where = None, f"vision tower layer {layer}"
    else:
        if not 0 <= item < len(result.texts):
            raise ValueError(f"Text {item} does not exist; choose 0 to {len(result.texts) - 1}.")
        n = int(result.text_mask[item].sum())  # CLIP pads on the right
        names = m.processor.tokenizer.convert_ids_to_tokens(result.text_ids[item, :n].tolist())
        x = block.layer_norm1(_t(m, result.text_hidden[layer, item, :n]))
        allowed, where = _causal(n, m.device), f"text tower layer {layer}"
    return _Site(block.self_attn, block.self_attn, block.self_attn.out_proj, x, None, allowed, names, names,
                 "causal self" if allowed is not None else "self", where, f"layer_norm1(hidden_states[{layer}])")


def _seq2seq_site(kind: str, m: loading.Loaded, result: Any, layer: int) -> _Site:
    model, dev = m.model, m.device
    whisper = model.config.model_type == "whisper"
    if whisper:
        if getattr(result, "encoder_hidden", None) is None:
            raise ValueError("This transcription result holds no hidden states; transcribe again.")
        enc_h, dec_h = result.encoder_hidden, result.decoder_hidden
        frames = [f"{i * result.frame_step:.2f}s" for i in range(enc_h.shape[1])]
        dec_tokens = (list(result.prompt) + list(result.tokens))[: dec_h.shape[1]]
    else:
        n_src = len(result.source_tokens)
        enc_h = result.embeddings.vectors[: model.config.encoder_layers + 1, :n_src]
        dec_h = result.embeddings.vectors[: model.config.decoder_layers + 1, n_src:]
        frames, dec_tokens = list(result.source_tokens), list(result.decoder_tokens)
    if kind == "encoder self":
        block = _check_layer(layer, model.model.encoder.layers)
        x = _t(m, enc_h[layer])
        x = block.self_attn_layer_norm(x) if whisper else x
        src = f"self_attn_layer_norm(encoder hidden_states[{layer}])" if whisper else f"encoder hidden_states[{layer}]"
        return _Site(block.self_attn, block.self_attn, block.self_attn.out_proj, x, None, None, frames, frames,
                     "self", f"encoder layer {layer}", src)
    block = _check_layer(layer, model.model.decoder.layers)
    h = _t(m, dec_h[layer])
    causal = _causal(h.shape[1], dev)
    normed = block.self_attn_layer_norm(h) if whisper else h
    if kind == "decoder self":
        src = f"self_attn_layer_norm(decoder hidden_states[{layer}])" if whisper else f"decoder hidden_states[{layer}]"
        return _Site(block.self_attn, block.self_attn, block.self_attn.out_proj, normed, None, causal, dec_tokens, dec_tokens,
                     "causal self", f"decoder layer {layer}", src)
    after_self = h + block.self_attn(normed, attention_mask=_additive(causal, m.dtype))[0]
    if whisper:
        x = block.encoder_attn_layer_norm(after_self)
        src = f"encoder_attn_layer_norm(h + self_attn(self_attn_layer_norm(h))), h = decoder hidden_states[{layer}] (self-attention sub-block run here)"
    else:
        x = block.self_attn_layer_norm(after_self)
        src = f"self_attn_layer_norm(h + self_attn(h)), h = decoder hidden_states[{layer}] (self-attention sub-block run here)"
    kv = _t(m, enc_h[-1])
    return _Site(block.encoder_attn, block.encoder_attn, block.encoder_attn.out_proj, x, kv, None, dec_tokens, frames,
                 "cross", f"decoder layer {layer}", src + "; keys/values from the encoder output")


def _additive(allowed: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(n_q, n_k) bool -> (1, 1, n_q, n_k) additive mask as transformers' eager attention adds it."""
    if allowed is None:
        return None
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[None, None]


def _run_model(site: _Site, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own attention module on the site's input: weights (H, n_q, n_k) and the
    concatenated head outputs before the output projection (n_q, H*d_k)."""
    captured: list[torch.Tensor] = []
    hook = site.out.register_forward_pre_hook(lambda _mod, args: captured.append(args[0].detach()))
    try:
        kwargs = {"attention_mask": _additive(site.allowed, dtype)}
        if site.kv is not None:
            kwargs["key_value_states"] = site.kv
        weights = site.attn(site.x, **kwargs)[1]
    finally:
        hook.remove()
    if weights is None or not captured:
        raise RuntimeError("The attention module returned no weights (load the model with attn_implementation='eager').")
    return weights[0], captured[0][0]


def attention_steps(task_key: str, result: Any, layer: int, head: int, query: int, kind: str = "self",
                    model_id: str | None = None, item: int | None = None) -> AttentionSteps:
    """Every step of one head's attention for one query token of `result` (the task's result).

    query: index of the query token (negative counts from the end: -1 = the last);
    kind: one of `attention_kinds(task_key)` ("self" = the first, "cross" where there is one);
    item: which sentence (explorer; default the shown one), image or text (clip; default 0).
    """
    if task_key not in KINDS:
        raise ValueError(f"No attention step-by-step for {task_key!r}; choose one of {ATTENTION_TASKS}.")
    kind = _resolve_kind(task_key, kind)
    m = registry.get(task_key).compute().load(model_id or result.model_id)
    layer, head, query = int(layer), int(head), int(query)

    def run() -> AttentionSteps:
        nonlocal query
        with torch.inference_mode():
            site = _site(task_key, kind, m, result, layer, item)
            kv = site.kv if site.kv is not None else site.x
            q_all, k_all, v_all = _qkv(site.proj, site.x, kv)
            d_k = _head_dim(site.proj, q_all.shape[-1])
            n_heads = q_all.shape[-1] // d_k
            if not 0 <= head < n_heads:
                raise ValueError(f"Head {head} does not exist; choose 0 to {n_heads - 1}.")
            query = query + site.x.shape[1] if query < 0 else query  # -1 = the last token
            if not 0 <= query < site.x.shape[1]:
                raise ValueError(f"Query token {query} does not exist; choose 0 to {site.x.shape[1] - 1}.")
            weights, concat = _run_model(site, m.dtype)
        cut = slice(head * d_k, (head + 1) * d_k)
        def as64(t: torch.Tensor) -> np.ndarray:
            return t.double().cpu().numpy()

        q, K, V = as64(q_all[0, query, cut]), as64(k_all[0, :, cut]), as64(v_all[0, :, cut])
        scale = _scale(site.proj, d_k)
        scores = K @ q
        scaled = scores * scale
        mask = None if site.allowed is None else site.allowed[query].cpu().numpy()
        z = scaled if mask is None else np.where(mask, scaled, -np.inf)
        e = np.exp(z - z.max())
        softmax = e / e.sum()
        return AttentionSteps(
            task=task_key, model_id=m.model_id, kind=site.kind, block=site.block, layer=layer, head=head, query=query,
            query_token=site.query_tokens[query], tokens=list(site.key_tokens), q=q, K=K, V=V, scores=scores,
            scale=scale, scaled=scaled, mask=mask, softmax=softmax,
            model_row=weights[head, query].float().cpu().numpy(), output=softmax @ V,
            model_output=concat[query, cut].float().cpu().numpy(), source=site.source, caption=CAPTION,
        )

    return loading.one_at_a_time(task_key)(run)()
