"""Clocks and statistics: wall time with CUDA synchronisation, medians of interleaved runs, and
the facts about the machine a result depends on (threads, versions, load average)."""
from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def clock(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, value) of one call; CUDA work is finished before the clock stops."""
    _sync()
    t0 = time.perf_counter()
    value = fn()
    _sync()
    return time.perf_counter() - t0, value


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank `q` quantile (0..1) of `values`; None when there are none."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def summary(values: list[float]) -> dict:
    """Median, min, max and count of a list of seconds."""
    return {"median_s": median(values), "min_s": min(values), "max_s": max(values), "n": len(values)}


def interleaved(
    runs: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    before: Callable[[], None] | None = None,
    around: dict[str, Callable[[], contextlib.AbstractContextManager]] | None = None,
) -> dict[str, dict]:
    """Time every callable of `runs` `repeats` times, taking turns (the order rotates each round)
    so that machine noise hits all of them alike. `before` runs untimed before every call (e.g.
    clearing memo caches); `around[name]()` is a context entered untimed around each call of `name`
    (e.g. a busy neighbour, `bench.busy.Busy.running`). Returns name -> summary() plus the median
    process CPU time under "cpu_median_s" and the last value under "value"."""
    around = around or {}
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}  # process CPU time: little moved by other processes
    last: dict[str, Any] = {}
    for _ in range(warmup):
        for n in names:
            if before:
                before()
            with around.get(n, contextlib.nullcontext)():
                last[n] = runs[n]()
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            if before:
                before()
            with around.get(n, contextlib.nullcontext)():
                cpu0 = time.process_time()
                seconds, last[n] = clock(runs[n])
                cpu[n].append(time.process_time() - cpu0)
            times[n].append(seconds)
    return {n: {**summary(times[n]), "cpu_median_s": median(cpu[n]), "value": last.get(n)} for n in names}


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict:
    """CPU count, threads, device and library versions of this run."""
    import torch
    import transformers

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "memory_gb": _memory_gb(),
    }
    for name in ("gradio", "captum", "gradio_client"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # a version is informative, never required
            info[name] = None
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
        return round(kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM on Linux, else ru_maxrss)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024
