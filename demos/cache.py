"""A small thread-safe LRU memo for results and attributions, keyed by the call's arguments.

Used as a decorator, so caching stays a wrapper instead of `if`s inside the computations.
Keyword `progress` is never part of the key (it is a UI callback).
"""
from __future__ import annotations

import functools
import inspect
import threading
from collections import OrderedDict
from typing import Any, Callable

_all_caches: list["_Memo"] = []


class _Memo:
    def __init__(self, fn: Callable, maxsize: int) -> None:
        self.fn, self.maxsize = fn, maxsize
        self.data: OrderedDict[Any, Any] = OrderedDict()
        self.lock = threading.Lock()
        self.hits = self.misses = 0
        self.takes_progress = "progress" in inspect.signature(fn).parameters
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, progress: Any = None, **kwargs: Any) -> Any:
        key = (args, tuple(sorted(kwargs.items())))
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                self.hits += 1
                return self.data[key]
        value = self.fn(*args, progress=progress, **kwargs) if self.takes_progress else self.fn(*args, **kwargs)
        with self.lock:
            self.misses += 1
            self.data[key] = value
            while len(self.data) > self.maxsize:
                self.data.popitem(last=False)
        return value

    def cache_clear(self) -> None:
        with self.lock:
            self.data.clear()
            self.hits = self.misses = 0


def memo(maxsize: int = 16) -> Callable[[Callable], _Memo]:
    """Cache the last `maxsize` results of a function whose arguments are hashable."""

    def decorate(fn: Callable) -> _Memo:
        m = _Memo(fn, maxsize)
        _all_caches.append(m)
        return m

    return decorate


def clear_all() -> None:
    """Forget every memoised result (tests, or after the model set changes)."""
    for m in _all_caches:
        m.cache_clear()
