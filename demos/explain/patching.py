"""Activation patching: cause, not correlation. Run a CLEAN input and a CORRUPTED one (a word swapped,
a region blurred), copy ONE activation of the clean run into the corrupted run, and measure how much of
the clean answer comes back: (patched - corrupted) / (clean - corrupted), 0 = no effect, 1 = all of it.

Three grids, from the blocks of one stack (demos.adapters): the residual stream (block l's output at
one position), the attention heads (one head's slice of the input of the attention's output projection,
at every position) and the MLP (its output at one position, the adapter's `Stack.mlp`). The metric is a logit
difference: logit(A) - logit(B), A the clean answer and B the corrupted one (the same number as
log P(A) - log P(B)); CLIP measures the match score of one text against the image.

Hooks are registered for one request inside the task's lock (the protocol's wrapper) and removed in
`finally`; the patched runs are batched: a pass holds many rows, row r with its own copies.
What is clean and corrupted for each task (`PAIRS`) and steering are in demos.explain.patch_tasks.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from core import explainers as specs
from core.patching_types import GRIDS, PatchGrid, PatchingResult
from demos import adapters
from demos.explain.patch_tasks import PAIRS, Pair, run_steer
from demos.explain.protocol import Explainer
from demos.runtime import loading

ProgressFn = Callable[[float, str], Any]
TOKEN_BUDGET = 4096  # rows x positions of one batched pass (memory bound; distilgpt2, 12 tokens: one pass a layer)
class Edit(NamedTuple):
    """One copy into a row: `kind` ("residual" | "attention" | "mlp") at block `layer`, corrupted
    position `position` <- clean position `source`; `head`: only that head's slice (attention; None =
    every head)."""

    kind: str
    layer: int
    position: int
    source: int
    head: int | None = None


@dataclass
class Sites:
    """Where the three activations of a stack are: per block the block itself (output = residual
    stream), the attention output projection (input = heads side by side) and the MLP output module."""

    blocks: list[nn.Module]
    out_proj: list[nn.Module]
    mlp: list[nn.Module] | None
    heads: int
    head_dim: int
    family: str

    def modules(self, kind: str) -> list[nn.Module]:
        return {"residual": self.blocks, "attention": self.out_proj, "mlp": self.mlp or []}[kind]


def sites(model: nn.Module, stack: str | None = None) -> Sites:
    """The patchable modules of `stack` of `model`, found through the architecture adapter."""
    adapter = adapters.adapter_for(model)
    spec = adapters.stack_of(adapter, stack).attention
    found = adapters.blocks(model, adapter, stack)
    heads, _, d = adapters.head_counts(adapters.attention_module(found[0], spec), spec)
    path = adapters.stack_of(adapter, stack).mlp  # "" when the adapter does not describe the MLP
    mlp = [adapters.resolve(b, path) for b in found] if path else None
    return Sites(found, [adapters.out_projection(b, spec) for b in found], mlp, heads, d, adapter.family)


def alignment(clean: Sequence, corrupted: Sequence) -> list[int | None]:
    """For each corrupted position, the clean position copied into it. Equal lengths: position by
    position. Otherwise the common start and the common end are matched, and the parts that differ are
    aligned at their last unit (where a word's meaning gathers); a corrupted position left over gets None."""
    n_clean, n_bad = len(clean), len(corrupted)
    if n_clean == n_bad:
        return list(range(n_bad))
    start = 0
    while start < min(n_clean, n_bad) and clean[start] == corrupted[start]:
        start += 1
    end = 0
    while end < min(n_clean, n_bad) - start and clean[-1 - end] == corrupted[-1 - end]:
        end += 1
    shift = n_clean - n_bad
    return [j if j < start else (j + shift if j + shift >= start else None) for j in range(n_bad)]


def _out(fn: Callable[[torch.Tensor], torch.Tensor | None]):
    """A forward hook applying fn to a module's output (first element of a tuple)."""
    def hook(module, args, output):
        first = output[0] if isinstance(output, tuple) else output
        new = fn(first)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new
    return hook


def _pre(fn: Callable[[torch.Tensor], torch.Tensor | None]):
    """A forward pre-hook applying fn to a module's first positional input."""
    def hook(module, args):
        new = fn(args[0])
        return None if new is None else (new, *args[1:])
    return hook


@contextmanager
def hooked(hooks: Sequence[tuple[nn.Module, str, Callable]]) -> Iterator[None]:
    """Within the block, each (module, "pre" | "out", fn) hook is in place; all are removed after."""
    handles = []
    try:
        for module, when, fn in hooks:
            handles.append(module.register_forward_pre_hook(_pre(fn)) if when == "pre"
                           else module.register_forward_hook(_out(fn)))
        yield
    finally:
        for h in handles:
            h.remove()


def _when(kind: str) -> str:
    return "pre" if kind == "attention" else "out"


def capture(pair: Pair, s: Sites) -> tuple[dict[str, list[torch.Tensor]], torch.Tensor]:
    """The clean run: its activations, kind -> per layer (n_clean, width), and its logits (1, K)."""
    acts: dict[str, list] = {kind: [None] * len(s.blocks) for kind in GRIDS}

    def keep(kind: str, layer: int):
        def fn(x: torch.Tensor) -> None:
            acts[kind][layer] = _by_row(x, 1)[0].detach()
        return fn

    hooks = [(m, _when(kind), keep(kind, i)) for kind in GRIDS for i, m in enumerate(s.modules(kind))]
    with torch.no_grad(), hooked(hooks):
        logits = pair.run(pair.clean)
    return acts, logits.float()


def _by_row(x: torch.Tensor, b: int) -> torch.Tensor:
    """x as (b, n, width): some blocks flatten the positions of a batch of b before their MLP (OPT: (b·n, width))."""
    return x.view(b, -1, x.shape[-1]) if x.dim() == 2 else x


def _writer(edits: list[tuple[int, int, int, int, int]], source: torch.Tensor, b: int):
    """Hook body copying source[src, lo:hi] into x[row, pos, lo:hi] for each (row, pos, src, lo, hi), x a batch
    of b rows."""
    e = torch.tensor(edits, device=source.device)
    width = int(e[0, 4] - e[0, 3])
    cols = e[:, 3:4] + torch.arange(width, device=source.device)  # (k, width)
    rows, pos, src = e[:, 0:1], e[:, 1:2], e[:, 2:3]

    def write(x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        _by_row(out, b)[rows, pos, cols] = source[src, cols].to(x.dtype)
        return out

    return write


def patched_logits(pair: Pair, rows: Sequence[Sequence[Edit]], acts: dict | None = None,
                   s: Sites | None = None) -> torch.Tensor:
    """(R, K) logits of the corrupted input run as R rows of one batch, row r with the clean
    activations of `rows[r]` copied in (an empty row: the corrupted run itself)."""
    s = s or sites(pair.model, pair.stack)
    acts = acts if acts is not None else capture(pair, s)[0]
    groups: dict[tuple[str, int, int], list] = defaultdict(list)  # one hook per module and slice width
    for r, row in enumerate(rows):
        for e in row:
            one_head = e.kind == "attention" and e.head is not None
            width = s.head_dim if one_head else acts[e.kind][e.layer].shape[-1]
            lo = e.head * s.head_dim if one_head else 0
            groups[(e.kind, e.layer, width)].append((r, e.position, e.source, lo, lo + width))
    hooks = [(s.modules(kind)[layer], _when(kind), _writer(edits, acts[kind][layer], len(rows)))
             for (kind, layer, _), edits in groups.items()]
    with torch.no_grad(), hooked(hooks):
        return pair.run(pair.batch(len(rows))).float()


def metric(logits: torch.Tensor, a: int, b: int | None) -> np.ndarray:
    """(R,) logit(A) - logit(B), or logit(A) alone when b is None."""
    value = logits[:, a] if b is None else logits[:, a] - logits[:, b]
    return value.double().cpu().numpy()


@dataclass
class _Job:
    """One batched pass: rows of edits, and which grid cells (layer, column) they fill."""

    kind: str
    rows: list[list[Edit]]
    cells: list[tuple[int, int]]


@dataclass
class Column:
    """One column of the residual and MLP grids: a label, the (corrupted, clean) positions copied together
    (one position for text; a block of patches for an image), and whether the inputs differ there."""

    label: str
    pairs: list[tuple[int, int]]
    changed: bool


def columns(pair: Pair, align: list[int | None]) -> list[Column]:
    """Position columns: 'j · token', 'j · clean→corrupted' where the two differ (no pairs: no clean partner);
    or the Pair's own groups of positions (`Pair.groups`)."""
    differs = [i is None or pair.clean_units[i] != u for i, u in zip(align, pair.corrupted_units)]
    if pair.groups:
        changed = [any(differs[j] for j in where) for _, where in pair.groups]
        return [
            Column(
                label + (pair.changed_mark if ch else ""), [(j, align[j]) for j in where if align[j] is not None], ch
            )
            for (label, where), ch in zip(pair.groups, changed)
        ]
    out = []
    for j, i in enumerate(align):
        bad, clean = pair.corrupted_labels[j], "∅" if i is None else pair.clean_labels[i]
        label = f"{j} · {bad}" if not differs[j] or (pair.changed_mark and clean == bad) else f"{j} · {clean}→{bad}"
        out.append(
            Column(
                label + (pair.changed_mark if differs[j] and pair.changed_mark else ""),
                [] if i is None else [(j, i)],
                differs[j],
            )
        )
    return out


def _jobs(kind: str, s: Sites, cols: list[Column], n_positions: int) -> list[_Job]:
    """Every patched run of one grid, in passes of at most TOKEN_BUDGET tokens (one layer a pass at least)."""
    per_pass = max(1, TOKEN_BUDGET // max(1, n_positions))
    every = [p for c in cols for p in c.pairs]
    out = []
    for layer in range(len(s.blocks)):
        if kind == "attention":
            cells = [((layer, h), [Edit(kind, layer, j, i, h) for j, i in every]) for h in range(s.heads)]
        else:
            cells = [((layer, k), [Edit(kind, layer, j, i) for j, i in c.pairs]) for k, c in enumerate(cols) if c.pairs]
        for k in range(0, len(cells), per_pass):
            chunk = cells[k : k + per_pass]
            out.append(_Job(kind, [row for _, row in chunk], [cell for cell, _ in chunk]))
    return out


def run_grids(pair: Pair, kinds: Sequence[str] = GRIDS, progress: ProgressFn | None = None) -> PatchingResult:
    """Patch every activation of the requested grids; see the module docstring."""
    if list(pair.clean_units) == list(pair.corrupted_units):
        raise ValueError("The corrupted input is the same as the clean one: change a word (or blur a region) first.")
    s = sites(pair.model, pair.stack)
    align = alignment(pair.clean_units, pair.corrupted_units)
    acts, clean_logits = capture(pair, s)
    with torch.no_grad():
        bad_logits = pair.run(pair.batch(1)).float()
    a, b, runner_up = _outcomes(pair, clean_logits[0], bad_logits[0])
    clean_m, bad_m = float(metric(clean_logits, a, b)[0]), float(metric(bad_logits, a, b)[0])
    if abs(clean_m - bad_m) < 1e-6:
        raise ValueError(
            "The corrupted input gives the same score as the clean one, so there is nothing for a patch "
            "to bring back. Change the corrupted input more (another word, a larger region)."
        )
    cols = columns(pair, align)
    heads = [Column(f"H{h}", [], False) for h in range(s.heads)]
    grids, jobs = {}, []
    for kind in kinds:
        shown = heads if kind == "attention" else cols
        grids[kind] = PatchGrid(
            kind,
            [f"L{i}" for i in range(len(s.blocks))],
            [c.label for c in shown],
            np.full((len(s.blocks), len(shown)), np.nan),
            np.full((len(s.blocks), len(shown)), np.nan),
            changed=np.array([c.changed for c in shown]),
        )
        if kind == "mlp" and s.mlp is None:
            grids[kind].available = f"the adapter of the {s.family} family names no MLP output (its Stack.mlp)"
            continue
        jobs += _jobs(kind, s, cols, len(pair.corrupted_units))
    for done, job in enumerate(jobs, start=1):
        values = metric(patched_logits(pair, job.rows, acts, s), a, b)
        for (layer, col), v in zip(job.cells, values):
            grids[job.kind].metric[layer, col] = v
            grids[job.kind].restored[layer, col] = (v - bad_m) / (clean_m - bad_m)
        if progress is not None:
            progress(done / len(jobs), f"{job.kind}: {done}/{len(jobs)} batched passes")
    return _result(pair, align, a, b, runner_up, clean_m, bad_m, [grids[k] for k in kinds])


def _outcomes(pair: Pair, clean: torch.Tensor, bad: torch.Tensor) -> tuple[int, int | None, bool]:
    """A: the clean answer (or the given one); B: the corrupted answer, or its runner-up when that is A too
    (then the flag is True). One score (`single`): A = 0, B = None."""
    if pair.single:
        return 0, None, False
    a = int(clean.argmax()) if pair.answer is None else pair.answer
    b = int(bad.argmax())
    if b != a:
        return a, b, False
    return a, int(bad.clone().index_fill_(0, torch.tensor([a]), float("-inf")).argmax()), True


def _notes(pair: Pair, align: list[int | None], a: int, b: int | None, runner_up: bool) -> list[str]:
    notes = list(pair.notes)
    if len(pair.clean_units) != len(pair.corrupted_units):
        gone = [pair.corrupted_labels[j] for j, i in enumerate(align) if i is None]
        notes.append(
            f"The inputs have different lengths ({len(pair.clean_units)} and {len(pair.corrupted_units)} "
            "units): they are matched position by position from the start and from the end, and the parts "
            "that differ are aligned at their last unit (the column labels show the pairs)."
            + (f" No clean partner (not patched): {', '.join(f'“{g}”' for g in gone)}." if gone else "")
        )
    if runner_up:
        notes.append(
            f"The corrupted input still gives “{pair.label(a)}” as its top answer; B is its runner-up "
            f"“{pair.label(b)}”."
        )
    return notes


def _result(pair: Pair, align, a, b, runner_up, clean_m, bad_m, grids) -> PatchingResult:
    changed = [i is None or pair.clean_units[i] != u for i, u in zip(align, pair.corrupted_units)]
    return PatchingResult(
        task="",
        clean_input=pair.clean_input,
        corrupted_input=pair.corrupted_input,
        clean_tokens=list(pair.clean_labels),
        corrupted_tokens=list(pair.corrupted_labels),
        alignment=np.array([-1 if i is None else i for i in align]),
        changed=np.array(changed),
        metric_name=pair.what,
        a=pair.clean_input if b is None else pair.label(a),
        b=pair.corrupted_input if b is None else pair.label(b),
        clean_metric=clean_m,
        corrupted_metric=bad_m,
        stack=pair.stack or "main",
        grids=grids,
        notes=_notes(pair, align, a, b, runner_up),
        picture=pair.picture,
        b_runner_up=runner_up,
    )


def kinds_of(grids: Sequence[str] | str) -> list[str]:
    """'residual, mlp' or a list -> the grid kinds, in display order; ValueError for an unknown one."""
    wanted = [g.strip().lower() for g in (grids.split(",") if isinstance(grids, str) else grids) if str(g).strip()]
    unknown = sorted(set(wanted) - set(GRIDS))
    if unknown:
        raise ValueError(f"Unknown grid {', '.join(unknown)}; choose among {', '.join(GRIDS)}.")
    if not wanted:
        raise ValueError(f"Choose at least one grid ({', '.join(GRIDS)}).")
    return [g for g in GRIDS if g in wanted]


def patch(
    task: str,
    result: Any,
    corrupted: str = "",
    target: Any = None,
    grids: Sequence[str] | str = GRIDS,
    progress: ProgressFn | None = None,
) -> PatchingResult:
    """Patch `result` (the clean run of task `task`) against the `corrupted` input; see PAIRS per task."""
    kinds = kinds_of(grids)

    def run() -> PatchingResult:
        out = run_grids(PAIRS[task](result, corrupted, target), kinds, progress)
        out.task = task
        return out

    return loading.one_at_a_time(task)(run)()


def _run_patch(
    task: str,
    result: Any,
    corrupted: str = "",
    target: Any = None,
    grids: Sequence | str = GRIDS,
    progress: ProgressFn | None = None,
) -> PatchingResult:
    return patch(task, result, corrupted, target, grids, progress)


PATCH = Explainer(specs.PATCH, _run_patch)
STEER = Explainer(specs.STEER, run_steer)
