"""Layer lens on every task of core.registry.TASKS (tiny models): the last layer's lens equals the
model's actual output exactly, no full forward pass runs, early layers carry the caption.
A task without a lens must be listed in EXCEPTIONS with its reason, or its test fails."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core import registry
from core.lens_types import HeadLens, LensGrid
from demos.explain import catalog, lens
from tests.lens_support import NoFullPass, full_pass, loaded, make_result

EXCEPTIONS = {"explorer": "MiniLM is a bare sentence encoder: it has no task head to read its layers with."}
TIGHT = {"rtol": 1e-5, "atol": 1e-6}
ALL = [t.key for t in registry.TASKS]

_results: dict[str, object] = {}


def result_for(task: str):
    if task not in _results:
        _results[task] = make_result(task)
    return _results[task]


def _softmax(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=-1).numpy()


def _check_generation(r, grid: LensGrid) -> None:
    out = full_pass("generation", r)[0]
    last, first = grid.n_layers - 1, r.n_prompt - 1
    np.testing.assert_allclose(lens.head_logits("generation", r, last), out.logits[0].numpy(), rtol=1e-5, atol=1e-5)
    # by default only the answer's part is computed: from the last prompt position (it chose the first new token)
    assert (grid.first, grid.total, grid.positions) == (first, len(r.tokens), r.tokens[first:])
    np.testing.assert_allclose(grid.chosen_probs[last, :-1], r.model_prob, **TIGHT)
    top = torch.softmax(out.logits[0].float(), dim=-1).topk(5, dim=-1)
    np.testing.assert_allclose(grid.top5_probs[last], top.values.numpy()[first:], **TIGHT)
    whole = lens.lens("generation", r, start=0)  # the prompt's positions too
    assert (whole.first, whole.total, whole.positions) == (0, len(r.tokens), r.tokens)
    np.testing.assert_allclose(whole.top5_probs[last], top.values.numpy(), **TIGHT)
    names = loaded("generation", r).processor.convert_ids_to_tokens(top.indices[:, 0].tolist())
    assert [row[0] for row in whole.top5_tokens[last]] == names
    assert whole.targets[:-1] == r.tokens[1:] and whole.targets[-1] == "" and np.isnan(whole.chosen_probs[:, -1]).all()
    assert grid.groups.count("generated") == r.steps and whole.groups.count("prompt") == first
    # Greedy decoding: every generated token is the last layer's top-1, so the model has committed by then.
    for j in range(len(grid.positions) - 1):
        assert grid.top_tokens[last][j] == grid.targets[j]
        assert grid.commit_layer(j) is not None and grid.commit_layer(j) <= last
    assert grid.commit_layer(len(grid.positions) - 1) is None


def _check_translation(r, grid: LensGrid) -> None:
    out = full_pass("translation", r)[0]
    last = grid.n_layers - 1
    assert last == loaded("translation", r).model.config.decoder_layers
    np.testing.assert_allclose(lens.head_logits("translation", r, last), out.logits[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grid.chosen_probs[last], r.target_probs, **TIGHT)
    assert grid.positions == r.decoder_tokens and grid.targets == r.target_tokens


def _check_asr(r, grid: LensGrid) -> None:
    out = full_pass("asr", r)[0]
    last, n_prompt = grid.n_layers - 1, len(r.prompt)
    logits = out.logits[0, n_prompt - 1 :]
    np.testing.assert_allclose(lens.head_logits("asr", r, last), logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grid.chosen_probs[last], r.token_probs, **TIGHT)
    np.testing.assert_allclose(grid.top5_probs[last], torch.softmax(logits.float(), -1).topk(5, -1).values.numpy(), **TIGHT)
    assert grid.targets == r.tokens


def _check_sentiment(r, hl: HeadLens) -> None:
    out = full_pass("sentiment", r)[0]
    np.testing.assert_allclose(hl.class_probs[-1], _softmax(out.logits[0]), **TIGHT)
    np.testing.assert_allclose(hl.class_probs[-1], r.probs, **TIGHT)
    assert hl.classes == r.labels and hl.final_label == r.predicted and hl.top_labels[-1][0] == r.predicted


def _check_qa(r, hl: HeadLens) -> None:
    from demos import qa

    out = full_pass("qa", r)[0]
    span = hl.spans[-1]
    assert (span.text, span.start, span.end) == (r.answer, r.start_index, r.end_index)
    assert span.prob == pytest.approx(r.score, rel=1e-5)
    m = loaded("qa", r)
    enc = qa.encode(m, r.question, r.context)
    s, e = qa.best_span(out.start_logits[0].numpy(), out.end_logits[0].numpy(), enc.context_mask)
    assert (s, e) == (span.start, span.end)
    np.testing.assert_allclose(hl.final_probs[-1], r.score, **TIGHT)
    assert len(hl.spans) == m.model.config.n_layers + 1


def _check_image(r, hl: HeadLens) -> None:
    out = full_pass("image", r)[0]
    probs = torch.softmax(out.logits[0].float(), -1)
    top = probs.topk(5)
    np.testing.assert_allclose(hl.top_probs[-1], top.values.numpy(), **TIGHT)
    assert hl.top_labels[-1] == [r.labels[i] for i in top.indices.tolist()]
    assert hl.final_label == r.predicted
    np.testing.assert_allclose(hl.final_probs[-1], r.probs.max(), **TIGHT)


def _check_clip(r, hl: HeadLens) -> None:
    out = full_pass("clip", r)[0]
    for item in range(len(r.sources)):
        h = hl if item == 0 else lens.lens("clip", r, item=item)
        np.testing.assert_allclose(h.class_probs[-1], _softmax(out.logits_per_image[item]), **TIGHT)
        np.testing.assert_allclose(h.class_probs[-1], r.probs[item], **TIGHT)
        assert h.final_label == r.texts[int(np.argmax(r.logits[item]))]


CHECKS = {
    "generation": _check_generation,
    "translation": _check_translation,
    "asr": _check_asr,
    "sentiment": _check_sentiment,
    "qa": _check_qa,
    "image": _check_image,
    "clip": _check_clip,
}


@pytest.mark.parametrize("task", ALL)
def test_last_layer_of_the_lens_is_the_models_output(task):
    if task in EXCEPTIONS:
        assert task in lens.NOT_FOR and not catalog.get("lens").applies_to(task)
        assert catalog.get("lens").not_for[task]
        with pytest.raises(ValueError, match="no task head"):
            lens.lens(task, result_for(task))
        return
    assert task in CHECKS, f"task {task!r} has no lens exactness check (add one, or an exception with its reason)"
    assert catalog.get("lens").applies_to(task)
    r = result_for(task)
    m = loaded(task, r)
    with NoFullPass(m.model):
        out = lens.lens(task, r)
    assert isinstance(out, LensGrid if task in lens.DECODERS else HeadLens)
    CHECKS[task](r, out)


@pytest.mark.parametrize("task", [t for t in ALL if t not in EXCEPTIONS])
def test_every_layer_is_a_distribution_with_the_caption(task):
    out = lens.lens(task, result_for(task))
    assert "not trained for the head" in out.caption and out.layer_labels[0] == "embeddings"
    if isinstance(out, LensGrid):
        n = len(out.positions)
        assert out.top5_probs.shape == (out.n_layers, n, 5) and len(out.top_tokens) == out.n_layers
        assert np.all(np.diff(out.top5_probs, axis=-1) <= 0) and np.all(out.top5_probs <= 1)
        np.testing.assert_array_equal(out.top_probs, out.top5_probs[..., 0])
        has = ~np.isnan(out.chosen_probs)
        assert np.all(out.chosen_probs[has] <= out.top_probs[has] + 1e-6)
    else:
        assert out.top_probs.shape[0] == out.n_layers and np.all((out.final_probs >= 0) & (out.final_probs <= 1))
        if out.class_probs is not None:
            np.testing.assert_allclose(out.class_probs.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("task", lens.DECODERS)
def test_a_window_of_the_lens_is_that_slice_of_the_whole_grid(task, monkeypatch):
    """Only the window asked for is computed: each window equals the same columns of the whole grid, starts
    where asked (clamped to the last position) and holds at most LENS_COLUMNS columns."""
    r = result_for(task)
    whole = lens.lens(task, r, start=0)
    n = whole.total
    assert len(whole.positions) == n > 3 and whole.first == 0
    monkeypatch.setattr(lens, "LENS_COLUMNS", 3)
    for start in (0, 2, n - 2, n + 5):
        lo = min(start, n - 1)
        w = lens.lens(task, r, start=start)
        cols = slice(lo, lo + 3)
        assert (w.first, w.total, w.positions, w.targets) == (lo, n, whole.positions[cols], whole.targets[cols])
        assert w.groups == whole.groups[cols] and w.top5_tokens == [row[cols] for row in whole.top5_tokens]
        np.testing.assert_allclose(w.top5_probs, whole.top5_probs[:, cols], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(w.chosen_probs, whole.chosen_probs[:, cols], rtol=1e-5, atol=1e-7)
    default = lens.lens(task, r)  # the answer's window: the last columns, never before the last prompt position
    lo = max(n - 3, r.n_prompt - 1) if task == "generation" else n - 3
    assert (default.first, default.positions) == (lo, whole.positions[lo : lo + 3])


def test_gpt2_last_state_is_not_normed_twice():
    """ln_f applied again to the last state would change the logits (the lens must skip it there)."""
    r = result_for("generation")
    m = loaded("generation", r)
    last = torch.from_numpy(r.embeddings.vectors[-1])
    with torch.inference_mode():
        twice = m.model.lm_head(m.model.transformer.ln_f(last)).numpy()
    assert not np.allclose(lens.head_logits("generation", r, len(r.embeddings.vectors) - 1), twice, atol=1e-4)
