"""Runtime policy of a compute function in one decorator: memo (results shared by every user
with the same input), a ZeroGPU slice on Spaces, and the per-task lock.

    @task_compute(TASK, memo_size=8, gpu_seconds=20)
    def analyse(text, model_id=None): ...

    @task_compute(TASK, memo_size=32, gpu_seconds=15, gpu_seconds_per_step=0.25)
    def attribute(text, target=None, method=..., steps=32, model_id=None, progress=None): ...

The GPU duration reads `steps` by name from the call (bound to the function's signature with its
defaults), so no caller counts argument positions.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from demos.runtime.cache import memo
from demos.runtime.gather import Gather, attributions_batch, batches
from demos.runtime.gpu import on_gpu
from demos.runtime.heap import trimmed
from demos.runtime.loading import in_explain_lane, one_at_a_time
from demos.runtime.priority import answer_first


def gpu_duration(fn: Callable, base: int, per_step: float) -> int | Callable[..., int]:
    """`base` seconds, plus `per_step` for each integration step the call asks for."""
    if not per_step:
        return base
    signature = inspect.signature(fn)

    def duration(*args: Any, **kwargs: Any) -> int:
        bound = signature.bind_partial(*args, **kwargs)
        bound.apply_defaults()
        return int(base + per_step * int(bound.arguments.get("steps") or 32))

    return duration


def task_compute(task: str, memo_size: int = 0, gpu_seconds: int = 20, gpu_seconds_per_step: float = 0.0,
                 answer: bool = True, batched: Callable[[], Callable] | None = None):
    """Decorator: memo (outermost, when `memo_size`), then the GPU slice, then the task's lock.
    An `answer` (not an explanation) counts itself in `answer_first` while it computes; an
    explanation runs in the explanations' lane (its own model copy and lock, `demos.runtime.loading`).
    The answer of a task with a batched forward pass (`TaskSpec.batch`) gathers concurrent calls
    into micro-batches (`demos.runtime.gather`), under the memo (not on ZeroGPU, where each call gets its
    own GPU slice). Each computed call (not a memo hit) then gives the heap's free pages back to
    the OS (`demos.runtime.heap`)."""

    def decorate(fn: Callable) -> Callable:
        duration = gpu_duration(fn, gpu_seconds, gpu_seconds_per_step)
        if not answer:
            return explanation_policy(task, memo_size, duration)(fn)
        wrapped = on_gpu(duration)(one_at_a_time(task)(answer_first.answer(fn)))
        if batched is not None and batches(task):
            wrapped = Gather(wrapped, lambda: answer_first.answer(batched()))
        wrapped = trimmed(wrapped)  # then a heap trim, in the trimmer thread (not under the task's lock)
        return memo(memo_size)(wrapped) if memo_size else wrapped

    return decorate


@dataclass(frozen=True)
class Gathered:
    """How an explanation's concurrent calls gather into one pass (`demos.runtime.gather`):
    `item(args, kwargs) -> (payload, group) | None` (None: the call runs alone), `unpack(payload,
    group) -> kwargs` of one call, `many(payloads, group) -> results` in one pass, `size(payload)`
    what the batch's character budget counts."""

    item: Callable[[tuple, dict], tuple | None]
    unpack: Callable[[Any, Any], dict]
    many: Callable[[list, Any], list]
    size: Callable[[Any], int]


def explanation_policy(
    task: str | None, memo_size: int, gpu_seconds: int | Callable[..., int], gathered: Gathered | None = None
) -> Callable[[Callable], Callable]:
    """The runtime policy of every explanation, Captum's attributions and the explainers of "Inside the model"
    alike, in this one decorator: memo (outermost, when `memo_size`), then the heap trim (in the trimmer thread, not
    under the lock), the explanations' lane (its own model copy, `demos.runtime.loading`), the GPU slice and the
    task's lock. `task`: the task whose lock is taken, or None for a function called as `fn(task, ...)`. With
    `gathered`, calls that meet run in one pass under the same lane and lock (below the memo, so a repeated
    request never waits for a batch; its `Gather` is the wrapper's `gather`). The wrapper carries
    `explanation_policy = True` (checked for every explanation in the tests)."""

    def decorate(fn: Callable) -> Callable:
        if task is not None:
            locked = one_at_a_time(task)(fn)
        else:
            @functools.wraps(fn)
            def locked(task_: str, *args: Any, **kwargs: Any) -> Any:
                return one_at_a_time(task_)(fn)(task_, *args, **kwargs)

        inner = in_explain_lane(on_gpu(gpu_seconds)(locked))
        gather = None
        if gathered is not None and task is not None:
            single = inner
            gather = inner = Gather(
                single,
                lambda: in_explain_lane(one_at_a_time(task)(gathered.many)),
                item=gathered.item,
                call_one=lambda payload, group: single(**gathered.unpack(payload, group)),
                size=gathered.size,
            )
        wrapped = trimmed(inner)
        wrapped = memo(memo_size)(wrapped) if memo_size else wrapped
        wrapped.explanation_policy = True
        wrapped.gather = gather
        return wrapped

    return decorate



