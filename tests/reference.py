"""Independent references for the numbers the explanations show, recomputed here with transformers
and Captum only: no `demos.inputs.text` (encode, pad_baseline, token_attribution), no
`demos.explain` (subjects, run_attribution), no app loader. Each task's answer is rebuilt from the
model's folder as a float64 copy (so a reference is exact to ~1e-12 and the app's float32 numbers
are compared with a relative tolerance), with the baseline each view documents built by hand:

    sentiment / qa   [CLS] PAD ... [SEP] (PAD ... [SEP])   ordinary tokens -> the pad token
    generation       every prompt token -> end-of-text (GPT-2 has no pad token)
    translation      every source token -> <pad>, </s> kept
    clip (text)      <|startoftext|> PAD ... <|endoftext|>
    explorer         [CLS] PAD ... [SEP] (the first sentence)
    image / clip     every patch -> the image's mean patch (explainers); a black image (image tab)
    asr              the audio's frames -> the features of silence

`Plain` holds one answer: probs(x) -> (b, K) outcome probabilities from the unit tensor x, the
input x and its baseline, the embedding layer (Captum attributes token ids at its output) and how
attributions reduce to one score per unit. `ig` / `gxi` call Captum directly.
"""
from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import transformers

STRUCTURAL = ("cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id")


@functools.cache
def model64(cls_name: str, folder: str) -> Any:
    """A float64 copy of the model in `folder` (transformers class `cls_name`), eval mode."""
    return getattr(transformers, cls_name).from_pretrained(folder).double().eval()


@functools.cache
def tokenizer(folder: str) -> Any:
    return transformers.AutoTokenizer.from_pretrained(folder)


@functools.cache
def processor(folder: str) -> Any:
    return transformers.AutoProcessor.from_pretrained(folder)


def structural_ids(tok: Any) -> set[int]:
    """[CLS]/[SEP]/<s>/</s> of `tok`: the tokens a baseline keeps (not [UNK], not [MASK])."""
    return {getattr(tok, name) for name in STRUCTURAL if getattr(tok, name, None) is not None}


def pad_all_but(ids: torch.Tensor, keep: set[int], pad: int) -> torch.Tensor:
    return torch.where(torch.isin(ids, torch.tensor(sorted(keep), dtype=ids.dtype)), ids, torch.full_like(ids, pad))


