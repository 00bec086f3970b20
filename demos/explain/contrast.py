"""Why A and not B: attribution of P(A) - P(B) to the input units of every task, through the
app's Captum path; and, for generation, a branch explorer (force another token at one step,
continue greedily, compare).

Everything runs through the app's one attribution path (`demos.explain.attribution.run_attribution`): token
ids at the embedding layer (as the text tasks' plain attribution), continuous units (input
embeddings, pixels, audio features) on the unit tensor, reduced per unit. Both report the
convergence delta and f(input), f(baseline) so completeness can be checked.
"""
from __future__ import annotations

from typing import Any

import torch

from core import explainers as specs
from core import registry
from core.intervention_types import Branch, ContrastResult
from core.results import Attribution
from core.tokens import outcome_text
from demos.explain import subjects, tasks
from demos.explain.attribution import ProgressFn, run_attribution, steps_per_batch
from demos.explain.protocol import Explainer
from demos.runtime import loading

BRANCH_TASKS = tuple(spec.key for spec in registry.TASKS if spec.branches)  # answers that continue a prompt
CONTINUOUS_BATCH = {"patches": 8, "frames": 4}  # integration steps per batch (others: a token budget)


def attribute_units(
    s: subjects.Subject,
    score: str | None = None,
    method: str = "integrated_gradients",
    steps: int = 32,
    progress: ProgressFn | None = None,
) -> Attribution:
    """Attribute the named score of subject `s` to its units: scores (n_units,), with the
    convergence delta and f(input) / f(baseline) (integrated gradients from `s.baseline`)."""
    name = score or s.default_score

    def fn(x: torch.Tensor) -> torch.Tensor:
        return s.score_units(x, name)

    x, base = s.inputs[s.unit_key], s.baseline
    layer = s.embedding_layer if s.units.kind == "tokens" else None
    batch = CONTINUOUS_BATCH.get(s.units.kind) or steps_per_batch(x.shape[1], int(steps))
    with loading.fused_attention(s.model):  # the score never reads attention weights
        got = run_attribution(fn, x, base, method, int(steps), layer=layer, batch=batch, progress=progress)
    scores = got.attrs.sum(dim=-1)[0] if layer is not None else s.units.reduce(got.attrs)
    # readable outcomes in the title ('P(␣The) − P(␣the)', not the tokenizer's 'P(ĠThe) − P(Ġthe)')
    label = (
        s.answer_label
        if name != "contrast_prob_diff"
        else f"P({outcome_text(s.answer_label)}) − P({outcome_text(s.contrast_label)})"
    )
    return Attribution(
        tokens=list(s.units.labels),
        scores=scores.float().cpu().numpy(),
        target=label,
        method=method,
        steps=got.steps,
        delta=got.delta,
        output_value=got.output_value,
        baseline_value=got.baseline_value,
        seconds=got.seconds,
    )


def why_not(
    task: str,
    result: Any,
    target: Any = None,
    contrast: Any = None,
    method: str = "integrated_gradients",
    steps: int = 32,
    progress: ProgressFn | None = None,
) -> ContrastResult:
    """Attribution of P(A) - P(B): A = `target` (the answer by default; for steps, the step's token),
    B = `contrast` (default: the most probable other outcome). See `tasks.subject` per task."""
    return loading.one_at_a_time(task)(_contrast)(task, result, target, contrast, method, int(steps), progress)


def _contrast(task, result, target, contrast_, method, steps, progress) -> ContrastResult:
    s = tasks.subject(task, result, target, contrast_)
    if s.contrast is None:
        raise ValueError(f"'Why A and not B' needs two outcomes; this {task} result has one.")
    with torch.no_grad():
        probs = s.outcome_probs(s.run(s.batch(1)))[0]
    attribution = attribute_units(s, "contrast_prob_diff", method, steps, progress)
    return ContrastResult(
        task, s.answer_label, s.contrast_label, float(probs[s.answer]), float(probs[s.contrast]), attribution
    )


def branch(result: Any, step: int, token: Any, task: str | None = None) -> Branch:
    """Generation: force `token` (an id, a token string or one-token text) at generated step `step`,
    continue greedily for the result's remaining steps, and compare with the original continuation.
    task: whose result it is (default: the first task whose answer continues a prompt)."""
    task = task or BRANCH_TASKS[0]
    return loading.one_at_a_time(task)(_branch)(task, result, int(step), token)


def _branch(task: str, result: Any, step: int, token: Any) -> Branch:
    s = tasks.subject(task, result, step, token)  # resolves the token (B) and checks the step
    mod = tasks.module(task)
    m = mod.load(result.model_id)
    prefix = torch.tensor([[*result.ids[: result.n_prompt + step], s.contrast]], device=m.device)
    remaining = result.steps - step - 1
    with torch.inference_mode():
        if remaining > 0:
            out = m.model.generate(
                input_ids=prefix,
                attention_mask=torch.ones_like(prefix),
                max_new_tokens=remaining,
                do_sample=False,
                pad_token_id=mod.pad_id(m),
            )
        else:
            out = prefix
    tok = m.processor
    original = [tok.decode([i]) for i in result.ids[result.n_prompt :]]
    new = [tok.decode([i]) for i in out[0, result.n_prompt :].tolist()]
    diverge = next((i for i, (a, b) in enumerate(zip(original, new)) if a != b), min(len(original), len(new)))
    rejoin = None
    if len(original) == len(new):
        same_tail = [a == b for a, b in zip(original, new)]
        rejoin = next((i for i in range(diverge + 1, len(new)) if all(same_tail[i:])), None)
    return Branch(result.prompt, step, s.contrast_label, original, new, diverge, rejoin)


def _run_contrast(
    task: str,
    result: Any,
    target: Any = None,
    contrast: Any = None,
    method: str = "integrated_gradients",
    steps: int = 32,
    progress: ProgressFn | None = None,
) -> ContrastResult:
    return why_not(task, result, target, contrast, method, steps, progress)


def _run_branch(task: str, result: Any, step: int = 0, token: Any = None) -> Branch:
    return branch(result, step, token, task)


CONTRAST = Explainer(specs.CONTRAST, _run_contrast)
BRANCH = Explainer(specs.BRANCH, _run_branch)
