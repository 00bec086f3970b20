"""Activation patching and steering (demos.explain.patching, demos.explain.patch_tasks): exact by
construction, checked against hooks and generations written here (module paths spelled out per family,
not the adapter's), on GPT-2, a tiny Llama and Qwen2 built from configs, and the sentiment encoder;
hooks never outlive a request nor reach another user's answer."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import transformers as T

from core import registry
from core.patching_types import GRIDS, PatchGrid
from demos.explain import catalog, patch_tasks, patching, tasks
from demos.explain.patching import Edit

CLEAN, CORRUPTED = "The cat sat on the mat", "The dog sat on the mat"  # equal lengths in every tiny tokenizer
SMALL = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
             vocab_size=100, max_position_embeddings=64, attn_implementation="eager")


def _module(family: str, model, kind: str, layer: int):
    """The hooked module, spelled out here per family (independent of demos.adapters)."""
    if family == "gpt2":
        block = model.transformer.h[layer]
        return {"residual": block, "attention": block.attn.c_proj, "mlp": block.mlp}[kind]
    if family == "distilbert":
        block = model.distilbert.transformer.layer[layer]
        return {"residual": block, "attention": block.attention.out_lin, "mlp": block.ffn}[kind]
    block = model.model.layers[layer]  # llama, qwen2
    return {"residual": block, "attention": block.self_attn.o_proj, "mlp": block.mlp}[kind]


def _tiny_decoder(family: str):
    torch.manual_seed(0)
    cls, cfg = {"llama": (T.LlamaForCausalLM, T.LlamaConfig), "qwen2": (T.Qwen2ForCausalLM, T.Qwen2Config)}[family]
    model = cls(cfg(**SMALL)).eval()
    clean = torch.tensor([[5, 17, 42, 8, 23, 61, 9]])
    bad = clean.clone()
    bad[0, 2] = 77
    return patch_tasks.Pair(
        model, {"input_ids": clean}, {"input_ids": bad},
        lambda kw: model(input_ids=kw["input_ids"], use_cache=False).logits[:, -1],
        clean[0].tolist(), bad[0].tolist(), [str(i) for i in clean[0].tolist()], [str(i) for i in bad[0].tolist()])


_results: dict = {}


def _result(task: str, text: str = CLEAN):
    if (task, text) not in _results:
        mod = tasks.module(task)
        _results[(task, text)] = mod.generate(text, 3) if task == "generation" else mod.analyse(text)
    return _results[(task, text)]


def _pair(family: str) -> tuple[patch_tasks.Pair, str]:
    """(the Pair, its family) of GPT-2 and DistilBERT (through the tasks) or a tiny Llama / Qwen2."""
    if family == "gpt2":
        return patch_tasks.PAIRS["generation"](_result("generation"), CORRUPTED, None), "gpt2"
    if family == "distilbert":
        return patch_tasks.PAIRS["sentiment"](_result("sentiment"), CORRUPTED, None), "distilbert"
    return _tiny_decoder(family), family


FAMILIES = ("gpt2", "distilbert", "llama", "qwen2")


def _hooks(model) -> set:
    """Every forward (pre-)hook on `model` (transformers installs its own output-capturing hooks for good)."""
    return {(name, kind, key) for name, m in model.named_modules()
            for kind, table in (("out", m._forward_hooks), ("pre", m._forward_pre_hooks)) for key in table}


def _loaded_models() -> list:
    from demos.runtime import loading

    return list({id(m.model): m.model for m in [*loading._cache.values(), *loading._explain_cache.values()]}.values())


def test_alignment_matches_ends_and_right_aligns_the_part_that_differs():
    assert patching.alignment([1, 2, 3], [1, 9, 3]) == [0, 1, 2]
    # clean: The E iff el Tower is in / corrupted: The Col os seum is in
    clean, bad = ["The", "E", "iff", "el", "Tower", "is", "in"], ["The", "Col", "os", "seum", "is", "in"]
    assert patching.alignment(clean, bad) == [0, 2, 3, 4, 5, 6]
    assert patching.alignment(bad, clean) == [0, None, 1, 2, 3, 4, 5]  # a corrupted unit without a partner


@pytest.mark.parametrize("family", FAMILIES)
def test_patching_nothing_gives_the_corrupted_output_exactly(family):
    pair, _ = _pair(family)
    before = _hooks(pair.model)
    with torch.no_grad():
        plain = pair.run(pair.batch(1)).float()
    assert torch.equal(patching.patched_logits(pair, [[]]), plain)
    assert _hooks(pair.model) == before


@pytest.mark.parametrize("family", FAMILIES)
def test_patching_the_whole_residual_stream_at_the_first_layer_gives_the_clean_output_exactly(family):
    pair, _ = _pair(family)
    before = _hooks(pair.model)
    n = len(pair.corrupted_units)
    assert len(pair.clean_units) == n
    with torch.no_grad():
        clean = pair.run(pair.clean).float()
    got = patching.patched_logits(pair, [[Edit("residual", 0, j, j) for j in range(n)]])
    assert torch.equal(got, clean)
    heads = patching.sites(pair.model, pair.stack).heads  # every head one by one = the whole projection input
    every = patching.patched_logits(pair, [[Edit("attention", 0, j, j) for j in range(n)],
                                           [Edit("attention", 0, j, j, h) for j in range(n) for h in range(heads)]])
    assert torch.equal(every[0], every[1])
    assert _hooks(pair.model) == before


def _hand_patched(family: str, pair: patch_tasks.Pair, kind: str, layer: int, where: int, head_dim: int) -> torch.Tensor:
    """The corrupted run with ONE activation swapped for the clean one, by hooks written here:
    residual / mlp: position `where` of the module's output; attention: head `where`'s slice of the
    output projection's input, at every position."""
    module, stored = _module(family, pair.model, kind, layer), {}

    def grab(mod, args, out=None):
        stored["x"] = (args[0] if kind == "attention" else out).detach().clone()

    def swap(mod, args, out=None):
        x = (args[0] if kind == "attention" else out).clone()
        if kind == "attention":
            cols = slice(where * head_dim, (where + 1) * head_dim)
            x[:, :, cols] = stored["x"][:, :, cols]
            return (x, *args[1:])
        x[:, where] = stored["x"][:, where]
        return x

    register = module.register_forward_pre_hook if kind == "attention" else module.register_forward_hook
    handle = register(grab)
    with torch.no_grad():
        pair.run(pair.clean)
    handle.remove()
    handle = register(swap)
    with torch.no_grad():
        out = pair.run(pair.batch(1)).float()
    handle.remove()
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", GRIDS)
def test_one_patch_equals_a_hand_written_swap(family, kind):
    pair, family = _pair(family)
    before = _hooks(pair.model)
    s = patching.sites(pair.model, pair.stack)
    layer, where = 0, (1 if kind == "attention" else 2)  # the first layer: every later block carries the change
    hand = _hand_patched(family, pair, kind, layer, where, s.head_dim)
    edits = ([Edit(kind, layer, j, j, where) for j in range(len(pair.corrupted_units))] if kind == "attention"
             else [Edit(kind, layer, where, where)])
    assert torch.equal(patching.patched_logits(pair, [edits]), hand)  # one row: the same computation
    # the same cell of the batched grid (many rows in one pass): the same number up to float rounding
    with torch.no_grad():
        clean, bad = pair.run(pair.clean).float()[0], pair.run(pair.batch(1)).float()[0]
    a, b = int(clean.argmax()), int(bad.argmax())
    if b == a:
        b = int(bad.clone().index_fill_(0, torch.tensor([a]), float("-inf")).argmax())
    got = patching.run_grids(pair, [kind])
    grid = got.grid(kind)
    assert grid.metric[layer, where] == pytest.approx(float(hand[0, a] - hand[0, b]), abs=1e-5)
    gap = float(clean[a] - clean[b]) - float(bad[a] - bad[b])  # restored = (metric - corrupted) / gap
    assert grid.restored[layer, where] * gap == pytest.approx(float(hand[0, a] - hand[0, b]) - float(bad[a] - bad[b]), abs=2e-5)
    assert _hooks(pair.model) == before


