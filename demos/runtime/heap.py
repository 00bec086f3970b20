"""Give freed memory back to the operating system (glibc; a no-op elsewhere).

A full-size forward pass with its views allocates blocks of a few to tens of MB (one layer's
attention over 512 tokens is 12 MB in float32). glibc keeps freed blocks in per-thread heaps:
it raises its mmap threshold to the largest block freed so far (up to 32 MiB), and every worker
thread has its own heap (arena), so what a class leaves behind adds up across threads. Two
measures, both measured in docs/PERFORMANCE.md ("Memory per session"):

- `tune()`, once when the app is built: blocks of 8 MiB and more are mapped on their own (so
  freeing them returns them at once) and two arenas instead of eight per core (a lower threshold returns
  more but makes every full-size answer slower: each block is faulted in afresh). `XRAY_MALLOC_TUNE=0`
  switches it off.
- `trim()` (`malloc_trim(0)`) after computed calls (`trimmed`, applied by
  `demos.runtime.compute.task_compute`, through the `trimmer` thread: at most once a second, off the
  request's path) and after the session sweep: it returns the free pages of every arena, i.e.
  the blocks under the threshold. At most one thread trims at a time; the others skip it (that trim
  returns their pages too).

`XRAY_MALLOC_TUNE=0` leaves glibc as it is: no `mallopt`, no trims after calls.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc mallopt parameters (malloc.h)
MMAP_FROM = 8 * 2**20  # blocks this large are mapped on their own (1 MiB cost short answers +50% here)


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        return libc
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return None


_LIBC = _glibc()
_trimming = threading.Lock()


def available() -> bool:
    """Whether this process runs on glibc (where `tune` and `trim` do something)."""
    return _LIBC is not None


def _switched_off() -> bool:
    return os.environ.get("XRAY_MALLOC_TUNE", "1").strip().lower() in ("0", "false", "no")


def tune() -> bool:
    """mmap threshold 8 MiB and two arenas, unless XRAY_MALLOC_TUNE=0. Returns whether applied."""
    if _LIBC is None or _switched_off():
        return False
    return bool(_LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_FROM)) and bool(_LIBC.mallopt(M_ARENA_MAX, 2))


def trim() -> bool:
    """Return the heaps' free pages to the OS; False when not glibc or another thread is at it."""
    if _LIBC is None or not _trimming.acquire(blocking=False):
        return False
    try:
        _LIBC.malloc_trim(0)
        return True
    finally:
        _trimming.release()


class Trimmer:
    """Trims in its own thread, at most once per `interval` seconds, when asked (`soon()`): a call
    does not wait for the trim, and a stream of short calls does not fault its pages in afresh
    after every one of them."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.asked = threading.Event()
        self.done = 0  # trims carried out (tests read it)
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def soon(self) -> None:
        if _LIBC is None or _switched_off():
            return
        if self._thread is None:
            with self._start:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="xray-heap-trim", daemon=True)
                    self._thread.start()
        self.asked.set()

    def _run(self) -> None:
        while True:
            self.asked.wait()
            self.asked.clear()
            if trim():
                self.done += 1
            time.sleep(self.interval)


trimmer = Trimmer()


def trimmed(fn: Callable) -> Callable:
    """Decorator: ask the `trimmer` for a trim after each call (also after one that raised)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            trimmer.soon()

    return call
