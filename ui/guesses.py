"""The class's guesses in "predict, then reveal" lesson steps: counts only, anonymous, in memory,
bounded; and the teacher's code that guards who may see them. Pure (no gradio).

Nothing is kept but how many students picked each offered choice of each step: no names, no
session ids, no times, no free text (a choice that the step does not offer is refused). The
counts live in this process only and vanish when the app stops. Which steps a student has already
answered is remembered in that student's own browser session (`ui.lessons`), not here.
"""
from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Sequence

TEACHER_ENV = "XRAY_TEACHER_CODE"
MAX_CODE_CHARS = 200
TEACHER_OFF = (
    "The teacher view is off. To see the class's guesses, start the app with a code of your choice in the "
    f"environment variable `{TEACHER_ENV}` (for example `{TEACHER_ENV}=blue-heron-42 python app.py`) and type "
    "that code here. Students never see the counts."
)


class GuessBook:
    """Counts per (lesson, step, choice). At most `max_steps` steps are counted (lesson files are
    few; a step beyond that is not counted) and at most `max_choices` choices per step."""

    def __init__(self, max_steps: int = 500, max_choices: int = 16, max_count: int = 10**9) -> None:
        self.max_steps, self.max_choices, self.max_count = max_steps, max_choices, max_count
        self._counts: dict[tuple[str, int], dict[str, int]] = {}
        self._lock = threading.Lock()

    def record(self, lesson: str, step: int, choice: str, offered: Sequence[str]) -> bool:
        """Count one guess; False when it was not counted (the book is full). A choice the step
        does not offer is a ValueError."""
        if choice not in offered:
            raise ValueError("Pick one of the offered answers.")
        if len(offered) > self.max_choices:
            raise ValueError(f"A step offers at most {self.max_choices} answers.")
        key = (str(lesson), int(step))
        with self._lock:
            if key not in self._counts:
                if len(self._counts) >= self.max_steps:
                    return False
                self._counts[key] = {}
            row = self._counts[key]
            row[choice] = min(self.max_count, row.get(choice, 0) + 1)
        return True

    def counts(self, lesson: str) -> dict[int, dict[str, int]]:
        """step -> {choice: count} of one lesson (a copy), steps in order."""
        with self._lock:
            found = {step: dict(row) for (name, step), row in self._counts.items() if name == lesson}
        return dict(sorted(found.items()))

    def clear(self, lesson: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self._counts if lesson is None or k[0] == lesson]:
                del self._counts[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._counts)


BOOK = GuessBook()  # the app's one book (per process)


def teacher_code(env: dict | None = None) -> str:
    """The code set by the app's owner ('' = the teacher view is off)."""
    return ((env if env is not None else os.environ).get(TEACHER_ENV) or "").strip()


def code_ok(given: str | None, env: dict | None = None) -> bool:
    """Whether `given` is the teacher's code (compared in constant time; never with no code set)."""
    expected = teacher_code(env)
    given = (given or "").strip()
    if not expected or not given or len(given) > MAX_CODE_CHARS:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
