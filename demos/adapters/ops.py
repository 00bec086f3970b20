"""Helpers every explainer uses instead of hasattr/model_type: find blocks, split q/k/v per head, add the
family's positions and scale, and read logits from any layer. Shapes: b batch, n tokens, H heads, d head size."""
from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import torch
from torch import nn

from .spec import Adapter, AttentionSpec, Head, Stack, UnknownArchitecture
from .table import TABLE, UNSUPPORTED


def resolve(root: Any, path: str) -> Any:
    """Walk a dotted path ("encoder.block.0.layer.0.SelfAttention") from `root`; "" gives `root`.

    An attribute that is None (OPT without project_out) ends the walk with None; a missing one raises
    UnknownArchitecture naming the path.
    """
    obj = root
    for part in path.split(".") if path else ():
        if obj is None:
            return None
        if part.isdigit():
            obj = obj[int(part)]
        elif hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            raise UnknownArchitecture(f"{type(root).__name__} has no '{part}' (looking for '{path}')")
    return obj


def _prefixed(stack: Stack, prefix: str) -> Stack:
    def p(path: str) -> str:
        return prefix + path if path else ""
    return replace(
        stack,
        layers=p(stack.layers),
        embeddings=p(stack.embeddings),
        final=tuple(p(f) for f in stack.final),
        rotary=p(stack.rotary),
        bias_source=p(stack.bias_source),
    )


def _specialise(adapter: Adapter, config: Any) -> Adapter:
    """Config-dependent entries: partial rotary, NeoX sequential residual, post-norm OPT, BEiT pooling/positions,
    and a model told to keep the last block's output as its last hidden state (config.tie_last_hidden_states =
    False, as demos.generation does for OPT with project_out): the final part then runs on it like on every layer."""
    stacks = {}
    for name, st in adapter.stacks.items():
        attn = st.attention
        if attn.positions == "rotary":
            fraction = (getattr(config, "rope_parameters", None) or {}).get("partial_rotary_factor", 1.0)
            attn = replace(attn, rotary_fraction=float(fraction))
        if adapter.family == "deberta-v2" and not getattr(config, "relative_attention", False):
            attn = replace(attn, positions="learned")
        if adapter.family == "beit" and not (
            config.use_relative_position_bias or config.use_shared_relative_position_bias
        ):
            attn = replace(attn, positions="learned" if config.use_absolute_position_embeddings else "none")
        st = replace(st, attention=attn)
        if adapter.family == "gpt_neox":
            st = replace(st, parallel_residual=bool(config.use_parallel_residual))
        if adapter.family == "opt" and not config.do_layer_norm_before:
            st = replace(st, input_norm="")
        if getattr(config, "tie_last_hidden_states", None) is False:  # hidden_states[-1]: the last block's output
            st = replace(st, last_hidden_normed=False)
        stacks[name] = st
    out = replace(adapter, stacks=stacks)
    if adapter.family == "opt" and not config.do_layer_norm_before:
        out = replace(out, placement="post")
    if adapter.family == "beit" and not config.use_mean_pooling:
        out = replace(out, heads=tuple((c, replace(h, pool="first")) for c, h in out.heads))
    return out


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of `model` (by config.model_type) with paths from the model root, only the stacks this
    model has (T5EncoderModel: encoder), and `head` filled for the model's class (stack name -> Head)."""
    family = getattr(model.config, "model_type", "") or type(model).__name__
    if family in UNSUPPORTED:
        raise UnknownArchitecture(f"no adapter for {family}: {UNSUPPORTED[family]}")
    if family not in TABLE:
        raise UnknownArchitecture(
            f"no adapter for {family}: the table (demos/adapters/table.py) does not say where its blocks, attention "
            f"projections, final norm and head are; known families: {', '.join(sorted(TABLE))}"
        )
    adapter = _specialise(TABLE[family], model.config)
    base = getattr(model, "base_model", model)
    prefix = model.base_model_prefix + "." if base is not model else ""
    stacks = {}
    for name, st in adapter.stacks.items():
        st = _prefixed(st, prefix)
        try:
            resolve(model, st.layers)
        except UnknownArchitecture:
            continue  # e.g. the decoder of T5EncoderModel
        stacks[name] = st
    if not stacks:
        raise UnknownArchitecture(
            f"{family}: {type(model).__name__} has none of the stacks the table names "
            f"({', '.join(s.layers for s in adapter.stacks.values())})"
        )
    heads = {h.stack: h for cls, h in adapter.heads if cls == type(model).__name__ and h.stack in stacks}
    return replace(adapter, stacks=stacks, head=heads)


