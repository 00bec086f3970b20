"""Explanation maths shared by all tasks: attention stacking, rollout, Captum attributions.

Everything returns numpy arrays ready for `core.results`; the viz layer never sees torch.
"""
from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from core import explainers as specs
from core.results import is_large
from demos.runtime.priority import answer_first

ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class Method:
    """An attribution method: Captum's own classes for attributing to a layer's output and to an
    input tensor. Whether it integrates over steps or has a convergence delta is asked of the
    Captum class itself (`has_convergence_delta()`, the `n_steps` parameter), never of the name."""

    label: str
    layer_class: str
    input_class: str

    def captum(self, forward_fn: Callable, layer: torch.nn.Module | None = None):
        import captum.attr

        if layer is None:
            return getattr(captum.attr, self.input_class)(forward_fn)
        return getattr(captum.attr, self.layer_class)(forward_fn, layer)

    @property
    def integrates(self) -> bool:
        import captum.attr

        return "n_steps" in inspect.signature(getattr(captum.attr, self.input_class).attribute).parameters


# The attribution methods offered everywhere (described in core.explainers.METHODS).
METHODS: dict[str, Method] = {key: Method(m.label, m.layer_class, m.input_class) for key, m in specs.METHODS.items()}


def method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"Unknown attribution method {name!r}; choose one of {sorted(METHODS)}.")
    return METHODS[name]


def stack_attentions(attentions: Sequence[torch.Tensor], batch_index: int = 0, compact: bool = True) -> np.ndarray:
    """Tuple of per-layer (batch, heads, q, k) tensors -> (layers, heads, q, k) float32 array.

    `compact` (default): a map larger than `core.results.COMPACT_FROM_BYTES` comes back float16,
    converted by torch layer by layer (no float32 copy of the whole stack): what `AttentionMaps`
    keeps anyway. A caller that slices a batch's stack per item passes False, so an item's small
    map stays exact."""
    if not attentions:
        raise RuntimeError("The model returned no attention weights (load it with attn_implementation='eager').")
    numel = sum(a[batch_index].numel() for a in attentions)
    if compact and stored_dtype(numel) == torch.float16:
        return torch.stack([a[batch_index].half() for a in attentions]).cpu().numpy()
    return torch.stack([a[batch_index] for a in attentions]).float().cpu().numpy()


def stored_dtype(numel: int) -> torch.dtype:
    """The dtype `AttentionMaps` keeps a map of `numel` weights in (`core.results.compact`)."""
    return torch.float16 if is_large(numel) else torch.float32


def stack_hidden(hidden_states: Sequence[torch.Tensor], batch_index: int = 0) -> np.ndarray:
    """Tuple of (batch, n, d) hidden states (embeddings + every layer) -> (layers+1, n, d).

    All must have the same width d: a model whose final part changes the width (OPT's project_out) must keep
    the last block's output as its last state (demos.generation._keep_last_block_output) or it is refused here
    with the widths named."""
    widths = sorted({int(h.shape[-1]) for h in hidden_states})
    if len(widths) > 1:
        raise ValueError(
            f"The hidden states have different widths {widths} (the last one is {hidden_states[-1].shape[-1]} "
            "wide): the model's final part changes the width, so they cannot be stacked as layers."
        )
    return torch.stack([h[batch_index] for h in hidden_states]).float().cpu().numpy()


