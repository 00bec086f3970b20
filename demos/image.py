"""Image classification (ViT): top-5 classes, attention rollout, class-token attention per head,
patch embeddings, and Captum pixel attributions (integrated gradients, optional SmoothGrad)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from core import registry
from core.results import AttentionMaps, Attribution, Embeddings
from demos.explain import subjects as st
from demos.explain.attribution import ProgressFn, attention_rollout, run_attribution, stack_attentions, stack_hidden
from demos.inputs.images import load_image
from demos.runtime import loading
from demos.runtime.compute import task_compute

TASK = "image"
ASSETS = Path(__file__).resolve().parent.parent / "assets" / "images"
EXAMPLES = registry.examples(TASK)
BASELINES = registry.get(TASK).constant("BASELINES")
DISPLAY_SIDE = 512  # longest side of the image kept in results for overlays
TOP_K = registry.get(TASK).constant("TOP_K")


@dataclass(frozen=True)
class Picture:
    """A decoded RGB image keyed by its content, so results can be memoised per image."""

    digest: str
    pil: Image.Image | None = field(compare=False, hash=False, repr=False)

    @classmethod
    def of(cls, source: Any) -> Picture:
        """Anything `load_image` accepts (path, PIL image, array) -> Picture, or ValueError."""
        pil = load_image(source)
        digest = hashlib.blake2b(pil.tobytes() + repr(pil.size).encode(), digest_size=16).hexdigest()
        return cls(digest, pil)

    def release(self) -> None:
        """Drop the decoded pixels: the memo keeps this object as a key, and a key must not
        hold a picture of up to 36 megapixels."""
        object.__setattr__(self, "pil", None)


@dataclass
class ImageResult:
    """One forward pass over one image.

    image: (H, W, 3) uint8, the picture as the model sees it (same framing), at most DISPLAY_SIDE.
    probs: (classes,) aligned with labels. attention: (layers, heads, n, n) over n = specials +
    rows * cols tokens ("[CLS]", "r0c0", ...). rollout: (n, n), rows sum to 1.
    embeddings: (layers+1, n, d). grid: (rows, cols) of patches.
    """

    digest: str
    model_id: str
    image: np.ndarray
    labels: list[str]
    probs: np.ndarray
    attention: AttentionMaps
    rollout: np.ndarray
    embeddings: Embeddings
    grid: tuple[int, int]
    n_special: int
    pixel_values: np.ndarray = field(repr=False)  # (1, 3, h, w) float32, the model's input

    @property
    def input_size(self) -> tuple[int, int]:
        """(h, w) pixels fed to the model."""
        return int(self.pixel_values.shape[-2]), int(self.pixel_values.shape[-1])

    @property
    def predicted(self) -> str:
        return self.labels[int(np.argmax(self.probs))]

    def ranked(self) -> list[tuple[str, float]]:
        """Every class with its probability, most probable first."""
        order = np.argsort(-self.probs, kind="stable")
        return [(self.labels[i], float(self.probs[i])) for i in order]

    def cls_rollout(self) -> np.ndarray:
        """(rows, cols): how much the class token draws on each patch after all layers."""
        return self.rollout[0, self.n_special:].reshape(self.grid)


def load(model_id: str | None = None) -> loading.Loaded:
    return loading.load(TASK, model_id)


def _pixels(m: loading.Loaded, pil: Image.Image) -> torch.Tensor:
    """(1, 3, h, w) normalised pixel values on the model's device and dtype."""
    return m.processor(images=pil, return_tensors="pt")["pixel_values"].to(m.device, m.dtype)


def _display_image(m: loading.Loaded, pil: Image.Image, pixel_values: torch.Tensor) -> np.ndarray:
    """The picture framed as the model sees it: the original image when the processor only
    resizes (patch grid stretches over it exactly), else the de-normalised model input (crops)."""
    proc = m.processor
    if not getattr(proc, "do_center_crop", False):
        shown = pil.copy()
        shown.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
        return np.asarray(shown, dtype=np.uint8)
    x = pixel_values[0].float().cpu().numpy().transpose(1, 2, 0)
    if getattr(proc, "do_normalize", False):
        x = x * np.asarray(proc.image_std) + np.asarray(proc.image_mean)
    return np.clip(x * 255.0, 0, 255).astype(np.uint8)


