"""Every explainer that needs the architecture (layer lens, attention step by step, knockouts, head map) on a
tiny model of every family of the architecture table, run through the app's own task, checked against
references written here (tests/demos/explain/family_models.py), not with the app's helpers:

(a) every row of the lens equals the model's own final norm + head applied here to hidden_states[l] of a plain
    forward pass (the last row: the model's output);
(b) attention step by step equals the row the model returned with output_attentions and the head's output
    captured by a forward pre-hook on the model's own output projection;
(c) knocking out nothing changes nothing, and a knockout equals a forward pass with a hook written here that
    zeroes that head's slice at the output projection input (the head map's cell too).
A family without an adapter gets a message naming what is missing, and its attention maps and attributions
still work.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T

from core.lens_types import HeadLens, LensGrid
from demos import adapters as A
from demos.explain import attention_steps as steps_mod
from demos.explain import interventions, lens, tasks
from tests.demos.explain.family_models import FAMILIES, model_inputs, serving
from viz import lens as lens_view

NAMES = list(FAMILIES)
TIGHT = dict(rtol=1e-4, atol=1e-5)
ROTARY = {"llama", "qwen2", "gemma", "gpt_neox"}
BIASED = {"t5": "relative_bias", "deberta-v2": "disentangled", "beit": "relative_bias_2d"}


def _softmax(x: torch.Tensor) -> np.ndarray:
    return torch.softmax(x.float(), dim=-1).numpy()


# ---------------------------------------------------------------------------------------------- (a) the lens


def _decoder_rows(z, out) -> tuple[list[torch.Tensor], slice]:
    """Reference logits per layer, (n, vocab) over the lens's columns: head(hidden_states[l]) for l < L, the
    model's own logits for L."""
    hidden = out.hidden_states if z.task == "generation" else out.decoder_hidden_states
    cols = slice(len(z.result.prompt) - 1, None) if z.task == "asr" else slice(None)
    rows = [z.family.head(z.model, h)[0, cols] for h in hidden[:-1]] + [out.logits[0, cols]]
    return rows, cols


def _best_span(start: np.ndarray, end: np.ndarray, context: np.ndarray, candidates: np.ndarray) -> tuple[int, int, float]:
    """SQuAD's rule written out: start <= end < start + 30, both in the context, max start + end logit; its
    probability under the softmaxes over the candidates (context and [CLS]; others get -10000)."""
    best, where = -np.inf, (0, 0)
    for s in np.flatnonzero(context):
        for e in np.flatnonzero(context):
            if s <= e < s + 30 and start[s] + end[e] > best:
                best, where = float(start[s]) + float(end[e]), (int(s), int(e))

    def soft(x: np.ndarray) -> np.ndarray:
        y = np.where(candidates, x.astype(np.float64), -10000.0)
        y = np.exp(y - y.max())
        return y / y.sum()

    return where[0], where[1], float(soft(start)[where[0]] * soft(end)[where[1]])


