"""Attention step by step on every task and attention kind (tiny models): the softmax row computed
from q, K, scale and mask equals the attention row of the model's full forward pass, and the
weighted sum of V equals that head's slice of the attention output before the output projection
(captured by a forward pre-hook on the out-projection during the full pass). A task of
core.registry.TASKS without a row here fails."""
from __future__ import annotations

import numpy as np
import pytest

from core import registry
from core.lens_types import AttentionSteps
from demos.explain import attention_steps as steps_mod
from demos.explain import catalog, lens
from tests.lens_support import NoFullPass, full_pass, loaded, make_result

_results: dict[str, object] = {}


def result_for(task: str):
    if task not in _results:
        _results[task] = make_result(task)
    return _results[task]


def _modules(task: str, model, kind: str, layer: int) -> tuple[object, list[object]]:
    """(out-projection, [q, k, v] projection modules, or [fused c_attn]) of (task, kind, layer),
    named here independently of the demos code."""
    block = _layers(task, model, kind)[layer]
    if task == "generation":
        return block.attn.c_proj, [block.attn.c_attn]
    if task in ("sentiment", "qa") or (task == "explorer" and hasattr(model, "transformer")):
        a = block.attention
        return a.out_lin, [a.q_lin, a.k_lin, a.v_lin]
    if task == "explorer":  # BERT (MiniLM)
        a = block.attention
        return a.output.dense, [a.self.query, a.self.key, a.self.value]
    if task == "image":
        a = block.attention
        return a.o_proj, [a.q_proj, a.k_proj, a.v_proj]
    a = block.encoder_attn if kind == "cross" else block.self_attn
    return a.out_proj, [a.q_proj, a.k_proj, a.v_proj]


def _attentions(task: str, out, kind: str):
    """Per-layer (batch, heads, q, k) attentions of the full pass for this kind."""
    if task == "clip":
        return (out.vision_model_output if kind == "vision self" else out.text_model_output).attentions
    if task in ("translation", "asr"):
        return {"encoder self": out.encoder_attentions, "decoder self": out.decoder_attentions, "cross": out.cross_attentions}[kind]
    return out.attentions


CASES = [(task, kind) for task in steps_mod.KINDS for kind in steps_mod.KINDS[task]]


def test_every_task_has_attention_steps():
    for spec in registry.TASKS:
        assert spec.key in steps_mod.KINDS, f"task {spec.key!r} has no attention step-by-step"
        assert catalog.get("attention_steps").applies_to(spec.key)
    assert set(steps_mod.KINDS["translation"]) >= {"cross"} and set(steps_mod.KINDS["asr"]) >= {"cross"}


