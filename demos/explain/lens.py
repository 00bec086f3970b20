"""Layer lens: every layer's hidden state through the model's own final norm and head.

`lens(task_key, result)` reads the hidden states the task's result already holds (no second model
run): only the final norm and the head run, once per layer. Decoders give a `LensGrid` (logit
lens: layers x positions, top tokens), encoders a `HeadLens` (the task's own head per layer).

What runs is read from the architecture table (demos.adapters), never guessed here: the stack's final
part (final norm, OPT's project_out...) then the head of the model's class
(`adapters.final_logits`). transformers stores the LAST hidden state of pre-norm decoders (GPT-2,
Llama, Qwen2, Gemma, GPT-NeoX, OPT, Whisper, M2M100, T5) with the final norm already applied, so the
norm runs on layers 0..L-1 only there; post-norm stacks (Marian, BART, BERT...) have no final norm.
Examples of heads: GPT-2 ln_f -> lm_head; Marian lm_head + final_logits_bias; T5 final_layer_norm ->
x d_model^-0.5 -> lm_head; DistilBERT pre_classifier -> ReLU -> classifier on [CLS]; BERT pooler ->
classifier; RoBERTa/ELECTRA their classification heads; DeiT the class and distillation heads
averaged; ViT layernorm -> classifier on [CLS]; QA qa_outputs on every token (best span by demos.qa's
rules); CLIP/SigLIP the vision projection, cosine with the result's text embeddings x logit scale
(+ SigLIP's bias), softmax over the texts (CLIP) or a sigmoid per text (SigLIP).
Per task, where the states are: generation result.embeddings; translation the decoder part of
result.embeddings; asr result.decoder_hidden; sentiment / qa / image result.embeddings; clip
result.vision_hidden of image `item`. The explorer (a bare encoder) has no head: no lens (NOT_FOR).
A family missing from the table gets UnknownArchitecture naming what is missing.

Cost: (L+1) applications of the head; for decoders that is (L+1) x (n x d x vocab) multiply-adds,
the unembedding being the expensive part, so a decoder's lens computes only the window of at most
LENS_COLUMNS positions shown (by default the answer's part, see _window), every layer in one matmul;
nothing else of the model runs.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from core import explainers as specs
from core import registry
from core.lens_types import LENS_CAPTION, LENS_COLUMNS, AttentionSteps, HeadLens, LensGrid, Span
from demos import adapters as A
from demos.explain import tasks
from demos.explain.attention_steps import attention_kinds, attention_steps
from demos.explain.protocol import Explainer
from demos.runtime import loading

TOP_K = 5
DECODERS = tuple(spec.key for spec in registry.TASKS if spec.lens == "decoder")
ENCODERS = tuple(spec.key for spec in registry.TASKS if spec.lens == "head")
LENS_TASKS = DECODERS + ENCODERS
NOT_FOR = {spec.key: spec.why_not("lens") for spec in registry.TASKS if spec.why_not("lens")}
VIEW = "The layer lens"

__all__ = ["LENS_TASKS", "NOT_FOR", "attention_kinds", "attention_steps", "head_logits", "lens"]


def _model(task: str, result: Any, model_id: str | None) -> loading.Loaded:
    return tasks.load(task, model_id or result.model_id)


def _layer_labels(n: int) -> list[str]:
    return ["embeddings"] + [f"layer {i}" for i in range(1, n - 1)] + [f"layer {n - 1} (output)"]


def _states(m: loading.Loaded, array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(m.device, m.dtype)


def _every_layer(m: loading.Loaded, adapter: A.Adapter, states: np.ndarray, stack: str | None = None,
                 input_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The head on every layer's states (L+1, n, d) at once, (L+1, ...) float32: layers 0..L-1 through the
    stack's final part, the last one as the model reads it (adapters.final_logits)."""
    x = _states(m, states)
    early = A.final_logits(m.model, adapter, x[:-1], is_last=False, stack=stack, input_ids=input_ids)
    last = A.final_logits(m.model, adapter, x[-1:], is_last=True, stack=stack, input_ids=input_ids)
    return torch.cat([early, last]).float()


# ----------------------------------------------------------------------------- decoders


