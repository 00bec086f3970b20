"""Explanation maths shared by all tasks: attention stacking, rollout, Captum attributions.

Everything returns numpy arrays ready for `core.results`; the viz layer never sees torch.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

ProgressFn = Callable[[float, str], None]

METHODS = {
    "integrated_gradients": "Integrated gradients",
    "gradient_x_input": "Gradient × input",
}


def stack_attentions(attentions: Sequence[torch.Tensor], batch_index: int = 0) -> np.ndarray:
    """Tuple of per-layer (batch, heads, q, k) tensors -> (layers, heads, q, k) float32 array."""
    if not attentions:
        raise RuntimeError("The model returned no attention weights (load it with attn_implementation='eager').")
    return torch.stack([a[batch_index] for a in attentions]).float().cpu().numpy()


def stack_hidden(hidden_states: Sequence[torch.Tensor], batch_index: int = 0) -> np.ndarray:
    """Tuple of (batch, n, d) hidden states (embeddings + every layer) -> (layers+1, n, d)."""
    return torch.stack([h[batch_index] for h in hidden_states]).float().cpu().numpy()


def attention_rollout(weights: np.ndarray, residual: float = 0.5) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020).

    weights: (layers, heads, n, n). Heads are averaged, the residual connection is added as
    `residual * I + (1 - residual) * A`, rows renormalised, and layers multiplied bottom-up.
    Returns (n, n): how much each output position draws on each input position; rows sum to 1.
    """
    n = weights.shape[-1]
    result = np.eye(n, dtype=np.float64)
    for layer in weights.astype(np.float64):
        a = residual * np.eye(n) + (1.0 - residual) * layer.mean(axis=0)
        a /= a.sum(axis=-1, keepdims=True)
        result = a @ result
    return result.astype(np.float32)


def with_progress(forward_fn: Callable[..., torch.Tensor], total: int, progress: ProgressFn | None):
    """Wrap `forward_fn` so each batch Captum runs advances `progress` (fraction, message)."""
    calls = {"n": 0}

    def wrapped(*args: Any) -> torch.Tensor:
        calls["n"] += 1
        if progress is not None:
            progress(min(calls["n"] / total, 1.0), f"attribution batch {min(calls['n'], total)}/{total}")
        return forward_fn(*args)

    return wrapped


TOKENS_PER_BATCH = 4096  # tokens in one Captum forward/backward batch (bounds memory on long inputs)


def steps_per_batch(n_tokens: int, steps: int, budget: int = TOKENS_PER_BATCH) -> int:
    """Integration steps per forward/backward batch: every step in one batch for short inputs
    (fastest), fewer for long ones so a batch holds at most `budget` tokens."""
    return max(1, min(int(steps), budget // max(1, int(n_tokens))))


def endpoint_values(score_fn: Callable[..., torch.Tensor], x: torch.Tensor, base: torch.Tensor, extra: tuple = ()) -> tuple[float, float]:
    """f(x) and f(baseline) from ONE batched forward pass (for the completeness check).

    x, base: (1, ...) inputs of the same shape; tensors in `extra` with batch 1 are repeated.
    """
    args = tuple(a.expand(2, *a.shape[1:]) if isinstance(a, torch.Tensor) and a.shape[:1] == (1,) else a for a in extra)
    with torch.inference_mode():
        values = score_fn(torch.cat([x, base]), *args)
    return float(values[0]), float(values[1])


def attribute_layer(
    forward_fn: Callable[..., torch.Tensor],
    layer: torch.nn.Module,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    additional_forward_args: tuple = (),
    method: str = "integrated_gradients",
    steps: int = 32,
    internal_batch_size: int = 16,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, float | None]:
    """Attribute the scalar `forward_fn(inputs, *additional_forward_args)` (shape (1,)) to the
    output of `layer` (e.g. the embedding layer), summed over the hidden dimension.

    inputs / baselines: (1, n) token ids. Returns scores (n,) and, for integrated gradients,
    the convergence delta: sum(scores) - (f(inputs) - f(baselines)).
    """
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

    if method == "integrated_gradients":
        batches = math.ceil(steps / internal_batch_size) + 2  # + f(x), f(baseline) for the delta
        algo = LayerIntegratedGradients(with_progress(forward_fn, batches, progress), layer)
        attrs, delta = algo.attribute(
            inputs,
            baselines=baselines,
            additional_forward_args=additional_forward_args,
            n_steps=steps,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )
        delta_value: float | None = float(delta.abs().max())
    elif method == "gradient_x_input":
        algo = LayerGradientXActivation(with_progress(forward_fn, 1, progress), layer)
        attrs = algo.attribute(inputs, additional_forward_args=additional_forward_args)
        delta_value = None
    else:
        raise ValueError(f"Unknown attribution method {method!r}; choose one of {sorted(METHODS)}.")
    scores = attrs.sum(dim=-1)[0].detach().float().cpu().numpy()
    return scores, delta_value


def softmax_np(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)
