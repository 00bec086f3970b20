"""The explanation maths on toy models whose answers are known in closed form or computed here by
hand (no Hugging Face model, milliseconds each): demos.explain.attribution, .subjects, .contrast,
.faithfulness and the token-attribution part of demos.inputs.text. The mutation run
(docs/TESTING.md) leans on this module first."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.special import softmax as scipy_softmax
from scipy.stats import spearmanr

from core.results import COMPACT_FROM_BYTES
from demos.explain import attribution, contrast, faithfulness, subjects, tasks
from demos.inputs import text

torch.manual_seed(0)


# ---- a toy classifier over token ids: embedding -> mean -> tanh -> linear (K = 3 outcomes) --------


class Toy(torch.nn.Module):
    def __init__(self, vocab: int = 12, dim: int = 5, k: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Embedding(vocab, dim)
        self.head = torch.nn.Linear(dim, k)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(vocab, dim, generator=g) * 1.5)
            self.head.weight.copy_(torch.randn(k, dim, generator=g) * 2.0)
            self.head.bias.copy_(torch.randn(k, generator=g))

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.embed

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        return self.head(torch.tanh(e).mean(1))  # (b, K) logits


IDS = torch.tensor([[1, 5, 7, 3, 9, 2]])  # 1 and 2 are "special" ([CLS], [SEP]); 0 is [PAD]
SPECIAL = np.array([False, True, True, True, True, False])  # deletable units


def toy_subject(kind: str = "tokens", answer: int = 0, contrast_: int | None = None, default=None) -> subjects.Subject:
    model = Toy()
    labels = [f"t{i}" for i in IDS[0].tolist()]
    if kind == "tokens":
        inputs, key = {"input_ids": IDS}, "input_ids"
        units = subjects.token_units(labels, SPECIAL.copy(), "pad")
        replacement = torch.zeros_like(IDS)
        run = lambda kw: model(input_ids=kw["input_ids"])  # noqa: E731
    else:
        with torch.no_grad():
            x, pad = model.embed(IDS), model.embed(torch.zeros_like(IDS))
        inputs, key = {"inputs_embeds": x}, "inputs_embeds"
        units = subjects.embed_units(labels, SPECIAL.copy(), "pad")
        replacement = pad
        run = lambda kw: model(inputs_embeds=kw["inputs_embeds"])  # noqa: E731
    s = subjects.Subject(
        task="toy", model=model, inputs=inputs, unit_key=key, units=units, replacement=replacement, run=run,
        outcome_probs=lambda out: torch.softmax(out.float(), -1), outcome_label=lambda i: f"class{i}", answer=answer,
        embedding_layer=model.get_input_embeddings(), attention=lambda: np.linspace(0.1, 0.6, 6),
        rollout=None, not_applicable={"attention rollout": "toy"},
    )
    if contrast_ is not None:
        s.contrast = contrast_
    if default is not None:
        s.contrast_default = default
    return s


def toy_probs(ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(Toy()(input_ids=ids), -1)


def captum_ig(fn, x, base, layer, steps):
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    algo = LayerIntegratedGradients(fn, layer) if layer is not None else IntegratedGradients(fn)
    return algo.attribute(x, baselines=base, n_steps=steps).detach()


# ---- attribution.py --------------------------------------------------------------------------


def test_method_table_and_unknown_method():
    ig, gxi = attribution.method("integrated_gradients"), attribution.method("gradient_x_input")
    assert ig.integrates and not gxi.integrates
    model = Toy()
    assert type(ig.captum(lambda x: x, model.embed)).__name__ == "LayerIntegratedGradients"
    assert type(ig.captum(lambda x: x)).__name__ == "IntegratedGradients"
    assert type(gxi.captum(lambda x: x, model.embed)).__name__ == "LayerGradientXActivation"
    assert type(gxi.captum(lambda x: x)).__name__ == "InputXGradient"
    with pytest.raises(ValueError, match=r"Unknown attribution method 'magic'.*gradient_x_input"):
        attribution.method("magic")


def test_stack_attentions_picks_the_batch_item_and_compacts_only_large_maps():
    a = [torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)]
    out = attribution.stack_attentions(a, batch_index=1)
    assert out.shape == (2, 3, 4, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1], a[1][1].numpy())
    with pytest.raises(RuntimeError, match=r"^The model returned no attention weights \(load it with attn_implementation='eager'\)\.$"):
        attribution.stack_attentions(())
    n = int(math.isqrt(COMPACT_FROM_BYTES // 4)) + 2  # one (1, 1, n, n) layer just over the limit
    big = [torch.rand(1, 1, n, n)]
    assert attribution.stack_attentions(big).dtype == np.float16
    assert attribution.stack_attentions(big, compact=False).dtype == np.float32
    assert attribution.stored_dtype(COMPACT_FROM_BYTES // 4) == torch.float32
    assert attribution.stored_dtype(COMPACT_FROM_BYTES // 4 + 1) == torch.float16
    h = [torch.rand(2, 4, 3) for _ in range(3)]
    hs = attribution.stack_hidden(h, batch_index=1)
    assert hs.shape == (3, 4, 3)
    np.testing.assert_array_equal(hs[2], h[2][1].numpy())


def _rollout_by_hand(w: np.ndarray, residual: float) -> np.ndarray:
    n = w.shape[-1]
    result = np.eye(n)
    for layer in w.astype(np.float64):
        a = residual * np.eye(n) + (1 - residual) * layer.mean(0)
        a = a / a.sum(-1, keepdims=True)
        result = a @ result
    return result


@pytest.mark.parametrize("residual", [0.5, 0.2])
def test_attention_rollout_by_hand(residual):
    rng = np.random.default_rng(1)
    w = rng.dirichlet(np.ones(5), size=(3, 2, 5)).astype(np.float32)  # (layers, heads, n, n), rows sum to 1
    w[1, 0] = np.eye(5)[::-1]  # an asymmetric layer: the order of the product matters
    want = _rollout_by_hand(w, residual)
    np.testing.assert_allclose(attribution.attention_rollout(w, residual), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(attribution.attention_rollout(torch.from_numpy(w), residual), want, rtol=1e-5, atol=1e-6)
    assert attribution.attention_rollout(w, residual).dtype == np.float32
    np.testing.assert_allclose(attribution.attention_rollout(w), _rollout_by_hand(w, 0.5), rtol=1e-5, atol=1e-6)  # the default
    w.setflags(write=False)  # stored arrays are read-only: rollout must copy
    attribution.attention_rollout(w, residual)


def test_attention_rollout_renormalises_rows():
    """Maps whose rows do not sum to 1 (a cut-out prefix, float16 storage): each layer's mixed map
    is renormalised row by row, so the rollout's rows still sum to 1."""
    rng = np.random.default_rng(2)
    w = rng.dirichlet(np.ones(6), size=(3, 2, 6)) * rng.uniform(0.5, 0.9, size=(3, 2, 6, 1))
    got = attribution.attention_rollout(w.astype(np.float32))
    np.testing.assert_allclose(got, _rollout_by_hand(w.astype(np.float32), 0.5), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-6)


