"""Activation patching exact by construction on every family of the architecture table that a patching task
serves (generation, sentiment, translation, image, CLIP), run through the app's own task and Pair, checked against
hooks written here on module paths spelled out per family from the transformers sources (not the adapter's):

(a) patching nothing gives the corrupted output exactly;
(b) patching the whole residual stream at the first layer gives the clean output exactly;
(c) one residual, one MLP and one attention-head patch each equal a corrupted pass with that one activation
    swapped by a hook written here;
and no hook outlives the request. QA, speech and the explorer have no patching (their reasons are tested in
test_patching.py); SigLIP is checked in tests/demos/test_siglip.py.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from demos.explain import patch_tasks, patching
from demos.explain.patching import Edit
from tests.demos.explain.family_models import FAMILIES, serving

# Corrupted inputs, tried in order until one has the clean input's token count (the whole-stream patch needs
# position-by-position pairs); the image task blurs the centre, CLIP's clean text is its best match.
CORRUPTED = {
    "generation": ["The quick brown dog", "The quick red fox", "The slow brown fox", "A quick brown fox"],
    "sentiment": ["The plot made no sense and the dialogue was painfully good.",
                  "The plot made good sense and the dialogue was painfully dull.",
                  "The plot made no sense and the music was painfully dull."],
    "translation": ["The house is small, but the garden is beautiful!",
                    "The house is small, and the garden is beautiful.",
                    "The house is big, but the garden is beautiful.",
                    "The house is small, but the garden is ugly.",
                    "The house is small, but the room is beautiful."],
    "clip": ["a photo of a dog", "a photo of a car", "a picture of a cat", "a photo of the cat"],
    "image": ["centre"],
}


def _path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


# family -> (the patched stack's blocks, the MLP output module inside a block): from the transformers sources.
# The MLP output is the module whose output is added to the residual stream (post-norm encoders: the dense layer
# before the add and norm; T5: the feed-forward sublayer's DenseReluDense).
SITES = {
    "gpt2": ("transformer.h", "mlp"),
    "llama": ("model.layers", "mlp"),
    "qwen2": ("model.layers", "mlp"),
    "gemma": ("model.layers", "mlp"),
    "gpt_neox": ("gpt_neox.layers", "mlp"),
    "opt": ("model.decoder.layers", "fc2"),
    "distilbert": ("distilbert.transformer.layer", "ffn"),
    "bert": ("bert.encoder.layer", "output.dense"),
    "roberta": ("roberta.encoder.layer", "output.dense"),
    "electra": ("electra.encoder.layer", "output.dense"),
    "deberta-v2": ("deberta.encoder.layer", "output.dense"),
    "marian": ("model.encoder.layers", "fc2"),
    "bart": ("model.encoder.layers", "fc2"),
    "m2m_100": ("model.encoder.layers", "fc2"),
    "t5": ("encoder.block", "layer.1.DenseReluDense"),
    "vit": ("vit.layers", "mlp"),
    "deit": ("deit.layers", "mlp"),
    "beit": ("beit.layers", "mlp"),
    "clip": ("text_model.encoder.layers", "mlp"),
}
WHERE = {"translation": "encoder", "clip": "text"}  # the stack patched, in Family.out_proj's words
PATCHED = [n for n, f in FAMILIES.items() if f.task in patch_tasks.PAIRS]


def test_every_family_of_a_patching_task_is_checked_here():
    assert set(PATCHED) == set(SITES)


def _heads(model: Any, task: str) -> int:
    c = model.config
    if task == "clip":
        return c.text_config.num_attention_heads
    for key in ("encoder_attention_heads", "num_heads", "num_attention_heads", "n_heads"):
        if task == "translation" and key == "num_attention_heads" and hasattr(c, "encoder_attention_heads"):
            continue
        if getattr(c, key, None):
            return int(getattr(c, key))
    raise AssertionError(task)


def _pair(z) -> patch_tasks.Pair:
    """The app's Pair for the family's result, with a corrupted input of the clean input's length."""
    tried = []
    with serving(z.task, z.folder):
        for text in CORRUPTED[z.task]:
            pair = patch_tasks.PAIRS[z.task](z.result, text, None)
            if len(pair.clean_units) == len(pair.corrupted_units):
                return pair
            tried.append((text, pair.corrupted_labels))
    raise AssertionError(f"no corrupted input of the clean length for {z.family.name}: {pair.clean_labels} {tried}")