def attention_rollout(weights: np.ndarray | torch.Tensor, residual: float = 0.5) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020).

    weights: (layers, heads, n, n). Heads are averaged, the residual connection is added as
    `residual * I + (1 - residual) * A`, rows renormalised, and layers multiplied bottom-up.
    Returns (n, n): how much each output position draws on each input position; rows sum to 1.
    Computed by torch in float64: the products run on torch's own threads, which have just run the
    forward pass (numpy's BLAS would wake a second pool of threads that then compete with torch's
    for the CPUs).
    """
    if isinstance(weights, torch.Tensor):
        w = weights.detach().to("cpu", torch.float64)
    else:  # a copy in float64 (stored arrays are read-only)
        w = torch.from_numpy(np.array(weights, dtype=np.float64))
    n = w.shape[-1]
    eye = torch.eye(n, dtype=torch.float64)
    result = eye.clone()
    for layer in w:
        a = residual * eye + (1.0 - residual) * layer.mean(dim=0)
        a /= a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result.to(torch.float32).numpy()


TOKENS_PER_BATCH = 4096  # tokens in one Captum forward/backward batch (bounds memory on long inputs)


def steps_per_batch(n_tokens: int, steps: int, budget: int = TOKENS_PER_BATCH) -> int:
    """Integration steps per forward/backward batch: every step in one batch for short inputs
    (fastest), fewer for long ones so a batch holds at most `budget` tokens."""
    return max(1, min(int(steps), budget // max(1, int(n_tokens))))


@dataclass
class Attributed:
    """What one attribution run gives: attrs shaped like the attributed tensor (1, ...), the
    convergence delta (methods that have one), the steps used, f(input) and f(baseline)."""

    attrs: torch.Tensor
    delta: float | None
    steps: int
    output_value: float
    baseline_value: float
    seconds: float | None = field(default=None, compare=False)  # the whole run's time (with its end points)
    together: int = field(default=1, compare=False)  # inputs attributed in that run


STEP_LADDER = (8, 16, 32, 64, 128, 256)  # adaptive integration: rounds until |delta| is small enough
FAR = 4.0  # a |delta| above FAR x the tolerance skips the next rung of the ladder


def next_rung(ladder: Sequence[int], steps: int, delta: float | None, tolerance: float | None) -> int | None:
    """The step count to integrate at next after a run of `steps` (a rung of `ladder`) whose |delta| is `delta`;
    None when done: within the tolerance, no tolerance, or the ceiling reached. Gauss-Legendre rungs share no
    nodes, so each rung is paid in full: a |delta| far above the tolerance (> FAR x) skips the next rung. On real
    SmolLM2-135M (12 prompts, its own next token), 8 steps were within 0.01 for none and 16 for 1 of 12, 32 for 3:
    the ladder 8, 16, 32 cost 53 steps on average; skipping 16 where |delta| at 8 was above 0.04 costs 41, each
    result the same (a rung's result does not depend on the rungs before it). Random weights stop at 8 either way."""
    if tolerance is None or delta is None or delta <= tolerance or steps not in ladder:
        return None
    i = list(ladder).index(steps)
    if i + 1 >= len(ladder):
        return None
    return ladder[min(i + (2 if delta > FAR * tolerance else 1), len(ladder) - 1)]


def run_attribution(
    score_fn: Callable[..., torch.Tensor],
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    method_name: str = "integrated_gradients",
    steps: int = 32,
    layer: torch.nn.Module | None = None,
    extra: tuple = (),
    batch: int | None = None,
    tolerance: float | None = None,
    progress: ProgressFn | None = None,
    units: int | None = None,
    smoothgrad: dict | None = None,
) -> Attributed:
    """The one attribution path of the app: attribute `score_fn(inputs, *extra) -> (batch,)` to
    `inputs` (1, ...) or, with `layer`, to that layer's output (e.g. the token embeddings).

    Integrating methods run `steps` steps in batches of `batch` (default: a token budget from
    `units`, the sequence length) with Captum's convergence delta. With `tolerance`, `steps` is a
    ceiling: the steps climb STEP_LADDER (8, 16, 32, ...; a rung skipped where |delta| is far above the
    tolerance: `next_rung`) and stop at the first count whose |delta| <= tolerance (the steps used are
    returned). f(input) and f(baseline) come from one batched pass so completeness (sum of
    attributions = f(x) - f(baseline) - delta) can be shown.
    `smoothgrad` (nt_samples, stdevs, ...) averages over noisy copies with Captum's NoiseTunnel.
    """
    (got,) = run_attributions(score_fn, inputs, baselines, method_name, steps, layer, extra, batch, tolerance,
                              progress, units, smoothgrad)
    return got


def run_attributions(
    score_fn: Callable[..., torch.Tensor],
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    method_name: str = "integrated_gradients",
    steps: int = 32,
    layer: torch.nn.Module | None = None,
    extra: tuple = (),
    batch: int | None = None,
    tolerance: float | None = None,
    progress: ProgressFn | None = None,
    units: int | None = None,
    smoothgrad: dict | None = None,
) -> list[Attributed]:
    """`run_attribution` for S inputs at once (several users' requests of one task and model):
    inputs, baselines (S, ...); every tensor of `extra` has S rows, one per input. Captum runs every
    input's interpolation points in the same batches (`batch` or the token budget counts the rows of
    all S), and each input stops on the ladder at its own step count: the inputs still above the
    tolerance run their next rung together. One Attributed per input, as its own run would give it."""
    started = time.perf_counter()
    chosen = method(method_name)
    count = int(inputs.shape[0])
    if smoothgrad and count > 1:
        raise ValueError("SmoothGrad attributes one input at a time.")
    ladder = [s for s in STEP_LADDER if s < steps] + [int(steps)] if tolerance else [int(steps)]
    if not chosen.integrates:
        ladder = [1]
    n_units = units or (inputs.shape[1] if inputs.dim() > 1 else 1)

    def rows_per_batch(n_steps: int, rows: int) -> int:  # Captum's internal_batch_size: rows of all inputs
        return rows * (batch or steps_per_batch(rows * n_units, n_steps))

    noisy = (smoothgrad or {}).get("nt_samples", 1)
    bar = _Bar({s: noisy * math.ceil(s * count / rows_per_batch(s, count)) for s in ladder}, progress)

    def tracked(*args: Any) -> torch.Tensor:
        answer_first.yield_to_answers()  # a student waiting for an answer goes first
        bar.batch()
        return score_fn(*args)

    # f(input) and f(baseline) once, in one batched pass: they give the completeness check and,
    # for integrated gradients, the convergence delta exactly as Captum defines it
    # (sum of attributions - (f(input) - f(baseline))), without Captum's own second pass over them.
    # The same pass keeps the layer's output at input and baseline: integrated gradients over a layer
    # then run Captum's IntegratedGradients on those outputs (what LayerIntegratedGradients does after two
    # forward passes of its own to find them), the model's inputs passed along for the rest of the pass.
    ends, algo, points, extra = _integrand(chosen, tracked, score_fn, (inputs, baselines), extra, layer, smoothgrad)
    got: list[Attributed | None] = [None] * count
    due = dict.fromkeys(range(count), ladder[0])  # input -> the rung it runs next (`next_rung`)
    for n_steps in ladder:
        left = [i for i in range(count) if due.get(i) == n_steps]
        if not left:
            continue
        rows = _rows_of((*points, *extra), left, count)
        internal = rows_per_batch(n_steps, len(left)) if chosen.integrates else None
        attrs, noisy_delta = _captum_rung(algo, rows, n_steps, internal, layer is not None, smoothgrad)
        for row, i in enumerate(left):
            f_in, f_base = ends[i]
            delta_value = noisy_delta
            if not smoothgrad and algo.has_convergence_delta():
                delta_value = float(abs(attrs[row].double().sum() - (f_in - f_base)))
            got[i] = Attributed(attrs[row : row + 1], delta_value, n_steps, f_in, f_base)
            due[i] = next_rung(ladder, n_steps, delta_value, tolerance)
        bar.due(due.values())
    seconds = time.perf_counter() - started
    return [replace(g, seconds=seconds, together=count) for g in got]


class _Bar:
    """An attribution's progress: batches done over the batches done and those of the rungs still due (a rung
    skipped, or every input within the tolerance, shortens the bar, so the fraction never goes back)."""

    def __init__(self, rounds: dict[int, int], progress: ProgressFn | None) -> None:
        self.rounds, self.progress = rounds, progress  # rung -> its batches
        self.done, self.total = 0, sum(rounds.values())

    def batch(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(min(self.done / self.total, 1.0), f"attribution batch {self.done}")

    def due(self, rungs: Any) -> None:
        first = min((r for r in rungs if r is not None), default=None)
        self.total = self.done + sum(b for r, b in self.rounds.items() if first is not None and r >= first)


def _integrand(
    chosen: Method, tracked: Callable, score_fn: Callable, points: tuple, extra: tuple, layer: Any, smoothgrad: Any
) -> tuple[list[tuple[float, float]], Any, tuple, tuple]:
    """Each input's (f(input), f(baseline)) from one pass, and what Captum integrates: its algorithm, the two
    end points and the extra forward arguments. Integrated gradients over a layer integrate between the
    layer's outputs seen in that pass, with Captum's IntegratedGradients and the model's inputs passed along."""
    inputs, baselines = points
    over_layer = layer is not None and chosen.integrates and not smoothgrad
    ends, seen = _endpoints(score_fn, inputs, baselines, extra, layer if over_layer else None)
    if over_layer and isinstance(seen, torch.Tensor):
        count = inputs.shape[0]
        return ends, chosen.captum(_with_layer_output(tracked, layer)), (seen[:count], seen[count:]), (inputs, *extra)
    return ends, chosen.captum(tracked, layer), points, extra


def _with_layer_output(score_fn: Callable[..., torch.Tensor], layer: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """forward(values, *args) = score_fn(*args) with `layer`'s output replaced by `values` (a tensor)."""

    def forward(values: torch.Tensor, *args: Any) -> torch.Tensor:
        handle = layer.register_forward_hook(lambda _module, _inputs, _output: values)
        try:
            return score_fn(*args)
        finally:
            handle.remove()

    return forward


def _rows_of(values: tuple, left: list[int], count: int) -> tuple:
    """The rows `left` of every per-input tensor in `values` (those with `count` rows); all of them
    unchanged while every input is left."""
    if len(left) == count:
        return values
    pick = torch.tensor(left, device=values[0].device)
    return tuple(
        a.index_select(0, pick) if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == count else a
        for a in values
    )


def _captum_rung(
    algo: Any, rows: tuple, n_steps: int, internal: int | None, to_layer: bool, smoothgrad: dict | None
) -> tuple[torch.Tensor, float | None]:
    """One Captum call over `rows` = (inputs, baselines, *extra) of the inputs still on the ladder: the
    attributions, and with SmoothGrad the largest |delta| of its noisy copies (else None)."""
    inputs, baselines, extra = rows[0], rows[1], rows[2:]
    kwargs: dict[str, Any] = (
        dict(baselines=baselines, n_steps=n_steps, internal_batch_size=internal) if internal is not None else {}
    )
    source = inputs if to_layer or not inputs.is_floating_point() else inputs.clone().requires_grad_(True)
    if not smoothgrad:
        return algo.attribute(source, additional_forward_args=extra or None, **kwargs).detach(), None
    from captum.attr import NoiseTunnel  # completeness holds per noisy copy: Captum's own delta there

    kwargs.update(nt_type="smoothgrad", nt_samples_batch_size=1, return_convergence_delta=True, **smoothgrad)
    attrs, delta = NoiseTunnel(algo).attribute(source, additional_forward_args=extra or None, **kwargs)
    return attrs.detach(), float(delta.abs().max())


def endpoint_rows(
    score_fn: Callable[..., torch.Tensor], x: torch.Tensor, base: torch.Tensor, extra: tuple = ()
) -> list[tuple[float, float]]:
    """(f(input), f(baseline)) of each of the S inputs x (S, ...), from ONE batched forward pass;
    tensors of `extra` have S rows (a batch-1 tensor of a single input is repeated like the rest)."""
    return _endpoints(score_fn, x, base, extra)[0]


def _endpoints(
    score_fn: Callable[..., torch.Tensor], x: torch.Tensor, base: torch.Tensor, extra: tuple = (),
    layer: torch.nn.Module | None = None,
) -> tuple[list[tuple[float, float]], Any]:
    """`endpoint_rows`, and `layer`'s output in that pass (2S rows: the inputs', then the baselines'; None
    without a layer), made an ordinary tensor that autograd may use."""
    count = x.shape[0]
    args = tuple(torch.cat([a, a]) if isinstance(a, torch.Tensor) and a.shape[:1] == (count,) else a for a in extra)
    seen: list[Any] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out)) if layer is not None else None
    try:
        with torch.inference_mode():
            values = score_fn(torch.cat([x, base]), *args)
    finally:
        if handle is not None:
            handle.remove()
    output = seen[0] if len(seen) == 1 else None  # a layer the pass runs once (else: Captum finds it itself)
    if isinstance(output, torch.Tensor):
        output = output.clone()  # outside inference mode: an ordinary tensor
    return [(float(values[i]), float(values[count + i])) for i in range(count)], output


def integrate_targets(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    base: torch.Tensor,
    method_name: str = "integrated_gradients",
    steps: int = 32,
    progress: ProgressFn | None = None,
    tolerance: float | None = None,
) -> list[Attributed]:
    """Attribute K outcomes of ONE input at once: `score_fn(e) -> (b, K)` on embeddings e (b, n, D) gives,
    per row, the K scores (e.g. P(token t_k) at K positions of one causal sequence); x, base: (1, n, D) the
    input's and the baseline's embeddings. Returns one Attributed per outcome, attrs (1, n, D).

    The same maths as Captum's LayerIntegratedGradients (its Gauss-Legendre nodes and weights, Captum's own
    `approximation_parameters`) and LayerGradientXActivation, but each interpolation point is run forward ONCE
    for all K outcomes and then differentiated K times, where K separate attributions would run K forward and
    K backward passes: (1 + K) passes against 2K. Batches hold at most TOKENS_PER_BATCH tokens. With `tolerance`,
    `steps` is a ceiling: the steps climb STEP_LADDER (`next_rung`) and stop at the first count whose largest
    |delta| <= tolerance.
    """
    ladder = [s for s in STEP_LADDER if s < steps] + [int(steps)] if tolerance else [int(steps)]
    n_steps: int | None = ladder[0]
    while n_steps is not None:
        got = _integrate_targets(score_fn, x, base, method_name, n_steps, progress)
        n_steps = next_rung(ladder, n_steps, max(g.delta or 0.0 for g in got), tolerance)
    return got


def _integrate_targets(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    base: torch.Tensor,
    method_name: str,
    steps: int,
    progress: ProgressFn | None,
) -> list[Attributed]:
    from captum.attr._utils.approximation_methods import approximation_parameters

    chosen = method(method_name)
    with torch.inference_mode():
        ends = score_fn(torch.cat([x, base])).float()  # f(input), f(baseline): (2, K)
    if chosen.integrates:
        sizes_fn, alphas_fn = approximation_parameters("gausslegendre")
        sizes, alphas = sizes_fn(int(steps)), alphas_fn(int(steps))
        diff = x - base
    else:  # gradient x activation: the gradient at x times x itself
        sizes, alphas, diff, base = [1.0], [1.0], x, torch.zeros_like(x)
    k = ends.shape[1]
    total = torch.zeros(k, *x.shape[1:], dtype=torch.float64, device=x.device)
    per_batch = steps_per_batch(x.shape[1], len(alphas))
    for start in range(0, len(alphas), per_batch):
        answer_first.yield_to_answers()  # a student waiting for an answer goes first
        a = torch.tensor(alphas[start : start + per_batch], dtype=x.dtype, device=x.device).view(-1, 1, 1)
        w = torch.tensor(sizes[start : start + per_batch], dtype=torch.float64, device=x.device).view(-1, 1, 1)
        points = (base + a * diff).detach().requires_grad_(True)
        scores = score_fn(points)  # (b, K)
        for j in range(k):
            (grad,) = torch.autograd.grad(scores[:, j].sum(), points, retain_graph=j < k - 1)
            total[j] += (grad.double() * w).sum(0)
        if progress is not None:
            progress(min(1.0, (start + per_batch) / len(alphas)), f"attribution batch {start // per_batch + 1}")
    attrs = diff[0].double() * total  # (K, n, D)
    out = []
    for j in range(k):
        f_in, f_base = float(ends[0, j]), float(ends[1, j])
        delta = float(abs(attrs[j].sum() - (f_in - f_base))) if chosen.integrates else None
        used = int(steps) if chosen.integrates else 1
        out.append(Attributed(attrs[j : j + 1].to(x.dtype), delta, used, f_in, f_base))
    return out


def softmax_np(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)
