"""The architecture table: one row per transformers `model_type`, read from the transformers 5 sources.

Stack paths are written from the base model (`model.base_model`, e.g. GPT2LMHeadModel.transformer);
head paths from the model root (heads exist only on task classes, where the prefix is known).
"""
from __future__ import annotations

from dataclasses import replace

from .spec import Adapter, AttentionSpec, Head, Stack


def _attn(
    module: str, out: str = "o_proj", q: str = "q_proj", k: str = "k_proj", v: str = "v_proj", **kw
) -> AttentionSpec:
    return AttentionSpec(module=module, out=out, q=q, k=k, v=v, **kw)


def _bert_like(family: str, heads: tuple[tuple[str, Head], ...]) -> Adapter:
    """BERT, RoBERTa, ELECTRA: post-norm encoders; BertAttention wraps .self (q/k/v) and .output.dense."""
    attn = _attn(
        "attention",
        out="output.dense",
        q="self.query",
        k="self.key",
        v="self.value",
        head_dim="self.attention_head_size",
        scale="self.scaling",
        positions="learned",
    )
    stack = Stack(layers="encoder.layer", attention=attn, embeddings="embeddings.word_embeddings", mlp="output.dense")
    span = (f"{family.capitalize()}ForQuestionAnswering", Head("span", ("qa_outputs",)))
    return Adapter(family, {"main": stack}, placement="post", heads=(*heads, span))


def _decoder_lm(family: str, cls: str, notes: str = "") -> Adapter:
    """Llama-style decoder: RMSNorm pre-norm, rotary, separate q/k/v (grouped-query), final norm, lm_head."""
    stack = Stack(
        layers="layers",
        attention=_attn("self_attn", positions="rotary", causal=True),
        embeddings="embed_tokens",
        input_norm="input_layernorm",
        final=("norm",),
        last_hidden_normed=True,
        rotary="rotary_emb",
        mlp="mlp",
    )
    return Adapter(family, {"main": stack}, norm="rmsnorm", heads=((cls, Head("unembed", ("lm_head",))),), notes=notes)


def _seq2seq(
    family: str,
    cls: str,
    positions: str,
    pre_norm: bool,
    steps: tuple[str, ...] = ("lm_head",),
    embeddings: str = "embed_tokens",
    enc_positions: str = "",
) -> Adapter:
    """BART-style encoder-decoder: self_attn / encoder_attn / out_proj; pre-norm ones end with layer_norm."""

    def stack(side: str, pos: str, causal: bool) -> Stack:
        cross = _attn("encoder_attn", out="out_proj", kv_input="key_value_states") if side == "decoder" else None
        return Stack(
            layers=f"{side}.layers",
            attention=_attn("self_attn", out="out_proj", positions=pos, causal=causal),
            embeddings=f"{side}.{embeddings if side == 'encoder' else 'embed_tokens'}",
            outputs=f"{side}_",
            input_norm="self_attn_layer_norm" if pre_norm else "",
            final=(f"{side}.layer_norm",) if pre_norm else (),
            last_hidden_normed=pre_norm,
            cross_attention=cross,
            cross_input_norm="encoder_attn_layer_norm" if (pre_norm and cross) else "",
            self_output_norm="self_attn_layer_norm" if (cross and not pre_norm) else "",
            mlp="fc2",
        )

    stacks = {
        "encoder": stack("encoder", enc_positions or positions, False),
        "decoder": stack("decoder", positions, True),
    }
    return Adapter(
        family, stacks, placement="pre" if pre_norm else "post", heads=((cls, Head("unembed", steps, stack="decoder")),)
    )


