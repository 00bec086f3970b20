"""demos.adapters against tiny random models of every family in the table (eager attention).

The reference side is always the model itself: its logits, its returned attention maps, and what its own
modules receive (captured with forward pre-hooks). Scores are recomputed here from the adapter's q/k/v.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch
import transformers as T

import demos.adapters as A

EAGER = {"attn_implementation": "eager"}
S2S = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
           encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=100, max_position_embeddings=64, pad_token_id=1,
           decoder_start_token_id=2, **EAGER)
VISION = dict(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, num_labels=3, **EAGER)
TOWER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
TEXT_TOWER = dict(TOWER, vocab_size=100, max_position_embeddings=16, eos_token_id=99, bos_token_id=98, pad_token_id=1)
BERTISH = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=100,
               max_position_embeddings=64, **EAGER)
LLAMAISH = dict(num_hidden_layers=2, intermediate_size=64, vocab_size=100, max_position_embeddings=64, **EAGER)

# family -> (build the model, expected causal flag per stack (None: the stack has cross-attention too))
FAMILIES = {
    "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64,
                                                   bos_token_id=0, eos_token_id=0, **EAGER)),
    # SmolLM2's shape: 9 query heads sharing 3 key/value heads
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(hidden_size=72, num_attention_heads=9, num_key_value_heads=3,
                                                      **LLAMAISH)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                                      **LLAMAISH)),
    "gemma": lambda: T.GemmaForCausalLM(T.GemmaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                                      head_dim=8, **LLAMAISH)),
    "gpt_neox": lambda: T.GPTNeoXForCausalLM(T.GPTNeoXConfig(hidden_size=32, num_attention_heads=4, rotary_pct=0.25,
                                                             use_parallel_residual=True, **LLAMAISH)),
    "opt": lambda: T.OPTForCausalLM(T.OPTConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, ffn_dim=64,
                                                vocab_size=100, max_position_embeddings=64, word_embed_proj_dim=32,
                                                **EAGER)),
    "distilbert": lambda: T.DistilBertForSequenceClassification(T.DistilBertConfig(
        n_layers=2, dim=32, n_heads=4, hidden_dim=64, vocab_size=100, max_position_embeddings=64, **EAGER)),
    "distilbert-qa": lambda: T.DistilBertForQuestionAnswering(T.DistilBertConfig(
        n_layers=2, dim=32, n_heads=4, hidden_dim=64, vocab_size=100, max_position_embeddings=64, **EAGER)),
    "bert": lambda: T.BertForSequenceClassification(T.BertConfig(**BERTISH)),
    "roberta": lambda: T.RobertaForSequenceClassification(T.RobertaConfig(**BERTISH)),
    "electra": lambda: T.ElectraForSequenceClassification(T.ElectraConfig(embedding_size=16, **BERTISH)),
    "deberta-v2": lambda: T.DebertaV2ForSequenceClassification(T.DebertaV2Config(
        relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8, max_relative_positions=64,
        position_biased_input=False, share_att_key=True, norm_rel_ebd="layer_norm", **BERTISH)),
    "marian": lambda: T.MarianMTModel(T.MarianConfig(**S2S)),
    "bart": lambda: T.BartForConditionalGeneration(T.BartConfig(**S2S)),
    "m2m_100": lambda: T.M2M100ForConditionalGeneration(T.M2M100Config(**S2S)),
    "t5": lambda: T.T5ForConditionalGeneration(T.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                                          vocab_size=100, relative_attention_num_buckets=8,
                                                          decoder_start_token_id=0, **EAGER)),
    "whisper": lambda: T.WhisperForConditionalGeneration(T.WhisperConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=100, num_mel_bins=8, max_source_positions=16,
        max_target_positions=32, pad_token_id=1, decoder_start_token_id=2, eos_token_id=3, bos_token_id=2, **EAGER)),
    "vit": lambda: T.ViTForImageClassification(T.ViTConfig(**VISION)),
    "deit": lambda: T.DeiTForImageClassificationWithTeacher(T.DeiTConfig(**VISION)),
    "beit": lambda: T.BeitForImageClassification(T.BeitConfig(use_relative_position_bias=True, use_mean_pooling=True,
                                                              vocab_size=100, **VISION)),
    "clip": lambda: T.CLIPModel(T.CLIPConfig(text_config=TEXT_TOWER, vision_config=dict(TOWER, image_size=16, patch_size=4),
                                             projection_dim=24, **EAGER)),
    "siglip": lambda: T.SiglipModel(T.SiglipConfig(text_config=TEXT_TOWER,
                                                   vision_config=dict(TOWER, image_size=16, patch_size=4), **EAGER)),
}
# Written from the transformers sources, independently of the table: which stacks mask the future.
CAUSAL = {"gpt2", "llama", "qwen2", "gemma", "gpt_neox", "opt", ("marian", "decoder"), ("bart", "decoder"),
          ("m2m_100", "decoder"), ("t5", "decoder"), ("whisper", "decoder"), ("clip", "text")}
SEQ2SEQ = {"marian", "bart", "m2m_100", "t5", "whisper"}


def inputs(family: str) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 98, (1, 7), generator=g)
    if family in ("marian", "bart", "m2m_100", "t5"):
        return dict(input_ids=ids, decoder_input_ids=torch.randint(4, 98, (1, 5), generator=g))
    if family == "whisper":
        return dict(input_features=torch.randn(1, 8, 32, generator=g),
                    decoder_input_ids=torch.randint(4, 98, (1, 5), generator=g))
    if family in ("vit", "deit", "beit"):
        return dict(pixel_values=torch.randn(1, 3, 16, 16, generator=g))
    if family in ("clip", "siglip"):
        ids = torch.randint(4, 98, (2, 6), generator=g)
        ids[0, 4], ids[0, 5], ids[1, 5] = 99, 1, 99  # CLIP pools at the first end-of-text token (99), SigLIP at the last
        return dict(input_ids=ids, pixel_values=torch.randn(1, 3, 16, 16, generator=g))
    return dict(input_ids=ids)


@functools.cache
def run(family: str) -> SimpleNamespace:
    """Build, adapt and run a family once; capture every hooked input along the way."""
    torch.manual_seed(0)
    model = FAMILIES[family]().eval()
    with torch.no_grad():  # terms that start at zero would pass unchecked: BEiT's bias table, Marian/BART's logits bias
        for key, t in [*model.named_parameters(), *model.named_buffers()]:
            if key.endswith(("relative_position_bias_table", "final_logits_bias")):
                t.normal_()
    adapter = A.adapter_for(model)
    seen, handles = {}, []

    def keep(key):
        def hook(module, args, kwargs):
            seen[key] = (args, kwargs)
        return hook

    for name, st in adapter.stacks.items():
        blocks = A.blocks(model, adapter, name)
        handles.append(blocks[-1].register_forward_hook(
            lambda m, a, out, name=name: seen.__setitem__((name, "last"), out[0] if isinstance(out, tuple) else out)))
        for cross, spec in ((False, st.attention), (True, st.cross_attention)):
            if spec is not None:
                block = blocks[1]
                handles.append(A.attention_module(block, spec).register_forward_pre_hook(
                    keep((name, cross, "attn")), with_kwargs=True))
                handles.append(A.out_projection(block, spec).register_forward_pre_hook(
                    keep((name, cross, "out")), with_kwargs=True))
    feed = inputs(family)
    with torch.no_grad():
        out = model(**feed, output_hidden_states=True, output_attentions=True)
    for h in handles:
        h.remove()
    return SimpleNamespace(model=model, adapter=adapter, out=out, seen=seen, feed=feed)


def reference_logits(family: str, r: SimpleNamespace, stack: str) -> torch.Tensor:
    """What the model itself returned for the head on `stack`."""
    if family == "distilbert-qa":
        return torch.stack([r.out.start_logits, r.out.end_logits], -1)
    if family in ("clip", "siglip"):
        return r.out.text_embeds if stack == "text" else r.out.image_embeds
    return r.out.logits


@pytest.mark.parametrize("family", list(FAMILIES))
def test_final_logits_match_the_model(family):
    r = run(family)
    assert r.adapter.head, f"{family}: no head for {type(r.model).__name__}"
    with torch.no_grad():
        for name, head in r.adapter.head.items():
            hidden, _, _ = A.stack_outputs(r.out, r.adapter, name)
            raw_last = r.seen[(name, "last")]  # the last block's own output, before any final norm
            ref = reference_logits(family, r, name)
            for state, is_last in ((hidden[-1], True), (raw_last, False)):
                got = A.final_logits(r.model, r.adapter, state, is_last=is_last, stack=name,
                                     input_ids=r.feed.get("input_ids"))
                if head.kind == "projection":
                    got = got / got.norm(dim=-1, keepdim=True)
                torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def captured(r: SimpleNamespace, key: tuple, spec) -> tuple[torch.Tensor, torch.Tensor | None]:
    args, kwargs = r.seen[key]
    x = args[0] if args else kwargs["hidden_states"]
    return x, (kwargs.get(spec.kv_input) if spec.kv_input else None)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_attention_rows_and_head_outputs(family):
    r = run(family)
    layer = 1
    for name, st in r.adapter.stacks.items():
        hidden, attentions, cross_attentions = A.stack_outputs(r.out, r.adapter, name)
        for cross, spec in ((False, st.attention), (True, st.cross_attention)):
            if spec is None:
                continue
            x, kv = captured(r, (name, cross, "attn"), spec)
            if not cross:  # the attention input follows from the stored hidden state
                torch.testing.assert_close(A.attention_input(r.adapter, A.blocks(r.model, r.adapter, name)[layer],
                                                             hidden[layer], name), x, atol=1e-6, rtol=1e-6)
            with torch.no_grad():
                parts = A.attention_parts(r.model, r.adapter, layer, x, kv, stack=name, cross=cross)
            expected = (cross_attentions if cross else attentions)[layer]
            heads = parts.q.shape[1]
            assert parts.q.shape == parts.k.shape[:2] + parts.q.shape[2:] and parts.v.shape[1] == heads
            causal = not cross and (family in CAUSAL or (family, name) in CAUSAL)
            assert parts.causal == causal
            h = heads - 2  # with grouped-query attention: repeated kv heads, not tiled ones, pair with it
            # softmax(q k^T * scale + bias + mask), written out here
            scores = parts.q[0, h] @ parts.k[0, h].T * parts.scale
            if parts.bias is not None:
                scores = scores + parts.bias[0, h]
            if causal:
                scores = scores + torch.full_like(scores, float("-inf")).triu(1)
            torch.testing.assert_close(scores.softmax(-1), expected[0, h], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(parts.weights()[0], expected[0], atol=1e-5, rtol=1e-5)
            # what the output projection receives for head h = that head's weights @ its values
            args, kwargs = r.seen[(name, cross, "out")]
            z = (args[0] if args else next(iter(kwargs.values()))).unflatten(-1, (heads, -1))
            torch.testing.assert_close(z[0, :, h], expected[0, h] @ parts.v[0, h], atol=1e-5, rtol=1e-5)


def test_the_table_records_what_each_family_does():
    assert A.head_counts(*_attn_of("llama")) == (9, 3, 8)  # grouped-query attention, as SmolLM2
    assert A.head_counts(*_attn_of("qwen2")) == (4, 2, 8)
    neox = run("gpt_neox").adapter.stacks["main"]
    assert neox.parallel_residual and neox.attention.rotary_fraction == 0.25
    t5 = run("t5").adapter
    assert t5.stacks["decoder"].attention.positions == "relative_bias" and t5.stacks["decoder"].cross_attention
    assert A.scale(A.attention_module(A.blocks(run("t5").model, t5, "encoder")[0], t5.stacks["encoder"].attention),
                   t5.stacks["encoder"].attention) == 1.0
    assert run("deberta-v2").adapter.stacks["main"].attention.positions == "disentangled"
    assert run("deit").adapter.head["main"].distill == "distillation_classifier"
    for family in SEQ2SEQ:
        assert set(run(family).adapter.stacks) == {"encoder", "decoder"} and run(family).adapter.main == "decoder"
    assert {f: run(f).adapter.placement for f in ("gpt2", "bert", "marian", "m2m_100", "vit")} == {
        "gpt2": "pre", "bert": "post", "marian": "post", "m2m_100": "pre", "vit": "pre"}


def _attn_of(family: str):
    r = run(family)
    spec = r.adapter.stacks["main"].attention
    return A.attention_module(A.blocks(r.model, r.adapter)[0], spec), spec


def test_image_text_scores_are_softmax_for_clip_and_sigmoid_for_siglip():
    for family, fn in (("clip", lambda s: s.softmax(-1)), ("siglip", torch.sigmoid)):
        r = run(family)
        torch.testing.assert_close(A.pair_scores(r.adapter, r.out.logits_per_image), fn(r.out.logits_per_image))


def test_composite_and_partial_models():
    t5_encoder = T.T5EncoderModel(T.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, vocab_size=100))
    assert list(A.adapter_for(t5_encoder).stacks) == ["encoder"]
    tower = T.CLIPVisionModel(T.CLIPVisionConfig(**TOWER, image_size=16, patch_size=4))
    adapter = A.adapter_for(tower)
    assert list(adapter.stacks) == ["vision"] and len(A.blocks(tower, adapter)) == 2
    assert A.resolve(tower, "encoder.layers.1.self_attn.out_proj") is tower.encoder.layers[1].self_attn.out_proj
    base = T.GPT2Model(T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64))
    adapter = A.adapter_for(base)
    assert adapter.stacks["main"].layers == "h" and not adapter.head
    with pytest.raises(A.UnknownArchitecture, match="no head of GPT2Model"):
        A.final_logits(base, adapter, torch.zeros(1, 3, 32))


def test_unknown_families_say_what_is_missing():
    def fake(model_type):
        m = torch.nn.Module()
        m.config = SimpleNamespace(model_type=model_type)
        return m
    with pytest.raises(A.UnknownArchitecture, match="no adapter for mamba: .*final norm and an unembedding"):
        A.adapter_for(fake("mamba"))
    with pytest.raises(A.UnknownArchitecture, match="no adapter for frobnicator: .*blocks, attention projections"):
        A.adapter_for(fake("frobnicator"))
    with pytest.raises(A.UnknownArchitecture, match="has no 'nope'"):
        A.resolve(fake("gpt2"), "nope.0")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_models_own_attention_module_run_alone_gives_its_weights(family):
    """run_attention calls each family's attention module as its block does (mask convention, rotary, biases):
    the weights it returns and what its output projection receives equal those of the full forward pass; a
    decoder's cross-attention input follows from the stored hidden state (its self-attention sub-layer run here)."""
    r = run(family)
    layer = 1
    for name, st in r.adapter.stacks.items():
        hidden, attentions, cross_attentions = A.stack_outputs(r.out, r.adapter, name)
        block = A.blocks(r.model, r.adapter, name)[layer]
        for cross, spec in ((False, st.attention), (True, st.cross_attention)):
            if spec is None:
                continue
            x, kv = captured(r, (name, cross, "attn"), spec)
            with torch.no_grad():
                if cross:
                    torch.testing.assert_close(A.cross_attention_input(r.model, r.adapter, layer, hidden[layer], name),
                                               x, atol=1e-5, rtol=1e-5)
                    torch.testing.assert_close(A.stack_output(r.model, r.adapter, A.stack_outputs(r.out, r.adapter,
                                               "encoder")[0][-1], "encoder"), kv, atol=1e-6, rtol=1e-6)
                ran = A.run_attention(r.model, r.adapter, layer, x, kv, stack=name, cross=cross)  # default mask
            torch.testing.assert_close(ran.weights, (cross_attentions if cross else attentions)[layer], atol=1e-5, rtol=1e-5)
            args, kwargs = r.seen[(name, cross, "out")]
            torch.testing.assert_close(ran.heads, args[0] if args else next(iter(kwargs.values())), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ran.out, A.out_projection(block, spec)(ran.heads), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "opt", "distilbert", "bert", "marian", "m2m_100", "t5", "whisper", "vit", "deit",
                                    "beit", "clip", "siglip"])
