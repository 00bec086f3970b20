"""Image-text matching (CLIP): candidate probabilities, image x text similarities, shared-space
embeddings, patch relevance for a chosen text and Captum attributions over its tokens."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from demos.runtime import loading
from demos.runtime.compute import How, attribution_compute, task_compute
from demos.explain.attribution import attention_rollout, softmax_np
from demos.inputs.images import load_image
from core import registry
from core.results import Attribution, Embeddings
from demos.inputs.text import encode, pad_baseline, token_attribution

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
    """One forward pass of CLIP over I images and T candidate texts.

    logits: (I, T) logits_per_image (= logit_scale * cosine); cosine: (I, T);
    image_embeds: (I, d), text_embeds: (T, d) L2-normalised projected embeddings;
    pixels: (I, H, W, 3) uint8, each image as the model saw it (resized, centre-cropped);
    rollout: (I, gh, gw) attention rollout of the vision tower from [CLS] to every patch.
    vision_hidden: (vision_layers+1, I, 1+gh*gw, dv) float32 hidden states of the vision tower
    (index 0 = embeddings after pre_layrnorm; the last is before post_layernorm);
    text_hidden: (text_layers+1, T, nt, dt) float32 hidden states of the text tower over the
    padded texts (the last before final_layer_norm); text_ids, text_mask: (T, nt) its input.
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

    @property
    def probs(self) -> np.ndarray:
        """(I, T) softmax over the texts of each image (as the zero-shot pipeline does)."""
        return softmax_np(self.logits.astype(np.float64), axis=-1).astype(np.float32)

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