def test_attention_rollout_multiplies_in_float64():
    """24 layers of 24 x 24 maps: computed in float64 and rounded once, the rollout equals the hand
    computation to the last float32 bit (float32 products drift by several units in the last place)."""
    rng = np.random.default_rng(7)
    w = rng.dirichlet(np.ones(24) * 0.3, size=(24, 4, 24)).astype(np.float32)
    want = _rollout_by_hand(w, 0.5).astype(np.float32)
    for weights in (w, torch.from_numpy(w)):
        got = attribution.attention_rollout(weights)
        assert np.max(np.abs(got - want) / np.spacing(np.abs(want))) <= 1.0


def test_steps_per_batch():
    assert attribution.steps_per_batch(10, 32) == 32  # short input: every step in one batch
    assert attribution.steps_per_batch(1000, 32) == 4  # 4096 // 1000
    assert attribution.steps_per_batch(128, 64) == 32
    assert attribution.steps_per_batch(5000, 32) == 1  # never 0
    assert attribution.steps_per_batch(0, 8) == 8
    assert attribution.steps_per_batch(100, 32, budget=300) == 3
    assert attribution.steps_per_batch(1, 5000) == 4096  # one token: the whole budget


def test_endpoint_rows_in_one_batched_pass():
    seen = []

    def fn(x, scale, other):
        seen.append((x.shape, scale.shape, other))
        return (x.sum(-1) * scale[:, 0]).double()

    x, base = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 0.0]])
    assert attribution.endpoint_rows(fn, x, base, (torch.tensor([[3.0]]), "keep")) == [(9.0, 1.5)]
    assert seen == [((2, 2), (2, 1), "keep")]  # one pass; batch-1 tensors repeated, others as they are
    assert attribution.endpoint_rows(lambda x: x.sum(-1), x, base) == [(3.0, 0.5)]
    # two inputs: rows [x0, x1, b0, b1], each input's extra row beside it
    seen.clear()
    x2, base2 = torch.tensor([[1.0, 2.0], [4.0, 0.0]]), torch.tensor([[0.5, 0.0], [1.0, 1.0]])
    got = attribution.endpoint_rows(fn, x2, base2, (torch.tensor([[3.0], [-1.0]]), "keep"))
    assert got == [(9.0, 1.5), (-4.0, -2.0)]
    assert seen == [((4, 2), (4, 1), "keep")]


def test_several_inputs_at_once_each_equal_its_own_run_and_stop_at_its_own_step_count():
    """run_attributions (students' requests gathered into one run): f(x) = sum(sin(5 x)) from a zero
    baseline has IG_i = sin(5 x_i) exactly. With a tolerance, each input climbs the ladder only as far as
    its own run climbs, and the later rungs run only the inputs still above it (input 1, far above the
    tolerance at 8 steps, skips 16 for 32: `next_rung`)."""
    rows = []

    def f(x):
        rows.append(x.shape[0])
        return torch.sin(5 * x).sum(-1)

    x = torch.tensor([[0.05, -0.02], [3.0, -2.5], [1.0, 0.5]], dtype=torch.float64)
    base = torch.zeros_like(x)
    got = attribution.run_attributions(f, x, base, steps=256, tolerance=1e-6)
    assert [g.steps for g in got] == [8, 32, 8]
    assert rows == [6, 24, 32]  # the end points of all three in one pass, 3 x 8 points, then input 1 alone at 32
    for i, g in enumerate(got):
        rows.clear()
        alone = attribution.run_attribution(f, x[i : i + 1], base[i : i + 1], steps=256, tolerance=1e-6)
        assert alone.steps == g.steps and g.attrs.shape == (1, 2)
        torch.testing.assert_close(g.attrs, alone.attrs, rtol=0, atol=1e-12)
        torch.testing.assert_close(g.attrs[0], torch.sin(5 * x[i]), rtol=0, atol=1e-6)
        assert (g.output_value, g.baseline_value) == pytest.approx((float(torch.sin(5 * x[i]).sum()), 0.0))
        assert g.delta == pytest.approx(abs(float(g.attrs.sum()) - g.output_value), abs=1e-12) and g.delta <= 1e-6
    with pytest.raises(ValueError, match="one input at a time"):
        attribution.run_attributions(f, x, base, smoothgrad={"nt_samples": 2})


