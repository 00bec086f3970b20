"""Shared by test_lens.py and test_attention_steps.py: one real result per task (from the task's
normal compute function, on the tiny models) and the model's own full forward pass over the same
input, with forward pre-hooks capturing what enters a module (the out-projection of attention)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self

import torch

from demos.explain import tasks

ROOT = Path(__file__).resolve().parent.parent
IMAGE = str(ROOT / "assets" / "images" / "chelsea_cat.jpg")
IMAGE2 = str(ROOT / "assets" / "images" / "rocket.jpg")
AUDIO = str(ROOT / "assets" / "audio" / "quick_brown_fox.wav")
CLIP_TEXTS = "a photo of a cat\na rocket on a launch pad\na cup of coffee"
QA_PAIR = ("When was the tower completed?", "The tower was designed by Gustave Eiffel. It was completed in March 1889 in Paris.")


def _audio():
    import soundfile as sf

    samples, rate = sf.read(AUDIO, dtype="int16")
    return rate, samples


def make_result(task: str) -> Any:
    """The task's result for a fixed input, from its normal compute function."""
    from demos import clip, explorer, generation, image, qa, sentiment, speech, translation

    makers: dict[str, Callable[[], Any]] = {
        "generation": lambda: generation.generate("The quick brown fox", max_new_tokens=6),
        "sentiment": lambda: sentiment.analyse("The plot made no sense and the dialogue was painfully dull."),
        "qa": lambda: qa.answer(*QA_PAIR),
        "translation": lambda: translation.analyse("The house is small, but the garden is beautiful."),
        "image": lambda: image.analyse(IMAGE),
        "asr": lambda: speech.transcribe(_audio()),
        "clip": lambda: clip.analyse([IMAGE, IMAGE2], CLIP_TEXTS),
        "explorer": lambda: explorer.analyse("A man is playing a guitar.\nThe cat sits on the mat today."),
    }
    if task not in makers:
        raise AssertionError(f"No test input for task {task!r}: add one to tests/lens_support.py")
    return makers[task]()


def loaded(task: str, result: Any):

    return tasks.module(task).load(result.model_id)


def full_pass(
    task: str, result: Any, inputs_of: list[Any] | None = None, outputs_of: list[Any] | None = None
) -> tuple[Any, list[torch.Tensor], list[torch.Tensor]]:
    """The whole model over the result's input (output_attentions=True), with a forward pre-hook
    on each module of `inputs_of` recording its first input and a forward hook on each module of
    `outputs_of` recording its output. Returns (model output, inputs, outputs), in module order."""
    m = loaded(task, result)
    model, tok = m.model, m.processor
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}

    def keep(store: dict, i: int, value: torch.Tensor) -> None:
        store.setdefault(i, value.detach())

    handles = [mod.register_forward_pre_hook(lambda _m, args, i=i: keep(inputs, i, args[0])) for i, mod in enumerate(inputs_of or [])]
    handles += [mod.register_forward_hook(lambda _m, _a, out, i=i: keep(outputs, i, out)) for i, mod in enumerate(outputs_of or [])]
    try:
        with torch.inference_mode():
            if task == "generation":
                out = model(input_ids=torch.tensor([result.ids]), output_attentions=True)
            elif task == "sentiment":
                out = model(**tok(result.text, return_tensors="pt"), output_attentions=True)
            elif task == "qa":
                out = model(**tok(result.question, result.context, return_tensors="pt"), output_attentions=True)
            elif task == "explorer":
                out = model(**tok(result.sentences, padding=True, return_tensors="pt"), output_attentions=True)
            elif task == "image":
                out = model(pixel_values=torch.from_numpy(result.pixel_values), output_attentions=True)
            elif task == "translation":
                out = model(**tok(result.text, return_tensors="pt"), decoder_input_ids=torch.tensor([result.generated[:-1]]),
                            output_attentions=True)
            elif task == "asr":
                ids = tok.tokenizer.convert_tokens_to_ids(result.prompt) + list(result.token_ids)
                out = model(input_features=torch.from_numpy(result.input_features), decoder_input_ids=torch.tensor([ids[:-1]]),
                            output_attentions=True)
            elif task == "clip":
                from PIL import Image

                images = [Image.open(s).convert("RGB") for s in result.sources]
                enc = tok(text=result.texts, images=images, return_tensors="pt", padding=True)
                out = model(**enc, output_attentions=True)
            else:
                raise AssertionError(f"No full forward pass for task {task!r}: add one to tests/lens_support.py")
    finally:
        for h in handles:
            h.remove()
    return out, [inputs[i] for i in sorted(inputs)], [outputs[i] for i in sorted(outputs)]


class NoFullPass:
    """Context manager: fails if the whole model or any of its layer stacks (encoder, decoder,
    vision/text tower) runs: the lens and the attention steps reuse stored states, running only
    heads, norms or one attention sub-module."""

    STACKS: ClassVar[set[str]] = {"encoder", "decoder", "transformer", "vision_model", "text_model", "vit", "distilbert", "model", "bert"}

    def __init__(self, model: Any) -> None:
        self.model, self.calls = model, 0

    def __enter__(self) -> Self:
        def count(*_args: Any, **_kwargs: Any) -> None:
            self.calls += 1

        stacks = [mod for name, mod in self.model.named_modules() if name.rsplit(".", 1)[-1] in self.STACKS]
        self.handles = [mod.register_forward_pre_hook(count) for mod in [self.model, *stacks]]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        assert self.calls == 0, f"the whole model ran {self.calls} time(s)"