@task_compute(TASK, memo_size=8, gpu_seconds=20)
def _analyse(sources: tuple[str, ...], candidates: tuple[str, ...], model_id: str | None) -> ClipResult:
    m = load(model_id)
    images = [load_image(s) for s in sources]
    enc = m.processor(text=list(candidates), images=images, return_tensors="pt", padding=True, truncation=True, max_length=_text_limit(m))
    enc = {k: (v.to(m.device, m.dtype) if k == "pixel_values" else v.to(m.device)) for k, v in enc.items()}
    with torch.inference_mode():
        out = m.model(**enc, output_attentions=True, output_hidden_states=True)
    image_embeds = out.image_embeds.float().cpu().numpy()
    text_embeds = out.text_embeds.float().cpu().numpy()
    # (layers, I, heads, n, n) -> per image rollout from [CLS] (row 0) to the patches.
    vision_attn = torch.stack(out.vision_model_output.attentions).float().cpu().numpy()
    gh, gw = _grid(m, enc["pixel_values"])
    rollout = np.stack([attention_rollout(vision_attn[:, i])[0, 1:].reshape(gh, gw) for i in range(len(images))])
    return ClipResult(
        texts=list(candidates),
        image_names=_names(sources),
        sources=list(sources),
        model_id=m.model_id,
        logits=out.logits_per_image.float().cpu().numpy(),
        cosine=image_embeds @ text_embeds.T,
        logit_scale=float(m.model.logit_scale.detach().exp()),
        image_embeds=image_embeds,
        text_embeds=text_embeds,
        pixels=_to_uint8(m, enc["pixel_values"]),
        rollout=rollout,
        notice=_notice(m, list(candidates)),
        vision_hidden=torch.stack(out.vision_model_output.hidden_states).float().cpu().numpy(),
        text_hidden=torch.stack(out.text_model_output.hidden_states).float().cpu().numpy(),
        text_ids=enc["input_ids"].cpu().numpy(),
        text_mask=enc["attention_mask"].cpu().numpy(),
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


def _image_features(m: loading.Loaded, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """(1, 3, H, W) -> normalised projected image embedding (1, d) and the vision attentions."""
    out = m.model.vision_model(pixel_values=pixel_values, output_attentions=True)
    emb = m.model.visual_projection(out.pooler_output)
    return emb / emb.norm(dim=-1, keepdim=True), out.attentions


def _pool_index(m: loading.Loaded, ids: torch.Tensor) -> int:
    """Position whose state CLIP's text tower pools for ids (1, n): the first EOS (argmax id for
    old configs with eos_token_id == 2), as in CLIPTextTransformer."""
    eos = m.model.config.text_config.eos_token_id
    row = ids[0]
    if eos == 2:
        return int(row.argmax())
    hits = (row == eos).nonzero()
    return int(hits[0, 0]) if len(hits) else row.shape[0] - 1


def _text_embedding(m: loading.Loaded, ids: torch.Tensor, mask: torch.Tensor, pool: int) -> torch.Tensor:
    """(b, n) ids -> (b, d) normalised projected text embeddings, pooled at the fixed position `pool`
    (fixed so that the padding baseline of integrated gradients is pooled at the same place)."""
    hidden = m.model.text_model(input_ids=ids, attention_mask=mask.expand(ids.shape[0], -1)).last_hidden_state
    emb = m.model.text_projection(hidden[:, pool])
    return emb / emb.norm(dim=-1, keepdim=True)


def _encode_text(m: loading.Loaded, text: str):
    enc = encode(m.processor.tokenizer, m.model, text, max_length=_text_limit(m))
    return enc, _pool_index(m, enc.ids)


@task_compute(TASK, memo_size=32, gpu_seconds=30, answer=False)
def gradient_rollout(image: str, text: str, model_id: str | None = None) -> np.ndarray:
    """Chefer et al. (2021) relevance of each patch of `image` (path) for cos(image, text): (gh, gw).

    R = I; for every vision layer R += mean_heads(clamp(grad * attn, min=0)) @ R, where grad is
    the gradient of the cosine similarity w.r.t. that layer's attention probabilities;
    the relevance is the [CLS] row of R over the patches.
    """
    m = load(model_id)
    pv = _pixels(m, [load_image(image)])
    enc, pool = _encode_text(m, text)
    with torch.no_grad():
        text_emb = _text_embedding(m, enc.ids, enc.mask, pool)
    with torch.enable_grad():
        img_emb, attns = _image_features(m, pv)
        grads = torch.autograd.grad((img_emb * text_emb).sum(), attns)
    n = attns[0].shape[-1]
    relevance = torch.eye(n, device=pv.device)
    for attn, grad in zip(attns, grads):
        cam = (grad[0] * attn[0]).detach().float().clamp(min=0).mean(dim=0)  # (n, n)
        relevance = relevance + cam @ relevance
    return relevance[0, 1:].cpu().numpy().reshape(_grid(m, pv)).astype(np.float32)


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
    if method == "rollout":
        scores = result.rollout[i]
    else:
        scores = gradient_rollout(result.sources[i], text, result.model_id)
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
        img_emb, _ = _image_features(m, _pixels(m, [load_image(image)]))
    enc, pool = _encode_text(m, text)
    tok = m.processor.tokenizer
    base = pad_baseline(enc.ids, tok)

    def similarity(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (_text_embedding(m, ids, mask, pool) * img_emb).sum(dim=-1).float()  # (b,)

    return token_attribution(
        m.model.text_model, similarity, enc.ids, base, enc.tokens, text, (enc.mask,), how
    )


def subject(result: ClipResult, target: object = None, contrast: object = None):
    """What the explainers explain (demos.explain.subjects.Subject): P(description `target`, default the
    best | the first image) among the candidates; units: the image's patches."""
    from demos.explain import subject_tasks as st

    m = load(result.model_id)
    proc = m.processor
    pv = proc.image_processor(images=[load_image(result.sources[0])], return_tensors="pt")["pixel_values"].to(m.device, m.dtype)
    text = proc.tokenizer(list(result.texts), padding=True, truncation=True, max_length=_text_limit(m), return_tensors="pt").to(m.device)
    texts = list(result.texts)
    index = {t: i for i, t in enumerate(texts)}
    answer = int(np.argmax(result.logits[0])) if target is None else st.resolve_outcome(target, texts.__getitem__, len(texts), index.get)
    patch = int(m.model.config.vision_config.patch_size)
    grid = (pv.shape[-2] // patch, pv.shape[-1] // patch)

    def attention() -> np.ndarray:
        with torch.no_grad():
            att = m.model.vision_model(pixel_values=pv, output_attentions=True).attentions[-1]
        return att[0].float().mean(0)[0, 1:].cpu().numpy()

    s = st.Subject(
        task=TASK, model=m.model, inputs={"pixel_values": pv}, unit_key="pixel_values",
        units=st.patch_units([f"r{r}c{c}" for r in range(grid[0]) for c in range(grid[1])], grid, patch, tuple(pv.shape[-2:])),
        replacement=st.mean_patch(pv, grid, patch),
        run=lambda kw: m.model(pixel_values=kw["pixel_values"], **text),
        outcome_probs=lambda out: torch.softmax(out.logits_per_image.float(), dim=-1),
        outcome_label=texts.__getitem__,
        answer=answer,
        towers_batched=lambda tower: tower != "text",  # the text tower runs on the candidates, not per row
        attention=attention,
        rollout=lambda: result.rollout[0].reshape(-1),
    )
    return st.finish(s, contrast if len(texts) > 1 else None, index.get, len(texts), allow_contrast=len(texts) > 1)
