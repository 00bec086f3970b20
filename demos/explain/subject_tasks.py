"""Helpers shared by the tasks' Subject builders (see demos.explain.subjects): each task's compute module
says what its answer is, over which units, as `subject(result, target=None, contrast=None)`
(e.g. demos.generation.subject: P(token at a step | prefix), teacher forced over result.ids).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from demos.explain.attribution import attention_rollout
from demos.explain.subjects import (  # some re-exported for the builders
    Subject,
    embed_units,
    frame_units,
    patch_units,
    resolve_outcome,
    token_units,
    top_other,
)

__all__ = ["Subject", "attention_rollout", "class_answer", "embed_units", "finish", "frame_units", "last_logits_probs",
           "mean_patch", "patch_units", "resolve_outcome", "special_mask", "step_index", "step_subject", "token_units",
           "vocab_lookup"]


def special_mask(tok: Any, ids: list[int]) -> np.ndarray:
    """(n,) True where the id is not a special token (special tokens are never removed)."""
    specials = set(tok.all_special_ids)
    return np.array([i not in specials for i in ids], dtype=bool)


def _probs0(s: Subject) -> torch.Tensor:
    with torch.no_grad():
        return s.outcome_probs(s.run(s.batch(1)))[0]


def finish(s: Subject, contrast: Any, lookup, n: int, allow_contrast: bool = True) -> Subject:
    """Resolve the contrast outcome B (default: the most probable other outcome)."""
    if not allow_contrast:
        if contrast is not None:
            raise ValueError(f"'Why A and not B' does not apply to the {s.task} task.")
        return s
    if contrast is None:  # the most probable other outcome, computed when an explainer asks for B
        s.contrast_default = lambda: top_other(_probs0(s), s.answer)
        return s
    s.contrast = resolve_outcome(contrast, s.outcome_label, n, lookup)
    if s.contrast == s.answer:
        raise ValueError("A and B must be different outcomes.")
    return s


def vocab_lookup(tok: Any):
    """A token given as the tokenizer writes it ("Ġthe") or as text (" the", one token)."""
    def lookup(text: str) -> int | None:
        i = tok.convert_tokens_to_ids(text)
        if isinstance(i, int) and i != tok.unk_token_id:
            return i
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return ids[0] if len(ids) == 1 else None

    return lookup


def last_logits_probs(out: Any) -> torch.Tensor:
    """(b, vocab) next-token probabilities at the last position."""
    return torch.softmax(out.logits[:, -1].float(), dim=-1)


def step_index(target: Any, n: int) -> int:
    """The output step to explain (default 0), checked against the n steps."""
    step = 0 if target is None else int(target)
    if not 0 <= step < n:
        raise ValueError(f"Step {step} does not exist; choose 0 to {n - 1}.")
    return step


def step_subject(task: str, m: Any, tok: Any, step: int, answer: int, cross: np.ndarray, contrast: Any, reaches: str,
                 **given: Any) -> Subject:
    """An encoder-decoder's output step, teacher forced: P(token `answer` at `step`) over the
    vocabulary; attention: the last layer's cross-attention of that step (heads averaged), cross:
    (L, H, T, S); no rollout (`reaches`: how the answer reaches its input instead). `given`: the
    Subject's inputs, unit_key, units, replacement and run."""
    s = Subject(
        task=task,
        model=m.model,
        outcome_probs=last_logits_probs,
        outcome_label=lambda i: tok.convert_ids_to_tokens(i),
        answer=answer,
        attention=lambda: cross[-1].mean(0)[step],
        not_applicable={"attention rollout": "rollout multiplies self-attention through one stack; " + reaches},
        **given,
    )
    return finish(s, contrast, vocab_lookup(tok), m.model.config.vocab_size)


def class_answer(m: Any, result: Any, target: Any) -> tuple[int, dict]:
    """A classifier's (text or image) answer index (the predicted class or `target`) and label2id."""
    id2label = {int(k): v for k, v in m.model.config.id2label.items()}
    label2id = {v: k for k, v in id2label.items()}
    answer = (
        label2id[result.predicted]
        if target is None
        else resolve_outcome(target, id2label.get, len(id2label), label2id.get)
    )
    return answer, label2id


def mean_patch(pv: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """(1, 3, H, W): the image's average patch tiled over the grid (its mean colour elsewhere)."""
    rows, cols = grid
    out = pv.mean(dim=(2, 3), keepdim=True).expand_as(pv).clone()
    inner = pv[:, :, : rows * patch, : cols * patch].reshape(1, -1, rows, patch, cols, patch)
    out[:, :, : rows * patch, : cols * patch] = (
        inner.mean(dim=(2, 4), keepdim=True).expand_as(inner).reshape(1, -1, rows * patch, cols * patch)
    )
    return out
