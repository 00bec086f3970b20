"""GPU allocation for Hugging Face ZeroGPU Spaces.

`on_gpu(duration)` wraps a compute function with `spaces.GPU(duration=...)` when the app runs on
a ZeroGPU Space (SPACES_ZERO_GPU set by the platform) and returns it unchanged everywhere else, so
local runs never import `spaces`. `duration` may be seconds or a function of the call's arguments
(ZeroGPU bills every second: attributions ask for time in proportion to their steps).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any


def zero_gpu() -> bool:
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in {"1", "t", "true"}


def on_gpu(duration: int | Callable[..., int] = 30) -> Callable[[Callable], Callable]:
    """Decorator: request a ZeroGPU slice for `duration` seconds per call on a ZeroGPU Space."""

    def decorate(fn: Callable) -> Callable:
        if not zero_gpu():
            return fn
        import spaces

        gpu_fn = spaces.GPU(fn, duration=duration)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            # The UI progress callback is a closure over the request: it cannot cross into the
            # GPU worker, so GPU calls run without fine-grained progress.
            kwargs.pop("progress", None)
            return gpu_fn(*args, **kwargs)

        return call

    return decorate