def test_head_descriptions_name_the_modules_that_run(family):
    r = run(family)
    for name in r.adapter.head:
        text = A.describe_head(r.model, r.adapter, name)
        assert text and "None" not in text
    expected = {"gpt2": "ln_f -> lm_head", "opt": "final_layer_norm -> lm_head", "marian": "lm_head -> + final_logits_bias",
                "t5": "final_layer_norm -> x d_model^-0.5 -> lm_head", "distilbert": "pre_classifier -> ReLU -> classifier on token 0"}
    if family in expected:
        assert A.describe_head(r.model, r.adapter) == expected[family]


def test_pair_logits_are_the_models_own():
    for family in ("clip", "siglip"):
        r = run(family)
        torch.testing.assert_close(A.pair_logits(r.model, r.adapter, r.out.image_embeds, r.out.text_embeds),
                                   r.out.logits_per_image, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_mlp_output_is_named_where_patching_needs_it(family):
    """Every stack names its blocks' MLP output module: it runs once per block, returns one vector per position
    as wide as the block's input, and zeroing it changes the output."""
    r = run(family)
    for name, stack in r.adapter.stacks.items():
        blocks = A.blocks(r.model, r.adapter, name)
        mods = [A.resolve(b, stack.mlp) for b in blocks]
        widths: list[int] = []
        calls: list[torch.Size] = []

        def block_input(_m, args, kwargs, widths=widths):
            widths.append((args[0] if args else kwargs["hidden_states"]).shape[-1])

        handles = [blocks[0].register_forward_pre_hook(block_input, with_kwargs=True)]
        handles += [m.register_forward_hook(lambda _m, _a, out, calls=calls: calls.append(out.shape)) for m in mods]
        try:
            with torch.no_grad():
                plain = _first_output(r.model(**inputs(family)))
        finally:
            for h in handles:
                h.remove()
        assert len(calls) == len(blocks), f"{family}/{name}: {stack.mlp} ran {len(calls)} times for {len(blocks)} blocks"
        assert {s[-1] for s in calls} == {widths[0]}, f"{family}/{name}: {stack.mlp} is not the MLP's output"
        zero = mods[-1].register_forward_hook(lambda _m, _a, out: torch.zeros_like(out))
        try:
            with torch.no_grad():
                assert not torch.allclose(_first_output(r.model(**inputs(family))), plain)
        finally:
            zero.remove()


def _first_output(out) -> torch.Tensor:
    return out.logits if getattr(out, "logits", None) is not None else out[0]
