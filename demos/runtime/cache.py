"""A small thread-safe LRU memo for results and attributions, keyed by the call's arguments.

Used as a decorator, so caching stays a wrapper instead of `if`s inside the computations.
Keyword `progress` is never part of the key (it is a UI callback).

Bounded two ways: at most `maxsize` entries per memo, and at most XRAY_CACHE_MB megabytes
(default 512) of numpy arrays across ALL memos of the process together, the least recently used
entry (of any memo) evicted first. A value larger than the whole budget is returned but not kept.
The budget bounds what the memos alone keep alive: a session holding a result holds the memo's own
object (Gradio's State stores what the handler returns, never a copy), so memo and session share
one copy, freed when both have let go of it.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_CACHE_MB = 512.0
_all_caches: list[_Memo] = []
_MISSING = object()

_LOCK = threading.Lock()  # guards every memo's entries and in-flight table, and the shared LRU below
_lru: OrderedDict[tuple[_Memo, Any], int] = OrderedDict()  # (memo, key) -> bytes, oldest first
_held = 0  # sum of the bytes in _lru
_used: dict[tuple[_Memo, Any], float] = {}  # (memo, key) -> time.monotonic() of its last use


def budget_bytes() -> int:
    """The byte budget shared by every memo: XRAY_CACHE_MB megabytes (MiB), default 512."""
    raw = os.environ.get("XRAY_CACHE_MB", "")
    try:
        mb = float(raw) if raw.strip() else DEFAULT_CACHE_MB
    except ValueError:
        log.warning("XRAY_CACHE_MB=%r is not a number; using %s", raw, DEFAULT_CACHE_MB)
        mb = DEFAULT_CACHE_MB
    return max(0, int(mb * 2**20))


def nbytes(value: Any) -> int:
    """Bytes of the numpy arrays reachable from `value` through dataclasses, lists, tuples and
    dicts. Each buffer counts once, and an array that is a view counts the array owning its
    memory (a small slice of a large array keeps the whole of it alive)."""
    seen: set[int] = set()
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, np.ndarray):
            while isinstance(item.base, np.ndarray):
                item = item.base
            if id(item) not in seen:
                seen.add(id(item))
                total += item.nbytes
        elif isinstance(item, (list, tuple, dict)) or (dataclasses.is_dataclass(item) and not isinstance(item, type)):
            if id(item) in seen:
                continue
            seen.add(id(item))
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
            else:
                stack.extend(getattr(item, f.name, None) for f in dataclasses.fields(item))
    return total


def held_bytes() -> int:
    """Bytes of numpy arrays the memos keep now (all memos together)."""
    with _LOCK:
        return _held


def _forget(memo: _Memo, key: Any) -> None:
    """Drop one entry's accounting (caller holds _LOCK and removes it from memo.data)."""
    global _held
    _held -= _lru.pop((memo, key), 0)
    _used.pop((memo, key), None)


class _Flight:
    """One computation in progress: callers with the same key wait on `lock` and take `value`."""

    def __init__(self) -> None:
        self.lock, self.done, self.value = threading.Lock(), False, None


class _Memo:
    """LRU memo of `fn`. Keys are the call's arguments bound to `fn`'s signature with defaults
    applied, so f(x), f(x, None) and f(x, model_id=None) share one entry. Concurrent calls with
    the same key compute once (the others wait for that result)."""

    def __init__(self, fn: Callable, maxsize: int) -> None:
        self.fn, self.maxsize = fn, maxsize
        self.data: OrderedDict[Any, Any] = OrderedDict()
        self.lock = _LOCK
        self.inflight: dict[Any, _Flight] = {}
        self.hits = self.misses = 0
        self.signature = inspect.signature(fn)
        self.takes_progress = "progress" in self.signature.parameters
        functools.update_wrapper(self, fn)

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def _key(self, args: tuple, kwargs: dict) -> tuple:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return tuple((name, value) for name, value in bound.arguments.items() if name != "progress")

    def _lookup(self, key: tuple) -> Any:
        with _LOCK:
            if key in self.data:
                self.data.move_to_end(key)
                if (self, key) in _lru:
                    _lru.move_to_end((self, key))
                _used[(self, key)] = time.monotonic()
                self.hits += 1
                return self.data[key]
        return _MISSING

    def _store(self, key: tuple, value: Any, size: int) -> None:
        """Keep `value` (unless it alone exceeds the budget), then evict by count and by bytes."""
        global _held
        budget = budget_bytes()
        with _LOCK:
            self.misses += 1
            if key in self.data:
                del self.data[key]
                _forget(self, key)
            if size > budget:
                return
            self.data[key] = value
            _lru[(self, key)] = size
            _used[(self, key)] = time.monotonic()
            _held += size
            while len(self.data) > self.maxsize:
                _forget(self, self.data.popitem(last=False)[0])
            while _held > budget and _lru:
                memo, old = next(iter(_lru))
                memo.data.pop(old, None)
                _forget(memo, old)

    def __call__(self, *args: Any, progress: Any = None, **kwargs: Any) -> Any:
        key = self._key(args, kwargs)
        value = self._lookup(key)
        if value is not _MISSING:
            return value
        with _LOCK:
            flight = self.inflight.setdefault(key, _Flight())
        with flight.lock:
            if flight.done:  # computed by the call we waited for (kept or, if too large, not)
                return flight.value
            value = self._lookup(key)
            if value is not _MISSING:
                return value
            try:
                value = self.fn(*args, progress=progress, **kwargs) if self.takes_progress else self.fn(*args, **kwargs)
                self._store(key, value, nbytes(value))
                flight.value, flight.done = value, True
            finally:
                with _LOCK:
                    if self.inflight.get(key) is flight:
                        del self.inflight[key]
        return value

    def cache_clear(self) -> None:
        with _LOCK:
            for key in self.data:
                _forget(self, key)
            self.data.clear()
            self.hits = self.misses = 0


def expire_idle(seconds: float) -> int:
    """Drop every memo entry not used for more than `seconds` (an idle class's results go when
    its sessions do); returns how many were dropped."""
    cutoff = time.monotonic() - seconds
    with _LOCK:
        old = [(memo, key) for (memo, key), used in _used.items() if used < cutoff]
        for memo, key in old:
            memo.data.pop(key, None)
            _forget(memo, key)
    return len(old)


def memo(maxsize: int = 16) -> Callable[[Callable], _Memo]:
    """Cache the last `maxsize` results of a function whose arguments are hashable (within the
    byte budget shared by all memos, see `budget_bytes`)."""

    def decorate(fn: Callable) -> _Memo:
        m = _Memo(fn, maxsize)
        _all_caches.append(m)
        return m

    return decorate


def clear_all() -> None:
    """Forget every memoised result (tests, or after the model set changes)."""
    for m in _all_caches:
        m.cache_clear()