def _decoder_parts(task: str, m: loading.Loaded, result: Any) -> tuple[np.ndarray, Any, str]:
    """(L+1, n, d) decoder states of the result (by task), a function (layer, (n, d) states) -> (n, vocab)
    logits through the stack's final part and the head (by the architecture table), and the head's text."""
    model = m.model
    adapter = A.adapter_for_view(model, VIEW)
    stack = adapter.main
    if task == "asr":
        if getattr(result, "decoder_hidden", None) is None:
            raise ValueError("This transcription result holds no decoder hidden states; transcribe again.")
        states = result.decoder_hidden
    elif task == "translation":  # result.embeddings: the encoder's states, then the decoder's, side by side
        n_layers, n_src = len(A.blocks(model, adapter, stack)), len(result.source_tokens)
        states = result.embeddings.vectors[: n_layers + 1, n_src:]
    else:
        states = result.embeddings.vectors
    text = A.describe_head(model, adapter, stack)
    last = states.shape[0] - 1

    def logits(layer: int, x: torch.Tensor) -> torch.Tensor:
        return A.final_logits(model, adapter, x[None], is_last=layer == last, stack=stack)[0].float()

    return states, logits, text


def _decoder_columns(task: str, result: Any) -> tuple[slice, list[str], list[str], list[int | None], list[str]]:
    """Columns of the grid, by task: which positions, their labels, targets, target ids, groups."""
    if task == "translation":
        t = len(result.target_tokens)
        return (
            slice(0, t),
            list(result.decoder_tokens),
            list(result.target_tokens),
            [int(i) for i in result.target_ids],
            ["target"] * t,
        )
    if task == "asr":
        n_prompt, t = len(result.prompt), len(result.tokens)
        inputs = list(result.prompt) + list(result.tokens)
        return (
            slice(n_prompt - 1, n_prompt - 1 + t),
            inputs[n_prompt - 1 : n_prompt - 1 + t],
            list(result.tokens),
            list(result.token_ids),
            ["output"] * t,
        )
    n, n_prompt = len(result.tokens), result.n_prompt
    targets = list(result.tokens[1:]) + [""]
    ids = list(result.ids[1:]) + [None]
    groups = ["prompt" if j < n_prompt - 1 else "generated" if j < n - 1 else "next" for j in range(n)]
    return slice(0, n), list(result.tokens), targets, ids, groups


def head_logits(task_key: str, result: Any, layer: int, model_id: str | None = None) -> np.ndarray:
    """(n, vocab) float32 logits of one decoder layer's states through the final norm and head,
    for the grid's columns (what `lens` reduces to top-5; used by the exactness tests)."""
    if task_key not in DECODERS:
        raise ValueError(f"{task_key!r} is not a decoder task; choose one of {DECODERS}.")
    m = _model(task_key, result, model_id)
    states, logits, _ = _decoder_parts(task_key, m, result)
    if not 0 <= int(layer) < states.shape[0]:
        raise ValueError(f"Layer {layer} does not exist; choose 0 to {states.shape[0] - 1}.")
    cols = _decoder_columns(task_key, result)[0]
    with torch.inference_mode():
        return logits(int(layer), _states(m, states[int(layer), cols])).cpu().numpy()


def _window(groups: list[str], start: int | None) -> slice:
    """The columns computed: LENS_COLUMNS from `start` (clamped), or by default the last LENS_COLUMNS, never
    before the first column that is not the prompt's (the answer's part: a prompt's own next-token guesses
    are one `start` away)."""
    n = len(groups)
    if start is None:
        lo = max(0, n - LENS_COLUMNS, next((j for j, g in enumerate(groups) if g != "prompt"), 0))
    else:
        lo = max(0, min(int(start), n - 1))
    return slice(lo, min(n, lo + LENS_COLUMNS))