def _patch_grid(m: loading.Loaded, pixel_values: torch.Tensor, n_tokens: int) -> tuple[tuple[int, int], int]:
    """(rows, cols) of patches and the number of special tokens (CLS, distillation) before them."""
    patch = m.model.config.patch_size
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    rows, cols = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
    n_special = n_tokens - rows * cols
    if n_special < 1:
        raise RuntimeError(f"Expected a class token before {rows}x{cols} patches, got {n_tokens} tokens.")
    return (rows, cols), n_special


def token_names(grid: tuple[int, int], n_special: int) -> list[str]:
    """["[CLS]", ("[DIST]"), "r0c0", "r0c1", ...]: one name per token of the sequence."""
    specials = ["[CLS]", "[DIST]", *[f"[SPECIAL{i}]" for i in range(2, n_special)]][:n_special]
    return specials + [f"r{r}c{c}" for r in range(grid[0]) for c in range(grid[1])]


def analyse(image: Any, model_id: str | None = None) -> ImageResult:
    """Classify `image` (path, PIL image or array) in one forward pass that also returns
    attentions and hidden states. Raises ValueError with a user message for unreadable input."""
    return _analyse(Picture.of(image), model_id)


@task_compute(TASK, memo_size=8, gpu_seconds=20)
def _analyse(picture: Picture, model_id: str | None) -> ImageResult:
    try:
        return _forward(picture.pil, picture.digest, model_id)
    finally:
        picture.release()


def _forward(pil: Image.Image, digest: str, model_id: str | None) -> ImageResult:
    m = load(model_id)
    pixel_values = _pixels(m, pil)
    with torch.inference_mode():
        out = m.model(pixel_values=pixel_values, output_attentions=True, output_hidden_states=True)
    probs = torch.softmax(out.logits[0].float(), dim=-1).cpu().numpy()
    weights = stack_attentions(out.attentions)  # (layers, heads, n, n), float16 when large
    head_mean = torch.stack([a[0].float().mean(dim=0, keepdim=True) for a in out.attentions])
    grid, n_special = _patch_grid(m, pixel_values, weights.shape[-1])
    names = token_names(grid, n_special)
    groups = names[:n_special] + [f"patch row {r}" for r in range(grid[0]) for _ in range(grid[1])]
    return ImageResult(
        digest=digest,
        model_id=m.model_id,
        image=_display_image(m, pil, pixel_values),
        labels=[m.model.config.id2label[i] for i in range(probs.shape[0])],
        probs=probs,
        attention=AttentionMaps(weights, names, names, "self"),
        rollout=attention_rollout(head_mean),  # heads averaged first (float32), then rolled out by torch
        embeddings=Embeddings(stack_hidden(out.hidden_states), names, groups),
        grid=grid,
        n_special=n_special,
        pixel_values=pixel_values.float().cpu().numpy(),
    )


def make_baseline(pixel_values: torch.Tensor, kind: str, processor: Any) -> torch.Tensor:
    """(1, 3, h, w) baseline in the model's normalised space: a black image, the image blurred
    (Gaussian, sigma = 1/16 of the side), or uniform noise in [0, 1] pixel space (seed 0)."""
    def per_channel(name: str, default: float) -> torch.Tensor:
        values = getattr(processor, name, None) or [default] * 3
        return torch.as_tensor(values, dtype=pixel_values.dtype, device=pixel_values.device).view(1, -1, 1, 1)

    mean, std = per_channel("image_mean", 0.0), per_channel("image_std", 1.0)
    if not getattr(processor, "do_normalize", True):
        mean, std = torch.zeros_like(mean), torch.ones_like(std)
    if kind == "black":
        return ((0.0 - mean) / std).expand_as(pixel_values).clone()
    if kind == "uniform noise":
        noise = torch.rand(pixel_values.shape, generator=torch.Generator().manual_seed(0))
        return (noise.to(pixel_values) - mean) / std
    if kind == "blurred":
        from scipy.ndimage import gaussian_filter

        x = pixel_values.detach().float().cpu().numpy()
        sigma = max(x.shape[-2:]) / 16.0
        blurred = gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="nearest")
        return torch.from_numpy(blurred).to(pixel_values)
    raise ValueError(f"Unknown baseline {kind!r}; choose one of {list(BASELINES)}.")


@dataclass(frozen=True)
class _Input:
    """Pixel values keyed by (image digest, model id), for memoising attributions."""

    key: tuple[str, str]
    pixel_values: np.ndarray = field(compare=False, hash=False, repr=False)


