"""Which explanation is faithful? On one input: attention (last layer, heads averaged, the answer's
query row), attention rollout and the attribution methods side by side on the same units, their
rank agreement (Spearman), and a deletion check: remove the top-k units by each explanation
(replaced as in `Subject.replacement`: the padding token, the image's mean patch, silence) and
watch the answer's score fall, against removing random units (fixed seed).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from core import explainers as specs
from core.intervention_types import Faithfulness
from demos.explain import subjects, tasks
from demos.explain.attribution import METHODS, ProgressFn
from demos.explain.contrast import attribute_units
from demos.explain.protocol import Explainer
from demos.runtime import loading

ROWS_PER_PASS = 16  # deletion variants scored in one forward pass


def spearman(scores: np.ndarray) -> np.ndarray:
    """(E, n) -> (E, E) Spearman rank correlation (ties get their mean rank; NaN for a constant row)."""
    from scipy.stats import rankdata

    ranks = np.stack([rankdata(row) for row in scores]).astype(np.float64)
    ranks -= ranks.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(ranks, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ranks @ ranks.T) / np.outer(norm, norm)


def deletion_ks(n: int, points: int) -> np.ndarray:
    """(K,) numbers of units removed: 0, ..., n in at most `points` + 1 even steps."""
    return np.unique(np.linspace(0, n, min(points, n) + 1).round().astype(int))


def deletion_scores(s: subjects.Subject, orders: Sequence[np.ndarray], ks: np.ndarray) -> np.ndarray:
    """(len(orders), K): the score after removing the first ks[j] units of each order (unit indices).
    Each distinct set of removed units runs once: every order removes nothing at k = 0 and everything at
    k = n, and orders that agree on their first units agree there too (Whisper, 4 orders x 6 points: 24 -> 18)."""
    n = len(s.units)
    keep = np.ones((len(orders), len(ks), n), dtype=np.float32)
    for i, order in enumerate(orders):
        for j, k in enumerate(ks):
            keep[i, j, order[:k]] = 0.0
    distinct, which = np.unique(keep.reshape(-1, n), axis=0, return_inverse=True)
    flat = torch.from_numpy(distinct).to(s.replacement.device)
    values = []
    with torch.no_grad():
        for start in range(0, flat.shape[0], ROWS_PER_PASS):
            values.append(s.score_units(s.mix(flat[start: start + ROWS_PER_PASS])).float().cpu())
    return torch.cat(values).numpy()[which.reshape(-1)].reshape(len(orders), len(ks))


def faithfulness(
    task: str,
    result: Any,
    target: Any = None,
    methods: Sequence[str] = tuple(METHODS),
    steps: int = 32,
    points: int = 10,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> Faithfulness:
    """Compare the explanations of `result`'s answer (see the module docstring)."""
    return loading.one_at_a_time(task)(_faithfulness)(task, result, target, tuple(methods), int(steps), int(points),
                                                      int(seed), progress)


def _faithfulness(task, result, target, methods, steps, points, seed, progress) -> Faithfulness:
    s = tasks.subject(task, result, target)
    names, rows, skipped = [], [], dict(s.not_applicable)
    for name, fn in (("attention (last layer)", s.attention), ("attention rollout", s.rollout)):
        if fn is not None:
            names.append(name)
            rows.append(np.asarray(fn(), dtype=np.float64))
    for i, method in enumerate(methods):
        def part(frac: float, msg: str, i: int = i, method: str = method) -> None:
            if progress is not None:
                progress((i + frac) / (len(methods) + 1), f"{METHODS[method].label}: {msg}")

        attr = attribute_units(s, None, method, steps, part)
        names.append(METHODS[method].label)
        rows.append(attr.scores.astype(np.float64))
    units = np.flatnonzero(s.units.deletable)
    scores = np.stack([r[units] for r in rows])  # (E, n) on removable units only
    orders = [units[np.argsort(-row, kind="stable")] for row in scores]
    orders.append(np.random.default_rng(seed).permutation(units))
    ks = deletion_ks(len(units), points)
    with torch.no_grad(), loading.fused_attention(s.model):  # the scores never read attention weights
        deletion = deletion_scores(s, orders, ks)
        if progress is not None:
            progress(1.0, "deletion check done")
        original = float(s.score(s.run(s.batch(1)))[0])
        baseline = float(s.score_units(s.baseline)[0])
    return Faithfulness(
        task=task, answer=s.answer_label, value_name=s.value_name, units=[s.units.labels[i] for i in units],
        names=names, scores=scores.astype(np.float32), spearman=spearman(scores), ks=ks, deletion=deletion,
        original=original, baseline=baseline, seed=seed, replacement=s.units.replacement_name, skipped=skipped,
    )


def _run(task: str, result: Any, target: Any = None, steps: int = 32, points: int = 10, seed: int = 0,
         progress: ProgressFn | None = None) -> Faithfulness:
    return faithfulness(task, result, target, steps=steps, points=points, seed=seed, progress=progress)


FAITHFULNESS = Explainer(specs.FAITHFULNESS, _run)