def test_the_last_position_after_the_last_layer_restores_everything_in_a_decoder():
    got = patching.patch("generation", _result("generation"), CORRUPTED, grids="residual")
    grid = got.grid("residual")
    assert grid.restored[-1, -1] == pytest.approx(1.0, abs=1e-4)
    assert grid.restored.shape == (len(grid.layers), len(got.corrupted_tokens))
    assert np.isfinite(grid.restored).all() and not got.changed[0] and got.changed.sum() >= 1


def test_inputs_of_different_lengths_are_aligned_and_say_so():
    result = _result("generation", "The Eiffel Tower is in")
    got = patching.patch("generation", result, "The Colosseum is in", grids=["residual"])
    assert len(got.clean_tokens) != len(got.corrupted_tokens)
    assert got.notes and "different lengths" in got.notes[0]
    unpaired = got.alignment < 0
    assert np.isnan(got.grid("residual").restored[:, unpaired]).all()
    assert np.isfinite(got.grid("residual").restored[:, ~unpaired]).all()


def test_the_metric_is_the_tasks_own_answer():
    """Sentiment: the clean metric is log P(A) - log P(B) of the probabilities the task reported."""
    result = _result("sentiment")
    got = patching.patch("sentiment", result, CORRUPTED, grids="residual")
    probs = dict(zip(result.labels, result.probs))
    assert got.clean_metric == pytest.approx(np.log(probs[got.a]) - np.log(probs[got.b]), abs=1e-4)