def test_a_delta_far_above_the_tolerance_skips_the_next_rung_and_one_close_to_it_does_not():
    """f(x) = sum(sin(5 x)) from zero: IG_i = sin(5 x_i). After 8 Gauss-Legendre steps |delta| = d8; with a
    tolerance of d8 / 2 (within 4x) the next rung is 16, with d8 / 10 (far above) the ladder goes on at 32
    without running 16; either way the result is the chosen rung's own fixed-step run."""
    x = torch.tensor([[3.0, -2.5]], dtype=torch.float64)
    base = torch.zeros_like(x)
    counts = []

    def f(v):
        counts.append(v.shape[0])
        return torch.sin(5 * v).sum(-1)

    fixed = {s: attribution.run_attribution(f, x, base, steps=s) for s in (8, 16, 32)}
    d8 = fixed[8].delta
    assert fixed[16].delta < d8 / 10 and fixed[32].delta < d8 / 10  # 16 would do for both tolerances
    for tol, steps in ((d8 / 2, 16), (d8 / 10, 32)):
        counts.clear()
        got = attribution.run_attribution(f, x, base, steps=64, tolerance=tol)
        assert got.steps == steps and counts == [2, 8, steps]  # end points, 8 steps, then that rung only
        torch.testing.assert_close(got.attrs, fixed[steps].attrs, rtol=0, atol=1e-12)
        torch.testing.assert_close(got.attrs[0], torch.sin(5 * x[0]), rtol=0, atol=1e-6)


def test_run_attribution_integrates_a_quadratic_exactly():
    """f(x) = sum(w * x^2): IG_i = w_i (x_i^2 - b_i^2) exactly (the integrand is linear along the path)."""
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0, -1.0, 0.5]], dtype=torch.float64)
    b = torch.tensor([[0.5, 0.0, 1.0, -0.5]], dtype=torch.float64)
    seen = []
    got = attribution.run_attribution(lambda v: (w * v * v).sum(-1), x, b, "integrated_gradients", 8,
                                      progress=lambda frac, msg: seen.append((frac, msg)))
    np.testing.assert_allclose(got.attrs[0].numpy(), (w * (x * x - b * b))[0].numpy(), rtol=1e-6, atol=1e-9)
    assert got.steps == 8 and got.delta < 1e-6
    assert got.output_value == pytest.approx(float((w * x * x).sum())) and got.baseline_value == pytest.approx(float((w * b * b).sum()))
    assert seen and seen[-1][0] == pytest.approx(1.0) and [f for f, _ in seen] == sorted(f for f, _ in seen)
    assert seen[0][1] == "attribution batch 1"