def _decoder_lens(task: str, m: loading.Loaded, result: Any, start: int | None = None) -> LensGrid:
    states, _, head = _decoder_parts(task, m, result)
    cols, positions, targets, target_ids, groups = _decoder_columns(task, result)
    total = len(positions)
    win = _window(groups, start)
    positions, targets, target_ids, groups = (v[win] for v in (positions, targets, target_ids, groups))
    lo = (cols.start or 0) + win.start
    tok = getattr(m.processor, "tokenizer", m.processor)
    adapter = A.adapter_for_view(m.model, VIEW)
    has = [j for j, t in enumerate(target_ids) if t is not None]
    with torch.inference_mode():  # every layer of the window through the final part and head, one matmul
        probs = torch.softmax(_every_layer(m, adapter, states[:, lo : lo + len(positions)], adapter.main), dim=-1)
        p, i = probs.topk(min(TOP_K, probs.shape[-1]), dim=-1)  # (L+1, n, k)
        chosen = np.full(probs.shape[:2], np.nan, dtype=np.float32)
        if has:
            ids = torch.tensor([target_ids[j] for j in has], device=probs.device)
            chosen[:, has] = probs[:, has, ids].cpu().numpy()  # (L+1, |has|): column has[k] at token ids[k]
    top_p = np.zeros((*probs.shape[:2], TOP_K), dtype=np.float32)
    top_i = np.zeros((*probs.shape[:2], TOP_K), dtype=np.int64)
    top_p[..., : p.shape[-1]], top_i[..., : i.shape[-1]] = p.cpu().numpy(), i.cpu().numpy()
    names = [[tok.convert_ids_to_tokens(row.tolist()) for row in layer] for layer in top_i]
    return LensGrid(
        task=task,
        model_id=m.model_id,
        layer_labels=_layer_labels(probs.shape[0]),
        positions=positions,
        targets=targets,
        top_tokens=[[cell[0] for cell in layer] for layer in names],
        top_probs=top_p[:, :, 0].copy(),
        top5_tokens=names,
        top5_probs=top_p,
        chosen_probs=chosen,
        groups=groups,
        head=head,
        caption=LENS_CAPTION.format(head=head),
        first=win.start,
        total=total,
    )


# ----------------------------------------------------------------------------- encoders


