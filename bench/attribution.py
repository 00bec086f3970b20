"""Attribution: the app's attribution call against Captum called directly with its defaults
(no internal_batch_size, i.e. all steps in one batch) on the same model object, the same forward
function, the same layer or input, the same baseline and the same number of steps.

The app's side follows the tab's main result, as in the UI: `prepare()` (untimed) computes it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench import inputs
from bench.tasks import GEN_TOKENS, demo, key

IG = "integrated_gradients"


@dataclass
class AttrSpec:
    """prepare() -> the main result; app(prepared, steps) -> Attribution;
    make_captum() -> run(prepared, steps) -> (scores, |delta|) with plain Captum."""

    name: str
    prepare: Callable[[], Any]
    app: Callable[[Any, int], Any]
    make_captum: Callable[[], Callable[[Any, int], tuple[torch.Tensor, float]]]
    app_call: str
    captum_call: str


def model_id(name: str) -> str:
    """The model id the UI passes (the picker's value): calls made the UI's way share memo entries."""
    from demos.runtime import settings

    return settings.current().model_for(key(name))


def pad_baseline(ids: torch.Tensor, tok, pad_id: int | None = None) -> torch.Tensor:
    """(1, n) ids with every ordinary token replaced by the pad id (special tokens kept)."""
    pad = tok.pad_token_id if pad_id is None else pad_id
    keep = torch.isin(ids, torch.tensor(sorted(set(tok.all_special_ids) - {pad}), device=ids.device))
    return torch.where(keep, ids, torch.full_like(ids, pad))


def _lig(forward, layer, ids, base, extra, steps) -> tuple[torch.Tensor, float]:
    from captum.attr import LayerIntegratedGradients

    attrs, delta = LayerIntegratedGradients(forward, layer).attribute(
        ids, baselines=base, additional_forward_args=extra, n_steps=steps, return_convergence_delta=True
    )
    return attrs.sum(-1)[0].detach(), float(delta.abs().max())


def _ig(forward, x, base, steps) -> tuple[torch.Tensor, float]:
    from captum.attr import IntegratedGradients

    attrs, delta = IntegratedGradients(forward).attribute(
        x, baselines=base, n_steps=steps, return_convergence_delta=True
    )
    return attrs.detach(), float(delta.abs().max())


def _sentiment(quick: bool) -> AttrSpec:
    mod = demo("sentiment")

    def make():
        m = mod.load()

        def run(result, steps):
            target = int(np.argmax(result.probs))
            batch = m.processor(inputs.TEXT, return_tensors="pt").to(m.device)
            ids, mask = batch["input_ids"], batch["attention_mask"]

            def prob(x, mask):
                logits = m.model(input_ids=x, attention_mask=mask.expand(x.shape[0], -1)).logits
                return torch.softmax(logits.float(), dim=-1)[:, target]

            return _lig(prob, m.model.get_input_embeddings(), ids, pad_baseline(ids, m.processor), (mask,), steps)

        return run

    return AttrSpec(
        "sentiment",
        lambda: mod.analyse(inputs.TEXT, model_id("sentiment")),
        lambda r, steps: mod.attribute(inputs.TEXT, None, IG, steps, r.model_id),
        make,
        "sentiment.attribute(text, steps=n)",
        "LayerIntegratedGradients(prob, embeddings)",
    )


def _qa(quick: bool) -> AttrSpec:
    mod = demo("qa")

    def make():
        m = mod.load()

        def run(result, steps):
            enc = mod.encode(m, inputs.QUESTION, inputs.CONTEXT)
            forward = mod._prob_fn(m, enc, "start", result.start_index)  # the app's own forward function
            base = pad_baseline(enc.ids, m.processor)
            return _lig(forward, m.model.get_input_embeddings(), enc.ids, base, (enc.mask, *enc.extra.values()), steps)

        return run

    return AttrSpec(
        "qa",
        lambda: mod.answer(inputs.QUESTION, inputs.CONTEXT, model_id("qa")),
        lambda r, steps: mod.attribute(inputs.QUESTION, inputs.CONTEXT, "start", IG, steps, r.model_id),
        make,
        'qa.attribute(q, c, "start", steps=n)',
        "LayerIntegratedGradients(P(start), embeddings)",
    )


def _generation(quick: bool) -> AttrSpec:
    mod = demo("generation")
    n = GEN_TOKENS[quick]

    def make():
        m = mod.load()

        def run(result, steps):
            pos = len(result.ids) - 1
            prefix = torch.tensor([result.ids[:pos]], device=m.device)
            target = int(result.ids[pos])

            def prob(x):
                return torch.softmax(m.model(input_ids=x).logits[:, -1].float(), dim=-1)[:, target]

            base = pad_baseline(prefix, m.processor, mod.pad_id(m))
            return _lig(prob, m.model.get_input_embeddings(), prefix, base, (), steps)

        return run

    return AttrSpec(
        "generation",
        lambda: mod.generate(inputs.PROMPT, n, model_id=model_id("generation")),
        lambda r, steps: mod.attribute(r.ids, len(r.ids) - 1, IG, steps, r.model_id),
        make,
        "generation.attribute(ids, last, steps=n)",
        "LayerIntegratedGradients(P(next), embeddings)",
    )


def _translation(quick: bool) -> AttrSpec:
    mod = demo("translation")

    def make():
        m = mod.load()
        model, tok = m.model, m.processor

        def run(result, steps):
            batch = tok(inputs.SOURCE, return_tensors="pt").to(m.device)
            ids, mask = batch["input_ids"], batch["attention_mask"]
            prefix = torch.tensor([result.generated[:1]], device=m.device)
            target = int(result.target_ids[0])
            encoder = model.get_encoder()
            scale = getattr(encoder, "embed_scale", 1.0)
            with torch.no_grad():
                x = encoder.embed_tokens(ids) * scale
                base = encoder.embed_tokens(pad_baseline(ids, tok)) * scale

            def prob(embeds):
                k = embeds.shape[0]
                logits = model(
                    inputs_embeds=embeds, attention_mask=mask.expand(k, -1), decoder_input_ids=prefix.expand(k, -1)
                ).logits
                return torch.softmax(logits[:, -1].float(), dim=-1)[:, target]

            attrs, delta = _ig(prob, x, base, steps)
            return attrs.sum(-1)[0], delta

        return run

    return AttrSpec(
        "translation",
        lambda: mod.analyse(inputs.SOURCE, model_id("translation")),
        lambda r, steps: mod.attribute(inputs.SOURCE, 0, IG, steps, r.model_id),
        make,
        "translation.attribute(text, 0, steps=n)",
        "IntegratedGradients(P(token 0), source embeddings)",
    )


def _image(quick: bool) -> AttrSpec:
    mod = demo("image")
    path = str(inputs.IMAGE)

    def make():
        m = mod.load()

        def run(result, steps):
            pv = torch.from_numpy(result.pixel_values).to(m.device, m.dtype)
            target = int(np.argmax(result.probs))

            def prob(x):
                return torch.softmax(m.model(pixel_values=x).logits.float(), dim=-1)[:, target]

            attrs, delta = _ig(prob, pv, mod.make_baseline(pv, "black", m.processor), steps)
            return attrs.sum(1)[0], delta

        return run

    return AttrSpec(
        "image",
        lambda: mod.analyse(path, model_id("image")),
        lambda r, steps: mod.attribute(r, None, "black", steps),
        make,
        'image.attribute(result, baseline="black", steps=n)',
        "IntegratedGradients(P(class), pixel_values)",
    )


def _clip(quick: bool) -> AttrSpec:
    mod = demo("clip")
    path = str(inputs.IMAGE)

    def make():
        m = mod.load()
        from demos.inputs.images import load_image

        def run(result, steps):
            with torch.no_grad():
                pv = m.processor.image_processor(images=[load_image(path)], return_tensors="pt")["pixel_values"].to(
                    m.device, m.dtype
                )
                img = m.model.visual_projection(m.model.vision_model(pixel_values=pv).pooler_output)
                img = img / img.norm(dim=-1, keepdim=True)
            tok = m.processor.tokenizer
            batch = tok(result.best_text, return_tensors="pt").to(m.device)
            ids, mask = batch["input_ids"], batch["attention_mask"]
            pool = mod._pool_index(m, ids)

            def similarity(x, mask):
                hidden = m.model.text_model(input_ids=x, attention_mask=mask.expand(x.shape[0], -1)).last_hidden_state
                emb = m.model.text_projection(hidden[:, pool])
                return ((emb / emb.norm(dim=-1, keepdim=True)) * img).sum(-1).float()

            return _lig(
                similarity, m.model.text_model.get_input_embeddings(), ids, pad_baseline(ids, tok), (mask,), steps
            )

        return run

    return AttrSpec(
        "clip",
        lambda: mod.analyse(path, "\n".join(inputs.LABELS), model_id("clip")),
        lambda r, steps: mod.attribute_text(path, r.best_text, IG, steps, r.model_id),
        make,
        "clip.attribute_text(path, best text, steps=n)",
        "LayerIntegratedGradients(cos, text embeddings)",
    )


BUILDERS: dict[str, Callable[[bool], AttrSpec]] = {
    "sentiment": _sentiment,
    "qa": _qa,
    "translation": _translation,
    "generation": _generation,
    "image": _image,
    "clip": _clip,
}
NO_ATTRIBUTION = {
    "speech": "the speech tab has no attribution (it shows cross-attention alignment instead)",
    "explorer": "the encoder explorer has no attribution (it compares sentence embeddings)",
}


def attr_spec(name: str, quick: bool) -> AttrSpec:
    return BUILDERS[name](quick)
