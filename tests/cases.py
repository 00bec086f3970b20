"""One case per registered task: every per-task fact the tests need, in one table (the way Captum's
tests/attr/helpers/test_config.py lists its algorithms). The test files derive their own tables
from `CASES`; tests/test_cases.py checks it against the registry and the app's tabs, so a task
added to `core.registry` without a case here fails at once.

    CASES["qa"].api                  # the tab's main endpoint, 'qa'
    result_for("qa")                 # its result on the tiny model (made once per session)
    reported_value("qa")             # the answer's value that result reports
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from core import registry
from demos.explain import tasks

ROOT = registry.ROOT
CAT = str(ROOT / "assets/images/chelsea_cat.jpg")
FOX_WAV = str(ROOT / "assets/audio/quick_brown_fox.wav")
TONE = (16_000, (np.sin(np.arange(16_000) / 5) * 9000).astype(np.int16))  # one second of a plain tone


@dataclass(frozen=True)
class TaskCase:
    """One task's facts for the tests.

    tab: its ui module, as `app.TABS` names it ('ui.speech'); api: the main endpoint's api_name
    (explanations add a suffix); make_result: its result on the tiny model, made in process;
    reported: the default answer's value as that result itself reports it (checked against the
    task's own forward pass); served_args: arguments of the main endpoint on a served tab (a
    gradio_client call; the later ones keep their defaults); good_args: a good request to the
    tab's handler, its arguments before the model; fresh_args: a fresh input per call `i` for the
    handler (arguments before the model; None: the fault tests have none for this task);
    token_attribution: the tab shows token attributions (checked against Captum called directly).
    """

    tab: str
    api: str
    make_result: Callable[[], Any]
    reported: Callable[[Any], float]
    served_args: Callable[[], tuple]
    good_args: tuple
    fresh_args: Callable[[int], tuple] | None = None
    token_attribution: bool = False

    @property
    def demo(self) -> str:
        """Its compute module's name in demos/ (the tab module has the same name in ui/)."""
        return self.tab.rsplit(".", 1)[-1]


def _upload(path: str) -> Any:
    from gradio_client import handle_file

    return handle_file(path)


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
    return tasks.module("image").analyse(CAT)


def _asr() -> Any:
    import soundfile as sf

    samples, rate = sf.read(FOX_WAV, dtype="int16")
    return tasks.module("asr").transcribe((rate, samples))


def _clip() -> Any:
    texts = "a photo of a cat\na rocket on a launch pad\na cup of coffee"
    return tasks.module("clip").analyse(CAT, texts)


def _explorer() -> Any:
    return tasks.module("explorer").analyse("The cat sits on the mat.\nA kitten is resting on a rug.")


QA_CONTEXT = "The Eiffel Tower is in Paris. It was completed in 1889."

CASES: dict[str, TaskCase] = {
    "generation": TaskCase(
        tab="ui.generation",
        api="generate",
        make_result=_generation,
        reported=lambda r: float(r.model_prob[0]),
        served_args=lambda: ("The quick brown fox", 4),
        good_args=("The quick brown fox", 3, False, 1.0, 50, 1.0, 0),
        fresh_args=lambda i: (f"Fault test {i}", 2, False, 1.0, 50, 1.0, 0),
        token_attribution=True,
    ),
    "sentiment": TaskCase(
        tab="ui.sentiment",
        api="sentiment",
        make_result=_sentiment,
        reported=lambda r: float(np.max(r.probs)),
        served_args=lambda: ("A warm and funny film.",),
        good_args=("A warm and funny film.",),
        fresh_args=lambda i: (f"fault test {i}",),
        token_attribution=True,
    ),
    "qa": TaskCase(
        tab="ui.qa",
        api="qa",
        make_result=_qa,
        reported=lambda r: float(r.score),
        served_args=lambda: registry.examples("qa")[0],
        good_args=("When was it completed?", QA_CONTEXT),
        fresh_args=lambda i: ("Where is it?", f"It is in Paris {i}."),
        token_attribution=True,
    ),
    "translation": TaskCase(
        tab="ui.translation",
        api="translate",
        make_result=_translation,
        reported=lambda r: float(r.target_probs[0]),
        served_args=lambda: ("The cat sleeps.",),
        good_args=("The house is small.",),
        fresh_args=lambda i: (f"The house {i}.",),
        token_attribution=True,
    ),
    "image": TaskCase(
        tab="ui.image",
        api="classify_image",
        make_result=_image,
        reported=lambda r: float(np.max(r.probs)),
        served_args=lambda: (_upload(CAT),),
        good_args=(CAT,),
        fresh_args=lambda i: (np.full((8 + i, 8, 3), 40 * i % 255, np.uint8),),
    ),
    "asr": TaskCase(
        tab="ui.speech",
        api="transcribe",
        make_result=_asr,
        reported=lambda r: float(r.token_probs[0]),
        served_args=lambda: (_upload(FOX_WAV),),
        good_args=(FOX_WAV,),
        fresh_args=lambda i: ((TONE[0], TONE[1] // (i + 1)),),
    ),
    "clip": TaskCase(
        tab="ui.clip",
        api="clip_match",
        make_result=_clip,
        reported=lambda r: float(np.max(r.probs[0])),
        served_args=lambda: (_upload(CAT), "a cat, a dog"),
        good_args=(CAT, "a cat\na dog", []),
        fresh_args=lambda i: (CAT, f"a cat\nthing {i}", []),
        token_attribution=True,
    ),
    "explorer": TaskCase(
        tab="ui.explorer",
        api="explore",
        make_result=_explorer,
        reported=lambda r: float(r.similarity[0, 1]),
        served_args=lambda: ("A cat sleeps.\nA kitten naps.\nStocks fell.",),
        good_args=("A cat sat.\nA dog ran.",),
    ),
}

_results: dict[str, Any] = {}


def result_for(task: str) -> Any:
    """The task's result (made once per session). KeyError for a task without a case."""
    make = CASES[task].make_result
    if task not in _results:
        _results[task] = make()
    return _results[task]


def reported_value(task: str) -> float:
    """The default answer's value as the task's result reports it."""
    return CASES[task].reported(result_for(task))
