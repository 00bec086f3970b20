"""WHAT is explained, per task: the shared protocol of interventions, contrastive attribution and
faithfulness (like Inseq's step functions, `STEP_SCORES_MAP`).

A `Subject` holds, for one result of one task: the loaded model, the batch-1 inputs of the
result's forward pass, which input carries the units being explained (token ids, input
embeddings, pixel values or input features), the units' labels, the distribution over outcomes
the answer is one of, and a NAMED score function (`SCORES`) turning the model's output into one
scalar per batch row. Explainers never know the task: they expand the inputs to a batch, swap the
units, run, and score.

    s = tasks.subject("sentiment", result, target="POSITIVE", contrast="NEGATIVE")   # a sentiment result
    out = s.run(s.batch(4, input_ids=ids))      # ids: (4, n)
    s.score(out, "contrast_prob_diff")          # (4,) P(POSITIVE) - P(NEGATIVE)

Each task's compute module builds its Subject, `demos.<task>.subject(result, target, contrast)`, with the
helpers at the end of this module; `demos.explain.tasks.subject(task, result, ...)` finds the builder.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core import registry
from demos.inputs.text import token_labels

ScoreFn = Callable[[torch.Tensor, int, "int | None"], torch.Tensor]


def _pick(probs: torch.Tensor, a: int, b: int | None) -> torch.Tensor:
    return probs[:, a]


def _contrast(probs: torch.Tensor, a: int, b: int | None) -> torch.Tensor:
    if b is None:
        raise ValueError("This score needs a contrast outcome B.")
    return probs[:, a] - probs[:, b]


# name -> fn(outcome probabilities (batch, K), answer index, contrast index) -> (batch,)
SCORES: dict[str, ScoreFn] = {
    "probability": _pick,  # P(answer)
    "contrast_prob_diff": _contrast,  # P(A) - P(B)
    "cosine_similarity": _pick,  # for subjects whose single outcome is a cosine similarity
}


@dataclass
class Units:
    """The input units explained. labels/deletable: (n,); `spread(keep)` maps per-unit weights
    (b, n) onto the unit tensor's shape (broadcastable to (b, ...)); `reduce(attr)` sums an
    attribution of the unit tensor (1, ...) into (n,) per-unit scores (None for token ids, whose
    attributions Captum takes at the embedding layer)."""

    kind: str  # "tokens" (ids), "embeds" (input embeddings), "patches" (pixels), "frames" (audio features)
    labels: list[str]
    deletable: np.ndarray
    spread: Callable[[torch.Tensor], torch.Tensor]
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    replacement_name: str = ""

    def __len__(self) -> int:
        return len(self.labels)


def token_units(labels: list[str], deletable: np.ndarray, replacement: str) -> Units:
    """Token ids (b, n): a unit is one position."""
    return Units("tokens", labels, deletable, lambda keep: keep, None, replacement)


def embed_units(labels: list[str], deletable: np.ndarray, replacement: str) -> Units:
    """Input embeddings (b, n, d): a unit is one position; scores sum over d."""
    return Units("embeds", labels, deletable, lambda keep: keep[:, :, None], lambda a: a[0].sum(-1), replacement)


def patch_units(labels: list[str], grid: tuple[int, int], patch: int, size: tuple[int, int]) -> Units:
    """Pixel values (b, 3, H, W): a unit is one patch of the (rows, cols) grid; pixels outside the
    grid (a remainder) are never removed. Scores sum over channels and the patch's pixels."""
    rows, cols = grid

    def spread(keep: torch.Tensor) -> torch.Tensor:
        w = keep.view(-1, 1, rows, cols).repeat_interleave(patch, 2).repeat_interleave(patch, 3)
        out = torch.ones(keep.shape[0], 1, *size, dtype=keep.dtype, device=keep.device)
        out[:, :, : rows * patch, : cols * patch] = w
        return out

    def reduce(attr: torch.Tensor) -> torch.Tensor:
        a = attr[0].sum(0)[: rows * patch, : cols * patch]
        return a.reshape(rows, patch, cols, patch).sum((1, 3)).reshape(-1)

    return Units("patches", labels, np.ones(rows * cols, dtype=bool), spread, reduce, "the mean patch of the image")


def frame_units(labels: list[str], ratio: int, total: int) -> Units:
    """Audio features (b, mel, F): unit i = encoder frame i = feature frames [i*ratio, (i+1)*ratio);
    frames past the audio (padding) are never removed."""
    n = len(labels)

    def spread(keep: torch.Tensor) -> torch.Tensor:
        w = torch.ones(keep.shape[0], 1, total, dtype=keep.dtype, device=keep.device)
        w[:, 0, : n * ratio] = keep.repeat_interleave(ratio, 1)
        return w

    def reduce(attr: torch.Tensor) -> torch.Tensor:
        return attr[0].sum(0)[: n * ratio].reshape(n, ratio).sum(1)

    return Units("frames", labels, np.ones(n, dtype=bool), spread, reduce, "silence")


