"""Attention step by step: one head, one query, softmax(q K^T * scale + bias + mask) V from the real layer input.

Where the input comes from is the task's business (its result stores hidden_states[l], the input of block l):
- generation, sentiment, qa, image: result.embeddings of the one sequence; explorer: the chosen sentence's
  slice of result.embeddings; translation: the encoder / decoder parts of result.embeddings; asr:
  result.encoder_hidden / result.decoder_hidden; clip: result.vision_hidden of image `item`, or
  result.text_hidden of text `item` cut to its real tokens (the padding keys the model masked out have
  weight exactly 0).

How the model turns that state into q, k and v is the architecture table's (demos.adapters), never guessed
here: the norm in front of attention (pre-norm) or none (post-norm); fused or separate projections;
grouped-query attention (key/value heads repeated for the query heads that share them); rotary positions
applied to q and k as the model does; T5's relative position bias and its missing 1/sqrt(d_k); BEiT's 2-D
relative bias; DeBERTa's disentangled content-to-position / position-to-content terms. Cross-attention reads
the decoder state after the block's own self-attention sub-layer (run here on the stored state, then the norm
the table names); its keys and values come from the encoder's output.

The model's own attention module is then called once on the same input (`adapters.run_attention`, eager
attention) for the attention row it returns, and a forward pre-hook on its output projection captures the
per-head output before the projection: cost = one attention sub-module of one layer (two for a
cross-attention), no full forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core import registry
from core.lens_types import ATTENTION_FORMULA, AttentionSteps
from demos import adapters as A
from demos.explain import tasks
from demos.runtime import loading

KINDS: dict[str, tuple[str, ...]] = {spec.key: spec.attention_kinds for spec in registry.TASKS if spec.attention_kinds}
ATTENTION_TASKS = tuple(KINDS)
VIEW = "Attention step by step"
CAPTION = (
    "One head, one query token: the query vector q is compared with every key vector by a dot product; "
    "the scores are scaled by 1/sqrt(d_k) so they do not grow with the head size, masked where the token "
    "may not look, and turned into weights that sum to 1 by the softmax. The head's output is the "
    "weighted sum of the value vectors. The softmax row equals the attention the model returned, and "
    "the weighted sum equals this head's slice of the model's attention output."
)


@dataclass
class _Site:
    """What the task's result says about one attention: the adapter stack, whether it is the cross-attention,
    the block input hidden_states[layer] (1, n_q, D) of the query side, the encoder output (1, n_k, D) for
    cross-attention (else None), where queries may look ((n_q, n_k) bool or None: the model's default), the
    token labels and where the state came from."""

    stack: str
    cross: bool
    hidden: torch.Tensor
    kv: torch.Tensor | None
    allowed: torch.Tensor | None
    query_tokens: list[str]
    key_tokens: list[str]
    block: str
    where: str  # "hidden_states", "decoder hidden_states"...


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


def _check_layer(layer: int, n_layers: int) -> None:
    if not 0 <= layer < n_layers:
        raise ValueError(f"Layer {layer} does not exist; choose 0 to {n_layers - 1}.")


def _site(
    task: str, kind: str, m: loading.Loaded, adapter: A.Adapter, result: Any, layer: int, item: int | None
) -> _Site:
    """Where the result keeps the input of this attention (by task; see the module docstring)."""
    if task == "clip":
        return _clip_site(kind, m, result, layer, item or 0)
    if task in ("translation", "asr"):
        return _seq2seq_site(task, kind, m, adapter, result, layer)
    stack = adapter.main
    if task == "explorer":
        states, tokens = _sentence(result, item)
    elif task == "image":
        states, tokens = result.embeddings.vectors, list(result.embeddings.labels)
    else:
        states, tokens = result.embeddings.vectors, list(result.tokens)
    _check_layer(layer, states.shape[0] - 1)
    return _Site(stack, False, _t(m, states[layer]), None, None, tokens, tokens, f"layer {layer}", "hidden_states")


def _sentence(result: Any, item: int | None) -> tuple[np.ndarray, list[str]]:
    """The explorer's result holds several sentences one after the other (their attention maps in a list):
    the states (L+1, n_i, d) and tokens of sentence `item` (default the shown one)."""
    item = result.shown if item is None else item
    if not 0 <= item < len(result.attention):
        raise ValueError(f"Sentence {item} does not exist; choose 0 to {len(result.attention) - 1}.")
    start = sum(a.weights.shape[-1] for a in result.attention[:item])
    tokens = list(result.attention[item].query_tokens)
    return result.embeddings.vectors[:, start : start + len(tokens)], tokens


def _clip_site(kind: str, m: loading.Loaded, result: Any, layer: int, item: int) -> _Site:
    if getattr(result, "vision_hidden", None) is None:
        raise ValueError("This image-text result holds no hidden states; run the match again.")
    if kind == "vision self":
        if not 0 <= item < result.vision_hidden.shape[1]:
            raise ValueError(f"Image {item} does not exist; choose 0 to {result.vision_hidden.shape[1] - 1}.")
        _check_layer(layer, result.vision_hidden.shape[0] - 1)
        rows, cols = result.rollout.shape[1:]  # the patch grid
        names = ["[CLS]"] + [f"r{r}c{c}" for r in range(rows) for c in range(cols)]
        hidden = _t(m, result.vision_hidden[layer, item])
        names = names[-hidden.shape[1] :] if len(names) > hidden.shape[1] else names  # a tower without [CLS]
        return _Site("vision", False, hidden, None, None, names, names, f"vision tower layer {layer}", "hidden_states")
    if not 0 <= item < len(result.texts):
        raise ValueError(f"Text {item} does not exist; choose 0 to {len(result.texts) - 1}.")
    _check_layer(layer, result.text_hidden.shape[0] - 1)
    n = int(result.text_mask[item].sum())  # padding on the right: the real tokens only
    names = m.processor.tokenizer.convert_ids_to_tokens(result.text_ids[item, :n].tolist())
    return _Site(
        "text",
        False,
        _t(m, result.text_hidden[layer, item, :n]),
        None,
        None,
        names,
        names,
        f"text tower layer {layer}",
        "hidden_states",
    )


def _seq2seq_site(task: str, kind: str, m: loading.Loaded, adapter: A.Adapter, result: Any, layer: int) -> _Site:
    model = m.model
    if task == "asr":
        if getattr(result, "encoder_hidden", None) is None:
            raise ValueError("This transcription result holds no hidden states; transcribe again.")
        enc_h, dec_h = result.encoder_hidden, result.decoder_hidden
        sources = [f"{i * result.frame_step:.2f}s" for i in range(enc_h.shape[1])]
        dec_tokens = (list(result.prompt) + list(result.tokens))[: dec_h.shape[1]]
    else:  # translation: result.embeddings holds the encoder's states, then the decoder's
        n_src = len(result.source_tokens)
        enc_h = result.embeddings.vectors[: len(A.blocks(model, adapter, "encoder")) + 1, :n_src]
        dec_h = result.embeddings.vectors[: len(A.blocks(model, adapter, "decoder")) + 1, n_src:]
        sources, dec_tokens = list(result.source_tokens), list(result.decoder_tokens)
    if kind == "encoder self":
        _check_layer(layer, enc_h.shape[0] - 1)
        return _Site(
            "encoder",
            False,
            _t(m, enc_h[layer]),
            None,
            None,
            sources,
            sources,
            f"encoder layer {layer}",
            "encoder hidden_states",
        )
    _check_layer(layer, dec_h.shape[0] - 1)
    h = _t(m, dec_h[layer])
    if kind == "decoder self":
        return _Site(
            "decoder", False, h, None, None, dec_tokens, dec_tokens, f"decoder layer {layer}", "decoder hidden_states"
        )
    kv = A.stack_output(model, adapter, _t(m, enc_h[-1]), "encoder")
    return _Site("decoder", True, h, kv, None, dec_tokens, sources, f"decoder layer {layer}", "decoder hidden_states")


def _source(adapter: A.Adapter, site: _Site, layer: int) -> str:
    """Where the attention's input came from, in the model's own module names."""
    st = A.stack_of(adapter, site.stack)
    h = f"{site.where}[{layer}]"
    if not site.cross:
        return f"{st.input_norm.rsplit('.', 1)[-1]}({h})" if st.input_norm else h
    own = st.attention.module.rsplit(".", 1)[-1]
    inner = f"{st.input_norm.rsplit('.', 1)[-1]}(h)" if st.input_norm else "h"
    norm = (st.cross_input_norm or st.self_output_norm).rsplit(".", 1)[-1]
    return (
        f"{norm}(h + {own}({inner})), h = {h} (the self-attention sub-layer run here); "
        "keys/values from the encoder output"
    )


def _describe(
    spec: A.AttentionSpec, head: int, heads: int, kv_heads: int, d: int, bias: bool
) -> tuple[list[str], str, list[int]]:
    """What this model's attention does beyond softmax(q K^T / sqrt(d_k) + mask) V: notes, formula, and the
    heads sharing this head's keys/values (grouped-query attention)."""
    notes: list[str] = []
    shared: list[int] = []
    formula = ATTENTION_FORMULA
    if kv_heads < heads:
        group = heads // kv_heads
        kv = head // group
        shared = [h for h in range(kv * group, (kv + 1) * group) if h != head]
        notes.append(
            f"This head shares keys/values with heads {', '.join(map(str, shared))} (grouped-query attention: "
            f"{heads} query heads, {kv_heads} key/value heads; it reads key/value head {kv})."
        )
    if spec.positions == "rotary":
        turned = int(round(d * spec.rotary_fraction))
        part = "every dimension" if turned >= d else f"the first {turned} of the {d} dimensions"
        notes.append(
            f"Rotary positions applied to q and k ({part} of each head turn with the token's position); "
            "q and K below are after the rotation, so q.k depends on how far apart the tokens are."
        )
        formula = "Attention(Q, K, V) = softmax(R(Q) R(K)^T / sqrt(d_k) + mask) V, R = rotary positions"
    elif spec.positions == "relative_bias" and bias:
        notes.append(
            "Relative position bias added: a learned number per head and (bucketed) distance between query "
            "and key, computed in the stack's first block and shared by every block."
        )
        notes.append("No 1/sqrt(d_k) scaling: this model folds it into its weights (scale 1).")
        formula = "Attention(Q, K, V) = softmax(Q K^T + position bias + mask) V"
    elif spec.positions == "relative_bias_2d" and bias:
        notes.append("Relative position bias added: a learned number per head and 2-D offset between patches.")
        formula = "Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + position bias + mask) V"
    elif spec.positions == "disentangled" and bias:
        notes.append(
            "Disentangled attention: content-to-position and position-to-content terms are added to q.k "
            "(they depend on q, k and the relative distance), and the scale is 1/sqrt(d_k x (1 + number of "
            "those terms))."
        )
        formula = "Attention(Q, K, V) = softmax((Q K^T + c2p + p2c) / sqrt((1 + #terms) d_k) + mask) V"
    return notes, formula, shared


def attention_steps(
    task_key: str,
    result: Any,
    layer: int,
    head: int,
    query: int,
    kind: str = "self",
    model_id: str | None = None,
    item: int | None = None,
) -> AttentionSteps:
    """Every step of one head's attention for one query token of `result` (the task's result).

    query: index of the query token (negative counts from the end: -1 = the last);
    kind: one of `attention_kinds(task_key)` ("self" = the first, "cross" where there is one);
    item: which sentence (explorer; default the shown one), image or text (clip; default 0).
    """
    if task_key not in KINDS:
        raise ValueError(f"No attention step-by-step for {task_key!r}; choose one of {ATTENTION_TASKS}.")
    kind = _resolve_kind(task_key, kind)
    m = tasks.load(task_key, model_id or result.model_id)
    layer, head, query = int(layer), int(head), int(query)

    def run() -> AttentionSteps:
        nonlocal query
        model = m.model
        adapter = A.adapter_for_view(model, VIEW)
        with torch.inference_mode():
            site = _site(task_key, kind, m, adapter, result, layer, item)
            st = A.stack_of(adapter, site.stack)
            spec = st.cross_attention if site.cross else st.attention
            block = A.blocks(model, adapter, site.stack)[layer]
            attn = A.attention_module(block, spec)
            n_heads, kv_heads, d_k = A.head_counts(attn, spec)
            if not 0 <= head < n_heads:
                raise ValueError(f"Head {head} does not exist; choose 0 to {n_heads - 1}.")
            n_q = site.hidden.shape[1]
            query = query + n_q if query < 0 else query  # -1 = the last token
            if not 0 <= query < n_q:
                raise ValueError(f"Query token {query} does not exist; choose 0 to {n_q - 1}.")
            if site.cross:
                x = A.cross_attention_input(model, adapter, layer, site.hidden, site.stack)
            else:
                x = A.attention_input(adapter, block, site.hidden, site.stack)
            parts = A.attention_parts(model, adapter, layer, x, site.kv, stack=site.stack, cross=site.cross)
            raw = A.qkv(attn, spec, x, site.kv) if spec.positions == "rotary" and not site.cross else None
            ran = A.run_attention(
                model, adapter, layer, x, site.kv, stack=site.stack, cross=site.cross, allowed=site.allowed
            )
        n_k = parts.k.shape[-2]
        allowed = site.allowed
        if allowed is None and parts.causal:
            allowed = A.causal_mask(n_q, n_k)

        def as64(t: torch.Tensor) -> np.ndarray:
            return t.double().cpu().numpy()

        q, K, V = as64(parts.q[0, head, query]), as64(parts.k[0, head]), as64(parts.v[0, head])
        bias_row = None if parts.bias is None else as64(parts.bias[0, head, query])  # (n_k,) added to the scaled scores
        scale = float(parts.scale)
        scores = K @ q
        scaled = scores * scale
        logits = scaled if bias_row is None else scaled + bias_row
        mask = None if allowed is None else allowed[query].cpu().numpy()
        z = logits if mask is None else np.where(mask, logits, -np.inf)
        e = np.exp(z - z.max())
        softmax = e / e.sum()
        notes, formula, shared = _describe(spec, head, n_heads, kv_heads, d_k, bias_row is not None)
        cut = slice(head * d_k, (head + 1) * d_k)
        causal = parts.causal and not site.cross
        return AttentionSteps(
            task=task_key,
            model_id=m.model_id,
            kind="cross" if site.cross else "causal self" if causal else "self",
            block=site.block,
            layer=layer,
            head=head,
            query=query,
            query_token=site.query_tokens[query],
            tokens=list(site.key_tokens),
            q=q,
            K=K,
            V=V,
            scores=scores,
            scale=scale,
            scaled=scaled,
            mask=mask,
            softmax=softmax,
            model_row=ran.weights[0, head, query].float().cpu().numpy(),
            output=softmax @ V,
            model_output=ran.heads[0, query, cut].float().cpu().numpy(),
            source=_source(adapter, site, layer),
            formula=formula,
            caption=" ".join([CAPTION, *notes]),
            bias=bias_row,
            notes=notes,
            positions=spec.positions,
            kv_heads=kv_heads,
            shares_with=shared,
            q_before_rotary=None if raw is None else as64(raw[0][0, head, query]),
            K_before_rotary=None if raw is None else as64(raw[1][0, head]),
        )

    return loading.one_at_a_time(task_key)(run)()