@pytest.mark.parametrize("name", NAMES)
def test_every_lens_row_is_the_models_own_final_norm_and_head(zoo, name):
    z = zoo(name)
    r, m = z.result, z.model
    with torch.no_grad():
        out = m(**model_inputs(z.task, r, z.proc), output_hidden_states=True)
    with serving(z.task, z.folder), torch.no_grad():
        got = lens.lens(z.task, r, start=0)  # every position (a decoder's default is the answer's part)
        if isinstance(got, LensGrid):
            rows, _ = _decoder_rows(z, out)
            assert got.n_layers == len(rows)
            for layer, ref in enumerate(rows):
                np.testing.assert_allclose(lens.head_logits(z.task, r, layer), ref.float().numpy(), **TIGHT)
                top = torch.softmax(ref.float(), -1).topk(5, -1)
                np.testing.assert_allclose(got.top5_probs[layer], top.values.numpy(), **TIGHT)
            return
    assert isinstance(got, HeadLens)
    with torch.no_grad():
        if z.task == "clip":
            hidden = out.vision_model_output.hidden_states
            emb = [z.family.head(m, h[:1]) for h in hidden[:-1]] + [out.image_embeds[:1]]
            text = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
            refs = [_softmax((e / e.norm(dim=-1, keepdim=True)) @ text.T * m.logit_scale.exp())[0] for e in emb]
            np.testing.assert_allclose(got.class_probs, np.stack(refs), **TIGHT)
            np.testing.assert_allclose(got.class_probs[-1], _softmax(out.logits_per_image[0]), **TIGHT)
            return
        hidden = out.hidden_states
        if z.task == "qa":
            logits = [z.family.head(m, h)[0] for h in hidden[:-1]] + [torch.stack([out.start_logits[0], out.end_logits[0]], -1)]
            ids = model_inputs("qa", r, z.proc)["input_ids"][0].numpy()
            context = np.asarray(r.segment) == 1
            candidates = context | (ids == z.proc.cls_token_id)
            for layer, x in enumerate(logits):
                s, e, p = _best_span(x[:, 0].numpy(), x[:, 1].numpy(), context, candidates)
                span = got.spans[layer]
                assert (span.start, span.end) == (s, e)
                assert span.prob == pytest.approx(p, rel=1e-4, abs=1e-7)
            assert (got.spans[-1].start, got.spans[-1].end) == (r.start_index, r.end_index)
            return
        probs = np.stack([_softmax(z.family.head(m, h))[0] for h in hidden[:-1]] + [_softmax(out.logits)[0]])
    if got.class_probs is not None:  # sentiment: every class
        np.testing.assert_allclose(got.class_probs, probs, **TIGHT)
    order = np.argsort(-probs, axis=1, kind="stable")[:, : got.top_probs.shape[1]]
    np.testing.assert_allclose(got.top_probs, np.take_along_axis(probs, order, axis=1), **TIGHT)
    np.testing.assert_allclose(probs[-1], r.probs, **TIGHT)
    assert got.final_label == r.labels[int(np.argmax(r.probs))]


# ----------------------------------------------------------------------------------- (b) attention step by step

_WHERE = {"causal self": "self", "self": "self", "encoder self": "encoder", "decoder self": "decoder", "cross": "cross",
          "vision self": "vision", "text self": "text"}


def _attentions(z, out, kind: str):
    if z.task == "clip":
        return (out.vision_model_output if kind == "vision self" else out.text_model_output).attentions
    if z.task in ("translation", "asr"):
        return {"encoder self": out.encoder_attentions, "decoder self": out.decoder_attentions, "cross": out.cross_attentions}[kind]
    return out.attentions


def _kv_heads(z, kind: str, heads: int) -> int:
    cfg = z.model.config
    return int(getattr(cfg, "num_key_value_heads", None) or heads) if z.task == "generation" else heads


