"""Knock out attention heads (or whole layers) and run again, on every architecture of the table.

A head is knocked out by zeroing its slice of the concatenated head outputs at the INPUT of the
attention's output projection (a forward pre-hook on the module the architecture table
(demos.adapters) names: GPT-2 `attn.c_proj`, Llama/Qwen2/Gemma/ViT `o_proj`, GPT-NeoX `attention.dense`,
DistilBERT `attention.out_lin`, BERT / RoBERTa / ELECTRA / DeBERTa `attention.output.dense`, Marian /
BART / M2M100 / Whisper / CLIP / SigLIP `self_attn.out_proj` and `encoder_attn.out_proj`, T5
`SelfAttention.o` and `EncDecAttention.o`): the layer's attention output is then the other heads'
contribution plus the projection's bias. Under grouped-query attention each query head still has its
own slice there. Hooks are registered for ONE request inside the task's lock and removed in `finally`;
the shared cached model's weights are never changed. A family missing from the table gets
UnknownArchitecture naming what is missing.

The head-importance map knocks out each head alone. Where a stack's batch axis is the inputs'
batch, one forward pass runs many knockouts: row r of the batch gets its own head mask. Its quick
estimate (`method="gradient"`, attribution patching: Nanda 2023; Syed, Rager and Conmy 2023) replaces
every knockout by the first-order Taylor term of the same change: zeroing head h's slice z_h changes the
score by about -grad_z(score) . z_h, every head's from ONE forward and ONE backward pass, whatever the
number of heads (docs/PERFORMANCE.md has its cost against the exact map). It is exact for a score
linear in the head's output and drifts where a head's removal moves the answer far.

A knockout changes only what comes after it. A part of the model (a whole stack: Whisper's encoder,
CLIP's image tower; or one block) with no head knocked out, called with exactly the inputs it had in
the plain run, returns the plain run's output instead of running again (`unchanged_parts`): knocking
out a decoder head never re-runs the 30 s audio encoder, a text head never re-runs the image tower,
and a head in layer 5 never re-runs layers 0-4. The inputs are compared, not assumed.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core import explainers as specs
from core.intervention_types import AblationResult, HeadImportance, Tower
from demos import adapters as A
from demos.explain import subjects, tasks
from demos.explain.attribution import ProgressFn
from demos.explain.protocol import Explainer
from demos.runtime import loading
from demos.runtime.cache import memo

VIEW = "Knocking out heads"
_TOWER_NAMES = {"main": "layers"}  # adapter stack -> the name users write ("layers L2H3"); others keep theirs


@dataclass
class Site:
    """One attention module: its tower name, layer index, head count and output projection."""

    tower: str
    layer: int
    n_heads: int
    module: torch.nn.Module = field(repr=False)


def _tower_name(stack: str, cross: bool, has_cross: bool) -> str:
    name = _TOWER_NAMES.get(stack, stack)
    if has_cross:
        name += " cross-attention" if cross else " self-attention"
    return name


def sites(model: torch.nn.Module) -> list[Site]:
    """Every attention output projection of `model`, from the architecture table, stack by stack and
    layer by layer (a decoder's self- then cross-attention)."""
    adapter = A.adapter_for_view(model, VIEW)
    out = []
    for stack, st in adapter.stacks.items():
        specs_ = [(False, st.attention)] + ([(True, st.cross_attention)] if st.cross_attention else [])
        for layer, block in enumerate(A.blocks(model, adapter, stack)):
            for cross, spec in specs_:
                attn = A.attention_module(block, spec)
                out.append(Site(_tower_name(stack, cross, st.cross_attention is not None), layer,
                                A.head_counts(attn, spec)[0], A.resolve(attn, spec.out)))
    return out


def towers(model: torch.nn.Module) -> list[Tower]:
    """The model's attention stacks (name, layers, heads), for the knockout controls."""
    stacks: dict[str, Tower] = {}
    for s in sites(model):
        t = stacks.setdefault(s.tower, Tower(s.tower, 0, s.n_heads))
        t.n_layers = max(t.n_layers, s.layer + 1)
    return list(stacks.values())


def _pre_hook(mask: torch.Tensor):
    """Forward pre-hook multiplying the (b, ..., heads * head_dim) input by a per-row head mask (R, heads)."""

    def hook(module: torch.nn.Module, args: tuple) -> tuple:
        x = args[0]
        b, rows = x.shape[0], mask.shape[0]
        if rows not in (1, b):
            raise RuntimeError(f"A head mask of {rows} rows cannot apply to a batch of {b}.")
        heads = mask.shape[1]
        m = mask.to(x.dtype).repeat_interleave(x.shape[-1] // heads, dim=1)  # (R, width)
        return (x * m.view(rows, *([1] * (x.dim() - 2)), -1), *args[1:])

    return hook


@contextmanager
def head_masks(model: torch.nn.Module, masks: dict[tuple[str, int], torch.Tensor]) -> Iterator[None]:
    """Within the block, each (tower, layer) in `masks` has its heads weighted by mask (R, heads):
    0 = knocked out, 1 = kept; R = 1 (every row) or the batch size (row r its own mask)."""
    handles = []
    try:
        for s in sites(model):
            if (s.tower, s.layer) in masks:
                handles.append(s.module.register_forward_pre_hook(_pre_hook(masks[(s.tower, s.layer)])))
        yield
    finally:
        for h in handles:
            h.remove()


def _parts(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Name -> a part that may be replayed: each stack's root (the parent of its blocks: Whisper's `model.encoder`,
    CLIP's `vision_model.encoder`) where there are several stacks, and every block of every stack."""
    adapter = A.adapter_for_view(model, VIEW)
    parts = {}
    for name, st in adapter.stacks.items():
        if len(adapter.stacks) > 1:
            parts[name] = A.resolve(model, st.layers.rpartition(".")[0])
        parts.update((f"{name}.{i}", block) for i, block in enumerate(A.blocks(model, adapter, name)))
    return parts


def _match_tensor(now: Any, then: torch.Tensor) -> int | None:
    if not torch.is_tensor(now) or now.dtype != then.dtype or now.dim() != then.dim():
        return None
    if now.shape == then.shape:
        return (int(now.shape[0]) if now.dim() > 1 else 0) if torch.equal(now, then) else None
    if now.dim() > 1 and then.shape[0] == 1 and now.shape[1:] == then.shape[1:] and bool((now == then).all()):
        return int(now.shape[0])
    return None


def _match(now: Any, then: Any) -> int | None:
    """Whether a call's input `now` is exactly the recorded `then` (a recorded batch of 1 matches every row of a
    larger batch): None if not, else the batch size it shows (0 where it shows none: a 1-d tensor, a flag).
    Anything that cannot be compared (a cache object) counts as different."""
    if torch.is_tensor(then) or torch.is_tensor(now):
        return _match_tensor(now, then) if torch.is_tensor(then) else None
    if isinstance(then, dict):
        same_keys = isinstance(now, dict) and now.keys() == then.keys()
        return _match(list(now.values()), [then[k] for k in now]) if same_keys else None
    if isinstance(then, (list, tuple)):
        if not isinstance(now, (list, tuple)) or len(now) != len(then):
            return None
        found = [_match(x, y) for x, y in zip(now, then)]
        return None if None in found else max(found, default=0)
    if then is None or isinstance(then, (bool, int, float, str)):
        return 0 if type(now) is type(then) and now == then else None
    return None


def _widened(x: Any, rows: int) -> Any:
    """The recorded output `x` for a batch of `rows` identical inputs (tensors of batch 1 expanded, not copied)."""
    from transformers.utils import ModelOutput

    if torch.is_tensor(x):
        return x.expand(rows, *x.shape[1:]) if x.dim() and x.shape[0] == 1 and rows != 1 else x
    if isinstance(x, ModelOutput):
        return type(x)(**{k: _widened(v, rows) for k, v in x.items()})
    if isinstance(x, tuple):
        return tuple(_widened(v, rows) for v in x)
    return x


@contextmanager
def recording_parts(model: torch.nn.Module) -> Iterator[dict[str, tuple]]:
    """Within: the first call of each part (`_parts`) is recorded (its inputs and output), for `unchanged_parts`."""
    records: dict[str, tuple] = {}
    handles = []

    def keep(name: str):
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            records.setdefault(name, (args, dict(kwargs), output))

        return hook

    try:
        for name, part in _parts(model).items():
            handles.append(part.register_forward_hook(keep(name), with_kwargs=True))
        yield records
    finally:
        for h in handles:
            h.remove()


@contextmanager
def unchanged_parts(model: torch.nn.Module, records: dict[str, tuple], knocked: Sequence[Site]) -> Iterator[None]:
    """Within: a part (a stack, a block) that holds none of the `knocked` sites, called with exactly its recorded
    inputs (row by row), returns its recorded output instead of running; called with other inputs (a knockout
    upstream changed them), it runs. The replacement lives on the shared model for this request only (inside the
    task's lock)."""
    touched = {id(site.module) for site in knocked}
    patched: list[tuple[torch.nn.Module, Any]] = []

    def replay(part: torch.nn.Module, record: tuple):
        run = part.forward
        then_args, then_kwargs, output = record

        def forward(*args: Any, **kwargs: Any) -> Any:
            rows = _match([args, kwargs], [then_args, then_kwargs])
            if rows:  # the same inputs, `rows` of them
                return _widened(output, rows)
            return run(*args, **kwargs)

        return forward

    try:
        for name, part in _parts(model).items():
            if name in records and not any(id(m) in touched for m in part.modules()):
                patched.append((part, part.__dict__.get("forward")))
                part.forward = replay(part, records[name])
        yield
    finally:
        for part, before in patched:
            if before is None:
                del part.forward
            else:
                part.forward = before


def knockout_masks(
    model: torch.nn.Module, heads: Sequence[tuple[str, int, int | None]]
) -> dict[tuple[str, int], torch.Tensor]:
    """(tower, layer, head or None for the whole layer) triples -> one-row masks per (tower, layer)."""
    by_key = {(s.tower, s.layer): s for s in sites(model)}
    masks: dict[tuple[str, int], torch.Tensor] = {}
    device = next(model.parameters()).device
    for tower, layer, head in heads:
        site = by_key.get((tower, int(layer)))
        if site is None:
            raise ValueError(f"No layer {layer} in {tower!r}; stacks: {[(t.name, t.n_layers) for t in towers(model)]}.")
        mask = masks.setdefault((tower, int(layer)), torch.ones(1, site.n_heads, device=device))
        if head is None:
            mask[:] = 0
        elif not 0 <= int(head) < site.n_heads:
            raise ValueError(f"Head {head} does not exist in {tower} layer {layer} ({site.n_heads} heads).")
        else:
            mask[0, int(head)] = 0
    return masks


def _describe(heads: Sequence[tuple[str, int, int | None]]) -> list[str]:
    return [f"{t} L{layer}" + (" (all heads)" if h is None else f" H{h}") for t, layer, h in heads]


def _locked(task: str, fn, *args: Any, **kwargs: Any) -> Any:
    return loading.one_at_a_time(task)(fn)(*args, **kwargs)


def ablate(
    task: str, result: Any, heads: Sequence[tuple[str, int, int | None]], target: Any = None, top_k: int = 5
) -> AblationResult:
    """Run `result`'s forward pass again with `heads` knocked out ((tower, layer, head) triples,
    head None = the whole layer; tower names from `towers()`); the answer before and after."""
    return _locked(task, _ablate, task, result, [tuple(h) for h in heads], target, int(top_k))


def _ablate(task: str, result: Any, heads: list, target: Any, top_k: int) -> AblationResult:
    s = tasks.subject(task, result, target)
    x = s.batch(1)
    masks = knockout_masks(s.model, heads)
    knocked = [site for site in sites(s.model) if (site.tower, site.layer) in masks]
    with torch.no_grad(), loading.fused_attention(s.model):
        with recording_parts(s.model) as records:
            before = s.outcome_probs(s.run(x))[0].float()
        with head_masks(s.model, masks), unchanged_parts(s.model, records, knocked):
            after = s.outcome_probs(s.run(x))[0].float()
    k = min(top_k, before.shape[0])
    shown = list(dict.fromkeys([s.answer, *before.topk(k).indices.tolist(), *after.topk(k).indices.tolist()]))
    return AblationResult(
        task=task,
        answer=s.answer_label,
        value_name=s.value_name,
        knocked_out=_describe(heads),
        labels=[s.outcome_label(i) for i in shown],
        before=before[shown].cpu().numpy(),
        after=after[shown].cpu().numpy(),
        score_before=float(before[s.answer]),
        score_after=float(after[s.answer]),
        top_before=s.outcome_label(int(before.argmax())),
        top_after=s.outcome_label(int(after.argmax())),
    )


METHODS = tuple(specs.HEAD_MAP_METHODS)  # described in core.explainers


@dataclass(frozen=True)
class _Ref:
    """A result keyed by its identity (subjects.result_key), so explainers can be memoised."""

    key: tuple
    result: Any = field(compare=False, hash=False, repr=False)


def head_importance(
    task: str, result: Any, target: Any = None, batch_rows: int = 8, progress: ProgressFn | None = None,
    method: str = "knockout",
) -> HeadImportance:
    """Each head knocked out alone -> change of the answer's score, (layers, heads) per tower.
    method "knockout": every knockout run (`batch_rows` of them share one forward pass where the stack
    allows); "gradient": their first-order estimate from one forward and one backward pass. Memoised."""
    if method not in METHODS:
        raise ValueError(f"Unknown head-map method {method!r}; choose one of {', '.join(METHODS)}.")
    return _head_importance(_Ref(subjects.result_key(task, result), result), target, int(batch_rows), method,
                            progress=progress)


@memo(maxsize=16)
def _head_importance(
    ref: _Ref, target: Any, batch_rows: int, method: str = "knockout", progress: ProgressFn | None = None
) -> HeadImportance:
    return _locked(ref.key[0], _importance, ref.key[0], ref.result, target, batch_rows, method, progress)


def _importance(
    task: str, result: Any, target: Any, batch_rows: int, method: str, progress: ProgressFn | None
) -> HeadImportance:
    s = tasks.subject(task, result, target)
    with loading.fused_attention(s.model):  # knockouts and their gradient never read attention weights
        if method == "gradient":
            return _estimate_each(s, progress)
        return _knock_each(s, batch_rows, progress)


def _estimate_each(s: subjects.Subject, progress: ProgressFn | None) -> HeadImportance:
    """Attribution patching: each head's knockout effect ~ -sum(grad * z_h) over its slice of the
    output projection's input, every position and every call of the module in the pass; one forward
    and one backward pass (the gradient is taken only with respect to those inputs: no weight
    gradient is computed or stored)."""
    all_sites = sites(s.model)
    stacks = towers(s.model)
    seen: list[tuple[Site, torch.Tensor]] = []

    def keep(site: Site):
        def hook(module: torch.nn.Module, args: tuple) -> tuple:
            x = args[0]
            if not x.requires_grad:  # nothing upstream needs a gradient: the graph starts here
                x = x.detach().requires_grad_(True)
            seen.append((site, x))
            return (x, *args[1:])

        return hook

    handles = [site.module.register_forward_pre_hook(keep(site)) for site in all_sites]
    try:
        with torch.enable_grad():
            score = s.score(s.run(s.batch(1)))[0]
    finally:
        for h in handles:
            h.remove()
    if progress is not None:
        progress(0.5, "forward pass done; one backward pass")
    grads = torch.autograd.grad(score, [z for _, z in seen], allow_unused=True)
    maps = {t.name: np.zeros((t.n_layers, t.n_heads), dtype=np.float32) for t in stacks}
    for (site, z), g in zip(seen, grads):
        if g is None:  # the score does not depend on this call at all
            continue
        per = -(g * z).detach().float().reshape(-1, site.n_heads, z.shape[-1] // site.n_heads)
        maps[site.tower][site.layer] += per.sum((0, 2)).cpu().numpy()  # a module run twice (the explorer's
        # two sentences) has its head knocked out in both runs: the first-order effects add
    if progress is not None:
        progress(1.0, f"estimated {sum(site.n_heads for site in all_sites)} heads")
    return HeadImportance(s.task, s.answer_label, s.value_name, stacks, [maps[t.name] for t in stacks],
                          float(score.detach()), method="gradient")


def _knock_each(s: subjects.Subject, batch_rows: int, progress: ProgressFn | None) -> HeadImportance:
    all_sites = sites(s.model)
    stacks = towers(s.model)
    device = s.replacement.device
    with torch.no_grad(), recording_parts(s.model) as records:
        base = float(s.score(s.run(s.batch(1)))[0])
    jobs = [(site, h) for site in all_sites for h in range(site.n_heads)]
    maps = {t.name: np.zeros((t.n_layers, t.n_heads), dtype=np.float32) for t in stacks}
    chunks: list[list] = []
    for tower in maps:  # rows of one chunk share a forward pass: same tower, batched stacks only
        mine = [j for j in jobs if j[0].tower == tower]
        size = max(1, batch_rows) if s.towers_batched(tower) else 1
        chunks += [mine[i : i + size] for i in range(0, len(mine), size)]
    done = 0
    for chunk in chunks:
        rows = len(chunk)
        masks: dict[tuple[str, int], torch.Tensor] = {}
        for r, (site, h) in enumerate(chunk):
            mask = masks.setdefault((site.tower, site.layer), torch.ones(rows, site.n_heads, device=device))
            mask[r, h] = 0
        knocked = [site for site, _ in chunk]
        with torch.no_grad(), head_masks(s.model, masks), unchanged_parts(s.model, records, knocked):
            values = s.score(s.run(s.batch(rows))).float().cpu().numpy()
        for (site, h), v in zip(chunk, values):
            maps[site.tower][site.layer, h] = v - base
        done += rows
        if progress is not None:
            progress(done / len(jobs), f"knocked out {done}/{len(jobs)} heads")
    return HeadImportance(s.task, s.answer_label, s.value_name, stacks, [maps[t.name] for t in stacks], base)


_HEAD_TEXT = re.compile(r"^\s*(?P<tower>[a-z][a-z -]*?)?\s*L(?P<layer>\d+)\s*(?:H(?P<head>\d+))?\s*$", re.I)


def parse_heads(text: str, stacks: Sequence[Tower]) -> list[tuple[str, int, int | None]]:
    """'L2H3, L4, decoder cross-attention L1H0' -> (tower, layer, head or None) triples; a missing
    stack name means the first stack (the only one of most models)."""
    names = {t.name.lower(): t.name for t in stacks}
    heads = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        match = _HEAD_TEXT.match(part)
        if match is None:
            raise ValueError(
                f"Cannot read {part!r}: write heads as L2H3, a whole layer as L2, with the stack first "
                f"where there are several ({', '.join(t.name for t in stacks)})."
            )
        tower = (match["tower"] or "").strip().lower()
        if tower and tower not in names:
            raise ValueError(f"No stack called {tower!r}; this model has: {', '.join(t.name for t in stacks)}.")
        head = match["head"]
        heads.append(
            (names[tower] if tower else stacks[0].name, int(match["layer"]), None if head is None else int(head))
        )
    if not heads:
        raise ValueError("Name at least one head (e.g. L0H1) or layer (e.g. L2) to knock out.")
    return heads


def _run_ablate(
    task: str, result: Any, heads: Sequence | str = (), target: Any = None, top_k: int = 5
) -> AblationResult:
    if isinstance(heads, str):
        heads = parse_heads(heads, towers(tasks.load(task, result.model_id).model))
    return ablate(task, result, heads, target, top_k)


def _run_map(
    task: str, result: Any, target: Any = None, method: str = "knockout", progress: ProgressFn | None = None
) -> HeadImportance:
    return head_importance(task, result, target, progress=progress, method=method)


ABLATE = Explainer(specs.ABLATE, _run_ablate)
HEAD_MAP = Explainer(specs.HEAD_MAP, _run_map)