STILL_WORKS = (
    "The attention maps and the attributions do not need the architecture table and still work for this model."
)


def adapter_for_view(model: nn.Module, view: str) -> Adapter:
    """adapter_for(model), or UnknownArchitecture saying which view cannot run, what is missing and what still works."""
    try:
        return adapter_for(model)
    except UnknownArchitecture as exc:
        raise UnknownArchitecture(f"{view} is not available for this model: {exc}. {STILL_WORKS}") from exc


def stack_of(adapter: Adapter, stack: str | None = None) -> Stack:
    """The named stack ("main", "encoder", "decoder", "text", "vision"); None = adapter.main."""
    name = stack or adapter.main
    if name not in adapter.stacks:
        raise UnknownArchitecture(f"{adapter.family} has no stack '{name}' (it has {', '.join(adapter.stacks)})")
    return adapter.stacks[name]


def blocks(model: nn.Module, adapter: Adapter, stack: str | None = None) -> list[nn.Module]:
    """The blocks of a stack, in order."""
    return list(resolve(model, stack_of(adapter, stack).layers))


def attention_module(block: nn.Module, spec: AttentionSpec) -> nn.Module:
    """The attention module of a block (hook target: a forward pre-hook sees its input states)."""
    return resolve(block, spec.module)


def out_projection(block: nn.Module, spec: AttentionSpec) -> nn.Module:
    """The output projection of a block's attention; its input is (b, n, H*d), the heads' outputs side by side."""
    return resolve(attention_module(block, spec), spec.out)


def attention_input(adapter: Adapter, block: nn.Module, hidden: torch.Tensor, stack: str | None = None) -> torch.Tensor:
    """What a block's self-attention reads, (b, n, D), from the block input `hidden` (= hidden_states[layer])."""
    norm = stack_of(adapter, stack).input_norm
    return resolve(block, norm)(hidden) if norm else hidden


def stack_outputs(output: Any, adapter: Adapter, stack: str | None = None) -> tuple[tuple, tuple, tuple | None]:
    """(hidden_states, attentions, cross_attentions or None) of a stack in a model output
    (run with output_hidden_states / output_attentions). hidden_states[i] is the input of block i."""
    key = stack_of(adapter, stack).outputs
    if key.endswith("."):
        output, key = getattr(output, key[:-1]), ""
    cross = getattr(output, "cross_attentions", None) if key == "decoder_" else None
    return getattr(output, key + "hidden_states"), getattr(output, key + "attentions"), cross


def _width(linear: nn.Module) -> int:
    return linear.out_features if isinstance(linear, nn.Linear) else linear.nf  # nf: transformers' Conv1D


def head_counts(attn: nn.Module, spec: AttentionSpec) -> tuple[int, int, int]:
    """(query heads H, key/value heads, head size d) read from the projection sizes."""
    d = int(resolve(attn, spec.head_dim))
    if spec.fused:
        heads = _width(resolve(attn, spec.fused)) // (3 * d)
        return heads, heads, d
    return _width(resolve(attn, spec.q)) // d, _width(resolve(attn, spec.k)) // d, d


def qkv(attn: nn.Module, spec: AttentionSpec, x: torch.Tensor, kv: torch.Tensor | None = None):
    """Queries, keys and values per head, each (b, H, n, d) (keys/values over the n_kv tokens of `kv` for
    cross-attention). Grouped-query key/value heads are repeated so head h of k and v pairs with head h of q.
    No positions and no scale are applied here (see apply_rotary, position_bias, scale)."""
    d = int(resolve(attn, spec.head_dim))
    src = x if kv is None else kv
    if spec.fused_layout == "gpt2_conv1d":
        q, k, v = resolve(attn, spec.fused)(x).chunk(3, dim=-1)
    elif spec.fused_layout == "neox_interleaved":
        per_head = resolve(attn, spec.fused)(x).unflatten(-1, (-1, 3 * d))
        q, k, v = (t.flatten(-2) for t in per_head.chunk(3, dim=-1))
    else:
        q, k, v = resolve(attn, spec.q)(x), resolve(attn, spec.k)(src), resolve(attn, spec.v)(src)
    q, k, v = (t.unflatten(-1, (-1, d)).transpose(1, 2) for t in (q, k, v))
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return q, k, v