def test_run_attribution_at_a_layer_equals_captum_and_reports_its_delta():
    model = Toy()

    def prob(ids):
        return torch.softmax(model(input_ids=ids), -1)[:, 0]

    base = torch.where(torch.as_tensor(SPECIAL), torch.zeros_like(IDS), IDS)
    got = attribution.run_attribution(prob, IDS, base, "integrated_gradients", 16, layer=model.embed)
    want = captum_ig(prob, IDS, base, model.embed, 16)
    torch.testing.assert_close(got.attrs, want, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        f_x, f_b = float(prob(IDS)[0]), float(prob(base)[0])
    assert (got.output_value, got.baseline_value) == (pytest.approx(f_x, abs=1e-7), pytest.approx(f_b, abs=1e-7))
    assert got.delta == pytest.approx(abs(float(want.double().sum()) - (f_x - f_b)), abs=1e-7)
    assert got.delta > 0  # a nonlinear function at 16 steps: not exact


def test_a_layer_attribution_runs_the_model_once_per_batch_and_once_for_both_end_points():
    """LayerIntegratedGradients runs the model twice more to find the layer's output at input and baseline;
    the app reads them from its end-point pass. Calls counted: 1 end-point pass + 2 batches of 8 steps."""
    model = Toy()
    passes = []

    def prob(ids):
        passes.append(len(ids))
        return torch.softmax(model(input_ids=ids), -1)[:, 0]

    base = torch.where(torch.as_tensor(SPECIAL), torch.zeros_like(IDS), IDS)
    got = attribution.run_attribution(prob, IDS, base, "integrated_gradients", 16, layer=model.embed, batch=8)
    assert passes == [2, 8, 8]
    passes.clear()
    torch.testing.assert_close(got.attrs, captum_ig(prob, IDS, base, model.embed, 16), rtol=1e-5, atol=1e-7)
    assert len(passes) == 3  # Captum's own: the layer at the input, at the baseline, then one batch of 16


def test_integrated_gradients_is_the_default_method():
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    got = attribution.run_attribution(lambda v: (v * v).sum(-1), x, torch.zeros_like(x))
    assert got.steps == 32 and got.delta is not None
    np.testing.assert_allclose(got.attrs[0].numpy(), [1.0, 4.0], rtol=1e-6)


def test_gradient_x_input_has_no_delta_and_is_grad_times_input():
    x = torch.tensor([[1.0, -2.0, 3.0]])
    got = attribution.run_attribution(lambda v: (v ** 3).sum(-1), x, torch.zeros_like(x), "gradient_x_input", 32)
    np.testing.assert_allclose(got.attrs[0].numpy(), (3 * x ** 2 * x)[0].numpy(), rtol=1e-6)
    assert got.delta is None and got.steps == 1
    assert got.output_value == pytest.approx(20.0) and got.baseline_value == 0.0


def test_adaptive_steps_climb_the_ladder_and_stop_at_the_first_rung_within_tolerance():
    x = torch.tensor([[2.0, -1.0, 1.5]], dtype=torch.float64)
    b = torch.zeros_like(x)

    def f(v):
        return torch.exp(v).sum(-1)

    fixed = {s: attribution.run_attribution(f, x, b, "integrated_gradients", s, tolerance=None) for s in (8, 16, 32, 48)}
    deltas = {s: a.delta for s, a in fixed.items()}
    assert deltas[8] > deltas[16] > 0
    tol = (deltas[8] + deltas[16]) / 2  # 8 fails it, 16 meets it
    got = attribution.run_attribution(f, x, b, "integrated_gradients", 48, tolerance=tol)
    assert got.steps == 16 and got.delta == pytest.approx(deltas[16])
    torch.testing.assert_close(got.attrs, fixed[16].attrs)
    ceiling = attribution.run_attribution(f, x, b, "integrated_gradients", 48, tolerance=1e-300)
    assert ceiling.steps == 48 and ceiling.delta == pytest.approx(deltas[48])  # 8, 32 (16 skipped: far above), 48
    rounds = []
    attribution.run_attribution(f, x, b, "integrated_gradients", 48, tolerance=1e-300, batch=8,
                                progress=lambda frac, msg: rounds.append(frac))
    assert len(rounds) == 1 + 4 + 6 and rounds[-1] == pytest.approx(1.0)  # batches of 8 over 8, 32, 48 steps
    assert rounds == sorted(rounds)  # the bar never goes back when a rung is skipped


def test_batches_follow_the_token_budget():
    calls = []

    def f(v):
        calls.append(v.shape[0])
        return v.sum(-1)

    x = torch.ones(1, 1000)
    attribution.run_attribution(f, x, torch.zeros_like(x), "integrated_gradients", 16)
    assert calls[1:] == [4] * 4  # after the endpoints' pass: 16 steps of 1000 units, 4 per batch
    calls.clear()
    attribution.run_attribution(f, x, torch.zeros_like(x), "integrated_gradients", 16, units=10)
    assert calls[1:] == [16]


def test_smoothgrad_reports_captums_own_delta():
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    torch.manual_seed(0)
    got = attribution.run_attribution(lambda v: (v * v).sum(-1), x, torch.zeros_like(x), "integrated_gradients", 8,
                                      smoothgrad={"nt_samples": 3, "stdevs": 0.1})
    assert got.delta is not None and got.delta < 1e-6  # completeness per noisy copy (quadratic: exact)
    assert got.attrs.shape == x.shape


def test_softmax_np():
    z = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 999.0]])
    np.testing.assert_allclose(attribution.softmax_np(z), scipy_softmax(z, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(attribution.softmax_np(z, axis=0), scipy_softmax(z, axis=0), rtol=1e-12)


# ---- demos/inputs/text.py: baselines and token attribution ----------------------------------


def test_baseline_ids_keep_special_tokens_only():
    ids = torch.tensor([[101, 7, 8, 102, 9, 102]])
    np.testing.assert_array_equal(text.baseline_ids(ids, {101, 102}, 0), [[101, 0, 0, 102, 0, 102]])
    tok = SimpleNamespace(pad_token_id=0, unk_token_id=100, mask_token_id=103, all_special_ids=[0, 100, 101, 102, 103])
    np.testing.assert_array_equal(text.pad_baseline(ids, tok), [[101, 0, 0, 102, 0, 102]])
    # an unknown word ([UNK]) or a masked one ([MASK]) is a word of the input: the baseline pads it
    with_unk = torch.tensor([[101, 100, 8, 103, 102]])
    np.testing.assert_array_equal(text.pad_baseline(with_unk, tok), [[101, 0, 0, 0, 102]])


def test_token_attribution_sums_the_hidden_size_at_the_input_embeddings():
    model = Toy()

    def prob(ids):
        return torch.softmax(model(input_ids=ids), -1)[:, 2]

    base = text.baseline_ids(IDS, {1, 2}, 0)
    tokens = [f"t{i}" for i in IDS[0].tolist()]
    attr = text.token_attribution(model, prob, IDS, base, tokens, "class2")
    want = captum_ig(prob, IDS, base, model.embed, 32)[0].sum(-1).numpy()
    np.testing.assert_allclose(attr.scores, want, rtol=1e-5, atol=1e-7)
    assert attr.scores.dtype == np.float32 and attr.tokens == tokens and attr.target == "class2"
    assert attr.method == "integrated_gradients" and attr.steps == 32 and attr.delta is not None
    with torch.no_grad():
        assert attr.output_value == pytest.approx(float(prob(IDS)[0]), abs=1e-7)
        assert attr.baseline_value == pytest.approx(float(prob(base)[0]), abs=1e-7)


def test_pad_right_and_pad_id():
    ids, mask, lengths = text.pad_right([torch.tensor([[5, 6, 7]]), torch.tensor([[8]])], pad_id=4)
    assert ids.tolist() == [[5, 6, 7], [8, 4, 4]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]] and lengths == [3, 1]
    assert mask.dtype == torch.long
    ids32, _, _ = text.pad_right([torch.tensor([[5]], dtype=torch.int32), torch.tensor([[6, 7]], dtype=torch.int32)], pad_id=0)
    assert ids32.dtype == torch.int32 and ids32.tolist() == [[5, 0], [6, 7]]  # the rows' own dtype
    assert text.pad_id(SimpleNamespace(pad_token_id=None)) == 0 and text.pad_id(SimpleNamespace(pad_token_id=3)) == 3


# ---- subjects.py ----------------------------------------------------------------------------


def test_scores_pick_and_contrast():
    p = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    np.testing.assert_allclose(subjects.SCORES["probability"](p, 1, None), [0.5, 0.1])
    np.testing.assert_allclose(subjects.SCORES["contrast_prob_diff"](p, 1, 2), [0.2, -0.2])
    np.testing.assert_allclose(subjects.SCORES["cosine_similarity"](p, 0, None), [0.2, 0.6])
    with pytest.raises(ValueError, match="contrast outcome"):
        subjects.SCORES["contrast_prob_diff"](p, 1, None)


def test_patch_units_spread_and_reduce_by_hand():
    units = subjects.patch_units(["a", "b", "c", "d", "e", "f"], (2, 3), 2, (5, 7))  # 1-pixel remainder
    assert len(units) == 6 and units.kind == "patches" and units.deletable.all()
    keep = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0, 1.0]])
    w = units.spread(keep)
    assert w.shape == (1, 1, 5, 7)
    want = np.ones((5, 7))
    for u, k in enumerate(keep[0].tolist()):
        r, c = divmod(u, 3)
        want[2 * r:2 * r + 2, 2 * c:2 * c + 2] = k
    np.testing.assert_array_equal(w[0, 0].numpy(), want)
    attr = torch.arange(2 * 5 * 7, dtype=torch.float64).reshape(1, 2, 5, 7)
    a = attr[0].sum(0).numpy()
    expected = [a[2 * r:2 * r + 2, 2 * c:2 * c + 2].sum() for r in range(2) for c in range(3)]
    np.testing.assert_allclose(units.reduce(attr).numpy(), expected)


