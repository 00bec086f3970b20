"""Architecture adapters as data: one table keyed by transformers `model_type` saying where each family keeps
its blocks, attention projections, norms and head, and how its attention uses positions and scale.

Explainers call adapter_for(model) and the helpers below; they never test hasattr or model_type themselves.
"""
from .ops import (
    STEPS,
    STILL_WORKS,
    Parts,
    Ran,
    adapter_for,
    adapter_for_view,
    apply_rotary,
    attention_input,
    attention_module,
    attention_parts,
    blocks,
    causal_mask,
    cross_attention_input,
    describe_head,
    final_logits,
    head_counts,
    out_projection,
    pair_logits,
    pair_scores,
    position_bias,
    qkv,
    resolve,
    run_attention,
    scale,
    stack_of,
    stack_output,
    stack_outputs,
)
from .spec import Adapter, AttentionSpec, Head, Stack, UnknownArchitecture
from .table import TABLE, UNSUPPORTED

__all__ = [
    "STEPS", "STILL_WORKS", "TABLE", "UNSUPPORTED", "Adapter", "AttentionSpec", "Head", "Parts", "Ran", "Stack", "UnknownArchitecture",
    "adapter_for", "adapter_for_view", "apply_rotary", "attention_input", "attention_module", "attention_parts", "blocks", "causal_mask",
    "cross_attention_input", "describe_head", "final_logits", "head_counts", "out_projection", "pair_logits",
    "pair_scores", "position_bias", "qkv", "resolve", "run_attention", "scale", "stack_of", "stack_output",
    "stack_outputs",
]
