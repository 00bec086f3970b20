"""Head / layer knockouts on every task: exactness, a manual recomputation, the batched head map,
and isolation between concurrent requests."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from core import registry
from demos.explain import catalog, interventions, tasks
from tests.cases import CASES, reported_value, result_for

TASKS = registry.KEYS


def test_every_registered_task_has_a_row_and_an_ablate_explainer():
    assert set(CASES) == set(TASKS)
    assert set(tasks.MODULES) == set(TASKS)
    for name in ("ablate", "head_map"):
        assert set(catalog.get(name).tasks) == set(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_subject_answer_equals_the_tasks_own_forward_pass(task):
    s = tasks.subject(task, result_for(task))
    with torch.no_grad():
        value = float(s.score(s.run(s.batch(1)))[0])
    assert value == pytest.approx(reported_value(task), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("task", TASKS)
def test_knocking_out_nothing_equals_the_original_exactly(task):
    result = result_for(task)
    s = tasks.subject(task, result)
    x = s.batch(1)
    ones = {(site.tower, site.layer): torch.ones(1, site.n_heads) for site in interventions.sites(s.model)}
    with torch.no_grad():
        plain = s.outcome_probs(s.run(x))
        with interventions.head_masks(s.model, ones):  # every hook in place, every head kept
            hooked = s.outcome_probs(s.run(x))
    assert torch.equal(plain, hooked)
    got = interventions.ablate(task, result, [])
    assert np.array_equal(got.before, got.after) and got.score_before == got.score_after
    assert not any(m._forward_pre_hooks for m in s.model.modules())  # hooks removed


@pytest.mark.parametrize("task", TASKS)
def test_knocking_out_a_whole_layer_changes_the_answer_and_is_undone(task):
    result = result_for(task)
    tower = interventions.towers(tasks.subject(task, result).model)[0]
    got = interventions.ablate(task, result, [(tower.name, tower.n_layers - 1, None)])
    assert got.score_after != got.score_before
    assert got.knocked_out == [f"{tower.name} L{tower.n_layers - 1} (all heads)"]
    assert interventions.ablate(task, result, []).score_after == got.score_before


def _gpt2_manual_logits(model, ids: torch.Tensor, layer: int, head: int) -> torch.Tensor:
    """GPT-2 computed by hand, block by block, with head `head` of block `layer` zeroed before c_proj."""
    t = model.transformer
    n = ids.shape[1]
    h = t.wte(ids) + t.wpe(torch.arange(n)[None])
    nh = model.config.n_head
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    for i, block in enumerate(t.h):
        q, k, v = block.attn.c_attn(block.ln_1(h)).split(model.config.n_embd, dim=2)
        q, k, v = (z.view(1, n, nh, -1).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / (q.shape[-1] ** 0.5)
        heads = torch.softmax(scores.masked_fill(~causal, torch.finfo(scores.dtype).min), dim=-1) @ v  # (1, nh, n, dh)
        if i == layer:
            heads[:, head] = 0.0
        h = h + block.attn.c_proj(heads.transpose(1, 2).reshape(1, n, -1))
        h = h + block.mlp(block.ln_2(h))
    return model.lm_head(t.ln_f(h))


def test_one_head_knockout_equals_a_manual_computation_on_gpt2():
    result = result_for("generation")
    s = tasks.subject("generation", result)
    ids = s.inputs["input_ids"]
    with torch.no_grad():
        assert torch.allclose(_gpt2_manual_logits(s.model, ids, -1, 0), s.model(input_ids=ids).logits, atol=1e-5)
        for layer, head in ((0, 1), (1, 3)):
            with interventions.head_masks(s.model, interventions.knockout_masks(s.model, [("layers", layer, head)])):
                hooked = s.model(input_ids=ids).logits
            manual = _gpt2_manual_logits(s.model, ids, layer, head)
            assert torch.allclose(hooked, manual, atol=1e-5)
            assert not torch.allclose(hooked, s.model(input_ids=ids).logits, atol=1e-5)


@pytest.mark.parametrize("task", TASKS)
def test_batched_head_map_equals_one_knockout_at_a_time(task):
    result = result_for(task)
    hm = interventions.head_importance(task, result, batch_rows=8)
    assert [m.shape for m in hm.maps] == [(t.n_layers, t.n_heads) for t in hm.towers]
    for tower, grid in zip(hm.towers, hm.maps):
        for layer in range(tower.n_layers):
            for head in range(tower.n_heads):
                one = interventions.ablate(task, result, [(tower.name, layer, head)])
                assert grid[layer, head] == pytest.approx(one.score_after - one.score_before, abs=2e-6)
    assert hm.score == pytest.approx(reported_value(task), rel=1e-4, abs=1e-6)
    seen = []
    interventions._head_importance.cache_clear()
    interventions.head_importance(task, result, batch_rows=3, progress=lambda f, msg: seen.append(f))
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)


# Models of two stacks: (task, where the upstream stack's blocks are, where the downstream stack's are, the
# downstream head knocked out: tower name, its output projection's path, layer, head), written here from the
# transformers classes, not from the adapter table.
TWO_STACKS = [
    ("translation", "model.encoder.layers", "model.decoder.layers",
     ("decoder cross-attention", "model.decoder.layers.{}.encoder_attn.out_proj", 1, 3)),
    ("asr", "model.encoder.layers", "model.decoder.layers",
     ("decoder self-attention", "model.decoder.layers.{}.self_attn.out_proj", 1, 3)),
    ("clip", "vision_model.encoder.layers", "text_model.encoder.layers",
     ("text", "text_model.encoder.layers.{}.self_attn.out_proj", 1, 1)),
]


def _module(model: torch.nn.Module, path: str) -> torch.nn.Module:
    for part in path.split("."):
        model = model[int(part)] if part.isdigit() else getattr(model, part)
    return model


@pytest.mark.parametrize("case", TWO_STACKS, ids=[c[0] for c in TWO_STACKS])
def test_a_knockout_reruns_only_what_comes_after_it_and_matches_a_hand_knockout(case):
    """Knocking out a head downstream (a decoder head, a text head) does not run the upstream stack again (the
    encoder, the image tower) nor the blocks before the knocked one; upstream, both stacks run (CLIP's text tower
    does not read the image: it runs once).
    The value equals a forward pass with the head's slice zeroed by a hook written here, every stack running;
    the head map's cell for that head equals the same difference. (The tiny Marian's heads move its answer by
    about 1e-6 of a probability of 3e-3, so the comparisons are relative.)"""
    task, up, down, (tower, out_path, layer, head) = case
    result = result_for(task)
    s = tasks.subject(task, result)
    # a block runs when its self-attention runs (a replayed block's hooks fire, its insides do not)
    blocks = {"up": _module(s.model, up)[0], "knocked": _module(s.model, down)[layer]}
    if layer:
        blocks["before"] = _module(s.model, down)[layer - 1]
    runs = dict.fromkeys(blocks, 0)

    def counter(key):
        return lambda *_: runs.__setitem__(key, runs[key] + 1)

    handles = [block.self_attn.register_forward_hook(counter(key)) for key, block in blocks.items()]
    try:
        got = interventions.ablate(task, result, [(tower, layer, head)])
        # before: everything; after: the knocked block and what follows it, not the blocks before it
        assert runs == {"up": 1, "knocked": 2, **({"before": 1} if layer else {})}
        upstream = interventions.towers(s.model)[0].name if task != "clip" else "vision"
        runs.update(dict.fromkeys(runs, 0))
        interventions.ablate(task, result, [(upstream, 0, 0)])
        assert runs["up"] == 2 and runs["knocked"] == (1 if task == "clip" else 2)  # CLIP's towers are independent
    finally:
        for h in handles:
            h.remove()
    assert not any("forward" in vars(module) for module in s.model.modules())  # every replacement removed
    proj = _module(s.model, out_path.format(layer))
    heads = next(t.n_heads for t in interventions.towers(s.model) if t.name == tower)
    width = proj.in_features // heads

    def zero(module, args):
        x = args[0].clone()
        x[..., head * width:(head + 1) * width] = 0
        return (x, *args[1:])

    hook = proj.register_forward_pre_hook(zero)
    try:
        with torch.no_grad():
            by_hand = float(s.outcome_probs(s.run(s.batch(1)))[0][s.answer])
    finally:
        hook.remove()
    assert got.score_after == pytest.approx(by_hand, rel=1e-5, abs=1e-12) and got.score_after != got.score_before
    interventions._head_importance.cache_clear()
    hm = interventions.head_importance(task, result, batch_rows=8)
    grid = hm.maps[[t.name for t in hm.towers].index(tower)]
    effect = by_hand - got.score_before
    assert abs(effect) > 1e-7 and grid[layer, head] == pytest.approx(effect, rel=1e-2, abs=1e-9)


@pytest.mark.parametrize("task", TASKS)
def test_knockouts_never_reach_concurrent_requests_of_the_same_task(task, monkeypatch):
    # every call on the same torch thread count: the fused attention kernel's last bits follow it (and each
    # call would otherwise choose it by what else runs), and a whole-model knockout of a tiny model moves the
    # answer by as little as 1e-8, so the requests are compared bit for bit
    monkeypatch.setenv("XRAY_ADAPTIVE_THREADS", "0")
    result = result_for(task)
    original = interventions.ablate(task, result, [])
    towers = interventions.towers(tasks.subject(task, result).model)
    everything = [(t.name, layer, None) for t in towers for layer in range(t.n_layers)]
    knocked = interventions.ablate(task, result, everything)
    assert not np.array_equal(knocked.after, original.after)
    errors: list[str] = []
    stop = threading.Event()

    def knock() -> None:
        while not stop.is_set():
            got = interventions.ablate(task, result, everything)
            if not np.array_equal(got.after, knocked.after):
                errors.append("knockout result changed")

    def plain() -> None:
        for _ in range(15):
            got = interventions.ablate(task, result, [])
            if not (np.array_equal(got.after, original.after) and np.array_equal(got.before, original.before)):
                errors.append("a knockout leaked into another request")

    threads = [threading.Thread(target=knock)] + [threading.Thread(target=plain) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    assert not errors


def test_sentiment_analysis_is_untouched_while_heads_are_knocked_out():
    from demos import sentiment

    result = result_for("sentiment")
    expected = result.probs
    stop, errors = threading.Event(), []

    def knock() -> None:
        while not stop.is_set():
            interventions.ablate("sentiment", result, [("layers", 0, None), ("layers", 1, None)])

    worker = threading.Thread(target=knock)
    worker.start()
    try:
        for _ in range(20):  # uncached: every call runs the shared model again
            if not np.array_equal(sentiment.analyse.__wrapped__(result.text).probs, expected):
                errors.append("analysis changed")
    finally:
        stop.set()
        worker.join()
    assert not errors


def test_unknown_heads_are_refused():
    result = result_for("sentiment")
    with pytest.raises(ValueError):
        interventions.ablate("sentiment", result, [("layers", 99, 0)])
    with pytest.raises(ValueError):
        interventions.ablate("sentiment", result, [("layers", 0, 99)])


# Every attention output projection of each tiny model, written here from the transformers classes (not
# from the adapter table): tower name of the head map -> (module path with {} for the layer, layers).
PROJECTIONS = {
    "generation": {"layers": "transformer.h.{}.attn.c_proj"},
    "sentiment": {"layers": "distilbert.transformer.layer.{}.attention.out_lin"},
    "qa": {"layers": "distilbert.transformer.layer.{}.attention.out_lin"},
    "translation": {"encoder": "model.encoder.layers.{}.self_attn.out_proj",
                    "decoder self-attention": "model.decoder.layers.{}.self_attn.out_proj",
                    "decoder cross-attention": "model.decoder.layers.{}.encoder_attn.out_proj"},
    "image": {"layers": "vit.layers.{}.attention.o_proj"},
    "asr": {"encoder": "model.encoder.layers.{}.self_attn.out_proj",
            "decoder self-attention": "model.decoder.layers.{}.self_attn.out_proj",
            "decoder cross-attention": "model.decoder.layers.{}.encoder_attn.out_proj"},
    "clip": {"text": "text_model.encoder.layers.{}.self_attn.out_proj",
             "vision": "vision_model.encoder.layers.{}.self_attn.out_proj"},
    "explorer": {"layers": "transformer.layer.{}.attention.out_lin"},
}


@pytest.mark.parametrize("task", TASKS)
def test_quick_head_map_is_the_derivative_of_each_knockout(task):
    """The quick map's cell for head h is the first-order term of knocking h out: d score / dt at t = 0
    where the head's slice of its output projection's input is scaled by (1 - t) (in every call: the
    explorer runs its model twice). Reference: FORWARD-mode autodiff (the map uses a backward pass), the
    tangent -z_h set by a hook written here on the projection named here, every head of every tower,
    on the model's plain (eager) attention. The exact map is only close (a knockout is not small): the
    quick one must find the same most important head, or correlate with it."""
    import torch.autograd.forward_ad as fwad

    assert set(PROJECTIONS) == set(TASKS)
    result = result_for(task)
    s = tasks.subject(task, result)
    est = interventions.head_importance(task, result, method="gradient")
    exact = interventions.head_importance(task, result)
    assert est.method == "gradient" and exact.method == "knockout"

    def derivative(proj: torch.nn.Module, head: int, width: int) -> float:
        def direction(module, args):
            x = args[0]
            tangent = torch.zeros_like(x)
            tangent[..., head * width:(head + 1) * width] = -x[..., head * width:(head + 1) * width]
            return (fwad.make_dual(x, tangent), *args[1:])

        hook = proj.register_forward_pre_hook(direction)
        try:
            with torch.no_grad(), fwad.dual_level():
                probs = s.outcome_probs(s.run(s.batch(1)))
                return float(fwad.unpack_dual(probs).tangent[0, s.answer])
        finally:
            hook.remove()

    assert [t.name for t in est.towers] == [t.name for t in exact.towers]
    assert {t.name for t in est.towers} == set(PROJECTIONS[task])
    for tower, grid, exact_grid in zip(est.towers, est.maps, exact.maps):
        ref = np.zeros((tower.n_layers, tower.n_heads))
        for layer in range(tower.n_layers):
            proj = _module(s.model, PROJECTIONS[task][tower.name].format(layer))
            width = proj.weight.shape[1 if isinstance(proj, torch.nn.Linear) else 0] // tower.n_heads  # GPT-2's Conv1D: (in, out)
            for head in range(tower.n_heads):
                ref[layer, head] = derivative(proj, head, width)
        bound = np.abs(ref).max()
        assert bound > 0, f"{task} {tower.name}: no head moves the score"
        np.testing.assert_allclose(grid, ref, rtol=1e-3, atol=1e-4 * bound, err_msg=f"{task} {tower.name}")
        same_top = np.argmax(np.abs(grid)) == np.argmax(np.abs(exact_grid))
        assert same_top or np.corrcoef(grid.ravel(), exact_grid.ravel())[0, 1] > 0.6, f"{task} {tower.name}"
    assert est.score == pytest.approx(exact.score, rel=1e-5)


def test_an_unknown_head_map_method_gets_a_clear_message():
    with pytest.raises(ValueError, match=r"Unknown head-map method 'fast'; choose one of knockout, gradient"):
        interventions.head_importance("sentiment", result_for("sentiment"), method="fast")