def test_translation_image_and_clip_patch_through_the_explainer():
    root = registry.ROOT / "assets" / "images" / "chelsea_cat.jpg"
    tr = tasks.module("translation").analyse("The house is small.")
    got = catalog.get("patch").run("translation", tr, corrupted="The house is big.", target=0, grids=("residual",))
    assert got.stack == "encoder" and got.grid("residual").restored.shape[1] == len(got.corrupted_tokens)
    image = tasks.module("image").analyse(str(root))
    got = catalog.get("patch").run("image", image, corrupted="centre", grids=("residual", "attention"))
    rows, cols = image.grid
    assert got.changed.sum() == len(patch_tasks.region("centre", image.grid)) < rows * cols
    grid = got.grid("residual")
    assert grid.changed.sum() == len(patch_tasks.region("centre", image.grid))  # tiny grid: one patch a column
    assert got.picture.ndim == 3 and all(c.endswith("(blurred)") == ch for c, ch in zip(grid.columns, grid.changed))
    clip = tasks.module("clip").analyse(str(root), "a photo of a cat\na photo of a dog")
    got = catalog.get("patch").run("clip", clip, corrupted="a photo of a dog", target=0, grids="residual")
    assert got.clean_metric == pytest.approx(float(clip.logits[0, 0]), abs=1e-4) and got.stack == "text"


def test_image_columns_are_the_class_token_and_blocks_of_patches():
    full = patch_tasks.patch_blocks((14, 14), ["[CLS]"])  # ViT-base: 196 patches
    assert len(full) == 17 and full[0] == ("0 · [CLS]", [0]) and full[1][0] == "1 · r0-3 c0-3"
    assert sorted(p for _, where in full for p in where) == list(range(197))  # every token once
    tiny = patch_tasks.patch_blocks((4, 4), ["[CLS]", "[DIST]"])
    assert [where for _, where in tiny] == [[i] for i in range(18)] and tiny[2][0] == "2 · r0c0"


def test_image_regions():
    assert patch_tasks.region("centre", (4, 4)) == [5, 6, 9, 10]
    assert patch_tasks.region("r0-1 c2-3", (4, 4)) == [2, 3, 6, 7]
    assert patch_tasks.region("r0c0, r3c3", (4, 4)) == [0, 15]
    with pytest.raises(ValueError, match="grid has 4 rows"):
        patch_tasks.region("the cat", (4, 4))


def test_tasks_without_patching_say_why_and_bad_inputs_are_clear():
    for task in ("qa", "asr", "explorer"):
        assert task in catalog.get("patch").not_for and not catalog.get("patch").applies_to(task)
    assert set(catalog.get("steer").tasks) == {"generation"}
    with pytest.raises(ValueError, match="corrupted input"):
        patching.patch("generation", _result("generation"), "  ")
    with pytest.raises(ValueError, match="same as the clean one"):
        patching.patch("generation", _result("generation"), CLEAN)
    with pytest.raises(ValueError, match="Unknown grid"):
        patching.patch("generation", _result("generation"), CORRUPTED, grids="residual, heads")


def _hand_steered(m, prompt: torch.Tensor, layer: int, vector: torch.Tensor | None, n: int, pad: int) -> list[int]:
    block = m.model.transformer.h[layer]
    handle = block.register_forward_hook(lambda mod, args, out: out + vector) if vector is not None else None
    try:
        with torch.no_grad():
            out = m.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                                   do_sample=False, pad_token_id=pad)
    finally:
        if handle is not None:
            handle.remove()
    return out[0, prompt.shape[1]:].tolist()