def _vit_like(
    family: str, heads: tuple[tuple[str, Head], ...], positions: str = "learned", notes: str = "", mlp: str = "mlp"
) -> Adapter:
    """ViT, DeiT, BEiT (transformers 5 layout: <base>.layers, attention.{q,k,v,o}_proj, final layernorm)."""
    stack = Stack(
        layers="layers",
        attention=_attn("attention", positions=positions),
        embeddings="embeddings.patch_embeddings.projection",
        input_norm="layernorm_before",
        final=("layernorm",),
        mlp=mlp,
    )
    return Adapter(family, {"main": stack}, heads=heads, notes=notes)


def _towers(
    family: str,
    contrast: str,
    text_causal: bool,
    text_pool: str,
    text_head: str,
    vision_pool: str,
    vision_head: str,
    eos: str = "",
    notes: str = "",
) -> Adapter:
    """CLIP / SigLIP: a text and a vision tower, both pre-norm encoders with self_attn.{q,k,v,out}_proj."""

    def stack(tower: str, embeddings: str, final: str, causal: bool) -> Stack:
        return Stack(
            layers=f"{tower}_model.encoder.layers",
            embeddings=f"{tower}_model.embeddings.{embeddings}",
            attention=_attn("self_attn", out="out_proj", scale="scale", positions="learned", causal=causal),
            outputs=f"{tower}_model_output.",
            input_norm="layer_norm1",
            final=(f"{tower}_model.{final}",),
            mlp="mlp",
        )

    stacks = {
        "text": stack("text", "token_embedding", "final_layer_norm", text_causal),
        "vision": stack("vision", "patch_embedding", "post_layernorm", False),
    }
    pair = dict(contrast=contrast, logit_scale="logit_scale", logit_bias="logit_bias" if contrast == "sigmoid" else "")
    heads = (
        (f"{family}Model", Head("projection", (text_head,), pool=text_pool, stack="text", eos=eos, **pair)),
        (f"{family}Model", Head("projection", (vision_head,), pool=vision_pool, stack="vision", **pair)),
    )
    return Adapter(family.lower(), stacks, heads=heads, notes=notes)