def _hooks(model) -> set:
    return {(name, kind, key) for name, m in model.named_modules()
            for kind, table in (("out", m._forward_hooks), ("pre", m._forward_pre_hooks)) for key in table}


def _run(pair: patch_tasks.Pair, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return pair.run(inputs).float()


def _swapped(pair: patch_tasks.Pair, module: Any, pre: bool, where: Any) -> torch.Tensor:
    """The corrupted run with `where` (an index into the activation) of module's output (or, `pre`, its first
    input) replaced by the clean run's, by hooks written here."""
    stored: dict = {}

    def first(args, out):
        x = args[0] if pre else out
        x = x[0] if isinstance(x, tuple) else x
        return x.view(1, -1, x.shape[-1]) if x.dim() == 2 else x  # OPT's MLP sees (positions, width)

    def grab(_m, args, out=None):
        stored["x"] = first(args, out).detach().clone()

    def swap(_m, args, out=None):
        x = first(args, out).clone()
        x[where] = stored["x"][where]
        if not pre and (out[0] if isinstance(out, tuple) else out).dim() == 2:
            x = x.view(-1, x.shape[-1])
        if pre:
            return (x, *args[1:])
        return (x, *out[1:]) if isinstance(out, tuple) else x

    register = module.register_forward_pre_hook if pre else module.register_forward_hook
    handle = register(grab)
    _run(pair, pair.clean)
    handle.remove()
    handle = register(swap)
    try:
        return _run(pair, pair.batch(1))
    finally:
        handle.remove()


@pytest.mark.parametrize("name", PATCHED)
def test_patching_is_exact_on_every_family(zoo, name):
    z = zoo(name)
    pair = _pair(z)
    model, n = pair.model, len(pair.corrupted_units)
    blocks_path, mlp_path = SITES[name]
    blocks = _path(model, blocks_path)
    before = _hooks(model)
    with serving(z.task, z.folder):
        clean, bad = _run(pair, pair.clean), _run(pair, pair.batch(1))
        assert not torch.equal(clean, bad), "the corrupted input must change the answer for the test to mean anything"
        # (a) nothing patched: the corrupted run
        assert torch.equal(patching.patched_logits(pair, [[]]), bad)
        # (b) the whole residual stream at the first layer: the clean run
        whole = patching.patched_logits(pair, [[Edit("residual", 0, j, j) for j in range(n)]])
        torch.testing.assert_close(whole, clean, rtol=0, atol=1e-6)
        # (c) one activation swapped, against hooks on the modules named here
        pos = next(j for j, (a, b) in enumerate(zip(pair.clean_units, pair.corrupted_units, strict=True)) if a != b)
        got = patching.patched_logits(pair, [[Edit("residual", 0, pos, pos)]])
        hand = _swapped(pair, blocks[0], False, (slice(None), pos))
        assert torch.equal(got, hand) and not torch.equal(hand, bad)
        mlp = _path(blocks[0], mlp_path)
        got = patching.patched_logits(pair, [[Edit("mlp", 0, pos, pos)]])
        hand = _swapped(pair, mlp, False, (slice(None), pos))
        assert torch.equal(got, hand) and not torch.equal(hand, bad)
        proj = z.family.out_proj(model, WHERE.get(z.task, "self"), 0)
        heads = _heads(model, z.task)
        d = (proj.in_features if hasattr(proj, "in_features") else proj.weight.shape[0]) // heads  # GPT-2: Conv1D
        head = heads - 1
        got = patching.patched_logits(pair, [[Edit("attention", 0, j, j, head) for j in range(n)]])
        assert torch.equal(got, _swapped(pair, proj, True, (slice(None), slice(None), slice(head * d, (head + 1) * d))))
    assert _hooks(model) == before
