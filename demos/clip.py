"""Image-text matching (CLIP and SigLIP): candidate probabilities, image x text similarities, shared-space
embeddings, patch relevance for a chosen text and Captum attributions over its tokens.

What differs between the families is read from the architecture table (demos.adapters), never from the
model's class: CLIP scores the texts with a softmax over them and pools the image at its class token and
the text at its end-of-text token; SigLIP gives each image-text pair its own sigmoid (the probabilities
do not add up to 1), has no class token (an attention-pooling head, `vision_model.head`, lets a learned
probe attend over the patches) and pools the text at its last position (texts padded to the model's
limit, as it was trained and as the zero-shot pipeline runs it)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core import registry
from core.results import Attribution, Embeddings
from demos import adapters as A
from demos.explain import subjects as st
from demos.explain.attribution import attention_rollout, softmax_np
from demos.inputs.images import load_image
from demos.inputs.text import encode, pad_baseline, token_attribution, token_labels
from demos.runtime import loading
from demos.runtime.compute import How, attribution_compute, task_compute

TASK = "clip"
MAX_CANDIDATES = 64
MAX_IMAGES = 16
RELEVANCE_METHODS = dict(registry.get(TASK).constant("RELEVANCE_METHODS"))
EXAMPLE_TEXTS = registry.examples(TASK)[0]


def parse_candidates(texts: str | Sequence[str] | None) -> list[str]:
    """One string of candidates separated by newlines or commas (or a list) -> clean list.

    Strips each candidate, drops blanks, removes duplicates keeping the first occurrence.
    Raises ValueError when nothing is left or there are more than MAX_CANDIDATES.
    """
    if texts is None:
        parts: list[str] = []
    elif isinstance(texts, str):
        parts = texts.replace("\r", "\n").replace(",", "\n").split("\n")
    else:
        parts = [str(t) for t in texts]
    candidates = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not candidates:
        raise ValueError("Please enter at least one candidate description (one per line, or separated by commas).")
    if len(candidates) > MAX_CANDIDATES:
        raise ValueError(f"{len(candidates)} candidate descriptions given; the limit is {MAX_CANDIDATES}.")
    return candidates


@dataclass
class ClipResult:
    """One forward pass of CLIP or SigLIP over I images and T candidate texts.

    logits: (I, T) logits_per_image (= logit_scale * cosine + logit_bias, the bias 0 for CLIP); cosine: (I, T);
    image_embeds: (I, d), text_embeds: (T, d) L2-normalised projected embeddings;
    pixels: (I, H, W, 3) uint8, each image as the model saw it (resized, centre-cropped);
    rollout: (I, gh, gw) attention rollout of the vision tower from [CLS] to every patch (SigLIP: from its
    pooling head's probe, whose attention row over the patches takes the place of the [CLS] row).
    vision_hidden: (vision_layers+1, I, [1+]gh*gw, dv) float32 hidden states of the vision tower (CLIP
    has the [CLS] token first; index 0 = embeddings, after pre_layrnorm for CLIP; the last is before post_layernorm);
    text_hidden: (text_layers+1, T, nt, dt) float32 hidden states of the text tower over the
    padded texts (the last before final_layer_norm); text_ids, text_mask: (T, nt) its input.
    contrast: "softmax" (CLIP: over the texts of each image) or "sigmoid" (SigLIP: each pair on its own).
    """

    texts: list[str]
    image_names: list[str]
    sources: list[str]
    model_id: str
    logits: np.ndarray
    cosine: np.ndarray
    logit_scale: float
    image_embeds: np.ndarray
    text_embeds: np.ndarray
    pixels: np.ndarray
    rollout: np.ndarray
    notice: str
    vision_hidden: np.ndarray | None = None
    text_hidden: np.ndarray | None = None
    text_ids: np.ndarray | None = None
    text_mask: np.ndarray | None = None
    contrast: str = "softmax"
    logit_bias: float = 0.0

    @property
    def probs(self) -> np.ndarray:
        """(I, T) as the zero-shot pipeline scores them: a softmax over the texts of each image (CLIP), or
        sigmoid(logit) per image-text pair (SigLIP: how likely each description matches; no sum to 1)."""
        logits = self.logits.astype(np.float64)
        if self.contrast == "sigmoid":
            return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        return softmax_np(logits, axis=-1).astype(np.float32)

    @property
    def best_text(self) -> str:
        return self.texts[int(np.argmax(self.logits[0]))]

    def text_probs(self, image: int = 0) -> dict[str, float]:
        """Every candidate with its probability for image `image`, in the order given."""
        return {t: float(p) for t, p in zip(self.texts, self.probs[image])}

    def embeddings(self) -> Embeddings:
        """Images and texts in the shared space: vectors (1, I + T, d), groups images/texts."""
        vectors = np.concatenate([self.image_embeds, self.text_embeds])[None]
        groups = ["images"] * len(self.image_names) + ["texts"] * len(self.texts)
        return Embeddings(vectors, [*self.image_names, *self.texts], groups)


@dataclass
class PatchRelevance:
    """Relevance of each image patch for one text. scores: (gh, gw); pixels: (H, W, 3) uint8."""

    scores: np.ndarray
    pixels: np.ndarray
    target: str
    method: str


def load(model_id: str | None = None) -> loading.Loaded:
    return loading.load(TASK, model_id)


def _text_limit(m: loading.Loaded) -> int:
    return int(getattr(m.model.config.text_config, "max_position_embeddings", 77))


def _pixels(m: loading.Loaded, images: list) -> torch.Tensor:
    """PIL images -> (I, 3, H, W) pixel values on the model's device and dtype."""
    pv = m.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    return pv.to(m.device, m.dtype)


def _to_uint8(m: loading.Loaded, pixel_values: torch.Tensor) -> np.ndarray:
    """(I, 3, H, W) normalised pixel values -> (I, H, W, 3) uint8 (undoing the processor's normalisation)."""
    proc = m.processor.image_processor
    mean = torch.tensor(proc.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(proc.image_std).view(1, 3, 1, 1)
    x = (pixel_values.detach().float().cpu() * std + mean).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def _grid(m: loading.Loaded, pixel_values: torch.Tensor) -> tuple[int, int]:
    patch = int(m.model.config.vision_config.patch_size)
    return pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch


def _names(sources: Sequence[str]) -> list[str]:
    return [Path(str(s)).name[:40] or f"image {i + 1}" for i, s in enumerate(sources)]


def _notice(m: loading.Loaded, candidates: list[str]) -> str:
    limit = _text_limit(m)
    long = [t for t, ids in zip(candidates, m.processor.tokenizer(candidates)["input_ids"]) if len(ids) > limit]
    if not long:
        return ""
    return f"{len(long)} candidate(s) longer than {limit} tokens were cut to the model's limit."


def _heads(m: loading.Loaded) -> tuple[A.Adapter, A.Head, A.Head]:
    """The architecture table's entry for the model and its vision and text heads (how each tower pools)."""
    adapter = A.adapter_for_view(m.model, "Image-text matching")
    if "vision" not in adapter.head or "text" not in adapter.head:
        raise A.UnknownArchitecture(f"{type(m.model).__name__} is not an image-text dual encoder the architecture "
                                    "table knows (CLIP, SigLIP).")
    return adapter, adapter.head["vision"], adapter.head["text"]


def _pads_to_limit(m: loading.Loaded) -> bool:
    """Whether texts are padded to the model's limit: a text tower that pools its LAST position (SigLIP) was
    trained on texts padded to max_length, so that position is always padding (the pipeline does the same)."""
    return _heads(m)[2].pool == "last"


def _text_inputs(m: loading.Loaded, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """The candidate texts as the model reads them, on its device: padded to the longest (CLIP) or to the
    model's limit (SigLIP), truncated to the limit."""
    padding = "max_length" if _pads_to_limit(m) else True
    enc = m.processor.tokenizer(
        list(texts), padding=padding, truncation=True, max_length=_text_limit(m), return_tensors="pt"
    )
    return {k: v.to(m.device) for k, v in enc.items()}


def _attention_pool(head: torch.nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SigLIP's attention-pooling head (SiglipMultiheadAttentionPoolingHead: a learned probe attends over the
    tokens with torch's MultiheadAttention, then a residual MLP) written out, so that its per-head attention
    weights are in the autograd graph (the module returns only their mean, outside the graph).

    hidden: (b, n, D) after post_layernorm. Returns the pooled vector (b, D), equal to head(hidden), and the
    probe's attention weights (b, H, n)."""
    mha = head.attention
    if mha.in_proj_weight is None or mha.bias_k is not None or mha.add_zero_attn:
        raise A.UnknownArchitecture("this attention-pooling head has a layout the relevance maps do not reproduce")
    b, n, dim = hidden.shape
    heads = mha.num_heads
    d = dim // heads
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    bq, bk, bv = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None, None, None)
    q = F.linear(head.probe, wq, bq).reshape(1, heads, 1, d)
    k = F.linear(hidden, wk, bk).reshape(b, n, heads, d).transpose(1, 2)
    v = F.linear(hidden, wv, bv).reshape(b, n, heads, d).transpose(1, 2)
    weights = (q @ k.transpose(-1, -2) / d**0.5).softmax(-1)[:, :, 0]  # (b, H, n): the tensor the output uses
    x = mha.out_proj((weights[:, :, None] @ v).transpose(1, 2).reshape(b, 1, dim))
    x = x + head.mlp(head.layernorm(x))
    return x[:, 0], weights


def _probe_weights(m: loading.Loaded, last_hidden: torch.Tensor) -> torch.Tensor | None:
    """(b, H, n) attention of the vision pooling head's probe over the tokens, from the vision tower's last
    hidden state (hidden_states[-1]); None when the tower pools a class token (CLIP)."""
    adapter, vision, _ = _heads(m)
    if vision.pool != "all":  # the projection reads one token: there is no pooling attention
        return None
    normed = A.stack_output(m.model, adapter, last_hidden, "vision")  # post_layernorm, as the head reads it
    return _attention_pool(A.resolve(m.model, vision.steps[0]), normed)[1]


def _patch_row(
    relevance: torch.Tensor | np.ndarray, probe: torch.Tensor | np.ndarray | None
) -> torch.Tensor | np.ndarray:
    """The row of a relevance / rollout matrix (n, n) that says how much the image embedding draws on each patch:
    the [CLS] row over the patches (CLIP), or the pooling probe's attention row (n,) times the matrix (SigLIP:
    no class token, the probe is outside the sequence, so there is no identity term for it)."""
    return relevance[0, 1:] if probe is None else probe @ relevance


@task_compute(TASK, memo_size=8, gpu_seconds=20)
def _analyse(sources: tuple[str, ...], candidates: tuple[str, ...], model_id: str | None) -> ClipResult:
    m = load(model_id)
    vision = _heads(m)[1]
    images = [load_image(s) for s in sources]
    pv = _pixels(m, images)
    text = _text_inputs(m, candidates)
    with torch.inference_mode():
        out = m.model(**text, pixel_values=pv, output_attentions=True, output_hidden_states=True)
        probe = _probe_weights(m, out.vision_model_output.hidden_states[-1])
    image_embeds = out.image_embeds.float().cpu().numpy()
    text_embeds = out.text_embeds.float().cpu().numpy()
    # (layers, I, heads, n, n) -> per image rollout from [CLS] (row 0), or from SigLIP's pooling probe, to the patches.
    vision_attn = torch.stack(out.vision_model_output.attentions).float().cpu().numpy()
    probe_mean = None if probe is None else probe.float().mean(1).cpu().numpy().astype(np.float64)  # (I, n)
    gh, gw = _grid(m, pv)
    rollout = np.stack(
        [
            _patch_row(attention_rollout(vision_attn[:, i]), None if probe_mean is None else probe_mean[i]).reshape(
                gh, gw
            )
            for i in range(len(images))
        ]
    ).astype(np.float32)
    mask = text.get("attention_mask", torch.ones_like(text["input_ids"]))
    bias = A.resolve(m.model, vision.logit_bias) if vision.logit_bias else None
    return ClipResult(
        texts=list(candidates),
        image_names=_names(sources),
        sources=list(sources),
        model_id=m.model_id,
        logits=out.logits_per_image.float().cpu().numpy(),
        cosine=image_embeds @ text_embeds.T,
        logit_scale=float(A.resolve(m.model, vision.logit_scale).detach().exp()),
        image_embeds=image_embeds,
        text_embeds=text_embeds,
        pixels=_to_uint8(m, pv),
        rollout=rollout,
        notice=_notice(m, list(candidates)),
        vision_hidden=torch.stack(out.vision_model_output.hidden_states).float().cpu().numpy(),
        text_hidden=torch.stack(out.text_model_output.hidden_states).float().cpu().numpy(),
        text_ids=text["input_ids"].cpu().numpy(),
        text_mask=mask.cpu().numpy(),
        contrast=vision.contrast or "softmax",
        logit_bias=0.0 if bias is None else float(bias.detach()),
    )


def analyse(images: str | Sequence[str], texts: str | Sequence[str], model_id: str | None = None) -> ClipResult:
    """Score every image (file paths; the first is the main one) against every candidate text in
    one forward pass, which also gives the embeddings and the vision attentions."""
    sources = [images] if isinstance(images, (str, Path)) else [s for s in images if s]
    if not sources:
        raise ValueError("Please upload an image.")
    if len(sources) > MAX_IMAGES:
        raise ValueError(f"{len(sources)} images given; the limit is {MAX_IMAGES}.")
    return _analyse(tuple(str(s) for s in sources), tuple(parse_candidates(texts)), model_id)


def _image_features(m: loading.Loaded, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple, torch.Tensor | None]:
    """(1, 3, H, W) -> normalised image embedding (1, d), the vision attentions and the pooling probe's
    attention (1, H, n) (None for CLIP), all in the autograd graph. The embedding is read as the table says:
    the vision stack's final norm, then CLIP's visual_projection on [CLS], or SigLIP's attention-pooling head."""
    adapter, vision, _ = _heads(m)
    out = m.model.vision_model(pixel_values=pixel_values, output_attentions=True, output_hidden_states=True)
    if vision.pool == "all":  # the head pools: written out so that its attention weights have gradients
        normed = A.stack_output(m.model, adapter, out.hidden_states[-1], "vision")
        emb, probe = _attention_pool(A.resolve(m.model, vision.steps[0]), normed)
        for step in vision.steps[1:]:
            emb = A.resolve(m.model, step)(emb)
    else:
        emb, probe = A.final_logits(m.model, adapter, out.hidden_states[-1], is_last=True, stack="vision"), None
    return emb / emb.norm(dim=-1, keepdim=True), out.attentions, probe


def _pool_index(m: loading.Loaded, ids: torch.Tensor) -> int:
    """Position whose state the text tower pools for ids (1, n), by the table: CLIP the first end-of-text
    token (the highest id for old configs with eos_token_id == 2, as CLIPTextTransformer), SigLIP the last."""
    text = _heads(m)[2]
    row = ids[0]
    if text.pool in ("first", "last"):
        return 0 if text.pool == "first" else row.shape[0] - 1
    eos = A.resolve(m.model, text.eos).eos_token_id
    if eos == 2:
        return int(row.argmax())
    hits = (row == eos).nonzero()
    return int(hits[0, 0]) if len(hits) else row.shape[0] - 1


def _text_embedding(m: loading.Loaded, ids: torch.Tensor, mask: torch.Tensor, pool: int) -> torch.Tensor:
    """(b, n) ids -> (b, d) normalised projected text embeddings, pooled at the fixed position `pool`
    (fixed so that the padding baseline of integrated gradients is pooled at the same place)."""
    hidden = m.model.text_model(input_ids=ids, attention_mask=mask.expand(ids.shape[0], -1)).last_hidden_state
    emb = hidden[:, pool]  # after the tower's final norm (CLIP and SigLIP); then the table's head steps
    for step in _heads(m)[2].steps:  # CLIP text_projection, SigLIP text_model.head
        emb = A.resolve(m.model, step)(emb)
    return emb / emb.norm(dim=-1, keepdim=True)


def _encode_text(m: loading.Loaded, text: str):
    """One text as the answer reads it (SigLIP: padded to the model's limit) and the position it is pooled at."""
    enc = encode(m.processor.tokenizer, m.model, text, max_length=_text_limit(m))
    if _pads_to_limit(m):
        batch = _text_inputs(m, [text])
        ids = batch["input_ids"]
        enc = replace(
            enc,
            ids=ids,
            mask=batch.get("attention_mask", torch.ones_like(ids)),
            tokens=token_labels(m.processor.tokenizer, ids[0].tolist()),
        )
    return enc, _pool_index(m, enc.ids)


@task_compute(TASK, memo_size=32, gpu_seconds=30, answer=False)
def gradient_rollout(image: str, text: str, model_id: str | None = None) -> np.ndarray:
    """Chefer et al. (2021) relevance of each patch of `image` (path) for cos(image, text): (gh, gw).

    R = I; for every vision layer R += mean_heads(clamp(grad * attn, min=0)) @ R, where grad is
    the gradient of the cosine similarity w.r.t. that layer's attention probabilities;
    the relevance is the [CLS] row of R over the patches. SigLIP has no [CLS]: its pooling head's probe
    attends over the tokens, so the relevance is mean_heads(clamp(grad * probe attention, min=0)) @ R
    (the same rule one step further, the probe being outside the sequence).
    """
    m = load(model_id)
    pv = _pixels(m, [load_image(image)])
    enc, pool = _encode_text(m, text)
    with torch.no_grad():
        text_emb = _text_embedding(m, enc.ids, enc.mask, pool)
    with torch.enable_grad():
        img_emb, attns, probe = _image_features(m, pv)
        grads = torch.autograd.grad((img_emb * text_emb).sum(), (*attns, *(() if probe is None else (probe,))))
    n = attns[0].shape[-1]
    relevance = torch.eye(n, device=pv.device)
    for attn, grad in zip(attns, grads):
        cam = (grad[0] * attn[0]).detach().float().clamp(min=0).mean(dim=0)  # (n, n)
        relevance = relevance + cam @ relevance
    row = None if probe is None else (grads[-1][0] * probe[0]).detach().float().clamp(min=0).mean(dim=0)  # (n,)
    return _patch_row(relevance, row).cpu().numpy().reshape(_grid(m, pv)).astype(np.float32)


def relevance(result: ClipResult, image_index: int, text: str, method: str = "chefer") -> PatchRelevance:
    """Patch relevance of image `image_index` of `result` for `text`.

    "chefer" runs one forward + backward pass of the vision tower (cached); "rollout" reuses the
    attentions of the analysis pass (it does not depend on the text).
    """
    if method not in RELEVANCE_METHODS:
        raise ValueError(f"Unknown relevance method {method!r}; choose one of {sorted(RELEVANCE_METHODS)}.")
    if text not in result.texts:
        raise ValueError(f"Unknown candidate {text!r}; choose one of the analysed texts.")
    i = min(max(int(image_index), 0), len(result.sources) - 1)
    scores = result.rollout[i] if method == "rollout" else gradient_rollout(result.sources[i], text, result.model_id)
    return PatchRelevance(scores, result.pixels[i], text, method)


@attribution_compute(TASK)
def attribute_text(
    image: str,
    text: str,
    how: How = How(),
) -> Attribution:
    """Per-token attribution of cos(image, text) to the tokens of `text` (Captum, at the text
    tower's token-embedding layer; baseline: every word token replaced by the padding token)."""
    m = load(how.model_id)
    with torch.no_grad():
        img_emb, _, _ = _image_features(m, _pixels(m, [load_image(image)]))
    enc, pool = _encode_text(m, text)
    tok = m.processor.tokenizer
    base = pad_baseline(enc.ids, tok)

    def similarity(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (_text_embedding(m, ids, mask, pool) * img_emb).sum(dim=-1).float()  # (b,)

    attr = token_attribution(m.model.text_model, similarity, enc.ids, base, enc.tokens, text, (enc.mask,), how)
    if not _pads_to_limit(m):
        return attr
    # SigLIP reads the text padded to its limit: the padding is the same in the input and the baseline, so its
    # scores are exactly 0 (the sum is unchanged); only the real tokens are shown.
    keep = enc.mask[0].bool().cpu().numpy()
    return replace(attr, tokens=[t for t, k in zip(attr.tokens, keep) if k], scores=attr.scores[keep])


def subject(result: ClipResult, target: object = None, contrast: object = None):
    """What the explainers explain (demos.explain.subjects.Subject): P(description `target`, default the
    best | the first image) among the candidates (CLIP: softmax over them; SigLIP: that pair's sigmoid);
    units: the image's patches."""

    m = load(result.model_id)
    proc = m.processor
    pv = proc.image_processor(images=[load_image(result.sources[0])], return_tensors="pt")["pixel_values"].to(
        m.device, m.dtype
    )
    text = _text_inputs(m, result.texts)
    texts = list(result.texts)
    adapter = _heads(m)[0]
    index = {t: i for i, t in enumerate(texts)}
    answer = (
        int(np.argmax(result.logits[0]))
        if target is None
        else st.resolve_outcome(target, texts.__getitem__, len(texts), index.get)
    )
    patch = int(m.model.config.vision_config.patch_size)
    grid = (pv.shape[-2] // patch, pv.shape[-1] // patch)

    def attention() -> np.ndarray:
        """The last attention before the image embedding: [CLS]'s row in the last layer (CLIP), or SigLIP's
        pooling probe over the patches; mean over heads."""
        with torch.no_grad():
            out = m.model.vision_model(pixel_values=pv, output_attentions=True, output_hidden_states=True)
            probe = _probe_weights(m, out.hidden_states[-1])
        if probe is not None:
            return probe[0].float().mean(0).cpu().numpy()
        return out.attentions[-1][0].float().mean(0)[0, 1:].cpu().numpy()

    s = st.Subject(
        task=TASK,
        model=m.model,
        inputs={"pixel_values": pv},
        unit_key="pixel_values",
        units=st.patch_units(
            [f"r{r}c{c}" for r in range(grid[0]) for c in range(grid[1])], grid, patch, tuple(pv.shape[-2:])
        ),
        replacement=st.mean_patch(pv, grid, patch),
        run=lambda kw: m.model(pixel_values=kw["pixel_values"], **text),
        outcome_probs=lambda out: A.pair_scores(adapter, out.logits_per_image.float()),
        outcome_label=texts.__getitem__,
        answer=answer,
        towers_batched=lambda tower: tower != "text",  # the text tower runs on the candidates, not per row
        attention=attention,
        rollout=lambda: result.rollout[0].reshape(-1),
    )
    return st.finish(s, contrast if len(texts) > 1 else None, index.get, len(texts), allow_contrast=len(texts) > 1)