def _classes_lens(task, m, probs: np.ndarray, labels: list[str], final: int, head: str, keep_all: bool) -> HeadLens:
    """HeadLens from per-layer class probabilities (L+1, C)."""
    k = probs.shape[1] if keep_all else min(TOP_K, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return HeadLens(
        task=task,
        model_id=m.model_id,
        layer_labels=_layer_labels(probs.shape[0]),
        head=head,
        top_labels=[[labels[i] for i in row] for row in order],
        top_probs=np.take_along_axis(probs, order, axis=1).astype(np.float32),
        final_label=labels[final],
        final_probs=probs[:, final].astype(np.float32),
        caption=LENS_CAPTION.format(head=head),
        classes=list(labels) if keep_all else [],
        class_probs=probs.astype(np.float32) if keep_all else None,
    )


def _classifier_lens(task, m, result, adapter: A.Adapter, keep_all: bool) -> HeadLens:
    """A sequence or image classifier's own head (pooling included) on each layer's states."""
    with torch.inference_mode():
        probs = torch.softmax(_every_layer(m, adapter, result.embeddings.vectors), dim=-1).cpu().numpy()  # (L+1, C)
    head = A.describe_head(m.model, adapter)
    return _classes_lens(task, m, probs, list(result.labels), int(np.argmax(result.probs)), head, keep_all=keep_all)


def _clip_lens(task, m, result, adapter: A.Adapter, item: int) -> HeadLens:
    if getattr(result, "vision_hidden", None) is None:
        raise ValueError("This image-text result holds no vision hidden states; run the match again.")
    if not 0 <= item < result.vision_hidden.shape[1]:
        raise ValueError(f"Image {item} does not exist; choose 0 to {result.vision_hidden.shape[1] - 1}.")
    with torch.inference_mode():
        emb = _every_layer(m, adapter, result.vision_hidden[:, item], stack="vision")  # (L+1, projection)
        text = torch.from_numpy(np.ascontiguousarray(result.text_embeds)).to(emb.device, emb.dtype)
        logits = A.pair_logits(m.model, adapter, emb, text).float()
        probs = A.pair_scores(adapter, logits).cpu().numpy()
    pair = adapter.head["vision"]
    bias = f" + {pair.logit_bias}" if pair.logit_bias else ""
    scores = "sigmoid per text" if pair.contrast == "sigmoid" else "softmax over the texts"
    head = (
        f"{A.describe_head(m.model, adapter, 'vision')}, "
        f"cosine with each text x exp({pair.logit_scale}){bias}, {scores}"
    )
    return _classes_lens(task, m, probs, list(result.texts), int(np.argmax(result.logits[item])), head, keep_all=True)


def _qa_lens(task, m, result, adapter: A.Adapter) -> HeadLens:
    qa = tasks.module(task)  # its span rules
    enc = qa.encode_result(m, result)  # tokenisation of the answered window only: offsets and candidates
    if enc.tokens != list(result.tokens):
        raise ValueError("The tokenizer no longer matches this result; answer the question again.")
    with torch.inference_mode():
        logits = _every_layer(m, adapter, result.embeddings.vectors).cpu().numpy()  # (L+1, n, 2) start/end
    spans, finals = [], []
    for layer in logits:
        start, end = layer[:, 0], layer[:, 1]
        s, e = qa.best_span(start, end, enc.context_mask)
        ps, pe = qa.masked_probs(start, enc.candidates), qa.masked_probs(end, enc.candidates)
        text = result.context[int(enc.offsets[s, 0]) : int(enc.offsets[e, 1])]
        spans.append(Span(text, s, e, float(ps[s] * pe[e])))
        finals.append(ps[result.start_index] * pe[result.end_index])
    head = f"{A.describe_head(m.model, adapter)} on every token -> best span (start <= end, context only)"
    return HeadLens(
        task=task,
        model_id=m.model_id,
        layer_labels=_layer_labels(len(spans)),
        head=head,
        top_labels=[[s.text] for s in spans],
        top_probs=np.array([[s.prob] for s in spans], dtype=np.float32),
        final_label=result.answer,
        final_probs=np.array(finals, dtype=np.float32),
        caption=LENS_CAPTION.format(head=head),
        spans=spans,
    )


def lens(
    task_key: str, result: Any, model_id: str | None = None, item: int = 0, start: int | None = None
) -> LensGrid | HeadLens:
    """The layer lens of `result` (the task's own result object). model_id defaults to the
    result's model. item: which image of a CLIP result. start: a decoder's first position computed
    (LENS_COLUMNS from there; None: the answer's window, see _window). Raises ValueError for the explorer."""
    if task_key in NOT_FOR:
        raise ValueError(NOT_FOR[task_key])
    if task_key not in LENS_TASKS:
        raise ValueError(f"No layer lens for {task_key!r}; choose one of {LENS_TASKS}.")
    m = _model(task_key, result, model_id)

    def run() -> LensGrid | HeadLens:
        if task_key in DECODERS:
            return _decoder_lens(task_key, m, result, start)
        adapter = A.adapter_for_view(m.model, VIEW)  # the task's own head, by the architecture table
        kinds = {head.kind for head in adapter.head.values()}
        if "span" in kinds:
            return _qa_lens(task_key, m, result, adapter)
        if "projection" in kinds:  # a dual encoder: image vs texts
            return _clip_lens(task_key, m, result, adapter, int(item))
        if kinds & {"sequence_classifier", "image_classifier"}:
            return _classifier_lens(task_key, m, result, adapter, keep_all="sequence_classifier" in kinds)
        raise A.UnknownArchitecture(
            f"{VIEW} is not available for this model: the architecture table has no "
            f"classifier head of {type(m.model).__name__}. {A.STILL_WORKS}"
        )

    return loading.one_at_a_time(task_key)(run)()


def _run_lens(
    task: str, result: Any, model_id: str | None = None, item: int = 0, start: int | None = None
) -> LensGrid | HeadLens:
    return lens(task, result, model_id, item, start)


LENS = Explainer(specs.LENS, _run_lens)


def _run_steps(
    task: str,
    result: Any,
    layer: int = 0,
    head: int = 0,
    query: int = -1,
    kind: str = "self",
    model_id: str | None = None,
    item: int | None = None,
) -> AttentionSteps:
    return attention_steps(task, result, layer, head, query, kind, model_id, item)


ATTENTION_STEPS = Explainer(specs.ATTENTION_STEPS, _run_steps)
