"""Translation (Marian, English -> German): the translation, encoder / decoder / cross-attention
from one teacher-forced pass, source and target embeddings, and source-token attributions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core import registry
from core.results import AttentionMaps, Attribution, Embeddings
from demos.explain import subjects as st
from demos.explain.attribution import run_attribution, stack_attentions, stack_hidden
from demos.inputs.text import Encoded, as_attribution, encode, pad_baseline, truncation_notice
from demos.runtime import loading
from demos.runtime.compute import How, attribution_compute, task_compute

TASK = "translation"
SOURCE_GROUP, TARGET_GROUP = "source (encoder)", "target (decoder)"
EXAMPLES = registry.examples(TASK)


@dataclass
class TranslationResult:
    """One `generate` call, then ONE teacher-forced forward pass over the generated target.

    S source tokens (with </s>), T = generated length - 1 target steps. Step i reads decoder
    input token i and predicts target token i (= generated token i+1).
    target_ids: (T,) predicted ids; target_probs: (T,) P(target_i | source, target_<i) without
    generation-time logit processors. encoder_attention (Le, H, S, S), decoder_attention
    (Ld, H, T, T) with rows = predicted tokens and columns = decoder input tokens,
    cross_attention (Ld, H, T, S). embeddings: (max(Le, Ld)+1, S+T, d), source then target.
    """

    text: str
    model_id: str
    translation: str
    source_tokens: list[str]
    decoder_tokens: list[str]
    target_tokens: list[str]
    generated: tuple[int, ...]
    target_ids: np.ndarray
    target_probs: np.ndarray
    encoder_attention: AttentionMaps
    decoder_attention: AttentionMaps
    cross_attention: AttentionMaps
    embeddings: Embeddings
    notice: str


def load(model_id: str | None = None) -> loading.Loaded:
    return loading.load(TASK, model_id)


def _encode(m: loading.Loaded, text: str) -> Encoded:
    return encode(m.processor, m.model, text)


def _generate(m: loading.Loaded, enc: Encoded, encoder_hidden: torch.Tensor):
    """generate with the model's own generation config on the encoder output already computed
    (1, S, d); `.sequences[:1]` (1, L): decoder start token first; `.logits`: per step the raw
    (beams, vocab) logits; `.beam_indices` (when beams) which beam each kept token came from."""
    from transformers.modeling_outputs import BaseModelOutput

    with torch.inference_mode():
        return m.model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden),
            attention_mask=enc.mask,
            output_logits=True,
            return_dict_in_generate=True,
        )


def _step_logits(gen, steps: int) -> torch.Tensor:
    """(steps, vocab) raw logits that produced tokens 1..steps of the kept sequence."""
    beams = getattr(gen, "beam_indices", None)
    rows = beams[0, :steps].tolist() if beams is not None else [0] * steps
    return torch.stack([gen.logits[t][rows[t]] for t in range(steps)])


def _joint_embeddings(enc_hidden: np.ndarray, dec_hidden: np.ndarray, labels: list[str]) -> Embeddings:
    """(Le+1, S, d) and (Ld+1, T, d) -> (max+1, S+T, d); the shallower side repeats its last layer."""
    layers = max(enc_hidden.shape[0], dec_hidden.shape[0])
    idx = lambda h, i: h[min(i, h.shape[0] - 1)]  # noqa: E731
    vectors = np.stack([np.concatenate([idx(enc_hidden, i), idx(dec_hidden, i)]) for i in range(layers)])
    groups = [SOURCE_GROUP] * enc_hidden.shape[1] + [TARGET_GROUP] * dec_hidden.shape[1]
    return Embeddings(vectors, labels, groups)


@task_compute(TASK, memo_size=8, gpu_seconds=30)
def analyse(text: str, model_id: str | None = None) -> TranslationResult:
    """Translate `text`: the encoder runs once (with its attentions) and generate reuses its output;
    step probabilities come from generate's raw logits; ONE teacher-forced decoder pass (no LM head)
    gives the decoder and cross-attentions and hidden states."""
    m = load(model_id)
    tok = m.processor
    enc = _encode(m, text)
    with torch.inference_mode():
        encoder = m.model.get_encoder()(
            input_ids=enc.ids, attention_mask=enc.mask, output_attentions=True, output_hidden_states=True
        )
    gen = _generate(m, enc, encoder.last_hidden_state)
    generated = gen.sequences[:1]  # (1, T+1)
    if generated.shape[1] < 2:
        raise RuntimeError("The model generated no tokens.")
    decoder_in, target = generated[:, :-1], generated[0, 1:]
    with torch.inference_mode():
        decoder = m.model.get_decoder()(
            input_ids=decoder_in,
            encoder_hidden_states=encoder.last_hidden_state,
            encoder_attention_mask=enc.mask,
            output_attentions=True,
            output_hidden_states=True,
        )
    probs = torch.softmax(_step_logits(gen, target.shape[0]).float(), dim=-1)  # (T, vocab)
    target_probs = probs.gather(1, target[:, None])[:, 0].cpu().numpy()
    src, dec_toks = enc.tokens, tok.convert_ids_to_tokens(decoder_in[0].tolist())
    tgt = tok.convert_ids_to_tokens(target.tolist())
    return TranslationResult(
        text=text,
        model_id=m.model_id,
        translation=tok.decode(generated[0], skip_special_tokens=True),
        source_tokens=src,
        decoder_tokens=dec_toks,
        target_tokens=tgt,
        generated=tuple(generated[0].tolist()),
        target_ids=target.cpu().numpy(),
        target_probs=target_probs,
        encoder_attention=AttentionMaps(stack_attentions(encoder.attentions), src, src, "encoder self"),
        decoder_attention=AttentionMaps(stack_attentions(decoder.attentions), tgt, dec_toks, "decoder self"),
        cross_attention=AttentionMaps(stack_attentions(decoder.cross_attentions), tgt, src, "cross"),
        embeddings=_joint_embeddings(
            stack_hidden(encoder.hidden_states), stack_hidden(decoder.hidden_states), [*src, *dec_toks]
        ),
        notice=truncation_notice(enc),
    )


def _source_embeds(model, ids: torch.Tensor) -> torch.Tensor:
    """(1, S) ids -> (1, S, d) encoder input embeddings exactly as the encoder computes them.

    Marian's encoder multiplies by `embed_scale` only when given ids, so embeddings passed as
    `inputs_embeds` must already be scaled. Attributing at this tensor (not with a layer hook)
    keeps the decoder's token embeddings, which may be the same module, out of the path.
    """
    encoder = model.get_encoder()
    return encoder.embed_tokens(ids) * getattr(encoder, "embed_scale", 1.0)


@attribution_compute(TASK)
def attribute(
    text: str,
    step: int = 0,
    how: How = How(),
) -> Attribution:
    """Attribution of P(target token `step` | source, target prefix) to each source token.

    Integrated gradients from a baseline where every ordinary source token is <pad> (</s> kept);
    scores (S,) sum to f(input) - f(baseline) up to the convergence delta.
    """
    result = analyse(text, how.model_id)
    n_steps = len(result.target_tokens)
    if not 0 <= int(step) < n_steps:
        raise ValueError(f"Target token {step} does not exist; choose 0 to {n_steps - 1}.")
    step = int(step)
    m = load(how.model_id)
    tok, model = m.processor, m.model
    enc = _encode(m, text)
    prefix = torch.tensor([result.generated[: step + 1]], device=enc.ids.device)  # (1, step+1)
    target_id = int(result.target_ids[step])
    base_ids = pad_baseline(enc.ids, tok)

    def score(embeds: torch.Tensor) -> torch.Tensor:
        n = embeds.shape[0]
        logits = model(
            inputs_embeds=embeds, attention_mask=enc.mask.expand(n, -1), decoder_input_ids=prefix.expand(n, -1)
        ).logits[:, -1]
        return torch.softmax(logits.float(), dim=-1)[:, target_id]

    with torch.no_grad():
        x, base = _source_embeds(model, enc.ids), _source_embeds(model, base_ids)
    with loading.fused_attention(model):  # the score never reads attention weights
        got = run_attribution(
            score,
            x,
            base,
            how.method,
            int(how.steps),
            units=x.shape[1] + prefix.shape[1],
            tolerance=how.tolerance,
            progress=how.progress,
        )
    target = f"{result.target_tokens[step]} (target token {step})"
    return as_attribution(got, got.attrs.sum(dim=-1)[0], enc.tokens, target, how.method)


def subject(result: TranslationResult, target: object = None, contrast: object = None):
    """What the explainers explain (demos.explain.subjects.Subject): P(target token at step `target`,
    default 0), teacher forced; units: the source's input embeddings."""

    m = load(result.model_id)
    tok = m.processor
    enc = encode(tok, m.model, result.text)
    step = st.step_index(target, len(result.target_tokens))
    prefix = torch.tensor([result.generated[: step + 1]], device=m.device)
    with torch.no_grad():
        x, pad = _source_embeds(m.model, enc.ids), _source_embeds(m.model, torch.full_like(enc.ids, tok.pad_token_id))
    return st.step_subject(
        TASK,
        m,
        tok,
        step,
        int(result.target_ids[step]),
        result.cross_attention.weights,
        contrast,
        "an encoder-decoder's answer reaches the source through cross-attention",
        inputs={"inputs_embeds": x, "attention_mask": enc.mask, "decoder_input_ids": prefix},
        unit_key="inputs_embeds",
        units=st.embed_units(enc.tokens, st.special_mask(tok, enc.ids[0].tolist()), "the padding token"),
        replacement=pad,
        run=lambda kw: m.model(**kw, use_cache=False),
    )
