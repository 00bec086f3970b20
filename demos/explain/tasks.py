"""The task compute modules the explainers explain, by registry key: imported here, by reference, so no explainer
reaches a task through its name. Explainers sit above the tasks (an explanation reads a task's result and its
model); the tasks use only the methods below them (`attribution`, `subjects`).

    tasks.module("qa").answer(question, context)            # the task's compute module
    tasks.load("generation", model_id)                      # its model, loaded the task's way
    tasks.subject("sentiment", result, target="POSITIVE")  # what an explainer varies and scores
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

from demos import clip, explorer, generation, image, qa, sentiment, speech, translation
from demos.explain.subjects import Subject
from demos.runtime.loading import Loaded

MODULES: dict[str, ModuleType] = {m.TASK: m for m in (generation, sentiment, qa, translation, image, speech, clip,
                                                       explorer)}


def module(task: str) -> ModuleType:
    """Task `task`'s compute module (KeyError for an unknown task)."""
    return MODULES[task]


def load(task: str, model_id: str | None = None) -> Loaded:
    """The model serving `task` (`model_id`, or the configured one), loaded as the task loads it."""
    return MODULES[task].load(model_id)


def subject(task: str, result: Any, target: Any = None, contrast: Any = None) -> Subject:
    """The Subject of `result` (what task `task`'s main function returned).

    target: generation / translation / asr: the output step (default 0); sentiment / image: the
    class; clip: the description; explorer: the index of the sentence compared with the first
    (default 1); qa: unused (the answer span). contrast: B for "why A and not B" (a class, a
    description or a token; default: the most probable outcome other than A; None for qa/explorer).
    """
    return MODULES[task].subject(result, target, contrast)