def test_steering_with_strength_zero_is_the_plain_generation_and_otherwise_adds_the_direction():
    from demos.inputs.text import piece_texts

    gen = tasks.module("generation")
    result = gen.generate("Once upon a time", 8)
    catalog.get("steer").run("generation", result, strength=1.0)  # every model loaded once (lanes)
    hooks = {id(x): _hooks(x) for x in _loaded_models()}
    zero = catalog.get("steer").run("generation", result, toward="Love", away="Hate", strength=0.0)
    assert zero.steered == zero.plain == result.pieces
    m = gen.load()
    states = {}
    block = m.model.transformer.h[1]
    # the mean over the word's own tokens, read after GPT-2's <|endoftext|> (the first position, an attention
    # sink, left out)
    handle = block.register_forward_hook(lambda mod, args, out: states.__setitem__("x", out[0, 1:].mean(0)))
    with torch.no_grad():
        for text in ("Love", "Hate"):
            ids = m.processor(text, return_tensors="pt")["input_ids"]
            m.model(input_ids=torch.cat([torch.tensor([[m.processor.eos_token_id]]), ids], dim=1))
            states[text] = states["x"]
    handle.remove()
    prompt = torch.tensor([result.ids[: result.n_prompt]])
    handle = block.register_forward_hook(lambda mod, args, out: states.__setitem__("prompt", out[0, 1:]))
    with torch.no_grad():
        m.model(input_ids=prompt)
    handle.remove()
    typical = float(states["prompt"].norm(dim=-1).median())  # strength 1 = as long as a typical prompt state
    direction = states["Love"] - states["Hate"]
    vector = 1.5 * typical * direction / direction.norm()
    hand = _hand_steered(m, prompt, 1, vector, 8, gen.pad_id(m))
    got = catalog.get("steer").run("generation", result, toward="Love", away="Hate", layer=1, strength=1.5)
    assert got.typical == pytest.approx(typical, rel=1e-5) and got.norm == pytest.approx(float(direction.norm()), rel=1e-5)
    assert got.steered == piece_texts(m.processor, hand, prompt[0].tolist()) != got.plain
    assert len(got.lens_steered) == len(got.lens_layers) == len(m.model.transformer.h)
    assert all(_hooks(x) == hooks.get(id(x), _hooks(x)) for x in _loaded_models())
    with pytest.raises(ValueError, match="Layer 9 does not exist"):
        catalog.get("steer").run("generation", result, layer=9)