def test_frame_units_spread_and_reduce_by_hand():
    units = subjects.frame_units(["0.00", "0.02", "0.04"], 2, 9)  # 3 units of 2 frames; 3 padding frames
    assert len(units) == 3 and units.kind == "frames" and units.replacement_name == "silence"
    w = units.spread(torch.tensor([[1.0, 0.0, 1.0]]))
    np.testing.assert_array_equal(w[0, 0].numpy(), [1, 1, 0, 0, 1, 1, 1, 1, 1])
    attr = torch.arange(2 * 9, dtype=torch.float64).reshape(1, 2, 9)
    a = attr[0].sum(0).numpy()
    np.testing.assert_allclose(units.reduce(attr).numpy(), [a[0:2].sum(), a[2:4].sum(), a[4:6].sum()])


def test_token_and_embed_units():
    t = subjects.token_units(["a", "b"], np.array([True, False]), "pad")
    keep = torch.tensor([[1.0, 0.0]])
    assert t.kind == "tokens" and t.reduce is None and torch.equal(t.spread(keep), keep) and t.replacement_name == "pad"
    e = subjects.embed_units(["a", "b"], np.array([True, True]), "pad")
    assert e.kind == "embeds" and e.spread(keep).shape == (1, 2, 1)
    attr = torch.arange(12, dtype=torch.float64).reshape(1, 2, 6)
    np.testing.assert_allclose(e.reduce(attr).numpy(), [15.0, 51.0])


@pytest.mark.parametrize("kind", ["tokens", "embeds"])
def test_subject_batch_mix_baseline_and_scores(kind):
    s = toy_subject(kind, answer=0, contrast_=2)
    b = s.batch(3)
    assert b[s.unit_key].shape[0] == 3
    other = torch.zeros(3, 6, dtype=torch.long) if kind == "tokens" else torch.zeros(3, 6, 5)
    assert s.batch(3, **{s.unit_key: other})[s.unit_key] is other
    keep = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    mixed = s.mix(keep)
    x, rep = s.inputs[s.unit_key], s.replacement
    removed = {1, 3}  # units 1 and 3 removed (5 is kept by its weight); 0 and 5 may never be removed
    for i in range(6):
        want = rep[0, i] if i in removed else x[0, i]
        assert torch.equal(mixed[0, i], want), i
    for i in range(6):  # everything removed: only the non-deletable units stay
        assert torch.equal(mixed[1, i], x[0, i] if not SPECIAL[i] else rep[0, i]), i
    assert torch.equal(s.baseline, mixed[1:2])
    with torch.no_grad():
        probs = torch.softmax(s.run(s.batch(1)), -1)[0]
        assert float(s.score(s.run(s.batch(1)))[0]) == pytest.approx(float(probs[0]))
        assert float(s.score(s.run(s.batch(1)), "contrast_prob_diff")[0]) == pytest.approx(float(probs[0] - probs[2]))
        at_base = torch.softmax(s.run(s.batch(1, **{s.unit_key: s.baseline})), -1)[0]
        assert float(s.score_units(s.baseline)[0]) == pytest.approx(float(at_base[0]))
        assert float(s.score_units(s.baseline, "contrast_prob_diff")[0]) == pytest.approx(float(at_base[0] - at_base[2]))
    assert s.answer_label == "class0" and s.contrast_label == "class2"


def test_contrast_default_is_computed_once_on_first_use():
    calls = []
    s = toy_subject(default=lambda: calls.append(1) or 1)
    assert calls == []
    assert s.contrast == 1 and s.contrast == 1 and calls == [1]
    assert s.contrast_label == "class1"
    plain = toy_subject()
    assert plain.contrast is None and plain.contrast_label == ""
    plain.contrast = 2
    assert plain.contrast == 2


def test_resolve_outcome_and_top_other():
    labels = ["neg", "pos", "neutral"]
    lookup = {v: i for i, v in enumerate(labels)}.get
    assert subjects.resolve_outcome(2, labels.__getitem__, 3, lookup) == 2
    assert subjects.resolve_outcome(np.int64(0), labels.__getitem__, 3, lookup) == 0
    assert subjects.resolve_outcome("pos", labels.__getitem__, 3, lookup) == 1
    with pytest.raises(ValueError, match="Unknown outcome True"):
        subjects.resolve_outcome(True, labels.__getitem__, 3, lookup)  # a bool is not an index
    with pytest.raises(ValueError, match="Unknown outcome"):
        subjects.resolve_outcome("maybe", labels.__getitem__, 3, lookup)
    with pytest.raises(ValueError, match=r"Outcome 3 is out of range \(0 to 2\)"):
        subjects.resolve_outcome(3, labels.__getitem__, 3, lookup)
    with pytest.raises(ValueError, match="out of range"):
        subjects.resolve_outcome(-1, labels.__getitem__, 3, lookup)
    p = torch.tensor([0.1, 0.5, 0.3, 0.1])
    assert subjects.top_other(p, 1) == 2 and subjects.top_other(p, 2) == 1 and subjects.top_other(p, 0) == 1
    assert p[1] == 0.5  # not modified