def scale(attn: nn.Module, spec: AttentionSpec) -> float:
    """The factor on q.k: 1/sqrt(d) mostly, 1.0 for T5, 1/sqrt(d * (1 + #relative kinds)) for DeBERTa."""
    if spec.scale == "disentangled":
        kinds = sum(kind in (resolve(attn, "self.pos_att_type") or ()) for kind in ("c2p", "p2c"))
        return 1.0 / math.sqrt(int(resolve(attn, spec.head_dim)) * (1 + kinds))
    return float(resolve(attn, spec.scale))


def apply_rotary(
    model: nn.Module,
    adapter: Adapter,
    q: torch.Tensor,
    k: torch.Tensor,
    stack: str | None = None,
    position_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q (b, H, n, d) and k (b, H, n_k, d) as the family does, with the model's own rotary module and its
    modeling module's apply_rotary_pos_emb (partial rotary: only the first rotary_fraction*d dims turn)."""
    rotary = resolve(model, stack_of(adapter, stack).rotary)
    if position_ids is None:
        position_ids = torch.arange(q.shape[-2], device=q.device)[None]
    cos, sin = rotary(q, position_ids)
    return sys.modules[type(rotary).__module__].apply_rotary_pos_emb(q, k, cos, sin)


def position_bias(
    model: nn.Module,
    adapter: Adapter,
    layer: int,
    q: torch.Tensor,
    k: torch.Tensor,
    stack: str | None = None,
    cross: bool = False,
) -> torch.Tensor | None:
    """The term the family adds to scaled q.k, (1 or b, H, n_q, n_k), or None (rotary/absolute positions, cross)."""
    st = stack_of(adapter, stack)
    spec = st.cross_attention if cross else st.attention
    if spec is None or spec.positions not in ("relative_bias", "relative_bias_2d", "disentangled"):
        return None
    block = blocks(model, adapter, stack)[layer]
    if spec.positions == "relative_bias":  # T5: block 0's bucketed bias, shared by every block of the stack
        return resolve(model, st.bias_source).compute_bias(q.shape[-2], k.shape[-2])
    if spec.positions == "relative_bias_2d":  # BEiT: per-block and/or shared table over 2-D patch offsets
        return _bias_2d(model, block, q.shape[-2])
    core, encoder = resolve(attention_module(block, spec), "self"), resolve(model, st.bias_source)  # DeBERTa
    b, heads, n, d = q.shape
    qf, kf = q.reshape(b * heads, n, d), k.reshape(b * heads, k.shape[-2], d)
    kinds = 1 + sum(kind in core.pos_att_type for kind in ("c2p", "p2c"))
    bias = core.disentangled_attention_bias(qf, kf, encoder.get_rel_pos(qf), encoder.get_rel_embedding(), kinds)
    return bias.view(b, heads, n, -1)


def _bias_2d(model: nn.Module, block: nn.Module, n: int) -> torch.Tensor | None:
    """BEiT's relative position bias (1, H, n, n) over the 2-D patch offsets (per block and/or shared)."""
    side = model.config.image_size // model.config.patch_size
    tables = [resolve(block, "relative_position_bias"), resolve(model.base_model, "shared_position_bias")]
    terms = [t((side, side), False, dim_size=n) for t in tables if t is not None]
    return sum(terms) if terms else None


class Parts(NamedTuple):
    """One attention computed from its input: q, k, v (b, H, n, d) with positions applied, the scale,
    the additive bias (or None) and whether the mask is causal."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    scale: float
    bias: torch.Tensor | None
    causal: bool

    def weights(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """softmax(q k^T * scale + bias + mask), (b, H, n_q, n_k); `mask` is additive (0 / -inf), optional."""
        scores = self.q @ self.k.transpose(-1, -2) * self.scale
        if self.bias is not None:
            scores = scores + self.bias
        if self.causal:
            n_q, n_k = scores.shape[-2:]
            scores = scores.masked_fill(
                torch.ones(n_q, n_k, dtype=torch.bool, device=scores.device).triu(1 + n_k - n_q), float("-inf")
            )
        if mask is not None:
            scores = scores + mask
        return scores.softmax(-1)


def attention_parts(
    model: nn.Module,
    adapter: Adapter,
    layer: int,
    x: torch.Tensor,
    kv: torch.Tensor | None = None,
    stack: str | None = None,
    cross: bool = False,
    position_ids: torch.Tensor | None = None,
) -> Parts:
    """Recompute one block's attention from its input `x` (b, n, D) (and encoder states `kv` for cross)."""
    st = stack_of(adapter, stack)
    spec = st.cross_attention if cross else st.attention
    if spec is None:
        raise UnknownArchitecture(f"{adapter.family}: stack '{stack or adapter.main}' has no cross-attention")
    attn = attention_module(blocks(model, adapter, stack)[layer], spec)
    q, k, v = qkv(attn, spec, x, kv)
    if spec.positions == "rotary":
        q, k = apply_rotary(model, adapter, q, k, stack, position_ids)
    return Parts(q, k, v, scale(attn, spec), position_bias(model, adapter, layer, q, k, stack, cross), spec.causal)


class Ran(NamedTuple):
    """One attention module run by the model itself: weights (b, H, n_q, n_k) as it returned them, heads
    (b, n_q, H*d) what its output projection received (the heads' outputs side by side), out (b, n_q, D) what
    the output projection gave."""

    weights: torch.Tensor
    heads: torch.Tensor
    out: torch.Tensor


def causal_mask(n_q: int, n_k: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n_q, n_k) bool, True where a query may look (the last n_q of n_k positions, each up to itself)."""
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(n_k - n_q)


def _mask(
    spec: AttentionSpec, allowed: torch.Tensor | None, x: torch.Tensor, n_k: int, bias: torch.Tensor | None
) -> torch.Tensor | None:
    """The mask argument of the module: additive (1, 1, n_q, n_k) (plus BEiT's bias, which rides on it) or bool."""
    if spec.mask_kind == "bool":  # DeBERTa: required, True = may attend
        keep = torch.ones(x.shape[1], n_k, dtype=torch.bool, device=x.device) if allowed is None else allowed
        return keep[None, None]
    mask = None
    if allowed is not None:
        mask = torch.where(allowed, torch.zeros((), dtype=x.dtype, device=x.device), torch.finfo(x.dtype).min)[
            None, None
        ]
    if bias is not None:
        mask = bias.to(x.dtype) if mask is None else bias.to(x.dtype) + mask
    return mask


def run_attention(
    model: nn.Module,
    adapter: Adapter,
    layer: int,
    x: torch.Tensor,
    kv: torch.Tensor | None = None,
    stack: str | None = None,
    cross: bool = False,
    allowed: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> Ran:
    """Call one block's own attention module on its input `x` (b, n, D) (and encoder states `kv` for
    cross-attention) as the block calls it: the family's mask convention, rotary cos/sin, T5's position bias,
    BEiT's 2-D bias, DeBERTa's relative positions. `allowed` (n_q, n_k) bool: where a query may look (default:
    causal for causal stacks, everything otherwise). Needs eager attention for the weights."""
    st = stack_of(adapter, stack)
    spec = st.cross_attention if cross else st.attention
    if spec is None:
        raise UnknownArchitecture(f"{adapter.family}: stack '{stack or adapter.main}' has no cross-attention")
    block = blocks(model, adapter, stack)[layer]
    attn = attention_module(block, spec)
    n_k = (x if kv is None else kv).shape[1]
    if allowed is None and spec.causal and not cross:
        allowed = causal_mask(x.shape[1], n_k, x.device)
    kwargs: dict[str, Any] = dict(spec.call)
    if cross:
        kwargs[spec.kv_input] = kv
    bias = None
    if not cross and spec.positions == "rotary":
        ids = torch.arange(x.shape[1], device=x.device)[None] if position_ids is None else position_ids
        kwargs["position_embeddings"] = resolve(model, st.rotary)(x, ids)
    elif not cross and spec.positions == "relative_bias":  # T5: block 0's bias, passed on to every block
        kwargs["position_bias"] = resolve(model, st.bias_source).compute_bias(x.shape[1], n_k)
    elif spec.positions == "relative_bias_2d":
        bias = _bias_2d(model, block, x.shape[1])
    elif spec.positions == "disentangled":
        encoder = resolve(model, st.bias_source)
        kwargs.update(relative_pos=encoder.get_rel_pos(x), rel_embeddings=encoder.get_rel_embedding())
    kwargs[spec.mask_arg] = _mask(spec, allowed, x, n_k, bias)
    seen: dict[str, torch.Tensor] = {}
    out_proj = resolve(attn, spec.out)
    handles = [
        out_proj.register_forward_pre_hook(lambda _m, args: seen.setdefault("heads", args[0])),
        out_proj.register_forward_hook(lambda _m, _a, out: seen.setdefault("out", out)),
    ]
    try:
        returned = attn(x, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    weights = returned[-1] if isinstance(returned, tuple) else None
    if weights is None or weights.dim() != 4 or "heads" not in seen:
        raise RuntimeError(
            f"{type(attn).__name__} returned no attention weights (load the model with attn_implementation='eager')."
        )
    return Ran(weights, seen["heads"], seen["out"])


def cross_attention_input(
    model: nn.Module,
    adapter: Adapter,
    layer: int,
    hidden: torch.Tensor,
    stack: str | None = None,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """What a decoder block's cross-attention reads, (b, n, D), from the block input `hidden`: the block's own
    self-attention sub-layer is run here, then h + its output goes through the norm in front of cross-attention
    (pre-norm) or the post-norm after self-attention."""
    st = stack_of(adapter, stack)
    norm = st.cross_input_norm or st.self_output_norm
    if st.cross_attention is None or not norm:
        raise UnknownArchitecture(
            f"{adapter.family}: the table does not say what cross-attention reads in stack '{stack or adapter.main}'"
        )
    block = blocks(model, adapter, stack)[layer]
    ran = run_attention(
        model, adapter, layer, attention_input(adapter, block, hidden, stack), stack=stack, allowed=allowed
    )
    return resolve(block, norm)(hidden + ran.out)


def stack_output(
    model: nn.Module, adapter: Adapter, last_hidden: torch.Tensor, stack: str | None = None
) -> torch.Tensor:
    """The stack's output (what a decoder's cross-attention reads) from its stored last hidden state."""
    st = stack_of(adapter, stack)
    return last_hidden if st.last_hidden_normed else _run(model, st.final, last_hidden)


def pair_logits(
    model: nn.Module, adapter: Adapter, image_embeds: torch.Tensor, text_embeds: torch.Tensor
) -> torch.Tensor:
    """Image-text logits (images, texts) from projected embeddings: cosine x exp(logit_scale) (+ logit_bias)."""
    head = next((h for h in adapter.head.values() if h.logit_scale), None)
    if head is None:
        raise UnknownArchitecture(f"{adapter.family} has no image-text head")
    image = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    text = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
    logits = image @ text.T * resolve(model, head.logit_scale).exp()
    return logits + resolve(model, head.logit_bias) if head.logit_bias else logits


_STEP_TEXT = {"relu": "ReLU", "final_logits_bias": "+ final_logits_bias", "t5_scale": "x d_model^-0.5"}
_POOL_TEXT = {
    "first": "on token 0",
    "last": "on the last token",
    "eos": "on the end-of-text token",
    "mean_patches": "on the mean of the patch tokens",
    "all": "",
}


def describe_head(model: nn.Module, adapter: Adapter, stack: str | None = None) -> str:
    """The final part of a stack as it runs, e.g. "ln_f -> lm_head", "pre_classifier -> ReLU -> classifier on
    token 0", for captions (final norms the model does not have, or that are identities, left out)."""
    name = stack or adapter.main
    st, head = stack_of(adapter, name), adapter.head.get(name)
    if head is None:
        raise UnknownArchitecture(
            f"{adapter.family}: the table has no head of {type(model).__name__} on stack '{name}'"
        )

    def shown(path: str) -> str:
        if path.startswith("@"):
            return _STEP_TEXT.get(path[1:], path[1:])
        module = resolve(model, path)
        return "" if module is None or isinstance(module, nn.Identity) else path.rsplit(".", 1)[-1]

    final = [t for t in map(shown, st.final) if t]
    steps = [t for t in map(shown, head.steps) if t]
    text = " -> ".join(final + steps) + (f" {_POOL_TEXT[head.pool]}" if _POOL_TEXT[head.pool] else "")
    if head.distill:
        text += f", averaged with {head.distill.rsplit('.', 1)[-1]} on token 1"
    return text


# Named head steps ("@name" in Head.steps): (model, x) -> x.
STEPS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "relu": lambda model, x: torch.relu(x),
    "final_logits_bias": lambda model, x: x + model.final_logits_bias,  # Marian, BART
    "t5_scale": lambda model, x: x * model.config.d_model**-0.5 if model.config.scale_decoder_outputs else x,
}


def _pool(model: nn.Module, head: Head, h: torch.Tensor, input_ids: torch.Tensor | None) -> torch.Tensor:
    if head.pool == "all":
        return h
    if head.pool == "first":
        return h[:, 0]
    if head.pool == "last":
        return h[:, -1]
    if head.pool == "mean_patches":
        return h[:, 1:].mean(1)
    if input_ids is None:  # "eos": CLIP's rule (eos id 2: the highest id, else the first eos)
        raise ValueError(f"{type(model).__name__}: pooling at the end-of-text token needs input_ids")
    eos = resolve(model, head.eos).eos_token_id
    where = input_ids.argmax(-1) if eos == 2 else (input_ids == eos).int().argmax(-1)
    return h[torch.arange(h.shape[0], device=h.device), where]


def _run(model: nn.Module, steps: tuple[str, ...], h: torch.Tensor) -> torch.Tensor:
    for step in steps:
        if step.startswith("@"):
            h = STEPS[step[1:]](model, h)
        elif (module := resolve(model, step)) is not None:
            h = module(h)
    return h


def final_logits(
    model: nn.Module,
    adapter: Adapter,
    hidden: torch.Tensor,
    is_last: bool = False,
    stack: str | None = None,
    input_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits read from a stack's hidden state `hidden` (b, n, D), as the model reads its last one: the stack's
    final norm (skipped when is_last and the stored last state already has it), the head's pooling, its steps.

    Returns (b, n, vocab) for "unembed", (b, n, 2) start/end for "span", (b, classes) for classifiers and
    (b, projection) unnormalised embeddings for "projection". For a lens, pass is_last=True only for
    hidden_states[-1]."""
    name = stack or adapter.main
    st, head = stack_of(adapter, name), adapter.head.get(name)
    if head is None:
        raise UnknownArchitecture(
            f"{adapter.family}: the table has no head of {type(model).__name__} on stack "
            f"'{name}' (heads for: {', '.join(c for c, _ in TABLE[adapter.family].heads) or 'none'})"
        )
    if not (is_last and st.last_hidden_normed):
        hidden = _run(model, st.final, hidden)
    logits = _run(model, head.steps, _pool(model, head, hidden, input_ids))
    if head.distill:
        logits = (logits + resolve(model, head.distill)(hidden[:, 1])) / 2
    return logits


def pair_scores(adapter: Adapter, logits_per_image: torch.Tensor) -> torch.Tensor:
    """Image-text probabilities from logits_per_image (images, texts): softmax over the texts (CLIP) or an
    independent sigmoid per pair (SigLIP)."""
    kinds = {h.contrast for h in adapter.head.values()} - {""}
    if kinds == {"sigmoid"}:
        return torch.sigmoid(logits_per_image)
    if kinds == {"softmax"}:
        return logits_per_image.softmax(-1)
    raise UnknownArchitecture(f"{adapter.family} has no image-text head")
