"""Result types shared by every task: plain numpy arrays and strings, no torch, no gradio.

A demo computes one of these once; the viz layer renders it as many times as the user asks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Attention arrays larger than this (float32 bytes) are stored as float16: the views show 4 digits
# and float16 keeps 3.3 significant ones, so a 512-token DistilBERT result holds 37.7 MB of
# attention instead of 75.5 MB. Smaller arrays (a short sentence: up to ~100 tokens at 6 x 12
# heads) cost little and stay float32, exact to the model. Hidden states always stay float32:
# the lens and the attention-step view recompute from them and must reproduce the model's answer.
COMPACT_FROM_BYTES = 1 << 22  # 4 MiB


def is_large(numel: int) -> bool:
    """Whether `numel` float32 weights are kept in float16 (more than COMPACT_FROM_BYTES)."""
    return numel * 4 > COMPACT_FROM_BYTES


def compact(array: np.ndarray) -> np.ndarray:
    """float16 copy of a large float array (see COMPACT_FROM_BYTES), else the array as is."""
    array = np.asarray(array)
    if array.dtype.kind == "f" and array.itemsize > 2 and is_large(array.size):
        return array.astype(np.float16)
    return array


@dataclass
class AttentionMaps:
    """Attention weights of one attention kind.

    weights: (layers, heads, query, key), each row a distribution over keys; float32, or float16
        when larger than COMPACT_FROM_BYTES (read `.astype(np.float32)` before computing with it).
    query_tokens / key_tokens: labels of the rows / columns (equal for self-attention).
    kind: "self", "encoder self", "decoder self", "cross", ...
    """

    weights: np.ndarray
    query_tokens: list[str]
    key_tokens: list[str]
    kind: str = "self"

    def __post_init__(self) -> None:
        self.weights = compact(self.weights)

    @property
    def n_layers(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.weights.shape[1])


@dataclass
class Attribution:
    """How much each input unit (token or pixel) pushed the model toward `target`.

    scores: (n,) for tokens, or (H, W) for pixels; sign = toward (+) or away from (-) the target.
    delta: Captum's convergence delta (completeness error: sum(scores) - (f(x) - f(baseline))).
    """

    tokens: list[str]
    scores: np.ndarray
    target: str
    method: str
    steps: int
    delta: float | None = None
    output_value: float | None = None  # f(input) for the explained output
    baseline_value: float | None = None  # f(baseline)
    # How it was computed, not what: left out of equality (the same attribution, timed twice, is equal).
    seconds: float | None = field(default=None, compare=False)  # what computing it cost (its pass, if shared)
    together: int = field(default=1, compare=False)  # requests computed in that one pass (gathered students)


@dataclass
class Embeddings:
    """Vectors to project in 2-D.

    vectors: (layers+1, n, d) hidden states per layer (index 0 = embedding layer) or (1, n, d).
    labels: one label per point; groups: one group name per point (colour), e.g. "source".
    """

    vectors: np.ndarray
    labels: list[str]
    groups: list[str] = field(default_factory=list)

    def layer(self, index: int) -> np.ndarray:
        """(n, d) vectors of one layer; negative indices count from the last layer."""
        return self.vectors[index]


@dataclass
class TokenChoices:
    """Top-k candidates at each generated step.

    tokens: (steps, k) candidate strings; probs: (steps, k) their probabilities;
    chosen: (steps,) the token actually emitted; chosen_prob: (steps,) its probability.
    """

    tokens: list[list[str]]
    probs: np.ndarray
    chosen: list[str]
    chosen_prob: np.ndarray


@dataclass
class ModelInfo:
    """Which model answered: the id the user chose, what was loaded (a hub id, a local folder or a
    cached snapshot), whether its weights are trained, and where it ran."""

    task: str
    model_id: str
    source: str
    pretrained: bool
    device: str
    dtype: str