def test_result_key_is_the_task_model_and_input_content():
    from core import registry

    a = SimpleNamespace(text="hello", model_id="m")
    assert subjects.result_key("sentiment", a) == ("sentiment", "m", "hello")
    spec = registry.get("asr")
    feats = np.arange(6, dtype=np.float32)
    r1 = SimpleNamespace(input_features=feats, token_ids=[1, 2], model_id="w")
    r2 = SimpleNamespace(input_features=feats.copy(), token_ids=(1, 2), model_id="w")
    r3 = SimpleNamespace(input_features=feats + 1, token_ids=[1, 2], model_id="w")
    assert spec.identity == ("input_features", "token_ids")
    k1 = subjects.result_key("asr", r1)
    assert k1 == subjects.result_key("asr", r2) != subjects.result_key("asr", r3)
    assert k1[:2] == ("asr", "w") and len(k1[2]) == 2 and hash(k1) is not None
    assert len(k1[2][0]) == 32 and k1[2][1] == (1, 2)  # arrays by a 16-byte digest (a bounded key), lists as tuples


def test_every_registered_task_has_its_compute_module_with_a_subject_builder():
    from core import registry

    assert set(tasks.MODULES) == set(registry.KEYS)
    for key, module in tasks.MODULES.items():
        assert key == module.TASK and module.__name__ == f"demos.{registry.get(key).demo}"
        assert callable(module.subject) and callable(module.load)
    with pytest.raises(KeyError, match="nope"):
        tasks.subject("nope", None)


# ---- contrast.py ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tokens", "embeds"])
def test_attribute_units_is_captum_on_the_subjects_score(kind):
    s = toy_subject(kind, answer=0, contrast_=2)
    got = contrast.attribute_units(s, "contrast_prob_diff", steps=16)
    model = s.model

    def diff(ids):
        p = torch.softmax(model(input_ids=ids), -1)
        return p[:, 0] - p[:, 2]

    base = torch.where(torch.as_tensor(SPECIAL), torch.zeros_like(IDS), IDS)
    want = captum_ig(diff, IDS, base, model.embed, 16)[0].sum(-1).numpy()
    np.testing.assert_allclose(got.scores, want, rtol=1e-4, atol=1e-7)
    assert got.tokens == [f"t{i}" for i in IDS[0].tolist()] and got.steps == 16
    assert got.target == "P(class0) − P(class2)"
    with torch.no_grad():
        assert got.output_value == pytest.approx(float(diff(IDS)[0]), abs=1e-6)
        assert got.baseline_value == pytest.approx(float(diff(base)[0]), abs=1e-6)
    plain = contrast.attribute_units(s, None, "gradient_x_input")
    assert plain.target == "class0" and plain.delta is None


def test_attribute_units_batches_continuous_units_by_their_table():
    s = toy_subject("embeds", answer=1)
    s.units.kind = "patches"  # continuous units: integration steps per batch from CONTINUOUS_BATCH
    seen = []
    contrast.attribute_units(s, None, steps=16, progress=lambda frac, msg: seen.append(msg))
    assert len(seen) == 16 // contrast.CONTINUOUS_BATCH["patches"]


def test_why_not_refuses_a_subject_without_contrast(monkeypatch):
    s = toy_subject()
    monkeypatch.setattr(contrast.tasks, "subject", lambda task, result, target=None, c=None: s)
    with pytest.raises(ValueError, match="needs two outcomes"):
        contrast.why_not("toy", None)
    s2 = toy_subject(answer=1, contrast_=0)
    monkeypatch.setattr(contrast.tasks, "subject", lambda task, result, target=None, c=None: s2)
    got = contrast.why_not("toy", None, steps=8)
    p = toy_probs(IDS)[0]
    assert (got.a, got.b) == ("class1", "class0") and got.task == "toy"
    assert (got.p_a, got.p_b) == (pytest.approx(float(p[1])), pytest.approx(float(p[0])))
    assert got.attribution.steps == 8


# ---- faithfulness.py ------------------------------------------------------------------------


def test_spearman_equals_scipy_with_ties_and_constant_rows():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(3, 7))
    scores[1, 2] = scores[1, 4]  # a tie
    got = faithfulness.spearman(scores)
    for i in range(3):
        for j in range(3):
            assert got[i, j] == pytest.approx(spearmanr(scores[i], scores[j]).statistic, abs=1e-12)
    flat = faithfulness.spearman(np.vstack([scores[:1], np.ones((1, 7))]))
    assert np.isnan(flat[1, 1]) and np.isnan(flat[0, 1]) and flat[0, 0] == pytest.approx(1.0)


def test_deletion_ks():
    np.testing.assert_array_equal(faithfulness.deletion_ks(3, 10), [0, 1, 2, 3])
    np.testing.assert_array_equal(faithfulness.deletion_ks(10, 5), [0, 2, 4, 6, 8, 10])
    np.testing.assert_array_equal(faithfulness.deletion_ks(7, 2), [0, 4, 7])  # 3.5 rounds to 4
    np.testing.assert_array_equal(faithfulness.deletion_ks(0, 5), [0])


def test_deletion_scores_by_hand(monkeypatch):
    s = toy_subject(answer=2)
    orders = [np.array([1, 3, 2, 4]), np.array([4, 2, 3, 1])]
    ks = np.array([0, 1, 3, 4])
    monkeypatch.setattr(faithfulness, "ROWS_PER_PASS", 3)  # several passes
    rows, score_units = [], s.score_units
    monkeypatch.setattr(s, "score_units", lambda x, name=None: rows.append(len(x)) or score_units(x, name))
    got = faithfulness.deletion_scores(s, orders, ks)
    assert got.shape == (2, 4)
    assert rows == [3, 3]  # 8 cells, 6 distinct: both orders remove nothing at k = 0 and everything at k = 4
    for i, order in enumerate(orders):
        for j, k in enumerate(ks):
            ids = IDS.clone()
            ids[0, order[:k]] = 0
            assert got[i, j] == pytest.approx(float(toy_probs(ids)[0, 2]), abs=1e-6)