@dataclass(frozen=True)
class How:
    """How a task's attribution runs (what it explains is the function's own arguments): the
    method of demos.explain.attribution's table, integration steps, the model, a progress callback, and the
    convergence tolerance that may stop integration early."""

    method: str = "integrated_gradients"
    steps: int = 32
    model_id: str | None = None
    progress: Callable[..., Any] | None = None
    tolerance: float | None = None


_GROUP = tuple(f.name for f in fields(How) if f.name != "progress")  # what calls must share to gather


def attribution_compute(task: str, batched: Callable[[], Callable] | None = None) -> Callable[[Callable], Callable]:
    """`task_compute` for a task's attribution function written as `fn(<what>..., how: How)`.

    Callers see `fn(<what>..., method=..., steps=32, model_id=None, progress=None, tolerance=None)`
    (the fields of `How`, in that order, after the function's own arguments), so every attribution
    function of the app takes the same options, declared once here. With `batched` (a thunk giving the
    task's `fn_many(whats: list[tuple], how: How) -> list`, each `what` the function's own arguments),
    concurrent calls that share method, steps, model and tolerance gather into one pass
    (`demos.runtime.gather.attributions_batch`), every caller keeping its own progress bar.
    """
    def decorate(fn: Callable) -> Callable:
        own = [p for p in inspect.signature(fn).parameters.values() if p.name != "how"]
        options = [
            inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default, annotation=f.type)
            for f in fields(How)
        ]
        signature = inspect.signature(fn).replace(parameters=own + options)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            given = dict(bound.arguments)
            how = How(**{f.name: given.pop(f.name) for f in fields(How)})
            return fn(**given, how=how)

        call.__signature__ = signature  # type: ignore[attr-defined]
        gathers = batched is not None and attributions_batch(task)
        gathered = _gathered(signature, [p.name for p in own], batched) if gathers else None
        return explanation_policy(task, 32, gpu_duration(call, 15, 0.25), gathered)(call)

    return decorate


def _gathered(signature: inspect.Signature, own: list[str], batched: Callable[[], Callable]) -> Gathered:
    """How attribution calls gather: payload = (the call's own arguments, its progress callback),
    group = the other options of `How`."""

    def item(args: tuple, kwargs: dict) -> tuple | None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return None  # runs alone, and raises there
        bound.apply_defaults()
        given = bound.arguments
        return (tuple(given[name] for name in own), given["progress"]), tuple(given[name] for name in _GROUP)

    def unpack(payload: tuple, group: tuple) -> dict:
        what, progress = payload
        return {**dict(zip(own, what)), **dict(zip(_GROUP, group)), "progress": progress}

    def many(payloads: list, group: tuple) -> list:
        callbacks = [progress for _, progress in payloads if progress is not None]

        def every(fraction: float, message: str) -> None:
            for progress in callbacks:
                progress(fraction, message)

        how = How(**dict(zip(_GROUP, group)), progress=every if callbacks else None)
        return batched()([what for what, _ in payloads], how)

    def size(payload: tuple) -> int:
        first = payload[0][0] if payload[0] else ""
        return len(first) if isinstance(first, str) else 0

    return Gathered(item, unpack, many, size)


class Keyed:
    """A value that hashes and compares by `key` (a task result by its identity, for memo keys)."""

    __slots__ = ("key", "value")

    def __init__(self, key: Any, value: Any) -> None:
        self.key, self.value = key, value

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keyed) and other.key == self.key


def _frozen(value: Any) -> Any:
    """Lists (of lists) as tuples, so a parameter value can be part of a memo key."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def explanation_compute(
    fn: Callable, gpu_seconds: int, memo_size: int, identity: Callable[[str, Any], Any]
) -> Callable[..., Any]:
    """An explainer of "Inside the model" under `explanation_policy`, memoised by the task, the result's
    `identity(task, result)` and the parameters. `fn(task, result, **params[, progress])`; the wrapper is called as
    `call(task, result, progress=None, **params)`."""
    takes_progress = "progress" in inspect.signature(fn).parameters

    @explanation_policy(None, memo_size, gpu_seconds)
    def compute(task: str, ref: Keyed, params: tuple, progress: Callable[..., Any] | None = None) -> Any:
        extra = {"progress": progress} if takes_progress else {}
        return fn(task, ref.value, **dict(params), **extra)

    def call(task: str, result: Any, progress: Callable[..., Any] | None = None, **params: Any) -> Any:
        frozen = tuple(sorted((k, _frozen(v)) for k, v in params.items()))
        return compute(task, Keyed(identity(task, result), result), frozen, progress=progress)

    call.explanation_policy = True
    return call
