"""A second process that keeps the CPUs busy, switched on only while a timed call runs.

The answer path is measured twice per tab, on a quiet machine and while another process keeps
both cores busy (as on a shared VM or a Space whose neighbour runs a model), taking turns call by
call: the busy process is one torch process doing matrix products on `threads` intra-op threads,
resumed (SIGCONT) SETTLE_S before a "busy" call (so, as a real neighbour, it is already computing
when the call starts) and paused (SIGSTOP) right after it, so the quiet calls of the same run see
none of it. The settling is not timed.

    with Busy(threads=2) as busy:
        with busy.running():
            seconds = timed(fn)
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SETTLE_S = 0.05  # after SIGCONT, the time the neighbour's threads take to be running again (measured: < 10 ms)

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
        """SIGSTOP, then wait (at most SETTLE_S) until every thread of the neighbour has stopped, so the next
        quiet call never starts beside a thread that is still running."""
        os.kill(self._proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline and not self._stopped():
            time.sleep(0.001)

    def _stopped(self) -> bool:
        try:
            tasks = list(Path(f"/proc/{self._proc.pid}/task").iterdir())
            states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks]
        except (OSError, IndexError):
            return True  # gone, or no /proc: nothing to wait for
        return all(state in ("T", "t") for state in states)

    def _resume(self) -> None:
        os.kill(self._proc.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def running(self, settle_s: float = SETTLE_S) -> Iterator[None]:
        """The neighbour computing for the block, as a neighbour that was already running when the block starts
        (resumed `settle_s` before it: its threads are back on the CPUs), paused again after it, whatever
        happens. The bench enters it untimed around a timed call (`bench.timing.interleaved`'s `around`)."""
        self._resume()
        try:
            time.sleep(settle_s)
            yield
        finally:
            self._pause()

    def during(self, fn: Callable[[], Any]) -> Any:
        """`fn()` with the neighbour computing (see `running`)."""
        with self.running():
            return fn()

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