def test_faithfulness_on_a_toy_subject_by_hand(monkeypatch):
    s = toy_subject(answer=1)
    monkeypatch.setattr(faithfulness.tasks, "subject", lambda task, result, target=None: s)
    seen = []
    f = faithfulness.faithfulness("toy", None, steps=8, points=2, seed=5, progress=lambda frac, msg: seen.append(frac))
    units = np.flatnonzero(SPECIAL)
    assert f.task == "toy" and f.answer == "class1" and f.units == [f"t{IDS[0, i].item()}" for i in units]
    assert f.names == ["attention (last layer)", "Integrated gradients", "Gradient × input"]
    assert f.skipped == {"attention rollout": "toy"} and f.seed == 5 and f.replacement == "pad"
    np.testing.assert_allclose(f.scores[0], np.linspace(0.1, 0.6, 6)[units])
    base = torch.where(torch.as_tensor(SPECIAL), torch.zeros_like(IDS), IDS)
    model = s.model

    def prob(ids):
        return torch.softmax(model(input_ids=ids), -1)[:, 1]

    ig = captum_ig(prob, IDS, base, model.embed, 8)[0].sum(-1).numpy()
    np.testing.assert_allclose(f.scores[1], ig[units], rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(f.ks, [0, 2, 4])
    p = toy_probs(IDS)[0, 1]
    assert f.original == pytest.approx(float(p)) and f.baseline == pytest.approx(float(toy_probs(base)[0, 1]))
    orders = [units[np.argsort(-row, kind="stable")] for row in f.scores]
    orders.append(np.random.default_rng(5).permutation(units))
    for i, order in enumerate(orders):
        for j, k in enumerate(f.ks):
            ids = IDS.clone()
            ids[0, order[:k]] = 0
            assert f.deletion[i, j] == pytest.approx(float(toy_probs(ids)[0, 1]), abs=1e-6), (i, j)
    np.testing.assert_allclose(f.spearman, faithfulness.spearman(f.scores.astype(np.float64)), atol=1e-6)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    only = faithfulness.faithfulness("toy", None, methods=("gradient_x_input",), points=4)
    assert only.names == ["attention (last layer)", "Gradient × input"]


# ---- the explainers' entry points (catalog -> protocol -> these functions) on the tiny models ------


def test_explainer_entry_points_pass_their_parameters():
    from demos.explain import catalog
    from tests.cases import result_for

    senti, gen = result_for("sentiment"), result_for("generation")
    got = catalog.get("contrast").run("sentiment", senti, target="NEGATIVE", contrast="POSITIVE", method="gradient_x_input", steps=4)
    want = contrast.why_not("sentiment", senti, "NEGATIVE", "POSITIVE", "gradient_x_input", 4)
    assert (got.a, got.b) == ("NEGATIVE", "POSITIVE") and got.attribution.method == "gradient_x_input"
    np.testing.assert_allclose(got.attribution.scores, want.attribution.scores, rtol=1e-6, atol=1e-9)
    step = 1
    token = tasks.subject("generation", gen, step).contrast
    branched = catalog.get("branch").run("generation", gen, step=step, token=token)
    assert branched == contrast.branch(gen, step, token, "generation") and branched.diverge_at == step
    f = catalog.get("faithfulness").run("sentiment", senti, target="NEGATIVE", steps=4, points=2, seed=7)
    assert f.answer == "NEGATIVE" and f.seed == 7 and len(f.ks) == 3
    assert f.curve_names[-1] == "random (seed 7)"
    assert f.scores.shape[0] == len(f.names) and "Integrated gradients" in f.names


# ---- several outcomes of one input at once (attribution.integrate_targets) -----------------------------------


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_x_input"])
def test_integrate_targets_equals_captum_run_once_per_outcome(method):
    """Each of the K outcomes equals Captum's own Layer class run for that outcome alone (same baseline, steps)."""
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

    toy = Toy()
    ids, base = torch.tensor([[1, 4, 7, 2]]), torch.zeros(1, 4, dtype=torch.long)

    def probs_of_ids(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(toy(input_ids=x), -1)

    got = attribution.integrate_targets(lambda e: torch.softmax(toy(inputs_embeds=e), -1),
                                        toy.embed(ids).detach(), toy.embed(base).detach(), method, 16)
    assert len(got) == 3
    for k, g in enumerate(got):
        if method == "integrated_gradients":
            want = LayerIntegratedGradients(lambda x, k=k: probs_of_ids(x)[:, k], toy.embed).attribute(
                ids, baselines=base, n_steps=16)
        else:
            want = LayerGradientXActivation(lambda x, k=k: probs_of_ids(x)[:, k], toy.embed).attribute(ids)
        torch.testing.assert_close(g.attrs.double(), want.double(), rtol=1e-5, atol=1e-7)
        with torch.no_grad():
            f_x, f_b = float(probs_of_ids(ids)[0, k]), float(probs_of_ids(base)[0, k])
        assert (g.output_value, g.baseline_value) == (pytest.approx(f_x, rel=1e-6), pytest.approx(f_b, rel=1e-6))
        if method == "integrated_gradients":
            assert g.delta == pytest.approx(abs(float(g.attrs.double().sum()) - (f_x - f_b)), abs=1e-6)
        else:
            assert g.delta is None


def test_integrate_targets_climbs_the_step_ladder_until_every_outcome_converges():
    toy = Toy()
    x, b = toy.embed(torch.tensor([[1, 4, 7, 2]])).detach(), toy.embed(torch.zeros(1, 4, dtype=torch.long)).detach()

    def score(e: torch.Tensor) -> torch.Tensor:
        return torch.softmax(toy(inputs_embeds=e), -1)

    loose = attribution.integrate_targets(score, x, b, "integrated_gradients", 64, tolerance=1.0)
    assert {g.steps for g in loose} == {8}
    tight = attribution.integrate_targets(score, x, b, "integrated_gradients", 64, tolerance=1e-12)
    assert {g.steps for g in tight} == {64}  # never converges that far: the ceiling
    mid = attribution.integrate_targets(score, x, b, "integrated_gradients", 64, tolerance=max(g.delta for g in tight) * 2)
    assert max(g.delta for g in mid) <= max(g.delta for g in tight) * 2 and {g.steps for g in mid} <= {8, 16, 32, 64}


def test_explainer_entry_points_pass_what_they_are_given_and_keep_their_described_defaults():
    """A B that is not the default one, a token that is not the runner-up and a progress callback each reach the
    computation; given nothing, each entry point uses the defaults its description declares (core.explainers)."""
    from core import explainers as specs
    from demos.explain import catalog
    from tests.cases import result_for

    gen = result_for("generation")
    s = tasks.subject("generation", gen, 0)
    with torch.no_grad():
        probs = s.outcome_probs(s.run(s.batch(1)))[0]
    third = int(torch.argsort(probs, descending=True)[2])  # neither the answer A nor the default B
    got = catalog.get("contrast").run("generation", gen, target=0, contrast=third)
    assert got.b == s.outcome_label(third) != s.outcome_label(s.contrast)
    described = {p.name: p.default for p in specs.CONTRAST.params}
    assert (got.attribution.method, got.attribution.steps) == (described["method"], described["steps"])
    branched = catalog.get("branch").run("generation", gen, step=0, token=third)
    assert branched.forced == gen_piece(gen, third) and branched.branch[0] == branched.forced
    seen = []
    catalog.get("faithfulness").run("sentiment", result_for("sentiment"), steps=4, points=2,
                                    progress=lambda frac, msg="": seen.append(frac))
    assert seen and max(seen) <= 1.0


def gen_piece(result, token_id: int) -> str:
    """A generated piece as the generation tab writes it (its tokenizer's decode of the one id)."""
    return tasks.load("generation", result.model_id).processor.decode([token_id])


def test_faithfulness_defaults_rollout_name_and_progress_per_method(monkeypatch):
    """Given nothing, faithfulness uses its described defaults (32 steps, 10 points, seed 0) through both entry
    points; a rollout row is named as the view names it; each method reports its own slice of the bar, labelled."""
    from demos.explain import catalog

    s = toy_subject(answer=1)
    s.rollout = lambda: np.linspace(0.6, 0.1, 6)  # the toy's rollout row: the attention row reversed
    s.not_applicable = {}
    monkeypatch.setattr(faithfulness.tasks, "subject", lambda task, result, target=None: s)
    seen = []
    f = faithfulness.faithfulness("toy", None, progress=lambda frac, msg: seen.append((frac, msg)))
    units = np.flatnonzero(SPECIAL)
    assert f.names == ["attention (last layer)", "attention rollout", "Integrated gradients", "Gradient × input"]
    np.testing.assert_allclose(f.scores[1], np.linspace(0.6, 0.1, 6)[units])
    assert f.seed == 0 and np.array_equal(f.ks, faithfulness.deletion_ks(len(units), 10))
    assert f.value_name == s.value_name and f.scores.dtype == np.float32  # stored as the views read them
    ig32 = faithfulness.attribute_units(s, None, "integrated_gradients", 32).scores
    np.testing.assert_allclose(f.scores[2], ig32[units], rtol=1e-6, atol=1e-9)
    fracs = [frac for frac, _ in seen]
    assert fracs == sorted(fracs) and fracs[0] >= 0.0 and seen[-1] == (1.0, "deletion check done")
    for i, label in enumerate(["Integrated gradients", "Gradient × input"]):  # 2 methods: thirds of the bar
        own = [frac for frac, msg in seen if msg.startswith(f"{label}: ")]
        assert own and all(i / 3 <= frac <= (i + 1) / 3 for frac in own), (label, own)
    via = catalog.get("faithfulness").run("sentiment", SimpleNamespace(text="toy", model_id="toy"))
    assert via.seed == 0 and np.array_equal(via.ks, f.ks)
    np.testing.assert_allclose(via.scores, f.scores, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("step, rank", [(0, 1), (1, 2), (-1, 2)])
def test_branch_equals_greedy_generation_from_the_forced_token_field_by_field(step, rank):
    """The branch explorer at the first, a middle and the last step, forced onto the runner-up or the third token:
    every field against transformers' own greedy generate and a divergence/rejoin count written here."""
    from demos.explain import contrast
    from tests.cases import result_for

    gen = result_for("generation")
    step = step % gen.steps
    m = tasks.load("generation", gen.model_id)
    s = tasks.subject("generation", gen, step)
    with torch.no_grad():
        probs = s.outcome_probs(s.run(s.batch(1)))[0]
    token = int(torch.argsort(probs, descending=True)[rank])
    got = contrast.branch(gen, step, token)
    prefix = torch.tensor([[*gen.ids[: gen.n_prompt + step], token]])
    left = gen.steps - step - 1
    with torch.no_grad():
        out = prefix if left == 0 else m.model.generate(
            input_ids=prefix, attention_mask=torch.ones_like(prefix), do_sample=False, max_new_tokens=left,
            pad_token_id=m.processor.eos_token_id)
    original = [m.processor.decode([i]) for i in gen.ids[gen.n_prompt:]]
    branch = [m.processor.decode([i]) for i in out[0, gen.n_prompt:].tolist()]
    diverge = min(i for i in range(len(branch)) if i >= len(original) or branch[i] != original[i])
    tails = [i for i in range(diverge + 1, len(branch)) if branch[i:] == original[i:len(branch)]]
    rejoin = tails[0] if tails and len(branch) == len(original) else None
    assert (got.prompt, got.step, got.forced) == (gen.prompt, step, m.processor.decode([token]))
    assert (got.original, got.branch, got.diverge_at, got.rejoin_at) == (original, branch, diverge, rejoin)