@pytest.mark.parametrize(("task", "kind"), CASES)
@pytest.mark.parametrize("where", ["first", "last"])
def test_softmax_and_weighted_sum_equal_the_model(task, kind, where):
    r = result_for(task)
    m = loaded(task, r)
    item = 1 if task in ("clip", "explorer") else None  # not the first image / text / sentence
    probe = steps_mod.attention_steps(task, r, 0, 0, 0, kind, item=item)
    n_layers = len(_layers(task, m.model, kind))
    n_heads = _heads(task, m.model, kind)
    layer = 0 if where == "first" else n_layers - 1
    head = 0 if where == "first" else n_heads - 1
    n_queries = _n_queries(task, r, kind, probe, item)
    query = n_queries // 2 if where == "first" else n_queries - 1
    with NoFullPass(m.model):
        s = steps_mod.attention_steps(task, r, layer, head, query, kind, item=item)
    assert isinstance(s, AttentionSteps)
    out_proj, projections = _modules(task, m.model, kind, layer)
    out, captured, projected = full_pass(task, r, [out_proj], projections)
    batch = item or 0
    n_keys = len(s.tokens)
    row = _attentions(task, out, kind)[layer][batch, head, query].float().numpy()
    np.testing.assert_allclose(row[n_keys:], 0.0, atol=0)  # only padding keys are cut (weight exactly 0)
    np.testing.assert_allclose(s.softmax, row[:n_keys], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.model_row, row[:n_keys], rtol=1e-5, atol=1e-6)
    d_k = s.d_k
    head_out = captured[0][batch, query, head * d_k : (head + 1) * d_k].float().numpy()
    np.testing.assert_allclose(s.output, head_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s.model_output, head_out, rtol=1e-5, atol=1e-6)
    # q, K, V are the model's own projections of the real layer input (independent of the rows).
    if len(projected) == 1:  # GPT-2: one fused q | k | v projection
        projected = list(projected[0].split(projected[0].shape[-1] // 3, dim=-1))
    cut = slice(head * d_k, (head + 1) * d_k)
    q_model, k_model, v_model = (p[batch, :, cut].double().numpy() for p in projected)
    np.testing.assert_allclose(s.q, q_model[query], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.K, k_model[:n_keys], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.V, v_model[:n_keys], rtol=1e-5, atol=1e-6)
    # The steps are what they say: scores = K q, scaled by 1/sqrt(d_k), rows sum to 1.
    np.testing.assert_allclose(s.scores, s.K @ s.q)
    assert s.scale == pytest.approx(d_k ** -0.5) and s.q.shape == (d_k,) and s.V.shape == (n_keys, d_k)
    np.testing.assert_allclose(s.scaled, s.scores * s.scale)
    assert s.softmax.sum() == pytest.approx(1.0)
    if s.kind == "causal self":
        assert s.mask is not None and s.mask[: query + 1].all() and not s.mask[query + 1 :].any()
        assert np.all(s.softmax[query + 1 :] == 0)
    else:
        assert s.mask is None
    assert s.kind == ("cross" if kind == "cross" else s.kind) and "sqrt(d_k)" in s.formula


def _layers(task: str, model, kind: str):
    if task == "generation":
        return model.transformer.h
    if task in ("sentiment", "qa"):
        return model.distilbert.transformer.layer
    if task == "explorer":
        return model.transformer.layer if hasattr(model, "transformer") else model.encoder.layer
    if task == "image":
        return model.vit.layers
    if task == "clip":
        return (model.vision_model if kind == "vision self" else model.text_model).encoder.layers
    return model.model.encoder.layers if kind == "encoder self" else model.model.decoder.layers


def _heads(task: str, model, kind: str) -> int:
    cfg = model.config
    if task == "clip":
        return (cfg.vision_config if kind == "vision self" else cfg.text_config).num_attention_heads
    if task in ("translation", "asr"):
        return cfg.encoder_attention_heads if kind == "encoder self" else cfg.decoder_attention_heads
    return int(getattr(cfg, "n_heads", None) or cfg.num_attention_heads)


def _n_queries(task: str, r, kind: str, probe: AttentionSteps, item) -> int:
    if kind == "cross":
        return len(r.decoder_tokens) if task == "translation" else len(r.prompt) + len(r.tokens) - 1
    return len(probe.tokens)


def test_cross_attention_keys_are_the_source_and_causal_rows_do_not_look_ahead():
    r = result_for("translation")
    s = steps_mod.attention_steps("translation", r, 0, 0, 1, "cross")
    assert s.tokens == r.source_tokens and s.query_token == r.decoder_tokens[1]
    np.testing.assert_allclose(s.model_row, r.cross_attention.weights[0, 0, 1], rtol=1e-5, atol=1e-6)
    g = result_for("generation")
    s = steps_mod.attention_steps("generation", g, 1, 1, 2, "self")
    assert s.kind == "causal self" and s.tokens == g.tokens
    np.testing.assert_allclose(s.softmax, g.attention.weights[1, 1, 2], rtol=1e-5, atol=1e-6)


def test_bad_choices_get_clear_messages():
    r = result_for("sentiment")
    with pytest.raises(ValueError, match="Layer 99"):
        steps_mod.attention_steps("sentiment", r, 99, 0, 0)
    with pytest.raises(ValueError, match="Head 99"):
        steps_mod.attention_steps("sentiment", r, 0, 99, 0)
    with pytest.raises(ValueError, match="Query token 999"):
        steps_mod.attention_steps("sentiment", r, 0, 0, 999)
    with pytest.raises(ValueError, match="no 'cross'"):
        steps_mod.attention_steps("sentiment", r, 0, 0, 0, "cross")
    assert lens.attention_steps is steps_mod.attention_steps
    last = steps_mod.attention_steps("sentiment", r, 0, 0, -1)
    assert last.query == len(r.tokens) - 1 and last.query_token == r.tokens[-1]


def test_table_rows_put_the_most_attended_key_first():
    s = steps_mod.attention_steps("generation", result_for("generation"), 0, 0, 3)
    rows = s.rows(top=3)
    assert len(rows) == 3 and rows[0][4] == pytest.approx(s.softmax.max())
    assert [r[4] for r in rows] == sorted((r[4] for r in rows), reverse=True)
    every = s.rows()
    assert [r[0] for r in every] == s.tokens and sum(r[3] for r in every) == len(s.tokens) - 4  # masked: after the query
