"""Architecture adapters as data: one table keyed by transformers `model_type` saying where each family keeps
its blocks, attention projections, norms and head, and how its attention uses positions and scale.

Explainers call adapter_for(model) and the helpers below; they never test hasattr or model_type themselves.
"""
from .ops import (
    STEPS,
    Parts,
    adapter_for,
    apply_rotary,
    attention_input,
    attention_module,
    attention_parts,
    blocks,
    final_logits,
    head_counts,
    out_projection,
    pair_scores,
    position_bias,
    qkv,
    resolve,
    scale,
    stack_of,
    stack_outputs,
)
from .spec import Adapter, AttentionSpec, Head, Stack, UnknownArchitecture
from .table import TABLE, UNSUPPORTED

__all__ = [
    "STEPS", "TABLE", "UNSUPPORTED", "Adapter", "AttentionSpec", "Head", "Parts", "Stack", "UnknownArchitecture",
    "adapter_for", "apply_rotary", "attention_input", "attention_module", "attention_parts", "blocks", "final_logits",
    "head_counts", "out_projection", "pair_scores", "position_bias", "qkv", "resolve", "scale", "stack_of",
    "stack_outputs",
]
