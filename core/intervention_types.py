"""Result types of the "which part matters, and why this answer" explainers: head knockouts, the
head-importance map, contrastive attribution, the generation branch explorer and the
faithfulness comparison. Plain numpy arrays and strings (no torch), so every layer may read them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.results import Attribution


@dataclass
class Tower:
    """One stack of attention modules that can be knocked out: name ("layers", "encoder",
    "decoder self-attention", "decoder cross-attention", "vision", "text"), its layer and head counts."""

    name: str
    n_layers: int
    n_heads: int


@dataclass
class AblationResult:
    """The answer before and after knocking out heads, side by side.

    knocked_out: what was removed, e.g. ["layers L2 H3", "encoder L0 (all heads)"];
    labels: (k,) outcomes shown (the top ones before and after, and the explained answer);
    before / after: (k,) their probability (or `value_name`) without / with the knockout;
    score_before / score_after: the explained answer's; top_before / top_after: the most likely outcome.
    """

    task: str
    answer: str
    value_name: str
    knocked_out: list[str]
    labels: list[str]
    before: np.ndarray
    after: np.ndarray
    score_before: float
    score_after: float
    top_before: str
    top_after: str

    @property
    def change(self) -> float:
        return self.score_after - self.score_before


@dataclass
class HeadImportance:
    """Each head knocked out alone: change of the answer's score (after - before).

    towers: the stacks, in model order; maps: one (layers, heads) array per tower;
    score: the answer's score with nothing knocked out; method: "knockout" (every knockout run) or
    "gradient" (their first-order estimate from one gradient).
    """

    task: str
    answer: str
    value_name: str
    towers: list[Tower]
    maps: list[np.ndarray]
    score: float
    method: str = "knockout"


@dataclass
class ContrastResult:
    """Why A and not B: attribution of the score P(A) - P(B) to each input unit.

    attribution.scores: (n,) per unit (tokens, patches or audio frames), with the convergence delta and
    f(input) / f(baseline) for the completeness check; p_a / p_b: the two probabilities on the input.
    """

    task: str
    a: str
    b: str
    p_a: float
    p_b: float
    attribution: Attribution


@dataclass
class Branch:
    """A generation forced onto another token at one step, continued greedily.

    original / branch: (steps,) generated pieces of each; diverge_at: first step where they differ
    (the forced step); rejoin_at: first step from which both continue with the same pieces to the end
    (None when they never do).
    """

    prompt: str
    step: int
    forced: str
    original: list[str]
    branch: list[str]
    diverge_at: int
    rejoin_at: int | None

    @property
    def original_text(self) -> str:
        return "".join(self.original)

    @property
    def branch_text(self) -> str:
        return "".join(self.branch)


@dataclass
class Faithfulness:
    """Several explanations of one answer side by side on the same units, and how faithful they are.

    units: (n,) labels of the units that may be removed (special tokens excluded);
    names: (E,) explanations; scores: (E, n) each explanation's score per unit;
    spearman: (E, E) rank agreement; ks: (K,) numbers of units removed (0 ... n);
    deletion: (E + 1, K) the answer's score after removing the top-k units of each explanation,
    last row: removing random units (fixed seed); original / baseline: score with none / all removed.
    skipped: explanation name -> why it does not apply to this task.
    """

    task: str
    answer: str
    value_name: str
    units: list[str]
    names: list[str]
    scores: np.ndarray
    spearman: np.ndarray
    ks: np.ndarray
    deletion: np.ndarray
    original: float
    baseline: float
    seed: int
    replacement: str
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def curve_names(self) -> list[str]:
        return [*self.names, f"random (seed {self.seed})"]

    def area(self) -> np.ndarray:
        """(E + 1,) mean score over the deletion curve: lower = the explanation found what matters."""
        return self.deletion.mean(axis=1)
