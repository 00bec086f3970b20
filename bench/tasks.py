"""What is compared, per tab: the app's whole compute path (answer + attention + embeddings, no
attribution) and the plain transformers call that gives the same answer, on the same model
folder (or hub id) and the same input.

The plain side is what a user without the app would write: a `pipeline(...)` where transformers
still has one (default attention implementation, sdpa), `model.generate` for Marian, and the
start/end logits plus best span for extractive QA (that pipeline was removed in transformers 5).
Both sides run on the app's device and dtype.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench import inputs
from core import registry

GEN_TOKENS = {True: 8, False: 20}  # new tokens: quick / full


@dataclass
class Spec:
    """app(): the tab's compute path; make_baseline() -> the plain call (models load there);
    same(app_value, plain_value) -> do both give the same answer."""

    name: str
    app: Callable[[], Any]
    make_baseline: Callable[[], Callable[[], Any]]
    app_call: str
    baseline_call: str
    same: Callable[[Any, Any], bool]


def key(name: str) -> str:
    """Settings / registry key of a bench tab, which is named by its compute module ('speech' -> 'asr')."""
    return registry.by_demo(name).key


def demo(name: str):
    """The demo module of a tab (ImportError while its helper has not landed it yet)."""
    return importlib.import_module(f"demos.{name}")


def source(name: str) -> str:
    """Folder or hub id the app loads for this tab under the current settings."""
    from demos.runtime import loading, settings

    return loading.resolve_source(key(name), settings.current().model_for(key(name)))


def _pipeline(name: str, task: str, **kwargs: Any):
    from transformers import pipeline

    from demos.runtime import loading

    return pipeline(task, model=source(name), device=loading.device(), dtype=loading.dtype_for(key(name)), **kwargs)


def _close(a: dict, b: dict, tol: float = 1e-4) -> bool:
    return set(a) == set(b) and all(abs(a[k] - b[k]) <= tol for k in a)


def _sentiment(quick: bool) -> Spec:
    mod = demo("sentiment")

    def make():
        pipe = _pipeline("sentiment", "text-classification", top_k=None)
        return lambda: pipe(inputs.TEXT)

    def same(result, plain) -> bool:
        rows = plain[0] if isinstance(plain[0], list) else plain
        return _close(result.class_probs(), {d["label"]: d["score"] for d in rows})

    return Spec("sentiment", lambda: mod.analyse(inputs.TEXT), make, "sentiment.analyse(text)",
                'pipeline("text-classification", top_k=None)(text)', same)


def plain_qa(model, tok, question: str, context: str, max_len: int = 30) -> str:
    """Extractive QA by hand: forward, mask non-context tokens, best start <= end span, slice."""
    import torch

    batch = tok(question, context, truncation="only_second", return_offsets_mapping=True, return_tensors="pt")
    offsets = batch.pop("offset_mapping")[0]
    context_mask = torch.tensor([s == 1 for s in batch.sequence_ids(0)])
    with torch.inference_mode():
        out = model(**{k: v.to(model.device) for k, v in batch.items()})
    start = out.start_logits[0].float().cpu().masked_fill(~context_mask, -float("inf"))  # (n,)
    end = out.end_logits[0].float().cpu().masked_fill(~context_mask, -float("inf"))
    idx = torch.arange(start.shape[0])
    valid = (idx[None, :] >= idx[:, None]) & (idx[None, :] - idx[:, None] < max_len)  # (n, n) start <= end
    table = (start[:, None] + end[None, :]).masked_fill(~valid, -float("inf"))
    s, e = divmod(int(table.argmax()), table.shape[1])
    return context[int(offsets[s, 0]) : int(offsets[e, 1])]


def _qa(quick: bool) -> Spec:
    mod = demo("qa")

    def make():
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        from demos.runtime import loading

        model = AutoModelForQuestionAnswering.from_pretrained(source("qa"), dtype=loading.dtype_for("qa"))
        model.to(loading.device()).eval()
        tok = AutoTokenizer.from_pretrained(source("qa"))
        return lambda: plain_qa(model, tok, inputs.QUESTION, inputs.CONTEXT)

    return Spec("qa", lambda: mod.answer(inputs.QUESTION, inputs.CONTEXT), make, "qa.answer(question, context)",
                "QA model forward + best span (the QA pipeline is gone in transformers 5)",
                lambda r, p: r.answer == p)


def _translation(quick: bool) -> Spec:
    mod = demo("translation")

    def make():
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        from demos.runtime import loading

        model = AutoModelForSeq2SeqLM.from_pretrained(source("translation"), dtype=loading.dtype_for("translation"))
        model.to(loading.device()).eval()
        tok = AutoTokenizer.from_pretrained(source("translation"))

        def run() -> str:
            batch = tok(inputs.SOURCE, return_tensors="pt").to(model.device)
            with torch.inference_mode():
                return tok.decode(model.generate(**batch)[0], skip_special_tokens=True)

        return run

    return Spec("translation", lambda: mod.analyse(inputs.SOURCE), make, "translation.analyse(text)",
                "model.generate(**tokenizer(text)) + decode", lambda r, p: r.translation == p)


def _generation(quick: bool) -> Spec:
    mod = demo("generation")
    n = GEN_TOKENS[quick]

    def make():
        pipe = _pipeline("generation", "text-generation")
        return lambda: pipe(inputs.PROMPT, max_new_tokens=n, do_sample=False)[0]["generated_text"]

    return Spec("generation", lambda: mod.generate(inputs.PROMPT, n), make, f"generation.generate(prompt, {n})",
                f'pipeline("text-generation")(prompt, max_new_tokens={n}, do_sample=False)', lambda r, p: r.text == p)


def _image(quick: bool) -> Spec:
    mod = demo("image")
    path = str(inputs.IMAGE)

    def make():
        pipe = _pipeline("image", "image-classification")
        return lambda: pipe(path)

    return Spec(
        "image",
        lambda: mod.analyse(path),
        make,
        "image.analyse(path)",
        'pipeline("image-classification")(path)',
        lambda r, p: [name for name, _ in r.ranked()[: mod.TOP_K]] == [d["label"] for d in p],
    )


def speech_input(quick: bool) -> tuple[int, np.ndarray]:
    return inputs.speech(2.0 if quick else 4.0)


def _speech(quick: bool) -> Spec:
    mod = demo("speech")
    from demos.inputs import audio

    clip = speech_input(quick)
    samples = audio.normalise(clip).samples

    def make():
        pipe = _pipeline("speech", "automatic-speech-recognition")
        return lambda: pipe(samples.copy())

    return Spec(
        "speech",
        lambda: mod.transcribe(clip),
        make,
        "speech.transcribe((rate, int16 samples))",
        'pipeline("automatic-speech-recognition")(float32 samples at 16 kHz)',
        lambda r, p: r.text == p["text"].strip(),
    )


def _clip(quick: bool) -> Spec:
    mod = demo("clip")
    path = str(inputs.IMAGE)

    def make():
        pipe = _pipeline("clip", "zero-shot-image-classification")
        return lambda: pipe(path, candidate_labels=inputs.LABELS, hypothesis_template="{}")

    return Spec(
        "clip",
        lambda: mod.analyse(path, "\n".join(inputs.LABELS)),
        make,
        "clip.analyse(path, texts)",
        'pipeline("zero-shot-image-classification")(path, labels, hypothesis_template="{}")',
        lambda r, p: _close(r.text_probs(), {d["label"]: d["score"] for d in p}),
    )


def _explorer(quick: bool) -> Spec:
    mod = demo("explorer")
    text = "\n".join(inputs.SENTENCES)

    def make():
        from transformers import AutoModel, AutoTokenizer

        from demos.runtime import loading

        model = AutoModel.from_pretrained(source("explorer"), dtype=loading.dtype_for(key("explorer")))
        model.to(loading.device()).eval()
        tok = AutoTokenizer.from_pretrained(source("explorer"))

        def run() -> np.ndarray:  # what sentence-transformers does: mean pooling, then cosine
            import torch

            batch = tok(inputs.SENTENCES, padding=True, truncation=True, return_tensors="pt").to(model.device)
            with torch.inference_mode():
                hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            unit = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
            return (unit @ unit.T).cpu().numpy()

        return run

    return Spec(
        "explorer",
        lambda: mod.analyse(text),
        make,
        "explorer.analyse(sentences)",
        "AutoModel forward + mean pooling + cosine (as sentence-transformers does)",
        lambda r, p: bool(np.allclose(r.similarity, p, atol=1e-4)),
    )


BUILDERS: dict[str, Callable[[bool], Spec]] = {
    "sentiment": _sentiment,
    "qa": _qa,
    "translation": _translation,
    "generation": _generation,
    "image": _image,
    "speech": _speech,
    "clip": _clip,
    "explorer": _explorer,
}
TASKS: tuple[str, ...] = tuple(t.demo for t in registry.TASKS if t.demo in BUILDERS)  # bench tabs, registry order


def spec(name: str, quick: bool) -> Spec:
    """The comparison for tab `name`; ImportError when its demo module cannot be imported."""
    return BUILDERS[name](quick)