def attribute(
    image: Any,
    target: str | None = None,
    baseline: str = "black",
    steps: int = 32,
    smoothgrad_samples: int = 0,
    internal_batch_size: int = 8,
    model_id: str | None = None,
    progress: ProgressFn | None = None,
) -> Attribution:
    """Integrated gradients of P(target | image) on the pixel values, summed over channels.

    image: an `ImageResult` (its exact model input is reused) or anything `load_image` accepts.
    target defaults to the predicted class. Returns scores (h, w) at the model's input
    resolution. With `smoothgrad_samples` > 0 the attributions are averaged over that many noisy
    copies (NoiseTunnel, SmoothGrad); completeness then holds for the noisy copies, not for the
    image itself, so f(input)/f(baseline) are left out.
    """
    result = image if isinstance(image, ImageResult) else analyse(image, model_id)
    return _attribute(_Input((result.digest, result.model_id), result.pixel_values), target or result.predicted,
                      baseline, int(steps), int(smoothgrad_samples), int(internal_batch_size), progress=progress)


@task_compute(TASK, memo_size=16, gpu_seconds=15, gpu_seconds_per_step=0.5, answer=False)
def _attribute(inp, target, baseline, steps, smoothgrad_samples, internal_batch_size, progress=None):
    if steps < 1 or internal_batch_size < 1:
        raise ValueError("Steps and batch size must be at least 1.")
    m = load(inp.key[1])
    label2id = {v: int(k) for k, v in m.model.config.id2label.items()}
    if target not in label2id:
        raise ValueError(f"Unknown class {target!r} for this model.")
    target_id = label2id[target]
    pixel_values = torch.from_numpy(inp.pixel_values).to(m.device, m.dtype)
    base = make_baseline(pixel_values, baseline, m.processor)

    def prob_of_target(pv: torch.Tensor) -> torch.Tensor:
        return torch.softmax(m.model(pixel_values=pv).logits.float(), dim=-1)[:, target_id]

    noise = None
    if smoothgrad_samples > 0:  # SmoothGrad's noise: 10-20 % of the input range
        noise = dict(nt_samples=smoothgrad_samples, stdevs=0.15 * float(pixel_values.max() - pixel_values.min()))
    with torch.random.fork_rng(devices=[]), loading.fused_attention(m.model):  # no attention weights read
        torch.manual_seed(0)
        got = run_attribution(prob_of_target, pixel_values, base, "integrated_gradients", steps,
                              batch=internal_batch_size, smoothgrad=noise, progress=progress)
    attrs, f_x, f_b = got.attrs, got.output_value, got.baseline_value
    plain = smoothgrad_samples == 0
    return Attribution(
        tokens=[],
        scores=attrs[0].sum(dim=0).detach().float().cpu().numpy(),  # (h, w): channels summed
        target=target,
        method="integrated_gradients" if plain else f"Integrated gradients + SmoothGrad ({smoothgrad_samples} samples)",
        steps=steps,
        delta=got.delta,
        output_value=f_x if plain else None,
        baseline_value=f_b if plain else None,
        seconds=got.seconds,
    )


def subject(result: ImageResult, target: Any = None, contrast: Any = None):
    """What the explainers explain (demos.explain.subjects.Subject): P(class `target`, default the
    predicted one); units: the image's patches."""

    m = load(result.model_id)
    answer, label2id = st.class_answer(m, result, target)
    pv = torch.from_numpy(result.pixel_values).to(m.device, m.dtype)
    patch = m.model.config.patch_size
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    grid, k = result.grid, result.n_special
    w = result.attention.weights
    s = st.Subject(
        task=TASK, model=m.model, inputs={"pixel_values": pv}, unit_key="pixel_values",
        units=st.patch_units(result.attention.key_tokens[k:], grid, patch, tuple(pv.shape[-2:])),
        replacement=st.mean_patch(pv, grid, patch),
        run=lambda kw: m.model(pixel_values=kw["pixel_values"]),
        outcome_probs=lambda out: torch.softmax(out.logits.float(), dim=-1),
        outcome_label=lambda i: m.model.config.id2label[i],
        answer=answer,
        attention=lambda: w[-1].mean(0)[0, k:],
        rollout=lambda: result.rollout[0, k:],
    )
    return st.finish(s, contrast, label2id.get, len(label2id))