@dataclass
class Plain:
    """One answer recomputed by hand (see the module docstring).

    probs(x (b, ...)) -> (b, K); x, baseline: (1, ...); layer: embedding layer for token ids, else
    None; reduce(attrs like x or the layer output) -> (n,); answer: outcome index; tokens: (n,)
    unit labels as the tokenizer writes them; deletable: (n,) units the deletion check may remove;
    remove(x, units) -> x with those units set to the baseline's values."""

    probs: Callable[[torch.Tensor], torch.Tensor]
    x: torch.Tensor
    baseline: torch.Tensor
    layer: torch.nn.Module | None
    reduce: Callable[[torch.Tensor], np.ndarray]
    answer: int
    tokens: list[str]
    deletable: np.ndarray
    remove: Callable[[torch.Tensor, np.ndarray], torch.Tensor]

    def value(self, x: torch.Tensor | None = None, k: int | None = None) -> float:
        with torch.no_grad():
            return float(self.probs(self.x if x is None else x)[0, self.answer if k is None else k])

    def top_other(self) -> int:
        with torch.no_grad():
            p = self.probs(self.x)[0].clone()
        p[self.answer] = -1.0
        return int(p.argmax())

    def fn(self, k: int, minus: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """x -> (b,) P(k) (or P(k) - P(minus))."""
        def f(x: torch.Tensor, *extra: Any) -> torch.Tensor:
            p = self.probs(x)
            return p[:, k] - (p[:, minus] if minus is not None else 0.0)

        return f

    def ig(self, k: int | None = None, steps: int = 32, minus: int | None = None) -> np.ndarray:
        """(n,) integrated gradients of P(k) (default the answer; minus: of P(k) - P(minus)) from the baseline."""
        return integrated(self.fn(self.answer if k is None else k, minus), self.x, self.baseline, self.layer, steps, self.reduce)

    def gxi(self, k: int | None = None) -> np.ndarray:
        return gradient_x_input(self.fn(self.answer if k is None else k), self.x, self.layer, self.reduce)


def integrated(fn: Callable, x: torch.Tensor, baseline: torch.Tensor, layer: torch.nn.Module | None, steps: int,
               reduce: Callable[[torch.Tensor], np.ndarray]) -> np.ndarray:
    """Captum's (Layer)IntegratedGradients, called directly: (n,) scores after `reduce`."""
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    algo = LayerIntegratedGradients(fn, layer) if layer is not None else IntegratedGradients(fn)
    return reduce(algo.attribute(x, baselines=baseline, n_steps=int(steps), internal_batch_size=int(steps)).detach())


def gradient_x_input(fn: Callable, x: torch.Tensor, layer: torch.nn.Module | None,
                     reduce: Callable[[torch.Tensor], np.ndarray]) -> np.ndarray:
    from captum.attr import InputXGradient, LayerGradientXActivation

    algo = LayerGradientXActivation(fn, layer) if layer is not None else InputXGradient(fn)
    return reduce(algo.attribute(x if layer is not None else x.clone().requires_grad_(True)).detach())


def per_position(attrs: torch.Tensor) -> np.ndarray:
    """(1, n, d) -> (n,): the hidden size summed (a token's score)."""
    return attrs[0].sum(-1).numpy()


def remove_positions(baseline: torch.Tensor) -> Callable[[torch.Tensor, np.ndarray], torch.Tensor]:
    def remove(x: torch.Tensor, units: np.ndarray) -> torch.Tensor:
        out = x.clone()
        out[:, list(units)] = baseline[:, list(units)]
        return out

    return remove


# ---- one builder per task (the result only gives the input and the answer's position) ----------


def sentiment(result: Any, target: int | None = None) -> Plain:
    folder = result.model_id
    tok, model = tokenizer(folder), model64("AutoModelForSequenceClassification", folder)
    ids = tok(result.text, return_tensors="pt")["input_ids"]
    base = pad_all_but(ids, structural_ids(tok), tok.pad_token_id)

    def probs(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(input_ids=x, attention_mask=torch.ones_like(x)).logits, -1)

    with torch.no_grad():
        answer = int(probs(ids)[0].argmax()) if target is None else int(target)
    return Plain(probs, ids, base, model.get_input_embeddings(), per_position, answer, tok.convert_ids_to_tokens(ids[0].tolist()),
                 (ids != base)[0].numpy(), remove_positions(base))


def generation(result: Any, step: int = 0) -> Plain:
    folder = result.model_id
    tok, model = tokenizer(folder), model64("AutoModelForCausalLM", folder)
    pos = result.n_prompt + step
    ids = torch.tensor([result.ids[:pos]])
    base = pad_all_but(ids, set(), tok.eos_token_id)  # GPT-2 has no pad token: end-of-text everywhere

    def probs(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(input_ids=x).logits[:, -1], -1)

    labels = [tok.decode([i]).replace(" ", "␣") for i in result.ids[:pos]]
    return Plain(probs, ids, base, model.get_input_embeddings(), per_position, int(result.ids[pos]), labels,
                 (ids != tok.eos_token_id)[0].numpy(), remove_positions(base))


def qa_best_span(start: np.ndarray, end: np.ndarray, allowed: np.ndarray, max_len: int) -> tuple[int, int]:
    """Brute force over every span s <= e < s + max_len of allowed tokens."""
    best, span = -np.inf, (-1, -1)
    for s in np.flatnonzero(allowed):
        for e in range(s, min(s + max_len, len(allowed))):
            if allowed[e] and start[s] + end[e] > best:
                best, span = start[s] + end[e], (int(s), int(e))
    return span


def qa(result: Any) -> Plain:
    """Outcomes (K = 3): P(start = s) * P(end = e) of the answer span, P(start = s), P(end = e);
    softmaxes over the context tokens and [CLS] (every other logit set to -10000, as the old pipeline)."""
    from core import registry

    folder = result.model_id
    tok, model = tokenizer(folder), model64("AutoModelForQuestionAnswering", folder)
    enc = tok(result.question, result.context, return_tensors="pt")
    ids = enc["input_ids"]
    segment = np.array([-1 if s is None else s for s in enc.sequence_ids(0)])
    keep = torch.as_tensor((segment == 1) | (ids[0].numpy() == tok.cls_token_id))
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    s, e = qa_best_span(out.start_logits[0].numpy(), out.end_logits[0].numpy(), segment == 1,
                        registry.get("qa").constant("MAX_ANSWER_TOKENS"))
    base = pad_all_but(ids, structural_ids(tok), tok.pad_token_id)

    def probs(x: torch.Tensor) -> torch.Tensor:
        o = model(input_ids=x, attention_mask=torch.ones_like(x))
        ps = torch.softmax(torch.where(keep, o.start_logits, torch.full_like(o.start_logits, -10000.0)), -1)[:, s]
        pe = torch.softmax(torch.where(keep, o.end_logits, torch.full_like(o.end_logits, -10000.0)), -1)[:, e]
        return torch.stack([ps * pe, ps, pe], dim=1)

    plain = Plain(probs, ids, base, model.get_input_embeddings(), per_position, 0, tok.convert_ids_to_tokens(ids[0].tolist()),
                  (ids != base)[0].numpy(), remove_positions(base))
    plain.span = (s, e)  # type: ignore[attr-defined]
    return plain


def translation(result: Any, step: int = 0) -> Plain:
    """P(target token `step` | source, the target prefix), teacher forced. The decoder's prefix
    goes in as embeddings computed once, so Captum's hook on the encoder's token embeddings
    sees the source only (Marian scales both sides by embed_scale: integrated gradients are the
    same at the scaled or the unscaled embeddings, the path being one straight line)."""
    folder = result.model_id
    tok, model = tokenizer(folder), model64("MarianMTModel", folder)
    ids = tok(result.text, return_tensors="pt")["input_ids"]
    base = pad_all_but(ids, {tok.eos_token_id}, tok.pad_token_id)
    prefix = torch.tensor([result.generated[: step + 1]])
    with torch.no_grad():
        decoder_embeds = model.get_decoder().embed_tokens(prefix)  # the decoder scales them itself

    def probs(x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        logits = model(input_ids=x, attention_mask=torch.ones_like(x), decoder_inputs_embeds=decoder_embeds.expand(b, -1, -1)).logits
        return torch.softmax(logits[:, -1], -1)

    return Plain(probs, ids, base, model.get_encoder().embed_tokens, per_position, int(result.target_ids[step]),
                 tok.convert_ids_to_tokens(ids[0].tolist()), (ids != base)[0].numpy(), remove_positions(base))


def _mean_patch(pv: torch.Tensor, patch: int) -> torch.Tensor:
    """The image's average patch (over the grid) tiled over it; the mean colour outside the grid."""
    _, c, h, w = pv.shape
    rows, cols = h // patch, w // patch
    out = pv.mean(dim=(2, 3), keepdim=True).expand_as(pv).clone()
    blocks = pv[:, :, : rows * patch, : cols * patch].reshape(1, c, rows, patch, cols, patch)
    avg = blocks.mean(dim=(2, 4))  # (1, c, patch, patch)
    out[:, :, : rows * patch, : cols * patch] = avg.repeat(1, 1, rows, cols)
    return out


def _patch_tools(pv: torch.Tensor, base: torch.Tensor, patch: int):
    rows, cols = pv.shape[-2] // patch, pv.shape[-1] // patch

    def reduce(attrs: torch.Tensor) -> np.ndarray:
        a = attrs[0].sum(0)[: rows * patch, : cols * patch]
        return np.array([[float(a[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch].sum()) for c in range(cols)]
                         for r in range(rows)]).reshape(-1)

    def remove(x: torch.Tensor, units: np.ndarray) -> torch.Tensor:
        out = x.clone()
        for u in units:
            r, c = divmod(int(u), cols)
            out[:, :, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = base[:, :, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch]
        return out

    labels = [f"r{r}c{c}" for r in range(rows) for c in range(cols)]
    return reduce, remove, labels


def image(result: Any, target: int | None = None, baseline: str = "mean patch") -> Plain:
    folder = result.model_id
    model = model64("ViTForImageClassification", folder)
    pv = torch.from_numpy(np.array(result.pixel_values)).double()
    patch = int(model.config.patch_size)
    base = _mean_patch(pv, patch) if baseline == "mean patch" else image_tab_baseline(pv, baseline, folder)

    def probs(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(pixel_values=x).logits, -1)

    with torch.no_grad():
        answer = int(probs(pv)[0].argmax()) if target is None else int(target)
    reduce, remove, labels = _patch_tools(pv, base, patch)
    return Plain(probs, pv, base, None, reduce, answer, labels, np.ones(len(labels), bool), remove)


def image_tab_baseline(pv: torch.Tensor, kind: str, folder: str) -> torch.Tensor:
    """The image tab's baselines as its help text says: a black image, the image blurred
    (Gaussian, sigma = 1/16 of the side), uniform noise in [0, 1] (seed 0); in normalised space."""
    ip = transformers.AutoImageProcessor.from_pretrained(folder)
    mean = torch.tensor(ip.image_mean, dtype=pv.dtype).view(1, -1, 1, 1)
    std = torch.tensor(ip.image_std, dtype=pv.dtype).view(1, -1, 1, 1)
    if kind == "black":
        return ((0.0 - mean) / std).expand_as(pv).clone()
    if kind == "uniform noise":
        noise = torch.rand(pv.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
        return (noise.to(pv.dtype) - mean) / std
    if kind == "blurred":
        from scipy.ndimage import gaussian_filter

        sigma = max(pv.shape[-2:]) / 16.0
        return torch.from_numpy(gaussian_filter(pv.float().numpy(), sigma=(0, 0, sigma, sigma), mode="nearest")).double()
    raise ValueError(kind)


def asr(result: Any, step: int = 0) -> Plain:
    folder = result.model_id
    proc, model = processor(folder), model64("WhisperForConditionalGeneration", folder)
    fe, tok = proc.feature_extractor, proc.tokenizer
    feats = torch.from_numpy(np.array(result.input_features)).double()
    decoder_in = torch.tensor([tok.convert_tokens_to_ids(result.prompt) + list(result.token_ids[:step])])
    n = len(result.cross.key_tokens)  # the encoder positions that hold the audio: one unit each
    ratio = feats.shape[-1] // int(model.config.max_source_positions)  # feature frames per encoder position
    silence = torch.from_numpy(fe(np.zeros(fe.n_samples, dtype=np.float32), sampling_rate=fe.sampling_rate,
                                  return_tensors="np")["input_features"]).double()
    base = feats.clone()
    base[..., : n * ratio] = silence[..., : n * ratio]

    def probs(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(input_features=x, decoder_input_ids=decoder_in.expand(x.shape[0], -1)).logits[:, -1], -1)

    def reduce(attrs: torch.Tensor) -> np.ndarray:
        return attrs[0].sum(0)[: n * ratio].reshape(n, ratio).sum(1).numpy()

    def remove(x: torch.Tensor, units: np.ndarray) -> torch.Tensor:
        out = x.clone()
        for u in units:
            out[..., int(u) * ratio:(int(u) + 1) * ratio] = base[..., int(u) * ratio:(int(u) + 1) * ratio]
        return out

    return Plain(probs, feats, base, None, reduce, int(result.token_ids[step]), list(result.cross.key_tokens), np.ones(n, bool), remove)


def _clip_image(path: str) -> Any:
    from PIL import Image

    return Image.open(path).convert("RGB")


def clip(result: Any, target: int | None = None) -> Plain:
    """P(description k | the first image) among the result's descriptions; units: its patches."""
    folder = result.model_id
    proc, model = processor(folder), model64("CLIPModel", folder)
    pv = proc.image_processor(images=[_clip_image(result.sources[0])], return_tensors="pt")["pixel_values"].double()
    text = proc.tokenizer(list(result.texts), padding=True, return_tensors="pt")
    patch = int(model.config.vision_config.patch_size)
    base = _mean_patch(pv, patch)

    def probs(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(pixel_values=x, **text).logits_per_image, -1)

    with torch.no_grad():
        answer = int(probs(pv)[0].argmax()) if target is None else int(target)
    reduce, remove, labels = _patch_tools(pv, base, patch)
    return Plain(probs, pv, base, None, reduce, answer, labels, np.ones(len(labels), bool), remove)


def clip_text(folder: str, image_path: str, text: str) -> Plain:
    """The CLIP tab's text attribution: cos(image, text) over the text's tokens, the text pooled at
    its first end-of-text token (kept fixed for the baseline, where padding is end-of-text too)."""
    proc, model = processor(folder), model64("CLIPModel", folder)
    tok = proc.tokenizer
    pv = proc.image_processor(images=[_clip_image(image_path)], return_tensors="pt")["pixel_values"].double()
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=pv).pooler_output)
        img = img / img.norm(dim=-1, keepdim=True)
    ids = tok(text, return_tensors="pt")["input_ids"]
    pool = int((ids[0] == tok.eos_token_id).nonzero()[0, 0])
    base = torch.cat([ids[:, :1], torch.full((1, ids.shape[1] - 2), tok.pad_token_id), ids[:, -1:]], dim=1)

    def probs(x: torch.Tensor) -> torch.Tensor:
        hidden = model.text_model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state[:, pool]
        emb = model.text_projection(hidden)
        return ((emb / emb.norm(dim=-1, keepdim=True)) * img).sum(-1, keepdim=True)

    labels = [t.replace("</w>", "␣") for t in tok.convert_ids_to_tokens(ids[0].tolist())]  # end of word shown as ␣
    return Plain(probs, ids, base, model.text_model.get_input_embeddings(), per_position, 0, labels,
                 (ids != base)[0].numpy(), remove_positions(base))


def explorer(result: Any, other: int = 1) -> Plain:
    """cos(mean-pooled first sentence, mean-pooled sentence `other`); units: the first sentence's tokens."""
    folder = result.model_id
    tok, model = tokenizer(folder), model64("AutoModel", folder)
    a = tok(result.sentences[0], return_tensors="pt")["input_ids"]
    b = tok(result.sentences[other], return_tensors="pt")["input_ids"]
    base = pad_all_but(a, structural_ids(tok), tok.pad_token_id)
    with torch.no_grad():
        vb = model(input_ids=b, attention_mask=torch.ones_like(b)).last_hidden_state.mean(1)

    def probs(x: torch.Tensor) -> torch.Tensor:
        va = model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state.mean(1)
        return torch.nn.functional.cosine_similarity(va, vb.expand_as(va), dim=-1)[:, None]

    return Plain(probs, a, base, model.get_input_embeddings(), per_position, 0, tok.convert_ids_to_tokens(a[0].tolist()),
                 (a != base)[0].numpy(), remove_positions(base))


BUILDERS: dict[str, Callable[..., Plain]] = {
    "generation": generation, "sentiment": sentiment, "qa": qa, "translation": translation,
    "image": image, "asr": asr, "clip": clip, "explorer": explorer,
}


def plain(task: str, result: Any) -> Plain:
    """The task's default answer (what the explainers explain by default), by hand."""
    return BUILDERS[task](result)


# ---- what the user sees: the attribution view's HTML and bar chart ------------------------------

_TITLE = re.compile(r'<span class="xray-tok"[^>]*title="([^"]*)"')


def shown(html_value: str, figure: Any) -> tuple[list[str], np.ndarray, list[str]]:
    """(tokens, scores, scores as printed) of one attribution view, left to right as shown: tokens
    from the shaded text's spans (`title="token: +0.1234"`), scores from the bar chart (full
    precision), printed scores from the spans."""
    titles = [html.unescape(t) for t in _TITLE.findall(html_value)]
    tokens = [t.rsplit(": ", 1)[0] for t in titles]
    printed = [t.rsplit(": ", 1)[1] for t in titles]
    bars = np.asarray(figure.data[0].y, dtype=np.float64)
    return tokens, bars, printed


def close(got: np.ndarray, want: np.ndarray, rel: float = 2e-3) -> None:
    """Scores equal to the reference, position by position, up to `rel` of the largest reference
    magnitude (float32 against float64)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = float(np.abs(want).max())
    assert scale > 0, "a reference of zeros cannot tell orders apart"
    np.testing.assert_allclose(got, want, rtol=0, atol=rel * scale)


def complete(total: float, gap: float, rel: float = 0.02) -> None:
    """Completeness against a plain forward pass: the attributions add up to f(x) - f(baseline)
    within `rel` of it (Captum's delta at these step counts is far smaller; gradient x input or a
    wrong baseline misses it by far more)."""
    assert gap != 0.0
    assert abs(total - gap) <= rel * abs(gap), f"sum {total:.6g} vs f(x) - f(baseline) {gap:.6g}"
