"""Micro-batches of concurrent calls, in this process: answers (the Ray tier also has `@serve.batch`) and
attributions (`demos.runtime.compute.attribution_compute`).

A task whose registry entry names a batched forward pass (`TaskSpec.batch`, e.g. sentiment's
`demos.sentiment.analyse_many`) has its answer function wrapped in `Gather` (by
`demos.runtime.compute.task_compute`, under the memo, so a repeated input never waits for a batch).

    Gather(single, many_thunk)(text, model_id) -> the same result as single(text, model_id)

Natural batching, no timer: a call that finds the model idle runs alone at once, exactly the
single run (so one student alone sees no change); calls that arrive while a pass is running
queue up, and the next pass takes up to `XRAY_BATCH_SIZE` (default 8) of them in one padded
forward pass, as long as the pass stays short: its items x its longest text within
`XRAY_BATCH_CHARS` (default 2,048 characters, about 500 tokens), so long inputs run alone (a
batch of eight 512-token texts would hold 600 MB of attention maps at once, for little gain: a
long input already keeps both CPUs busy). The first caller in the queue leads the next pass;
every other caller waits for its own item only. What a pass costs per item against a single run:
docs/PERFORMANCE.md, "A class on one 2-CPU machine".
"""
from __future__ import annotations

import functools
import inspect
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any


def _env_count(name: str, default: int) -> int:
    """A positive whole number from the environment; `default` when unset or not a number."""
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def batch_size() -> int:
    return _env_count("XRAY_BATCH_SIZE", 8)


def batch_chars() -> int:
    return _env_count("XRAY_BATCH_CHARS", 2048)


def batches(task: str) -> bool:
    """Whether `task`'s answers are gathered in this process: it has a batched forward pass, the
    batch size is above 1, and this is not a ZeroGPU Space (where each call has its own GPU slice)."""
    from core import registry

    return bool(registry.get(task).batch) and _gathering()


def attributions_batch(task: str) -> bool:
    """Whether `task`'s attributions are gathered across callers (`TaskSpec.attribute_batch`), by the
    same rule as its answers."""
    from core import registry

    return bool(registry.get(task).attribute_batch) and _gathering()


def _gathering() -> bool:
    from demos.runtime.gpu import zero_gpu

    return batch_size() > 1 and not zero_gpu()


class Failed:
    """An exception raised for one item of a micro-batch (re-raised for that caller only)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def batch_item(signature: inspect.Signature, args: tuple, kwargs: dict) -> tuple[str, str | None] | None:
    """(text, model_id) when a call of the single-run function has exactly those plain inputs;
    None when it must run on its own (other arguments, or not a text)."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    values = list(bound.arguments.values())
    if len(values) != 2 or not isinstance(values[0], str) or not (values[1] is None or isinstance(values[1], str)):
        return None
    return values[0], values[1]


def run_batch(single: Callable, many: Callable, items: Sequence[tuple[Any, Any]]) -> list[Any]:
    """One result (or `Failed`) per (payload, group) item, e.g. (text, model_id): one
    `many(payloads, group)` pass per group; a lone item runs `single(payload, group)` once (its error
    is its caller's); if a pass of several fails, its items run singly, so one bad input fails only
    its own caller."""
    out: list[Any] = [None] * len(items)
    by_group: dict[Any, list[int]] = {}
    for i, (_, group) in enumerate(items):
        by_group.setdefault(group, []).append(i)
    for group, index in by_group.items():
        payloads = [items[i][0] for i in index]
        results = None
        if len(payloads) > 1:
            try:
                results = many(payloads, group)
            except Exception:  # run singly: each caller gets its own answer or error
                results = None
        if results is None:
            results = []
            for payload in payloads:
                try:
                    results.append(single(payload, group))
                except Exception as exc:  # returned to its own caller only
                    results.append(Failed(exc))
        for i, result in zip(index, results):
            out[i] = result
    return out


class _Waiting:
    __slots__ = ("item", "ready", "lead", "value")

    def __init__(self, item: tuple[Any, Any]) -> None:
        self.item, self.ready, self.lead, self.value = item, threading.Event(), False, None


def _text_length(payload: Any) -> int:
    return len(payload) if isinstance(payload, str) else 0


class Gather:
    """`single(text, model_id)` for many threads at once, in micro-batches (see the module doc).

    `item(args, kwargs) -> (payload, group) | None` says which calls batch (default: `batch_item`,
    plain (text, model_id) calls); `call_one(payload, group)` runs one item alone (default `single`);
    `size(payload)` is what `max_chars` bounds (default: the text's length)."""

    def __init__(self, single: Callable, many: Callable[[], Callable], max_size: int | None = None,
                 max_chars: int | None = None, item: Callable[[tuple, dict], tuple | None] | None = None,
                 call_one: Callable | None = None, size: Callable[[Any], int] = _text_length) -> None:
        self.single, self._many_thunk, self._many = single, many, None
        self.max_size = max_size or batch_size()
        self.max_chars = max_chars or batch_chars()
        self.signature = inspect.signature(single)
        self._item = item or (lambda args, kwargs: batch_item(self.signature, args, kwargs))
        self._call_one = call_one or single
        self._size = size
        self._mutex = threading.Lock()
        self._queue: deque[_Waiting] = deque()
        self._busy = False
        self.sizes: deque[int] = deque(maxlen=1000)  # size of every pass (tests, bench)
        functools.update_wrapper(self, single)

    def many(self, payloads: list[Any], group: Any) -> list[Any]:
        if self._many is None:
            self._many = self._many_thunk()
        return self._many(payloads, group)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        item = self._item(args, kwargs)
        if item is None or self.max_size < 2:
            return self.single(*args, **kwargs)
        mine = _Waiting(item)
        with self._mutex:
            self._queue.append(mine)
            mine.lead = not self._busy
            self._busy = True
        if not mine.lead:
            mine.ready.wait()  # set when a pass gave this item its value, or when it is this item's turn to lead
        if mine.lead:
            self._lead()
        if isinstance(mine.value, Failed):
            raise mine.value.exc
        return mine.value

    def _lead(self) -> None:
        """Run one pass over the first items of the queue (this caller's among them: the leader
        is always the first), then hand the lead to the next waiting caller, if any."""
        with self._mutex:
            batch, longest = [], 0
            while self._queue and len(batch) < self.max_size:
                longest = max(longest, self._size(self._queue[0].item[0]))
                if batch and (len(batch) + 1) * longest > self.max_chars:
                    break
                batch.append(self._queue.popleft())
        try:
            results = run_batch(self._call_one, self.many, [w.item for w in batch]) if batch else []
            self.sizes.append(len(batch))
        except BaseException as exc:  # not an Exception (run_batch catches those): every item fails alike
            results = [Failed(exc)] * len(batch)
        finally:
            with self._mutex:
                following = self._queue[0] if self._queue else None
                if following is not None:
                    following.lead = True
                else:
                    self._busy = False
        for waiting, result in zip(batch, results):
            waiting.value = result
            waiting.ready.set()
        if following is not None:
            following.ready.set()
