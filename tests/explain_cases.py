"""One row per registered task for the intervention / contrast / faithfulness tests: how to get a
result on the tiny model, and the answer's value that result itself reports (so a Subject can be
checked against the task's own forward pass). A task without a row makes those tests fail."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from core import registry
from demos.explain import tasks

ROOT = registry.ROOT


def _generation() -> Any:
    return tasks.module("generation").generate("The quick brown fox", max_new_tokens=5)


def _sentiment() -> Any:
    return tasks.module("sentiment").analyse("This movie was an absolute delight, warm and funny.")


def _qa() -> Any:
    q, c = registry.get("qa").examples[0]
    return tasks.module("qa").answer(q, c)


def _translation() -> Any:
    return tasks.module("translation").analyse("The house is small, but the garden is beautiful.")


def _image() -> Any:
    return tasks.module("image").analyse(str(ROOT / "assets/images/chelsea_cat.jpg"))


def _asr() -> Any:
    import soundfile as sf

    samples, rate = sf.read(str(ROOT / "assets/audio/quick_brown_fox.wav"), dtype="int16")
    return tasks.module("asr").transcribe((rate, samples))


def _clip() -> Any:
    texts = "a photo of a cat\na rocket on a launch pad\na cup of coffee"
    return tasks.module("clip").analyse(str(ROOT / "assets/images/chelsea_cat.jpg"), texts)


def _explorer() -> Any:
    return tasks.module("explorer").analyse("The cat sits on the mat.\nA kitten is resting on a rug.")


# task -> (make a result, the default answer's value as the result reports it)
CASES: dict[str, tuple[Callable[[], Any], Callable[[Any], float]]] = {
    "generation": (_generation, lambda r: float(r.model_prob[0])),
    "sentiment": (_sentiment, lambda r: float(np.max(r.probs))),
    "qa": (_qa, lambda r: float(r.score)),
    "translation": (_translation, lambda r: float(r.target_probs[0])),
    "image": (_image, lambda r: float(np.max(r.probs))),
    "asr": (_asr, lambda r: float(r.token_probs[0])),
    "clip": (_clip, lambda r: float(np.max(r.probs[0]))),
    "explorer": (_explorer, lambda r: float(r.similarity[0, 1])),
}

_results: dict[str, Any] = {}


def result_for(task: str) -> Any:
    """The task's result (made once per session). KeyError for a task without a row."""
    make, _ = CASES[task]
    if task not in _results:
        _results[task] = make()
    return _results[task]


def reported_value(task: str) -> float:
    return CASES[task][1](result_for(task))
