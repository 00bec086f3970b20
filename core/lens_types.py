"""Result types of the layer lens and of attention step by step: plain numpy arrays and strings.

Computed by `demos.explain.lens` (torch), rendered by viz/ and ui/ (no torch). Arrays are float32 unless
said otherwise. "Layer" index 0 is the embedding output (the input of the first block); index L
is the last block's output, which is what the model's own head reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# How a row of the lens is read and how far to trust it: said once, in the result's caption and in the guide.
LENS_READING = (
    "Each row sends that layer's hidden state through the model's own final part, as if the model stopped there. "
    "Only the last layer was trained to be read this way: early layers were not trained for the head, "
    "so their rows are a rough view of what the state already encodes, not what the model 'thinks' there. "
    "The last row is exactly the model's own output."
)
# the internals on a line of their own
LENS_CAPTION = LENS_READING + "\n\n*What runs on each row, in the model's own names:* `{head}`"
LENS_COLUMNS = 60  # positions of a decoder's lens computed and shown at once (the view's window picks which)


@dataclass
class LensGrid:
    """Logit lens of a decoder: layers x positions.

    Column j reads the decoder input `positions[j]` and predicts `targets[j]` (the token the model
    actually chose next there; '' where there is none, e.g. after the last token).
    top_tokens: (L+1, n) top-1 token per cell; top_probs: (L+1, n) its probability.
    top5_tokens: (L+1, n, 5) and top5_probs: (L+1, n, 5): best five per cell, best first (hover).
    chosen_probs: (L+1, n) probability of `targets[j]` at every layer (NaN where no target): where
    the model commits. groups: (n,) e.g. "prompt" / "generated" per column. head: what was applied.
    The grid is a window of at most LENS_COLUMNS columns: column j is position `first + j` of the
    `total` positions the result has (the unembedding is what costs, so only the window is computed).
    """

    task: str
    model_id: str
    layer_labels: list[str]
    positions: list[str]
    targets: list[str]
    top_tokens: list[list[str]]
    top_probs: np.ndarray
    top5_tokens: list[list[list[str]]]
    top5_probs: np.ndarray
    chosen_probs: np.ndarray
    groups: list[str]
    head: str
    caption: str
    first: int = 0
    total: int = -1  # -1: the window is the whole sequence

    def __post_init__(self) -> None:
        if self.total < 0:
            self.total = self.first + len(self.positions)

    @property
    def n_layers(self) -> int:
        """Rows (embeddings + every block)."""
        return len(self.layer_labels)

    def commit_layer(self, column: int) -> int | None:
        """First layer from which the chosen token stays the top-1 to the end (None if never/no target)."""
        if not self.targets[column]:
            return None
        tops = [self.top_tokens[layer][column] == self.targets[column] for layer in range(self.n_layers)]
        first = None
        for layer in range(self.n_layers - 1, -1, -1):
            if not tops[layer]:
                break
            first = layer
        return first


@dataclass
class Span:
    """An extractive-QA answer span: context text, token indices [start, end], P(start) * P(end)."""

    text: str
    start: int
    end: int
    prob: float


@dataclass
class HeadLens:
    """The task's own head applied to every layer of an encoder.

    top_labels: (L+1, k) the head's best k outputs per layer (class names, CLIP texts, or QA span
    texts with k = 1); top_probs: (L+1, k). final_label: the model's actual output (top-1 of the
    last layer); final_probs: (L+1,) its probability at every layer.
    class_probs: (L+1, C) every class per layer when the classes are few (sentiment, CLIP texts),
    with their names in `classes`; None otherwise. spans: per layer (QA only), else [].
    """

    task: str
    model_id: str
    layer_labels: list[str]
    head: str
    top_labels: list[list[str]]
    top_probs: np.ndarray
    final_label: str
    final_probs: np.ndarray
    caption: str
    classes: list[str] = field(default_factory=list)
    class_probs: np.ndarray | None = None
    spans: list[Span] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return len(self.layer_labels)


ATTENTION_FORMULA = "Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + mask) V"


@dataclass
class AttentionSteps:
    """One attention head, one query, every step of softmax(q K^T / sqrt(d_k) (+ bias) + mask) V.

    tokens: (n,) key labels; query_token: the query's label. q: (d_k,); K, V: (n, d_k) this head's
    slices of the projections of the real layer input (`source` says where it came from).
    scores: (n,) K q; scale: the factor the model multiplies by (1/sqrt(d_k), or as the model sets
    it); scaled: (n,) scores * scale; mask: (n,) bool, True where the query may attend (None when
    nothing is masked); softmax: (n,) the row computed here from `scaled` and `mask`;
    model_row: (n,) the attention row the model's own attention module returned;
    output: (d_k,) softmax @ V; model_output: (d_k,) this head's slice of the model's attention
    output before the output projection. Step values are float64 computed from the model's
    float32 projections; model values are the model's float32 numbers.
    kind: 'self' | 'causal self' | 'cross'; block: e.g. "encoder layer 2", "vision tower layer 1".

    What the model's attention does beyond the plain formula (from the architecture table):
    bias: (n,) the position term it adds to the scaled scores (T5's relative bias, BEiT's 2-D bias,
    DeBERTa's content-to-position + position-to-content terms), None when it adds none; the softmax
    is of `logits` = scaled + bias, masked. positions: how the model knows positions ("learned",
    "rotary", "relative_bias", ...). With rotary positions q and K are after the rotation and
    q_before_rotary (d_k,) / K_before_rotary (n, d_k) are the plain projections. kv_heads: the number
    of key/value heads (fewer than the query heads under grouped-query attention); shares_with: the
    other query heads reading the same keys/values. notes: one sentence per such feature (also
    appended to the caption); formula: the model's own formula.
    """

    task: str
    model_id: str
    kind: str
    block: str
    layer: int
    head: int
    query: int
    query_token: str
    tokens: list[str]
    q: np.ndarray
    K: np.ndarray
    V: np.ndarray
    scores: np.ndarray
    scale: float
    scaled: np.ndarray
    mask: np.ndarray | None
    softmax: np.ndarray
    model_row: np.ndarray
    output: np.ndarray
    model_output: np.ndarray
    source: str
    formula: str = ATTENTION_FORMULA
    caption: str = ""
    bias: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    positions: str = ""
    kv_heads: int | None = None
    shares_with: list[int] = field(default_factory=list)
    q_before_rotary: np.ndarray | None = None
    K_before_rotary: np.ndarray | None = None

    @property
    def d_k(self) -> int:
        return int(self.q.shape[0])

    @property
    def logits(self) -> np.ndarray:
        """(n,) what the softmax reads before the mask: scaled scores plus the position bias (if any)."""
        return self.scaled if self.bias is None else self.scaled + self.bias

    def rows(self, top: int | None = None) -> list[list]:
        """Table rows per key: token, score, scaled, masked?, softmax, model row (most attended first
        when `top` is given, then cut to `top` rows)."""
        order = np.argsort(-self.softmax, kind="stable") if top else np.arange(len(self.tokens))
        out = []
        for i in order[:top] if top else order:
            allowed = True if self.mask is None else bool(self.mask[i])
            out.append([self.tokens[i], float(self.scores[i]), float(self.scaled[i]), not allowed,
                        float(self.softmax[i]), float(self.model_row[i])])
        return out