@pytest.mark.parametrize("shared", ["1", "0"], ids=["explain-copy", "one-model"])
def test_a_patch_never_reaches_another_users_answer(monkeypatch, shared):
    """A patched request and plain answers at the same time (threads + barrier): every plain answer equals
    its single run, with the explanations on their own model copy and with one shared model and lock."""
    from demos.runtime import cache

    monkeypatch.setenv("XRAY_EXPLAIN_COPY", shared)
    # every call on the same torch thread count, so the answers are compared bit for bit: each call would
    # otherwise choose its threads by what else runs, and float32 sums in another order differ in the last
    # bits (seen: 5e-7 relative in one fast-subset run of 2026-12-06)
    monkeypatch.setenv("XRAY_ADAPTIVE_THREADS", "0")
    gen = tasks.module("generation")
    clean = gen.generate(CLEAN, 3)
    cache.clear_all()
    reference = gen.generate("A kitten naps in the sun", 6)
    catalog.get("patch").run("generation", clean, corrupted=CORRUPTED, grids=("residual",))  # both lanes loaded
    hooks = {id(x): _hooks(x) for x in _loaded_models()}
    barrier, errors, answers = threading.Barrier(2), [], []

    def patch_request():
        barrier.wait()
        try:
            catalog.get("patch").run("generation", clean, corrupted=CORRUPTED, grids=GRIDS)
        except Exception as exc:  # reported below
            errors.append(exc)

    def plain_answers():
        barrier.wait()
        for _ in range(4):
            cache.clear_all()  # a fresh computation each time, not the memo's copy
            answers.append(gen.generate("A kitten naps in the sun", 6))

    threads = [threading.Thread(target=patch_request), threading.Thread(target=plain_answers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(answers) == 4
    for got in answers:
        assert got.ids == reference.ids
        np.testing.assert_array_equal(got.model_prob, reference.model_prob)
    assert {id(x): _hooks(x) for x in _loaded_models()} == hooks


def _synthetic():
    from core.patching_types import PatchingResult

    grids = [PatchGrid("residual", ["L0", "L1"], ["0 · The", "1 · cat→<b>dog</b>", "2 · sat"],
                       np.array([[0.0, 0.9, np.nan], [0.0, 0.2, 1.0]]), np.array([[0.1, 0.8, np.nan], [0.1, 0.3, 1.0]]),
                       changed=np.array([False, True, True])),
             PatchGrid("attention", ["L0", "L1"], ["H0", "H1"], np.array([[0.5, -0.2], [0.0, 0.1]]), np.zeros((2, 2)))]
    return PatchingResult("generation", "The cat <script>x</script>", "The dog", ["The", "cat", "sat"],
                          ["The", "<b>dog</b>", "sat"], np.array([0, 1, -1]), np.array([False, True, True]),
                          "logit(A) − logit(B) of the next token after the prompt", " sat", "*x*", 1.0, 0.0, "main",
                          grids, notes=["a note with <img src=x>"])


def test_figures_name_their_axes_in_plain_words_and_escape_user_text():
    from viz import patching as vp

    r = _synthetic()
    fig = vp.patch_figure(r, "residual")
    assert "position" in fig.layout.xaxis.title.text and "layer" in fig.layout.yaxis.title.text
    assert "how much of the answer comes back" in fig.layout.title.text.replace("<br>", " ")
    assert all("<b>dog</b>" not in t for t in fig.layout.xaxis.ticktext)  # escaped; bold marks a changed column
    assert fig.layout.xaxis.ticktext[1].startswith("<b>") and not fig.layout.xaxis.ticktext[0].startswith("<b>")
    assert vp.patch_figure(r, "attention").layout.xaxis.title.text.startswith("head")
    with pytest.raises(KeyError):
        vp.patch_figure(r, "mlp")
    assert "Not computed" in vp.not_computed_figure("mlp", "MLP").layout.annotations[0].text
    text = vp.patch_summary(r)
    assert "<script>" not in text and "<img" not in text and "“␣sat”" in text
    assert "layer 1, position 2 · sat brings back **1.00**" in text and "head H0 brings back **0.50**" in text
    # the summary warns where the best cell is trivial: the last layer (the answer itself) or the first layer at a
    # changed token (the token itself), and says nothing of the kind for a head
    assert "(the last layer where the answer is read" in text and "the first layer at a changed token" not in text
    r.grids[0].restored[0, 1] = 1.2
    text = vp.patch_summary(r)
    assert "layer 0, position 1" in text and "(the first layer at a changed token" in text
    assert "(the last layer where" not in text
    # generation: where the answer reaches the last position (the first layer at which its state brings back >= 0.5)
    assert "the answer reaches the last position (2 · sat) at **layer 1**: a copy of that one state brings back 1.00" in text
    r.grids[0].restored[:, 2] = [0.7, 0.2]
    assert "at **layer 0**: a copy of that one state brings back 0.70" in vp.patch_summary(r)
    r.grids[0].restored[:, 2] = [0.49, np.nan]
    assert "the answer never gathers at the last position (2 · sat)" in vp.patch_summary(r)
    # a middle layer at a changed token: the token's own state, not yet a place the answer flows through
    g = r.grids[0]
    r.grids[0] = PatchGrid("residual", ["L0", "L1", "L2"], g.columns, np.array([[0, 0.8, 0.1], [0, 1.1, 0.2],
                           [0, 0.1, 1.0]]), np.zeros((3, 3)), changed=g.changed)
    text = vp.patch_summary(r)
    assert "- residual stream: layer 1, position 1" in text and "(the changed token's own state" in text
    r.task = "sentiment"  # a classifier reads its answer elsewhere (the class token): no such line
    assert "reaches the last position" not in vp.patch_summary(r)


def test_steering_view_escapes_and_says_what_was_added():
    from core.patching_types import SteerResult
    from viz import patching as vp

    s = SteerResult("<i>I</i> hate", "<b>Love</b>", "Hate", 1, 4.0, 2.5, [" a", " b"], [" a", " c"], ["L0", "L1"],
                    ["x", "y"], ["x", "z"], np.array([0.1, 0.2]), np.array([0.1, 0.3]), typical=7.5)
    html_text = vp.steer_html(s)
    assert "<i>I</i>" not in html_text and "&lt;b&gt;Love&lt;/b&gt;" in html_text and "xray-steer" in html_text
    summary = vp.steer_summary(s)
    assert "part ways where" in summary and "(length 2.5)" in summary
    assert "scaled to +4 × the length of a typical state after that layer (7.5)" in summary
    assert vp.steer_lens_figure(s).layout.yaxis.title.text == "layer"
