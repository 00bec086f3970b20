"""The task side of activation patching and steering: for each task, what the clean and the corrupted
inputs are and what is measured (`PAIRS`: a `Pair` per task result), and steering of generation
(`run_steer`). The patching itself (hooks, batched passes, grids) is demos.explain.patching.

    clean                                  corrupted                       metric
    generation: the prompt                 another prompt                  logit(A) - logit(B), next token
    sentiment:  the text                   another text (a word flipped)   logit(A) - logit(B), classes
    image:      the image                  the image, a region blurred     logit(A) - logit(B), classes
    translation: the source                another source (a word swapped) logit(A) - logit(B), one target
                                                                           token, the translation fed in
    clip:       a description              another description             the image's match score
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from core.patching_types import SteerResult
from demos import adapters
from demos.explain import tasks
from demos.explain.subjects import resolve_outcome, step_index, vocab_lookup
from demos.runtime import loading


@dataclass
class Pair:
    """Clean and corrupted inputs of one model, ready to patch.

    clean / corrupted: batch-1 keyword inputs of `run`; run(inputs of batch b) -> (b, K) outcome logits
    ((b, 1) when `single`: the metric is that one score, not A against B); stack: the adapter stack
    patched (None = the model's main one); clean_units / corrupted_units: comparable ids of the units
    (token ids) for the alignment; *_labels: their names; changed_mark: appended to the label of a
    changed position instead of 'clean→corrupted' (image: ' (blurred)'); groups: the position columns
    when several positions are copied together (image: blocks of patches). label(k): outcome k's name;
    answer: A when fixed (else the clean run's top outcome); what: the metric in words.
    """

    model: nn.Module
    clean: dict[str, torch.Tensor]
    corrupted: dict[str, torch.Tensor]
    run: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    clean_units: list
    corrupted_units: list
    clean_labels: list[str]
    corrupted_labels: list[str]
    label: Callable[[int], str] = str
    answer: int | None = None
    single: bool = False
    stack: str | None = None
    what: str = "logit(A) − logit(B)"
    clean_input: str = ""
    corrupted_input: str = ""
    changed_mark: str = ""
    groups: list[tuple[str, list[int]]] | None = None  # columns of positions copied together (None: one each)
    picture: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def batch(self, b: int) -> dict[str, torch.Tensor]:
        """The corrupted inputs expanded to b rows (views, no copies)."""
        return {k: v.expand(b, *v.shape[1:]) for k, v in self.corrupted.items()}


def _text(corrupted: Any, example: str) -> str:
    text = "" if corrupted is None else str(corrupted)
    if not text.strip():
        raise ValueError(f"Type the corrupted input: the clean one with a word changed (e.g. {example!r}).")
    return text


def _load(task: str, result: Any) -> tuple[Any, loading.Loaded]:
    mod = tasks.module(task)
    return mod, mod.load(result.model_id)


def _generation(result: Any, corrupted: Any, target: Any) -> Pair:
    from demos.inputs.text import model_max_length, token_labels

    _, m = _load("generation", result)
    tok = m.processor
    clean = torch.tensor([result.ids[: result.n_prompt]], device=m.device)
    bad = tok(_text(corrupted, "The Colosseum is in"), return_tensors="pt")["input_ids"].to(m.device)
    if bad.shape[1] > model_max_length(tok, m.model):
        raise ValueError("The corrupted prompt is longer than the model can read.")
    answer = (
        None
        if target in (None, "")
        else resolve_outcome(target, tok.decode, m.model.config.vocab_size, vocab_lookup(tok))
    )
    return Pair(
        m.model,
        {"input_ids": clean},
        {"input_ids": bad},
        lambda kw: m.model(input_ids=kw["input_ids"], use_cache=False, logits_to_keep=1).logits[:, -1],
        clean[0].tolist(),
        bad[0].tolist(),
        token_labels(tok, clean[0].tolist()),
        token_labels(tok, bad[0].tolist()),
        label=lambda i: tok.decode([i]),
        answer=answer,
        what="logit(A) − logit(B) of the next token after the prompt",
        clean_input=result.prompt,
        corrupted_input=str(corrupted),
    )


def _classes(m: loading.Loaded, target: Any) -> tuple[Callable[[int], str], int | None]:
    id2label = {int(k): v for k, v in m.model.config.id2label.items()}
    label2id = {v: k for k, v in id2label.items()}
    answer = None if target in (None, "") else resolve_outcome(target, id2label.get, len(id2label), label2id.get)
    return id2label.__getitem__, answer


def _sentiment(result: Any, corrupted: Any, target: Any) -> Pair:
    from demos.inputs.text import encode

    _, m = _load("sentiment", result)
    clean = encode(m.processor, m.model, result.text)
    bad = encode(m.processor, m.model, _text(corrupted, "This movie was awful."))
    label, answer = _classes(m, target)
    return Pair(
        m.model,
        {"input_ids": clean.ids, "attention_mask": clean.mask},
        {"input_ids": bad.ids, "attention_mask": bad.mask},
        lambda kw: m.model(input_ids=kw["input_ids"], attention_mask=kw["attention_mask"]).logits,
        clean.ids[0].tolist(),
        bad.ids[0].tolist(),
        clean.tokens,
        bad.tokens,
        label=label,
        answer=answer,
        what="logit(A) − logit(B) of the two classes",
        clean_input=result.text,
        corrupted_input=str(corrupted),
    )


GROUPS_PER_SIDE = 4  # an image's residual and MLP columns: [CLS] and at most 4 x 4 blocks of patches (ViT-base: 4 x 4
# blocks of 4 x 4 patches: 17 columns a layer instead of 197, each a full forward pass of the image)
_REGION = re.compile(r"^r(\d+)(?:-(\d+))?c(\d+)(?:-(\d+))?$")
REGION_HELP = (
    "Name the region to blur: centre, all, top, bottom, left or right, or patches such as r1-2 c0-3 "
    "(rows 1 to 2, columns 0 to 3) or r0c0, r1c2"
)


def region(spec: Any, grid: tuple[int, int]) -> list[int]:
    """Patch indices (row * cols + col) of a region of the (rows, cols) patch grid named by `spec`."""
    rows, cols = grid
    text = str(spec or "centre").strip().lower()
    qr, qc = max(1, round(rows / 4)) if rows > 2 else 0, max(1, round(cols / 4)) if cols > 2 else 0
    named = {
        "centre": (qr, rows - qr, qc, cols - qc),
        "all": (0, rows, 0, cols),
        "top": (0, rows // 2, 0, cols),
        "bottom": (rows // 2, rows, 0, cols),
        "left": (0, rows, 0, cols // 2),
        "right": (0, rows, cols // 2, cols),
    }
    named["center"] = named["middle"] = named["centre"]
    boxes = []
    if text in named:
        r0, r1, c0, c1 = named[text]
        boxes.append((r0, r1 - 1, c0, c1 - 1))
    else:
        for part in filter(None, (p.replace(" ", "") for p in text.split(","))):
            match = _REGION.match(part)
            if match is None:
                raise ValueError(f"Cannot read {part!r}. {REGION_HELP}; the grid has {rows} rows and {cols} columns.")
            a, b, c, d = (None if g is None else int(g) for g in match.groups())
            boxes.append((a, a if b is None else b, c, c if d is None else d))
    chosen = sorted(
        {
            r * cols + c
            for r0, r1, c0, c1 in boxes
            for r in range(r0, r1 + 1)
            for c in range(c0, c1 + 1)
            if 0 <= r < rows and 0 <= c < cols
        }
    )
    if not chosen:
        raise ValueError(f"That region holds no patch. {REGION_HELP}; the grid has {rows} rows and {cols} columns.")
    return chosen


def patch_blocks(grid: tuple[int, int], specials: list[str]) -> list[tuple[str, list[int]]]:
    """Columns of an image's grids: each special token ([CLS]...) alone, then blocks of patches (token
    positions after the specials, row by row), at most GROUPS_PER_SIDE blocks a side."""
    rows, cols = grid
    k, side = len(specials), -(-max(rows, cols) // GROUPS_PER_SIDE)
    out = [(f"{i} · {name}", [i]) for i, name in enumerate(specials)]
    for r in range(0, rows, side):
        for c in range(0, cols, side):
            r1, c1 = min(r + side, rows) - 1, min(c + side, cols) - 1
            label = f"r{r}-{r1} c{c}-{c1}" if side > 1 else f"r{r}c{c}"
            out.append(
                (f"{len(out)} · {label}", [k + i * cols + j for i in range(r, r1 + 1) for j in range(c, c1 + 1)])
            )
    return out


def _shown(pv: torch.Tensor, processor: Any) -> np.ndarray:
    """(H, W, 3) uint8 of normalised pixel values (1, 3, H, W), enlarged by a whole factor when small."""
    x = pv[0].float().cpu().numpy().transpose(1, 2, 0)
    if getattr(processor, "do_normalize", False):
        x = x * np.asarray(processor.image_std) + np.asarray(processor.image_mean)
    x = np.clip(x * 255.0, 0, 255).astype(np.uint8)
    zoom = max(1, -(-224 // max(x.shape[:2])))  # small model inputs shown at least 224 pixels wide, pixels kept
    return x.repeat(zoom, 0).repeat(zoom, 1)


def _image(result: Any, corrupted: Any, target: Any) -> Pair:
    mod, m = _load("image", result)
    pv = torch.from_numpy(result.pixel_values).to(m.device, m.dtype)
    patch = m.model.config.patch_size
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    (rows, cols), k = result.grid, result.n_special
    chosen = region(corrupted, result.grid)
    mask = torch.zeros(rows * cols, dtype=torch.bool, device=m.device)
    mask[chosen] = True
    pixels = torch.zeros(pv.shape[-2:], dtype=torch.bool, device=m.device)
    pixels[: rows * patch, : cols * patch] = (
        mask.view(rows, cols).repeat_interleave(patch, 0).repeat_interleave(patch, 1)
    )
    bad = torch.where(pixels, mod.make_baseline(pv, "blurred", m.processor), pv)
    names = list(result.attention.key_tokens)
    units = [f"{n} blurred" if i - k in chosen else n for i, n in enumerate(names)]
    label, answer = _classes(m, target)
    return Pair(
        m.model,
        {"pixel_values": pv},
        {"pixel_values": bad},
        lambda kw: m.model(pixel_values=kw["pixel_values"]).logits,
        names,
        units,
        names,
        names,
        label=label,
        answer=answer,
        changed_mark=" (blurred)",
        groups=patch_blocks(result.grid, names[:k]),
        what="logit(A) − logit(B) of the two classes",
        clean_input="the image",
        corrupted_input=f"the image with {len(chosen)} of {rows * cols} patches blurred ({corrupted or 'centre'})",
        picture=_shown(bad, m.processor),
    )


def _translation(result: Any, corrupted: Any, target: Any) -> Pair:
    from demos.inputs.text import encode

    _, m = _load("translation", result)
    tok = m.processor
    step = step_index(target, len(result.target_tokens))
    clean, bad = encode(tok, m.model, result.text), encode(tok, m.model, _text(corrupted, "The garden is small."))
    dec = torch.tensor([result.generated[: step + 1]], device=m.device)  # the clean translation fed in up to `step`
    return Pair(
        m.model,
        {"input_ids": clean.ids, "attention_mask": clean.mask, "decoder_input_ids": dec},
        {"input_ids": bad.ids, "attention_mask": bad.mask, "decoder_input_ids": dec},
        lambda kw: m.model(**kw, use_cache=False, logits_to_keep=1).logits[:, -1],
        clean.ids[0].tolist(),
        bad.ids[0].tolist(),
        clean.tokens,
        bad.tokens,
        label=tok.convert_ids_to_tokens,
        answer=int(result.target_ids[step]),
        stack="encoder",
        what=f"logit(A) − logit(B) of target token {step}, the translation fed in up to it (teacher forced)",
        clean_input=result.text,
        corrupted_input=str(corrupted),
    )


def _clip(result: Any, corrupted: Any, target: Any) -> Pair:
    from demos.inputs.images import load_image
    from demos.inputs.text import token_labels

    mod, m = _load("clip", result)
    texts = list(result.texts)
    index = {t: i for i, t in enumerate(texts)}
    a = (
        int(np.argmax(result.logits[0]))
        if target in (None, "")
        else resolve_outcome(target, texts.__getitem__, len(texts), index.get)
    )
    pv = m.processor.image_processor(images=[load_image(result.sources[0])], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        image = m.model.get_image_features(pixel_values=pv.to(m.device, m.dtype)).pooler_output
    adapter = adapters.adapter_for(m.model)

    def enc(text: str) -> dict[str, torch.Tensor]:  # as the answer reads it (SigLIP: padded to its limit)
        return mod._text_inputs(m, [text])

    def run(kw: dict[str, torch.Tensor]) -> torch.Tensor:  # (b, 1) the image's match logit with each row's text
        t = m.model.get_text_features(**kw).pooler_output
        return adapters.pair_logits(m.model, adapter, image, t).T

    clean, bad = enc(texts[a]), enc(_text(corrupted, "a photo of a dog"))
    ids, bad_ids = clean["input_ids"][0].tolist(), bad["input_ids"][0].tolist()
    tok = m.processor.tokenizer
    return Pair(
        m.model,
        clean,
        bad,
        run,
        ids,
        bad_ids,
        token_labels(tok, ids),
        token_labels(tok, bad_ids),
        single=True,
        stack="text",
        what="the image's match logit with the text (logit scale × cosine similarity, + logit bias for SigLIP)",
        clean_input=texts[a],
        corrupted_input=str(corrupted),
    )


# task -> Pair builder(result, corrupted, target). Tasks without a row give their reason in core.explainers.PATCH.
PAIRS: dict[str, Callable[[Any, Any, Any], Pair]] = {
    "generation": _generation,
    "sentiment": _sentiment,
    "image": _image,
    "translation": _translation,
    "clip": _clip,
}


# ---- steering (generation) ----


@contextmanager
def added(block: nn.Module, vector: torch.Tensor | None) -> Iterator[None]:
    """Within the block, `vector` (D,) is added to `block`'s output at every position (None: nothing)."""
    if vector is None:
        yield
        return

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + vector.to(output[0].dtype), *output[1:])
        return output + vector.to(output.dtype)

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _states(m: loading.Loaded, found: list[nn.Module], ids: torch.Tensor) -> list[torch.Tensor]:
    """Each block's output (1, n, D) on `ids` (hooks already in place apply)."""
    states: list = [None] * len(found)

    def keep(i: int):
        def hook(module, args, output):
            states[i] = (output[0] if isinstance(output, tuple) else output).detach()

        return hook

    handles = [b.register_forward_hook(keep(i)) for i, b in enumerate(found)]
    try:
        with torch.no_grad():
            m.model(input_ids=ids, use_cache=False, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    return states


def _word_states(m: loading.Loaded, found: list[nn.Module], layer: int, text: str, what: str) -> torch.Tensor:
    """The states (k, D) after block `layer` at the text's own k tokens, read after a start token.

    The text is read after the tokenizer's start token (its BOS, else its end-of-text: GPT-2's document
    boundary), as a prompt's words are read after its first position. The first position of a sequence holds a
    state many times longer than the others (an "attention sink": about 24,000 against 180 in SmolLM2), so a mean
    that took it in would be the sink's, not the word's, and one-token and two-token words would differ by it."""
    if not str(text or "").strip():
        raise ValueError(f"Type the text to steer {what} (e.g. 'Love' / 'Hate').")
    tok = m.processor
    ids = tok(str(text), return_tensors="pt")["input_ids"].to(m.device)
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if start is not None and int(ids[0, 0]) != start:
        ids = torch.cat([torch.tensor([[start]], device=m.device), ids], dim=1)
    return _states(m, found, ids)[layer][0, 1:]


def _continue(mod: Any, m: loading.Loaded, prompt: torch.Tensor, n: int) -> list[int]:
    with torch.no_grad():
        out = m.model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=mod.pad_id(m),
        )
    return out[0, prompt.shape[1] :].tolist()


