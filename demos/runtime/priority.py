"""Answers first on a shared CPU: what an answer, an attribution batch and a tab's figures agree on, in this
process. Threading only (no model library), so a thin front (`--backend ray`, whose answers run in the model tier
and never count here) can import it."""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any


class AnswerFirst:
    """Answers before explanations and figures on a shared CPU: answers count themselves while they
    compute; an attribution waits between its batches while any answer is computing (at most
    `max_wait` seconds per batch, so a stream of answers cannot starve it), and a tab's figures wait
    before they are drawn (`ui.kit.draw_views`, at most `VIEWS_WAIT`). Drawing is Python holding the
    GIL: drawn beside a burst of answers it made a class's answers' p95 2.5 s instead of 1.5-1.7 s
    (docs/PERFORMANCE.md section 5)."""

    def __init__(self, max_wait: float = 10.0) -> None:
        self.max_wait = max_wait
        self.running = 0
        self.changed = threading.Condition()

    def answer(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            with self.changed:
                self.running += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self.changed:
                    self.running -= 1
                    self.changed.notify_all()

        return counted

    def yield_to_answers(self, max_wait: float | None = None) -> None:
        """Return once no answer is computing, or after `max_wait` seconds (default: `self.max_wait`)."""
        with self.changed:
            self.changed.wait_for(lambda: self.running == 0, timeout=self.max_wait if max_wait is None else max_wait)


answer_first = AnswerFirst()
VIEWS_WAIT = 3.0  # seconds a tab's figures wait at most for answers computing (a figure is never later than that)
