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


_MISSING = object()


class _Memo:
    """LRU memo of `fn`. Keys are the call's arguments bound to `fn`'s signature with defaults
    applied, so f(x), f(x, None) and f(x, model_id=None) share one entry. Concurrent calls with
    the same key compute once (the others wait for that result)."""

    def __init__(self, fn: Callable, maxsize: int) -> None:
        self.fn, self.maxsize = fn, maxsize
        self.data: OrderedDict[Any, Any] = OrderedDict()
        self.lock = threading.Lock()
        self.inflight: dict[Any, threading.Lock] = {}
        self.hits = self.misses = 0
        self.signature = inspect.signature(fn)
        self.takes_progress = "progress" in self.signature.parameters
        functools.update_wrapper(self, fn)

    def _key(self, args: tuple, kwargs: dict) -> tuple:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return tuple((name, value) for name, value in bound.arguments.items() if name != "progress")

    def _lookup(self, key: tuple) -> Any:
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                self.hits += 1
                return self.data[key]
        return _MISSING

    def __call__(self, *args: Any, progress: Any = None, **kwargs: Any) -> Any:
        key = self._key(args, kwargs)
        value = self._lookup(key)
        if value is not _MISSING:
            return value
        with self.lock:
            flight = self.inflight.setdefault(key, threading.Lock())
        with flight:
            value = self._lookup(key)
            if value is not _MISSING:
                return value
            try:
                value = self.fn(*args, progress=progress, **kwargs) if self.takes_progress else self.fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.inflight.pop(key, None)
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