def _lens(
    m: loading.Loaded, adapter: Any, found: list[nn.Module], prompt: torch.Tensor
) -> tuple[list[str], np.ndarray]:
    """Top next token after the prompt read from each block's output (final norm + unembedding), labelled as the
    patching grids label tokens (a leading space as ␣)."""
    from demos.inputs.text import token_labels

    tokens, probs = [], []
    for state in _states(m, found, prompt):
        with torch.no_grad():
            p = torch.softmax(adapters.final_logits(m.model, adapter, state[:, -1:])[0, -1].float(), -1)
        tokens.append(token_labels(m.processor, [int(p.argmax())])[0])
        probs.append(float(p.max()))
    return tokens, np.array(probs, dtype=np.float32)


def steer(
    task: str,
    result: Any,
    toward: str = "Love",
    away: str = "Hate",
    layer: int | None = None,
    strength: float = 0.5,
    max_new_tokens: int | None = None,
) -> SteerResult:
    """Greedy continuations of `result`'s prompt with and without a push added after block `layer` (default the
    middle one) at every position: direction = mean state of `toward` - mean state of `away` after that block,
    scaled to `strength` times the length of a typical state there (the median length of the prompt's states after
    its first position), so that strength 1 pushes as far as a whole state, on any model and at any layer."""
    from demos.inputs.text import piece_texts

    mod, m = _load(task, result)
    adapter = adapters.adapter_for(m.model)
    found = adapters.blocks(m.model, adapter)
    layer = len(found) // 2 if layer in (None, "") else int(layer)
    if not 0 <= layer < len(found):
        raise ValueError(f"Layer {layer} does not exist; this model has layers 0 to {len(found) - 1}.")
    n = result.steps if max_new_tokens in (None, "") else int(max_new_tokens)
    if not 1 <= n <= mod.MAX_NEW_TOKENS:
        raise ValueError(f"Max new tokens must be between 1 and {mod.MAX_NEW_TOKENS}.")
    pos = _word_states(m, found, layer, toward, "toward")
    neg = _word_states(m, found, layer, away, "away from")
    direction = pos.mean(0) - neg.mean(0)
    prompt = torch.tensor([result.ids[: result.n_prompt]], device=m.device)
    after_first = _states(m, found, prompt)[layer][0, 1:]
    typical = float((after_first if len(after_first) else torch.cat([pos, neg])).norm(dim=-1).median())
    length = float(direction.norm())
    vector = direction * (float(strength) * typical / length) if length > 0 else torch.zeros_like(direction)
    runs = {}
    for name, push in (("plain", None), ("steered", vector)):
        with added(found[layer], push):
            runs[name] = (_continue(mod, m, prompt, n), *_lens(m, adapter, found, prompt))
    before = prompt[0].tolist()
    return SteerResult(
        prompt=result.prompt,
        toward=str(toward),
        away=str(away),
        layer=layer,
        strength=float(strength),
        norm=length,
        typical=typical,
        plain=piece_texts(m.processor, runs["plain"][0], before),
        steered=piece_texts(m.processor, runs["steered"][0], before),
        lens_layers=[f"L{i}" for i in range(len(found))],
        lens_plain=runs["plain"][1],
        lens_steered=runs["steered"][1],
        lens_plain_probs=runs["plain"][2],
        lens_steered_probs=runs["steered"][2],
    )


def run_steer(
    task: str,
    result: Any,
    toward: str = "Love",
    away: str = "Hate",
    layer: int | None = None,
    strength: float = 0.5,
    max_new_tokens: int | None = None,
) -> SteerResult:
    return loading.one_at_a_time(task)(steer)(task, result, toward, away, layer, strength, max_new_tokens)
