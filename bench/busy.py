"""A second process that keeps the CPUs busy, switched on only while a timed call runs.

The answer path is measured twice per tab, on a quiet machine and while another process keeps
both cores busy (as on a shared VM or a Space whose neighbour runs a model), taking turns call by
call: the busy process is one torch process doing matrix products on `threads` intra-op threads,
resumed (SIGCONT) just before a "busy" call and paused (SIGSTOP) right after it, so the quiet
calls of the same run see none of it.

    with Busy(threads=2) as busy:
        seconds = timed(lambda: busy.during(fn))
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

# The neighbour: matrix products of the size of a transformer layer's (768 x 3072), until the bench ends.
_NEIGHBOUR = (
    "import ctypes, sys, torch\n"
    "ctypes.CDLL(None).prctl(1, 9)\n"  # PR_SET_PDEATHSIG, SIGKILL: it dies with the bench, even while paused
    "torch.set_num_threads(int(sys.argv[1]))\n"
    "a, b = torch.randn(512, 768), torch.randn(768, 3072)\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    a @ b\n"
)


class Busy:
    """The paused neighbour process; `during(fn)` runs `fn` while it computes."""

    def __init__(self, threads: int = 2) -> None:
        if threads < 1:
            raise ValueError("the busy process needs at least one thread")
        self.threads = threads
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _NEIGHBOUR, str(threads)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )
        line = self._proc.stdout.readline().strip() if self._proc.stdout else ""
        if line != "ready":
            self.close()
            raise RuntimeError(f"the busy process did not start (it printed {line!r})")
        self._pause()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _pause(self) -> None:
        os.kill(self._proc.pid, signal.SIGSTOP)

    def _resume(self) -> None:
        os.kill(self._proc.pid, signal.SIGCONT)

    def during(self, fn: Callable[[], Any]) -> Any:
        """`fn()` with the neighbour computing; paused again afterwards, whatever happens."""
        self._resume()
        try:
            return fn()
        finally:
            self._pause()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        if self._proc.stdout:
            self._proc.stdout.close()

    def __enter__(self) -> Busy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
