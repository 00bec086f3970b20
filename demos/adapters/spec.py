"""The types of the architecture table: where a family keeps its parts and how its attention works.

Paths are dotted attribute paths; integer parts index into a ModuleList ("layer.0.SelfAttention").
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Positions = Literal[
    "learned",  # absolute position embeddings added to the input (nothing inside attention)
    "sinusoidal",  # fixed absolute positions added to the input
    "rotary",  # q and k rotated by the model's rotary embedding module
    "relative_bias",  # T5: a learned bias per (bucketed) distance, computed by one attention's compute_bias
    "relative_bias_2d",  # BEiT: a learned bias per 2-D patch offset (per block and/or shared)
    "disentangled",  # DeBERTa: content-to-position and position-to-content scores added to q.k
    "none",  # nothing (cross-attention, or a model without positions)
]


class UnknownArchitecture(ValueError):
    """The model's family (config.model_type) or one of its parts is not in the table."""


@dataclass(frozen=True)
class AttentionSpec:
    """One attention module of a block. Paths below `module` are relative to the attention module.

    `out` is the output projection: its input is the per-head outputs concatenated, (b, n, H*d), so a
    forward pre-hook on it sees (and can edit) every head's output.
    """

    module: str  # path inside a block: "attn", "self_attn", "attention", "layer.0.SelfAttention"
    out: str  # "c_proj", "o_proj", "out_proj", "output.dense", "o"
    q: str = ""
    k: str = ""
    v: str = ""
    fused: str = ""  # a fused q/k/v projection ("" = separate q, k, v)
    fused_layout: Literal["", "gpt2_conv1d", "neox_interleaved"] = ""  # q|k|v blocks, or [q,k,v] per head
    head_dim: str = "head_dim"  # attribute (path) of the module giving d, the size of one head
    scale: str = "scaling"  # attribute (path) giving the factor on q.k; "disentangled" = 1/sqrt(d * (1 + #rel kinds))
    positions: Positions = "none"
    rotary_fraction: float = 1.0  # part of each head rotated (GPT-NeoX/Pythia: rotary_pct, e.g. 0.25)
    causal: bool = False
    kv_input: str = ""  # cross-attention: the forward keyword that carries the encoder states
    # How the module is called on its own (demos.adapters.ops.run_attention): the keyword of the mask, whether the
    # mask is additive (0 / -inf, transformers' eager attention) or boolean (True = may attend: DeBERTa), and
    # fixed extra keywords (DeBERTa returns its weights only with output_attentions=True).
    mask_arg: str = "attention_mask"
    mask_kind: Literal["additive", "bool"] = "additive"
    call: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Stack:
    """A stack of blocks (the model, or its encoder/decoder, or a text/vision tower).

    `layers`, `embeddings`, `final`, `rotary`, `bias_source` are paths from the model root (the table
    writes them from the base model; adapter_for adds the prefix such as "transformer.").
    `input_norm` / `cross_input_norm` are paths inside a block.
    """

    layers: str  # the ModuleList of blocks
    attention: AttentionSpec
    embeddings: str  # the token (or patch / audio frame) embedding module
    outputs: str = ""
    input_norm: str = ""
    final: tuple[
        str, ...
    ] = ()  # what runs after the last block (final norm, OPT's project_out); None modules are skipped
    last_hidden_normed: bool = False  # hidden_states[-1] already went through `final`
    cross_attention: AttentionSpec | None = None
    cross_input_norm: str = ""
    self_output_norm: str = ""  # post-norm decoder: the norm on h + self-attention, which cross-attention reads
    parallel_residual: bool = False  # GPT-NeoX: attention and MLP both read the block input
    rotary: str = ""  # the rotary embedding module: rotary(x, position_ids) -> (cos, sin)
    bias_source: str = ""  # T5: the attention owning compute_bias; DeBERTa: the encoder with rel embeddings
    mlp: str = ""  # path inside a block of the module whose output is the MLP's contribution ("" = not described)

    @property
    def final_norm(self) -> str:
        """Path of the final norm ("" when the stack has none)."""
        return self.final[0] if self.final else ""


@dataclass(frozen=True)
class Head:
    """How logits (or embeddings) are read from a stack's final state.

    Order: `final` of the stack, then `pool`, then each of `steps`: a module path from the model root
    or an "@name" step of demos.adapters.ops.STEPS. Steps resolving to None are skipped.
    """

    kind: Literal["unembed", "sequence_classifier", "span", "image_classifier", "projection"]
    steps: tuple[str, ...]
    pool: Literal["all", "first", "last", "eos", "mean_patches"] = "all"
    stack: str = "main"
    distill: str = ""  # DeiT with teacher: a second classifier on token 1, averaged with the first
    eos: str = ""  # pool "eos": the module whose .eos_token_id marks the pooled token (CLIP text)
    contrast: Literal["", "softmax", "sigmoid"] = ""  # image-text scores: softmax over texts (CLIP) or sigmoid (SigLIP)
    logit_scale: str = ""  # image-text logits: cosine x exp(model.<logit_scale>) ...
    logit_bias: str = ""  # ... + model.<logit_bias> (SigLIP)


@dataclass(frozen=True)
class Adapter:
    """One family of the table, or (from adapter_for) one model: its stacks and its head(s)."""

    family: str
    stacks: Mapping[str, Stack]
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    placement: Literal["pre", "post"] = "pre"
    heads: tuple[tuple[str, Head], ...] = ()  # table: (model class name, head) pairs
    notes: str = ""  # what an explainer cannot reproduce, or family quirks
    head: Mapping[str, Head] = field(default_factory=dict)  # adapter_for: stack name -> head of this model class

    @property
    def main(self) -> str:
        """The default stack: the one feeding a head (the decoder of a seq2seq model), else the first."""
        for name in self.stacks:
            if name in self.head:
                return name
        return next(iter(self.stacks))