@pytest.mark.parametrize("name", NAMES)
def test_attention_steps_reproduce_the_models_row_and_head_output(zoo, name):
    z = zoo(name)
    r, m = z.result, z.model
    item = 1 if z.task == "clip" else None  # not the first image / text
    for kind in steps_mod.KINDS[z.task]:
        layer = 1
        seen: list[torch.Tensor] = []
        proj = z.family.out_proj(m, _WHERE[kind], layer)
        hook = proj.register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0].detach()))
        try:
            with torch.no_grad():
                out = m(**model_inputs(z.task, r, z.proc), output_attentions=True)
        finally:
            hook.remove()
        weights = _attentions(z, out, kind)[layer]
        batch = item or 0
        heads, n_q = weights.shape[1], weights.shape[2]
        head, query = heads - 2, n_q // 2 + 1  # with grouped-query attention: repeated kv heads, not tiled ones
        with serving(z.task, z.folder):
            s = steps_mod.attention_steps(z.task, r, layer, head, query, kind, item=item)
        n_keys = len(s.tokens)
        row = weights[batch, head, query].float().numpy()
        np.testing.assert_allclose(row[n_keys:], 0.0, atol=0)  # only padding keys are cut
        np.testing.assert_allclose(s.softmax, row[:n_keys], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s.model_row, row[:n_keys], rtol=1e-5, atol=1e-6)
        d = s.d_k
        head_out = seen[0][batch, query, head * d: (head + 1) * d].float().numpy()
        np.testing.assert_allclose(s.output, head_out, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s.model_output, head_out, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s.scaled, s.scores * s.scale)
        # what the result says the model does
        cross = kind == "cross"
        causal = kind in ("causal self", "decoder self", "text self")  # GPT-like decoders, seq2seq decoders, CLIP text
        assert s.kind == ("cross" if cross else "causal self" if causal else "self")
        if name in ROTARY:
            assert s.positions == "rotary" and any("Rotary" in n for n in s.notes) and "R(Q)" in s.formula
            assert s.q_before_rotary is not None and not np.allclose(s.q_before_rotary, s.q)
        else:
            assert s.q_before_rotary is None
        kv = _kv_heads(z, kind, heads)
        assert s.kv_heads == kv
        group = heads // kv
        assert s.shares_with == [h for h in range(head // group * group, (head // group + 1) * group) if h != head]
        if name in BIASED and not cross:
            assert s.positions == BIASED[name] and s.bias is not None and s.bias.shape == (n_keys,)
            np.testing.assert_allclose(s.logits, s.scaled + s.bias)
            assert "bias" in s.formula or "c2p" in s.formula
        else:
            assert s.bias is None
        # the figure's bars stack to what the softmax is taken over: their softmax is the model's row
        fig = lens_view.steps_figure(s, top=n_keys)
        tops = sum(np.asarray(t.y, float) for t in fig.data if t.type == "bar")
        keep = np.ones(n_keys, bool) if s.mask is None else s.mask.astype(bool)
        e = np.exp(tops[keep] - tops[keep].max())
        np.testing.assert_allclose(e / e.sum(), row[:n_keys][keep], rtol=1e-4, atol=1e-6)
        expected_scale = 1.0 if name == "t5" else (d * 3) ** -0.5 if name == "deberta-v2" else d ** -0.5
        assert s.scale == pytest.approx(expected_scale)


# -------------------------------------------------------------------------------------------- (c) knockouts

_TOWER_WHERE = {"layers": "self", "encoder": "encoder", "decoder self-attention": "decoder",
                "decoder cross-attention": "cross", "vision": "vision", "text": "text"}


def _answer(z) -> float:
    """The default answer's probability, computed here from the reference model (what each task explains)."""
    r, m, task = z.result, z.model, z.task
    with torch.no_grad():
        if task == "generation":
            ids = torch.tensor([r.ids[: r.n_prompt]])
            return float(torch.softmax(m(input_ids=ids).logits[0, -1].float(), -1)[r.ids[r.n_prompt]])
        if task in ("sentiment", "image"):  # the predicted class of the result
            return float(_softmax(m(**model_inputs(task, r, z.proc)).logits)[0, int(np.argmax(r.probs))])
        if task == "qa":
            inputs = model_inputs(task, r, z.proc)
            out = m(**inputs)
            ids = inputs["input_ids"][0].numpy()
            context = np.asarray(r.segment) == 1
            keep = context | (ids == z.proc.cls_token_id)

            def soft(x: torch.Tensor) -> np.ndarray:
                y = np.where(keep, x[0].double().numpy(), -10000.0)
                y = np.exp(y - y.max())
                return y / y.sum()
            return float(soft(out.start_logits)[r.start_index] * soft(out.end_logits)[r.end_index])
        if task == "translation":
            src = model_inputs(task, r, z.proc)["input_ids"]
            logits = m(input_ids=src, decoder_input_ids=torch.tensor([r.generated[:1]])).logits[0, -1]
            return float(torch.softmax(logits.float(), -1)[int(r.target_ids[0])])
        if task == "asr":
            prompt = torch.tensor([z.proc.tokenizer.convert_tokens_to_ids(r.prompt)])
            logits = m(input_features=torch.from_numpy(r.input_features), decoder_input_ids=prompt).logits[0, -1]
            return float(torch.softmax(logits.float(), -1)[int(r.token_ids[0])])
        if task == "clip":
            inputs = model_inputs(task, r, z.proc)
            inputs["pixel_values"] = inputs["pixel_values"][:1]
            return float(_softmax(m(**inputs).logits_per_image)[0, int(np.argmax(r.logits[0]))])
    raise AssertionError(task)


def _zeroed(z, tower: str, layer: int, head: int, heads: int) -> float:
    """The answer with head `head` of (tower, layer) zeroed by a hook written here on the model's own out-projection."""
    proj = z.family.out_proj(z.model, _TOWER_WHERE[tower], layer)

    def zero(_module, args):
        x = args[0].clone()
        d = x.shape[-1] // heads
        x[..., head * d: (head + 1) * d] = 0
        return (x, *args[1:])

    hook = proj.register_forward_pre_hook(zero)
    try:
        return _answer(z)
    finally:
        hook.remove()


@pytest.mark.parametrize("name", NAMES)
def test_knockouts_equal_a_hand_written_hook(zoo, name):
    z = zoo(name)
    r = z.result
    plain = _answer(z)
    with serving(z.task, z.folder):
        nothing = interventions.ablate(z.task, r, [])
        assert np.array_equal(nothing.before, nothing.after) and nothing.score_after == nothing.score_before
        assert nothing.score_before == pytest.approx(plain, rel=1e-4, abs=1e-6)
        app_model = tasks.subject(z.task, r).model
        stacks = interventions.towers(app_model)
        picks = [(stacks[0], stacks[0].n_layers - 1, 1), (stacks[-1], 0, stacks[-1].n_heads - 1)]
        for tower, layer, head in picks:
            knocked = interventions.ablate(z.task, r, [(tower.name, layer, head)])
            expected = _zeroed(z, tower.name, layer, head, tower.n_heads)
            assert knocked.score_after == pytest.approx(expected, rel=1e-4, abs=1e-6)
            assert knocked.score_after != pytest.approx(knocked.score_before, rel=1e-7, abs=0)
        hm = interventions.head_importance(z.task, r)
        tower, layer, head = picks[0]
        cell = hm.maps[[t.name for t in hm.towers].index(tower.name)][layer, head]
        assert cell == pytest.approx(_zeroed(z, tower.name, layer, head, tower.n_heads) - plain, rel=1e-3, abs=2e-6)
        assert not any(mod._forward_pre_hooks for mod in app_model.modules())


def test_siglip_knockout_sites_at_the_model_level():
    """No task serves SigLIP (the clip task loads CLIPModel); its knockout sites still come from the table."""
    tower = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    torch.manual_seed(0)
    model = T.SiglipModel(T.SiglipConfig(text_config=dict(tower, vocab_size=100, max_position_embeddings=16),
                                         vision_config=dict(tower, image_size=16, patch_size=4), **{"attn_implementation": "eager"})).eval()
    inputs = dict(input_ids=torch.randint(0, 100, (2, 6)), pixel_values=torch.randn(1, 3, 16, 16))
    assert [(t.name, t.n_layers, t.n_heads) for t in interventions.towers(model)] == [("text", 2, 4), ("vision", 2, 4)]

    def zero_head(_m, args):
        x = args[0].clone()
        x[..., 8:16] = 0  # head 1 of 4, d = 8
        return (x,)

    with torch.no_grad():
        plain = model(**inputs).logits_per_image
        hook = model.vision_model.encoder.layers[1].self_attn.out_proj.register_forward_pre_hook(zero_head)
        expected = model(**inputs).logits_per_image
        hook.remove()
        with interventions.head_masks(model, interventions.knockout_masks(model, [("vision", 1, 1)])):
            got = model(**inputs).logits_per_image
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(got, plain)


# --------------------------------------------------------------------------------------- without an adapter


def test_a_family_without_an_adapter_is_named_and_attention_and_attributions_still_work(zoo, tiny_models, tmp_path):
    """Mistral is not in the table: the views that need it say so; the attention maps and Captum still work."""
    from demos import generation

    tok = T.AutoTokenizer.from_pretrained(tiny_models["generation"])
    torch.manual_seed(0)
    model = T.MistralForCausalLM(T.MistralConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                 num_key_value_heads=2, intermediate_size=64, vocab_size=len(tok),
                                                 max_position_embeddings=256, eos_token_id=tok.eos_token_id,
                                                 bos_token_id=tok.eos_token_id))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    folder = str(tmp_path)
    with serving("generation", folder):
        r = generation.generate("The quick brown fox", max_new_tokens=3, model_id=folder)
        assert r.attention.weights.shape[:2] == (2, 4) and np.allclose(r.attention.weights.sum(-1), 1, atol=1e-3)
        views = [lambda: lens.lens("generation", r), lambda: steps_mod.attention_steps("generation", r, 0, 0, -1),
                 lambda: interventions.ablate("generation", r, [("layers", 0, 0)]),
                 lambda: interventions.head_importance("generation", r)]
        for view in views:
            with pytest.raises(A.UnknownArchitecture, match="no adapter for mistral: .*blocks, attention projections.*"
                                                            "attention maps and the attributions .* still work"):
                view()
        attribution = generation.attribute(r.ids, r.n_prompt, steps=4, model_id=folder)
        assert attribution.scores.shape == (r.n_prompt,) and np.isfinite(attribution.scores).all()