@dataclass
class Subject:
    """WHAT is explained for one result of one task (see the module docstring).

    inputs: batch-1 keyword inputs of `run`; inputs[unit_key]: the unit tensor (1, ...).
    replacement: (1, ...) what a removed unit becomes (pad ids / mean patch / silence / pad embeddings).
    run(inputs of batch b) -> model output; outcome_probs(output) -> (b, K); outcome_label(k) -> str.
    answer / contrast: outcome indices of A (and B). towers_batched: attention stacks whose batch
    axis is the inputs' batch (a per-row head mask applies); other stacks see a fixed batch (CLIP texts).
    attention / rollout: () -> (n,) last-layer attention (heads averaged) of the answer's query row, and
    attention rollout, over the units, or None with the reason in `not_applicable`.
    """

    task: str
    model: torch.nn.Module
    inputs: dict[str, torch.Tensor]
    unit_key: str
    units: Units
    replacement: torch.Tensor
    run: Callable[[dict[str, torch.Tensor]], Any]
    outcome_probs: Callable[[Any], torch.Tensor]
    outcome_label: Callable[[int], str]
    answer: int
    _contrast: int | None = field(default=None, repr=False)
    contrast_default: Callable[[], int] | None = field(default=None, repr=False)
    default_score: str = "probability"
    value_name: str = "probability"
    embedding_layer: torch.nn.Module | None = None
    towers_batched: Callable[[str], bool] = lambda tower: True
    attention: Callable[[], np.ndarray] | None = None
    rollout: Callable[[], np.ndarray] | None = None
    not_applicable: dict[str, str] = field(default_factory=dict)

    @property
    def contrast(self) -> int | None:
        """B of "why A and not B": given, or computed on first use (`contrast_default`, which runs
        the model once), so explainers that never contrast pay no forward pass for it."""
        if self._contrast is None and self.contrast_default is not None:
            self._contrast = self.contrast_default()
        return self._contrast

    @contrast.setter
    def contrast(self, value: int | None) -> None:
        self._contrast = value

    @property
    def answer_label(self) -> str:
        return self.outcome_label(self.answer)

    @property
    def contrast_label(self) -> str:
        return "" if self.contrast is None else self.outcome_label(self.contrast)

    def batch(self, b: int, **override: torch.Tensor) -> dict[str, torch.Tensor]:
        """The inputs with batch size `b`: batch-1 tensors expanded, `override` given as is."""
        out = {k: v.expand(b, *v.shape[1:]) for k, v in self.inputs.items()}
        out.update(override)
        return out

    def score(self, output: Any, name: str | None = None) -> torch.Tensor:
        """(b,) the named score (SCORES) of the model's output."""
        fn = SCORES[name or self.default_score]
        b = self.contrast if fn is _contrast else self._contrast  # B's default costs a forward pass: only when used
        return fn(self.outcome_probs(output), self.answer, b)

    def score_units(self, x: torch.Tensor, name: str | None = None) -> torch.Tensor:
        """(b,) score with the unit tensor replaced by `x` (b, ...): the function Captum explains."""
        return self.score(self.run(self.batch(x.shape[0], **{self.unit_key: x})), name)

    def mix(self, keep: torch.Tensor) -> torch.Tensor:
        """(b, n) keep weights (1 keep, 0 remove) -> unit tensor (b, ...) with removed units replaced;
        units that may not be removed (special tokens) are always kept."""
        always = torch.as_tensor(~self.units.deletable, device=keep.device)
        keep = torch.where(always, torch.ones_like(keep), keep)
        x = self.inputs[self.unit_key]
        return torch.where(self.units.spread(keep) > 0.5, x, self.replacement)

    @property
    def baseline(self) -> torch.Tensor:
        """(1, ...) every removable unit replaced: the integrated-gradients baseline."""
        return self.mix(torch.zeros(1, len(self.units), device=self.replacement.device))


def result_key(task: str, result: Any) -> tuple:
    """A hashable identity of a result (for memoising explainers): task, model and the input."""
    import hashlib

    def frozen(value: Any) -> Any:  # arrays by a digest of their bytes, sequences as tuples
        if isinstance(value, np.ndarray):
            return hashlib.blake2b(np.ascontiguousarray(value).tobytes(), digest_size=16).hexdigest()
        return tuple(value) if isinstance(value, (list, tuple)) else value

    content = tuple(frozen(getattr(result, name)) for name in registry.get(task).identity)  # TaskSpec.identity
    return task, result.model_id, content[0] if len(content) == 1 else content


def resolve_outcome(value: Any, labels: Callable[[int], str], n: int, lookup: Callable[[str], int | None]) -> int:
    """An outcome given as an index or a label -> its index; ValueError when unknown."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        index = int(value)
    else:
        found = lookup(str(value))
        if found is None:
            raise ValueError(f"Unknown outcome {value!r}.")
        index = found
    if not 0 <= index < n:
        raise ValueError(f"Outcome {index} is out of range (0 to {n - 1}).")
    return index


def top_other(probs: torch.Tensor, answer: int) -> int:
    """The most probable outcome other than `answer` in probs (K,)."""
    p = probs.clone().float()
    p[answer] = -1.0
    return int(p.argmax())


# ---- helpers shared by the tasks' Subject builders (`demos.<task>.subject`) ----

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
        outcome_label=lambda i: token_labels(tok, [i])[0],  # 'ĠThe' as '␣The', a lone byte of a character as hex
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