_LM = "unembed"
TABLE: dict[str, Adapter] = {
    # ---- decoder language models
    "gpt2": Adapter(
        "gpt2",
        {
            "main": Stack(
                layers="h",
                embeddings="wte",
                mlp="mlp",
                input_norm="ln_1",
                final=("ln_f",),
                last_hidden_normed=True,
                attention=AttentionSpec(
                    "attn", out="c_proj", fused="c_attn", fused_layout="gpt2_conv1d", positions="learned", causal=True
                ),
            )
        },
        heads=(("GPT2LMHeadModel", Head(_LM, ("lm_head",))),),
    ),
    "llama": _decoder_lm("llama", "LlamaForCausalLM"),
    "qwen2": _decoder_lm("qwen2", "Qwen2ForCausalLM"),
    "gemma": _decoder_lm(
        "gemma",
        "GemmaForCausalLM",
        notes="token embeddings are multiplied by sqrt(hidden) (hidden_states[0] "
        "includes it); RMSNorm scales by 1 + weight",
    ),
    "gpt_neox": Adapter(
        "gpt_neox",
        {
            "main": Stack(
                layers="layers",
                embeddings="embed_in",
                mlp="mlp",
                input_norm="input_layernorm",
                final=("final_layer_norm",),
                last_hidden_normed=True,
                parallel_residual=True,
                rotary="rotary_emb",
                attention=AttentionSpec(
                    "attention",
                    out="dense",
                    fused="query_key_value",
                    fused_layout="neox_interleaved",
                    head_dim="head_size",
                    positions="rotary",
                    causal=True,
                ),
            )
        },
        heads=(("GPTNeoXForCausalLM", Head(_LM, ("lm_head",))),),
    ),
    "opt": Adapter(
        "opt",
        {
            "main": Stack(
                layers="decoder.layers",
                embeddings="decoder.embed_tokens",
                mlp="fc2",
                input_norm="self_attn_layer_norm",
                final=("decoder.final_layer_norm", "decoder.project_out"),
                last_hidden_normed=True,
                attention=_attn("self_attn", out="out_proj", positions="learned", causal=True),
            )
        },
        heads=(("OPTForCausalLM", Head(_LM, ("lm_head",))),),
        notes="q is scaled before q.k (same product)",
    ),
    # ---- encoders
    "distilbert": Adapter(
        "distilbert",
        {
            "main": Stack(
                layers="transformer.layer",
                embeddings="embeddings.word_embeddings",
                mlp="ffn",
                attention=_attn(
                    "attention",
                    out="out_lin",
                    q="q_lin",
                    k="k_lin",
                    v="v_lin",
                    head_dim="attention_head_size",
                    positions="learned",
                ),
            )
        },
        placement="post",
        heads=(
            (
                "DistilBertForSequenceClassification",
                Head("sequence_classifier", ("pre_classifier", "@relu", "classifier"), pool="first"),
            ),
            ("DistilBertForQuestionAnswering", Head("span", ("qa_outputs",))),
            (
                "DistilBertForMaskedLM",
                Head(_LM, ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")),
            ),
        ),
    ),
    "bert": _bert_like(
        "bert",
        (
            ("BertForSequenceClassification", Head("sequence_classifier", ("bert.pooler", "classifier"))),
            ("BertForMaskedLM", Head(_LM, ("cls",))),
        ),
    ),
    "roberta": _bert_like(
        "roberta",
        (
            ("RobertaForSequenceClassification", Head("sequence_classifier", ("classifier",))),
            ("RobertaForMaskedLM", Head(_LM, ("lm_head",))),
        ),
    ),
    "electra": _bert_like(
        "electra", (("ElectraForSequenceClassification", Head("sequence_classifier", ("classifier",))),)
    ),
    "deberta-v2": Adapter(
        "deberta-v2",
        {
            "main": Stack(
                layers="encoder.layer",
                embeddings="embeddings.word_embeddings",
                bias_source="encoder",
                mlp="output.dense",
                attention=_attn(
                    "attention",
                    out="output.dense",
                    q="self.query_proj",
                    k="self.key_proj",
                    v="self.value_proj",
                    head_dim="self.attention_head_size",
                    scale="disentangled",
                    positions="disentangled",
                    mask_kind="bool",
                    call=(("output_attentions", True),),
                ),
            )
        },
        placement="post",
        heads=(
            ("DebertaV2ForSequenceClassification", Head("sequence_classifier", ("pooler", "classifier"))),
            ("DebertaV2ForQuestionAnswering", Head("span", ("qa_outputs",))),
        ),
        notes="disentangled attention: the c2p/p2c terms come from the model's own disentangled_attention_bias and "
        "depend on q and k, not on positions alone; with conv_kernel_size > 0 a convolution is added to "
        "block 0's output outside the blocks",
    ),
    # ---- encoder-decoders
    "marian": _seq2seq(
        "marian", "MarianMTModel", "sinusoidal", pre_norm=False, steps=("lm_head", "@final_logits_bias")
    ),
    "bart": _seq2seq(
        "bart", "BartForConditionalGeneration", "learned", pre_norm=False, steps=("lm_head", "@final_logits_bias")
    ),
    "m2m_100": _seq2seq("m2m_100", "M2M100ForConditionalGeneration", "sinusoidal", pre_norm=True),
    "whisper": _seq2seq(
        "whisper",
        "WhisperForConditionalGeneration",
        "learned",
        pre_norm=True,
        steps=("proj_out",),
        embeddings="conv1",
        enc_positions="sinusoidal",
    ),
    "t5": Adapter(
        "t5",
        {
            side: Stack(
                layers=f"{side}.block",
                embeddings=f"{side}.embed_tokens",
                outputs=f"{side}_",
                input_norm="layer.0.layer_norm",
                final=(f"{side}.final_layer_norm",),
                last_hidden_normed=True,
                bias_source=f"{side}.block.0.layer.0.SelfAttention",
                attention=_attn(
                    "layer.0.SelfAttention",
                    out="o",
                    q="q",
                    k="k",
                    v="v",
                    head_dim="key_value_proj_dim",
                    positions="relative_bias",
                    causal=side == "decoder",
                    mask_arg="mask",
                ),
                cross_attention=_attn(
                    "layer.1.EncDecAttention",
                    out="o",
                    q="q",
                    k="k",
                    v="v",
                    head_dim="key_value_proj_dim",
                    kv_input="key_value_states",
                    mask_arg="mask",
                )
                if side == "decoder"
                else None,
                cross_input_norm="layer.1.layer_norm" if side == "decoder" else "",
                mlp="layer.2.DenseReluDense" if side == "decoder" else "layer.1.DenseReluDense",
            )
            for side in ("encoder", "decoder")
        },
        norm="rmsnorm",
        heads=(("T5ForConditionalGeneration", Head(_LM, ("@t5_scale", "lm_head"), stack="decoder")),),
        notes="no 1/sqrt(d) on q.k (scaling 1.0); the relative bias of block 0 is shared by every block",
    ),
    # ---- vision
    "vit": _vit_like("vit", (("ViTForImageClassification", Head("image_classifier", ("classifier",), pool="first")),)),
    "deit": _vit_like(
        "deit",
        (
            (
                "DeiTForImageClassificationWithTeacher",
                Head("image_classifier", ("cls_classifier",), pool="first", distill="distillation_classifier"),
            ),
            ("DeiTForImageClassification", Head("image_classifier", ("classifier",), pool="first")),
        ),
        notes="token 0 is the class token, token 1 the distillation token",
    ),
    "beit": _vit_like(
        "beit",
        (
            (
                "BeitForImageClassification",
                Head("image_classifier", ("beit.pooler.layernorm", "classifier"), pool="mean_patches"),
            ),
        ),
        positions="relative_bias_2d",
        notes="layer scale (lambda_1/lambda_2) multiplies each sublayer's output",
    ),
    "clip": _towers(
        "CLIP",
        "softmax",
        True,
        "eos",
        "text_projection",
        "first",
        "visual_projection",
        eos="text_model",
        notes="vision: pre_layrnorm runs between the embeddings and block 0 (hidden_states[0] includes it)",
    ),
    "siglip": _towers(
        "Siglip",
        "sigmoid",
        False,
        "last",
        "text_model.head",
        "all",
        "vision_model.head",
        notes="vision head: attention pooling with a learned probe (vision_model.head); text pools the last token",
    ),
}


def _tower(family: str, tower: str) -> Adapter:
    """A CLIP/SigLIP tower loaded on its own (CLIPTextModel...): the same stack without the "<tower>_model." prefix."""
    cut = f"{tower}_model."
    st = TABLE[family].stacks[tower]
    paths = {f: getattr(st, f).removeprefix(cut) for f in ("layers", "embeddings")}
    return Adapter(
        family, {tower: replace(st, **paths, outputs="", final=tuple(p.removeprefix(cut) for p in st.final))}
    )


for _family in ("clip", "siglip"):
    for _tower_name in ("text", "vision"):
        TABLE[f"{_family}_{_tower_name}_model"] = _tower(_family, _tower_name)

# Families known not to fit, with the reason (adapter_for says it instead of a bare "unknown").
UNSUPPORTED: dict[str, str] = {
    "mamba": "a state-space model: it has no attention to show, and the lens needs a final norm and an unembedding "
    "the table does not describe",
    "swin": "windowed attention over shifted windows with patch merging between stages: the hidden size and the "
    "number of tokens change per stage, so there is no single token-by-token attention map or lens",
    "albert": "one block shared by every layer (albert_layer_groups): hooks on it fire once per layer, which the "
    "per-layer helpers here do not model",
}
