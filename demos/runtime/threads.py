"""Torch's intra-op threads chosen per call by what else the CPUs are running.

On a machine that another process keeps busy (a neighbour on a shared VM or Space, a second app on
the same host), a computation split over every core waits at each parallel region's barrier for a
thread the scheduler has put aside: measured on 2 CPUs beside a process busy on 2 threads, a
DistilBERT answer took 126 ms on 2 torch threads and 43 ms on 1 (41 ms quietly on 2;
docs/PERFORMANCE.md section 1). So each computation (`fitted`, applied by
`demos.runtime.loading.one_at_a_time`, which every answer and explanation goes through) reads how many
threads are runnable right now and, when they and its own threads would not fit on the CPUs, runs on
fewer (at least one); on a quiet machine it runs on the configured number.

"Runnable right now" is the kernel's count of running threads (/proc/loadavg's fourth field) minus
this process's own (its OpenMP workers spin for a moment after each parallel region; another request
of the same server is left to the task locks and the answers' batching), the smallest of three reads
0.2 ms apart (a thread that runs for a moment must not make a quiet call single-threaded). torch's
count is per thread (OpenMP), so it is set in the thread that computes and given back after the call.
`XRAY_ADAPTIVE_THREADS=0` turns it off (the configured count always); where /proc/loadavg does not
exist nothing changes.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

LOADAVG = Path("/proc/loadavg")
SELF_TASKS = Path("/proc/self/task")
READS, GAP_S = 3, 0.0002

_configured: int | None = None
_lock = threading.Lock()
_inside = threading.local()  # a computation that calls another of its task keeps the outer's choice


def configure(threads: int | None) -> int:
    """Set the intra-op threads a computation uses on a quiet machine (None: torch's default, one per
    core) and return it. The app, the Ray replicas and the benchmarks call this instead of
    `torch.set_num_threads`."""
    import torch

    global _configured
    with _lock:
        if threads:
            torch.set_num_threads(max(1, int(threads)))
        _configured = torch.get_num_threads()
        return _configured


def configured() -> int:
    if _configured is None:
        return configure(None)
    return _configured


def enabled() -> bool:
    return os.environ.get("XRAY_ADAPTIVE_THREADS", "1").strip().lower() not in ("0", "false", "no", "off")


def cpus() -> int:
    """The CPUs this process may run on (its affinity, which a container's cpuset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _own_running() -> int:
    """This process's threads that are running or runnable now (the caller among them): OpenMP's workers
    spin for a moment after each parallel region, so they are counted as ours, not as a neighbour."""
    n = 0
    for task in SELF_TASKS.iterdir():
        try:
            n += (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            continue
    return n


def runnable_others(path: Path | None = None) -> int | None:
    """Threads of other processes runnable now: the kernel's running count (`path`, default LOADAVG)
    minus this process's own, the smallest of READS reads (0 at the first read that finds none).
    None if unknown."""
    counts = []
    for i in range(READS):
        try:
            running = int((path or LOADAVG).read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        others = max(running - 1, 0) and max(running - max(_own_running(), 1), 0)
        if not others:
            return 0
        counts.append(others)
        if i + 1 < READS:
            time.sleep(GAP_S)
    return min(counts)


def threads_for(wanted: int, cpus: int, others: int | None) -> int:
    """How many of the `wanted` threads to use when `others` threads are runnable on `cpus` CPUs: all of
    them when they fit beside the others, else the CPUs left over, at least one."""
    if others is None or others + wanted <= cpus:
        return wanted
    return max(1, min(wanted, cpus - others))


@contextlib.contextmanager
def fitted() -> Iterator[int]:
    """Run the block on the threads that fit now (see the module docstring); yields the number."""
    import torch

    if getattr(_inside, "depth", 0):
        _inside.depth += 1
        try:
            yield torch.get_num_threads()
        finally:
            _inside.depth -= 1
        return
    wanted = configured()
    n = threads_for(wanted, cpus(), runnable_others()) if enabled() and wanted > 1 else wanted
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _inside.depth = 1
    try:
        yield n
    finally:
        _inside.depth = 0
        if n != wanted:
            torch.set_num_threads(wanted)
